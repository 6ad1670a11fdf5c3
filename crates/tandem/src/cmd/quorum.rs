//! `tandem quorum [--json] [--watch]`: what the quorum source the daemon,
//! `failover` and the watchdog use says now — quorate, the members of
//! this node's partition, votes, `two_node`, a QDevice, and the backend
//! (`native` or `tool`). `--watch` prints one line per change until
//! SIGINT (with the native backend, at corosync's notification).
//!
//! Exit status (one-shot): 0 quorate (or no cluster), 1 not quorate, 3 no
//! answer (this node cannot prove quorum: fail closed), 2 a bad config.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use tandem_fence::quorum::{Quorum, QuorumConfig, QuorumError, QuorumSource};

use crate::outln;

/// One answer, as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// When it was asked (RFC 3339).
    pub time: String,
    /// `native` or `tool`.
    pub backend: &'static str,
    /// `quorate`, `not_quorate`, `no_cluster` or `no_answer`.
    pub state: &'static str,
    /// In the quorate partition.
    pub quorate: bool,
    /// This node's id.
    pub node_id: Option<u32>,
    /// The names of the nodes in this node's partition.
    pub members: Vec<String>,
    /// Votes present.
    pub votes: Option<u32>,
    /// Votes expected.
    pub expected: Option<u32>,
    /// Votes needed.
    pub needed: Option<u32>,
    /// votequorum's `two_node`.
    pub two_node: bool,
    /// A QDevice is registered and alive.
    pub qdevice: bool,
    /// The configured nodes, where known.
    pub nodelist: Option<Vec<String>>,
    /// Why there is no cluster, or why there is no answer.
    pub reason: Option<String>,
}

impl Report {
    fn new(source: &dyn QuorumSource, answer: &Result<Quorum, QuorumError>) -> Report {
        let mut r = Report {
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            backend: source.backend(),
            state: "no_answer",
            quorate: false,
            node_id: None,
            members: Vec::new(),
            votes: None,
            expected: None,
            needed: None,
            two_node: false,
            qdevice: false,
            nodelist: source.nodelist(),
            reason: None,
        };
        match answer {
            Err(e) => r.reason = Some(e.to_string()),
            Ok(Quorum::NoCluster { reason }) => {
                r.state = "no_cluster";
                r.reason = Some(reason.clone());
            }
            Ok(Quorum::Quorate(v) | Quorum::NotQuorate(v)) => {
                r.quorate = matches!(answer, Ok(Quorum::Quorate(_)));
                r.state = if r.quorate { "quorate" } else { "not_quorate" };
                r.node_id = v.node_id;
                r.members = v.members.clone();
                r.votes = Some(v.votes);
                r.expected = Some(v.expected);
                r.needed = v.needed;
                r.two_node = v.two_node;
                r.qdevice = v.qdevice;
            }
        }
        r
    }

    /// The same answer, whenever asked.
    fn same(&self, other: &Report) -> bool {
        let (mut a, mut b) = (self.clone(), other.clone());
        a.time.clear();
        b.time.clear();
        a == b
    }

    fn exit(&self) -> ExitCode {
        match self.state {
            "quorate" | "no_cluster" => ExitCode::SUCCESS,
            "not_quorate" => ExitCode::from(1),
            _ => ExitCode::from(3),
        }
    }

    fn line(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        match self.state {
            "quorate" | "not_quorate" => format!(
                "{} {} members={} votes={}/{} needed={} two_node={} qdevice={} backend={}",
                self.time,
                self.state.replace('_', " "),
                self.members.join(","),
                self.votes.unwrap_or(0),
                self.expected.unwrap_or(0),
                self.needed.map_or("-".into(), |n| n.to_string()),
                yn(self.two_node),
                yn(self.qdevice),
                self.backend
            ),
            _ => format!(
                "{} {}: {} backend={}",
                self.time,
                self.state.replace('_', " "),
                self.reason.as_deref().unwrap_or(""),
                self.backend
            ),
        }
    }

    fn print(&self, json: bool) -> Result<()> {
        if json {
            outln!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        let yn = |b: bool| if b { "yes" } else { "no" };
        outln!("backend:  {}", self.backend);
        match self.state {
            "quorate" | "not_quorate" => {
                outln!(
                    "quorate:  {} ({} of {} expected votes present{})",
                    yn(self.quorate),
                    self.votes.unwrap_or(0),
                    self.expected.unwrap_or(0),
                    self.needed
                        .map_or(String::new(), |n| format!(", {n} needed"))
                );
                outln!(
                    "members:  {}{}",
                    self.members.join(" "),
                    self.node_id
                        .map_or(String::new(), |id| format!(" (this node: id {id})"))
                );
                outln!("two_node: {}", yn(self.two_node));
                outln!("qdevice:  {}", yn(self.qdevice));
            }
            "no_cluster" => outln!(
                "quorate:  no cluster ({})",
                self.reason.as_deref().unwrap_or("")
            ),
            _ => outln!(
                "quorate:  NO ANSWER ({}): this node cannot prove quorum",
                self.reason.as_deref().unwrap_or("")
            ),
        }
        if let Some(n) = &self.nodelist {
            outln!("nodelist: {}", n.join(" "));
        }
        Ok(())
    }
}

/// `tandem quorum [--json] [--watch]`.
pub async fn quorum(path: &Path, json: bool, watch: bool) -> Result<ExitCode> {
    let qc = if path.exists() {
        tandem_config::Config::load(path)?.quorum
    } else {
        eprintln!(
            "tandem: no config at {}: the [quorum] defaults apply",
            path.display()
        );
        QuorumConfig::default()
    };
    let source = qc.source();
    let answer = source.probe().await;
    let mut last = Report::new(&*source, &answer);
    if !watch {
        last.print(json)?;
        if let Err(e) = &answer {
            eprintln!("tandem: {e}: this node cannot prove quorum (fail closed)");
        }
        return Ok(last.exit());
    }
    let print = |r: &Report| -> Result<()> {
        if json {
            outln!("{}", serde_json::to_string(r)?);
        } else {
            outln!("{}", r.line());
        }
        Ok(())
    };
    print(&last)?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            _ = source.changed() => {}
        }
        let answer = source.probe().await;
        let r = Report::new(&*source, &answer);
        if !r.same(&last) {
            print(&r)?;
            last = r;
        }
    }
}
