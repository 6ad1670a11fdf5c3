//! The executor: carries one job's plan out against two nodes.
//!
//! Order of operations, chosen so that a crash between any two steps
//! leaves a state the next cycle completes: snapshot the source; stream
//! send → receive; list both sides again and check that the new snapshot's
//! GUID arrived; hold it on both sides; release the older holds; prune the
//! job's own older snapshots. Nothing is ever received with `-F`, so ZFS
//! itself refuses to overwrite a target that changed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tandem_zfs::{
    Changed, DatasetName, Generation, Guid, HoldTag, Listing, RecvSpec, SendBase, SendFlags,
    SendRequest, Snapshot, SnapshotName, Zfs, ZfsError, GENERATION_PROPERTY,
};

use crate::naming::{peer_hold_tag, JobName};
use crate::pipe::{self, PipeError, Progress};
use crate::plan::{plan, Conflict, Plan, SendTo, Side};
use crate::state::Common;

pub use crate::job::Endpoint;

/// A replication job with its current direction applied (see
/// [`Job::spec`](crate::job::Job::spec)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Its name.
    pub name: JobName,
    /// Where data comes from (after applying the job's direction).
    pub source: Endpoint,
    /// Where it goes.
    pub target: Endpoint,
    /// Own snapshots kept on each side (at least 1).
    pub keep: usize,
    /// Extra send flags.
    pub flags: SendFlags,
    /// Bytes per second, 0 = unlimited.
    pub rate_limit: u64,
    /// Stream compression where the stream crosses the network.
    pub wire: tandem_zfs::WireCompress,
    /// The source's snapshots are shared with other legs of a fan-out
    /// job, each of which holds its own common snapshot there: retention
    /// on the source spares every held snapshot (another target may
    /// still need it; this leg's own released common goes a cycle later).
    pub shared_source: bool,
    /// The target was just rebuilt by `reverse` as a clone of the common
    /// snapshot with this GUID; up to this many bytes of `written` at that
    /// snapshot are the clone's own metadata (ZFS resets a zvol clone's
    /// intent log, which `written` counts and `zfs receive` ignores), not
    /// writes.
    pub rebuilt_target: Option<(Guid, u64)>,
    /// The primary's generation mark: the claim every write into the
    /// target is made under (a `tandem serve` target refuses a stale one).
    pub claim: Generation,
}

/// Why a job's cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// A ZFS call failed on a node.
    #[error("node {node}: {source}")]
    Zfs {
        /// The node.
        node: String,
        /// The error.
        #[source]
        source: ZfsError,
    },
    /// A human must decide; nothing was changed.
    #[error("{conflict}. What to do: {}", conflict.advice())]
    Conflict {
        /// The conflict.
        conflict: Conflict,
    },
    /// The in-process pipe failed.
    #[error("transfer {job}: {source}")]
    Pipe {
        /// Job.
        job: String,
        /// Error.
        #[source]
        source: PipeError,
    },
    /// After a receive that reported success, the target lacks the snapshot.
    #[error(
        "job {job}: after the transfer, {target} has no snapshot with GUID {guid} ({snapshot})"
    )]
    NotReceived {
        /// Job.
        job: String,
        /// Target dataset.
        target: DatasetName,
        /// Expected GUID.
        guid: Guid,
        /// Source snapshot.
        snapshot: SnapshotName,
    },
    /// A name built from the job was invalid (too long, usually).
    #[error(transparent)]
    Name(#[from] tandem_zfs::NameError),
    /// Gave up after repeated resume/abort rounds.
    #[error("job {0}: the target kept changing between rounds; giving up for this cycle")]
    TooManyRounds(String),
    /// The other end carries a newer generation (it was promoted by a
    /// failover or a switchover) and this end has not followed it yet: it
    /// is no longer the primary. Nothing was changed on either side.
    #[error(transparent)]
    NotFollowing(Box<NotFollowing>),
    /// Both ends claim one generation with different primaries.
    #[error(transparent)]
    SplitMarks(#[from] Box<crate::roles::SplitMarks>),
    /// A guest job's datasets carry different marks.
    #[error(transparent)]
    MixedMarks(Box<crate::guest::MixedMarks>),
    /// One or more datasets of a guest job failed (the others were
    /// replicated); the first failure.
    #[error("dataset {member} ({failed} of {total} datasets of the job failed): {source}")]
    Member {
        /// The first failed member, by its path below the job's datasets.
        member: String,
        /// How many failed.
        failed: usize,
        /// How many the job has.
        total: usize,
        /// Why the first one failed.
        #[source]
        source: Box<ReplError>,
    },
    /// A fan-out job's marks name a target as its primary: it sends from
    /// its configured source only (turning it around is not supported).
    #[error(
        "job {job}: its marks name {primary} as the primary, but a job with several targets \
         replicates from its configured source only (turning a fan-out job around is not \
         supported yet). tandem changed nothing; replace the job by one job per target, \
         from the new primary"
    )]
    FanoutTurned {
        /// Job.
        job: String,
        /// The end the marks name.
        primary: String,
    },
    /// A guest job's member would have taken a snapshot of its own, apart
    /// from its siblings: refused (its siblings' snapshot is missing on it).
    #[error(
        "job {job}: {dataset} lacks the job's snapshot @{short} that its sibling datasets have; \
         it is not snapshotted on its own. The next cycle takes a new snapshot of all of them"
    )]
    Unpinned {
        /// Job.
        job: String,
        /// The member's source dataset.
        dataset: DatasetName,
        /// The snapshot its siblings were pinned to.
        short: String,
    },
}

/// See [`ReplError::NotFollowing`].
#[derive(Debug, thiserror::Error)]
#[error(
    "job {job}: {primary} was promoted (generation {}, primary {}); {follower} (generation \
     {follower_generation}) is no longer the primary and sends nothing. What to do: when {} \
     should follow {}, run `tandem reverse {job}`",
    generation.number, generation.primary, follower.node, generation.primary
)]
pub struct NotFollowing {
    /// The job.
    pub job: String,
    /// The primary's end.
    pub primary: Endpoint,
    /// Its mark.
    pub generation: Generation,
    /// The end that has not followed.
    pub follower: Endpoint,
    /// Its generation.
    pub follower_generation: u64,
}

impl NotFollowing {
    /// From a job's roles (whose follower does not agree).
    pub fn of(job: &crate::job::Job, roles: &crate::roles::Roles) -> Self {
        NotFollowing {
            job: job.name.to_string(),
            primary: roles.primary.clone(),
            generation: roles.generation.clone(),
            follower: roles.follower.clone(),
            follower_generation: roles.follower_mark.as_ref().map_or(0, |m| m.number),
        }
    }
}

impl ReplError {
    /// Is this a conflict that needs a human (as opposed to a transient error)?
    pub fn is_conflict(&self) -> bool {
        matches!(self, ReplError::Conflict { .. })
            || matches!(
                self,
                ReplError::NotFollowing { .. }
                    | ReplError::SplitMarks(_)
                    | ReplError::MixedMarks(_)
            )
            || matches!(self, ReplError::Member { source, .. } if source.is_conflict())
            || matches!(
                self,
                ReplError::Zfs {
                    source: ZfsError::TargetDiverged { .. }
                        | ZfsError::NoCommonSnapshot { .. }
                        | ZfsError::TargetExists { .. },
                    ..
                }
            )
    }
}

/// What a successful cycle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Plan kinds carried out, in order (`resume`, then `incremental`, say).
    pub plans: Vec<String>,
    /// The snapshot sent, if any.
    pub sent: Option<SnapshotName>,
    /// Stream bytes moved.
    pub bytes: u64,
    /// The newest common snapshot afterwards.
    pub common: Option<Common>,
    /// Snapshots destroyed by retention.
    pub pruned: Vec<SnapshotName>,
    /// Things that did not stop the cycle but deserve a look.
    pub warnings: Vec<String>,
    /// Why nothing was done: this node is not the job's primary (a
    /// daemon leaves a job to its primary's daemon).
    pub skipped: Option<String>,
}

/// A member of a guest job never takes a snapshot of its own: where the
/// plan would, it sends the cycle's snapshot `short` instead (writes made
/// after it wait for the next cycle), or it is up to date when that
/// snapshot is sent already.
fn pin(p: Plan, source: Option<&tandem_zfs::Dataset>, short: &str) -> Plan {
    let Some(snap) = source.and_then(|d| d.by_short(short)) else {
        return p;
    };
    let existing = || SendTo::Existing {
        snapshot: snap.name.clone(),
    };
    match p {
        Plan::Full {
            to: SendTo::Create { .. },
        } => Plan::Full { to: existing() },
        Plan::Incremental { base, .. } if base.guid == snap.guid => Plan::UpToDate { common: base },
        Plan::Incremental {
            base,
            target_base,
            to: SendTo::Create { .. },
        } => Plan::Incremental {
            base,
            target_base,
            to: existing(),
        },
        Plan::IncrementalFromBookmark {
            bookmark,
            target_base,
            to: SendTo::Create { .. },
        } => Plan::IncrementalFromBookmark {
            bookmark,
            target_base,
            to: existing(),
        },
        p => p,
    }
}

/// Maps a ZFS error on `node` to the job's error.
pub(crate) fn zerr(node: &str) -> impl Fn(ZfsError) -> ReplError + '_ {
    move |e| ReplError::Zfs {
        node: node.to_owned(),
        source: e,
    }
}

fn common_of(s: &Snapshot, t: &Snapshot) -> Common {
    Common {
        source: s.name.clone(),
        target: t.name.clone(),
        guid: s.guid,
        created: Utc
            .timestamp_opt(s.creation, 0)
            .single()
            .unwrap_or_else(Utc::now),
    }
}

/// Carries out cycles of one job. `src_list`/`tgt_list` are this cycle's
/// listings (shared between jobs); `previous_common` is the GUID recorded
/// in state, whose hold is released once a newer common snapshot exists.
pub struct Executor<'a, S: Zfs, T: Zfs> {
    /// The job.
    pub job: &'a JobSpec,
    /// Source node.
    pub src: &'a S,
    /// Target node.
    pub tgt: &'a T,
    /// Live transfer counters.
    pub progress: Arc<Progress>,
    /// The common snapshot recorded by the last success.
    pub previous_common: Option<Guid>,
    /// A guest job's member: send this snapshot (taken by the cycle
    /// together with its siblings') instead of taking one of its own.
    pub pinned: Option<String>,
}

impl<S: Zfs, T: Zfs> Executor<'_, S, T> {
    /// Lists both sides. For planning, the source's pool is synced first so
    /// that `written` includes every write made before this cycle; a
    /// listing that only verifies a transfer skips that.
    pub(crate) async fn list_both(
        &self,
        for_planning: bool,
    ) -> Result<(Listing, Listing), ReplError> {
        if for_planning {
            self.src
                .sync(std::slice::from_ref(&self.job.source.dataset))
                .await
                .map_err(zerr(self.src.node()))?;
        }
        let (a, b) = tokio::join!(
            self.src
                .list(std::slice::from_ref(&self.job.source.dataset)),
            self.tgt
                .list(std::slice::from_ref(&self.job.target.dataset))
        );
        Ok((
            a.map_err(zerr(self.src.node()))?,
            b.map_err(zerr(self.tgt.node()))?,
        ))
    }

    /// Plans from the given listings without changing anything.
    pub fn plan(
        &self,
        src: &Listing,
        tgt: &Listing,
        now: DateTime<Utc>,
    ) -> Result<Plan, ReplError> {
        let j = self.job;
        let mut target = tgt.get(&j.target.dataset).cloned();
        if let (Some(t), Some((base, allowance))) = (target.as_mut(), j.rebuilt_target) {
            let at_base = t.newest().map(|n| n.guid) == Some(base);
            if at_base && t.written.is_some_and(|w| w <= allowance) {
                t.written = Some(0);
            }
        }
        let p = plan(
            &j.name,
            Side {
                dataset: src.get(&j.source.dataset),
                name: &j.source.dataset,
            },
            Side {
                dataset: target.as_ref(),
                name: &j.target.dataset,
            },
            now,
        )?;
        Ok(match &self.pinned {
            Some(short) => pin(p, src.get(&j.source.dataset), short),
            None => p,
        })
    }

    /// The send request a plan implies.
    pub fn request(&self, p: &Plan) -> Option<SendRequest> {
        match p {
            Plan::Full { to } => Some(SendRequest::Snapshot {
                snapshot: to.snapshot().clone(),
                from: None,
                intermediates: false,
                flags: self.job.flags,
            }),
            Plan::Incremental { base, to, .. } => Some(SendRequest::Snapshot {
                snapshot: to.snapshot().clone(),
                from: Some(SendBase::Snapshot(base.name.clone())),
                intermediates: true,
                flags: self.job.flags,
            }),
            Plan::IncrementalFromBookmark { bookmark, to, .. } => Some(SendRequest::Snapshot {
                snapshot: to.snapshot().clone(),
                from: Some(SendBase::Bookmark(bookmark.name.clone())),
                intermediates: false,
                flags: self.job.flags,
            }),
            Plan::Resume { token } => Some(SendRequest::Resume {
                token: token.clone(),
            }),
            Plan::UpToDate { .. } | Plan::Conflict(_) => None,
        }
    }

    /// The first step of a cycle: plans, takes the snapshot, streams it
    /// (resuming first where a partial receive waits). What is left —
    /// checking that the snapshot arrived, holds, pruning — is in the
    /// returned [`Sent`].
    pub async fn transfer(
        &self,
        listings: Option<(Listing, Listing)>,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Result<Sent, ReplError> {
        let mut out = Outcome::default();
        let (mut sl, mut tl) = match listings {
            Some(l) => l,
            None => self.list_both(true).await?,
        };
        for _round in 0..4 {
            let p = self.plan(&sl, &tl, now())?;
            tracing::debug!(job = %self.job.name, plan = p.kind(), "planned");
            out.plans.push(p.kind().to_owned());
            match &p {
                Plan::Conflict(c) => {
                    return Err(ReplError::Conflict {
                        conflict: c.clone(),
                    })
                }
                Plan::UpToDate { common } if out.plans.iter().any(|p| p == "resume") => {
                    // A resumed stream completed this snapshot: finish it as
                    // any transfer (read-only on a first replica, holds,
                    // retention, and say what was sent).
                    out.sent = Some(common.name.clone());
                    let first = self.previous_common.is_none();
                    if first {
                        self.secure_replica(tl.get(&self.job.target.dataset))
                            .await?;
                    }
                    return Ok(Sent {
                        out,
                        finish: Some(common.name.clone()),
                        tidy: Tidy::default(),
                    });
                }
                Plan::UpToDate { common } => {
                    let mut tidy = Tidy::default();
                    let tds = tl.get(&self.job.target.dataset);
                    if let Some(t) = tds.and_then(|t| t.by_guid(common.guid)) {
                        tidy.hold_unheld(common, t, self.job.shared_source);
                        out.common = Some(common_of(common, t));
                    }
                    return Ok(Sent {
                        out,
                        finish: None,
                        tidy,
                    });
                }
                Plan::Resume { .. } => {
                    let req = self
                        .request(&p)
                        .ok_or_else(|| ReplError::TooManyRounds(self.job.name.to_string()))?;
                    match self.stream(&req, true).await {
                        Ok(n) => out.bytes += n,
                        Err(ReplError::Zfs {
                            source: ZfsError::ResumeTokenStale { .. },
                            ..
                        }) => {
                            let w = format!("resume token of {} is stale (its source snapshot is gone): aborted the partial receive with `zfs receive -A` and planning again", self.job.target);
                            tracing::warn!(job = %self.job.name, "{w}");
                            out.warnings.push(w);
                            self.tgt
                                .receive_abort(&self.job.target.dataset, Some(&self.job.claim))
                                .await
                                .map_err(zerr(self.tgt.node()))?;
                        }
                        Err(e) => return Err(e),
                    }
                    (sl, tl) = self.list_both(true).await?;
                }
                Plan::Full { to }
                | Plan::Incremental { to, .. }
                | Plan::IncrementalFromBookmark { to, .. } => {
                    // First success of this job (also after a crash between a
                    // full receive and recording it): make the replica read-only.
                    let first = matches!(p, Plan::Full { .. }) || self.previous_common.is_none();
                    if let (SendTo::Create { .. }, Some(short)) = (to, &self.pinned) {
                        return Err(ReplError::Unpinned {
                            job: self.job.name.to_string(),
                            dataset: self.job.source.dataset.clone(),
                            short: short.clone(),
                        });
                    }
                    if let SendTo::Create { snapshot } = to {
                        self.src
                            .snapshot(std::slice::from_ref(snapshot))
                            .await
                            .map_err(zerr(self.src.node()))?;
                    }
                    let req = self
                        .request(&p)
                        .ok_or_else(|| ReplError::TooManyRounds(self.job.name.to_string()))?;
                    let resumable = self.resumable().await?;
                    out.bytes += self.stream(&req, resumable).await?;
                    out.sent = Some(to.snapshot().clone());
                    if first {
                        // What the listing showed before a full receive is
                        // gone with it: set both.
                        let before = tl.get(&self.job.target.dataset);
                        let before = before.filter(|_| !matches!(p, Plan::Full { .. }));
                        self.secure_replica(before).await?;
                    }
                    return Ok(Sent {
                        out,
                        finish: Some(to.snapshot().clone()),
                        tidy: Tidy::default(),
                    });
                }
            }
        }
        Err(ReplError::TooManyRounds(self.job.name.to_string()))
    }

    async fn resumable(&self) -> Result<bool, ReplError> {
        let s = self
            .src
            .capabilities()
            .await
            .map_err(zerr(self.src.node()))?;
        let t = self
            .tgt
            .capabilities()
            .await
            .map_err(zerr(self.tgt.node()))?;
        Ok(s.resume && t.resume)
    }

    /// Streams one send into one receive. A failure of the sender is
    /// reported as the sender's (the receiver's complaint about a short
    /// stream is its consequence), a failure of the receiver as its own.
    async fn stream(&self, req: &SendRequest, resumable: bool) -> Result<u64, ReplError> {
        let (sn, tn) = (self.src.node(), self.tgt.node());
        let spec = RecvSpec {
            target: Some(self.job.target.dataset.clone()),
            resumable,
            wire: self.job.wire,
            claim: Some(self.job.claim.clone()),
            ..RecvSpec::default()
        };
        // Size estimate for progress and ETA, where ZFS can give one.
        self.progress
            .bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let estimate = self.src.estimate(req).await.ok().flatten().unwrap_or(0);
        self.progress
            .estimate
            .store(estimate, std::sync::atomic::Ordering::Relaxed);
        let send = self.src.send(req).await.map_err(zerr(sn))?;
        let (from, mut send) = (send.reader, send.handle);
        let recv = match self.tgt.receive(&spec).await {
            Ok(r) => r,
            Err(e) => {
                send.kill();
                let _ = send.wait().await;
                return Err(zerr(tn)(e));
            }
        };
        let tandem_zfs::RecvStream {
            writer: to,
            handle: mut recv,
            direct,
        } = recv;
        tracing::info!(job = %self.job.name, send = %send.cmd(), recv = %recv.cmd(), "transfer started");
        let mut from = from;
        if let Some(slot) = direct {
            // The receiver reads the sender's stream itself (a peer's frame
            // encoder): no copy through this process's pipe.
            let eof = Arc::new(AtomicBool::new(false));
            let metered = pipe::Metered::new(
                from,
                self.job.rate_limit,
                self.progress.clone(),
                eof.clone(),
            );
            match slot.send(Box::pin(metered)) {
                Ok(()) => {
                    drop(to);
                    let r = recv.wait().await;
                    if r.is_ok() || eof.load(Ordering::Relaxed) {
                        // The sender's output ended: its exit status counts
                        // first (a short stream is its failure, not ours).
                        send.wait().await.map_err(zerr(sn))?;
                    } else {
                        send.kill();
                        let _ = send.wait().await;
                    }
                    r.map_err(zerr(tn))?;
                    return Ok(self.progress.bytes());
                }
                // The receiver is gone already; the copy below reports it.
                Err(back) => from = back,
            }
        }
        let copied = pipe::copy(from, to, self.job.rate_limit, self.progress.clone()).await;
        match copied {
            Ok(n) => {
                let s = send.wait().await;
                let r = recv.wait().await;
                s.map_err(zerr(sn))?;
                r.map_err(zerr(tn))?;
                Ok(n)
            }
            Err(PipeError::Write { at, source }) => {
                send.kill();
                let r = recv.wait().await;
                let _ = send.wait().await;
                r.map_err(zerr(tn))?;
                Err(ReplError::Pipe {
                    job: self.job.name.to_string(),
                    source: PipeError::Write { at, source },
                })
            }
            Err(e @ PipeError::Read { .. }) => {
                let s = send.wait().await;
                recv.kill();
                let _ = recv.wait().await;
                s.map_err(zerr(sn))?;
                Err(ReplError::Pipe {
                    job: self.job.name.to_string(),
                    source: e,
                })
            }
        }
    }

    /// Makes a new replica read-only and gives it the primary's mark, as
    /// soon as its first transfer is in, before anything else is received
    /// (a child's mountpoint must not be written into its parent). `tgt`
    /// is the target as last listed; what it already shows is not set
    /// again.
    async fn secure_replica(&self, tgt: Option<&tandem_zfs::Dataset>) -> Result<(), ReplError> {
        let j = self.job;
        // A replica must not be written by accident; receive ignores readonly.
        if tgt.and_then(|d| d.readonly) != Some(true) {
            self.tgt
                .set_property(&j.target.dataset, "readonly", "on", Some(&j.claim))
                .await
                .map_err(zerr(self.tgt.node()))?;
        }
        // A new follower of a primary that changed before (generation 1 or
        // later) carries the primary's mark, so that it counts as following
        // it (see `crate::roles`).
        let marked = tgt.and_then(|d| d.generation_of(j.name.as_str()));
        if j.claim.number > 0 && marked != Some(&j.claim) {
            self.tgt
                .set_property(
                    &j.target.dataset,
                    GENERATION_PROPERTY,
                    &j.claim.to_string(),
                    Some(&j.claim),
                )
                .await
                .map_err(zerr(self.tgt.node()))?;
        }
        Ok(())
    }

    /// After a transfer, from listings of both sides made after it:
    /// checks that the sent snapshot arrived (its GUID on the target),
    /// bookmarks the new common snapshot on the source, and says which
    /// holds to take and release and which snapshots retention prunes.
    pub async fn verify(
        &self,
        sl: &Listing,
        tl: &Listing,
        sent: &SnapshotName,
        out: &mut Outcome,
    ) -> Result<Tidy, ReplError> {
        let j = self.job;
        let src = sl.get(&j.source.dataset);
        let s = src
            .and_then(|d| d.by_short(sent.short()))
            .ok_or_else(|| ReplError::Zfs {
                node: j.source.node.clone(),
                source: ZfsError::DatasetNotFound {
                    cmd: "listing after transfer".into(),
                    msg: format!("{sent} vanished during the transfer"),
                },
            })?;
        let tgt = tl.get(&j.target.dataset);
        let Some(t) = tgt.and_then(|d| d.by_guid(s.guid)) else {
            return Err(ReplError::NotReceived {
                job: j.name.to_string(),
                target: j.target.dataset.clone(),
                guid: s.guid,
                snapshot: sent.clone(),
            });
        };
        let mut tidy = Tidy::default();
        tidy.hold_unheld(s, t, j.shared_source);
        let stale = |d: &tandem_zfs::Dataset| -> Vec<SnapshotName> {
            d.snapshots
                .iter()
                .filter(|x| {
                    x.guid != s.guid
                        && x.userrefs > 0
                        && (j.name.owns(x) || Some(x.guid) == self.previous_common)
                })
                .map(|x| x.name.clone())
                .collect()
        };
        let protect = [s.guid];
        for (end, d) in [(End::Source, src), (End::Target, tgt)] {
            let Some(d) = d else { continue };
            tidy.release.extend(stale(d).into_iter().map(|n| (end, n)));
            let spare_held = j.shared_source && end == End::Source;
            tidy.prune.extend(
                crate::plan::retention(&j.name, d, j.keep, &protect)
                    .into_iter()
                    .filter(|n| {
                        !spare_held || d.by_short(n.short()).is_none_or(|x| x.userrefs == 0)
                    })
                    .map(|n| (end, n)),
            );
        }
        // A bookmark of the new common snapshot on the source keeps an
        // incremental possible if someone destroys the snapshot itself.
        if let Ok(bm) = j.source.dataset.bookmark(s.name.short()) {
            match self.src.bookmark(&s.name, &bm).await {
                Ok(_) => {
                    for old in src.map(|d| d.bookmarks.as_slice()).unwrap_or_default() {
                        if old.name != bm && j.name.parse_own(old.name.short()).is_some() {
                            if let Err(e) = self.src.destroy_bookmark(&old.name).await {
                                out.warnings.push(format!(
                                    "could not remove old bookmark {}:{}: {e}",
                                    j.source.node, old.name
                                ));
                            }
                        }
                    }
                }
                Err(e) => out.warnings.push(format!(
                    "could not bookmark {}:{}: {e}",
                    j.source.node, s.name
                )),
            }
        }
        out.common = Some(common_of(s, t));
        Ok(tidy)
    }
}

impl<Z: Zfs> Executor<'_, Z, Z> {
    /// Runs one cycle, all of it: [`Executor::transfer`] (plan, snapshot,
    /// send and receive), then a listing of both sides that
    /// [`Executor::verify`] checks, then the holds, releases and pruning
    /// ([`tidy_all`]). `listings` are this cycle's shared listings, if any.
    /// A cycle over many jobs runs the first step of each and batches the
    /// rest per node (see [`crate::cycle`]).
    pub async fn run(
        &self,
        listings: Option<(Listing, Listing)>,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Result<Outcome, ReplError> {
        let Sent {
            mut out,
            finish,
            mut tidy,
        } = self.transfer(listings, now).await?;
        if let Some(sent) = finish {
            let (sl, tl) = self.list_both(false).await?;
            tidy = self.verify(&sl, &tl, &sent, &mut out).await?;
        }
        let mut items = [TidyItem {
            spec: self.job,
            tidy,
            out,
        }];
        tidy_all(|n| self.on(n), &mut items).await;
        let [item] = items;
        Ok(item.out)
    }

    /// This job's ZFS on `node`.
    fn on(&self, node: &str) -> Option<&Z> {
        if node == self.job.source.node {
            Some(self.src)
        } else if node == self.job.target.node {
            Some(self.tgt)
        } else {
            None
        }
    }
}

/// The node and the hold tag of one end of a job: the tag names the node
/// at the other end ([`peer_hold_tag`]).
pub fn end_of(spec: &JobSpec, end: End) -> (&str, HoldTag) {
    match end {
        End::Source => (&spec.source.node, peer_hold_tag(&spec.target.node)),
        End::Target => (&spec.target.node, peer_hold_tag(&spec.source.node)),
    }
}

/// One job's [`Tidy`] in a batch, and the outcome its warnings and
/// prunes go to.
pub struct TidyItem<'a> {
    /// The job.
    pub spec: &'a JobSpec,
    /// What is left to do.
    pub tidy: Tidy,
    /// Its outcome.
    pub out: Outcome,
}

/// Snapshots of one `zfs hold`/`zfs release`: by node and tag, which job
/// each is for.
type Groups = BTreeMap<(String, String), (HoldTag, Vec<(usize, SnapshotName)>)>;

/// Carries out the [`Tidy`] of many jobs with as few `zfs` calls as ZFS
/// allows: per node and tag one `zfs hold` for all new holds, then one
/// `zfs release` for all old ones (and where a snapshot lacked the peer
/// tag, a release of its job's pre-0.2 tag), then the prunes, one `zfs
/// destroy` each (zfs-fuse takes one name), the nodes at once. Failures
/// are warnings on the job's outcome: the next cycle tries again.
///
/// Returns the items whose new holds failed (their releases and prunes
/// were dropped).
pub async fn tidy_all<'z, Z: Zfs + 'z>(
    node: impl Fn(&str) -> Option<&'z Z>,
    items: &mut [TidyItem<'_>],
) -> std::collections::BTreeSet<usize> {
    let specs: Vec<&JobSpec> = items.iter().map(|i| i.spec).collect();
    let holds = group(items, |t| &t.hold);
    let mut unheld = std::collections::BTreeSet::new();
    for (verb, (node_tag, r)) in run_groups(&node, Verb::Hold, holds).await {
        unheld.extend(r.iter().filter(|(_, _, r)| r.is_err()).map(|(i, ..)| *i));
        report(items, verb, &node_tag, r);
    }
    // A job whose new common snapshot could not be held keeps its older
    // holds and snapshots: it must never be left with no held base.
    for i in &unheld {
        items[*i].tidy.release.clear();
        items[*i].tidy.prune.clear();
    }
    let releases = group(items, |t| &t.release);
    let mut legacy = Groups::new();
    for (verb, (node_tag, r)) in run_groups(&node, Verb::Release, releases).await {
        for (i, snap, r) in &r {
            // Not for a fan-out leg's source: the job's pre-0.2 hold may be
            // the only one left on a sibling target's base (that target down
            // since), and a leg never lets go of another leg's base.
            let shared = specs[*i].shared_source && {
                let (n, t) = end_of(specs[*i], End::Source);
                node_tag.0 == n && node_tag.1 == t
            };
            if matches!(r, Ok(Changed::Already)) && !shared {
                let tag = specs[*i].name.legacy_hold_tag();
                legacy
                    .entry((node_tag.0.clone(), tag.to_string()))
                    .or_insert_with(|| (tag, Vec::new()))
                    .1
                    .push((*i, snap.clone()));
            }
        }
        report(items, verb, &node_tag, r);
    }
    for (verb, (node_tag, r)) in run_groups(&node, Verb::Release, legacy).await {
        report(items, verb, &node_tag, r);
    }
    let mut by_node: BTreeMap<&str, Vec<(usize, &SnapshotName)>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        for (end, victim) in &it.tidy.prune {
            by_node
                .entry(end_of(specs[i], *end).0)
                .or_default()
                .push((i, victim));
        }
    }
    let done = futures::future::join_all(by_node.into_iter().map(|(n, victims)| {
        let z = node(n);
        let specs = &specs;
        async move {
            let mut r = Vec::new();
            for (i, victim) in victims {
                let res = match z {
                    Some(z) => z.destroy_snapshot(victim, Some(&specs[i].claim)).await,
                    None => continue,
                };
                r.push((i, n, victim.clone(), res));
            }
            r
        }
    }))
    .await;
    for (i, n, victim, r) in done.into_iter().flatten() {
        pruned(&specs[i].name, n, &victim, r, &mut items[i].out);
    }
    unheld
}

/// The snapshots `pick` chooses from every item's tidy, by node and tag.
fn group(items: &[TidyItem<'_>], pick: fn(&Tidy) -> &[(End, SnapshotName)]) -> Groups {
    let mut g = Groups::new();
    for (i, it) in items.iter().enumerate() {
        for (end, snap) in pick(&it.tidy) {
            let (n, tag) = end_of(it.spec, *end);
            g.entry((n.to_owned(), tag.to_string()))
                .or_insert_with(|| (tag, Vec::new()))
                .1
                .push((i, snap.clone()));
        }
    }
    g
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Hold,
    Release,
}

type GroupResult = (
    (String, HoldTag),
    Vec<(usize, SnapshotName, Result<Changed, ZfsError>)>,
);

/// Runs each group's `zfs hold` or `zfs release`, the groups at once.
async fn run_groups<'z, Z: Zfs + 'z>(
    node: &impl Fn(&str) -> Option<&'z Z>,
    verb: Verb,
    groups: Groups,
) -> Vec<(&'static str, GroupResult)> {
    let name = match verb {
        Verb::Hold => "hold",
        Verb::Release => "release",
    };
    futures::future::join_all(groups.into_iter().map(|((n, _), (tag, list))| {
        let z = node(&n);
        async move {
            let names: Vec<SnapshotName> = list.iter().map(|(_, s)| s.clone()).collect();
            let r = match (z, verb) {
                (None, _) => Vec::new(),
                (Some(z), Verb::Hold) => z.hold_many(&tag, &names).await,
                (Some(z), Verb::Release) => z.release_many(&tag, &names).await,
            };
            let rows = list
                .into_iter()
                .zip(r)
                .map(|((i, s), r)| (i, s, r))
                .collect();
            (name, ((n, tag), rows))
        }
    }))
    .await
}

/// Warns on each job's outcome about its failed holds or releases.
fn report(
    items: &mut [TidyItem<'_>],
    verb: &str,
    (node, tag): &(String, HoldTag),
    rows: Vec<(usize, SnapshotName, Result<Changed, ZfsError>)>,
) {
    for (i, snap, r) in rows {
        if let Err(e) = r {
            let w = format!("{verb} {tag} on {node}:{snap}: {e}");
            tracing::warn!(job = %items[i].spec.name, "{w}");
            items[i].out.warnings.push(w);
        }
    }
}

/// One end of a job, where a [`Tidy`] step happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    /// The end data comes from.
    Source,
    /// The end it goes to.
    Target,
}

/// What a cycle leaves to do after its transfer was verified: holds to
/// take and to release, snapshots to prune, in that order (a held snapshot
/// cannot be destroyed). None of it is urgent: until it is done the older
/// common snapshot stays held, so a crash in between leaves a job the next
/// cycle completes. A cycle over many jobs batches it per node.
#[derive(Debug, Clone, Default)]
pub struct Tidy {
    /// Snapshots to hold (the new common snapshot, on both ends).
    pub hold: Vec<(End, SnapshotName)>,
    /// Snapshots whose hold goes (older common snapshots).
    pub release: Vec<(End, SnapshotName)>,
    /// The job's own snapshots retention destroys.
    pub prune: Vec<(End, SnapshotName)>,
}

impl Tidy {
    /// Holds the common snapshot on each end where it has no hold yet.
    /// A source shared by a fan-out job's legs is held whatever its count
    /// says: a sibling's hold is not this leg's (a count cannot tell the
    /// tags apart; holding again under a tag it has is a no-op).
    fn hold_unheld(&mut self, s: &Snapshot, t: &Snapshot, shared_source: bool) {
        if s.userrefs == 0 || shared_source {
            self.hold.push((End::Source, s.name.clone()));
        }
        if t.userrefs == 0 {
            self.hold.push((End::Target, t.name.clone()));
        }
    }
}

/// A job's cycle after its transfer: what it did so far, and what is left.
#[derive(Debug)]
pub struct Sent {
    /// What it did.
    pub out: Outcome,
    /// The snapshot sent, left to check with [`Executor::verify`] against
    /// a listing made after the transfer (a first replica was made
    /// read-only and marked right after it). `None`: nothing was sent.
    pub finish: Option<SnapshotName>,
    /// Holds an up-to-date job still lacks.
    pub tidy: Tidy,
}

/// Reports one destroy of retention.
pub fn pruned(
    job: &JobName,
    node: &str,
    victim: &SnapshotName,
    r: Result<Changed, ZfsError>,
    out: &mut Outcome,
) {
    match r {
        Ok(Changed::Done) => {
            tracing::debug!(%job, %node, snapshot = %victim, "pruned");
            out.pruned.push(victim.clone());
        }
        Ok(Changed::Already) => {}
        Err(ZfsError::HasClones { .. }) => {
            // The origin of a clone, e.g. of a divergent state that
            // `reverse` set aside: kept until that clone is destroyed.
            tracing::info!(%job, %node, snapshot = %victim,
                "kept: a clone depends on it (a set-aside divergent state?)");
        }
        Err(e) => {
            let w = format!("could not prune {node}:{victim} (kept): {e}");
            tracing::warn!(%job, "{w}");
            out.warnings.push(w);
        }
    }
}
