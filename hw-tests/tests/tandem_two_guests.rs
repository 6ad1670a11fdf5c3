//! The real `tandem` binary replicating between two lab guests over the network: guest A runs
//! tandem with node `b` reached through ssh (key set up by the test), a Proxmox-style zvol goes
//! from A's `rpool` to B's `tank`: full, incrementals, up to date; GUIDs and contents equal.
//!
//! Needs `hw-tests/lab/lab.sh build` and `cargo build -p tandem`; run with
//! `cargo test -p tandem-hw-tests --test tandem_two_guests -- --include-ignored --nocapture`.

mod tandem_lab;

use tandem_hw_tests::{timed, ExecOptions, Guest, Lab, Result, GIB};
use tandem_lab::*;

const A_IP: &str = "169.254.77.1";
const B_IP: &str = "169.254.77.2";
const SRC: &str = "rpool/data/vm-100-disk-0";
const DST: &str = "tank/replica/vm-100-disk-0";
const DEV: &str = "/dev/zvol/rpool/data/vm-100-disk-0";
const DST_DEV: &str = "/dev/zvol/tank/replica/vm-100-disk-0";

#[test]
#[ignore = "needs the QEMU lab (hw-tests/lab/lab.sh build) and target/debug/tandem"]
fn tandem_replicates_between_two_guests_over_ssh() {
    let test = "tandem_replicates_between_two_guests_over_ssh";
    let Some(share) = Share::with_tandem(test) else {
        return;
    };
    let Some(lab) = Lab::acquire_or_skip(test) else {
        return;
    };
    if let Err(e) = timed(&format!("{test}: total"), || scenario(&lab, &share)) {
        panic!("{test}: {e}");
    }
}

fn scenario(lab: &Lab, share: &Share) -> Result<()> {
    let link = lab.link()?;
    let (a, b) = timed(
        "two guests: boot both to ready",
        || -> Result<(Guest, Guest)> {
            let a = lab
                .guest("tandem-a")
                .disk(2 * GIB)
                .network(link.listen(), &format!("{A_IP}/24"))
                .share(share.path())
                .start()?;
            let b = lab
                .guest("tandem-b")
                .disk(2 * GIB)
                .network(link.connect(), &format!("{B_IP}/24"))
                .share(share.path())
                .start()?;
            a.wait_ready()?;
            b.wait_ready()?;
            Ok((a, b))
        },
    )?;
    println!("{}", install(&a)?.trim());
    println!("{}", install(&b)?.trim());
    // B runs `tandem serve --stdio` for A: its config lets peer "a" write tank/replica.
    write_file(&b, CONFIG, "local_node = \"b\"\nstate_dir = \"/root/tandem-state\"\n[nodes.b]\naddress = \"local\"\n\n[[serve.peers]]\nname = \"a\"\nwrite = [\"tank/replica\"]\n")?;

    // ssh from A (where tandem runs) to B as root, with a key made here
    let pubkey = a.run(
        "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 && cat /root/.ssh/id_ed25519.pub",
    )?;
    b.run_with(
        "cat >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
        &ExecOptions::default().with_stdin(pubkey),
    )?;
    a.run("zpool create -f -o ashift=12 rpool /dev/vda && zfs create rpool/data")?;
    b.run("zpool create -f -o ashift=12 tank /dev/vda && zfs create tank/replica")?;
    a.run(&format!("zfs create -V 64M -o volblocksize=16k {SRC}"))?;
    wait_dev(&a, DEV)?;
    // Through `tandem serve` on B (the default transport); the last cycle
    // below switches to plain `zfs` over ssh (`transport = "ssh"`).
    let node_b = format!(
        "address = \"{B_IP}\"\nssh_user = \"root\"\nssh_identity = \"/root/.ssh/id_ed25519\"\n\
         ssh_options = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\"]\n\
         tandem_path = \"{TANDEM}\"\nserve_args = [\"--config\", \"{CONFIG}\", \"--peer\", \"a\"]"
    );
    write_file(&a, CONFIG, &config(&node_b, &job("vm-100", SRC, DST, "")))?;

    let writes = [
        "bs=1M count=24",
        "bs=1M seek=30 count=6 conv=notrunc",
        "bs=1M seek=4 count=4 conv=notrunc",
        "bs=1M seek=12 count=3 conv=notrunc",
    ];
    for (i, w) in writes.iter().enumerate() {
        if i == 3 {
            let plain = format!("{node_b}\ntransport = \"ssh\"");
            write_file(&a, CONFIG, &config(&plain, &job("vm-100", SRC, DST, "")))?;
        }
        // `zpool sync`: tandem decides "nothing changed" from `written`, which lags until the txg
        // syncs (reported separately by tandem_openzfs.rs); here the subject is the network path
        a.run(&format!(
            "dd if=/dev/urandom of={DEV} {w} conv=fsync status=none && zpool sync rpool"
        ))?;
        let how = if i < 3 {
            "tandem serve over ssh"
        } else {
            "plain zfs over ssh"
        };
        let o = timed(&format!("{how}: cycle {i}"), || run_ok(&a, "vm-100"))?;
        let want = if i == 0 { "full" } else { "incremental" };
        assert_eq!(o.plans(), [want], "{o}");
        let sent = o.sent_short().unwrap_or_else(|| panic!("no `sent` in {o}"));
        let g = assert_same_guid(&a, SRC, &b, DST, &sent)?;
        assert_newest_equal(&a, SRC, &b, DST)?;
        wait_dev(&b, DST_DEV)?;
        assert_eq!(
            sha256_dev(&a, DEV)?,
            sha256_dev(&b, DST_DEV)?,
            "zvol content on B after cycle {i}"
        );
        println!(
            "[check] cycle {i} ({want}, {} bytes, {how}): @{sent} guid {g} equal on A and B, \
             zvol sha256 equal",
            o.bytes()
        );
    }
    assert_eq!(prop(&b, "readonly", DST)?, "on");
    let holds_b = b.run(&format!(
        "zfs list -H -t snapshot -o name {DST} | xargs zfs holds -H"
    ))?;
    assert!(
        holds_b.contains("tandem_@a"),
        "B holds the common snapshot: {holds_b}"
    );

    // nothing changed: up to date, no snapshot taken
    let before = (snapshots(&a, SRC)?, snapshots(&b, DST)?);
    let o = run_ok(&a, "vm-100")?;
    assert_eq!(o.plans(), ["up-to-date"], "{o}");
    assert_eq!((snapshots(&a, SRC)?, snapshots(&b, DST)?), before);
    let st = tandem(&a, "status --json")?;
    assert_eq!(st.json()[0]["state"], "ok", "{st}");
    assert_eq!(st.json()[0]["target"], format!("b:{DST}"), "{st}");
    println!(
        "{}",
        b.run("zfs list -t all -o name,used,refer,guid -r tank")?
    );
    Ok(())
}
