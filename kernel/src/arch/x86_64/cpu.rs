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

/// Makes an application processor run on the kernel's page tables (level-4
/// table at `cr3`) with the boot CPU's control register 4.
///
/// # Safety
/// The running code and stack must be mapped the same way in the tables at
/// `cr3` as in the current ones, and `cr4` must be valid for this CPU.
pub unsafe fn adopt_control_registers(cr3: u64, cr4: u64) {
    use x86_64::registers::control::{Cr3, Cr3Flags, Cr4};
    use x86_64::structures::paging::PhysFrame;
    let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(cr3));
    // SAFETY: per the contract.
    unsafe {
        Cr3::write(frame, Cr3Flags::empty());
        Cr4::write_raw(cr4);
    }
}

/// The current stack pointer.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only the test harness resumes on a saved stack")
)]
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reading rsp into a register has no side effects.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    rsp
}

/// The hypervisor's CPUID vendor signature (`KVMKVMKVM`, `TCGTCGTCGTCG`,
/// ...), or `None` on bare metal.
pub fn hypervisor() -> Option<[u8; 12]> {
    use core::arch::x86_64::__cpuid;
    // Leaf 1 ECX bit 31: a hypervisor is present and leaf 0x4000_0000 is valid.
    if __cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let leaf = __cpuid(0x4000_0000);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf.edx.to_le_bytes());
    Some(vendor)
}

/// Whether we run under KVM.
#[cfg_attr(not(test), expect(dead_code, reason = "a test skips itself under KVM"))]
pub fn under_kvm() -> bool {
    hypervisor().is_some_and(|vendor| vendor.starts_with(b"KVMKVMKVM"))
}
