//! The real `tandem` binary on real OpenZFS 2.3, inside one lab guest (pools `rpool` and `tank`
//! on two virtio disks, both nodes of the job local): the core replication suite on a
//! Proxmox-style zvol and on a filesystem, resume after SIGKILL and a stale resume token, and raw
//! sends of an encrypted dataset. Bookmarks are not tested: tandem does not use them yet.
//!
//! Needs `hw-tests/lab/lab.sh build` and `cargo build -p tandem`; run with
//! `cargo test -p tandem-hw-tests --test tandem_openzfs -- --include-ignored --nocapture`.

mod tandem_lab;

use std::time::Duration;
use tandem_hw_tests::{timed, Guest, Lab, Result, GIB};
use tandem_lab::*;

/// Boots the one-guest rig: tandem installed, `rpool` on vda with `rpool/data`, `tank` on vdb
/// with `tank/replica`.
fn boot(lab: &Lab, share: &Share, name: &str) -> Result<Guest> {
    let g = lab
        .guest(name)
        .disks(2, 2 * GIB)
        .share(share.path())
        .start()?;
    timed(&format!("{name}: boot to ready"), || g.wait_ready())?;
    println!("{}", install(&g)?.trim());
    println!("{}", g.run("zfs version")?.trim());
    g.run(
        "zpool create -f -o ashift=12 rpool /dev/vda && zpool create -f -o ashift=12 tank /dev/vdb \
         && zfs create rpool/data && zfs create tank/replica",
    )?;
    Ok(g)
}

/// Runs `body` with a lab, a staged tandem binary and the booted rig; skips cleanly without them.
fn with_rig(test: &str, body: impl FnOnce(&Guest, &mut Findings) -> Result<()>) {
    let Some(share) = Share::with_tandem(test) else {
        return;
    };
    let Some(lab) = Lab::acquire_or_skip(test) else {
        return;
    };
    let mut findings = Findings::default();
    let res = timed(&format!("{test}: total"), || -> Result<()> {
        let g = boot(&lab, &share, "tandem")?;
        body(&g, &mut findings)
    });
    if let Err(e) = res {
        panic!("{test}: {e}{}", findings.summary());
    }
    findings.finish(test);
}

/// A local-to-local job (both nodes are this guest).
fn local_config(jobs: &str) -> String {
    config("address = \"local\"", jobs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Zvol,
    Filesystem,
}

/// One replicated volume: a Proxmox-style zvol or subvol and its replica.
struct Vol {
    kind: Kind,
    src: String,
    dst: String,
}

impl Vol {
    fn new(kind: Kind, id: u32) -> Vol {
        let disk = match kind {
            Kind::Zvol => format!("vm-{id}-disk-0"),
            Kind::Filesystem => format!("subvol-{id}-disk-0"),
        };
        Vol {
            kind,
            src: format!("rpool/data/{disk}"),
            dst: format!("tank/replica/{disk}"),
        }
    }

    fn dev(ds: &str) -> String {
        format!("/dev/zvol/{ds}")
    }

    fn create(&self, g: &Guest, pool_ds: &str) -> Result<()> {
        match self.kind {
            Kind::Zvol => {
                g.run(&format!("zfs create -V 64M -o volblocksize=16k {pool_ds}"))?;
                wait_dev(g, &Vol::dev(pool_ds))
            }
            Kind::Filesystem => g.run(&format!("zfs create {pool_ds}")).map(|_| ()),
        }
    }

    /// Changes the data of `ds` for cycle `i`: new, overwritten and (fs) deleted data.
    fn write(&self, g: &Guest, ds: &str, i: u32) -> Result<()> {
        let cmd = match (self.kind, i) {
            (Kind::Zvol, 0) => format!(
                "dd if=/dev/urandom of={} bs=1M count=24 conv=fsync status=none",
                Vol::dev(ds)
            ),
            // new region, then overwrite the start, then a region past the first write
            (Kind::Zvol, _) => format!(
                "dd if=/dev/urandom of={} bs=1M seek={} count=4 conv=fsync,notrunc status=none",
                Vol::dev(ds),
                [0, 28, 2, 40, 50, 10][i as usize % 6]
            ),
            (Kind::Filesystem, 0) => format!(
                "head -c 20M /dev/urandom > /{ds}/disk.raw && echo cycle 0 > /{ds}/small.txt && \
                 mkdir -p /{ds}/etc/pve && echo 'vmid: 100' > /{ds}/etc/pve/100.conf && sync"
            ),
            (Kind::Filesystem, _) => format!(
                "head -c 3M /dev/urandom > /{ds}/new-{i}.bin && echo cycle {i} > /{ds}/small.txt && \
                 dd if=/dev/urandom of=/{ds}/disk.raw bs=64K seek={} count=16 conv=notrunc status=none && \
                 {} sync",
                i * 40,
                if i == 2 { format!("rm /{ds}/new-1.bin &&") } else { String::new() }
            ),
        };
        g.run(&cmd).map(|_| ())
    }

    /// The source's content as of snapshot `short` (a filesystem is read through `.zfs/snapshot`
    /// so that reading does not touch the live dataset).
    fn src_content(&self, g: &Guest, short: &str) -> Result<String> {
        match self.kind {
            Kind::Zvol => sha256_dev(g, &Vol::dev(&self.src)),
            Kind::Filesystem => sha256_tree(g, &format!("/{}/.zfs/snapshot/{short}", self.src)),
        }
    }

    /// The replica's live content (what a failover would use).
    fn dst_content(&self, g: &Guest) -> Result<String> {
        match self.kind {
            Kind::Zvol => {
                wait_dev(g, &Vol::dev(&self.dst))?;
                sha256_dev(g, &Vol::dev(&self.dst))
            }
            Kind::Filesystem => {
                assert_eq!(
                    prop(g, "mounted", &self.dst)?,
                    "yes",
                    "{} mounted",
                    self.dst
                );
                sha256_tree(g, &format!("/{}", self.dst))
            }
        }
    }

    /// GUIDs of the sent snapshot equal on both sides, the newest snapshots equal, contents equal.
    fn assert_replica(&self, g: &Guest, sent: &str, what: &str) -> Result<()> {
        assert_same_guid(g, &self.src, g, &self.dst, sent)?;
        let (newest, guid) = assert_newest_equal(g, &self.src, g, &self.dst)?;
        assert_eq!(newest, sent, "{what}: the sent snapshot is the newest");
        assert_eq!(
            self.src_content(g, sent)?,
            self.dst_content(g)?,
            "{what}: replica content differs from the source at @{sent}"
        );
        println!("[check] {what}: @{sent} guid {guid} equal on both sides, content equal");
        Ok(())
    }
}

fn tandem_snaps(list: &[(String, String)], job: &str) -> Vec<String> {
    let prefix = format!("tandem_{job}_");
    list.iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .map(|(n, _)| n.clone())
        .collect()
}

fn holds(g: &Guest, snap: &str) -> Result<String> {
    g.run(&format!("zfs holds -H {snap}"))
}

/// The core suite on one volume kind: full, three incrementals, up to date, retention and holds,
/// a diverged target, a same-name-other-GUID target, and an invalid config.
fn core_suite(g: &Guest, f: &mut Findings, kind: Kind) -> Result<()> {
    let job_name = "vm-100";
    let v = Vol::new(kind, 100);
    let other = Vol::new(kind, 200);
    write_file(
        g,
        CONFIG,
        &local_config(&format!(
            "{}{}",
            job(job_name, &v.src, &v.dst, ""),
            job("vm-200", &other.src, &other.dst, "")
        )),
    )?;
    v.create(g, &v.src)?;

    // --- initial full
    v.write(g, &v.src, 0)?;
    let o = timed("tandem: full", || run_ok(g, job_name))?;
    assert_eq!(o.plans(), ["full"], "{o}");
    let sent = o.sent_short().unwrap_or_else(|| panic!("no `sent` in {o}"));
    assert!(sent.starts_with("tandem_vm-100_"), "{sent}");
    assert!(o.bytes() > 10 << 20, "full stream bytes: {o}");
    v.assert_replica(g, &sent, "after the full")?;
    assert_eq!(prop(g, "readonly", &v.dst)?, "on", "replica is read-only");
    assert_eq!(prop(g, "receive_resume_token", &v.dst)?, "-");

    // --- three incrementals with changing data
    for i in 1..=3 {
        v.write(g, &v.src, i)?;
        let o = timed(&format!("tandem: incremental {i}"), || run_ok(g, job_name))?;
        if o.plans() == ["up-to-date"] {
            // `written` is only updated at txg sync: data written just before the run is not seen
            let diag = g.run(&format!(
                "echo \"written now: $(zfs get -Hp -o value written {s})\"; zpool sync rpool; \
                 echo \"written after zpool sync: $(zfs get -Hp -o value written {s})\"",
                s = v.src
            ))?;
            println!("[written-lag] {}", diag.trim());
            f.check(
                false,
                format!(
                    "incremental {i}: tandem planned up-to-date although data was written (and \
                     fsync'd) just before; `zfs get written` lags until the txg syncs ({}). {o}",
                    diag.trim().replace('\n', ", ")
                ),
            );
            let o2 = run_ok(g, job_name)?;
            assert_eq!(o2.plans(), ["incremental"], "{o2}");
            let sent = o2.sent_short().unwrap_or_default();
            v.assert_replica(g, &sent, &format!("after incremental {i} (retried)"))?;
            continue;
        }
        assert_eq!(o.plans(), ["incremental"], "{o}");
        let sent = o.sent_short().unwrap_or_else(|| panic!("no `sent` in {o}"));
        assert!(o.bytes() > 0, "{o}");
        v.assert_replica(g, &sent, &format!("after incremental {i}"))?;
    }

    // --- retention (keep = 2) and holds on the newest common snapshot only
    let (s_list, t_list) = (snapshots(g, &v.src)?, snapshots(g, &v.dst)?);
    let (s_own, t_own) = (
        tandem_snaps(&s_list, job_name),
        tandem_snaps(&t_list, job_name),
    );
    assert_eq!(s_own.len(), 2, "keep = 2 on the source: {s_list:?}");
    assert_eq!(t_own.len(), 2, "keep = 2 on the target: {t_list:?}");
    let newest = s_own.last().cloned().unwrap_or_default();
    // Each side's hold names the node at the other end.
    for (ds, own, tag) in [(&v.src, &s_own, "tandem_@b"), (&v.dst, &t_own, "tandem_@a")] {
        for s in own.iter() {
            let h = holds(g, &format!("{ds}@{s}"))?;
            let held = h.contains(tag);
            assert_eq!(held, *s == newest, "holds on {ds}@{s}: {h:?}");
        }
    }

    // --- no change: planned and run as up to date, no new snapshot anywhere
    let before = (fingerprint(g, "rpool")?, fingerprint(g, "tank")?);
    let p = tandem(g, &format!("plan {job_name} --json"))?;
    assert_eq!(p.code, 0, "{p}");
    assert_eq!(p.report()["plan"]["plan"], "up_to_date", "{p}");
    let o = run_ok(g, job_name)?;
    assert_eq!(o.plans(), ["up-to-date"], "{o}");
    assert_eq!(o.bytes(), 0, "{o}");
    assert!(o.report()["sent"].is_null(), "{o}");
    assert_eq!(
        (fingerprint(g, "rpool")?, fingerprint(g, "tank")?),
        before,
        "an up-to-date cycle changed nothing"
    );
    let st = tandem(g, "status --json")?;
    let row = st.json()[0].clone();
    assert_eq!(row["state"], "ok", "{st}");
    assert_eq!(row["last_plan"], "up-to-date", "{st}");
    assert_eq!(
        row["common_guid"].as_u64().map(|x| x.to_string()),
        Some(guid(g, &format!("{}@{newest}", v.src))?),
        "status names the newest common snapshot: {st}"
    );

    // --- a snapshot taken on the target after the base: diverged, nothing touched
    g.run(&format!("zfs snapshot {}@foreign", v.dst))?;
    v.write(g, &v.src, 4)?;
    g.run("zpool sync")?;
    let before = (fingerprint(g, "rpool")?, fingerprint(g, "tank")?);
    let dst_before = v.dst_content(g)?;
    let p = tandem(g, &format!("plan {job_name} --json"))?;
    assert_eq!(p.code, 1, "plan of a conflict exits 1: {p}");
    assert_eq!(p.report()["plan"]["plan"], "conflict", "{p}");
    assert_eq!(p.report()["plan"]["kind"], "target_diverged", "{p}");
    let o = tandem(g, &format!("run {job_name} --json"))?;
    assert_eq!(o.code, 1, "{o}");
    assert_eq!(o.report()["ok"], false, "{o}");
    let err = o.report()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains("diverged") && err.contains(&format!("{}@foreign", v.dst)),
        "conflict names the foreign snapshot: {o}"
    );
    assert_eq!(
        (fingerprint(g, "rpool")?, fingerprint(g, "tank")?),
        before,
        "a diverged target: nothing changed on either side (no snapshot taken on the source)"
    );
    assert_eq!(
        v.dst_content(g)?,
        dst_before,
        "diverged target content untouched"
    );
    // the operator removes the foreign snapshot; the next cycle goes on incrementally
    g.run(&format!("zfs destroy {}@foreign", v.dst))?;
    let o = run_ok(g, job_name)?;
    assert_eq!(o.plans(), ["incremental"], "{o}");
    v.assert_replica(
        g,
        &o.sent_short().unwrap_or_default(),
        "after the divergence was resolved",
    )?;

    // --- same snapshot name, different GUID: not a replica, refused, untouched
    let same = "tandem_vm-200_20250101T000000Z";
    other.create(g, &other.src)?;
    other.create(g, &other.dst)?;
    other.write(g, &other.src, 0)?;
    other.write(g, &other.dst, 0)?;
    g.run(&format!(
        "zfs snapshot {}@{same} && zfs snapshot {}@{same}",
        other.src, other.dst
    ))?;
    // read first: reading a writable filesystem may update atimes, which `written` would show
    let dst_before = other.dst_content(g)?;
    let before = (fingerprint(g, "rpool")?, fingerprint(g, "tank")?);
    let o = tandem(g, "run vm-200 --json")?;
    assert_eq!(o.code, 1, "{o}");
    let err = o.report()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains("no snapshot in common")
            && err.contains("different GUID")
            && err.contains(&format!("{}@{same}", other.dst)),
        "conflict names the same-name-other-GUID snapshot: {o}"
    );
    let p = tandem(g, "plan vm-200 --json")?;
    assert_eq!(p.report()["plan"]["kind"], "no_common_snapshot", "{p}");
    assert_eq!(
        (fingerprint(g, "rpool")?, fingerprint(g, "tank")?),
        before,
        "same name, other GUID: nothing changed on either side"
    );
    assert_eq!(
        other.dst_content(g)?,
        dst_before,
        "foreign target content untouched"
    );

    // --- bad input: an illegal dataset name in the config exits 2 and changes nothing
    let bad = "/root/bad.toml";
    write_file(
        g,
        bad,
        &local_config(&job(
            job_name,
            &v.src,
            "tank/replica/vm-100-disk-0;zfs destroy -r tank",
            "",
        )),
    )?;
    let before = (
        fingerprint(g, "rpool")?,
        fingerprint(g, "tank")?,
        g.run(&format!("ls -lR --time-style=+%s.%N {STATE_DIR}"))?,
    );
    for args in ["run vm-100 --json", "plan vm-100 --json", "status --json"] {
        let o = g.exec(&format!("{TANDEM} --config {bad} {args}"))?;
        println!(
            "[tandem] (bad config) {args} -> exit {}: {}",
            o.code,
            o.stderr.trim()
        );
        assert_eq!(o.code, 2, "bad config, `{args}`: {o:?}");
        assert!(
            o.stderr.contains("invalid configuration") && o.stderr.contains("[jobs.vm-100] target"),
            "the error names the key at fault: {o:?}"
        );
    }
    assert_eq!(
        (
            fingerprint(g, "rpool")?,
            fingerprint(g, "tank")?,
            g.run(&format!("ls -lR --time-style=+%s.%N {STATE_DIR}"))?
        ),
        before,
        "an invalid config changed nothing (pools, state)"
    );
    println!(
        "{}",
        g.run("zfs list -t all -o name,used,refer,guid -r rpool tank")?
    );
    Ok(())
}

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn tandem_core_suite_on_a_zvol() {
    with_rig("tandem_core_suite_on_a_zvol", |g, f| {
        core_suite(g, f, Kind::Zvol)
    });
}

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn tandem_core_suite_on_a_filesystem() {
    with_rig("tandem_core_suite_on_a_filesystem", |g, f| {
        core_suite(g, f, Kind::Filesystem)
    });
}

/// Starts `tandem run JOB --json` in the background, waits until its `zfs receive` into `dst` has
/// read `at_least` bytes of the stream, and SIGKILLs tandem. Returns the bytes the receive had
/// read. Then waits for the orphaned `zfs send`/`zfs receive` to exit and for the target's
/// `receive_resume_token`, which it returns too.
fn run_and_kill(g: &Guest, job: &str, dst: &str, at_least: u64) -> Result<(u64, String)> {
    g.run("rm -f /tmp/tandem.pid /tmp/bg.out /tmp/bg.err")?;
    g.spawn(&format!(
        "{TANDEM} --config {CONFIG} run {job} --json > /tmp/bg.out 2> /tmp/bg.err & \
         echo $! > /tmp/tandem.pid; wait"
    ))?;
    let rchar = format!(
        "p=$(pgrep -f '^zfs receive -s {dst}$') && awk '/^rchar/ {{print $2}}' /proc/$p/io"
    );
    timed("resume: stream under way", || {
        g.wait_for(
            &format!("r=$({rchar}) && [ \"$r\" -ge {at_least} ]"),
            Duration::from_secs(300),
        )
    })?;
    let comm = g.run("cat /proc/$(cat /tmp/tandem.pid)/comm")?;
    assert_eq!(comm.trim(), "tandem", "the pid is tandem's");
    let read = g.run(&format!("{rchar}; kill -9 $(cat /tmp/tandem.pid)"))?;
    let read: u64 = read.trim().parse().unwrap_or(0);
    println!("[resume] SIGKILLed tandem after its receive read {read} bytes");
    timed("resume: orphaned zfs processes exit", || {
        g.wait_for(
            "! pgrep -f '^zfs (send|receive)' && ! kill -0 $(cat /tmp/tandem.pid) 2>/dev/null",
            Duration::from_secs(120),
        )
    })?;
    let token_cmd = format!("zfs get -H -o value receive_resume_token {dst}");
    g.wait_for(
        &format!("t=$({token_cmd}) && [ -n \"$t\" ] && [ \"$t\" != - ]"),
        Duration::from_secs(60),
    )?;
    Ok((read, g.run(&token_cmd)?.trim().to_string()))
}

/// A field of `zfs send -nv -t TOKEN`'s "resume token contents" (numbers are printed in hex).
fn token_field(g: &Guest, token: &str, field: &str) -> Result<String> {
    let out = g.run(&format!("zfs send -nv -t {token} 2>&1"))?;
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field} = ")))
        .unwrap_or_else(|| panic!("no {field} in the token contents:\n{out}"));
    Ok(v.trim().to_string())
}

fn parse_num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap_or(0),
        None => s.parse().unwrap_or(0),
    }
}

fn resume_suite(g: &Guest, f: &mut Findings) -> Result<()> {
    let job_name = "vm-101";
    let v = Vol::new(Kind::Zvol, 101);
    let cfg = |rate: &str| {
        local_config(&job(
            job_name,
            &v.src,
            &v.dst,
            &format!("rate_limit = \"{rate}\""),
        ))
    };
    v.create(g, &v.src)?;
    g.run(&format!(
        "dd if=/dev/urandom of={} bs=1M count=48 conv=fsync status=none",
        Vol::dev(&v.src)
    ))?;

    // --- SIGKILL during the initial full (2 MiB/s), then resume
    write_file(g, CONFIG, &cfg("2M"))?;
    let (read, token) = run_and_kill(g, job_name, &v.dst, 16 << 20)?;
    let received = parse_num(&token_field(g, &token, "bytes")?);
    let toname = token_field(g, &token, "toname")?;
    println!(
        "[resume] token: {} chars, toname {toname}, bytes {received}",
        token.len()
    );
    let p = tandem(g, &format!("plan {job_name} --json"))?;
    assert_eq!(p.report()["plan"]["plan"], "resume", "{p}");
    let left_estimate = p.report()["estimated_bytes"].as_u64();
    write_file(g, CONFIG, &cfg("0"))?;
    let o = timed("tandem: resume the full", || run_ok(g, job_name))?;
    assert_eq!(o.plans().first().map(String::as_str), Some("resume"), "{o}");
    f.check(
        o.plans() == ["resume", "up-to-date"],
        format!(
            "after resuming the full, expected plans [resume, up-to-date]: {:?}",
            o.plans()
        ),
    );
    assert_eq!(
        prop(g, "receive_resume_token", &v.dst)?,
        "-",
        "token gone after the resume"
    );
    let short = toname
        .split_once('@')
        .map(|(_, s)| s.to_string())
        .unwrap_or_default();
    v.assert_replica(g, &short, "after the resumed full")?;
    let total: u64 = g
        .run(&format!("zfs send {} | wc -c", toname))?
        .trim()
        .parse()
        .unwrap_or(0);
    let resumed = o.bytes();
    let resent = (received + resumed).saturating_sub(total);
    println!(
        "[resume] full stream {total} B; receive had read {read} B, token says {received} B \
         received; resume sent {resumed} B (plan estimated {left_estimate:?}); re-sent \
         {resent} B = {:.3} % of the stream; the resume carried {:.1} % of the stream",
        100.0 * resent as f64 / total.max(1) as f64,
        100.0 * resumed as f64 / total.max(1) as f64
    );
    assert!(total > 40 << 20, "stream size {total}");
    assert!(
        received > 8 << 20,
        "the kill came after some data was received"
    );
    assert!(
        resumed < total - received / 2,
        "the resume did not start over"
    );
    assert!(
        (resent as f64) < 0.10 * total as f64,
        "re-sent {resent} of {total} bytes (>= 10 %)"
    );
    f.check(
        prop(g, "readonly", &v.dst)? == "on",
        format!(
            "replica {} is not readonly after its initial full was resumed (readonly={}); a \
             direct full sets readonly=on",
            v.dst,
            prop(g, "readonly", &v.dst)?
        ),
    );
    let h = holds(g, &format!("{}@{short}", v.src))?;
    f.check(
        h.contains("tandem_@b"),
        format!("source @{short} held after the resume: {h:?}"),
    );

    // --- SIGKILL during an incremental, destroy the snapshot the token needs: stale token
    g.run(&format!(
        "dd if=/dev/urandom of={} bs=1M seek=8 count=32 conv=fsync,notrunc status=none && zpool sync",
        Vol::dev(&v.src)
    ))?;
    write_file(g, CONFIG, &cfg("2M"))?;
    let (_, token) = run_and_kill(g, job_name, &v.dst, 8 << 20)?;
    let stale = token_field(g, &token, "toname")?;
    println!("[stale] interrupted incremental to {stale}; destroying it on the source");
    assert!(
        stale.starts_with(&format!("{}@tandem_vm-101_", v.src)),
        "{stale}"
    );
    let h = holds(g, &stale)?;
    if h.contains("tandem_@b") {
        g.run(&format!("zfs release tandem_@b {stale}"))?;
    }
    g.run(&format!("zfs destroy {stale}"))?;
    write_file(g, CONFIG, &cfg("0"))?;
    let o = timed("tandem: stale token", || {
        tandem(g, &format!("run {job_name} --json"))
    })?;
    println!("{o}");
    assert_eq!(
        o.code, 0,
        "tandem must abort the stale partial receive and complete: {o}"
    );
    assert_eq!(o.plans(), ["resume", "incremental"], "{o}");
    let warnings = o.report()["warnings"].to_string();
    assert!(
        warnings.contains("stale") && warnings.contains("receive -A"),
        "the abort is reported: {o}"
    );
    assert_eq!(
        prop(g, "receive_resume_token", &v.dst)?,
        "-",
        "no token left"
    );
    assert!(
        !g.exec(&format!("zfs list -H -t all {}/%recv", v.dst))?
            .success(),
        "no partial receive state left"
    );
    let sent = o.sent_short().unwrap_or_default();
    assert_ne!(format!("{}@{sent}", v.src), stale);
    v.assert_replica(g, &sent, "after the stale token was aborted")?;
    println!(
        "{}",
        g.run("zfs list -t all -o name,used,refer,guid -r rpool/data tank/replica")?
    );
    Ok(())
}

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn tandem_resumes_after_sigkill_and_aborts_a_stale_token() {
    with_rig(
        "tandem_resumes_after_sigkill_and_aborts_a_stale_token",
        resume_suite,
    );
}

fn raw_suite(g: &Guest, f: &mut Findings) -> Result<()> {
    let job_name = "ct-102";
    let v = Vol::new(Kind::Filesystem, 102);
    let key = "/root/zpass";
    g.run(&format!(
        "printf 'correct horse battery staple\\n' > {key} && chmod 600 {key} && \
         zfs create -o encryption=on -o keyformat=passphrase -o keylocation=file://{key} {}",
        v.src
    ))?;
    write_file(
        g,
        CONFIG,
        &local_config(&job(job_name, &v.src, &v.dst, "raw = true")),
    )?;
    v.write(g, &v.src, 0)?;
    let o = timed("tandem: raw full", || run_ok(g, job_name))?;
    assert_eq!(o.plans(), ["full"], "{o}");
    let s1 = o.sent_short().unwrap_or_default();
    assert_same_guid(g, &v.src, g, &v.dst, &s1)?;
    for i in 1..=2 {
        v.write(g, &v.src, i)?;
        g.run("zpool sync rpool")?;
        let o = timed("tandem: raw incremental", || run_ok(g, job_name))?;
        assert_eq!(o.plans(), ["incremental"], "{o}");
        let s = o.sent_short().unwrap_or_default();
        assert_same_guid(g, &v.src, g, &v.dst, &s)?;
        assert_newest_equal(g, &v.src, g, &v.dst)?;
    }
    let o = run_ok(g, job_name)?;
    assert_eq!(o.plans(), ["up-to-date"], "{o}");
    // the replica is encrypted and locked
    let (newest, _) = assert_newest_equal(g, &v.src, g, &v.dst)?;
    assert_eq!(prop(g, "encryption", &v.dst)?, "aes-256-gcm");
    assert_eq!(
        prop(g, "keystatus", &v.dst)?,
        "unavailable",
        "the replica has no key"
    );
    assert_eq!(prop(g, "encryptionroot", &v.dst)?, v.dst);
    assert_eq!(prop(g, "mounted", &v.dst)?, "no");
    f.check(
        prop(g, "readonly", &v.dst)? == "on",
        format!("raw replica readonly={}", prop(g, "readonly", &v.dst)?),
    );
    // with the key, the replica holds the source's data
    g.run(&format!(
        "zfs load-key -L file://{key} {d} && zfs mount {d}",
        d = v.dst
    ))?;
    assert_eq!(
        v.src_content(g, &newest)?,
        sha256_tree(g, &format!("/{}/.zfs/snapshot/{newest}", v.dst))?,
        "decrypted replica content at @{newest}"
    );
    assert_eq!(v.src_content(g, &newest)?, v.dst_content(g)?);
    Ok(())
}

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn tandem_raw_send_keeps_an_encrypted_replica_locked() {
    with_rig(
        "tandem_raw_send_keeps_an_encrypted_replica_locked",
        raw_suite,
    );
}

/// The job's common snapshot is destroyed on the source (as sanoid or an
/// admin might, after releasing tandem's hold): the next cycle must send
/// incrementally from tandem's cursor bookmark, not resend everything and
/// not call the target diverged.
fn bookmark_suite(g: &Guest, _f: &mut Findings) -> Result<()> {
    let job_name = "vm-103";
    let v = Vol::new(Kind::Zvol, 103);
    v.create(g, &v.src)?;
    write_file(g, CONFIG, &local_config(&job(job_name, &v.src, &v.dst, "")))?;
    v.write(g, &v.src, 0)?;
    let o = timed("tandem: full", || run_ok(g, job_name))?;
    assert_eq!(o.plans(), ["full"], "{o}");
    let full_bytes = o.bytes();
    let base = o.sent_short().unwrap_or_default();
    v.assert_replica(g, &base, "full")?;
    // The job keeps a bookmark of the newest common snapshot on the source.
    let marks = g.run(&format!("zfs list -H -t bookmark -o name,guid {}", v.src))?;
    assert!(
        marks.contains(&format!("{}#{base}", v.src)),
        "bookmark of @{base}: {marks}"
    );
    // Someone prunes the common snapshot on the source.
    g.run(&format!(
        "zfs release tandem_@b {src}@{base} && zfs destroy {src}@{base}",
        src = v.src
    ))?;
    v.write(g, &v.src, 1)?;
    g.run("zpool sync rpool")?;
    let o = timed("tandem: incremental from the bookmark", || {
        run_ok(g, job_name)
    })?;
    assert_eq!(o.plans(), ["incremental-from-bookmark"], "{o}");
    assert!(
        o.bytes() * 3 < full_bytes,
        "sent {} bytes, a full stream is {full_bytes}: not a resend",
        o.bytes()
    );
    let sent = o.sent_short().unwrap_or_default();
    v.assert_replica(g, &sent, "incremental from bookmark")?;
    println!(
        "[check] bookmark: @{base} destroyed on the source, next cycle sent {} bytes (full: {full_bytes})",
        o.bytes()
    );
    // The next cycle is an ordinary incremental again; one job bookmark remains.
    v.write(g, &v.src, 2)?;
    g.run("zpool sync rpool")?;
    let o = run_ok(g, job_name)?;
    assert_eq!(o.plans(), ["incremental"], "{o}");
    v.assert_replica(
        g,
        &o.sent_short().unwrap_or_default(),
        "incremental after bookmark",
    )?;
    let marks = g.run(&format!("zfs list -H -t bookmark -o name {}", v.src))?;
    assert_eq!(
        marks
            .lines()
            .filter(|l| l.contains("#tandem_vm-103_"))
            .count(),
        1,
        "{marks}"
    );
    Ok(())
}

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn tandem_bookmark_survives_a_pruned_base() {
    with_rig("tandem_bookmark_survives_a_pruned_base", bookmark_suite);
}

/// The disks of the guest job of [`guest_suite`].
const GUEST_DISKS: [&str; 3] = ["vm-300-disk-0", "vm-300-disk-1", "vm-300-efi"];

/// A guest job over three zvols and a single-dataset job beside it, both nodes counting their
/// `zfs` processes through a `zfs_path` wrapper.
fn guest_config(rate: &str) -> String {
    let node = "address = \"local\"\nzfs_path = \"/usr/local/bin/zfs-count\"";
    let disks: Vec<String> = GUEST_DISKS.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "state_dir = \"{STATE_DIR}\"\nlocal_node = \"a\"\n\n[nodes.a]\n{node}\n\n[nodes.b]\n{node}\n\n\
         [jobs.vm-300]\nsource = \"a:rpool/data\"\ntarget = \"b:tank/replica\"\nkeep = 2\n\
         datasets = [{}]\nrate_limit = \"{rate}\"\n\n{}",
        disks.join(", "),
        job("solo", "rpool/data/solo", "tank/replica/solo", "")
    )
}

/// Every disk's newest snapshot: one name on all three, taken in one transaction group (one
/// `createtxg`: OpenZFS snapshots a list of datasets atomically), the same GUID on the replica,
/// the same bytes. Returns the name.
fn assert_guest_replica(g: &Guest, what: &str) -> Result<String> {
    let mut seen: Option<(String, String)> = None;
    for d in GUEST_DISKS {
        let (src, dst) = (format!("rpool/data/{d}"), format!("tank/replica/{d}"));
        let (newest, guid) = assert_newest_equal(g, &src, g, &dst)?;
        let txg = prop(g, "createtxg", &format!("{src}@{newest}"))?;
        match &seen {
            None => seen = Some((newest.clone(), txg.clone())),
            Some((n, t)) => {
                assert_eq!(&newest, n, "{what}: {src} has another newest snapshot");
                assert_eq!(&txg, t, "{what}: {src}@{newest} in another txg");
            }
        }
        wait_dev(g, &Vol::dev(&dst))?;
        assert_eq!(
            sha256_dev(g, &Vol::dev(&src))?,
            sha256_dev(g, &Vol::dev(&dst))?,
            "{what}: {dst} differs from {src}"
        );
        println!("[check] {what}: {d}@{newest} guid {guid}, createtxg {txg}, content equal");
    }
    Ok(seen.map(|s| s.0).unwrap_or_default())
}

/// A three-disk guest job on zvols: one atomic snapshot per cycle, an unchanged cycle that
/// costs one listing per node and nothing per job, and one disk's transfer killed and resumed.
fn guest_suite(g: &Guest, f: &mut Findings) -> Result<()> {
    write_file(
        g,
        "/usr/local/bin/zfs-count",
        "#!/bin/sh\necho \"$*\" >> /tmp/zfs-calls\nexec zfs \"$@\"\n",
    )?;
    g.run("chmod 0755 /usr/local/bin/zfs-count && zfs create rpool/data/solo")?;
    for d in GUEST_DISKS {
        let ds = format!("rpool/data/{d}");
        g.run(&format!("zfs create -V 64M -o volblocksize=16k {ds}"))?;
        wait_dev(g, &Vol::dev(&ds))?;
        g.run(&format!(
            "dd if=/dev/urandom of={} bs=1M count=8 conv=fsync status=none",
            Vol::dev(&ds)
        ))?;
    }
    g.run("echo one > /rpool/data/solo/f && sync")?;
    write_file(g, CONFIG, &guest_config("0"))?;
    let o = run_ok(g, "vm-300")?;
    assert!(o.plans().contains(&"full".to_string()), "{o}");
    let first = assert_guest_replica(g, "full")?;
    run_ok(g, "solo")?;

    // An incremental cycle: every disk changed, one new snapshot name on all.
    for (i, d) in GUEST_DISKS.iter().enumerate() {
        g.run(&format!(
            "dd if=/dev/urandom of={} bs=1M seek={} count=2 conv=fsync,notrunc status=none",
            Vol::dev(&format!("rpool/data/{d}")),
            10 + 4 * i
        ))?;
    }
    let o = run_ok(g, "vm-300")?;
    assert!(o.plans().contains(&"incremental".to_string()), "{o}");
    let second = assert_guest_replica(g, "incremental")?;
    assert_ne!(first, second);

    // Nothing changed: both jobs together cost one listing per node, no call per job.
    g.run("zpool sync && : > /tmp/zfs-calls")?;
    let o = tandem(g, "run --json")?;
    assert_eq!(o.code, 0, "{o}");
    let calls = g.run("cat /tmp/zfs-calls")?;
    let n = calls.lines().count();
    let gets = calls.lines().filter(|l| l.starts_with("get ")).count();
    let probes = calls.lines().filter(|l| *l == "version").count();
    println!("[count] an unchanged cycle of 2 jobs (4 datasets) ran {n} zfs processes:\n{calls}");
    // `zfs version` is the capability probe, once per node per process (a daemon's once).
    f.check(
        gets == 2 && probes <= 2 && gets + probes == n,
        format!(
            "an unchanged cycle should run one `zfs get` per node (and the version probe), ran \
             {n}:\n{calls}"
        ),
    );

    // One disk's transfer killed mid-stream, then resumed; the others are not sent twice and no
    // new snapshot is taken.
    let big = format!("tank/replica/{}", GUEST_DISKS[1]);
    g.run(&format!(
        "dd if=/dev/urandom of={} bs=1M seek=16 count=40 conv=fsync,notrunc status=none && zpool sync",
        Vol::dev(&format!("rpool/data/{}", GUEST_DISKS[1]))
    ))?;
    write_file(g, CONFIG, &guest_config("2M"))?;
    let (read, token) = run_and_kill(g, "vm-300", &big, 8 << 20)?;
    let received = parse_num(&token_field(g, &token, "bytes")?);
    let toname = token_field(g, &token, "toname")?;
    let third = toname
        .split_once('@')
        .map(|(_, s)| s.to_string())
        .unwrap_or_default();
    println!(
        "[resume] {big}: killed after {read} B read, token to {toname}, {received} B received"
    );
    let before: Vec<Vec<(String, String)>> = GUEST_DISKS
        .iter()
        .map(|d| snapshots(g, &format!("rpool/data/{d}")))
        .collect::<Result<_>>()?;
    write_file(g, CONFIG, &guest_config("0"))?;
    let o = timed("tandem: resume one disk of the guest", || {
        run_ok(g, "vm-300")
    })?;
    assert!(o.plans().contains(&"resume".to_string()), "{o}");
    let after: Vec<Vec<(String, String)>> = GUEST_DISKS
        .iter()
        .map(|d| snapshots(g, &format!("rpool/data/{d}")))
        .collect::<Result<_>>()?;
    assert_eq!(
        after.iter().map(|s| s.last().cloned()).collect::<Vec<_>>(),
        before.iter().map(|s| s.last().cloned()).collect::<Vec<_>>(),
        "the resume took no new snapshot"
    );
    assert_eq!(prop(g, "receive_resume_token", &big)?, "-", "token gone");
    let newest = assert_guest_replica(g, "after one disk's resume")?;
    assert_eq!(
        newest, third,
        "every disk at the interrupted cycle's snapshot"
    );
    let total: u64 = g
        .run(&format!(
            "zfs send -i @{second} rpool/data/{}@{third} | wc -c",
            GUEST_DISKS[1]
        ))?
        .trim()
        .parse()
        .unwrap_or(0);
    let resent = (received + o.bytes()).saturating_sub(total);
    println!(
        "[resume] {big}: stream {total} B, {received} B before the kill, the cycle after sent {} B \
         (all disks); re-sent {resent} B = {:.2} %",
        o.bytes(),
        100.0 * resent as f64 / total.max(1) as f64
    );
    assert!(received > 4 << 20, "the kill came after some data");
    f.check(
        (resent as f64) < 0.10 * total as f64,
        format!("re-sent {resent} of {total} bytes (>= 10 %)"),
    );
    Ok(())
}

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn tandem_guest_job_on_zvols_snapshots_atomically_and_resumes_one_disk() {
    with_rig(
        "tandem_guest_job_on_zvols_snapshots_atomically_and_resumes_one_disk",
        guest_suite,
    );
}
