//! PVE's two text formats that tandem reads, parsed leniently (PVE wrote
//! them; a line tandem does not understand is kept out, never an error):
//!
//! - **section config** (`replication.cfg`, `storage.cfg`,
//!   `ha/resources.cfg`): a line `TYPE: ID` at column 0 opens a section;
//!   indented `key value` lines belong to it; `#` lines are comments.
//! - **guest config** (`qemu-server/VMID.conf`, `lxc/VMID.conf`): `key:
//!   value` lines; the guest's current settings end at the first `[NAME]`
//!   line (snapshots and pending changes follow it); `#` lines at the top
//!   are the guest's description.

/// One section of a section-config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its type (`local`, `zfspool`, `vm`, ...).
    pub kind: String,
    /// Its ID (`100-0`, `local-zfs`, `100`).
    pub id: String,
    /// Its properties in file order; a flag without a value (`sparse`)
    /// has an empty value.
    pub props: Vec<(String, String)>,
    /// The 1-based line of its header, for messages.
    pub line: usize,
}

impl Section {
    /// The value of property `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether boolean property `key` is set to true (`1`, `yes`, `on`,
    /// `true`, or a bare flag).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v.trim(), "" | "1" | "yes" | "on" | "true"))
    }
}

/// Parses a section-config file.
pub fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut open = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() {
            open = false;
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            open = false;
            if let Some((kind, id)) = line.split_once(':') {
                let (kind, id) = (kind.trim(), id.trim());
                let id = id.split_whitespace().next().unwrap_or("");
                if !kind.is_empty() && !id.is_empty() && !kind.contains(char::is_whitespace) {
                    out.push(Section {
                        kind: kind.to_string(),
                        id: id.to_string(),
                        props: Vec::new(),
                        line: i + 1,
                    });
                    open = true;
                }
            }
            continue;
        }
        if let (true, Some(s)) = (open, out.last_mut()) {
            let body = line.trim();
            let (k, v) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
            s.props.push((k.to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The current settings of a guest config: `key: value` pairs up to the
/// first `[section]` line, in file order.
pub fn guest_settings(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// A volume option string (`local-zfs:vm-100-disk-0,size=32G,replicate=0`):
/// the volume (the first item, or the value of `key=`) and the other
/// `key=value` options.
pub fn volume_options<'a>(value: &'a str, key: &str) -> (Option<&'a str>, Vec<(&'a str, &'a str)>) {
    let mut volume = None;
    let mut opts = Vec::new();
    for (i, item) in value.split(',').enumerate() {
        let item = item.trim();
        match item.split_once('=') {
            Some((k, v)) if k == key => volume = Some(v),
            Some((k, v)) => opts.push((k, v)),
            None if i == 0 => volume = Some(item),
            None => opts.push((item, "")),
        }
    }
    (volume.filter(|v| !v.is_empty()), opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_with_flags_comments_and_junk() {
        let text = "# comment\nzfspool: local-zfs\n\tpool rpool/data\n\tsparse\n\tcontent images,rootdir\n\n\
                    dir: local\n\tpath /var/lib/vz\n   # indented comment\n\tdisable 0\n\
                    stray line without colon\n\tstray-prop 1\n\nlocal: 100-0\n\ttarget pve2\n";
        let s = sections(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(
            (s[0].kind.as_str(), s[0].id.as_str(), s[0].line),
            ("zfspool", "local-zfs", 2)
        );
        assert_eq!(s[0].get("pool"), Some("rpool/data"));
        assert!(s[0].flag("sparse"));
        assert!(!s[1].flag("disable"));
        assert_eq!(
            s[1].props.len(),
            2,
            "the stray property must not join `local`"
        );
        assert_eq!(s[2].get("target"), Some("pve2"));
        assert!(sections("").is_empty());
    }

    #[test]
    fn guest_settings_stop_at_the_first_snapshot() {
        let text = "#my router\nboot: order=scsi0\nscsi0: local-zfs:vm-100-disk-1,size=8G\n\n\
                    [before-upgrade]\nscsi0: local-zfs:vm-100-disk-9,size=8G\n";
        let g = guest_settings(text);
        assert_eq!(g.len(), 2);
        assert_eq!(
            g[1],
            ("scsi0".into(), "local-zfs:vm-100-disk-1,size=8G".into())
        );
    }

    #[test]
    fn volume_options_first_item_or_named() {
        let (v, o) = volume_options("local-zfs:vm-100-disk-0,size=32G,replicate=0", "file");
        assert_eq!(v, Some("local-zfs:vm-100-disk-0"));
        assert_eq!(o, [("size", "32G"), ("replicate", "0")]);
        let (v, _) = volume_options("size=8G,file=tank:vm-1-disk-0", "file");
        assert_eq!(v, Some("tank:vm-1-disk-0"));
        let (v, o) = volume_options("volume=local-zfs:subvol-101-disk-1,mp=/data", "volume");
        assert_eq!(
            (v, o),
            (Some("local-zfs:subvol-101-disk-1"), vec![("mp", "/data")])
        );
        assert_eq!(volume_options("", "file").0, None);
    }
}
