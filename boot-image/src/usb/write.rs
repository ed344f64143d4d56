//! Writing the image and reading it back: the only code that writes.
//!
//! The device is opened by the path that was checked, without creating or
//! truncating anything, and only after its node proves to be the one that
//! was checked. `O_EXCL` on a block device makes Linux refuse the open
//! while the device or one of its partitions is mounted or claimed, which
//! closes the gap between the checks and the write.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::device::human_size;

/// Bytes per write and per read-back: large enough for USB throughput,
/// small enough for steady progress.
pub const CHUNK: usize = 4 << 20;

/// `O_EXCL` from Linux's `<fcntl.h>` (the same on x86_64 and aarch64).
const O_EXCL: i32 = 0o200;
/// `O_DIRECT`, which differs per architecture; where it is not known here
/// the read-back goes through the page cache (and says so).
#[cfg(target_arch = "x86_64")]
const O_DIRECT: Option<i32> = Some(0o40000);
#[cfg(target_arch = "aarch64")]
const O_DIRECT: Option<i32> = Some(0o200000);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const O_DIRECT: Option<i32> = None;
/// Block size for direct reads: a multiple of every logical block size.
const DIRECT_ALIGN: usize = 4096;
const EBUSY: i32 = 16;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;

/// Which file a path named when it was checked (`st_dev`, `st_ino` of the
/// node itself, after symlinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeId {
    dev: u64,
    ino: u64,
}

impl NodeId {
    pub fn of(path: &Path) -> io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        Ok(Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        })
    }

    fn of_file(file: &File) -> io::Result<Self> {
        let metadata = file.metadata()?;
        Ok(Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        })
    }
}

/// What was written and how it was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    /// Read back with `O_DIRECT`, from the device rather than the cache.
    pub direct: bool,
}

/// Writes `image` to the start of `device` (which must still be the node
/// `expected`), syncs, reads back and compares. Writes nothing past the
/// image's length and never creates or truncates a file.
pub fn write_and_verify(
    device: &Path,
    expected: NodeId,
    image: &Path,
    progress: &mut dyn Write,
) -> Result<Written, String> {
    let shown = device.display();
    let mut source =
        File::open(image).map_err(|error| format!("opening {}: {error}", image.display()))?;
    let total = source
        .metadata()
        .map_err(|error| format!("reading {}: {error}", image.display()))?
        .len();
    if total == 0 {
        return Err(format!("{} is empty", image.display()));
    }
    let mut target = OpenOptions::new()
        .write(true)
        .custom_flags(O_EXCL)
        .open(device)
        .map_err(|error| open_error(device, &error))?;
    same_node(&target, expected, device)?;

    let mut buffer = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        let count = read_full(&mut source, &mut buffer)
            .map_err(|error| format!("reading {}: {error}", image.display()))?;
        if count == 0 {
            break;
        }
        target
            .write_all(&buffer[..count])
            .map_err(|error| format!("writing {shown} at byte {written}: {error}"))?;
        written += count as u64;
        show_progress(progress, "written", written, total);
    }
    if written != total {
        return Err(format!(
            "{} changed while it was written ({written} of {total} bytes)",
            image.display()
        ));
    }
    target
        .sync_all()
        .map_err(|error| format!("syncing {shown}: {error}"))?;
    drop(target);

    let (mut readback, direct) = open_for_readback(device)?;
    same_node(&readback, expected, device)?;
    let mut source =
        File::open(image).map_err(|error| format!("opening {}: {error}", image.display()))?;
    // Direct reads need an aligned buffer; aligning a slice of a larger
    // vector needs no unsafe code.
    let mut raw = vec![0u8; CHUNK + DIRECT_ALIGN];
    let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
    let device_buffer = &mut raw[start..start + CHUNK];
    let mut checked = 0u64;
    while checked < total {
        let want = (total - checked).min(CHUNK as u64) as usize;
        let expected_bytes = &mut buffer[..want];
        source
            .read_exact(expected_bytes)
            .map_err(|error| format!("reading {}: {error}", image.display()))?;
        // Whole aligned blocks; a short read at the device's end is fine.
        let request = want.next_multiple_of(DIRECT_ALIGN).min(CHUNK);
        let got = read_full(&mut readback, &mut device_buffer[..request])
            .map_err(|error| format!("reading {shown} back at byte {checked}: {error}"))?;
        if got < want {
            return Err(format!(
                "{shown} ended at byte {} while reading back",
                checked + got as u64
            ));
        }
        if let Some(offset) = first_difference(expected_bytes, &device_buffer[..want]) {
            return Err(format!(
                "{shown} differs from the image at byte {}: the write did not stick \
                 (a failing or fake-capacity stick?)",
                checked + offset as u64
            ));
        }
        checked += want as u64;
        show_progress(progress, "verified", checked, total);
    }
    Ok(Written {
        bytes: total,
        direct,
    })
}

/// The device again, read-only, with `O_DIRECT` when the filesystem or
/// device accepts it (tmpfs files may not).
fn open_for_readback(device: &Path) -> Result<(File, bool), String> {
    if let Some(flag) = O_DIRECT {
        match OpenOptions::new()
            .read(true)
            .custom_flags(flag)
            .open(device)
        {
            Ok(file) => return Ok((file, true)),
            Err(error) if error.raw_os_error() == Some(EINVAL) => {}
            Err(error) => return Err(open_error(device, &error)),
        }
    }
    let file = File::open(device).map_err(|error| open_error(device, &error))?;
    Ok((file, false))
}

fn same_node(file: &File, expected: NodeId, device: &Path) -> Result<(), String> {
    let actual = NodeId::of_file(file).map_err(|error| format!("{}: {error}", device.display()))?;
    match actual == expected {
        true => Ok(()),
        false => Err(format!(
            "{} is no longer the device that was checked; nothing more written",
            device.display()
        )),
    }
}

fn open_error(device: &Path, error: &io::Error) -> String {
    let shown = device.display();
    match error.raw_os_error() {
        Some(EBUSY) => format!(
            "{shown} is busy: mounted or held by another program (Linux refuses the exclusive open)"
        ),
        Some(EACCES) => format!("{shown}: permission denied; writing a disk needs root (sudo)"),
        _ => format!("opening {shown}: {error}"),
    }
}

/// Fills `buffer` unless the input ends first; returns the bytes read.
fn read_full(input: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn first_difference(expected: &[u8], actual: &[u8]) -> Option<usize> {
    expected
        .iter()
        .zip(actual)
        .position(|(wanted, got)| wanted != got)
}

/// One line, rewritten in place (`\r`), ended when the work is done.
fn show_progress(out: &mut dyn Write, verb: &str, done: u64, total: u64) {
    let percent = done * 100 / total;
    let end = if done == total { "\n" } else { "" };
    let _ = write!(
        out,
        "\r{verb} {} of {} ({percent}%){end}",
        human_size(done),
        human_size(total)
    );
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_byte_is_found() {
        assert_eq!(first_difference(b"abcd", b"abcd"), None);
        assert_eq!(first_difference(b"abcd", b"abXd"), Some(2));
    }

    #[test]
    fn progress_ends_its_line_when_done() {
        let mut out = Vec::new();
        show_progress(&mut out, "written", 1 << 20, 2 << 20);
        show_progress(&mut out, "written", 2 << 20, 2 << 20);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\rwritten 1.0 MiB of 2.0 MiB (50%)\rwritten 2.0 MiB of 2.0 MiB (100%)\n"
        );
    }
}
