//! Which accelerator runs BIOS guests: KVM or TCG, whichever is faster here.
//!
//! An openable `/dev/kvm` says little. On some hosts QEMU aborts under KVM
//! at the first vCPU reset ("failed to set MSR 0x10a"); where KVM is nested
//! it starts but runs our guests far slower than TCG (a BIOS boot of the
//! kernel: 11 s against 1-2 s, `make bench` 5.5 minutes against 2 s),
//! because every exit to the hypervisor costs a trip through the outer one.
//!
//! So the runner measures instead of guessing. The probe boots a one-sector
//! guest under each accelerator: SeaBIOS starts, loads the sector, and the
//! sector leaves QEMU through `isa-debug-exit` at once. That is the exit-heavy
//! work (port I/O, memory set-up) that nested KVM is slow at, and it takes
//! about 0.3 s under TCG. TCG runs first; KVM gets until twice TCG's time
//! plus a margin, and is killed when it is not done by then, so on a slow
//! host the probe costs about a second. KVM is chosen when it finishes
//! within that deadline: on a healthy host it is as fast or faster at this
//! firmware-only work, and much faster at the kernel's own.
//!
//! Decided once per process; `KVM=0` forces TCG and `KVM=1` forces KVM
//! without probing. One line on stderr says what was chosen and why.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long TCG may take to boot the probe before we give up on it too.
const TCG_LIMIT: Duration = Duration::from_secs(20);
/// What KVM gets beyond twice TCG's time: QEMU's own start-up under KVM
/// costs a little more, and timing on a busy host jitters.
const KVM_MARGIN: Duration = Duration::from_millis(300);

/// The probe guest: a boot sector that writes 0 to the `isa-debug-exit`
/// port (QEMU exits with status 1) and halts should that port be missing.
fn probe_sector() -> [u8; 512] {
    const CODE: [u8; 7] = [
        0xb0, 0x00, // mov al, 0
        0xe6, 0xf4, // out 0xf4, al
        0xf4, // hlt
        0xeb, 0xfe, // jmp $
    ];
    let mut sector = [0u8; 512];
    sector[..CODE.len()].copy_from_slice(&CODE);
    sector[510..].copy_from_slice(&[0x55, 0xaa]);
    sector
}

/// The status QEMU exits with when the probe sector ran: (0 << 1) | 1.
const PROBE_EXIT: i32 = 1;

/// What the probe decided, and the line that explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub kvm: bool,
    pub why: String,
}

/// How one probe boot went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timing {
    /// The probe sector ran and QEMU exited after this long.
    Done(Duration),
    /// Still running when the deadline passed (killed).
    TooSlow(Duration),
    /// QEMU failed: the reason (first line of its stderr, or why it did not start).
    Failed(String),
}

/// Decides from the two timings; pure, so the rule is testable.
pub fn decide(tcg: &Timing, kvm: &Timing) -> Choice {
    let seconds = |d: &Duration| format!("{:.2} s", d.as_secs_f64());
    match (tcg, kvm) {
        (Timing::Done(tcg), Timing::Done(kvm)) if *kvm <= kvm_deadline(*tcg) => Choice {
            kvm: true,
            why: format!(
                "KVM booted the probe in {}, TCG in {}",
                seconds(kvm),
                seconds(tcg)
            ),
        },
        (Timing::Done(tcg), Timing::Done(kvm)) => Choice {
            kvm: false,
            why: format!(
                "KVM is slower here (nested?): the probe took {} under KVM, {} under TCG",
                seconds(kvm),
                seconds(tcg)
            ),
        },
        (Timing::Done(tcg), Timing::TooSlow(kvm)) => Choice {
            kvm: false,
            why: format!(
                "KVM is slower here (nested?): the probe took more than {} under KVM, {} under TCG",
                seconds(kvm),
                seconds(tcg)
            ),
        },
        (_, Timing::Failed(why)) => Choice {
            kvm: false,
            why: format!("QEMU fails under KVM here ({why})"),
        },
        // TCG itself could not boot the probe: no basis for comparing, and
        // KVM has just been seen to work.
        (Timing::TooSlow(_) | Timing::Failed(_), _) => Choice {
            kvm: true,
            why: "the TCG probe did not finish, KVM's did".into(),
        },
    }
}

/// How long KVM may take when TCG took `tcg`.
fn kvm_deadline(tcg: Duration) -> Duration {
    tcg * 2 + KVM_MARGIN
}

/// Whether BIOS guests should run under KVM (`-accel kvm -cpu host`);
/// decided once per process, see the module documentation.
pub fn kvm_usable(qemu: &Path) -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let choice = choose(qemu);
        eprintln!(
            "accelerator: {} ({}; KVM=0 or KVM=1 overrides)",
            if choice.kvm { "KVM" } else { "TCG" },
            choice.why
        );
        choice.kvm
    })
}

fn choose(qemu: &Path) -> Choice {
    match std::env::var("KVM").as_deref() {
        Ok("0") => return forced(false),
        Ok("1") => return forced(true),
        _ => {}
    }
    if let Err(error) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Choice {
            kvm: false,
            why: format!("/dev/kvm: {error}"),
        };
    }
    let image = match write_probe_image() {
        Ok(image) => image,
        Err(why) => {
            return Choice {
                kvm: false,
                why: format!("no probe possible ({why})"),
            };
        }
    };
    let tcg = time_boot(qemu, &image, false, TCG_LIMIT);
    let kvm_limit = match &tcg {
        Timing::Done(tcg) => kvm_deadline(*tcg),
        _ => TCG_LIMIT,
    };
    let kvm = time_boot(qemu, &image, true, kvm_limit);
    let _ = std::fs::remove_file(&image);
    decide(&tcg, &kvm)
}

fn forced(kvm: bool) -> Choice {
    Choice {
        kvm,
        why: format!("KVM={} in the environment", u8::from(kvm)),
    }
}

/// Writes the probe sector to a private file in the temporary directory.
fn write_probe_image() -> Result<PathBuf, String> {
    let path = std::env::temp_dir().join(format!("boot-image-probe-{}.img", std::process::id()));
    std::fs::write(&path, probe_sector())
        .map_err(|error| format!("writing {}: {error}", path.display()))?;
    Ok(path)
}

/// Boots the probe image once and times it, killing QEMU at `limit`.
fn time_boot(qemu: &Path, image: &Path, kvm: bool, limit: Duration) -> Timing {
    let (accel, cpu) = if kvm { ("kvm", "host") } else { ("tcg", "max") };
    let start = Instant::now();
    let child = Command::new(qemu)
        .args(["-accel", accel, "-cpu", cpu, "-m", "16M", "-nodefaults"])
        .args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!("format=raw,file={}", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => return Timing::Failed(format!("starting {}: {error}", qemu.display())),
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.code() == Some(PROBE_EXIT) => {
                return Timing::Done(start.elapsed());
            }
            Ok(Some(status)) => {
                let stderr = child
                    .wait_with_output()
                    .map(|output| output.stderr)
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&stderr);
                let first = text.lines().next().unwrap_or("no message").trim();
                return Timing::Failed(format!("{status}: {first}"));
            }
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Timing::TooSlow(start.elapsed());
            }
            Err(error) => return Timing::Failed(format!("waiting for QEMU: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn the_faster_accelerator_is_chosen() {
        // This machine, nested KVM: 0.32 s under TCG, 2.43 s under KVM.
        let nested = decide(&Timing::Done(ms(320)), &Timing::TooSlow(ms(940)));
        assert!(!nested.kvm, "{}", nested.why);
        assert!(nested.why.contains("more than 0.94 s"), "{}", nested.why);
        let slow = decide(&Timing::Done(ms(320)), &Timing::Done(ms(2430)));
        assert!(!slow.kvm, "{}", slow.why);
        // Healthy KVM: as fast as TCG at firmware work, or faster.
        assert!(decide(&Timing::Done(ms(320)), &Timing::Done(ms(150))).kvm);
        assert!(decide(&Timing::Done(ms(320)), &Timing::Done(ms(400))).kvm);
        // QEMU aborting under KVM.
        let broken = decide(
            &Timing::Done(ms(320)),
            &Timing::Failed("exit status: 1: failed to set MSR 0x10a".into()),
        );
        assert!(!broken.kvm);
        assert!(broken.why.contains("MSR 0x10a"), "{}", broken.why);
    }

    #[test]
    fn the_probe_sector_is_bootable_and_exits() {
        let sector = probe_sector();
        assert_eq!(&sector[510..], &[0x55, 0xaa]);
        // `out 0xf4, al` with al = 0.
        assert_eq!(&sector[..4], &[0xb0, 0x00, 0xe6, 0xf4]);
    }
}
