//! The level logic against a scripted device (pure logic; the real devices
//! are tested against ipmi_sim and the WS-Management test server).

use super::*;
use crate::agent::{BoxFuture, Check};
use std::sync::Mutex;

/// A device whose status answers follow a script; records the commands.
#[derive(Debug)]
struct Scripted {
    states: Mutex<Vec<Result<PowerState, &'static str>>>,
    sent: Mutex<Vec<PowerAction>>,
    refuse: bool,
}

impl Scripted {
    fn new(states: Vec<Result<PowerState, &'static str>>) -> Self {
        Scripted {
            states: Mutex::new(states),
            sent: Mutex::new(Vec::new()),
            refuse: false,
        }
    }
}

impl FenceAgent for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn device(&self) -> String {
        "dev".into()
    }
    fn status(&self) -> BoxFuture<'_, Result<PowerState, FenceError>> {
        Box::pin(async move {
            let mut s = self.states.lock().unwrap();
            let next = if s.len() > 1 { s.remove(0) } else { s[0] };
            next.map_err(|m| FenceError::Timeout {
                device: format!("dev ({m})"),
                waited: Duration::from_secs(1),
            })
        })
    }
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), FenceError>> {
        Box::pin(async move {
            self.sent.lock().unwrap().push(action);
            if self.refuse {
                return Err(FenceError::Device {
                    device: "dev".into(),
                    message: "refused".into(),
                });
            }
            Ok(())
        })
    }
    fn check(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async { Vec::new() })
    }
}

use PowerState::{Off, On};

#[tokio::test(start_paused = true)]
async fn already_off_sends_nothing() {
    let d = Scripted::new(vec![Ok(Off)]);
    let r = power_off_confirmed(&d, DEFAULT_POWER_TIMEOUT, DEFAULT_POLL).await;
    assert_eq!(r.unwrap(), FenceOutcome::AlreadyOff);
    assert!(d.sent.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn off_is_confirmed_by_polling_through_errors() {
    let d = Scripted::new(vec![Ok(On), Ok(On), Err("lost"), Ok(On), Ok(Off)]);
    let r = power_off_confirmed(&d, DEFAULT_POWER_TIMEOUT, DEFAULT_POLL).await;
    assert_eq!(r.unwrap(), FenceOutcome::PoweredOff);
    assert_eq!(*d.sent.lock().unwrap(), vec![PowerAction::Off]);
}

#[tokio::test(start_paused = true)]
async fn a_device_that_keeps_reporting_on_is_a_failure() {
    let d = Scripted::new(vec![Ok(On)]);
    let err = power_off_confirmed(&d, Duration::from_secs(20), DEFAULT_POLL)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FenceError::PowerTimeout { state: On, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("power still on"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn unknown_is_never_off() {
    let d = Scripted::new(vec![Ok(On), Ok(PowerState::Unknown)]);
    let err = power_off_confirmed(&d, Duration::from_secs(5), DEFAULT_POLL)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        FenceError::PowerTimeout {
            state: PowerState::Unknown,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn reboot_of_an_off_node_only_powers_on() {
    let d = Scripted::new(vec![Ok(Off), Ok(On)]);
    reboot_confirmed(&d, DEFAULT_POWER_TIMEOUT, DEFAULT_POLL)
        .await
        .unwrap();
    assert_eq!(*d.sent.lock().unwrap(), vec![PowerAction::On]);
}

#[tokio::test(start_paused = true)]
async fn levels_are_tried_in_order_until_one_confirms() {
    let mut bad = Scripted::new(vec![Ok(On)]);
    bad.refuse = true;
    let levels = vec![
        Level::new(Box::new(bad)),
        Level::new(Box::new(Scripted::new(vec![Ok(On), Ok(Off)]))),
        Level::new(Box::new(Scripted::new(vec![Ok(On)]))),
    ];
    let report = fence_node("a", &levels).await;
    assert!(report.is_fenced());
    assert_eq!(report.attempts.len(), 2, "the third level is not tried");
    assert_eq!(report.attempts[0].error_kind, Some("device"));
    assert_eq!(report.confirmed().unwrap().level, 2);
}

#[tokio::test(start_paused = true)]
async fn no_level_confirming_means_not_fenced() {
    let levels = vec![Level::new(Box::new(Scripted::new(vec![Err("down")])))];
    let report = fence_node("a", &levels).await;
    assert!(!report.is_fenced());
    assert!(!fence_node("a", &[]).await.is_fenced());
}
