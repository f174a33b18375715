//! `mxrack disk locate SERIAL`: show a technician which bay holds a disk.
//!
//! Behind an SES enclosure (/sys/class/enclosure) the bay's own locate
//! (ident) LED is lit: with sg_ses (`--dev-slot-num=N --set=ident`, SES-3
//! 6.1.13 Device Slot element, RQST IDENT) when it is installed, else
//! through the kernel's ses driver (the component's `locate` attribute,
//! the same SES control page). Without one, the disk's own activity LED is
//! made to blink: reads for `on`, nothing for `off`, over and over, for a
//! bounded time, stopped early by `--off`. The reads go forward through the
//! disk and the page cache is dropped after each burst, so every burst
//! reaches the disk and lights its LED.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::sources::scsi::EnclosureSlot;
use crate::sysroot::SysRoot;

/// How long a locate blinks when not told, and at most.
pub const LOCATE_SECS_DEFAULT: u64 = 60;
pub const LOCATE_SECS_MAX: u64 = 600;
/// One read of a burst.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Most locates blinking at once.
pub const LOCATES_MAX: usize = 4;
/// Longest an sg_ses run may take.
pub const SG_SES_TIMEOUT: Duration = Duration::from_secs(20);

/// The rhythm of the activity LED: a second of reads, a second of rest,
/// unlike any steady load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blink {
    pub on: Duration,
    pub off: Duration,
    pub total: Duration,
}

impl Blink {
    pub fn for_secs(secs: u64) -> Blink {
        Blink {
            on: Duration::from_secs(1),
            off: Duration::from_secs(1),
            total: Duration::from_secs(secs.clamp(1, LOCATE_SECS_MAX)),
        }
    }
}

/// What a blink did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlinkStats {
    pub bursts: u64,
    pub bytes_read: u64,
    pub stopped_early: bool,
}

/// Sleeps up to `d`, waking early when `stop` is set; true when stopped.
fn rest(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    stop.load(Ordering::SeqCst)
}

/// Blinks the activity LED of the disk at `dev` (read only; never
/// writes). Returns when `pattern.total` is over or `stop` is set.
pub fn blink_reads(dev: &Path, pattern: Blink, stop: &AtomicBool) -> Result<BlinkStats, String> {
    let mut f =
        std::fs::File::open(dev).map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
    let len = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot size {}: {e}", dev.display()))?;
    if len == 0 {
        return Err(format!("{} is empty", dev.display()));
    }
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut stats = BlinkStats::default();
    let mut offset = 0u64;
    let end = Instant::now() + pattern.total;
    while Instant::now() < end {
        let burst_end = (Instant::now() + pattern.on).min(end);
        stats.bursts += 1;
        while Instant::now() < burst_end {
            if stop.load(Ordering::SeqCst) {
                stats.stopped_early = true;
                return Ok(stats);
            }
            if offset >= len {
                offset = 0;
            }
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| format!("cannot seek {}: {e}", dev.display()))?;
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("cannot read {}: {e}", dev.display()))?;
            if n == 0 {
                offset = 0;
                continue;
            }
            offset += n as u64;
            stats.bytes_read += n as u64;
        }
        // The next burst must reach the disk, not the page cache.
        let _ = nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        let rest_for = pattern
            .off
            .min(end.saturating_duration_since(Instant::now()));
        if rest(rest_for, stop) {
            stats.stopped_early = Instant::now() < end;
            return Ok(stats);
        }
    }
    Ok(stats)
}

/// Lights (or puts out) the enclosure's locate LED of a slot.
pub fn enclosure_led(
    root: &SysRoot,
    sg_ses: &Path,
    slot: &EnclosureSlot,
    on: bool,
) -> Result<String, String> {
    if let (Some(sg), Some(n), true) = (&slot.sg, slot.slot, root.is_writable() && sg_ses.exists())
    {
        let flag = if on { "--set=ident" } else { "--clear=ident" };
        crate::actions::run_bounded(
            Command::new(sg_ses)
                .arg(format!("--dev-slot-num={n}"))
                .arg(flag)
                .arg(root.path(&format!("/dev/{sg}"))),
            SG_SES_TIMEOUT,
        )?;
        return Ok(format!(
            "sg_ses --dev-slot-num={n} {flag} /dev/{sg}: enclosure {} slot {n} locate LED {}",
            slot.enclosure,
            if on { "on" } else { "off" }
        ));
    }
    let attr = format!(
        "/sys/class/enclosure/{}/{}/locate",
        slot.enclosure, slot.component
    );
    root.write_attr(&attr, if on { "1" } else { "0" })
        .map_err(|e| format!("cannot write {attr}: {e}"))?;
    Ok(format!(
        "{attr} = {}: enclosure {} slot {} locate LED {}",
        if on { 1 } else { 0 },
        slot.enclosure,
        slot.component,
        if on { "on" } else { "off" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn disk_file(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("sdz");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(4 << 20).expect("size");
        p
    }

    #[test]
    fn bursts_of_reads_with_rests_bounded_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = disk_file(dir.path());
        let pattern = Blink {
            on: Duration::from_millis(100),
            off: Duration::from_millis(150),
            total: Duration::from_millis(900),
        };
        let started = Instant::now();
        let stats = blink_reads(&dev, pattern, &AtomicBool::new(false)).expect("blink");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(850), "{took:?}");
        assert!(took < Duration::from_millis(2000), "bounded: {took:?}");
        // 900 ms of 250 ms cycles: bursts at 0, 250, 500, 750 ms.
        assert_eq!(stats.bursts, 4, "{stats:?}");
        assert!(stats.bytes_read > 0 && !stats.stopped_early, "{stats:?}");
    }

    #[test]
    fn stop_ends_it_within_a_moment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = disk_file(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || blink_reads(&dev, Blink::for_secs(30), &s));
        std::thread::sleep(Duration::from_millis(300));
        let asked = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let stats = t.join().expect("join").expect("blink");
        assert!(asked.elapsed() < Duration::from_millis(500));
        assert!(stats.stopped_early && stats.bytes_read > 0, "{stats:?}");
        assert!(blink_reads(&dir.path().join("none"), Blink::for_secs(1), &stop).is_err());
        assert_eq!(Blink::for_secs(100_000).total.as_secs(), LOCATE_SECS_MAX);
    }

    #[test]
    fn enclosure_led_through_the_ses_driver_attribute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let comp = dir.path().join("sys/class/enclosure/0:0:5:0/Slot 02");
        std::fs::create_dir_all(&comp).expect("dirs");
        std::fs::write(comp.join("locate"), "0\n").expect("attr");
        let slot = EnclosureSlot {
            enclosure: "0:0:5:0".into(),
            component: "Slot 02".into(),
            slot: Some(2),
            sg: Some("sg3".into()),
        };
        let ro = SysRoot::new(dir.path());
        assert!(enclosure_led(&ro, Path::new("/nonexistent/sg_ses"), &slot, true).is_err());
        let rw = SysRoot::writable_fixture(dir.path());
        let text = enclosure_led(&rw, Path::new("/nonexistent/sg_ses"), &slot, true).expect("on");
        assert!(text.contains("locate LED on"), "{text}");
        assert_eq!(
            std::fs::read_to_string(comp.join("locate")).expect("read"),
            "1"
        );
        enclosure_led(&rw, Path::new("/nonexistent/sg_ses"), &slot, false).expect("off");
        assert_eq!(
            std::fs::read_to_string(comp.join("locate")).expect("read"),
            "0"
        );
    }
}
