//! `tandem demo`: builds two file-backed pools, replicates a dataset named
//! like a Proxmox VM disk through several cycles of changing data, proves
//! after each that both sides hold the same snapshot (by GUID) and the same
//! bytes; a failover drill (`failover --test`) runs a hook against a clone
//! of the replica and removes it; then the primary "dies" after writing
//! something unsynced: the
//! survivor fences it (through a BMC when one is given) and promotes its
//! replica, takes writes, the old primary comes back, refuses to act as
//! primary, and `reverse` makes it follow while keeping its unsynced write
//! restorable. Prints `status`, and cleans up.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tandem_repl::clock::SystemClock;
use tandem_repl::cycle::{run_cycle, CycleEnv, CycleOptions};
use tandem_repl::state::StateStore;
use tandem_zfs::{DatasetName, Zfs};
use tokio::process::Command;

use super::me;
use crate::cmd::run::report_line;
use tandem_config::Config;

const TEMPLATE: &str = include_str!("../demo.toml");

/// The demo's on_test hook: what a real one (contrib/hooks/pve-test)
/// does with a guest, done with a file.
const ON_TEST: &str = r#"#!/bin/sh
set -eu
dir="$1"
mp=$(zfs get -H -o value mountpoint "$TANDEM_DATASETS")
cp "$mp/journal.log" "$dir/seen-journal.log"
{
    echo "$TANDEM_JOB: clone $TANDEM_DATASETS of $TANDEM_SNAPSHOT ($TANDEM_FROM -> $TANDEM_TO)"
    echo "sha256 of journal.log in the clone: $(sha256sum < "$mp/journal.log" | cut -d' ' -f1)"
} > "$dir/on-test.out"
"#;

async fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn mountpoint(ds: &str) -> Result<PathBuf> {
    Ok(PathBuf::from(
        sh("zfs", &["get", "-H", "-o", "value", "mountpoint", ds])
            .await?
            .trim(),
    ))
}

fn write_data(dir: &Path, cycle: u32) -> Result<String> {
    let mut rng = fastrand::Rng::with_seed(u64::from(cycle) + 7);
    let size = 2 << 20;
    let data: Vec<u8> = (0..size)
        .map(|i| {
            if i % 3 == 0 {
                rng.u8(..)
            } else {
                (i % 251) as u8
            }
        })
        .collect();
    std::fs::write(dir.join(format!("disk-chunk-{cycle}.bin")), &data)?;
    std::fs::write(
        dir.join("journal.log"),
        format!("cycle {cycle}: wrote {size} bytes\n").repeat(cycle as usize + 1),
    )?;
    let mut what = format!("wrote disk-chunk-{cycle}.bin (2 MiB), rewrote journal.log");
    if cycle == 3 {
        std::fs::remove_file(dir.join("disk-chunk-1.bin"))?;
        what.push_str(", deleted disk-chunk-1.bin");
    }
    Ok(what)
}

/// Compares every file under `a` with the same path under `b`, byte for byte.
pub fn same_tree(a: &Path, b: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut total = 0;
    let mut names_a: Vec<_> = std::fs::read_dir(a)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    let mut names_b: Vec<_> = std::fs::read_dir(b)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names_a.sort();
    names_b.sort();
    if names_a != names_b {
        bail!(
            "{} and {} list different files: {names_a:?} vs {names_b:?}",
            a.display(),
            b.display()
        );
    }
    for n in names_a {
        let (pa, pb) = (a.join(&n), b.join(&n));
        if pa.is_dir() {
            let (f, t) = same_tree(&pa, &pb)?;
            files += f;
            total += t;
            continue;
        }
        let (da, db) = (std::fs::read(&pa)?, std::fs::read(&pb)?);
        if da != db {
            bail!("{} differs from {}", pa.display(), pb.display());
        }
        files += 1;
        total += da.len() as u64;
    }
    Ok((files, total))
}

/// The BMC of the demo's primary node.
#[derive(Debug, Clone)]
pub struct DemoBmc {
    /// HOST:PORT.
    pub addr: String,
    /// User.
    pub user: String,
    /// Password file.
    pub password_file: Option<PathBuf>,
}

/// `tandem demo`.
pub async fn demo(
    cycles: u32,
    keep: bool,
    dir: Option<PathBuf>,
    bmc: Option<DemoBmc>,
) -> Result<ExitCode> {
    if sh("zpool", &["list", "-H", "-o", "name"]).await.is_err() {
        bail!("no working ZFS here: `zpool list` fails. Install and start it first: `bash scripts/setup.sh zfs` (Debian's zfs-fuse)");
    }
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = std::process::id();
    let (src_pool, dst_pool) = (format!("tdemo{id}a"), format!("tdemo{id}b"));
    let result = run_demo(cycles, &dir, &src_pool, &dst_pool, bmc.as_ref()).await;
    if keep {
        crate::outln!(
            "\nkept: pools {src_pool} and {dst_pool}, files in {}",
            dir.display()
        );
    } else {
        for p in [&src_pool, &dst_pool] {
            // a just-used pool can be "busy" for a moment on zfs-fuse
            for _ in 0..20 {
                if sh("zpool", &["destroy", "-f", p]).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        crate::outln!(
            "\ncleaned up: destroyed pools {src_pool} and {dst_pool}, removed {}",
            dir.display()
        );
    }
    result
}

async fn run_demo(
    cycles: u32,
    dir: &Path,
    src_pool: &str,
    dst_pool: &str,
    bmc: Option<&DemoBmc>,
) -> Result<ExitCode> {
    crate::outln!("== tandem demo: two file-backed pools on this machine ==");
    for p in [src_pool, dst_pool] {
        let img = dir.join(format!("{p}.img"));
        std::fs::File::create(&img)?.set_len(256 << 20)?;
        sh("zpool", &["create", "-f", p, &img.to_string_lossy()]).await?;
        crate::outln!("created pool {p} on {} (256 MiB file)", img.display());
    }
    sh(
        "zfs",
        &["create", "-p", &format!("{src_pool}/data/vm-100-disk-0")],
    )
    .await?;
    sh("zfs", &["create", &format!("{dst_pool}/replica")]).await?;
    let mut text = TEMPLATE
        .replace("@DIR@", &dir.to_string_lossy())
        .replace("@SRC@", src_pool)
        .replace("@DST@", dst_pool);
    if let Some(b) = bmc {
        let (host, port) = b.addr.rsplit_once(':').context("--bmc takes HOST:PORT")?;
        let pw = b
            .password_file
            .as_ref()
            .context("--bmc needs --bmc-password-file")?;
        text = text.replace(
            "[nodes.pve2]",
            &format!(
                "[[nodes.pve1.fence]]\nkind = \"ipmi\"\nhost = \"{host}\"\nport = {port}\nusername = \"{}\"\npassword_file = \"{}\"\n\n[nodes.pve2]",
                b.user,
                pw.display()
            ),
        );
    }
    let cfg_path = dir.join("tandem.toml");
    std::fs::write(&cfg_path, &text)?;
    crate::outln!(
        "config {} (embedded default):\n{}",
        cfg_path.display(),
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let cfg = Config::parse(&text, &cfg_path)?;
    let store = StateStore::open(&cfg.state_dir)?;
    let nodes = cfg.backends()?;
    let job = cfg
        .jobs
        .values()
        .next()
        .context("the demo config has a job")?;
    // Before any failover the configured direction holds.
    let spec = job.spec(
        &tandem_repl::roles::resolve(job, None, None)?,
        &store.load(&job.name)?,
    );
    let src_ds = spec.source.dataset.to_string();
    let src_dir = mountpoint(&src_ds).await?;
    let opts = CycleOptions {
        lock_wait: Duration::from_secs(10),
        me: me("demo"),
        parallel: 1,
        live: None,
        only_primary: None,
    };
    let env = CycleEnv {
        nodes: &nodes,
        store: &store,
        clock: &SystemClock,
    };

    for cycle in 1..=cycles.max(1) {
        let what = write_data(&src_dir, cycle)?;
        crate::outln!("\n-- cycle {cycle}: on {}: {what}", spec.source);
        let reports = run_cycle(&env, std::slice::from_ref(job), &opts).await;
        for r in &reports {
            crate::outln!("{}", report_line(r));
            if let Err(e) = &r.result {
                bail!("the demo cycle failed: {e}");
            }
        }
        // Prove it: same newest snapshot GUID and the same bytes on both sides.
        let (s, t) = (&nodes[&spec.source.node], &nodes[&spec.target.node]);
        let sl = s.list(std::slice::from_ref(&spec.source.dataset)).await?;
        let tl = t.list(std::slice::from_ref(&spec.target.dataset)).await?;
        let sn = sl
            .get(&spec.source.dataset)
            .and_then(|d| d.newest())
            .context("source has a snapshot")?;
        let tn = tl
            .get(&spec.target.dataset)
            .and_then(|d| d.newest())
            .context("target has a snapshot")?;
        if sn.guid != tn.guid {
            bail!(
                "GUID mismatch: {} {} vs {} {}",
                sn.name,
                sn.guid,
                tn.name,
                tn.guid
            );
        }
        let dst_dir = mountpoint(spec.target.dataset.as_str()).await?;
        // zfs-fuse leaves the kernel's page cache of a received filesystem
        // stale; drop it so the comparison reads what ZFS holds.
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
        let (files, bytes) = same_tree(&src_dir, &dst_dir)?;
        let own = |d: Option<&tandem_zfs::Dataset>| {
            d.map(|d| d.snapshots.iter().filter(|x| job.name.owns(x)).count())
                .unwrap_or(0)
        };
        crate::outln!(
            "   verified: newest snapshot GUID {} on both sides; {files} files, {bytes} bytes identical; job snapshots kept: {} / {} (keep = {})",
            sn.guid,
            own(sl.get(&spec.source.dataset)),
            own(tl.get(&spec.target.dataset)),
            job.keep
        );
    }
    // Check what matters rather than the property (zfs-fuse misreports it).
    let probe = mountpoint(spec.target.dataset.as_str())
        .await?
        .join(".tandem-write-test");
    match std::fs::write(&probe, b"x") {
        Err(e) => crate::outln!(
            "\nreplica {} is read-only: writing to it fails ({e})",
            spec.target
        ),
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            bail!(
                "the replica {} is writable; it should be readonly=on",
                spec.target
            );
        }
    }
    crate::outln!("\n$ tandem --config {} status", cfg_path.display());
    crate::cmd::status::status(&cfg_path, false).await?;
    crate::outln!("\nUse the replica by hand: zfs clone {}@<snapshot> {dst}/restore-test  (see README, \"Using a replica\")", spec.target.dataset, dst = DatasetName::parse(dst_pool)?);

    // Failover and reverse. pve2 gets its own config and state, as on a
    // real cluster (same text, local_node = pve2).
    let pve2_cfg = dir.join("pve2.toml");
    std::fs::write(
        &pve2_cfg,
        text.replace("local_node = \"pve1\"", "local_node = \"pve2\"")
            .replace("/state\"", "/state-pve2\""),
    )?;
    // A failover drill first: changes nothing, fences nothing.
    std::fs::write(dir.join("on-test.sh"), ON_TEST)?;
    crate::outln!("\n== failover --test, on pve2: a drill against a clone of the replica ==");
    crate::outln!(
        "(its on_test hook, {}: reads journal.log from the clone and checksums it)",
        dir.join("on-test.sh").display()
    );
    if !run_self(&pve2_cfg, &["failover", "--test", "vm-100"]).await? {
        bail!("the failover test failed");
    }
    for l in std::fs::read_to_string(dir.join("on-test.out"))?.lines() {
        crate::outln!("    hook: {l}");
    }
    let seen = std::fs::read(dir.join("seen-journal.log"))?;
    if seen != std::fs::read(src_dir.join("journal.log"))? {
        bail!("the test clone's journal.log differs from pve1's at the last sync");
    }
    let left = sh("zfs", &["list", "-H", "-o", "name", "-r", dst_pool]).await?;
    if left.lines().any(|l| l.contains("/tandem-test")) {
        bail!("the failover test left clones behind:\n{left}");
    }
    crate::outln!(
        "   verified: the hook read pve1's journal.log as of the last sync, byte for byte; the clone is gone, the replica untouched"
    );

    std::fs::write(
        src_dir.join("unsynced.txt"),
        b"written on pve1 after the last sync\n",
    )?;
    crate::outln!("\n== failover: pve1 wrote unsynced.txt after the last sync, then died ==");
    let failover: Vec<&str> = if bmc.is_some() {
        vec!["failover", "pve1"]
    } else {
        crate::outln!("(no --bmc: the demo takes the operator's word that pve1 is off)");
        vec!["failover", "pve1", "--confirmed-off", "--yes"]
    };
    if !run_self(&pve2_cfg, &failover).await? {
        bail!("failover failed");
    }
    let dst_dir = mountpoint(spec.target.dataset.as_str()).await?;
    std::fs::write(
        dst_dir.join("written-on-pve2.txt"),
        b"pve2 is the primary now\n",
    )
    .context("the promoted replica must be writable")?;
    crate::outln!(
        "pve2 wrote written-on-pve2.txt into the promoted replica {}",
        spec.target
    );
    if bmc.is_some() {
        crate::outln!("\n== pve1 comes back (powered on through its BMC) ==");
        run_self(&pve2_cfg, &["fence", "on", "pve1", "--yes"]).await?;
    } else {
        crate::outln!("\n== pve1 comes back ==");
    }
    crate::outln!("its own daemon would still replicate as primary; it refuses:");
    run_self(&cfg_path, &["run", "vm-100"]).await?;
    crate::outln!("\n== reverse, on pve1: follow pve2, keep what pve1 wrote ==");
    if !run_self(&cfg_path, &["reverse", "vm-100", "--yes"]).await? {
        bail!("reverse failed");
    }
    // Prove it: pve1 follows pve2, and the unsynced write is kept.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let (files, bytes) = same_tree(&dst_dir, &src_dir)?;
    let kept = sh(
        "zfs",
        &[
            "list",
            "-H",
            "-o",
            "name",
            "-r",
            &format!("{src_pool}/tandem-diverged"),
        ],
    )
    .await?
    .lines()
    .find(|l| l.contains("/tandem-diverged/"))
    .map(str::to_string)
    .context("the diverged state is kept")?;
    let unsynced = std::fs::read_to_string(mountpoint(&kept).await?.join("unsynced.txt"))?;
    crate::outln!(
        "\n   verified: pve1 holds pve2's data ({files} files, {bytes} bytes identical, incl. written-on-pve2.txt); \
         pve1's unsynced.txt is kept in {kept}: {:?}",
        unsynced.trim()
    );
    std::fs::write(
        dst_dir.join("later.txt"),
        b"written on pve2 after the reverse\n",
    )?;
    crate::outln!("\n== pve2 is the primary; its daemon replicates to pve1 every interval ==");
    if !run_self(&pve2_cfg, &["run", "vm-100"]).await? {
        bail!("the cycle from pve2 failed");
    }
    crate::outln!(
        "\n$ tandem --config {} status   (on pve2, the primary now)",
        pve2_cfg.display()
    );
    crate::cmd::status::status(&pve2_cfg, false).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs this binary with `args` against `cfg`, printing the command and
/// its output; returns whether it succeeded.
async fn run_self(cfg: &Path, args: &[&str]) -> Result<bool> {
    let exe = std::env::current_exe().context("cannot find the tandem binary")?;
    crate::outln!("$ tandem --config {} {}", cfg.display(), args.join(" "));
    let out = Command::new(exe)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    for l in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        crate::outln!("    {l}");
    }
    Ok(out.status.success())
}
