//! Generated fixture trees, laid out like the real sysfs and procfs the
//! monitor reads (values in the kernel's formats, see `sources`), for the
//! unit tests beyond the recorded ones in tests/fixtures/ and for the
//! benchmark (`mxrack health bench`: 24 disks, 4 arrays).
//!
//! Nothing here is used by the running appliance.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A SCSI disk to lay out under /sys/block/sdX (as a link into /sys/devices,
/// as the kernel does).
#[derive(Debug, Clone)]
pub struct FixtureDisk {
    pub kernel: String,
    pub serial: String,
    pub wwn: String,
    pub size_sectors: u64,
    pub state: String,
    pub ioerr: u64,
    pub iotmo: u64,
    pub iodone: u64,
    /// SCSI target number (slot): 0:0:T:0.
    pub target: u32,
    /// Also create ROOT/dev/sdX of zeros (a blank disk).
    pub blank: bool,
}

impl FixtureDisk {
    pub fn new(kernel: &str, serial: &str, target: u32) -> FixtureDisk {
        FixtureDisk {
            kernel: kernel.into(),
            serial: serial.into(),
            wwn: format!("naa.5000c500a0b0{target:04x}"),
            size_sectors: 131_072,
            state: "running".into(),
            ioerr: 2,
            iotmo: 0,
            iodone: 0x1b0,
            target,
            blank: false,
        }
    }
}

/// A member of a fixture array.
#[derive(Debug, Clone)]
pub struct FixtureMember {
    pub disk: String,
    /// md's state list: "in_sync", "spare", "faulty", ...
    pub state: String,
    pub slot: Option<u32>,
    pub errors: u64,
}

impl FixtureMember {
    pub fn new(disk: &str, state: &str, slot: Option<u32>) -> FixtureMember {
        FixtureMember {
            disk: disk.into(),
            state: state.into(),
            slot,
            errors: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FixtureArray {
    pub name: String,
    pub level: String,
    pub raid_disks: u32,
    pub members: Vec<FixtureMember>,
    /// idle, recover, resync, ...
    pub sync_action: String,
    /// (done, total) sectors.
    pub sync_completed: Option<(u64, u64)>,
    pub sync_speed_kib: Option<u64>,
    pub component_size_kib: u64,
}

impl FixtureArray {
    pub fn raid1(name: &str, members: Vec<FixtureMember>) -> FixtureArray {
        FixtureArray {
            name: name.into(),
            level: "raid1".into(),
            raid_disks: 2,
            members,
            sync_action: "idle".into(),
            sync_completed: None,
            sync_speed_kib: None,
            component_size_kib: 64_512,
        }
    }

    fn in_sync(&self) -> u32 {
        self.members
            .iter()
            .filter(|m| m.state.split(',').any(|s| s == "in_sync"))
            .count() as u32
    }
}

/// A fixture tree under `root`.
pub struct Fixture {
    root: PathBuf,
    arrays: Vec<FixtureArray>,
}

impl Fixture {
    /// Lays out the procfs basics (limits well below their thresholds).
    pub fn new(root: &Path) -> io::Result<Fixture> {
        let f = Fixture {
            root: root.to_path_buf(),
            arrays: Vec::new(),
        };
        fs::create_dir_all(root.join("sys/block"))?;
        f.set("/proc/sys/fs/file-nr", "1000\t0\t100000\n")?;
        f.set("/proc/sys/fs/file-max", "100000\n")?;
        f.set("/proc/sys/kernel/pid_max", "32768\n")?;
        f.set("/proc/sys/kernel/threads-max", "3540\n")?;
        f.set("/proc/loadavg", "0.15 0.03 0.01 1/62 396\n")?;
        f.set("/proc/sys/fs/inotify/max_user_watches", "8192\n")?;
        f.set("/proc/sys/fs/inotify/max_user_instances", "128\n")?;
        f.set("/proc/sys/net/core/somaxconn", "4096\n")?;
        f.set("/proc/sys/net/ipv4/ip_local_port_range", "32768\t60999\n")?;
        f.set("/proc/sys/net/ipv4/tcp_max_orphans", "4096\n")?;
        f.set("/proc/sys/net/ipv4/tcp_mem", "5130\t6840\t10260\n")?;
        f.set(
            "/proc/net/sockstat",
            "sockets: used 6\nTCP: inuse 3 orphan 0 tw 0 alloc 3 mem 0\nUDP: inuse 0 mem 0\n",
        )?;
        f.set(
            "/proc/net/netstat",
            "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 0 0\n",
        )?;
        f.set("/proc/net/tcp", "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")?;
        f.set(
            "/proc/mdstat",
            "Personalities : [raid1] \nunused devices: <none>\n",
        )?;
        Ok(f)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes one file (an attribute, a procfs table), making its folders.
    pub fn set(&self, abs: &str, value: &str) -> io::Result<()> {
        let p = self.root.join(abs.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(p, value)
    }

    fn device_dir(&self, target: u32) -> String {
        format!(
            "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/target0:0:{target}/0:0:{target}:0"
        )
    }

    /// Lays out a disk (replacing one of the same kernel name).
    pub fn disk(&self, d: &FixtureDisk) -> io::Result<()> {
        self.remove_disk(&d.kernel)?;
        let dev = self.device_dir(d.target);
        let block = format!("{dev}/block/{}", d.kernel);
        let w = |rel: &str, v: &str| self.set(&format!("/{rel}"), v);
        w(&format!("{dev}/state"), &format!("{}\n", d.state))?;
        w(&format!("{dev}/ioerr_cnt"), &format!("{:#x}\n", d.ioerr))?;
        w(&format!("{dev}/iotmo_cnt"), &format!("{:#x}\n", d.iotmo))?;
        w(&format!("{dev}/iodone_cnt"), &format!("{:#x}\n", d.iodone))?;
        w(&format!("{dev}/vendor"), "QEMU    \n")?;
        w(&format!("{dev}/model"), "QEMU HARDDISK   \n")?;
        w(&format!("{dev}/rev"), "2.5+\n")?;
        w(&format!("{dev}/timeout"), "30\n")?;
        w(&format!("{dev}/wwid"), &format!("{}\n", d.wwn))?;
        let mut page = vec![0u8, 0x80, 0, d.serial.len() as u8];
        page.extend_from_slice(d.serial.as_bytes());
        fs::write(self.root.join(format!("{dev}/vpd_pg80")), page)?;
        w(&format!("{block}/size"), &format!("{}\n", d.size_sectors))?;
        fs::create_dir_all(self.root.join(format!("{block}/holders")))?;
        std::os::unix::fs::symlink(
            format!("../../../0:0:{}:0", d.target),
            self.root.join(format!("{block}/device")),
        )?;
        std::os::unix::fs::symlink(
            format!("../{}", block.trim_start_matches("sys/")),
            self.root.join(format!("sys/block/{}", d.kernel)),
        )?;
        if d.blank {
            fs::create_dir_all(self.root.join("dev"))?;
            let f = fs::File::create(self.root.join(format!("dev/{}", d.kernel)))?;
            f.set_len(4 << 20)?;
        }
        Ok(())
    }

    /// Takes a disk out (hot-unplugged).
    pub fn remove_disk(&self, kernel: &str) -> io::Result<()> {
        let link = self.root.join(format!("sys/block/{kernel}"));
        if let Ok(target) = fs::read_link(&link) {
            let block = self.root.join("sys/block").join(target);
            if let Some(dev) = block.parent().and_then(Path::parent) {
                let _ = fs::remove_dir_all(dev);
            }
            fs::remove_file(&link)?;
        }
        let _ = fs::remove_file(self.root.join(format!("dev/{kernel}")));
        Ok(())
    }

    /// Lays out (or replaces) an array and rewrites /proc/mdstat.
    pub fn array(&mut self, a: &FixtureArray) -> io::Result<()> {
        self.arrays.retain(|x| x.name != a.name);
        self.arrays.push(a.clone());
        self.arrays.sort_by(|x, y| x.name.cmp(&y.name));
        let base = format!("sys/devices/virtual/block/{}", a.name);
        let _ = fs::remove_dir_all(self.root.join(&base));
        let md = format!("/{base}/md");
        let degraded = a.raid_disks.saturating_sub(a.in_sync());
        let syncing = a.sync_action != "idle";
        self.set(&format!("{md}/level"), &format!("{}\n", a.level))?;
        self.set(&format!("{md}/raid_disks"), &format!("{}\n", a.raid_disks))?;
        self.set(
            &format!("{md}/array_state"),
            if syncing || degraded > 0 {
                "active\n"
            } else {
                "clean\n"
            },
        )?;
        self.set(&format!("{md}/degraded"), &format!("{degraded}\n"))?;
        self.set(
            &format!("{md}/sync_action"),
            &format!("{}\n", a.sync_action),
        )?;
        self.set(
            &format!("{md}/sync_completed"),
            &match a.sync_completed {
                Some((d, t)) => format!("{d} / {t}\n"),
                None => "none\n".into(),
            },
        )?;
        self.set(
            &format!("{md}/sync_speed"),
            &match a.sync_speed_kib {
                Some(s) => format!("{s}\n"),
                None => "none\n".into(),
            },
        )?;
        self.set(
            &format!("{md}/component_size"),
            &format!("{}\n", a.component_size_kib),
        )?;
        self.set(&format!("{md}/metadata_version"), "1.2\n")?;
        for m in &a.members {
            let d = format!("{md}/dev-{}", m.disk);
            self.set(&format!("{d}/state"), &format!("{}\n", m.state))?;
            self.set(
                &format!("{d}/slot"),
                &match m.slot {
                    Some(s) => format!("{s}\n"),
                    None => "none\n".into(),
                },
            )?;
            self.set(&format!("{d}/errors"), &format!("{}\n", m.errors))?;
            self.set(&format!("{d}/offset"), "2048\n")?;
            self.set(&format!("{d}/size"), &format!("{}\n", a.component_size_kib))?;
            // Holders of the member disk.
            if let Ok(target) = fs::read_link(self.root.join(format!("sys/block/{}", m.disk))) {
                let holders = self.root.join("sys/block").join(target).join("holders");
                fs::create_dir_all(&holders)?;
                fs::write(holders.join(&a.name), "")?;
            }
        }
        let link = self.root.join(format!("sys/block/{}", a.name));
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("../devices/virtual/block/{}", a.name), link)?;
        }
        self.write_mdstat()
    }

    fn write_mdstat(&self) -> io::Result<()> {
        let mut text = String::from("Personalities : [raid1] \n");
        for a in &self.arrays {
            let members: Vec<String> = a
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let flag = if m.state.contains("faulty") {
                        "(F)"
                    } else if m.state.contains("spare") && m.slot.is_none() {
                        "(S)"
                    } else {
                        ""
                    };
                    format!("{}[{i}]{flag}", m.disk)
                })
                .rev()
                .collect();
            let map: String = (0..a.raid_disks)
                .map(|slot| {
                    if a.members
                        .iter()
                        .any(|m| m.slot == Some(slot) && m.state.contains("in_sync"))
                    {
                        'U'
                    } else {
                        '_'
                    }
                })
                .collect();
            text.push_str(&format!(
                "{} : active {} {}\n      {} blocks super 1.2 [{}/{}] [{map}]\n",
                a.name,
                a.level,
                members.join(" "),
                a.component_size_kib,
                a.raid_disks,
                a.in_sync()
            ));
            if let Some((d, t)) = a.sync_completed.filter(|_| a.sync_action != "idle") {
                let permille = d * 1000 / t.max(1);
                let action = if a.sync_action == "recover" {
                    "recovery"
                } else {
                    a.sync_action.as_str()
                };
                text.push_str(&format!(
                    "      [>....................]  {action} = {}.{}% ({}/{}) finish=1.0min speed={}K/sec\n",
                    permille / 10,
                    permille % 10,
                    d / 2,
                    t / 2,
                    a.sync_speed_kib.unwrap_or(0)
                ));
            }
            text.push('\n');
        }
        text.push_str("unused devices: <none>\n");
        self.set("/proc/mdstat", &text)
    }

    /// The benchmark's tree: `disks` disks (serials BENCH-0000...) in
    /// `arrays` RAID1 arrays of two members plus spares, round robin.
    pub fn generate(root: &Path, disks: usize, arrays: usize) -> io::Result<Fixture> {
        let mut f = Fixture::new(root)?;
        let names: Vec<String> = (0..disks).map(kernel_name).collect();
        for (i, k) in names.iter().enumerate() {
            f.disk(&FixtureDisk::new(k, &format!("BENCH-{i:04}"), i as u32))?;
        }
        let arrays = arrays.max(1);
        for a in 0..arrays {
            let members: Vec<FixtureMember> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| i % arrays == a)
                .enumerate()
                .map(|(n, (_, k))| {
                    if n < 2 {
                        FixtureMember::new(k, "in_sync", Some(n as u32))
                    } else {
                        FixtureMember::new(k, "spare", None)
                    }
                })
                .collect();
            f.array(&FixtureArray::raid1(&format!("md{a}"), members))?;
        }
        Ok(f)
    }
}

/// sda .. sdz, sdaa ...
pub fn kernel_name(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    if i < 26 {
        format!("sd{}", letters[i] as char)
    } else {
        format!(
            "sd{}{}",
            letters[(i / 26 - 1) % 26] as char,
            letters[i % 26] as char
        )
    }
}
