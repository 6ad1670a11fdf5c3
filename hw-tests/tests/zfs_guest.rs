//! OpenZFS 2.x inside one lab guest: pools on virtio disks, a Proxmox-style zvol, full /
//! incremental / bookmark-based / resumable / raw-encrypted send and receive.
//!
//! Run with `cargo test -p tandem-hw-tests -- --include-ignored --nocapture` after
//! `hw-tests/lab/lab.sh build`.

use std::time::Duration;
use tandem_hw_tests::{timed, Guest, Lab, Result, GIB};

const ZVOL: &str = "rpool/data/vm-100-disk-0";
const ZVOL_COPY: &str = "tank/vm-100-disk-0";

fn guid(g: &Guest, snap: &str) -> Result<String> {
    let v = g.run(&format!("zfs get -H -p -o value guid {snap}"))?;
    let v = v.trim().to_string();
    assert!(
        !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()),
        "guid of {snap}: {v:?}"
    );
    Ok(v)
}

fn prop(g: &Guest, prop: &str, ds: &str) -> Result<String> {
    Ok(g.run(&format!("zfs get -H -o value {prop} {ds}"))?
        .trim()
        .to_string())
}

fn sha256(g: &Guest, path: &str) -> Result<String> {
    let out = g.run(&format!("sha256sum < {path}"))?;
    let sum = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sum.len(), 64, "sha256 of {path}: {out:?}");
    Ok(sum)
}

fn wait_dev(g: &Guest, dev: &str) -> Result<()> {
    g.wait_for(
        &format!("udevadm settle; test -b {dev}"),
        Duration::from_secs(60),
    )
}

#[test]
#[ignore = "needs the QEMU lab: hw-tests/lab/lab.sh build"]
fn openzfs_send_receive_in_a_guest() {
    let Some(lab) = Lab::acquire_or_skip("openzfs_send_receive_in_a_guest") else {
        return;
    };
    if let Err(e) = scenario(&lab) {
        panic!("{e}");
    }
}

fn scenario(lab: &Lab) -> Result<()> {
    let g = lab.guest("zfs").disks(2, 2 * GIB).start()?;
    timed("zfs: boot to ready", || g.wait_ready())?;

    // --- version
    let version = g.run("zfs version")?;
    println!("{version}");
    assert!(version.contains("zfs-2."), "userland: {version}");
    assert!(version.contains("zfs-kmod-2."), "kernel module: {version}");

    // --- pools on virtio disks, a Proxmox-style zvol
    timed("zfs: create pools", || {
        g.run(
            "zpool create -f -o ashift=12 rpool /dev/vda && \
             zpool create -f -o ashift=12 tank /dev/vdb && zfs create rpool/data",
        )
    })?;
    g.run(&format!("zfs create -V 64M -o volblocksize=16k {ZVOL}"))?;
    let dev = format!("/dev/zvol/{ZVOL}");
    timed("zfs: zvol device node", || wait_dev(&g, &dev))?;
    println!("{}", g.run(&format!("ls -l {dev}; readlink -f {dev}"))?);

    // --- full send
    g.run(&format!(
        "dd if=/dev/urandom of={dev} bs=1M count=24 conv=fsync status=none && zfs snapshot {ZVOL}@s1"
    ))?;
    timed("zfs: full send|recv (zvol, 24 MiB)", || {
        g.run(&format!("zfs send {ZVOL}@s1 | zfs receive {ZVOL_COPY}"))
    })?;
    assert_eq!(
        guid(&g, &format!("{ZVOL}@s1"))?,
        guid(&g, &format!("{ZVOL_COPY}@s1"))?
    );

    // --- incremental send
    g.run(&format!(
        "dd if=/dev/urandom of={dev} bs=1M seek=32 count=8 conv=fsync,notrunc status=none && \
         zfs snapshot {ZVOL}@s2"
    ))?;
    timed("zfs: incremental send|recv (8 MiB)", || {
        g.run(&format!(
            "zfs send -i @s1 {ZVOL}@s2 | zfs receive {ZVOL_COPY}"
        ))
    })?;
    assert_eq!(
        guid(&g, &format!("{ZVOL}@s2"))?,
        guid(&g, &format!("{ZVOL_COPY}@s2"))?
    );
    let copy_dev = format!("/dev/zvol/{ZVOL_COPY}");
    wait_dev(&g, &copy_dev)?;
    assert_eq!(
        sha256(&g, &dev)?,
        sha256(&g, &copy_dev)?,
        "zvol contents after @s2"
    );

    // --- bookmark as the incremental source after the base snapshot is gone
    g.run(&format!(
        "zfs bookmark {ZVOL}@s2 {ZVOL}#b2 && zfs destroy {ZVOL}@s2 && \
         dd if=/dev/urandom of={dev} bs=1M seek=48 count=4 conv=fsync,notrunc status=none && \
         zfs snapshot {ZVOL}@s3"
    ))?;
    assert!(
        !g.exec(&format!("zfs list -H -t snapshot {ZVOL}@s2"))?
            .success(),
        "@s2 should be destroyed on the source"
    );
    assert_eq!(
        guid(&g, &format!("{ZVOL}#b2"))?,
        guid(&g, &format!("{ZVOL_COPY}@s2"))?,
        "bookmark keeps the snapshot's guid"
    );
    timed("zfs: bookmark-based incremental send|recv", || {
        g.run(&format!(
            "zfs send -i {ZVOL}#b2 {ZVOL}@s3 | zfs receive {ZVOL_COPY}"
        ))
    })?;
    assert_eq!(
        guid(&g, &format!("{ZVOL}@s3"))?,
        guid(&g, &format!("{ZVOL_COPY}@s3"))?
    );
    assert_eq!(
        sha256(&g, &dev)?,
        sha256(&g, &copy_dev)?,
        "zvol contents after @s3"
    );

    resumable_receive(&g)?;
    raw_encrypted_send(&g)?;
    println!("{}", g.run("zfs list -t all -o name,used,refer,guid")?);
    Ok(())
}

/// `zfs receive -s` killed mid-stream leaves a resume token; `zfs send -t` finishes the job.
fn resumable_receive(g: &Guest) -> Result<()> {
    let src = "rpool/data/subvol-101-disk-0";
    let dst = "tank/subvol-101-disk-0";
    g.run(&format!(
        "zfs create {src} && head -c 40M /dev/urandom > /{src}/blob && zfs snapshot {src}@r1 && \
         zfs send {src}@r1 > /tmp/full.zstream && ls -l /tmp/full.zstream"
    ))?;
    // feed 16 MiB of the stream, then stall; kill -9 the receiver while it waits for more
    g.spawn(&format!(
        "(head -c 16M /tmp/full.zstream; touch /tmp/fed; sleep 3599 & echo $! > /tmp/sleep.pid; wait) \
         | zfs receive -s {dst} 2>/tmp/recv1.err & echo $! > /tmp/recv1.pid; wait"
    ))?;
    g.wait_for(
        "test -e /tmp/fed && test -s /tmp/recv1.pid && test -s /tmp/sleep.pid",
        Duration::from_secs(120),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    g.run("kill -9 $(cat /tmp/recv1.pid) && kill $(cat /tmp/sleep.pid)")?;
    let token_cmd = format!("zfs get -H -o value receive_resume_token {dst}");
    g.wait_for(
        &format!("t=$({token_cmd}) && [ -n \"$t\" ] && [ \"$t\" != - ]"),
        Duration::from_secs(60),
    )?;
    let token = g.run(&token_cmd)?.trim().to_string();
    println!(
        "resume token ({} chars): {}...\n{}",
        token.len(),
        &token[..token.len().min(40)],
        g.run(&format!("zfs send -nv -t {token} 2>&1 | head -5"))?
    );
    timed("zfs: resumed send -t | recv -s", || {
        g.run(&format!("zfs send -t {token} | zfs receive -s {dst}"))
    })?;
    assert_eq!(
        prop(g, "receive_resume_token", dst)?,
        "-",
        "token gone after resume"
    );
    assert_eq!(
        guid(g, &format!("{src}@r1"))?,
        guid(g, &format!("{dst}@r1"))?
    );
    assert_eq!(
        sha256(g, &format!("/{src}/blob"))?,
        sha256(g, &format!("/{dst}/blob"))?,
        "resumed replica content"
    );
    Ok(())
}

/// `zfs send -w`: the replica stays encrypted and unreadable without the key.
fn raw_encrypted_send(g: &Guest) -> Result<()> {
    let src = "rpool/secure";
    let dst = "tank/secure";
    g.run(&format!(
        "head -c 32 /dev/urandom > /tmp/zkey && \
         zfs create -o encryption=aes-256-gcm -o keyformat=raw -o keylocation=file:///tmp/zkey {src} && \
         head -c 8M /dev/urandom > /{src}/f && zfs snapshot {src}@e1"
    ))?;
    timed("zfs: raw (-w) encrypted send|recv", || {
        g.run(&format!("zfs send -w {src}@e1 | zfs receive {dst}"))
    })?;
    assert_eq!(prop(g, "encryption", dst)?, "aes-256-gcm");
    assert_eq!(
        prop(g, "keystatus", dst)?,
        "unavailable",
        "replica has no key"
    );
    assert_eq!(prop(g, "mounted", dst)?, "no");
    assert!(
        !g.exec(&format!("zfs mount {dst}"))?.success(),
        "an encrypted replica must not mount without its key"
    );
    assert_eq!(
        guid(g, &format!("{src}@e1"))?,
        guid(g, &format!("{dst}@e1"))?
    );
    // with the key the replica's data is intact
    g.run(&format!(
        "zfs load-key -L file:///tmp/zkey {dst} && zfs mount {dst}"
    ))?;
    assert_eq!(
        sha256(g, &format!("/{src}/f"))?,
        sha256(g, &format!("/{dst}/f"))?
    );
    Ok(())
}
