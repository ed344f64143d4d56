//! `boot-image usb`: writes a disk image to a USB stick, refusing any
//! device that could be anything else.
//!
//! The order is fixed: [`checks`] (whole disk, removable or USB, not
//! mounted, swapped on or held, not the running system's), then the user
//! sees vendor, model and size and types the name again ([`confirm`]),
//! then the checks run again (a desktop may have mounted the stick while
//! the question waited), then [`write`] opens exactly the checked node,
//! writes, syncs, reads back and compares. Everything is read through a
//! [`SystemView`], so tests run the checks on a faked sysfs and procfs.

pub mod checks;
pub mod confirm;
pub mod device;
pub mod mounts;
pub mod system_disk;
pub mod view;
pub mod write;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;

pub use checks::{Policy, Refusal, TEST_ALLOW_LOOP_VAR};
pub use view::SystemView;
pub use write::Written;

use device::human_size;
use write::NodeId;

/// Why nothing (or not everything) was written.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The device failed a check; nothing was written.
    Refused(Vec<Refusal>),
    /// The typed name did not match; nothing was written.
    NotConfirmed(String),
    /// Reading the image, writing or verifying failed.
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(refusals) => {
                write!(f, "refusing to write, nothing written:")?;
                for refusal in refusals {
                    write!(f, "\n  - {refusal}")?;
                }
                Ok(())
            }
            Error::NotConfirmed(why) | Error::Failed(why) => f.write_str(why),
        }
    }
}

/// What to write where.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The device as the user named it (`/dev/sdb`, `/dev/disk/by-id/...`);
    /// this exact path is what gets opened.
    pub device: &'a Path,
    pub image: &'a Path,
    /// Skip the typed confirmation (`YES=1`); the checks still run.
    pub yes: bool,
}

/// Checks, confirms, writes and verifies; `input` answers the question,
/// `out` gets the description and progress.
pub fn flash(
    view: &SystemView,
    policy: Policy,
    request: Request<'_>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<Written, Error> {
    let image_len = std::fs::metadata(request.image)
        .map_err(|error| Error::Failed(format!("{}: {error}", request.image.display())))?
        .len();
    let checked = checks::check(view, policy, request.device, image_len).map_err(Error::Refused)?;
    let say = |out: &mut dyn Write, text: String| {
        writeln!(out, "{text}").map_err(|error| Error::Failed(format!("writing output: {error}")))
    };
    for note in &checked.notes {
        say(out, format!("note: {note}"))?;
    }
    say(
        out,
        format!(
            "device {}  {}\nimage  {}  {}",
            request.device.display(),
            confirm::describe(&checked.disk),
            request.image.display(),
            human_size(image_len)
        ),
    )?;
    if !request.yes {
        confirm::confirm(&checked.disk, request.device, input, out).map_err(Error::NotConfirmed)?;
    }

    // The node is pinned before the second check and compared after it,
    // and the writer compares the opened file with it again.
    let node = NodeId::of(request.device)
        .map_err(|error| Error::Failed(format!("{}: {error}", request.device.display())))?;
    let again = checks::check(view, policy, request.device, image_len).map_err(Error::Refused)?;
    let node_after = NodeId::of(request.device).ok();
    if again.disk.devnum != checked.disk.devnum || node_after != Some(node) {
        return Err(Error::Failed(format!(
            "{} changed while waiting for the answer; nothing written",
            request.device.display()
        )));
    }
    let written =
        write::write_and_verify(request.device, node, request.image, out).map_err(Error::Failed)?;
    let how = match written.direct {
        true => "read back from the device",
        false => "read back through the page cache",
    };
    say(
        out,
        format!(
            "wrote and verified {} on {} ({how}); it is safe to unplug",
            human_size(written.bytes),
            request.device.display()
        ),
    )?;
    Ok(written)
}
