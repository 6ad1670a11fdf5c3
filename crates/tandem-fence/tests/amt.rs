//! The AMT agent against a strict WS-Management test server on 127.0.0.1
//! (see `support`): real TCP/TLS, real HTTP Digest, real SOAP.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Mode, Options, Server};
use tandem_fence::amt::{AmtAgent, AmtConfig};
use tandem_fence::level::{fence_node, power_off_confirmed, power_on_confirmed, reboot_confirmed};
use tandem_fence::{FenceAgent, FenceError, FenceOutcome, Level, PowerAction, PowerState, Secret};

const PASSWORD: &str = "P@ssw0rd-amt";
const POLL: Duration = Duration::from_millis(50);

fn config(server: &Server, extra: &str) -> AmtConfig {
    let mut s = format!(
        "host = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\n",
        server.addr.port()
    );
    if !extra.contains("timeout") {
        s.push_str("timeout = \"2s\"\n");
    }
    if let Some(fp) = &server.fingerprint {
        s.push_str(&format!("fingerprint = \"{fp}\"\n"));
    }
    s.push_str(extra);
    toml::from_str(&s).unwrap()
}

fn agent_pw(server: &Server, password: &str) -> AmtAgent {
    config(server, "")
        .agent_with_password("node oracle, fence level 1", Secret::new(password))
        .unwrap()
        .with_change_interval(Duration::from_millis(200))
}

fn agent(server: &Server) -> AmtAgent {
    agent_pw(server, PASSWORD)
}

fn assert_clean(server: &Server) {
    assert!(
        server.rejections().is_empty(),
        "server rejected: {:?}",
        server.rejections()
    );
}

fn device(server: &Server) -> String {
    format!("127.0.0.1:{}", server.addr.port())
}

#[tokio::test]
async fn status_maps_power_states_and_reuses_the_digest_nonce() {
    let server = Server::start(Options::default()).await;
    let a = agent(&server);
    assert_eq!(a.kind(), "amt");
    assert_eq!(a.device(), device(&server));
    assert_eq!(a.status().await.unwrap(), PowerState::On);
    server.set_power(8);
    assert_eq!(a.status().await.unwrap(), PowerState::Off);
    for other in [3, 4, 6, 7, 9] {
        server.set_power(other);
        assert_eq!(
            a.status().await.unwrap(),
            PowerState::Unknown,
            "PowerState {other}"
        );
    }
    assert_clean(&server);
    // One 401 challenge, then every call answered with the kept nonce and
    // a growing nonce count (the server refuses a replayed count).
    assert_eq!(server.http_requests(), 8);
    assert_eq!(server.auth_failures(), 0);
    assert_eq!(server.log().len(), 7);
}

#[tokio::test]
async fn a_stale_nonce_is_renewed_without_failing() {
    let server = Server::start(Options {
        nonce_uses: Some(2),
        ..Options::default()
    })
    .await;
    let a = agent(&server);
    for _ in 0..5 {
        assert_eq!(a.status().await.unwrap(), PowerState::On);
    }
    assert!(server.stale_answers() >= 2, "{}", server.stale_answers());
    assert_eq!(server.auth_failures(), 0);
    assert_eq!(server.log().len(), 5);
    assert_clean(&server);
}

#[tokio::test]
async fn power_off_is_confirmed_and_changes_the_device_state() {
    let server = Server::start(Options::default()).await;
    let a = agent(&server);
    let out = power_off_confirmed(&a, Duration::from_secs(5), POLL)
        .await
        .unwrap();
    assert_eq!(out, FenceOutcome::PoweredOff);
    assert_eq!(server.power(), 8);
    let changes = server.changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].power_state, Some(8));
    // Already off: nothing is sent.
    let out = power_off_confirmed(&a, Duration::from_secs(5), POLL)
        .await
        .unwrap();
    assert_eq!(out, FenceOutcome::AlreadyOff);
    assert_eq!(server.changes().len(), 1);
    assert_clean(&server);
}

#[tokio::test]
async fn power_on_is_confirmed() {
    let server = Server::start(Options {
        power: 8,
        ..Options::default()
    })
    .await;
    let a = agent(&server);
    assert!(power_on_confirmed(&a, Duration::from_secs(5), POLL)
        .await
        .unwrap());
    assert_eq!(server.power(), 2);
    assert!(!power_on_confirmed(&a, Duration::from_secs(5), POLL)
        .await
        .unwrap());
    let states: Vec<_> = server.changes().iter().map(|c| c.power_state).collect();
    assert_eq!(states, vec![Some(2)]);
    assert_clean(&server);
}

#[tokio::test]
async fn reboot_is_off_then_on_spaced_by_the_change_interval() {
    let server = Server::start(Options::default()).await;
    let interval = Duration::from_millis(600);
    let a = agent(&server).with_change_interval(interval);
    let out = reboot_confirmed(&a, Duration::from_secs(5), POLL)
        .await
        .unwrap();
    assert_eq!(out, FenceOutcome::PoweredOff);
    assert_eq!(server.power(), 2);
    let changes = server.changes();
    let states: Vec<_> = changes.iter().map(|c| c.power_state).collect();
    assert_eq!(states, vec![Some(8), Some(2)]);
    let gap = changes[1].at - changes[0].at;
    assert!(gap >= interval, "server saw the changes {gap:?} apart");
    assert_clean(&server);
}

#[tokio::test]
async fn back_to_back_power_changes_are_spaced() {
    let server = Server::start(Options::default()).await;
    let interval = Duration::from_millis(400);
    let a = agent(&server).with_change_interval(interval);
    a.power(PowerAction::Off).await.unwrap();
    a.power(PowerAction::On).await.unwrap();
    a.power(PowerAction::Off).await.unwrap();
    let changes = server.changes();
    assert_eq!(changes.len(), 3);
    for w in changes.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= interval, "server saw changes {gap:?} apart");
    }
    assert_eq!(server.power(), 8);
    assert_clean(&server);
}

#[tokio::test]
async fn the_default_interval_is_ten_seconds() {
    let server = Server::start(Options::default()).await;
    let a = config(&server, "")
        .agent_with_password("x", Secret::new(PASSWORD))
        .unwrap();
    assert_eq!(a.change_interval(), Duration::from_secs(10));
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_and_never_shown() {
    let server = Server::start(Options::default()).await;
    let wrong = "Wr0ng-Secret-xyz";
    let a = agent_pw(&server, wrong);
    let err = a.status().await.unwrap_err();
    assert!(matches!(err, FenceError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&device(&server)), "{msg}");
    assert!(msg.contains("admin"), "{msg}");
    for text in [msg, format!("{err:?}"), format!("{a:?}")] {
        assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    }
    // One challenge, one refused answer: no retry loop.
    assert_eq!(server.http_requests(), 2);
    assert_eq!(server.auth_failures(), 1);
    assert!(server.log().is_empty());
    // A power command is refused the same way and changes nothing.
    let err = a.power(PowerAction::Off).await.unwrap_err();
    assert!(matches!(err, FenceError::Auth { .. }), "{err:?}");
    assert_eq!(server.power(), 2);
    // Through a level: not fenced, reported as an auth failure.
    let report = fence_node("oracle", &[Level::new(Box::new(a))]).await;
    assert!(!report.is_fenced());
    assert_eq!(report.attempts[0].error_kind, Some("auth"));
    assert_clean(&server);
}

#[tokio::test]
async fn the_password_never_travels_or_shows() {
    let server = Server::start(Options::default()).await;
    let a = agent(&server);
    assert!(!format!("{a:?}").contains(PASSWORD));
    a.power(PowerAction::Off).await.unwrap();
    let checks = a.check().await;
    for c in &checks {
        assert!(
            !c.detail.contains(PASSWORD) && !c.name.contains(PASSWORD),
            "{c:?}"
        );
    }
    for raw in server.raw_requests() {
        let raw = String::from_utf8_lossy(&raw);
        assert!(!raw.contains(PASSWORD), "password sent in clear: {raw}");
    }
    assert!(server
        .authorizations()
        .iter()
        .all(|h| h.starts_with("Digest ")));
}

#[tokio::test]
async fn unreachable_port_names_the_device() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg: AmtConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nusername = \"admin\"\ntimeout = \"2s\"\n"
    ))
    .unwrap();
    let a = cfg.agent_with_password("x", Secret::new(PASSWORD)).unwrap();
    let err = a.status().await.unwrap_err();
    assert!(
        matches!(
            err,
            FenceError::Unreachable { .. } | FenceError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!("127.0.0.1:{port}: ")),
        "{err}"
    );
    let checks = a.check().await;
    assert_eq!(checks.len(), 4);
    assert!(!checks[0].ok && checks[0].name == format!("reach 127.0.0.1:{port}"));
    assert!(checks[1..]
        .iter()
        .all(|c| !c.ok && c.detail.starts_with("not tried")));
}

#[tokio::test]
async fn a_silent_device_times_out() {
    let server = Server::start(Options {
        mode: Mode::Silent,
        ..Options::default()
    })
    .await;
    let a = config(&server, "timeout = \"300ms\"\n")
        .agent_with_password("x", Secret::new(PASSWORD))
        .unwrap();
    let t = Instant::now();
    let err = a.status().await.unwrap_err();
    // The behaviour under test is the timeout itself.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    match &err {
        FenceError::Timeout { device: d, waited } => {
            assert_eq!(d, &device(&server));
            assert_eq!(*waited, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    let err = a.power(PowerAction::Off).await.unwrap_err();
    assert!(matches!(err, FenceError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_lying_device_is_never_taken_for_fenced() {
    let server = Server::start(Options {
        mode: Mode::Lying,
        ..Options::default()
    })
    .await;
    let a = agent(&server);
    let err = power_off_confirmed(&a, Duration::from_millis(800), POLL)
        .await
        .unwrap_err();
    match &err {
        FenceError::PowerTimeout { state, action, .. } => {
            assert_eq!(*state, PowerState::On);
            assert_eq!(*action, PowerAction::Off);
        }
        other => panic!("expected PowerTimeout, got {other:?}"),
    }
    assert_eq!(server.changes().len(), 1, "the off request was sent once");
    let level = Level {
        agent: Box::new(a),
        power_timeout: Duration::from_millis(800),
        poll: POLL,
    };
    let report = fence_node("oracle", &[level]).await;
    assert!(!report.is_fenced());
    assert_eq!(report.attempts[0].error_kind, Some("power_timeout"));
    assert_clean(&server);
}

#[tokio::test]
async fn a_nonzero_return_value_is_a_device_error_in_words() {
    let server = Server::start(Options {
        mode: Mode::ReturnValue(4097),
        ..Options::default()
    })
    .await;
    let a = agent(&server);
    let err = a.power(PowerAction::Off).await.unwrap_err();
    assert!(matches!(err, FenceError::Device { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&device(&server)), "{msg}");
    assert!(
        msg.contains("ReturnValue 4097") && msg.contains("invalid state transition"),
        "{msg}"
    );
    let err = power_off_confirmed(&a, Duration::from_secs(2), POLL)
        .await
        .unwrap_err();
    assert!(matches!(err, FenceError::Device { .. }), "{err:?}");
    assert_eq!(server.power(), 2);
    assert_clean(&server);
}

#[tokio::test]
async fn check_runs_the_whole_checklist_without_touching_power() {
    let server = Server::start(Options::default()).await;
    let a = agent(&server);
    let checks = a.check().await;
    let names: Vec<_> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            format!("reach {}", device(&server)).as_str(),
            "authenticate as admin",
            "privilege to switch power",
            "read power state",
        ]
    );
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert!(
        checks[1].detail.contains(support::REALM),
        "{}",
        checks[1].detail
    );
    assert!(
        checks[2]
            .detail
            .contains("Intel(r) AMT Power Management Service"),
        "{}",
        checks[2].detail
    );
    assert!(
        checks[2].detail.contains("8 (Off - Soft)"),
        "{}",
        checks[2].detail
    );
    assert!(
        checks[3].detail.starts_with("on (PowerState 2"),
        "{}",
        checks[3].detail
    );
    assert!(server.changes().is_empty());
    assert_eq!(server.power(), 2);
    assert_clean(&server);
}

#[tokio::test]
async fn check_reports_a_wrong_password_and_a_missing_realm() {
    let server = Server::start(Options::default()).await;
    let checks = agent_pw(&server, "nope-nope").check().await;
    assert!(checks[0].ok, "{checks:#?}");
    assert!(
        !checks[1].ok && checks[1].detail.contains("authentication failed"),
        "{checks:#?}"
    );
    assert!(checks[2..].iter().all(|c| !c.ok));

    let server = Server::start(Options {
        mode: Mode::NoPowerRealm,
        ..Options::default()
    })
    .await;
    let a = agent(&server);
    let checks = a.check().await;
    assert!(checks[0].ok && checks[1].ok, "{checks:#?}");
    assert!(!checks[2].ok, "{checks:#?}");
    assert!(
        checks[2].detail.contains("AccessDenied"),
        "{}",
        checks[2].detail
    );
    assert!(checks[2].detail.contains("realms"), "{}", checks[2].detail);
    let err = a.power(PowerAction::Off).await.unwrap_err();
    assert!(matches!(err, FenceError::Privilege { .. }), "{err:?}");
    assert!(err.to_string().contains("not authorized"), "{err}");
    assert_eq!(server.power(), 2);
}

#[tokio::test]
async fn tls_with_the_pinned_fingerprint_works() {
    let server = Server::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let a = agent(&server);
    assert_eq!(a.status().await.unwrap(), PowerState::On);
    let out = power_off_confirmed(&a, Duration::from_secs(5), POLL)
        .await
        .unwrap();
    assert_eq!(out, FenceOutcome::PoweredOff);
    assert_eq!(server.power(), 8);
    let checks = a.check().await;
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert!(
        checks[0].detail.contains("pinned fingerprint"),
        "{}",
        checks[0].detail
    );
    assert_clean(&server);
}

#[tokio::test]
async fn tls_with_a_wrong_pin_is_refused_before_any_credentials() {
    let server = Server::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let wrong = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";
    let cfg: AmtConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\nfingerprint = \"{wrong}\"\n",
        server.addr.port()
    ))
    .unwrap();
    let a = cfg.agent_with_password("x", Secret::new(PASSWORD)).unwrap();
    let err = a.status().await.unwrap_err();
    assert!(matches!(err, FenceError::Protocol { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("does not match the pinned"), "{msg}");
    assert!(
        msg.contains(server.fingerprint.as_deref().unwrap()),
        "{msg}"
    );
    let err = a.power(PowerAction::Off).await.unwrap_err();
    assert!(matches!(err, FenceError::Protocol { .. }), "{err:?}");
    assert!(!a.check().await[0].ok);
    assert_eq!(
        server.http_requests(),
        0,
        "no HTTP request may pass a wrong pin"
    );
    assert!(server.authorizations().is_empty());
    assert_eq!(server.power(), 2);
}

#[tokio::test]
async fn tls_without_a_pin_is_a_config_error() {
    let cfg: AmtConfig = toml::from_str(
        "host = \"10.9.9.9\"\nport = 16993\nusername = \"admin\"\npassword_env = \"X\"\n",
    )
    .unwrap();
    let err = cfg
        .agent_with_password("node a, fence level 2", Secret::new("p"))
        .unwrap_err();
    assert!(matches!(err, FenceError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("fingerprint"), "{err}");
}

#[tokio::test]
async fn a_level_built_from_the_config_fences_through_amt() {
    use std::os::unix::fs::PermissionsExt;
    use tandem_fence::config::{BuildContext, LevelConfig};

    let server = Server::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("amt.pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg: LevelConfig = toml::from_str(&format!(
        "kind = \"amt\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\n\
         password_file = \"{}\"\npower_timeout = \"5s\"\ntimeout = \"2s\"\n",
        server.addr.port(),
        pw.display()
    ))
    .unwrap();
    let ctx = BuildContext {
        node: "oracle".into(),
        quorum: None,
    };
    let mut level = cfg.build("node oracle, fence level 1", &ctx).unwrap();
    level.poll = POLL;
    assert_eq!(level.agent.kind(), "amt");
    assert_eq!(level.power_timeout, Duration::from_secs(5));
    let report = fence_node("oracle", &[level]).await;
    assert!(report.is_fenced(), "{report:?}");
    assert_eq!(report.attempts[0].outcome, Some(FenceOutcome::PoweredOff));
    assert_eq!(server.power(), 8);
    assert_clean(&server);
}
