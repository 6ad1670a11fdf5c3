//! Benchmarks of tandem. The criterion benches (`cargo bench -p
//! tandem-benches`) time the pure hot paths: parsing a listing and planning
//! over a dataset with many snapshots, and the in-process pipe. The scripts
//! beside this file (`cycle.sh`) time whole cycles against real ZFS and
//! print a table next to a hand-written shell baseline.
//!
//! This library only builds the synthetic inputs the benches share.

#![forbid(unsafe_code)]

use std::fmt::Write;

/// `zfs get -H -p -o name,property,value` output for one dataset with
/// `snaps` snapshots, every tenth one the job's own.
pub fn listing_text(dataset: &str, snaps: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{dataset}\ttype\tfilesystem\n{dataset}\tguid\t1\n{dataset}\tcreatetxg\t1\n{dataset}\treferenced\t4096");
    for i in 0..snaps {
        let name = if i % 10 == 0 {
            format!(
                "tandem_j_2026{:02}{:02}T000000Z",
                1 + (i / 28) % 12,
                1 + i % 28
            )
        } else {
            format!("auto-{i}")
        };
        let _ = writeln!(
            s,
            "{dataset}@{name}\ttype\tsnapshot\n{dataset}@{name}\tguid\t{}\n{dataset}@{name}\tcreatetxg\t{}\n{dataset}@{name}\tcreation\t{}\n{dataset}@{name}\tuserrefs\t0",
            1000 + i,
            10 + i,
            1_700_000_000 + i
        );
    }
    s
}
