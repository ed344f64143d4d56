//! What sysfs says about the block device a path names: whole disk or
//! partition, removable, USB-attached, read-only, size, vendor and model,
//! its partitions and whatever holds it (device mapper, RAID).

use std::path::{Path, PathBuf};

use super::view::{DevNum, SystemView};

/// A whole disk.
#[derive(Clone, Debug)]
pub struct Disk {
    /// The kernel's name: `sdb`, `mmcblk0`, `loop3`.
    pub name: String,
    pub devnum: DevNum,
    /// Canonical sysfs directory (`.../block/sdb`).
    pub sysfs: PathBuf,
    pub removable: bool,
    /// Its sysfs path runs through a USB host controller (`/usb2/2-1/...`):
    /// USB SSDs and many card readers are not flagged removable.
    pub usb: bool,
    /// A loop device (`devices/virtual/block/loopN`): the test override may
    /// let it stand in for a USB stick.
    pub loop_device: bool,
    pub read_only: bool,
    pub size_bytes: u64,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub partitions: Vec<Partition>,
    /// Devices built on this disk or its partitions (`dm-0`, `md127`).
    pub holders: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub devnum: DevNum,
}

/// The block device behind a device number.
#[derive(Clone, Debug)]
pub enum BlockDevice {
    Disk(Disk),
    /// A partition, with the name of the disk that holds it.
    Partition {
        name: String,
        disk: String,
    },
    /// A number sysfs does not know (a stale node left in `/dev`).
    Unknown,
}

/// Looks the device number up in sysfs.
pub fn inspect(view: &SystemView, devnum: DevNum) -> BlockDevice {
    let Some(sysfs) = view.sysfs_by_devnum(devnum) else {
        return BlockDevice::Unknown;
    };
    let name = file_name(&sysfs);
    if sysfs.join("partition").exists() {
        let disk = sysfs.parent().map(file_name).unwrap_or_default();
        return BlockDevice::Partition { name, disk };
    }
    let relative = view.sysfs_relative(&sysfs);
    let relative_text = relative.to_string_lossy();
    let flag = |attribute| SystemView::attribute(&sysfs, attribute).is_some_and(|text| text == "1");
    let partitions = partitions(&sysfs);
    let mut holders = holders_of(&sysfs, &name);
    for partition in &partitions {
        holders.extend(holders_of(&sysfs.join(&partition.name), &partition.name));
    }
    BlockDevice::Disk(Disk {
        devnum,
        removable: flag("removable"),
        usb: relative_text.contains("/usb"),
        loop_device: is_loop_name(&name) && relative.starts_with("devices/virtual/block"),
        read_only: flag("ro"),
        size_bytes: SystemView::attribute(&sysfs, "size")
            .and_then(|sectors| sectors.parse::<u64>().ok())
            // sysfs counts 512-byte sectors whatever the device's block size.
            .map_or(0, |sectors| sectors.saturating_mul(512)),
        vendor: non_empty(SystemView::attribute(&sysfs, "device/vendor")),
        model: non_empty(SystemView::attribute(&sysfs, "device/model"))
            // MMC/SD cards name themselves in `name`, not `model`.
            .or_else(|| non_empty(SystemView::attribute(&sysfs, "device/name"))),
        partitions,
        holders,
        sysfs,
        name,
    })
}

/// `loop` followed by digits only (`loop-control` is not a disk).
fn is_loop_name(name: &str) -> bool {
    name.strip_prefix("loop")
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Partitions are the subdirectories of a disk's sysfs directory that
/// have a `partition` attribute.
fn partitions(disk: &Path) -> Vec<Partition> {
    let Ok(entries) = std::fs::read_dir(disk) else {
        return Vec::new();
    };
    let mut found: Vec<Partition> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|dir| dir.join("partition").exists())
        .filter_map(|dir| {
            let devnum = SystemView::attribute(&dir, "dev")?.parse().ok()?;
            Some(Partition {
                name: file_name(&dir),
                devnum,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// `dm-0 (on sdb1)` for each entry of `<dir>/holders`.
fn holders_of(dir: &Path, name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("holders")) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| format!("{} (on {name})", entry.file_name().to_string_lossy()))
        .collect();
    found.sort();
    found
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|text| !text.is_empty())
}

/// Bytes in binary units with one decimal: `14.9 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_names_are_loop_and_digits() {
        assert!(is_loop_name("loop0"));
        assert!(is_loop_name("loop12"));
        assert!(!is_loop_name("loop"));
        assert!(!is_loop_name("loop-control"));
        assert!(!is_loop_name("loop0p1"));
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(48 * 1024 * 1024), "48.0 MiB");
        assert_eq!(human_size(16_008_609_792), "14.9 GiB");
    }
}
