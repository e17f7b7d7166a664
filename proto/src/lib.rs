#![doc = include_str!("../README.md")]

mod generated {
    #![allow(warnings, clippy::all, clippy::pedantic, clippy::unwrap_used)]
    include!("generated/livehead.v1.rs");
}

/// Messages and services of package `livehead.v1`.
pub mod v1 {
    pub use super::generated::*;
}

impl v1::ProbeError {
    /// Short lowercase name stored in tables and shown in logs ("" when there was an answer).
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Other => "other",
        }
    }
}

impl v1::CertTrust {
    /// Short lowercase name stored in tables and shown by the API and the
    /// alerts ("" when not checked).
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Trusted => "trusted",
            Self::Expired => "expired",
            Self::UnknownIssuer => "unknown_issuer",
            Self::NameMismatch => "name_mismatch",
            Self::SelfSigned => "self_signed",
            Self::Invalid => "invalid",
        }
    }

    /// Every value but UNSPECIFIED.
    pub const CHECKED: [Self; 6] = [
        Self::Trusted,
        Self::Expired,
        Self::UnknownIssuer,
        Self::NameMismatch,
        Self::SelfSigned,
        Self::Invalid,
    ];
}

impl v1::ContentOutcome {
    /// Short lowercase name stored in tables and shown by the API ("" when
    /// no content check ran).
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

impl v1::ProbeMethod {
    /// Method name stored in tables.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Head => "HEAD",
            Self::Get => "GET",
        }
    }
}
