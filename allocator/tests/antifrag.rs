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
    println!("{}", a.stats());
    let mut got = 0;
    while a.alloc(9, Constraint::ANY).is_ok() {
        got += 1;
    }
    (got, free as f64 / 512.0)
}

#[test]
#[cfg_attr(miri, ignore)]
fn two_mib_blocks_after_uniform_churn() {
    for seed in [0x9E37_79B9_7F4A_7C15u64, 1, 0xC0FFEE, 42, 0xDEAD_BEEF] {
        let (got, max) = churn(seed, 400_000, |r| r.below(10) as u32);
        let pct = got as f64 * 100.0 / max;
        println!(
            "uniform orders 0..=9, 50% live, seed {seed:#x}: {got} of {max:.1} possible 2 MiB blocks = {pct:.1}%"
        );
        assert!(pct >= 95.0, "only {pct:.1}% of 2 MiB blocks obtainable");
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn two_mib_blocks_after_skewed_churn() {
    // Small orders dominate: P(order k) ~ 2^-k for k < 9, order 9 rare.
    let (got, max) = churn(0xD1B5_4A32_D192_ED03, 400_000, |r| {
        let x = r.below(1 << 10);
        (x.leading_zeros() - 54).min(9)
    });
    let pct = got as f64 * 100.0 / max;
    println!(
        "skewed orders (P ~ 2^-k), 50% live: {got} of {max:.1} possible 2 MiB blocks = {pct:.1}%"
    );
    // Harder than the trace (which is the uniform one above): we
    // measured about 94% here; the peers reach 66-67% on their skewed trace.
    assert!(pct >= 90.0, "only {pct:.1}% of 2 MiB blocks obtainable");
}
