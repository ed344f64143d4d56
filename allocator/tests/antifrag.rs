//! Anti-fragmentation: after a long random churn of mixed orders with
//! about half of memory live, how many 2 MiB blocks can still be had,
//! as a share of the theoretical maximum (free pages / 512)?

use framekeep::{BuddyAllocator, Constraint, PhysAddr, metadata_bytes};
use std::ptr::NonNull;

#[path = "common/churn_trace.rs"]
mod churn_trace;

use churn_trace::{Churned, PAGES, PickOrder, churn};

impl Churned for BuddyAllocator {
    type Block = PhysAddr;
    fn alloc(&mut self, order: u32) -> PhysAddr {
        BuddyAllocator::alloc(self, order, Constraint::ANY).expect("half of memory is free")
    }
    fn free(&mut self, block: PhysAddr, order: u32) {
        BuddyAllocator::free(self, block, order).unwrap();
    }
}

/// Percentage of 2 MiB blocks obtainable after trace `i` of `pick`: blocks
/// actually allocated / (free pages / 512).
fn percentage(i: u64, pick: PickOrder) -> f64 {
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
    let live_pages = churn(&mut *a, i, pick);
    let free = a.stats().free_pages();
    assert_eq!(free, PAGES - live_pages);
    let mut got = 0;
    while a.alloc(9, Constraint::ANY).is_ok() {
        got += 1;
    }
    got as f64 * 100.0 / (free as f64 / 512.0)
}

/// Percentage of obtainable 2 MiB blocks for each of `traces` traces.
fn percentages(traces: u64, pick: PickOrder) -> Vec<f64> {
    (1..=traces).map(|i| percentage(i, pick)).collect()
}

/// (mean, min, traces below 95%), printed with every figure.
fn summary(what: &str, pct: &[f64]) -> (f64, f64, usize) {
    let (mean, min, below) = churn_trace::summary(pct);
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
// traces, with loose per-trace floors. The test output prints the figures.

#[test]
#[cfg_attr(miri, ignore)]
fn two_mib_blocks_after_uniform_churn() {
    let pct = percentages(100, churn_trace::uniform);
    let (mean, min, below) = summary("uniform orders 0..=9", &pct);
    // The 95% goal, as the expectation over traces, with a margin.
    assert!(mean >= 96.0, "mean {mean:.2}% of 2 MiB blocks obtainable");
    assert!(below * 4 <= pct.len(), "{below} traces below 95%");
    assert!(min >= 90.0, "a trace got only {min:.1}%");
}

#[test]
#[cfg_attr(miri, ignore)]
fn two_mib_blocks_after_skewed_churn() {
    let pct = percentages(40, churn_trace::skewed);
    let (mean, min, _) = summary("skewed orders (P ~ 2^-k)", &pct);
    // Harder than the uniform trace above, so the 95% goal is out of reach
    // here: the floor only guards against getting worse.
    assert!(mean >= 92.5, "mean {mean:.2}% of 2 MiB blocks obtainable");
    assert!(min >= 87.0, "a trace got only {min:.1}%");
}
