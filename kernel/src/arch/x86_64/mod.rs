//! x86_64: descriptor tables, exceptions, the CPU instructions the kernel needs,
//! what the frame allocator needs from the CPU, the TSC clock and the QEMU
//! exit device.

pub mod cpu;
pub mod cpu_local;
pub mod debug_exit;
pub mod exception;
pub mod gdt;
pub mod idt;
pub mod pic;
pub mod tsc;

/// Brings the CPU into the state the rest of the kernel assumes: our own GDT
/// with a double-fault stack, every exception handled (by `on_fatal`, except
/// the breakpoint trap), legacy PIC silenced.
pub fn init(on_fatal: idt::FatalHandler) {
    gdt::init();
    idt::init(on_fatal);
    pic::mask_all();
}
