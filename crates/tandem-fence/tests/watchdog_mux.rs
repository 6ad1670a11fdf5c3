//! The keeper against a stand-in for Proxmox's watchdog-mux (a real unix
//! socket in a temp dir), and the choice of backend.

#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tandem_fence::config::HumanDuration;
use tandem_fence::watchdog::{Keeper, KeeperConfig, KeeperError, KeeperHandle, Liveness};

use tandem_testkit::fake_mux::FakeMux;

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

struct Setup {
    _dir: tempfile::TempDir,
    device: PathBuf,
    socket: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    Setup {
        device: dir.path().join("watchdog"),
        socket: dir.path().join("watchdog-mux.sock"),
        _dir: dir,
    }
}

fn config(s: &Setup, interval_ms: u64, wedge_ms: u64) -> KeeperConfig {
    KeeperConfig {
        device: s.device.clone(),
        mux_socket: s.socket.clone(),
        timeout: HumanDuration(Duration::from_secs(60)),
        interval: Some(HumanDuration(Duration::from_millis(interval_ms))),
        wedge_after: HumanDuration(Duration::from_millis(wedge_ms)),
    }
}

/// Touches the liveness every 10 ms until the returned flag is cleared.
fn touch_while(l: &Liveness) -> Arc<AtomicBool> {
    let on = Arc::new(AtomicBool::new(true));
    let (l, o) = (l.clone(), on.clone());
    thread::spawn(move || {
        while o.load(Ordering::Relaxed) {
            l.touch();
            thread::sleep(Duration::from_millis(10));
        }
    });
    on
}

fn wait_unfit(h: &KeeperHandle) {
    wait_until("the keeper to become unfit", || !h.status().fit);
}

#[test]
fn uses_the_mux_when_its_socket_exists_and_says_v_on_stop() {
    let s = setup();
    let mux = FakeMux::start(&s.socket);
    let live = Liveness::new();
    let touching = touch_while(&live);
    let h = Keeper::new(config(&s, 50, 10_000), live).start().unwrap();
    let st = h.status();
    assert!(st.backend.contains("watchdog-mux"), "{st:?}");
    assert_eq!(
        st.timeout,
        Duration::from_secs(60),
        "the mux's client timeout"
    );
    thread::sleep(Duration::from_millis(500));
    let n = mux.count();
    assert!((4..=20).contains(&n), "{n} keep-alive bytes in 500 ms");
    assert_eq!(mux.vs(), 0, "no V while running");
    assert!(!mux.closed());

    h.stop().unwrap();
    wait_until("the connection to close", || mux.closed());
    let bytes = mux.bytes();
    assert_eq!(
        bytes.last(),
        Some(&b'V'),
        "clean stop ends with V: {bytes:?}"
    );
    assert_eq!(mux.vs(), 1);
    touching.store(false, Ordering::Relaxed);
}

#[test]
fn wedged_keeper_goes_silent_and_never_says_v() {
    let s = setup();
    let mux = FakeMux::start(&s.socket);
    let live = Liveness::new();
    let touching = touch_while(&live);
    let h = Keeper::new(config(&s, 30, 150), live).start().unwrap();
    wait_until("keep-alives", || mux.count() >= 3);

    touching.store(false, Ordering::Relaxed);
    wait_unfit(&h);
    let n = mux.count();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(mux.count(), n, "silence while wedged");
    assert_eq!(mux.vs(), 0);
    assert!(!mux.closed(), "the connection stays open while wedged");

    // The owner goes away without a clean stop: the connection closes
    // without V, which makes the real mux reset the node.
    drop(h);
    wait_until("the connection to close", || mux.closed());
    assert_eq!(mux.vs(), 0, "{:?}", mux.bytes());
}

#[test]
fn stop_with_the_gate_closed_closes_without_v() {
    let s = setup();
    let mux = FakeMux::start(&s.socket);
    let live = Liveness::new();
    let touching = touch_while(&live);
    let h = Keeper::new(config(&s, 30, 10_000), live)
        .with_gate("quorum", || false)
        .start()
        .unwrap();
    wait_unfit(&h);
    let e = h.stop().unwrap_err();
    assert!(matches!(e, KeeperError::StoppedUnfit { .. }), "{e}");
    wait_until("the connection to close", || mux.closed());
    assert_eq!(mux.count(), 0, "{:?}", mux.bytes());
    touching.store(false, Ordering::Relaxed);
}

#[test]
fn missing_device_and_socket_names_both() {
    let s = setup();
    let e = Keeper::new(config(&s, 30, 10_000), Liveness::new())
        .start()
        .unwrap_err();
    assert!(matches!(e, KeeperError::NoWatchdog { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(s.device.to_str().unwrap()), "{msg}");
    assert!(msg.contains(s.socket.to_str().unwrap()), "{msg}");
}

#[test]
fn without_the_socket_the_device_is_used() {
    // A regular file stands in for the device: it opens, but is no
    // watchdog, so the first ioctl fails, naming the device; the keeper
    // then disarms what it opened (writes the magic V).
    let s = setup();
    std::fs::write(&s.device, b"").unwrap();
    let e = Keeper::new(config(&s, 30, 10_000), Liveness::new())
        .start()
        .unwrap_err();
    assert!(matches!(e, KeeperError::Device { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(s.device.to_str().unwrap()), "{msg}");
    assert!(msg.contains("WDIOC_GETSUPPORT"), "{msg}");
    assert_eq!(std::fs::read(&s.device).unwrap(), b"V");
}

#[test]
fn a_stale_socket_is_a_connect_error_naming_it() {
    let s = setup();
    drop(UnixListener::bind(&s.socket).unwrap());
    let e = Keeper::new(config(&s, 30, 10_000), Liveness::new())
        .start()
        .unwrap_err();
    assert!(matches!(e, KeeperError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(s.socket.to_str().unwrap()), "{e}");
}
