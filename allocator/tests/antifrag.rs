//! Anti-fragmentation: after a long random churn of mixed orders with
//! about half of memory live, how many 2 MiB blocks can still be had,
//! as a share of the theoretical maximum (free pages / 512)?

use allocator::{BuddyAllocator, Constraint, PhysAddr, metadata_bytes};
use std::ptr::NonNull;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PAGES: u64 = 1 << 18; // 1 GiB

/// Runs the churn and returns (obtainable 2 MiB blocks, free pages / 512 before).
fn churn(seed: u64, steps: usize, pick_order: impl Fn(&mut Rng) -> u32) -> (u64, f64) {
    let mut meta = vec![0u64; PAGES as usize];
    let mut a = Box::new(BuddyAllocator::new());
    // SAFETY: `meta` outlives `a` and is used by nothing else.
    unsafe {
        a.add_section(
            PhysAddr(1 << 32),
            PAGES,
            NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
            metadata_bytes(PAGES),
        )
        .unwrap();
    }
    let mut rng = Rng(seed);
    let mut live: Vec<(PhysAddr, u32)> = Vec::new();
    let mut live_pages = 0u64;
    let target = PAGES / 2;
    for _ in 0..steps {
        if live_pages < target {
            let o = pick_order(&mut rng);
            let p = a.alloc(o, Constraint::ANY).expect("half of memory is free");
            live.push((p, o));
            live_pages += 1 << o;
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (p, o) = live.swap_remove(i);
            a.free(p, o).unwrap();
            live_pages -= 1 << o;
        }
    }
    let free = a.stats().free_pages();
    assert_eq!(free, PAGES - live_pages);
    let mut got = 0;
    while a.alloc(9, Constraint::ANY).is_ok() {
        got += 1;
    }
    (got, free as f64 / 512.0)
}

/// Percentage of obtainable 2 MiB blocks for each of `seeds` traces.
fn percentages(seeds: u64, pick_order: impl Fn(&mut Rng) -> u32 + Copy) -> Vec<f64> {
    (1..=seeds)
        .map(|i| {
            let (got, max) = churn(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 400_000, pick_order);
            got as f64 * 100.0 / max
        })
        .collect()
}

/// (mean, min, traces below 95%), printed with every figure.
fn summary(what: &str, pct: &[f64]) -> (f64, f64, usize) {
    let mean = pct.iter().sum::<f64>() / pct.len() as f64;
    let min = pct.iter().copied().fold(f64::INFINITY, f64::min);
    let below = pct.iter().filter(|&&p| p < 95.0).count();
    let all: Vec<String> = pct.iter().map(|p| format!("{p:.1}")).collect();
    println!(
        "{what}, 50% live, {} traces: mean {mean:.2}%, min {min:.1}%, {below} below 95% [{}]",
        pct.len(),
        all.join(" ")
    );
    (mean, min, below)
}

// The share obtainable after one trace swings by a couple of points with
// the seed (a handful of pageblocks out of 256), so single traces cannot
// tell two policies apart, and neither can the minimum or the count below
// 95% over a few dozen traces: these tests assert on the mean of many
// traces (standard error about 0.15 points), with loose per-trace floors.
// Measured over 100 uniform traces: mean 97.0%, min 92.9%, 9 below 95%;
// over 40 skewed ones about 93.6%. The README has the figures.

#[test]
#[cfg_attr(miri, ignore)]
fn two_mib_blocks_after_uniform_churn() {
    let pct = percentages(100, |r| r.below(10) as u32);
    let (mean, min, below) = summary("uniform orders 0..=9", &pct);
    // The 95%, as the expectation over traces, with a margin.
    assert!(mean >= 96.0, "mean {mean:.2}% of 2 MiB blocks obtainable");
    assert!(below * 4 <= pct.len(), "{below} traces below 95%");
    assert!(min >= 90.0, "a trace got only {min:.1}%");
}

#[test]
#[cfg_attr(miri, ignore)]
fn two_mib_blocks_after_skewed_churn() {
    // Small orders dominate: P(order k) ~ 2^-k for k < 9, order 9 rare.
    let pct = percentages(40, |r| {
        let x = r.below(1 << 10);
        (x.leading_zeros() - 54).min(9)
    });
    let (mean, min, _) = summary("skewed orders (P ~ 2^-k)", &pct);
    // Harder than the trace (the uniform one above); the issue's
    // 95% is missed here: we measure about 93.6% on average.
    assert!(mean >= 92.5, "mean {mean:.2}% of 2 MiB blocks obtainable");
    assert!(min >= 87.0, "a trace got only {min:.1}%");
}
