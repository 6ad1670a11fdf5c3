//! The generation guard: `tandem serve` refuses a write into a dataset from
//! a peer that acts for an older generation than the dataset's own mark
//! (a stale primary that came back), or into this node's own primary.
//!
//! Every write request carries a claim, the generation mark of the primary
//! the peer acts for ([`tandem_zfs::Claim`]). The rules, with `m` the
//! dataset's mark for the claim's job and `c` the claim:
//!
//! - no mark on the dataset: any claim passes (a new or unmarked replica);
//! - a mark but no claim, or a claim for another job: refused;
//! - `c.number < m.number`: refused, the peer is stale;
//! - equal numbers naming different primaries: refused (two promotions);
//! - equal numbers, same primary: the peer acts for the current primary.
//!   A replica of it may be written; the primary itself (the mark names
//!   this node) only by tandem's own snapshot housekeeping, never by data
//!   changes (receive, rollback, properties, rename, promote);
//! - `c.number > m.number`: the peer acts for a newer primary (reverse or a
//!   switchover bringing this dataset along): allowed.
//!
//! The guard is a safety net against old or confused nodes, not an
//! authorization mechanism: [`crate::auth`] decides who may touch what.

use tandem_zfs::{DatasetName, Generation};

/// What a write does to the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Changes its data or what it is (receive, rollback, properties,
    /// rename, promote, abort a partial receive).
    Data,
    /// tandem's own snapshot housekeeping (destroying its old snapshots).
    Housekeeping,
}

/// Whether a write into `dataset` (marked `mark`) under `claim` may go on,
/// on node `here`; the refusal says why.
pub fn check(
    dataset: &DatasetName,
    mark: Option<&Generation>,
    claim: Option<&Generation>,
    here: &str,
    write: Write,
) -> Result<(), String> {
    let Some(m) = mark else {
        return Ok(());
    };
    let Some(c) = claim.filter(|c| c.job == m.job) else {
        return Err(format!(
            "{dataset} is marked for job {} (generation {}, primary {}) and the request claims {}: \
             refusing to write into it",
            m.job,
            m.number,
            m.primary,
            claim.map_or("no generation".to_string(), |c| format!(
                "job {} generation {}",
                c.job, c.number
            ))
        ));
    };
    if c.number < m.number {
        return Err(format!(
            "{dataset} is at generation {} (primary {}) and the peer acts for generation {} \
             (primary {}): a stale primary; refusing. Run `tandem reverse {}` to make it follow",
            m.number, m.primary, c.number, c.primary, m.job
        ));
    }
    if c.number == m.number {
        if c.primary != m.primary {
            return Err(format!(
                "{dataset} is at generation {} naming {} as primary, the peer claims generation {} \
                 naming {}: two promotions that did not see each other; refusing",
                m.number, m.primary, c.number, c.primary
            ));
        }
        if m.primary == here && write == Write::Data {
            return Err(format!(
                "{dataset} is this node's ({here}) primary for job {} (generation {}): a peer \
                 never changes a primary's data; refusing",
                m.job, m.number
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Generation {
        Generation::parse(s).expect("mark")
    }

    #[test]
    fn the_rules() {
        let d = DatasetName::parse("tank/vm").expect("name");
        let ok = |m: Option<&str>, c: Option<&str>, w| {
            check(&d, m.map(g).as_ref(), c.map(g).as_ref(), "b", w).is_ok()
        };
        use Write::*;
        assert!(ok(None, None, Data), "unmarked");
        assert!(ok(None, Some("j 3 a"), Data));
        assert!(
            !ok(Some("j 1 a"), None, Data),
            "no claim on a marked dataset"
        );
        assert!(!ok(Some("j 1 a"), Some("k 1 a"), Data), "another job");
        assert!(!ok(Some("j 2 b"), Some("j 1 a"), Data), "stale");
        assert!(!ok(Some("j 2 b"), Some("j 1 a"), Housekeeping), "stale");
        assert!(!ok(Some("j 2 a"), Some("j 2 c"), Data), "split");
        assert!(ok(Some("j 2 a"), Some("j 2 a"), Data), "a replica of a");
        assert!(!ok(Some("j 2 b"), Some("j 2 b"), Data), "b's own primary");
        assert!(
            ok(Some("j 2 b"), Some("j 2 b"), Housekeeping),
            "pull housekeeping"
        );
        assert!(ok(Some("j 2 b"), Some("j 3 a"), Data), "a newer primary");
        let e = check(&d, Some(&g("j 2 b")), Some(&g("j 1 a")), "b", Data).expect_err("stale");
        assert!(e.contains("stale") && e.contains("tank/vm"), "{e}");
    }
}
