//! A faked sysfs, procfs and `/dev` in a temporary directory, for the
//! checks' tests. Device nodes are regular files the view is told to treat
//! as block devices, so writes through them can be observed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::view::{DevNum, SystemView};

/// Where a disk hangs in sysfs: this decides whether it counts as USB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    Usb,
    Internal,
    Virtual,
}

#[derive(Clone, Debug)]
pub struct DiskSpec {
    pub bus: Bus,
    pub removable: bool,
    pub read_only: bool,
    pub sectors: u64,
    pub vendor: &'static str,
    pub model: &'static str,
}

impl DiskSpec {
    /// A 16 GB USB stick, as a SanDisk one describes itself.
    pub fn usb_stick() -> Self {
        Self {
            bus: Bus::Usb,
            removable: true,
            read_only: false,
            sectors: 31_266_816,
            vendor: "SanDisk ",
            model: "Cruzer Blade    ",
        }
    }

    /// An internal SATA disk.
    pub fn internal() -> Self {
        Self {
            bus: Bus::Internal,
            removable: false,
            read_only: false,
            sectors: 1_953_525_168,
            vendor: "ATA     ",
            model: "Samsung SSD 870 ",
        }
    }
}

/// Bytes every fake device node starts with, to prove nothing was written.
pub const NODE_FILL: u8 = 0xEE;
pub const NODE_LEN: usize = 64 * 1024;

pub struct FakeSystem {
    root: PathBuf,
    nodes: HashMap<PathBuf, DevNum>,
    mountinfo: String,
    swaps: String,
}

impl FakeSystem {
    /// An empty tree plus the running system: internal disk `vda` whose
    /// partition `vda1` is mounted at `/`.
    pub fn new(test: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("boot-image-usb-fake-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in [
            "sys/block",
            "sys/class/block",
            "sys/dev/block",
            "proc/self",
            "dev",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let mut system = Self {
            root,
            nodes: HashMap::new(),
            mountinfo: String::new(),
            swaps: "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n".into(),
        };
        system.disk(
            "vda",
            "254:0",
            DiskSpec {
                vendor: "",
                model: "",
                ..DiskSpec::internal()
            },
        );
        system.partition("vda", "vda1", "254:1");
        system.mount("254:1", "/dev/vda1", "/");
        system
    }

    pub fn view(&self) -> SystemView {
        std::fs::write(self.root.join("proc/self/mountinfo"), &self.mountinfo).unwrap();
        std::fs::write(self.root.join("proc/swaps"), &self.swaps).unwrap();
        SystemView::fake(&self.root, self.nodes.clone())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dev(&self, name: &str) -> PathBuf {
        self.root.join("dev").join(name)
    }

    fn sysfs(&self, name: &str) -> PathBuf {
        self.root
            .join("sys/class/block")
            .join(name)
            .canonicalize()
            .unwrap()
    }

    /// A whole disk with its sysfs directory, links and device node.
    pub fn disk(&mut self, name: &str, devnum: &str, spec: DiskSpec) -> PathBuf {
        let parent = match spec.bus {
            Bus::Usb => {
                "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0"
            }
            Bus::Internal => "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0",
            Bus::Virtual => "devices/virtual",
        };
        let dir = self.root.join("sys").join(parent).join("block").join(name);
        std::fs::create_dir_all(dir.join("device")).unwrap();
        std::fs::create_dir_all(dir.join("holders")).unwrap();
        std::fs::create_dir_all(dir.join("slaves")).unwrap();
        let flag = |on: bool| if on { "1\n" } else { "0\n" };
        write(&dir.join("removable"), flag(spec.removable));
        write(&dir.join("ro"), flag(spec.read_only));
        write(&dir.join("size"), &format!("{}\n", spec.sectors));
        if !spec.vendor.is_empty() {
            write(&dir.join("device/vendor"), &format!("{}\n", spec.vendor));
        }
        if !spec.model.is_empty() {
            write(&dir.join("device/model"), &format!("{}\n", spec.model));
        }
        self.link_block(name, devnum, &dir, true)
    }

    /// A partition of `disk`.
    pub fn partition(&mut self, disk: &str, name: &str, devnum: &str) -> PathBuf {
        let dir = self.sysfs(disk).join(name);
        std::fs::create_dir_all(dir.join("holders")).unwrap();
        write(&dir.join("partition"), "1\n");
        write(&dir.join("size"), "2048\n");
        self.link_block(name, devnum, &dir, false)
    }

    /// A device-mapper device built on `slaves` (which get it as holder).
    pub fn mapper(&mut self, name: &str, devnum: &str, slaves: &[&str]) -> PathBuf {
        let dir = self.root.join("sys/devices/virtual/block").join(name);
        std::fs::create_dir_all(dir.join("slaves")).unwrap();
        write(&dir.join("size"), "2048\n");
        for slave in slaves {
            let slave_dir = self.sysfs(slave);
            symlink(&slave_dir, &dir.join("slaves").join(slave));
            symlink(&dir, &slave_dir.join("holders").join(name));
        }
        self.link_block(name, devnum, &dir, false)
    }

    fn link_block(&mut self, name: &str, devnum: &str, dir: &Path, whole: bool) -> PathBuf {
        write(&dir.join("dev"), &format!("{devnum}\n"));
        let sys = self.root.join("sys");
        if whole {
            symlink(dir, &sys.join("block").join(name));
        }
        symlink(dir, &sys.join("class/block").join(name));
        symlink(dir, &sys.join("dev/block").join(devnum));
        let node = self.dev(name);
        std::fs::write(&node, vec![NODE_FILL; NODE_LEN]).unwrap();
        self.nodes
            .insert(node.canonicalize().unwrap(), devnum.parse().unwrap());
        node
    }

    /// A mountinfo line for a filesystem of device number `devnum`.
    pub fn mount(&mut self, devnum: &str, source: &str, point: &str) {
        let id = 20 + self.mountinfo.lines().count();
        let point = point.replace(' ', "\\040");
        writeln!(
            self.mountinfo,
            "{id} 1 {devnum} / {point} rw,relatime shared:1 - ext4 {source} rw"
        )
        .unwrap();
    }

    pub fn swap(&mut self, path: &str) {
        writeln!(self.swaps, "{path}\tpartition\t1048572\t\t0\t\t-2").unwrap();
    }

    /// Removes `proc/self/mountinfo` after [`FakeSystem::view`] wrote it.
    pub fn lose_mount_table(&self) {
        std::fs::remove_file(self.root.join("proc/self/mountinfo")).unwrap();
    }
}

impl Drop for FakeSystem {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}
