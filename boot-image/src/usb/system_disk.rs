//! The disks the running system lives on: the ones behind `/` and active
//! swap, followed through partitions and device mapper/RAID (`slaves`)
//! down to whole disks.

use std::path::{Path, PathBuf};

use super::mounts::Mount;
use super::view::SystemView;

/// Why a disk counts as the system's, for the refusal message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemDisk {
    pub disk: String,
    /// `/ (on /dev/sda2)` or `swap (/dev/sda3)`.
    pub role: String,
}

/// Whole disks under `/` and under every swap area that is a device.
pub fn system_disks(view: &SystemView, mounts: &[Mount], swaps: &[String]) -> Vec<SystemDisk> {
    let mut found = Vec::new();
    for mount in mounts.iter().filter(|mount| mount.point == "/") {
        // The number first: it survives `/dev/root` and symlinked sources;
        // the source covers btrfs, whose number is anonymous.
        let sysfs = view.sysfs_by_devnum(mount.devnum).or_else(|| {
            view.kernel_name_of(&mount.source)
                .and_then(|name| view.sysfs_by_name(&name))
        });
        if let Some(sysfs) = sysfs {
            let role = format!("/ (on {})", mount.source);
            add_disks(&mut found, &sysfs, &role, 0);
        }
    }
    for swap in swaps {
        if let Some(sysfs) = view
            .kernel_name_of(swap)
            .and_then(|name| view.sysfs_by_name(&name))
        {
            add_disks(&mut found, &sysfs, &format!("swap ({swap})"), 0);
        }
    }
    found
}

/// Stacks of device mapper on RAID on partitions are a few levels deep;
/// the bound only guards against a malformed (faked) tree with a cycle.
const MAX_DEPTH: usize = 8;

fn add_disks(found: &mut Vec<SystemDisk>, sysfs: &Path, role: &str, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let slaves = slaves(sysfs);
    if !slaves.is_empty() {
        for slave in slaves {
            add_disks(found, &slave, role, depth + 1);
        }
        return;
    }
    let disk = match sysfs.join("partition").exists() {
        true => sysfs.parent().unwrap_or(sysfs),
        false => sysfs,
    };
    let Some(name) = disk
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
    else {
        return;
    };
    if !found.iter().any(|known| known.disk == name) {
        found.push(SystemDisk {
            disk: name,
            role: role.to_owned(),
        });
    }
}

/// The devices a device-mapper or RAID device is built from, canonical.
fn slaves(sysfs: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sysfs.join("slaves")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.path().canonicalize().ok())
        .collect()
}
