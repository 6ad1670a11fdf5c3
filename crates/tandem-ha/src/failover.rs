//! `failover NODE`: on a survivor, fence NODE (or take the operator's
//! word) and promote the local replica of every job NODE was the primary
//! of.
//!
//! The steps, each idempotent, so a crash between any two leaves a state
//! the next run completes:
//!
//! 1. quorum: a node that is not in the quorate partition, or cannot
//!    prove it is, refuses before anything (`--confirmed-off` does not
//!    change that: the operator vouches for NODE's power, not for which
//!    side of a split this node is on);
//! 2. classify each job from the local dataset's generation mark alone
//!    (NODE is dead): a mark naming this node is *already primary* and is
//!    never touched again (at most made writable, when a crash came
//!    between the mark and that); a mark naming NODE is *to promote*; a
//!    mark naming a third node is not NODE's job now;
//! 3. fence NODE through its levels: a level counts only when its device
//!    confirms the power off; and where corosync runs, NODE must also be
//!    gone from this node's quorate membership (a BMC that says "off" of a
//!    node that is still a member lies, or controls another machine);
//! 4. per job, under the job's lock: end receives still waiting on NODE,
//!    discard a partial receive, look again, roll back to the newest
//!    complete replication snapshot (never `-r`: a foreign newer snapshot
//!    stops it), mark the new generation naming this node, make it
//!    writable, record the promotion.
//!
//! The mark comes before `readonly=off`: from the moment the mark names
//! this node, `tandem serve` here refuses writes from NODE's stale
//! daemon, and a rerun never rolls the dataset back again.

use std::time::Duration;

use serde::Serialize;
use tandem_fence::quorum::Quorum;
use tandem_fence::FenceReport;
use tandem_repl::job::{Endpoint, Job};
use tandem_repl::roles::mark_of;
use tandem_repl::state::{Direction, JobState, Promotion};
use tandem_zfs::{Dataset, Generation, Zfs, ZfsError, GENERATION_PROPERTY};

use crate::env::Env;
use crate::error::{zerr, HaError};

/// How long `failover` waits for the node it fails over from to answer a
/// listing: if it answers, its generation marks tell whether this node's
/// copy is stale (it never is the primary then); if not, it is taken for
/// dead and this node's own marks and state are all there is.
pub const PEEK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long NODE may stay in corosync's membership after a device
/// confirmed it off (corosync notices a node without power within its
/// token timeout, a few seconds).
pub const MEMBERSHIP_GRACE: Duration = Duration::from_secs(20);
/// How often the membership is asked meanwhile.
const MEMBERSHIP_POLL: Duration = Duration::from_millis(500);

/// Who vouched that the node is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmedBy {
    /// A fence level's device.
    Fence,
    /// The operator (`--confirmed-off`).
    Operator,
}

/// What `failover` did.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// The node failed over from.
    pub node: String,
    /// What the quorum gate said.
    pub quorum: String,
    /// Whether the node is confirmed off (by a device or the operator);
    /// false when nothing needed promoting.
    pub fenced: bool,
    /// Who confirmed it.
    pub confirmed_by: Option<ConfirmedBy>,
    /// The fence levels tried, when a device was asked.
    pub fence: Option<FenceReport>,
    /// One entry per job between the node and this one.
    pub jobs: Vec<JobPromotion>,
    /// The whole run, in milliseconds.
    pub elapsed_ms: f64,
}

impl FailoverReport {
    /// Did every job end as a writable primary here (or not concern us)?
    pub fn ok(&self) -> bool {
        self.jobs.iter().all(|j| j.ok)
    }
}

/// What happened to one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobPromotion {
    /// The job.
    pub job: String,
    /// The local replica, `node:dataset`.
    pub dataset: String,
    /// Whether it is this node's writable primary now (or was already).
    pub ok: bool,
    /// The details.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// How a job's promotion ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Promoted now.
    Promoted {
        /// The snapshot rolled back to.
        snapshot: String,
        /// Its age: the data-loss window.
        rpo_seconds: i64,
        /// The new generation.
        generation: u64,
        /// Milliseconds from the start of `failover` to writable.
        writable_after_ms: f64,
        /// Things worth a look.
        warnings: Vec<String>,
    },
    /// An interrupted promotion was finished (the mark named this node
    /// already; the replica was made writable).
    Completed {
        /// The generation.
        generation: u64,
        /// Milliseconds from the start of `failover` to writable.
        writable_after_ms: f64,
    },
    /// This node's dataset already is the job's writable primary; nothing
    /// was touched.
    AlreadyPrimary {
        /// Its generation.
        generation: u64,
        /// Confirmed by the other node's marks (it answered) or by this
        /// node's own record of the promotion; `false`: this node's own
        /// mark is all it knows (the other node did not answer).
        confirmed: bool,
    },
    /// The job's primary is another node than the one failed over from.
    OtherPrimary {
        /// The primary the mark names.
        primary: String,
        /// Its generation.
        generation: u64,
    },
    /// It failed; nothing after the failing step was done.
    Failed {
        /// [`HaError::kind`].
        error_kind: &'static str,
        /// The message.
        error: String,
    },
}

/// What one job needs.
enum Class {
    /// The mark names the dead node: promote.
    Promote,
    /// The mark names this node but it is read-only: a crash came between
    /// marking and making it writable.
    Finish(Generation),
    /// The mark names this node and it is writable; confirmed or not.
    Already(Generation, bool),
    /// The mark names a third node.
    Other(Generation),
    /// A newer generation than this copy's is known: the copy is stale.
    Stale(Generation, Generation),
}

/// What the other end said, if it was asked and answered.
type Peer<'a> = Option<Option<&'a Dataset>>;

/// Classifies a job from the local dataset, the other end's (when it
/// answered) and this node's state.
fn classify(
    job: &Job,
    ds: &Dataset,
    peer: Peer<'_>,
    st: Option<&JobState>,
    dead: &str,
    local: &str,
) -> Class {
    let m = mark_of(job, ds);
    let newer = match peer {
        Some(Some(d)) => Some(mark_of(job, d)).filter(|p| p.number > m.number),
        _ => None,
    }
    .or_else(|| {
        st.filter(|st| st.generation > m.number)
            .map(|st| Generation {
                job: job.name.to_string(),
                number: st.generation,
                primary: match st.direction {
                    Direction::Forward => job.source.node.clone(),
                    Direction::Reverse => job.target.node.clone(),
                },
            })
    });
    if let Some(n) = newer {
        return Class::Stale(m, n);
    }
    if m.primary == local {
        if ds.readonly == Some(false) {
            let recorded = st
                .and_then(|st| st.promoted.as_ref())
                .is_some_and(|p| p.generation == m.number && p.node == local && p.from == dead);
            Class::Already(m, peer.is_some() || recorded)
        } else {
            Class::Finish(m)
        }
    } else if m.primary == dead {
        Class::Promote
    } else {
        Class::Other(m)
    }
}

fn entry(job: &Job, ep: &Endpoint, outcome: Outcome) -> JobPromotion {
    JobPromotion {
        job: job.name.to_string(),
        dataset: ep.to_string(),
        ok: !matches!(outcome, Outcome::Failed { .. }),
        outcome,
    }
}

fn failed(job: &Job, ep: &Endpoint, e: &HaError) -> JobPromotion {
    entry(
        job,
        ep,
        Outcome::Failed {
            error_kind: e.kind(),
            error: e.to_string(),
        },
    )
}

/// Fails over from `dead` to this node for every job in `jobs` with one
/// end on each. `confirmed_off`: the operator has checked by hand that
/// `dead` is powered off (no device is asked).
///
/// `Err` when nothing was changed: the request was wrong, this node has
/// no quorum, or `dead` is not confirmed off. Per-job failures are in the
/// report.
pub async fn failover<Z: Zfs>(
    env: &Env<'_, Z>,
    jobs: &[Job],
    dead: &str,
    confirmed_off: bool,
) -> Result<FailoverReport, HaError> {
    let start = tokio::time::Instant::now();
    env.zfs(dead)?;
    if dead == env.local {
        return Err(HaError::IsLocalNode {
            node: dead.to_owned(),
        });
    }
    // A fan-out job between these nodes is refused (see
    // HaError::FanoutJob); the others fail over.
    let involved = |j: &&Job| {
        j.legs().iter().any(|l| l.endpoint_on(dead).is_some())
            && j.legs().iter().any(|l| l.endpoint_on(env.local).is_some())
    };
    if let Some(j) = jobs.iter().filter(involved).find(|j| j.is_fanout()) {
        if !jobs.iter().filter(involved).any(|j| !j.is_fanout()) {
            return Err(HaError::FanoutJob {
                job: j.name.to_string(),
                command: "failover",
            });
        }
        tracing::warn!(job = %j.name, "fan-out job not failed over: not supported yet");
    }
    let ours: Vec<(&Job, &Endpoint)> = jobs
        .iter()
        .filter(|j| !j.is_fanout())
        .filter(|j| j.endpoint_on(dead).is_some())
        .filter_map(|j| j.endpoint_on(env.local).map(|ep| (j, ep)))
        .collect();
    if ours.is_empty() {
        return Err(HaError::NothingToPromote {
            dead: dead.to_owned(),
            local: env.local.to_owned(),
        });
    }
    // Quorum before anything: nothing is fenced or changed without it.
    let quorum = env.require_quorum().await?;
    tracing::info!(%quorum, node = dead, "quorum check before failover: may promote");

    let z = env.zfs(env.local)?;
    let roots: Vec<_> = ours
        .iter()
        .flat_map(|(j, _)| j.datasets_on(env.local))
        .collect();
    let listing = z.list(&roots).await.map_err(zerr(env.local))?;
    // The other end, if it answers at once: its marks are the truth.
    let theirs: Vec<_> = ours.iter().flat_map(|(j, _)| j.datasets_on(dead)).collect();
    let peer = tokio::time::timeout(PEEK_TIMEOUT, env.zfs(dead)?.list(&theirs))
        .await
        .ok()
        .and_then(Result::ok);
    let mut jobs_out = Vec::new();
    let mut pending = Vec::new();
    for (job, ep) in &ours {
        // A guest job is classified by its first dataset; its promotion
        // looks at all of them.
        let anchor = job.anchor_on(env.local);
        let Some(ds) = anchor.as_ref().and_then(|a| listing.get(&a.dataset)) else {
            let e = HaError::NoReplica {
                job: job.name.to_string(),
                dataset: (*ep).clone(),
            };
            jobs_out.push(failed(job, ep, &e));
            continue;
        };
        let their = job.anchor_on(dead).map(|e| e.dataset);
        let peer_ds: Peer<'_> = peer.as_ref().map(|l| their.as_ref().and_then(|d| l.get(d)));
        let st = env.store.load(&job.name).ok();
        match classify(job, ds, peer_ds, st.as_ref(), dead, env.local) {
            Class::Promote | Class::Finish(_) => pending.push((*job, *ep)),
            Class::Stale(ours_g, newer) => {
                let e = HaError::StaleCopy {
                    job: job.name.to_string(),
                    dataset: (*ep).clone(),
                    generation: ours_g.number,
                    newer,
                };
                jobs_out.push(failed(job, ep, &e));
            }
            Class::Already(g, confirmed) => jobs_out.push(entry(
                job,
                ep,
                Outcome::AlreadyPrimary {
                    generation: g.number,
                    confirmed,
                },
            )),
            Class::Other(g) => jobs_out.push(entry(
                job,
                ep,
                Outcome::OtherPrimary {
                    primary: g.primary,
                    generation: g.number,
                },
            )),
        }
    }

    let mut report = FailoverReport {
        node: dead.to_owned(),
        quorum: quorum.to_string(),
        fenced: false,
        confirmed_by: None,
        fence: None,
        jobs: Vec::new(),
        elapsed_ms: 0.0,
    };
    if !pending.is_empty() {
        if confirmed_off {
            tracing::warn!(node = dead, "OPERATOR CONFIRMED {dead} IS OFF BY HAND: no fence device was asked; promoting on the operator's word");
            report.confirmed_by = Some(ConfirmedBy::Operator);
            gone_from_membership(env, dead, "the operator", None).await?;
        } else {
            let f = env
                .fencer
                .fence(dead)
                .await
                .map_err(|why| HaError::CannotFence {
                    node: dead.to_owned(),
                    why,
                })?;
            let Some(device) = f.confirmed().map(|a| a.device.clone()) else {
                return Err(HaError::NotFenced {
                    node: dead.to_owned(),
                    report: f,
                });
            };
            gone_from_membership(env, dead, &device, Some(&f)).await?;
            report.confirmed_by = Some(ConfirmedBy::Fence);
            report.fence = Some(f);
        }
        report.fenced = true;
        // Receives still waiting on the dead node hold the job's lock and
        // the partial receive; their streams can never complete.
        for (job, _) in &pending {
            for d in job.datasets_on(env.local) {
                env.host.end_receives(&d).await;
            }
        }
        let by = report.confirmed_by.unwrap_or(ConfirmedBy::Fence);
        for (job, ep) in pending {
            let r = if job.is_multi() {
                promote_guest(env, job, ep, dead, by, start).await
            } else {
                promote(env, job, ep, dead, by, start).await
            };
            jobs_out.push(match r {
                Ok(o) => entry(job, ep, o),
                Err(e) => {
                    tracing::error!(job = %job.name, "promotion failed: {e}");
                    failed(job, ep, &e)
                }
            });
        }
    }
    jobs_out.sort_by(|a, b| a.job.cmp(&b.job));
    report.jobs = jobs_out;
    report.elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

/// Where corosync runs, the node must be gone from this node's quorate
/// membership (within [`MEMBERSHIP_GRACE`]) before anything is promoted;
/// and this node must still be quorate.
async fn gone_from_membership<Z: Zfs>(
    env: &Env<'_, Z>,
    dead: &str,
    device: &str,
    report: Option<&FenceReport>,
) -> Result<(), HaError> {
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_GRACE;
    loop {
        match env.require_quorum().await? {
            Quorum::Quorate(v) if v.members.iter().any(|m| m == dead) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(HaError::FencedButPresent {
                        node: dead.to_owned(),
                        device: device.to_owned(),
                        report: report.cloned().unwrap_or_else(|| FenceReport {
                            node: dead.to_owned(),
                            attempts: Vec::new(),
                            elapsed_ms: 0.0,
                        }),
                    });
                }
                tokio::time::sleep(MEMBERSHIP_POLL).await;
            }
            _ => return Ok(()),
        }
    }
}

/// Promotes one job's local replica, under the job's lock.
async fn promote<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    ep: &Endpoint,
    dead: &str,
    by: ConfirmedBy,
    start: tokio::time::Instant,
) -> Result<Outcome, HaError> {
    let _lock = env
        .store
        .lock("job", job.name.as_str(), &env.me, env.lock_wait)
        .await?;
    let z = env.zfs(&ep.node)?;
    let node = ep.node.as_str();
    // 1. A partial resumable receive is discarded: only complete
    //    snapshots count. An ended receive may keep it busy a moment.
    let mut tries = 0;
    loop {
        match z.receive_abort(&ep.dataset, None).await {
            Ok(_) | Err(ZfsError::Unsupported { .. }) => break,
            Err(e) if e.is_busy() && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(zerr(node)(e)),
        }
    }
    env.host.step("aborted")?;
    // 2. Look again: another run may have done it meanwhile.
    let l = z
        .list(std::slice::from_ref(&ep.dataset))
        .await
        .map_err(zerr(node))?;
    let ds = l.get(&ep.dataset).ok_or_else(|| HaError::NoReplica {
        job: job.name.to_string(),
        dataset: ep.clone(),
    })?;
    let st = env.store.load(&job.name).ok();
    match classify(job, ds, None, st.as_ref(), dead, env.local) {
        Class::Promote => {}
        Class::Stale(ours, newer) => {
            return Err(HaError::StaleCopy {
                job: job.name.to_string(),
                dataset: ep.clone(),
                generation: ours.number,
                newer,
            })
        }
        Class::Already(g, confirmed) => {
            return Ok(Outcome::AlreadyPrimary {
                generation: g.number,
                confirmed,
            })
        }
        Class::Other(g) => {
            return Ok(Outcome::OtherPrimary {
                primary: g.primary,
                generation: g.number,
            })
        }
        Class::Finish(g) => {
            // Marked before a crash: never rolled back again.
            z.set_property(&ep.dataset, "readonly", "off", Some(&g))
                .await
                .map_err(zerr(node))?;
            env.host.step("writable")?;
            let writable_after_ms = start.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(job = %job.name, dataset = %ep, generation = g.number,
                "interrupted promotion finished: {node} is the primary now");
            return Ok(Outcome::Completed {
                generation: g.number,
                writable_after_ms,
            });
        }
    }
    // 3. The newest complete replication snapshot.
    let snap = ds
        .snapshots
        .iter()
        .rev()
        .find(|s| job.name.owns(s))
        .ok_or_else(|| HaError::NoReplicationSnapshot {
            job: job.name.to_string(),
            dataset: ep.clone(),
        })?
        .clone();
    let newer: Vec<String> = ds
        .snapshots
        .iter()
        .filter(|s| s.createtxg > snap.createtxg)
        .map(|s| s.name.to_string())
        .collect();
    if !newer.is_empty() {
        return Err(HaError::ForeignNewerSnapshots {
            job: job.name.to_string(),
            dataset: ep.clone(),
            base: snap.name.to_string(),
            newer,
        });
    }
    let (st, reset) = env.store.load_or_reset(&job.name)?;
    let warnings: Vec<String> = reset.into_iter().collect();
    let mark = Generation {
        job: job.name.to_string(),
        number: mark_of(job, ds).number.max(st.generation) + 1,
        primary: env.local.to_owned(),
    };
    // 4. Roll back to it (a no-op unless something was written after it).
    z.rollback(&snap.name, Some(&mark))
        .await
        .map_err(zerr(node))?;
    env.host.step("rolled-back")?;
    // 5. The new generation, then writable.
    z.set_property(
        &ep.dataset,
        GENERATION_PROPERTY,
        &mark.to_string(),
        Some(&mark),
    )
    .await
    .map_err(zerr(node))?;
    env.host.step("marked")?;
    z.set_property(&ep.dataset, "readonly", "off", Some(&mark))
        .await
        .map_err(zerr(node))?;
    env.host.step("writable")?;
    let writable_after_ms = start.elapsed().as_secs_f64() * 1000.0;
    let now = env.clock.now();
    let rpo = now.timestamp() - snap.creation;
    // 6. Recorded: this node is the job's primary now.
    let mut st = st;
    st.direction = if *ep == job.source {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    st.generation = mark.number;
    st.common = None;
    st.last_error = None;
    st.consecutive_failures = 0;
    st.promoted = Some(Promotion {
        at: now,
        node: env.local.to_owned(),
        from: dead.to_owned(),
        snapshot: snap.name.clone(),
        rpo_seconds: rpo,
        generation: mark.number,
        confirmed_by: match by {
            ConfirmedBy::Fence => "fence".into(),
            ConfirmedBy::Operator => "operator".into(),
        },
    });
    env.store.save(&job.name, &st)?;
    env.host.step("recorded")?;
    tracing::info!(job = %job.name, dataset = %ep, snapshot = %snap.name, rpo_s = rpo,
        generation = mark.number, "replica promoted: {} is the primary now", env.local);
    Ok(Outcome::Promoted {
        snapshot: snap.name.to_string(),
        rpo_seconds: rpo,
        generation: mark.number,
        writable_after_ms,
        warnings,
    })
}

/// Promotes every dataset of a guest job's local replica to one snapshot,
/// or none, under the job's lock. The same steps as [`promote`], each
/// done for all datasets before the next: discard partial receives, look
/// at all of them, find the newest replication snapshot they all have,
/// stop if any has a snapshot tandem did not make after it, roll all back
/// to it, mark all, make all writable, record once. A dataset that
/// received a newer snapshot its siblings lack (a cycle stopped half-way)
/// loses that snapshot, so that the guest's disks come from one moment.
/// A crash between steps leaves some datasets marked: the rerun keeps
/// their mark and finishes the others without rolling a marked one back
/// again.
async fn promote_guest<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    ep: &Endpoint,
    dead: &str,
    by: ConfirmedBy,
    start: tokio::time::Instant,
) -> Result<Outcome, HaError> {
    let _lock = env
        .store
        .lock("job", job.name.as_str(), &env.me, env.lock_wait)
        .await?;
    let z = env.zfs(&ep.node)?;
    let node = ep.node.as_str();
    let mut listing = tandem_zfs::Listing::default();
    let members = tandem_repl::guest::datasets_now(job, node, z, &mut listing)
        .await
        .map_err(zerr(node))?;
    // 1. Partial receives discarded on every dataset.
    for d in &members {
        let mut tries = 0;
        loop {
            match z.receive_abort(d, None).await {
                Ok(_) | Err(ZfsError::Unsupported { .. }) => break,
                Err(e) if e.is_busy() && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(zerr(node)(e)),
            }
        }
    }
    env.host.step("aborted")?;
    // 2. All of them, as they are now.
    let l = z.list(&members).await.map_err(zerr(node))?;
    let mut sets = Vec::new();
    for d in &members {
        let ds = l.get(d).ok_or_else(|| HaError::NoReplica {
            job: job.name.to_string(),
            dataset: Endpoint {
                node: node.to_owned(),
                dataset: d.clone(),
            },
        })?;
        sets.push((d, ds));
    }
    let st = env.store.load(&job.name).ok();
    let mut marked: Option<Generation> = None;
    let mut to_promote = Vec::new();
    for (d, ds) in &sets {
        match classify(job, ds, None, st.as_ref(), dead, env.local) {
            Class::Promote => to_promote.push((*d, *ds)),
            Class::Finish(g) | Class::Already(g, _) => {
                if marked.as_ref().is_some_and(|m| m != &g) {
                    return Err(HaError::GuestJob {
                        job: job.name.to_string(),
                        command: "failover",
                        advice: "Its datasets here carry different marks naming this node; \
                                 look at `zfs get -r tandem:generation` and fix them by hand",
                    });
                }
                marked = Some(g);
            }
            Class::Stale(ours, newer) => {
                return Err(HaError::StaleCopy {
                    job: job.name.to_string(),
                    dataset: Endpoint {
                        node: node.to_owned(),
                        dataset: (*d).clone(),
                    },
                    generation: ours.number,
                    newer,
                })
            }
            Class::Other(g) => {
                return Ok(Outcome::OtherPrimary {
                    primary: g.primary,
                    generation: g.number,
                })
            }
        }
    }
    let all_writable = sets.iter().all(|(_, ds)| ds.readonly == Some(false));
    if to_promote.is_empty() && all_writable {
        let g = marked.unwrap_or_else(|| job.unmarked());
        return Ok(Outcome::AlreadyPrimary {
            generation: g.number,
            confirmed: false,
        });
    }
    // 3. The newest replication snapshot every dataset has (by name: the
    //    job takes one name on all of them at once).
    let owned = |ds: &Dataset| -> std::collections::BTreeSet<String> {
        ds.snapshots
            .iter()
            .filter(|s| job.name.owns(s))
            .map(|s| s.name.short().to_owned())
            .collect()
    };
    let mut common = owned(sets[0].1);
    for (_, ds) in &sets[1..] {
        let o = owned(ds);
        common.retain(|s| o.contains(s));
    }
    let anchor = Endpoint {
        node: node.to_owned(),
        dataset: sets[0].0.clone(),
    };
    let short = common
        .into_iter()
        .max()
        .ok_or_else(|| HaError::NoReplicationSnapshot {
            job: job.name.to_string(),
            dataset: anchor.clone(),
        })?;
    let mut warnings: Vec<String> = Vec::new();
    let mut discard = Vec::new();
    for (d, ds) in &to_promote {
        let Some(snap) = ds.by_short(&short) else {
            continue;
        };
        let newer: Vec<&tandem_zfs::Snapshot> = ds
            .snapshots
            .iter()
            .filter(|s| s.createtxg > snap.createtxg)
            .collect();
        let foreign: Vec<String> = newer
            .iter()
            .filter(|s| !job.name.owns(s))
            .map(|s| s.name.to_string())
            .collect();
        if !foreign.is_empty() {
            return Err(HaError::ForeignNewerSnapshots {
                job: job.name.to_string(),
                dataset: Endpoint {
                    node: node.to_owned(),
                    dataset: (*d).clone(),
                },
                base: snap.name.to_string(),
                newer: foreign,
            });
        }
        discard.extend(newer.iter().map(|s| (s.name.clone(), s.userrefs > 0)));
    }
    let (st, reset) = env.store.load_or_reset(&job.name)?;
    warnings.extend(reset);
    let mark = match marked {
        Some(g) => g,
        None => Generation {
            job: job.name.to_string(),
            number: sets
                .iter()
                .map(|(_, ds)| mark_of(job, ds).number)
                .max()
                .unwrap_or(0)
                .max(st.generation)
                + 1,
            primary: env.local.to_owned(),
        },
    };
    // 4. Newer replication snapshots that not every dataset has go, then
    //    every dataset still to promote is rolled back to the common one.
    // Its holds name the other end (or, made before tandem 0.2, the job).
    let mut tags = vec![job.name.legacy_hold_tag()];
    if let Some(peer) = job.other_than(node) {
        tags.push(tandem_repl::naming::peer_hold_tag(&peer.node));
    }
    for (name, held) in &discard {
        if *held {
            for tag in &tags {
                let _ = z.release(tag, name).await;
            }
        }
        z.destroy_snapshot(name, Some(&mark))
            .await
            .map_err(zerr(node))?;
        let w = format!(
            "discarded {node}:{name}: not every dataset of the guest received it, so all are \
             promoted to @{short}"
        );
        tracing::warn!(job = %job.name, "{w}");
        warnings.push(w);
    }
    let mut creation = None;
    for (d, ds) in &to_promote {
        let snap = ds
            .by_short(&short)
            .ok_or_else(|| HaError::NoReplicationSnapshot {
                job: job.name.to_string(),
                dataset: Endpoint {
                    node: node.to_owned(),
                    dataset: (*d).clone(),
                },
            })?;
        creation = creation.or(Some(snap.creation));
        z.rollback(&snap.name, Some(&mark))
            .await
            .map_err(zerr(node))?;
    }
    env.host.step("rolled-back")?;
    // 5. All marked, then all writable.
    for (d, _) in &to_promote {
        z.set_property(d, GENERATION_PROPERTY, &mark.to_string(), Some(&mark))
            .await
            .map_err(zerr(node))?;
    }
    env.host.step("marked")?;
    // Always set: a listing's `readonly` can show a mount's temporary
    // value rather than the property (zfs-fuse does).
    for (d, _) in &sets {
        z.set_property(d, "readonly", "off", Some(&mark))
            .await
            .map_err(zerr(node))?;
    }
    env.host.step("writable")?;
    let writable_after_ms = start.elapsed().as_secs_f64() * 1000.0;
    let now = env.clock.now();
    let snap_name = anchor.dataset.snapshot(&short)?;
    let creation = creation
        .or_else(|| sets[0].1.by_short(&short).map(|s| s.creation))
        .unwrap_or(now.timestamp());
    let rpo = now.timestamp() - creation;
    // 6. Recorded once for the job.
    let mut st = st;
    st.direction = if *ep == job.source {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    st.generation = mark.number;
    st.common = None;
    st.members.clear();
    st.last_error = None;
    st.consecutive_failures = 0;
    st.promoted = Some(Promotion {
        at: now,
        node: env.local.to_owned(),
        from: dead.to_owned(),
        snapshot: snap_name.clone(),
        rpo_seconds: rpo,
        generation: mark.number,
        confirmed_by: match by {
            ConfirmedBy::Fence => "fence".into(),
            ConfirmedBy::Operator => "operator".into(),
        },
    });
    env.store.save(&job.name, &st)?;
    env.host.step("recorded")?;
    tracing::info!(job = %job.name, datasets = sets.len(), snapshot = %short, rpo_s = rpo,
        generation = mark.number, "guest promoted: all {} datasets at @{short}; {} is the primary now",
        sets.len(), env.local);
    Ok(Outcome::Promoted {
        snapshot: snap_name.to_string(),
        rpo_seconds: rpo,
        generation: mark.number,
        writable_after_ms,
        warnings,
    })
}
