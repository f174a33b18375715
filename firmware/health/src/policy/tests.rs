//! Each policy's decisions on fixture trees: the recorded md states of
//! tests/fixtures (real kernel output) and generated trees for what QEMU
//! cannot easily show (24 disks, 91 % of a kernel limit, a full disk).

use super::*;
use crate::fixture::{Fixture, FixtureArray, FixtureDisk, FixtureMember};
use crate::sources::{limits, md, scsi};
use crate::sysroot::SysRoot;
use std::path::PathBuf;

fn recorded(name: &str) -> SysRoot {
    SysRoot::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

/// One look at a tree, as the monitor takes it (without the file systems).
fn look(root: &SysRoot, time: i64) -> Observation {
    look_with(root, time, &qemu_bays())
}

/// The QEMU board's own bay map (board/qemu-x86_64).
fn qemu_bays() -> crate::bays::BayMap {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../board/qemu-x86_64/rootfs-overlay/etc/mxrack/bays.toml");
    let (m, err) = crate::bays::BayMap::load(&p);
    assert!(err.is_none() && !m.is_empty(), "{err:?}");
    m
}

fn look_with(root: &SysRoot, time: i64, bays: &crate::bays::BayMap) -> Observation {
    let (mut lims, net) = limits::read_fast(root);
    lims.extend(limits::read_slow(root));
    Observation {
        time,
        arrays: md::read_arrays(root),
        disks: scsi::read_disks(root, bays),
        limits: lims,
        net,
        filesystems: vec![],
        memory: None,
        drbd: vec![],
        replica_last_promotion: None,
    }
}

fn events(d: &[Decision]) -> Vec<&NewEvent> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn texts(d: &[Decision]) -> String {
    events(d)
        .iter()
        .map(|e| format!("[{}] {}", e.severity.as_str(), e.text))
        .collect::<Vec<_>>()
        .join("\n")
}

fn opened<'a>(d: &'a [Decision], key: &str) -> Option<&'a NewEvent> {
    events(d)
        .into_iter()
        .find(|e| matches!(&e.incident, IncidentAction::Open { key: k, .. } if k == key))
}

fn resolved<'a>(d: &'a [Decision], key: &str) -> Option<&'a NewEvent> {
    events(d)
        .into_iter()
        .find(|e| matches!(&e.incident, IncidentAction::Resolve { key: k } if k == key))
}

fn acting() -> Policy {
    Policy {
        auto_fail: true,
        auto_add: true,
        disk_error_threshold: 5,
        ..Policy::default()
    }
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

#[test]
fn recorded_clean_array_reads_right_and_gives_no_event() {
    let root = recorded("md-clean-with-spare");
    let obs = look(&root, 1000);
    assert_eq!(obs.arrays.len(), 1);
    let md0 = &obs.arrays[0];
    assert_eq!(
        (
            md0.level.as_str(),
            md0.array_state.as_str(),
            md0.degraded,
            md0.raid_disks
        ),
        ("raid1", "active", 0, 2)
    );
    assert_eq!(
        md0.uuid.as_deref(),
        Some("056cac16-4a14-e3e8-59ff-e097ed84b4a0")
    );
    assert_eq!(md0.in_sync_count(), 2);
    assert_eq!(md0.idle_spares().count(), 1);
    assert_eq!(obs.disks.len(), 3);
    let sda = obs.disk_by_kernel("sda").expect("sda");
    assert_eq!(sda.id(), "MXHIL-0000");
    assert_eq!(sda.wwn.as_deref(), Some("naa.5000c500a0b0c000"));
    assert_eq!((sda.ioerr, sda.iodone), (2, 0x1b0));
    assert_eq!(sda.path, "pci-0000:00:02.0-scsi-0:0:0:0");
    assert_eq!(sda.scsi_address.as_deref(), Some("0:0:0:0"));
    assert_eq!(sda.bay.as_deref(), Some("1"), "the QEMU board's map");
    assert_eq!(
        obs.disk_by_kernel("sdc").and_then(|d| d.bay.as_deref()),
        Some("3")
    );
    assert_eq!(
        sda.describe(),
        "MXHIL-0000 (WWN naa.5000c500a0b0c000) in bay 1"
    );
    assert_eq!(sda.holders, ["md0"]);
    assert_eq!(sda.size_bytes, 64 << 20);
    assert_eq!(
        obs.memberships("sdc")[0].1.role(),
        "spare",
        "sdc is the hot spare"
    );
    let fnr = obs
        .limits
        .iter()
        .find(|l| l.key == "fs.file-max")
        .expect("file-max");
    assert_eq!(fnr.max, 44893);
    let mut state = PolicyState::default();
    let d = evaluate(&obs, &mut state, &acting(), &none());
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn recorded_failure_then_rebuild_then_removal() {
    let policy = acting();
    let mut state = PolicyState::default();
    evaluate(
        &look(&recorded("md-clean-with-spare"), 1000),
        &mut state,
        &policy,
        &none(),
    );

    // sda set faulty: the spare sdc rebuilds.
    let d = evaluate(
        &look(&recorded("md-failed-member-recovering"), 1010),
        &mut state,
        &policy,
        &none(),
    );
    let all = texts(&d);
    let failed = opened(&d, "disk:MXHIL-0000").expect(&all);
    assert_eq!(failed.severity, Severity::Critical);
    assert!(
        failed.text.contains("MXHIL-0000") && failed.text.contains("faulty"),
        "{all}"
    );
    let degraded = opened(&d, "array:md0").expect(&all);
    assert!(
        degraded.text.contains("rebuilding onto disk MXHIL-0002"),
        "{all}"
    );
    assert!(
        all.contains("md0: recover started onto disk MXHIL-0002"),
        "{all}"
    );
    assert!(d.contains(&Decision::RemoveMember {
        array: "md0".into(),
        dev: "sda".into(),
        disk: "MXHIL-0000".into(),
    }));

    // A later look of the same rebuild: no new event.
    let d = evaluate(
        &look(&recorded("md-recovering-later"), 1015),
        &mut state,
        &policy,
        &none(),
    );
    assert!(events(&d).is_empty(), "{}", texts(&d));

    // Rebuild done: the incident is resolved, the spare is gone.
    let d = evaluate(
        &look(&recorded("md-rebuilt-faulty-still-there"), 1300),
        &mut state,
        &policy,
        &none(),
    );
    let all = texts(&d);
    assert!(all.contains("md0: recover finished"), "{all}");
    assert!(resolved(&d, "array:md0").is_some(), "{all}");
    assert!(all.contains("md0 has no hot spare"), "{all}");
    let finish = all.find("recover finished").expect("finish");
    let resolve = all.find("redundant again").expect("resolve");
    assert!(
        finish < resolve,
        "the rebuild ends before the incident closes"
    );

    // When the monitor removed it itself (and said so), no second event.
    let mut removed_by_us = state.clone();
    removed_by_us
        .disks
        .get_mut("MXHIL-0000")
        .expect("track")
        .left_arrays
        .insert("md0".into());
    let d = evaluate(
        &look(&recorded("md-clean-spare-missing"), 1310),
        &mut removed_by_us,
        &policy,
        &none(),
    );
    assert!(!texts(&d).contains("left md0"), "{}", texts(&d));

    // The faulty member removed: the technician is told the bay.
    let d = evaluate(
        &look(&recorded("md-clean-spare-missing"), 1310),
        &mut state,
        &policy,
        &none(),
    );
    let all = texts(&d);
    assert!(
        all.contains("Disk MXHIL-0000 (WWN naa.5000c500a0b0c000) in bay 1 left md0 (it was faulty); it can be pulled."),
        "{all}"
    );
    assert!(!d.iter().any(|x| matches!(x, Decision::RemoveMember { .. })));
    assert!(state.disks["MXHIL-0000"].left_arrays.contains("md0"));
}

#[test]
fn recorded_degraded_array_without_spare_on_first_look() {
    let mut state = PolicyState::default();
    let d = evaluate(
        &look(&recorded("md-degraded-no-spare"), 1000),
        &mut state,
        &Policy::default(),
        &none(),
    );
    let all = texts(&d);
    let e = opened(&d, "array:md0").expect(&all);
    assert!(e.text.contains("no spare to rebuild onto"), "{all}");
    assert!(opened(&d, "disk:MXHIL-0001").is_some(), "{all}");
    // auto_fail off: no removal, a hint instead.
    assert!(!d.iter().any(|x| matches!(x, Decision::RemoveMember { .. })));
    assert!(all.contains("mxrack disk replace MXHIL-0001"), "{all}");

    // The same state after a restart with the incidents already open: quiet.
    let mut state = PolicyState {
        open: ["array:md0", "disk:MXHIL-0001"]
            .into_iter()
            .map(String::from)
            .collect(),
        ..PolicyState::default()
    };
    let d = evaluate(
        &look(&recorded("md-degraded-no-spare"), 1000),
        &mut state,
        &Policy::default(),
        &none(),
    );
    assert!(opened(&d, "array:md0").is_none(), "{}", texts(&d));
    assert!(opened(&d, "disk:MXHIL-0001").is_none(), "{}", texts(&d));
}

#[test]
fn recorded_error_counters_rising_on_the_last_good_copy_do_not_fail_it() {
    let policy = acting();
    let mut state = PolicyState::default();
    evaluate(
        &look(&recorded("md-degraded-removed"), 1000),
        &mut state,
        &policy,
        &none(),
    );
    // blkdebug: sdc (MXHIL-0002) ioerr_cnt 0x2 -> 0x8, threshold 5.
    let d = evaluate(
        &look(&recorded("md-io-errors"), 1030),
        &mut state,
        &policy,
        &none(),
    );
    let all = texts(&d);
    let e = opened(&d, "disk:MXHIL-0002").expect(&all);
    assert!(
        e.text.contains("6 I/O errors and timeouts within 10 min"),
        "{all}"
    );
    assert!(all.contains("Not failing disk MXHIL-0002 out of md0: it holds the last good copy"));
    assert!(!d.iter().any(|x| matches!(x, Decision::FailMember { .. })));
}

fn healthy(dir: &Path) -> Fixture {
    let mut f = Fixture::new(dir).expect("fixture");
    for (i, k) in ["sda", "sdb", "sdc"].iter().enumerate() {
        f.disk(&FixtureDisk::new(k, &format!("SN-{i}"), i as u32))
            .expect("disk");
    }
    f.array(&FixtureArray::raid1(
        "md0",
        vec![
            FixtureMember::new("sda", "in_sync", Some(0)),
            FixtureMember::new("sdb", "in_sync", Some(1)),
            FixtureMember::new("sdc", "spare", None),
        ],
    ))
    .expect("array");
    f
}

use std::path::Path;

#[test]
fn errors_past_the_threshold_within_the_window_fail_the_disk_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    let policy = acting();
    let mut state = PolicyState::default();
    let mut sdb = FixtureDisk::new("sdb", "SN-1", 1);
    evaluate(&look(&root, 0), &mut state, &policy, &none());
    // 3 errors, then 3 more 700 s later: never 5 within the 600 s window.
    sdb.ioerr = 5;
    f.disk(&sdb).expect("disk");
    assert!(evaluate(&look(&root, 10), &mut state, &policy, &none()).is_empty());
    sdb.ioerr = 8;
    f.disk(&sdb).expect("disk");
    let d = evaluate(&look(&root, 710), &mut state, &policy, &none());
    assert!(d.is_empty(), "{}", texts(&d));
    // Then 5 within a minute: failed out, once.
    sdb.ioerr = 10;
    sdb.iotmo = 3;
    f.disk(&sdb).expect("disk");
    let d = evaluate(&look(&root, 760), &mut state, &policy, &none());
    assert!(opened(&d, "disk:SN-1").is_some(), "{}", texts(&d));
    assert_eq!(
        d.iter()
            .filter(|x| matches!(x, Decision::FailMember { .. }))
            .collect::<Vec<_>>(),
        [&Decision::FailMember {
            array: "md0".into(),
            dev: "sdb".into(),
            disk: "SN-1".into()
        }]
    );
    sdb.ioerr = 20;
    f.disk(&sdb).expect("disk");
    let d = evaluate(&look(&root, 770), &mut state, &policy, &none());
    assert!(
        !d.iter().any(|x| matches!(x, Decision::FailMember { .. })),
        "once"
    );

    // With auto_fail off the operator is told what to run instead.
    let mut state = PolicyState::default();
    let off = Policy {
        auto_fail: false,
        ..acting()
    };
    sdb.ioerr = 0;
    sdb.iotmo = 0;
    f.disk(&sdb).expect("disk");
    evaluate(&look(&root, 0), &mut state, &off, &none());
    sdb.ioerr = 9;
    f.disk(&sdb).expect("disk");
    let d = evaluate(&look(&root, 5), &mut state, &off, &none());
    assert!(
        texts(&d).contains("run `mxrack disk replace SN-1`"),
        "{}",
        texts(&d)
    );
    assert!(!d.iter().any(|x| matches!(x, Decision::FailMember { .. })));
}

#[test]
fn a_blank_disk_becomes_rebuild_target_or_spare() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    // Degraded without a spare: sdb gone, sdc gone.
    f.remove_disk("sdb").expect("rm");
    f.remove_disk("sdc").expect("rm");
    f.array(&FixtureArray::raid1(
        "md0",
        vec![FixtureMember::new("sda", "in_sync", Some(0))],
    ))
    .expect("array");
    let mut state = PolicyState::default();
    evaluate(&look(&root, 0), &mut state, &acting(), &none());
    let mut new = FixtureDisk::new("sdb", "SN-NEW0", 1);
    new.blank = true;
    f.disk(&new).expect("disk");
    let obs = look(&root, 10);
    let blank_disk = obs.disk("SN-NEW0").expect("new disk");
    assert!(scsi::is_blank(&root, blank_disk));
    let blank: BTreeSet<String> = ["SN-NEW0".to_string()].into();
    let d = evaluate(&obs, &mut state, &acting(), &blank);
    assert!(texts(&d).contains("Disk SN-NEW0 (WWN naa.5000c500a0b00001) in bay 2 appeared (QEMU QEMU HARDDISK, 64.0 MiB, sdb)."), "{}", texts(&d));
    assert!(d.contains(&Decision::AddDisk {
        array: "md0".into(),
        kernel: "sdb".into(),
        disk: "SN-NEW0".into(),
        rebuild: true
    }));
    // Decided once.
    assert!(
        !evaluate(&look(&root, 20), &mut state, &acting(), &blank)
            .iter()
            .any(|x| matches!(x, Decision::AddDisk { .. }))
    );

    // A clean array without a spare: the disk becomes its spare; with
    // auto_add off the operator gets the command instead.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = healthy(dir.path());
    f.remove_disk("sdc").expect("rm");
    f.array(&FixtureArray::raid1(
        "md0",
        vec![
            FixtureMember::new("sda", "in_sync", Some(0)),
            FixtureMember::new("sdb", "in_sync", Some(1)),
        ],
    ))
    .expect("array");
    let root = SysRoot::new(dir.path());
    let mut state = PolicyState::default();
    let mut off_state = PolicyState::default();
    let off = Policy {
        auto_add: false,
        ..acting()
    };
    evaluate(&look(&root, 0), &mut state, &acting(), &none());
    evaluate(&look(&root, 0), &mut off_state, &off, &none());
    let mut new = FixtureDisk::new("sdc", "SN-NEW1", 2);
    new.blank = true;
    f.disk(&new).expect("disk");
    let blank: BTreeSet<String> = ["SN-NEW1".to_string()].into();
    let d = evaluate(&look(&root, 10), &mut state, &acting(), &blank);
    assert!(d.contains(&Decision::AddDisk {
        array: "md0".into(),
        kernel: "sdc".into(),
        disk: "SN-NEW1".into(),
        rebuild: false
    }));
    let d = evaluate(&look(&root, 10), &mut off_state, &off, &blank);
    assert!(
        texts(&d).contains("run `mxrack disk add SN-NEW1`"),
        "{}",
        texts(&d)
    );
    assert!(!d.iter().any(|x| matches!(x, Decision::AddDisk { .. })));

    // A disk too small for the array is never picked.
    let mut small = FixtureDisk::new("sdd", "SN-SMALL", 3);
    small.size_sectors = 1024;
    small.blank = true;
    f.disk(&small).expect("disk");
    let obs = look(&root, 30);
    assert!(array_for(&obs, obs.disk("SN-SMALL").expect("small")).is_none());
}

#[test]
fn a_disk_going_offline_and_being_pulled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    let mut state = PolicyState::default();
    evaluate(&look(&root, 0), &mut state, &acting(), &none());
    let mut sdc = FixtureDisk::new("sdc", "SN-2", 2);
    sdc.state = "offline".into();
    f.disk(&sdc).expect("disk");
    let d = evaluate(&look(&root, 10), &mut state, &acting(), &none());
    let e = opened(&d, "disk:SN-2").unwrap_or_else(|| panic!("{}", texts(&d)));
    assert_eq!(e.severity, Severity::Critical);
    assert!(e.text.contains("is offline"), "{}", e.text);
    f.remove_disk("sdc").expect("rm");
    let d = evaluate(&look(&root, 20), &mut state, &acting(), &none());
    let e = resolved(&d, "disk:SN-2").unwrap_or_else(|| panic!("{}", texts(&d)));
    assert!(
        e.text
            .contains("Disk SN-2 (WWN naa.5000c500a0b00002) in bay 3 was removed."),
        "{}",
        e.text
    );
    // An incident of a disk swapped while the appliance was off closes.
    let mut state = PolicyState {
        open: ["disk:SN-GONE".to_string()].into(),
        ..PolicyState::default()
    };
    let d = evaluate(&look(&root, 30), &mut state, &acting(), &none());
    assert!(resolved(&d, "disk:SN-GONE").is_some());
}

#[test]
fn rebuild_progress_is_reported_in_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    let mut state = PolicyState::default();
    evaluate(&look(&root, 0), &mut state, &acting(), &none());
    let mut a = FixtureArray::raid1(
        "md0",
        vec![
            FixtureMember::new("sda", "in_sync", Some(0)),
            FixtureMember::new("sdb", "faulty", None),
            FixtureMember::new("sdc", "spare", Some(1)),
        ],
    );
    a.sync_action = "recover".into();
    let mut steps = Vec::new();
    for (t, done) in [
        (10, 0u64),
        (20, 20_000),
        (30, 30_000),
        (40, 70_000),
        (50, 129_024),
    ] {
        a.sync_completed = Some((done, 129_024));
        a.sync_speed_kib = Some(1024);
        f.array(&a).expect("array");
        let d = evaluate(&look(&root, t), &mut state, &acting(), &none());
        steps.push(
            events(&d)
                .iter()
                .filter(|e| e.text.contains("% done"))
                .map(|e| e.text.clone())
                .collect::<Vec<_>>(),
        );
    }
    assert!(steps[0].is_empty());
    assert_eq!(
        steps[1],
        ["md0: recover 15.5% done at 1024 KiB/s, about 54 s left."],
        "md's own figures: 109,024 sectors left at 1024 KiB/s"
    );
    assert_eq!(steps[2].len(), 1, "23%: the 20% step");
    assert_eq!(steps[3].len(), 1, "54%: one event for the 50% step");
    assert!(steps[4][0].contains("100.0% done"));
}

fn limit_tree(used: u64) -> (tempfile::TempDir, SysRoot) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = Fixture::new(dir.path()).expect("fixture");
    f.set("/proc/sys/fs/file-nr", &format!("{used}\t0\t10000\n"))
        .expect("set");
    let root = SysRoot::new(dir.path());
    (dir, root)
}

fn file_max_decisions(
    state: &mut PolicyState,
    policy: &Policy,
    used: u64,
    t: i64,
) -> Vec<Decision> {
    let (_dir, root) = limit_tree(used);
    let mut out = Vec::new();
    limits(&look(&root, t), state, policy, &mut out);
    out
}

#[test]
fn kernel_limits_at_79_81_and_91_percent() {
    let policy = Policy {
        raise_limits: true,
        raise_bounds: [("fs.file-max".to_string(), 15_000u64)].into(),
        ..Policy::default()
    };
    let mut state = PolicyState::default();
    assert!(
        file_max_decisions(&mut state, &policy, 7_900, 0).is_empty(),
        "79%"
    );
    let d = file_max_decisions(&mut state, &policy, 8_100, 10);
    let e = &events(&d)[0];
    assert_eq!(e.severity, Severity::Warning);
    assert_eq!(e.incident, IncidentAction::None);
    assert!(
        e.text.contains("fs.file-max at 81.0%") && e.text.contains("sysctl -w fs.file-max=20000"),
        "{}",
        e.text
    );
    let d = file_max_decisions(&mut state, &policy, 9_100, 20);
    let e = opened(&d, "limit:fs.file-max").unwrap_or_else(|| panic!("{}", texts(&d)));
    assert_eq!(e.severity, Severity::Critical);
    assert!(
        d.contains(&Decision::RaiseSysctl {
            key: "fs.file-max".into(),
            from: 10_000,
            to: 15_000
        }),
        "raised to the bound, not past it"
    );
    // Just under the alert level: stays (hysteresis); well under: resolved.
    assert!(file_max_decisions(&mut state, &policy, 8_900, 30).is_empty());
    let d = file_max_decisions(&mut state, &policy, 7_000, 40);
    assert!(resolved(&d, "limit:fs.file-max").is_some(), "{}", texts(&d));

    // Without a bound (or with raising off) nothing is written.
    let mut state = PolicyState::default();
    let unbound = Policy {
        raise_limits: true,
        ..Policy::default()
    };
    let d = file_max_decisions(&mut state, &unbound, 9_100, 0);
    assert!(!d.iter().any(|x| matches!(x, Decision::RaiseSysctl { .. })));
    assert!(texts(&d).contains("health.raise_bounds has no bound for fs.file-max"));
    let mut state = PolicyState::default();
    let d = file_max_decisions(&mut state, &Policy::default(), 9_100, 0);
    assert!(!d.iter().any(|x| matches!(x, Decision::RaiseSysctl { .. })));
}

#[test]
fn recorded_limits_read_with_their_sysctls() {
    let obs = look(&recorded("md-clean-with-spare"), 0);
    let keys: Vec<&str> = obs.limits.iter().map(|l| l.key.as_str()).collect();
    for k in [
        "fs.file-max",
        "kernel.pid_max",
        "kernel.threads-max",
        "fs.inotify.max_user_watches",
        "net.ipv4.ip_local_port_range",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    let threads = obs
        .limits
        .iter()
        .find(|l| l.key == "kernel.threads-max")
        .expect("threads");
    assert_eq!((threads.used, threads.max), (62, 3540));
}

#[test]
fn listen_overflows_are_reported_at_most_every_ten_minutes() {
    let mut state = PolicyState::default();
    let mut obs = Observation::default();
    let mut out = Vec::new();
    listen_overflows(&obs, &mut state, &mut out);
    obs.net.listen_overflows = 40;
    obs.time = 1000;
    listen_overflows(&obs, &mut state, &mut out);
    assert_eq!(out.len(), 1);
    assert!(texts(&out).contains("40 connections were dropped"));
    obs.net.listen_overflows = 45;
    obs.time = 1100;
    listen_overflows(&obs, &mut state, &mut out);
    assert_eq!(out.len(), 1, "not again within 10 minutes");
    obs.time = 1700;
    obs.net.listen_overflows = 46;
    listen_overflows(&obs, &mut state, &mut out);
    assert!(texts(&out).contains("6 connections were dropped"));
}

fn data_fs(free: u64) -> FsObs {
    FsObs {
        name: "data".into(),
        path: "/data".into(),
        size_bytes: 100 << 30,
        free_bytes: free,
        inodes: 1_000_000,
        inodes_free: 900_000,
    }
}

fn space_decisions(state: &mut PolicyState, fs: FsObs, t: i64) -> Vec<Decision> {
    let obs = Observation {
        time: t,
        filesystems: vec![fs],
        ..Observation::default()
    };
    let mut out = Vec::new();
    space(&obs, state, &Policy::default(), &mut out);
    state.started = true;
    out
}

#[test]
fn a_full_data_disk_refuses_mail_until_space_returns() {
    let mut state = PolicyState::default();
    // Defaults: refuse below max(64 MiB, 3%) = 3 GiB, resume at 5 GiB.
    assert!(space_decisions(&mut state, data_fs(50 << 30), 0).is_empty());
    let d = space_decisions(&mut state, data_fs(10 << 30), 10);
    assert_eq!(
        events(&d)[0].severity,
        Severity::Warning,
        "90% used: warned"
    );
    assert!(!d.iter().any(|x| matches!(x, Decision::SetIntake(_))));
    let d = space_decisions(&mut state, data_fs(2 << 30), 20);
    let e = opened(&d, "space:data").unwrap_or_else(|| panic!("{}", texts(&d)));
    assert!(e.text.contains("SMTP answers 452"), "{}", e.text);
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::SetIntake(Some(r)) if r.contains("2.0 GiB free")))
    );
    // Between the two thresholds: still refused.
    let d = space_decisions(&mut state, data_fs(4 << 30), 30);
    assert!(
        !d.iter().any(|x| matches!(x, Decision::SetIntake(_))),
        "{d:?}"
    );
    let d = space_decisions(&mut state, data_fs(6 << 30), 40);
    assert!(d.contains(&Decision::SetIntake(None)));
    assert!(resolved(&d, "space:data").is_some());
    // Inodes run out too.
    let mut fs = data_fs(50 << 30);
    fs.inodes_free = 10_000;
    let d = space_decisions(&mut state, fs, 50);
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::SetIntake(Some(r)) if r.contains("inodes")))
    );
    // A restart while the incident is open and space is back: resolved.
    let mut state = PolicyState {
        open: ["space:data".to_string()].into(),
        ..PolicyState::default()
    };
    let d = space_decisions(&mut state, data_fs(50 << 30), 60);
    assert!(resolved(&d, "space:data").is_some());
    assert!(!d.iter().any(|x| matches!(x, Decision::SetIntake(_))));
    // A file system without a size (an initramfs root) is never "full".
    let mut state = PolicyState::default();
    let ramfs = FsObs {
        name: "root".into(),
        path: "/".into(),
        ..FsObs::default()
    };
    assert!(space_decisions(&mut state, ramfs, 0).is_empty());
}

#[test]
fn twenty_four_disks_in_four_arrays() {
    let dir = tempfile::tempdir().expect("tempdir");
    Fixture::generate(dir.path(), 24, 4).expect("generate");
    let root = SysRoot::new(dir.path());
    let obs = look(&root, 0);
    assert_eq!(obs.disks.len(), 24);
    assert_eq!(obs.arrays.len(), 4);
    for a in &obs.arrays {
        assert_eq!(
            (a.in_sync_count(), a.idle_spares().count()),
            (2, 4),
            "{}",
            a.name
        );
    }
    let ids: BTreeSet<String> = obs.disks.iter().map(ScsiDisk::id).collect();
    assert_eq!(ids.len(), 24, "every disk has its own serial");
    let mut state = PolicyState::default();
    assert!(evaluate(&obs, &mut state, &acting(), &none()).is_empty());
}

#[test]
fn boot_errors_and_a_hot_plug_notice_are_not_errors_of_a_healthy_neighbour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    let mut state = PolicyState::default();
    // Every fixture disk shows ioerr_cnt 0x2 from its probe, as on QEMU.
    evaluate(&look(&root, 0), &mut state, &acting(), &none());
    let sda = &state.disks["SN-0"];
    assert_eq!((sda.errors, sda.errors_at_first_sight), (0, 2));

    // A disk is plugged into the same bus: sda's next command gets the
    // "REPORTED LUNS DATA HAS CHANGED" unit attention (ioerr_cnt + 1).
    f.disk(&FixtureDisk::new("sdd", "SN-3", 3)).expect("disk");
    evaluate(&look(&root, 10), &mut state, &acting(), &none());
    let mut sda = FixtureDisk::new("sda", "SN-0", 0);
    sda.ioerr = 3;
    f.disk(&sda).expect("disk");
    let d = evaluate(&look(&root, 20), &mut state, &acting(), &none());
    assert!(d.is_empty(), "{}", texts(&d));
    let t = &state.disks["SN-0"];
    assert_eq!((t.errors, t.bus_notices, t.errors_in_window), (0, 1, 0));
    // The new disk's own probe errors are from before its first sight.
    assert_eq!(state.disks["SN-3"].errors, 0);

    // A later error is one: only one notice per hot-plug is excused.
    sda.ioerr = 4;
    f.disk(&sda).expect("disk");
    evaluate(&look(&root, 30), &mut state, &acting(), &none());
    assert_eq!(state.disks["SN-0"].errors, 1);

    // A pulled disk gives its neighbours one notice too, which expires
    // after the error window.
    f.remove_disk("sdd").expect("rm");
    evaluate(&look(&root, 40), &mut state, &acting(), &none());
    assert_eq!(
        state.disks["SN-1"].bus_notices_pending, 2,
        "one per hot-plug on its bus: sdd in, sdd out"
    );
    sda.ioerr = 5;
    f.disk(&sda).expect("disk");
    evaluate(&look(&root, 40 + 601), &mut state, &acting(), &none());
    assert_eq!(state.disks["SN-0"].errors, 2, "the notice expired");
}

#[test]
fn a_disk_failed_for_errors_is_remembered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    let mut state = PolicyState::default();
    evaluate(&look(&root, 0), &mut state, &acting(), &none());
    let mut sdb = FixtureDisk::new("sdb", "SN-1", 1);
    sdb.ioerr = 9;
    f.disk(&sdb).expect("disk");
    let d = evaluate(&look(&root, 10), &mut state, &acting(), &none());
    assert!(
        d.contains(&Decision::RememberFailed {
            id: "SN-1".into(),
            serial: Some("SN-1".into()),
            wwn: Some("naa.5000c500a0b00001".into()),
            reason: "7 I/O errors and timeouts within 10 min".into(),
        }),
        "{d:?}"
    );
    let e = opened(&d, "disk:SN-1").expect("incident");
    assert!(
        e.text
            .starts_with("Disk SN-1 (WWN naa.5000c500a0b00001) in bay 2: 7 I/O errors")
    );
}

#[test]
fn a_member_failing_during_its_hot_replace_is_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    let policy = Policy {
        auto_fail: false,
        ..acting()
    };
    let mut state = PolicyState::default();
    evaluate(&look(&root, 0), &mut state, &policy, &none());
    state.disks.get_mut("SN-0").expect("sda").replacing = true;
    // sda fails with I/O errors mid-copy: md turns the copy into a
    // rebuild of slot 0 onto sdc, and the array is degraded.
    let mut a = FixtureArray::raid1(
        "md0",
        vec![
            FixtureMember::new("sda", "faulty", None),
            FixtureMember::new("sdb", "in_sync", Some(1)),
            FixtureMember::new("sdc", "spare", Some(0)),
        ],
    );
    a.sync_action = "recover".into();
    f.array(&a).expect("array");
    let d = evaluate(&look(&root, 10), &mut state, &policy, &none());
    assert!(
        d.iter()
            .any(|x| matches!(x, Decision::RememberFailed { id, .. } if id == "SN-0")),
        "{d:?}"
    );
    assert!(!texts(&d).contains("is complete"), "{}", texts(&d));
}

#[test]
fn a_finished_hot_replace_is_no_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = healthy(dir.path());
    let root = SysRoot::new(dir.path());
    let policy = Policy {
        auto_fail: false,
        ..acting()
    };
    let mut state = PolicyState::default();
    evaluate(&look(&root, 0), &mut state, &policy, &none());
    state.disks.get_mut("SN-0").expect("sda").replacing = true;
    // md copies sda onto sdc (the replacement, rebuilding into slot 0);
    // the array is never degraded.
    let mut a = FixtureArray::raid1(
        "md0",
        vec![
            FixtureMember::new("sda", "in_sync,want_replacement", Some(0)),
            FixtureMember::new("sdb", "in_sync", Some(1)),
            FixtureMember::new("sdc", "spare,replacement", Some(0)),
        ],
    );
    a.sync_action = "recover".into();
    a.sync_completed = Some((1000, 129_024));
    a.sync_speed_kib = Some(2048);
    f.array(&a).expect("array");
    let d = evaluate(&look(&root, 10), &mut state, &policy, &none());
    let all = texts(&d);
    assert!(!all.contains("is degraded"), "{all}");
    assert!(
        all.contains("md0: recover started onto disk SN-2 (WWN naa.5000c500a0b00002) in bay 3."),
        "{all}"
    );
    // Done: md set sda faulty by itself and sdc took its place.
    let a = FixtureArray::raid1(
        "md0",
        vec![
            FixtureMember::new("sda", "faulty", None),
            FixtureMember::new("sdb", "in_sync", Some(1)),
            FixtureMember::new("sdc", "in_sync", Some(0)),
        ],
    );
    f.array(&a).expect("array");
    let d = evaluate(&look(&root, 20), &mut state, &policy, &none());
    let all = texts(&d);
    assert!(
        !all.contains("is degraded") && !all.contains("marked faulty"),
        "{all}"
    );
    assert!(
        all.contains("md0: the copy of disk SN-0 (WWN naa.5000c500a0b00000) in bay 1 is complete; it leaves md0 and can be pulled."),
        "{all}"
    );
    assert!(
        !d.iter()
            .any(|x| matches!(x, Decision::RememberFailed { .. })),
        "{d:?}"
    );
    assert!(d.contains(&Decision::RemoveMember {
        array: "md0".into(),
        dev: "sda".into(),
        disk: "SN-0".into()
    }));
}

#[test]
fn rebuild_time_left_from_mdstat_when_sysfs_has_no_speed() {
    let text = "Personalities : [raid1]\nmd0 : active raid1 sdc[2] sdb[1] sda[0](F)\n      64512 blocks super 1.2 [2/1] [_U]\n      [==>..................]  recovery = 12.6% (8192/64512) finish=0.9min speed=1024K/sec\n\nunused devices: <none>\n";
    let p = md::parse_mdstat(text)[0]
        .progress
        .clone()
        .expect("progress");
    assert_eq!(p.finish_secs, Some(54));
    let a = md::MdArray {
        sync_action: "recover".into(),
        mdstat_finish_secs: Some(54),
        ..md::MdArray::default()
    };
    assert_eq!(a.sync_eta_secs(), Some(54));
    let a = md::MdArray {
        sync_completed: Some((8192 * 2, 64512 * 2)),
        sync_speed_kib: Some(1024),
        ..a
    };
    assert_eq!(a.sync_eta_secs(), Some(55), "56,320 KiB at 1024 KiB/s");
    assert_eq!(eta(55), "about 55 s");
    assert_eq!(eta(600), "about 10 min");
    assert_eq!(eta(7500), "about 2 h 5 min");
}

/// One look at a replica pair whose /proc/drbd reads `line` (+ `oos`).
fn drbd_look(time: i64, line: &str, oos: u64) -> Observation {
    Observation {
        time,
        drbd: crate::sources::drbd::parse(&format!(
            " 0: {line} C r-----\n    ns:0 nr:0 oos:{oos}\n"
        )),
        ..Default::default()
    }
}

fn run_replica(state: &mut PolicyState, obs: &Observation) -> Vec<NewEvent> {
    let out = evaluate(obs, state, &Policy::default(), &BTreeSet::new());
    let evs: Vec<NewEvent> = events(&out).into_iter().cloned().collect();
    for e in &evs {
        match &e.incident {
            IncidentAction::Open { key, .. } => {
                state.open.insert(key.clone());
            }
            IncidentAction::Resolve { key } => {
                state.open.remove(key);
            }
            _ => {}
        }
    }
    evs
}

#[test]
fn replica_peer_lost_refused_back_and_whole_again() {
    let mut st = PolicyState::default();
    let whole = "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate";
    assert!(run_replica(&mut st, &drbd_look(1, whole, 0)).is_empty());
    // The peer dies: an incident, a warning.
    let ev = run_replica(
        &mut st,
        &drbd_look(
            2,
            "cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown",
            64,
        ),
    );
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].severity, Severity::Warning);
    assert!(
        matches!(&ev[0].incident, IncidentAction::Open { key, title } if key == REPLICA_KEY && title == "Replica peer unreachable")
    );
    // The same state again: nothing new.
    assert!(
        run_replica(
            &mut st,
            &drbd_look(
                3,
                "cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown",
                128
            )
        )
        .is_empty()
    );
    // Refused (split brain): critical, on the same incident.
    let ev = run_replica(
        &mut st,
        &drbd_look(
            4,
            "cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown",
            128,
        ),
    );
    assert_eq!(ev[0].severity, Severity::Critical);
    assert!(
        ev[0].text.contains("nothing was discarded"),
        "{}",
        ev[0].text
    );
    // Back and resyncing: an update naming what it copies.
    let ev = run_replica(
        &mut st,
        &drbd_look(
            5,
            "cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent",
            2048,
        ),
    );
    assert!(matches!(&ev[0].incident, IncidentAction::Update { key } if key == REPLICA_KEY));
    assert!(ev[0].text.contains("2 MiB"), "{}", ev[0].text);
    // Whole again: resolved.
    let ev = run_replica(&mut st, &drbd_look(6, whole, 0));
    assert!(matches!(&ev[0].incident, IncidentAction::Resolve { key } if key == REPLICA_KEY));
    assert!(!st.open.contains(REPLICA_KEY));
    // Connected, but the peer lost its disk (detached after I/O errors):
    // mail is on one appliance again.
    let ev = run_replica(
        &mut st,
        &drbd_look(
            7,
            "cs:Connected ro:Primary/Secondary ds:UpToDate/Diskless",
            0,
        ),
    );
    assert!(matches!(&ev[0].incident, IncidentAction::Open { key, .. } if key == REPLICA_KEY));
    assert!(ev[0].text.contains("Diskless"), "{}", ev[0].text);
    // A single appliance (DRBD loaded, no resource): nothing.
    let mut single = PolicyState::default();
    let obs = Observation {
        time: 1,
        drbd: crate::sources::drbd::parse("version: 8.4.11\n"),
        ..Default::default()
    };
    assert!(run_replica(&mut single, &obs).is_empty());
}
