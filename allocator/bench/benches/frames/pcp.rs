//! Rows 2p and 2pa: single pages through the per-CPU caches in front of
//! our buddy (`PageCaches`), on the platform of a kernel: interrupt
//! masking as ring 3 can execute it ([`KernelModelCpu`]: `pushfq; pop`,
//! and a flag write standing in for each of `cli` and `sti`) wherever the
//! code masks (the buddy lock: refills and drains), one CPU. The fast
//! path itself masks nothing: it marks the CPU's lists in use.

use std::hint::black_box;

use allocator_bench::KernelModelCpu;
use framekeep::{BuddyAllocator, PageCaches, PhysAddr, cache_metadata_bytes};

use crate::measure::{calibrate, ns_per};
use crate::rows::SAMPLE;

/// The kernel's cache count: one CPU.
type Caches = PageCaches<KernelModelCpu, 1>;

#[inline(never)]
fn block_pairs(c: &Caches, n: usize) {
    for _ in 0..n {
        let b = c.alloc_block(black_box(0)).expect("single page");
        c.free_block(black_box(b)).expect("free_block");
    }
}

#[inline(never)]
fn addr_pairs(c: &Caches, n: usize) {
    for _ in 0..n {
        let p = c.alloc(black_box(0)).expect("single page");
        c.free(black_box(p), 0).expect("free");
    }
}

/// Caches over `pages` pages at physical `base`, for the rest of the run
/// (their metadata is leaked with them), one page held (as in row 2) and
/// this thread's cache filled.
fn caches(base: u64, pages: usize) -> &'static Caches {
    KernelModelCpu::claim();
    let bytes = cache_metadata_bytes(pages as u64);
    let meta: &'static mut [u64] = vec![0u64; bytes.div_ceil(8)].leak();
    let c: &'static Caches = Box::leak(Box::new(Caches::new(BuddyAllocator::new())));
    c.add_section_static(PhysAddr(base), pages as u64, meta)
        .expect("add_section_static");
    c.alloc(0).expect("held page");
    block_pairs(c, 1);
    assert!(
        c.stats().cached_pages() > 0,
        "the pairs do not go through a per-CPU cache (this thread's CPU id is beyond the caches')"
    );
    c
}

/// `[Block pair ns, by-address pair ns]`, each from a calibrated loop.
pub fn pair_sampler(base: u64, pages: usize) -> impl FnMut() -> [f64; 2] {
    let c = caches(base, pages);
    let n_block = calibrate(&mut |n| block_pairs(c, n), SAMPLE, 1 << 24);
    let n_addr = calibrate(&mut |n| addr_pairs(c, n), SAMPLE, 1 << 24);
    move || {
        [
            ns_per(n_block, &mut |n| block_pairs(c, n)),
            ns_per(n_addr, &mut |n| addr_pairs(c, n)),
        ]
    }
}
