//! Shared-storage fencing: two guests see the same disk. A imports a `multihost=on` pool; B's
//! import is refused while A lives; A's watchdog fences it (QMP `RESET`) and B's forced import then
//! succeeds once A's MMP writes have stopped.
//!
//! Run with `cargo test -p tandem-hw-tests -- --include-ignored --nocapture` after
//! `hw-tests/lab/lab.sh build`.

use std::time::{Duration, Instant};
use tandem_hw_tests::{report_timing, timed, Error, ExecOptions, Guest, Lab, Result};

const DISK: &str = "/dev/disk/by-id/virtio-shared0";

#[test]
#[ignore = "needs the QEMU lab: hw-tests/lab/lab.sh build"]
fn multihost_pool_moves_after_watchdog_fence() {
    let Some(lab) = Lab::acquire_or_skip("multihost_pool_moves_after_watchdog_fence") else {
        return;
    };
    if let Err(e) = scenario(&lab) {
        panic!("{e}");
    }
}

fn import(g: &Guest) -> Result<tandem_hw_tests::ExecOutput> {
    // B booted before the pool existed: re-read the disk before scanning it
    g.exec_with(
        &format!(
            "blockdev --rereadpt {DISK}; udevadm settle; zpool import -d /dev/disk/by-id -f sh"
        ),
        &ExecOptions::timeout(Duration::from_secs(300)),
    )
}

fn scenario(lab: &Lab) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tandem-lab-mmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        context: "creating the shared-disk dir".into(),
        source: e,
    })?;
    let image = dir.join("shared.img");
    let _ = std::fs::remove_file(&image);
    let result = (|| -> Result<()> {
        let a = lab
            .guest("mmp-a")
            .hostid(0x0a77_00a1)
            .shared_disk(&image)
            .start()?;
        let b = lab
            .guest("mmp-b")
            .hostid(0x0a77_00b1)
            .shared_disk(&image)
            .start()?;
        timed("multihost: boot both", || -> Result<()> {
            a.wait_ready()?;
            b.wait_ready()?;
            Ok(())
        })?;
        a.run(&format!(
            "zpool create -f -o multihost=on sh {DISK} && echo data > /sh/f && zpool sync sh"
        ))?;
        let refused = import(&b)?;
        assert!(!refused.success(), "B imported a pool A holds: {refused:?}");
        assert!(
            refused.stderr.contains("imported on host")
                || refused.stdout.contains("imported on host"),
            "refusal names the owner: {refused:?}"
        );
        a.run("modprobe softdog soft_margin=10")?;
        a.spawn("exec 3>/dev/watchdog; printf x >&3; exec sleep 100000")?;
        a.wait_event("RESET", Duration::from_secs(120))?;
        // keep the fenced node down, as a real fencing agent would
        a.qmp("stop", None)?;
        let t0 = Instant::now();
        let out = import(&b)?;
        report_timing("multihost: fence -> forced import on B", t0.elapsed());
        assert!(out.success(), "import after fence: {out:?}");
        assert_eq!(b.run("cat /sh/f")?, "data\n");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
