//! Test harness: real ZFS pools in files (zfs-fuse here, OpenZFS anywhere),
//! the real `tandem` binary, and a real sshd on loopback for remote nodes.
//!
//! Each test makes its own uniquely named pools and destroys them when it
//! ends; `TANDEM_KEEP_POOLS=1` keeps them (and says where) for inspection.
//! Without ZFS the tests skip with a message, unless
//! `TANDEM_TEST_REQUIRE_ZFS=1` (set by scripts/test.sh and CI) makes that a
//! failure, so CI can never pass by skipping.

#![allow(dead_code, clippy::unwrap_used)]

pub mod corosync;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its stderr if it fails.
pub fn cmd(program: &str, args: &[&str]) -> String {
    // Bounded: a wedged ZFS fails the test instead of hanging it.
    let out = Command::new("timeout")
        .arg("120")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `zfs ARGS`, must succeed.
pub fn zfs(args: &[&str]) -> String {
    cmd("zfs", args)
}

/// `zfs ARGS`, may fail.
pub fn zfs_try(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg("zfs")
        .args(args)
        .output()
        .unwrap()
}

/// Is there a working ZFS? Skips (returns false) or fails per the environment.
pub fn zfs_available() -> bool {
    let ok = Command::new("zpool")
        .arg("list")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(std::env::var_os("TANDEM_TEST_REQUIRE_ZFS").is_none(), "ZFS is required (TANDEM_TEST_REQUIRE_ZFS) but `zpool list` fails: run scripts/setup.sh");
        eprintln!("SKIP: no working ZFS (`zpool list` fails); run scripts/setup.sh zfs");
    }
    ok
}

/// The loopback sshd from scripts/setup.sh, if configured: (port, key).
pub fn ssh_target() -> Option<(u16, PathBuf)> {
    let port = std::env::var("TANDEM_TEST_SSH_PORT")
        .ok()
        .and_then(|p| p.parse().ok());
    let key = std::env::var_os("TANDEM_TEST_SSH_KEY").map(PathBuf::from);
    match (port, key) {
        (Some(p), Some(k)) if k.exists() => Some((p, k)),
        _ => {
            assert!(
                std::env::var_os("TANDEM_TEST_REQUIRE_ZFS").is_none(),
                "sshd is required in CI: TANDEM_TEST_SSH_PORT/TANDEM_TEST_SSH_KEY unset"
            );
            eprintln!("SKIP: no test sshd (set TANDEM_TEST_SSH_PORT and TANDEM_TEST_SSH_KEY, see scripts/setup.sh)");
            None
        }
    }
}

/// A file-backed pool, destroyed on drop.
pub struct Pool {
    pub name: String,
    dir: PathBuf,
}

impl Pool {
    pub fn new(tag: &str) -> Pool {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}x{n}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("tandem-test-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("pool.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(384 << 20)
            .unwrap();
        cmd("zpool", &["create", "-f", &name, img.to_str().unwrap()]);
        Pool { name, dir }
    }

    /// `POOL/rel`.
    pub fn ds(&self, rel: &str) -> String {
        format!("{}/{rel}", self.name)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if std::env::var_os("TANDEM_KEEP_POOLS").is_some() {
            eprintln!(
                "TANDEM_KEEP_POOLS: kept pool {} ({})",
                self.name,
                self.dir.display()
            );
            return;
        }
        for _ in 0..10 {
            let ok = Command::new("zpool")
                .args(["destroy", "-f", &self.name])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// GUIDs, `readonly` and hold counts of everything in a pool: equal before
/// and after means nothing in it changed.
pub fn pool_state(p: &Pool) -> String {
    zfs(&[
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value",
        "-r",
        "guid,readonly,userrefs",
        &p.name,
    ])
}

/// Mountpoint of a filesystem.
pub fn mnt(ds: &str) -> PathBuf {
    PathBuf::from(zfs(&["get", "-H", "-o", "value", "mountpoint", ds]).trim())
}

/// (short name, guid) of every snapshot of `ds`, oldest first.
pub fn snaps(ds: &str) -> Vec<(String, u64)> {
    let out = zfs(&[
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value",
        "-d",
        "1",
        "guid,createtxg",
        ds,
    ]);
    let mut m: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if let Some((_, short)) = f[0].split_once('@') {
            let e = m.entry(short.to_owned()).or_default();
            match f[1] {
                "guid" => e.0 = f[2].parse().unwrap(),
                "createtxg" => e.1 = f[2].parse().unwrap(),
                _ => {}
            }
        }
    }
    let mut v: Vec<(String, u64, u64)> = m.into_iter().map(|(k, (g, t))| (k, g, t)).collect();
    v.sort_by_key(|x| x.2);
    v.into_iter().map(|(k, g, _)| (k, g)).collect()
}

/// Does the dataset exist?
pub fn exists(ds: &str) -> bool {
    zfs_try(&["get", "-H", "-o", "value", "type", ds])
        .status
        .success()
}

/// Writes `len` pseudo-random (incompressible) bytes.
pub fn write_random(path: &Path, len: usize, seed: u64) {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    std::fs::write(path, v).unwrap();
}

/// Asserts that two trees hold the same files with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut na: Vec<_> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut nb: Vec<_> = std::fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    na.sort();
    nb.sort();
    assert_eq!(
        na,
        nb,
        "file lists differ: {} vs {}",
        a.display(),
        b.display()
    );
    for n in na {
        let (pa, pb) = (a.join(&n), b.join(&n));
        if pa.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "{} differs from {}",
                pa.display(),
                pb.display()
            );
        }
    }
}

/// How the target node is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Both nodes on this machine.
    Local,
    /// The target through ssh, plain `zfs` commands (`transport = "ssh"`).
    Ssh,
    /// The target through ssh and `tandem serve --stdio` there.
    Serve,
    /// The target through mutual TLS to `tandem serve --listen`.
    Tls,
}

/// A test environment: a state dir, a config file and the binary.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub via: Via,
    /// For `Via::Tls`: the serving node's config and its running server.
    pub server: Option<(PathBuf, std::process::Child)>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((_, c)) = self.server.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tandem cert ...` into `dir`.
pub fn make_certs(dir: &Path, nodes: &[&str]) {
    let t = env!("CARGO_BIN_EXE_tandem");
    cmd(t, &["cert", "ca", "--dir", dir.to_str().unwrap()]);
    for n in nodes {
        cmd(t, &["cert", "node", n, "--dir", dir.to_str().unwrap()]);
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tandem serve --listen` as node `dst` (config `cfg`) and waits
/// until it accepts connections.
pub fn start_tls_server(cfg: &Path, port: u16) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(cfg)
        .args(["-v", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(cfg.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tandem serve --listen on port {port} did not start");
}

impl Env {
    /// A config with nodes `src` (local) and `dst` (local or through the
    /// loopback sshd), plus the given job tables.
    pub fn new(via: Via, jobs: &str) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls_dir = dir.path().join("tls");
        let dst = match via {
            Via::Local => "[nodes.dst]\naddress = \"local\"\n".to_owned(),
            Via::Tls => {
                make_certs(&tls_dir, &["src", "dst"]);
                format!(
                    "[nodes.dst]\naddress = \"127.0.0.1\"\ntransport = \"tls\"\ntls_port = {port}\n\n[tls]\ncert = \"{0}/src.crt\"\nkey = \"{0}/src.key\"\nca = \"{0}/ca.crt\"\n",
                    tls_dir.display()
                )
            }
            Via::Ssh | Via::Serve => {
                let (port, key) = ssh_target()?;
                let mut n = format!(
                    "[nodes.dst]\naddress = \"127.0.0.1\"\nssh_user = \"root\"\nssh_port = {port}\nssh_identity = \"{}\"\nssh_options = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\"]\nzfs_path = \"/usr/sbin/zfs\"\n",
                    key.display()
                );
                if via == Via::Ssh {
                    n.push_str("transport = \"ssh\"\n");
                } else {
                    // The serving side reads this same file: its [[serve.peers]]
                    // lets peer "src" write the pools of the jobs' targets.
                    let cfg = dir.path().join("tandem.toml");
                    n.push_str(&format!(
                        "transport = \"serve\"\ntandem_path = \"{}\"\nserve_args = [\"--config\", \"{}\", \"--peer\", \"src\"]\n",
                        env!("CARGO_BIN_EXE_tandem"),
                        cfg.display()
                    ));
                }
                n
            }
        };
        let write: Vec<String> = jobs
            .lines()
            .filter_map(|l| l.strip_prefix("target = \"dst:"))
            .filter_map(|t| t.split(['/', '"']).next())
            .map(|p| format!("\"{p}\""))
            .collect();
        let serve = if via == Via::Serve {
            format!(
                "[[serve.peers]]\nname = \"src\"\nwrite = [{}]\n",
                write.join(", ")
            )
        } else {
            String::new()
        };
        let text = format!("state_dir = \"{}/state\"\nlocal_node = \"src\"\n[nodes.src]\naddress = \"local\"\n{dst}\n{serve}\n{jobs}", dir.path().display());
        let config = dir.path().join("tandem.toml");
        std::fs::write(&config, text).unwrap();
        let server = if via == Via::Tls {
            let scfg = dir.path().join("server.toml");
            std::fs::write(
                &scfg,
                format!(
                    "state_dir = \"{0}/server-state\"\nlocal_node = \"dst\"\n[nodes.dst]\naddress = \"local\"\n[tls]\ncert = \"{1}/dst.crt\"\nkey = \"{1}/dst.key\"\nca = \"{1}/ca.crt\"\n[[serve.peers]]\nname = \"src\"\nwrite = [{2}]\n",
                    dir.path().display(),
                    tls_dir.display(),
                    write.join(", ")
                ),
            )
            .unwrap();
            let child = start_tls_server(&scfg, port);
            Some((scfg, child))
        } else {
            None
        };
        Some(Env {
            dir,
            config,
            via,
            server,
        })
    }

    /// Replaces the config text's jobs.
    pub fn rewrite(&self, from: &str, to: &str) {
        let t = std::fs::read_to_string(&self.config).unwrap();
        assert!(t.contains(from), "config lacks {from:?}");
        std::fs::write(&self.config, t.replace(from, to)).unwrap();
    }

    /// `tandem --config CFG ARGS`.
    pub fn tandem(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
        c.arg("--config").arg(&self.config).args(args);
        c.output().unwrap()
    }

    /// Spawns `tandem` without waiting.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `tandem run JOB`, which must succeed; returns stdout.
    pub fn run_ok(&self, job: &str) -> String {
        let o = self.tandem(&["run", job]);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(
            o.status.success(),
            "tandem run {job} failed ({:?}):\nstdout: {out}\nstderr: {err}",
            self.via
        );
        out.into_owned()
    }

    /// `tandem run JOB`, which must fail; returns stdout + stderr.
    pub fn run_fails(&self, job: &str) -> String {
        let o = self.tandem(&["run", job]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !o.status.success(),
            "tandem run {job} should have failed:\n{text}"
        );
        text
    }
}

/// A standard job table.
pub fn job(name: &str, src: &str, dst: &str, extra: &str) -> String {
    format!("[jobs.{name}]\nsource = \"src:{src}\"\ntarget = \"dst:{dst}\"\nkeep = 2\n{extra}\n")
}

/// zfs-fuse does not invalidate the kernel's FUSE page cache when a receive
/// changes a mounted filesystem, so a file rewritten in place can read stale
/// until the cache is dropped. Drop it, so comparisons read what ZFS holds.
pub fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Asserts the newest snapshot of both datasets has the same GUID, and the
/// files are identical.
pub fn assert_replica(src: &str, dst: &str) {
    drop_caches();
    let (s, d) = (snaps(src), snaps(dst));
    let (sn, dn) = (s.last().unwrap(), d.last().unwrap());
    assert_eq!(
        sn.1, dn.1,
        "newest snapshot GUIDs differ: {src}@{} vs {dst}@{}",
        sn.0, dn.0
    );
    assert_same_tree(&mnt(src), &mnt(dst));
}

/// Runs the same test body against the local and the ssh target.
#[macro_export]
macro_rules! both_transports {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn local() {
                if zfs_available() {
                    ($body)(Via::Local)
                }
            }
            #[test]
            fn ssh() {
                if zfs_available() {
                    ($body)(Via::Ssh)
                }
            }
            #[test]
            fn serve() {
                if zfs_available() {
                    ($body)(Via::Serve)
                }
            }
            #[test]
            fn tls() {
                if zfs_available() {
                    ($body)(Via::Tls)
                }
            }
        }
    };
}
