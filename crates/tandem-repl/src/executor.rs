//! The executor: carries one job's plan out against two nodes.
//!
//! Order of operations, chosen so that a crash between any two steps
//! leaves a state the next cycle completes: snapshot the source; stream
//! send → receive; list both sides again and check that the new snapshot's
//! GUID arrived; hold it on both sides; release the older holds; prune the
//! job's own older snapshots. Nothing is ever received with `-F`, so ZFS
//! itself refuses to overwrite a target that changed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tandem_zfs::{
    Changed, DatasetName, Generation, Guid, Listing, RecvSpec, SendBase, SendFlags, SendRequest,
    Snapshot, SnapshotName, Zfs, ZfsError, GENERATION_PROPERTY,
};

use crate::naming::JobName;
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

fn zerr(node: &str) -> impl Fn(ZfsError) -> ReplError + '_ {
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
    async fn list_both(&self, for_planning: bool) -> Result<(Listing, Listing), ReplError> {
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

    /// Runs one cycle. `listings` are this cycle's shared listings, if any.
    pub async fn run(
        &self,
        listings: Option<(Listing, Listing)>,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Result<Outcome, ReplError> {
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
                    self.finish(&sl, &tl, &common.name, first, &mut out).await?;
                    return Ok(out);
                }
                Plan::UpToDate { common } => {
                    let tds = tl.get(&self.job.target.dataset);
                    if let Some(t) = tds.and_then(|t| t.by_guid(common.guid)) {
                        self.ensure_holds(common, t).await?;
                        out.common = Some(common_of(common, t));
                    }
                    return Ok(out);
                }
                Plan::Resume { .. } => {
                    let req = self
                        .request(&p)
                        .ok_or_else(|| ReplError::TooManyRounds(self.job.name.to_string()))?;
                    match self.transfer(&req, true).await {
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
                    out.bytes += self.transfer(&req, resumable).await?;
                    out.sent = Some(to.snapshot().clone());
                    (sl, tl) = self.list_both(false).await?;
                    self.finish(&sl, &tl, to.snapshot(), first, &mut out)
                        .await?;
                    return Ok(out);
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
    async fn transfer(&self, req: &SendRequest, resumable: bool) -> Result<u64, ReplError> {
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

    async fn ensure_holds(&self, s: &Snapshot, t: &Snapshot) -> Result<(), ReplError> {
        let tag = self.job.name.hold_tag();
        if s.userrefs == 0 {
            self.src
                .hold(&tag, &s.name)
                .await
                .map_err(zerr(self.src.node()))?;
        }
        if t.userrefs == 0 {
            self.tgt
                .hold(&tag, &t.name)
                .await
                .map_err(zerr(self.tgt.node()))?;
        }
        Ok(())
    }

    /// After a transfer: verify, hold, release, mark read-only, prune.
    async fn finish(
        &self,
        sl: &Listing,
        tl: &Listing,
        sent: &SnapshotName,
        first: bool,
        out: &mut Outcome,
    ) -> Result<(), ReplError> {
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
        if first {
            // A replica must not be written by accident; receive ignores readonly.
            if tgt.and_then(|d| d.readonly) != Some(true) {
                self.tgt
                    .set_property(&j.target.dataset, "readonly", "on", Some(&j.claim))
                    .await
                    .map_err(zerr(self.tgt.node()))?;
            }
            // A new follower of a primary that changed before (generation
            // 1 or later) carries the primary's mark, so that it counts as
            // following it (see `crate::roles`).
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
        }
        self.ensure_holds(s, t).await?;
        let tag = j.name.hold_tag();
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
        for old in src.map(stale).unwrap_or_default() {
            if let Err(e) = self.src.release(&tag, &old).await {
                out.warnings
                    .push(format!("release {tag} on {}:{old}: {e}", j.source.node));
            }
        }
        for old in tgt.map(stale).unwrap_or_default() {
            if let Err(e) = self.tgt.release(&tag, &old).await {
                out.warnings
                    .push(format!("release {tag} on {}:{old}: {e}", j.target.node));
            }
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
        let protect = [s.guid];
        // Held in this listing: our tag may still be on it (the releases
        // above are best-effort); an unheld one needs no `zfs release`.
        let held = |d: &tandem_zfs::Dataset, v: &SnapshotName| {
            d.snapshots.iter().any(|x| &x.name == v && x.userrefs > 0)
        };
        if let Some(d) = src {
            for victim in crate::plan::retention(&j.name, d, j.keep, &protect) {
                let h = held(d, &victim);
                self.prune(self.src, &j.source.node, &victim, h, out).await;
            }
        }
        if let Some(d) = tgt {
            for victim in crate::plan::retention(&j.name, d, j.keep, &protect) {
                let h = held(d, &victim);
                self.prune(self.tgt, &j.target.node, &victim, h, out).await;
            }
        }
        out.common = Some(common_of(s, t));
        Ok(())
    }

    async fn prune<Z: Zfs>(
        &self,
        z: &Z,
        node: &str,
        victim: &SnapshotName,
        held: bool,
        out: &mut Outcome,
    ) {
        // Release our own tag first where the listing shows a hold (a crash
        // may have left it), then destroy.
        if held {
            let _ = z.release(&self.job.name.hold_tag(), victim).await;
        }
        match z.destroy_snapshot(victim, Some(&self.job.claim)).await {
            Ok(Changed::Done) => {
                tracing::debug!(job = %self.job.name, %node, snapshot = %victim, "pruned");
                out.pruned.push(victim.clone());
            }
            Ok(Changed::Already) => {}
            Err(ZfsError::HasClones { .. }) => {
                // The origin of a clone, e.g. of a divergent state that
                // `reverse` set aside: kept until that clone is destroyed.
                tracing::info!(job = %self.job.name, %node, snapshot = %victim,
                    "kept: a clone depends on it (a set-aside divergent state?)");
            }
            Err(e) => {
                let w = format!("could not prune {node}:{victim} (kept): {e}");
                tracing::warn!(job = %self.job.name, "{w}");
                out.warnings.push(w);
            }
        }
    }
}
