//! One ZFS backend type for every node, whatever reaches it.

use tandem_peer::client::PeerZfs;
use tandem_zfs::BookmarkName;
use tandem_zfs::{
    Capabilities, Changed, Claim, CliZfs, DatasetName, HoldTag, Listing, RecvSpec, RecvStream,
    SendRequest, SendStream, SnapshotName, Zfs, ZfsError,
};

/// A node's ZFS: the `zfs` command (local or over ssh), or a remote
/// `tandem serve`.
#[derive(Debug)]
pub enum NodeZfs {
    /// `zfs` locally or through ssh.
    Cli(CliZfs),
    /// A peer agent.
    Peer(PeerZfs),
}

macro_rules! delegate {
    ($self:ident, $z:ident => $e:expr) => {
        match $self {
            NodeZfs::Cli($z) => $e,
            NodeZfs::Peer($z) => $e,
        }
    };
}

impl Zfs for NodeZfs {
    fn node(&self) -> &str {
        delegate!(self, z => z.node())
    }
    async fn capabilities(&self) -> Result<Capabilities, ZfsError> {
        delegate!(self, z => z.capabilities().await)
    }
    async fn list(&self, roots: &[DatasetName]) -> Result<Listing, ZfsError> {
        delegate!(self, z => z.list(roots).await)
    }
    async fn snapshot(&self, names: &[SnapshotName]) -> Result<(), ZfsError> {
        delegate!(self, z => z.snapshot(names).await)
    }
    async fn snapshot_tree(&self, root: &SnapshotName) -> Result<(), ZfsError> {
        delegate!(self, z => z.snapshot_tree(root).await)
    }
    async fn destroy_snapshot(
        &self,
        name: &SnapshotName,
        claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.destroy_snapshot(name, claim).await)
    }
    async fn destroy_snapshot_tree(
        &self,
        root: &SnapshotName,
        claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.destroy_snapshot_tree(root, claim).await)
    }
    async fn hold(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.hold(tag, snap).await)
    }
    async fn release(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.release(tag, snap).await)
    }
    async fn hold_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> Vec<Result<Changed, ZfsError>> {
        delegate!(self, z => z.hold_many(tag, snaps).await)
    }
    async fn release_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> Vec<Result<Changed, ZfsError>> {
        delegate!(self, z => z.release_many(tag, snaps).await)
    }
    async fn rollback(&self, snap: &SnapshotName, claim: Claim<'_>) -> Result<(), ZfsError> {
        delegate!(self, z => z.rollback(snap, claim).await)
    }
    async fn set_property(
        &self,
        ds: &DatasetName,
        prop: &str,
        value: &str,
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        delegate!(self, z => z.set_property(ds, prop, value, claim).await)
    }
    async fn get_property(&self, ds: &DatasetName, prop: &str) -> Result<Option<String>, ZfsError> {
        delegate!(self, z => z.get_property(ds, prop).await)
    }
    async fn send(&self, req: &SendRequest) -> Result<SendStream, ZfsError> {
        delegate!(self, z => z.send(req).await)
    }
    async fn receive(&self, spec: &RecvSpec) -> Result<RecvStream, ZfsError> {
        delegate!(self, z => z.receive(spec).await)
    }
    async fn receive_abort(&self, ds: &DatasetName, claim: Claim<'_>) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.receive_abort(ds, claim).await)
    }
    async fn estimate(&self, req: &SendRequest) -> Result<Option<u64>, ZfsError> {
        delegate!(self, z => z.estimate(req).await)
    }
    async fn sync(&self, datasets: &[DatasetName]) -> Result<(), ZfsError> {
        delegate!(self, z => z.sync(datasets).await)
    }
    async fn bookmark(&self, snap: &SnapshotName, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.bookmark(snap, bm).await)
    }
    async fn destroy_bookmark(&self, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.destroy_bookmark(bm).await)
    }
    async fn rename(
        &self,
        from: &DatasetName,
        to: &DatasetName,
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        delegate!(self, z => z.rename(from, to, claim).await)
    }
    async fn clone_snapshot(
        &self,
        snap: &SnapshotName,
        to: &DatasetName,
        props: &[(&str, &str)],
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        delegate!(self, z => z.clone_snapshot(snap, to, props, claim).await)
    }
    async fn promote(&self, ds: &DatasetName, claim: Claim<'_>) -> Result<(), ZfsError> {
        delegate!(self, z => z.promote(ds, claim).await)
    }
    async fn create_container(
        &self,
        ds: &DatasetName,
        props: &[(&str, &str)],
    ) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.create_container(ds, props).await)
    }
    async fn destroy_dataset(
        &self,
        ds: &DatasetName,
        claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        delegate!(self, z => z.destroy_dataset(ds, claim).await)
    }
}
