//! tandem's fence agents against real BMCs and AMT machines, named by the
//! environment; each test passes with a printed "skipped" note when its
//! variable is unset, so CI runs (and skips) them.
//!
//! ```text
//! TANDEM_HW_IPMI="host[:port],user,password_file[,cipher_suite]"
//! TANDEM_HW_AMT="host[:port],user,password_file[,fingerprint]"
//! TANDEM_HW_POWER_CYCLE=1        also power the machine off and on again
//! TANDEM_HW_POWER_TIMEOUT=60s    how long the device has to confirm (default 20s)
//! ```
//!
//! Non-destructive by default: the agent's commissioning checklist (every
//! check must pass) and a power status read. Only with
//! `TANDEM_HW_POWER_CYCLE=1` the drill: power off, confirmed off, power on,
//! confirmed on, through `tandem_fence::level` as `tandem fence` does it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tandem_fence::level::{
    power_off_confirmed, power_on_confirmed, DEFAULT_POLL, DEFAULT_POWER_TIMEOUT,
};
use tandem_fence::{FenceAgent, FenceOutcome, PowerState};

/// One device, as named by a `TANDEM_HW_*` variable.
#[derive(Debug, PartialEq, Eq)]
struct Device {
    host: String,
    port: Option<u16>,
    user: String,
    password_file: PathBuf,
    /// IPMI: the cipher suite; AMT: the TLS certificate fingerprint.
    extra: Option<String>,
}

/// Parses `host[:port],user,password_file[,extra]`; `[v6addr]:port` for
/// IPv6 with a port.
fn parse_device(var: &str, s: &str) -> Result<Device, String> {
    let bad = |why: &str| {
        format!("{var}={s:?}: {why}; the format is \"host[:port],user,password_file[,...]\"")
    };
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if !(3..=4).contains(&parts.len()) {
        return Err(bad("expected 3 or 4 comma-separated fields"));
    }
    let (host, port) = split_host_port(parts[0]).map_err(|e| bad(&e))?;
    if host.is_empty() || parts[1].is_empty() || parts[2].is_empty() {
        return Err(bad("host, user and password_file must not be empty"));
    }
    Ok(Device {
        host,
        port,
        user: parts[1].to_owned(),
        password_file: PathBuf::from(parts[2]),
        extra: parts
            .get(3)
            .filter(|e| !e.is_empty())
            .map(|e| (*e).to_owned()),
    })
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map(Some)
            .map_err(|_| format!("port {p:?} is not a number"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: no closing ']'"))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_owned(), port(p)?)),
            None if after.is_empty() => Ok((host.to_owned(), None)),
            None => Err(format!("{s:?}: unexpected {after:?} after ']'")),
        };
    }
    match s.split_once(':') {
        // One colon: host:port. More: a bare IPv6 address without a port.
        Some((h, p)) if !p.contains(':') => Ok((h.to_owned(), port(p)?)),
        _ => Ok((s.to_owned(), None)),
    }
}

/// The device named by `var`, or `None` (and a printed note) when unset.
fn device(var: &str, what: &str) -> Option<Device> {
    match std::env::var(var) {
        Ok(s) if !s.trim().is_empty() => {
            Some(parse_device(var, &s).unwrap_or_else(|e| panic!("{e}")))
        }
        _ => {
            println!(
                "skipped: set {var}=\"host[:port],user,password_file[,{what}]\" to test a real device \
                 (see hw-tests/README.md, \"Real BMCs and AMT machines\")"
            );
            None
        }
    }
}

fn power_timeout() -> Duration {
    match std::env::var("TANDEM_HW_POWER_TIMEOUT") {
        Ok(s) => humantime_secs(&s)
            .unwrap_or_else(|| panic!("TANDEM_HW_POWER_TIMEOUT={s:?}: use e.g. \"60s\"")),
        Err(_) => DEFAULT_POWER_TIMEOUT,
    }
}

/// `"60s"` or `"60"` (seconds).
fn humantime_secs(s: &str) -> Option<Duration> {
    let s = s.trim();
    s.strip_suffix('s')
        .unwrap_or(s)
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The one body every device kind runs: checklist, status, and the drill
/// when asked for.
fn exercise(agent: &dyn FenceAgent) {
    let rt = runtime();
    let name = format!("{} {}", agent.kind(), agent.device());

    let checks = rt.block_on(agent.check());
    for c in &checks {
        println!(
            "{name}: [{}] {:<34} {:<60} {:>8.1} ms",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail,
            c.elapsed.as_secs_f64() * 1000.0
        );
    }
    assert!(!checks.is_empty(), "{name}: an empty checklist");
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
    assert!(failed.is_empty(), "{name}: failed checks: {failed:#?}");

    let t = Instant::now();
    let state = rt
        .block_on(agent.status())
        .unwrap_or_else(|e| panic!("{name}: status: {e}"));
    println!("{name}: power is {state} ({:.1?})", t.elapsed());
    assert_ne!(
        state,
        PowerState::Unknown,
        "{name}: the device reports neither on nor off"
    );

    if std::env::var("TANDEM_HW_POWER_CYCLE").as_deref() != Ok("1") {
        println!(
            "{name}: checklist and status only; TANDEM_HW_POWER_CYCLE=1 also powers it off and on"
        );
        return;
    }
    let timeout = power_timeout();
    println!("{name}: TANDEM_HW_POWER_CYCLE=1: power off, confirm, power on, confirm");
    let t = Instant::now();
    let off = rt
        .block_on(power_off_confirmed(agent, timeout, DEFAULT_POLL))
        .unwrap_or_else(|e| panic!("{name}: power off, confirmed off: {e}"));
    println!("{name}: {off:?} in {:.1?}", t.elapsed());
    if state == PowerState::On {
        assert_eq!(off, FenceOutcome::PoweredOff, "{name}");
    }
    let now = rt.block_on(agent.status()).expect("status after off");
    assert_eq!(now, PowerState::Off, "{name}: off is confirmed");

    let t = Instant::now();
    let switched = rt
        .block_on(power_on_confirmed(agent, timeout, DEFAULT_POLL))
        .unwrap_or_else(|e| panic!("{name}: power on, confirmed on: {e}"));
    assert!(switched, "{name}: it was off, so power on was sent");
    println!("{name}: on again in {:.1?}", t.elapsed());
    let now = rt.block_on(agent.status()).expect("status after on");
    assert_eq!(now, PowerState::On, "{name}: on is confirmed");
}

#[test]
fn real_ipmi_bmc() {
    let Some(d) = device("TANDEM_HW_IPMI", "cipher_suite") else {
        return;
    };
    let suite = d.extra.as_deref().map(|s| {
        s.parse::<u8>()
            .unwrap_or_else(|_| panic!("TANDEM_HW_IPMI: cipher_suite {s:?} is not a number"))
    });
    let config: tandem_fence::ipmi::IpmiConfig = serde_json::from_value(serde_json::json!({
        "host": d.host,
        "port": d.port,
        "username": d.user,
        "password_file": d.password_file,
        "cipher_suite": suite,
    }))
    .expect("IPMI config");
    let agent = config
        .agent("TANDEM_HW_IPMI")
        .unwrap_or_else(|e| panic!("{e}"));
    exercise(&agent);
}

#[test]
fn real_amt_machine() {
    let Some(d) = device("TANDEM_HW_AMT", "fingerprint") else {
        return;
    };
    // A fingerprint turns TLS on (port 16993); without one, plain HTTP
    // on 16992.
    let config: tandem_fence::amt::AmtConfig = serde_json::from_value(serde_json::json!({
        "host": d.host,
        "port": d.port,
        "username": d.user,
        "password_file": d.password_file,
        "fingerprint": d.extra,
    }))
    .expect("AMT config");
    let agent = config
        .agent("TANDEM_HW_AMT")
        .unwrap_or_else(|e| panic!("{e}"));
    exercise(&agent);
}

#[test]
fn the_device_variables_parse() {
    let d = parse_device("V", "10.0.0.101:6230,admin,/etc/tandem/b.ipmi,17").unwrap();
    assert_eq!(
        d,
        Device {
            host: "10.0.0.101".into(),
            port: Some(6230),
            user: "admin".into(),
            password_file: "/etc/tandem/b.ipmi".into(),
            extra: Some("17".into()),
        }
    );
    let d = parse_device("V", "bmc.lan,admin,/p").unwrap();
    assert_eq!((d.host.as_str(), d.port, d.extra), ("bmc.lan", None, None));
    let d = parse_device("V", "[fd00::1]:16993,admin,/p,AB:CD:EF").unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.extra.as_deref()),
        ("fd00::1", Some(16993), Some("AB:CD:EF"))
    );
    assert_eq!(parse_device("V", "fd00::1,a,/p").unwrap().host, "fd00::1");
    for bad in ["h,u", "h:x,u,/p", ",u,/p", "h,u,/p,4,5", "[h:1,u,/p"] {
        let e = parse_device("TANDEM_HW_IPMI", bad).unwrap_err();
        assert!(e.contains("TANDEM_HW_IPMI") && e.contains("format"), "{e}");
    }
    assert_eq!(humantime_secs("60s"), Some(Duration::from_secs(60)));
    assert_eq!(humantime_secs("5"), Some(Duration::from_secs(5)));
    assert_eq!(humantime_secs("soon"), None);
}
