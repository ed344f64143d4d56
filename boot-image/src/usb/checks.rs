//! The checks a device must pass before anything is written to it, and
//! the refusals they give.

use std::fmt;
use std::path::{Path, PathBuf};

use super::device::{self, BlockDevice, Disk, human_size};
use super::mounts::{self, Mount};
use super::system_disk::system_disks;
use super::view::{Node, SystemView};

/// Set to `1`, lets loop devices (`/dev/loopN`) pass the removable/USB
/// check, so the write path can be tested on a loop device. It relaxes
/// nothing else: mounts, holders and the system disk are still refused.
pub const TEST_ALLOW_LOOP_VAR: &str = "BOOT_IMAGE_USB_TEST_ALLOW_LOOP";

/// What the caller allows beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// See [`TEST_ALLOW_LOOP_VAR`].
    pub allow_test_loop: bool,
}

impl Policy {
    /// The policy of this process: the test override only when its
    /// variable is exactly `1`.
    pub fn from_env() -> Self {
        Self {
            allow_test_loop: std::env::var(TEST_ALLOW_LOOP_VAR).as_deref() == Ok("1"),
        }
    }
}

/// Why a device is not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing {
        path: PathBuf,
    },
    Unreadable {
        path: PathBuf,
        error: String,
    },
    /// Without the mount table nothing can be said about mounts or the
    /// system disk: refuse rather than guess.
    NoMountTable {
        error: String,
    },
    NotBlockDevice {
        path: PathBuf,
        kind: &'static str,
    },
    UnknownToSysfs {
        path: PathBuf,
    },
    Partition {
        path: PathBuf,
        name: String,
        disk: String,
    },
    NotRemovable {
        disk: String,
    },
    SystemDisk {
        disk: String,
        role: String,
    },
    Mounted {
        device: String,
        point: String,
    },
    Swap {
        device: String,
        path: String,
    },
    Held {
        holder: String,
    },
    ReadOnly {
        disk: String,
    },
    NoMedium {
        disk: String,
    },
    TooSmall {
        disk: String,
        device: u64,
        image: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing { path } => write!(
                f,
                "{}: no such device; find the stick's name with `lsblk`",
                path.display()
            ),
            Refusal::Unreadable { path, error } => write!(f, "{}: {error}", path.display()),
            Refusal::NoMountTable { error } => write!(f, "cannot check mounts: {error}"),
            Refusal::NotBlockDevice { path, kind } => {
                write!(f, "{} is {kind}, not a block device", path.display())
            }
            Refusal::UnknownToSysfs { path } => write!(
                f,
                "{} is a block device sysfs does not know (a stale node?)",
                path.display()
            ),
            Refusal::Partition { path, name, disk } => write!(
                f,
                "{} is partition {name} of {disk}: name the whole disk, /dev/{disk}",
                path.display()
            ),
            Refusal::NotRemovable { disk } => write!(
                f,
                "{disk} is neither removable nor attached by USB: it looks like an internal disk"
            ),
            Refusal::SystemDisk { disk, role } => {
                write!(f, "{disk} holds the running system: {role}")
            }
            Refusal::Mounted { device, point } => write!(
                f,
                "{device} is mounted at {point}: unmount it first (`umount {point}`)"
            ),
            Refusal::Swap { device, path } => {
                write!(f, "{device} is active swap: `swapoff {path}` first")
            }
            Refusal::Held { holder } => write!(
                f,
                "{holder} is built on the device (device mapper, LVM or RAID): stop it first"
            ),
            Refusal::ReadOnly { disk } => {
                write!(f, "{disk} is read-only (a write-protect switch?)")
            }
            Refusal::NoMedium { disk } => {
                write!(f, "{disk} has no capacity: is there a medium in it?")
            }
            Refusal::TooSmall {
                disk,
                device,
                image,
            } => write!(
                f,
                "{disk} holds {} but the image is {}",
                human_size(*device),
                human_size(*image)
            ),
        }
    }
}

/// A disk that passed every check, with notes to print (the test
/// override in effect).
#[derive(Clone, Debug)]
pub struct Checked {
    pub disk: Disk,
    pub notes: Vec<String>,
}

/// Runs every check on `path` for an image of `image_len` bytes. A path
/// that is not a whole disk gets one refusal; a whole disk gets all that
/// apply, so one run shows everything to fix.
pub fn check(
    view: &SystemView,
    policy: Policy,
    path: &Path,
    image_len: u64,
) -> Result<Checked, Vec<Refusal>> {
    let path_buf = path.to_path_buf();
    let devnum = match view.node(path) {
        Ok(Node::Block(devnum)) => devnum,
        Ok(Node::Other(kind)) => {
            return Err(vec![Refusal::NotBlockDevice {
                path: path_buf,
                kind,
            }]);
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(vec![Refusal::Missing { path: path_buf }]);
        }
        Err(error) => {
            return Err(vec![Refusal::Unreadable {
                path: path_buf,
                error: error.to_string(),
            }]);
        }
    };
    let disk = match device::inspect(view, devnum) {
        BlockDevice::Disk(disk) => disk,
        BlockDevice::Partition { name, disk } => {
            return Err(vec![Refusal::Partition {
                path: path_buf,
                name,
                disk,
            }]);
        }
        BlockDevice::Unknown => return Err(vec![Refusal::UnknownToSysfs { path: path_buf }]),
    };
    let mounts = mounts::mounts(view).map_err(|error| vec![Refusal::NoMountTable { error }])?;
    let swaps = mounts::swaps(view);

    let mut refusals = Vec::new();
    let mut notes = Vec::new();
    if !disk.removable && !disk.usb {
        if policy.allow_test_loop && disk.loop_device {
            notes.push(format!(
                "test override {TEST_ALLOW_LOOP_VAR}=1: loop device {} passes as removable",
                disk.name
            ));
        } else {
            refusals.push(Refusal::NotRemovable {
                disk: disk.name.clone(),
            });
        }
    }
    let system_disks = system_disks(view, &mounts, &swaps);
    if system_disks.is_empty() {
        // A container's overlay root, or a network root: no local disk to
        // protect, or one this view cannot see; the mount checks still hold.
        notes.push(
            "could not tell which disk holds the running system (/ is not on a local disk)".into(),
        );
    }
    for system in system_disks {
        if system.disk == disk.name {
            refusals.push(Refusal::SystemDisk {
                disk: disk.name.clone(),
                role: system.role,
            });
        }
    }
    refusals.extend(uses(view, &disk, &mounts, &swaps));
    if disk.read_only {
        refusals.push(Refusal::ReadOnly {
            disk: disk.name.clone(),
        });
    }
    if disk.size_bytes == 0 {
        refusals.push(Refusal::NoMedium {
            disk: disk.name.clone(),
        });
    } else if disk.size_bytes < image_len {
        refusals.push(Refusal::TooSmall {
            disk: disk.name.clone(),
            device: disk.size_bytes,
            image: image_len,
        });
    }
    match refusals.is_empty() {
        true => Ok(Checked { disk, notes }),
        false => Err(refusals),
    }
}

/// Mounts and swap on the disk or any of its partitions, matched by device
/// number and by source name, and devices built on them.
fn uses(view: &SystemView, disk: &Disk, mounts: &[Mount], swaps: &[String]) -> Vec<Refusal> {
    let mut members = vec![(disk.name.clone(), disk.devnum)];
    members.extend(
        disk.partitions
            .iter()
            .map(|partition| (partition.name.clone(), partition.devnum)),
    );
    let member_named =
        |name: Option<String>| name.filter(|name| members.iter().any(|(member, _)| member == name));
    let mut refusals = Vec::new();
    for mount in mounts {
        let by_number = members
            .iter()
            .find(|(_, devnum)| *devnum == mount.devnum)
            .map(|(name, _)| name.clone());
        if let Some(device) = by_number.or_else(|| member_named(view.kernel_name_of(&mount.source)))
        {
            refusals.push(Refusal::Mounted {
                device,
                point: mount.point.clone(),
            });
        }
    }
    for swap in swaps {
        if let Some(device) = member_named(view.kernel_name_of(swap)) {
            refusals.push(Refusal::Swap {
                device,
                path: swap.clone(),
            });
        }
    }
    refusals.extend(disk.holders.iter().map(|holder| Refusal::Held {
        holder: holder.clone(),
    }));
    refusals
}
