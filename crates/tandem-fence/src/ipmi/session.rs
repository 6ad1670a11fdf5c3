//! An IPMI v2.0 LAN session (RMCP+), blocking, on a UDP socket.
//!
//! ipmi-rs 0.6 has an RMCP+ client, but its session setup is internal and
//! misses what fencing needs (measured against ipmi_sim): it never raises
//! the session privilege (Chassis Control then fails with 0xD4), never
//! closes sessions (a BMC runs out of slots), speaks only cipher suite 3,
//! always asks for Administrator (an Operator-only user cannot log in) and
//! binds an IPv6 socket. So the session layer is ours; it implements
//! ipmi-rs's [`IpmiConnection`], so ipmi-rs's typed commands (Get Device
//! ID, …) run over it, and its completion-code table decodes errors.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use ipmi_rs::connection::{IpmiConnection, Message, Request, Response};

use super::crypto::{user_key, Exchange, SessionKeys, Suite};
use super::wire::{self, payload, LanResponse, Packet};
use crate::error::FenceError;
use crate::secret::Secret;

/// A session privilege level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// User: may read the power state, not change it.
    User,
    /// Operator: enough for Chassis Control.
    Operator,
    /// Administrator.
    #[serde(alias = "admin")]
    Administrator,
}

impl Privilege {
    /// The IPMI encoding.
    pub fn code(self) -> u8 {
        match self {
            Privilege::User => 2,
            Privilege::Operator => 3,
            Privilege::Administrator => 4,
        }
    }

    /// From the IPMI encoding.
    pub fn from_code(c: u8) -> Option<Self> {
        match c & 0x0f {
            2 => Some(Privilege::User),
            3 => Some(Privilege::Operator),
            4 | 5 => Some(Privilege::Administrator),
            _ => None,
        }
    }
}

impl std::fmt::Display for Privilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Privilege::User => "user",
            Privilege::Operator => "operator",
            Privilege::Administrator => "administrator",
        })
    }
}

#[derive(Debug)]
struct Active {
    keys: SessionKeys,
    bmc_sid: u32,
    console_sid: u32,
    seq: u32,
    suite: Suite,
    privilege: Privilege,
}

/// One RMCP+ session with a BMC. Dropping it closes the session.
#[derive(Debug)]
pub struct LanSession {
    sock: UdpSocket,
    device: String,
    timeout: Duration,
    attempts: u32,
    rq_seq: u8,
    active: Option<Active>,
}

/// What [`LanSession::channel_auth`] learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAuth {
    /// The channel number the BMC answered on.
    pub channel: u8,
    /// Whether the channel accepts IPMI v2.0 (RMCP+) sessions.
    pub ipmi2: bool,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::fill(&mut b).is_err() {
        // The kernel's RNG is not optional for a session; fall back to a
        // time-seeded value only so that the handshake fails on the BMC's
        // side instead of panicking here.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    b
}

impl LanSession {
    /// Creates a socket for `host:port`. IPv4 addresses get an IPv4 socket
    /// (so a host with IPv6 disabled works). Each request waits `timeout`
    /// for an answer and is sent `attempts` times at most.
    pub fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        attempts: u32,
    ) -> Result<Self, FenceError> {
        let device = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| FenceError::Unreachable {
                device: device.clone(),
                message: format!("cannot resolve {host}: {e}"),
            })?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| FenceError::Unreachable {
                device: device.clone(),
                message: format!("{host} has no address"),
            })?;
        let bind: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let unreachable = |e: std::io::Error| FenceError::Unreachable {
            device: device.clone(),
            message: e.to_string(),
        };
        let sock = UdpSocket::bind(bind).map_err(unreachable)?;
        sock.connect(addr).map_err(unreachable)?;
        Ok(LanSession {
            sock,
            device,
            timeout: timeout.max(Duration::from_millis(10)),
            attempts: attempts.max(1),
            rq_seq: 0,
            active: None,
        })
    }

    /// The device, "host:port".
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The cipher suite and privilege of the open session.
    pub fn session(&self) -> Option<(u8, Privilege)> {
        self.active.as_ref().map(|a| (a.suite.id(), a.privilege))
    }

    fn protocol(&self, message: impl Into<String>) -> FenceError {
        FenceError::Protocol {
            device: self.device.clone(),
            message: message.into(),
        }
    }

    /// Sends what `build` makes, up to `attempts` times, until `accept`
    /// takes an answer. Packets that do not parse or do not match are
    /// skipped (late answers to an earlier attempt, strays).
    fn exchange<T>(
        &mut self,
        what: &str,
        mut build: impl FnMut(&mut Self) -> Vec<u8>,
        mut accept: impl FnMut(&Self, Packet) -> Option<Result<T, FenceError>>,
    ) -> Result<T, FenceError> {
        let start = Instant::now();
        let mut last_bad = String::new();
        let mut buf = vec![0u8; 2048];
        for attempt in 0..self.attempts {
            let packet = build(self);
            if let Err(e) = self.sock.send(&packet) {
                return Err(self.io_error(e));
            }
            let deadline = Instant::now() + self.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if self.sock.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                let n = match self.sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(self.io_error(e)),
                };
                let keys = self.active.as_ref().map(|a| &a.keys);
                match wire::parse_packet(&buf[..n], keys) {
                    Ok(p) => match accept(self, p) {
                        Some(r) => return r,
                        None => continue,
                    },
                    Err(e) => {
                        tracing::debug!(device = %self.device, error = %e, "ignoring packet");
                        last_bad = e;
                    }
                }
            }
            tracing::debug!(device = %self.device, what, attempt = attempt + 1, "no answer; retrying");
        }
        if !last_bad.is_empty() {
            return Err(self.protocol(format!("{what}: only invalid answers ({last_bad})")));
        }
        Err(FenceError::Timeout {
            device: self.device.clone(),
            waited: start.elapsed(),
        })
    }

    fn io_error(&self, e: std::io::Error) -> FenceError {
        let message = if e.kind() == std::io::ErrorKind::ConnectionRefused {
            "connection refused (nothing answers IPMI on this UDP port)".to_string()
        } else {
            e.to_string()
        };
        FenceError::Unreachable {
            device: self.device.clone(),
            message,
        }
    }

    fn next_rq_seq(&mut self) -> u8 {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        self.rq_seq
    }

    fn match_lan(
        &self,
        p: &Packet,
        netfn: u8,
        cmd: u8,
        rq_seq: u8,
    ) -> Option<Result<LanResponse, FenceError>> {
        if p.payload_type != payload::IPMI {
            return None;
        }
        if let Some(a) = &self.active {
            if p.session_id != a.console_sid {
                return None;
            }
        }
        match wire::parse_lan_response(&p.payload) {
            Ok(r) if r.netfn == netfn + 1 && r.cmd == cmd && r.rq_seq == rq_seq => Some(Ok(r)),
            Ok(_) => None,
            Err(e) => Some(Err(self.protocol(e))),
        }
    }

    /// A command outside a session (IPMI v1.5 wrapper, no authentication).
    fn sessionless(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<LanResponse, FenceError> {
        let seq = self.next_rq_seq();
        let packet = wire::packet_v15(&wire::lan_request(netfn, cmd, seq, data));
        self.exchange(
            "sessionless command",
            |_| packet.clone(),
            |s, p| s.match_lan(&p, netfn, cmd, seq),
        )
    }

    /// Get Channel Authentication Capabilities: is there an IPMI v2.0 BMC?
    pub fn channel_auth(&mut self, privilege: Privilege) -> Result<ChannelAuth, FenceError> {
        let r = self.sessionless(0x06, 0x38, &[0x8e, privilege.code()])?;
        if r.cc != 0 || r.data.len() < 4 {
            return Err(self.protocol(format!(
                "Get Channel Authentication Capabilities: {}",
                wire::completion_code(r.cc)
            )));
        }
        Ok(ChannelAuth {
            channel: r.data[0],
            ipmi2: r.data[1] & 0x80 != 0 && r.data[3] & 0x02 != 0,
        })
    }

    /// Get Channel Cipher Suites: the suite ids the BMC offers.
    pub fn cipher_suites(&mut self) -> Result<Vec<u8>, FenceError> {
        let mut records = Vec::new();
        for index in 0..0x40u8 {
            let r = self.sessionless(0x06, 0x54, &[0x0e, 0x00, 0x80 | index])?;
            if r.cc != 0 || r.data.is_empty() {
                return Err(self.protocol(format!(
                    "Get Channel Cipher Suites: {}",
                    wire::completion_code(r.cc)
                )));
            }
            records.extend_from_slice(&r.data[1..]);
            if r.data.len() < 17 {
                break;
            }
        }
        // Records: C0h <id> <algorithms…> or C1h <id> <IANA ×3> <algorithms…>.
        let mut ids = Vec::new();
        let mut i = 0;
        while i + 1 < records.len() {
            match records[i] {
                0xc0 => {
                    ids.push(records[i + 1]);
                    i += 2;
                }
                0xc1 => {
                    ids.push(records[i + 1]);
                    i += 5;
                }
                _ => i += 1,
            }
        }
        Ok(ids)
    }

    /// Opens a session: Open Session, RAKP 1–4, then Set Session Privilege
    /// Level (a session starts at User; Chassis Control needs Operator).
    pub fn open(
        &mut self,
        suite: Suite,
        user: &str,
        password: &Secret,
        privilege: Privilege,
    ) -> Result<(), FenceError> {
        if user.len() > 16 {
            return Err(FenceError::Config(format!(
                "{}: IPMI user names have at most 16 bytes, {user:?} has {}",
                self.device,
                user.len()
            )));
        }
        if password.expose().len() > 20 {
            return Err(FenceError::Config(format!(
                "{}: IPMI v2.0 passwords have at most 20 bytes",
                self.device
            )));
        }
        self.close();
        let console_sid = u32::from_le_bytes(random::<4>()) | 1;
        let tag = random::<1>()[0];
        let role = 0x10 | privilege.code(); // name-only lookup, like ipmitool and freeipmi
                                            // Open Session.
        let mut req = vec![tag, privilege.code(), 0, 0];
        req.extend_from_slice(&console_sid.to_le_bytes());
        req.extend_from_slice(&[0x00, 0, 0, 0x08, suite.auth_alg(), 0, 0, 0]);
        req.extend_from_slice(&[0x01, 0, 0, 0x08, suite.integrity_alg(), 0, 0, 0]);
        req.extend_from_slice(&[0x02, 0, 0, 0x08, suite.confidentiality_alg(), 0, 0, 0]);
        let open = self.exchange(
            "Open Session",
            |_| wire::packet_v2(payload::OPEN_REQUEST, 0, 0, &req, None),
            |_, p| {
                (p.payload_type == payload::OPEN_RESPONSE && p.payload.first() == Some(&tag))
                    .then_some(Ok(p.payload))
            },
        )?;
        if open.len() < 12 || open[1] != 0 {
            let status = open.get(1).copied().unwrap_or(0xff);
            return Err(self.rakp_error("Open Session", status, suite, privilege, user));
        }
        let bmc_sid_bytes = [open[8], open[9], open[10], open[11]];
        let bmc_sid = u32::from_le_bytes(bmc_sid_bytes);
        // RAKP 1 / 2.
        let rm = random::<16>();
        let mut r1 = vec![tag, 0, 0, 0];
        r1.extend_from_slice(&bmc_sid_bytes);
        r1.extend_from_slice(&rm);
        r1.extend_from_slice(&[role, 0, 0, user.len() as u8]);
        r1.extend_from_slice(user.as_bytes());
        let r2 = self.exchange(
            "RAKP 1",
            |_| wire::packet_v2(payload::RAKP1, 0, 0, &r1, None),
            |_, p| {
                (p.payload_type == payload::RAKP2 && p.payload.first() == Some(&tag))
                    .then_some(Ok(p.payload))
            },
        )?;
        if r2.len() < 2 || r2[1] != 0 {
            let status = r2.get(1).copied().unwrap_or(0xff);
            return Err(self.rakp_error("RAKP 2", status, suite, privilege, user));
        }
        if r2.len() < 40 + suite.rakp_len() {
            return Err(self.protocol(format!("RAKP 2 of {} bytes is too short", r2.len())));
        }
        let mut rc = [0u8; 16];
        rc.copy_from_slice(&r2[8..24]);
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&r2[24..40]);
        let kuid = user_key(password.expose());
        let x = Exchange {
            suite,
            kuid: &kuid,
            console_sid: console_sid.to_le_bytes(),
            bmc_sid: bmc_sid_bytes,
            console_rand: rm,
            bmc_rand: rc,
            bmc_guid: guid,
            role,
            user: user.as_bytes(),
        };
        if x.rakp2_code() != r2[40..40 + suite.rakp_len()] {
            // Tell the BMC to drop the half-open session (RAKP 3 with an
            // error status), so a wrong password does not leak a slot.
            let mut r3 = vec![tag, 0x0f, 0, 0];
            r3.extend_from_slice(&bmc_sid_bytes);
            let _ = self
                .sock
                .send(&wire::packet_v2(payload::RAKP3, 0, 0, &r3, None));
            return Err(FenceError::Auth {
                device: self.device.clone(),
                detail: format!(": wrong password for user {user:?}"),
            });
        }
        // RAKP 3 / 4.
        let mut r3 = vec![tag, 0, 0, 0];
        r3.extend_from_slice(&bmc_sid_bytes);
        r3.extend_from_slice(&x.rakp3_code());
        let r4 = self.exchange(
            "RAKP 3",
            |_| wire::packet_v2(payload::RAKP3, 0, 0, &r3, None),
            |_, p| {
                (p.payload_type == payload::RAKP4 && p.payload.first() == Some(&tag))
                    .then_some(Ok(p.payload))
            },
        )?;
        if r4.len() < 2 || r4[1] != 0 {
            let status = r4.get(1).copied().unwrap_or(0xff);
            return Err(self.rakp_error("RAKP 4", status, suite, privilege, user));
        }
        let sik = x.sik();
        if r4.len() < 8 + suite.icv_len() || x.rakp4_icv(&sik) != r4[8..8 + suite.icv_len()] {
            return Err(self.protocol("RAKP 4 integrity check value does not verify"));
        }
        self.active = Some(Active {
            keys: SessionKeys::derive(suite, &sik),
            bmc_sid,
            console_sid,
            seq: 0,
            suite,
            privilege: Privilege::User,
        });
        // Raise the session to the privilege we asked for.
        let r = self.command(0x06, 0x3b, &[privilege.code()])?;
        if r.cc != 0 {
            let why = match r.cc {
                0x80 => "requested level not available for this user".to_string(),
                0x81 => "requested level exceeds the channel or user limit".to_string(),
                cc => wire::completion_code(cc),
            };
            return Err(FenceError::Privilege {
                device: self.device.clone(),
                message: format!("Set Session Privilege Level {privilege}: {why}"),
            });
        }
        let granted = r
            .data
            .first()
            .and_then(|&c| Privilege::from_code(c))
            .unwrap_or(privilege);
        if let Some(a) = self.active.as_mut() {
            a.privilege = granted;
        }
        tracing::debug!(device = %self.device, suite = suite.id(), %granted, "IPMI session open");
        Ok(())
    }

    fn rakp_error(
        &self,
        step: &str,
        status: u8,
        suite: Suite,
        privilege: Privilege,
        user: &str,
    ) -> FenceError {
        let words = wire::rmcp_status(status);
        let device = self.device.clone();
        match status {
            0x0d | 0x0f => FenceError::Auth {
                device,
                detail: format!(": {step}: {words} (user {user:?})"),
            },
            0x09..=0x0b => FenceError::Privilege {
                device,
                message: format!("{step}: user {user:?} at {privilege}: {words}"),
            },
            0x04 | 0x05 | 0x10 | 0x11 => FenceError::Device {
                device,
                message: format!("{step}: cipher suite {}: {words}", suite.id()),
            },
            _ => FenceError::Device {
                device,
                message: format!("{step}: {words} (status 0x{status:02x})"),
            },
        }
    }

    /// Sends a command in the open session and returns its response (any
    /// completion code; the caller decides what is an error).
    pub fn command(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<LanResponse, FenceError> {
        if self.active.is_none() {
            return Err(self.protocol("no open session"));
        }
        let rq_seq = self.next_rq_seq();
        let msg = wire::lan_request(netfn, cmd, rq_seq, data);
        self.exchange(
            "command",
            |s| {
                let Some(a) = s.active.as_mut() else {
                    return Vec::new();
                };
                a.seq = a.seq.wrapping_add(1).max(1);
                wire::packet_v2(
                    payload::IPMI,
                    a.bmc_sid,
                    a.seq,
                    &msg,
                    Some((&a.keys, random())),
                )
            },
            |s, p| s.match_lan(&p, netfn, cmd, rq_seq),
        )
    }

    /// Closes the session (Close Session). Best effort and idempotent: the
    /// session is forgotten whatever the BMC answers.
    pub fn close(&mut self) {
        let Some(bmc_sid) = self.active.as_ref().map(|a| a.bmc_sid) else {
            return;
        };
        let attempts = self.attempts;
        self.attempts = attempts.min(2);
        let r = self.command(0x06, 0x3c, &bmc_sid.to_le_bytes());
        self.attempts = attempts;
        match r {
            Ok(r) if r.cc == 0 => tracing::debug!(device = %self.device, "IPMI session closed"),
            Ok(r) => tracing::warn!(device = %self.device, error = %wire::completion_code(r.cc),
                "Close Session refused"),
            Err(e) => tracing::warn!(device = %self.device, error = %e, "Close Session failed"),
        }
        self.active = None;
    }
}

impl Drop for LanSession {
    fn drop(&mut self) {
        self.close();
    }
}

/// Errors of the [`IpmiConnection`] implementation.
#[derive(Debug)]
pub struct ConnectionError(pub FenceError);

impl IpmiConnection for LanSession {
    type SendError = ConnectionError;
    type RecvError = ConnectionError;
    type Error = ConnectionError;

    fn send(&mut self, _request: &mut Request) -> Result<(), Self::SendError> {
        Err(ConnectionError(self.protocol(
            "send without receive is not supported; use send_recv",
        )))
    }

    fn recv(&mut self) -> Result<Response, Self::RecvError> {
        Err(ConnectionError(self.protocol(
            "receive without send is not supported; use send_recv",
        )))
    }

    fn send_recv(&mut self, request: &mut Request) -> Result<Response, Self::Error> {
        let r = self
            .command(request.netfn_raw(), request.cmd(), request.data())
            .map_err(ConnectionError)?;
        let mut data = Vec::with_capacity(r.data.len() + 1);
        data.push(r.cc);
        data.extend_from_slice(&r.data);
        Response::new(Message::new_raw(r.netfn, r.cmd, data), r.rq_seq as i64)
            .ok_or_else(|| ConnectionError(self.protocol("empty response")))
    }
}
