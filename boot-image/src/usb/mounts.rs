//! Mounted filesystems and active swap, from procfs.

use super::view::{DevNum, SystemView};

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `st_dev` of the filesystem: the block device's number for disk
    /// filesystems (btrfs reports an anonymous number; `source` covers it).
    pub devnum: DevNum,
    pub point: String,
    /// The mount source (`/dev/sdb1`, `tmpfs`).
    pub source: String,
}

/// Every mount this process sees. mountinfo rather than `/proc/mounts`
/// because it carries the device number, which names the device even when
/// the source is `/dev/root` or a symlink.
pub fn mounts(view: &SystemView) -> Result<Vec<Mount>, String> {
    let path = view.proc.join("self/mountinfo");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("reading {}: {error}", path.display()))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`:
/// id, parent, major:minor, root, mount point, options, optional fields up
/// to `-`, then type, source, superblock options.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let devnum = fields.get(2)?.parse().ok()?;
    let point = unescape(fields.get(4)?);
    let separator = fields.iter().position(|field| *field == "-")?;
    let source = unescape(fields.get(separator + 2)?);
    Some(Mount {
        devnum,
        point,
        source,
    })
}

/// The paths of active swap areas, from `/proc/swaps` (none if unreadable:
/// a system without swap support has no such file).
pub fn swaps(view: &SystemView) -> Vec<String> {
    let text = std::fs::read_to_string(view.proc.join("swaps")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// procfs writes space, tab, newline and backslash in paths as octal
/// escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
                out.push(value as u8);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_number_point_and_source() {
        let line =
            "36 35 8:17 / /media/my\\040stick rw,nosuid shared:1 master:2 - vfat /dev/sdb1 rw";
        assert_eq!(
            parse_mountinfo_line(line),
            Some(Mount {
                devnum: DevNum {
                    major: 8,
                    minor: 17
                },
                point: "/media/my stick".into(),
                source: "/dev/sdb1".into(),
            })
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }
}
