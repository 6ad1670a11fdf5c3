//! The `[[nodes.NAME.fence]]` tables of tandem's config: one table per
//! level, tagged by `kind`.
//!
//! ```toml
//! [[nodes.oracle.fence]]
//! kind = "ipmi"
//! host = "10.0.0.101"
//! username = "admin"
//! password_file = "/etc/tandem/oracle.ipmi"
//!
//! [[nodes.oracle.fence]]
//! kind = "watchdog"
//! timeout = "60s"
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::FenceError;
use crate::level::{Level, DEFAULT_POLL, DEFAULT_POWER_TIMEOUT};
use crate::quorum::QuorumSource;
use crate::{amt, ipmi, watchdog};

/// One fence level as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LevelConfig {
    /// IPMI v2.0 over LAN.
    Ipmi(ipmi::IpmiConfig),
    /// Intel AMT (WS-Management).
    Amt(amt::AmtConfig),
    /// The dead node's own watchdog: wait out its timeout.
    Watchdog(watchdog::WatchdogLevelConfig),
}

/// What building a level may need from the rest of tandem.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The node the levels fence.
    pub node: String,
    /// Where this node reads corosync's membership (for watchdog levels;
    /// `None` with `[quorum] mode = "off"`).
    pub quorum: Option<Arc<dyn QuorumSource>>,
}

impl LevelConfig {
    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        match self {
            LevelConfig::Ipmi(_) => "ipmi",
            LevelConfig::Amt(_) => "amt",
            LevelConfig::Watchdog(_) => "watchdog",
        }
    }

    /// The configured power timeout, or the default. A watchdog level's is
    /// its `timeout + margin` plus a few seconds, so polling sees it off.
    pub fn power_timeout(&self) -> Duration {
        let t = match self {
            LevelConfig::Ipmi(c) => c.power_timeout,
            LevelConfig::Amt(c) => c.power_timeout,
            LevelConfig::Watchdog(c) => return c.power_timeout(),
        };
        t.map(|d| d.0).unwrap_or(DEFAULT_POWER_TIMEOUT)
    }

    /// Builds the level: loads credentials (a missing or world-readable
    /// password file is an error here) and creates the agent. `what`
    /// names the level in errors, e.g. "node oracle, fence level 1".
    pub fn build(&self, what: &str, ctx: &BuildContext) -> Result<Level, FenceError> {
        let agent: Box<dyn crate::FenceAgent> = match self {
            LevelConfig::Ipmi(c) => Box::new(c.agent(what)?),
            LevelConfig::Amt(c) => Box::new(c.agent(what)?),
            LevelConfig::Watchdog(c) => Box::new(
                c.agent(&ctx.node, ctx.quorum.clone())
                    .map_err(|e| FenceError::Config(format!("{what}: {e}")))?,
            ),
        };
        Ok(Level {
            agent,
            power_timeout: self.power_timeout(),
            poll: match self {
                LevelConfig::Watchdog(_) => watchdog::level::POLL,
                _ => DEFAULT_POLL,
            },
        })
    }
}

/// A duration written the human way in the config ("20s", "1m 30s").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Node {
        fence: Vec<LevelConfig>,
    }

    #[test]
    fn levels_parse_by_kind() {
        let n: Node = toml::from_str(
            r#"
            [[fence]]
            kind = "ipmi"
            host = "10.0.0.101"
            username = "admin"
            password_env = "PW"
            power_timeout = "5s"
            [[fence]]
            kind = "watchdog"
            "#,
        )
        .unwrap();
        assert_eq!(n.fence.len(), 2);
        assert_eq!(n.fence[0].kind(), "ipmi");
        assert_eq!(n.fence[0].power_timeout(), Duration::from_secs(5));
        assert_eq!(n.fence[1].kind(), "watchdog");
    }

    #[test]
    fn unknown_kind_and_unknown_keys_are_errors() {
        let e = toml::from_str::<Node>("[[fence]]\nkind = \"ilo\"\n").unwrap_err();
        assert!(e.to_string().contains("ilo"), "{e}");
        let e = toml::from_str::<Node>(
            "[[fence]]\nkind = \"ipmi\"\nhost = \"h\"\nusername = \"u\"\npasword_file = \"/x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("pasword_file"), "{e}");
        let e = toml::from_str::<Node>(
            "[[fence]]\nkind = \"ipmi\"\nhost = \"h\"\nusername = \"u\"\npower_timeout = \"soon\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }
}
