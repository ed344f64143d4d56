//! The time-stamp counter as the kernel's monotonic clock, calibrated once
//! against PIT channel 2 (which exists on every PC-compatible and in QEMU).

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::{Port, PortWriteOnly};

/// TSC ticks per second; 0 until calibrated.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC value at calibration: time zero of the kernel log.
static TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 10 ms of PIT ticks.
const PIT_TICKS: u16 = (PIT_HZ / 100) as u16;
/// Gives up on a PIT that never counts down (some modern boards gate it off).
const PIT_SPIN_LIMIT: u64 = 50_000_000;
/// Used when the PIT does not answer: the clock is then only roughly right.
const FALLBACK_HZ: u64 = 2_000_000_000;

/// Reads the time-stamp counter.
#[inline]
pub fn now() -> u64 {
    // SAFETY: rdtsc is available on every x86_64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads the time-stamp counter after every earlier instruction has
/// finished, and before any later one starts: for timing short sequences.
#[cfg_attr(
    not(feature = "bench"),
    expect(dead_code, reason = "only the benchmarks time short sequences")
)]
#[inline]
pub fn now_serialised() -> u64 {
    use core::arch::x86_64::{_mm_lfence, _rdtsc};
    // SAFETY: lfence and rdtsc exist on every x86_64 CPU and have no side
    // effects.
    unsafe {
        _mm_lfence();
        let now = _rdtsc();
        _mm_lfence();
        now
    }
}

/// Measures the TSC frequency; returns it and whether the PIT answered.
pub fn calibrate() -> (u64, bool) {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = PortWriteOnly::<u8>::new(0x43);
    let mut channel2 = PortWriteOnly::<u8>::new(0x42);
    // SAFETY: ports 0x61, 0x43 and 0x42 are the PC speaker gate, the PIT
    // command register and PIT channel 2; channel 2 drives only the speaker,
    // which stays disconnected (bit 1 of port 0x61 cleared).
    let (start, end, answered) = unsafe {
        let saved = gate.read();
        gate.write((saved & !0x02) | 0x01);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count).
        command.write(0b1011_0000);
        channel2.write(PIT_TICKS as u8);
        channel2.write((PIT_TICKS >> 8) as u8);
        let start = now();
        let mut spins = 0;
        // Bit 5 of port 0x61 is channel 2's output: it rises at terminal count.
        while gate.read() & 0x20 == 0 && spins < PIT_SPIN_LIMIT {
            spins += 1;
        }
        let end = now();
        gate.write(saved);
        (start, end, spins < PIT_SPIN_LIMIT)
    };
    let hz = if answered {
        (end - start) * (PIT_HZ / PIT_TICKS as u64)
    } else {
        FALLBACK_HZ
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_ORIGIN.store(start, Ordering::Relaxed);
    (hz, answered)
}

/// TSC ticks per second (0 before calibration).
pub fn frequency() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Microseconds since calibration; 0 before it.
pub fn uptime_micros() -> u64 {
    ticks_to_micros(now().saturating_sub(TSC_ORIGIN.load(Ordering::Relaxed)))
}

/// TSC ticks in `micros` microseconds.
pub fn micros_to_ticks(micros: u64) -> u64 {
    (micros as u128 * frequency() as u128 / 1_000_000) as u64
}

/// Busy-waits `micros` microseconds.
pub fn delay_micros(micros: u64) {
    let end = now() + micros_to_ticks(micros);
    while now() < end {
        core::hint::spin_loop();
    }
}

/// Converts a TSC interval to microseconds (0 before calibration).
pub fn ticks_to_micros(ticks: u64) -> u64 {
    match frequency() {
        0 => 0,
        hz => (ticks as u128 * 1_000_000 / hz as u128) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_case]
    fn clock_is_calibrated_and_monotonic() {
        assert!(
            frequency() >= 100_000_000,
            "TSC at {} Hz is implausible",
            frequency()
        );
        let first = uptime_micros();
        let start = now();
        while now() - start < frequency() / 1000 {}
        let second = uptime_micros();
        assert!(
            second >= first + 1000,
            "1 ms of TSC ticks moved the clock {} us",
            second - first
        );
    }
}
