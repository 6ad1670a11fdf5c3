//! Random fault schedules: a three-node cluster with three jobs, fence
//! levels drawn at random, every node self-fencing, and a few dozen
//! commands — writes, daemon cycles, power and network faults, BMCs that
//! hang, crawl or lie, failovers, reverses and switchovers (some crashed
//! after a random step), corrupt state files, cut transfers, pauses — at
//! random times. About half the jobs have `failover = "auto"` with a
//! random delay, so every node's daemon fails them over by itself
//! meanwhile. The same seed gives the same schedule and the same run.
//!
//! Outside the model, and so never drawn: an operator who vouches for a
//! node that is running (`--confirmed-off` is given only when the node is
//! off), and a BMC that reports "off" for a running node (it defeats any
//! fencing when that node is also cut off; the scenario
//! `lying-bmc-says-off-node-still-member` shows the membership check
//! catching it when it is not).

use std::time::Duration;

use fastrand::Rng;
use tandem_repl::job::Endpoint;
use tandem_zfs::DatasetName;

use super::scenario::{job, Command, Scenario, Setup};
use super::world::Bmc;

const NODES: [&str; 3] = ["a", "b", "c"];

fn ep(node: &str, ds: &str) -> Option<Endpoint> {
    Some(Endpoint {
        node: node.to_owned(),
        dataset: DatasetName::parse(ds).ok()?,
    })
}

fn pick<'a>(r: &mut Rng, v: &[&'a str]) -> &'a str {
    v[r.usize(..v.len())]
}

/// The schedule of `seed`.
pub fn schedule(seed: u64) -> Scenario {
    let mut r = Rng::with_seed(seed);
    let mut setup = Setup {
        nodes: NODES.iter().map(|n| n.to_string()).collect(),
        ..Setup::default()
    };
    for (name, s, t) in [("j1", "a", "b"), ("j2", "b", "c"), ("j3", "c", "a")] {
        if let (Some(a), Some(b)) = (
            ep(s, &format!("p{s}/{name}")),
            ep(t, &format!("p{t}/{name}")),
        ) {
            if let Some(mut j) = job(name, a, b) {
                if r.bool() {
                    j.hooks.switchover_stop = Some("stop".into());
                    j.hooks.switchover_start = Some("start".into());
                }
                // Half the jobs fail over by themselves; a few hooks fail.
                if r.bool() {
                    j.failover = tandem_repl::job::FailoverMode::Auto;
                    j.failover_delay = Duration::from_secs(r.u64(3..=30));
                    j.hooks.on_promote = Some(if r.u8(..8) == 0 { "fail" } else { "start" }.into());
                }
                setup.jobs.push(j);
            }
        }
    }
    for n in NODES {
        let levels: &[&str] = match r.u8(..4) {
            0 => &["ipmi"],
            1 => &["dead", "ipmi"],
            2 => &["ipmi", "watchdog"],
            _ => &["watchdog"],
        };
        setup
            .fence
            .insert(n.into(), levels.iter().map(|l| l.to_string()).collect());
        setup.watchdog.insert(n.into(), Duration::from_secs(10));
    }
    let jobs = ["j1", "j2", "j3"];
    let failover_steps = ["aborted", "rolled-back", "marked", "writable", "recorded"];
    let reverse_steps = ["recorded", "renamed", "cloned", "promoted", "marked"];
    let switchover_steps = [
        "recorded",
        "quiesced",
        "synced",
        "writable",
        "marked-new",
        "marked-old",
        "done",
    ];
    let mut t = 0.0f64;
    let mut commands = Vec::new();
    let steps = 20 + r.usize(..25);
    for _ in 0..steps {
        t += f64::from(r.u32(1..=30));
        let n = pick(&mut r, &NODES).to_string();
        let j = pick(&mut r, &jobs).to_string();
        let crash =
            |r: &mut Rng, steps: &[&str]| (r.u8(..4) == 0).then(|| pick(r, steps).to_string());
        let c = match r.u8(..104) {
            0..=24 => Command::Write(n, j),
            25..=44 => Command::Daemon(n),
            45..=49 => Command::Power(n, false),
            50..=56 => Command::Power(n, true),
            57..=59 => Command::Network(n, false),
            60..=62 => Command::Network(n, true),
            63..=64 => {
                let lone = n;
                let rest: Vec<String> = NODES
                    .iter()
                    .filter(|x| **x != lone)
                    .map(|x| x.to_string())
                    .collect();
                Command::Partition(vec![vec![lone], rest])
            }
            65..=67 => Command::Heal,
            68..=71 => Command::Bmc(
                n,
                match r.u8(..4) {
                    0 => Bmc::Down,
                    1 => Bmc::Slow(Duration::from_secs(r.u64(1..8))),
                    2 => Bmc::LieOn,
                    _ => Bmc::Up,
                },
            ),
            72..=81 => {
                let dead = pick(&mut r, &NODES).to_string();
                Command::Failover {
                    node: n,
                    dead,
                    confirmed_off: r.u8(..4) == 0,
                    crash: crash(&mut r, &failover_steps),
                }
            }
            82..=89 => Command::Reverse(n, j, crash(&mut r, &reverse_steps)),
            90..=93 => Command::Switchover(n, j, crash(&mut r, &switchover_steps)),
            94..=95 => Command::Corrupt(n, j),
            96..=97 => Command::Cut(n, j),
            98..=99 => Command::Run(n, j),
            100..=101 => Command::Pause(n, true),
            _ => Command::Pause(n, false),
        };
        commands.push((Duration::from_secs_f64(t), c));
    }
    // The end: everything back, a few rounds of daemons and reverses.
    t += 5.0;
    commands.push((Duration::from_secs_f64(t), Command::Heal));
    for n in NODES {
        commands.push((Duration::from_secs_f64(t), Command::Power(n.into(), true)));
        commands.push((Duration::from_secs_f64(t), Command::Bmc(n.into(), Bmc::Up)));
    }
    for round in 0..2 {
        t += 60.0;
        for n in NODES {
            commands.push((Duration::from_secs_f64(t), Command::Daemon(n.into())));
        }
        if round == 0 {
            for (k, j) in jobs.iter().enumerate() {
                commands.push((
                    Duration::from_secs_f64(t + 10.0 + k as f64),
                    Command::Reverse(NODES[k].into(), j.to_string(), None),
                ));
            }
        }
    }
    Scenario { setup, commands }
}
