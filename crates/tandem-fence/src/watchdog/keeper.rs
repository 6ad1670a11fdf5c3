//! The self-fencing keeper: holds this node's watchdog while the node is
//! fit to run its primaries.
//!
//! ```toml
//! [watchdog]
//! device = "/dev/watchdog"               # used when the mux socket is absent
//! mux_socket = "/run/watchdog-mux.sock"  # Proxmox: watchdog-mux owns the device
//! timeout = "60s"                        # device only; the mux's is 60 s
//! interval = "10s"                       # default: the timeout / 6
//! wedge_after = "10s"                    # daemon heartbeat older than this = wedged
//! ```
//!
//! The keeper runs on its own OS thread, not on the async runtime: a
//! wedged runtime must not keep the node alive. Every `interval` it checks
//! the node's fitness (the daemon's [`Liveness`] was touched within
//! `wedge_after`, and the gate, if any, says yes) and pets the watchdog
//! only then. An unfit node is *not* disarmed (no magic close): the keeper
//! logs loudly, keeps the device open and lets the watchdog reset the node
//! unless fitness comes back first. Only [`KeeperHandle::stop`] disarms it,
//! and only while the gate says yes.

use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::ioctl::{DevWatchdog, WatchdogDevice};
use super::mux::{MuxClient, MUX_CLIENT_TIMEOUT};
use crate::config::HumanDuration;

/// The default watchdog device.
pub const DEFAULT_DEVICE: &str = "/dev/watchdog";
/// The default socket of Proxmox's `watchdog-mux`.
pub const DEFAULT_MUX_SOCKET: &str = "/run/watchdog-mux.sock";
/// The default device timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default age of the daemon's heartbeat after which it counts as
/// wedged.
pub const DEFAULT_WEDGE_AFTER: Duration = Duration::from_secs(10);

/// The keeper's configuration (the `[watchdog]` table).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeeperConfig {
    /// The watchdog device, opened when `mux_socket` does not exist.
    /// Default `/dev/watchdog`.
    #[serde(default = "default_device")]
    pub device: PathBuf,
    /// The socket of Proxmox's `watchdog-mux`; when it exists the keeper
    /// is a client of the mux instead of opening the device. Default
    /// `/run/watchdog-mux.sock`.
    #[serde(default = "default_mux_socket")]
    pub mux_socket: PathBuf,
    /// The device's timeout, set with `WDIOC_SETTIMEOUT` (whole seconds,
    /// rounded up). With `watchdog-mux` the mux's 60 s applies instead.
    /// Default 60 s.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How often to pet the watchdog; at most half the timeout. Default:
    /// the (effective) timeout / 6.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// The daemon counts as wedged, and the keeper stops petting, when its
    /// [`Liveness`] was last touched longer ago than this. Default 10 s.
    #[serde(default = "default_wedge_after")]
    pub wedge_after: HumanDuration,
}

fn default_device() -> PathBuf {
    PathBuf::from(DEFAULT_DEVICE)
}
fn default_mux_socket() -> PathBuf {
    PathBuf::from(DEFAULT_MUX_SOCKET)
}
fn default_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_TIMEOUT)
}
fn default_wedge_after() -> HumanDuration {
    HumanDuration(DEFAULT_WEDGE_AFTER)
}

impl Default for KeeperConfig {
    fn default() -> Self {
        KeeperConfig {
            device: default_device(),
            mux_socket: default_mux_socket(),
            timeout: default_timeout(),
            interval: None,
            wedge_after: default_wedge_after(),
        }
    }
}

impl KeeperConfig {
    /// The petting interval for an effective watchdog `timeout`.
    fn interval_for(&self, timeout: Duration) -> Result<Duration, KeeperError> {
        let interval = self.interval.map(|d| d.0).unwrap_or(timeout / 6);
        if interval.is_zero() || interval * 2 > timeout {
            return Err(KeeperError::Config(format!(
                "watchdog interval {} must be more than 0 and at most half the watchdog timeout {}",
                fmt_d(interval),
                fmt_d(timeout)
            )));
        }
        Ok(interval)
    }

    /// The device timeout in whole seconds (rounded up).
    fn timeout_secs(&self) -> Result<u32, KeeperError> {
        let t = self.timeout.0;
        let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
        match u32::try_from(secs) {
            Ok(s) if s > 0 && s <= i32::MAX as u32 => Ok(s),
            _ => Err(KeeperError::Config(format!(
                "watchdog timeout {} is out of range",
                fmt_d(t)
            ))),
        }
    }

    fn validate(&self) -> Result<(), KeeperError> {
        if self.wedge_after.0.is_zero() {
            return Err(KeeperError::Config(
                "watchdog wedge_after must be more than 0".into(),
            ));
        }
        self.timeout_secs()?;
        Ok(())
    }
}

fn fmt_d(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// Why the keeper could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// Neither the mux socket nor the device exists.
    #[error(
        "no watchdog: neither watchdog-mux's socket {} nor the device {} exists \
         (load a watchdog driver, e.g. `modprobe softdog`)",
        mux_socket.display(),
        device.display()
    )]
    NoWatchdog {
        /// The device looked for.
        device: PathBuf,
        /// The socket looked for.
        mux_socket: PathBuf,
    },
    /// The device exists but could not be opened.
    #[error("cannot open watchdog device {}: {source}{}", path.display(), busy_hint(source))]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The device refused an ioctl (e.g. it is not a watchdog).
    #[error("watchdog device {device}: {source}")]
    Device {
        /// The device.
        device: String,
        /// What failed.
        source: io::Error,
    },
    /// The mux socket exists but does not accept connections.
    #[error("cannot connect to watchdog-mux at {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The keeper thread could not be started.
    #[error("cannot start the watchdog keeper thread: {0}")]
    Spawn(io::Error),
    /// `stop` was called while the gate said no: the watchdog was left
    /// armed, and the node will reset.
    #[error(
        "watchdog keeper stopped while the node is unfit ({reason}): \
         the watchdog was left armed and the node will reset"
    )]
    StoppedUnfit {
        /// Why the node is unfit.
        reason: String,
    },
    /// Writing the magic close failed: the watchdog may still be armed.
    #[error("clean close of {backend} failed: {source}; the watchdog may still be armed")]
    MagicClose {
        /// The backend.
        backend: String,
        /// Why.
        source: io::Error,
    },
    /// The keeper thread panicked.
    #[error("the watchdog keeper thread panicked")]
    Panicked,
}

fn busy_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(nix::libc::EBUSY) {
        " (another watchdog daemon holds it: watchdog-mux, systemd's RuntimeWatchdogSec, watchdog(8)?)"
    } else {
        ""
    }
}

/// The daemon's heartbeat for the keeper: the daemon's main loop calls
/// [`touch`](Liveness::touch) every turn; a heartbeat older than
/// `wedge_after` means the daemon is wedged. Cheap to clone and to touch
/// (one atomic store), monotonic (immune to clock changes).
#[derive(Clone)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

struct LivenessInner {
    origin: Instant,
    /// Milliseconds since `origin` at the last touch.
    last_ms: AtomicU64,
}

impl Liveness {
    /// A heartbeat, touched now.
    pub fn new() -> Self {
        Liveness {
            inner: Arc::new(LivenessInner {
                origin: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records that the daemon is alive now.
    pub fn touch(&self) {
        self.inner
            .last_ms
            .fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// How long ago the last touch was.
    pub fn age(&self) -> Duration {
        let last = self.inner.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new()
    }
}

impl fmt::Debug for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Liveness")
            .field("age", &self.age())
            .finish()
    }
}

type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

/// A keeper, configured but not started. See the [module](self) docs.
pub struct Keeper {
    config: KeeperConfig,
    liveness: Liveness,
    gate: Option<(String, Gate)>,
}

impl fmt::Debug for Keeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keeper")
            .field("config", &self.config)
            .field("liveness", &self.liveness)
            .field("gate", &self.gate.as_ref().map(|(n, _)| n))
            .finish()
    }
}

/// What the keeper is doing, for status output and tests.
#[derive(Debug, Clone)]
pub struct KeeperStatus {
    /// The backend, e.g. "watchdog-mux /run/watchdog-mux.sock" or
    /// "/dev/watchdog (Software Watchdog)".
    pub backend: String,
    /// The effective watchdog timeout.
    pub timeout: Duration,
    /// The petting interval.
    pub interval: Duration,
    /// Whether the last fitness check passed (so the keeper is petting).
    pub fit: bool,
    /// Why the node is unfit, when it is.
    pub unfit_reason: Option<String>,
    /// Keep-alives sent successfully.
    pub keepalives: u64,
    /// Keep-alives that failed.
    pub failed_keepalives: u64,
    /// When the last successful keep-alive was sent.
    pub last_keepalive: Option<Instant>,
}

enum Backend {
    Device(Box<dyn WatchdogDevice>),
    Mux(MuxClient),
}

impl Backend {
    fn keepalive(&mut self) -> io::Result<()> {
        match self {
            Backend::Device(d) => d.keepalive(),
            Backend::Mux(m) => m.keepalive(),
        }
    }

    fn magic_close(&mut self) -> io::Result<()> {
        match self {
            Backend::Device(d) => d.magic_close(),
            Backend::Mux(m) => m.magic_close(),
        }
    }

    /// Gives the backend up without disarming it.
    fn leave_armed(self) {
        match self {
            // Keep the fd open until the process exits: on a driver without
            // magic close, closing it would disarm the watchdog.
            Backend::Device(d) => std::mem::forget(d),
            // A close without `V` makes the mux reset the node.
            Backend::Mux(m) => drop(m),
        }
    }
}

enum Command {
    Stop,
}

impl Keeper {
    /// A keeper that pets while `liveness` is younger than the config's
    /// `wedge_after`.
    pub fn new(config: KeeperConfig, liveness: Liveness) -> Self {
        Keeper {
            config,
            liveness,
            gate: None,
        }
    }

    /// Adds a gate: the keeper pets only while `gate()` returns true (e.g.
    /// "this node has quorum"). `name` appears in logs. The gate is called
    /// on the keeper's thread every interval and must be quick; a gate that
    /// panics counts as closed. [`KeeperHandle::stop`] disarms the
    /// watchdog only while the gate is open.
    pub fn with_gate(
        mut self,
        name: impl Into<String>,
        gate: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        self.gate = Some((name.into(), Arc::new(gate)));
        self
    }

    /// Starts the keeper on the backend the config chooses: `watchdog-mux`
    /// when its socket exists, else the device. Opening the device arms the
    /// watchdog.
    pub fn start(self) -> Result<KeeperHandle, KeeperError> {
        self.config.validate()?;
        let socket = self.config.mux_socket.clone();
        // An error other than "not found" counts as present: the connect
        // then reports it.
        if socket.try_exists().unwrap_or(true) {
            let interval = self.config.interval_for(MUX_CLIENT_TIMEOUT)?;
            let client =
                MuxClient::connect(&socket, interval).map_err(|source| KeeperError::Connect {
                    path: socket.clone(),
                    source,
                })?;
            if self.config.timeout.0 != MUX_CLIENT_TIMEOUT {
                tracing::warn!(
                    socket = %socket.display(),
                    timeout = %fmt_d(self.config.timeout.0),
                    "watchdog timeout ignored: watchdog-mux resets the node after 60s of silence"
                );
            }
            tracing::info!(socket = %socket.display(), "watchdog keeper: using watchdog-mux");
            let backend = format!("watchdog-mux {}", socket.display());
            return self.spawn(Backend::Mux(client), backend, MUX_CLIENT_TIMEOUT, interval);
        }
        let path = self.config.device.clone();
        match DevWatchdog::open(&path) {
            Ok(dev) => self.start_with_device(Box::new(dev)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KeeperError::NoWatchdog {
                device: path,
                mux_socket: socket,
            }),
            Err(source) => Err(KeeperError::Open { path, source }),
        }
    }

    /// Starts the keeper on an open device (the real one, or a test
    /// double): reads its identity (`WDIOC_GETSUPPORT`), sets the timeout
    /// (`WDIOC_SETTIMEOUT`, reading back what the driver set) and pets it
    /// every interval from then on. If setting up fails, the device is
    /// magic-closed (disarmed) before the error is returned: the keeper
    /// never took it over.
    pub fn start_with_device(
        self,
        mut dev: Box<dyn WatchdogDevice>,
    ) -> Result<KeeperHandle, KeeperError> {
        match self.setup_device(dev.as_mut()) {
            Ok((backend, timeout, interval)) => {
                self.spawn(Backend::Device(dev), backend, timeout, interval)
            }
            Err(e) => {
                if let Err(close) = dev.magic_close() {
                    tracing::error!(device = %dev.name(), error = %close,
                        "could not disarm the watchdog after a failed setup: the node may reset");
                }
                Err(e)
            }
        }
    }

    fn setup_device(
        &self,
        dev: &mut dyn WatchdogDevice,
    ) -> Result<(String, Duration, Duration), KeeperError> {
        self.config.validate()?;
        let name = dev.name();
        let device_err = |source| KeeperError::Device {
            device: name.clone(),
            source,
        };
        let info = dev.info().map_err(device_err)?;
        tracing::info!(device = %name, identity = %info.identity,
            firmware_version = info.firmware_version, options = %info.option_names(),
            "watchdog keeper: opened watchdog device");
        if !info.has_magic_close() {
            tracing::warn!(device = %name, identity = %info.identity,
                "watchdog driver has no magic close: if tandem dies, closing the device disarms \
                 it unless the driver was loaded with nowayout=1");
        }
        let want = self.config.timeout_secs()?;
        let secs = if info.can_set_timeout() {
            let got = dev.set_timeout(want).map_err(device_err)?;
            if got != want {
                tracing::warn!(device = %name, requested = want, set = got,
                    "watchdog driver set a different timeout than requested");
            }
            got
        } else {
            let got = dev.timeout().map_err(device_err)?;
            tracing::warn!(device = %name, requested = want, timeout = got,
                "watchdog driver cannot set its timeout; using its own");
            got
        };
        let timeout = Duration::from_secs(u64::from(secs));
        let interval = self.config.interval_for(timeout)?;
        tracing::info!(device = %name, timeout_s = secs, interval = %fmt_d(interval),
            "watchdog keeper: timeout set");
        let backend = if info.identity.is_empty() {
            name
        } else {
            format!("{name} ({})", info.identity)
        };
        Ok((backend, timeout, interval))
    }

    fn spawn(
        self,
        backend: Backend,
        name: String,
        timeout: Duration,
        interval: Duration,
    ) -> Result<KeeperHandle, KeeperError> {
        let status = Arc::new(Mutex::new(KeeperStatus {
            backend: name.clone(),
            timeout,
            interval,
            fit: true,
            unfit_reason: None,
            keepalives: 0,
            failed_keepalives: 0,
            last_keepalive: None,
        }));
        let (tx, rx) = mpsc::channel();
        let mut run = Run {
            backend: None,
            name,
            timeout,
            interval,
            wedge_after: self.config.wedge_after.0,
            liveness: self.liveness,
            gate: self.gate,
            status: status.clone(),
            rx,
        };
        // The backend is handed over only once the thread runs: if it
        // cannot be started, the watchdog is disarmed here rather than
        // dropped armed.
        let (backend_tx, backend_rx) = mpsc::channel::<Backend>();
        let spawned = thread::Builder::new()
            .name("tandem-watchdog".into())
            .spawn(move || match backend_rx.recv() {
                Ok(backend) => {
                    run.backend = Some(backend);
                    run.run()
                }
                Err(_) => Ok(()),
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                let mut backend = backend;
                if let Err(close) = backend.magic_close() {
                    tracing::error!(error = %close,
                        "could not disarm the watchdog after failing to start the keeper");
                }
                return Err(KeeperError::Spawn(e));
            }
        };
        if let Err(mpsc::SendError(backend)) = backend_tx.send(backend) {
            // The thread is gone already (it cannot be, short of a panic).
            backend.leave_armed();
            return Err(KeeperError::Panicked);
        }
        Ok(KeeperHandle {
            tx: Some(tx),
            thread: Some(thread),
            status,
        })
    }
}

/// A running keeper.
///
/// [`stop`](KeeperHandle::stop) is the clean shutdown. Dropping the handle
/// without it abandons the watchdog: the keeper stops petting and leaves it
/// armed, so the node resets (the owner is gone; nobody would stop it).
#[derive(Debug)]
pub struct KeeperHandle {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<Result<(), KeeperError>>>,
    status: Arc<Mutex<KeeperStatus>>,
}

impl KeeperHandle {
    /// What the keeper is doing now.
    pub fn status(&self) -> KeeperStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stops the keeper and waits for its thread. While the gate is open
    /// this disarms the watchdog (magic close: `V`, then close). While the
    /// gate is closed it does not: the watchdog stays armed, the node will
    /// reset, and this returns [`KeeperError::StoppedUnfit`]. A stale
    /// daemon heartbeat does not prevent a clean stop: the caller is
    /// evidently alive.
    pub fn stop(mut self) -> Result<(), KeeperError> {
        if let Some(tx) = self.tx.take() {
            // The thread may have ended already; the join reports why.
            let _ = tx.send(Command::Stop);
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| KeeperError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for KeeperHandle {
    fn drop(&mut self) {
        // Dropping the sender tells the thread to abandon the watchdog.
        self.tx.take();
    }
}

/// The keeper thread's state.
struct Run {
    backend: Option<Backend>,
    name: String,
    timeout: Duration,
    interval: Duration,
    wedge_after: Duration,
    liveness: Liveness,
    gate: Option<(String, Gate)>,
    status: Arc<Mutex<KeeperStatus>>,
    rx: mpsc::Receiver<Command>,
}

impl Run {
    fn update(&self, f: impl FnOnce(&mut KeeperStatus)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Whether the gate is open; a panicking gate counts as closed.
    fn gate_open(&self) -> Result<(), String> {
        let Some((name, gate)) = &self.gate else {
            return Ok(());
        };
        match catch_unwind(AssertUnwindSafe(|| gate())) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{name} gate is closed")),
            Err(_) => Err(format!("{name} gate panicked")),
        }
    }

    fn fitness(&self) -> Result<(), String> {
        let age = self.liveness.age();
        if age >= self.wedge_after {
            return Err(format!(
                "daemon heartbeat is {} old (wedge_after {}): daemon wedged",
                fmt_d(round_ms(age)),
                fmt_d(self.wedge_after)
            ));
        }
        self.gate_open()
    }

    fn run(mut self) -> Result<(), KeeperError> {
        let mut fit = true;
        let mut last_pet: Option<Instant> = None;
        let mut next = Instant::now();
        loop {
            match self.fitness() {
                Ok(()) => {
                    if !fit {
                        tracing::warn!(backend = %self.name,
                            "watchdog keeper: node fit again, petting resumes");
                        fit = true;
                    }
                    self.pet(&mut last_pet);
                }
                Err(reason) => {
                    let remaining = last_pet
                        .map(|t| self.timeout.saturating_sub(t.elapsed()))
                        .unwrap_or(self.timeout);
                    if fit {
                        tracing::error!(backend = %self.name, %reason,
                            resets_in = %fmt_d(round_ms(remaining)),
                            "watchdog keeper: node UNFIT, STOPPED PETTING the watchdog: \
                             the node will reset unless it becomes fit again");
                        fit = false;
                    } else {
                        tracing::error!(backend = %self.name, %reason,
                            resets_in = %fmt_d(round_ms(remaining)),
                            "watchdog keeper: node still unfit, not petting");
                    }
                    self.update(|s| {
                        s.fit = false;
                        s.unfit_reason = Some(reason);
                    });
                }
            }
            next += self.interval;
            let now = Instant::now();
            if next < now {
                next = now + self.interval;
            }
            match self.rx.recv_timeout(next - now) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(Command::Stop) => return self.stop(),
                Err(RecvTimeoutError::Disconnected) => {
                    tracing::error!(backend = %self.name,
                        "watchdog keeper handle dropped without stop: leaving the watchdog \
                         armed, the node will reset");
                    if let Some(b) = self.backend.take() {
                        b.leave_armed();
                    }
                    return Ok(());
                }
            }
        }
    }

    fn pet(&mut self, last_pet: &mut Option<Instant>) {
        let Some(backend) = self.backend.as_mut() else {
            return;
        };
        match backend.keepalive() {
            Ok(()) => {
                let now = Instant::now();
                *last_pet = Some(now);
                tracing::trace!(backend = %self.name, "watchdog keep-alive");
                self.update(|s| {
                    s.fit = true;
                    s.unfit_reason = None;
                    s.keepalives += 1;
                    s.last_keepalive = Some(now);
                });
            }
            Err(e) => {
                tracing::error!(backend = %self.name, error = %e,
                    "watchdog keep-alive FAILED: the node will reset if this persists");
                self.update(|s| {
                    s.fit = true;
                    s.unfit_reason = None;
                    s.failed_keepalives += 1;
                });
            }
        }
    }

    fn stop(mut self) -> Result<(), KeeperError> {
        let Some(mut backend) = self.backend.take() else {
            return Ok(());
        };
        if let Err(reason) = self.gate_open() {
            tracing::error!(backend = %self.name, %reason,
                "watchdog keeper stopped while the node is unfit: NOT disarming the watchdog, \
                 the node will reset");
            backend.leave_armed();
            return Err(KeeperError::StoppedUnfit { reason });
        }
        match backend.magic_close() {
            Ok(()) => {
                tracing::info!(backend = %self.name, "watchdog keeper stopped: watchdog disarmed");
                Ok(())
            }
            Err(source) => {
                tracing::error!(backend = %self.name, error = %source,
                    "watchdog magic close failed: the watchdog may still be armed");
                Err(KeeperError::MagicClose {
                    backend: self.name.clone(),
                    source,
                })
            }
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
