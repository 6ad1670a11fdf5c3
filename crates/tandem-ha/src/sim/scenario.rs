//! Scenarios: a cluster described in a few lines, then timed commands, run
//! against the real engines on the simulated world, producing a log.
//!
//! ```text
//! # two nodes, one job, fenced through a BMC
//! nodes a b
//! job j a:pa/vm b:pb/vm
//! fence a ipmi
//!
//! @0   write a j
//! @1   daemon a            # one daemon cycle on node a
//! @60  power a off
//! @61  failover b a        # `tandem failover a`, run on b
//! ```
//!
//! Setup lines: `nodes N...`; `job NAME NODE:DATASET NODE:DATASET` (the
//! first end is the configured source; its dataset is created, and the
//! job's workload runs there); `fence NODE LEVEL...` (`ipmi`: the node's
//! BMC, `watchdog`: its watchdog through corosync's membership);
//! `watchdog NODE SECONDS` (the node self-fences); `quorum off` (no
//! corosync); `hooks JOB` (switchover hooks); `on_test JOB` (an
//! `on_test` hook, which logs what the clones hold).
//!
//! Commands, each at `@SECONDS`: `write NODE JOB`, `start NODE JOB` (the
//! operator starts the workload by hand), `daemon NODE`, `run NODE JOB`,
//! `failover NODE DEAD [--confirmed-off]`, `reverse NODE JOB`,
//! `switchover NODE JOB`, `test NODE JOB` (`failover --test`; each of
//! the last four takes `crash=STEP`), `cleanup NODE JOB`,
//! `power NODE on|off`, `network NODE on|off`, `partition A B | C`,
//! `heal`, `bmc NODE up|down|slow SECONDS|lie-on|lie-off`, `corrupt NODE
//! JOB` (its state file), `cut NODE JOB` (the next transfer into it),
//! `check` (log every copy), `wait` (until everything running is done).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_repl::clock::Clock;
use tandem_repl::cycle::{primary_here, run_cycle, CycleEnv, CycleOptions, JobReport};
use tandem_repl::job::{Endpoint, Job, JobHooks};
use tandem_repl::naming::JobName;
use tandem_zfs::{DatasetName, SendFlags, WireCompress};

use super::check::invariants;
use super::cluster::{watchdogs, SimFencer, SimHost, SimQuorum};
use super::world::{lock, Ack, Bmc, Ds, Node, Shared, World};
use super::zfs::{mark_text, SimZfs};
use crate::env::Env;
use crate::failover::Outcome;

/// A scenario that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {why}: {text:?}")]
pub struct ParseError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub why: String,
    /// The line itself.
    pub text: String,
}

/// The cluster a scenario runs on.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Nodes.
    pub nodes: Vec<String>,
    /// Jobs.
    pub jobs: Vec<Job>,
    /// Fence levels by node.
    pub fence: BTreeMap<String, Vec<String>>,
    /// Self-fencing nodes and their watchdog timeout.
    pub watchdog: BTreeMap<String, Duration>,
    /// No corosync.
    pub quorum_off: bool,
    /// votequorum's `two_node`.
    pub two_node: bool,
    /// A QDevice.
    pub qdevice: bool,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The workload writes once.
    Write(String, String),
    /// The operator starts the workload.
    Start(String, String),
    /// One daemon cycle.
    Daemon(String),
    /// `tandem run JOB`.
    Run(String, String),
    /// `tandem failover DEAD` on NODE.
    Failover {
        /// Where it runs.
        node: String,
        /// The node failed over from.
        dead: String,
        /// `--confirmed-off`.
        confirmed_off: bool,
        /// Crash after this step.
        crash: Option<String>,
    },
    /// `tandem reverse JOB` on NODE.
    Reverse(String, String, Option<String>),
    /// `tandem reverse JOB --switchover` on NODE.
    Switchover(String, String, Option<String>),
    /// `tandem failover --test JOB` on NODE.
    Test(String, String, Option<String>),
    /// `tandem failover --cleanup JOB` on NODE.
    Cleanup(String, String),
    /// Power on (true) or off.
    Power(String, bool),
    /// Network on (true) or cut.
    Network(String, bool),
    /// Split the network into groups.
    Partition(Vec<Vec<String>>),
    /// One network again.
    Heal,
    /// A BMC's behaviour.
    Bmc(String, Bmc),
    /// Corrupt a node's state file of a job.
    Corrupt(String, String),
    /// Cut the next transfer into a node's copy of a job.
    Cut(String, String),
    /// Log every copy.
    Check,
    /// Wait for everything running.
    Wait,
    /// `tandem ha pause` (true) or `resume` on a node.
    Pause(String, bool),
}

/// A parsed scenario.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// The cluster.
    pub setup: Setup,
    /// Commands by time.
    pub commands: Vec<(Duration, Command)>,
}

fn endpoint(s: &str) -> Option<Endpoint> {
    let (n, d) = s.split_once(':')?;
    Some(Endpoint {
        node: n.to_owned(),
        dataset: DatasetName::parse(d).ok()?,
    })
}

/// A job with the simulator's defaults.
pub fn job(name: &str, source: Endpoint, target: Endpoint) -> Option<Job> {
    Some(Job {
        name: JobName::parse(name).ok()?,
        source,
        target,
        interval: Duration::from_secs(60),
        keep: 3,
        wire: WireCompress::None,
        rate_limit: 0,
        enabled: true,
        flags: SendFlags::default(),
        hooks: JobHooks::default(),
        failover: Default::default(),
        failover_delay: tandem_repl::job::DEFAULT_FAILOVER_DELAY,
        guest: None,
        members: Default::default(),
        fanout: Vec::new(),
    })
}

impl Scenario {
    /// Parses a scenario (see the module docs).
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut sc = Scenario::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |why: &str| ParseError {
                line: i + 1,
                why: why.to_owned(),
                text: raw.to_owned(),
            };
            let w: Vec<&str> = line.split_whitespace().collect();
            if let Some(t) = w[0].strip_prefix('@') {
                let t: f64 = t.parse().map_err(|_| err("not a time in seconds"))?;
                let cmd = parse_command(&w[1..]).ok_or_else(|| err("unknown command"))?;
                sc.commands.push((Duration::from_secs_f64(t), cmd));
                continue;
            }
            let s = &mut sc.setup;
            match (w[0], &w[1..]) {
                ("nodes", ns) => s.nodes = ns.iter().map(|n| n.to_string()).collect(),
                ("job", [name, a, b]) => {
                    let (a, b) = (
                        endpoint(a).ok_or_else(|| err("not NODE:DATASET"))?,
                        endpoint(b).ok_or_else(|| err("not NODE:DATASET"))?,
                    );
                    s.jobs
                        .push(job(name, a, b).ok_or_else(|| err("bad job name"))?);
                }
                ("fence", [node, levels @ ..]) => {
                    s.fence.insert(
                        node.to_string(),
                        levels.iter().map(|l| l.to_string()).collect(),
                    );
                }
                ("watchdog", [node, secs]) => {
                    let secs: u64 = secs.parse().map_err(|_| err("not seconds"))?;
                    s.watchdog
                        .insert(node.to_string(), Duration::from_secs(secs));
                }
                ("quorum", ["off"]) => s.quorum_off = true,
                ("two_node", []) => s.two_node = true,
                ("qdevice", []) => s.qdevice = true,
                ("auto", [j, rest @ ..]) => {
                    let job = s
                        .jobs
                        .iter_mut()
                        .find(|x| x.name.as_str() == *j)
                        .ok_or_else(|| err("no such job"))?;
                    job.failover = tandem_repl::job::FailoverMode::Auto;
                    job.hooks.on_promote = Some("start".into());
                    for r in rest {
                        match *r {
                            "hook-fails" => job.hooks.on_promote = Some("fail".into()),
                            secs => {
                                let secs: u64 = secs.parse().map_err(|_| err("not seconds"))?;
                                job.failover_delay = Duration::from_secs(secs);
                            }
                        }
                    }
                }
                ("on_test", [j]) => {
                    let job = s
                        .jobs
                        .iter_mut()
                        .find(|x| x.name.as_str() == *j)
                        .ok_or_else(|| err("no such job"))?;
                    job.hooks.on_test = Some("check".into());
                }
                ("hooks", [j]) => {
                    let job = s
                        .jobs
                        .iter_mut()
                        .find(|x| x.name.as_str() == *j)
                        .ok_or_else(|| err("no such job"))?;
                    job.hooks = JobHooks {
                        switchover_stop: Some("stop".into()),
                        switchover_start: Some("start".into()),
                        ..JobHooks::default()
                    };
                }
                _ => return Err(err("unknown setup line")),
            }
        }
        if sc.setup.nodes.is_empty() {
            return Err(ParseError {
                line: 1,
                why: "no `nodes` line".into(),
                text: String::new(),
            });
        }
        sc.commands.sort_by_key(|(t, _)| *t);
        Ok(sc)
    }
}

fn parse_command(w: &[&str]) -> Option<Command> {
    let s = |x: &&str| x.to_string();
    let crash = |rest: &[&str]| {
        rest.iter()
            .find_map(|x| x.strip_prefix("crash="))
            .map(str::to_owned)
    };
    Some(match w {
        ["write", n, j] => Command::Write(s(n), s(j)),
        ["start", n, j] => Command::Start(s(n), s(j)),
        ["daemon", n] => Command::Daemon(s(n)),
        ["run", n, j] => Command::Run(s(n), s(j)),
        ["failover", n, d, rest @ ..] => Command::Failover {
            node: s(n),
            dead: s(d),
            confirmed_off: rest.contains(&"--confirmed-off"),
            crash: crash(rest),
        },
        ["reverse", n, j, rest @ ..] => Command::Reverse(s(n), s(j), crash(rest)),
        ["switchover", n, j, rest @ ..] => Command::Switchover(s(n), s(j), crash(rest)),
        ["test", n, j, rest @ ..] => Command::Test(s(n), s(j), crash(rest)),
        ["cleanup", n, j] => Command::Cleanup(s(n), s(j)),
        ["power", n, "on"] => Command::Power(s(n), true),
        ["power", n, "off"] => Command::Power(s(n), false),
        ["network", n, "on"] => Command::Network(s(n), true),
        ["network", n, "off"] => Command::Network(s(n), false),
        ["partition", rest @ ..] => Command::Partition(
            rest.split(|x| *x == "|")
                .map(|g| g.iter().map(s).collect())
                .collect(),
        ),
        ["heal"] => Command::Heal,
        ["bmc", n, "up"] => Command::Bmc(s(n), Bmc::Up),
        ["bmc", n, "down"] => Command::Bmc(s(n), Bmc::Down),
        ["bmc", n, "slow", secs] => {
            Command::Bmc(s(n), Bmc::Slow(Duration::from_secs(secs.parse().ok()?)))
        }
        ["bmc", n, "lie-on"] => Command::Bmc(s(n), Bmc::LieOn),
        ["bmc", n, "lie-off"] => Command::Bmc(s(n), Bmc::LieOff),
        ["corrupt", n, j] => Command::Corrupt(s(n), s(j)),
        ["cut", n, j] => Command::Cut(s(n), s(j)),
        ["check"] => Command::Check,
        ["pause", n] => Command::Pause(s(n), true),
        ["resume", n] => Command::Pause(s(n), false),
        ["wait"] => Command::Wait,
        _ => return None,
    })
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let crash =
            |c: &Option<String>| c.as_ref().map_or(String::new(), |c| format!(" crash={c}"));
        match self {
            Command::Write(n, j) => write!(f, "write {n} {j}"),
            Command::Start(n, j) => write!(f, "start {n} {j}"),
            Command::Daemon(n) => write!(f, "daemon {n}"),
            Command::Run(n, j) => write!(f, "run {n} {j}"),
            Command::Failover {
                node,
                dead,
                confirmed_off,
                crash: c,
            } => write!(
                f,
                "failover {node} {dead}{}{}",
                if *confirmed_off {
                    " --confirmed-off"
                } else {
                    ""
                },
                crash(c)
            ),
            Command::Reverse(n, j, c) => write!(f, "reverse {n} {j}{}", crash(c)),
            Command::Switchover(n, j, c) => write!(f, "switchover {n} {j}{}", crash(c)),
            Command::Test(n, j, c) => write!(f, "test {n} {j}{}", crash(c)),
            Command::Cleanup(n, j) => write!(f, "cleanup {n} {j}"),
            Command::Power(n, on) => write!(f, "power {n} {}", if *on { "on" } else { "off" }),
            Command::Network(n, on) => write!(f, "network {n} {}", if *on { "on" } else { "off" }),
            Command::Partition(g) => write!(
                f,
                "partition {}",
                g.iter()
                    .map(|g| g.join(" "))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
            Command::Heal => write!(f, "heal"),
            Command::Bmc(n, b) => write!(
                f,
                "bmc {n} {}",
                match b {
                    Bmc::Up => "up".to_string(),
                    Bmc::Down => "down".into(),
                    Bmc::Slow(d) => format!("slow {}", d.as_secs()),
                    Bmc::LieOn => "lie-on".into(),
                    Bmc::LieOff => "lie-off".into(),
                }
            ),
            Command::Corrupt(n, j) => write!(f, "corrupt {n} {j}"),
            Command::Cut(n, j) => write!(f, "cut {n} {j}"),
            Command::Check => write!(f, "check"),
            Command::Pause(n, true) => write!(f, "pause {n}"),
            Command::Pause(n, false) => write!(f, "resume {n}"),
            Command::Wait => write!(f, "wait"),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.setup;
        writeln!(f, "nodes {}", s.nodes.join(" "))?;
        for j in &s.jobs {
            writeln!(f, "job {} {} {}", j.name, j.source, j.target)?;
            if j.hooks.switchover_start.is_some() {
                writeln!(f, "hooks {}", j.name)?;
            }
            if j.failover == tandem_repl::job::FailoverMode::Auto {
                let fails = if j.hooks.on_promote.as_deref() == Some("fail") {
                    " hook-fails"
                } else {
                    ""
                };
                writeln!(f, "auto {} {}{fails}", j.name, j.failover_delay.as_secs())?;
            }
            if j.hooks.on_test.is_some() {
                writeln!(f, "on_test {}", j.name)?;
            }
        }
        for (n, l) in &s.fence {
            writeln!(f, "fence {n} {}", l.join(" "))?;
        }
        for (n, t) in &s.watchdog {
            writeln!(f, "watchdog {n} {}", t.as_secs())?;
        }
        if s.quorum_off {
            writeln!(f, "quorum off")?;
        }
        if s.two_node {
            writeln!(f, "two_node")?;
        }
        if s.qdevice {
            writeln!(f, "qdevice")?;
        }
        writeln!(f)?;
        for (t, c) in &self.commands {
            writeln!(f, "@{} {c}", t.as_secs_f64())?;
        }
        Ok(())
    }
}

/// The simulator's wall clock: the world's.
#[derive(Debug, Clone)]
pub struct SimClock(pub Shared);

impl Clock for SimClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        lock(&self.0).now()
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Run {
    /// The log.
    pub log: Vec<String>,
    /// The broken invariants, as found.
    pub violations: Vec<String>,
}

/// What [`Sim::exec`] does after the part that needs no waiting.
enum Then {
    Nothing,
    Wait,
    Exec(Command),
}

/// A running simulation.
pub struct Sim {
    /// The world.
    pub world: Shared,
    /// `--confirmed-off` is given only when the node really is off (an
    /// operator who checked): the random schedules' operator.
    pub honest_operator: bool,
    setup: Arc<Setup>,
    running: Vec<tokio::task::JoinHandle<()>>,
    /// Invariant violations found so far (deduplicated).
    found: Arc<Mutex<BTreeSet<String>>>,
}

impl Sim {
    /// Builds the world of `setup`. Call inside a paused tokio runtime.
    pub fn new(setup: &Setup) -> Sim {
        let mut w = World::new();
        w.two_node = setup.two_node;
        w.qdevice = setup.qdevice;
        for n in &setup.nodes {
            let mut node = Node::new();
            node.fence = setup.fence.get(n).cloned().unwrap_or_default();
            node.watchdog = setup.watchdog.get(n).copied();
            w.nodes.insert(n.clone(), node);
        }
        for j in &setup.jobs {
            for (ep, create) in [(&j.source, true), (&j.target, false)] {
                let mut parents = Vec::new();
                let mut p = ep.dataset.parent();
                while let Some(d) = p {
                    p = d.parent();
                    parents.push(d);
                }
                let names: Vec<DatasetName> = parents
                    .into_iter()
                    .rev()
                    .chain(create.then(|| ep.dataset.clone()))
                    .collect();
                for d in names {
                    let guid = w.guid();
                    if let Some(n) = w.nodes.get_mut(&ep.node) {
                        n.pools.entry(d).or_insert_with(|| Ds::new(guid));
                    }
                }
            }
            if let Some(n) = w.nodes.get_mut(&j.source.node) {
                n.workload.insert(j.name.to_string());
            }
        }
        Sim {
            world: Arc::new(Mutex::new(w)),
            honest_operator: false,
            setup: Arc::new(setup.clone()),
            running: Vec::new(),
            found: Arc::default(),
        }
    }

    fn note_violations(&self) {
        let mut w = lock(&self.world);
        let mut now = invariants(&w, &self.setup.jobs);
        now.extend(w.violations.drain(..).map(|v| v.0));
        let mut found = match self.found.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for v in now {
            if found.insert(v.clone()) {
                w.say("!!", format!("INVARIANT BROKEN: {v}"));
            }
        }
    }

    /// Runs a whole scenario and returns the log.
    pub async fn run(sc: &Scenario) -> Run {
        Self::run_with(sc, false).await
    }

    /// [`Sim::run`], with an honest operator or not.
    pub async fn run_with(sc: &Scenario, honest_operator: bool) -> Run {
        let mut sim = Sim::new(&sc.setup);
        sim.honest_operator = honest_operator;
        let ticker = {
            let world = sim.world.clone();
            let setup = sim.setup.clone();
            let found = sim.found.clone();
            tokio::spawn(async move {
                let wd = tokio::spawn(watchdogs(world.clone()));
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let mut w = lock(&world);
                    let now = invariants(&w, &setup.jobs);
                    let mut f = match found.lock() {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    for v in now {
                        if f.insert(v.clone()) {
                            w.say("!!", format!("INVARIANT BROKEN: {v}"));
                        }
                    }
                    if wd.is_finished() {
                        return;
                    }
                }
            })
        };
        let daemons: Vec<_> = if sc
            .setup
            .jobs
            .iter()
            .any(|j| j.failover == tandem_repl::job::FailoverMode::Auto)
        {
            sc.setup
                .nodes
                .iter()
                .map(|n| {
                    tokio::spawn(super::auto::supervise(
                        sim.world.clone(),
                        sim.setup.clone(),
                        n.clone(),
                    ))
                })
                .collect()
        } else {
            Vec::new()
        };
        let start = tokio::time::Instant::now();
        for (t, cmd) in &sc.commands {
            tokio::time::sleep_until(start + *t).await;
            sim.exec(cmd).await;
            sim.note_violations();
        }
        sim.wait().await;
        sim.exec(&Command::Check).await;
        sim.note_violations();
        ticker.abort();
        for d in daemons {
            d.abort();
        }
        for (_, t) in &lock(&sim.world).tasks {
            t.abort();
        }
        let w = lock(&sim.world);
        let violations = match sim.found.lock() {
            Ok(g) => g.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        };
        Run {
            log: w.log.clone(),
            violations,
        }
    }

    /// Waits (at most ten virtual minutes) for every running command.
    pub async fn wait(&mut self) {
        let all = futures::future::join_all(self.running.drain(..));
        if tokio::time::timeout(Duration::from_secs(600), all)
            .await
            .is_err()
        {
            lock(&self.world).say("sim", "commands still running after 600 s");
        }
    }

    /// Carries out one command now: world changes at once, commands on a
    /// node as a task of that node (it dies if the node loses power).
    pub async fn exec(&mut self, cmd: &Command) {
        match self.exec_now(cmd) {
            Then::Nothing => {}
            Then::Wait => self.wait().await,
            Then::Exec(c) => Box::pin(self.exec(&c)).await,
        }
    }

    /// The part of [`Sim::exec`] that needs no waiting; says what follows.
    fn exec_now(&mut self, cmd: &Command) -> Then {
        let world = self.world.clone();
        let mut w = lock(&world);
        w.say("sim", cmd.to_string());
        match cmd {
            Command::Power(n, true) => w.power_on(n, "by hand"),
            Command::Power(n, false) => w.power_off(n, "by hand"),
            Command::Network(n, on) => {
                if let Some(x) = w.nodes.get_mut(n) {
                    x.isolated = !on;
                }
            }
            Command::Partition(groups) => {
                w.partition = Some(groups.iter().map(|g| g.iter().cloned().collect()).collect())
            }
            Command::Heal => {
                w.partition = None;
                for n in w.nodes.values_mut() {
                    n.isolated = false;
                }
            }
            Command::Bmc(n, b) => {
                if let Some(x) = w.nodes.get_mut(n) {
                    x.bmc = *b;
                }
            }
            Command::Corrupt(n, j) => {
                if let (Some(x), Ok(j)) = (w.nodes.get(n), JobName::parse(j)) {
                    x.store.corrupt(&j);
                }
            }
            Command::Cut(n, j) => {
                if let Some(ep) = self.endpoint(n, j) {
                    w.cut_next.insert((n.clone(), ep.dataset));
                }
            }
            Command::Write(n, j) => write(&mut w, &self.setup, n, j),
            Command::Start(n, j) => {
                if let Some(x) = w.nodes.get_mut(n).filter(|x| x.power) {
                    x.workload.insert(j.clone());
                    w.say(n, format!("workload {j} started by hand"));
                }
            }
            Command::Check => check(&mut w, &self.setup),
            Command::Wait => return Then::Wait,
            Command::Pause(n, p) => {
                if let Some(x) = w.nodes.get_mut(n) {
                    x.ha_paused = *p;
                }
            }
            Command::Failover {
                node: n,
                dead,
                confirmed_off: true,
                crash,
            } if self.honest_operator && w.up(dead) => {
                w.say(
                    "sim",
                    format!("(the operator sees {dead} running: no --confirmed-off)"),
                );
                return Then::Exec(Command::Failover {
                    node: n.clone(),
                    dead: dead.clone(),
                    confirmed_off: false,
                    crash: crash.clone(),
                });
            }
            Command::Daemon(n)
            | Command::Run(n, _)
            | Command::Failover { node: n, .. }
            | Command::Reverse(n, _, _)
            | Command::Switchover(n, _, _)
            | Command::Test(n, _, _)
            | Command::Cleanup(n, _) => {
                if !w.up(n) {
                    w.say(n, "is powered off: the command does not run");
                    return Then::Nothing;
                }
                let node = n.clone();
                let fut = on_node(world.clone(), self.setup.clone(), node.clone(), cmd.clone());
                let h = tokio::spawn(fut);
                w.tasks.push((node, h.abort_handle()));
                self.running.push(h);
            }
        }
        Then::Nothing
    }

    fn endpoint(&self, node: &str, job: &str) -> Option<Endpoint> {
        self.setup
            .jobs
            .iter()
            .find(|j| j.name.as_str() == job)
            .and_then(|j| j.endpoint_on(node).cloned())
    }
}

/// One acknowledged write, if the workload runs there on a writable copy.
fn write(w: &mut World, setup: &Setup, node: &str, job: &str) {
    let Some(ep) = setup
        .jobs
        .iter()
        .find(|j| j.name.as_str() == job)
        .and_then(|j| j.endpoint_on(node))
    else {
        return;
    };
    let id = w.next_write;
    let ok = w.nodes.get(node).is_some_and(|n| {
        n.power
            && n.workload.contains(job)
            && n.pools
                .get(&ep.dataset)
                .is_some_and(|d| !d.readonly && !d.partial)
    });
    if !ok {
        w.say(
            node,
            format!(
                "write to {}: not possible (no workload or read-only)",
                ep.dataset
            ),
        );
        return;
    }
    w.next_write += 1;
    if let Some(d) = w
        .nodes
        .get_mut(node)
        .and_then(|n| n.pools.get_mut(&ep.dataset))
    {
        d.content.insert(id);
    }
    w.acks.push(Ack {
        id,
        node: node.to_owned(),
        dataset: ep.dataset.clone(),
    });
    w.say(node, format!("write #{id} to {} acknowledged", ep.dataset));
}

/// Logs every copy of every job, and what is set aside.
fn check(w: &mut World, setup: &Setup) {
    let mut lines = Vec::new();
    for j in &setup.jobs {
        for ep in [&j.source, &j.target] {
            let Some(n) = w.nodes.get(&ep.node) else {
                continue;
            };
            let line = match n.pools.get(&ep.dataset) {
                None => format!("{ep}: absent"),
                Some(d) => format!(
                    "{ep}: {}{} mark {} newest {} writes {:?}{}",
                    if n.power { "up" } else { "DOWN" },
                    if d.readonly { " ro" } else { " rw" },
                    mark_text(d.mark().as_ref()),
                    d.snaps.last().map_or("-", |s| s.short.as_str()),
                    d.content,
                    if d.token.is_some() {
                        " (partial receive)"
                    } else {
                        ""
                    },
                ),
            };
            lines.push((j.name.to_string(), line));
        }
    }
    for (name, n) in &w.nodes {
        for (d, ds) in &n.pools {
            if d.as_str().contains("/tandem-diverged/") {
                lines.push((
                    "aside".into(),
                    format!("{name}:{d}: writes {:?}", ds.content),
                ));
            }
        }
    }
    for (who, l) in lines {
        w.say(&who, l);
    }
}

fn summary_line(r: &JobReport) -> String {
    let s = r.summary();
    if let Some(skip) = &s.skipped {
        return format!("cycle {}: skipped: {skip}", s.job);
    }
    if let Some(e) = &s.error {
        return format!("cycle {}: FAILED: {e}", s.job);
    }
    let mut line = format!(
        "cycle {}: {} {} -> {}{}",
        s.job,
        s.plans.join("+"),
        s.source.unwrap_or_default(),
        s.target.unwrap_or_default(),
        s.sent
            .map(|x| format!(" sent {}", x.rsplit('@').next().unwrap_or_default()))
            .unwrap_or_default()
    );
    for w in &s.warnings {
        line.push_str(&format!("; warning: {w}"));
    }
    line
}

/// What a command or daemon on one node runs with: the pieces of its
/// [`Env`].
pub(super) struct Kit {
    node: String,
    nodes: BTreeMap<String, SimZfs>,
    store: tandem_repl::state::MemStore,
    clock: SimClock,
    quorum: SimQuorum,
    fencer: SimFencer,
    host: SimHost,
}

impl Kit {
    /// The kit of `node`; `crash`: the step after which its command dies.
    pub(super) fn new(world: &Shared, setup: &Setup, node: &str, crash: Option<String>) -> Kit {
        let nodes: BTreeMap<String, SimZfs> = setup
            .nodes
            .iter()
            .map(|n| (n.clone(), SimZfs::new(world.clone(), node, n)))
            .collect();
        let store = lock(world)
            .nodes
            .get(node)
            .map(|n| n.store.clone())
            .unwrap_or_default();
        let quorum = SimQuorum {
            world: world.clone(),
            node: node.to_owned(),
            off: setup.quorum_off,
        };
        Kit {
            node: node.to_owned(),
            nodes,
            store,
            clock: SimClock(world.clone()),
            fencer: SimFencer {
                world: world.clone(),
                node: node.to_owned(),
                quorum: quorum.clone(),
            },
            quorum,
            host: SimHost {
                world: world.clone(),
                node: node.to_owned(),
                crash_after: crash,
            },
        }
    }

    /// The environment over the kit.
    pub(super) fn env(&self) -> Env<'_, SimZfs> {
        Env {
            local: &self.node,
            nodes: &self.nodes,
            store: &self.store,
            clock: &self.clock,
            quorum: &self.quorum,
            fencer: &self.fencer,
            host: &self.host,
            me: format!("sim {}", self.node),
            lock_wait: Duration::from_secs(30),
        }
    }
}

/// Runs a command on `node` with the engines, as `tandem` would there.
async fn on_node(world: Shared, setup: Arc<Setup>, node: String, cmd: Command) {
    let crash = match &cmd {
        Command::Failover { crash, .. }
        | Command::Reverse(_, _, crash)
        | Command::Switchover(_, _, crash)
        | Command::Test(_, _, crash) => crash.clone(),
        _ => None,
    };
    let kit = Kit::new(&world, &setup, &node, crash);
    let env = kit.env();
    let (nodes, store, clock) = (&kit.nodes, &kit.store, &kit.clock);
    let job_of = |j: &str| setup.jobs.iter().find(|x| x.name.as_str() == j).cloned();
    let say = |what: String| lock(&world).say(&node, what);
    match &cmd {
        Command::Daemon(_) | Command::Run(_, _) => {
            let (jobs, only) = match &cmd {
                Command::Run(_, j) => (job_of(j).into_iter().collect::<Vec<_>>(), None),
                _ => {
                    let here: BTreeSet<String> = [node.clone()].into();
                    (primary_here(nodes, &setup.jobs, &here).await, Some(here))
                }
            };
            let opts = CycleOptions {
                lock_wait: Duration::ZERO,
                me: format!("sim {node}"),
                parallel: 4,
                live: None,
                only_primary: only,
            };
            let cenv = CycleEnv {
                nodes,
                store,
                clock,
            };
            for r in run_cycle(&cenv, &jobs, &opts).await {
                say(summary_line(&r));
            }
        }
        Command::Failover {
            dead,
            confirmed_off,
            ..
        } => match crate::failover::failover(&env, &setup.jobs, dead, *confirmed_off).await {
            Ok(r) => {
                for l in failover_lines(&world, &node, dead, &r, true) {
                    say(l);
                }
            }
            Err(e) => say(format!(
                "failover {dead}: {} ({}): {e}",
                if e.is_refusal() { "REFUSED" } else { "FAILED" },
                e.kind()
            )),
        },
        Command::Reverse(_, j, _) => {
            let Some(job) = job_of(j) else { return };
            match crate::reverse::reverse(&env, &job).await {
                Ok(r) => {
                    let aside = r
                        .diverged
                        .as_ref()
                        .map_or(String::new(), |d| format!("; set aside in {d}"));
                    let cycle = r.cycle.as_ref().map_or(String::new(), |c| {
                        if c.ok {
                            format!("; cycle ok ({})", c.plans.join("+"))
                        } else {
                            format!("; cycle FAILED: {}", c.error.as_deref().unwrap_or("?"))
                        }
                    });
                    say(format!(
                        "reverse {j}: {} follows {} ({}){aside}{cycle}",
                        r.follower, r.primary, r.divergence
                    ));
                }
                Err(e) => say(format!("reverse {j}: FAILED ({}): {e}", e.kind())),
            }
        }
        Command::Test(_, j, _) => {
            let Some(job) = job_of(j) else { return };
            match crate::drill::test(&env, &job).await {
                Ok(r) => {
                    let hook = match &r.hook {
                        crate::drill::HookOutcome::Ok { .. } => "on_test ok".to_owned(),
                        crate::drill::HookOutcome::Failed { error, .. } => {
                            format!("on_test FAILED: {error}")
                        }
                        crate::drill::HookOutcome::None => "no on_test hook".to_owned(),
                    };
                    let left = if r.leftovers_removed.is_empty() {
                        String::new()
                    } else {
                        format!("; first removed {}", r.leftovers_removed.join(", "))
                    };
                    say(format!(
                        "test {j}: {} at {} (primary {}, data-loss window {} s); {hook}; {}{left}",
                        r.replica,
                        r.snapshot.rsplit('@').next().unwrap_or_default(),
                        r.primary,
                        r.rpo_seconds,
                        if r.cleaned_up {
                            "cleaned up".to_owned()
                        } else {
                            format!(
                                "NOT cleaned up: {}",
                                r.cleanup_error.as_deref().unwrap_or("?")
                            )
                        },
                    ))
                }
                Err(e) => say(format!("test {j}: FAILED ({}): {e}", e.kind())),
            }
        }
        Command::Cleanup(_, j) => {
            let Some(job) = job_of(j) else { return };
            match crate::drill::cleanup(&env, std::slice::from_ref(&job)).await {
                Ok(rs) => {
                    for c in rs {
                        say(format!(
                            "cleanup {}: destroyed [{}], kept [{}]",
                            c.job,
                            c.destroyed.join(", "),
                            c.kept.join("; ")
                        ))
                    }
                }
                Err(e) => say(format!("cleanup {j}: FAILED ({}): {e}", e.kind())),
            }
        }
        Command::Switchover(_, j, _) => {
            let Some(job) = job_of(j) else { return };
            match crate::switchover::switchover(&env, &job).await {
                Ok(r) => {
                    // Without hooks, the operator moves the workload.
                    if job.hooks.switchover_start.is_none() {
                        let mut w = lock(&world);
                        for n in [&job.source.node, &job.target.node] {
                            if let Some(x) = w.nodes.get_mut(n) {
                                x.workload.remove(j.as_str());
                            }
                        }
                        let new = if r.primary.starts_with(&format!("{}:", job.source.node)) {
                            &job.source.node
                        } else {
                            &job.target.node
                        };
                        if let Some(x) = w.nodes.get_mut(new) {
                            x.workload.insert(j.clone());
                        }
                    }
                    say(format!(
                        "switchover {j}: {} is the primary (generation {}), {} follows",
                        r.primary, r.generation, r.follower
                    ))
                }
                Err(e) => say(format!("switchover {j}: FAILED ({}): {e}", e.kind())),
            }
        }
        _ => {}
    }
}

/// The log lines of a failover's report. `operator`: an operator ran it
/// and starts the workload by hand where a replica became primary (an
/// automatic failover's hook starts it instead).
pub(super) fn failover_lines(
    world: &Shared,
    node: &str,
    dead: &str,
    r: &crate::failover::FailoverReport,
    operator: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let start_workload = |job: &str| {
        if operator {
            lock(world)
                .nodes
                .get_mut(node)
                .map(|n| n.workload.insert(job.to_owned()));
        }
    };
    let started = if operator { "; workload started" } else { "" };

    if r.confirmed_by == Some(crate::failover::ConfirmedBy::Operator) {
        out.push(format!(
            "failover {dead}: {dead} confirmed off by the operator's word"
        ));
    }
    for j in &r.jobs {
        let line = match &j.outcome {
                        Outcome::Promoted {
                            snapshot,
                            generation,
                            warnings,
                            ..
                        } => {
                            start_workload(&j.job);
                            let mut l = format!(
                                "promoted {} at {} (generation {generation}){started}",
                                j.dataset,
                                snapshot.rsplit('@').next().unwrap_or_default()
                            );
                            for w in warnings {
                                l.push_str(&format!("; warning: {w}"));
                            }
                            l
                        }
                        Outcome::Completed { generation, .. } => {
                            start_workload(&j.job);
                            format!("finished promoting {} (generation {generation}){started}", j.dataset)
                        }
                        Outcome::AlreadyPrimary {
                            generation,
                            confirmed: true,
                        } => {
                            // The operator starts the workload where it does not run yet.
                            start_workload(&j.job);
                            format!("already primary at generation {generation} (confirmed); nothing touched")
                        }
                        Outcome::AlreadyPrimary {
                            generation,
                            confirmed: false,
                        } => format!(
                            "already primary at generation {generation} as far as this node knows; nothing touched"
                        ),
                        Outcome::OtherPrimary {
                            primary,
                            generation,
                        } => format!("its primary is {primary} (generation {generation})"),
                        Outcome::Failed { error_kind, error } => {
                            format!("FAILED ({error_kind}): {error}")
                        }
                    };
        out.push(format!("failover {dead}: {}: {line}", j.job));
    }

    out
}
