//! Adapters driving the three peers the way their documentation says.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use ax_allocator::{BaseAllocator, BitmapPageAllocator, PageAllocator};
use buddy_slab_allocator::interface::BuddySlabIf;
use buddy_slab_allocator::{
    AllocError, AllocResult, BuddyAllocator, SizeClass, SlabAllocResult, SlabDeallocResult,
    SlabPoolTrait, SlabTrait,
};
use buddy_system_allocator::FrameAllocator;

use std::hint::black_box;
use std::time::Instant;

use crate::host::{Frames, HostRegion};
use crate::measure::{Sampler, calibrate, ns_per, settle};
use crate::rows::{Contender, SAMPLE, pairs};
use crate::trace::PAGE;

// ---------------------------------------------------------------------------
// buddy-slab-allocator 0.6.1
// ---------------------------------------------------------------------------

/// Virtual range that `virt_to_phys` maps below 4 GiB (the DMA32 rows);
/// every other address maps above 4 GiB.
static LOW_START: AtomicUsize = AtomicUsize::new(0);
static LOW_END: AtomicUsize = AtomicUsize::new(0);
/// Physical address the low virtual range maps to.
const LOW_PHYS: usize = 0x1000_0000;

/// Make `[start, end)` map to physical memory at 256 MiB (DMA32).
pub fn set_low_window(start: usize, end: usize) {
    LOW_START.store(start, Ordering::Relaxed);
    LOW_END.store(end, Ordering::Relaxed);
}

fn fake_phys(vaddr: usize) -> usize {
    let (lo, hi) = (
        LOW_START.load(Ordering::Relaxed),
        LOW_END.load(Ordering::Relaxed),
    );
    if (lo..hi).contains(&vaddr) {
        vaddr - lo + LOW_PHYS
    } else {
        // Everything else is "high memory", above 4 GiB.
        (1 << 32) + (vaddr & ((1 << 40) - 1))
    }
}

/// The slab side of buddy-slab-allocator is not benchmarked; its interface
/// still has to be provided for the crate to link.
struct NoSlab;

impl SlabTrait for NoSlab {
    fn cpu_id(&self) -> usize {
        0
    }

    fn page_size(&self) -> usize {
        PAGE
    }

    fn alloc(&self, _layout: Layout) -> AllocResult<SlabAllocResult> {
        Err(AllocError::NotInitialized)
    }

    fn add_slab(&self, _size_class: SizeClass, _base: usize, _bytes: usize) {}

    fn dealloc_local(&self, _ptr: NonNull<u8>, _layout: Layout) -> SlabDeallocResult {
        SlabDeallocResult::Done
    }
}

impl SlabPoolTrait for NoSlab {
    fn current_slab(&self) -> &dyn SlabTrait {
        self
    }

    fn owner_slab(&self, _cpu_idx: usize) -> &dyn SlabTrait {
        self
    }
}

static NO_SLAB: NoSlab = NoSlab;

struct BenchPlatform;

#[ax_crate_interface::impl_interface]
impl BuddySlabIf for BenchPlatform {
    fn virt_to_phys(vaddr: usize) -> usize {
        fake_phys(vaddr)
    }

    fn slab_pool() -> &'static dyn SlabPoolTrait {
        &NO_SLAB
    }
}

/// Bytes buddy-slab-allocator needs in front of `pages` pages so that its
/// heap starts exactly at the (1 GiB aligned) region heap: the section
/// header plus 12 bytes per page, rounded up to a page.
pub fn bsa_prefix(pages: usize) -> usize {
    (256 + BuddyAllocator::<PAGE>::required_meta_size(pages * PAGE)).next_multiple_of(PAGE)
}

pub struct Bsa(pub BuddyAllocator<PAGE>);

impl Bsa {
    /// A fresh allocator managing all of `region` (metadata carved in front).
    pub fn new(region: &HostRegion) -> Self {
        let pages = region.bytes() / PAGE;
        let mut b = BuddyAllocator::<PAGE>::new();
        // SAFETY: each `Bsa` gets its own region (or the previous user of
        // it was dropped) and the region outlives the allocator.
        unsafe {
            b.init(region.with_prefix(bsa_prefix(pages)))
                .expect("buddy-slab init")
        };
        let s = b.section(0).expect("section");
        assert_eq!((s.start, s.total_pages), (region.heap(), pages));
        Self(b)
    }

    /// Register `region` as another section.
    pub fn add(&mut self, region: &HostRegion) {
        let pages = region.bytes() / PAGE;
        // SAFETY: as in `new`.
        unsafe {
            self.0
                .add_region(region.with_prefix(bsa_prefix(pages)))
                .expect("buddy-slab add_region")
        };
    }
}

impl Frames for Bsa {
    #[inline]
    fn alloc(&mut self, order: u32) -> Option<usize> {
        self.0.alloc_pages(1 << order, PAGE << order).ok()
    }

    #[inline]
    fn free(&mut self, addr: usize, order: u32) {
        self.0.dealloc_pages(addr, 1 << order)
    }

    #[inline]
    fn alloc_aligned_page(&mut self, align: usize) -> Option<usize> {
        self.0.alloc_pages(1, align).ok()
    }

    #[inline]
    fn free_aligned_page(&mut self, addr: usize, _align: usize) {
        self.0.dealloc_pages(addr, 1)
    }

    fn free_page_count(&self) -> Option<usize> {
        Some(self.0.free_pages())
    }
}

// ---------------------------------------------------------------------------
// buddy_system_allocator 0.13 (FrameAllocator: frame numbers, BTreeSet lists)
// ---------------------------------------------------------------------------

pub struct Bsys(pub FrameAllocator<33>);

impl Bsys {
    pub fn new(region: &HostRegion) -> Self {
        let mut f = FrameAllocator::<33>::new();
        let start = region.heap() / PAGE;
        f.add_frame(start, start + region.bytes() / PAGE);
        Self(f)
    }
}

impl Frames for Bsys {
    #[inline]
    fn alloc(&mut self, order: u32) -> Option<usize> {
        self.0.alloc(1 << order).map(|f| f * PAGE)
    }

    #[inline]
    fn free(&mut self, addr: usize, order: u32) {
        self.0.dealloc(addr / PAGE, 1 << order)
    }

    #[inline]
    fn alloc_aligned_page(&mut self, align: usize) -> Option<usize> {
        let layout = Layout::from_size_align(1, align / PAGE).expect("layout");
        self.0.alloc_aligned(layout).map(|f| f * PAGE)
    }

    #[inline]
    fn free_aligned_page(&mut self, addr: usize, align: usize) {
        let layout = Layout::from_size_align(1, align / PAGE).expect("layout");
        self.0.dealloc_aligned(addr / PAGE, layout)
    }
}

// ---------------------------------------------------------------------------
// ax-allocator 0.5.6 BitmapPageAllocator (bitmap-allocator 0.4, 1M-page cap)
// ---------------------------------------------------------------------------

pub struct Bitmap(pub Box<BitmapPageAllocator<PAGE>>);

impl Bitmap {
    pub fn new(region: &HostRegion) -> Self {
        let mut b = Box::new(BitmapPageAllocator::<PAGE>::new());
        b.init(region.heap(), region.bytes());
        Self(b)
    }
}

impl Frames for Bitmap {
    #[inline]
    fn alloc(&mut self, order: u32) -> Option<usize> {
        // As the bitmap is used: `2^order` pages at page alignment (it has
        // no notion of orders, and its aligned search is a different one).
        self.0.alloc_pages(1 << order, PAGE).ok()
    }

    #[inline]
    fn alloc_block(&mut self, order: u32) -> Option<usize> {
        self.0.alloc_pages(1 << order, PAGE << order).ok()
    }

    #[inline]
    fn free(&mut self, addr: usize, order: u32) {
        self.0.dealloc_pages(addr, 1 << order)
    }

    #[inline]
    fn alloc_aligned_page(&mut self, align: usize) -> Option<usize> {
        self.0.alloc_pages(1, align).ok()
    }

    #[inline]
    fn free_aligned_page(&mut self, addr: usize, _align: usize) {
        self.0.dealloc_pages(addr, 1)
    }

    fn free_page_count(&self) -> Option<usize> {
        Some(self.0.available_pages())
    }
}

// ---------------------------------------------------------------------------
// Contender glue, DMA32 set-up and init timing
// ---------------------------------------------------------------------------

impl Contender for Bsa {
    type Mem = HostRegion;
    fn mem(pages: usize) -> HostRegion {
        HostRegion::new(pages * PAGE)
    }
    fn make(mem: &HostRegion) -> Self {
        Bsa::new(mem)
    }
}

impl Contender for Bsys {
    type Mem = HostRegion;
    fn mem(pages: usize) -> HostRegion {
        HostRegion::new(pages * PAGE)
    }
    fn make(mem: &HostRegion) -> Self {
        Bsys::new(mem)
    }
}

impl Contender for Bitmap {
    type Mem = HostRegion;
    fn mem(pages: usize) -> HostRegion {
        HostRegion::new(pages * PAGE)
    }
    fn make(mem: &HostRegion) -> Self {
        Bitmap::new(mem)
    }
}

/// Row 8 for buddy-slab-allocator: a 1 GiB high section registered first,
/// fully allocated, then `free_blocks` of its pages freed with their buddies
/// kept live (so they stay `free_blocks` order-0 blocks); then a 64 MiB
/// section mapped below 4 GiB. Samples `[DMA32 pair ns with one low page
/// held, plain pair ns, DMA32 pair ns without it]`.
pub fn bsa_dma32_sampler(high_pages: usize, free_blocks: usize) -> Sampler<'static> {
    let high = HostRegion::new(high_pages * PAGE);
    let low = HostRegion::new(64 << 20);
    set_low_window(low.heap(), low.heap() + low.bytes());
    let mut a = Bsa::new(&high);
    let mut pages: Vec<usize> = (0..high_pages)
        .map(|_| a.alloc(0).expect("fill high memory"))
        .collect();
    pages.sort_unstable();
    a.add(&low);
    assert!(free_blocks * 2 <= high_pages);
    for &p in pages.iter().step_by(2).take(free_blocks) {
        a.free(p, 0);
    }
    let p = a.0.alloc_pages_lowmem(1, PAGE).expect("DMA32 page");
    assert!(fake_phys(p) < 1 << 32, "DMA32 page above 4 GiB");
    a.0.dealloc_pages(p, 1);
    // As for ours: fresh (the low section one free block), and warm (one
    // low page held live).
    let n_fresh = calibrate(&mut |n| bsa_dma_pairs(&mut a, n), SAMPLE, 1 << 20);
    let held = a.0.alloc_pages_lowmem(1, PAGE).expect("held DMA32 page");
    let n_dma = calibrate(&mut |n| bsa_dma_pairs(&mut a, n), SAMPLE, 1 << 20);
    let n_plain = calibrate(&mut |n| pairs(&mut a, n), SAMPLE, 1 << 22);
    a.0.dealloc_pages(held, 1);
    Box::new(move || {
        let _keep = (&high, &low);
        let fresh = ns_per(n_fresh, &mut |n| bsa_dma_pairs(&mut a, n));
        let held = a.0.alloc_pages_lowmem(1, PAGE).expect("held DMA32 page");
        let dma = ns_per(n_dma, &mut |n| bsa_dma_pairs(&mut a, n));
        let plain = ns_per(n_plain, &mut |n| pairs(&mut a, n));
        a.0.dealloc_pages(held, 1);
        vec![dma, plain, fresh]
    })
}

#[inline(never)]
fn bsa_dma_pairs(a: &mut Bsa, n: usize) {
    for _ in 0..n {
        let p = a.0.alloc_pages_lowmem(1, PAGE).expect("DMA32 page");
        a.0.dealloc_pages(black_box(p), 1);
    }
}

/// Row 9: time to register `bytes` of memory with each peer, as it is used:
/// buddy-slab-allocator `init` (writes 12 B of metadata per page into the
/// region prefix), buddy_system_allocator `add_frame` on a `new()`
/// allocator, ax-allocator `init` on a zeroed (`new()`) bitmap.
pub fn init_samplers(bytes: usize) -> [Sampler<'static>; 3] {
    let r1 = HostRegion::new(bytes);
    let bsa: Sampler<'static> = Box::new(move || {
        let mut b = BuddyAllocator::<PAGE>::new();
        // SAFETY: the previous allocator over `r1` is dead (dropped at the
        // end of the previous sample); `r1` outlives this one.
        let slice = unsafe { r1.with_prefix(bsa_prefix(r1.bytes() / PAGE)) };
        settle();
        let t = Instant::now();
        // SAFETY: as above.
        let r = unsafe { b.init(black_box(slice)) };
        let ns = t.elapsed().as_nanos() as f64;
        r.expect("buddy-slab init");
        black_box(&b);
        vec![ns]
    });
    let r2 = HostRegion::new(bytes);
    let bsys: Sampler<'static> = Box::new(move || {
        let mut f = FrameAllocator::<33>::new();
        let start = r2.heap() / PAGE;
        settle();
        let t = Instant::now();
        f.add_frame(black_box(start), start + r2.bytes() / PAGE);
        let ns = t.elapsed().as_nanos() as f64;
        drop(black_box(f));
        vec![ns]
    });
    let r3 = HostRegion::new(bytes);
    let mut bm = Box::new(BitmapPageAllocator::<PAGE>::new());
    let bitmap: Sampler<'static> = Box::new(move || {
        *bm = BitmapPageAllocator::<PAGE>::new();
        settle();
        let t = Instant::now();
        bm.init(black_box(r3.heap()), r3.bytes());
        let ns = t.elapsed().as_nanos() as f64;
        black_box(&bm);
        vec![ns]
    });
    [bsa, bsys, bitmap]
}
