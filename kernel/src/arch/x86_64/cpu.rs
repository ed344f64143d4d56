//! Small CPU primitives: halting, interrupt masking, the stack pointer.

use x86_64::instructions::interrupts;

/// Stops this CPU for good: interrupts off, then `hlt` forever.
pub fn halt_forever() -> ! {
    interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

/// Runs `f` with maskable interrupts disabled on this CPU and restores the
/// previous state afterwards, so a lock taken inside cannot be re-entered by
/// an interrupt handler on the same CPU.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    interrupts::without_interrupts(f)
}

/// The current stack pointer.
#[cfg_attr(not(test), expect(dead_code, reason = "only the test harness resumes on a saved stack"))]
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reading rsp into a register has no side effects.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}
