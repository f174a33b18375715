//! `mxrack replica`: the pair's boot values, its DRBD resource file, its
//! status, promotion and demotion (issue 13).
//!
//! The system steps (DRBD up, mount, service address) live in the board's
//! script `/usr/libexec/mxrack/replica`, which the boot and `promote` /
//! `demote` run; this file gives it every value from `[replica]`, so the
//! configuration is read in one place.

use crate::cli::CliError;
use mxrack_config::{Config, Replica, ReplicaNode, parse_cidr};
use mxrack_health::sources::drbd::{self, DrbdResource};
use std::net::IpAddr;
use std::path::Path;

/// The board script that does the system steps.
pub const REPLICA_SCRIPT: &str = "/usr/libexec/mxrack/replica";
/// The DRBD resource name and its device.
pub const RESOURCE: &str = "data";
pub const DEVICE: &str = "/dev/drbd0";

fn replica(config: &Config) -> Result<&Replica, CliError> {
    config.replica.as_ref().ok_or_else(|| {
        CliError::Admin("this appliance has no [replica] section: it is a single appliance".into())
    })
}

/// This node's name: `--node`, else `mxrack.node=` on the kernel command
/// line, else the node whose `mac` is the replication interface's address.
fn own_name(r: &Replica, explicit: Option<&str>) -> Result<String, CliError> {
    if let Some(n) = explicit {
        return Ok(n.to_string());
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(n) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mxrack.node="))
    {
        return Ok(n.to_string());
    }
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", r.interface))
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    r.nodes
        .iter()
        .find(|n| n.mac.as_deref().map(str::to_ascii_lowercase) == Some(mac.clone()))
        .map(|n| n.name.clone())
        .ok_or_else(|| {
            CliError::Admin(format!(
                "which node is this? no mxrack.node= on the kernel command line and no \
                 [[replica.nodes]] mac is {mac:?} ({})",
                r.interface
            ))
        })
}

fn pair<'a>(
    r: &'a Replica,
    explicit: Option<&str>,
) -> Result<(&'a ReplicaNode, &'a ReplicaNode), CliError> {
    let name = own_name(r, explicit)?;
    r.node_and_peer(&name)
        .ok_or_else(|| CliError::Admin(format!("no [[replica.nodes]] entry is named {name:?}")))
}

fn ip_of(cidr: &str) -> IpAddr {
    parse_cidr(cidr).map(|(ip, _)| ip).expect("validated")
}

/// Shell assignments for the board script (`eval "$(mxrack replica env)"`);
/// `REPLICA=0` without a `[replica]` section.
pub fn env(config: &Config, node: Option<&str>) -> Result<String, CliError> {
    let Some(r) = &config.replica else {
        return Ok("REPLICA=0\n".into());
    };
    let (me, peer) = pair(r, node)?;
    // Every value was validated to be a plain word (names, addresses).
    let vars = [
        ("REPLICA", "1".to_string()),
        ("REPLICA_NODE", me.name.clone()),
        ("REPLICA_ADDRESS", me.address.clone()),
        ("REPLICA_PEER", peer.name.clone()),
        ("REPLICA_PEER_IP", ip_of(&peer.address).to_string()),
        ("REPLICA_INTERFACE", r.interface.clone()),
        ("REPLICA_PORT", r.port.to_string()),
        (
            "REPLICA_PREFERRED",
            u8::from(r.initial_primary == me.name).to_string(),
        ),
        (
            "REPLICA_SERVICE_ADDRESS",
            r.service_address.clone().unwrap_or_default(),
        ),
        (
            "REPLICA_SERVICE_INTERFACE",
            r.service_interface
                .clone()
                .unwrap_or_else(|| r.interface.clone()),
        ),
        (
            "REPLICA_OWN_SERVICE_ADDRESS",
            me.service_address.clone().unwrap_or_default(),
        ),
        ("REPLICA_PEER_WAIT", r.peer_wait_secs.to_string()),
        ("REPLICA_AUTO", u8::from(r.auto_promote).to_string()),
        (
            "REPLICA_WITNESS",
            r.witness.map(|w| w.to_string()).unwrap_or_default(),
        ),
        ("REPLICA_AUTO_AFTER", r.auto_promote_after_secs.to_string()),
        ("REPLICA_RESOURCE", RESOURCE.to_string()),
        ("REPLICA_DEVICE", DEVICE.to_string()),
    ];
    Ok(vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect())
}

/// The DRBD 8.4 resource file (drbd.conf(5)) for backing device `disk`.
///
/// - protocol C: a write completes when both disks have it (a 250 is on
///   both appliances' disks).
/// - `floating` sections: each node is found by its replication address,
///   not by `uname -n` (both appliances carry the same host name).
/// - after-sb-*: a split brain is never resolved by discarding a side:
///   `disconnect` leaves both StandAlone and the status page says so.
/// - fencing off and no auto-promotion: a node becomes Primary only by
///   the board script's rules (first formation, or `replica promote`).
pub fn drbd_conf(config: &Config, disk: &str) -> Result<String, CliError> {
    let r = replica(config)?;
    if !disk.starts_with("/dev/") || disk.contains(char::is_whitespace) {
        return Err(CliError::Admin(format!("{disk:?} is not a device path")));
    }
    let mut s = String::new();
    s.push_str("# Written by `mxrack replica drbd-conf` from [replica] at each boot.\n");
    // No usage survey: drbdadm would ask on the console and report to
    // LINBIT's server over the internet.
    s.push_str("global {\n  usage-count no;\n}\n");
    s.push_str(&format!("resource {RESOURCE} {{\n"));
    s.push_str("  protocol C;\n");
    s.push_str("  net {\n");
    s.push_str("    after-sb-0pri disconnect;\n");
    s.push_str("    after-sb-1pri disconnect;\n");
    s.push_str("    after-sb-2pri disconnect;\n");
    s.push_str("    rr-conflict disconnect;\n");
    s.push_str("    ping-timeout 10;\n"); // tenths: 1 s
    s.push_str("    ping-int 2;\n");
    s.push_str("    connect-int 2;\n");
    // tenths: 1.5 s; drbd.conf(5): below ping-int and connect-int.
    s.push_str("    timeout 15;\n");
    s.push_str("  }\n");
    s.push_str("  disk {\n");
    s.push_str("    on-io-error detach;\n");
    s.push_str(&format!("    c-max-rate {}M;\n", r.resync_max_mib));
    s.push_str("  }\n");
    for n in &r.nodes {
        let ip = ip_of(&n.address);
        let at = match ip {
            IpAddr::V4(v4) => format!("{v4}:{}", r.port),
            IpAddr::V6(v6) => format!("ipv6 [{v6}]:{}", r.port),
        };
        s.push_str(&format!("  floating {at} {{\n"));
        s.push_str(&format!("    device {DEVICE} minor 0;\n"));
        s.push_str(&format!("    disk {disk};\n"));
        s.push_str("    meta-disk internal;\n");
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    Ok(s)
}

/// The pair as `mxrack replica status` prints it.
pub fn status(config: &Config, json: bool) -> Result<String, CliError> {
    let r = replica(config)?;
    // The monitor's own bounded read of /proc/drbd.
    let root = mxrack_health::SysRoot::new("/");
    let loaded = root.path("/proc/drbd").exists();
    let res = drbd::read(&root);
    let history = last_promotion(&config.appliance.data_dir);
    let node = own_name(r, None).ok();
    let peer = node
        .as_deref()
        .and_then(|n| r.node_and_peer(n))
        .map(|(_, p)| p.name.clone());
    let first = res.first();
    if json {
        let v = serde_json::json!({
            "node": node,
            "peer": peer,
            "drbd_loaded": loaded,
            "resource": first,
            "active": first.is_some_and(|d| d.role == "Primary"),
            "auto_promote": r.auto_promote,
            "witness": r.witness,
            "last_promotion": history,
        });
        return Ok(format!("{}\n", serde_json::to_string_pretty(&v).unwrap()));
    }
    let mut out = String::new();
    out.push_str(&format!(
        "node {} (peer {})\n",
        node.as_deref().unwrap_or("?"),
        peer.as_deref().unwrap_or("?")
    ));
    match first {
        None if !loaded => out.push_str("DRBD is not loaded: the pair is not set up\n"),
        None => out.push_str("the DRBD resource is not configured (down)\n"),
        Some(d) => out.push_str(&describe(d)),
    }
    let paused = Path::new("/run/mxrack/replica-no-auto").exists();
    out.push_str(&match (r.auto_promote, r.witness) {
        (true, Some(_)) if paused => {
            "automatic promotion: paused (/run/mxrack/replica-no-auto exists)\n".into()
        }
        (true, Some(w)) => format!(
            "automatic promotion: on (after {} s without the peer, when witness {w} answers \
             and the service address is silent)\n",
            r.auto_promote_after_secs
        ),
        _ => "automatic promotion: off (`mxrack replica promote` on the standby)\n".into(),
    });
    out.push_str(&format!(
        "last promotion: {}\n",
        history
            .as_deref()
            .unwrap_or("none recorded on this node's view of /data")
    ));
    Ok(out)
}

/// One resource for people.
pub fn describe(d: &DrbdResource) -> String {
    let mut s = format!(
        "role {} (peer {}), connection {}, disk {} (peer {})\n",
        d.role, d.peer_role, d.connection, d.disk, d.peer_disk
    );
    let (summary, _) = drbd::summary(d);
    s.push_str(&format!("{summary}\n"));
    s
}

fn last_promotion(data_dir: &Path) -> Option<String> {
    drbd::last_promotion(data_dir)
}

/// Runs the board script for `promote` / `demote` (it answers for itself).
pub fn run_script(verb: &str, force: bool) -> Result<(), CliError> {
    let script = std::env::var("MXRACK_REPLICA_SCRIPT").unwrap_or_else(|_| REPLICA_SCRIPT.into());
    let mut cmd = std::process::Command::new(&script);
    cmd.arg(verb);
    if force {
        cmd.arg("--force");
    }
    let status = cmd
        .status()
        .map_err(|e| CliError::Admin(format!("{script}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::Admin(format!("replica {verb} failed ({status})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::embedded_default(std::path::PathBuf::from("/tmp/x"));
        c.replica = Some(Replica {
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
                    mac: None,
                    service_address: None,
                },
            ],
            initial_primary: "mxa".into(),
            interface: "eth1".into(),
            port: 7788,
            service_address: Some("10.99.0.100/24".into()),
            service_interface: None,
            peer_wait_secs: 30,
            resync_max_mib: 100,
            auto_promote: false,
            witness: None,
            auto_promote_after_secs: 10,
        });
        c
    }

    #[test]
    fn env_names_this_node_its_peer_and_the_preference() {
        let c = config();
        let b = env(&c, Some("mxb")).unwrap();
        assert!(b.contains("REPLICA_NODE='mxb'\n"));
        assert!(b.contains("REPLICA_PEER_IP='10.99.0.1'\n"));
        assert!(b.contains("REPLICA_PREFERRED='0'\n"));
        assert!(
            env(&c, Some("mxa"))
                .unwrap()
                .contains("REPLICA_PREFERRED='1'\n")
        );
        assert!(env(&c, Some("mxc")).is_err());
        assert_eq!(
            env(
                &Config::embedded_default(std::path::PathBuf::from("/tmp/x")),
                None
            )
            .unwrap(),
            "REPLICA=0\n"
        );
    }

    #[test]
    fn the_resource_is_protocol_c_and_never_discards_a_side() {
        let conf = drbd_conf(&config(), "/dev/md/data").unwrap();
        assert!(conf.contains("protocol C;"));
        assert!(conf.contains("usage-count no;"));
        for sb in ["after-sb-0pri", "after-sb-1pri", "after-sb-2pri"] {
            assert!(conf.contains(&format!("{sb} disconnect;")), "{sb}");
        }
        assert!(conf.contains("floating 10.99.0.1:7788 {"));
        assert!(conf.contains("floating 10.99.0.2:7788 {"));
        assert!(conf.contains("disk /dev/md/data;"));
        assert!(drbd_conf(&config(), "md0; rm").is_err());
    }
}
