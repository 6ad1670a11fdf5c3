//! Guest jobs: one job over several datasets (`datasets = [...]` or
//! `recursive = true`), such as a VM's disks.
//!
//! A cycle of a guest job resolves its direction from the marks of all
//! its datasets (they must agree), plans every member, and only when no
//! member has a conflict takes **one** snapshot name on all of them at
//! once: `zfs snapshot a@s b@s ...` (one transaction group) or `zfs
//! snapshot -r root@s` for a tree. Each member is then sent, verified,
//! held and pruned as a single-dataset job of its own would be, pinned to
//! that snapshot: a member never takes a snapshot by itself, so after any
//! cycle (or any crash) the members' newest common snapshots are taken at
//! one moment, or the older ones are still there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt};

use tandem_zfs::{DatasetName, Listing, SnapshotName, Zfs};

use crate::executor::{tidy_all, zerr, End, Executor, JobSpec, Outcome, ReplError, Sent, TidyItem};
use crate::job::Endpoint;
use crate::job::{Job, Member, Members};
use crate::pipe::Progress;
use crate::plan::{Conflict, Plan};
use crate::roles::{self, Roles};
use crate::state::{Common, JobState};

/// The datasets of a guest job disagree about who the primary is: a
/// promotion that stopped half-way, or a mark set by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job {job}: its datasets carry different generation marks ({detail}); a guest job's datasets \
     change primary together. What to do: if a failover was interrupted, run `tandem failover \
     NODE` again on the node it promoted; otherwise look at `zfs get -r tandem:generation` on \
     both nodes. tandem changed nothing"
)]
pub struct MixedMarks {
    /// The job.
    pub job: String,
    /// Each member's mark, as `member: generation N (primary)`.
    pub detail: String,
}

/// The job's roles from the marks of all its configured members (as
/// listed in `ls` on the source node and `lt` on the target node). The
/// endpoints of the returned roles are the job's own (its `source` and
/// `target`); members absent on both sides do not count.
pub fn roles_of_members(job: &Job, ls: &Listing, lt: &Listing) -> Result<Roles, ReplError> {
    let mut seen: Vec<(String, Roles)> = Vec::new();
    for m in job.configured_members() {
        let (s, t) = (ls.get(&m.source.dataset), lt.get(&m.target.dataset));
        if s.is_none() && t.is_none() {
            continue;
        }
        let r = roles::resolve(&job.member_job(&m), s, t)?;
        seen.push((m.label().to_owned(), r));
    }
    let Some(best) = seen
        .iter()
        .map(|(_, r)| r)
        .max_by_key(|r| r.generation.number)
        .cloned()
    else {
        return Ok(roles::resolve(job, None, None)?);
    };
    if seen.iter().any(|(_, r)| r.generation != best.generation) {
        let detail = seen
            .iter()
            .map(|(l, r)| {
                format!(
                    "{l}: generation {} ({})",
                    r.generation.number, r.generation.primary
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ReplError::MixedMarks(Box::new(MixedMarks {
            job: job.name.to_string(),
            detail,
        })));
    }
    let forward = best.generation.primary != job.target.node;
    // The follower agrees only if every member's follower does.
    let follower_mark = seen
        .iter()
        .map(|(_, r)| r.follower_mark.clone())
        .find(|m| m.as_ref().is_some_and(|m| m != &best.generation))
        .unwrap_or_else(|| seen.iter().find_map(|(_, r)| r.follower_mark.clone()));
    let (primary, follower) = if forward {
        (job.source.clone(), job.target.clone())
    } else {
        (job.target.clone(), job.source.clone())
    };
    Ok(Roles {
        primary,
        follower,
        generation: best.generation,
        follower_mark,
    })
}

/// One `zfs destroy -r`: the side, `root@name`, and the members' snapshots
/// it stands for (by item).
type TreePrune = (End, SnapshotName, Vec<(usize, SnapshotName)>);

/// The prunes of a recursive job's members that one `zfs destroy -r` of
/// the job's root can do instead: for each side and snapshot name that
/// every member having it (`has[i]`: member `i`'s dataset on the source and
/// on the target, as listed) prunes, taken out of the members' tidies and
/// returned as (side, `root@name`, the members' snapshots). The target side
/// only when `target_is_tree`: nothing below its root but the members.
fn take_tree_prunes(
    spec: &JobSpec,
    items: &mut [TidyItem<'_>],
    has: &[[Option<tandem_zfs::Dataset>; 2]],
    target_is_tree: bool,
) -> Vec<TreePrune> {
    let mut out = Vec::new();
    for (side, end, root) in [
        (0, End::Source, &spec.source.dataset),
        (1, End::Target, &spec.target.dataset),
    ] {
        if end == End::Target && !target_is_tree {
            continue;
        }
        let mut by_short: BTreeMap<String, Vec<(usize, SnapshotName)>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            for (e, n) in &it.tidy.prune {
                if *e == end {
                    by_short
                        .entry(n.short().to_owned())
                        .or_default()
                        .push((i, n.clone()));
                }
            }
        }
        for (short, parts) in by_short {
            let having = has
                .iter()
                .filter(|h| {
                    h[side]
                        .as_ref()
                        .is_some_and(|d| d.by_short(&short).is_some())
                })
                .count();
            let Ok(name) = root.snapshot(&short) else {
                continue;
            };
            if parts.len() < 2 || parts.len() != having {
                continue;
            }
            for (i, n) in &parts {
                items[*i].tidy.prune.retain(|(e, x)| !(*e == end && x == n));
            }
            out.push((end, name, parts));
        }
    }
    out
}

/// Completes `listing` (which holds `root` as `zfs get -d 1` lists it,
/// with its children) with every dataset below `root`, one level per
/// `zfs get`.
pub async fn list_tree<Z: Zfs>(
    z: &Z,
    root: &DatasetName,
    listing: &mut Listing,
) -> Result<(), tandem_zfs::ZfsError> {
    if listing.get(root).is_none() {
        let l = z.list(std::slice::from_ref(root)).await?;
        listing.datasets.extend(l.datasets);
    }
    let mut listed: BTreeSet<DatasetName> = BTreeSet::from([root.clone()]);
    loop {
        let next: Vec<DatasetName> = listing
            .datasets
            .keys()
            .filter(|d| d.is_within(root) && !listed.contains(*d))
            .cloned()
            .collect();
        if next.is_empty() {
            return Ok(());
        }
        let more = z.list(&next).await?;
        listing.datasets.extend(more.datasets);
        listed.extend(next);
    }
}

/// The datasets of `job` on `node` now: the configured members there, or
/// for a recursive job its root and everything below it (listed into
/// `listing`).
pub async fn datasets_now<Z: Zfs>(
    job: &Job,
    node: &str,
    z: &Z,
    listing: &mut Listing,
) -> Result<Vec<DatasetName>, tandem_zfs::ZfsError> {
    let Some(root) = job.endpoint_on(node).map(|e| e.dataset.clone()) else {
        return Ok(Vec::new());
    };
    if job.members != Members::Recursive {
        return Ok(job.datasets_on(node));
    }
    list_tree(z, &root, listing).await?;
    Ok(listing
        .datasets
        .keys()
        .filter(|d| d.is_within(&root))
        .cloned()
        .collect())
}

/// The members of `job` this cycle, oriented from the primary
/// (`member.source` is on the primary): the configured ones, or for a
/// recursive job every filesystem and volume below the primary's root,
/// found by listing it level by level into `pl`. Also returns the
/// follower's datasets below its root that the primary no longer has
/// (kept, reported).
async fn members_now<Z: Zfs>(
    job: &Job,
    roles: &Roles,
    primary: &Z,
    pl: &mut Listing,
    fl: &Listing,
) -> Result<(Vec<Member>, Vec<DatasetName>), ReplError> {
    let zerr = |e| ReplError::Zfs {
        node: roles.primary.node.clone(),
        source: e,
    };
    let rels: Vec<String> = match &job.members {
        Members::Itself => vec![String::new()],
        Members::Datasets(d) => d.clone(),
        Members::Recursive => {
            let root = &roles.primary.dataset;
            list_tree(primary, root, pl).await.map_err(zerr)?;
            pl.datasets
                .keys()
                .filter_map(|d| d.relative_to(root).map(str::to_owned))
                .collect()
        }
    };
    let mut members = Vec::new();
    for rel in &rels {
        members.push(Member {
            rel: rel.clone(),
            source: roles.primary.child(rel)?,
            target: roles.follower.child(rel)?,
        });
    }
    let mut gone = Vec::new();
    if job.members == Members::Recursive {
        let keep: BTreeSet<&str> = rels.iter().map(String::as_str).collect();
        gone = fl
            .datasets
            .keys()
            .filter(|d| {
                d.relative_to(&roles.follower.dataset)
                    .is_some_and(|r| !keep.contains(r))
            })
            .cloned()
            .collect();
    }
    Ok((members, gone))
}

/// One guest-job cycle from the primary. `ls`/`lt`: the listings of the
/// job's source and target nodes; `roles`: from
/// [`roles_of_members`], with a follower that agrees.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<Z: Zfs>(
    job: &Job,
    roles: &Roles,
    spec: &JobSpec,
    st: &JobState,
    (src, tgt): (&Z, &Z),
    (mut pl, mut fl): (Listing, Listing),
    progress: Arc<Progress>,
    slot: Option<&crate::cycle::Slot>,
    parallel: usize,
    now: impl Fn() -> chrono::DateTime<chrono::Utc> + Sync,
) -> Result<(Outcome, BTreeMap<String, Common>), ReplError> {
    let mut out = Outcome::default();
    let (members, gone) = members_now(job, roles, src, &mut pl, &fl).await?;
    for d in &gone {
        let w = format!(
            "{}:{d} is no longer on the primary {}; its replica is kept (tandem never destroys \
             a replica); destroy it by hand when it is not needed",
            spec.target.node, spec.source.node
        );
        tracing::warn!(job = %job.name, "{w}");
        out.warnings.push(w);
    }
    // A member missing on the primary fails the job before anything.
    if let Some(m) = members.iter().find(|m| pl.get(&m.source.dataset).is_none()) {
        return Err(ReplError::Conflict {
            conflict: Conflict::SourceMissing {
                source: m.source.dataset.clone(),
            },
        });
    }
    // The follower's members that its listing lacks, or (below a
    // recursive job's root) holds only as `zfs get -d 1` lists a child:
    // without its snapshots.
    let recursive = job.members == Members::Recursive;
    let unlisted: Vec<DatasetName> = members
        .iter()
        .map(|m| m.target.dataset.clone())
        .filter(|d| fl.get(d).is_none() || (recursive && *d != spec.target.dataset))
        .collect();
    if !unlisted.is_empty() {
        let more = tgt.list(&unlisted).await.map_err(|e| ReplError::Zfs {
            node: spec.target.node.clone(),
            source: e,
        })?;
        fl.datasets.extend(more.datasets);
    }
    let specs: Vec<JobSpec> = members
        .iter()
        .map(|m| JobSpec {
            source: m.source.clone(),
            target: m.target.clone(),
            rebuilt_target: None,
            ..spec.clone()
        })
        .collect();
    fn executor<'e, Z: Zfs>(
        s: &'e JobSpec,
        (src, tgt): (&'e Z, &'e Z),
        progress: &Arc<Progress>,
        previous: Option<&Common>,
        pinned: Option<String>,
    ) -> Executor<'e, Z, Z> {
        Executor {
            job: s,
            src,
            tgt,
            progress: progress.clone(),
            previous_common: previous.map(|c| c.guid),
            pinned,
        }
    }
    // Plan every member first: a conflict anywhere stops the job before
    // any snapshot.
    let mut create: Option<String> = None;
    for (s, m) in specs.iter().zip(&members) {
        let p = executor(s, (src, tgt), &progress, st.members.get(&m.rel), None).plan(
            &pl,
            &fl,
            now(),
        )?;
        if let Plan::Conflict(c) = p {
            return Err(ReplError::Conflict { conflict: c });
        }
        if let Some(snapshot) = p.creates() {
            let short = snapshot.short().to_owned();
            if create.as_ref().is_none_or(|c| *c < short) {
                create = Some(short);
            }
        }
    }
    // A leg of a fan-out job takes the snapshot its siblings took this
    // cycle, or takes it for them.
    let mut taken = match slot {
        Some(s) => Some(s.lock().await),
        None => None,
    };
    let shared = taken.as_ref().and_then(|g| (**g).clone());
    let refresh = |short: String| async {
        let names: Vec<DatasetName> = members.iter().map(|m| m.source.dataset.clone()).collect();
        let fresh = src.list(&names).await.map_err(zerr(&spec.source.node))?;
        Ok::<_, ReplError>((short, fresh))
    };
    let pinned = match (shared, create) {
        (Some(short), _) => {
            drop(taken);
            let (short, fresh) = refresh(short).await?;
            pl.datasets.extend(fresh.datasets);
            Some(short)
        }
        (None, Some(short)) => {
            snapshot_all(job, spec, src, &members, &short).await?;
            if let Some(g) = taken.as_mut() {
                **g = Some(short.clone());
            }
            drop(taken);
            let (short, fresh) = refresh(short).await?;
            pl.datasets.extend(fresh.datasets);
            Some(short)
        }
        // Nothing new to take: the members send what they have, the
        // newest own snapshot at most.
        (None, None) => {
            drop(taken);
            members
                .iter()
                .filter_map(|m| pl.get(&m.source.dataset))
                .flat_map(|d| d.snapshots.iter())
                .filter(|s| job.name.owns(s))
                .map(|s| s.name.short().to_owned())
                .max()
        }
    };
    let mut commons = BTreeMap::new();
    let mut failures: Vec<(String, ReplError)> = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    // Every member's transfer first, then one listing of each side for
    // all of them, then their holds and pruning in one batch. Members are
    // sent `parallel` at a time, a level of the tree after the one above
    // it (a child's first receive needs its parent on the target).
    let mut sent = Vec::new();
    let depth = |m: &Member| {
        if m.rel.is_empty() {
            0
        } else {
            m.rel.matches('/').count() + 1
        }
    };
    let deepest = members.iter().map(depth).max().unwrap_or(0);
    for level in 0..=deepest {
        let wave: Vec<usize> = (0..members.len())
            .filter(|&i| depth(&members[i]) == level)
            .collect();
        type Transfer<'t, Z> = std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = (usize, Executor<'t, Z, Z>, Result<Sent, ReplError>),
                    > + Send
                    + 't,
            >,
        >;
        let mut futs: Vec<Transfer<'_, Z>> = Vec::new();
        for i in wave {
            let ex = executor(
                &specs[i],
                (src, tgt),
                &progress,
                st.members.get(&members[i].rel),
                pinned.clone(),
            );
            let listings = (pl.clone(), fl.clone());
            let now = &now;
            futs.push(Box::pin(async move {
                let r = ex.transfer(Some(listings), now).await;
                (i, ex, r)
            }));
        }
        let mut done: Vec<_> = stream::iter(futs)
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        done.sort_by_key(|d| d.0);
        for (i, ex, r) in done {
            let (s, m) = (&specs[i], &members[i]);
            match r {
                Ok(x) => sent.push((s, m, ex, x)),
                Err(e) => {
                    tracing::warn!(job = %job.name, member = m.label(), "member failed: {e}");
                    failures.push((m.label().to_owned(), e));
                }
            }
        }
    }
    let verify = if sent.iter().any(|(.., x)| x.finish.is_some()) {
        let on = |f: fn(&Member) -> &Endpoint| -> Vec<DatasetName> {
            sent.iter().map(|(_, m, ..)| f(m).dataset.clone()).collect()
        };
        let (sources, targets) = (on(|m| &m.source), on(|m| &m.target));
        let (a, b) = tokio::join!(src.list(&sources), tgt.list(&targets));
        Some((
            a.map_err(zerr(&spec.source.node))?,
            b.map_err(zerr(&spec.target.node))?,
        ))
    } else {
        None
    };
    let mut items: Vec<TidyItem<'_>> = Vec::new();
    let mut held = Vec::new();
    for (s, m, ex, x) in sent {
        let Sent {
            mut out,
            finish,
            tidy,
        } = x;
        let tidy = match (finish, &verify) {
            (Some(snap), Some((a, b))) => match ex.verify(a, b, &snap, &mut out).await {
                Ok(t) => t,
                Err(e) => {
                    failures.push((m.label().to_owned(), e));
                    continue;
                }
            },
            _ => tidy,
        };
        items.push(TidyItem { spec: s, tidy, out });
        held.push(m);
    }
    let on = |n: &str| {
        if n == spec.source.node {
            Some(src)
        } else if n == spec.target.node {
            Some(tgt)
        } else {
            None
        }
    };
    // A recursive job whose members all agree to prune a snapshot name on
    // a side prunes it with one `zfs destroy -r` of the root there.
    let trees = if recursive && failures.is_empty() {
        let listing = |end: End, m: &Member| {
            let (ep, v, l) = match end {
                End::Source => (&m.source, verify.as_ref().map(|v| &v.0), &pl),
                End::Target => (&m.target, verify.as_ref().map(|v| &v.1), &fl),
            };
            v.and_then(|v| v.get(&ep.dataset))
                .or_else(|| l.get(&ep.dataset))
                .cloned()
        };
        let has: Vec<[Option<tandem_zfs::Dataset>; 2]> = held
            .iter()
            .map(|m| [listing(End::Source, m), listing(End::Target, m)])
            .collect();
        take_tree_prunes(spec, &mut items, &has, gone.is_empty())
    } else {
        Vec::new()
    };
    let unheld = tidy_all(on, &mut items).await;
    for (end, root, parts) in trees {
        let (node, z) = match end {
            End::Source => (&spec.source.node, src),
            End::Target => (&spec.target.node, tgt),
        };
        if !unheld.is_empty() {
            // Some member's new common snapshot is not held: every member
            // keeps its older snapshots (see tidy_all).
            continue;
        }
        match z.destroy_snapshot_tree(&root, Some(&spec.claim)).await {
            Ok(_) => {
                tracing::debug!(job = %job.name, %node, snapshot = %root, "pruned with destroy -r");
                for (i, name) in parts {
                    items[i].out.pruned.push(name);
                }
            }
            Err(e) => {
                tracing::debug!(job = %job.name, %node, "destroy -r {root} failed ({e}); one by one");
                for (i, name) in parts {
                    let r = z.destroy_snapshot(&name, Some(&spec.claim)).await;
                    crate::executor::pruned(&job.name, node, &name, r, &mut items[i].out);
                }
            }
        }
    }
    for (m, TidyItem { out: o, .. }) in held.into_iter().zip(items) {
        for p in o.plans {
            if !plans.contains(&p) {
                plans.push(p);
            }
        }
        out.sent = out.sent.or(o.sent);
        out.bytes += o.bytes;
        if let Some(c) = o.common {
            out.common.get_or_insert_with(|| c.clone());
            commons.insert(m.rel.clone(), c);
        }
        out.pruned.extend(o.pruned);
        out.warnings.extend(
            o.warnings
                .into_iter()
                .map(|w| format!("{}: {w}", m.label())),
        );
    }
    out.plans = plans;
    let total = members.len();
    if let Some((member, e)) = failures.into_iter().next() {
        let failed = total - commons.len();
        return Err(ReplError::Member {
            member,
            failed,
            total,
            source: Box::new(e),
        });
    }
    Ok((out, commons))
}

/// Takes `short` on every member's source at once: one `zfs snapshot -r`
/// for a recursive job, one `zfs snapshot a@s b@s ...` where ZFS takes
/// several names (one transaction group), else one after the other, with
/// a warning that says so.
async fn snapshot_all<Z: Zfs>(
    job: &Job,
    spec: &JobSpec,
    src: &Z,
    members: &[Member],
    short: &str,
) -> Result<(), ReplError> {
    let zerr = |e| ReplError::Zfs {
        node: spec.source.node.clone(),
        source: e,
    };
    if job.members == Members::Recursive {
        let root = spec.source.dataset.snapshot(short)?;
        return src.snapshot_tree(&root).await.map_err(zerr);
    }
    let names = members
        .iter()
        .map(|m| m.source.dataset.snapshot(short))
        .collect::<Result<Vec<SnapshotName>, _>>()?;
    let atomic = src.capabilities().await.map_err(zerr)?.multi_snapshot;
    src.snapshot(&names).await.map_err(zerr)?;
    if !atomic && names.len() > 1 {
        tracing::info!(job = %job.name, node = %spec.source.node, snapshot = short,
            "this ZFS cannot snapshot several datasets in one command: the {} snapshots were \
             taken one after the other, not at one moment (OpenZFS 2.x can; a recursive job is \
             atomic everywhere)", names.len());
    }
    Ok(())
}
