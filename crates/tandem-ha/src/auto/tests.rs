//! The watcher's rules, on a hand-driven clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use tandem_fence::quorum::Votes;

fn votes(members: &[&str], two_node: bool, qdevice: bool) -> Votes {
    Votes {
        node_id: None,
        nodes: members.len() as u32,
        votes: members.len() as u32,
        expected: 3,
        needed: Some(2),
        members: members.iter().map(|m| m.to_string()).collect(),
        two_node,
        qdevice,
    }
}

fn job(name: &str, mode: FailoverMode, primary: &str) -> JobFacts {
    JobFacts {
        job: JobName::parse(name).unwrap(),
        mode,
        delay: Duration::from_secs(10),
        primary: Ok(primary.into()),
        promoted: None,
        hook_error: None,
    }
}

struct T {
    w: Watcher,
    t0: Instant,
    wall0: DateTime<Utc>,
}

impl T {
    fn new(local: &str) -> T {
        T {
            w: Watcher::new(local, AutoConfig::default()),
            t0: Instant::now(),
            wall0: DateTime::<Utc>::default(),
        }
    }
    fn at(&mut self, secs: u64, q: &Quorum, paused: bool, jobs: &[JobFacts]) -> Vec<Decision> {
        let f = Facts {
            now: self.t0 + Duration::from_secs(secs),
            wall: self.wall0 + chrono::Duration::seconds(secs as i64),
            quorum: Ok(q),
            paused,
            jobs,
        };
        self.w.observe(&f)
    }
    fn state(&self, j: &str) -> JobHa {
        self.w.states()[&JobName::parse(j).unwrap()].clone()
    }
}

#[test]
fn fails_over_once_the_delay_is_over_and_groups_jobs_by_node() {
    let mut t = T::new("b");
    let jobs = [
        job("j1", FailoverMode::Auto, "a"),
        job("j2", FailoverMode::Auto, "a"),
        job("m", FailoverMode::Manual, "a"),
        job("mine", FailoverMode::Auto, "b"),
    ];
    let all = Quorum::Quorate(votes(&["a", "b", "c"], false, false));
    let bc = Quorum::Quorate(votes(&["b", "c"], false, false));
    assert!(t.at(0, &all, false, &jobs).is_empty());
    assert_eq!(
        t.state("j1"),
        JobHa::Watching {
            primary: "a".into()
        }
    );
    assert_eq!(t.state("m"), JobHa::Manual);
    assert_eq!(t.state("mine"), JobHa::Primary);
    assert!(t.at(1, &bc, false, &jobs).is_empty());
    assert!(matches!(t.state("j1"), JobHa::PrimaryLost { .. }));
    assert_eq!(t.w.next_deadline(), Some(t.t0 + Duration::from_secs(11)));
    assert!(t.at(10, &bc, false, &jobs).is_empty(), "9 s of absence");
    let d = t.at(11, &bc, false, &jobs);
    assert_eq!(
        d,
        [Decision {
            dead: "a".into(),
            jobs: vec![JobName::parse("j1").unwrap(), JobName::parse("j2").unwrap()]
        }]
    );
    assert_eq!(t.state("m"), JobHa::Manual, "manual jobs are never decided");
}

#[test]
fn a_primary_back_within_the_delay_resets_its_clock() {
    let mut t = T::new("b");
    let jobs = [job("j", FailoverMode::Auto, "a")];
    let all = Quorum::Quorate(votes(&["a", "b", "c"], false, false));
    let bc = Quorum::Quorate(votes(&["b", "c"], false, false));
    t.at(0, &bc, false, &jobs);
    t.at(8, &all, false, &jobs);
    assert_eq!(
        t.state("j"),
        JobHa::Watching {
            primary: "a".into()
        }
    );
    assert!(t.at(9, &bc, false, &jobs).is_empty());
    assert!(
        t.at(18, &bc, false, &jobs).is_empty(),
        "9 s since it left again"
    );
    assert_eq!(t.at(19, &bc, false, &jobs).len(), 1);
}

#[test]
fn no_quorum_or_paused_does_nothing_and_restarts_the_delay() {
    let mut t = T::new("b");
    let jobs = [job("j", FailoverMode::Auto, "a")];
    let bc = Quorum::Quorate(votes(&["b", "c"], false, false));
    let alone = Quorum::NotQuorate(votes(&["b"], false, false));
    t.at(0, &bc, false, &jobs);
    assert!(t.at(30, &alone, false, &jobs).is_empty());
    assert_eq!(t.state("j"), JobHa::NotQuorate);
    assert!(
        t.at(31, &bc, false, &jobs).is_empty(),
        "absence counted anew"
    );
    assert!(t.at(40, &bc, true, &jobs).is_empty());
    assert_eq!(t.state("j"), JobHa::Paused);
    assert!(
        t.at(41, &bc, false, &jobs).is_empty(),
        "resumed: counted anew"
    );
    assert!(t.at(50, &bc, false, &jobs).is_empty());
    assert_eq!(t.at(51, &bc, false, &jobs).len(), 1);
    // An error from the quorum source is no quorum.
    let f = Facts {
        now: t.t0 + Duration::from_secs(60),
        wall: t.wall0,
        quorum: Err("corosync does not answer".into()),
        paused: false,
        jobs: &jobs,
    };
    assert!(t.w.observe(&f).is_empty());
    assert_eq!(t.state("j"), JobHa::NotQuorate);
}

#[test]
fn a_refused_failover_is_retried_after_retry_and_not_while_running() {
    let mut t = T::new("b");
    let jobs = [job("j", FailoverMode::Auto, "a")];
    let bc = Quorum::Quorate(votes(&["b", "c"], false, false));
    t.at(0, &bc, false, &jobs);
    assert_eq!(t.at(10, &bc, false, &jobs).len(), 1);
    t.w.started("a", t.wall0);
    assert!(
        t.at(11, &bc, false, &jobs).is_empty(),
        "one failover at a time"
    );
    assert!(matches!(t.state("j"), JobHa::Fencing { .. }));
    t.w.finished(
        "a",
        t.t0 + Duration::from_secs(12),
        t.wall0,
        Attempt::Refused("not fenced".into()),
    );
    assert!(t.at(13, &bc, false, &jobs).is_empty());
    assert!(matches!(t.state("j"), JobHa::Refused { .. }));
    assert!(
        t.at(41, &bc, false, &jobs).is_empty(),
        "29 s after the refusal"
    );
    assert_eq!(t.at(42, &bc, false, &jobs).len(), 1);
}

#[test]
fn two_nodes_without_a_tie_breaker_do_not_fence_at_the_same_moment() {
    let a_alone = Quorum::Quorate(votes(&["a"], true, false));
    let b_alone = Quorum::Quorate(votes(&["b"], true, false));
    let mut a = T::new("a");
    let mut b = T::new("b");
    let on_a = [job("jb", FailoverMode::Auto, "b")];
    let on_b = [job("ja", FailoverMode::Auto, "a")];
    a.at(0, &a_alone, false, &on_a);
    b.at(0, &b_alone, false, &on_b);
    assert_eq!(a.at(10, &a_alone, false, &on_a).len(), 1, "a sorts first");
    assert!(b.at(10, &b_alone, false, &on_b).is_empty());
    assert!(b.at(24, &b_alone, false, &on_b).is_empty());
    assert_eq!(
        b.at(25, &b_alone, false, &on_b).len(),
        1,
        "b waits 15 s more"
    );
    // With a QDevice, only the quorate side acts, and at once.
    let mut b = T::new("b");
    let q = Quorum::Quorate(votes(&["b"], true, true));
    b.at(0, &q, false, &on_b);
    assert_eq!(b.at(10, &q, false, &on_b).len(), 1);
}

#[test]
fn an_unreadable_replica_is_reported_and_never_decided() {
    let mut t = T::new("b");
    let mut j = job("j", FailoverMode::Auto, "a");
    j.primary = Err("pb/vm does not exist".into());
    let bc = Quorum::Quorate(votes(&["b", "c"], false, false));
    let jobs = [j];
    t.at(0, &bc, false, &jobs);
    assert!(t.at(100, &bc, false, &jobs).is_empty());
    assert!(matches!(t.state("j"), JobHa::Unknown { .. }));
}
