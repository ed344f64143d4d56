//! What the user is shown before the write, and the typed confirmation.

use std::io::{BufRead, Write};
use std::path::Path;

use super::device::{Disk, human_size};

/// `sdb: SanDisk Cruzer Blade, 14.9 GiB, USB, removable`.
pub fn describe(disk: &Disk) -> String {
    let identity = match (&disk.vendor, &disk.model) {
        (Some(vendor), Some(model)) => format!("{vendor} {model}"),
        (None, Some(name)) | (Some(name), None) => name.clone(),
        (None, None) => "no vendor or model given".into(),
    };
    let mut traits = vec![human_size(disk.size_bytes)];
    if disk.usb {
        traits.push("USB".into());
    }
    if disk.removable {
        traits.push("removable".into());
    }
    if disk.loop_device {
        traits.push("loop device".into());
    }
    format!("{}: {identity}, {}", disk.name, traits.join(", "))
}

/// Asks for the device name to be typed again; the kernel name (`sdb`) or
/// the path as given (`/dev/sdb`) both count. Anything else, or end of
/// input, is a refusal.
pub fn confirm(
    disk: &Disk,
    path: &Path,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), String> {
    write!(
        out,
        "Everything on {} is lost. Type the device name ({}) to write it: ",
        path.display(),
        disk.name
    )
    .and_then(|()| out.flush())
    .map_err(|error| format!("writing the prompt: {error}"))?;
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|error| format!("reading the answer: {error}"))?;
    let typed = line.trim();
    if typed == disk.name || Path::new(typed) == path {
        Ok(())
    } else if line.is_empty() {
        Err("no answer (end of input); nothing written. YES=1 (--yes) skips the question".into())
    } else {
        Err(format!("`{typed}` is not `{}`; nothing written", disk.name))
    }
}
