//! Console checks: boot the normal kernel (the one `make run` boots), wait
//! for its shell's prompt, and drive it as a person would, through the
//! serial port and through the PS/2 keyboard (QMP `send-key`). Every
//! answer is judged; each check counts as one test in `make test`'s
//! summary, so a console that does not answer cannot pass unnoticed.
//!
//! Three boots:
//! - UEFI, 512 MiB (`make run`'s machine): the serial conversation, then
//!   the keyboard, then `halt` (QEMU must exit with the success status);
//! - BIOS, 512 MiB: the keyboard;
//! - UEFI on a q35 without the i8042 (a UEFI PC without USB legacy
//!   emulation): the kernel must say there is no keyboard, and serial
//!   must still work.

mod answers;
mod guest;
mod screen;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::image;
use crate::ktap::{EXIT_SUCCESS, Verdict};
use crate::qemu::{self, Firmware, Machine, Options, Ovmf};
use crate::qmp::Qmp;
use answers::{PROMPT, allocated_block, answer, lists_every_command, says};
use guest::Guest;

/// From QEMU's start to the prompt: UEFI under TCG takes about 5 s on an
/// idle host; shared CI machines are slower.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// From Enter to the next prompt (`bench` is the slowest, well under 1 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every console check on `kernel`; one verdict per boot.
pub fn run(kernel: &Path) -> Result<Vec<(String, Verdict)>, String> {
    let out_dir = image::default_out_dir(kernel).join("console");
    let uefi: Machine = "uefi:512M".parse()?;
    let bios: Machine = "bios:512M".parse()?;
    let mut verdicts = Vec::new();

    let mut checks = Checks::new(format!("console {uefi}"));
    if let Some(mut boot) = checks.boot(kernel, &out_dir, &uefi, &[]) {
        let _ = serial_conversation(&mut boot.guest, &mut checks)
            .and_then(|()| keyboard(&mut boot, &mut checks))
            .and_then(|()| halt(&mut boot.guest, &mut checks));
    }
    verdicts.push(checks.finish());

    let mut checks = Checks::new(format!("console {bios}"));
    if let Some(mut boot) = checks.boot(kernel, &out_dir, &bios, &[]) {
        let _ = keyboard(&mut boot, &mut checks);
    }
    verdicts.push(checks.finish());

    let mut checks = Checks::new(format!("console {uefi} no i8042"));
    if let Some(mut boot) = checks.boot(kernel, &out_dir, &uefi, &["-machine", "q35,i8042=off"]) {
        let _ = without_controller(&mut boot.guest, &mut checks);
    }
    verdicts.push(checks.finish());
    Ok(verdicts)
}

/// One check's failure stops the boot's remaining checks (they would
/// only repeat it); it is already counted.
struct Stop;

/// A running guest with its QMP connection.
struct Boot {
    guest: Guest,
    qmp: Qmp,
    /// Removed when the boot ends.
    files: Vec<PathBuf>,
}

impl Drop for Boot {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The checks of one boot, counted into a [`Verdict`].
struct Checks {
    label: String,
    verdict: Verdict,
}

impl Checks {
    fn new(label: String) -> Self {
        println!("==> {label}");
        Self {
            label,
            verdict: Verdict::default(),
        }
    }

    fn record(&mut self, name: &str, result: Result<(), String>) -> Result<(), Stop> {
        match result {
            Ok(()) => {
                println!("  ok      {name}");
                self.verdict.passed += 1;
                Ok(())
            }
            Err(why) => {
                println!("  FAILED  {name}: {why}");
                self.verdict.failed += 1;
                self.verdict.problems.push(format!("{name}: {why}"));
                Err(Stop)
            }
        }
    }

    /// Builds the image, starts QEMU with serial on pipes and a QMP
    /// socket, and waits for the prompt; `None` (counted as a failure)
    /// if any of that fails.
    fn boot(
        &mut self,
        kernel: &Path,
        out_dir: &Path,
        machine: &Machine,
        extra: &[&str],
    ) -> Option<Boot> {
        let result = start(kernel, out_dir, machine, extra);
        let booted = result.as_ref().map(|_| ()).map_err(Clone::clone);
        let mut boot = match result {
            Ok(boot) => boot,
            Err(_) => {
                let _ = self.record("QEMU starts with serial and QMP", booted);
                return None;
            }
        };
        let prompt = boot
            .guest
            .expect("boot complete", BOOT_TIMEOUT)
            .and_then(|_| boot.guest.expect(PROMPT, BOOT_TIMEOUT))
            .map(|_| ());
        if prompt.is_err() {
            println!("  last lines from serial:\n{}", boot.guest.tail(15));
        }
        self.record("prompt after `boot complete`", prompt).ok()?;
        Some(boot)
    }

    fn finish(self) -> (String, Verdict) {
        (self.label, self.verdict)
    }
}

fn start(kernel: &Path, out_dir: &Path, machine: &Machine, extra: &[&str]) -> Result<Boot, String> {
    let qemu = qemu::qemu_binary()?;
    let image = image::build(kernel, out_dir, machine.firmware)?;
    let tag = format!("{}-{}", std::process::id(), machine.firmware);
    let socket = std::env::temp_dir().join(format!("boot-image-console-{tag}.qmp"));
    let _ = std::fs::remove_file(&socket);
    let mut files = vec![socket.clone()];
    let ovmf = match machine.firmware {
        Firmware::Uefi => {
            let ovmf = Ovmf::find()?;
            let vars = out_dir.join(format!("ovmf-vars-{tag}.fd"));
            std::fs::copy(&ovmf.vars, &vars)
                .map_err(|error| format!("copying OVMF vars: {error}"))?;
            files.push(vars.clone());
            Some((ovmf, vars))
        }
        Firmware::Bios => None,
    };
    let ovmf_pair = ovmf.as_ref().map(|(ovmf, vars)| (ovmf, vars.as_path()));
    let mut command = qemu::command(&qemu, machine, &image, ovmf_pair, &Options::default());
    command
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()));
    command.args(extra);
    let guest = Guest::start(command)?;
    let qmp = Qmp::connect(&socket, Instant::now() + Duration::from_secs(20))?;
    Ok(Boot { guest, qmp, files })
}

/// Types `line` and Enter on serial; the answer up to the next prompt.
fn typed(guest: &mut Guest, line: &str) -> Result<String, String> {
    guest.send(format!("{line}\r").as_bytes())?;
    let received = guest.expect(PROMPT, ANSWER_TIMEOUT)?;
    Ok(answer(&received).to_string())
}

/// Types `line` on serial and records `judge`'s verdict on the answer.
fn check(
    guest: &mut Guest,
    checks: &mut Checks,
    name: &str,
    line: &str,
    judge: impl FnOnce(&str) -> Result<(), String>,
) -> Result<String, Stop> {
    let answer = typed(guest, line);
    let result = answer.as_deref().map_err(Clone::clone).and_then(judge);
    checks.record(name, result)?;
    Ok(answer.unwrap_or_default())
}

fn serial_conversation(guest: &mut Guest, checks: &mut Checks) -> Result<(), Stop> {
    check(
        guest,
        checks,
        "serial: help lists every command",
        "help",
        lists_every_command,
    )?;
    check(
        guest,
        checks,
        "serial: mem shows the zones",
        "mem",
        |answer| {
            says(answer, "memory zones")
                .and(says(answer, "DMA32"))
                .and(says(answer, "free blocks per zone and order"))
        },
    )?;
    let mut block = 0;
    check(
        guest,
        checks,
        "serial: alloc 0 dma32 gives a block below 4 GiB",
        "alloc 0 dma32",
        |answer| {
            block = allocated_block(answer, &["DMA", "DMA32"])?;
            Ok(())
        },
    )?;
    let free = format!("free {block:#x} 0");
    check(
        guest,
        checks,
        "serial: free gives the block back",
        &free,
        |answer| says(answer, &format!("freed 4.0 KiB (order 0) at {block:#x}")),
    )?;
    // From here on only refusals: the free lists must not change.
    let before = typed(guest, "buddyinfo").unwrap_or_default();
    check(
        guest,
        checks,
        "serial: free 0x1000 0 is refused in words",
        "free 0x1000 0",
        |answer| {
            says(
                answer,
                "free: refused: address outside every section; nothing changed",
            )
        },
    )?;
    check(
        guest,
        checks,
        "serial: a second free is refused as a double free",
        &free,
        |answer| {
            says(
                answer,
                "free: refused: double free: page is already free; nothing changed",
            )
        },
    )?;
    check(
        guest,
        checks,
        "serial: alloc 19 is refused with the allocator's error",
        "alloc 19",
        |answer| {
            says(
                answer,
                "alloc: refused: order, count or alignment beyond the largest order",
            )
        },
    )?;
    check(
        guest,
        checks,
        "serial: refused requests changed nothing (buddyinfo)",
        "buddyinfo",
        |after| match after == before && after.contains("DMA32") {
            true => Ok(()),
            false => Err(format!("buddyinfo before:\n{before}\nafter:\n{after}")),
        },
    )?;
    check(
        guest,
        checks,
        "serial: unknown command answered",
        "frobnicate",
        |answer| {
            says(
                answer,
                "unknown command `frobnicate`: `help` lists the commands",
            )
        },
    )?;
    check(
        guest,
        checks,
        "serial: bad number answered",
        "alloc x",
        |answer| says(answer, "alloc: ORDER `x` is not a number"),
    )?;
    // DEL twice turns "hxx" into "h"; Ctrl-U drops "frob".
    check(
        guest,
        checks,
        "serial: backspace edits the line",
        "hxx\x7f\x7felp",
        lists_every_command,
    )?;
    check(
        guest,
        checks,
        "serial: Ctrl-U kills the line",
        "frob\x15cpus",
        |answer| says(answer, "CPUs online"),
    )?;
    check(
        guest,
        checks,
        "serial: map shows both maps",
        "map",
        |answer| {
            says(answer, "memory map from the bootloader")
                .and(says(answer, "usable memory after sanitising"))
        },
    )?;
    check(
        guest,
        checks,
        "serial: heap shows slabs and caches",
        "heap",
        |answer| says(answer, "slab pages").and(says(answer, "per-CPU page caches")),
    )?;
    check(
        guest,
        checks,
        "serial: bench prints cycles",
        "bench",
        |answer| {
            says(answer, "4 KiB frame alloc+free")
                .and(says(answer, "64-byte heap object alloc+free"))
        },
    )?;
    Ok(())
}

/// `help` typed on the PS/2 keyboard, with a typo erased by Backspace;
/// then Ctrl-U. Answers are read from serial and from the screen.
fn keyboard(boot: &mut Boot, checks: &mut Checks) -> Result<(), Stop> {
    let typed = boot
        .qmp
        .type_text("hx")
        .and_then(|()| boot.qmp.chord(&["backspace"]))
        .and_then(|()| boot.qmp.type_text("elp\n"))
        .and_then(|()| boot.guest.expect(PROMPT, ANSWER_TIMEOUT));
    let result = typed
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|received| lists_every_command(answer(received)));
    checks.record("keyboard: help typed with a backspace is answered", result)?;
    let on_screen = screen::answer_on_screen(&mut boot.qmp, "list the commands, or explain one");
    checks.record("keyboard: the answer is on the screen", on_screen)?;
    let typed = boot
        .qmp
        .type_text("mem")
        .and_then(|()| boot.qmp.chord(&["ctrl", "u"]))
        .and_then(|()| boot.qmp.type_text("cpus\n"))
        .and_then(|()| boot.guest.expect(PROMPT, ANSWER_TIMEOUT));
    let result = typed
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|received| says(answer(received), "CPUs online"));
    checks.record("keyboard: Ctrl-U kills the line", result)
}

fn halt(guest: &mut Guest, checks: &mut Checks) -> Result<(), Stop> {
    let result = guest
        .send(b"halt\r")
        .and_then(|()| guest.expect("halting", ANSWER_TIMEOUT))
        .and_then(|_| match guest.wait_exit(ANSWER_TIMEOUT) {
            Some(EXIT_SUCCESS) => Ok(()),
            Some(code) => Err(format!("QEMU exited with {code}, not {EXIT_SUCCESS}")),
            None => Err("QEMU still runs after `halt`".into()),
        });
    checks.record("serial: halt leaves QEMU with the success status", result)
}

/// A UEFI PC without the i8042 (no USB legacy emulation): the kernel says
/// the keyboard is missing, and serial still works.
fn without_controller(guest: &mut Guest, checks: &mut Checks) -> Result<(), Stop> {
    let before_prompt = guest.tail(40);
    checks.record(
        "no i8042: the kernel says the shell is serial-only",
        says(&before_prompt, "no PS/2 controller").and(says(&before_prompt, "serial only")),
    )?;
    check(
        guest,
        checks,
        "no i8042: help answered on serial",
        "help",
        lists_every_command,
    )?;
    Ok(())
}
