//! The `kind = "watchdog"` fence level against a Heartbeat double.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tandem_fence::config::{BuildContext, LevelConfig};
use tandem_fence::level::{power_off_confirmed, FenceOutcome, DEFAULT_POLL};
use tandem_fence::watchdog::{Heartbeat, WatchdogLevel, WatchdogLevelConfig};
use tandem_fence::{FenceAgent, FenceError, PowerAction, PowerState};

/// A heartbeat whose last_seen the test sets.
#[derive(Debug, Default)]
struct Seen(Mutex<Option<SystemTime>>);

impl Seen {
    fn at(t: Option<SystemTime>) -> Arc<Seen> {
        Arc::new(Seen(Mutex::new(t)))
    }
    fn set(&self, t: Option<SystemTime>) {
        *self.0.lock().unwrap() = t;
    }
}

impl Heartbeat for Seen {
    fn last_seen(&self) -> Option<SystemTime> {
        *self.0.lock().unwrap()
    }
}

const S: fn(u64) -> Duration = Duration::from_secs;

fn level(seen: Arc<Seen>) -> WatchdogLevel {
    WatchdogLevel::new("node oracle, fence level 2", S(60), S(10), seen)
}

#[test]
fn off_only_after_timeout_plus_margin() {
    let now = SystemTime::now();
    let seen = Seen::at(None);
    let l = level(seen.clone());
    // Never heard from: never off.
    assert_eq!(l.state_at(now), PowerState::Unknown);
    // Seen in the future (clock skew): not off, however far.
    seen.set(Some(now + S(3600)));
    assert_eq!(l.state_at(now), PowerState::Unknown);
    seen.set(Some(now + Duration::from_millis(1)));
    assert_eq!(l.state_at(now), PowerState::Unknown);
    // Silent, but not long enough.
    seen.set(Some(now));
    assert_eq!(l.state_at(now), PowerState::Unknown);
    seen.set(Some(now - S(60)));
    assert_eq!(
        l.state_at(now),
        PowerState::Unknown,
        "timeout alone is not enough"
    );
    seen.set(Some(now - S(70) + Duration::from_millis(1)));
    assert_eq!(l.state_at(now), PowerState::Unknown);
    // Exactly timeout + margin, and later.
    seen.set(Some(now - S(70)));
    assert_eq!(l.state_at(now), PowerState::Off);
    seen.set(Some(now - S(86400)));
    assert_eq!(l.state_at(now), PowerState::Off);
}

#[tokio::test]
async fn status_power_check_and_device() {
    let seen = Seen::at(None);
    let l = level(seen.clone());
    assert_eq!(l.kind(), "watchdog");
    let dev = l.device();
    assert!(dev.contains("node oracle"), "{dev}");
    assert!(
        dev.contains("timeout 1m") && dev.contains("margin 10s"),
        "{dev}"
    );

    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    let checks = l.check().await;
    assert!(!checks[0].ok, "{checks:?}");
    assert!(checks[0].detail.contains("never heard from"), "{checks:?}");

    seen.set(Some(SystemTime::now() + S(30)));
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    let checks = l.check().await;
    assert!(
        !checks[0].ok && checks[0].detail.contains("future"),
        "{checks:?}"
    );

    seen.set(Some(SystemTime::now() - S(5)));
    assert_eq!(l.status().await.unwrap(), PowerState::Unknown);
    let checks = l.check().await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(checks[0].detail.contains("last seen 5s"), "{checks:?}");
    assert!(
        checks[1].detail.contains("would count as off in 1m 5s"),
        "{checks:?}"
    );

    seen.set(Some(SystemTime::now() - S(300)));
    assert_eq!(l.status().await.unwrap(), PowerState::Off);
    let checks = l.check().await;
    assert!(checks[1].detail.contains("counts as off now"), "{checks:?}");

    // Power off sends nothing and succeeds; power on is not possible.
    l.power(PowerAction::Off).await.unwrap();
    let e = l.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(e, FenceError::Unsupported { .. }), "{e}");
    assert_eq!(e.kind(), "unsupported");
    assert!(e.to_string().contains("power on"), "{e}");
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
        heartbeat: Seen::at(None),
    };
    let n: Node = toml::from_str("[[fence]]\nkind = \"watchdog\"\ntimeout = \"0s\"\n").unwrap();
    let e = n.fence[0].build("node x, fence level 1", &ctx).unwrap_err();
    assert!(e.to_string().contains("node x, fence level 1"), "{e}");
}

/// A level of 1 s timeout + 1 s margin, built through the config.
fn short_level(seen: Arc<Seen>) -> tandem_fence::Level {
    let n: Node =
        toml::from_str("[[fence]]\nkind = \"watchdog\"\ntimeout = \"1s\"\nmargin = \"1s\"\n")
            .unwrap();
    n.fence[0]
        .build(
            "node oracle, fence level 1",
            &BuildContext {
                node: "oracle".into(),
                heartbeat: seen,
            },
        )
        .unwrap()
}

#[tokio::test]
async fn power_off_confirmed_already_off_when_long_silent() {
    let seen = Seen::at(Some(SystemTime::now() - S(3600)));
    let l = short_level(seen);
    let r = power_off_confirmed(l.agent.as_ref(), l.power_timeout, l.poll).await;
    assert_eq!(r.unwrap(), FenceOutcome::AlreadyOff);
}

#[tokio::test]
async fn power_off_confirmed_waits_out_timeout_and_margin() {
    let start = Instant::now();
    let seen = Seen::at(Some(SystemTime::now()));
    let l = short_level(seen);
    let r = power_off_confirmed(l.agent.as_ref(), l.power_timeout, l.poll).await;
    assert_eq!(r.unwrap(), FenceOutcome::PoweredOff);
    // It cannot have been confirmed before timeout + margin of silence.
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn power_off_fails_while_the_node_keeps_being_heard_from() {
    let seen = Seen::at(Some(SystemTime::now()));
    let l = short_level(seen.clone());
    let refresh = tokio::spawn(async move {
        loop {
            seen.set(Some(SystemTime::now()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let r = power_off_confirmed(l.agent.as_ref(), l.power_timeout, l.poll).await;
    refresh.abort();
    let e = r.unwrap_err();
    assert!(matches!(e, FenceError::PowerTimeout { .. }), "{e}");
    assert_eq!(e.kind(), "power_timeout");
}

#[tokio::test]
async fn never_heard_from_is_never_confirmed_off() {
    let l = short_level(Seen::at(None));
    let r = power_off_confirmed(l.agent.as_ref(), Duration::from_millis(500), DEFAULT_POLL).await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            FenceError::PowerTimeout {
                state: PowerState::Unknown,
                ..
            }
        ),
        "{e}"
    );
}
