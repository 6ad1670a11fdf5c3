//! The planner: a pure function of both sides' listings and the job.
//!
//! It decides one of: a full send (no target yet), an incremental send from
//! the newest common snapshot — matched by GUID, never by name — a resume
//! from the target's receive token, nothing (up to date), or a conflict that
//! a human must look at. It never plans to destroy anything but the job's
//! own older snapshots ([`retention`]), and never the newest common one.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tandem_zfs::{Bookmark, Dataset, DatasetName, Guid, Snapshot, SnapshotName};

use crate::naming::JobName;

/// What one side looks like, for the planner.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The dataset, if it exists.
    pub dataset: Option<&'a Dataset>,
    /// Its name (whether or not it exists).
    pub name: &'a DatasetName,
}

/// The snapshot a send ends at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SendTo {
    /// Take this new snapshot first.
    Create {
        /// Its name.
        snapshot: SnapshotName,
    },
    /// A job snapshot that already exists on the source and has not been sent
    /// (left by an earlier, failed attempt; nothing was written since).
    Existing {
        /// Its name.
        snapshot: SnapshotName,
    },
}

impl SendTo {
    /// The snapshot's name.
    pub fn snapshot(&self) -> &SnapshotName {
        match self {
            SendTo::Create { snapshot } | SendTo::Existing { snapshot } => snapshot,
        }
    }
}

/// Why a job cannot run without a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conflict {
    /// The source dataset does not exist.
    SourceMissing {
        /// Source dataset.
        source: DatasetName,
    },
    /// The target exists but shares no snapshot (by GUID) with the source.
    NoCommonSnapshot {
        /// Target dataset.
        target: DatasetName,
        /// Target snapshots whose name exists on the source with another GUID.
        same_name_other_guid: Vec<String>,
    },
    /// The target has snapshots or writes after the newest common snapshot.
    TargetDiverged {
        /// Target dataset.
        target: DatasetName,
        /// The newest common snapshot (target side).
        base: SnapshotName,
        /// Target snapshots newer than the base.
        snapshots_after_base: Vec<String>,
        /// Bytes written on the target since its newest snapshot (where known).
        written: Option<u64>,
    },
}

impl Conflict {
    /// What the operator can do about it.
    pub fn advice(&self) -> String {
        match self {
            Conflict::SourceMissing { source } => format!(
                "check the job's source ({source}); tandem does not create source datasets"
            ),
            Conflict::NoCommonSnapshot { target, .. } => format!(
                "the target {target} is not a replica of the source; tandem will not overwrite it. \
                 Point the job at a new target dataset, or if {target} is disposable, rename it away \
                 (zfs rename {target} {target}-old) so the next cycle makes a full copy"
            ),
            Conflict::TargetDiverged { target, base, .. } => format!(
                "{target} was changed after the last replication ({base}); tandem will not discard that. \
                 Keep the changes with `zfs snapshot {target}@keep && zfs clone {target}@keep {target}-diverged`, \
                 then return the replica to the base with `zfs rollback -r {base}` (destroys the newer \
                 snapshots and writes) and run the job again"
            ),
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::SourceMissing { source } => {
                write!(f, "source dataset {source} does not exist")
            }
            Conflict::NoCommonSnapshot {
                target,
                same_name_other_guid,
            } => {
                write!(f, "target {target} exists but has no snapshot in common with the source (compared by GUID)")?;
                if !same_name_other_guid.is_empty() {
                    write!(
                        f,
                        "; same name but different GUID: {}",
                        same_name_other_guid.join(", ")
                    )?;
                }
                Ok(())
            }
            Conflict::TargetDiverged {
                target,
                base,
                snapshots_after_base,
                written,
            } => {
                write!(
                    f,
                    "target {target} has diverged from the source after {base}:"
                )?;
                if !snapshots_after_base.is_empty() {
                    write!(
                        f,
                        " snapshots taken on the target: {}",
                        snapshots_after_base.join(", ")
                    )?;
                }
                if let Some(w) = written.filter(|w| *w > 0) {
                    write!(f, " {w} bytes written on the target")?;
                }
                Ok(())
            }
        }
    }
}

/// The planner's decision for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum Plan {
    /// The target does not exist: send everything up to `to`.
    Full {
        /// Where the send ends.
        to: SendTo,
    },
    /// Send the changes from the newest common snapshot to `to` (`send -I`).
    Incremental {
        /// The base on the source.
        base: Snapshot,
        /// The same snapshot (same GUID) on the target; its name may differ.
        target_base: Snapshot,
        /// Where the send ends.
        to: SendTo,
    },
    /// The newest common snapshot is gone from the source (pruned by
    /// someone), but the job's bookmark of it remains: send the changes
    /// since the bookmark (`send -i DATASET#BOOKMARK`), not everything.
    IncrementalFromBookmark {
        /// The bookmark on the source.
        bookmark: Bookmark,
        /// The snapshot it marks, on the target.
        target_base: Snapshot,
        /// Where the send ends.
        to: SendTo,
    },
    /// Resume an interrupted receive from the target's token.
    Resume {
        /// `receive_resume_token`.
        token: String,
    },
    /// Nothing changed since the newest common snapshot.
    UpToDate {
        /// The newest common snapshot (source side).
        common: Snapshot,
    },
    /// A human must decide.
    Conflict(Conflict),
}

impl Plan {
    /// A short word for logs and status.
    pub fn kind(&self) -> &'static str {
        match self {
            Plan::Full { .. } => "full",
            Plan::Incremental { .. } => "incremental",
            Plan::IncrementalFromBookmark { .. } => "incremental-from-bookmark",
            Plan::Resume { .. } => "resume",
            Plan::UpToDate { .. } => "up-to-date",
            Plan::Conflict(_) => "conflict",
        }
    }

    /// The snapshot the plan takes before sending, if it takes one.
    pub fn creates(&self) -> Option<&SnapshotName> {
        match self {
            Plan::Full {
                to: SendTo::Create { snapshot },
            }
            | Plan::Incremental {
                to: SendTo::Create { snapshot },
                ..
            }
            | Plan::IncrementalFromBookmark {
                to: SendTo::Create { snapshot },
                ..
            } => Some(snapshot),
            _ => None,
        }
    }
}

/// The newest snapshot present on both sides with the same GUID:
/// (source snapshot, target snapshot).
pub fn newest_common<'a>(
    source: &'a Dataset,
    target: &'a Dataset,
) -> Option<(&'a Snapshot, &'a Snapshot)> {
    target
        .snapshots
        .iter()
        .rev()
        .find_map(|t| source.by_guid(t.guid).map(|s| (s, t)))
}

/// Where a send should end: a fresh snapshot, unless the source's newest
/// snapshot is the job's own, unsent, and nothing was written since.
fn send_to(
    job: &JobName,
    source: &Dataset,
    after: Option<Guid>,
    now: DateTime<Utc>,
) -> Result<SendTo, tandem_zfs::NameError> {
    if let (Some(newest), Some(0)) = (source.newest(), source.written) {
        if job.owns(newest) && Some(newest.guid) != after {
            return Ok(SendTo::Existing {
                snapshot: newest.name.clone(),
            });
        }
    }
    // Names have one-second resolution: never reuse (or go back before) the
    // newest own snapshot's time, even if cycles run back to back or the
    // clock stepped back.
    let newest_own = source
        .snapshots
        .iter()
        .filter_map(|s| job.parse_own(s.name.short()))
        .max();
    let now =
        chrono::DurationRound::duration_trunc(now, chrono::Duration::seconds(1)).unwrap_or(now);
    let t = match newest_own {
        Some(last) if last >= now => last + chrono::Duration::seconds(1),
        _ => now,
    };
    Ok(SendTo::Create {
        snapshot: source.name.snapshot(&job.snapshot_short(t))?,
    })
}

enum Base<'a> {
    Snap(&'a Snapshot, &'a Snapshot),
    Mark(&'a Bookmark, &'a Snapshot),
}

/// Plans one cycle of `job` from `source` to `target` at time `now`.
pub fn plan(
    job: &JobName,
    source: Side<'_>,
    target: Side<'_>,
    now: DateTime<Utc>,
) -> Result<Plan, tandem_zfs::NameError> {
    let Some(src) = source.dataset else {
        return Ok(Plan::Conflict(Conflict::SourceMissing {
            source: source.name.clone(),
        }));
    };
    let Some(tgt) = target.dataset else {
        return Ok(Plan::Full {
            to: send_to(job, src, None, now)?,
        });
    };
    if let Some(token) = &tgt.resume_token {
        return Ok(Plan::Resume {
            token: token.clone(),
        });
    }
    let common = newest_common(src, tgt);
    // A bookmark on the source of a snapshot the target still has counts as
    // common too: newer than any common snapshot when that was pruned.
    let marked = tgt.snapshots.iter().rev().find_map(|t| {
        src.bookmarks
            .iter()
            .find(|b| b.guid == t.guid)
            .map(|b| (b, t))
    });
    let base = match (common, marked) {
        (Some((_, ts)), Some((b, tb))) if tb.createtxg > ts.createtxg => Base::Mark(b, tb),
        (Some((s, t)), _) => Base::Snap(s, t),
        (None, Some((b, tb))) => Base::Mark(b, tb),
        (None, None) => {
            let same_name_other_guid = tgt
                .snapshots
                .iter()
                .filter(|t| {
                    src.by_short(t.name.short())
                        .is_some_and(|s| s.guid != t.guid)
                })
                .map(|t| t.name.to_string())
                .collect();
            return Ok(Plan::Conflict(Conflict::NoCommonSnapshot {
                target: tgt.name.clone(),
                same_name_other_guid,
            }));
        }
    };
    let target_base = match base {
        Base::Snap(_, t) | Base::Mark(_, t) => t,
    };
    let after: Vec<String> = tgt
        .snapshots
        .iter()
        .filter(|t| t.createtxg > target_base.createtxg)
        .map(|t| t.name.to_string())
        .collect();
    let written = tgt.written.filter(|w| *w > 0);
    if !after.is_empty() || written.is_some() {
        return Ok(Plan::Conflict(Conflict::TargetDiverged {
            target: tgt.name.clone(),
            base: target_base.name.clone(),
            snapshots_after_base: after,
            written,
        }));
    }
    let base = match base {
        Base::Mark(bookmark, tb) => {
            return Ok(Plan::IncrementalFromBookmark {
                bookmark: bookmark.clone(),
                target_base: tb.clone(),
                to: send_to(job, src, Some(bookmark.guid), now)?,
            })
        }
        Base::Snap(s, _) => s,
    };
    let newest_is_base = src.newest().map(|n| n.guid) == Some(base.guid);
    if newest_is_base && src.written == Some(0) {
        return Ok(Plan::UpToDate {
            common: base.clone(),
        });
    }
    Ok(Plan::Incremental {
        base: base.clone(),
        target_base: target_base.clone(),
        to: send_to(job, src, Some(base.guid), now)?,
    })
}

/// Retention: which of `dataset`'s snapshots to destroy so that the job keeps
/// its `keep` newest own snapshots. Only the job's own snapshots are ever
/// candidates; snapshots whose GUID is in `protect` (the newest common one)
/// and snapshots newer than the newest protected one (not yet replicated)
/// are never chosen. A snapshot someone else holds fails to destroy later,
/// which the executor reports and skips.
pub fn retention(
    job: &JobName,
    dataset: &Dataset,
    keep: usize,
    protect: &[Guid],
) -> Vec<SnapshotName> {
    let own: Vec<&Snapshot> = dataset.snapshots.iter().filter(|s| job.owns(s)).collect();
    let newest_protected_txg = dataset
        .snapshots
        .iter()
        .filter(|s| protect.contains(&s.guid))
        .map(|s| s.createtxg)
        .max();
    let Some(limit) = newest_protected_txg else {
        // Without a known common snapshot on this side, prune nothing.
        return Vec::new();
    };
    let excess = own.len().saturating_sub(keep.max(1));
    own.into_iter()
        .take(excess)
        .filter(|s| !protect.contains(&s.guid) && s.createtxg < limit)
        .map(|s| s.name.clone())
        .collect()
}

#[cfg(test)]
mod tests;
