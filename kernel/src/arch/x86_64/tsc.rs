//! The time-stamp counter as the kernel's monotonic clock. Its frequency
//! comes from CPUID leaf 0x15 where the CPU states it exactly, else from
//! the hypervisor's timing leaf, else from PIT channel 2 (present on every
//! PC-compatible and in QEMU): several windows, each timed between two PIT
//! readings that were not interrupted, and their median. Timing a window
//! by waiting for the PIT's terminal count instead is off whenever the
//! vCPU (or an SMI) delays the moment the count is seen.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::{Port, PortWriteOnly};

/// TSC ticks per second; 0 until calibrated.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC value at calibration: time zero of the kernel log.
static TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// PIT windows measured; the median is taken.
const PIT_WINDOWS: usize = 5;
/// Gives up on a PIT that never counts down (some modern boards gate it off).
const PIT_SPIN_LIMIT: u64 = 50_000_000;
/// Used when nothing answers: the clock is then only roughly right.
const FALLBACK_HZ: u64 = 2_000_000_000;

/// Where the frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// CPUID leaf 0x15: crystal frequency times the TSC/crystal ratio.
    Cpuid,
    /// The hypervisor's timing leaf (0x4000_0010).
    Hypervisor,
    /// The median of PIT windows (each between two readings of the PIT
    /// count that were not interrupted); `spread` is (slowest - fastest) /
    /// median in per mille, a measure of how much the windows disagreed.
    Pit { windows: usize, spread: u64 },
    /// Nothing answered: an assumed frequency.
    Assumed,
}

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

/// The frequency CPUID leaf 0x15 states, if it states it completely.
fn from_cpuid() -> Option<u64> {
    use core::arch::x86_64::__cpuid;
    if __cpuid(0).eax < 0x15 {
        return None;
    }
    let leaf = __cpuid(0x15);
    let (denominator, numerator, crystal_hz) = (leaf.eax as u64, leaf.ebx as u64, leaf.ecx as u64);
    (denominator != 0 && numerator != 0 && crystal_hz != 0)
        .then(|| crystal_hz * numerator / denominator)
}

/// The TSC frequency a hypervisor publishes in leaf 0x4000_0010 (kHz).
fn from_hypervisor() -> Option<u64> {
    use core::arch::x86_64::__cpuid;
    if __cpuid(1).ecx & (1 << 31) == 0 || __cpuid(0x4000_0000).eax < 0x4000_0010 {
        return None;
    }
    match __cpuid(0x4000_0010).eax as u64 {
        0 => None,
        khz => Some(khz * 1000),
    }
}

/// PIT channel 2 counting down from 0xffff, read with the TSC around
/// each reading: a reading whose TSC bracket is short was not interrupted
/// (by a descheduled vCPU, an SMI), so it pins the PIT count to a TSC
/// value; time spent between two such readings does not matter.
struct Pit {
    gate: Port<u8>,
    command: PortWriteOnly<u8>,
    channel2: Port<u8>,
    saved_gate: u8,
}

/// PIT ticks between the two readings of a window: 10 ms.
const WINDOW_TICKS: u16 = (PIT_HZ / 100) as u16;
/// Readings tried at each end of a window; the one with the shortest
/// bracket is kept.
const READINGS: usize = 8;

impl Pit {
    fn start() -> Self {
        let mut pit = Self {
            gate: Port::new(0x61),
            command: PortWriteOnly::new(0x43),
            channel2: Port::new(0x42),
            saved_gate: 0,
        };
        // SAFETY: ports 0x61, 0x43 and 0x42 are the PC speaker gate, the
        // PIT command register and PIT channel 2; channel 2 drives only the
        // speaker, which stays disconnected (bit 1 of port 0x61 cleared).
        unsafe {
            pit.saved_gate = pit.gate.read();
            pit.gate.write(pit.saved_gate & !0x03);
            // Channel 2, lobyte/hibyte, mode 0, from 0xffff.
            pit.command.write(0b1011_0000);
            pit.channel2.write(0xff);
            pit.channel2.write(0xff);
            pit.gate.write((pit.saved_gate & !0x02) | 0x01);
        }
        pit
    }

    /// One reading: (count, TSC before, TSC after).
    fn read_once(&mut self) -> (u16, u64, u64) {
        let before = now();
        // SAFETY: as in `start`; latching channel 2 and reading its two
        // bytes has no other effect.
        let (low, high) = unsafe {
            self.command.write(0b1000_0000);
            (self.channel2.read(), self.channel2.read())
        };
        let after = now();
        (u16::from_le_bytes([low, high]), before, after)
    }

    /// The reading with the shortest bracket of a few: (count, TSC at its
    /// middle, bracket length).
    fn read(&mut self) -> (u16, u64, u64) {
        let mut best = (0, 0, u64::MAX);
        for _ in 0..READINGS {
            let (count, before, after) = self.read_once();
            if after - before < best.2 {
                best = (count, before + (after - before) / 2, after - before);
            }
        }
        best
    }

    /// TSC ticks per second over one window; `None` if the PIT does not
    /// count.
    fn window(&mut self) -> Option<u64> {
        let (first, first_tsc, _) = self.read();
        let mut spins = 0;
        loop {
            let (count, _, _) = self.read_once();
            if first.wrapping_sub(count) >= WINDOW_TICKS {
                break;
            }
            spins += 1;
            if spins > PIT_SPIN_LIMIT {
                return None;
            }
        }
        let (last, last_tsc, _) = self.read();
        let ticks = first.wrapping_sub(last) as u64;
        (ticks > 0 && last_tsc > first_tsc).then(|| (last_tsc - first_tsc) * PIT_HZ / ticks)
    }
}

impl Drop for Pit {
    fn drop(&mut self) {
        // SAFETY: restores the speaker gate as it was.
        unsafe { self.gate.write(self.saved_gate) };
    }
}

/// The median of `samples` (sorted in place) and their spread in per mille
/// of the median.
pub fn median_and_spread(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    let Some(&median) = samples.get(samples.len() / 2) else {
        return (0, 0);
    };
    let spread = samples[samples.len() - 1] - samples[0];
    (median, (spread * 1000).checked_div(median).unwrap_or(0))
}

/// Measures the TSC frequency and starts the clock; returns it and its
/// source.
pub fn calibrate() -> (u64, Source) {
    let origin = now();
    let (hz, source) = if let Some(hz) = from_cpuid() {
        (hz, Source::Cpuid)
    } else if let Some(hz) = from_hypervisor() {
        (hz, Source::Hypervisor)
    } else {
        let mut pit = Pit::start();
        let mut windows = [0u64; PIT_WINDOWS];
        let mut measured = 0;
        for window in &mut windows {
            match pit.window() {
                Some(hz) => {
                    *window = hz;
                    measured += 1;
                }
                None => break,
            }
        }
        match measured {
            0 => (FALLBACK_HZ, Source::Assumed),
            _ => {
                let (median, spread) = median_and_spread(&mut windows[..measured]);
                (
                    median,
                    Source::Pit {
                        windows: measured,
                        spread,
                    },
                )
            }
        }
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_ORIGIN.store(origin, Ordering::Relaxed);
    // Only tests ask later; a `Once` keeps the first answer.
    SOURCE.call_once(|| source);
    (hz, source)
}

static SOURCE: spin::Once<Source> = spin::Once::new();

/// Where the calibration took the frequency from (`None` before it).
#[cfg_attr(not(test), expect(dead_code, reason = "tests check the calibration"))]
pub fn calibrate_source() -> Option<Source> {
    SOURCE.get().copied()
}

/// TSC ticks per second (0 before calibration).
pub fn frequency() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Microseconds since calibration; 0 before it.
pub fn uptime_micros() -> u64 {
    ticks_to_micros(now().saturating_sub(TSC_ORIGIN.load(Ordering::Relaxed)))
}

/// TSC ticks in `micros` microseconds (at the fallback frequency before
/// calibration, so early waits are still bounded).
pub fn micros_to_ticks(micros: u64) -> u64 {
    let hz = match frequency() {
        0 => FALLBACK_HZ,
        hz => hz,
    };
    (micros as u128 * hz as u128 / 1_000_000) as u64
}

/// A point in TSC time: every wait on hardware or on another CPU has one,
/// so what never answers yields an error, never a hang.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    pub fn after_micros(micros: u64) -> Self {
        Self(now().saturating_add(micros_to_ticks(micros)))
    }

    pub fn after_millis(millis: u64) -> Self {
        Self::after_micros(millis.saturating_mul(1_000))
    }

    pub fn passed(self) -> bool {
        now() >= self.0
    }
}

/// Polls `done` until it holds or `micros` have passed; whether it held
/// (asked once more at the deadline).
pub fn poll_until(micros: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Deadline::after_micros(micros);
    loop {
        if done() {
            return true;
        }
        if deadline.passed() {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Busy-waits `micros` microseconds.
pub fn delay_micros(micros: u64) {
    let deadline = Deadline::after_micros(micros);
    while !deadline.passed() {
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
    fn a_fresh_pit_window_agrees_with_the_calibration() {
        if !matches!(
            calibrate_source(),
            Some(Source::Pit { .. } | Source::Cpuid | Source::Hypervisor)
        ) {
            crate::ktest::skip("no PIT and no CPUID frequency: nothing to compare");
        }
        let Some(fresh) = Pit::start().window() else {
            crate::ktest::skip("the PIT does not count");
        };
        let calibrated = frequency();
        let off = fresh.abs_diff(calibrated) * 1000 / calibrated;
        assert!(
            off <= 20,
            "a fresh PIT window says {fresh} Hz, the calibration {calibrated} Hz ({off} per mille apart)"
        );
    }

    #[test_case]
    fn the_median_ignores_stretched_windows() {
        // Two windows stretched by a descheduled vCPU (+46%, +30%).
        let mut windows = [13_400_000, 13_410_000, 19_570_000, 13_390_000, 17_420_000];
        let (median, spread) = median_and_spread(&mut windows);
        assert_eq!(median, 13_410_000);
        assert_eq!(spread, (19_570_000 - 13_390_000) * 1000 / 13_410_000);
        assert_eq!(median_and_spread(&mut []), (0, 0));
    }

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
