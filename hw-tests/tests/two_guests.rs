//! Two lab guests on a private link: `zfs send | ssh | zfs receive` between them, and a host
//! directory shared into a guest over virtio-9p running a host-built Rust binary.
//!
//! Run with `cargo test -p tandem-hw-tests -- --include-ignored --nocapture` after
//! `hw-tests/lab/lab.sh build`.

use std::path::{Path, PathBuf};
use tandem_hw_tests::{timed, ExecOptions, Guest, Lab, Result, GIB};

const SSH: &str =
    "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                   -o LogLevel=ERROR root@169.254.77.2";
const SRC: &str = "rpool/data/subvol-200-disk-0";
const DST: &str = "tank/subvol-200-disk-0";

/// A host directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("tandem-lab-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn guid(g: &Guest, snap: &str) -> Result<String> {
    Ok(g.run(&format!("zfs get -H -p -o value guid {snap}"))?
        .trim()
        .to_string())
}

fn sha256(g: &Guest, path: &str) -> Result<String> {
    let out = g.run(&format!("sha256sum < {path}"))?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

#[test]
#[ignore = "needs the QEMU lab: hw-tests/lab/lab.sh build"]
fn zfs_send_over_ssh_between_two_guests() {
    let Some(lab) = Lab::acquire_or_skip("zfs_send_over_ssh_between_two_guests") else {
        return;
    };
    if let Err(e) = scenario(&lab) {
        panic!("{e}");
    }
}

fn scenario(lab: &Lab) -> Result<()> {
    let share = TempDir::new("share").map_err(|e| tandem_hw_tests::Error::Io {
        context: "creating the share dir".into(),
        source: e,
    })?;
    // a host-built Rust binary (this test executable) for the guest to run
    let exe = std::env::current_exe().map_err(|e| tandem_hw_tests::Error::Io {
        context: "current_exe".into(),
        source: e,
    })?;
    std::fs::copy(&exe, share.path().join("host-binary"))
        .and_then(|_| std::fs::write(share.path().join("from-host.txt"), "hello from the host\n"))
        .map_err(|e| tandem_hw_tests::Error::Io {
            context: "filling the share dir".into(),
            source: e,
        })?;

    let link = lab.link()?;
    let (a, b) = timed(
        "two guests: boot both to ready",
        || -> Result<(Guest, Guest)> {
            let a = lab
                .guest("net-a")
                .disk(2 * GIB)
                .network(link.listen(), "169.254.77.1/24")
                .share(share.path())
                .start()?;
            let b = lab
                .guest("net-b")
                .disk(2 * GIB)
                .network(link.connect(), "169.254.77.2/24")
                .start()?;
            a.wait_ready()?;
            b.wait_ready()?;
            Ok((a, b))
        },
    )?;

    // --- 9p share, both directions, and a host binary running in the guest
    assert_eq!(
        a.run("cat /mnt/host/from-host.txt")?,
        "hello from the host\n"
    );
    a.run("hostname > /mnt/host/from-guest.txt")?;
    let back = std::fs::read_to_string(share.path().join("from-guest.txt")).unwrap_or_default();
    assert_eq!(
        back.trim(),
        "net-a",
        "file written by the guest on the 9p share"
    );
    let listing = a.run("/mnt/host/host-binary --list")?;
    assert!(
        listing.contains("zfs_send_over_ssh_between_two_guests"),
        "host-built test binary ran in the guest: {listing}"
    );

    // --- link and ssh keys
    a.run("ping -c 1 -W 10 169.254.77.2")?;
    let pubkey = a.run(
        "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 && cat /root/.ssh/id_ed25519.pub",
    )?;
    b.run_with(
        "cat >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
        &ExecOptions::default().with_stdin(pubkey),
    )?;
    let remote = timed("two guests: first ssh", || {
        a.run(&format!("{SSH} hostname"))
    })?;
    assert_eq!(remote.trim(), "net-b");

    // --- pools, data, full + incremental send over ssh
    a.run(&format!(
        "zpool create -f -o ashift=12 rpool /dev/vda && zfs create -p {SRC} && \
         head -c 32M /dev/urandom > /{SRC}/blob && zfs snapshot {SRC}@n1"
    ))?;
    b.run("zpool create -f -o ashift=12 tank /dev/vda")?;
    timed("two guests: full send | ssh | recv (32 MiB)", || {
        a.run(&format!("zfs send {SRC}@n1 | {SSH} zfs receive {DST}"))
    })?;
    assert_eq!(
        guid(&a, &format!("{SRC}@n1"))?,
        guid(&b, &format!("{DST}@n1"))?
    );
    a.run(&format!(
        "head -c 8M /dev/urandom > /{SRC}/blob2 && zfs snapshot {SRC}@n2"
    ))?;
    timed("two guests: incremental send | ssh | recv (8 MiB)", || {
        a.run(&format!(
            "zfs send -i @n1 {SRC}@n2 | {SSH} zfs receive {DST}"
        ))
    })?;
    assert_eq!(
        guid(&a, &format!("{SRC}@n2"))?,
        guid(&b, &format!("{DST}@n2"))?
    );
    for f in ["blob", "blob2"] {
        assert_eq!(
            sha256(&a, &format!("/{SRC}/{f}"))?,
            sha256(&b, &format!("/{DST}/{f}"))?,
            "{f} on the replica"
        );
    }
    println!("{}", b.run("zfs list -t all -o name,used,guid -r tank")?);
    Ok(())
}
