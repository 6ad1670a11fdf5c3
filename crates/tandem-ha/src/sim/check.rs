//! The safety invariants, checked against the simulated world after every
//! command and every simulated second (DESIGN.md 4, 5, 9, and "nothing
//! lost"):
//!
//! - no acknowledged write is lost: every write the workload was told is
//!   done is still in some dataset or snapshot on some disk;
//! - at most one active writer per job: at most one powered-on node runs
//!   the job's workload on a writable copy;
//! - at most one writable primary: of the copies carrying the job's newest
//!   generation and naming their own node as the primary, at most one is
//!   writable on a powered-on node;
//! - and what the simulated ZFS records as it happens: no node rolls back
//!   a dataset whose mark names it as the primary, nothing set aside by
//!   `reverse` is destroyed or rolled back.

use tandem_repl::job::Job;
use tandem_repl::roles::mark_of;

use super::world::World;

/// What is wrong now, in words (empty: nothing).
pub fn invariants(w: &World, jobs: &[Job]) -> Vec<String> {
    let mut out = Vec::new();
    let all = w.all_content();
    let lost: Vec<u64> = w
        .acks
        .iter()
        .map(|a| a.id)
        .filter(|id| !all.contains(id))
        .collect();
    if !lost.is_empty() {
        out.push(format!("acknowledged writes lost: {lost:?}"));
    }
    for j in jobs {
        let name = j.name.to_string();
        let copies: Vec<(&str, &super::world::Ds)> = [&j.source, &j.target]
            .into_iter()
            .filter_map(|ep| {
                let n = w.nodes.get(&ep.node)?;
                let d = n.pools.get(&ep.dataset).filter(|d| !d.partial)?;
                Some((ep.node.as_str(), d))
            })
            .collect();
        let writers: Vec<&str> = copies
            .iter()
            .filter(|(n, d)| {
                !d.readonly
                    && w.up(n)
                    && w.nodes.get(*n).is_some_and(|x| x.workload.contains(&name))
            })
            .map(|(n, _)| *n)
            .collect();
        if writers.len() > 1 {
            out.push(format!(
                "job {name}: {} nodes run the workload on a writable copy: {}",
                writers.len(),
                writers.join(", ")
            ));
        }
        let marks: Vec<(&str, u64, bool)> = copies
            .iter()
            .map(|(n, d)| {
                let listed = tandem_zfs::Dataset {
                    generation: d.mark(),
                    ..tandem_zfs::Dataset::new(
                        j.source.dataset.clone(),
                        d.kind,
                        tandem_zfs::Guid(d.guid),
                    )
                };
                let m = mark_of(j, &listed);
                (*n, m.number, !d.readonly && w.up(n) && m.primary == *n)
            })
            .collect();
        let top = marks.iter().map(|m| m.1).max().unwrap_or(0);
        let primaries: Vec<&str> = marks
            .iter()
            .filter(|m| m.1 == top && m.2)
            .map(|m| m.0)
            .collect();
        if primaries.len() > 1 {
            out.push(format!(
                "job {name}: {} writable primaries at generation {top}: {}",
                primaries.len(),
                primaries.join(", ")
            ));
        }
    }
    out
}
