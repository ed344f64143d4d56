//! Finding QEMU and OVMF, and building QEMU command lines for our machines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

pub use crate::accel::kvm_usable;

/// Which firmware boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

impl FromStr for Firmware {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "bios" => Ok(Self::Bios),
            "uefi" => Ok(Self::Uefi),
            other => Err(format!(
                "unknown firmware `{other}` (expected bios or uefi)"
            )),
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bios => "bios",
            Self::Uefi => "uefi",
        })
    }
}

/// A machine to boot, written `firmware:memory[:flag...]`, e.g.
/// `bios:256M` or `uefi:512M:smp4:q35`. Flags: `smpN` (N CPUs), `q35` (the
/// q35 chipset: AHCI instead of IDE), `inject=NAME` (asks the test kernel,
/// through QEMU's fw_cfg, to inject a failure: `ap-panic` and `ap-fault`, a
/// panic or a page fault on CPU 1 that must fail the run the way such a
/// failure should; `phantom-cpu`, a CPU
/// that never answers, which must be reported and skipped while the suite
/// passes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub firmware: Firmware,
    /// QEMU's `-m` argument, e.g. `256M`, `8G`.
    pub memory: String,
    /// CPUs (`-smp`); 1 unless a `smpN` flag says otherwise.
    pub cpus: u32,
    pub q35: bool,
    /// A failure the test kernel injects (`opt/framekeep/inject` in fw_cfg).
    pub inject: Option<String>,
}

impl Machine {
    /// A one-CPU pc machine.
    pub fn new(firmware: Firmware, memory: &str) -> Self {
        Self {
            firmware,
            memory: memory.to_string(),
            cpus: 1,
            q35: false,
            inject: None,
        }
    }
}

/// Failures the test kernel knows how to inject.
pub const INJECTIONS: &[&str] = &["ap-panic", "ap-fault", "phantom-cpu"];

impl FromStr for Machine {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split(':');
        let firmware = parts.next().unwrap_or_default();
        let memory = parts.next().unwrap_or("512M");
        let digits = memory.trim_end_matches(['M', 'G']);
        if digits.is_empty()
            || !digits.bytes().all(|byte| byte.is_ascii_digit())
            || digits.len() == memory.len()
        {
            return Err(format!(
                "bad memory size `{memory}` in `{text}` (expected e.g. 256M or 8G)"
            ));
        }
        let mut machine = Self::new(firmware.parse()?, memory);
        for flag in parts {
            if flag == "q35" {
                machine.q35 = true;
            } else if let Some(count) = flag.strip_prefix("smp") {
                machine.cpus = match count.parse() {
                    Ok(cpus @ 1..=64) => cpus,
                    _ => {
                        return Err(format!(
                            "bad CPU count `{flag}` in `{text}` (expected smp1 to smp64)"
                        ));
                    }
                };
            } else if let Some(name) = flag.strip_prefix("inject=") {
                if !INJECTIONS.contains(&name) {
                    return Err(format!(
                        "unknown injection `{name}` in `{text}` (known: {})",
                        INJECTIONS.join(", ")
                    ));
                }
                machine.inject = Some(name.to_string());
            } else {
                return Err(format!(
                    "unknown machine flag `{flag}` in `{text}` (expected smpN, q35 or inject=NAME)"
                ));
            }
        }
        Ok(machine)
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.firmware, self.memory)?;
        if self.cpus != 1 {
            write!(f, ":smp{}", self.cpus)?;
        }
        if self.q35 {
            f.write_str(":q35")?;
        }
        if let Some(name) = &self.inject {
            write!(f, ":inject={name}")?;
        }
        Ok(())
    }
}

/// How the guest is attached to the host.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Boot from a USB stick on an xHCI controller instead of an IDE disk.
    pub usb: bool,
    /// Start halted with a gdb stub on localhost:1234.
    pub gdb: bool,
    /// Serial on the terminal with QEMU's monitor multiplexed (Ctrl-A X quits).
    pub interactive: bool,
    /// No serial port at all (`-serial none`), as on most real machines.
    pub no_serial: bool,
    /// Serve QMP on this Unix socket (for screendumps).
    pub qmp: Option<PathBuf>,
}

/// The OVMF firmware pair; the vars file is copied before each boot.
#[derive(Clone, Debug)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars: PathBuf,
}

const OVMF_CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
    (
        "/usr/share/edk2-ovmf/x64/OVMF_CODE.fd",
        "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd",
    ),
];

impl Ovmf {
    /// `OVMF_CODE`/`OVMF_VARS` from the environment, else the usual places.
    pub fn find() -> Result<Self, String> {
        if let (Some(code), Some(vars)) =
            (std::env::var_os("OVMF_CODE"), std::env::var_os("OVMF_VARS"))
        {
            return Ok(Self {
                code: code.into(),
                vars: vars.into(),
            });
        }
        OVMF_CANDIDATES
            .iter()
            .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
            .map(|(code, vars)| Self {
                code: code.into(),
                vars: vars.into(),
            })
            .ok_or_else(|| {
                "OVMF not found: install it with `sudo apt-get install ovmf` \
                 (or set OVMF_CODE and OVMF_VARS)"
                    .to_string()
            })
    }
}

/// The QEMU binary, or an error that names the package to install.
pub fn qemu_binary() -> Result<PathBuf, String> {
    let name = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("{name} not found: install it with `sudo apt-get install qemu-system-x86`")
        })
}

/// Builds the QEMU command for `image` on `machine`. `vars_copy` is the
/// private OVMF vars file for UEFI boots (created by the caller).
pub fn command(
    qemu: &Path,
    machine: &Machine,
    image: &Path,
    ovmf: Option<(&Ovmf, &Path)>,
    options: &Options,
) -> Command {
    let mut command = Command::new(qemu);
    command.args(["-m", &machine.memory, "-no-reboot"]);
    // An interactive boot shows the guest's screen in a window when there
    // is a desktop to open one on; everything else keeps the display (and
    // its screendumps) off-screen.
    let window = options.interactive
        && !options.gdb
        && ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !window {
        command.args(["-display", "none"]);
    }
    if machine.cpus != 1 {
        command.args(["-smp", &machine.cpus.to_string()]);
    }
    if machine.q35 {
        command.args(["-machine", "q35"]);
    }
    if let Some(name) = &machine.inject {
        command.args([
            "-fw_cfg",
            &format!("name=opt/framekeep/inject,string={name}"),
        ]);
    }
    command.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    command.args([
        "-serial",
        match (options.no_serial, options.interactive) {
            (true, _) => "none",
            (false, true) => "mon:stdio",
            (false, false) => "stdio",
        },
    ]);
    if let Some(socket) = &options.qmp {
        command.arg("-qmp");
        command.arg(format!("unix:{},server=on,wait=off", socket.display()));
    }
    if !options.interactive {
        command.args(["-monitor", "none"]);
    }
    // OVMF under KVM fails on some hosts ("KVM internal error"), so UEFI
    // boots always use TCG; `-cpu max` gives TCG guests 1 GiB pages and more.
    // gdb sessions use TCG too: its gdbstub handles breakpoints on every host.
    if machine.firmware == Firmware::Bios && !options.gdb && kvm_usable(qemu) {
        command.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        command.args(["-accel", "tcg", "-cpu", "max"]);
    }
    if let (Firmware::Uefi, Some((ovmf, vars))) = (machine.firmware, ovmf) {
        command.arg("-drive").arg(pflash(&ovmf.code, true));
        command.arg("-drive").arg(pflash(vars, false));
    }
    let image = image.display();
    if options.usb {
        command.args([
            "-drive",
            &format!("if=none,id=stick,format=raw,file={image}"),
        ]);
        command.args([
            "-device",
            "qemu-xhci,id=xhci",
            "-device",
            "usb-storage,bus=xhci.0,drive=stick,bootindex=0",
        ]);
    } else {
        command.args(["-drive", &format!("format=raw,file={image}")]);
    }
    if options.gdb {
        command.args(["-s", "-S"]);
    }
    command
}

fn pflash(path: &Path, readonly: bool) -> String {
    let readonly = if readonly { ",readonly=on" } else { "" };
    format!("if=pflash,format=raw{readonly},file={}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_parse() {
        let machine: Machine = "bios:8G".parse().unwrap();
        assert_eq!(
            (machine.firmware, machine.memory.as_str()),
            (Firmware::Bios, "8G")
        );
        assert_eq!("uefi".parse::<Machine>().unwrap().memory, "512M");
        assert!("bios:8".parse::<Machine>().is_err());
        assert!("bios:G".parse::<Machine>().is_err());
        assert!("coreboot:1G".parse::<Machine>().is_err());
        let machine: Machine = "uefi:512M:smp4:q35".parse().unwrap();
        assert_eq!((machine.cpus, machine.q35), (4, true));
        assert_eq!(machine.to_string(), "uefi:512M:smp4:q35");
        let machine: Machine = "bios:256M:smp2:inject=ap-panic".parse().unwrap();
        assert_eq!(machine.inject.as_deref(), Some("ap-panic"));
        assert_eq!(machine.to_string(), "bios:256M:smp2:inject=ap-panic");
        assert!("bios:256M:smp0".parse::<Machine>().is_err());
        assert!("bios:256M:smpx".parse::<Machine>().is_err());
        assert!("bios:256M:inject=nothing".parse::<Machine>().is_err());
        assert!("bios:256M:sparc".parse::<Machine>().is_err());
    }

    #[test]
    fn flags_reach_the_command_line() {
        let machine: Machine = "bios:256M:smp4:q35:inject=ap-panic".parse().unwrap();
        let command = command(
            Path::new("qemu"),
            &machine,
            Path::new("/img"),
            None,
            &Options::default(),
        );
        let args: Vec<_> = command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert!(args.windows(2).any(|pair| pair == ["-smp", "4"]));
        assert!(args.windows(2).any(|pair| pair == ["-machine", "q35"]));
        assert!(args.contains(&"name=opt/framekeep/inject,string=ap-panic".to_string()));
    }

    #[test]
    fn uefi_command_uses_pflash_and_tcg() {
        let ovmf = Ovmf {
            code: "/c.fd".into(),
            vars: "/v.fd".into(),
        };
        let machine: Machine = "uefi:512M".parse().unwrap();
        let command = command(
            Path::new("qemu"),
            &machine,
            Path::new("/img"),
            Some((&ovmf, Path::new("/copy.fd"))),
            &Options::default(),
        );
        let args: Vec<_> = command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"if=pflash,format=raw,readonly=on,file=/c.fd".to_string()));
        assert!(args.contains(&"if=pflash,format=raw,file=/copy.fd".to_string()));
        assert!(args.windows(2).any(|pair| pair == ["-accel", "tcg"]));
        assert!(args.contains(&"isa-debug-exit,iobase=0xf4,iosize=0x04".to_string()));
    }
}
