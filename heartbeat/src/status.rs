//! Where a check stands, and its wire form.

use livehead_proto::v1::HeartbeatStatus;
use serde::{Deserialize, Serialize};

/// A check's status (Healthchecks' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Never pinged (or resumed and not pinged since).
    New,
    /// The last end ping was a success and the next one is not due yet.
    Up,
    /// A run started and its end is not due yet.
    Started,
    /// The next ping is late, within the grace time.
    Grace,
    /// Late past the grace time, a run that never ended, or a failure.
    Down,
    /// Paused by a person: never late.
    Paused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Up => "up",
            Status::Started => "started",
            Status::Grace => "grace",
            Status::Down => "down",
            Status::Paused => "paused",
        }
    }

    /// The wire enum's value as carried in `HeartbeatState.status`; None
    /// for UNSPECIFIED or an unknown number.
    pub fn from_proto_i32(v: i32) -> Option<Status> {
        HeartbeatStatus::try_from(v)
            .ok()
            .and_then(|s| Status::try_from(s).ok())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Status> for HeartbeatStatus {
    fn from(s: Status) -> HeartbeatStatus {
        match s {
            Status::New => HeartbeatStatus::New,
            Status::Up => HeartbeatStatus::Up,
            Status::Started => HeartbeatStatus::Started,
            Status::Grace => HeartbeatStatus::Grace,
            Status::Down => HeartbeatStatus::Down,
            Status::Paused => HeartbeatStatus::Paused,
        }
    }
}

/// HEARTBEAT_STATUS_UNSPECIFIED has no Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unspecified heartbeat status")]
pub struct UnspecifiedStatus;

impl TryFrom<HeartbeatStatus> for Status {
    type Error = UnspecifiedStatus;

    fn try_from(s: HeartbeatStatus) -> Result<Status, UnspecifiedStatus> {
        Ok(match s {
            HeartbeatStatus::Unspecified => return Err(UnspecifiedStatus),
            HeartbeatStatus::New => Status::New,
            HeartbeatStatus::Up => Status::Up,
            HeartbeatStatus::Started => Status::Started,
            HeartbeatStatus::Grace => Status::Grace,
            HeartbeatStatus::Down => Status::Down,
            HeartbeatStatus::Paused => Status::Paused,
        })
    }
}
