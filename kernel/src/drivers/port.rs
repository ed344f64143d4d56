//! Raw port I/O for the drivers: the only place their `unsafe` starts.
//!
//! Unlike `x86_64::instructions::port`, these instructions are not declared
//! `nomem`, so the compiler treats each one as touching memory. A driver that
//! starts a DMA engine with a port write relies on that: its stores to the
//! descriptor table must not move after the write, and its reads of the
//! buffer must not move before the poll that saw the transfer end.

use core::arch::asm;

/// Reads a byte from `port`.
///
/// # Safety
/// `port` must belong to a device the caller owns, and reading it must have
/// no side effect beyond what that device documents.
#[inline]
pub unsafe fn read_u8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller owns `port`; `in` touches no memory and no stack.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nostack, preserves_flags)) };
    value
}

/// Reads a 16-bit word from `port`.
///
/// # Safety
/// As for [`read_u8`].
#[inline]
pub unsafe fn read_u16(port: u16) -> u16 {
    let value: u16;
    // SAFETY: the caller owns `port`; `in` touches no memory and no stack.
    unsafe { asm!("in ax, dx", out("ax") value, in("dx") port, options(nostack, preserves_flags)) };
    value
}

/// Reads a 32-bit doubleword from `port`.
///
/// # Safety
/// As for [`read_u8`].
#[inline]
pub unsafe fn read_u32(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller owns `port`; `in` touches no memory and no stack.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nostack, preserves_flags))
    };
    value
}

/// Writes a byte to `port`.
///
/// # Safety
/// `port` must belong to a device the caller owns, and the write must not
/// make the device touch memory the caller does not own (a DMA start, a BAR
/// move onto RAM).
#[inline]
pub unsafe fn write_u8(port: u16, value: u8) {
    // SAFETY: the caller owns `port` and vouches for the write's effects.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags)) };
}

/// Writes a 16-bit word to `port`.
///
/// # Safety
/// As for [`write_u8`].
#[inline]
pub unsafe fn write_u16(port: u16, value: u16) {
    // SAFETY: the caller owns `port` and vouches for the write's effects.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack, preserves_flags)) };
}

/// Writes a 32-bit doubleword to `port`.
///
/// # Safety
/// As for [`write_u8`].
#[inline]
pub unsafe fn write_u32(port: u16, value: u32) {
    // SAFETY: the caller owns `port` and vouches for the write's effects.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    };
}
