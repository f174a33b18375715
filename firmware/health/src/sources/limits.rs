//! Kernel limits, each with its current use and its limit, named by the
//! sysctl that raises it (the seed's IMAP server panicked on a compiled-in
//! limit; here every limit is watched and most can be raised live).
//!
//! | sysctl | use | limit |
//! | --- | --- | --- |
//! | fs.file-max | /proc/sys/fs/file-nr: allocated - free | file-nr third field |
//! | kernel.pid_max, kernel.threads-max | /proc/loadavg: scheduling entities | /proc/sys/kernel/... |
//! | fs.inotify.max_user_watches / _instances | inotify fds in /proc/*/fdinfo (slow scan) | /proc/sys/fs/inotify/... |
//! | net.core.somaxconn | longest accept queue of a listening socket (/proc/net/tcp{,6}) | /proc/sys/net/core/somaxconn |
//! | net.ipv4.ip_local_port_range | connected TCP sockets on an ephemeral local port (slow scan) | size of the range |
//! | net.ipv4.tcp_max_orphans | /proc/net/sockstat orphan | /proc/sys/net/ipv4/tcp_max_orphans |
//! | net.ipv4.tcp_mem | /proc/net/sockstat mem (pages) | tcp_mem third value |
//! | net.netfilter.nf_conntrack_max | nf_conntrack_count | nf_conntrack_max (when loaded) |
//!
//! Listen-queue overflows (/proc/net/netstat TcpExt ListenOverflows and
//! ListenDrops) are counters, reported as such.

use crate::sysroot::SysRoot;
use serde::Serialize;

/// Most processes and descriptors the slow scans visit.
pub const SCAN_PROCESSES_MAX: usize = 32_768;
pub const SCAN_FDS_PER_PROCESS_MAX: usize = 65_536;
/// Most lines read from /proc/net/tcp{,6}.
pub const TCP_LINES_MAX: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitObs {
    /// The sysctl that sets the limit.
    pub key: String,
    /// What is counted, for people.
    pub what: String,
    pub used: u64,
    pub max: u64,
}

impl LimitObs {
    fn new(key: &str, what: &str, used: u64, max: u64) -> LimitObs {
        LimitObs {
            key: key.into(),
            what: what.into(),
            used,
            max,
        }
    }

    /// Share of the limit in use, in tenths of a percent.
    pub fn permille(&self) -> u64 {
        if self.max == 0 {
            return 0;
        }
        self.used.saturating_mul(1000) / self.max
    }
}

/// Counters from /proc/net/netstat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetCounters {
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// `sockets: used N` of /proc/net/sockstat.
    pub sockets_used: u64,
}

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// The path of a sysctl under /proc/sys (`fs.file-max` -> /proc/sys/fs/file-max).
pub fn sysctl_file(key: &str) -> String {
    sysctl_path(key)
}

/// `TcpExt: ... ListenOverflows ...` header line then the values line.
pub fn parse_netstat(text: &str) -> NetCounters {
    let mut out = NetCounters::default();
    let mut lines = text.lines();
    while let Some(head) = lines.next() {
        let Some(values) = lines.next() else { break };
        if !head.starts_with("TcpExt:") {
            continue;
        }
        for (k, v) in head.split_whitespace().zip(values.split_whitespace()) {
            match k {
                "ListenOverflows" => out.listen_overflows = v.parse().unwrap_or(0),
                "ListenDrops" => out.listen_drops = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    out
}

/// /proc/net/sockstat: (sockets used, TCP orphans, TCP memory pages).
pub fn parse_sockstat(text: &str) -> (u64, u64, u64) {
    let mut sockets = 0;
    let mut orphan = 0;
    let mut mem = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let get = |k: &str| {
            words
                .windows(2)
                .find(|w| w[0] == k)
                .and_then(|w| w[1].parse::<u64>().ok())
        };
        match words.first() {
            Some(&"sockets:") => sockets = get("used").unwrap_or(0),
            Some(&"TCP:") => {
                orphan = get("orphan").unwrap_or(0);
                mem = get("mem").unwrap_or(0);
            }
            _ => {}
        }
    }
    (sockets, orphan, mem)
}

/// One line of /proc/net/tcp: (local port, state, rx_queue).
fn parse_tcp_line(line: &str) -> Option<(u16, u8, u64)> {
    let mut f = line.split_whitespace();
    let _slot = f.next()?;
    let local = f.next()?;
    let _remote = f.next()?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    let queues = f.next()?;
    let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
    let rx = u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()?;
    Some((port, state, rx))
}

/// TCP state LISTEN in /proc/net/tcp.
const TCP_LISTEN: u8 = 0x0A;

/// (longest accept queue of a listener, connections on an ephemeral port).
pub fn scan_tcp(tables: &[&str], ephemeral: (u16, u16)) -> (u64, u64) {
    let mut longest_queue = 0;
    let mut ephemeral_used = 0;
    for t in tables {
        for line in t.lines().skip(1).take(TCP_LINES_MAX) {
            let Some((port, state, rx)) = parse_tcp_line(line) else {
                continue;
            };
            if state == TCP_LISTEN {
                longest_queue = longest_queue.max(rx);
            } else if (ephemeral.0..=ephemeral.1).contains(&port) {
                ephemeral_used += 1;
            }
        }
    }
    (longest_queue, ephemeral_used)
}

/// Limits read every tick (cheap: a handful of small files).
pub fn read_fast(root: &SysRoot) -> (Vec<LimitObs>, NetCounters) {
    let mut out = Vec::new();
    if let Some(nr) = root.attr("/proc/sys/fs/file-nr") {
        let f: Vec<u64> = nr
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [allocated, free, max] = f[..] {
            out.push(LimitObs::new(
                "fs.file-max",
                "open files",
                allocated.saturating_sub(free),
                max,
            ));
        }
    }
    // The fourth field of loadavg is "running/total" scheduling entities:
    // every thread holds a PID, so it counts against both limits.
    let tasks = root.attr("/proc/loadavg").and_then(|l| {
        l.split_whitespace()
            .nth(3)
            .and_then(|f| f.split_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok())
    });
    if let Some(tasks) = tasks {
        for (key, what) in [
            ("kernel.pid_max", "process ids (threads included)"),
            ("kernel.threads-max", "threads"),
        ] {
            if let Some(max) = root.attr_u64(&sysctl_path(key)) {
                out.push(LimitObs::new(key, what, tasks, max));
            }
        }
    }
    let (sockets, orphan, mem) = root
        .attr("/proc/net/sockstat")
        .map(|s| parse_sockstat(&s))
        .unwrap_or_default();
    if let Some(max) = root.attr_u64("/proc/sys/net/ipv4/tcp_max_orphans") {
        out.push(LimitObs::new(
            "net.ipv4.tcp_max_orphans",
            "orphaned TCP sockets",
            orphan,
            max,
        ));
    }
    if let Some(tcp_mem) = root.attr("/proc/sys/net/ipv4/tcp_mem")
        && let Some(max) = tcp_mem
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
    {
        out.push(LimitObs::new(
            "net.ipv4.tcp_mem",
            "TCP buffer memory (pages)",
            mem,
            max,
        ));
    }
    if let (Some(count), Some(max)) = (
        root.attr_u64("/proc/sys/net/netfilter/nf_conntrack_count"),
        root.attr_u64("/proc/sys/net/netfilter/nf_conntrack_max"),
    ) {
        out.push(LimitObs::new(
            "net.netfilter.nf_conntrack_max",
            "tracked connections",
            count,
            max,
        ));
    }
    let mut net = root
        .table("/proc/net/netstat")
        .map(|t| parse_netstat(&t))
        .unwrap_or_default();
    net.sockets_used = sockets;
    (out, net)
}

/// Limits that need a scan of /proc (inotify) or of the TCP tables: run
/// every `slow_interval_secs`.
pub fn read_slow(root: &SysRoot) -> Vec<LimitObs> {
    let mut out = Vec::new();
    let (watches, instances) = scan_inotify(root);
    if let Some(max) = root.attr_u64("/proc/sys/fs/inotify/max_user_watches") {
        out.push(LimitObs::new(
            "fs.inotify.max_user_watches",
            "inotify watches",
            watches,
            max,
        ));
    }
    if let Some(max) = root.attr_u64("/proc/sys/fs/inotify/max_user_instances") {
        out.push(LimitObs::new(
            "fs.inotify.max_user_instances",
            "inotify instances",
            instances,
            max,
        ));
    }
    let tcp = root.table("/proc/net/tcp").unwrap_or_default();
    let tcp6 = root.table("/proc/net/tcp6").unwrap_or_default();
    let range = root
        .attr("/proc/sys/net/ipv4/ip_local_port_range")
        .and_then(|r| {
            let mut w = r.split_whitespace();
            Some((
                w.next()?.parse::<u16>().ok()?,
                w.next()?.parse::<u16>().ok()?,
            ))
        });
    let (queue, ephemeral) = scan_tcp(&[&tcp, &tcp6], range.unwrap_or((1, 0)));
    if let Some(max) = root.attr_u64("/proc/sys/net/core/somaxconn") {
        out.push(LimitObs::new(
            "net.core.somaxconn",
            "longest listen queue",
            queue,
            max,
        ));
    }
    if let Some((lo, hi)) = range
        && hi >= lo
    {
        out.push(LimitObs::new(
            "net.ipv4.ip_local_port_range",
            "ephemeral ports in use",
            ephemeral,
            u64::from(hi - lo) + 1,
        ));
    }
    out
}

/// (watches, instances) over every inotify descriptor of every process:
/// fd links "anon_inode:inotify", one "inotify wd:" line per watch in fdinfo.
fn scan_inotify(root: &SysRoot) -> (u64, u64) {
    let mut watches = 0;
    let mut instances = 0;
    for pid in root
        .list("/proc")
        .into_iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .take(SCAN_PROCESSES_MAX)
    {
        for fd in root
            .list(&format!("/proc/{pid}/fd"))
            .into_iter()
            .take(SCAN_FDS_PER_PROCESS_MAX)
        {
            if root.link(&format!("/proc/{pid}/fd/{fd}")).as_deref() != Some("anon_inode:inotify") {
                continue;
            }
            instances += 1;
            if let Some(info) = root.table(&format!("/proc/{pid}/fdinfo/{fd}")) {
                watches += info
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count() as u64;
            }
        }
    }
    (watches, instances)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_and_sockstat() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\nTcpExt: 0 17 19 5\nIpExt: InNoRoutes\nIpExt: 0\n";
        let n = parse_netstat(netstat);
        assert_eq!((n.listen_overflows, n.listen_drops), (17, 19));
        let sockstat =
            "sockets: used 6\nTCP: inuse 3 orphan 2 tw 0 alloc 3 mem 7\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat(sockstat), (6, 2, 7));
    }

    #[test]
    fn tcp_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:09C5 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:8001 0100007F:09C5 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
   2: 0100007F:09C5 0100007F:8001 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";
        // 0x8001 = 32769 is in 32768-60999; 0x09C5 = 2501 is not.
        assert_eq!(scan_tcp(&[tcp], (32768, 60999)), (3, 1));
    }
}
