//! Disk images from a kernel ELF, built with the `bootloader` crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use bootloader::{BootConfig, DiskImageBuilder};
use bootloader_boot_config::LevelFilter;

use crate::qemu::Firmware;

/// Where images of `kernel` go: `<target>/boot`, found from the kernel's
/// path (`<target>/x86_64-unknown-none/<profile>/...`), else `target/boot`.
pub fn default_out_dir(kernel: &Path) -> PathBuf {
    kernel
        .ancestors()
        .find(|dir| {
            dir.file_name()
                .is_some_and(|name| name == "x86_64-unknown-none")
        })
        .and_then(Path::parent)
        .map(|target| target.join("boot"))
        .unwrap_or_else(|| PathBuf::from("target/boot"))
}

/// Builds the image for `firmware` at `out_dir/<firmware>.img`.
pub fn build(kernel: &Path, out_dir: &Path, firmware: Firmware) -> Result<PathBuf, String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|error| format!("cannot create {}: {error}", out_dir.display()))?;
    let loaded = stripped_copy(kernel, out_dir)?;
    let mut config = BootConfig::default();
    // The bootloader logs every step at Trace by default, which takes
    // seconds under emulation; warnings and errors are what matter.
    config.log_level = LevelFilter::Warn;
    let mut builder = DiskImageBuilder::new(loaded);
    builder.set_boot_config(&config);
    let image = out_dir.join(format!("{firmware}.img"));
    let result = match firmware {
        Firmware::Bios => builder.create_bios_image(&image),
        Firmware::Uefi => builder.create_uefi_image(&image),
    };
    result.map_err(|error| format!("building {}: {error:#}", image.display()))?;
    Ok(image)
}

/// The BIOS loader reads the kernel through slow real-mode disk calls, so it
/// gets a copy without debug info; gdb uses the original ELF. Falls back to
/// the original when llvm-strip (rustup's llvm-tools) is not there.
fn stripped_copy(kernel: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let Some(strip) = llvm_strip() else {
        eprintln!(
            "boot-image: llvm-strip not found (rustup component llvm-tools); using the unstripped kernel"
        );
        return Ok(kernel.to_path_buf());
    };
    let copy = out_dir.join("kernel.stripped");
    let status = Command::new(strip)
        .arg("--strip-debug")
        .arg("-o")
        .arg(&copy)
        .arg(kernel)
        .status()
        .map_err(|error| format!("running llvm-strip: {error}"))?;
    if !status.success() {
        return Err(format!("llvm-strip failed on {}", kernel.display()));
    }
    Ok(copy)
}

fn llvm_strip() -> Option<PathBuf> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(output.stdout).ok()?;
    let host = env!("BOOT_IMAGE_HOST");
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-strip");
    path.is_file().then_some(path)
}
