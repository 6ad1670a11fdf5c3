//! `tandem import pvesr` against a directory laid out as `/etc/pve` is
//! (`tests/fixtures/pve`: three nodes, a UEFI VM with five disks and two
//! pvesr targets, a container with a bind mount, a VM on two pools, one on
//! NFS, a job without a guest, one being removed, a linked clone under
//! PVE's HA). The printed config is compared with `fixtures/pve-import.toml`
//! (`TANDEM_UPDATE_GOLDEN=1` rewrites it), and nothing under the root may
//! change.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pve")
}

fn tandem(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("TANDEM_CONFIG", "/nonexistent/tandem.toml")
        .output()
        .expect("run tandem")
}

/// Every file under `dir` with its content, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read fixture dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read fixture");
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_printed_config_matches_the_golden_file_and_nothing_changes() {
    let root = fixture();
    let before = snapshot(&root);
    let root_s = root.to_str().expect("utf-8 path");
    let o = tandem(&["import", "pvesr", "--root", root_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = String::from_utf8(o.stdout)
        .expect("utf-8")
        .replace(root_s, "<root>");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pve-import.toml");
    if std::env::var_os("TANDEM_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(
        got, want,
        "`tandem import pvesr` output changed (TANDEM_UPDATE_GOLDEN=1 to accept)"
    );
    assert!(
        toml::from_str::<toml::Value>(&got).is_ok(),
        "not TOML:\n{got}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "import changed files under its root"
    );
}

#[test]
fn json_names_every_job_with_its_disks_and_targets() {
    let o = tandem(&[
        "import",
        "pvesr",
        "--root",
        fixture().to_str().expect("path"),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let jobs = v["jobs"].as_array().expect("jobs");
    let names: Vec<&str> = jobs.iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "vm-100",
            "ct-101",
            "vm-102-local-zfs",
            "vm-102-tank",
            "vm-106"
        ]
    );
    let vm100 = &jobs[0];
    assert_eq!(vm100["source"], "pve1:rpool/data");
    assert_eq!(
        vm100["targets"],
        serde_json::json!(["pve2:rpool/data", "pve3:rpool/data"])
    );
    assert_eq!(
        vm100["datasets"],
        serde_json::json!([
            "vm-100-disk-0",
            "vm-100-disk-1",
            "vm-100-disk-3",
            "vm-100-disk-4"
        ])
    );
    assert_eq!(vm100["interval"], "5m");
    assert_eq!(vm100["rate_limit"], 50_000_000);
    assert_eq!(jobs[4]["pve_ha"], true);
    assert_eq!(v["nodes"][2]["address"], "10.0.0.3");
    assert_eq!(
        v["notes"].as_array().map(Vec::len),
        Some(3),
        "{}",
        v["notes"]
    );
}

#[test]
fn a_root_that_is_not_there_is_a_clear_error() {
    let o = tandem(&["import", "pvesr", "--root", "/nonexistent/pve"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/pve: not a directory") && err.contains("--root"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}
