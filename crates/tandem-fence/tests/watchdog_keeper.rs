//! The keeper against a watchdog device double.

#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tandem_fence::config::HumanDuration;
use tandem_fence::watchdog::ioctl::{WDIOF_KEEPALIVEPING, WDIOF_MAGICCLOSE, WDIOF_SETTIMEOUT};
use tandem_fence::watchdog::{
    Keeper, KeeperConfig, KeeperError, KeeperHandle, Liveness, WatchdogDevice, WatchdogInfo,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Info,
    SetTimeout(u32),
    GetTimeout,
    Keepalive,
    MagicClose,
    Closed,
}

/// What the device double saw.
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<(Instant, Call)>>>);

impl Log {
    fn push(&self, c: Call) {
        self.0.lock().unwrap().push((Instant::now(), c));
    }
    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().iter().map(|(_, c)| *c).collect()
    }
    fn count(&self, c: Call) -> usize {
        self.calls().iter().filter(|&&x| x == c).count()
    }
}

/// A watchdog device double.
#[derive(Debug)]
struct FakeDev {
    log: Log,
    options: u32,
    /// The timeout the "driver" sets whatever is asked (rounding).
    sets: Option<u32>,
}

impl FakeDev {
    fn new(log: &Log) -> Box<FakeDev> {
        Box::new(FakeDev {
            log: log.clone(),
            options: WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING,
            sets: None,
        })
    }
}

impl WatchdogDevice for FakeDev {
    fn name(&self) -> String {
        "/dev/fake-watchdog".into()
    }
    fn info(&mut self) -> io::Result<WatchdogInfo> {
        self.log.push(Call::Info);
        Ok(WatchdogInfo {
            identity: "Fake Watchdog".into(),
            firmware_version: 1,
            options: self.options,
        })
    }
    fn set_timeout(&mut self, seconds: u32) -> io::Result<u32> {
        self.log.push(Call::SetTimeout(seconds));
        Ok(self.sets.unwrap_or(seconds))
    }
    fn timeout(&mut self) -> io::Result<u32> {
        self.log.push(Call::GetTimeout);
        Ok(self.sets.unwrap_or(30))
    }
    fn keepalive(&mut self) -> io::Result<()> {
        self.log.push(Call::Keepalive);
        Ok(())
    }
    fn magic_close(&mut self) -> io::Result<()> {
        self.log.push(Call::MagicClose);
        Ok(())
    }
}

impl Drop for FakeDev {
    fn drop(&mut self) {
        self.log.push(Call::Closed);
    }
}

fn ms(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(n))
}

fn config(interval_ms: u64, wedge_ms: u64) -> KeeperConfig {
    KeeperConfig {
        timeout: HumanDuration(Duration::from_secs(2)),
        interval: Some(ms(interval_ms)),
        wedge_after: ms(wedge_ms),
        ..KeeperConfig::default()
    }
}

/// Touches a Liveness every 10 ms while `on` is set, as the daemon's loop
/// would.
struct Toucher {
    on: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
}

impl Toucher {
    fn start(l: &Liveness) -> Toucher {
        let on = Arc::new(AtomicBool::new(true));
        let quit = Arc::new(AtomicBool::new(false));
        let (l, o, q) = (l.clone(), on.clone(), quit.clone());
        thread::spawn(move || {
            while !q.load(Ordering::Relaxed) {
                if o.load(Ordering::Relaxed) {
                    l.touch();
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        Toucher { on, quit }
    }
    fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }
}

impl Drop for Toucher {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
    }
}

/// Waits (up to 5 s) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn wait_unfit(h: &KeeperHandle) {
    wait_until("the keeper to become unfit", || !h.status().fit);
}

#[test]
fn sets_timeout_pets_each_interval_and_magic_closes_on_stop() {
    let log = Log::default();
    let live = Liveness::new();
    let _t = Toucher::start(&live);
    let h = Keeper::new(config(50, 10_000), live)
        .start_with_device(FakeDev::new(&log))
        .unwrap();
    let st = h.status();
    assert_eq!(st.timeout, Duration::from_secs(2));
    assert_eq!(st.interval, Duration::from_millis(50));
    assert!(st.backend.contains("/dev/fake-watchdog") && st.backend.contains("Fake Watchdog"));
    thread::sleep(Duration::from_millis(500));
    h.stop().unwrap();

    let calls = log.calls();
    assert_eq!(&calls[..2], &[Call::Info, Call::SetTimeout(2)], "{calls:?}");
    let pets = log.count(Call::Keepalive);
    // About one per 50 ms over 500 ms: loosely, not a flood and not stuck.
    assert!((4..=20).contains(&pets), "{pets} keep-alives: {calls:?}");
    assert_eq!(
        &calls[calls.len() - 2..],
        &[Call::MagicClose, Call::Closed],
        "clean stop = magic close, then close: {calls:?}"
    );
    assert_eq!(log.count(Call::MagicClose), 1);
    // The keep-alives are spread out, not a burst.
    let times: Vec<Instant> = log
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, c)| *c == Call::Keepalive)
        .map(|(t, _)| *t)
        .collect();
    let span = times[times.len() - 1] - times[0];
    assert!(
        span >= Duration::from_millis(150),
        "keep-alives within {span:?}"
    );
}

#[test]
fn reads_back_the_timeout_the_driver_set() {
    let log = Log::default();
    let mut dev = FakeDev::new(&log);
    dev.sets = Some(3);
    let h = Keeper::new(config(50, 10_000), Liveness::new())
        .start_with_device(dev)
        .unwrap();
    assert_eq!(h.status().timeout, Duration::from_secs(3));
    h.stop().unwrap();

    // A driver that cannot set its timeout: its own is used.
    let log = Log::default();
    let mut dev = FakeDev::new(&log);
    dev.options = WDIOF_MAGICCLOSE;
    dev.sets = Some(7);
    let h = Keeper::new(config(50, 10_000), Liveness::new())
        .start_with_device(dev)
        .unwrap();
    assert_eq!(h.status().timeout, Duration::from_secs(7));
    h.stop().unwrap();
    let calls = log.calls();
    assert_eq!(&calls[..2], &[Call::Info, Call::GetTimeout], "{calls:?}");
    assert!(!calls.iter().any(|c| matches!(c, Call::SetTimeout(_))));
}

#[test]
fn interval_too_long_for_the_timeout_set_disarms_and_fails() {
    let log = Log::default();
    let mut dev = FakeDev::new(&log);
    dev.sets = Some(1);
    let cfg = config(800, 10_000);
    let e = Keeper::new(cfg, Liveness::new())
        .start_with_device(dev)
        .unwrap_err();
    assert!(matches!(e, KeeperError::Config(_)), "{e}");
    assert!(e.to_string().contains("interval"), "{e}");
    // The keeper never took the device over: it is disarmed, not left to
    // reset the node.
    assert_eq!(
        log.calls(),
        vec![
            Call::Info,
            Call::SetTimeout(2),
            Call::MagicClose,
            Call::Closed
        ]
    );
}

#[test]
fn wedged_daemon_stops_petting_without_magic_close_then_resumes() {
    let log = Log::default();
    let live = Liveness::new();
    let toucher = Toucher::start(&live);
    let h = Keeper::new(config(30, 150), live)
        .start_with_device(FakeDev::new(&log))
        .unwrap();
    wait_until("keep-alives", || log.count(Call::Keepalive) >= 3);

    // The daemon's loop wedges: the heartbeat goes stale.
    toucher.set(false);
    wait_unfit(&h);
    let st = h.status();
    assert!(
        st.unfit_reason.as_deref().unwrap_or("").contains("wedged"),
        "{st:?}"
    );
    let pets = log.count(Call::Keepalive);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        log.count(Call::Keepalive),
        pets,
        "no keep-alive while wedged"
    );
    assert_eq!(
        log.count(Call::MagicClose),
        0,
        "never disarmed while wedged"
    );
    assert_eq!(log.count(Call::Closed), 0, "the device stays open");

    // The daemon recovers before the reset: petting resumes.
    toucher.set(true);
    wait_until("petting to resume", || {
        log.count(Call::Keepalive) > pets + 2
    });
    assert!(h.status().fit);
    h.stop().unwrap();
    assert_eq!(log.count(Call::MagicClose), 1);
}

#[test]
fn closed_gate_stops_petting_and_stop_leaves_the_watchdog_armed() {
    let log = Log::default();
    let live = Liveness::new();
    let _t = Toucher::start(&live);
    let quorum = Arc::new(AtomicBool::new(true));
    let q = quorum.clone();
    let h = Keeper::new(config(30, 10_000), live)
        .with_gate("quorum", move || q.load(Ordering::Relaxed))
        .start_with_device(FakeDev::new(&log))
        .unwrap();
    wait_until("keep-alives", || log.count(Call::Keepalive) >= 3);

    quorum.store(false, Ordering::Relaxed);
    wait_unfit(&h);
    let reason = h.status().unfit_reason.unwrap_or_default();
    assert!(reason.contains("quorum"), "{reason}");
    let pets = log.count(Call::Keepalive);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        log.count(Call::Keepalive),
        pets,
        "no keep-alive while gated"
    );

    // The gate opens again: petting resumes.
    quorum.store(true, Ordering::Relaxed);
    wait_until("petting to resume", || log.count(Call::Keepalive) > pets);

    // Stopping while the gate is closed does not disarm the watchdog.
    quorum.store(false, Ordering::Relaxed);
    wait_unfit(&h);
    let e = h.stop().unwrap_err();
    assert!(matches!(e, KeeperError::StoppedUnfit { .. }), "{e}");
    assert!(e.to_string().contains("quorum"), "{e}");
    assert_eq!(log.count(Call::MagicClose), 0);
    assert_eq!(log.count(Call::Closed), 0, "the device is kept open, armed");
}

#[test]
fn panicking_gate_counts_as_closed() {
    let log = Log::default();
    let live = Liveness::new();
    let _t = Toucher::start(&live);
    let h = Keeper::new(config(30, 10_000), live)
        .with_gate("quorum", || panic!("quorum check failed"))
        .start_with_device(FakeDev::new(&log))
        .unwrap();
    wait_unfit(&h);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(log.count(Call::Keepalive), 0);
    assert!(h.stop().is_err());
    assert_eq!(log.count(Call::MagicClose), 0);
}

#[test]
fn stale_heartbeat_does_not_prevent_a_clean_stop() {
    let log = Log::default();
    let h = Keeper::new(config(30, 100), Liveness::new())
        .start_with_device(FakeDev::new(&log))
        .unwrap();
    wait_unfit(&h);
    h.stop().unwrap();
    let calls = log.calls();
    assert_eq!(
        &calls[calls.len() - 2..],
        &[Call::MagicClose, Call::Closed],
        "{calls:?}"
    );
}

#[test]
fn dropping_the_handle_abandons_the_watchdog_armed() {
    let log = Log::default();
    let live = Liveness::new();
    let _t = Toucher::start(&live);
    let h = Keeper::new(config(20, 10_000), live)
        .start_with_device(FakeDev::new(&log))
        .unwrap();
    wait_until("keep-alives", || log.count(Call::Keepalive) >= 2);
    drop(h);
    thread::sleep(Duration::from_millis(100));
    let pets = log.count(Call::Keepalive);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        log.count(Call::Keepalive),
        pets,
        "no keep-alive after the drop"
    );
    assert_eq!(log.count(Call::MagicClose), 0);
    assert_eq!(log.count(Call::Closed), 0);
}

#[test]
fn liveness_ages_and_touch_resets() {
    let l = Liveness::new();
    thread::sleep(Duration::from_millis(30));
    assert!(l.age() >= Duration::from_millis(25), "{:?}", l.age());
    l.clone().touch();
    assert!(l.age() < Duration::from_millis(25), "{:?}", l.age());
}

#[test]
fn keeper_config_keys_and_defaults() {
    let c: KeeperConfig = toml::from_str("").unwrap();
    assert_eq!(c.device.to_str(), Some("/dev/watchdog"));
    assert_eq!(c.mux_socket.to_str(), Some("/run/watchdog-mux.sock"));
    assert_eq!(c.timeout.0, Duration::from_secs(60));
    assert_eq!(c.interval, None);
    assert_eq!(c.wedge_after.0, Duration::from_secs(10));

    let c: KeeperConfig = toml::from_str(
        r#"
        device = "/dev/watchdog1"
        mux_socket = "/tmp/mux.sock"
        timeout = "30s"
        interval = "5s"
        wedge_after = "20s"
        "#,
    )
    .unwrap();
    assert_eq!(c.interval, Some(HumanDuration(Duration::from_secs(5))));
    assert_eq!(c.wedge_after.0, Duration::from_secs(20));

    let e = toml::from_str::<KeeperConfig>("devcie = \"/dev/watchdog\"\n").unwrap_err();
    assert!(e.to_string().contains("devcie"), "{e}");

    // The default interval is timeout / 6.
    let log = Log::default();
    let cfg = KeeperConfig {
        timeout: HumanDuration(Duration::from_secs(6)),
        ..KeeperConfig::default()
    };
    let h = Keeper::new(cfg, Liveness::new())
        .start_with_device(FakeDev::new(&log))
        .unwrap();
    assert_eq!(h.status().interval, Duration::from_secs(1));
    h.stop().unwrap();

    // Zero wedge_after is refused; the device handed in is disarmed.
    let log = Log::default();
    let cfg = KeeperConfig {
        wedge_after: ms(0),
        ..KeeperConfig::default()
    };
    let e = Keeper::new(cfg, Liveness::new())
        .start_with_device(FakeDev::new(&log))
        .unwrap_err();
    assert!(e.to_string().contains("wedge_after"), "{e}");
    assert_eq!(log.calls(), vec![Call::MagicClose, Call::Closed]);
}
