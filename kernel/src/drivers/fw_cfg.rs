//! QEMU's firmware configuration device (fw_cfg), read through its I/O
//! ports: how the host test runner passes a named string to the test kernel
//! (`-fw_cfg name=opt/framekeep/inject,string=...`). On machines without
//! the device the signature check fails and every lookup is `None`.

use x86_64::instructions::port::{Port, PortWriteOnly};

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const SIGNATURE_KEY: u16 = 0x0000;
const DIRECTORY_KEY: u16 = 0x0019;
/// Bytes of a file name in a directory entry.
const NAME_BYTES: usize = 56;

fn select(key: u16) {
    // SAFETY: 0x510 is fw_cfg's selector port on QEMU; on other machines
    // nothing decodes it.
    unsafe { PortWriteOnly::<u16>::new(SELECTOR).write(key) };
}

fn read_bytes(out: &mut [u8]) {
    let mut data = Port::<u8>::new(DATA);
    for byte in out {
        // SAFETY: 0x511 is fw_cfg's data port; reading it only advances
        // the selected item's offset.
        *byte = unsafe { data.read() };
    }
}

fn read_be<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    read_bytes(&mut bytes);
    bytes
}

/// Copies the contents of fw_cfg file `name` into `out`; returns its
/// length (at most `out.len()`), or `None` if there is no such file or no
/// fw_cfg device.
pub fn read_file(name: &str, out: &mut [u8]) -> Option<usize> {
    crate::arch::x86_64::cpu::without_interrupts(|| {
        select(SIGNATURE_KEY);
        if read_be::<4>() != *b"QEMU" {
            return None;
        }
        select(DIRECTORY_KEY);
        let count = u32::from_be_bytes(read_be());
        for _ in 0..count {
            let size = u32::from_be_bytes(read_be()) as usize;
            let key = u16::from_be_bytes(read_be());
            let _reserved: [u8; 2] = read_be();
            let entry_name: [u8; NAME_BYTES] = read_be();
            let length = entry_name
                .iter()
                .position(|&byte| byte == 0)
                .unwrap_or(NAME_BYTES);
            if &entry_name[..length] == name.as_bytes() {
                let length = size.min(out.len());
                select(key);
                read_bytes(&mut out[..length]);
                return Some(length);
            }
        }
        None
    })
}

/// The failure the test runner asked the kernel to inject, if any
/// (`opt/framekeep/inject`).
pub fn injection(out: &mut [u8; 32]) -> Option<&str> {
    let length = read_file("opt/framekeep/inject", out)?;
    core::str::from_utf8(&out[..length]).ok()
}

#[cfg(test)]
mod tests {
    #[test_case]
    fn a_missing_file_is_none() {
        let mut out = [0; 8];
        assert_eq!(
            super::read_file("opt/framekeep/no-such-file", &mut out),
            None
        );
    }
}
