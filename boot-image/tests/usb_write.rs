//! The write path for real: `write_and_verify` on regular files, and the
//! `boot-image usb` command on a loop device when this machine lets the
//! test make one (root, `/dev/loop-control`, `losetup`); otherwise that
//! test says why it skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use boot_image::usb::TEST_ALLOW_LOOP_VAR;
use boot_image::usb::write::{NodeId, write_and_verify};

/// A directory removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("boot-image-usb-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes no stale buffer would hold by chance (an xorshift sequence).
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Test output that shows even when libtest captures `println!`.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[test]
fn the_writer_writes_exactly_the_image_and_verifies_it() {
    let dir = TempDir::new("file");
    // More than one chunk, and not a whole number of sectors.
    let bytes = pattern((5 << 20) + 123);
    let image = dir.0.join("disk.img");
    std::fs::write(&image, &bytes).unwrap();
    let target = dir.0.join("stick");
    std::fs::write(&target, vec![0xAA; 8 << 20]).unwrap();

    let mut progress = Vec::new();
    let node = NodeId::of(&target).unwrap();
    let written = write_and_verify(&target, node, &image, &mut progress).unwrap();
    assert_eq!(written.bytes, bytes.len() as u64);
    let after = std::fs::read(&target).unwrap();
    assert_eq!(after.len(), 8 << 20, "the target was truncated or grown");
    assert_eq!(&after[..bytes.len()], &bytes[..]);
    assert!(after[bytes.len()..].iter().all(|byte| *byte == 0xAA));
    let progress = String::from_utf8(progress).unwrap();
    assert!(progress.contains("written 5.0 MiB of 5.0 MiB (100%)\n"));
    assert!(progress.contains("verified 5.0 MiB of 5.0 MiB (100%)\n"));
}

#[test]
fn the_writer_refuses_a_file_other_than_the_checked_one() {
    let dir = TempDir::new("swapped");
    let image = dir.0.join("disk.img");
    std::fs::write(&image, pattern(4096)).unwrap();
    let checked = dir.0.join("checked");
    let other = dir.0.join("other");
    std::fs::write(&checked, [0u8; 8192]).unwrap();
    std::fs::write(&other, [0u8; 8192]).unwrap();
    let node = NodeId::of(&checked).unwrap();
    let error = write_and_verify(&other, node, &image, &mut Vec::new()).unwrap_err();
    assert!(error.contains("no longer the device"), "{error}");
    assert_eq!(std::fs::read(&other).unwrap(), [0u8; 8192]);
}

#[test]
fn the_writer_never_creates_a_file() {
    let dir = TempDir::new("create");
    let image = dir.0.join("disk.img");
    std::fs::write(&image, pattern(4096)).unwrap();
    let node = NodeId::of(&image).unwrap();
    let missing = dir.0.join("sdz");
    assert!(write_and_verify(&missing, node, &image, &mut Vec::new()).is_err());
    assert!(!missing.exists());
}

/// A loop device over a file, detached when dropped.
struct LoopDevice(PathBuf);

impl LoopDevice {
    /// Attaches `backing`, or says why this machine cannot.
    fn attach(backing: &Path) -> Result<Self, String> {
        if !Path::new("/dev/loop-control").exists() {
            return Err("no /dev/loop-control (no loop support here)".into());
        }
        let output = Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(backing)
            .output()
            .map_err(|error| format!("cannot run losetup: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "losetup failed (not root?): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(Self(device.into()))
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Only the device this test attached, by its path.
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn boot_image_usb(
    image: &Path,
    device: &Path,
    allow_loop: bool,
    yes: bool,
    answer: &str,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_boot-image"));
    command.arg("usb").arg(image).arg("--device").arg(device);
    if yes {
        command.arg("--yes");
    }
    command.env_remove(TEST_ALLOW_LOOP_VAR);
    if allow_loop {
        command.env(TEST_ALLOW_LOOP_VAR, "1");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn boot_image_usb_refuses_then_writes_and_verifies_a_loop_device() {
    let dir = TempDir::new("loop");
    let bytes = pattern((3 << 20) + 777);
    let image = dir.0.join("disk.img");
    std::fs::write(&image, &bytes).unwrap();
    let backing = dir.0.join("backing");
    std::fs::write(&backing, vec![0u8; 8 << 20]).unwrap();
    let device = match LoopDevice::attach(&backing) {
        Ok(device) => device,
        Err(reason) => {
            say(&format!("SKIP loop-device test: {reason}"));
            return;
        }
    };
    say(&format!("loop-device test on {}", device.0.display()));
    let untouched = || std::fs::read(&backing).unwrap() == vec![0u8; 8 << 20];

    // Without the override a loop device is an internal disk.
    let refused = boot_image_usb(&image, &device.0, false, true, "");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("neither removable nor attached by USB"),
        "{stderr}"
    );
    assert!(untouched());

    // With it, a wrong name typed still writes nothing.
    let refused = boot_image_usb(&image, &device.0, true, false, "sdz\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing written"), "{stderr}");
    assert!(untouched());

    // The right name writes, syncs, reads back from the device, compares.
    let written = boot_image_usb(
        &image,
        &device.0,
        true,
        false,
        &format!("{}\n", device.name()),
    );
    let stdout = String::from_utf8_lossy(&written.stdout);
    let stderr = String::from_utf8_lossy(&written.stderr);
    assert!(written.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("test override"), "{stdout}");
    assert!(stdout.contains("wrote and verified 3.0 MiB"), "{stdout}");
    assert!(stdout.contains("read back from the device"), "{stdout}");
    say(stdout.trim_end());
    drop(device);
    let after = std::fs::read(&backing).unwrap();
    assert_eq!(&after[..bytes.len()], &bytes[..]);
    assert!(after[bytes.len()..].iter().all(|byte| *byte == 0));
}

/// A filesystem mounted on a temporary directory, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn boot_image_usb_refuses_a_mounted_loop_device_even_under_the_override() {
    let dir = TempDir::new("loop-mounted");
    let image = dir.0.join("disk.img");
    std::fs::write(&image, pattern(4096)).unwrap();
    let backing = dir.0.join("backing");
    std::fs::write(&backing, vec![0u8; 8 << 20]).unwrap();
    let device = match LoopDevice::attach(&backing) {
        Ok(device) => device,
        Err(reason) => {
            say(&format!("SKIP mounted loop-device test: {reason}"));
            return;
        }
    };
    let point = dir.0.join("mnt");
    std::fs::create_dir(&point).unwrap();
    let made = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&device.0)
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|status| status.success()) {
        say("SKIP mounted loop-device test: mkfs.ext4 is missing or failed");
        return;
    }
    let mount = Command::new("mount").arg(&device.0).arg(&point).output();
    let mounted = match mount {
        Ok(output) if output.status.success() => Mounted(point.clone()),
        _ => {
            say("SKIP mounted loop-device test: mount failed");
            return;
        }
    };
    let refused = boot_image_usb(&image, &device.0, true, true, "");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("is mounted at {}", point.display())),
        "{stderr}"
    );
    // Past the checks, the writer's exclusive open is refused as well.
    let node = NodeId::of(&device.0).unwrap();
    let error = write_and_verify(&device.0, node, &image, &mut Vec::new()).unwrap_err();
    assert!(error.contains("busy"), "{error}");
    drop(mounted);
    drop(device);
    // The filesystem rewrites its own superblock on unmount, so only the
    // first KiB, which ext4 leaves alone, is known: still zero, not image.
    let after = std::fs::read(&backing).unwrap();
    assert!(
        after[..1024].iter().all(|byte| *byte == 0),
        "the device was written"
    );
}
