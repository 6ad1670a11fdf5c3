//! [`CliZfs`]: the [`Zfs`] trait over the `zfs` command line, locally or
//! through ssh.

use std::process::Stdio;

use tokio::sync::OnceCell;

use crate::caps::Capabilities;
use crate::error::ZfsError;
use crate::model::Listing;
use crate::name::{check_user_property, BookmarkName, DatasetName, HoldTag, SnapshotName};
use crate::ops::{Changed, Claim, RecvSpec, SendBase, SendRequest, Zfs};
use crate::parse::{parse_listing, parse_send_estimate, LISTING_PROPS};
use crate::process::{Invocation, Transport};
use crate::stream::{RecvStream, SendStream};

/// [`Zfs`] through the `zfs` program.
///
/// On legacy ZFS (zfs-fuse) every call that changes the pool is serialized:
/// zfs-fuse deadlocks when datasets are created or mounted concurrently
/// (reproduced with four parallel `zfs create` loops), and a receive mounts.
#[derive(Debug)]
pub struct CliZfs {
    node: String,
    transport: Transport,
    zfs: String,
    zpool: String,
    caps: OnceCell<Capabilities>,
    serial: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl CliZfs {
    /// `zfs` (at path `zfs`) on `node` through `transport`.
    pub fn new(node: &str, transport: Transport, zfs: &str) -> Self {
        Self {
            node: node.to_owned(),
            transport,
            zfs: zfs.to_owned(),
            zpool: zfs
                .strip_suffix("zfs")
                .map(|p| format!("{p}zpool"))
                .unwrap_or_else(|| "zpool".into()),
            caps: OnceCell::new(),
            serial: Default::default(),
        }
    }

    /// Uses `path` for `zpool` (default: beside `zfs`).
    pub fn with_zpool(mut self, path: &str) -> Self {
        self.zpool = path.to_owned();
        self
    }

    /// Serializes pool-changing calls where ZFS needs it (legacy zfs-fuse).
    async fn serial(&self) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ZfsError> {
        if self.caps().await?.serialize_changes() {
            Ok(Some(self.serial.clone().lock_owned().await))
        } else {
            Ok(None)
        }
    }

    /// `zfs hold|release TAG SNAP...` in one process per [`MANY_CHUNK`]
    /// names. ZFS goes on past a name it cannot hold or release and says
    /// why on one line naming it, so each name gets its own result from
    /// that line; where a line names none of them (ssh failed, say), each
    /// name is tried alone.
    async fn many(
        &self,
        verb: &str,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> Vec<Result<Changed, ZfsError>> {
        let already = |e: &ZfsError| match verb {
            "hold" => matches!(e, ZfsError::HoldExists { .. }),
            _ => matches!(e, ZfsError::HoldNotFound { .. }) || e.is_not_found(),
        };
        let mut out = Vec::with_capacity(snaps.len());
        for chunk in snaps.chunks(MANY_CHUNK) {
            if chunk.len() > 1 {
                let mut a = vec![verb.to_owned(), tag.to_string()];
                a.extend(chunk.iter().map(|n| n.to_string()));
                let inv = self.inv(a);
                let r = match self.serial().await {
                    Ok(_serial) => inv.output_raw().await,
                    Err(e) => Err(e),
                };
                // A failure with nothing said names no one: tried alone below.
                let said = |(_, err, code): &(String, String, Option<i32>)| {
                    *code == Some(0) || !err.trim().is_empty()
                };
                if let Some((_, err, code)) = r.as_ref().ok().filter(|r| said(r)) {
                    if let Some(lines) = attribute(err, chunk) {
                        out.extend(lines.into_iter().map(|line| match line {
                            None => Ok(Changed::Done),
                            Some(l) => {
                                let e = ZfsError::classify(&inv.display(), *code, l, false);
                                if already(&e) {
                                    Ok(Changed::Already)
                                } else {
                                    Err(e)
                                }
                            }
                        }));
                        continue;
                    }
                }
            }
            for s in chunk {
                out.push(if verb == "hold" {
                    self.hold(tag, s).await
                } else {
                    self.release(tag, s).await
                });
            }
        }
        out
    }

    fn inv(&self, args: Vec<String>) -> Invocation {
        Invocation::new(&self.node, &self.transport, &self.zfs, args)
    }

    async fn caps(&self) -> Result<&Capabilities, ZfsError> {
        self.caps
            .get_or_try_init(|| async {
                let (out, err, code) = self.inv(vec!["version".into()]).output_raw().await?;
                if code == Some(0) {
                    if let Some(c) = Capabilities::from_version_output(&out) {
                        return Ok(c);
                    }
                }
                if Capabilities::is_legacy_version_error(&err) {
                    tracing::info!(node = %self.node, missing = ?Capabilities::legacy().missing(), "legacy ZFS (zfs-fuse): degraded mode");
                    return Ok(Capabilities::legacy());
                }
                Err(ZfsError::classify(&self.inv(vec!["version".into()]).display(), code, &err, matches!(self.transport, Transport::Ssh(_))))
            })
            .await
    }

    fn unsupported(&self, caps: &Capabilities, what: &str) -> ZfsError {
        ZfsError::Unsupported {
            node: self.node.clone(),
            what: what.to_owned(),
            version: caps.version.clone(),
        }
    }

    /// Runs `zfs ARGS` up to `tries` times, waiting 100 ms, 200 ms, …
    /// between tries, while `retry` calls the error passing.
    async fn output_retrying(
        &self,
        args: Vec<String>,
        tries: u64,
        retry: impl Fn(&ZfsError) -> bool,
    ) -> Result<String, ZfsError> {
        let mut attempt = 0u64;
        loop {
            match self.inv(args.clone()).output().await {
                Ok(out) => return Ok(out),
                Err(e) if attempt + 1 < tries && retry(&e) => {
                    attempt += 1;
                    tracing::debug!(args = ?args, error = %e, "retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send_args(
        &self,
        caps: &Capabilities,
        req: &SendRequest,
        dry: bool,
    ) -> Result<Vec<String>, ZfsError> {
        let mut a = vec!["send".to_owned()];
        if dry {
            a.push("-nP".into());
        }
        match req {
            SendRequest::Resume { token } => {
                if !caps.resume {
                    return Err(self.unsupported(caps, "resuming a send (send -t)"));
                }
                a.push("-t".into());
                a.push(token.clone());
            }
            SendRequest::Snapshot {
                snapshot,
                from,
                intermediates,
                flags,
            } => {
                if flags.raw {
                    if !caps.send_raw {
                        return Err(self.unsupported(caps, "raw sends (send -w)"));
                    }
                    a.push("-w".into());
                }
                if flags.compressed || flags.large_blocks || flags.embedded {
                    if !caps.send_compressed {
                        return Err(self.unsupported(caps, "send -c/-L/-e"));
                    }
                    if flags.compressed {
                        a.push("-c".into());
                    }
                    if flags.large_blocks {
                        a.push("-L".into());
                    }
                    if flags.embedded {
                        a.push("-e".into());
                    }
                }
                match from {
                    Some(SendBase::Snapshot(base)) => {
                        a.push(if *intermediates { "-I" } else { "-i" }.into());
                        a.push(base.to_string());
                    }
                    Some(SendBase::Bookmark(bm)) => {
                        if !caps.bookmarks {
                            return Err(self.unsupported(caps, "sends from a bookmark"));
                        }
                        a.push("-i".into());
                        a.push(bm.to_string());
                    }
                    None => {}
                }
                a.push(snapshot.to_string());
            }
        }
        Ok(a)
    }
}

/// Maps "already so" errors of idempotent operations to [`Changed::Already`].
/// Names per `zfs hold`/`zfs release` call: well inside any command
/// line limit, ssh's included.
const MANY_CHUNK: usize = 256;

/// Which line of a many-name `zfs hold`/`zfs release`'s stderr names
/// which snapshot (`cannot hold 'pool/ds@s': tag already exists ...`):
/// per snapshot, its complaint or none. `None` if a line names none of
/// them, so the caller cannot tell who failed.
fn attribute<'e>(err: &'e str, names: &[SnapshotName]) -> Option<Vec<Option<&'e str>>> {
    let mut by = vec![None; names.len()];
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let quoted = line.split('\'').skip(1).step_by(2);
        let i = quoted
            .filter_map(|q| names.iter().position(|n| n.to_string() == q))
            .next()?;
        by[i] = Some(line);
    }
    Some(by)
}

fn idempotent(
    r: Result<String, ZfsError>,
    already: impl Fn(&ZfsError) -> bool,
) -> Result<Changed, ZfsError> {
    match r {
        Ok(_) => Ok(Changed::Done),
        Err(e) if already(&e) => Ok(Changed::Already),
        Err(e) => Err(e),
    }
}

impl Zfs for CliZfs {
    fn node(&self) -> &str {
        &self.node
    }

    async fn capabilities(&self) -> Result<Capabilities, ZfsError> {
        self.caps().await.cloned()
    }

    async fn destroy_snapshot_tree(
        &self,
        root: &SnapshotName,
        _claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        idempotent(
            self.inv(vec!["destroy".into(), "-r".into(), root.to_string()])
                .output()
                .await,
            ZfsError::is_not_found,
        )
    }

    async fn list(&self, roots: &[DatasetName]) -> Result<Listing, ZfsError> {
        if roots.is_empty() {
            return Ok(Listing::default());
        }
        let caps = self.caps().await?;
        let mut props: Vec<&str> = LISTING_PROPS.to_vec();
        if caps.written {
            props.push("written");
        }
        if caps.resume {
            props.push("receive_resume_token");
        }
        let mut args: Vec<String> = ["get", "-H", "-p", "-o", "name,property,value", "-d", "1"]
            .map(String::from)
            .to_vec();
        if caps.bookmarks {
            args.push("-t".into());
            args.push("filesystem,volume,snapshot,bookmark".into());
        }
        args.push(props.join(","));
        args.extend(roots.iter().map(|r| r.to_string()));
        let inv = self.inv(args);
        let (out, err, code) = inv.output_raw().await?;
        if code != Some(0) {
            // zfs get prints what it can and complains about each missing root.
            let only_missing = !err.trim().is_empty()
                && err.lines().filter(|l| !l.trim().is_empty()).all(|l| {
                    ZfsError::classify(&inv.display(), code, l, inv.via_ssh()).is_not_found()
                });
            if !only_missing {
                return Err(ZfsError::classify(
                    &inv.display(),
                    code,
                    &err,
                    inv.via_ssh(),
                ));
            }
        }
        parse_listing(&out).map_err(|e| ZfsError::Parse {
            cmd: inv.display(),
            source: e,
        })
    }

    async fn snapshot(&self, names: &[SnapshotName]) -> Result<(), ZfsError> {
        if names.is_empty() {
            return Ok(());
        }
        let _serial = self.serial().await?;
        let caps = self.caps().await?;
        if caps.multi_snapshot {
            let mut a = vec!["snapshot".to_owned()];
            a.extend(names.iter().map(|n| n.to_string()));
            self.inv(a).output().await?;
        } else {
            for n in names {
                self.inv(vec!["snapshot".into(), n.to_string()])
                    .output()
                    .await?;
            }
        }
        Ok(())
    }

    async fn snapshot_tree(&self, root: &SnapshotName) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        self.inv(vec!["snapshot".into(), "-r".into(), root.to_string()])
            .output()
            .await?;
        Ok(())
    }

    async fn destroy_snapshot(
        &self,
        name: &SnapshotName,
        _claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        idempotent(
            self.inv(vec!["destroy".into(), name.to_string()])
                .output()
                .await,
            ZfsError::is_not_found,
        )
    }

    async fn hold(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        let r = self
            .inv(vec!["hold".into(), tag.to_string(), snap.to_string()])
            .output()
            .await;
        idempotent(r, |e| matches!(e, ZfsError::HoldExists { .. }))
    }

    async fn release(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        let r = self
            .inv(vec!["release".into(), tag.to_string(), snap.to_string()])
            .output()
            .await;
        idempotent(r, |e| {
            matches!(e, ZfsError::HoldNotFound { .. }) || e.is_not_found()
        })
    }

    async fn hold_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> Vec<Result<Changed, ZfsError>> {
        self.many("hold", tag, snaps).await
    }

    async fn release_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> Vec<Result<Changed, ZfsError>> {
        self.many("release", tag, snaps).await
    }

    async fn rollback(&self, snap: &SnapshotName, _claim: Claim<'_>) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        self.inv(vec!["rollback".into(), snap.to_string()])
            .output()
            .await
            .map(|_| ())
    }

    async fn set_property(
        &self,
        ds: &DatasetName,
        prop: &str,
        value: &str,
        _claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        if prop.contains(':') {
            check_user_property(prop)?;
        } else if !prop.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(crate::name::NameError {
                input: prop.to_owned(),
                reason: "not a property name".into(),
            }
            .into());
        }
        self.inv(vec![
            "set".into(),
            format!("{prop}={value}"),
            ds.to_string(),
        ])
        .output()
        .await
        .map(|_| ())
    }

    async fn get_property(&self, ds: &DatasetName, prop: &str) -> Result<Option<String>, ZfsError> {
        let out = self
            .inv(vec![
                "get".into(),
                "-H".into(),
                "-p".into(),
                "-o".into(),
                "value".into(),
                prop.to_owned(),
                ds.to_string(),
            ])
            .output()
            .await?;
        let v = out.trim_end_matches('\n').to_owned();
        Ok((v != "-").then_some(v))
    }

    async fn send(&self, req: &SendRequest) -> Result<SendStream, ZfsError> {
        let caps = self.caps().await?;
        let args = self.send_args(caps, req, false)?;
        SendStream::from_process(self.inv(args).spawn(Stdio::null(), Stdio::piped())?)
    }

    async fn receive(&self, spec: &RecvSpec) -> Result<RecvStream, ZfsError> {
        let caps = self.caps().await?;
        let mut a = vec!["receive".to_owned()];
        if spec.resumable {
            if !caps.resume {
                return Err(self.unsupported(caps, "resumable receive (receive -s)"));
            }
            a.push("-s".into());
        }
        if spec.unmounted || !spec.set.is_empty() || !spec.exclude.is_empty() {
            if !caps.recv_options {
                return Err(self.unsupported(caps, "receive -u/-o/-x"));
            }
            if spec.unmounted {
                a.push("-u".into());
            }
            for (k, v) in &spec.set {
                a.push("-o".into());
                a.push(format!("{k}={v}"));
            }
            for k in &spec.exclude {
                a.push("-x".into());
                a.push(k.clone());
            }
        }
        let target = spec.target.as_ref().ok_or_else(|| crate::name::NameError {
            input: String::new(),
            reason: "receive without a target".into(),
        })?;
        a.push(target.to_string());
        let serial = self.serial().await?;
        let mut p = self.inv(a).spawn(Stdio::piped(), Stdio::null())?;
        if let Some(g) = serial {
            p.keep_until_exit(Box::new(g));
        }
        RecvStream::from_process(p)
    }

    async fn receive_abort(
        &self,
        ds: &DatasetName,
        _claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        let caps = self.caps().await?;
        if !caps.resume {
            return Ok(Changed::Already);
        }
        let r = self
            .inv(vec!["receive".into(), "-A".into(), ds.to_string()])
            .output()
            .await;
        idempotent(r, |e| {
            e.is_not_found() || matches!(e, ZfsError::NoResumeState { .. })
        })
    }

    async fn estimate(&self, req: &SendRequest) -> Result<Option<u64>, ZfsError> {
        let caps = self.caps().await?;
        if !caps.send_estimate {
            return Ok(None);
        }
        let args = self.send_args(caps, req, true)?;
        let (out, err, code) = self.inv(args.clone()).output_raw().await?;
        if code != Some(0) {
            return Err(ZfsError::classify(
                &self.inv(args).display(),
                code,
                &err,
                matches!(self.transport, Transport::Ssh(_)),
            ));
        }
        // OpenZFS prints -nP output on stdout (older versions on stderr).
        Ok(parse_send_estimate(&out).or_else(|| parse_send_estimate(&err)))
    }

    async fn sync(&self, datasets: &[DatasetName]) -> Result<(), ZfsError> {
        if datasets.is_empty() || !self.caps().await?.written {
            return Ok(());
        }
        let mut pools: Vec<String> = datasets.iter().map(|d| d.pool().to_owned()).collect();
        pools.sort();
        pools.dedup();
        let mut a = vec!["sync".to_owned()];
        a.extend(pools);
        Invocation::new(&self.node, &self.transport, &self.zpool, a)
            .output()
            .await
            .map(|_| ())
    }

    async fn bookmark(&self, snap: &SnapshotName, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        if !self.caps().await?.bookmarks {
            return Ok(Changed::Already);
        }
        let r = self
            .inv(vec!["bookmark".into(), snap.to_string(), bm.to_string()])
            .output()
            .await;
        idempotent(r, |e| matches!(e, ZfsError::AlreadyExists { .. }))
    }

    async fn destroy_bookmark(&self, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        idempotent(
            self.inv(vec!["destroy".into(), bm.to_string()])
                .output()
                .await,
            ZfsError::is_not_found,
        )
    }

    /// zfs-fuse refuses to rename a mounted filesystem that was written to
    /// ("dataset is busy") although nothing uses it; then the filesystem is
    /// unmounted (never forced: a real user keeps it busy and the rename
    /// fails), renamed, and mounted at its new place.
    async fn rename(
        &self,
        from: &DatasetName,
        to: &DatasetName,
        _claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        let rename = vec!["rename".to_string(), from.to_string(), to.to_string()];
        match self.inv(rename.clone()).output().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_busy() => {
                tracing::debug!(%from, error = %e, "rename: busy; unmounting first");
                // zfs-fuse may report the mount busy for a moment after
                // writes; a few tries, never a forced unmount...
                self.output_retrying(vec!["unmount".into(), from.to_string()], 10, |_| true)
                    .await?;
                // ...and its unmount takes a moment to release the dataset.
                self.output_retrying(rename, 11, ZfsError::is_busy).await?;
                if let Err(e) = self
                    .inv(vec!["mount".into(), to.to_string()])
                    .output()
                    .await
                {
                    tracing::warn!(%to, error = %e, "renamed, but cannot mount it at its new place");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn clone_snapshot(
        &self,
        snap: &SnapshotName,
        to: &DatasetName,
        props: &[(&str, &str)],
        _claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        let mut args = vec!["clone".to_string()];
        for (k, v) in props {
            args.push("-o".into());
            args.push(format!("{k}={v}"));
        }
        args.push(snap.to_string());
        args.push(to.to_string());
        self.inv(args).output().await.map(|_| ())
    }

    async fn promote(&self, ds: &DatasetName, _claim: Claim<'_>) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        self.inv(vec!["promote".into(), ds.to_string()])
            .output()
            .await
            .map(|_| ())
    }

    async fn create_container(
        &self,
        ds: &DatasetName,
        props: &[(&str, &str)],
    ) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        let mut args: Vec<String> = vec![
            "create".into(),
            "-p".into(),
            "-o".into(),
            "canmount=off".into(),
        ];
        for (k, v) in props {
            if k.contains(':') {
                check_user_property(k)?;
            }
            args.push("-o".into());
            args.push(format!("{k}={v}"));
        }
        args.push(ds.to_string());
        let r = self.inv(args).output().await;
        idempotent(r, |e| matches!(e, ZfsError::AlreadyExists { .. }))
    }

    /// A just-used mount on zfs-fuse can be "busy" for a moment; a few
    /// tries, never a forced unmount (a real user keeps it busy).
    async fn destroy_dataset(
        &self,
        ds: &DatasetName,
        _claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        let r = self
            .output_retrying(
                vec!["destroy".into(), ds.to_string()],
                10,
                ZfsError::is_busy,
            )
            .await;
        idempotent(r, ZfsError::is_not_found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(s: &str) -> SnapshotName {
        SnapshotName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_many_name_complaint_is_pinned_to_the_name_it_quotes() {
        // What zfs-fuse prints for `zfs release t p/a@9 p/a@1 p/a@2`.
        let names = [snap("p/a@9"), snap("p/a@1"), snap("p/a@2")];
        let err = "cannot release 't' from 'p/a@9': dataset does not exist\n\
                   cannot release 't' from 'p/a@2': no such tag on this dataset\n";
        let by = attribute(err, &names).unwrap_or_else(|| panic!("attributed"));
        assert!(by[0].is_some_and(|l| l.contains("does not exist")));
        assert_eq!(by[1], None, "p/a@1 was released");
        assert!(by[2].is_some_and(|l| l.contains("no such tag")));
        // A line that names none of them: no one can be told apart.
        assert_eq!(attribute("ssh: connect to host x: refused\n", &names), None);
        assert_eq!(attribute("", &names), Some(vec![None, None, None]));
    }
}
