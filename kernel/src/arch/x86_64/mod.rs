//! x86_64: descriptor tables, exceptions, the CPU instructions the kernel
//! needs, per-CPU data, the local APIC and what travels between CPUs
//! (calls, TLB shootdowns, the stop order), the trampoline other CPUs start
//! in, what the frame allocator needs from the CPU, the TSC clock and the
//! QEMU exit device.

pub mod apic;
pub mod call;
pub mod cpu;
pub mod cpu_local;
pub mod debug_exit;
pub mod exception;
pub mod gdt;
pub mod idt;
pub mod madt;
pub mod mailbox;
pub mod percpu;
pub mod pic;
pub mod stop;
pub mod tlb;
pub mod trampoline;
pub mod tsc;

/// Brings the boot CPU into the state the rest of the kernel assumes: its
/// per-CPU data behind GS, our own GDT with a double-fault stack, every
/// exception handled (by `on_fatal`, except the breakpoint trap), legacy
/// PIC silenced.
pub fn init(on_fatal: idt::FatalHandler) {
    // SAFETY: this is the boot CPU, CPU 0; APs are started as 1 and up.
    unsafe { percpu::install(0) };
    gdt::init(gdt::boot_double_fault_stack());
    idt::init(on_fatal);
    pic::mask_all();
}
