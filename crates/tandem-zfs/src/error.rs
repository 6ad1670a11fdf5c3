//! Typed ZFS errors. `zfs` reports failures as English text on stderr; it is
//! classified here, once, so the layers above branch on variants instead of
//! matching strings.

use crate::name::NameError;
use crate::parse::ParseError;

/// A failed ZFS operation. Every variant carries the command that failed
/// (`cmd`, as the operator would type it, with the node) and what ZFS said.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    /// The dataset or snapshot does not exist.
    #[error("{cmd}: dataset does not exist: {msg}")]
    DatasetNotFound {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// The dataset is busy (mounted and in use, being received into, held).
    #[error("{cmd}: dataset is busy: {msg}")]
    DatasetBusy {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// The pool is out of space.
    #[error("{cmd}: out of space: {msg}")]
    NoSpace {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// A resume token refers to a snapshot or state that no longer exists.
    #[error("{cmd}: the receive resume token is stale: {msg}")]
    ResumeTokenStale {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// The incremental base of a stream is not the target's newest snapshot.
    #[error("{cmd}: the target's newest snapshot is not the incremental base: {msg}")]
    NoCommonSnapshot {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// The target was modified (written, or snapshotted) after the base.
    #[error("{cmd}: the target has been modified since its newest snapshot: {msg}")]
    TargetDiverged {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// A full stream was sent to a dataset that already exists.
    #[error("{cmd}: the target dataset already exists: {msg}")]
    TargetExists {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// `zfs hold` with a tag the snapshot already has.
    #[error("{cmd}: hold tag already exists: {msg}")]
    HoldExists {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// The dataset, snapshot or bookmark to create exists already.
    #[error("{cmd}: already exists: {msg}")]
    AlreadyExists {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// A snapshot to destroy is the origin of a clone.
    #[error("{cmd}: the snapshot has dependent clones: {msg}")]
    HasClones {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// `zfs receive -A` on a dataset without a partial receive.
    #[error("{cmd}: no resumable receive state: {msg}")]
    NoResumeState {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// `zfs release` with a tag the snapshot does not have.
    #[error("{cmd}: no such hold tag: {msg}")]
    HoldNotFound {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// The stream was truncated or corrupt.
    #[error("{cmd}: invalid or truncated stream: {msg}")]
    StreamCorrupt {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// Not allowed (delegation, not root).
    #[error("{cmd}: permission denied: {msg}")]
    PermissionDenied {
        /// Command.
        cmd: String,
        /// ZFS's message.
        msg: String,
    },
    /// The ZFS on this node cannot do what was asked.
    #[error("node {node}: {what} is not supported by {version}")]
    Unsupported {
        /// Node.
        node: String,
        /// Feature.
        what: String,
        /// ZFS version string.
        version: String,
    },
    /// ssh could not reach or log in to the node (exit 255).
    #[error("{cmd}: ssh failed: {msg}")]
    Ssh {
        /// Command.
        cmd: String,
        /// ssh's message.
        msg: String,
    },
    /// The program could not be started at all.
    #[error("{cmd}: cannot start {program}: {source}")]
    Spawn {
        /// Command.
        cmd: String,
        /// The program (zfs or ssh) path.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An I/O error on a pipe to or from zfs.
    #[error("{cmd}: {source}")]
    Io {
        /// Command.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// zfs printed something we cannot parse.
    #[error("{cmd}: {source}")]
    Parse {
        /// Command.
        cmd: String,
        /// What was wrong.
        source: ParseError,
    },
    /// A name from the world is not a valid ZFS name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Any other failure, with zfs's exit code and message.
    #[error("{cmd}: failed ({}): {msg}", code.map(|c| format!("exit {c}")).unwrap_or_else(|| "killed".into()))]
    Failed {
        /// Command.
        cmd: String,
        /// Exit code, None when killed by a signal.
        code: Option<i32>,
        /// ZFS's message.
        msg: String,
    },
}

impl ZfsError {
    /// The variant's name, for carrying an error across the network.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DatasetNotFound { .. } => "DatasetNotFound",
            Self::DatasetBusy { .. } => "DatasetBusy",
            Self::NoSpace { .. } => "NoSpace",
            Self::ResumeTokenStale { .. } => "ResumeTokenStale",
            Self::NoCommonSnapshot { .. } => "NoCommonSnapshot",
            Self::TargetDiverged { .. } => "TargetDiverged",
            Self::TargetExists { .. } => "TargetExists",
            Self::HoldExists { .. } => "HoldExists",
            Self::HoldNotFound { .. } => "HoldNotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::HasClones { .. } => "HasClones",
            Self::NoResumeState { .. } => "NoResumeState",
            Self::StreamCorrupt { .. } => "StreamCorrupt",
            Self::PermissionDenied { .. } => "PermissionDenied",
            Self::Unsupported { .. } => "Unsupported",
            Self::Ssh { .. } => "Ssh",
            Self::Spawn { .. } => "Spawn",
            Self::Io { .. } => "Io",
            Self::Parse { .. } => "Parse",
            Self::Name(_) => "Name",
            Self::Failed { .. } => "Failed",
        }
    }

    /// Rebuilds an error received from a peer: the variant from `kind`,
    /// the text as the peer reported it.
    pub fn from_kind(kind: &str, cmd: String, msg: String) -> Self {
        match kind {
            "DatasetNotFound" => Self::DatasetNotFound { cmd, msg },
            "DatasetBusy" => Self::DatasetBusy { cmd, msg },
            "NoSpace" => Self::NoSpace { cmd, msg },
            "ResumeTokenStale" => Self::ResumeTokenStale { cmd, msg },
            "NoCommonSnapshot" => Self::NoCommonSnapshot { cmd, msg },
            "TargetDiverged" => Self::TargetDiverged { cmd, msg },
            "TargetExists" => Self::TargetExists { cmd, msg },
            "HoldExists" => Self::HoldExists { cmd, msg },
            "HoldNotFound" => Self::HoldNotFound { cmd, msg },
            "AlreadyExists" => Self::AlreadyExists { cmd, msg },
            "HasClones" => Self::HasClones { cmd, msg },
            "NoResumeState" => Self::NoResumeState { cmd, msg },
            "StreamCorrupt" => Self::StreamCorrupt { cmd, msg },
            "PermissionDenied" => Self::PermissionDenied { cmd, msg },
            _ => Self::Failed {
                cmd,
                code: None,
                msg,
            },
        }
    }

    /// Classifies a failed `zfs` run from its stderr. `via_ssh` tells whether
    /// exit status 255 means ssh itself failed.
    pub fn classify(cmd: &str, code: Option<i32>, stderr: &str, via_ssh: bool) -> Self {
        let msg = stderr.trim().replace('\n', " ");
        let l = msg.to_ascii_lowercase();
        let cmd = cmd.to_owned();
        let has = |s: &str| l.contains(s);
        if via_ssh && code == Some(255) {
            return Self::Ssh { cmd, msg };
        }
        if has("tag already exists") {
            Self::HoldExists { cmd, msg }
        } else if has("does not have any resumable receive state") {
            Self::NoResumeState { cmd, msg }
        } else if has("dependent clones") {
            Self::HasClones { cmd, msg }
        } else if has("no such tag") {
            Self::HoldNotFound { cmd, msg }
        } else if has("resume token") && (has("corrupt") || has("invalid") || has("stale"))
            || has("used snapshot no longer exists")
            || has("kernel modules must be upgraded to receive this stream")
            || (has("resume") && (has("does not exist") || has("no longer exists")))
        {
            Self::ResumeTokenStale { cmd, msg }
        } else if has("dataset does not exist")
            || has("no such pool")
            || has("could not find any snapshots")
        {
            Self::DatasetNotFound { cmd, msg }
        } else if has("has been modified")
            || has("destination has snapshots")
            || has("must destroy them to overwrite")
        {
            Self::TargetDiverged { cmd, msg }
        } else if has("does not match incremental source")
            || has("not an earlier snapshot from the same fs")
        {
            Self::NoCommonSnapshot { cmd, msg }
        } else if has("destination") && has("exists") {
            Self::TargetExists { cmd, msg }
        } else if has("already exists") || has("bookmark exists") {
            Self::AlreadyExists { cmd, msg }
        } else if has("out of space") || has("no space left") || has("quota exceeded") {
            Self::NoSpace { cmd, msg }
        } else if has("is busy") || has("dataset is busy") {
            Self::DatasetBusy { cmd, msg }
        } else if has("checksum mismatch")
            || has("invalid stream")
            || has("failed to read from stream")
            || has("incomplete stream")
            || has("invalid backup stream")
        {
            Self::StreamCorrupt { cmd, msg }
        } else if has("permission denied") || has("operation not permitted") {
            Self::PermissionDenied { cmd, msg }
        } else {
            Self::Failed { cmd, code, msg }
        }
    }

    /// Is this a "does not exist" error?
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::DatasetNotFound { .. })
    }

    /// Is this a "dataset is busy" error (worth a retry in a moment)?
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::DatasetBusy { .. })
    }

    /// The command that failed and what ZFS said, for the variants that
    /// carry them (the others: an empty command and the message).
    pub fn parts(&self) -> (String, String) {
        match self {
            Self::DatasetNotFound { cmd, msg }
            | Self::DatasetBusy { cmd, msg }
            | Self::NoSpace { cmd, msg }
            | Self::ResumeTokenStale { cmd, msg }
            | Self::NoCommonSnapshot { cmd, msg }
            | Self::TargetDiverged { cmd, msg }
            | Self::TargetExists { cmd, msg }
            | Self::HoldExists { cmd, msg }
            | Self::HoldNotFound { cmd, msg }
            | Self::AlreadyExists { cmd, msg }
            | Self::HasClones { cmd, msg }
            | Self::NoResumeState { cmd, msg }
            | Self::StreamCorrupt { cmd, msg }
            | Self::PermissionDenied { cmd, msg }
            | Self::Ssh { cmd, msg }
            | Self::Failed { cmd, msg, .. } => (cmd.clone(), msg.clone()),
            other => (String::new(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line was captured from zfs-fuse 0.7 or OpenZFS 2.x.
    #[test]
    fn classifies_captured_messages() {
        let c = |s: &str| ZfsError::classify("zfs x", Some(1), s, false);
        assert!(matches!(
            c("cannot open 'ta/nope@x': dataset does not exist"),
            ZfsError::DatasetNotFound { .. }
        ));
        assert!(matches!(
            c("cannot destroy 'ta/src@s1': dataset is busy"),
            ZfsError::DatasetBusy { .. }
        ));
        assert!(matches!(
            c("cannot hold 'ta/src@s1': tag already exists on this dataset"),
            ZfsError::HoldExists { .. }
        ));
        assert!(matches!(
            c("cannot release 'tandem_y' from 'ta/src@s1': no such tag on this dataset"),
            ZfsError::HoldNotFound { .. }
        ));
        assert!(matches!(c("cannot receive incremental stream: destination tb/dst has been modified\nsince most recent snapshot"), ZfsError::TargetDiverged { .. }));
        assert!(matches!(c("cannot receive new filesystem stream: destination 'tb/dst' exists\nmust specify -F to overwrite it"), ZfsError::TargetExists { .. }));
        assert!(matches!(c("cannot receive incremental stream: most recent snapshot of tb/other does not\nmatch incremental source"), ZfsError::NoCommonSnapshot { .. }));
        assert!(matches!(
            c("cannot receive: failed to read from stream"),
            ZfsError::StreamCorrupt { .. }
        ));
        assert!(matches!(c("cannot receive incremental stream: destination tb/x has snapshots (eg. tb/x@u)\nmust destroy them to overwrite it"), ZfsError::TargetDiverged { .. }));
        assert!(matches!(
            c("cannot resume send: 'p/a@s' used in the initial send no longer exists"),
            ZfsError::ResumeTokenStale { .. }
        ));
        assert!(matches!(
            c("cannot resume send: kernel modules must be upgraded to receive this stream."),
            ZfsError::ResumeTokenStale { .. }
        ));
        assert!(matches!(
            c("cannot receive new filesystem stream: out of space"),
            ZfsError::NoSpace { .. }
        ));
        assert!(matches!(
            c("cannot receive: checksum mismatch or incomplete stream"),
            ZfsError::StreamCorrupt { .. }
        ));
        assert!(matches!(
            c("cannot create 'ta/tandem-diverged': dataset already exists"),
            ZfsError::AlreadyExists { .. }
        ));
        assert!(matches!(
            c("cannot create bookmark 'p/a#tandem_j_x': bookmark exists"),
            ZfsError::AlreadyExists { .. }
        ));
        assert!(matches!(
            c("cannot destroy 'ta/vm@tandem_j_x': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\nta/tandem-diverged/j-1"),
            ZfsError::HasClones { .. }
        ));
        assert!(matches!(
            c("'p/vm' does not have any resumable receive state to abort"),
            ZfsError::NoResumeState { .. }
        ));
        assert!(matches!(
            c("cannot rename 'ta/vm': dataset is busy"),
            ZfsError::DatasetBusy { .. }
        ));
        assert!(matches!(
            c("something else entirely"),
            ZfsError::Failed { code: Some(1), .. }
        ));
        let e = ZfsError::classify(
            "ssh -p 2 h zfs list",
            Some(255),
            "ssh: connect to host h port 2: Connection refused",
            true,
        );
        assert!(matches!(e, ZfsError::Ssh { .. }));
        assert!(e.to_string().contains("Connection refused"));
    }
}
