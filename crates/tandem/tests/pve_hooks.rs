//! The Proxmox hooks (`contrib/hooks/pve-start`, `pve-test`) against a
//! directory laid out as `/etc/pve` is, with fake `qm`, `pct` and `pvecm`
//! that record their calls. Proxmox itself is not installable here: these
//! prove the hooks' file handling and calls, not PVE's behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VM: &str = "boot: order=scsi0;net0\ncores: 2\nide2: none,media=cdrom\nmemory: 2048\n\
name: router\nnet0: virtio=BC:24:11:8A:3E:01,bridge=vmbr0,firewall=1\n\
net1: virtio=BC:24:11:8A:3E:02,bridge=vmbr1,link_down=1\nonboot: 1\nostype: l26\n\
scsi0: local-zfs:vm-1001-disk-0,iothread=1,size=8G\nscsi1: local-zfs:vm-1001-disk-1,size=32G\n\
scsihw: virtio-scsi-single\nsmbios1: uuid=5b0c5e1e-1111-2222-3333-444455556666\n\
unused0: local-zfs:vm-1001-disk-2\nvmgenid: 0f0e0d0c-0000-1111-2222-333344445555\n\n\
[before-upgrade]\nname: router\nscsi0: local-zfs:vm-1001-disk-0,size=8G\nsnaptime: 1700000000\n";

const CT: &str = "arch: amd64\ncores: 1\nhostname: dns\nmemory: 512\n\
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth\nostype: debian\n\
rootfs: local-zfs:subvol-1002-disk-0,size=8G\nswap: 512\n";

/// A fake PVE: the tree, the tools, and the log of their calls.
struct Pve {
    dir: tempfile::TempDir,
}

const QM: &str = r#"#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE/calls"
case "$1" in
    status) if [ -e "$FAKE/running-$2" ]; then echo "status: running"; else echo "status: stopped"; fi ;;
    start)
        [ -n "${FAKE_START_FAILS:-}" ] && { echo "start failed: no such volume" >&2; exit 2; }
        for f in "$PVE_ROOT"/nodes/*/*/"$2.conf"; do cp "$f" "$FAKE/started-$2.conf"; done
        touch "$FAKE/running-$2" ;;
    stop) rm -f "$FAKE/running-$2" ;;
esac
"#;

const PVECM: &str = r#"#!/bin/sh
echo "pvecm $*" >> "$FAKE/calls"
printf 'Cluster information\n-------------------\nName: lab\n\nVotequorum information\n----------------------\nQuorate:          %s\n' "${FAKE_QUORATE:-Yes}"
"#;

const ZFS: &str = r#"#!/bin/sh
echo "zfs $*" >> "$FAKE/calls"
for last; do :; done
echo "/$last"
"#;

impl Pve {
    fn new() -> Pve {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "etc/pve/nodes/a/qemu-server",
            "etc/pve/nodes/a/lxc",
            "etc/pve/nodes/b/qemu-server",
            "etc/pve/nodes/b/lxc",
            "etc/pve/ha",
            "bin",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("etc/pve/nodes/a/qemu-server/1001.conf"), VM).unwrap();
        std::fs::write(dir.path().join("etc/pve/nodes/a/lxc/1002.conf"), CT).unwrap();
        for (name, body) in [("qm", QM), ("pct", QM), ("pvecm", PVECM), ("zfs", ZFS)] {
            let p = dir.path().join("bin").join(name);
            std::fs::write(&p, body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Pve { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("etc/pve")
    }

    fn hook(&self, name: &str, env: &[(&str, &str)]) -> Output {
        let hook = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../contrib/hooks")
            .join(name);
        let bin = self.dir.path().join("bin");
        let mut c = Command::new("sh");
        c.arg(hook)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("PVE_ROOT", self.root())
            .env("FAKE", self.dir.path())
            .env("PVECM", bin.join("pvecm"))
            .env("QM", bin.join("qm"))
            .env("PCT", bin.join("pct"))
            .env("ZFS", bin.join("zfs"))
            .env("TANDEM_JOB", "vm-1001");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const PROMOTE: &[(&str, &str)] = &[
    ("TANDEM_HOOK", "on_promote"),
    ("TANDEM_FROM", "a"),
    ("TANDEM_TO", "b"),
    ("TANDEM_GUEST", "vm:1001"),
    ("TANDEM_DATASETS", "rpool/data/vm-1001-disk-0"),
];

#[test]
fn pve_start_moves_the_config_and_starts_the_vm_once() {
    let p = Pve::new();
    let o = p.hook("pve-start", PROMOTE);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!p.file("nodes/a/qemu-server/1001.conf").exists());
    assert_eq!(
        std::fs::read_to_string(p.file("nodes/b/qemu-server/1001.conf")).unwrap(),
        VM,
        "moved whole"
    );
    assert!(p.calls().contains("pvecm status"), "{}", p.calls());
    assert!(p.calls().contains("qm start 1001"), "{}", p.calls());
    // Again: already moved, already running; nothing more.
    let o = p.hook("pve-start", PROMOTE);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already on b") && text(&o).contains("already running"));
    assert_eq!(p.calls().matches("qm start").count(), 1, "{}", p.calls());
}

#[test]
fn pve_start_finds_a_container_from_the_dataset_name() {
    let p = Pve::new();
    let o = p.hook(
        "pve-start",
        &[
            ("TANDEM_FROM", "a"),
            ("TANDEM_TO", "b"),
            ("TANDEM_DATASETS", "rpool/data/subvol-1002-disk-0"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(p.file("nodes/b/lxc/1002.conf").exists());
    assert!(p.calls().contains("pct start 1002"), "{}", p.calls());
}

#[test]
fn pve_start_refuses_without_quorum_and_moves_nothing() {
    let p = Pve::new();
    let mut env = PROMOTE.to_vec();
    env.push(("FAKE_QUORATE", "No"));
    let o = p.hook("pve-start", &env);
    assert!(!o.status.success());
    assert!(text(&o).contains("not quorate"), "{}", text(&o));
    assert!(
        p.file("nodes/a/qemu-server/1001.conf").exists(),
        "left in place"
    );
    assert!(!p.file("nodes/b/qemu-server/1001.conf").exists());
    assert!(!p.calls().contains("qm start"), "{}", p.calls());
}

const TEST: &[(&str, &str)] = &[
    ("TANDEM_HOOK", "on_test"),
    ("TANDEM_FROM", "a"),
    ("TANDEM_TO", "b"),
    ("TANDEM_GUEST", "vm:1001"),
    (
        "TANDEM_SNAPSHOT",
        "rpool/data/vm-1001-disk-0@tandem_vm-1001_20260101T000000Z",
    ),
    (
        "TANDEM_DATASETS",
        "rpool/tandem-test/vm-1001/vm-1001-disk-0",
    ),
];

#[test]
fn pve_test_starts_an_unplugged_copy_from_the_clone_and_removes_it() {
    let p = Pve::new();
    let o = p.hook("pve-test", TEST);
    assert!(o.status.success(), "{}", text(&o));
    let calls = p.calls();
    assert!(calls.contains("qm start 990000"), "{calls}");
    assert!(calls.contains("qm status 990000"), "{calls}");
    assert!(calls.contains("qm stop 990000"), "{calls}");
    assert!(!calls.contains("destroy"), "never qm destroy: {calls}");
    let started = std::fs::read_to_string(p.dir.path().join("started-990000.conf")).unwrap();
    let lines: Vec<&str> = started.lines().collect();
    assert!(
        lines.contains(
            &"scsi0: /dev/zvol/rpool/tandem-test/vm-1001/vm-1001-disk-0,iothread=1,size=8G"
        ),
        "{started}"
    );
    assert!(
        !started.contains("vm-1001-disk-1"),
        "a disk without a clone is left out: {started}"
    );
    assert!(
        !started.contains("unused0") && !started.contains("onboot"),
        "{started}"
    );
    assert!(lines.contains(&"name: router-tandem-test"), "{started}");
    assert!(
        lines.contains(&"net0: virtio=BC:24:11:8A:3E:01,bridge=vmbr0,firewall=1,link_down=1"),
        "{started}"
    );
    assert!(
        lines.contains(&"net1: virtio=BC:24:11:8A:3E:02,bridge=vmbr1,link_down=1"),
        "{started}"
    );
    assert!(lines.contains(&"ide2: none,media=cdrom"), "{started}");
    assert!(
        !started.contains("[before-upgrade]"),
        "no snapshot sections: {started}"
    );
    assert!(
        !started.contains("local-zfs:"),
        "nothing points at the replica: {started}"
    );
    // Gone again; the guest itself untouched.
    assert!(!p.file("nodes/b/qemu-server/990000.conf").exists());
    assert_eq!(
        std::fs::read_to_string(p.file("nodes/a/qemu-server/1001.conf")).unwrap(),
        VM
    );
    assert!(!p.dir.path().join("running-990000").exists(), "stopped");
}

#[test]
fn pve_test_of_a_container_uses_the_clones_mountpoint() {
    let p = Pve::new();
    let o = p.hook(
        "pve-test",
        &[
            ("TANDEM_FROM", "a"),
            ("TANDEM_TO", "b"),
            (
                "TANDEM_DATASETS",
                "rpool/tandem-test/ct-1002/subvol-1002-disk-0",
            ),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let started = std::fs::read_to_string(p.dir.path().join("started-990000.conf")).unwrap();
    assert!(
        started.contains("rootfs: /rpool/tandem-test/ct-1002/subvol-1002-disk-0,size=8G"),
        "{started}"
    );
    assert!(started.contains("hostname: dns-tandem-test"), "{started}");
    assert!(started.contains("type=veth,link_down=1"), "{started}");
    assert!(p.calls().contains("pct start 990000"), "{}", p.calls());
    assert!(!p.file("nodes/b/lxc/990000.conf").exists());
}

#[test]
fn pve_test_fails_when_the_copy_does_not_start_and_still_removes_it() {
    let p = Pve::new();
    // A VMID in use is skipped.
    std::fs::write(p.file("nodes/a/qemu-server/990000.conf"), "name: other\n").unwrap();
    let mut env = TEST.to_vec();
    env.push(("FAKE_START_FAILS", "1"));
    let o = p.hook("pve-test", &env);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no such volume"), "{}", text(&o));
    assert!(p.calls().contains("qm start 990001"), "{}", p.calls());
    assert!(
        !p.file("nodes/b/qemu-server/990001.conf").exists(),
        "removed"
    );
    assert!(
        p.file("nodes/a/qemu-server/990000.conf").exists(),
        "not ours: kept"
    );
}
