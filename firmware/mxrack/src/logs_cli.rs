//! Persistent logs (issue 14): `mxrack logs collect` writes the appliance's
//! log to `<data_dir>/log/` on the RAID, and `mxrack logs` reads it back.
//!
//! The collector takes three sources, each line stamped with the time, the
//! boot and the source:
//! - `mxrack`: its standard input (the supervisor copies mxrack's output);
//! - `boot`: the start-up scripts' log in RAM (`/run/mxrack/boot.log`),
//!   read from where the last collector of this boot stopped;
//! - `kernel`: the kernel's messages (`/dev/kmsg`), from the first record
//!   this boot's collectors have not written yet, so disk and driver errors
//!   outlive a reboot.
//!
//! Bounds: a line is cut at [`LINE_MAX`]; `mxrack.log` is rotated to
//! `mxrack.log.1` .. `mxrack.log.<keep_files - 1>` when it would pass
//! `[log] file_max_bytes`, so the folder holds at most keep_files x
//! file_max_bytes. The file is opened for each batch and closed again:
//! `/data` stays unmountable at any moment (a replica demote, a shutdown).
//! Reading keeps only the last `-n` matching lines in memory.

use crate::cli::CliError;
use mxrack_config::Config;
use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// A log line's text is cut here (bytes).
pub const LINE_MAX: usize = 4096;
/// Lines waiting for the writer; a source blocks beyond that.
const QUEUE_MAX: usize = 4096;
pub const FILE_NAME: &str = "mxrack.log";
/// The start-up scripts' log in RAM (lib.sh's log and warn).
pub const BOOT_LOG: &str = "/run/mxrack/boot.log";
pub const KMSG: &str = "/dev/kmsg";
/// How far this boot's collectors got (so a restarted collector does not
/// write a line twice), beside the boot log (in RAM: one boot's): the boot
/// log's byte offset and the kernel's record sequence number.
const BOOT_OFFSET_FILE: &str = "log-boot.offset";
const KMSG_SEQ_FILE: &str = "log-kmsg.seq";

pub fn log_dir(config: &Config) -> PathBuf {
    config.appliance.data_dir.join("log")
}

/// This boot's short id (the kernel's boot_id, first 8 hex digits).
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().chars().filter(|c| *c != '-').take(8).collect())
        .unwrap_or_else(|_| "unknown".into())
}

/// Control characters become spaces (a line is one line); cut at LINE_MAX
/// on a character boundary.
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .trim_end_matches(['\r', '\n'])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > LINE_MAX {
        let mut cut = LINE_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" [cut]");
    }
    out
}

fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let second = mxrack_health::time::rfc3339(d.as_secs() as i64);
    format!("{}.{:03}Z", second.trim_end_matches('Z'), d.subsec_millis())
}

/// Calls `each` with every line of the log files, oldest first; a line is
/// read to at most twice LINE_MAX bytes (the rest comes as the next one).
fn for_each_line(files: &[PathBuf], mut each: impl FnMut(&str)) -> Result<(), CliError> {
    for p in files {
        let f = fs::File::open(p).map_err(|e| CliError::Admin(format!("{}: {e}", p.display())))?;
        let mut r = BufReader::new(f);
        let mut buf = Vec::new();
        while read_line_bounded(&mut r, LINE_MAX * 2, &mut buf) {
            each(String::from_utf8_lossy(&buf).trim_end());
        }
    }
    Ok(())
}

/// The rotating file writer.
pub struct Rotating {
    pub dir: PathBuf,
    pub file_max: u64,
    pub keep: u32,
}

impl Rotating {
    fn path(&self, n: u32) -> PathBuf {
        if n == 0 {
            self.dir.join(FILE_NAME)
        } else {
            self.dir.join(format!("{FILE_NAME}.{n}"))
        }
    }

    /// Moves mxrack.log to .1, .1 to .2, ...; the oldest beyond `keep`
    /// files is removed.
    fn rotate(&self) -> std::io::Result<()> {
        let _ = fs::remove_file(self.path(self.keep.saturating_sub(1).max(1)));
        for n in (1..self.keep.saturating_sub(1).max(1)).rev() {
            let _ = fs::rename(self.path(n), self.path(n + 1));
        }
        fs::rename(self.path(0), self.path(1))
    }

    /// Appends whole lines (each ends with '\n'), rotating before a line
    /// that would pass the size bound, so a batch of any size keeps it.
    pub fn append(&self, batch: &str) -> std::io::Result<()> {
        // Not create_dir_all: with /data unmounted, its mount point in RAM
        // has no data folder, and the log must not appear there.
        match fs::create_dir(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let mut size = fs::metadata(self.path(0)).map(|m| m.len()).unwrap_or(0);
        let mut rest = batch;
        while !rest.is_empty() {
            if size > 0 && size + first_line_len(rest) > self.file_max {
                self.rotate()?;
                size = 0;
            }
            // As many whole lines as fit (at least one: a line is far
            // shorter than the smallest file_max).
            let mut take = first_line_len(rest) as usize;
            while take < rest.len()
                && size + (take as u64) + first_line_len(&rest[take..]) <= self.file_max
            {
                take += first_line_len(&rest[take..]) as usize;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(0))?;
            f.write_all(&rest.as_bytes()[..take])?;
            size += take as u64;
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Every file, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = (1..self.keep.max(2))
            .rev()
            .map(|n| self.path(n))
            .filter(|p| p.exists())
            .collect();
        if self.path(0).exists() {
            out.push(self.path(0));
        }
        out
    }
}

/// The length of the first line of `text`, its '\n' included.
fn first_line_len(text: &str) -> u64 {
    text.find('\n').map_or(text.len(), |i| i + 1) as u64
}

/// Reads one line of at most `max` bytes into `buf` (a longer line comes
/// as several); false at the end or on an error other than EPIPE (the
/// kernel's "records overwritten" on /dev/kmsg, skipped over).
fn read_line_bounded(r: &mut impl BufRead, max: usize, buf: &mut Vec<u8>) -> bool {
    loop {
        buf.clear();
        match r.take(max as u64).read_until(b'\n', buf) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(_) => return false,
        }
    }
}

enum Line {
    Text(&'static str, String),
    /// A source's progress mark, written after its lines are on disk.
    BootOffset(u64),
    KmsgSeq(u64),
}

/// A kernel record (`/dev/kmsg`: "pri,seq,usec,flags;text"): its sequence
/// number and a readable line; `None` for continuation lines.
pub fn parse_kmsg(record: &str) -> Option<(u64, String)> {
    let (head, text) = record.split_once(';')?;
    let mut f = head.split(',');
    let pri: u32 = f.next()?.parse().ok()?;
    let seq: u64 = f.next()?.parse().ok()?;
    let usec: u64 = f.next()?.parse().ok()?;
    const LEVELS: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug",
    ];
    Some((
        seq,
        format!(
            "[{:>5}.{:06}] {}: {}",
            usec / 1_000_000,
            usec % 1_000_000,
            LEVELS[(pri & 7) as usize],
            text.trim_end()
        ),
    ))
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads kernel records after `after` from `f` until it ends (or, opened
/// non-blocking, until the kernel has no more); Err when the writer is gone.
fn kmsg_pass(f: fs::File, after: &mut Option<u64>, tx: &mpsc::SyncSender<Line>) -> Result<(), ()> {
    let mut r = BufReader::with_capacity(LINE_MAX * 2, f);
    let mut buf = Vec::new();
    while read_line_bounded(&mut r, LINE_MAX * 2, &mut buf) {
        let text = String::from_utf8_lossy(&buf);
        let Some((seq, line)) = parse_kmsg(&text) else {
            continue;
        };
        if after.is_some_and(|a| seq <= a) {
            continue;
        }
        *after = Some(seq);
        tx.send(Line::Text("kernel", clean(&line)))
            .map_err(|_| ())?;
        tx.send(Line::KmsgSeq(seq)).map_err(|_| ())?;
    }
    Ok(())
}

/// Sends the start-up log's whole new lines after `offset`; false when the
/// writer is gone.
fn boot_log_pass(path: &Path, offset: &std::sync::Mutex<u64>, tx: &mpsc::SyncSender<Line>) -> bool {
    use std::io::Seek;
    let mut offset = offset.lock().unwrap_or_else(|p| p.into_inner());
    let offset = &mut *offset;
    let Ok(mut f) = fs::File::open(path) else {
        return true;
    };
    // Moved aside (lib.sh keeps it under 1 MiB): from the start.
    if f.metadata().is_ok_and(|m| m.len() < *offset) {
        *offset = 0;
    }
    if f.seek(std::io::SeekFrom::Start(*offset)).is_err() {
        return true;
    }
    let mut r = BufReader::new(f.take(1 << 20));
    let mut line = Vec::new();
    // Bytes, not read_line: a disk's raw serial in a line is not UTF-8, and
    // must not stop the source at that line.
    while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 && line.ends_with(b"\n") {
        *offset += line.len() as u64;
        if tx
            .send(Line::Text("boot", clean(&String::from_utf8_lossy(&line))))
            .is_err()
        {
            return false;
        }
        line.clear();
    }
    tx.send(Line::BootOffset(*offset)).is_ok()
}

/// `mxrack logs collect`: runs until its standard input ends.
pub fn collect(config: &Config, boot_log: &Path, kmsg: &Path) -> Result<String, CliError> {
    let writer = Rotating {
        dir: log_dir(config),
        file_max: config.log.file_max_bytes,
        keep: config.log.keep_files,
    };
    if !config.appliance.data_dir.is_dir() {
        return Err(CliError::Admin(format!(
            "no data folder {}: the log is kept only on the data array",
            config.appliance.data_dir.display()
        )));
    }
    let (tx, rx) = mpsc::sync_channel::<Line>(QUEUE_MAX);
    let state = boot_log.parent().unwrap_or(Path::new(".")).to_path_buf();
    let boot_offset_file = state.join(BOOT_OFFSET_FILE);
    let kmsg_seq_file = state.join(KMSG_SEQ_FILE);

    // Each source first catches up with what is there (the kernel's
    // records of this boot, the start-up log), then follows it; standard
    // input is read only after both caught up, so a collector whose input
    // ends at once still writes them.
    let caught_up = std::sync::Arc::new(std::sync::Barrier::new(3));
    {
        let tx = tx.clone();
        let kmsg = kmsg.to_path_buf();
        let mut after = read_number(&kmsg_seq_file);
        let caught_up = caught_up.clone();
        std::thread::spawn(move || {
            // Catching up: non-blocking reads until the kernel has no more.
            use std::os::unix::fs::OpenOptionsExt;
            let nonblocking = nix::fcntl::OFlag::O_NONBLOCK.bits();
            let gone = OpenOptions::new()
                .read(true)
                .custom_flags(nonblocking)
                .open(&kmsg)
                .is_ok_and(|f| kmsg_pass(f, &mut after, &tx).is_err());
            caught_up.wait();
            if gone {
                return;
            }
            if let Ok(f) = fs::File::open(&kmsg) {
                let _ = kmsg_pass(f, &mut after, &tx);
            }
        });
    }
    let offset = std::sync::Arc::new(std::sync::Mutex::new(
        read_number(&boot_offset_file).unwrap_or(0),
    ));
    {
        let tx = tx.clone();
        let boot_log = boot_log.to_path_buf();
        let offset = offset.clone();
        let caught_up = caught_up.clone();
        std::thread::spawn(move || {
            let mut first = true;
            loop {
                let ok = boot_log_pass(&boot_log, &offset, &tx);
                if first {
                    caught_up.wait();
                    first = false;
                }
                if !ok {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    }
    // Standard input: mxrack's output.
    {
        let tx = tx.clone();
        let boot_log = boot_log.to_path_buf();
        std::thread::spawn(move || {
            caught_up.wait();
            let stdin = std::io::stdin();
            let mut r = stdin.lock();
            let mut buf = Vec::new();
            while read_line_bounded(&mut r, LINE_MAX * 4, &mut buf) {
                let text = String::from_utf8_lossy(&buf);
                if tx.send(Line::Text("mxrack", clean(&text))).is_err() {
                    break;
                }
            }
            // The end of standard input ends the collector, after a last
            // look at the start-up log (a shutdown's own lines).
            boot_log_pass(&boot_log, &offset, &tx);
            let _ = tx.send(Line::Text("", String::new()));
        });
    }
    drop(tx);

    let boot = boot_id();
    let mut written = 0u64;
    // A failing disk or an unmounted /data is said once a minute, not for
    // every batch.
    let mut said_at: Option<std::time::Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        // What else is already waiting joins the batch (one open per batch).
        while batch.len() < 512 {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        let mut text = String::new();
        let mut marks = Vec::new();
        let mut done = false;
        let stamp = now_rfc3339();
        for l in batch {
            match l {
                Line::Text("", _) => done = true,
                Line::Text(source, line) => {
                    text.push_str(&format!("{stamp} boot={boot} {source}: {line}\n"));
                    written += 1;
                }
                other => marks.push(other),
            }
        }
        let failed = match (!text.is_empty()).then(|| writer.append(&text)) {
            Some(Err(e)) => {
                if said_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    eprintln!(
                        "mxrack logs collect: cannot write {}: {e}",
                        writer.dir.display()
                    );
                    said_at = Some(std::time::Instant::now());
                }
                true
            }
            _ => false,
        };
        // A source's progress is kept only once its lines are written.
        for m in marks.into_iter().filter(|_| !failed) {
            let _ = match m {
                Line::BootOffset(o) => fs::write(&boot_offset_file, o.to_string()),
                Line::KmsgSeq(s) => fs::write(&kmsg_seq_file, s.to_string()),
                Line::Text(..) => Ok(()),
            };
        }
        if done {
            break;
        }
    }
    Ok(format!("mxrack logs collect: {written} line(s) written\n"))
}

/// Which boot `mxrack logs --boot` shows.
#[derive(Debug, Clone, PartialEq)]
pub enum BootFilter {
    All,
    Current,
    /// The boot before the current one (the last one that ended).
    Previous,
    Id(String),
}

impl std::str::FromStr for BootFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "all" => BootFilter::All,
            "current" | "0" => BootFilter::Current,
            "previous" | "-1" => BootFilter::Previous,
            id if (1..=8).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                BootFilter::Id(id.to_ascii_lowercase())
            }
            other => return Err(format!("{other:?}: all, current, previous or a boot id")),
        })
    }
}

fn boot_of(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)?.strip_prefix("boot=")
}

/// `mxrack logs`: the last `lines` lines that match, oldest first.
pub fn show(
    config: &Config,
    lines: usize,
    boot: &BootFilter,
    source: Option<&str>,
    grep: Option<&str>,
) -> Result<String, CliError> {
    let writer = Rotating {
        dir: log_dir(config),
        file_max: config.log.file_max_bytes,
        keep: config.log.keep_files,
    };
    let files = writer.files();
    if files.is_empty() {
        return Err(CliError::Admin(format!(
            "no log in {} (the collector writes there once /data is mounted)",
            writer.dir.display()
        )));
    }
    let current = boot_id();
    // The previous boot: the last boot id other than the current one.
    let previous = match boot {
        BootFilter::Previous => {
            let mut last: Option<String> = None;
            for_each_line(&files, |l| {
                if let Some(b) = boot_of(l).filter(|b| *b != current)
                    && last.as_deref() != Some(b)
                {
                    last = Some(b.to_string());
                }
            })?;
            Some(last.ok_or_else(|| CliError::Admin("the log holds no earlier boot".into()))?)
        }
        _ => None,
    };
    let source_tag = source.map(|s| format!(" {s}: "));
    let lines = lines.clamp(1, 100_000);
    let mut ring: VecDeque<String> = VecDeque::with_capacity(lines.min(4096));
    for_each_line(&files, |l| {
        let b = boot_of(l);
        let keep = match boot {
            BootFilter::All => true,
            BootFilter::Current => b == Some(current.as_str()),
            BootFilter::Previous => b == previous.as_deref(),
            BootFilter::Id(id) => b.is_some_and(|b| b.starts_with(id.as_str())),
        } && source_tag.as_deref().is_none_or(|t| l.contains(t))
            && grep.is_none_or(|g| l.contains(g));
        if keep {
            if ring.len() == lines {
                ring.pop_front();
            }
            ring.push_back(l.to_string());
        }
    })?;
    let mut out = String::new();
    for l in ring {
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cleaned_and_cut() {
        assert_eq!(clean("a\tb\x1b[31mc\r\n"), "a b [31mc");
        let long = "é".repeat(LINE_MAX);
        let c = clean(&long);
        assert!(c.len() <= LINE_MAX + 6 && c.ends_with(" [cut]"));
    }

    #[test]
    fn rotation_keeps_the_folder_bounded() {
        let d = tempfile::tempdir().unwrap();
        let w = Rotating {
            dir: d.path().to_path_buf(),
            file_max: 1000,
            keep: 3,
        };
        for i in 0..200 {
            w.append(&format!("line {i:04} {}\n", "x".repeat(40)))
                .unwrap();
        }
        let files = w.files();
        assert_eq!(files.len(), 3, "{files:?}");
        let total: u64 = files.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 3 * 1000, "{total}");
        // The newest line is in mxrack.log, the files are in order.
        let last = fs::read_to_string(d.path().join(FILE_NAME)).unwrap();
        assert!(
            last.trim_end()
                .ends_with(&format!("line 0199 {}", "x".repeat(40)))
        );
        assert!(!d.path().join("mxrack.log.3").exists());
    }

    #[test]
    fn one_batch_larger_than_a_file_keeps_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let w = Rotating {
            dir: d.path().to_path_buf(),
            file_max: 1000,
            keep: 3,
        };
        let batch: String = (0..100)
            .map(|i| format!("line {i:04} {}\n", "y".repeat(40)))
            .collect();
        w.append(&batch).unwrap();
        for p in w.files() {
            let len = fs::metadata(&p).unwrap().len();
            assert!(len <= 1000, "{} is {len} bytes", p.display());
        }
        let last = fs::read_to_string(d.path().join(FILE_NAME)).unwrap();
        assert!(
            last.starts_with("line ")
                && last
                    .trim_end()
                    .ends_with(&format!("line 0099 {}", "y".repeat(40)))
        );
    }

    #[test]
    fn kernel_records_parse() {
        let (seq, line) = parse_kmsg("3,1234,5678901,-;sd 0:0:0:0: [sda] I/O error\n").unwrap();
        assert_eq!(seq, 1234);
        assert_eq!(line, "[    5.678901] err: sd 0:0:0:0: [sda] I/O error");
        assert_eq!(parse_kmsg(" SUBSYSTEM=scsi"), None);
        assert_eq!(parse_kmsg("x,1,2;y"), None);
    }

    #[test]
    fn boot_filters_parse() {
        assert_eq!("previous".parse::<BootFilter>(), Ok(BootFilter::Previous));
        assert_eq!(
            "AB12cd34".parse::<BootFilter>(),
            Ok(BootFilter::Id("ab12cd34".into()))
        );
        assert!("../etc".parse::<BootFilter>().is_err());
        let stamp = now_rfc3339();
        assert_eq!(stamp.len(), 24, "{stamp}");
        assert!(stamp.ends_with('Z'));
    }
}
