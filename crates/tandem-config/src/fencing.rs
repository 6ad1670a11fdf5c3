//! A node's fence levels, from its `[[nodes.NAME.fence]]` tables.

use std::sync::Arc;

use tandem_fence::config::BuildContext;
use tandem_fence::level::{fence_node, Level};
use tandem_fence::quorum::{QuorumMode, QuorumSource};
use tandem_fence::{BoxFuture, FenceReport};
use tandem_ha::Fencer;

use crate::{Config, ConfigError};

/// Where fence levels read corosync's membership ([`QuorumConfig::source`]:
/// the native backend by default): nowhere with `[quorum] mode = "off"`.
///
/// [`QuorumConfig::source`]: tandem_fence::quorum::QuorumConfig::source
pub fn quorum_source(cfg: &Config) -> Option<Arc<dyn QuorumSource>> {
    (cfg.quorum.mode != QuorumMode::Off).then(|| cfg.quorum.source())
}

/// Builds a node's levels from the config (loads credentials).
pub fn levels(cfg: &Config, node: &str) -> Result<Vec<Level>, ConfigError> {
    let n = cfg.node(node)?;
    if n.fence.is_empty() {
        return Err(ConfigError::Fence {
            path: cfg.path.clone(),
            msg: format!("node {node:?} has no fence levels; add [[nodes.{node}.fence]] tables"),
        });
    }
    let ctx = BuildContext {
        node: node.to_string(),
        quorum: quorum_source(cfg),
    };
    n.fence
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.build(
                &format!("nodes.{node}.fence[{}] ({})", i + 1, l.kind()),
                &ctx,
            )
            .map_err(|e| ConfigError::Fence {
                path: cfg.path.clone(),
                msg: e.to_string(),
            })
        })
        .collect()
}

/// The engines' [`Fencer`]: a node's configured levels, tried in order.
pub struct ConfigFencer<'a>(pub &'a Config);

impl Fencer for ConfigFencer<'_> {
    fn fence<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<FenceReport, String>> {
        Box::pin(async move {
            let lv = levels(self.0, node).map_err(|e| e.to_string())?;
            Ok(fence_node(node, &lv).await)
        })
    }
}
