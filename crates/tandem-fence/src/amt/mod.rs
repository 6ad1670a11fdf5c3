//! Intel AMT over WS-Management: SOAP over HTTP with Digest
//! authentication, on port 16992 (HTTP) or 16993 (TLS).
//!
//! - Status: a WS-Transfer Get of `CIM_AssociatedPowerManagementService`;
//!   its `PowerState` 2 is on, 8 is off, anything else is
//!   [`Unknown`](PowerState::Unknown) (never taken for off).
//! - Power: `RequestPowerStateChange` on the `CIM_PowerManagementService`
//!   named "Intel(r) AMT Power Management Service", with PowerState 2 (on)
//!   or 8 (off, hard) and the `CIM_ComputerSystem` "ManagedSystem" as the
//!   managed element. Its `ReturnValue` must be 0.
//! - AMT misbehaves when two power state changes come within seconds of
//!   each other, so the agent keeps at least [`DEFAULT_CHANGE_INTERVAL`]
//!   between them, waiting out the rest (and logging it) when asked
//!   sooner.
//! - Every call (connect, TLS, Digest round trip, answer) is bounded by the
//!   level's `timeout`.
//! - TLS: the device's certificate is trusted by its pinned SHA-256
//!   `fingerprint` only; TLS without a pin is a configuration error (AMT
//!   certificates are self-signed, and a CA store would not know them).
//!
//! ```toml
//! [[nodes.oracle.fence]]
//! kind = "amt"
//! host = "10.0.0.102"
//! port = 16993
//! fingerprint = "AB:CD:...:EF"
//! username = "admin"
//! password_file = "/etc/tandem/oracle.amt"
//! timeout = "5s"
//! ```

mod digest;
mod http;
mod tls;
mod wsman;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::agent::{BoxFuture, Check, FenceAgent, PowerAction, PowerState};
use crate::config::HumanDuration;
use crate::error::FenceError;
use crate::secret::Secret;

pub use tls::Fingerprint;

use digest::Challenge;
use http::{Endpoint, HttpError, Response};
use wsman::{AnswerError, Request, ACTION_GET, ANONYMOUS, CIM, NS_WSA, NS_WSMAN};

/// AMT's plain HTTP port.
pub const HTTP_PORT: u16 = 16992;
/// AMT's TLS port.
pub const TLS_PORT: u16 = 16993;
/// Default bound on one network call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two power state changes sent to one device.
pub const DEFAULT_CHANGE_INTERVAL: Duration = Duration::from_secs(10);

/// The name of AMT's power management service instance.
const PMS_NAME: &str = "Intel(r) AMT Power Management Service";
/// CIM power states used here.
const STATE_ON: u16 = 2;
const STATE_OFF: u16 = 8;

/// An `kind = "amt"` fence level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmtConfig {
    /// The AMT host (name or address).
    pub host: String,
    /// The port. Default: 16993 when TLS is on, else 16992.
    pub port: Option<u16>,
    /// The AMT user (e.g. "admin"); needs the Remote Control realm.
    pub username: String,
    /// A file holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// How long the device has to confirm a power change.
    pub power_timeout: Option<HumanDuration>,
    /// Whether to speak TLS. Default: on when a `fingerprint` is given or
    /// the port is 16993. TLS requires a `fingerprint`.
    pub tls: Option<bool>,
    /// The SHA-256 fingerprint of the device's TLS certificate, as
    /// `openssl x509 -noout -fingerprint -sha256` prints it ("AB:CD:...").
    /// Only this certificate is accepted.
    pub fingerprint: Option<String>,
    /// The bound on each network call (connect, TLS handshake, Digest
    /// round trip, answer). Default 5 s.
    pub timeout: Option<HumanDuration>,
}

impl AmtConfig {
    /// Builds the agent: loads the password (`password_file` or
    /// `password_env`) and checks the settings. `what` names the level in
    /// errors.
    pub fn agent(&self, what: &str) -> Result<AmtAgent, FenceError> {
        let password = Secret::load(
            what,
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        self.agent_with_password(what, password)
    }

    /// Builds the agent with a password already in hand.
    pub fn agent_with_password(
        &self,
        what: &str,
        password: Secret,
    ) -> Result<AmtAgent, FenceError> {
        let host = self.host.trim();
        if host.is_empty() {
            return Err(FenceError::Config(format!("{what}: amt host is empty")));
        }
        if self.username.is_empty() {
            return Err(FenceError::Config(format!("{what}: amt username is empty")));
        }
        let pin = self
            .fingerprint
            .as_deref()
            .map(Fingerprint::parse)
            .transpose()
            .map_err(|e| FenceError::Config(format!("{what}: {e}")))?;
        let tls = self
            .tls
            .unwrap_or(pin.is_some() || self.port == Some(TLS_PORT));
        let port = self.port.unwrap_or(if tls { TLS_PORT } else { HTTP_PORT });
        let tls_config = match (tls, pin) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(FenceError::Config(format!(
                    "{what}: a fingerprint is given but tls = false"
                )))
            }
            (true, None) => {
                return Err(FenceError::Config(format!(
                    "{what}: TLS to {host}:{port} needs the device certificate's SHA-256 \
                     `fingerprint` (AMT certificates are self-signed)"
                )))
            }
            (true, Some(pin)) => Some(
                tls::client_config(pin).map_err(|e| FenceError::Config(format!("{what}: {e}")))?,
            ),
        };
        let timeout = self.timeout.map(|d| d.0).unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(FenceError::Config(format!(
                "{what}: amt timeout must be positive"
            )));
        }
        Ok(AmtAgent {
            client: Client {
                endpoint: Endpoint {
                    host: host.to_string(),
                    port,
                    tls: tls_config,
                },
                username: self.username.clone(),
                password,
                timeout,
                auth: Mutex::new(None),
            },
            change_interval: DEFAULT_CHANGE_INTERVAL,
            last_change: tokio::sync::Mutex::new(None),
        })
    }
}

/// The Digest state kept between calls, so that most calls need a single
/// round trip.
#[derive(Debug)]
struct AuthState {
    challenge: Challenge,
    /// The last nonce count sent with this nonce.
    nc: u32,
}

/// A WS-Management client for one device.
#[derive(Debug)]
struct Client {
    endpoint: Endpoint,
    username: String,
    password: Secret,
    timeout: Duration,
    auth: Mutex<Option<AuthState>>,
}

/// The answer of a Get of `CIM_AssociatedPowerManagementService`.
#[derive(Debug, Clone)]
struct PowerInfo {
    state: u16,
    available: Vec<u16>,
}

/// The CIM name of a `PowerState` value (DSP1027).
fn state_name(v: u16) -> &'static str {
    match v {
        1 => "Other",
        2 => "On",
        3 => "Sleep - Light",
        4 => "Sleep - Deep",
        5 => "Power Cycle (Off - Soft)",
        6 => "Off - Hard",
        7 => "Hibernate (Off - Soft)",
        8 => "Off - Soft",
        9 => "Power Cycle (Off - Hard)",
        10 => "Master Bus Reset",
        11 => "Diagnostic Interrupt (NMI)",
        12 => "Off - Soft Graceful",
        13 => "Off - Hard Graceful",
        14 => "Master Bus Reset Graceful",
        15 => "Power Cycle (Off - Soft Graceful)",
        16 => "Power Cycle (Off - Hard Graceful)",
        _ => "unknown",
    }
}

/// What a non-zero `RequestPowerStateChange` ReturnValue means.
fn explain_return_value(v: u32) -> &'static str {
    match v {
        0 => "completed with no error",
        1 => "not supported",
        2 => "unknown or unspecified error (AMT also says this when the requested transition is not possible in the current state)",
        3 => "cannot complete within the timeout period",
        4 => "failed",
        5 => "invalid parameter",
        6 => "in use",
        4096 => "method parameters checked, job started (a completed change was expected)",
        4097 => "invalid state transition",
        4098 => "use of timeout parameter not supported",
        4099 => "busy",
        _ => "undocumented value",
    }
}

fn class_uri(class: &str) -> String {
    format!("{CIM}{class}")
}

impl Client {
    fn device(&self) -> String {
        self.endpoint.authority()
    }

    fn net_error(&self, e: HttpError) -> FenceError {
        let device = self.device();
        match e {
            HttpError::Connect(e) => FenceError::Unreachable {
                device,
                message: e.to_string(),
            },
            HttpError::Tls(e) => FenceError::Protocol {
                device,
                message: format!("TLS handshake failed: {}", tls::describe(&e)),
            },
            HttpError::Io(e) => FenceError::Unreachable {
                device,
                message: format!("connection failed: {e}"),
            },
            HttpError::Malformed(m) => FenceError::Protocol {
                device,
                message: format!("malformed HTTP answer: {m}"),
            },
        }
    }

    fn timeout_error(&self) -> FenceError {
        FenceError::Timeout {
            device: self.device(),
            waited: self.timeout,
        }
    }

    /// The next `Authorization` value from the kept challenge, if any.
    fn next_authorization(&self) -> Option<String> {
        let mut guard = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let st = guard.as_mut()?;
        st.nc = st.nc.wrapping_add(1);
        Some(st.challenge.authorization(
            &self.username,
            &self.password,
            "POST",
            "/wsman",
            st.nc,
            &digest::cnonce(),
        ))
    }

    fn keep_challenge(&self, challenge: Challenge) {
        let mut guard = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(AuthState { challenge, nc: 0 });
    }

    /// Just connects (and does the TLS handshake), for the checklist.
    async fn probe(&self) -> Result<String, FenceError> {
        match tokio::time::timeout(self.timeout, self.endpoint.connect()).await {
            Err(_) => Err(self.timeout_error()),
            Ok(Err(e)) => Err(self.net_error(e)),
            Ok(Ok(c)) => Ok(c.what),
        }
    }

    /// POSTs a SOAP message, answering Digest challenges; returns the
    /// authenticated answer. Bounded by the timeout as a whole.
    async fn post(&self, envelope: &str) -> Result<Response, FenceError> {
        match tokio::time::timeout(self.timeout, self.post_inner(envelope)).await {
            Err(_) => Err(self.timeout_error()),
            Ok(r) => r,
        }
    }

    async fn post_inner(&self, envelope: &str) -> Result<Response, FenceError> {
        let mut authorization = self.next_authorization();
        // Whether `authorization` answers a challenge from this very call
        // (then a 401 means the credentials are wrong).
        let mut fresh = false;
        for _ in 0..3 {
            let headers: Vec<(&str, &str)> = authorization
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            let resp = self
                .endpoint
                .post(
                    "/wsman",
                    "application/soap+xml;charset=UTF-8",
                    &headers,
                    envelope.as_bytes(),
                )
                .await
                .map_err(|e| self.net_error(e))?;
            if resp.status != 401 {
                return Ok(resp);
            }
            let challenge = self.challenge_of(&resp)?;
            if fresh && !challenge.stale {
                return Err(self.auth_refused());
            }
            tracing::debug!(device = %self.device(), realm = %challenge.realm,
                stale = challenge.stale, "answering a Digest challenge");
            self.keep_challenge(challenge);
            authorization = self.next_authorization();
            fresh = true;
        }
        Err(self.auth_refused())
    }

    fn auth_refused(&self) -> FenceError {
        FenceError::Auth {
            device: self.device(),
            detail: format!(
                ": the device refused the password of user {:?} (HTTP 401)",
                self.username
            ),
        }
    }

    fn challenge_of(&self, resp: &Response) -> Result<Challenge, FenceError> {
        let mut last_err = "HTTP 401 without a WWW-Authenticate challenge".to_string();
        for v in resp.header_values("WWW-Authenticate") {
            match Challenge::parse(v) {
                Ok(c) => return Ok(c),
                Err(e) => last_err = e,
            }
        }
        Err(FenceError::Auth {
            device: self.device(),
            detail: format!(": {last_err}"),
        })
    }

    /// Sends `req` and decodes the answer's body with `f`.
    async fn call<T>(
        &self,
        req: &Request<'_>,
        f: impl FnOnce(roxmltree::Node<'_, '_>) -> Result<T, String>,
    ) -> Result<T, FenceError> {
        let id = wsman::message_id();
        let env = wsman::envelope(&self.endpoint.url(), &id, req);
        tracing::debug!(device = %self.device(), action = %req.action,
            resource = %req.resource_uri, message_id = %id, "WS-Management request");
        let resp = self.post(&env).await?;
        let device = self.device();
        if resp.status == 403 {
            return Err(FenceError::Privilege {
                device,
                message: format!("HTTP 403 {} for {}", resp.reason, req.action),
            });
        }
        let text = String::from_utf8_lossy(&resp.body);
        let looks_soap = text.contains("Envelope");
        if resp.status != 200 && !looks_soap {
            return Err(FenceError::Device {
                device,
                message: format!("HTTP {} {} for {}", resp.status, resp.reason, req.action),
            });
        }
        match wsman::decode(&text, &id, f) {
            Ok(v) if resp.status == 200 => Ok(v),
            Ok(_) => Err(FenceError::Device {
                device,
                message: format!("HTTP {} {} for {}", resp.status, resp.reason, req.action),
            }),
            Err(AnswerError::Fault(fault)) if fault.is_access_denied() => {
                Err(FenceError::Privilege {
                    device,
                    message: fault.to_string(),
                })
            }
            Err(AnswerError::Fault(fault)) => Err(FenceError::Device {
                device,
                message: fault.to_string(),
            }),
            Err(AnswerError::Malformed(m)) => Err(FenceError::Protocol { device, message: m }),
        }
    }

    /// Get of `CIM_AssociatedPowerManagementService`.
    async fn power_info(&self) -> Result<PowerInfo, FenceError> {
        let class = "CIM_AssociatedPowerManagementService";
        let uri = class_uri(class);
        let req = Request {
            action: ACTION_GET.to_string(),
            resource_uri: uri.clone(),
            selectors: &[],
            body: String::new(),
        };
        self.call(&req, |el| {
            wsman::expect_element(el, &uri, class)?;
            let state =
                wsman::child_text(el, "PowerState").ok_or("the answer has no PowerState")?;
            let state = state
                .parse()
                .map_err(|_| format!("PowerState {state:?} is not a number"))?;
            let available = wsman::child_texts(el, "AvailableRequestedPowerStates")
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            Ok(PowerInfo { state, available })
        })
        .await
    }

    /// Get of the power management service instance (the object power
    /// commands go to): proves the user may see it.
    async fn power_service(&self) -> Result<String, FenceError> {
        let class = "CIM_PowerManagementService";
        let uri = class_uri(class);
        let req = Request {
            action: ACTION_GET.to_string(),
            resource_uri: uri.clone(),
            selectors: &[("Name", PMS_NAME)],
            body: String::new(),
        };
        self.call(&req, |el| {
            wsman::expect_element(el, &uri, class)?;
            Ok(wsman::child_text(el, "ElementName")
                .or_else(|| wsman::child_text(el, "Name"))
                .unwrap_or_else(|| PMS_NAME.to_string()))
        })
        .await
    }

    /// `RequestPowerStateChange(state)`; Ok when ReturnValue is 0.
    async fn request_power_state(&self, state: u16) -> Result<(), FenceError> {
        let class = "CIM_PowerManagementService";
        let uri = class_uri(class);
        let cs_uri = class_uri("CIM_ComputerSystem");
        let body = format!(
            "<p:RequestPowerStateChange_INPUT xmlns:p=\"{uri}\">\
<p:PowerState>{state}</p:PowerState>\
<p:ManagedElement xmlns:a=\"{NS_WSA}\" xmlns:w=\"{NS_WSMAN}\">\
<a:Address>{ANONYMOUS}</a:Address>\
<a:ReferenceParameters>\
<w:ResourceURI>{cs_uri}</w:ResourceURI>{selectors}\
</a:ReferenceParameters>\
</p:ManagedElement>\
</p:RequestPowerStateChange_INPUT>",
            selectors = wsman::selector_set(&[
                ("CreationClassName", "CIM_ComputerSystem"),
                ("Name", "ManagedSystem"),
            ]),
        );
        let req = Request {
            action: format!("{uri}/RequestPowerStateChange"),
            resource_uri: uri.clone(),
            selectors: &[("Name", PMS_NAME)],
            body,
        };
        let rv: u32 = self
            .call(&req, |el| {
                wsman::expect_element(el, &uri, "RequestPowerStateChange_OUTPUT")?;
                let rv =
                    wsman::child_text(el, "ReturnValue").ok_or("the answer has no ReturnValue")?;
                rv.parse()
                    .map_err(|_| format!("ReturnValue {rv:?} is not a number"))
            })
            .await?;
        if rv == 0 {
            Ok(())
        } else {
            Err(FenceError::Device {
                device: self.device(),
                message: format!(
                    "RequestPowerStateChange to PowerState {state} ({}) refused: ReturnValue {rv}: {}",
                    state_name(state),
                    explain_return_value(rv)
                ),
            })
        }
    }
}

/// The AMT fence agent of one device.
#[derive(Debug)]
pub struct AmtAgent {
    client: Client,
    change_interval: Duration,
    /// When the last power change was answered (or failed); held across a
    /// change so that changes never overlap.
    last_change: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl AmtAgent {
    /// Sets the least time between two power state changes (default
    /// [`DEFAULT_CHANGE_INTERVAL`]; AMT needs 10 s, so lower it only for
    /// tests against something that is not AMT).
    pub fn with_change_interval(mut self, interval: Duration) -> Self {
        self.change_interval = interval;
        self
    }

    /// The least time between two power state changes.
    pub fn change_interval(&self) -> Duration {
        self.change_interval
    }

    /// The bound on each network call.
    pub fn timeout(&self) -> Duration {
        self.client.timeout
    }

    async fn status_inner(&self) -> Result<PowerState, FenceError> {
        let info = self.client.power_info().await?;
        let state = match info.state {
            STATE_ON => PowerState::On,
            STATE_OFF => PowerState::Off,
            _ => PowerState::Unknown,
        };
        tracing::debug!(device = %self.device(), power_state = info.state,
            name = state_name(info.state), %state, "AMT power state");
        Ok(state)
    }

    async fn power_inner(&self, action: PowerAction) -> Result<(), FenceError> {
        let code = match action {
            PowerAction::On => STATE_ON,
            PowerAction::Off => STATE_OFF,
        };
        let mut last = self.last_change.lock().await;
        if let Some(at) = *last {
            let ready = at + self.change_interval;
            let now = tokio::time::Instant::now();
            if ready > now {
                let wait = ready - now;
                tracing::info!(device = %self.device(), %action,
                    wait_ms = wait.as_millis() as u64,
                    interval_ms = self.change_interval.as_millis() as u64,
                    "waiting before the next power change: AMT needs time between two changes");
                tokio::time::sleep_until(ready).await;
            }
        }
        tracing::info!(device = %self.device(), %action, power_state = code, "sending AMT power change");
        let started = Instant::now();
        let r = self.client.request_power_state(code).await;
        *last = Some(tokio::time::Instant::now());
        match &r {
            Ok(()) => tracing::info!(device = %self.device(), %action,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "AMT accepted the power change"),
            Err(e) => {
                tracing::warn!(device = %self.device(), %action, error = %e, "AMT power change failed")
            }
        }
        r
    }

    async fn check_inner(&self) -> Vec<Check> {
        let device = self.device();
        let mut checks = Vec::new();
        let names = [
            format!("reach {device}"),
            format!("authenticate as {}", self.client.username),
            "privilege to switch power".to_string(),
            "read power state".to_string(),
        ];
        let skip = |checks: &mut Vec<Check>, from: usize, why: &str| {
            for n in &names[from..] {
                checks.push(Check::fail(
                    n.clone(),
                    format!("not tried: {why}"),
                    Duration::ZERO,
                ));
            }
        };

        let t = Instant::now();
        match self.client.probe().await {
            Ok(what) => checks.push(Check::pass(names[0].clone(), what, t.elapsed())),
            Err(e) => {
                checks.push(Check::fail(names[0].clone(), e.to_string(), t.elapsed()));
                skip(&mut checks, 1, "the device is not reachable");
                return checks;
            }
        }

        let t = Instant::now();
        let info = match self.client.power_info().await {
            Ok(info) => {
                let realm = self
                    .client
                    .auth
                    .lock()
                    .map(|g| g.as_ref().map(|a| a.challenge.realm.clone()))
                    .unwrap_or(None)
                    .unwrap_or_default();
                checks.push(Check::pass(
                    names[1].clone(),
                    format!("HTTP Digest accepted (realm {realm:?})"),
                    t.elapsed(),
                ));
                Some(info)
            }
            Err(e @ FenceError::Privilege { .. }) => {
                checks.push(Check::pass(
                    names[1].clone(),
                    "HTTP Digest accepted",
                    t.elapsed(),
                ));
                checks.push(Check::fail(names[2].clone(), e.to_string(), Duration::ZERO));
                skip(&mut checks, 3, "insufficient privilege");
                return checks;
            }
            Err(e) => {
                checks.push(Check::fail(names[1].clone(), e.to_string(), t.elapsed()));
                skip(&mut checks, 2, "authentication failed");
                return checks;
            }
        };

        let t = Instant::now();
        match self.client.power_service().await {
            Ok(name) => {
                let offered = info
                    .as_ref()
                    .map(|i| i.available.clone())
                    .unwrap_or_default();
                let missing: Vec<u16> = [STATE_ON, STATE_OFF]
                    .into_iter()
                    .filter(|s| !offered.is_empty() && !offered.contains(s))
                    .collect();
                let list = offered
                    .iter()
                    .map(|s| format!("{s} ({})", state_name(*s)))
                    .collect::<Vec<_>>()
                    .join(", ");
                if missing.is_empty() {
                    let offered = if list.is_empty() {
                        "the device lists no available states".to_string()
                    } else {
                        format!("available now: {list}")
                    };
                    checks.push(Check::pass(
                        names[2].clone(),
                        format!("{name:?} readable; {offered}"),
                        t.elapsed(),
                    ));
                } else {
                    // The list depends on the current state (AMT does not
                    // offer "on" to a node that is on): report, don't fail
                    // unless neither is offered.
                    let ok = missing.len() < 2;
                    let detail = format!(
                        "{name:?} readable; available now: {list} (not offered: {})",
                        missing
                            .iter()
                            .map(|s| format!("{s} ({})", state_name(*s)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    checks.push(if ok {
                        Check::pass(names[2].clone(), detail, t.elapsed())
                    } else {
                        Check::fail(names[2].clone(), detail, t.elapsed())
                    });
                }
            }
            Err(e) => checks.push(Check::fail(names[2].clone(), e.to_string(), t.elapsed())),
        }

        let t = Instant::now();
        match self.client.power_info().await {
            Ok(i) => {
                let state = match i.state {
                    STATE_ON => PowerState::On,
                    STATE_OFF => PowerState::Off,
                    _ => PowerState::Unknown,
                };
                checks.push(Check::pass(
                    names[3].clone(),
                    format!("{state} (PowerState {}: {})", i.state, state_name(i.state)),
                    t.elapsed(),
                ));
            }
            Err(e) => checks.push(Check::fail(names[3].clone(), e.to_string(), t.elapsed())),
        }
        checks
    }
}

impl FenceAgent for AmtAgent {
    fn kind(&self) -> &'static str {
        "amt"
    }

    fn device(&self) -> String {
        self.client.device()
    }

    fn status(&self) -> BoxFuture<'_, Result<PowerState, FenceError>> {
        Box::pin(self.status_inner())
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), FenceError>> {
        Box::pin(self.power_inner(action))
    }

    fn check(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(self.check_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<AmtAgent, FenceError> {
        let c: AmtConfig = toml::from_str(&format!(
            "host = \"10.0.0.7\"\nusername = \"admin\"\n{extra}"
        ))
        .map_err(|e| FenceError::Config(e.to_string()))?;
        c.agent_with_password("node n, fence level 1", Secret::new("pw"))
    }

    #[test]
    fn ports_tls_and_pins() {
        let pin = "fingerprint = \"00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\"";
        assert_eq!(cfg("").unwrap().device(), "10.0.0.7:16992");
        assert_eq!(cfg(pin).unwrap().device(), "10.0.0.7:16993");
        assert_eq!(
            cfg(&format!("port = 1234\n{pin}")).unwrap().device(),
            "10.0.0.7:1234"
        );
        let e = cfg("port = 16993").unwrap_err().to_string();
        assert!(e.contains("fingerprint"), "{e}");
        let e = cfg(&format!("tls = false\n{pin}")).unwrap_err().to_string();
        assert!(e.contains("tls = false"), "{e}");
        let e = cfg("fingerprint = \"AB:CD\"").unwrap_err().to_string();
        assert!(e.starts_with("node n, fence level 1:"), "{e}");
        assert!(cfg("colour = \"blue\"").is_err());
        assert_eq!(
            cfg("timeout = \"750ms\"").unwrap().timeout(),
            Duration::from_millis(750)
        );
        assert_eq!(cfg("").unwrap().change_interval(), DEFAULT_CHANGE_INTERVAL);
    }

    #[test]
    fn return_values_and_states_have_words() {
        assert_eq!(explain_return_value(4097), "invalid state transition");
        assert_eq!(state_name(8), "Off - Soft");
    }
}
