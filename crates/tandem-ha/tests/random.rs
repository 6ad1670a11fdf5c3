//! The randomized test: thousands of random fault schedules
//! ([`tandem_ha::sim::random`]) run against the real engines, with the
//! invariants checked after every command and every simulated half second.
//! `TANDEM_SIM_SCHEDULES` sets how many (default 10 000);
//! `TANDEM_SIM_SEED` runs one seed and prints its log. A failure prints the
//! seed and the schedule, a scenario file the `sim` example replays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tandem_ha::sim::random::schedule;
use tandem_ha::sim::scenario::Sim;

fn run(seed: u64) -> (String, tandem_ha::sim::scenario::Run) {
    let sc = schedule(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let r = rt.block_on(Sim::run_with(&sc, true));
    (sc.to_string(), r)
}

#[test]
fn invariants_hold_over_random_fault_schedules() {
    if let Some(seed) = std::env::var("TANDEM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let (text, r) = run(seed);
        println!("{text}\n{}", r.log.join("\n"));
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        return;
    }
    let n: u64 = std::env::var("TANDEM_SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let t = std::time::Instant::now();
    let mut commands = 0usize;
    // What the schedules made the engines do, so a change that makes them
    // stop exercising something shows.
    let kinds = [
        ("promotions", ": promoted "),
        ("finished promotions", "finished promoting"),
        ("refused failovers", "REFUSED"),
        ("stale copies refused", "stale_copy"),
        ("reverses", " follows "),
        ("set-asides", "set aside in"),
        ("switchovers", "is the primary (generation"),
        ("crashes", "CRASH after step"),
        ("watchdog resets", "its watchdog reset it"),
        ("resumed receives", "resume"),
        ("corrupt state files moved aside", "was corrupt"),
        ("automatic failovers started", ": fencing "),
        ("automatic workload starts", "on_promote ok"),
        ("failed on_promote hooks", "on_promote FAILED"),
        ("pauses", ": paused"),
        ("idle while not quorate", "not quorate: doing nothing"),
    ];
    let mut counts = vec![0usize; kinds.len()];
    for seed in 0..n {
        let (text, r) = run(seed);
        commands += text.lines().filter(|l| l.starts_with('@')).count();
        for l in &r.log {
            for (i, (_, pat)) in kinds.iter().enumerate() {
                if l.contains(pat) {
                    counts[i] += 1;
                }
            }
        }
        if !r.violations.is_empty() {
            panic!(
                "seed {seed} broke an invariant:\n  {}\n\nschedule (replay: TANDEM_SIM_SEED={seed}):\n{text}\nlog:\n{}",
                r.violations.join("\n  "),
                r.log.join("\n")
            );
        }
    }
    eprintln!(
        "{n} random schedules, {commands} commands, every invariant held ({:.1?})",
        t.elapsed()
    );
    for ((what, _), c) in kinds.iter().zip(&counts) {
        eprintln!("  {c:>7} {what}");
        assert!(*c > 0, "no schedule made any {what}");
    }
}
