//! `boot-image`: build disk images of the kernel, boot them in QEMU, run the
//! in-kernel test suite, start a gdb session, or write an image to a USB
//! stick. See `boot-image help`.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use boot_image::qemu::{self, Firmware, Machine, Options, Ovmf};
use boot_image::{console_check, image, ktap, session, suite, usb};

const USAGE: &str = "\
usage: boot-image <command> <kernel-elf> [options]
       boot-image usb <disk-image> --device /dev/sdX [--yes]

commands:
  image         build <out>/bios.img and <out>/uefi.img        [--out DIR] [--firmware F]
  run           boot in QEMU, serial on this terminal          [--firmware F] [--memory M] [--cpus N] [--usb]
  test          run the in-kernel test suite, judge the KTAP   [--machine F:M[:FLAG]...]... [--timeout SECS]
                [--screen-kernel ELF]: also boot that kernel from USB without serial on BIOS and
                UEFI, judged by `boot complete` on the screen
                [--console ELF]: then the console checks on that kernel (the normal kernel)
  console       drive the shell over serial and the PS/2 keyboard (QMP), judge the answers
  debug         boot halted with a gdb stub, print the gdb command [--firmware F] [--memory M] [--cpus N]
  cargo-runner  what `cargo run/test -p kernel` call: test binaries (under deps/) are
                tested on $KERNEL_TEST_MACHINES, other kernels are run
  usb           write a disk image to a USB stick: refuses anything but a whole, removable
                or USB-attached, unmounted disk that is not the running system's; asks for
                the device name again (--yes skips that); writes, syncs, reads back, compares

F is bios or uefi (run: uefi by default, debug: bios); M is a QEMU memory size (512M, 8G);
machine flags: smpN (N CPUs), q35 (the q35 chipset), inject=ap-panic or inject=ap-fault
(a panic or a page fault on CPU 1 that the run must report as such), inject=phantom-cpu
(a CPU that never answers).
Environment: KVM=0 forces TCG, KVM=1 KVM (else a probe picks the faster for BIOS boots); QEMU, OVMF_CODE and OVMF_VARS override the binaries;
KERNEL_TEST_MACHINES (default \"bios:256M uefi:512M bios:8G bios:256M:smp4 uefi:512M:smp4:q35
bios:256M:smp2:inject=ap-panic uefi:512M:smp2:inject=ap-fault bios:256M:smp2:inject=phantom-cpu\"); KERNEL_TEST_TIMEOUT (seconds, default 600).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("boot-image: {message}");
            ExitCode::from(2)
        }
    }
}

/// Parsed `--flag value` options after the command and kernel path.
#[derive(Default)]
struct Flags {
    out: Option<PathBuf>,
    firmware: Option<Firmware>,
    memory: Option<String>,
    cpus: Option<u32>,
    machines: Vec<Machine>,
    timeout: Option<u64>,
    usb: bool,
    device: Option<PathBuf>,
    yes: bool,
    console: Option<PathBuf>,
    screen_kernel: Option<PathBuf>,
}

fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => flags.out = Some(value()?.into()),
            "--firmware" => flags.firmware = Some(value()?.parse()?),
            "--memory" => flags.memory = Some(value()?.clone()),
            "--cpus" => {
                flags.cpus = Some(
                    value()?
                        .parse()
                        .ok()
                        .filter(|cpus| (1..=64).contains(cpus))
                        .ok_or("--cpus takes a count from 1 to 64")?,
                )
            }
            "--machine" => flags.machines.push(value()?.parse()?),
            "--timeout" => {
                flags.timeout = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--timeout takes whole seconds")?,
                )
            }
            "--usb" => flags.usb = true,
            "--device" => flags.device = Some(value()?.into()),
            "--yes" => flags.yes = true,
            "--console" => flags.console = Some(value()?.into()),
            "--screen-kernel" => flags.screen_kernel = Some(value()?.into()),
            other => return Err(format!("unknown option `{other}`\n{USAGE}")),
        }
    }
    Ok(flags)
}

fn dispatch(args: &[String]) -> Result<ExitCode, String> {
    let (command, kernel, rest) = match args {
        [command, kernel, rest @ ..] => (command.as_str(), Path::new(kernel), rest),
        [help] if help == "help" || help == "--help" || help == "-h" => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        _ => return Err(USAGE.into()),
    };
    // Its argument is a disk image, not a kernel.
    if command == "usb" {
        return write_usb(kernel, &parse_flags(rest)?);
    }
    if !kernel.is_file() {
        return Err(format!(
            "no kernel at {} (build it with `make kernel`)",
            kernel.display()
        ));
    }
    match command {
        "cargo-runner" if is_test_binary(kernel) => test(kernel, &Flags::default()),
        // cargo passes test-filter arguments we have no use for.
        "cargo-runner" => run(kernel, &Flags::default()),
        "image" => image_all(kernel, &parse_flags(rest)?),
        "run" => run(kernel, &parse_flags(rest)?),
        "test" => test(kernel, &parse_flags(rest)?),
        "debug" => debug(kernel, &parse_flags(rest)?),
        "console" => console(kernel),
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    }
}

/// cargo names test harness binaries `<crate>-<16 hex digits>` (under
/// `deps/`, or `build/<crate>/<hash>/out/` with the newer build-dir layout).
fn is_test_binary(kernel: &Path) -> bool {
    let name = kernel
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    name.rsplit_once('-').is_some_and(|(_, hash)| {
        hash.len() == 16 && hash.bytes().all(|byte| byte.is_ascii_hexdigit())
    })
}

fn image_all(kernel: &Path, flags: &Flags) -> Result<ExitCode, String> {
    let out = flags
        .out
        .clone()
        .unwrap_or_else(|| image::default_out_dir(kernel));
    let firmwares = match flags.firmware {
        Some(firmware) => vec![firmware],
        None => vec![Firmware::Bios, Firmware::Uefi],
    };
    for firmware in firmwares {
        let path = image::build(kernel, &out, firmware)?;
        println!("{firmware} image: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn machine(flags: &Flags, default_firmware: Firmware) -> Machine {
    let mut machine = Machine::new(
        flags.firmware.unwrap_or(default_firmware),
        flags.memory.as_deref().unwrap_or("512M"),
    );
    machine.cpus = flags.cpus.unwrap_or(1);
    machine
}

/// Builds the image and a QEMU command for an interactive boot. The
/// returned temp file (OVMF vars copy) must outlive QEMU.
fn interactive_command(
    kernel: &Path,
    machine: &Machine,
    options: &Options,
) -> Result<(std::process::Command, Option<PathBuf>), String> {
    let qemu = qemu::qemu_binary()?;
    let out = image::default_out_dir(kernel);
    let image = image::build(kernel, &out, machine.firmware)?;
    let mut vars_copy = None;
    let ovmf = match machine.firmware {
        Firmware::Uefi => {
            let ovmf = Ovmf::find()?;
            let vars = out.join(format!("ovmf-vars-{}.fd", std::process::id()));
            std::fs::copy(&ovmf.vars, &vars)
                .map_err(|error| format!("copying OVMF vars: {error}"))?;
            vars_copy = Some(vars);
            Some(ovmf)
        }
        Firmware::Bios => None,
    };
    let ovmf_pair = ovmf.as_ref().zip(vars_copy.as_deref());
    let command = qemu::command(&qemu, machine, &image, ovmf_pair, options);
    Ok((command, vars_copy))
}

fn run(kernel: &Path, flags: &Flags) -> Result<ExitCode, String> {
    let machine = machine(flags, Firmware::Uefi);
    let options = Options {
        usb: flags.usb,
        interactive: true,
        ..Options::default()
    };
    let (mut command, vars) = interactive_command(kernel, &machine, &options)?;
    println!(
        "booting {} on {machine}; quit QEMU with Ctrl-A X",
        kernel.display()
    );
    let status = command
        .status()
        .map_err(|error| format!("starting QEMU: {error}"));
    if let Some(vars) = vars {
        let _ = std::fs::remove_file(vars);
    }
    Ok(match status?.code() {
        Some(0) | Some(ktap::EXIT_SUCCESS) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn test(kernel: &Path, flags: &Flags) -> Result<ExitCode, String> {
    let machines = match flags.machines.is_empty() {
        false => flags.machines.clone(),
        true => std::env::var("KERNEL_TEST_MACHINES")
            .ok()
            .filter(|machines| !machines.trim().is_empty())
            .unwrap_or_else(|| suite::DEFAULT_MACHINES.into())
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?,
    };
    let timeout = match flags.timeout {
        Some(seconds) => seconds,
        None => match std::env::var("KERNEL_TEST_TIMEOUT") {
            Ok(text) => text
                .parse()
                .map_err(|_| "KERNEL_TEST_TIMEOUT takes whole seconds")?,
            Err(_) => 600,
        },
    };
    for (what, kernel) in [
        ("screen boots", &flags.screen_kernel),
        ("console checks", &flags.console),
    ] {
        if let Some(kernel) = kernel
            && !kernel.is_file()
        {
            return Err(format!(
                "no kernel at {} for the {what} (build it with `make kernel`)",
                kernel.display()
            ));
        }
    }
    let passed = suite::run(
        kernel,
        &machines,
        Duration::from_secs(timeout),
        flags.screen_kernel.as_deref(),
        flags.console.as_deref(),
    )?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The console checks alone, with their own summary.
fn console(kernel: &Path) -> Result<ExitCode, String> {
    let verdicts = console_check::run(kernel)?;
    Ok(
        match suite::print_summary(&verdicts, &mut std::io::stdout()) {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        },
    )
}

/// ELF type from the header: 2 = fixed-address executable, 3 = PIE.
fn elf_type(kernel: &Path) -> Result<u16, String> {
    let bytes =
        std::fs::read(kernel).map_err(|error| format!("reading {}: {error}", kernel.display()))?;
    match bytes.get(..18) {
        Some(header) if header.starts_with(b"\x7fELF") => {
            Ok(u16::from_le_bytes([header[16], header[17]]))
        }
        _ => Err(format!("{} is not an ELF file", kernel.display())),
    }
}

/// The load offset of a PIE kernel, read from its own boot log.
fn probe_load_offset(kernel: &Path, machine: &Machine) -> Result<u64, String> {
    let (command, vars) = interactive_command(kernel, machine, &Options::default())?;
    let mut log = Vec::new();
    let stop = |report: &ktap::Report| report.boot_complete;
    let outcome = session::run(command, Duration::from_secs(120), &mut log, Some(&stop));
    if let Some(vars) = vars {
        let _ = std::fs::remove_file(vars);
    }
    outcome.map_err(|error| format!("probing the load offset: {error}"))?;
    let log = String::from_utf8_lossy(&log);
    log.lines()
        .find_map(|line| line.split("kernel image offset 0x").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| "the kernel did not log its image offset".into())
}

fn debug(kernel: &Path, flags: &Flags) -> Result<ExitCode, String> {
    let machine = machine(flags, Firmware::Bios);
    let kernel = kernel
        .canonicalize()
        .map_err(|error| format!("{}: {error}", kernel.display()))?;
    let symbols = match elf_type(&kernel)? {
        3 => {
            let offset = probe_load_offset(&kernel, &machine)?;
            format!("symbol-file {} -o {offset:#x}", kernel.display())
        }
        _ => format!("file {}", kernel.display()),
    };
    let out = image::default_out_dir(&kernel);
    std::fs::create_dir_all(&out)
        .map_err(|error| format!("creating {}: {error}", out.display()))?;
    let script = out.join("debug.gdb");
    let text = format!(
        "set pagination off\n{symbols}\ntarget remote localhost:1234\n\
         # A hardware breakpoint: the kernel is not in memory yet when QEMU starts.\n\
         hbreak kernel::kernel_main\ncontinue\n"
    );
    std::fs::write(&script, text)
        .map_err(|error| format!("writing {}: {error}", script.display()))?;
    let options = Options {
        gdb: true,
        interactive: true,
        ..Options::default()
    };
    let (mut command, vars) = interactive_command(&kernel, &machine, &options)?;
    println!("QEMU is halted with a gdb stub on localhost:1234. In another terminal run:\n");
    println!("    gdb -x {}\n", script.display());
    println!("gdb loads the symbols ({symbols}), stops at kernel_main; quit QEMU with Ctrl-A X.");
    let _ = std::io::stdout().flush();
    let status = command
        .status()
        .map_err(|error| format!("starting QEMU: {error}"));
    if let Some(vars) = vars {
        let _ = std::fs::remove_file(vars);
    }
    status?;
    Ok(ExitCode::SUCCESS)
}

fn write_usb(image: &Path, flags: &Flags) -> Result<ExitCode, String> {
    let device = flags
        .device
        .as_deref()
        .ok_or("usb needs --device /dev/sdX: the whole USB stick (see `lsblk`)")?;
    if !image.is_file() {
        return Err(format!(
            "no disk image at {} (build it with `make image`)",
            image.display()
        ));
    }
    let request = usb::Request {
        device,
        image,
        yes: flags.yes,
    };
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout();
    usb::flash(
        &usb::SystemView::host(),
        usb::Policy::from_env(),
        request,
        &mut input,
        &mut out,
    )
    .map_err(|error| error.to_string())?;
    Ok(ExitCode::SUCCESS)
}
