//! Boots judged by what the screen shows, for machines without a serial
//! port: QEMU runs with `-serial none` and QMP, the runner takes a
//! screendump every [`POLL`] and looks for the expected text (rendered
//! with the kernel's font) until it is there, the screen shows a kernel
//! panic or fault, QEMU exits, or time runs out.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::find::find;
use super::font::{self, Mask};
use super::ppm;
use crate::qmp::Qmp;

/// Time between two screendumps.
const POLL: Duration = Duration::from_millis(500);

/// What a screen-judged boot saw.
#[derive(Debug)]
pub struct Seen {
    /// Where the expected text is (top-left pixel), if it was found.
    pub found: Option<(usize, usize)>,
    /// Why the boot failed; `None` when the text was found.
    pub problem: Option<String>,
    /// The last screendump taken, if any.
    pub screendump: Option<PathBuf>,
    pub elapsed: Duration,
}

/// Runs `command` (which must serve QMP on `socket`) until `expected` is on
/// the screen, or `timeout`. Screendumps go to `screendump`; the last one
/// stays for a look.
pub fn run(
    mut command: Command,
    socket: &Path,
    screendump: &Path,
    expected: &str,
    timeout: Duration,
) -> std::io::Result<Seen> {
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(screendump);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command.spawn()?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let wanted = font::render(expected);
    let alarms = [font::render("KERNEL PANIC:"), font::render("KERNEL FAULT:")];
    let deadline = start + timeout;
    let mut qmp = None;
    let mut dumped = false;
    let (found, mut problem) = loop {
        if let Some(status) = child.try_wait()? {
            break (
                None,
                Some(format!(
                    "QEMU exited ({status}) before `{expected}` was on the screen"
                )),
            );
        }
        if Instant::now() >= deadline {
            let seconds = timeout.as_secs();
            break (
                None,
                Some(format!(
                    "`{expected}` was not on the screen after {seconds} s"
                )),
            );
        }
        std::thread::sleep(POLL);
        let qmp = match &mut qmp {
            Some(qmp) => qmp,
            None => match Qmp::connect(socket, Instant::now() + Duration::from_secs(10)) {
                Ok(connected) => qmp.insert(connected),
                // QEMU may have died meanwhile: the next turn says so.
                Err(_) if child.try_wait()?.is_some() => continue,
                Err(why) => break (None, Some(why)),
            },
        };
        match look(qmp, screendump, &wanted, &alarms) {
            Ok(Look::Found(at)) => break (Some(at), None),
            Ok(Look::Alarm(what)) => break (None, Some(format!("the screen shows `{what}`"))),
            Ok(Look::NotYet) => dumped = true,
            Err(why) => break (None, Some(why)),
        }
    };
    dumped |= screendump.is_file();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(socket);
    let complaints = stderr.join().unwrap_or_default();
    if let Some(problem) = &mut problem
        && !complaints.trim().is_empty()
    {
        problem.push_str(&format!("; QEMU said: {}", complaints.trim()));
    }
    Ok(Seen {
        found,
        problem,
        screendump: dumped.then(|| screendump.to_path_buf()),
        elapsed: start.elapsed(),
    })
}

enum Look {
    Found((usize, usize)),
    Alarm(&'static str),
    NotYet,
}

fn look(
    qmp: &mut Qmp,
    screendump: &Path,
    wanted: &Mask,
    alarms: &[Mask; 2],
) -> Result<Look, String> {
    qmp.screendump(screendump)?;
    let bytes = std::fs::read(screendump)
        .map_err(|error| format!("reading {}: {error}", screendump.display()))?;
    let image = ppm::parse(&bytes).map_err(|why| format!("{}: {why}", screendump.display()))?;
    if let Some(at) = find(&image, wanted) {
        return Ok(Look::Found(at));
    }
    for (alarm, name) in alarms.iter().zip(["KERNEL PANIC:", "KERNEL FAULT:"]) {
        if find(&image, alarm).is_some() {
            return Ok(Look::Alarm(name));
        }
    }
    Ok(Look::NotYet)
}
