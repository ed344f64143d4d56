//! Where the checks read the system from: sysfs, procfs and `/dev`, as
//! roots that tests replace with a faked tree in a temporary directory.

#[cfg(test)]
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A block device number, as sysfs and `/proc/self/mountinfo` write it
/// (`8:16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// Splits a `st_rdev` the way glibc's `major()`/`minor()` do: the
    /// kernel's 32-bit dev_t, widened with the high bits above bit 32.
    fn from_rdev(rdev: u64) -> Self {
        Self {
            major: (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32,
            minor: ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32,
        }
    }
}

impl FromStr for DevNum {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (major, minor) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("`{text}` is not major:minor"))?;
        let number = |part: &str| {
            part.parse()
                .map_err(|_| format!("`{text}` is not major:minor"))
        };
        Ok(Self {
            major: number(major)?,
            minor: number(minor)?,
        })
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// What a device path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Block(DevNum),
    /// Anything else, described for the refusal ("a regular file").
    Other(&'static str),
}

/// The roots of sysfs, procfs and `/dev` the checks read.
#[derive(Clone, Debug)]
pub struct SystemView {
    pub sys: PathBuf,
    pub proc: PathBuf,
    pub dev: PathBuf,
    /// A faked tree cannot hold block device nodes (mknod needs root), so
    /// tests name which of its regular files stand for block devices (by
    /// canonical path). The field exists in test builds only: the tool
    /// itself has no way to treat a file as a device.
    #[cfg(test)]
    fake_block_nodes: HashMap<PathBuf, DevNum>,
}

impl SystemView {
    /// The running system: `/sys`, `/proc`, `/dev`.
    pub fn host() -> Self {
        Self {
            sys: "/sys".into(),
            proc: "/proc".into(),
            dev: "/dev".into(),
            #[cfg(test)]
            fake_block_nodes: HashMap::new(),
        }
    }

    /// A view of a faked tree under `root` (`root/sys`, `root/proc`,
    /// `root/dev`) whose block devices are the files in `block_nodes`.
    #[cfg(test)]
    pub(crate) fn fake(root: &Path, block_nodes: HashMap<PathBuf, DevNum>) -> Self {
        Self {
            sys: root.join("sys"),
            proc: root.join("proc"),
            dev: root.join("dev"),
            fake_block_nodes: block_nodes,
        }
    }

    /// The node `path` names, following symlinks (`/dev/disk/by-id/...`).
    pub fn node(&self, path: &Path) -> io::Result<Node> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(test)]
        if let Some(devnum) = self.fake_block_nodes.get(&path.canonicalize()?) {
            return Ok(Node::Block(*devnum));
        }
        let kind = metadata.file_type();
        Ok(if kind.is_block_device() {
            Node::Block(DevNum::from_rdev(metadata.rdev()))
        } else if kind.is_char_device() {
            Node::Other("a character device")
        } else if kind.is_dir() {
            Node::Other("a directory")
        } else if kind.is_file() {
            Node::Other("a regular file")
        } else {
            Node::Other("not a device")
        })
    }

    /// A device path as procfs writes it (`/dev/sdb1`, `/dev/mapper/x`)
    /// mapped into this view's `/dev`, then resolved to its kernel name.
    /// Paths outside `/dev` (`/swapfile`, `overlay`) name no device: None.
    pub fn kernel_name_of(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("/dev/")?;
        let mapped = self.dev.join(rest);
        let resolved = mapped.canonicalize().unwrap_or(mapped);
        let name = resolved.file_name()?.to_str()?;
        Some(name.to_owned())
    }

    /// Reads a sysfs attribute, trimmed; None when it is not there.
    pub fn attribute(dir: &Path, name: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|text| text.trim().to_owned())
    }

    /// The canonical sysfs directory of a block device, by number.
    pub fn sysfs_by_devnum(&self, devnum: DevNum) -> Option<PathBuf> {
        self.sys
            .join("dev/block")
            .join(devnum.to_string())
            .canonicalize()
            .ok()
    }

    /// The canonical sysfs directory of a block device, by kernel name.
    pub fn sysfs_by_name(&self, name: &str) -> Option<PathBuf> {
        self.sys.join("class/block").join(name).canonicalize().ok()
    }

    /// `dir` relative to the sysfs root (`devices/pci0000:00/...`), so that
    /// path tests do not see the root's own components.
    pub fn sysfs_relative(&self, dir: &Path) -> PathBuf {
        let root = self.sys.canonicalize().unwrap_or_else(|_| self.sys.clone());
        dir.strip_prefix(&root).unwrap_or(dir).to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_parse_and_split_like_glibc() {
        assert_eq!(
            "8:16".parse::<DevNum>(),
            Ok(DevNum {
                major: 8,
                minor: 16
            })
        );
        assert!("8".parse::<DevNum>().is_err());
        assert!("a:b".parse::<DevNum>().is_err());
        // makedev(259, 300) in glibc's encoding.
        let rdev = (259 & 0xfff) << 8 | (300 & 0xff) | ((300 & !0xff) << 12);
        assert_eq!(
            DevNum::from_rdev(rdev),
            DevNum {
                major: 259,
                minor: 300
            }
        );
    }
}
