//! Who is a job's primary now, from the generation marks on its datasets.
//!
//! Every change of primary (failover, switchover) writes a mark
//! `tandem:generation = "JOB N NODE"` on the new primary's dataset, with
//! `N` one more than before; `reverse` copies the mark onto the old
//! primary once it follows. The marks are the one cluster-wide fact about
//! a job's direction: every node reads them, none trusts its own state
//! alone (DESIGN.md invariant 9). An unmarked dataset stands for
//! generation 0 with the configured source as primary.
//!
//! [`resolve`] is pure: both datasets as listed in, the [`Roles`] out.

use tandem_zfs::{Dataset, Generation};

use crate::job::{Endpoint, Job};
use crate::state::{Direction, JobState};

/// A job's direction as the marks say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// The primary's end.
    pub primary: Endpoint,
    /// The other end.
    pub follower: Endpoint,
    /// The primary's mark (generation 0 naming the configured source when
    /// unmarked): the claim its writes are made under.
    pub generation: Generation,
    /// The follower's mark, `None` when its dataset does not exist yet.
    pub follower_mark: Option<Generation>,
}

impl Roles {
    /// Does the follower follow this primary? (It carries the same mark,
    /// or has no dataset yet.) A follower with an older mark is an old
    /// primary that has not been turned around by `reverse`.
    pub fn follower_agrees(&self) -> bool {
        self.follower_mark
            .as_ref()
            .is_none_or(|m| m == &self.generation)
    }

    /// Is the primary the configured source?
    pub fn forward(&self, job: &Job) -> bool {
        self.primary == job.source
    }
}

/// Two datasets of one job claim the same generation with different
/// primaries: two promotions that did not see each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job {job}: both ends carry generation {number}, {a} naming {a_primary} and {b} naming \
     {b_primary}: two promotions that did not see each other. tandem changes neither; decide \
     which side is the primary, then run `tandem reverse {job}` on a node that can reach both"
)]
pub struct SplitMarks {
    /// The job.
    pub job: String,
    /// The generation both claim.
    pub number: u64,
    /// One end.
    pub a: Endpoint,
    /// The primary its mark names.
    pub a_primary: String,
    /// The other end.
    pub b: Endpoint,
    /// The primary its mark names.
    pub b_primary: String,
}

/// The mark a listed dataset of `job` stands for (see the module docs).
pub fn mark_of(job: &Job, ds: &Dataset) -> Generation {
    ds.generation_of(job.name.as_str())
        .cloned()
        .unwrap_or_else(|| job.unmarked())
}

/// The job's roles from its two datasets as listed (`None`: absent).
pub fn resolve(
    job: &Job,
    source: Option<&Dataset>,
    target: Option<&Dataset>,
) -> Result<Roles, Box<SplitMarks>> {
    let ms = source.map(|d| mark_of(job, d));
    let mt = target.map(|d| mark_of(job, d));
    // The highest mark names the primary.
    let best = match (&ms, &mt) {
        (Some(a), Some(b)) if a.number == b.number && a.primary != b.primary => {
            return Err(Box::new(SplitMarks {
                job: job.name.to_string(),
                number: a.number,
                a: job.source.clone(),
                a_primary: a.primary.clone(),
                b: job.target.clone(),
                b_primary: b.primary.clone(),
            }))
        }
        (Some(a), Some(b)) => {
            if b.number > a.number {
                b.clone()
            } else {
                a.clone()
            }
        }
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => job.unmarked(),
    };
    let (primary, follower, follower_mark) = if best.primary == job.target.node {
        (job.target.clone(), job.source.clone(), ms)
    } else {
        (job.source.clone(), job.target.clone(), mt)
    };
    Ok(Roles {
        primary,
        follower,
        generation: best,
        follower_mark,
    })
}

/// Whether `node`, from its own dataset alone, takes itself for the job's
/// primary: its dataset's mark names it, or it is the configured source
/// and its dataset is unmarked or missing. A node that does not is a
/// follower and leaves the job to the primary's daemon; one that does may
/// still learn from the other side's newer mark that it is not.
pub fn believes_primary(job: &Job, node: &str, local: Option<&Dataset>) -> bool {
    match local {
        Some(d) => mark_of(job, d).primary == node,
        None => job.source.node == node,
    }
}

/// The primary as one machine can tell without asking the other end: the
/// highest of its own datasets' marks and of the generation its state
/// recorded (a cycle that saw both ends records what it saw). For
/// `status`, which never waits for a remote node.
pub fn known_primary(job: &Job, local: &[&Dataset], st: Option<&JobState>) -> Generation {
    let best = local
        .iter()
        .map(|d| mark_of(job, d))
        .max_by_key(|m| m.number);
    let recorded = st.map(|st| Generation {
        job: job.name.to_string(),
        number: st.generation,
        primary: match st.direction {
            Direction::Forward => job.source.node.clone(),
            Direction::Reverse => job.target.node.clone(),
        },
    });
    match (best, recorded) {
        (Some(b), Some(s)) if s.number > b.number => s,
        (Some(b), _) => b,
        (None, Some(s)) => s,
        (None, None) => job.unmarked(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_zfs::{DatasetKind, DatasetName, Guid, SendFlags, WireCompress};

    fn job() -> Job {
        let ep = |n: &str, d: &str| Endpoint {
            node: n.into(),
            dataset: DatasetName::parse(d).expect("name"),
        };
        Job {
            name: crate::naming::JobName::parse("j").expect("job"),
            source: ep("a", "pa/vm"),
            target: ep("b", "pb/vm"),
            interval: std::time::Duration::from_secs(60),
            keep: 3,
            wire: WireCompress::None,
            rate_limit: 0,
            enabled: true,
            flags: SendFlags::default(),
            hooks: Default::default(),
            failover: Default::default(),
            failover_delay: crate::job::DEFAULT_FAILOVER_DELAY,
            guest: None,
            members: Default::default(),
            fanout: Vec::new(),
        }
    }

    fn ds(name: &str, mark: Option<&str>) -> Dataset {
        Dataset {
            generation: mark.and_then(Generation::parse),
            ..Dataset::new(
                DatasetName::parse(name).expect("name"),
                DatasetKind::Filesystem,
                Guid(1),
            )
        }
    }

    #[test]
    fn unmarked_means_the_configured_direction() {
        let j = job();
        let r = resolve(&j, Some(&ds("pa/vm", None)), Some(&ds("pb/vm", None))).expect("roles");
        assert_eq!(r.primary, j.source);
        assert!(r.follower_agrees());
        assert_eq!(r.generation.number, 0);
        let r = resolve(&j, Some(&ds("pa/vm", None)), None).expect("roles");
        assert!(r.follower_agrees(), "a missing follower gets a full send");
    }

    #[test]
    fn the_newer_mark_wins_and_an_old_primary_does_not_agree() {
        let j = job();
        let r = resolve(
            &j,
            Some(&ds("pa/vm", None)),
            Some(&ds("pb/vm", Some("j 1 b"))),
        )
        .expect("roles");
        assert_eq!(r.primary, j.target);
        assert!(!r.follower_agrees(), "a has not been reversed");
        let r = resolve(
            &j,
            Some(&ds("pa/vm", Some("j 1 b"))),
            Some(&ds("pb/vm", Some("j 1 b"))),
        )
        .expect("roles");
        assert_eq!(r.primary, j.target);
        assert!(r.follower_agrees(), "after a switchover or reverse");
        // A mark of another job is not this job's.
        let r = resolve(
            &j,
            Some(&ds("pa/vm", None)),
            Some(&ds("pb/vm", Some("k 5 b"))),
        )
        .expect("roles");
        assert_eq!(r.primary, j.source);
    }

    #[test]
    fn equal_generations_naming_two_primaries_are_refused() {
        let j = job();
        let e = resolve(
            &j,
            Some(&ds("pa/vm", Some("j 2 a"))),
            Some(&ds("pb/vm", Some("j 2 b"))),
        )
        .expect_err("split");
        assert!(e.to_string().contains("generation 2"), "{e}");
    }

    #[test]
    fn a_node_believes_what_its_own_mark_says() {
        let j = job();
        assert!(believes_primary(&j, "a", Some(&ds("pa/vm", None))));
        assert!(!believes_primary(&j, "b", Some(&ds("pb/vm", None))));
        assert!(believes_primary(&j, "b", Some(&ds("pb/vm", Some("j 1 b")))));
        assert!(!believes_primary(
            &j,
            "a",
            Some(&ds("pa/vm", Some("j 1 b")))
        ));
        assert!(
            believes_primary(&j, "a", None),
            "a missing source is reported"
        );
        assert!(!believes_primary(&j, "b", None));
    }
}
