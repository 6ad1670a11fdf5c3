//! The `kind = "watchdog"` fence level against a scripted corosync
//! membership, on a paused clock: off only after timeout + margin of
//! continuous absence from this node's quorate partition.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_fence::config::{BuildContext, LevelConfig};
use tandem_fence::level::{power_off_confirmed, FenceOutcome};
use tandem_fence::quorum::{Quorum, QuorumError, QuorumSource, Votes};
use tandem_fence::watchdog::level::Seen;
use tandem_fence::watchdog::{WatchdogLevel, WatchdogLevelConfig};
use tandem_fence::{BoxFuture, FenceAgent, FenceError, PowerAction, PowerState};

/// What the scripted corosync answers.
#[derive(Debug, Clone)]
enum Answer {
    Members(Vec<&'static str>),
    /// Quorate by `two_node` (and whether a QDevice votes).
    TwoNode(Vec<&'static str>, bool),
    NotQuorate,
    NoCluster,
    Fails,
}

#[derive(Debug)]
struct Script {
    now: Mutex<Answer>,
    nodelist: Option<Vec<String>>,
}

impl Script {
    fn new(a: Answer) -> Arc<Script> {
        Arc::new(Script {
            now: Mutex::new(a),
            nodelist: Some(vec!["a".into(), "b".into(), "oracle".into()]),
        })
    }
    fn set(&self, a: Answer) {
        *self.now.lock().unwrap() = a;
    }
}

fn votes(members: &[&str]) -> Votes {
    Votes {
        node_id: Some(1),
        nodes: members.len() as u32,
        votes: members.len() as u32,
        expected: 3,
        needed: Some(2),
        members: members.iter().map(|m| m.to_string()).collect(),
        two_node: false,
        qdevice: false,
    }
}

impl QuorumSource for Script {
    fn probe(&self) -> BoxFuture<'_, Result<Quorum, QuorumError>> {
        let a = self.now.lock().unwrap().clone();
        Box::pin(async move {
            match a {
                Answer::Members(m) => Ok(Quorum::Quorate(votes(&m))),
                Answer::TwoNode(m, qdevice) => Ok(Quorum::Quorate(Votes {
                    two_node: true,
                    qdevice,
                    ..votes(&m)
                })),
                Answer::NotQuorate => Ok(Quorum::NotQuorate(votes(&["a"]))),
                Answer::NoCluster => Ok(Quorum::NoCluster {
                    reason: "no corosync.conf".into(),
                }),
                Answer::Fails => Err(QuorumError::Unanswered {
                    tool: "corosync-quorumtool".into(),
                    detail: "Cannot initialize CMAP service".into(),
                }),
            }
        })
    }
    fn nodelist(&self) -> Option<Vec<String>> {
        self.nodelist.clone()
    }
}

const S: fn(u64) -> Duration = Duration::from_secs;

fn level(q: &Arc<Script>) -> WatchdogLevel {
    WatchdogLevel::new(
        "oracle",
        S(60),
        S(10),
        Some(q.clone() as Arc<dyn QuorumSource>),
    )
}

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
}

#[tokio::test(start_paused = true)]
async fn off_only_after_timeout_plus_margin_of_continuous_absence() {
    let q = Script::new(Answer::Members(vec!["a", "b", "oracle"]));
    let l = level(&q);
    assert_eq!(l.status().await.unwrap(), PowerState::On, "present = alive");
    q.set(Answer::Members(vec!["a", "b"]));
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown, "just left");
    advance(S(60)).await;
    assert_eq!(
        l.status().await.unwrap(),
        PowerState::Unknown,
        "timeout alone is not enough"
    );
    advance(S(10) - Duration::from_millis(1)).await;
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    advance(Duration::from_millis(1)).await;
    assert_eq!(l.status().await.unwrap(), PowerState::Off);
    assert_eq!(l.look().await.unwrap(), Seen::AbsentFor(S(70)));
}

#[tokio::test(start_paused = true)]
async fn the_count_restarts_whenever_the_evidence_breaks() {
    let q = Script::new(Answer::Members(vec!["a", "b"]));
    let l = level(&q);
    l.status().await.unwrap();
    advance(S(50)).await;
    // Seen again: it was alive; the count starts over.
    q.set(Answer::Members(vec!["a", "b", "oracle"]));
    assert_eq!(l.status().await.unwrap(), PowerState::On);
    q.set(Answer::Members(vec!["a", "b"]));
    l.status().await.unwrap();
    advance(S(69)).await;
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    // This node lost quorum for a moment: it saw nothing meanwhile.
    q.set(Answer::NotQuorate);
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    q.set(Answer::Members(vec!["a", "b"]));
    advance(S(5)).await;
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    // corosync did not answer: no evidence, and the count starts over.
    q.set(Answer::Fails);
    let e = l.status().await.unwrap_err();
    assert!(matches!(e, FenceError::NoEvidence { .. }), "{e}");
    assert!(e.to_string().contains("CMAP"), "{e}");
    q.set(Answer::Members(vec!["a", "b"]));
    l.status().await.unwrap();
    advance(S(69)).await;
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    advance(S(1)).await;
    assert_eq!(l.status().await.unwrap(), PowerState::Off);
}

#[tokio::test(start_paused = true)]
async fn without_a_membership_it_refuses_and_says_why() {
    // [quorum] mode = "off": no source at all.
    let l = WatchdogLevel::new("oracle", S(1), S(1), None);
    let e = l.status().await.unwrap_err();
    assert!(matches!(e, FenceError::NoEvidence { .. }), "{e}");
    assert!(e.to_string().contains("mode = \"off\""), "{e}");
    // No cluster here.
    let q = Script::new(Answer::NoCluster);
    let e = level(&q).status().await.unwrap_err();
    assert!(e.to_string().contains("no corosync cluster"), "{e}");
    // A name corosync does not know: its absence proves nothing.
    let q = Arc::new(Script {
        now: Mutex::new(Answer::Members(vec!["a", "b"])),
        nodelist: Some(vec!["a".into(), "b".into(), "c".into()]),
    });
    let e = level(&q).status().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("not in corosync's nodelist (a, b, c)"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn two_nodes_without_a_qdevice_prove_nothing_by_absence() {
    // Each half of a cut two-node cluster stays quorate: the other node
    // never resets itself, however long it is gone.
    let q = Script::new(Answer::TwoNode(vec!["a"], false));
    let l = level(&q);
    let e = l.status().await.unwrap_err();
    assert!(matches!(e, FenceError::NoEvidence { .. }), "{e}");
    assert!(e.to_string().contains("two-node cluster"), "{e}");
    advance(S(600)).await;
    assert!(l.status().await.is_err(), "never off, however long");
    // With a QDevice the quorate side's view is evidence again.
    q.set(Answer::TwoNode(vec!["a"], true));
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    advance(S(70)).await;
    assert_eq!(l.status().await.unwrap(), PowerState::Off);
}

#[tokio::test(start_paused = true)]
async fn power_off_confirmed_waits_out_the_absence() {
    let q = Script::new(Answer::Members(vec!["a", "b"]));
    let lvl = short_level(&q);
    let t = tokio::time::Instant::now();
    let r = power_off_confirmed(lvl.agent.as_ref(), lvl.power_timeout, lvl.poll).await;
    assert_eq!(r.unwrap(), FenceOutcome::PoweredOff);
    let waited = t.elapsed();
    assert!(waited >= S(2) && waited < S(4), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_node_that_stays_present_is_never_confirmed_off() {
    let q = Script::new(Answer::Members(vec!["a", "b", "oracle"]));
    let lvl = short_level(&q);
    let e = power_off_confirmed(lvl.agent.as_ref(), lvl.power_timeout, lvl.poll)
        .await
        .unwrap_err();
    assert!(matches!(e, FenceError::PowerTimeout { .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn power_on_is_not_supported_and_check_reports() {
    let q = Script::new(Answer::Members(vec!["a", "b", "oracle"]));
    let l = level(&q);
    assert!(matches!(
        l.power(PowerAction::On).await,
        Err(FenceError::Unsupported { .. })
    ));
    l.power(PowerAction::Off).await.unwrap();
    let c = l.check().await;
    assert!(c.iter().all(|c| c.ok), "{c:?}");
    assert!(c[1].detail.contains("oracle is in the quorate membership"));
    q.set(Answer::Members(vec!["a"]));
    let c = l.check().await;
    assert!(
        c[1].detail.contains("NOT in the quorate membership"),
        "{c:?}"
    );
    q.set(Answer::NotQuorate);
    let c = l.check().await;
    assert!(!c[0].ok, "{c:?}");
    assert!(l.device().contains("oracle"));
}

#[derive(Debug, serde::Deserialize)]
struct Node {
    fence: Vec<LevelConfig>,
}

#[test]
fn config_keys_defaults_and_power_timeout() {
    let n: Node = toml::from_str(
        r#"
        [[fence]]
        kind = "watchdog"
        [[fence]]
        kind = "watchdog"
        timeout = "1s"
        margin = "1s"
        "#,
    )
    .unwrap();
    let LevelConfig::Watchdog(c) = &n.fence[0] else {
        panic!("not a watchdog level")
    };
    assert_eq!(c.timeout.0, S(60));
    assert_eq!(c.margin.0, S(30));
    // The power timeout covers timeout + margin, plus slack for polling.
    assert_eq!(n.fence[0].power_timeout(), S(95));
    assert_eq!(n.fence[1].power_timeout(), S(7));
    let d = WatchdogLevelConfig::default();
    assert_eq!((d.timeout.0, d.margin.0), (S(60), S(30)));

    let e =
        toml::from_str::<Node>("[[fence]]\nkind = \"watchdog\"\ntimout = \"5s\"\n").unwrap_err();
    assert!(e.to_string().contains("timout"), "{e}");
    let e =
        toml::from_str::<Node>("[[fence]]\nkind = \"watchdog\"\nmargin = \"a bit\"\n").unwrap_err();
    assert!(e.to_string().contains("a bit"), "{e}");

    let ctx = BuildContext {
        node: "oracle".into(),
        quorum: None,
    };
    let n: Node = toml::from_str("[[fence]]\nkind = \"watchdog\"\ntimeout = \"0s\"\n").unwrap();
    let e = n.fence[0].build("node x, fence level 1", &ctx).unwrap_err();
    assert!(e.to_string().contains("node x, fence level 1"), "{e}");
}

/// A level of 1 s timeout + 1 s margin, built through the config.
fn short_level(q: &Arc<Script>) -> tandem_fence::Level {
    let n: Node =
        toml::from_str("[[fence]]\nkind = \"watchdog\"\ntimeout = \"1s\"\nmargin = \"1s\"\n")
            .unwrap();
    let ctx = BuildContext {
        node: "oracle".into(),
        quorum: Some(q.clone() as Arc<dyn QuorumSource>),
    };
    n.fence[0]
        .build("node oracle, fence level 1", &ctx)
        .unwrap()
}
