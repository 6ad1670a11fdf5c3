//! Proxmox VE, as far as tandem must know it: which guests its own HA
//! manager manages (`/etc/pve/ha/resources.cfg`), so that a job with
//! `failover = "auto"` never carries one of them — two managers acting on
//! one guest would start it twice; and what `tandem import pvesr` reads to
//! turn PVE's storage replication into tandem jobs ([`import`]).
//!
//! `resources.cfg` is PVE's section-config format: a line `TYPE: ID`
//! (`vm: 100`, `ct: 101`) opens a section, indented `key value` lines
//! follow it:
//!
//! ```text
//! vm: 100
//!         state started
//!         group prefer-node1
//!
//! ct: 101
//!         max_restart 2
//! ```

use std::collections::BTreeSet;

pub mod import;
pub mod section;

use tandem_repl::job::{Guest, GuestKind};

/// The default `[pve] root`.
pub const DEFAULT_ROOT: &str = "/etc/pve";
/// Where PVE's HA resources are, under the root.
pub const RESOURCES: &str = "ha/resources.cfg";

/// The guests `resources.cfg` lists (services of other types, comments
/// and section bodies are skipped). Pure: the file's text in.
pub fn managed_services(text: &str) -> BTreeSet<Guest> {
    section::sections(text)
        .into_iter()
        .filter_map(|s| {
            let kind = match s.kind.as_str() {
                "vm" => GuestKind::Vm,
                "ct" => GuestKind::Ct,
                _ => return None,
            };
            let vmid = s.id.parse().ok()?;
            Some(Guest { kind, vmid })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_skips_the_rest() {
        let text = "# managed by ha-manager\nvm: 100\n\tstate started\n\tgroup g1\n\n\
                    ct: 101\n\tmax_restart 2\n\nvm:102\nservice: foo\n\tstate started\n\
                    vm: x\n  vm: 103\n";
        let got: Vec<String> = managed_services(text)
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert_eq!(got, ["vm:100", "vm:102", "ct:101"]);
        assert!(managed_services("").is_empty());
    }
}
