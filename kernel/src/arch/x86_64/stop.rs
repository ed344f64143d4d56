//! Stopping every CPU when one of them fails (or the kernel ends): the
//! first CPU to panic, take a fatal exception or stop the machine claims
//! the last word and sends every other CPU a non-maskable interrupt, whose
//! handler halts for good. A CPU that fails while another one is already
//! reporting just halts: one report, never a hang and never two CPUs
//! writing over each other.

use core::sync::atomic::{AtomicUsize, Ordering};

use super::{apic, cpu, percpu};

const NOBODY: usize = usize::MAX;

/// The CPU that is reporting a failure, or `NOBODY`.
static REPORTER: AtomicUsize = AtomicUsize::new(NOBODY);

/// Claims the failure report for this CPU and stops every other CPU.
/// Returns this CPU's index; halts instead if another CPU already reports.
/// A second failure on the reporting CPU itself (a fault while reporting)
/// returns too, so its report can still be printed.
pub fn stop_others() -> usize {
    let me = percpu::current_index();
    match REPORTER.compare_exchange(NOBODY, me, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => {
            if percpu::online_count() > 1 {
                apic::send_nmi_to_others();
            }
            me
        }
        Err(reporter) if reporter == me => me,
        Err(_) => cpu::halt_forever(),
    }
}

/// Whether a failure report is under way (the NMI handler's question:
/// an NMI then means "stop").
pub fn stopping() -> bool {
    REPORTER.load(Ordering::SeqCst) != NOBODY
}
