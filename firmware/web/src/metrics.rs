//! The monitor's figures in the Prometheus text format (version 0.0.4):
//! arrays, disks (labelled by serial and WWN, never by kernel name), kernel
//! limits, listen-queue overflows, space, memory, the intake gate and the
//! monitor's own cost; and the login figures of `mxrack-auth` per protocol.

use mxrack_health::Snapshot;
use std::fmt::Write;

/// Escapes a label value (backslash, double quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The metrics page. `open_incidents` comes from the store.
pub fn render(s: &Snapshot, open_incidents: usize) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.family(
        "mxrack_md_degraded",
        "gauge",
        "Members an md array is missing (sysfs degraded).",
    );
    for a in &s.arrays {
        o.sample(
            "mxrack_md_degraded",
            &[("array", &a.name), ("level", &a.level)],
            a.degraded,
        );
    }
    o.family(
        "mxrack_md_members",
        "gauge",
        "Members of an md array by role.",
    );
    for a in &s.arrays {
        for role in ["in_sync", "spare", "rebuilding", "faulty"] {
            let n = a.members.iter().filter(|m| m.role == role).count();
            o.sample(
                "mxrack_md_members",
                &[("array", &a.name), ("role", role)],
                n,
            );
        }
    }
    o.family(
        "mxrack_md_raid_disks",
        "gauge",
        "Members an md array should have.",
    );
    for a in &s.arrays {
        o.sample("mxrack_md_raid_disks", &[("array", &a.name)], a.raid_disks);
    }
    o.family(
        "mxrack_md_sync_ratio",
        "gauge",
        "Progress of a running resync or rebuild (0-1); absent when idle.",
    );
    for a in &s.arrays {
        if let Some(p) = a.sync_permille {
            o.sample(
                "mxrack_md_sync_ratio",
                &[("array", &a.name), ("action", &a.sync_action)],
                f64::from(p) / 1000.0,
            );
        }
    }
    o.family(
        "mxrack_disk_io_errors_total",
        "counter",
        "I/O errors the SCSI layer counted on a disk (ioerr_cnt).",
    );
    for d in &s.disks {
        let wwn = d.wwn.as_deref().unwrap_or("");
        o.sample(
            "mxrack_disk_io_errors_total",
            &[("disk", &d.id), ("wwn", wwn)],
            d.ioerr,
        );
    }
    o.family(
        "mxrack_disk_io_timeouts_total",
        "counter",
        "I/O timeouts on a disk (iotmo_cnt).",
    );
    for d in &s.disks {
        o.sample("mxrack_disk_io_timeouts_total", &[("disk", &d.id)], d.iotmo);
    }
    o.family(
        "mxrack_disk_io_done_total",
        "counter",
        "I/O requests a disk completed (iodone_cnt).",
    );
    for d in &s.disks {
        o.sample("mxrack_disk_io_done_total", &[("disk", &d.id)], d.iodone);
    }
    o.family(
        "mxrack_disk_errors_in_window",
        "gauge",
        "Errors within health.disk_error_window_secs.",
    );
    for d in &s.disks {
        o.sample(
            "mxrack_disk_errors_in_window",
            &[("disk", &d.id)],
            d.errors_in_window,
        );
    }
    o.family(
        "mxrack_disk_up",
        "gauge",
        "1 when the disk's SCSI state is running.",
    );
    for d in &s.disks {
        o.sample(
            "mxrack_disk_up",
            &[
                ("disk", &d.id),
                ("bay", &d.location()),
                ("condition", &d.condition),
            ],
            u8::from(d.state == "running"),
        );
    }
    o.family(
        "mxrack_kernel_limit_used",
        "gauge",
        "Current use of a kernel limit, by the sysctl that sets it.",
    );
    for l in &s.limits {
        o.sample("mxrack_kernel_limit_used", &[("sysctl", &l.key)], l.used);
    }
    o.family(
        "mxrack_kernel_limit_max",
        "gauge",
        "The kernel limit, by sysctl.",
    );
    for l in &s.limits {
        o.sample("mxrack_kernel_limit_max", &[("sysctl", &l.key)], l.max);
    }
    o.family(
        "mxrack_tcp_listen_overflows_total",
        "counter",
        "Connections dropped on a full listen queue (TcpExt ListenOverflows).",
    );
    o.sample("mxrack_tcp_listen_overflows_total", &[], s.listen_overflows);
    o.family(
        "mxrack_tcp_listen_drops_total",
        "counter",
        "TcpExt ListenDrops.",
    );
    o.sample("mxrack_tcp_listen_drops_total", &[], s.listen_drops);
    o.family(
        "mxrack_sockets_used",
        "gauge",
        "Sockets in use (/proc/net/sockstat).",
    );
    o.sample("mxrack_sockets_used", &[], s.sockets_used);
    o.family("mxrack_fs_size_bytes", "gauge", "Size of a file system.");
    for f in &s.filesystems {
        o.sample(
            "mxrack_fs_size_bytes",
            &[("fs", &f.name), ("path", &f.path)],
            f.size_bytes,
        );
    }
    o.family(
        "mxrack_fs_free_bytes",
        "gauge",
        "Space free for the appliance (f_bavail).",
    );
    for f in &s.filesystems {
        o.sample(
            "mxrack_fs_free_bytes",
            &[("fs", &f.name), ("path", &f.path)],
            f.free_bytes,
        );
    }
    o.family("mxrack_fs_inodes", "gauge", "Inodes of a file system.");
    for f in &s.filesystems {
        o.sample("mxrack_fs_inodes", &[("fs", &f.name)], f.inodes);
    }
    o.family("mxrack_fs_inodes_free", "gauge", "Free inodes.");
    for f in &s.filesystems {
        o.sample("mxrack_fs_inodes_free", &[("fs", &f.name)], f.inodes_free);
    }
    o.family(
        "mxrack_fs_refuse_below_bytes",
        "gauge",
        "Free space below which new mail is refused.",
    );
    for f in &s.filesystems {
        o.sample(
            "mxrack_fs_refuse_below_bytes",
            &[("fs", &f.name)],
            f.refuse_below_bytes,
        );
    }
    if let Some(m) = &s.memory {
        o.family(
            "mxrack_memory_total_bytes",
            "gauge",
            "Memory of the machine.",
        );
        o.sample("mxrack_memory_total_bytes", &[], m.total_bytes);
        o.family(
            "mxrack_memory_available_bytes",
            "gauge",
            "Memory available.",
        );
        o.sample("mxrack_memory_available_bytes", &[], m.available_bytes);
        o.family("mxrack_swap_total_bytes", "gauge", "Swap of the machine.");
        o.sample("mxrack_swap_total_bytes", &[], m.swap_total_bytes);
        o.family("mxrack_swap_free_bytes", "gauge", "Swap free.");
        o.sample("mxrack_swap_free_bytes", &[], m.swap_free_bytes);
        o.family("mxrack_load", "gauge", "Load average.");
        for (w, v) in [("1m", m.load1), ("5m", m.load5), ("15m", m.load15)] {
            o.sample("mxrack_load", &[("window", w)], v);
        }
    }
    if let Some(r) = &s.replica {
        o.family(
            "mxrack_replica_active",
            "gauge",
            "1 on the active node of a replica pair (DRBD Primary).",
        );
        o.sample("mxrack_replica_active", &[], u8::from(r.role == "Primary"));
        o.family(
            "mxrack_replica_peer_connected",
            "gauge",
            "1 while the replica peer is connected (DRBD connection state).",
        );
        o.sample(
            "mxrack_replica_peer_connected",
            &[("state", &r.connection)],
            u8::from(r.connected()),
        );
        o.family(
            "mxrack_replica_out_of_sync_bytes",
            "gauge",
            "Bytes the peer lacks (DRBD oos): the replication lag.",
        );
        o.sample(
            "mxrack_replica_out_of_sync_bytes",
            &[],
            r.out_of_sync_kib * 1024,
        );
        o.family(
            "mxrack_replica_in_sync",
            "gauge",
            "1 when both copies are UpToDate and connected.",
        );
        o.sample("mxrack_replica_in_sync", &[], u8::from(r.in_sync()));
        if let Some(p) = r.sync_permille {
            o.family(
                "mxrack_replica_sync_ratio",
                "gauge",
                "Progress of a running DRBD resync (0-1).",
            );
            o.sample("mxrack_replica_sync_ratio", &[], f64::from(p) / 1000.0);
        }
    }
    o.family(
        "mxrack_intake_refused",
        "gauge",
        "1 while new mail is refused for lack of space.",
    );
    o.sample(
        "mxrack_intake_refused",
        &[],
        u8::from(s.intake_refusal.is_some()),
    );
    o.family(
        "mxrack_open_incidents",
        "gauge",
        "Incidents open on the status page.",
    );
    o.sample("mxrack_open_incidents", &[], open_incidents);
    o.family(
        "mxrack_monitor_looks_total",
        "counter",
        "Looks the health monitor took.",
    );
    o.sample("mxrack_monitor_looks_total", &[], s.monitor.looks);
    o.family(
        "mxrack_monitor_kernel_wakeups_total",
        "counter",
        "Looks started by a kernel notification (md sysfs, hot-plug).",
    );
    o.sample(
        "mxrack_monitor_kernel_wakeups_total",
        &[],
        s.monitor.woken_by_kernel,
    );
    o.family(
        "mxrack_monitor_cpu_seconds_total",
        "counter",
        "CPU time of the health monitor thread.",
    );
    o.sample(
        "mxrack_monitor_cpu_seconds_total",
        &[],
        s.monitor.cpu_seconds,
    );
    o.family(
        "mxrack_monitor_last_look_seconds",
        "gauge",
        "Wall time of the last look.",
    );
    o.sample(
        "mxrack_monitor_last_look_seconds",
        &[],
        s.monitor.last_look_micros as f64 / 1e6,
    );
    o.family(
        "mxrack_monitor_events_total",
        "counter",
        "Events the monitor recorded.",
    );
    o.sample(
        "mxrack_monitor_events_total",
        &[],
        s.monitor.events_recorded,
    );
    o.family(
        "mxrack_monitor_actions_total",
        "counter",
        "Actions the monitor took (faulty, remove, mdadm, sysctl).",
    );
    o.sample("mxrack_monitor_actions_total", &[], s.monitor.actions_taken);
    o.0
}

/// The login figures of the one authentication service, per protocol and
/// result (accepted, rejected: wrong password or unknown name, limited: a
/// budget spent, unavailable: the check failed).
pub fn render_auth(figures: &[(mxrack_auth::Protocol, mxrack_auth::Figures)]) -> String {
    let mut o = Out(String::with_capacity(1024));
    o.family(
        "mxrack_auth_attempts_total",
        "counter",
        "Logins (SMTP AUTH, IMAP, POP3, LDAP bind) by protocol and result.",
    );
    for (protocol, f) in figures {
        for (result, n) in [
            ("accepted", f.accepted),
            ("rejected", f.rejected),
            ("limited", f.limited),
            ("unavailable", f.unavailable),
        ] {
            o.sample(
                "mxrack_auth_attempts_total",
                &[("protocol", protocol.name()), ("result", result)],
                n,
            );
        }
    }
    o.0
}

/// The shared memory budget for client data in flight (`[memory]`): its
/// size, what is leased now, and the requests it refused.
pub fn render_memory(budget: &mxrack_net::budget::MemoryBudget) -> String {
    let mut o = Out(String::with_capacity(512));
    o.family(
        "mxrack_client_data_budget_bytes",
        "gauge",
        "The memory budget for client data in flight, all services together.",
    );
    o.sample("mxrack_client_data_budget_bytes", &[], budget.total_bytes());
    o.family(
        "mxrack_client_data_leased_bytes",
        "gauge",
        "Bytes of the client data budget leased now (messages read or arriving).",
    );
    o.sample("mxrack_client_data_leased_bytes", &[], budget.used_bytes());
    o.family(
        "mxrack_client_data_refused_total",
        "counter",
        "Requests refused with a temporary error because the budget was spent.",
    );
    o.sample("mxrack_client_data_refused_total", &[], budget.refused());
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_figures_per_protocol_and_result() {
        let text = render_auth(&[(
            mxrack_auth::Protocol::Pop3,
            mxrack_auth::Figures {
                accepted: 2,
                rejected: 3,
                limited: 4,
                unavailable: 0,
            },
        )]);
        assert!(
            text.starts_with("# HELP mxrack_auth_attempts_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE mxrack_auth_attempts_total counter\n"));
        assert!(
            text.contains("mxrack_auth_attempts_total{protocol=\"pop3\",result=\"rejected\"} 3\n")
        );
        assert!(
            text.contains("mxrack_auth_attempts_total{protocol=\"pop3\",result=\"limited\"} 4\n")
        );
    }
    use mxrack_health::snapshot::{ArrayView, DiskView, MemberView};

    #[test]
    fn families_and_escaped_labels() {
        let s = Snapshot {
            arrays: vec![ArrayView {
                name: "md0".into(),
                level: "raid1".into(),
                degraded: 1,
                raid_disks: 2,
                sync_action: "recover".into(),
                sync_permille: Some(275),
                members: vec![MemberView {
                    disk: "SN-1".into(),
                    role: "in_sync".into(),
                    ..MemberView::default()
                }],
                ..ArrayView::default()
            }],
            disks: vec![DiskView {
                id: "SN \"odd\"\\1".into(),
                ioerr: 8,
                state: "running".into(),
                ..DiskView::default()
            }],
            ..Snapshot::default()
        };
        let m = render(&s, 2);
        assert!(m.contains("mxrack_md_degraded{array=\"md0\",level=\"raid1\"} 1\n"));
        assert!(m.contains("mxrack_md_sync_ratio{array=\"md0\",action=\"recover\"} 0.275\n"));
        assert!(m.contains("mxrack_md_members{array=\"md0\",role=\"in_sync\"} 1\n"));
        assert!(
            m.contains("mxrack_disk_io_errors_total{disk=\"SN \\\"odd\\\"\\\\1\",wwn=\"\"} 8\n")
        );
        assert!(m.contains("mxrack_open_incidents 2\n"));
        // Every sample line belongs to a declared family.
        let families: Vec<&str> = m
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().expect("name");
            assert!(families.contains(&name), "{line}");
        }
    }
}
