//! Shared by `tandem_openzfs.rs` and `tandem_two_guests.rs`: the host-built `tandem` binary staged
//! into a guest over 9p, tandem runs with parsed `--json` output, and ZFS facts read in a guest.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_hw_tests::{shell_quote, Error, ExecOptions, Guest, Result};

/// Where the guest runs tandem from (copied off the 9p share at install time, so a concurrent
/// `cargo build` on the host cannot swap the binary under a running test).
pub const TANDEM: &str = "/usr/local/bin/tandem";
/// The config file in the guest.
pub const CONFIG: &str = "/root/tandem.toml";
/// The state directory in the guest.
pub const STATE_DIR: &str = "/root/tandem-state";

/// The tandem binary on the host: `$TANDEM_LAB_TANDEM_BIN`, else `$CARGO_TARGET_DIR/debug/tandem`,
/// else `<repo>/target/debug/tandem`.
pub fn tandem_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_LAB_TANDEM_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/tandem")
}

/// A host directory shared into a guest (9p), holding a private copy of the tandem binary;
/// removed on drop.
pub struct Share(PathBuf);

impl Share {
    /// Copies the tandem binary into a fresh share directory. `None` (after printing
    /// `SKIP <test>: ...`) when the binary has not been built; a panic instead under
    /// `TANDEM_LAB_REQUIRE=1`.
    pub fn with_tandem(test: &str) -> Option<Share> {
        let bin = tandem_binary();
        if !bin.is_file() {
            let why = format!(
                "the tandem binary {} is missing; run `cargo build -p tandem` \
                 (or set TANDEM_LAB_TANDEM_BIN)",
                bin.display()
            );
            // like an unavailable lab: under TANDEM_LAB_REQUIRE=1 (CI) this fails the test
            if std::env::var_os("TANDEM_LAB_REQUIRE").is_some_and(|v| v == "1") {
                panic!("{test}: required (TANDEM_LAB_REQUIRE=1) but {why}");
            }
            eprintln!("SKIP {test}: {why}");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("tandem-lab-share-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let res =
            std::fs::create_dir_all(&dir).and_then(|_| std::fs::copy(&bin, dir.join("tandem")));
        if let Err(e) = res {
            panic!(
                "{test}: staging {} into {}: {e}",
                bin.display(),
                dir.display()
            );
        }
        let age = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map(|d| format!("{} s old", d.as_secs()))
            .unwrap_or_default();
        println!("[tandem-lab] testing {} ({age})", bin.display());
        Some(Share(dir))
    }

    /// The host path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies tandem from the share (`/mnt/host/tandem`) to [`TANDEM`] and returns `tandem --version`.
pub fn install(g: &Guest) -> Result<String> {
    g.run(&format!(
        "install -m 0755 /mnt/host/tandem {TANDEM} && {TANDEM} --version"
    ))
}

/// Writes `text` to `path` in the guest.
pub fn write_file(g: &Guest, path: &str, text: &str) -> Result<()> {
    g.run_with(
        &format!("cat > {}", shell_quote(path)),
        &ExecOptions::default().with_stdin(text.as_bytes().to_vec()),
    )
    .map(|_| ())
}

/// One finished tandem command.
#[derive(Debug, Clone)]
pub struct TandemOut {
    /// The command line.
    pub cmd: String,
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub took: Duration,
}

impl TandemOut {
    /// stdout as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// The first (only) job report of `run --json` / `plan --json`.
    pub fn report(&self) -> Value {
        self.json().get(0).cloned().unwrap_or(Value::Null)
    }

    /// `plans` of `run --json`, e.g. `["resume", "incremental"]`.
    pub fn plans(&self) -> Vec<String> {
        self.report()["plans"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `bytes` of `run --json`.
    pub fn bytes(&self) -> u64 {
        self.report()["bytes"].as_u64().unwrap_or(0)
    }

    /// Short name (after `@`) of the snapshot `run --json` says it sent.
    pub fn sent_short(&self) -> Option<String> {
        self.report()["sent"]
            .as_str()
            .and_then(|s| s.split_once('@'))
            .map(|(_, short)| short.to_string())
    }
}

impl std::fmt::Display for TandemOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd,
            self.code,
            self.took.as_secs_f64(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// `tandem --config CONFIG ARGS` in the guest (any exit code).
pub fn tandem(g: &Guest, args: &str) -> Result<TandemOut> {
    let cmd = format!("{TANDEM} --config {CONFIG} {args}");
    let t0 = Instant::now();
    let out = g.exec_with(&cmd, &ExecOptions::timeout(Duration::from_secs(900)))?;
    let o = TandemOut {
        cmd,
        code: out.code,
        stdout: out.stdout,
        stderr: out.stderr,
        took: t0.elapsed(),
    };
    println!(
        "[tandem] {} -> exit {} in {:.1} s{}",
        args,
        o.code,
        o.took.as_secs_f64(),
        if o.code == 0 {
            format!(", plans {:?}, {} bytes", o.plans(), o.bytes())
        } else {
            String::new()
        }
    );
    Ok(o)
}

/// `tandem run JOB --json`, which must exit 0 (the error carries tandem's output otherwise).
pub fn run_ok(g: &Guest, job: &str) -> Result<TandemOut> {
    let o = tandem(g, &format!("run {job} --json"))?;
    if o.code != 0 || o.report()["ok"] != Value::Bool(true) {
        return Err(Error::CommandFailed {
            guest: g.name().to_string(),
            command: o.cmd.clone(),
            code: o.code,
            stdout: o.stdout,
            stderr: o.stderr,
        });
    }
    Ok(o)
}

/// `zfs get -Hp guid` of a snapshot.
pub fn guid(g: &Guest, snap: &str) -> Result<String> {
    let v = g.run(&format!(
        "zfs get -H -p -o value guid {}",
        shell_quote(snap)
    ))?;
    let v = v.trim().to_string();
    assert!(
        !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()),
        "guid of {snap}: {v:?}"
    );
    Ok(v)
}

/// `zfs get -H -o value PROP DS` (not parsable: `-` for none).
pub fn prop(g: &Guest, prop: &str, ds: &str) -> Result<String> {
    Ok(
        g.run(&format!("zfs get -H -o value {prop} {}", shell_quote(ds)))?
            .trim()
            .to_string(),
    )
}

/// Whether a dataset exists.
pub fn exists(g: &Guest, ds: &str) -> Result<bool> {
    Ok(g.exec(&format!("zfs list -H -o name {}", shell_quote(ds)))?
        .success())
}

/// A dataset's snapshots as (short name, guid), oldest first (by createtxg).
pub fn snapshots(g: &Guest, ds: &str) -> Result<Vec<(String, String)>> {
    let out = g.run(&format!(
        "zfs list -H -p -t snapshot -d 1 -s createtxg -o name,guid {}",
        shell_quote(ds)
    ))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (name, guid) = l.split_once('\t')?;
            Some((name.split_once('@')?.1.to_string(), guid.trim().to_string()))
        })
        .collect())
}

/// Everything under `root` (datasets, snapshots, bookmarks) with GUIDs, `written`, resume tokens
/// and holds: a fingerprint that must not change when tandem refuses to act. Syncs the pools first
/// (`written` is only updated when a txg syncs).
pub fn fingerprint(g: &Guest, root: &str) -> Result<String> {
    g.run(&format!(
        "zpool sync && zfs list -H -p -r -t all -o name,guid,createtxg,written,receive_resume_token {r} && \
         zfs list -H -r -t snapshot -o name {r} | xargs -r zfs holds -H",
        r = shell_quote(root)
    ))
}

/// sha256 of a block device's whole content, read with O_DIRECT (no stale page cache after a
/// receive changed the zvol underneath).
pub fn sha256_dev(g: &Guest, dev: &str) -> Result<String> {
    let out = g.run(&format!(
        "dd if={} bs=1M iflag=direct status=none | sha256sum",
        shell_quote(dev)
    ))?;
    let sum = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sum.len(), 64, "sha256 of {dev}: {out:?}");
    Ok(sum)
}

/// `sha256sum` of every file under `dir`, sorted by path (relative): equal listings mean equal
/// trees.
pub fn sha256_tree(g: &Guest, dir: &str) -> Result<String> {
    let out = g.run(&format!(
        "cd {} && find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
        shell_quote(dir)
    ))?;
    assert!(!out.trim().is_empty(), "no files under {dir}");
    Ok(out)
}

/// Waits until udev has made the zvol device node.
pub fn wait_dev(g: &Guest, dev: &str) -> Result<()> {
    g.wait_for(
        &format!("udevadm settle; test -b {}", shell_quote(dev)),
        Duration::from_secs(60),
    )
}

/// The snapshot `src@short` and `dst@short` exist with the same GUID; returns it.
pub fn assert_same_guid(g: &Guest, src: &str, h: &Guest, dst: &str, short: &str) -> Result<String> {
    let a = guid(g, &format!("{src}@{short}"))?;
    let b = guid(h, &format!("{dst}@{short}"))?;
    assert_eq!(a, b, "GUID of @{short}: source {src} vs target {dst}");
    Ok(a)
}

/// The newest snapshots of both sides carry the same GUID; returns (short name, guid).
pub fn assert_newest_equal(g: &Guest, src: &str, h: &Guest, dst: &str) -> Result<(String, String)> {
    let s = snapshots(g, src)?;
    let t = snapshots(h, dst)?;
    let (Some(sn), Some(tn)) = (s.last(), t.last()) else {
        panic!("no snapshots: source {src} {s:?}, target {dst} {t:?}");
    };
    assert_eq!(
        sn.1, tn.1,
        "newest snapshot GUIDs differ: {src}@{} vs {dst}@{}\nsource {s:?}\ntarget {t:?}",
        sn.0, tn.0
    );
    Ok(sn.clone())
}

/// A config with node `a` (local) and node `b` (`b_node` is the body of `[nodes.b]`), plus jobs.
pub fn config(b_node: &str, jobs: &str) -> String {
    format!(
        "state_dir = \"{STATE_DIR}\"\nlocal_node = \"a\"\n\n[nodes.a]\naddress = \"local\"\n\n\
         [nodes.b]\n{b_node}\n\n{jobs}"
    )
}

/// One `[jobs.NAME]` table.
pub fn job(name: &str, source: &str, target: &str, extra: &str) -> String {
    format!("[jobs.{name}]\nsource = \"a:{source}\"\ntarget = \"b:{target}\"\nkeep = 2\n{extra}\n")
}

/// Collects failed expectations so that one run reports every problem, then fails once.
#[derive(Debug, Default)]
pub struct Findings(Vec<String>);

impl Findings {
    /// Records `msg` unless `ok`.
    pub fn check(&mut self, ok: bool, msg: impl Into<String>) {
        if !ok {
            let m = msg.into();
            println!("[FINDING] {m}");
            self.0.push(m);
        }
    }

    /// The findings so far, as text appended to another failure.
    pub fn summary(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        format!("\n(also found earlier:\n- {})", self.0.join("\n- "))
    }

    /// Panics with every finding, if any.
    pub fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} expectation(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}
