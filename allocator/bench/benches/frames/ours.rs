//! Adapter for our allocator: fake physical ranges (Normal zone at 4 GiB,
//! DMA32 at 256 MiB), metadata in host buffers handed over with
//! `add_section`.

use std::hint::black_box;
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::Instant;

use framekeep::{BuddyAllocator, Constraint, PhysAddr, Zone, metadata_bytes};

use crate::host::{Frames, GIB};
use crate::measure::{Sampler, calibrate, ns_per, settle};
use crate::rows::{
    ChurnState, Churned, Contender, SAMPLE, bulk_sampler as bulk, pair_sampler as pair, pairs,
};
use crate::trace::{PAGE, Trace};

/// Fake physical start of the Normal-zone section.
const NORMAL_BASE: u64 = 4 * GIB as u64;
/// Fake physical start of the section of row 2l: all of it DMA32, as on a
/// machine without memory above 4 GiB (QEMU's default).
const LOW_BASE: u64 = GIB as u64;
/// Fake physical start of the DMA32 section of row 8.
const DMA32_BASE: u64 = 256 << 20;
/// Pages of that DMA32 section (64 MiB).
const DMA32_PAGES: u64 = 16_384;

pub fn describe() -> String {
    format!(
        "allocator {} (workspace), Normal-zone section at phys {:#x}, {} B/page metadata in host memory",
        env!("CARGO_PKG_VERSION"),
        NORMAL_BASE,
        metadata_bytes(1)
    )
}

/// A metadata buffer owned by the benchmark and lent to one allocator at a
/// time (`make` is only called once the previous allocator is gone).
pub struct Meta {
    ptr: NonNull<u64>,
    words: usize,
}

impl Meta {
    pub fn new(pages: u64) -> Self {
        let words = metadata_bytes(pages).div_ceil(8);
        let b: Box<[u64]> = vec![0u64; words].into_boxed_slice();
        let ptr = NonNull::from(Box::leak(b)).cast::<u64>();
        Self { ptr, words }
    }

    fn bytes(&self) -> usize {
        self.words * 8
    }
}

impl Drop for Meta {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`words` come from the leaked boxed slice of `new`;
        // every allocator using it has been dropped before its `Meta`.
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.words,
            ))
        });
    }
}

/// Register `pages` pages at `base` with metadata in `meta`.
fn add(a: &mut BuddyAllocator, base: u64, pages: u64, meta: &Meta) {
    // SAFETY: `meta` is 8-aligned, `meta.bytes()` long, and exclusively
    // this allocator's until it is dropped (the benchmark never lets two
    // live allocators share a `Meta`, and drops allocators before metas).
    unsafe {
        a.add_section(PhysAddr(base), pages, meta.ptr.cast(), meta.bytes())
            .expect("add_section")
    };
}

/// Our allocator over one section of `pages` pages at physical `BASE`.
pub struct Ours<const BASE: u64 = NORMAL_BASE>(Box<BuddyAllocator>);

impl<const BASE: u64> Contender for Ours<BASE> {
    type Mem = (Meta, u64);

    fn mem(pages: usize) -> Self::Mem {
        (Meta::new(pages as u64), pages as u64)
    }

    fn make(mem: &Self::Mem) -> Self {
        let mut a = Box::new(BuddyAllocator::new());
        add(&mut a, BASE, mem.1, &mem.0);
        Self(a)
    }
}

#[cold]
#[inline(never)]
fn failed(what: &str, e: framekeep::Error) -> ! {
    panic!("our allocator: {what} failed: {e}")
}

impl<const BASE: u64> Frames for Ours<BASE> {
    #[inline]
    fn alloc(&mut self, order: u32) -> Option<usize> {
        self.0
            .alloc(order, Constraint::ANY)
            .ok()
            .map(|p| p.0 as usize)
    }

    #[inline]
    fn free(&mut self, addr: usize, order: u32) {
        if let Err(e) = self.0.free(PhysAddr(addr as u64), order) {
            failed("free", e)
        }
    }

    #[inline]
    fn alloc_aligned_page(&mut self, align: usize) -> Option<usize> {
        self.0
            .alloc_aligned(1, align, Constraint::ANY)
            .ok()
            .map(|p| p.0 as usize)
    }

    #[inline]
    fn free_aligned_page(&mut self, addr: usize, _align: usize) {
        if let Err(e) = self.0.free_pages(PhysAddr(addr as u64), 1) {
            failed("free_pages", e)
        }
    }

    fn free_page_count(&self) -> Option<usize> {
        Some(self.0.stats().free_pages() as usize)
    }
}

/// Rows 1, 2, 2l, 2p and 2pa: `[fresh pair, warm pair, warm pair with all
/// memory below 4 GiB, per-CPU pair with a Block, per-CPU pair by
/// address]` (the peers, without zones or caches, sample only the first
/// two). The per-CPU pairs are sampled right after the buddy's warm pair.
pub fn pair_sampler(pages: usize) -> Option<Sampler<'static>> {
    let mut normal = pair::<Ours>(pages);
    let mut low = pair::<Ours<LOW_BASE>>(pages);
    let mut cached = crate::pcp::pair_sampler(NORMAL_BASE, pages);
    Some(Box::new(move || {
        let mut v = normal();
        v.extend(cached());
        v.insert(2, low()[1]);
        v
    }))
}

pub fn bulk_sampler(pages: usize, perm: Rc<Vec<u32>>) -> Option<Sampler<'static>> {
    Some(bulk::<Ours>(pages, perm))
}

pub fn churn_state(pages: usize, trace: Rc<Trace>, timer_ns: f64) -> Option<Box<dyn Churned>> {
    Some(Box::new(ChurnState::<Ours>::new(pages, trace, timer_ns)))
}

#[inline(never)]
fn dma32_pairs(a: &mut Ours, n: usize) {
    for _ in 0..n {
        match a.0.alloc(0, Constraint::Zone(Zone::Dma32)) {
            Ok(p) => a.free(black_box(p.0 as usize), 0),
            Err(e) => failed("DMA32 alloc", e),
        }
    }
}

/// Row 8: a Normal section of `pages` pages, fully allocated, then
/// `free_blocks` of its pages freed with their buddies kept live; plus a
/// 64 MiB DMA32 section with one page held live (warm). Samples
/// `[DMA32 pair ns, plain pair ns, DMA32 pair ns without the held page]`.
pub fn dma32_sampler(pages: usize, free_blocks: usize) -> Option<Sampler<'static>> {
    let high = Meta::new(pages as u64);
    let low = Meta::new(DMA32_PAGES);
    let mut a = Ours(Box::new(BuddyAllocator::new()));
    add(&mut a.0, NORMAL_BASE, pages as u64, &high);
    add(&mut a.0, DMA32_BASE, DMA32_PAGES, &low);
    let mut got: Vec<usize> = (0..pages)
        .map(|_| a.alloc(0).expect("fill Normal zone"))
        .collect();
    got.sort_unstable();
    assert!(
        got[0] as u64 >= NORMAL_BASE,
        "unconstrained requests did not take Normal memory first"
    );
    assert!(free_blocks * 2 <= pages);
    for &p in got.iter().step_by(2).take(free_blocks) {
        a.free(p, 0);
    }
    let p =
        a.0.alloc(0, Constraint::Zone(Zone::Dma32))
            .expect("DMA32 page");
    assert!(p.0 < 1 << 32, "DMA32 page above 4 GiB");
    a.0.free(p, 0).expect("free");
    // Fresh: the DMA32 section is one free block, so every DMA32 pair also
    // splits it down and merges it back (a cost of the zone's state, not
    // of the constraint). Warm (as in row 2): one DMA32 page held live.
    let n_fresh = calibrate(&mut |n| dma32_pairs(&mut a, n), SAMPLE, 1 << 22);
    let hold = |a: &mut Ours| {
        let p =
            a.0.alloc(0, Constraint::Zone(Zone::Dma32))
                .expect("held DMA32 page");
        assert!(p.0 < 1 << 32, "DMA32 page above 4 GiB");
        p
    };
    let held = hold(&mut a);
    let n_dma = calibrate(&mut |n| dma32_pairs(&mut a, n), SAMPLE, 1 << 22);
    let n_plain = calibrate(&mut |n| pairs(&mut a, n), SAMPLE, 1 << 22);
    a.0.free(held, 0).expect("free held page");
    Some(Box::new(move || {
        let _keep = (&high, &low);
        let fresh = ns_per(n_fresh, &mut |n| dma32_pairs(&mut a, n));
        let held = hold(&mut a);
        let dma = ns_per(n_dma, &mut |n| dma32_pairs(&mut a, n));
        let plain = ns_per(n_plain, &mut |n| pairs(&mut a, n));
        a.0.free(held, 0).expect("free held page");
        vec![dma, plain, fresh]
    }))
}

/// Row 9: `add_section` of `bytes` of (fake) physical memory at 4 GiB on a
/// `new()` allocator, metadata in a host buffer of 8 B/page.
pub fn init_sampler(bytes: usize) -> Option<Sampler<'static>> {
    let pages = (bytes / PAGE) as u64;
    let meta = Meta::new(pages);
    let mut a = Box::new(BuddyAllocator::new());
    Some(Box::new(move || {
        *a = BuddyAllocator::new();
        settle();
        let t = Instant::now();
        add(black_box(&mut a), NORMAL_BASE, pages, &meta);
        let ns = t.elapsed().as_nanos() as f64;
        black_box(&a);
        vec![ns]
    }))
}
