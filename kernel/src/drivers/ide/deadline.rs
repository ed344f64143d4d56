//! Bounded waits in TSC time: every poll of the hardware has a deadline,
//! so absent or wedged hardware yields an error, never a hang.

use core::hint::spin_loop;

use crate::arch::x86_64::tsc;

/// A point in TSC time.
pub(super) struct Deadline(u64);

impl Deadline {
    pub(super) fn after_millis(millis: u64) -> Self {
        Self(tsc::now().saturating_add(ticks_per_micro() * 1_000 * millis))
    }

    pub(super) fn passed(&self) -> bool {
        tsc::now() >= self.0
    }
}

/// TSC ticks per microsecond (before calibration, the 2 GHz guess `tsc` also falls back on).
fn ticks_per_micro() -> u64 {
    match tsc::frequency() / 1_000_000 {
        0 => 2_000,
        ticks => ticks,
    }
}

/// Spins for `micros` microseconds.
pub(super) fn delay_micros(micros: u64) {
    let end = tsc::now().saturating_add(ticks_per_micro() * micros);
    while tsc::now() < end {
        spin_loop();
    }
}
