//! Finding QEMU and OVMF, and building QEMU command lines for our machines.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// A machine to boot: firmware and memory size, written `bios:256M`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub firmware: Firmware,
    /// QEMU's `-m` argument, e.g. `256M`, `8G`.
    pub memory: String,
}

impl FromStr for Machine {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (firmware, memory) = text.split_once(':').unwrap_or((text, "512M"));
        let digits = memory.trim_end_matches(['M', 'G']);
        if digits.is_empty()
            || !digits.bytes().all(|byte| byte.is_ascii_digit())
            || digits.len() == memory.len()
        {
            return Err(format!(
                "bad memory size `{memory}` in `{text}` (expected e.g. 256M or 8G)"
            ));
        }
        Ok(Self {
            firmware: firmware.parse()?,
            memory: memory.to_string(),
        })
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.firmware, self.memory)
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

/// Whether `qemu` runs guests under KVM (`-accel kvm -cpu host`) on this
/// host; `KVM=0` turns KVM off. An openable `/dev/kvm` is not enough: on
/// some hosts (nested virtualisation) QEMU aborts at the first vCPU reset
/// ("failed to set MSR 0x10a", a value the host refuses), so QEMU is
/// started once, paused and empty, and told to quit; if that fails, TCG
/// it is. (Hiding that MSR with `-cpu host,-arch-capabilities` lets the
/// guest start on such a host, but its memory accesses are then far slower
/// than under TCG.) Decided once per process.
pub fn kvm_usable(qemu: &Path) -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        if std::env::var("KVM").is_ok_and(|value| value == "0") {
            return false;
        }
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm");
        if dev.is_err() {
            return false;
        }
        match kvm_starts(qemu) {
            Ok(()) => true,
            Err(why) => {
                eprintln!(
                    "note: QEMU under KVM fails here ({why}); using TCG (KVM=0 skips this check)"
                );
                false
            }
        }
    })
}

/// Starts `qemu` under KVM with `-cpu host`, paused with no devices, and
/// asks its monitor to quit: `Ok` if it exits cleanly within 10 s.
fn kvm_starts(qemu: &Path) -> Result<(), String> {
    let mut child = Command::new(qemu)
        .args(["-accel", "kvm", "-cpu", "host", "-S", "-nodefaults"])
        .args(["-display", "none", "-m", "16M", "-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("starting {}: {error}", qemu.display()))?;
    // A QEMU that already died makes this write fail: its status says why.
    let _ = child.stdin.take().map(|mut i| i.write_all(b"quit\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let out = child
                    .wait_with_output()
                    .map(|output| output.stderr)
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&out);
                let first = text.lines().next().unwrap_or("no message");
                return Err(format!("{status}: {}", first.trim()));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no exit within 10 s".into());
            }
            Err(error) => return Err(format!("waiting: {error}")),
        }
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
    command.args(["-m", &machine.memory, "-display", "none", "-no-reboot"]);
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
