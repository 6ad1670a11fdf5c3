use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use tandem_zfs::{DatasetKind, Guid};

fn ds(name: &str, snaps: &[(&str, u64, u64)], written: Option<u64>) -> Dataset {
    let n = DatasetName::parse(name).expect("name");
    Dataset {
        snapshots: snaps
            .iter()
            .map(|(s, g, txg)| Snapshot {
                name: n.snapshot(s).expect("snap"),
                guid: Guid(*g),
                createtxg: *txg,
                creation: 0,
                userrefs: 0,
            })
            .collect(),
        written,
        ..Dataset::new(n, DatasetKind::Filesystem, Guid(1))
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .expect("time")
}

fn job() -> JobName {
    JobName::parse("j").expect("job")
}

fn run(src: Option<&Dataset>, tgt: Option<&Dataset>) -> Plan {
    let sn = DatasetName::parse("a/src").expect("n");
    let tn = DatasetName::parse("b/dst").expect("n");
    plan(
        &job(),
        Side {
            dataset: src,
            name: &sn,
        },
        Side {
            dataset: tgt,
            name: &tn,
        },
        now(),
    )
    .expect("plan")
}

#[test]
fn full_when_target_missing() {
    let s = ds("a/src", &[("u1", 5, 10)], None);
    match run(Some(&s), None) {
        Plan::Full {
            to: SendTo::Create { snapshot },
        } => assert_eq!(snapshot.to_string(), "a/src@tandem_j_20261121T120000Z"),
        p => panic!("{p:?}"),
    }
}

#[test]
fn source_missing_is_a_conflict() {
    assert!(matches!(
        run(None, None),
        Plan::Conflict(Conflict::SourceMissing { .. })
    ));
}

#[test]
fn incremental_base_is_matched_by_guid_not_name() {
    // The target renamed the common snapshot; a same-named one has another GUID.
    let s = ds(
        "a/src",
        &[("tandem_j_20261121T110000Z", 7, 10), ("x", 8, 20)],
        None,
    );
    let t = ds("b/dst", &[("renamed", 7, 3)], Some(0));
    match run(Some(&s), Some(&t)) {
        Plan::Incremental {
            base, target_base, ..
        } => {
            assert_eq!(base.guid, Guid(7));
            assert_eq!(target_base.name.short(), "renamed");
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn same_name_other_guid_is_no_common_snapshot() {
    let s = ds("a/src", &[("s1", 7, 10)], None);
    let t = ds("b/dst", &[("s1", 99, 3)], None);
    match run(Some(&s), Some(&t)) {
        Plan::Conflict(c @ Conflict::NoCommonSnapshot { .. }) => {
            assert!(c.to_string().contains("b/dst@s1"), "{c}");
            assert!(c.advice().contains("zfs rename"));
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn target_snapshot_after_base_is_divergence() {
    let s = ds("a/src", &[("tandem_j_20261121T110000Z", 7, 10)], None);
    let t = ds(
        "b/dst",
        &[("tandem_j_20261121T110000Z", 7, 3), ("mine", 50, 9)],
        None,
    );
    match run(Some(&s), Some(&t)) {
        Plan::Conflict(c @ Conflict::TargetDiverged { .. }) => {
            assert!(c.to_string().contains("b/dst@mine"), "{c}")
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn target_writes_are_divergence_where_written_is_known() {
    let s = ds("a/src", &[("tandem_j_20261121T110000Z", 7, 10)], Some(0));
    let t = ds("b/dst", &[("tandem_j_20261121T110000Z", 7, 3)], Some(4096));
    assert!(matches!(
        run(Some(&s), Some(&t)),
        Plan::Conflict(Conflict::TargetDiverged {
            written: Some(4096),
            ..
        })
    ));
}

#[test]
fn up_to_date_only_when_written_is_known_zero() {
    let s = ds("a/src", &[("tandem_j_20261121T110000Z", 7, 10)], Some(0));
    let t = ds("b/dst", &[("tandem_j_20261121T110000Z", 7, 3)], Some(0));
    assert!(matches!(run(Some(&s), Some(&t)), Plan::UpToDate { .. }));
    // zfs-fuse: written unknown, so snapshot and send (an empty increment).
    let s = ds("a/src", &[("tandem_j_20261121T110000Z", 7, 10)], None);
    assert!(matches!(
        run(Some(&s), Some(&t)),
        Plan::Incremental {
            to: SendTo::Create { .. },
            ..
        }
    ));
}

#[test]
fn unsent_own_snapshot_is_reused() {
    let s = ds(
        "a/src",
        &[
            ("tandem_j_20261121T110000Z", 7, 10),
            ("tandem_j_20261121T115900Z", 8, 12),
        ],
        Some(0),
    );
    let t = ds("b/dst", &[("tandem_j_20261121T110000Z", 7, 3)], Some(0));
    match run(Some(&s), Some(&t)) {
        Plan::Incremental {
            to: SendTo::Existing { snapshot },
            ..
        } => assert_eq!(snapshot.short(), "tandem_j_20261121T115900Z"),
        p => panic!("{p:?}"),
    }
}

#[test]
fn new_names_never_collide_within_a_second() {
    let s = ds("a/src", &[("tandem_j_20261121T120000Z", 7, 10)], None);
    let t = ds("b/dst", &[("tandem_j_20261121T120000Z", 7, 3)], None);
    match run(Some(&s), Some(&t)) {
        Plan::Incremental {
            to: SendTo::Create { snapshot },
            ..
        } => assert_eq!(snapshot.short(), "tandem_j_20261121T120001Z"),
        p => panic!("{p:?}"),
    }
    // the same, half a second later
    let sn = DatasetName::parse("a/src").expect("n");
    let tn = DatasetName::parse("b/dst").expect("n");
    let later = now() + chrono::Duration::milliseconds(500);
    match plan(
        &job(),
        Side {
            dataset: Some(&s),
            name: &sn,
        },
        Side {
            dataset: Some(&t),
            name: &tn,
        },
        later,
    )
    .expect("plan")
    {
        Plan::Incremental {
            to: SendTo::Create { snapshot },
            ..
        } => assert_eq!(snapshot.short(), "tandem_j_20261121T120001Z"),
        p => panic!("{p:?}"),
    }
}

#[test]
fn a_bookmark_keeps_the_increment_when_the_common_snapshot_was_destroyed() {
    let mut s = ds(
        "a/src",
        &[("tandem_j_20261121T100000Z", 5, 8), ("daily", 9, 14)],
        Some(100),
    );
    let t = ds(
        "b/dst",
        &[
            ("tandem_j_20261121T100000Z", 5, 2),
            ("tandem_j_20261121T110000Z", 7, 3),
        ],
        Some(0),
    );
    // Without a bookmark the target would look diverged (it has a snapshot
    // after the newest one the source still has): a human would be needed.
    assert!(matches!(
        run(Some(&s), Some(&t)),
        Plan::Conflict(Conflict::TargetDiverged { .. })
    ));
    // The newer common snapshot (GUID 7) was destroyed on the source, its bookmark remains.
    s.bookmarks.push(tandem_zfs::Bookmark {
        name: DatasetName::parse("a/src")
            .expect("n")
            .bookmark("tandem_j_20261121T110000Z")
            .expect("bm"),
        guid: Guid(7),
        createtxg: 11,
    });
    match run(Some(&s), Some(&t)) {
        Plan::IncrementalFromBookmark {
            bookmark,
            target_base,
            ..
        } => {
            assert_eq!(bookmark.guid, Guid(7));
            assert_eq!(target_base.guid, Guid(7));
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn resume_token_wins() {
    let s = ds("a/src", &[("s", 7, 10)], None);
    let mut t = ds("b/dst", &[], None);
    t.resume_token = Some("1-abc".into());
    assert_eq!(
        run(Some(&s), Some(&t)),
        Plan::Resume {
            token: "1-abc".into()
        }
    );
}

#[test]
fn retention_keeps_newest_own_and_protected() {
    let d = ds(
        "a/src",
        &[
            ("tandem_j_20261121T100000Z", 1, 1),
            ("user", 2, 2),
            ("tandem_j_20261121T110000Z", 3, 3),
            ("tandem_other_20261121T110000Z", 4, 4),
            ("tandem_j_20261121T120000Z", 5, 5),
        ],
        None,
    );
    let gone = retention(&job(), &d, 2, &[Guid(5)]);
    assert_eq!(
        gone.iter().map(|s| s.short()).collect::<Vec<_>>(),
        ["tandem_j_20261121T100000Z"]
    );
    assert!(
        retention(&job(), &d, 2, &[]).is_empty(),
        "no known common snapshot: prune nothing"
    );
    // The protected one survives even with keep = 1 when it is not the newest.
    let gone = retention(&job(), &d, 1, &[Guid(3)]);
    assert_eq!(
        gone.iter().map(|s| s.short()).collect::<Vec<_>>(),
        ["tandem_j_20261121T100000Z"]
    );
}

// ---- property tests over random histories ----

#[derive(Debug, Clone)]
enum Ev {
    SrcOwn,
    SrcUser,
    SrcWrite,
    Replicate,
    TgtUser,
    TgtWrite,
    SrcDestroy(usize),
    TgtDestroy(usize),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => Just(Ev::SrcOwn),
        2 => Just(Ev::SrcUser),
        2 => Just(Ev::SrcWrite),
        6 => Just(Ev::Replicate),
        1 => Just(Ev::TgtUser),
        1 => Just(Ev::TgtWrite),
        1 => any::<usize>().prop_map(Ev::SrcDestroy),
        1 => any::<usize>().prop_map(Ev::TgtDestroy),
    ]
}

struct World {
    src: Dataset,
    tgt: Option<Dataset>,
    txg: u64,
    guid: u64,
    minute: u32,
}

impl World {
    fn snap(&mut self, on_target: bool, short: &str) {
        self.txg += 1;
        self.guid += 1;
        let d = if on_target {
            self.tgt.as_mut()
        } else {
            Some(&mut self.src)
        };
        if let Some(d) = d {
            if d.by_short(short).is_some() {
                return;
            }
            let name = d.name.snapshot(short).expect("snap");
            d.snapshots.push(Snapshot {
                name,
                guid: Guid(self.guid),
                createtxg: self.txg,
                creation: 0,
                userrefs: 0,
            });
            d.written = Some(0);
        }
    }

    fn newest_common_guid(&self) -> Option<Guid> {
        self.tgt
            .as_ref()
            .and_then(|t| newest_common(&self.src, t))
            .map(|(s, _)| s.guid)
    }
}

fn check_plan(w: &World, p: &Plan) -> Result<(), TestCaseError> {
    match p {
        Plan::Incremental {
            base,
            target_base,
            to,
        } => {
            let t = w.tgt.as_ref().expect("incremental needs a target");
            prop_assert_eq!(base.guid, target_base.guid);
            prop_assert!(w.src.by_guid(base.guid).is_some());
            prop_assert!(t.by_guid(base.guid).is_some());
            prop_assert_eq!(
                Some(base.guid),
                w.newest_common_guid(),
                "base must be the newest common snapshot"
            );
            prop_assert!(
                !t.snapshots
                    .iter()
                    .any(|s| s.createtxg > target_base.createtxg),
                "target has nothing after the base"
            );
            if let SendTo::Existing { snapshot } = to {
                prop_assert!(job().parse_own(snapshot.short()).is_some());
            }
        }
        Plan::Full { .. } => prop_assert!(w.tgt.is_none()),
        Plan::UpToDate { common } => prop_assert_eq!(Some(common.guid), w.newest_common_guid()),
        Plan::Conflict(Conflict::NoCommonSnapshot { .. }) => {
            prop_assert!(w.newest_common_guid().is_none())
        }
        Plan::Conflict(Conflict::TargetDiverged { .. }) => {
            prop_assert!(w.newest_common_guid().is_some())
        }
        Plan::IncrementalFromBookmark { .. } => prop_assert!(false, "no bookmarks in this model"),
        Plan::Conflict(Conflict::SourceMissing { .. }) | Plan::Resume { .. } => {}
    }
    Ok(())
}

fn apply(w: &mut World, p: &Plan, keep: usize) -> Result<(), TestCaseError> {
    let (from_txg, to) = match p {
        Plan::Full { to } => (None, to.clone()),
        Plan::Incremental { base, to, .. } => (Some(base.createtxg), to.clone()),
        _ => return Ok(()),
    };
    if let SendTo::Create { snapshot } = &to {
        w.snap(false, snapshot.short());
    }
    let to_snap = w
        .src
        .by_short(to.snapshot().short())
        .cloned()
        .expect("send-to exists on source");
    let sent: Vec<Snapshot> = w
        .src
        .snapshots
        .iter()
        .filter(|s| from_txg.is_none_or(|b| s.createtxg > b) && s.createtxg <= to_snap.createtxg)
        .filter(|s| from_txg.is_some() || s.guid == to_snap.guid)
        .cloned()
        .collect();
    let tname = DatasetName::parse("b/dst").expect("n");
    let t = w.tgt.get_or_insert_with(|| ds("b/dst", &[], Some(0)));
    for s in sent {
        w.txg += 1;
        t.snapshots.push(Snapshot {
            name: s.name.on(&tname).expect("n"),
            createtxg: w.txg,
            ..s
        });
    }
    t.written = Some(0);
    // retention on both sides, protecting the new common snapshot
    let protect = [to_snap.guid];
    for victim in retention(&job(), &w.src, keep, &protect) {
        prop_assert!(
            job().parse_own(victim.short()).is_some(),
            "only own snapshots are pruned"
        );
        prop_assert!(w.src.by_short(victim.short()).map(|s| s.guid) != Some(to_snap.guid));
        w.src.snapshots.retain(|s| s.name != victim);
    }
    let t = w.tgt.as_mut().expect("target");
    for victim in retention(&job(), t, keep, &protect) {
        prop_assert!(
            job().parse_own(victim.short()).is_some(),
            "only own snapshots are pruned"
        );
        t.snapshots.retain(|s| s.name != victim);
    }
    prop_assert!(
        w.src.by_guid(to_snap.guid).is_some()
            && w.tgt
                .as_ref()
                .and_then(|t| t.by_guid(to_snap.guid))
                .is_some(),
        "newest common survives retention"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]
    #[test]
    fn planner_invariants_hold_over_random_histories(events in proptest::collection::vec(ev(), 1..40), keep in 1usize..4) {
        let mut w = World { src: ds("a/src", &[], Some(1)), tgt: None, txg: 1, guid: 100, minute: 0 };
        let sn = DatasetName::parse("a/src").expect("n");
        let tn = DatasetName::parse("b/dst").expect("n");
        for e in events {
            w.minute += 1;
            let t = now() + chrono::Duration::minutes(i64::from(w.minute));
            match e {
                Ev::SrcOwn => { let s = job().snapshot_short(t); w.snap(false, &s) }
                Ev::SrcUser => { let s = format!("user{}", w.minute); w.snap(false, &s) }
                Ev::SrcWrite => w.src.written = Some(512),
                Ev::TgtUser => { let s = format!("tuser{}", w.minute); w.snap(true, &s) }
                Ev::TgtWrite => if let Some(t) = w.tgt.as_mut() { t.written = Some(512) },
                Ev::SrcDestroy(i) => {
                    // another tool may destroy anything but the held common snapshot
                    let common = w.newest_common_guid();
                    let n = w.src.snapshots.len();
                    if n > 0 && Some(w.src.snapshots[i % n].guid) != common { w.src.snapshots.remove(i % n); }
                }
                Ev::TgtDestroy(i) => {
                    let common = w.newest_common_guid();
                    if let Some(t) = w.tgt.as_mut() {
                        let n = t.snapshots.len();
                        if n > 0 && Some(t.snapshots[i % n].guid) != common { t.snapshots.remove(i % n); }
                    }
                }
                Ev::Replicate => {
                    let p = plan(&job(), Side { dataset: Some(&w.src), name: &sn }, Side { dataset: w.tgt.as_ref(), name: &tn }, t).expect("plan");
                    check_plan(&w, &p)?;
                    apply(&mut w, &p, keep)?;
                    if matches!(p, Plan::Full { .. } | Plan::Incremental { .. }) {
                        // right after a successful cycle the sides agree
                        let p2 = plan(&job(), Side { dataset: Some(&w.src), name: &sn }, Side { dataset: w.tgt.as_ref(), name: &tn }, t).expect("plan");
                        prop_assert!(matches!(p2, Plan::UpToDate { .. }), "after a cycle: {:?}", p2);
                    }
                }
            }
        }
    }
}
