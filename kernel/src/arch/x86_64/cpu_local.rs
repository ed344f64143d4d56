//! What the frame allocator needs from the CPU: interrupt masking around its
//! locks and per-CPU caches, and which CPU is running.

use framekeep::{CpuLocal, InterruptControl};
use x86_64::instructions::interrupts;

/// The allocator's view of the CPU: interrupts are masked while a lock or a
/// per-CPU cache is in use (so an interrupt handler that allocates can never
/// spin on a lock its own CPU holds), and the CPU id is always the boot CPU's.
pub struct KernelCpu;

/// CPUs the allocator keeps caches for; only the boot CPU runs kernel code.
pub const MAX_CPUS: usize = 1;

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

// SAFETY: only the boot CPU runs kernel code, so its id is always 0 and
// never changes; there is no other CPU to run anything on.
unsafe impl CpuLocal for KernelCpu {
    fn cpu_id() -> usize {
        0
    }

    fn run_on(cpu: usize, work: &mut dyn FnMut()) -> bool {
        if cpu == 0 {
            work();
        }
        cpu == 0
    }
}
