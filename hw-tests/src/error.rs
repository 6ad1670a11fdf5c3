//! The harness's error type.

use std::time::Duration;

/// Everything that can go wrong while driving the lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lab cannot run here (QEMU or the built artifacts are missing); tests skip on this.
    #[error("{0}")]
    Unavailable(String),
    /// A host I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("timed out after {:.1} s waiting for {what}", .after.as_secs_f64())]
    Timeout {
        /// What the harness was waiting for.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// A QMP (QEMU monitor) failure or error reply.
    #[error("QMP ({guest}): {message}")]
    Qmp {
        /// Guest name.
        guest: String,
        /// What went wrong.
        message: String,
    },
    /// A QEMU guest agent failure or error reply.
    #[error("guest agent ({guest}): {message}")]
    Agent {
        /// Guest name.
        guest: String,
        /// What went wrong.
        message: String,
    },
    /// A command in a guest exited non-zero.
    #[error(
        "guest {guest}: command exited with {code}: {command}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    )]
    CommandFailed {
        /// Guest name.
        guest: String,
        /// The shell command.
        command: String,
        /// Its exit code (128 + signal number if it was killed).
        code: i32,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
    /// The guest's QEMU process ended (or never became ready).
    #[error("guest {guest}: {reason}")]
    GuestDied {
        /// Guest name.
        guest: String,
        /// Why, with the tail of the console log.
        reason: String,
    },
    /// An IPMI (ipmi_sim / ipmitool) failure.
    #[error("IPMI: {0}")]
    Ipmi(String),
    /// The requested guest configuration is invalid.
    #[error("invalid lab configuration: {0}")]
    Config(String),
}

/// `Result` with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an `io::Error` into [`Error::Io`] with a context message.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
