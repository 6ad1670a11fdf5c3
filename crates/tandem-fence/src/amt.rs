//! Intel AMT over WS-Management (placeholder until the backend lands).

use crate::config::HumanDuration;
use crate::error::FenceError;
use serde::Deserialize;
use std::path::PathBuf;

/// An `kind = "amt"` fence level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmtConfig {
    /// The AMT host.
    pub host: String,
    /// The port (16992 plain HTTP, 16993 TLS).
    pub port: Option<u16>,
    /// The AMT user.
    pub username: String,
    /// A file holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// How long the device has to confirm a power change.
    pub power_timeout: Option<HumanDuration>,
}

/// The AMT agent.
#[derive(Debug)]
pub struct AmtAgent;

impl AmtConfig {
    /// Builds the agent.
    pub fn agent(&self, what: &str) -> Result<AmtAgent, FenceError> {
        Err(FenceError::Config(format!(
            "{what}: amt is not implemented yet"
        )))
    }
}

impl crate::FenceAgent for AmtAgent {
    fn kind(&self) -> &'static str {
        "amt"
    }
    fn device(&self) -> String {
        String::new()
    }
    fn status(&self) -> crate::BoxFuture<'_, Result<crate::PowerState, FenceError>> {
        Box::pin(async { Ok(crate::PowerState::Unknown) })
    }
    fn power(&self, _: crate::PowerAction) -> crate::BoxFuture<'_, Result<(), FenceError>> {
        Box::pin(async { Ok(()) })
    }
    fn check(&self) -> crate::BoxFuture<'_, Vec<crate::Check>> {
        Box::pin(async { Vec::new() })
    }
}
