//! Errors of fence devices; every one names the device.

use std::time::Duration;

use crate::agent::PowerState;

/// Why a fence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The device refused the credentials.
    #[error("{device}: authentication failed{detail}")]
    Auth {
        /// The device.
        device: String,
        /// More detail, starting with ": ", or empty.
        detail: String,
    },
    /// The device did not answer in time.
    #[error("{device}: no answer within {}", humantime::format_duration(*waited))]
    Timeout {
        /// The device.
        device: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The device could not be reached at all (DNS, connection refused,
    /// no route).
    #[error("{device}: unreachable: {message}")]
    Unreachable {
        /// The device.
        device: String,
        /// What the network said.
        message: String,
    },
    /// The session is valid but lacks the privilege for the command.
    #[error("{device}: insufficient privilege: {message}")]
    Privilege {
        /// The device.
        device: String,
        /// What the device said.
        message: String,
    },
    /// The device answered a command with an error (a decoded IPMI
    /// completion code, a WS-Management fault, a non-zero ReturnValue).
    #[error("{device}: {message}")]
    Device {
        /// The device.
        device: String,
        /// The error in words.
        message: String,
    },
    /// The device's answer made no sense (malformed packet, wrong
    /// signature, unexpected XML).
    #[error("{device}: protocol error: {message}")]
    Protocol {
        /// The device.
        device: String,
        /// What was wrong with the answer.
        message: String,
    },
    /// The device accepted the command but never confirmed the new power
    /// state. For power off this means the node is NOT fenced.
    #[error(
        "{device}: power still {state} {} after {action}{last_error}",
        humantime::format_duration(*waited)
    )]
    PowerTimeout {
        /// The device.
        device: String,
        /// The command that was sent.
        action: crate::agent::PowerAction,
        /// The last state the device reported.
        state: PowerState,
        /// How long we polled.
        waited: Duration,
        /// The last polling error, starting with "; last error: ", or empty.
        last_error: String,
    },
    /// The device kind cannot do this (e.g. power a node on through its
    /// watchdog).
    #[error("{device}: {what} is not supported by a {kind} device")]
    Unsupported {
        /// The device.
        device: String,
        /// The backend.
        kind: &'static str,
        /// The operation.
        what: String,
    },
    /// A fence level's configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// A level has no evidence it could ever confirm the node off with
    /// (the watchdog level without corosync's membership).
    #[error("{device}: {why}")]
    NoEvidence {
        /// The level.
        device: String,
        /// What is missing.
        why: String,
    },
    /// Credentials could not be loaded (missing file, file readable by
    /// others, unset variable).
    #[error("{0}")]
    Secret(String),
}

impl FenceError {
    /// A short machine-readable kind for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            FenceError::Auth { .. } => "auth",
            FenceError::Timeout { .. } => "timeout",
            FenceError::Unreachable { .. } => "unreachable",
            FenceError::Privilege { .. } => "privilege",
            FenceError::Device { .. } => "device",
            FenceError::Protocol { .. } => "protocol",
            FenceError::PowerTimeout { .. } => "power_timeout",
            FenceError::Unsupported { .. } => "unsupported",
            FenceError::Config(_) => "config",
            FenceError::NoEvidence { .. } => "no_evidence",
            FenceError::Secret(_) => "secret",
        }
    }
}
