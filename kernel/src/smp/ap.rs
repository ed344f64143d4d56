//! What an application processor runs once the trampoline hands over: the
//! kernel's page tables and control registers, its own per-CPU data, GDT,
//! TSS and APIC, the shared IDT; then it reports online and idles.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::VirtAddr;
use x86_64::instructions::interrupts;

use super::job;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::{apic, cpu, gdt, idt};

/// The boot CPU's CR4, which every AP adopts (paging features, SSE state).
pub(super) static BOOT_CR4: AtomicU64 = AtomicU64::new(0);
/// Top of each AP's double-fault stack, set before it is started.
pub(super) static DOUBLE_FAULT_STACKS: [AtomicU64; MAX_CPUS] =
    [const { AtomicU64::new(0) }; MAX_CPUS];

/// The trampoline jumps here, on the AP's own stack, with interrupts masked.
pub extern "sysv64" fn entry(index: usize, kernel_cr3: u64) -> ! {
    // SAFETY: `kernel_cr3` is the boot CPU's CR3, whose upper half the
    // trampoline's tables share, so this code stays mapped across the
    // switch; the CR4 is the boot CPU's, valid on an identical CPU.
    unsafe { cpu::adopt_control_registers(kernel_cr3, BOOT_CR4.load(Ordering::SeqCst)) };
    // SAFETY: the boot CPU started this CPU, and only this one, as
    // `index` (the trampoline's claim makes sure of it).
    unsafe { percpu::install(index) };
    gdt::init(VirtAddr::new(
        DOUBLE_FAULT_STACKS[index].load(Ordering::SeqCst),
    ));
    idt::load();
    if let Err(why) = apic::enable() {
        log::error!("CPU {index}: local APIC: {why}; halting");
        cpu::halt_forever();
    }
    percpu::set_online();
    interrupts::enable();
    job::idle_loop()
}
