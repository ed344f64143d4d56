//! [`Heap`]: the kernel's `GlobalAlloc`: slab for small objects, per-CPU
//! page caches and the buddy for everything else.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::buddy::BuddyAllocator;
use crate::pcp::{CacheStats, PageCaches, PcpConfig, cache_metadata_bytes};
use crate::percpu::CpuLocal;
use crate::slab::{Fault, FaultKind, SIZE_CLASSES, Slab, size_class};
use crate::types::{Constraint, Error, MAX_ORDER, PAGE_SHIFT, PAGE_SIZE, PhysAddr};

/// How a request that is too big for the slab is served.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Plan {
    /// A block of this order (<= 3) through the per-CPU page cache.
    Cached(u32),
    /// Exactly this many pages at this alignment, from the buddy.
    Buddy(usize, usize),
}

/// The per-CPU cache order that serves `size` bytes (>= 1) at `align`:
/// 1, 2, 4 or 8 whole pages, aligned at most to the block.
#[inline(always)]
fn cached_order(size: usize, align: usize) -> Option<u32> {
    // pages - 1 is 0, 1, 3 or 7 exactly for 1, 2, 4 or 8 pages.
    let m = (size - 1) >> PAGE_SHIFT;
    if m < 8 && m & (m + 1) == 0 && align <= (m + 1) << PAGE_SHIFT {
        return Some((m + 1).trailing_zeros());
    }
    None
}

fn plan(size: usize, align: usize) -> Option<Plan> {
    if let Some(o) = cached_order(size, align) {
        return Some(Plan::Cached(o));
    }
    let pages = size.div_ceil(PAGE_SIZE as usize);
    let max = (PAGE_SIZE as usize) << MAX_ORDER;
    if pages > 1 << MAX_ORDER || align > max {
        return None;
    }
    Some(Plan::Buddy(pages, align.max(PAGE_SIZE as usize)))
}

/// Statistics of a [`Heap`]. Pages add up: `frames.free_pages()` + slab
/// pages + descriptor pages + pages of large allocations = managed pages.
///
/// ```
/// # allocator::host_cpu_local!(Cpu, 2);
/// let h = allocator::Heap::<Cpu, 2>::new();
/// let st = h.stats();
/// assert_eq!((st.slab_pages, st.descriptor_pages, st.faults), (0, 0, 0));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct HeapStats {
    /// The page layer (buddy plus per-CPU caches).
    pub frames: CacheStats,
    /// Pages currently making up slabs (all CPUs).
    pub slab_pages: u64,
    /// Pages holding slab descriptors (kept for reuse, never freed).
    pub descriptor_pages: u64,
    /// Bad frees detected so far.
    pub faults: u64,
}

/// A `GlobalAlloc` for kernels: size classes up to 2 KiB from per-CPU
/// slabs, bigger requests in whole pages (orders 0..=3 through the per-CPU
/// page caches, the rest exact-size from the buddy), alignment honoured up
/// to 1 GiB, `realloc` in place within a size class or page run, null on
/// out of memory (after draining every CPU's caches), never a panic.
/// Bad frees are detected in release builds, reported to the fault handler
/// and ignored ([`Fault`]).
///
/// `N` is the number of CPUs ([`CpuLocal::cpu_id`] `< N`; other ids get
/// uncached service). Memory is added at run time: physical sections, and
/// the virtual address where physical 0 is mapped ([`set_phys_offset`](Self::set_phys_offset)).
///
/// ```
/// use allocator::{Heap, PhysAddr};
/// use core::alloc::{GlobalAlloc, Layout};
/// allocator::host_cpu_local!(Cpu, 4);
/// static HEAP: Heap<Cpu, 4> = Heap::new();  // in a kernel: #[global_allocator]
///
/// // Host: "physical" memory is a leaked buffer, mapped at offset 0.
/// let ram = Box::leak(vec![0u8; 1 << 22].into_boxed_slice());
/// let start = (ram.as_ptr() as u64).next_multiple_of(4096);
/// // SAFETY: the buffer is ours forever and used only by HEAP.
/// unsafe { HEAP.add_memory(PhysAddr(start), 1000).unwrap() };
/// let l = Layout::from_size_align(100, 8).unwrap();
/// // SAFETY: a non-zero-size layout; p is freed once with it.
/// unsafe {
///     let p = HEAP.alloc(l);
///     assert!(!p.is_null());
///     p.write_bytes(7, 100);
///     HEAP.dealloc(p, l);
///     assert_eq!(HEAP.try_dealloc(p, l).unwrap_err().kind, allocator::FaultKind::DoubleFree);
/// }
/// ```
pub struct Heap<P: CpuLocal, const N: usize> {
    frames: PageCaches<P, N>,
    slab: Slab<P, N>,
    offset: AtomicU64,
}

#[cold]
fn page_fault(ptr: *mut u8, e: Error) -> Fault {
    Fault {
        kind: FaultKind::Page(e),
        addr: ptr as usize,
    }
}

impl<P: CpuLocal, const N: usize> Default for Heap<P, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: CpuLocal, const N: usize> Heap<P, N> {
    /// An empty heap (no memory yet), default page-cache configuration.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// static H: allocator::Heap<Cpu, 2> = allocator::Heap::new();
    /// assert!(H.allocate(core::alloc::Layout::new::<u64>()).is_null()); // no memory
    /// ```
    pub const fn new() -> Self {
        Self::with_config(PcpConfig::DEFAULT)
    }

    /// An empty heap whose page caches use `cfg`.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// let h = allocator::Heap::<Cpu, 2>::with_config(allocator::PcpConfig { high: [8; 4], batch: [4; 4] });
    /// assert_eq!(h.frames().config().high[0], 8);
    /// ```
    pub const fn with_config(cfg: PcpConfig) -> Self {
        Heap {
            frames: PageCaches::with_config(BuddyAllocator::new(), cfg),
            slab: Slab::new(),
            offset: AtomicU64::new(0),
        }
    }

    /// Sets where physical memory is mapped: physical address `p` is at
    /// virtual address `p + offset` (wrapping). Page aligned.
    ///
    /// # Safety
    /// Call it before any memory is added, and never change it afterwards.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// let h = allocator::Heap::<Cpu, 2>::new();
    /// // SAFETY: no memory added yet.
    /// unsafe { h.set_phys_offset(0xffff_8000_0000_0000) };
    /// assert_eq!(h.phys_offset(), 0xffff_8000_0000_0000);
    /// ```
    pub unsafe fn set_phys_offset(&self, offset: u64) {
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// The physical-to-virtual offset.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// assert_eq!(allocator::Heap::<Cpu, 2>::new().phys_offset(), 0);
    /// ```
    pub fn phys_offset(&self) -> u64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Adds the `pages` pages at physical `start`; the first
    /// ceil(16 * pages / 4112) of them become the metadata of the rest.
    ///
    /// Errors: [`Error::SectionTooSmall`] and those of
    /// [`PageCaches::add_section`].
    ///
    /// # Safety
    /// `[start, start + pages * 4096)` is RAM mapped read-write at
    /// `start + phys_offset`, given to this heap for good (until removed
    /// through [`frames`](Self::frames)), and used by nothing else.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// let h = allocator::Heap::<Cpu, 2>::new();
    /// let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// let start = (ram.as_ptr() as u64).next_multiple_of(4096);
    /// // SAFETY: leaked, so ours for good.
    /// unsafe { h.add_memory(allocator::PhysAddr(start), 64).unwrap() };
    /// assert_eq!(h.stats().frames.free_pages(), 63); // one page of metadata
    /// ```
    pub unsafe fn add_memory(&self, start: PhysAddr, pages: u64) -> Result<(), Error> {
        if !start.is_page_aligned() {
            return Err(Error::Misaligned);
        }
        let m = pages.saturating_mul(16).div_ceil(PAGE_SIZE + 16);
        if pages == 0 || m >= pages {
            return Err(Error::SectionTooSmall);
        }
        let meta = start.0.wrapping_add(self.phys_offset()) as *mut u8;
        let Some(meta) = NonNull::new(meta) else {
            return Err(Error::Misaligned);
        };
        let first = PhysAddr(start.0 + m * PAGE_SIZE);
        // SAFETY: the caller gives us the whole range, mapped at the
        // offset; its first m pages hold >= 16 bytes per remaining page.
        unsafe {
            self.frames
                .add_section(first, pages - m, meta, (m * PAGE_SIZE) as usize)
        }
    }

    /// Adds memory with separately provided metadata
    /// ([`PageCaches::add_section`]).
    ///
    /// # Safety
    /// As for [`PageCaches::add_section`]; the pages are also mapped at
    /// `phys + phys_offset` and used by nothing else.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// use allocator::{Heap, PhysAddr, cache_metadata_bytes};
    /// use core::ptr::NonNull;
    /// let h = Heap::<Cpu, 2>::new();
    /// let ram = Box::leak(vec![0u8; 9 * 4096].into_boxed_slice());
    /// let start = (ram.as_ptr() as u64).next_multiple_of(4096);
    /// let meta = Box::leak(vec![0u64; 16].into_boxed_slice());
    /// // SAFETY: both leaked, used only by `h`.
    /// unsafe {
    ///     h.add_section(PhysAddr(start), 8, NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
    ///                   cache_metadata_bytes(8)).unwrap();
    /// }
    /// assert_eq!(h.stats().frames.free_pages(), 8);
    /// ```
    pub unsafe fn add_section(
        &self,
        start: PhysAddr,
        pages: u64,
        meta: NonNull<u8>,
        meta_bytes: usize,
    ) -> Result<(), Error> {
        let _ = cache_metadata_bytes;
        // SAFETY: forwarded.
        unsafe { self.frames.add_section(start, pages, meta, meta_bytes) }
    }

    /// The page layer (per-CPU caches over the buddy). Pages allocated from
    /// it are mapped at `phys + phys_offset` like the heap's.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// let h = allocator::Heap::<Cpu, 2>::new();
    /// assert_eq!(h.frames().stats().free_pages(), 0);
    /// ```
    pub fn frames(&self) -> &PageCaches<P, N> {
        &self.frames
    }

    /// Called with every detected bad free (from any CPU, possibly with
    /// interrupts masked: keep it short). Without one, faults are only counted.
    /// A remote double free that races the owner CPU collecting the first
    /// free is reported later, by the owner, when it collects that slab.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// let h = allocator::Heap::<Cpu, 2>::new();
    /// h.set_fault_handler(|f| eprintln!("bad free: {f:?}"));
    /// ```
    pub fn set_fault_handler(&self, f: fn(Fault)) {
        self.slab.faults.set_handler(f);
    }

    fn report(&self, f: Fault) {
        self.slab.faults.report(f);
    }

    /// Allocates like [`GlobalAlloc::alloc`] (a zero size counts as 1);
    /// null when out of memory.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let h = allocator::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(allocator::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// let l = core::alloc::Layout::from_size_align(3000, 1024).unwrap();
    /// let p = h.allocate(l);
    /// assert_eq!(p as usize % 1024, 0);
    /// // SAFETY: from `allocate` with `l`, freed once.
    /// unsafe { h.try_dealloc(p, l).unwrap() };
    /// ```
    #[inline]
    pub fn allocate(&self, layout: Layout) -> *mut u8 {
        if let Some(k) = size_class(layout.size().max(1), layout.align())
            && let Some(p) = self.slab.alloc_fast(k)
        {
            return p;
        }
        self.allocate_slow(layout)
    }

    /// `allocate` beyond the slab's fast path.
    #[inline(never)]
    fn allocate_slow(&self, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        let align = layout.align();
        let off = self.phys_offset();
        if let Some(k) = size_class(size, align) {
            match self.slab.alloc(&self.frames, off, k) {
                Some(p) if !p.is_null() => return p,
                Some(_) => return self.alloc_small_oom(k, size, align, off),
                // No CPU slot: a page of its own (found again by `free_page`).
                None => {}
            }
        } else if let Some(o) = cached_order(size, align)
            && let Ok(p) = self.frames.alloc(o)
        {
            // The common page-sized request, straight to the page cache
            // (`alloc_large` retries after reclaiming when this fails).
            return p.0.wrapping_add(off) as *mut u8;
        }
        self.alloc_large(size, align, off)
    }

    /// A small allocation that found no memory: reclaim, retry once.
    #[cold]
    #[inline(never)]
    fn alloc_small_oom(&self, k: usize, size: usize, align: usize, off: u64) -> *mut u8 {
        self.reclaim();
        match self.slab.alloc(&self.frames, off, k) {
            Some(p) => p,
            None => self.alloc_large(size, align, off),
        }
    }

    #[inline(never)]
    fn alloc_large(&self, size: usize, align: usize, off: u64) -> *mut u8 {
        let Some(plan) = plan(size, align) else {
            return core::ptr::null_mut();
        };
        let once = || match plan {
            Plan::Cached(order) => self.frames.alloc(order),
            Plan::Buddy(pages, align) => {
                self.frames
                    .buddy()
                    .lock()
                    .alloc_aligned(pages, align, Constraint::ANY)
            }
        };
        let r = match once() {
            Err(Error::OutOfMemory) => {
                self.reclaim();
                once()
            }
            r => r,
        };
        match r {
            Ok(p) => p.0.wrapping_add(off) as *mut u8,
            Err(_) => core::ptr::null_mut(),
        }
    }

    /// Gives back everything cached on every CPU: remote frees are
    /// collected, empty slabs (the reserve too) and every per-CPU page
    /// cache go back to the buddy. `false` if some CPU could not be
    /// reached ([`CpuLocal::run_on`] refused). Runs automatically before
    /// an allocation fails.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let h = allocator::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(allocator::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// let l = core::alloc::Layout::new::<[u64; 4]>();
    /// let p = h.allocate(l);
    /// // SAFETY: from `allocate` with `l`, freed once.
    /// unsafe { h.try_dealloc(p, l).unwrap() };
    /// assert!(h.drain());
    /// let st = h.stats();
    /// assert_eq!((st.slab_pages, st.frames.cached_pages()), (0, 0));
    /// ```
    pub fn drain(&self) -> bool {
        self.reclaim()
    }

    #[cold]
    fn reclaim(&self) -> bool {
        // Remote double frees parked in the bitmaps are reported as the
        // owners collect them.
        let all = self.slab.trim_all(&self.frames);
        self.frames.drain_all() && all
    }

    /// Frees like [`GlobalAlloc::dealloc`], but returns a detected bad free
    /// instead of reporting it (nothing is changed then).
    ///
    /// # Safety
    /// If `ptr` is a live allocation of this heap, `layout` is its layout
    /// and nobody uses the memory any more.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let h = allocator::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(allocator::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// use allocator::FaultKind;
    /// let l = core::alloc::Layout::new::<[u8; 40]>();
    /// let p = h.allocate(l);
    /// // SAFETY: bad pointers are rejected before anything is touched.
    /// unsafe {
    ///     assert_eq!(h.try_dealloc(p.add(8), l).unwrap_err().kind, FaultKind::NotObjectStart);
    ///     let mut local = 0u64;
    ///     assert_eq!(h.try_dealloc((&raw mut local).cast(), l).unwrap_err().kind,
    ///                FaultKind::NotAllocated);
    ///     h.try_dealloc(p, l).unwrap();
    /// }
    /// ```
    #[inline]
    pub unsafe fn try_dealloc(&self, ptr: *mut u8, layout: Layout) -> Result<(), Fault> {
        let size = layout.size().max(1);
        let align = layout.align();
        let off = self.phys_offset();
        if let Some(k) = size_class(size, align) {
            return match self.slab.free(&self.frames, off, ptr, k) {
                Ok(()) => Ok(()),
                Err(kind) => self.small_free_fault(ptr, off, kind),
            };
        }
        if let Some(o) = cached_order(size, align) {
            let phys = PhysAddr((ptr as u64).wrapping_sub(off));
            return match self.frames.free(phys, o) {
                Ok(()) => Ok(()),
                Err(e) => Err(page_fault(ptr, e)),
            };
        }
        self.free_large(ptr, size, align, off)
    }

    /// A small free the slab refused: a page given out while this CPU had
    /// no slot, or a fault.
    #[cold]
    #[inline(never)]
    fn small_free_fault(&self, ptr: *mut u8, off: u64, kind: FaultKind) -> Result<(), Fault> {
        let fault = |kind| Fault {
            kind,
            addr: ptr as usize,
        };
        if kind == FaultKind::NotAllocated && self.is_slotless_page(ptr, off) {
            return self
                .frames
                .free(PhysAddr((ptr as u64).wrapping_sub(off)), 0)
                .map_err(|_| fault(FaultKind::NotAllocated));
        }
        Err(fault(kind))
    }

    /// The page-sized part of `try_dealloc`.
    #[inline(never)]
    fn free_large(&self, ptr: *mut u8, size: usize, align: usize, off: u64) -> Result<(), Fault> {
        let phys = PhysAddr((ptr as u64).wrapping_sub(off));
        let r = match plan(size, align) {
            Some(Plan::Cached(order)) => self.frames.free(phys, order),
            Some(Plan::Buddy(pages, _)) => self.frames.buddy().lock().free_pages(phys, pages),
            None => Err(Error::TooLarge),
        };
        r.map_err(|e| page_fault(ptr, e))
    }

    /// A page-aligned address whose page is untagged (allocated straight
    /// from the buddy): what a small allocation gets on a CPU without a slot.
    fn is_slotless_page(&self, ptr: *mut u8, off: u64) -> bool {
        let phys = (ptr as u64).wrapping_sub(off);
        phys.is_multiple_of(PAGE_SIZE) && self.frames.tags.value(phys) == Some(0)
    }

    /// Heap statistics (exact when nobody allocates meanwhile).
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let h = allocator::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(allocator::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// let p = h.allocate(core::alloc::Layout::new::<u32>());
    /// let st = h.stats();
    /// assert_eq!(st.slab_pages, 1);
    /// assert_eq!(st.frames.free_pages() + st.slab_pages + st.descriptor_pages, 63);
    /// ```
    pub fn stats(&self) -> HeapStats {
        let (slab_pages, descriptor_pages) = self.slab.pages();
        HeapStats {
            frames: self.frames.stats(),
            slab_pages,
            descriptor_pages,
            faults: self.slab.faults.count(),
        }
    }

    /// Whether the small object at `ptr` (allocated with `layout`) is free
    /// in its slab; `None` if `ptr` is not a slab object of that size class.
    /// For tests and debugging (a remotely freed object counts as live
    /// until its owner collects it).
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let h = allocator::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(allocator::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// let l = core::alloc::Layout::new::<u64>();
    /// let p = h.allocate(l);
    /// assert_eq!(h.is_free(p, l), Some(false));
    /// # // SAFETY: from `allocate` with `l`, freed once.
    /// # unsafe { h.try_dealloc(p, l).unwrap() };
    /// ```
    pub fn is_free(&self, ptr: *mut u8, layout: Layout) -> Option<bool> {
        let k = size_class(layout.size().max(1), layout.align())?;
        self.slab.is_free(&self.frames, self.phys_offset(), ptr, k)
    }

    /// In-place `realloc`; `None` if a move is needed.
    fn realloc_in_place(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> Option<*mut u8> {
        let (old, new, align) = (layout.size().max(1), new_size.max(1), layout.align());
        if let Some(k) = size_class(old, align) {
            return (size_class(new, align) == Some(k)).then_some(ptr);
        }
        if size_class(new, align).is_some() {
            return None;
        }
        let (po, pn) = (plan(old, align)?, plan(new, align)?);
        if po == pn {
            return Some(ptr);
        }
        let (Plan::Buddy(op, _), Plan::Buddy(np, _)) = (po, pn) else {
            return None;
        };
        let phys = PhysAddr((ptr as u64).wrapping_sub(self.phys_offset()));
        let mut g = self.frames.buddy().lock();
        if g.frame_options() != crate::FrameOptions::default() {
            return None; // freeing would poison or zero the contents
        }
        if let Err(e) = g.free_pages(phys, op) {
            drop(g);
            self.report(Fault {
                kind: FaultKind::Page(e),
                addr: ptr as usize,
            });
            return Some(core::ptr::null_mut());
        }
        if g.reserve_range(phys, np).is_ok() {
            return Some(ptr);
        }
        // Just freed under the same lock: taking it back cannot fail.
        let _ = g.reserve_range(phys, op);
        None
    }
}

// SAFETY: every path returns either null or a block of at least
// `layout.size()` bytes aligned to `layout.align()` that no other live
// allocation overlaps (slab objects are handed out once per free, pages
// once per buddy allocation); bad frees are detected and ignored.
unsafe impl<P: CpuLocal, const N: usize> GlobalAlloc for Heap<P, N> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract is try_dealloc's.
        if let Err(f) = unsafe { self.try_dealloc(ptr, layout) } {
            self.report(f);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some(p) = self.realloc_in_place(ptr, layout, new_size) {
            return p;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let new = self.allocate(new_layout);
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

const _: () = assert!(SIZE_CLASSES.len() == crate::slab::NR_CLASSES);

#[cfg(test)]
mod tests {
    use super::cached_order;

    /// The branch-light order computation agrees with its definition: 1,
    /// 2, 4 or 8 whole pages, alignment at most the block.
    #[test]
    fn cached_order_matches_definition() {
        for size in (1..=40_000).chain([usize::MAX / 2, usize::MAX]) {
            for shift in 0..20 {
                let align = 1usize << shift;
                let pages = size.div_ceil(4096);
                let want = (pages <= 8 && pages.is_power_of_two() && align <= pages * 4096)
                    .then(|| pages.trailing_zeros());
                assert_eq!(cached_order(size, align), want, "size {size} align {align}");
            }
        }
    }
}
