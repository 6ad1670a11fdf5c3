//! The end-to-end failover drill on real OpenZFS, automatic: node A (a guest whose power belongs
//! to an `ipmi_sim` BMC) replicates a Proxmox-style zvol to node B (another guest) with the real
//! `tandem` binary while a writer puts sequence-numbered 4 KiB records into it. A and B form a
//! two-node corosync cluster (Debian's corosync in the guests, knet over the guests' link,
//! `two_node: 1`), and the job has `failover = "auto"`: `tandem daemon` runs on B. In the middle of
//! a large incremental transfer A loses power (the host's `ipmitool chassis power off`). Nobody
//! types anything: B's daemon sees A leave corosync's membership, waits `failover_delay` (and,
//! its name sorting after A's, `two_node_delay`), fences A with tandem's own IPMI agent in guest B
//! through the same BMC (reached over QEMU's user-mode network at 10.0.2.2, i.e. the host's
//! 127.0.0.1), aborts the partial receive, promotes the newest complete snapshot, and runs the
//! job's `on_promote` hook, which restarts the writer on B. A is powered on again through the BMC,
//! imports its pool, is refused as the primary, and runs `tandem reverse`: its divergent state is
//! set aside under `rpool/tandem-diverged/`, A follows B, and A's unreplicated records are read
//! back through the printed `/dev/zvol/...` path. Every acknowledged record is accounted for.
//!
//! (`tandem failover` typed by hand runs the same engine; the host tier covers it, and this drill
//! covered it on OpenZFS until it was made automatic.)
//!
//! Needs `hw-tests/lab/lab.sh build` and `cargo build -p tandem`; run with
//! `cargo test -p tandem-hw-tests --test failover_drill -- --include-ignored --nocapture`.

mod tandem_lab;

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tandem_hw_tests::{
    report_timing, shell_quote, timed, Error, ExecOptions, Guest, Lab, PowerState, Result,
    BMC_PASSWORD, BMC_USER, GIB, HOST_GATEWAY,
};
use tandem_lab::*;

const A_IP: &str = "169.254.78.1";
const B_IP: &str = "169.254.78.2";
const JOB: &str = "vm-100";
const SRC: &str = "rpool/data/vm-100-disk-0";
const DST: &str = "tank/replica/vm-100-disk-0";
const DEV_A: &str = "/dev/zvol/rpool/data/vm-100-disk-0";
const DEV_B: &str = "/dev/zvol/tank/replica/vm-100-disk-0";
/// A's state directory lives on its pool, as on a real node (the guest's root is a tmpfs), so
/// A's tandem state survives the power cycle.
const A_STATE: &str = "/var/lib/tandem";
/// One record: `drill-rec node=N seq=S`, space-padded to 4 KiB, written at offset `S * 4 KiB`.
const REC: u64 = 4096;
/// A's writer writes seq 0..A_MAX; B's writer starts at B_FIRST (distinct offsets).
const A_MAX: u32 = 1900;
const B_FIRST: u32 = 2000;
const B_COUNT: u32 = 40;
/// The large write whose transfer A's power-off interrupts (MiB at offset 32 MiB).
const BULK_MIB: u32 = 48;
/// Sender-side rate limit of the job, so the large transfer lasts long enough to interrupt.
const RATE: &str = "4M";
/// The hook B's daemon runs after promoting: the writer, restarted on B.
const HOOK: &str = "/root/on-promote.sh";

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn failover_drill_power_off_mid_transfer_recovers_by_itself_then_reverse() {
    let test = "failover_drill_power_off_mid_transfer_recovers_by_itself_then_reverse";
    let Some(share) = Share::with_tandem(test) else {
        return;
    };
    let Some(lab) = Lab::acquire_or_skip(test) else {
        return;
    };
    if let Err(e) = lab.require_ipmi() {
        println!("SKIP {test}: {e}");
        return;
    }
    let mut findings = Findings::default();
    if let Err(e) = timed(&format!("{test}: total"), || {
        drill(&lab, &share, &mut findings)
    }) {
        panic!("{test}: {e}{}", findings.summary());
    }
    findings.finish(test);
}

/// The body of `[nodes.X]` for a node reached with ssh + `tandem serve --stdio`, as `me`.
fn ssh_node(ip: &str, me: &str) -> String {
    format!(
        "address = \"{ip}\"\nssh_user = \"root\"\nssh_identity = \"/root/.ssh/id_ed25519\"\n\
         ssh_options = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\"]\n\
         tandem_path = \"{TANDEM}\"\nserve_args = [\"--config\", \"{CONFIG}\", \"--peer\", \"{me}\"]\n"
    )
}

/// The job (automatic failover, the hook restarting the writer; cycles are run by hand on A, so
/// the interval is long), and what automatic failover needs on both nodes: corosync, and fence
/// levels for both ends. B has no BMC in this lab: its level is the watchdog level, which a
/// two-node cluster without a QDevice refuses — A never needs to fence B here.
fn job_table() -> String {
    format!(
        "[jobs.{JOB}]\nsource = \"a:{SRC}\"\ntarget = \"b:{DST}\"\nkeep = 3\nrate_limit = \"{RATE}\"\n\
         interval = \"1h\"\nfailover = \"auto\"\nfailover_delay = \"2s\"\non_promote = \"{HOOK}\"\n\n\
         [quorum]\nmode = \"corosync\"\n\n[ha]\ntwo_node_delay = \"1s\"\nretry = \"5s\"\n"
    )
}

/// Node a's fence level: its BMC on the host.
fn fence_a(bmc_port: u16) -> String {
    format!(
        "[[nodes.a.fence]]\nkind = \"ipmi\"\nhost = \"{HOST_GATEWAY}\"\nport = {bmc_port}\n\
         username = \"{BMC_USER}\"\npassword_file = \"/root/bmc-a.pw\"\ncipher_suite = 3\n\
         power_timeout = \"30s\"\n"
    )
}

const FENCE_B: &str = "[[nodes.b.fence]]\nkind = \"watchdog\"\ntimeout = \"60s\"\n";

/// corosync in a guest: a two-node cluster over the guests' link, `two_node: 1`; no crypto (a
/// lab link between two guests of one host). Started in the background; the guest's root is a
/// tmpfs, so this is redone after a power cycle.
fn corosync_up(g: &Guest) -> Result<()> {
    let conf = format!(
        "totem {{\n version: 2\n cluster_name: drill\n transport: knet\n crypto_cipher: none\n \
         crypto_hash: none\n token: 3000\n}}\n\
         nodelist {{\n node {{\n  name: a\n  nodeid: 1\n  ring0_addr: {A_IP}\n }}\n \
         node {{\n  name: b\n  nodeid: 2\n  ring0_addr: {B_IP}\n }}\n}}\n\
         quorum {{\n provider: corosync_votequorum\n two_node: 1\n}}\n\
         logging {{\n to_logfile: yes\n logfile: /root/corosync.log\n to_syslog: no\n \
         to_stderr: no\n timestamp: hires\n}}\n"
    );
    write_file(g, "/etc/corosync/corosync.conf", &conf)?;
    g.spawn(
        "mkdir -p /var/lib/corosync /run/corosync && exec corosync -f > /root/corosync.out 2>&1",
    )
}

fn quorate(g: &Guest) -> Result<bool> {
    Ok(
        g.exec("corosync-quorumtool -s | grep -Eq '^Quorate:[[:space:]]+Yes'")?
            .success(),
    )
}

/// A's config: A local, B through ssh; B may push into `rpool/data` (after the reverse).
fn config_a(bmc_port: u16) -> String {
    format!(
        "state_dir = \"{A_STATE}\"\nlocal_node = \"a\"\n\n[nodes.a]\naddress = \"local\"\n{}\n\
         [nodes.b]\n{}{FENCE_B}\n{}\n[[serve.peers]]\nname = \"b\"\nwrite = [\"rpool/data\"]\n",
        fence_a(bmc_port),
        ssh_node(B_IP, "a"),
        job_table()
    )
}

/// B's config: B local, A through ssh with one IPMI fence level (A's BMC on the host, reached
/// from the guest through QEMU's user-mode network); A may push into `tank/replica`.
fn config_b(bmc_port: u16) -> String {
    format!(
        "state_dir = \"{STATE_DIR}\"\nlocal_node = \"b\"\n\n[nodes.a]\n{}\n{}\n\
         [nodes.b]\naddress = \"local\"\n{FENCE_B}\n{}\n\
         [[serve.peers]]\nname = \"a\"\nwrite = [\"tank/replica\"]\n",
        ssh_node(A_IP, "b"),
        fence_a(bmc_port),
        job_table()
    )
}

/// Lets root on `from` ssh into `to` (a key is made on `from` if it has none).
fn authorize(from: &Guest, to: &Guest) -> Result<()> {
    let pubkey = from.run(
        "test -f /root/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519; \
         cat /root/.ssh/id_ed25519.pub",
    )?;
    to.run_with(
        "cat >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
        &ExecOptions::default().with_stdin(pubkey),
    )?;
    Ok(())
}

/// The shell loop writing record `seq` of `node` at offset `seq * 4 KiB` of `dev`, each with
/// O_DIRECT + O_DSYNC (acknowledged = on stable storage), then appending `seq` to `ack` (a file on
/// the host's 9p share, so the acknowledgements outlive the guest). `pause` between records.
fn writer(node: &str, dev: &str, first: u32, end: u32, ack: &str, pause: &str) -> String {
    format!(
        "i={first}; while [ $i -lt {end} ]; do \
         printf '%-4095s\\n' \"drill-rec node={node} seq=$i\" | \
         dd of={dev} bs={REC} seek=$i count=1 oflag=direct,dsync conv=notrunc status=none || exit 1; \
         echo $i >> {ack}; i=$((i+1)); sleep {pause}; done"
    )
}

/// The records on `dev` (first `count` 4 KiB blocks), as (node, seq), read with O_DIRECT.
fn records(g: &Guest, dev: &str, count: u32) -> Result<BTreeSet<(String, u32)>> {
    let out = g.run(&format!(
        "dd if={} bs={REC} count={count} iflag=direct status=none | \
         grep -ao 'drill-rec node=[a-z] seq=[0-9]*' || true",
        shell_quote(dev)
    ))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("drill-rec node=")?;
            let (node, seq) = rest.split_once(" seq=")?;
            Some((node.to_string(), seq.parse().ok()?))
        })
        .collect())
}

/// The seqs of `node` among `recs`.
fn seqs(recs: &BTreeSet<(String, u32)>, node: &str) -> BTreeSet<u32> {
    recs.iter()
        .filter(|(n, _)| n == node)
        .map(|(_, s)| *s)
        .collect()
}

/// The seqs acknowledged by a writer (its ack file on the host share).
fn acked(path: &std::path::Path) -> BTreeSet<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// sha256 of snapshot `snap` of zvol `ds` through its snapshot device (`snapdev=visible`).
fn sha256_snap(g: &Guest, ds: &str, snap: &str) -> Result<String> {
    g.run(&format!("zfs set snapdev=visible {ds}"))?;
    let dev = format!("/dev/zvol/{ds}@{snap}");
    wait_dev(g, &dev)?;
    let sum = sha256_dev(g, &dev)?;
    g.run(&format!("zfs inherit snapdev {ds}"))?;
    Ok(sum)
}

/// Waits for `ok` (polled every 200 ms) or fails after `timeout` naming `what`.
fn poll(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        if ok()? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ms(v: &Value) -> Duration {
    Duration::from_secs_f64(v.as_f64().unwrap_or(0.0) / 1000.0)
}

fn drill(lab: &Lab, share: &Share, f: &mut Findings) -> Result<()> {
    let link = lab.link()?;
    // B listens on the link: after A's power cycle the new QEMU of A connects again (a listening
    // QEMU socket netdev accepts a new peer; a connecting one would not reconnect).
    let (a, b) = timed("drill: boot A (BMC) and B", || -> Result<(Guest, Guest)> {
        let b = lab
            .guest("drill-b")
            .disk(2 * GIB)
            .network(link.listen(), &format!("{B_IP}/24"))
            .share(share.path())
            .host_network()
            .start()?;
        let a = lab
            .guest("drill-a")
            .disk(2 * GIB)
            .network(link.connect(), &format!("{A_IP}/24"))
            .share(share.path())
            .ipmi_bmc()
            .start()?;
        b.wait_ready()?;
        a.wait_ready()?;
        Ok((a, b))
    })?;
    let bmc = a
        .bmc()
        .ok_or_else(|| Error::Config("guest A has no BMC".into()))?;
    assert_eq!(bmc.power_status()?, PowerState::On);
    println!("{}", install(&a)?.trim());
    println!("{}", install(&b)?.trim());
    authorize(&a, &b)?;
    authorize(&b, &a)?;

    a.run(
        "zpool create -f -o ashift=12 rpool /dev/vda && zfs create rpool/data && \
         zfs create -o mountpoint=/var/lib/tandem rpool/tandem-state",
    )?;
    b.run("zpool create -f -o ashift=12 tank /dev/vda && zfs create tank/replica")?;
    a.run(&format!("zfs create -V 128M -o volblocksize=16k {SRC}"))?;
    wait_dev(&a, DEV_A)?;
    write_file(&a, CONFIG, &config_a(bmc.lan_port()))?;
    write_file(&b, CONFIG, &config_b(bmc.lan_port()))?;
    b.run(&format!(
        "umask 077 && printf '%s\\n' {} > /root/bmc-a.pw",
        shell_quote(BMC_PASSWORD)
    ))?;
    // B reaches A's BMC from inside the guest, before anything depends on it
    let t = tandem(&b, "fence test a")?;
    f.check(t.code == 0, format!("`tandem fence test a` on B: {t}"));

    // the cluster: corosync on both
    corosync_up(&a)?;
    corosync_up(&b)?;
    poll(
        "A and B quorate (two_node)",
        Duration::from_secs(120),
        || Ok(quorate(&a)? && quorate(&b)?),
    )?;
    println!("[drill] {}", tandem(&b, "quorum")?.stdout.trim());

    // the writer on A: ~10 records/s until it is powered off
    let ack_a = share.path().join("ack-a.log");
    a.spawn(&writer("a", DEV_A, 0, A_MAX, "/mnt/host/ack-a.log", "0.1"))?;
    poll("A's writer to start", Duration::from_secs(30), || {
        Ok(!acked(&ack_a).is_empty())
    })?;

    // a few cycles A -> B while it writes
    let mut last_sent = String::new();
    for i in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        let o = timed(&format!("drill: cycle {i} A -> B"), || run_ok(&a, JOB))?;
        let want = if i == 0 { "full" } else { "incremental" };
        assert_eq!(o.plans(), [want], "{o}");
        last_sent = o.sent_short().unwrap_or_else(|| panic!("no `sent` in {o}"));
        assert_same_guid(&a, SRC, &b, DST, &last_sent)?;
    }
    // the content of the last complete snapshot, as A has it
    let last_sha = sha256_snap(&a, SRC, &last_sent)?;
    let last_guid = guid(&a, &format!("{SRC}@{last_sent}"))?;
    println!("[drill] last complete replication snapshot: @{last_sent} guid {last_guid}");

    // B's daemon, once B holds the replica it will watch
    // B's hook: the writer, restarted on B once its zvol is writable
    write_file(
        &b,
        HOOK,
        &format!(
            "#!/bin/sh\nfor i in $(seq 1 100); do [ -e {DEV_B} ] && break; sleep 0.1; done\n{}\n",
            writer(
                "b",
                DEV_B,
                B_FIRST,
                B_FIRST + B_COUNT,
                "/mnt/host/ack-b.log",
                "0"
            )
        ),
    )?;
    b.run(&format!("chmod 755 {HOOK}"))?;
    b.spawn(&format!(
        "TANDEM_LOG=info exec {TANDEM} --config {CONFIG} daemon > /root/daemon.log 2>&1"
    ))?;
    let watching = poll("B's daemon to watch A", Duration::from_secs(60), || {
        let o = tandem(&b, "ha status --json")?;
        Ok(o.json()["daemon"]["jobs"][JOB]["state"] == "watching")
    });
    if watching.is_err() {
        println!(
            "--- B: ha status\n{}\n--- B's daemon log\n{}",
            tandem(&b, "ha status --json")?,
            b.exec("cat /root/daemon.log")?.stdout
        );
    }
    watching?;

    // a large write, and its transfer in the background
    a.run(&format!(
        "dd if=/dev/urandom of={DEV_A} bs=1M seek=32 count={BULK_MIB} oflag=direct conv=notrunc status=none && \
         zpool sync rpool"
    ))?;
    a.spawn(&format!(
        "{TANDEM} --config {CONFIG} run {JOB} --json > /root/big.json 2> /root/big.err; echo $? > /root/big.rc"
    ))?;
    // the receive runs on B (zfs receive under tandem serve); let a few MB arrive
    let started = poll(
        "the large transfer's `zfs receive` on B",
        Duration::from_secs(60),
        || Ok(b.exec("pgrep -f 'zfs (receive|recv)'")?.success()),
    )?;
    report_timing("drill: large transfer spawned -> zfs receive on B", started);
    std::thread::sleep(Duration::from_secs(4));
    let still = a.exec("test ! -e /root/big.rc")?.success();
    assert!(
        still,
        "the large transfer ended before the power-off ({}): raise BULK_MIB or lower RATE",
        a.exec("cat /root/big.rc /root/big.json /root/big.err")?
            .stdout
    );

    // A loses power in the middle of the transfer
    let acked_before = acked(&ack_a);
    let t_off = Instant::now();
    bmc.power("off")?;
    let gone = a.wait_stopped(Duration::from_secs(60))?;
    report_timing("drill: A power off -> QEMU gone", t_off.elapsed());
    let _ = gone;
    let acked_a = acked(&ack_a);
    println!(
        "[drill] A's writer: {} records acknowledged before the power-off (last {:?})",
        acked_a.len(),
        acked_a.last()
    );
    assert!(acked_a.len() >= acked_before.len());
    let events: Vec<String> = a.events().iter().map(|e| e.name.clone()).collect();
    println!("[drill] QMP events of A: {events:?}");
    assert!(!a.is_running(), "A's QEMU is gone");
    // ipmi_sim may report "on" for a moment after its VM went away
    let off = poll(
        "A's BMC to report power off",
        Duration::from_secs(30),
        || Ok(bmc.power_status()? == PowerState::Off),
    );
    if off.is_err() {
        println!(
            "--- ipmi_sim.log\n{}",
            std::fs::read_to_string(a.dir().join("ipmi_sim.log")).unwrap_or_default()
        );
    }
    report_timing("drill: A power off -> BMC reports off", t_off.elapsed());
    off?;
    assert!(!a.is_running(), "A's QEMU stays gone");

    // B's view of the interrupted receive
    let before = b.run(&format!(
        "zfs list -H -p -t all -r -o name,guid,receive_resume_token {DST}; \
         echo '--- receive processes'; pgrep -af 'zfs (receive|recv)' || true"
    ))?;
    println!("[drill] B after A's power-off:\n{before}");
    let partial = before.lines().any(|l| {
        l.starts_with(DST)
            && l.split('\t')
                .nth(2)
                .is_some_and(|t| t != "-" && !t.is_empty())
    });
    let receiving = before
        .split_once("--- receive processes")
        .is_some_and(|(_, procs)| !procs.trim().is_empty());
    assert!(
        !snapshots(&b, DST)?.iter().any(|(s, _)| s > &last_sent),
        "the interrupted snapshot must not be complete on B"
    );

    // B recovers by itself: fence A through its BMC, promote, start the writer (the hook)
    let ack_b = share.path().join("ack-b.log");
    let promoted = poll(
        "B's daemon to fail over by itself",
        Duration::from_secs(240),
        || Ok(tandem(&b, "ha status --json")?.json()["daemon"]["jobs"][JOB]["state"] == "promoted"),
    );
    if promoted.is_err() {
        println!(
            "--- B's daemon log\n{}",
            b.exec("cat /root/daemon.log")?.stdout
        );
    }
    report_timing(
        "drill: A power off -> B promoted (ha status)",
        t_off.elapsed(),
    );
    promoted?;
    poll("the hook's writer on B", Duration::from_secs(120), || {
        Ok(acked(&ack_b).len() == B_COUNT as usize)
    })?;
    report_timing("drill: A power off -> B's writer done", t_off.elapsed());
    let last = b.run(&format!("cat {STATE_DIR}/ha/last-failover.json"))?;
    let last: Value = serde_json::from_str(&last)
        .map_err(|e| Error::Config(format!("last-failover.json: {e}: {last}")))?;
    let log = b.exec("cat /root/daemon.log")?.stdout;
    f.check(
        !log.contains("trying again later"),
        format!(
            "B's first automatic failover did not succeed (retried): {}",
            log.lines()
                .filter(|l| l.contains("trying again later"))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
    );
    assert_eq!(last["node"], "a", "{last}");
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["report"]["hooks"][JOB]["hook"], "ok", "{last}");
    // B's daemon has done its part; stop it before A returns (the reverse is the operator's)
    b.run("pkill -f '[t]andem --config /root/tandem.toml daemon' || true")?;
    println!("[drill] automatic failover: {}", last["report"]["failover"]);
    let v = &last["report"]["failover"];
    assert_eq!(v["fenced"], true, "{v}");
    assert_eq!(v["confirmed_by"], "fence", "{v}");
    let att = &v["fence"]["attempts"][0];
    assert!(
        att["outcome"] == "already_off" || att["outcome"] == "powered_off",
        "{v}"
    );
    let j = &v["jobs"][0];
    assert_eq!(j["ok"], true, "{v}");
    assert_eq!(j["snapshot"], format!("{DST}@{last_sent}"), "{v}");
    report_timing(
        "drill: failover start -> replica writable",
        ms(&j["writable_after_ms"]),
    );
    report_timing(
        "drill: failover fence (IPMI from guest B)",
        ms(&att["elapsed_ms"]),
    );
    println!(
        "[drill] fence outcome {}, RPO {} s, partial receive on B before failover: {partial}, \
         receive process alive: {receiving}",
        att["outcome"], j["rpo_seconds"]
    );
    assert_eq!(bmc.power_status()?, PowerState::Off, "A stays off");
    assert!(!a.is_running());

    // B's replica: writable, generation marked, equal to the last complete snapshot
    assert_eq!(prop(&b, "readonly", DST)?, "off");
    assert_eq!(prop(&b, "tandem:generation", DST)?, format!("{JOB} 1 b"));
    assert_eq!(
        prop(&b, "receive_resume_token", DST)?,
        "-",
        "partial receive cleared"
    );
    let newest_b = snapshots(&b, DST)?;
    assert_eq!(
        newest_b.last().map(|s| (s.0.as_str(), s.1.as_str())),
        Some((last_sent.as_str(), last_guid.as_str())),
        "B's newest snapshot is the last complete one: {newest_b:?}"
    );
    wait_dev(&b, DEV_B)?;
    assert_eq!(
        sha256_snap(&b, DST, &last_sent)?,
        last_sha,
        "B's newest snapshot equals A's last complete one (the zvol itself has B's writes now)"
    );
    let on_b = records(&b, DEV_B, B_FIRST + B_COUNT)?;
    let replicated = seqs(&on_b, "a");
    let k = replicated.last().copied().unwrap_or(0);
    assert_eq!(
        replicated,
        (0..=k).collect::<BTreeSet<_>>(),
        "the replica holds a prefix of A's records"
    );
    let lost: BTreeSet<u32> = acked_a.iter().copied().filter(|s| *s > k).collect();
    println!(
        "[drill] B holds A's records 0..={k}; {} acknowledged records of A are not on B (divergent)",
        lost.len()
    );
    assert!(!lost.is_empty(), "A wrote after the last complete snapshot");

    // the writer continued on B (the hook)
    let acked_b = acked(&ack_b);
    assert_eq!(acked_b.len(), B_COUNT as usize);
    let on_b = records(&b, DEV_B, B_FIRST + B_COUNT)?;
    assert_eq!(seqs(&on_b, "b"), acked_b, "B's own records");
    assert_eq!(
        seqs(&on_b, "a"),
        replicated,
        "A's replicated records intact on B"
    );

    // A comes back
    let t_on = Instant::now();
    bmc.power("on")?;
    a.wait_ready()?;
    report_timing("drill: A power on -> ready", t_on.elapsed());
    assert_eq!(bmc.power_status()?, PowerState::On);
    a.run("zpool import rpool")?;
    wait_dev(&a, DEV_A)?;
    println!("{}", install(&a)?.trim());
    write_file(&a, CONFIG, &config_a(bmc.lan_port()))?;
    authorize(&a, &b)?;
    authorize(&b, &a)?;
    // every acknowledged record survived the power loss on A (O_DSYNC + ZIL replay)
    let on_a = seqs(&records(&a, DEV_A, B_FIRST + B_COUNT)?, "a");
    f.check(
        acked_a.is_subset(&on_a),
        format!(
            "A lost acknowledged records in the power-off: {:?}",
            acked_a.difference(&on_a).collect::<Vec<_>>()
        ),
    );
    println!(
        "[drill] A after power-on: {}",
        a.run(&format!(
            "zfs list -H -p -t all -r -o name,guid,receive_resume_token rpool/data; \
             zfs get -H -o value tandem:generation {SRC}"
        ))?
    );

    // A's tandem must not overwrite B's newer generation
    let fp_b = fingerprint(&b, DST)?;
    let o = tandem(&a, &format!("run {JOB} --json"))?;
    f.check(
        o.code != 0,
        format!("A (stale primary) replicated over a newer generation: {o}"),
    );
    f.check(
        fingerprint(&b, DST)? == fp_b,
        "A's refused run changed B's replica",
    );
    println!(
        "[drill] A's stale run refused: {}",
        o.report()["error"].as_str().unwrap_or(o.stderr.trim())
    );

    // reverse on A
    let t_rev = Instant::now();
    let rev = tandem(&a, &format!("reverse {JOB} --yes --json"))?;
    report_timing("drill: reverse on A, wall", t_rev.elapsed());
    println!("[drill] {rev}");
    let r = rev.json();
    assert_eq!(r["primary"], format!("b:{DST}"), "{rev}");
    assert_eq!(r["follower"], format!("a:{SRC}"), "{rev}");
    assert_eq!(r["base"], format!("{SRC}@{last_sent}"), "{rev}");
    let diverged = r["diverged"]
        .as_str()
        .unwrap_or_else(|| panic!("no `diverged` in {rev}"))
        .to_string();
    assert!(
        diverged.starts_with(&format!("rpool/tandem-diverged/{JOB}-")),
        "{diverged}"
    );
    let restore: Vec<String> = r["restore"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    println!("[drill] restore commands:\n  {}", restore.join("\n  "));

    // A's divergent state, read through the printed command's device path
    let dev_line = restore
        .iter()
        .find(|l| l.contains("/dev/zvol/"))
        .unwrap_or_else(|| panic!("no /dev/zvol path among the restore commands: {restore:?}"));
    let dev_div = dev_line
        .split_whitespace()
        .find(|w| w.starts_with("/dev/zvol/"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(dev_div, format!("/dev/zvol/{diverged}"));
    wait_dev(&a, &dev_div)?;
    let kept = seqs(&records(&a, &dev_div, B_FIRST + B_COUNT)?, "a");
    assert!(
        acked_a.is_subset(&kept),
        "A's acknowledged records are in {diverged}: missing {:?}",
        acked_a.difference(&kept).collect::<Vec<_>>()
    );
    assert!(lost.is_subset(&kept));
    println!(
        "[drill] {dev_div}: A's records 0..={:?}, incl. the {} that never reached B",
        kept.last(),
        lost.len()
    );
    println!(
        "{}",
        a.run("zfs list -t all -r -o name,used,origin,guid rpool/data rpool/tandem-diverged")?
    );

    // the rebuilt follower: read-only, B's generation, the common snapshot's GUID
    assert_eq!(prop(&a, "readonly", SRC)?, "on");
    assert_eq!(prop(&a, "tandem:generation", SRC)?, format!("{JOB} 1 b"));
    assert_eq!(guid(&a, &format!("{SRC}@{last_sent}"))?, last_guid);

    let cycle = &r["cycle"];
    if rev.code != 0 {
        // The follower was rebuilt but the follow-up cycle B -> A refused: the promoted clone
        // reports bytes `written` after the common snapshot although nothing wrote to it.
        let diag = a.run(&format!(
            "zpool sync rpool; \
             zfs get -H -p -o property,value written,written@{last_sent},origin,readonly {SRC}; \
             zfs list -H -t snapshot -o name {SRC}"
        ))?;
        f.check(
            false,
            format!(
                "reverse set A's state aside and rebuilt {SRC}, but its follow-up cycle B -> A \
                 refused ({}); {SRC} after zpool sync: {}",
                cycle["error"],
                diag.trim().replace('\n', "; ")
            ),
        );
        wait_dev(&a, DEV_A)?;
        f.check(
            sha256_dev(&a, DEV_A)? == last_sha,
            "the rebuilt follower's content differs from the common snapshot's",
        );
        println!("[drill] A does not follow B (reverse's cycle refused): not checked further");
        return Ok(());
    }
    assert_eq!(r["ok"], true, "{rev}");
    assert_eq!(cycle["ok"], true, "{rev}");
    assert_eq!(cycle["plans"], serde_json::json!(["incremental"]), "{rev}");

    // A follows B: newest GUIDs, content, records
    wait_dev(&a, DEV_A)?;
    assert_newest_equal(&b, DST, &a, SRC)?;
    assert_eq!(
        sha256_dev(&a, DEV_A)?,
        sha256_dev(&b, DEV_B)?,
        "A's zvol equals B's"
    );
    let on_a = records(&a, DEV_A, B_FIRST + B_COUNT)?;
    assert_eq!(seqs(&on_a, "b"), acked_b, "B's writes are on A");
    assert_eq!(seqs(&on_a, "a"), replicated, "A's divergent tail is gone");

    // the next cycle, from B (its own config: B is the primary now), is incremental
    b.run(&writer(
        "b",
        DEV_B,
        B_FIRST + B_COUNT,
        B_FIRST + B_COUNT + 5,
        "/mnt/host/ack-b.log",
        "0",
    ))?;
    let o = timed("drill: cycle B -> A", || run_ok(&b, JOB))?;
    assert_eq!(o.plans(), ["incremental"], "{o}");
    assert_newest_equal(&b, DST, &a, SRC)?;
    assert_eq!(sha256_dev(&a, DEV_A)?, sha256_dev(&b, DEV_B)?);
    assert_eq!(
        seqs(&records(&a, DEV_A, B_FIRST + B_COUNT + 5)?, "b").len(),
        (B_COUNT + 5) as usize
    );
    Ok(())
}
