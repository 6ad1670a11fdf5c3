//! The device-independent interface of a fence device.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

use crate::error::FenceError;

/// A boxed, sendable future: [`FenceAgent`] is used as a trait object (a
/// node's levels mix device kinds), so its methods return these.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a device reports about the node's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// The node is powered on.
    On,
    /// The node is powered off.
    Off,
    /// The device answered, but with a state that is neither on nor off
    /// (e.g. AMT's "power cycle in progress"). Never treated as off.
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        })
    }
}

/// A power command. There is deliberately no "cycle": a reboot is off,
/// confirmed off, then on, so a node that is already off never gets a
/// power cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    /// Power the node on.
    On,
    /// Power the node off, hard (not an ACPI request the OS may ignore).
    Off,
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::On => "power on",
            PowerAction::Off => "power off",
        })
    }
}

/// One line of `tandem fence test`'s checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. "reach 10.0.0.101:623", "authenticate as admin".
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (the power state, the privilege granted, the error).
    pub detail: String,
    /// How long the step took.
    #[serde(serialize_with = "ser_millis", rename = "elapsed_ms")]
    pub elapsed: Duration,
}

fn ser_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl Check {
    /// A check that passed.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>, elapsed: Duration) -> Self {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            elapsed,
        }
    }

    /// A check that failed.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, elapsed: Duration) -> Self {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            elapsed,
        }
    }
}

/// A fence device: something that can tell whether a node has power, and
/// switch it.
///
/// Implementations bound every call by their own network timeout and
/// return [`FenceError`]s that name the device. They never claim `Off`
/// unless the device said so: confirming the power state is the whole
/// point (DESIGN.md invariant 7).
pub trait FenceAgent: Send + Sync + fmt::Debug {
    /// The backend's name as in the config: "ipmi", "amt", "watchdog".
    fn kind(&self) -> &'static str;

    /// The device, for logs and messages (e.g. "10.0.0.101:623").
    fn device(&self) -> String;

    /// Asks the device for the node's power state.
    fn status(&self) -> BoxFuture<'_, Result<PowerState, FenceError>>;

    /// Sends a power command. Returns once the device accepted it; the
    /// caller confirms the result with [`status`](FenceAgent::status).
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), FenceError>>;

    /// The non-destructive checklist of `tandem fence test`: reach the
    /// device, authenticate, check the privilege granted is enough to
    /// switch power, read the power state. Never changes the power state.
    fn check(&self) -> BoxFuture<'_, Vec<Check>>;
}
