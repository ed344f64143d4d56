//! The in-kernel test suite on several machines, and boots judged by the
//! screen on machines without a serial port, with one summary.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::image;
use crate::ktap::{self, Verdict};
use crate::qemu::{self, Firmware, Machine, Options, Ovmf};
use crate::screen;
use crate::session;

/// Machines `make test` boots by default: small one-CPU BIOS and UEFI
/// machines, a BIOS machine with memory above 4 GiB (so DMA32 and Normal
/// both exist), 4-CPU BIOS (pc) and UEFI (q35) machines, and a 2-CPU
/// machine whose kernel panics on CPU 1 mid-suite and a UEFI one where CPU 1
/// takes a page fault instead, each of which must fail the run and name
/// the CPU, and a 2-CPU machine whose kernel also tries to start a
/// CPU that does not exist, which must be skipped.
pub const DEFAULT_MACHINES: &str = "bios:256M uefi:512M bios:8G bios:256M:smp4 uefi:512M:smp4:q35 bios:256M:smp2:inject=ap-panic uefi:512M:smp2:inject=ap-fault bios:256M:smp2:inject=phantom-cpu";

/// Machines booted from a USB stick without a serial port, judged by
/// `boot complete` on their screen: one per firmware.
pub const SCREEN_MACHINES: &str = "bios:256M uefi:512M";

/// The text a screen-judged boot waits for.
pub const SCREEN_EXPECTED: &str = "boot complete";

/// Boots the test kernel on every machine, then (given the normal kernel
/// in `screen_kernel`) boots that on each of [`SCREEN_MACHINES`] judged by
/// its screen, then (given `console`, the normal kernel) runs the console
/// checks; prints each verdict and a final `N passed, N failed` line;
/// returns whether everything passed.
pub fn run(
    kernel: &Path,
    machines: &[Machine],
    timeout: Duration,
    screen_kernel: Option<&Path>,
    console: Option<&Path>,
) -> Result<bool, String> {
    let qemu = qemu::qemu_binary()?;
    let out_dir = image::default_out_dir(kernel).join("test");
    let ovmf = match machines
        .iter()
        .any(|machine| machine.firmware == Firmware::Uefi)
    {
        true => Some(Ovmf::find()?),
        false => None,
    };
    let mut verdicts: Vec<(String, Verdict)> = Vec::new();
    let started = Instant::now();
    for (index, machine) in machines.iter().enumerate() {
        let machine_started = Instant::now();
        let image = image::build(kernel, &out_dir, machine.firmware)?;
        let vars = out_dir.join(format!("ovmf-vars-{}.fd", std::process::id()));
        let ovmf = match &ovmf {
            Some(ovmf) if machine.firmware == Firmware::Uefi => {
                std::fs::copy(&ovmf.vars, &vars)
                    .map_err(|error| format!("copying OVMF vars: {error}"))?;
                Some((ovmf, vars.as_path()))
            }
            _ => None,
        };
        let command = qemu::command(&qemu, machine, &image, ovmf, &Options::default());
        let accel = if command.get_args().any(|arg| arg == "kvm") {
            "kvm"
        } else {
            "tcg"
        };
        println!(
            "==> in-kernel tests on {machine} ({accel}), machine {} of {}",
            index + 1,
            machines.len()
        );
        let outcome = session::run(command, timeout, &mut std::io::stdout(), None)
            .map_err(|error| format!("starting {}: {error}", qemu.display()));
        let _ = std::fs::remove_file(&vars);
        let outcome = outcome?;
        let verdict = match machine.inject.as_deref() {
            Some("ap-panic") => {
                ktap::judge_injected_crash(&outcome.report, outcome.exit, "KERNEL PANIC")
            }
            Some("ap-fault") => {
                ktap::judge_injected_crash(&outcome.report, outcome.exit, "KERNEL FAULT")
            }
            _ => ktap::judge_machine(&outcome.report, outcome.exit, machine.cpus as usize),
        };
        let took = format!(
            "{:.1} s, {:.1} s in all",
            machine_started.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        if verdict.success() {
            println!("--> {machine}: {verdict} ({took})");
        } else {
            println!("--> {machine} FAILED: {verdict} ({took})");
            for problem in &verdict.problems {
                println!("    {problem}");
            }
            if !outcome.stderr.trim().is_empty() {
                println!("    QEMU said: {}", outcome.stderr.trim());
            }
        }
        verdicts.push((machine.to_string(), verdict));
    }
    if let Some(screen_kernel) = screen_kernel {
        for machine in SCREEN_MACHINES.split_whitespace() {
            let machine: Machine = machine.parse()?;
            let verdict = screen_boot(&qemu, screen_kernel, &machine, timeout)?;
            verdicts.push((format!("{machine} usb, screen"), verdict));
        }
    }
    if let Some(console) = console {
        verdicts.extend(crate::console_check::run(console)?);
    }
    Ok(print_summary(&verdicts, &mut std::io::stdout()))
}

/// Boots `kernel` on `machine` from a USB stick (xHCI) with no serial port
/// and passes if [`SCREEN_EXPECTED`] appears on its screen.
fn screen_boot(
    qemu: &Path,
    kernel: &Path,
    machine: &Machine,
    timeout: Duration,
) -> Result<Verdict, String> {
    let out_dir = image::default_out_dir(kernel).join("screen");
    let image = image::build(kernel, &out_dir, machine.firmware)?;
    let id = format!("{}-{}", machine.firmware, std::process::id());
    let vars = out_dir.join(format!("ovmf-vars-{id}.fd"));
    let ovmf = match machine.firmware {
        Firmware::Uefi => {
            let ovmf = Ovmf::find()?;
            std::fs::copy(&ovmf.vars, &vars)
                .map_err(|error| format!("copying OVMF vars: {error}"))?;
            Some(ovmf)
        }
        Firmware::Bios => None,
    };
    // Unix socket paths are short (108 bytes): not under a deep target dir.
    let socket = std::env::temp_dir().join(format!("boot-image-qmp-{id}.sock"));
    let options = Options {
        usb: true,
        no_serial: true,
        qmp: Some(socket.clone()),
        ..Options::default()
    };
    let ovmf_pair = ovmf.as_ref().map(|ovmf| (ovmf, vars.as_path()));
    let command = qemu::command(qemu, machine, &image, ovmf_pair, &options);
    let accel = if command.get_args().any(|arg| arg == "kvm") {
        "kvm"
    } else {
        "tcg"
    };
    println!("==> {machine} from a USB stick, no serial port, judged by its screen ({accel})");
    let screendump = out_dir.join(format!("screen-{}.ppm", machine.firmware));
    let seen = screen::boot::run(command, &socket, &screendump, SCREEN_EXPECTED, timeout)
        .map_err(|error| format!("starting {}: {error}", qemu.display()));
    let _ = std::fs::remove_file(&vars);
    let seen = seen?;
    let last = seen.screendump.as_ref().map_or(String::new(), |path| {
        format!(" (last screendump: {})", path.display())
    });
    let seconds = seen.elapsed.as_secs_f32();
    Ok(match (seen.found, seen.problem) {
        (Some((x, y)), _) => {
            println!(
                "--> {machine}: `{SCREEN_EXPECTED}` on the screen at ({x}, {y}) after {seconds:.1} s{last}"
            );
            Verdict {
                passed: 1,
                ..Verdict::default()
            }
        }
        (None, problem) => {
            let problem = problem.unwrap_or_else(|| "not found".into());
            println!("--> {machine} FAILED after {seconds:.1} s: {problem}{last}");
            Verdict {
                failed: 1,
                problems: vec![format!("{machine} (screen): {problem}")],
                ..Verdict::default()
            }
        }
    })
}

/// Prints one line per machine (or other labelled run) and the total;
/// returns whether all passed.
pub fn print_summary(verdicts: &[(String, Verdict)], out: &mut dyn Write) -> bool {
    let mut total = Verdict::default();
    let _ = writeln!(out, "kernel test summary:");
    for (label, verdict) in verdicts {
        let state = if verdict.success() { "ok" } else { "FAILED" };
        let _ = writeln!(out, "  {label:<28} {state:<6} {verdict}");
        total.passed += verdict.passed;
        total.failed += verdict.failed;
        total.skipped += verdict.skipped;
        total.problems.extend(verdict.problems.iter().cloned());
    }
    let _ = writeln!(out, "{total}");
    total.success()
}
