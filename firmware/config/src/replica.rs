//! `[replica]`: two appliances as one, the data volume mirrored by the
//! kernel's DRBD (protocol C) over a replication link (issue 13).
//!
//! Both appliances carry the same `[replica]` section; each finds its own
//! `[[replica.nodes]]` entry by the `mxrack.node=NAME` kernel argument or,
//! without one, by the MAC address of `interface`. The boot scripts take
//! their values from `mxrack replica env` and the DRBD resource file from
//! `mxrack replica drbd-conf`, so this file is the one place they live.

use crate::validate::{ConfigError, invalid};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The port of every drbd.conf example in LINBIT's user guide.
pub const REPLICA_PORT: u16 = 7788;
/// How long a booting node waits for its peer before it stays standby and
/// says so (it never becomes active alone: see ARCHITECTURE.md).
pub const REPLICA_PEER_WAIT_SECS: u64 = 30;
/// The DRBD resync rate cap, MiB/s (DRBD 8.4's `c-max-rate`): a first
/// sync or a resync after a failover must not starve mail I/O.
pub const REPLICA_RESYNC_MAX_MIB: u32 = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaNode {
    /// The node's name: its DRBD `on` section and `mxrack.node=NAME`.
    pub name: String,
    /// Its address on the replication link, "ip/prefix".
    pub address: String,
    /// The MAC address of its replication interface (to tell the nodes
    /// apart when the kernel command line does not).
    #[serde(default)]
    pub mac: Option<String>,
    /// The node's own address on `service_interface` ("ip/prefix"), from
    /// which the standby checks whether the service address answers.
    #[serde(default)]
    pub service_address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    /// Exactly two nodes.
    pub nodes: Vec<ReplicaNode>,
    /// The node made active when the pair is formed on blank disks. After
    /// that no node becomes active by itself: `mxrack replica promote`.
    pub initial_primary: String,
    /// The replication network interface.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// DRBD's TCP port on the replication link.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The service address the active node takes ("ip/prefix", on
    /// `service_interface`), announced with a gratuitous ARP.
    #[serde(default)]
    pub service_address: Option<String>,
    #[serde(default)]
    pub service_interface: Option<String>,
    /// Seconds a booting node waits for its peer to connect.
    #[serde(default = "default_peer_wait")]
    pub peer_wait_secs: u64,
    /// Resync rate cap, MiB/s.
    #[serde(default = "default_resync")]
    pub resync_max_mib: u32,
    /// Let the standby promote itself when the active is gone. Off by
    /// default; needs `witness`, the third opinion (see below).
    #[serde(default)]
    pub auto_promote: bool,
    /// An address both nodes can reach (a router): the standby promotes
    /// itself only when it has lost the peer, the service address is
    /// silent and the witness answers; an active node that has lost both
    /// the peer and the witness steps down after half that time.
    #[serde(default)]
    pub witness: Option<IpAddr>,
    /// Seconds without the peer before the standby promotes itself.
    #[serde(default = "default_auto_after")]
    pub auto_promote_after_secs: u64,
}

/// How long the standby waits without its peer before it promotes itself
/// (when `auto_promote` is on): DRBD needs about 3 s to see a peer gone.
pub const REPLICA_AUTO_PROMOTE_AFTER_SECS: u64 = 10;

fn default_auto_after() -> u64 {
    REPLICA_AUTO_PROMOTE_AFTER_SECS
}

fn default_interface() -> String {
    "eth1".into()
}
fn default_port() -> u16 {
    REPLICA_PORT
}
fn default_peer_wait() -> u64 {
    REPLICA_PEER_WAIT_SECS
}
fn default_resync() -> u32 {
    REPLICA_RESYNC_MAX_MIB
}

/// "ip/prefix" -> (ip, prefix).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

/// Whether `a` is in `net`/`prefix` (an IPv4 address is never in an IPv6
/// network, nor the other way round; prefix 0 holds every address of its
/// family).
pub fn same_network(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Replica {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.len() != 2 {
            return Err(invalid("replica.nodes", "exactly two nodes"));
        }
        for n in &self.nodes {
            if !is_name(&n.name) {
                return Err(invalid(
                    "replica.nodes.name",
                    format!("{:?}: letters, digits, '-' and '_', at most 63", n.name),
                ));
            }
            if parse_cidr(&n.address).is_none() {
                return Err(invalid(
                    "replica.nodes.address",
                    format!("{:?} is not ip/prefix", n.address),
                ));
            }
            if let Some(a) = &n.service_address
                && parse_cidr(a).is_none()
            {
                return Err(invalid(
                    "replica.nodes.service_address",
                    format!("{a:?} is not ip/prefix"),
                ));
            }
            if let Some(mac) = &n.mac
                && !is_mac(mac)
            {
                return Err(invalid(
                    "replica.nodes.mac",
                    format!("{mac:?} is not a MAC address"),
                ));
            }
        }
        if self.nodes[0].name == self.nodes[1].name {
            return Err(invalid("replica.nodes.name", "the two nodes share a name"));
        }
        if !self.nodes.iter().any(|n| n.name == self.initial_primary) {
            return Err(invalid(
                "replica.initial_primary",
                "must name one of replica.nodes",
            ));
        }
        if !is_name(&self.interface) || self.interface.len() > 15 {
            return Err(invalid("replica.interface", "not an interface name"));
        }
        if self.port == 0 {
            return Err(invalid("replica.port", "must not be 0"));
        }
        if let Some(a) = &self.service_address
            && parse_cidr(a).is_none_or(|(ip, _)| !ip.is_ipv4())
        {
            return Err(invalid(
                "replica.service_address",
                format!("{a:?} is not an IPv4 ip/prefix (announced with ARP)"),
            ));
        }
        // Each node's own service address is where the standby looks for the
        // active before it promotes itself: one outside the service
        // address's network (a typo) would be "silent" and let a standby
        // promote while the active serves.
        if let Some((vip, prefix)) = self.service_address.as_deref().and_then(parse_cidr) {
            let own: Vec<IpAddr> = self
                .nodes
                .iter()
                .filter_map(|n| n.service_address.as_deref().and_then(parse_cidr))
                .map(|(ip, _)| ip)
                .collect();
            if let Some(bad) = own
                .iter()
                .find(|ip| !same_network(**ip, vip, prefix) || **ip == vip)
            {
                return Err(invalid(
                    "replica.nodes.service_address",
                    format!(
                        "{bad} must be in the service address's network ({vip}/{prefix}) \
                         and not the service address itself"
                    ),
                ));
            }
            if own.len() == 2 && own[0] == own[1] {
                return Err(invalid(
                    "replica.nodes.service_address",
                    "the two nodes share a service address",
                ));
            }
        }
        if let Some(i) = &self.service_interface
            && (!is_name(i) || i.len() > 15)
        {
            return Err(invalid(
                "replica.service_interface",
                "not an interface name",
            ));
        }
        if !(1..=3600).contains(&self.peer_wait_secs) {
            return Err(invalid(
                "replica.peer_wait_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.auto_promote && self.witness.is_none() {
            return Err(invalid(
                "replica.witness",
                "auto_promote needs a witness: an address both nodes reach, the third \
                 opinion that tells a dead peer from a broken link",
            ));
        }
        // A broken replication link must not look like a dead peer: the
        // standby asks the service network too, so it must be another one.
        if self.auto_promote
            && (self.service_address.is_none()
                || self
                    .service_interface
                    .as_deref()
                    .is_none_or(|i| i == self.interface)
                || self.nodes.iter().any(|n| n.service_address.is_none()))
        {
            return Err(invalid(
                "replica.service_interface",
                "auto_promote needs service_address on a service_interface other than \
                 interface, and each node's own service_address there: the standby checks \
                 the active over that network before it promotes itself",
            ));
        }
        if !(4..=3600).contains(&self.auto_promote_after_secs) {
            return Err(invalid(
                "replica.auto_promote_after_secs",
                "must be between 4 and 3600",
            ));
        }
        if !(1..=10_000).contains(&self.resync_max_mib) {
            return Err(invalid(
                "replica.resync_max_mib",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }

    /// The node named `name`, and its peer.
    pub fn node_and_peer(&self, name: &str) -> Option<(&ReplicaNode, &ReplicaNode)> {
        match self.nodes.iter().position(|n| n.name == name)? {
            0 => Some((&self.nodes[0], &self.nodes[1])),
            _ => Some((&self.nodes[1], &self.nodes[0])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Replica {
        Replica {
            nodes: vec![
                ReplicaNode {
                    name: "mxa".into(),
                    address: "10.99.0.1/24".into(),
                    mac: None,
                    service_address: None,
                },
                ReplicaNode {
                    name: "mxb".into(),
                    address: "10.99.0.2/24".into(),
                    mac: Some("52:54:00:99:00:02".into()),
                    service_address: None,
                },
            ],
            initial_primary: "mxa".into(),
            interface: default_interface(),
            port: REPLICA_PORT,
            service_address: Some("10.99.0.100/24".into()),
            service_interface: None,
            peer_wait_secs: 30,
            resync_max_mib: 100,
            auto_promote: false,
            witness: None,
            auto_promote_after_secs: 10,
        }
    }

    #[test]
    fn a_pair_is_valid_and_each_node_finds_its_peer() {
        let mut r = pair();
        r.validate().unwrap();
        r.nodes[0].service_address = Some("10.99.0.11/24".into());
        r.nodes[1].service_address = Some("10.99.0.12/24".into());
        r.validate().unwrap();
        assert_eq!(r.node_and_peer("mxb").unwrap().1.name, "mxa");
        assert!(r.node_and_peer("mxc").is_none());
    }

    #[test]
    fn bad_pairs_name_the_key() {
        type Break = Box<dyn Fn(&mut Replica)>;
        let cases: Vec<(&str, Break)> = vec![
            ("replica.nodes", Box::new(|r| drop(r.nodes.pop()))),
            (
                "replica.nodes.name",
                Box::new(|r| r.nodes[1].name = "mxa".into()),
            ),
            (
                "replica.nodes.name",
                Box::new(|r| r.nodes[1].name = "a b".into()),
            ),
            (
                "replica.nodes.address",
                Box::new(|r| r.nodes[0].address = "10.99.0.1".into()),
            ),
            (
                "replica.nodes.mac",
                Box::new(|r| r.nodes[0].mac = Some("52:54".into())),
            ),
            (
                "replica.initial_primary",
                Box::new(|r| r.initial_primary = "mxc".into()),
            ),
            (
                "replica.service_address",
                Box::new(|r| r.service_address = Some("fd00::1/64".into())),
            ),
            (
                "replica.interface",
                Box::new(|r| r.interface = "eth1; reboot".into()),
            ),
            // A node's own service address: a typo outside the network, the
            // service address itself, the other node's.
            (
                "replica.nodes.service_address",
                Box::new(|r| r.nodes[1].service_address = Some("10.98.1.2/24".into())),
            ),
            (
                "replica.nodes.service_address",
                Box::new(|r| r.nodes[0].service_address = Some("10.99.0.100/24".into())),
            ),
            (
                "replica.nodes.service_address",
                Box::new(|r| {
                    r.nodes[0].service_address = Some("10.99.0.7/24".into());
                    r.nodes[1].service_address = Some("10.99.0.7/24".into());
                }),
            ),
            ("replica.witness", Box::new(|r| r.auto_promote = true)),
            (
                "replica.service_interface",
                Box::new(|r| {
                    r.auto_promote = true;
                    r.witness = Some("192.0.2.1".parse().unwrap());
                }),
            ),
            (
                "replica.auto_promote_after_secs",
                Box::new(|r| r.auto_promote_after_secs = 1),
            ),
        ];
        for (key, break_it) in cases {
            let mut r = pair();
            break_it(&mut r);
            match r.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}
