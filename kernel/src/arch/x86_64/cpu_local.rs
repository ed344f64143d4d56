//! What the frame allocator needs from the CPU: interrupt masking around its
//! locks and slabs, which CPU is running, and a way to run code on another.

use framekeep::{CpuLocal, InterruptControl};
use x86_64::instructions::interrupts;

use super::{call, percpu};

/// The allocator's view of the CPU: interrupts are masked while a lock or a
/// slab is in use (so an interrupt handler that allocates can never spin on
/// a lock its own CPU holds); the page caches' fast path masks nothing (an
/// interrupt handler that finds its CPU's cache in use takes the locked
/// path). The CPU id comes from per-CPU data, and other CPUs are reached
/// through the CALL IPI.
pub struct KernelCpu;

/// CPUs the allocator keeps caches for: every CPU the kernel can run.
pub const MAX_CPUS: usize = percpu::MAX_CPUS;

impl InterruptControl for KernelCpu {
    type Saved = bool;

    #[inline]
    fn save_and_disable() -> bool {
        let enabled = interrupts::are_enabled();
        interrupts::disable();
        enabled
    }

    #[inline]
    fn restore(enabled: bool) {
        if enabled {
            interrupts::enable();
        }
    }
}

// SAFETY: `cpu_id` reads the index from this CPU's `CpuData` (GS base),
// which never changes, and no kernel code migrates between CPUs; with
// interrupts masked nothing else runs on this CPU. Pinned sections need no
// work (`pin`/`unpin` keep their no-op defaults): the kernel has no
// preemption, so between `pin` and `unpin` other code runs on this CPU only
// as an interrupt (or the CALL IPI's work), which returns to the
// interrupted code on the same CPU before it continues. `call::run_on` runs
// the work in the target's CALL IPI handler (interrupts masked there, and the
// IPI is only taken outside masked sections), waits for it, refuses when
// called with interrupts masked, and withdraws a call not yet taken rather
// than waiting forever; for an index no CPU was ever started as it calls
// the work directly, masked (the allocator reaches that CPU's data by
// index, and no CPU can be inside a masked section as it).
unsafe impl CpuLocal for KernelCpu {
    #[inline(always)]
    fn cpu_id() -> usize {
        percpu::current_index()
    }

    fn run_on(cpu: usize, work: &mut dyn FnMut()) -> bool {
        call::run_on(cpu, work)
    }
}
