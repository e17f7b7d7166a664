#![doc = include_str!("../README.md")]

pub mod certs;
pub mod clock;
pub mod config;
pub mod domain;
pub mod host;
pub mod http_server;
pub mod listener;
pub mod metrics;
pub mod roles;
pub mod telemetry;
pub mod tls;
pub mod traces;
pub mod vantage;

/// The signal every component's `run` stops on.
pub use tokio_util::sync::CancellationToken as Shutdown;
