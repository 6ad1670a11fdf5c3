//! Validated ZFS names.
//!
//! The rules follow OpenZFS's `zfs_namecheck.c`: a name is at most 255 bytes,
//! components are separated by `/`, a component is made of ASCII letters,
//! digits and `_ - : . ` (space), and is neither empty nor `.`/`..`; the pool
//! (first component) starts with a letter and is not a reserved word.
//! Because every full name starts with its pool name, and pool names start
//! with a letter, no valid name can be taken for a command-line option, even
//! when a later component starts with `-`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name ZFS accepts, in bytes (`ZFS_MAX_DATASET_NAME_LEN` less the NUL).
pub const MAX_NAME_LEN: usize = 255;

/// A name that ZFS would refuse, with the input and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ZFS name {input:?}: {reason}")]
pub struct NameError {
    /// The name as it was given.
    pub input: String,
    /// Why it is not a valid name.
    pub reason: String,
}

impl NameError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | ' ')
}

/// Checks one component (a dataset path element, a snapshot or bookmark name).
fn check_component(input: &str, comp: &str, what: &str) -> Result<(), NameError> {
    if comp.is_empty() {
        return Err(NameError::new(
            input,
            format!("empty {what} (two separators in a row, or one at an end)"),
        ));
    }
    if comp == "." || comp == ".." {
        return Err(NameError::new(
            input,
            format!("{what} {comp:?} is reserved"),
        ));
    }
    if let Some(bad) = comp.chars().find(|c| !valid_char(*c)) {
        return Err(NameError::new(
            input,
            format!("character {bad:?} is not allowed in a {what} (only letters, digits and _ - : . space)"),
        ));
    }
    Ok(())
}

fn check_pool(input: &str, pool: &str) -> Result<(), NameError> {
    check_component(input, pool, "pool name")?;
    if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(NameError::new(
            input,
            "a pool name must start with a letter",
        ));
    }
    for reserved in ["mirror", "raidz", "draid"] {
        if pool.starts_with(reserved) {
            return Err(NameError::new(
                input,
                format!("pool names starting with {reserved:?} are reserved"),
            ));
        }
    }
    if pool == "spare" || pool == "log" {
        return Err(NameError::new(
            input,
            format!("{pool:?} is a reserved pool name"),
        ));
    }
    let b = pool.as_bytes();
    if b.len() >= 2 && b[0] == b'c' && b[1].is_ascii_digit() {
        return Err(NameError::new(
            input,
            "pool names like c0... are reserved for disk names",
        ));
    }
    Ok(())
}

fn check_len(input: &str) -> Result<(), NameError> {
    if input.len() > MAX_NAME_LEN {
        return Err(NameError::new(
            input,
            format!(
                "{} bytes long, ZFS allows at most {MAX_NAME_LEN}",
                input.len()
            ),
        ));
    }
    Ok(())
}

/// A filesystem or volume name such as `rpool/data/vm-100-disk-0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetName(String);

impl DatasetName {
    /// Validates `s` as a dataset name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_len(s)?;
        if s.is_empty() {
            return Err(NameError::new(s, "empty name"));
        }
        if s.contains('@') {
            return Err(NameError::new(
                s,
                "a dataset name cannot contain '@' (that is a snapshot)",
            ));
        }
        if s.contains('#') {
            return Err(NameError::new(
                s,
                "a dataset name cannot contain '#' (that is a bookmark)",
            ));
        }
        let mut parts = s.split('/');
        let pool = parts.next().unwrap_or_default();
        check_pool(s, pool)?;
        for comp in parts {
            check_component(s, comp, "dataset name component")?;
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as ZFS prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool this dataset lives in.
    pub fn pool(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// The parent dataset, or `None` for a pool's root dataset.
    pub fn parent(&self) -> Option<DatasetName> {
        self.0
            .rsplit_once('/')
            .map(|(p, _)| DatasetName(p.to_owned()))
    }

    /// Is `self` equal to `other` or below it in the tree?
    pub fn is_within(&self, other: &DatasetName) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The dataset `self/rel`, validated (`rel` is one or more components
    /// separated by `/`).
    pub fn child(&self, rel: &str) -> Result<DatasetName, NameError> {
        DatasetName::parse(&format!("{}/{}", self.0, rel))
    }

    /// `self`'s path below `ancestor` (`""` for `ancestor` itself), or
    /// `None` when `self` does not lie within it.
    pub fn relative_to(&self, ancestor: &DatasetName) -> Option<&str> {
        if self.0 == ancestor.0 {
            return Some("");
        }
        self.0
            .strip_prefix(ancestor.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
    }

    /// The bookmark `self#short`, validated.
    pub fn bookmark(&self, short: &str) -> Result<BookmarkName, NameError> {
        BookmarkName::parse(&format!("{}#{}", self.0, short))
    }

    /// The snapshot `self@short`, validated.
    pub fn snapshot(&self, short: &str) -> Result<SnapshotName, NameError> {
        SnapshotName::parse(&format!("{}@{}", self.0, short))
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DatasetName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<DatasetName> for String {
    fn from(d: DatasetName) -> String {
        d.0
    }
}

impl std::str::FromStr for DatasetName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A snapshot name such as `rpool/data@tandem_vm-100_20261121T120000Z`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotName {
    dataset: DatasetName,
    short: String,
}

impl SnapshotName {
    /// Validates `s` as `DATASET@SNAP`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_len(s)?;
        let Some((ds, short)) = s.split_once('@') else {
            return Err(NameError::new(s, "a snapshot name needs '@'"));
        };
        if short.contains('@') {
            return Err(NameError::new(s, "more than one '@'"));
        }
        let dataset = DatasetName::parse(ds).map_err(|e| NameError::new(s, e.reason))?;
        check_component(s, short, "snapshot name")?;
        Ok(Self {
            dataset,
            short: short.to_owned(),
        })
    }

    /// The dataset part.
    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    /// The part after `@`.
    pub fn short(&self) -> &str {
        &self.short
    }

    /// The same short name on another dataset.
    pub fn on(&self, dataset: &DatasetName) -> Result<SnapshotName, NameError> {
        dataset.snapshot(&self.short)
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.short)
    }
}

impl TryFrom<String> for SnapshotName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SnapshotName> for String {
    fn from(s: SnapshotName) -> String {
        s.to_string()
    }
}

/// A bookmark name such as `rpool/data#tandem_vm-100_20261121T120000Z`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BookmarkName {
    dataset: DatasetName,
    short: String,
}

impl BookmarkName {
    /// Validates `s` as `DATASET#BOOKMARK`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_len(s)?;
        let Some((ds, short)) = s.split_once('#') else {
            return Err(NameError::new(s, "a bookmark name needs '#'"));
        };
        if short.contains('#') || short.contains('@') {
            return Err(NameError::new(s, "more than one '#' or '@'"));
        }
        let dataset = DatasetName::parse(ds).map_err(|e| NameError::new(s, e.reason))?;
        check_component(s, short, "bookmark name")?;
        Ok(Self {
            dataset,
            short: short.to_owned(),
        })
    }

    /// The dataset part.
    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    /// The part after `#`.
    pub fn short(&self) -> &str {
        &self.short
    }
}

impl fmt::Display for BookmarkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.dataset, self.short)
    }
}

impl TryFrom<String> for BookmarkName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<BookmarkName> for String {
    fn from(b: BookmarkName) -> String {
        b.to_string()
    }
}

/// A hold tag (`zfs hold TAG SNAPSHOT`). Any printable text without a
/// newline, at most 255 bytes, not starting with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HoldTag(String);

impl HoldTag {
    /// Validates a hold tag.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(NameError::new(s, "a hold tag must be 1 to 255 bytes"));
        }
        if s.starts_with('-') {
            return Err(NameError::new(s, "a hold tag must not start with '-'"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(NameError::new(
                s,
                "a hold tag must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HoldTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user property name (`module:property`), which must contain a colon.
pub fn check_user_property(name: &str) -> Result<(), NameError> {
    if !name.contains(':') {
        return Err(NameError::new(
            name,
            "a user property name must contain ':'",
        ));
    }
    if name.len() > MAX_NAME_LEN || name.starts_with('-') {
        return Err(NameError::new(name, "bad user property name"));
    }
    if let Some(bad) = name.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | ':' | '.'))
    }) {
        return Err(NameError::new(
            name,
            format!("character {bad:?} is not allowed in a user property name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_awkward_legal_names() {
        for n in [
            "rpool",
            "rpool/data/vm-100-disk-0",
            "tank/-dash",
            "tank/with space",
            "tank/a:b",
            "tank/.hidden",
            "t/a.b_c-d:e f",
        ] {
            let d = DatasetName::parse(n).expect(n);
            assert_eq!(d.as_str(), n);
        }
        let s = SnapshotName::parse("tank/-x@tandem_job_20261121T000000Z").expect("snapshot");
        assert_eq!(s.dataset().as_str(), "tank/-x");
        assert_eq!(s.short(), "tandem_job_20261121T000000Z");
    }

    #[test]
    fn refuses_illegal_names_naming_the_input() {
        let cases = [
            ("tank/a*b", "'*'"),
            ("tank//a", "empty"),
            ("tank/a/", "empty"),
            ("/tank", "empty"),
            ("", "empty"),
            ("1tank", "letter"),
            ("-tank/a", "letter"),
            ("mirror1/a", "reserved"),
            ("c0t0/a", "disk"),
            ("tank/..", "reserved"),
            ("tank/a@b", "'@'"),
            ("tank/a#b", "'#'"),
            ("tank/a\nb", "'\\n'"),
        ];
        for (input, needle) in cases {
            let e = DatasetName::parse(input).expect_err(input);
            assert_eq!(e.input, input);
            assert!(e.to_string().contains(needle), "{input}: {e}");
        }
        let long = format!("tank/{}", "a".repeat(251));
        assert!(DatasetName::parse(&long).is_err());
        assert!(DatasetName::parse(&long[..255]).is_ok());
        for bad in ["tank@a@b", "tank@", "tank", "tank@a/b", "tank@a*"] {
            let e = SnapshotName::parse(bad).expect_err(bad);
            assert_eq!(e.input, bad);
        }
    }

    #[test]
    fn within_and_parent() {
        let a = DatasetName::parse("tank/a").expect("a");
        let ab = DatasetName::parse("tank/a/b").expect("ab");
        let ac = DatasetName::parse("tank/ac").expect("ac");
        assert!(ab.is_within(&a));
        assert!(a.is_within(&a));
        assert!(!ac.is_within(&a));
        assert_eq!(ab.parent(), Some(a));
        assert_eq!(DatasetName::parse("tank").expect("tank").parent(), None);
    }

    proptest! {
        #[test]
        fn valid_names_roundtrip(pool in "[a-bd-z][a-z0-9_:. -]{0,10}", comps in proptest::collection::vec("[a-zA-Z0-9_:. -]{1,12}", 0..4)) {
            let mut name = pool.clone();
            for c in &comps { name.push('/'); name.push_str(c); }
            let ok = !comps.iter().any(|c| c == "." || c == "..") && !pool.starts_with("mirror") && !pool.starts_with("raidz") && !pool.starts_with("draid") && pool != "log" && pool != "spare";
            prop_assert_eq!(DatasetName::parse(&name).is_ok(), ok);
        }

        #[test]
        fn no_valid_name_looks_like_an_option(s in "\\PC{0,40}") {
            if let Ok(d) = DatasetName::parse(&s) {
                prop_assert!(!d.as_str().starts_with('-'));
            }
        }
    }
}
