//! Timing: calibrated loops, round-robin sampling, medians.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// A benchmark sampler: one call = one sample, returning one value per metric.
pub type Sampler<'a> = Box<dyn FnMut() -> Vec<f64> + 'a>;

/// Median of `v` (NaN for an empty slice).
/// Waits until every store issued so far has reached the cache (a full
/// fence: `mfence` on x86_64). Registration samples call it after building
/// a fresh allocator, so that draining the stores of that set-up (ours
/// zeroes a 200 KiB struct) is not timed as registration.
pub fn settle() {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Time `f(n)` in nanoseconds per iteration.
pub fn ns_per<F: FnMut(usize)>(n: usize, f: &mut F) -> f64 {
    let t = Instant::now();
    f(black_box(n));
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Iteration count making one sample of `f` last at least `target`
/// (doubling from 1; the calibration runs double as warm-up).
pub fn calibrate<F: FnMut(usize)>(f: &mut F, target: Duration, max: usize) -> usize {
    let mut n = 1usize;
    loop {
        let t = Instant::now();
        f(n);
        if t.elapsed() >= target || n >= max {
            return n;
        }
        n *= 2;
    }
}

/// Median cost of an empty `Instant::now()` pair, in nanoseconds.
pub fn timer_overhead() -> f64 {
    let v: Vec<f64> = (0..1001)
        .map(|_| {
            let t = Instant::now();
            black_box(t.elapsed()).as_nanos() as f64
        })
        .collect();
    median(&v)
}

/// Sampling policy for one table row.
pub struct Policy {
    pub warmup: usize,
    pub min: usize,
    pub max: usize,
    pub budget: Duration,
}

/// Runs the samplers round-robin (so drift on a shared machine hits every
/// allocator alike) and returns, per sampler, the median of each metric.
pub fn rounds(samplers: &mut [Sampler<'_>], p: &Policy) -> Vec<Vec<f64>> {
    for _ in 0..p.warmup {
        for s in samplers.iter_mut() {
            black_box(s());
        }
    }
    let mut all: Vec<Vec<Vec<f64>>> = vec![Vec::new(); samplers.len()];
    let start = Instant::now();
    let mut done = 0;
    while done < p.max && (done < p.min || start.elapsed() < p.budget) {
        for (s, acc) in samplers.iter_mut().zip(all.iter_mut()) {
            let m = s();
            if acc.is_empty() {
                acc.resize(m.len(), Vec::new());
            }
            for (a, v) in acc.iter_mut().zip(m) {
                a.push(v);
            }
        }
        done += 1;
    }
    all.iter()
        .map(|metrics| metrics.iter().map(|v| median(v)).collect())
        .collect()
}

/// Pins this thread to the last CPU (away from CPU 0's interrupts) and
/// says what happened, for the report header.
pub fn pin() -> String {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => {
            let core = *ids.last().expect("non-empty");
            if core_affinity::set_for_current(core) {
                format!("pinned to CPU {} of {}", core.id, ids.len())
            } else {
                "pinning failed (running unpinned)".into()
            }
        }
        _ => "no CPU list (running unpinned)".into(),
    }
}
