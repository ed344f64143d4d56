//! [`Heap`]: the kernel's `GlobalAlloc`: slab for small objects, per-CPU
//! page caches and the buddy for everything else.

mod checks;
mod plan;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::CpuLocal;
use crate::metadata::{descriptors_at, heap_metadata_bytes};
use crate::pcp::tags::TAG_HEAP_OWNED;
use crate::pcp::{CacheStats, PageCaches, PcpConfig};
use crate::slab::{Fault, Slab, size_class};
use crate::types::{Error, PAGE_SIZE, PhysAddr, PhysMap};
use plan::{Plan, cached_order, metadata_pages, plan, run_tag, small_page_tag};

/// Statistics of a [`Heap`]. Pages add up: `frames.free_pages()` + slab
/// pages + pages of page-sized allocations = managed pages (slab
/// descriptors live in registration metadata, outside the managed pages).
///
/// ```
/// # framekeep::host_cpu_local!(Cpu, 2);
/// let h = framekeep::Heap::<Cpu, 2>::new();
/// let st = h.stats();
/// assert_eq!((st.slab_pages, st.descriptors, st.faults), (0, 0, 0));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct HeapStats {
    /// The page layer (buddy plus per-CPU caches).
    pub frames: CacheStats,
    /// Pages currently making up slabs (all CPUs).
    pub slab_pages: u64,
    /// Slab descriptors taken from registration metadata (in use, or
    /// kept by a CPU for its next slab).
    pub descriptors: u64,
    /// Slab descriptors registered ([`PAGES_PER_DESCRIPTOR`](crate::PAGES_PER_DESCRIPTOR)
    /// managed pages each).
    pub descriptor_capacity: u64,
    /// Bad frees detected so far.
    pub faults: u64,
}

/// A `GlobalAlloc` for kernels: size classes up to 2 KiB from per-CPU
/// slabs, bigger requests in whole pages (orders 0..=3 through the per-CPU
/// page caches, the rest exact-size from the buddy), alignment honoured up
/// to 1 GiB, `realloc` in place within a size class or page run, null on
/// out of memory (after draining every CPU's caches), never a panic.
/// Bad frees are detected in release builds, reported to the fault handler
/// and ignored ([`Fault`]): a pointer the heap did not hand out, a second
/// free, and a layout other than the allocation's (another size class,
/// page count or alignment; layouts that the heap serves identically, such
/// as 20 and 24 bytes, count as the same).
///
/// Every page the heap hands out carries an ownership tag in the per-page
/// metadata saying how it was handed out, and slab bookkeeping lives in
/// registration metadata too: nothing the heap relies on is ever stored in
/// memory a user was given. The page layer stays reachable
/// ([`frames`](Self::frames)) for page tables and DMA buffers, and refuses
/// to free anything of the heap's.
///
/// `N` is the number of CPUs ([`CpuLocal::cpu_id`] `< N`; other ids get
/// uncached service). Memory is added at run time: physical sections, and
/// the virtual address where physical 0 is mapped ([`set_phys_offset`](Self::set_phys_offset)).
///
/// ```
/// use framekeep::{Heap, PhysAddr};
/// use core::alloc::{GlobalAlloc, Layout};
/// framekeep::host_cpu_local!(Cpu, 4);
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
///     assert_eq!(HEAP.try_dealloc(p, l).unwrap_err().kind, framekeep::FaultKind::DoubleFree);
/// }
/// ```
pub struct Heap<P: CpuLocal, const N: usize> {
    frames: PageCaches<P, N>,
    slab: Slab<P, N>,
    offset: AtomicU64,
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// static H: framekeep::Heap<Cpu, 2> = framekeep::Heap::new();
    /// assert!(H.allocate(core::alloc::Layout::new::<u64>()).is_null()); // no memory
    /// ```
    pub const fn new() -> Self {
        Self::with_config(PcpConfig::DEFAULT)
    }

    /// An empty heap whose page caches use `cfg`.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// let h = framekeep::Heap::<Cpu, 2>::with_config(framekeep::PcpConfig { high: [8; 4], batch: [4; 4] });
    /// assert_eq!(h.frames().config().high[0], 8);
    /// ```
    pub const fn with_config(cfg: PcpConfig) -> Self {
        Heap {
            frames: PageCaches::for_heap(cfg),
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// let h = framekeep::Heap::<Cpu, 2>::new();
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// assert_eq!(framekeep::Heap::<Cpu, 2>::new().phys_offset(), 0);
    /// ```
    pub fn phys_offset(&self) -> u64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Where physical memory is mapped ([`set_phys_offset`](Self::set_phys_offset)).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// let h = framekeep::Heap::<Cpu, 2>::new();
    /// assert_eq!(h.phys_map(), framekeep::PhysMap::new(0));
    /// ```
    #[inline(always)]
    pub fn phys_map(&self) -> PhysMap {
        PhysMap::new(self.phys_offset())
    }

    /// Adds the `pages` pages at physical `start`; the first of them become
    /// the metadata of the rest ([`heap_metadata_bytes`](crate::heap_metadata_bytes):
    /// 16 bytes a page, and a slab descriptor for every
    /// [`PAGES_PER_DESCRIPTOR`](crate::PAGES_PER_DESCRIPTOR) pages).
    ///
    /// Errors: [`Error::SectionTooSmall`] and those of
    /// [`PageCaches::add_section`].
    ///
    /// # Safety
    /// `[start, start + pages * 4096)` is RAM mapped read-write at
    /// `start + phys_offset`, given to this heap for good, and used by
    /// nothing else.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// let h = framekeep::Heap::<Cpu, 2>::new();
    /// let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// let start = (ram.as_ptr() as u64).next_multiple_of(4096);
    /// // SAFETY: leaked, so ours for good.
    /// unsafe { h.add_memory(framekeep::PhysAddr(start), 64).unwrap() };
    /// assert_eq!(h.stats().frames.free_pages(), 63); // one page of metadata
    /// assert!(h.stats().descriptor_capacity >= 63 / 8); // slab descriptors, in the same page
    /// ```
    pub unsafe fn add_memory(&self, start: PhysAddr, pages: u64) -> Result<(), Error> {
        if !start.is_page_aligned() {
            return Err(Error::Misaligned);
        }
        let meta_pages = metadata_pages(pages)?;
        let meta = self.phys_map().virt(start);
        let Some(meta) = NonNull::new(meta) else {
            return Err(Error::Misaligned);
        };
        // No wrap: `start` is page aligned and `pages` fit after it, or
        // the section registration below refuses the range.
        let first = PhysAddr(start.0.wrapping_add(meta_pages * PAGE_SIZE));
        // SAFETY: the caller gives us the whole range, mapped at the
        // offset; its first m pages hold the metadata of the rest.
        unsafe {
            self.add_section(
                first,
                pages - meta_pages,
                meta,
                (meta_pages * PAGE_SIZE) as usize,
            )
        }
    }

    /// Adds memory with separately provided metadata of
    /// [`heap_metadata_bytes`](crate::heap_metadata_bytes)`(pages)` bytes:
    /// the page caches' ([`PageCaches::add_section`]), then slab
    /// descriptors.
    ///
    /// Errors: [`Error::MetadataTooSmall`], and those of
    /// [`PageCaches::add_section`].
    ///
    /// # Safety
    /// As for [`PageCaches::add_section`] (for all `meta_bytes` bytes); the
    /// pages are also RAM mapped read-write at `phys + phys_offset`, given
    /// to this heap for good, and used by nothing else.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// use framekeep::{Heap, PhysAddr, heap_metadata_bytes};
    /// use core::ptr::NonNull;
    /// let h = Heap::<Cpu, 2>::new();
    /// let ram = Box::leak(vec![0u8; 9 * 4096].into_boxed_slice());
    /// let start = (ram.as_ptr() as u64).next_multiple_of(4096);
    /// let meta = Box::leak(vec![0u8; framekeep::heap_metadata_bytes(8)].into_boxed_slice());
    /// // SAFETY: both leaked, used only by `h`.
    /// unsafe {
    ///     h.add_section(PhysAddr(start), 8, NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
    ///                   heap_metadata_bytes(8)).unwrap();
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
        let need = heap_metadata_bytes(pages);
        if meta_bytes < need {
            return Err(Error::MetadataTooSmall);
        }
        let cache = descriptors_at(pages);
        // SAFETY: forwarded; the first `cache` of `meta_bytes` bytes.
        unsafe { self.frames.add_section(start, pages, meta, cache)? };
        // A full pool (`false`) only means fewer slabs: small requests then
        // get pages of their own.
        // SAFETY: the rest of the caller's metadata, ours for good (memory
        // of a heap is never removed).
        unsafe {
            self.slab
                .descs
                .add(meta.as_ptr().add(cache), meta_bytes - cache)
        };
        Ok(())
    }

    /// The page layer (per-CPU caches over the buddy), for frames that are
    /// not heap objects: page tables, DMA buffers. Pages allocated from it
    /// are mapped at `phys + phys_offset` like the heap's. It refuses to
    /// free anything the heap owns ([`Error::OwnedByHeap`],
    /// [`Error::OwnedBySlab`]), to register memory by name only, and to
    /// remove memory.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// let h = framekeep::Heap::<Cpu, 2>::new();
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// let h = framekeep::Heap::<Cpu, 2>::new();
    /// h.set_fault_handler(|f| eprintln!("bad free: {f:?}"));
    /// ```
    pub fn set_fault_handler(&self, fault: fn(Fault)) {
        self.slab.faults.set_handler(fault);
    }

    fn report(&self, fault: Fault) {
        self.slab.faults.report(fault);
    }

    /// Allocates like [`GlobalAlloc::alloc`] (a zero size counts as 1);
    /// null when out of memory.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let h = framekeep::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(framekeep::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// let l = core::alloc::Layout::from_size_align(3000, 1024).unwrap();
    /// let p = h.allocate(l);
    /// assert_eq!(p as usize % 1024, 0);
    /// // SAFETY: from `allocate` with `l`, freed once.
    /// unsafe { h.try_dealloc(p, l).unwrap() };
    /// ```
    #[inline]
    pub fn allocate(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = size_class(layout.size().max(1), layout.align())
            && let Some(p) = self.slab.alloc_fast(class)
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
        let map = self.phys_map();
        if let Some(class) = size_class(size, align) {
            return match self.slab.alloc(&self.frames, map, class) {
                Some(p) if !p.is_null() => p,
                Some(_) => self.alloc_small_oom(class, map),
                // No CPU slot: a page of its own.
                None => self.alloc_small_page(class, map),
            };
        }
        if let Some(order) = cached_order(size, align)
            && let Ok(p) = self.frames.alloc_as::<TAG_HEAP_OWNED>(order as usize)
        {
            // The common page-sized request, straight to the page cache
            // (`alloc_large` retries after reclaiming when this fails).
            return map.virt(p);
        }
        self.alloc_large(size, align, map)
    }

    /// A small allocation that found no memory or no slab descriptor:
    /// reclaim, retry once, then a page of its own.
    #[cold]
    #[inline(never)]
    fn alloc_small_oom(&self, class: usize, map: PhysMap) -> *mut u8 {
        self.reclaim();
        match self.slab.alloc(&self.frames, map, class) {
            Some(p) if !p.is_null() => p,
            _ => self.alloc_small_page(class, map),
        }
    }

    /// A whole page for a small request of class `class`, tagged with it.
    #[cold]
    #[inline(never)]
    fn alloc_small_page(&self, class: usize, map: PhysMap) -> *mut u8 {
        match self
            .frames
            .alloc_run_as(1, PAGE_SIZE as usize, small_page_tag(class))
        {
            Ok(p) => map.virt(p),
            Err(_) => core::ptr::null_mut(),
        }
    }

    #[inline(never)]
    fn alloc_large(&self, size: usize, align: usize, map: PhysMap) -> *mut u8 {
        let Some(plan) = plan(size, align) else {
            return core::ptr::null_mut();
        };
        let once = || match plan {
            Plan::Cached(order) => self.frames.alloc_as::<TAG_HEAP_OWNED>(order as usize),
            Plan::Buddy(pages, align) => {
                self.frames
                    .alloc_run_as(pages, align, run_tag(pages, align))
            }
        };
        let result = match once() {
            Err(Error::OutOfMemory) => {
                self.reclaim();
                once()
            }
            result => result,
        };
        match result {
            Ok(p) => map.virt(p),
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let h = framekeep::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(framekeep::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let h = framekeep::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(framekeep::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// use framekeep::FaultKind;
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
        let map = self.phys_map();
        if let Some(class) = size_class(size, align) {
            return match self.slab.free(&self.frames, map, ptr, class) {
                Ok(()) => Ok(()),
                Err(kind) => self.small_free_fault(ptr, map, class, kind),
            };
        }
        let phys = map.phys(ptr);
        if let Some(order) = cached_order(size, align) {
            return match self
                .frames
                .free_as::<false, TAG_HEAP_OWNED>(phys, order as usize)
            {
                Ok(()) => Ok(()),
                Err(error) => Err(self.page_fault(ptr, phys, error)),
            };
        }
        self.free_large(ptr, phys, size, align)
    }

    /// The page-sized part of `try_dealloc`, beyond the cached orders.
    #[inline(never)]
    fn free_large(
        &self,
        ptr: *mut u8,
        phys: PhysAddr,
        size: usize,
        align: usize,
    ) -> Result<(), Fault> {
        let result = match plan(size, align) {
            Some(Plan::Cached(order)) => self
                .frames
                .free_as::<false, TAG_HEAP_OWNED>(phys, order as usize),
            Some(Plan::Buddy(pages, align)) => {
                self.frames
                    .free_run_as(phys, pages as u64, run_tag(pages, align), |buddy| {
                        buddy.free_pages(phys, pages)
                    })
            }
            None => Err(Error::TooLarge),
        };
        result.map_err(|error| self.page_fault(ptr, phys, error))
    }

    /// Heap statistics (exact when nobody allocates meanwhile).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let h = framekeep::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(framekeep::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// let p = h.allocate(core::alloc::Layout::new::<u32>());
    /// let st = h.stats();
    /// assert_eq!(st.slab_pages, 1);
    /// assert_eq!(st.frames.free_pages() + st.slab_pages, 63);
    /// ```
    pub fn stats(&self) -> HeapStats {
        let (descriptors, descriptor_capacity) = self.slab.descs.counts();
        HeapStats {
            frames: self.frames.stats(),
            slab_pages: self.slab.pages(),
            descriptors,
            descriptor_capacity,
            faults: self.slab.faults.count(),
        }
    }

    /// Whether the small object at `ptr` (allocated with `layout`) is free
    /// in its slab; `None` if `ptr` is not a slab object of that size class.
    /// For tests and debugging (a remotely freed object counts as live
    /// until its owner collects it).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let h = framekeep::Heap::<Cpu, 2>::new();
    /// # let ram = Box::leak(vec![0u8; 65 * 4096].into_boxed_slice());
    /// # // SAFETY: leaked host memory, used only by `h`.
    /// # unsafe { h.add_memory(framekeep::PhysAddr((ram.as_ptr() as u64).next_multiple_of(4096)), 64).unwrap() };
    /// let l = core::alloc::Layout::new::<u64>();
    /// let p = h.allocate(l);
    /// assert_eq!(h.is_free(p, l), Some(false));
    /// # // SAFETY: from `allocate` with `l`, freed once.
    /// # unsafe { h.try_dealloc(p, l).unwrap() };
    /// ```
    pub fn is_free(&self, ptr: *mut u8, layout: Layout) -> Option<bool> {
        let class = size_class(layout.size().max(1), layout.align())?;
        self.slab.is_free(&self.frames, self.phys_map(), ptr, class)
    }

    /// In-place `realloc` of a checked allocation: `Ok(None)` if a move is
    /// needed.
    fn realloc_in_place(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
    ) -> Result<Option<*mut u8>, Fault> {
        let (old, new, align) = (layout.size().max(1), new_size.max(1), layout.align());
        self.check_live(ptr, old, align)?;
        if let Some(class) = size_class(old, align) {
            return Ok((size_class(new, align) == Some(class)).then_some(ptr));
        }
        if size_class(new, align).is_some() {
            return Ok(None);
        }
        let (Some(po), Some(pn)) = (plan(old, align), plan(new, align)) else {
            return Ok(None);
        };
        if po == pn {
            return Ok(Some(ptr));
        }
        let (Plan::Buddy(op, oa), Plan::Buddy(np, na)) = (po, pn) else {
            return Ok(None);
        };
        let phys = self.phys_map().phys(ptr);
        let old_run = (op, run_tag(op, oa));
        match self
            .frames
            .resize_run_as(phys, old_run, (np, run_tag(np, na)))
        {
            Ok(true) => Ok(Some(ptr)),
            Ok(false) => Ok(None),
            Err(error) => Err(self.page_fault(ptr, phys, error)),
        }
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
        if let Err(fault) = unsafe { self.try_dealloc(ptr, layout) } {
            self.report(fault);
        }
    }

    /// Resizes in place where the size class or page run allows, else
    /// moves. A `ptr` that is not a live allocation with `layout` is
    /// reported as a fault and null returned, before anything is read.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match self.realloc_in_place(ptr, layout, new_size) {
            Ok(Some(p)) => return p,
            Ok(None) => {}
            Err(fault) => {
                self.report(fault);
                return core::ptr::null_mut();
            }
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let new = self.allocate(new_layout);
        if !new.is_null() {
            // SAFETY: both blocks are live (the old one checked above),
            // distinct, and at least this long.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
