#![doc = include_str!("../README.md")]

pub mod receivers;

pub use receivers::delivery::{DeliveryMetrics, DeliveryReport, Dispatcher};
pub use receivers::{
    DeliveryPolicy, Notification, Receiver, ReceiverError, Secret, Severity, Status,
};
