#![doc = include_str!("../README.md")]

pub mod access;
pub mod api;
pub mod config;
pub mod file;
pub mod heartbeats;
pub mod lifecycle;
pub mod model;
pub mod receivers;
pub mod rules;
pub mod service;
pub mod watch;
pub mod watchdog;

pub use file::{FileError, RulesFile};
pub use lifecycle::{Lifecycle, LifecycleError, SavedState};
pub use model::{AlertChange, AlertKey, Condition};
pub use receivers::delivery::{Attempt, DeliveryMetrics, DeliveryReport, Dispatcher};
pub use receivers::{
    DeliveryPolicy, Notification, Receiver, ReceiverError, Secret, Severity, Status,
};
pub use service::{AlerterError, Running, run, start};
