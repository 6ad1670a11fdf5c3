//! What the ZFS on a node can do. Probed once per node: OpenZFS 2.x
//! (Proxmox ships 2.1–2.3) has everything tandem uses; zfs-fuse 0.7, the
//! old userspace port used for the quick test tier, lacks resumable
//! receives, bookmarks, zvols, `written`, `zfs list -p` and most send and
//! receive flags. tandem degrades clearly on it instead of failing.

use serde::{Deserialize, Serialize};

/// The features tandem uses, as found on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `zfs version`'s first line, or "zfs-fuse (legacy)".
    pub version: String,
    /// `receive -s`, `send -t`, `receive -A`, `receive_resume_token`.
    pub resume: bool,
    /// Bookmarks (`zfs bookmark`, `send -i #bm`).
    pub bookmarks: bool,
    /// The `written` property.
    pub written: bool,
    /// Several snapshots in one atomic `zfs snapshot` call.
    pub multi_snapshot: bool,
    /// `send -c` (compressed), `-L` (large blocks), `-e` (embedded).
    pub send_compressed: bool,
    /// `send -w` (raw, for encrypted datasets).
    pub send_raw: bool,
    /// `send -nP` size estimates.
    pub send_estimate: bool,
    /// `receive -u` (do not mount) and `-o`/`-x` (property overrides).
    pub recv_options: bool,
}

impl Capabilities {
    /// Everything OpenZFS 2.x has.
    pub fn openzfs(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            resume: true,
            bookmarks: true,
            written: true,
            multi_snapshot: true,
            send_compressed: true,
            send_raw: true,
            send_estimate: true,
            recv_options: true,
        }
    }

    /// The old zfs-fuse 0.7 command set.
    pub fn legacy() -> Self {
        Self {
            version: "zfs-fuse (legacy ZFS, no zfs version command)".to_owned(),
            resume: false,
            bookmarks: false,
            written: false,
            multi_snapshot: false,
            send_compressed: false,
            send_raw: false,
            send_estimate: false,
            recv_options: false,
        }
    }

    /// From `zfs version` output; `None` if it is not OpenZFS's format.
    pub fn from_version_output(out: &str) -> Option<Self> {
        let (major, minor, _) = crate::parse::parse_version(out)?;
        let first = out.lines().next().unwrap_or_default().trim();
        let mut c = Self::openzfs(first);
        // 0.7 introduced resume and bookmarks; 0.8 raw sends; assume >= 0.7.
        if (major, minor) < (0, 8) {
            c.send_raw = false;
        }
        Some(c)
    }

    /// Does this `zfs version` failure mean the old zfs-fuse command set
    /// (which has no `version` subcommand)?
    pub fn is_legacy_version_error(stderr: &str) -> bool {
        stderr.contains("unrecognized command")
    }

    /// Must pool-changing calls be serialized? (zfs-fuse deadlocks on
    /// concurrent creates and mounts.)
    pub fn serialize_changes(&self) -> bool {
        !self.resume
    }

    /// The features this node lacks, for a one-line warning.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.resume {
            m.push("resumable receive");
        }
        if !self.bookmarks {
            m.push("bookmarks");
        }
        if !self.written {
            m.push("the written property (every cycle takes a snapshot)");
        }
        if !self.send_estimate {
            m.push("send size estimates");
        }
        if !self.recv_options {
            m.push("receive -u/-o/-x");
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_capabilities() {
        let c = Capabilities::from_version_output("zfs-2.1.11-pve1\nzfs-kmod-2.1.11-pve1\n")
            .expect("2.1");
        assert!(c.resume && c.send_raw && c.written);
        assert_eq!(c.version, "zfs-2.1.11-pve1");
        assert!(Capabilities::from_version_output("unrecognized command 'version'").is_none());
        assert!(!Capabilities::legacy().missing().is_empty());
        assert!(Capabilities::openzfs("x").missing().is_empty());
    }
}
