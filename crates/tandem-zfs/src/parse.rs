//! Pure parsers of `zfs` output. Each is tested on output captured from real
//! ZFS (zfs-fuse 0.7 and OpenZFS 2.x), so a format change shows up as a
//! failing unit test rather than as a wrong plan.

use std::collections::BTreeMap;

use crate::model::{Bookmark, Dataset, DatasetKind, Guid, Listing, Snapshot};
use crate::name::{BookmarkName, DatasetName, SnapshotName};

/// Output that does not look like what `zfs` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected zfs output at line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
    /// The offending line.
    pub text: String,
}

/// The properties [`parse_listing`] expects, in the order to ask for them.
/// `written` and `receive_resume_token` are asked only where supported.
pub const LISTING_PROPS: &[&str] = &[
    "type",
    "guid",
    "createtxg",
    "creation",
    "userrefs",
    "referenced",
    "readonly",
    "origin",
    crate::model::GENERATION_PROPERTY,
];

#[derive(Default)]
struct Raw {
    kind: Option<String>,
    guid: Option<u64>,
    createtxg: Option<u64>,
    creation: Option<i64>,
    userrefs: Option<u64>,
    referenced: Option<u64>,
    written: Option<u64>,
    token: Option<String>,
    generation: Option<crate::model::Generation>,
    readonly: Option<bool>,
    origin: Option<String>,
}

fn num<T: std::str::FromStr>(
    v: &str,
    line: usize,
    text: &str,
    prop: &str,
) -> Result<Option<T>, ParseError> {
    if v == "-" || v.is_empty() {
        return Ok(None);
    }
    v.parse::<T>().map(Some).map_err(|_| ParseError {
        line,
        reason: format!("property {prop} is not a number"),
        text: text.to_owned(),
    })
}

fn name_error(name: &str, e: crate::name::NameError) -> ParseError {
    ParseError {
        line: 0,
        reason: e.to_string(),
        text: name.to_owned(),
    }
}

/// A snapshot's or bookmark's identity: both GUID and createtxg are required.
fn guid_and_txg(r: &Raw, name: &str, what: &str) -> Result<(Guid, u64), ParseError> {
    match (r.guid, r.createtxg) {
        (Some(g), Some(t)) => Ok((Guid(g), t)),
        _ => Err(ParseError {
            line: 0,
            reason: format!("{what} without guid or createtxg"),
            text: name.to_owned(),
        }),
    }
}

/// Parses `zfs get -H -p -o name,property,value -r PROPS ROOTS...`.
///
/// Lines are `name<TAB>property<TAB>value`; names may contain spaces, never
/// tabs. Snapshots are attached to their dataset and sorted by `createtxg`.
/// Bookmarks and unknown types are skipped.
pub fn parse_listing(out: &str) -> Result<Listing, ParseError> {
    let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
    for (i, text) in out.lines().enumerate() {
        let line = i + 1;
        if text.is_empty() {
            continue;
        }
        let mut f = text.splitn(3, '\t');
        let (Some(name), Some(prop), Some(value)) = (f.next(), f.next(), f.next()) else {
            return Err(ParseError {
                line,
                reason: "expected three tab-separated fields".into(),
                text: text.into(),
            });
        };
        let r = raw.entry(name.to_owned()).or_default();
        match prop {
            "type" => r.kind = Some(value.to_owned()),
            "guid" => r.guid = num(value, line, text, prop)?,
            "createtxg" => r.createtxg = num(value, line, text, prop)?,
            "creation" => r.creation = num(value, line, text, prop)?,
            "userrefs" => r.userrefs = num(value, line, text, prop)?,
            "referenced" => r.referenced = num(value, line, text, prop)?,
            "written" => r.written = num(value, line, text, prop)?,
            crate::model::GENERATION_PROPERTY => {
                r.generation = crate::model::Generation::parse(value)
            }
            "readonly" => {
                r.readonly = match value {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                }
            }
            "origin" => r.origin = (value != "-" && !value.is_empty()).then(|| value.to_owned()),
            "receive_resume_token" => {
                r.token = (value != "-" && !value.is_empty()).then(|| value.to_owned())
            }
            _ => {}
        }
    }

    let mut datasets: BTreeMap<DatasetName, Dataset> = BTreeMap::new();
    let mut snaps: Vec<(String, Raw)> = Vec::new();
    let mut marks: Vec<(String, Raw)> = Vec::new();
    for (name, r) in raw {
        let kind = match r.kind.as_deref() {
            Some("filesystem") => DatasetKind::Filesystem,
            Some("volume") => DatasetKind::Volume,
            Some("snapshot") => {
                snaps.push((name, r));
                continue;
            }
            Some("bookmark") => {
                marks.push((name, r));
                continue;
            }
            // anything newer we do not replicate
            Some(_) => continue,
            None if name.contains('@') => {
                snaps.push((name, r));
                continue;
            }
            None if name.contains('#') => {
                marks.push((name, r));
                continue;
            }
            None => DatasetKind::Filesystem,
        };
        let dname = DatasetName::parse(&name).map_err(|e| name_error(&name, e))?;
        datasets.insert(
            dname.clone(),
            Dataset {
                name: dname,
                kind,
                guid: Guid(r.guid.unwrap_or(0)),
                snapshots: Vec::new(),
                bookmarks: Vec::new(),
                resume_token: r.token,
                written: r.written,
                referenced: r.referenced,
                generation: r.generation,
                readonly: r.readonly,
                origin: r
                    .origin
                    .as_deref()
                    .and_then(|o| SnapshotName::parse(o).ok()),
            },
        );
    }
    for (name, r) in snaps {
        let sname = SnapshotName::parse(&name).map_err(|e| name_error(&name, e))?;
        let (guid, createtxg) = guid_and_txg(&r, &name, "snapshot")?;
        let snap = Snapshot {
            name: sname.clone(),
            guid,
            createtxg,
            creation: r.creation.unwrap_or(0),
            userrefs: r.userrefs.unwrap_or(0),
        };
        if let Some(ds) = datasets.get_mut(sname.dataset()) {
            ds.snapshots.push(snap);
        }
    }
    for (name, r) in marks {
        let bname = BookmarkName::parse(&name).map_err(|e| name_error(&name, e))?;
        let (guid, createtxg) = guid_and_txg(&r, &name, "bookmark")?;
        if let Some(ds) = datasets.get_mut(bname.dataset()) {
            ds.bookmarks.push(Bookmark {
                name: bname,
                guid,
                createtxg,
            });
        }
    }
    for ds in datasets.values_mut() {
        ds.snapshots.sort_by_key(|s| s.createtxg);
        ds.bookmarks.sort_by_key(|b| b.createtxg);
    }
    Ok(Listing { datasets })
}

/// Parses `zfs version` output (`zfs-2.1.11-pve1\nzfs-kmod-2.1.11-pve1`)
/// into (major, minor, patch) of the userland tools.
pub fn parse_version(out: &str) -> Option<(u32, u32, u32)> {
    let first = out.lines().next()?.trim();
    let v = first.strip_prefix("zfs-")?;
    let mut it = v.split(['.', '-', '~', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// Parses the `-P` (parsable) output of `zfs send -nP`: the `size` line.
pub fn parse_send_estimate(out: &str) -> Option<u64> {
    out.lines().rev().find_map(|l| {
        let mut f = l.split('\t');
        (f.next()? == "size").then_some(())?;
        f.next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from zfs-fuse 0.7.0 (Debian bookworm) with
    /// `zfs get -H -p -o name,property,value -r type,guid,createtxg,creation,userrefs,referenced ta`.
    const ZFS_FUSE: &str = "ta\ttype\tfilesystem\nta\tguid\t13218857483803376714\nta\tcreatetxg\t1\nta\tcreation\t1795303863\nta\tuserrefs\t-\nta\treferenced\t21504\n\
ta/-dash\ttype\tfilesystem\nta/-dash\tguid\t12558732158989040574\nta/-dash\tcreatetxg\t8\nta/-dash\tcreation\t1795303863\nta/-dash\tuserrefs\t-\n\
ta/src\ttype\tfilesystem\nta/src\tguid\t1236260585048244735\nta/src\tcreatetxg\t6\nta/src\tcreation\t1795303863\nta/src\tuserrefs\t-\n\
ta/src@s2\ttype\tsnapshot\nta/src@s2\tguid\t11421187953693000803\nta/src@s2\tcreatetxg\t40\nta/src@s2\tcreation\t1795303900\nta/src@s2\tuserrefs\t1\n\
ta/src@s1\ttype\tsnapshot\nta/src@s1\tguid\t7600331672342356154\nta/src@s1\tcreatetxg\t15\nta/src@s1\tcreation\t1795303863\nta/src@s1\tuserrefs\t0\n\
ta/with space\ttype\tfilesystem\nta/with space\tguid\t6572284723678349132\nta/with space\tcreatetxg\t10\nta/with space\tcreation\t1795303863\nta/with space\tuserrefs\t-\n";

    /// OpenZFS 2.3 adds `written`, `receive_resume_token`, volumes and bookmarks.
    const OPENZFS: &str = "rpool/data/vm-100-disk-0\ttype\tvolume\nrpool/data/vm-100-disk-0\tguid\t42\nrpool/data/vm-100-disk-0\twritten\t8192\nrpool/data/vm-100-disk-0\treceive_resume_token\t1-e604ea4bf-e0-789c63a2\n\
rpool/data/vm-100-disk-0@a\ttype\tsnapshot\nrpool/data/vm-100-disk-0@a\tguid\t7\nrpool/data/vm-100-disk-0@a\tcreatetxg\t100\nrpool/data/vm-100-disk-0@a\twritten\t4096\nrpool/data/vm-100-disk-0@a\treceive_resume_token\t-\n\
rpool/data/vm-100-disk-0#a\ttype\tbookmark\nrpool/data/vm-100-disk-0#a\tguid\t7\nrpool/data/vm-100-disk-0#a\tcreatetxg\t100\n";

    #[test]
    fn parses_zfs_fuse_listing() {
        let l = parse_listing(ZFS_FUSE).expect("parse");
        assert_eq!(l.datasets.len(), 4);
        let src = l
            .get(&DatasetName::parse("ta/src").expect("n"))
            .expect("src");
        assert_eq!(src.snapshots.len(), 2);
        assert_eq!(src.snapshots[0].name.short(), "s1", "sorted by createtxg");
        assert_eq!(src.snapshots[1].guid, Guid(11421187953693000803));
        assert_eq!(src.snapshots[1].userrefs, 1);
        assert_eq!(src.written, None);
        assert!(l
            .get(&DatasetName::parse("ta/with space").expect("n"))
            .is_some());
        assert_eq!(
            l.get(&DatasetName::parse("ta").expect("n"))
                .expect("ta")
                .referenced,
            Some(21504)
        );
    }

    #[test]
    fn parses_openzfs_listing_with_tokens_and_bookmarks() {
        let l = parse_listing(OPENZFS).expect("parse");
        let v = l
            .get(&DatasetName::parse("rpool/data/vm-100-disk-0").expect("n"))
            .expect("vol");
        assert_eq!(v.kind, DatasetKind::Volume);
        assert_eq!(v.written, Some(8192));
        assert_eq!(v.resume_token.as_deref(), Some("1-e604ea4bf-e0-789c63a2"));
        assert_eq!(v.snapshots.len(), 1, "bookmark is not a snapshot");
        assert_eq!(v.bookmarks.len(), 1);
        assert_eq!(v.bookmarks[0].guid, Guid(7));
        assert_eq!(
            v.bookmarks[0].name.to_string(),
            "rpool/data/vm-100-disk-0#a"
        );
    }

    #[test]
    fn refuses_garbage() {
        let e = parse_listing("ta\tguid\n").expect_err("two fields");
        assert_eq!(e.line, 1);
        let e = parse_listing("ta\ttype\tfilesystem\nta\tguid\t12.5E\n").expect_err("rounded guid");
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("guid"));
        assert!(
            parse_listing("ta@s\ttype\tsnapshot\n").is_err(),
            "snapshot without guid"
        );
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("zfs-2.1.11-pve1\nzfs-kmod-2.1.11-pve1\n"),
            Some((2, 1, 11))
        );
        assert_eq!(
            parse_version("zfs-2.3.2-2~bpo12+2\nzfs-kmod-2.3.2-2~bpo12+2\n"),
            Some((2, 3, 2))
        );
        assert_eq!(parse_version("zfs-0.8.6-1\n"), Some((0, 8, 6)));
        assert_eq!(parse_version("unrecognized command 'version'"), None);
    }

    #[test]
    fn parses_send_estimate() {
        let out = "incremental\ta\trpool/x@b\t1234\nsize\t1234\n";
        assert_eq!(parse_send_estimate(out), Some(1234));
        assert_eq!(
            parse_send_estimate("full\trpool/x@b\t99\nsize\t99\n"),
            Some(99)
        );
        assert_eq!(parse_send_estimate("nonsense"), None);
    }
}
