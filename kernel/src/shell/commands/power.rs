//! `reboot` and `halt`.

use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

use crate::arch::x86_64::debug_exit::ExitCode;
use crate::drivers::ps2;
use crate::{fatal, kprintln};

/// Resets through the keyboard controller; where that does nothing (no
/// controller, reset line not wired), by a triple fault: with an empty
/// IDT, the breakpoint cannot be delivered, nor the double fault that
/// follows, and the CPU resets.
pub fn reboot() -> ! {
    kprintln!("rebooting");
    ps2::pulse_reset_line();
    kprintln!("the keyboard controller did not reset the machine: triple fault");
    let empty = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::zero(),
    };
    // SAFETY: loading an empty IDT and raising an exception is the point:
    // the machine resets, nothing runs on after it.
    unsafe {
        lidt(&empty);
        core::arch::asm!("int3", options(noreturn, nomem, nostack));
    }
}

/// Leaves QEMU (isa-debug-exit, success status); on a real machine it
/// halts this CPU (the others already idle, waiting for work).
pub fn halt() -> ! {
    kprintln!("halting");
    fatal::stop(ExitCode::Success)
}
