//! The scenario tests: each directory under `tests/scenarios/` holds a
//! scenario (`cmds`) and the log the engines must produce (`log.expect`).
//! A changed log fails with a diff; `TANDEM_SIM_BLESS=1` writes the new log
//! as the expected one (review it before committing). Every scenario must
//! also keep the invariants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tandem_ha::sim::scenario::{Scenario, Sim};

fn run(text: &str) -> tandem_ha::sim::scenario::Run {
    let sc = Scenario::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(Sim::run(&sc))
}

#[test]
fn every_scenario_produces_its_expected_log() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let bless = std::env::var_os("TANDEM_SIM_BLESS").is_some();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cmds").exists())
        .collect();
    names.sort();
    assert!(names.len() >= 20, "only {} scenarios", names.len());
    let mut failed = Vec::new();
    for d in &names {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(d.join("cmds")).unwrap();
        let r = run(&text);
        let got = r.log.join("\n") + "\n";
        let expect_path = d.join("log.expect");
        let want = std::fs::read_to_string(&expect_path).unwrap_or_default();
        if !r.violations.is_empty() {
            failed.push(format!(
                "{name}: invariants broken:\n  {}\n{got}",
                r.violations.join("\n  ")
            ));
        }
        if got != want {
            if bless {
                std::fs::write(&expect_path, &got).unwrap();
                eprintln!("blessed {name}");
                continue;
            }
            let diff = similar::TextDiff::from_lines(&want, &got);
            failed.push(format!(
                "{name}: the log changed (- expected, + got; TANDEM_SIM_BLESS=1 accepts it):\n{}",
                diff.unified_diff().context_radius(3)
            ));
        }
    }
    eprintln!("{} scenarios run", names.len());
    assert!(failed.is_empty(), "\n{}", failed.join("\n\n"));
}
