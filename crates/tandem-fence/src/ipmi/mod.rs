//! IPMI v2.0 over LAN (RMCP+): the `kind = "ipmi"` fence level.
//!
//! Each operation runs on a blocking thread (the UDP exchange is
//! synchronous), opens its own session, and closes it before returning, so
//! no BMC session slot is ever left behind. Power state comes from Get
//! Chassis Status (bit 0 of the first byte), power changes are Chassis
//! Control 0 (down) and 1 (up); tandem never sends a power cycle.
//!
//! Cipher suites: 3 (HMAC-SHA1, AES-128) and 17 (HMAC-SHA256, AES-128). By
//! default tandem asks the BMC which it offers (Get Channel Cipher Suites)
//! and prefers 17.

pub mod crypto;
pub mod session;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipmi_rs::app::GetDeviceId;
use ipmi_rs::Ipmi;
use serde::Deserialize;

use crate::agent::{BoxFuture, Check, FenceAgent, PowerAction, PowerState};
use crate::config::HumanDuration;
use crate::error::FenceError;
use crate::secret::Secret;
use crypto::Suite;
pub use session::{LanSession, Privilege};

/// A `kind = "ipmi"` fence level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpmiConfig {
    /// The BMC's address or host name.
    pub host: String,
    /// The BMC's UDP port (default 623).
    pub port: Option<u16>,
    /// The BMC user.
    pub username: String,
    /// A file holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// Cipher suite 3 or 17; default: ask the BMC, prefer 17, else 3.
    pub cipher_suite: Option<u8>,
    /// The session privilege: "operator" (default; enough for power
    /// control) or "administrator".
    pub privilege: Option<Privilege>,
    /// How long the device has to confirm a power change (default 20 s).
    pub power_timeout: Option<HumanDuration>,
    /// How long to wait for each answer (default 1 s).
    pub timeout: Option<HumanDuration>,
    /// How many times a request is sent before giving up (default 3).
    pub attempts: Option<u32>,
}

/// Default wait for one answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of sends of one request.
pub const DEFAULT_ATTEMPTS: u32 = 3;

impl IpmiConfig {
    /// Builds the agent, loading the password. `what` names the level in
    /// errors.
    pub fn agent(&self, what: &str) -> Result<IpmiAgent, FenceError> {
        if self.host.trim().is_empty() {
            return Err(FenceError::Config(format!("{what}: host is empty")));
        }
        if self.username.len() > 16 {
            return Err(FenceError::Config(format!(
                "{what}: username {:?} is longer than IPMI's 16 bytes",
                self.username
            )));
        }
        let suite = match self.cipher_suite {
            None => None,
            Some(id) => Some(Suite::from_id(id).ok_or_else(|| {
                FenceError::Config(format!(
                    "{what}: cipher_suite = {id}: tandem speaks suites 3 and 17"
                ))
            })?),
        };
        if self.privilege == Some(Privilege::User) {
            return Err(FenceError::Config(format!(
                "{what}: privilege = \"user\" cannot switch power; use \"operator\""
            )));
        }
        let password = Secret::load(
            what,
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        if password.expose().len() > 20 {
            return Err(FenceError::Config(format!(
                "{what}: IPMI v2.0 passwords have at most 20 bytes"
            )));
        }
        Ok(IpmiAgent::new(
            IpmiTarget {
                host: self.host.clone(),
                port: self.port.unwrap_or(623),
                username: self.username.clone(),
                suite,
                privilege: self.privilege.unwrap_or(Privilege::Operator),
                timeout: self.timeout.map(|d| d.0).unwrap_or(DEFAULT_TIMEOUT),
                attempts: self.attempts.unwrap_or(DEFAULT_ATTEMPTS),
            },
            password,
        ))
    }
}

/// Where and how to reach a BMC.
#[derive(Debug, Clone)]
pub struct IpmiTarget {
    /// Address or host name.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Cipher suite, or `None` to ask the BMC.
    pub suite: Option<Suite>,
    /// Session privilege.
    pub privilege: Privilege,
    /// Wait for one answer.
    pub timeout: Duration,
    /// Sends of one request.
    pub attempts: u32,
}

#[derive(Debug)]
struct Inner {
    target: IpmiTarget,
    password: Secret,
    /// The suite chosen by asking the BMC (0 = not asked yet).
    chosen: AtomicU8,
}

/// The IPMI fence agent.
#[derive(Debug, Clone)]
pub struct IpmiAgent {
    inner: Arc<Inner>,
}

/// The bits of Get Chassis Status.
const CHASSIS: u8 = 0x00;

impl IpmiAgent {
    /// An agent for `target` with `password`.
    pub fn new(target: IpmiTarget, password: Secret) -> Self {
        IpmiAgent {
            inner: Arc::new(Inner {
                target,
                password,
                chosen: AtomicU8::new(0),
            }),
        }
    }

    fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner, &mut LanSession) -> Result<T, FenceError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, FenceError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let device = inner.device();
            tokio::task::spawn_blocking(move || {
                let mut s = inner.session()?;
                let r = op(&inner, &mut s);
                s.close();
                r
            })
            .await
            .map_err(|e| FenceError::Protocol {
                device,
                message: format!("IPMI worker failed: {e}"),
            })?
        })
    }
}

impl Inner {
    fn device(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port)
    }

    fn connect(&self) -> Result<LanSession, FenceError> {
        let t = &self.target;
        LanSession::connect(&t.host, t.port, t.timeout, t.attempts)
    }

    /// The configured suite, or the one the BMC prefers among 17 and 3.
    fn suite(&self, s: &mut LanSession) -> Result<(Suite, Option<Vec<u8>>), FenceError> {
        if let Some(suite) = self.target.suite {
            return Ok((suite, None));
        }
        if let Some(suite) = Suite::from_id(self.chosen.load(Ordering::Relaxed)) {
            return Ok((suite, None));
        }
        let offered = match s.cipher_suites() {
            Ok(ids) => ids,
            Err(e @ (FenceError::Timeout { .. } | FenceError::Unreachable { .. })) => {
                return Err(e)
            }
            Err(e) => {
                tracing::info!(device = %s.device(), error = %e,
                    "cannot list cipher suites; trying suite 3");
                vec![3]
            }
        };
        let suite = if offered.contains(&17) {
            Suite::S17
        } else if offered.contains(&3) {
            Suite::S3
        } else {
            return Err(FenceError::Device {
                device: s.device().to_string(),
                message: format!(
                    "the BMC offers cipher suites {offered:?}; tandem speaks 3 and 17"
                ),
            });
        };
        self.chosen.store(suite.id(), Ordering::Relaxed);
        Ok((suite, Some(offered)))
    }

    fn session(&self) -> Result<LanSession, FenceError> {
        let mut s = self.connect()?;
        let (suite, _) = self.suite(&mut s)?;
        s.open(
            suite,
            &self.target.username,
            &self.password,
            self.target.privilege,
        )?;
        Ok(s)
    }
}

/// Get Chassis Status in an open session.
pub fn chassis_status(s: &mut LanSession) -> Result<PowerState, FenceError> {
    let r = s.command(CHASSIS, 0x01, &[])?;
    if r.cc != 0 {
        return Err(FenceError::Device {
            device: s.device().to_string(),
            message: format!("Get Chassis Status: {}", wire::completion_code(r.cc)),
        });
    }
    let first = r.data.first().ok_or_else(|| FenceError::Protocol {
        device: s.device().to_string(),
        message: "Get Chassis Status answered without data".into(),
    })?;
    Ok(if first & 0x01 != 0 {
        PowerState::On
    } else {
        PowerState::Off
    })
}

/// Chassis Control (power down or up) in an open session.
pub fn chassis_control(s: &mut LanSession, action: PowerAction) -> Result<(), FenceError> {
    let code = match action {
        PowerAction::Off => 0x00,
        PowerAction::On => 0x01,
    };
    let r = s.command(CHASSIS, 0x02, &[code])?;
    match r.cc {
        0 => Ok(()),
        0xd4 => Err(FenceError::Privilege {
            device: s.device().to_string(),
            message: format!(
                "Chassis Control ({action}): {}",
                wire::completion_code(0xd4)
            ),
        }),
        cc => Err(FenceError::Device {
            device: s.device().to_string(),
            message: format!("Chassis Control ({action}): {}", wire::completion_code(cc)),
        }),
    }
}

impl FenceAgent for IpmiAgent {
    fn kind(&self) -> &'static str {
        "ipmi"
    }

    fn device(&self) -> String {
        self.inner.device()
    }

    fn status(&self) -> BoxFuture<'_, Result<PowerState, FenceError>> {
        self.run(|_, s| chassis_status(s))
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), FenceError>> {
        self.run(move |_, s| {
            tracing::info!(device = %s.device(), %action, "IPMI Chassis Control");
            chassis_control(s, action)
        })
    }

    fn check(&self) -> BoxFuture<'_, Vec<Check>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || checklist(&inner))
                .await
                .unwrap_or_else(|e| {
                    vec![Check::fail("run the checks", e.to_string(), Duration::ZERO)]
                })
        })
    }
}

/// `tandem fence test` for one BMC: every step timed; stops at the first
/// failure. Changes nothing.
fn checklist(inner: &Inner) -> Vec<Check> {
    let mut out = Vec::new();
    let device = inner.device();
    let t = Instant::now();
    let mut s = match inner.connect() {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::fail(
                format!("reach {device}"),
                e.to_string(),
                t.elapsed(),
            ));
            return out;
        }
    };
    match s.channel_auth(inner.target.privilege) {
        Ok(a) if a.ipmi2 => out.push(Check::pass(
            format!("reach {device}"),
            format!("answers IPMI v2.0 (RMCP+) on channel {}", a.channel),
            t.elapsed(),
        )),
        Ok(_) => {
            out.push(Check::fail(
                format!("reach {device}"),
                "answers, but offers no IPMI v2.0 (RMCP+) sessions; enable IPMI over LAN v2.0",
                t.elapsed(),
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                format!("reach {device}"),
                e.to_string(),
                t.elapsed(),
            ));
            return out;
        }
    }
    let t = Instant::now();
    let suite = match inner.suite(&mut s) {
        Ok((suite, offered)) => {
            let detail = match offered {
                Some(ids) => format!("BMC offers {ids:?}; using {}", suite.id()),
                None => format!("using {}", suite.id()),
            };
            out.push(Check::pass("cipher suite", detail, t.elapsed()));
            suite
        }
        Err(e) => {
            out.push(Check::fail("cipher suite", e.to_string(), t.elapsed()));
            return out;
        }
    };
    let t = Instant::now();
    let user = &inner.target.username;
    let want = inner.target.privilege;
    match s.open(suite, user, &inner.password, want) {
        Ok(()) => {
            out.push(Check::pass(
                format!("authenticate as {user:?}"),
                format!("RMCP+ session open (cipher suite {})", suite.id()),
                t.elapsed(),
            ));
            let granted = s.session().map(|(_, p)| p).unwrap_or(Privilege::User);
            let ok = granted >= Privilege::Operator;
            let detail = if ok {
                format!("{granted}: enough for Chassis Control")
            } else {
                format!("{granted}: Chassis Control needs operator")
            };
            out.push(if ok {
                Check::pass("privilege", detail, Duration::ZERO)
            } else {
                Check::fail("privilege", detail, Duration::ZERO)
            });
        }
        Err(e @ FenceError::Privilege { .. }) => {
            out.push(Check::pass(
                format!("authenticate as {user:?}"),
                "credentials accepted",
                t.elapsed(),
            ));
            out.push(Check::fail("privilege", e.to_string(), t.elapsed()));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                format!("authenticate as {user:?}"),
                e.to_string(),
                t.elapsed(),
            ));
            return out;
        }
    }
    let t = Instant::now();
    let mut ipmi = Ipmi::new(s);
    match ipmi.send_recv(GetDeviceId) {
        Ok(id) => out.push(Check::pass(
            "identify the BMC",
            format!(
                "manufacturer {}, product 0x{:04x}, firmware {}.{:02x}, IPMI {}.{}",
                id.manufacturer_id,
                id.product_id,
                id.major_fw_revision,
                id.minor_fw_revision,
                id.major_version,
                id.minor_version
            ),
            t.elapsed(),
        )),
        Err(e) => out.push(Check::fail(
            "identify the BMC",
            format!("{e:?}"),
            t.elapsed(),
        )),
    }
    let mut s = ipmi.release();
    let t = Instant::now();
    match chassis_status(&mut s) {
        Ok(state) => out.push(Check::pass(
            "read power state",
            format!("{state}"),
            t.elapsed(),
        )),
        Err(e) => out.push(Check::fail("read power state", e.to_string(), t.elapsed())),
    }
    let t = Instant::now();
    s.close();
    out.push(Check::pass("close session", "closed", t.elapsed()));
    out
}
