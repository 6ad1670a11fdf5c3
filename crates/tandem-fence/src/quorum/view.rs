//! The pure half of the native backend: votequorum's info flags, and the
//! answer ([`Quorum`]) built from what votequorum's `getinfo` and cmap's
//! `nodelist` said. No corosync library is needed here, so this part is
//! built (and tested) with or without the `corosync` feature.

use super::{Quorum, Votes};

/// votequorum's `VOTEQUORUM_INFO_*` bits (`votequorum.h`, corosync 3.1),
/// the `flags` of `votequorum_getinfo`.
pub mod bits {
    /// `two_node: 1`: each of two nodes is quorate alone.
    pub const TWONODE: u32 = 1;
    /// This node is in the quorate partition.
    pub const QUORATE: u32 = 2;
    /// `wait_for_all: 1`.
    pub const WAIT_FOR_ALL: u32 = 4;
    /// `last_man_standing: 1`.
    pub const LAST_MAN_STANDING: u32 = 8;
    /// `auto_tie_breaker: 1`.
    pub const AUTO_TIE_BREAKER: u32 = 16;
    /// `allow_downscale: 1`.
    pub const ALLOW_DOWNSCALE: u32 = 32;
    /// A quorum device (corosync-qdevice) registered with votequorum.
    pub const QDEVICE_REGISTERED: u32 = 64;
    /// It polls votequorum in time.
    pub const QDEVICE_ALIVE: u32 = 128;
    /// It gives its votes to this node's partition.
    pub const QDEVICE_CAST_VOTE: u32 = 256;
    /// The qdevice's `master_wins`.
    pub const QDEVICE_MASTER_WINS: u32 = 512;
}

/// votequorum's info flags of this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InfoFlags(pub u32);

impl InfoFlags {
    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
    /// `two_node` is on.
    pub fn two_node(self) -> bool {
        self.has(bits::TWONODE)
    }
    /// This node is quorate.
    pub fn quorate(self) -> bool {
        self.has(bits::QUORATE)
    }
    /// A QDevice is registered and alive: the tie-breaker exists and
    /// works. Whether it votes for *this* partition (`QDEVICE_CAST_VOTE`)
    /// is not asked: a QDevice that votes for the other side still
    /// decides the split, and this side is then not quorate.
    pub fn qdevice(self) -> bool {
        self.has(bits::QDEVICE_REGISTERED) && self.has(bits::QDEVICE_ALIVE)
    }
    /// The QDevice's votes count in this partition.
    pub fn qdevice_votes_here(self) -> bool {
        self.qdevice() && self.has(bits::QDEVICE_CAST_VOTE)
    }
    /// The flags as `corosync-quorumtool -s` names them on its `Flags:`
    /// line (same order).
    pub fn names(self) -> Vec<&'static str> {
        [
            (bits::TWONODE, "2Node"),
            (bits::QUORATE, "Quorate"),
            (bits::WAIT_FOR_ALL, "WaitForAll"),
            (bits::LAST_MAN_STANDING, "LastManStanding"),
            (bits::AUTO_TIE_BREAKER, "AutoTieBreaker"),
            (bits::ALLOW_DOWNSCALE, "AllowDownscale"),
            (bits::QDEVICE_REGISTERED, "Qdevice"),
            (bits::QDEVICE_ALIVE, "QdeviceAlive"),
            (bits::QDEVICE_CAST_VOTE, "QdeviceCastVote"),
            (bits::QDEVICE_MASTER_WINS, "QdeviceMasterWins"),
        ]
        .into_iter()
        .filter(|(b, _)| self.has(*b))
        .map(|(_, n)| n)
        .collect()
    }
}

/// What corosync said of one configured node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Its node id.
    pub id: u32,
    /// Its `name` in the nodelist (or its `ring0_addr` where it has none).
    pub name: Option<String>,
    /// votequorum counts it as a member of this node's partition.
    pub member: bool,
    /// Its votes.
    pub votes: u32,
}

impl NodeFacts {
    /// The name tandem knows it by: corosync's name, else its id.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id.to_string())
    }
}

/// One answer of votequorum (`getinfo` of this node and of every
/// configured node) and cmap (the nodelist's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// This node's id.
    pub this_node: u32,
    /// Votes the cluster expects (`node_expected_votes`).
    pub expected: u32,
    /// Votes needed for quorum.
    pub quorum: u32,
    /// This node's info flags.
    pub flags: InfoFlags,
    /// The QDevice's votes, when one is registered.
    pub qdevice_votes: u32,
    /// Every node of the nodelist, and this node.
    pub nodes: Vec<NodeFacts>,
}

impl Snapshot {
    /// The members of this node's partition, this node always included,
    /// by node id.
    pub fn members(&self) -> Vec<&NodeFacts> {
        let mut m: Vec<&NodeFacts> = self
            .nodes
            .iter()
            .filter(|n| n.member || n.id == self.this_node)
            .collect();
        m.sort_by_key(|n| n.id);
        m.dedup_by_key(|n| n.id);
        m
    }

    /// The names of the configured nodes (cmap's nodelist), by node id.
    pub fn nodelist(&self) -> Vec<String> {
        let mut n: Vec<&NodeFacts> = self.nodes.iter().collect();
        n.sort_by_key(|n| n.id);
        n.into_iter().map(NodeFacts::label).collect()
    }

    /// The answer: quorate or not (votequorum's `QUORATE` flag decides),
    /// and the votes and members for messages and the membership.
    pub fn quorum(&self) -> Quorum {
        let members = self.members();
        let qdevice = if self.flags.qdevice_votes_here() {
            self.qdevice_votes
        } else {
            0
        };
        let votes = Votes {
            node_id: Some(self.this_node),
            nodes: u32::try_from(members.len()).unwrap_or(u32::MAX),
            votes: members
                .iter()
                .map(|n| n.votes)
                .fold(qdevice, u32::saturating_add),
            expected: self.expected,
            needed: Some(self.quorum),
            members: members.iter().map(|n| n.label()).collect(),
            two_node: self.flags.two_node(),
            qdevice: self.flags.qdevice(),
        };
        if self.flags.quorate() {
            Quorum::Quorate(votes)
        } else {
            Quorum::NotQuorate(votes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, name: &str, member: bool) -> NodeFacts {
        NodeFacts {
            id,
            name: Some(name.into()),
            member,
            votes: 1,
        }
    }

    #[test]
    fn decodes_votequorum_flags() {
        // corosync-quorumtool on a two-node cluster: "Flags: 2Node Quorate WaitForAll".
        let f = InfoFlags(bits::TWONODE | bits::QUORATE | bits::WAIT_FOR_ALL);
        assert!(f.two_node() && f.quorate() && !f.qdevice());
        assert_eq!(f.names(), ["2Node", "Quorate", "WaitForAll"]);
        // Registered but not polling: no working tie-breaker.
        let f = InfoFlags(bits::QUORATE | bits::QDEVICE_REGISTERED);
        assert!(!f.qdevice() && !f.qdevice_votes_here());
        let f = InfoFlags(bits::QDEVICE_REGISTERED | bits::QDEVICE_ALIVE);
        assert!(
            f.qdevice() && !f.qdevice_votes_here(),
            "alive, voting elsewhere"
        );
        let f = InfoFlags(bits::QDEVICE_REGISTERED | bits::QDEVICE_ALIVE | bits::QDEVICE_CAST_VOTE);
        assert!(f.qdevice_votes_here());
        assert_eq!(InfoFlags::default().names(), Vec::<&str>::new());
    }

    #[test]
    fn builds_the_answer_from_getinfo() {
        let three = Snapshot {
            this_node: 1,
            expected: 3,
            quorum: 2,
            flags: InfoFlags(bits::QUORATE),
            qdevice_votes: 0,
            nodes: vec![
                node(3, "n3", true),
                node(1, "n1", true),
                node(2, "n2", true),
            ],
        };
        let Quorum::Quorate(v) = three.quorum() else {
            panic!("not quorate: {:?}", three.quorum())
        };
        assert_eq!(
            v,
            Votes {
                node_id: Some(1),
                nodes: 3,
                votes: 3,
                expected: 3,
                needed: Some(2),
                members: vec!["n1".into(), "n2".into(), "n3".into()],
                two_node: false,
                qdevice: false,
            }
        );
        assert_eq!(three.nodelist(), ["n1", "n2", "n3"]);

        // n3 cut off, as n3 sees it: alone, not quorate; still lists all three.
        let cut = Snapshot {
            this_node: 3,
            flags: InfoFlags(0),
            nodes: vec![
                node(1, "n1", false),
                node(2, "n2", false),
                node(3, "n3", true),
            ],
            ..three.clone()
        };
        let Quorum::NotQuorate(v) = cut.quorum() else {
            panic!("quorate: {:?}", cut.quorum())
        };
        assert_eq!(
            (v.members.clone(), v.votes, v.nodes),
            (vec!["n3".into()], 1, 1)
        );
        assert_eq!(
            v.to_string(),
            "1 of 3 expected votes present, 2 needed, 1 node in this partition"
        );

        // This node counts even where votequorum has not marked it yet;
        // a node without a name is known by its id.
        let odd = Snapshot {
            this_node: 7,
            nodes: vec![NodeFacts {
                id: 7,
                name: None,
                member: false,
                votes: 1,
            }],
            ..three.clone()
        };
        let Quorum::Quorate(v) = odd.quorum() else {
            panic!()
        };
        assert_eq!(v.members, ["7"]);

        // Two nodes with a QDevice voting here: its vote counts.
        let qd = Snapshot {
            this_node: 1,
            expected: 3,
            quorum: 2,
            flags: InfoFlags(
                bits::QUORATE
                    | bits::QDEVICE_REGISTERED
                    | bits::QDEVICE_ALIVE
                    | bits::QDEVICE_CAST_VOTE,
            ),
            qdevice_votes: 1,
            nodes: vec![node(1, "a", true), node(2, "b", false)],
        };
        let q = qd.quorum();
        let Quorum::Quorate(v) = &q else {
            panic!("{q:?}")
        };
        assert_eq!((v.votes, v.qdevice, v.two_node), (2, true, false));
        assert!(v.split_safe());
    }
}
