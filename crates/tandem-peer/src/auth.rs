//! Authorization of peer requests. Decided from the request alone, before
//! any ZFS call, so a refused request cannot have touched a pool.

use tandem_zfs::{DatasetName, SendRequest, SnapshotName};

use crate::proto::Request;

/// Prefix of everything tandem creates.
const OWN: &str = "tandem_";
/// Properties a peer may set (on datasets it may write): `readonly`, and
/// tandem's generation mark, which a planned switchover moves to the peer.
const SETTABLE: &[&str] = &["readonly", tandem_zfs::GENERATION_PROPERTY];
/// Properties a peer may override in a receive, or set on a clone.
const RECEIVE_SETTABLE: &[&str] = &["readonly"];
/// The container, directly under a pool, where `reverse` sets an old
/// primary's divergent state aside.
pub const DIVERGED: &str = "tandem-diverged";

/// What one peer may do on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The peer's identity (ssh: the `--peer` of its forced command; TLS:
    /// its certificate's name).
    pub peer: String,
    /// Datasets (and everything below them) it may list and send from, and
    /// whose tandem snapshots it may manage.
    pub read: Vec<DatasetName>,
    /// Datasets it may also receive into, roll back and mark read-only.
    pub write: Vec<DatasetName>,
}

impl Policy {
    fn readable(&self, d: &DatasetName) -> bool {
        self.read.iter().chain(&self.write).any(|p| d.is_within(p))
    }

    fn writable(&self, d: &DatasetName) -> bool {
        self.write.iter().any(|p| d.is_within(p))
    }

    fn need_read(&self, d: &DatasetName) -> Result<(), String> {
        if self.readable(d) {
            Ok(())
        } else {
            Err(format!(
                "{d} is outside the datasets peer {} may read ({})",
                self.peer,
                list(&self.read, &self.write)
            ))
        }
    }

    /// Is `d` in the diverged area (`POOL/tandem-diverged` or below) of a
    /// pool that holds a dataset this peer may write?
    fn in_diverged_area(&self, d: &DatasetName) -> bool {
        self.write.iter().any(|w| {
            DatasetName::parse(&format!("{}/{DIVERGED}", w.pool()))
                .is_ok_and(|area| d.is_within(&area))
        })
    }

    fn need_write_or_diverged(&self, d: &DatasetName) -> Result<(), String> {
        if self.in_diverged_area(d) {
            Ok(())
        } else {
            self.need_write(d)
        }
    }

    fn need_write(&self, d: &DatasetName) -> Result<(), String> {
        if self.writable(d) {
            Ok(())
        } else {
            Err(format!(
                "{d} is outside the datasets peer {} may write ({})",
                self.peer,
                list(&self.write, &[])
            ))
        }
    }

    fn own_snapshot(&self, s: &SnapshotName) -> Result<(), String> {
        self.need_read(s.dataset())?;
        if s.short().starts_with(OWN) {
            Ok(())
        } else {
            Err(format!("{s} is not a tandem snapshot (only {OWN}* snapshots may be created or destroyed by a peer)"))
        }
    }

    fn own_bookmark(&self, b: &tandem_zfs::BookmarkName) -> Result<(), String> {
        self.need_read(b.dataset())?;
        if b.short().starts_with(OWN) {
            Ok(())
        } else {
            Err(format!("{b} is not a tandem bookmark (only {OWN}* bookmarks may be created or destroyed by a peer)"))
        }
    }

    fn own_tag(tag: &str) -> Result<(), String> {
        if tag.starts_with(OWN) {
            Ok(())
        } else {
            Err(format!("hold tag {tag:?} is not tandem's ({OWN}*)"))
        }
    }

    /// Allowed, or why not.
    pub fn check(&self, req: &Request) -> Result<(), String> {
        match req {
            Request::Hello { .. } | Request::Capabilities => Ok(()),
            Request::List { roots } | Request::Sync { datasets: roots } => roots.iter().try_for_each(|r| self.need_read(r)),
            Request::GetProperty { dataset, .. } => self.need_read(dataset),
            Request::Send { request, .. } | Request::Estimate { request } => match request {
                SendRequest::Snapshot { snapshot, from, .. } => {
                    self.need_read(snapshot.dataset())?;
                    from.iter().try_for_each(|f| self.need_read(f.dataset()))
                }
                SendRequest::Resume { .. } => Err("resuming a send through the peer agent is not supported yet; the sending node resumes locally".into()),
            },
            Request::Snapshot { names, .. } => names.iter().try_for_each(|n| self.own_snapshot(n)),
            Request::DestroySnapshot { name, .. } => self.own_snapshot(name),
            Request::Bookmark { snapshot, bookmark } => {
                self.need_read(snapshot.dataset())?;
                self.own_bookmark(bookmark)
            }
            Request::DestroyBookmark { bookmark } => self.own_bookmark(bookmark),
            Request::Hold { tag, snapshot } | Request::Release { tag, snapshot } => {
                Self::own_tag(tag)?;
                self.need_read(snapshot.dataset())
            }
            Request::HoldMany { tag, snapshots } | Request::ReleaseMany { tag, snapshots } => {
                Self::own_tag(tag)?;
                snapshots
                    .iter()
                    .try_for_each(|s| self.need_read(s.dataset()))
            }
            Request::Rollback { snapshot, .. } => self.need_write(snapshot.dataset()),
            Request::SetProperty { dataset, prop, .. } => {
                self.need_write(dataset)?;
                if SETTABLE.contains(&prop.as_str()) {
                    Ok(())
                } else {
                    Err(format!("property {prop:?} may not be set by a peer"))
                }
            }
            Request::Receive { spec } => {
                let t = spec.target.as_ref().ok_or("receive without a target")?;
                self.need_write(t)?;
                if spec.set.iter().any(|(k, _)| !RECEIVE_SETTABLE.contains(&k.as_str())) || !spec.exclude.is_empty() {
                    return Err("receive property overrides other than readonly are not allowed".into());
                }
                Ok(())
            }
            Request::ReceiveAbort { dataset, .. } => self.need_write(dataset),
            // reverse: the follower is set aside whole into the diverged
            // area of its pool and rebuilt from a snapshot there.
            Request::Rename { from, to, .. } => {
                self.need_write(from)?;
                if to.pool() != from.pool() {
                    return Err(format!("{from} may not be renamed into another pool ({to})"));
                }
                self.need_write_or_diverged(to)
            }
            Request::Clone { snapshot, to, props, .. } => {
                self.need_write_or_diverged(snapshot.dataset())?;
                self.need_write(to)?;
                if props.iter().any(|(k, _)| !RECEIVE_SETTABLE.contains(&k.as_str())) {
                    return Err("clone properties other than readonly are not allowed".into());
                }
                Ok(())
            }
            Request::Promote { dataset, .. } => self.need_write(dataset),
            Request::CreateContainer { dataset, props } => {
                if !props.is_empty() {
                    return Err("container properties are not allowed".into());
                }
                self.need_write_or_diverged(dataset)
            }
        }
    }
}

fn list(a: &[DatasetName], b: &[DatasetName]) -> String {
    let v: Vec<String> = a.iter().chain(b).map(|d| d.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_zfs::RecvSpec;

    fn d(s: &str) -> DatasetName {
        DatasetName::parse(s).expect("name")
    }
    fn sn(s: &str) -> SnapshotName {
        SnapshotName::parse(s).expect("snap")
    }

    #[test]
    fn prefixes_and_ownership_are_enforced() {
        let p = Policy {
            peer: "oracle".into(),
            read: vec![d("rpool/data")],
            write: vec![d("tank/replica")],
        };
        assert!(p
            .check(&Request::List {
                roots: vec![d("rpool/data/vm-1"), d("tank/replica/x")]
            })
            .is_ok());
        let e = p
            .check(&Request::List {
                roots: vec![d("rpool/database")],
            })
            .expect_err("prefix is not a string prefix");
        assert!(e.contains("rpool/database") && e.contains("oracle"), "{e}");
        assert!(p
            .check(&Request::Receive {
                spec: RecvSpec {
                    target: Some(d("tank/replica/vm")),
                    ..RecvSpec::default()
                }
            })
            .is_ok());
        let e = p
            .check(&Request::Receive {
                spec: RecvSpec {
                    target: Some(d("rpool/data/vm")),
                    ..RecvSpec::default()
                },
            })
            .expect_err("read-only area");
        assert!(e.contains("may write"), "{e}");
        assert!(p
            .check(&Request::DestroySnapshot {
                name: sn("rpool/data/vm@tandem_j_20260101T000000Z"),
                claim: None,
                recursive: false,
            })
            .is_ok());
        assert!(
            p.check(&Request::DestroySnapshot {
                name: sn("rpool/data/vm@daily"),
                claim: None,
                recursive: true,
            })
            .is_err(),
            "not tandem's"
        );
        assert!(p
            .check(&Request::Hold {
                tag: "keep".into(),
                snapshot: sn("rpool/data/vm@tandem_x")
            })
            .is_err());
        // Many names: every one must be readable, the tag tandem's.
        let many = |tag: &str, names: &[&str]| Request::HoldMany {
            tag: tag.into(),
            snapshots: names.iter().map(|n| sn(n)).collect(),
        };
        let ok = ["rpool/data/vm@tandem_a", "tank/replica/vm@tandem_a"];
        assert!(p.check(&many("tandem_@oracle", &ok)).is_ok());
        assert!(p.check(&many("keep", &ok)).is_err(), "not tandem's tag");
        let e = p
            .check(&many(
                "tandem_@oracle",
                &["rpool/data/vm@tandem_a", "other/x@tandem_a"],
            ))
            .expect_err("one outside what the peer may read");
        assert!(e.contains("other/x"), "{e}");
        assert!(p
            .check(&Request::SetProperty {
                dataset: d("tank/replica/vm"),
                prop: "mountpoint".into(),
                value: "/".into(),
                claim: None,
            })
            .is_err());
        assert!(p
            .check(&Request::SetProperty {
                dataset: d("tank/replica/vm"),
                prop: "readonly".into(),
                value: "on".into(),
                claim: None,
            })
            .is_ok());
        assert!(
            p.check(&Request::Rollback {
                snapshot: sn("rpool/data/vm@tandem_x"),
                claim: None,
            })
            .is_err(),
            "rollback needs write"
        );
        // reverse's operations: into the pool's diverged area only.
        let rename = |to: &str| Request::Rename {
            from: d("tank/replica/vm"),
            to: d(to),
            claim: None,
        };
        assert!(p
            .check(&rename("tank/tandem-diverged/j-20260101T000000Z"))
            .is_ok());
        assert!(p.check(&rename("tank/elsewhere")).is_err());
        assert!(
            p.check(&rename("rpool/tandem-diverged/x")).is_err(),
            "other pool"
        );
        assert!(p
            .check(&Request::Clone {
                snapshot: sn("tank/tandem-diverged/j-1@tandem_j_20260101T000000Z"),
                to: d("tank/replica/vm"),
                props: vec![("readonly".into(), "on".into())],
                claim: None,
            })
            .is_ok());
        assert!(p
            .check(&Request::Clone {
                snapshot: sn("tank/tandem-diverged/j-1@s"),
                to: d("tank/replica/vm"),
                props: vec![("mountpoint".into(), "/".into())],
                claim: None,
            })
            .is_err());
        assert!(p
            .check(&Request::CreateContainer {
                dataset: d("tank/tandem-diverged"),
                props: vec![],
            })
            .is_ok());
        assert!(p
            .check(&Request::CreateContainer {
                dataset: d("tank/tandem-diverged"),
                props: vec![("tandem:test".into(), "j".into())],
            })
            .is_err());
        assert!(p
            .check(&Request::CreateContainer {
                dataset: d("rpool/tandem-diverged"),
                props: vec![],
            })
            .is_err());
        assert!(p
            .check(&Request::Promote {
                dataset: d("rpool/data/vm"),
                claim: None
            })
            .is_err());
        let mut spec = RecvSpec {
            target: Some(d("tank/replica/vm")),
            ..RecvSpec::default()
        };
        spec.set.push(("mountpoint".into(), "/etc".into()));
        assert!(p.check(&Request::Receive { spec }).is_err());
    }
}
