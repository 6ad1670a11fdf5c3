//! The real `tandem daemon` holding a watchdog: a fake watchdog-mux (a unix
//! socket this test owns; any byte is a keep-alive, `V` then close is a
//! clean goodbye, a close without `V` resets the node) stands in for
//! Proxmox's. No ZFS needed: the configs have no jobs.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use tandem_testkit::fake_mux::FakeMux;

/// Generous: the build machine is shared and slow.
const PATIENCE: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A temp dir with a config, a state dir and the socket's place.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn socket(&self) -> PathBuf {
        self.path("watchdog-mux.sock")
    }
    fn device(&self) -> PathBuf {
        self.path("no-watchdog")
    }
    fn config_path(&self) -> PathBuf {
        self.path("tandem.toml")
    }
    /// A config without jobs; `watchdog` is the body of `[watchdog]`
    /// after its device and socket.
    fn config_text(&self, watchdog: &str) -> String {
        format!(
            "state_dir = \"{}\"\nlocal_node = \"me\"\n[nodes.me]\naddress = \"local\"\n\n\
             [watchdog]\ndevice = \"{}\"\nmux_socket = \"{}\"\n{watchdog}",
            self.path("state").display(),
            self.device().display(),
            self.socket().display()
        )
    }
    fn write_config(&self, watchdog: &str) {
        std::fs::write(self.config_path(), self.config_text(watchdog)).unwrap();
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
    fn tandem(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .unwrap()
    }
    fn spawn_daemon(&self) -> Daemon {
        let log = std::fs::File::create(self.path("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(self.config_path())
            .arg("daemon")
            .env("TANDEM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child }
    }
    fn wait_log(&self, needle: &str) {
        let t = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                t.elapsed() < PATIENCE,
                "timed out waiting for {needle:?} in the daemon log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The daemon; killed (and resumed, if stopped) if the test ends early.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }
    fn wait(&mut self) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t.elapsed() < PATIENCE, "the daemon did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Fast settings: a keep-alive every 100 ms, wedged after 1 s of a main
/// loop that does not turn (the loop then turns every 250 ms).
const FAST: &str = "interval = \"100ms\"\nwedge_after = \"1s\"\n";

/// Waits for `n` more keep-alives than there are now.
fn wait_more(mux: &FakeMux, n: usize) {
    let base = mux.count();
    wait_until(&format!("{n} more keep-alives"), || mux.count() >= base + n);
}

/// SIGTERM: exit 0, and the mux got exactly one `V`, last, then the close.
fn stop_cleanly(s: &Setup, d: &mut Daemon, mux: &FakeMux) {
    d.signal(Signal::SIGTERM);
    let st = d.wait();
    assert!(st.success(), "daemon exit {st:?}; log:\n{}", s.log());
    wait_until("the connection to close", || mux.closed());
    let bytes = mux.bytes();
    assert_eq!(mux.vs(), 1, "exactly one V: {bytes:?}");
    assert_eq!(bytes.last(), Some(&b'V'), "V comes last: {bytes:?}");
    assert!(s.log().contains("watchdog disarmed"), "{}", s.log());
}

#[test]
fn keepalives_while_running_then_one_v_on_sigterm() {
    let s = Setup::new();
    s.write_config(FAST);
    let mux = FakeMux::start(&s.socket());
    let mut d = s.spawn_daemon();
    wait_until("the first keep-alives", || mux.count() >= 3);
    s.wait_log("watchdog keeper started");
    let log = s.log();
    let start = log
        .lines()
        .find(|l| l.contains("watchdog keeper started"))
        .unwrap();
    assert!(
        start.contains(&format!("backend=watchdog-mux {}", s.socket().display())),
        "{start}"
    );
    assert!(start.contains("timeout=1m"), "{start}");
    assert!(start.contains("interval=100ms"), "{start}");

    // About one keep-alive per interval.
    let t = Instant::now();
    wait_more(&mux, 5);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "5 keep-alives in {took:?}: faster than the 100 ms interval"
    );
    assert_eq!(mux.vs(), 0, "no V while running");
    assert!(!mux.closed());

    // `tandem status` names the keeper in one line; `--json` stays the
    // per-job array.
    wait_until("the status file", || s.path("state/watchdog.json").exists());
    let out = s.tandem(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("watchdog:")).unwrap();
    assert!(line.contains("fit, petting watchdog-mux"), "{text}");
    assert!(line.contains(&format!("pid {}", d.child.id())), "{text}");
    let out = s.tandem(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([]),
        "no jobs, no watchdog in --json"
    );

    stop_cleanly(&s, &mut d, &mux);
    assert!(
        !s.path("state/watchdog.json").exists(),
        "a clean stop removes the status file"
    );
}

#[test]
fn sigkill_closes_the_socket_without_v() {
    let s = Setup::new();
    s.write_config(FAST);
    let mux = FakeMux::start(&s.socket());
    let mut d = s.spawn_daemon();
    wait_until("keep-alives", || mux.count() >= 3);
    d.signal(Signal::SIGKILL);
    d.wait();
    wait_until("the connection to close", || mux.closed());
    assert_eq!(
        mux.vs(),
        0,
        "a killed daemon never says V (the mux resets the node): {:?}",
        mux.bytes()
    );
}

#[test]
fn sigstop_silences_the_watchdog_and_sigcont_resumes_it() {
    // SIGSTOP freezes the whole process, the keeper's thread included: the
    // watchdog hears nothing (a real mux resets the node after 60 s). A
    // wedged async runtime with a live keeper thread is the next test.
    let s = Setup::new();
    s.write_config(FAST);
    let mux = FakeMux::start(&s.socket());
    let mut d = s.spawn_daemon();
    wait_until("keep-alives", || mux.count() >= 3);
    d.signal(Signal::SIGSTOP);
    thread::sleep(Duration::from_millis(500));
    let n = mux.count();
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(mux.count(), n, "keep-alives from a stopped daemon");
    assert!(!mux.closed());
    d.signal(Signal::SIGCONT);
    wait_more(&mux, 5);
    assert_eq!(mux.vs(), 0);
    stop_cleanly(&s, &mut d, &mux);
}

#[test]
fn a_blocked_main_loop_stops_the_petting_until_it_turns_again() {
    // A real way to block the daemon's main loop in the shipped binary: the
    // config is reloaded on SIGHUP by a blocking read on the loop itself,
    // and when the config is a FIFO without a writer that read waits (as
    // it would on a hung file system). The keeper's own thread goes on
    // running, sees the heartbeat go stale and stops petting.
    let s = Setup::new();
    s.write_config(FAST);
    let mux = FakeMux::start(&s.socket());
    let mut d = s.spawn_daemon();
    wait_until("keep-alives", || mux.count() >= 3);
    s.wait_log("tandem daemon started");

    std::fs::remove_file(s.config_path()).unwrap();
    nix::unistd::mkfifo(&s.config_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
    d.signal(Signal::SIGHUP);
    s.wait_log("node UNFIT");
    let log = s.log();
    assert!(log.contains("daemon wedged"), "{log}");
    let n = mux.count();
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(mux.count(), n, "keep-alives while the main loop is blocked");
    assert_eq!(mux.vs(), 0, "no V while wedged");
    assert!(!mux.closed(), "the connection stays open while wedged");

    // Unblock it with a config whose [watchdog] changed: applied only at
    // the next start.
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(s.config_path())
        .unwrap();
    fifo.write_all(
        s.config_text("interval = \"200ms\"\nwedge_after = \"1s\"\n")
            .as_bytes(),
    )
    .unwrap();
    drop(fifo);
    s.wait_log("restart the daemon to apply");
    s.wait_log("node fit again, petting resumes");
    wait_more(&mux, 5);
    stop_cleanly(&s, &mut d, &mux);
}

#[test]
fn no_watchdog_at_all_is_fatal_and_names_the_device_and_the_socket() {
    let s = Setup::new();
    s.write_config(FAST);
    let mut d = s.spawn_daemon();
    let st = d.wait();
    assert!(!st.success(), "{st:?}");
    let log = s.log();
    assert!(log.contains("cannot start the watchdog keeper"), "{log}");
    assert!(log.contains(s.socket().to_str().unwrap()), "{log}");
    assert!(log.contains(s.device().to_str().unwrap()), "{log}");
    assert!(
        !log.contains("tandem daemon started"),
        "the daemon must not run without its watchdog: {log}"
    );
}

#[test]
fn a_disabled_watchdog_table_runs_without_a_keeper() {
    let s = Setup::new();
    s.write_config("enabled = false\n");
    let mut d = s.spawn_daemon();
    s.wait_log("tandem daemon started");
    assert!(s.log().contains("does not self-fence"), "{}", s.log());
    d.signal(Signal::SIGTERM);
    let st = d.wait();
    assert!(st.success(), "{st:?}: {}", s.log());
}

#[test]
fn an_unknown_key_in_watchdog_exits_2_naming_it() {
    let s = Setup::new();
    s.write_config("wedge_afterr = \"5s\"\n");
    let mut d = s.spawn_daemon();
    let st = d.wait();
    assert_eq!(st.code(), Some(2), "{st:?}");
    let log = s.log();
    assert!(log.contains("wedge_afterr"), "{log}");
    assert!(log.contains("[watchdog]"), "{log}");
    assert!(log.contains(s.config_path().to_str().unwrap()), "{log}");
}
