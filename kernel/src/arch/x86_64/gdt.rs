//! Each CPU's GDT: flat kernel code/data segments and a TSS whose interrupt
//! stack table gives the double-fault handler a stack of its own, so a
//! kernel stack overflow (which faults again while pushing the page-fault
//! frame) still reaches a handler instead of triple-faulting. Every CPU
//! needs its own TSS (the CPU marks a loaded TSS busy in its descriptor),
//! hence its own GDT.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use super::percpu::MAX_CPUS;

/// IST slot used by the double-fault handler.
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;

/// Size of each CPU's double-fault stack.
pub const DOUBLE_FAULT_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; DOUBLE_FAULT_STACK_SIZE]);

/// The boot CPU's double-fault stack (the others get mapped, guarded ones).
/// Written only by the CPU, through the TSS: it must be a `static mut` so
/// it lands in writable `.bss` and not in read-only data.
static mut BOOT_DOUBLE_FAULT_STACK: Stack = Stack([0; DOUBLE_FAULT_STACK_SIZE]);

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: [Once<TaskStateSegment>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static GDT: [Once<(GlobalDescriptorTable, Selectors)>; MAX_CPUS] =
    [const { Once::new() }; MAX_CPUS];

/// The top of the boot CPU's double-fault stack.
pub fn boot_double_fault_stack() -> VirtAddr {
    VirtAddr::from_ptr(&raw const BOOT_DOUBLE_FAULT_STACK) + DOUBLE_FAULT_STACK_SIZE as u64
}

/// Builds the running CPU's GDT and TSS (double faults run on the stack
/// whose top is `double_fault_stack`), loads them and reloads every segment
/// register. Its per-CPU data must be installed first.
pub fn init(double_fault_stack: VirtAddr) {
    let cpu = super::percpu::current_index();
    let tss = TSS[cpu].call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[DOUBLE_FAULT_IST_INDEX as usize] = double_fault_stack;
        tss
    });
    let (gdt, selectors) = GDT[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which
    // lives in a static for the rest of the kernel's life; the TSS is this
    // CPU's alone, so loading it (which marks it busy) happens once.
    unsafe {
        CS::set_reg(selectors.code);
        // The bootloader's (or the trampoline's) SS/DS/ES index another
        // GDT; point them at ours.
        SS::set_reg(selectors.data);
        DS::set_reg(selectors.data);
        ES::set_reg(selectors.data);
        load_tss(selectors.tss);
    }
}

#[cfg(test)]
mod tests {
    use crate::arch::x86_64::exception::ExceptionKind;
    use crate::ktest::should_fault;
    use core::hint::black_box;
    use core::ops::Range;

    /// The unmapped page the bootloader leaves below the kernel stack.
    fn guard_page() -> Range<u64> {
        let bottom = crate::boot::facts().map_or(0, |facts| facts.kernel_stack.start);
        bottom - 4096..bottom
    }

    /// Recurses until the stack runs into the guard page. The frame is
    /// large and observed so the compiler can neither shrink nor loop it.
    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        let frame = black_box([depth; 32]);
        if black_box(depth) == u64::MAX {
            return 0;
        }
        recurse(depth + 1) + frame[7]
    }

    fn overflow_the_stack() {
        black_box(recurse(0));
    }

    // The push that hits the guard page cannot deliver #PF on the same
    // stack, so the CPU raises #DF, which runs on its IST stack.
    should_fault!(
        stack_overflow_hits_the_guard_page,
        ExceptionKind::DoubleFault,
        Some(guard_page),
        overflow_the_stack
    );
}
