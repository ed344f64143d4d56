//! Per-CPU page caches for orders `0..=3` in front of the buddy allocator
//! (Linux's per-CPU page lists).
//!
//! - A cache hit is an array pop or push on the current CPU with interrupts
//!   masked: no lock and no atomic read-modify-write (the per-page tag and
//!   the statistics counter are plain loads and stores).
//! - A miss refills `batch` frames, an overflow beyond `high` drains
//!   `batch` frames, each under one acquisition of the buddy lock.
//! - A frame freed on another CPU goes to that CPU's cache.
//! - [`PageCaches::drain_all`] empties every CPU's cache (the current
//!   CPU's directly, the others through [`CpuLocal::run_on`]); it runs
//!   before a section is removed and before an allocation reports out of
//!   memory. With interrupts masked, where `run_on` refuses, only the
//!   current CPU's cache can be emptied.
//! - Frees are checked in release builds: every block handed out by a
//!   cache carries a per-page tag ("allocated, order k", and to whom), so a
//!   second free (`DoubleFree`), a wrong order (`WrongCount`) or a page
//!   owned by a layer above (`OwnedBySlab`, `OwnedByHeap`) is rejected;
//!   untagged addresses go to the buddy, which checks them. A free claims
//!   the tag with one compare-exchange, so two frees of one block racing on
//!   two CPUs never both succeed (the heap's own page frees, whose contract
//!   rules such a race out, use plain loads and stores).
//! - The buddy's own operations (constraints, exact counts, alignment,
//!   fixed ranges, bulk) are offered here too, checked against the same
//!   tags (`pcp_buddy.rs`): nothing a cache, the slab or the heap owns can
//!   be freed around them.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::buddy::{BuddyAllocator, FrameOptions, RemovedSection};
use crate::locked::LockedAllocator;
use crate::pcp_list::{PCP_CAPACITY, PCP_ORDERS, PcpLists};
use crate::percpu::{CpuInit, CpuLocal, PerCpu, Slot};
use crate::stats::Stats;
use crate::sync::UnsafeCell;
use crate::tags::{
    TAG_ALLOC, TAG_CACHED, TAG_CLAIMED, TAG_HANDLE_OWNED, TAG_HEAP, TAG_HEAP_OWNED, TAG_INTERNAL,
    TAG_KIND, TAG_NONE, TAG_OWNER, TAG_SLAB, Tags, handout_tag, tag_alloc, tag_order,
};
use crate::types::{Constraint, Error, MAX_ORDER, PAGE_SHIFT, PAGE_SIZE, PhysAddr, Zone};

/// High-water marks and batch sizes of the per-CPU lists, per order.
///
/// `high[k]`: most frames of order `k` one CPU keeps (at most
/// [`PCP_CAPACITY`]); `batch[k]`: frames moved per refill or drain.
/// [`PcpConfig::DEFAULT`] keeps up to 96 single pages (moved 32 at a time)
/// and 24 blocks of orders 1..=3 (moved 8 at a time): at most
/// 96 + 24 * (2 + 4 + 8) = 432 pages (1.7 MiB) per CPU.
///
/// ```
/// use allocator::PcpConfig;
/// let c = PcpConfig { high: [200, 8, 8, 0], batch: [0, 4, 4, 4] }.validated();
/// assert_eq!(c.high[0], 128);        // capped at PCP_CAPACITY
/// assert_eq!(c.batch[0], 1);         // at least 1
/// assert_eq!((c.high[3], c.batch[3]), (0, 1)); // high 0: order 3 is not cached
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct PcpConfig {
    /// Most frames kept per CPU, per order (0 disables caching of that order).
    pub high: [u16; PCP_ORDERS],
    /// Frames moved per refill/drain, per order.
    pub batch: [u16; PCP_ORDERS],
}

impl PcpConfig {
    /// The default: `high = [96, 24, 24, 24]`, `batch = [32, 8, 8, 8]`.
    ///
    /// ```
    /// assert_eq!(allocator::PcpConfig::DEFAULT.batch[0], 32);
    /// ```
    pub const DEFAULT: PcpConfig = PcpConfig {
        high: [96, 24, 24, 24],
        batch: [32, 8, 8, 8],
    };

    /// `high` capped at [`PCP_CAPACITY`], `batch` clamped to `1..=max(high, 1)`.
    ///
    /// ```
    /// let c = allocator::PcpConfig { high: [4; 4], batch: [9; 4] }.validated();
    /// assert_eq!(c.batch, [4; 4]);
    /// ```
    pub const fn validated(mut self) -> Self {
        let mut o = 0;
        while o < PCP_ORDERS {
            if self.high[o] as usize > PCP_CAPACITY {
                self.high[o] = PCP_CAPACITY as u16;
            }
            let max = if self.high[o] == 0 { 1 } else { self.high[o] };
            if self.batch[o] == 0 {
                self.batch[o] = 1;
            }
            if self.batch[o] > max {
                self.batch[o] = max;
            }
            o += 1;
        }
        self
    }
}

impl Default for PcpConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Bytes of metadata [`PageCaches::add_section`] needs for `pages` pages:
/// the buddy's 8 bytes per page plus an 8-byte tag per page.
///
/// ```
/// assert_eq!(allocator::cache_metadata_bytes(1024), 16 * 1024);
/// ```
pub const fn cache_metadata_bytes(pages: u64) -> usize {
    (pages as usize).saturating_mul(16)
}

/// Statistics of a [`PageCaches`]: the buddy's, plus what the per-CPU
/// caches hold (allocated in the buddy's view, free in truth).
///
/// ```
/// # allocator::host_cpu_local!(Cpu, 4);
/// let c = allocator::PageCaches::<Cpu, 4>::new(allocator::BuddyAllocator::new());
/// let st = c.stats();
/// assert_eq!(st.free_pages(), st.buddy.free_pages() + st.cached_pages());
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct CacheStats {
    /// The buddy allocator's statistics (cached frames count as used there).
    pub buddy: Stats,
    /// Pages held by the per-CPU caches, per zone (`Zone as usize`).
    pub cached: [u64; 3],
}

impl CacheStats {
    /// Pages held by all caches.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 4);
    /// # let c = allocator::PageCaches::<Cpu, 4>::new(allocator::BuddyAllocator::new());
    /// assert_eq!(c.stats().cached_pages(), 0);
    /// ```
    pub fn cached_pages(&self) -> u64 {
        self.cached.iter().fold(0, |a, &c| a.saturating_add(c))
    }

    /// Free pages, cached ones included.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 4);
    /// # let c = allocator::PageCaches::<Cpu, 4>::new(allocator::BuddyAllocator::new());
    /// assert_eq!(c.stats().free_pages(), 0);
    /// ```
    pub fn free_pages(&self) -> u64 {
        self.buddy.free_pages().saturating_add(self.cached_pages())
    }

    /// Free pages of one zone, cached ones included.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 4);
    /// # let c = allocator::PageCaches::<Cpu, 4>::new(allocator::BuddyAllocator::new());
    /// assert_eq!(c.stats().zone_free_pages(allocator::Zone::Dma), 0);
    /// ```
    pub fn zone_free_pages(&self, z: Zone) -> u64 {
        self.buddy
            .zone(z)
            .free_pages
            .saturating_add(self.cached[z as usize])
    }
}

impl<T: CpuInit, const N: usize> PerCpu<T, N> {
    /// Every CPU's value is `T::INIT`.
    pub(crate) const fn new() -> Self {
        PerCpu {
            slots: [const { Slot(UnsafeCell::new(T::INIT)) }; N],
        }
    }
}

#[repr(align(128))]
struct Held([AtomicU64; 3]);

/// A [`LockedAllocator`] with per-CPU caches of free blocks of orders
/// `0..=3` in front. `N` is the number of CPUs (ids `0..N`; other ids use
/// the buddy directly). `const`-constructible for a `static`.
///
/// ```
/// use allocator::{BuddyAllocator, Error, PageCaches, PhysAddr, cache_metadata_bytes};
/// allocator::host_cpu_local!(Cpu, 4);
/// static FRAMES: PageCaches<Cpu, 4> = PageCaches::new(BuddyAllocator::new());
///
/// let meta: &'static mut [u64] = vec![0u64; 2 * 1024].leak();
/// FRAMES.add_section_static(PhysAddr(1 << 32), 1024, meta).unwrap();
/// let p = FRAMES.alloc(0).unwrap();               // refills this CPU's cache
/// FRAMES.free(p, 0).unwrap();                     // back into the cache
/// assert_eq!(FRAMES.free(p, 0), Err(Error::DoubleFree));
/// assert_eq!(FRAMES.stats().free_pages(), 1024);  // cached pages count as free
/// assert!(FRAMES.drain_all());
/// assert_eq!(FRAMES.stats().cached_pages(), 0);
/// ```
pub struct PageCaches<P: CpuLocal, const N: usize> {
    pub(crate) buddy: LockedAllocator<P>,
    cpus: PerCpu<PcpLists, N>,
    held: [Held; N],
    pub(crate) tags: Tags,
    cfg: PcpConfig,
    /// A [`Heap`](crate::Heap) sits on top: it writes the frames, and
    /// its sections hold slab bookkeeping, so memory cannot be registered
    /// by name only, nor removed.
    heap_owned: bool,
}

/// `Zone::of(addr) as usize`, branch-free (two compares, no jumps).
#[inline(always)]
fn zone_index(addr: u64) -> usize {
    const _: () = assert!(Zone::Dma as usize == 0 && Zone::Dma32 as usize == 1);
    const _: () = assert!(Zone::Normal as usize == 2);
    (addr >= crate::types::DMA_END) as usize + (addr >= crate::types::DMA32_END) as usize
}

/// Why a free presenting tag `expected` is refused where the page's tag
/// is `actual`.
#[cold]
pub(crate) fn tag_error(actual: u64, expected: u64) -> Error {
    match actual & TAG_KIND {
        TAG_CACHED | TAG_CLAIMED => Error::DoubleFree,
        TAG_SLAB | TAG_INTERNAL => Error::OwnedBySlab,
        TAG_HEAP => Error::OwnedByHeap,
        TAG_ALLOC if actual & TAG_OWNER == expected & TAG_OWNER => Error::WrongCount {
            allocated: 1 << tag_order(actual),
        },
        TAG_ALLOC if actual & TAG_OWNER == TAG_HEAP_OWNED => Error::OwnedByHeap,
        TAG_ALLOC if actual & TAG_OWNER == TAG_HANDLE_OWNED => Error::OwnedByHandle,
        // Not handed out to the one presenting `expected`.
        _ => Error::NotInSection,
    }
}

impl<P: CpuLocal, const N: usize> PageCaches<P, N> {
    /// Caches in front of `buddy`, with [`PcpConfig::DEFAULT`].
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// static F: allocator::PageCaches<Cpu, 2> =
    ///     allocator::PageCaches::new(allocator::BuddyAllocator::new());
    /// assert_eq!(F.config(), allocator::PcpConfig::DEFAULT);
    /// ```
    pub const fn new(buddy: BuddyAllocator) -> Self {
        Self::with_config(buddy, PcpConfig::DEFAULT)
    }

    /// Caches in front of `buddy` with the given (validated) configuration.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// use allocator::{BuddyAllocator, PageCaches, PcpConfig};
    /// let c = PageCaches::<Cpu, 2>::with_config(BuddyAllocator::new(),
    ///     PcpConfig { high: [16, 0, 0, 0], batch: [8, 1, 1, 1] });
    /// assert_eq!(c.config().high[1], 0);
    /// ```
    pub const fn with_config(buddy: BuddyAllocator, cfg: PcpConfig) -> Self {
        PageCaches {
            buddy: LockedAllocator::new(buddy),
            cpus: PerCpu::new(),
            held: [const { Held([const { AtomicU64::new(0) }; 3]) }; N],
            tags: Tags::new(),
            cfg: cfg.validated(),
            heap_owned: false,
        }
    }

    /// Caches for a [`Heap`](crate::Heap) (see `heap_owned`).
    pub(crate) const fn for_heap(cfg: PcpConfig) -> Self {
        let mut c = Self::with_config(BuddyAllocator::new(), cfg);
        c.heap_owned = true;
        c
    }

    /// The configuration in use.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// assert_eq!(c.config().high[0], 96);
    /// ```
    pub fn config(&self) -> PcpConfig {
        self.cfg
    }

    /// Changes the configuration (`&mut self`: no CPU is using the caches).
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let mut c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// c.set_config(allocator::PcpConfig { high: [8; 4], batch: [4; 4] });
    /// assert_eq!(c.config().batch[0], 4);
    /// ```
    pub fn set_config(&mut self, cfg: PcpConfig) {
        self.cfg = cfg.validated();
    }

    /// Registers memory like [`BuddyAllocator::add_section`], but `meta`
    /// must hold [`cache_metadata_bytes`]`(pages)` bytes: the buddy's words
    /// followed by one tag per page (zeroed here, so registration writes
    /// 8 bytes per page).
    ///
    /// Errors: those of [`BuddyAllocator::add_section`], and
    /// [`Error::TooManySections`] when the tag table is full.
    ///
    /// # Safety
    /// As for [`BuddyAllocator::add_section`], for all `meta_bytes` bytes.
    /// If these caches belong to a [`Heap`](crate::Heap), the pages are
    /// also RAM mapped read-write at `phys + phys_offset`, used by nothing
    /// else, for good (the heap writes them).
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// use allocator::{BuddyAllocator, PageCaches, PhysAddr, cache_metadata_bytes};
    /// use core::ptr::NonNull;
    /// let c = PageCaches::<Cpu, 2>::new(BuddyAllocator::new());
    /// let mut meta = vec![0u64; 2 * 64];
    /// // SAFETY: `meta` outlives `c` and is used by nothing else.
    /// unsafe {
    ///     c.add_section(PhysAddr(0x100_0000), 64, NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
    ///                   cache_metadata_bytes(64)).unwrap();
    /// }
    /// assert_eq!(c.stats().free_pages(), 64);
    /// ```
    pub unsafe fn add_section(
        &self,
        start: PhysAddr,
        pages: u64,
        meta: NonNull<u8>,
        meta_bytes: usize,
    ) -> Result<(), Error> {
        if meta_bytes < cache_metadata_bytes(pages) {
            return Err(Error::MetadataTooSmall);
        }
        let mut g = self.buddy.lock();
        let half = crate::metadata_bytes(pages);
        // SAFETY: the caller's contract covers `meta_bytes` >= 2 * half
        // bytes; the first half goes to the buddy.
        unsafe { g.add_section(start, pages, meta, half)? };
        // SAFETY: the second half (8-aligned: `meta` is, checked by the
        // buddy, and `half` is a multiple of 8) is ours alone until
        // remove_section; add and remove run under the buddy lock.
        let ok = unsafe {
            let tags = meta.as_ptr().add(half).cast::<u64>();
            self.tags
                .add(start.0 >> PAGE_SHIFT, start.0 >> PAGE_SHIFT, pages, tags)
        };
        if !ok {
            // Just added with every page free: removal cannot fail.
            let _ = g.remove_section(start);
            return Err(Error::TooManySections);
        }
        Ok(())
    }

    /// Safe [`add_section`](Self::add_section) for metadata that lives
    /// forever: `meta` needs `2 * pages` words. The pages are only named:
    /// nothing here reads or writes them. So this is refused with
    /// [`Error::FramesNotMapped`] when something would: frame options are
    /// on ([`set_frame_options`](Self::set_frame_options)), or these
    /// caches belong to a [`Heap`](crate::Heap).
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// c.add_section_static(allocator::PhysAddr(1 << 32), 8, vec![0u64; 16].leak()).unwrap();
    /// assert_eq!(c.stats().free_pages(), 8);
    /// ```
    pub fn add_section_static(
        &self,
        start: PhysAddr,
        pages: u64,
        meta: &'static mut [u64],
    ) -> Result<(), Error> {
        if self.heap_owned || self.with_buddy(|b| b.frame_options() != FrameOptions::default()) {
            return Err(Error::FramesNotMapped);
        }
        let bytes = core::mem::size_of_val(meta);
        let ptr = NonNull::from(meta).cast::<u8>();
        // SAFETY: an exclusive 'static borrow, consumed here: nothing else
        // can use the memory again; 8-aligned, `bytes` long. The frames
        // are never touched (checked above), so naming them is enough.
        unsafe { self.add_section(start, pages, ptr, bytes) }
    }

    /// Drains every CPU's cache, then removes the registration made at
    /// `start` ([`BuddyAllocator::remove_section`]). Memory of a
    /// [`Heap`](crate::Heap) cannot be removed ([`Error::NotRemovable`]).
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// # c.add_section_static(allocator::PhysAddr(1 << 32), 8, vec![0u64; 16].leak()).unwrap();
    /// let p = c.alloc(0).unwrap();
    /// c.free(p, 0).unwrap();                        // cached
    /// let r = c.remove_section(allocator::PhysAddr(1 << 32)).unwrap();
    /// assert_eq!(r.pages, 8);
    /// ```
    pub fn remove_section(&self, start: PhysAddr) -> Result<RemovedSection, Error> {
        if self.heap_owned {
            return Err(Error::NotRemovable);
        }
        self.drain_all();
        let mut g = self.buddy.lock();
        let r = g.remove_section(start)?;
        self.tags.remove(start.0 >> PAGE_SHIFT);
        Ok(r)
    }

    /// Allocates a block of 2^`order` pages (any zone, Normal first).
    /// Orders `0..=3` come from the current CPU's cache (refilled in a
    /// batch when empty); if the buddy is out of memory, every CPU's cache
    /// is drained ([`drain_all`](Self::drain_all)) and the buddy asked
    /// again before [`Error::OutOfMemory`] is returned. Called with
    /// interrupts masked, only the current CPU's cache can be drained.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// # c.add_section_static(allocator::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let b = c.alloc(3).unwrap();
    /// assert_eq!(b.0 % (8 * 4096), 0);
    /// c.free(b, 3).unwrap();
    /// ```
    #[inline]
    pub fn alloc(&self, order: u32) -> Result<PhysAddr, Error> {
        let o = order as usize;
        if o >= PCP_ORDERS {
            return self.buddy_alloc(order, Constraint::ANY, TAG_NONE);
        }
        self.alloc_as::<0>(o)
    }

    /// [`alloc`](Self::alloc) of a cached order `o` for `OWNER`, handing
    /// the block out with [`handout_tag`]`(OWNER, o)` (which its free must
    /// present again). A constant owner gives each owner's fast path its
    /// own copy, inlined where it is used.
    #[inline(always)]
    pub(crate) fn alloc_as<const OWNER: u64>(&self, o: usize) -> Result<PhysAddr, Error> {
        let tag = handout_tag(OWNER, o);
        let hit = self.cpus.local::<P, _>(|cpu, l| {
            let f = l.pop(o)?;
            self.hand_out(cpu, f, o, tag);
            Some(PhysAddr(f))
        });
        // The slow paths run after the masked section, when no borrow of
        // the lists is live (they enter the per-CPU lists again).
        match hit {
            Some(Some(f)) => Ok(f),
            Some(None) => self.alloc_refill(o, tag),
            None => self.buddy_alloc(o as u32, Constraint::ANY, tag),
        }
    }

    /// [`alloc`](Self::alloc) after finding the current CPU's list empty:
    /// refill it (a new masked section: the CPU may have changed), or go
    /// to the buddy if this order is not cached.
    #[inline(never)]
    fn alloc_refill(&self, o: usize, tag: u64) -> Result<PhysAddr, Error> {
        if self.cfg.high[o] != 0 {
            let r = self.cpus.local::<P, _>(|cpu, l| {
                let f = l.alloc(o, self.cfg.batch[o] as usize, |out| {
                    self.refill(cpu, o, out)
                })?;
                self.hand_out(cpu, f, o, tag);
                Some(PhysAddr(f))
            });
            if let Some(Some(f)) = r {
                return Ok(f);
            }
        }
        self.buddy_alloc(o as u32, Constraint::ANY, tag)
    }

    /// A block straight from the buddy, tagged `tag` (nothing for
    /// [`TAG_NONE`]); on out of memory, again after draining every cache.
    #[cold]
    pub(crate) fn buddy_alloc(
        &self,
        order: u32,
        c: Constraint,
        tag: u64,
    ) -> Result<PhysAddr, Error> {
        self.buddy_retry(|g| {
            let a = g.alloc(order, c)?;
            self.tag_new(g, a, 1 << order.min(MAX_ORDER), tag)?;
            Ok(a)
        })
    }

    /// Runs `op` under the buddy lock; if it runs out of memory, drains
    /// every CPU's cache and runs it once more.
    pub(crate) fn buddy_retry<R>(
        &self,
        mut op: impl FnMut(&mut BuddyAllocator) -> Result<R, Error>,
    ) -> Result<R, Error> {
        match op(&mut self.buddy.lock()) {
            Err(Error::OutOfMemory) => {}
            r => return r,
        }
        self.drain_all();
        op(&mut self.buddy.lock())
    }

    /// Tags the head of `count` pages at `a`, just allocated under the
    /// buddy lock `g`. A page outside every tag region cannot carry an
    /// owner: plain blocks go out untagged, owned ones are given back.
    pub(crate) fn tag_new(
        &self,
        g: &mut BuddyAllocator,
        a: PhysAddr,
        count: u64,
        tag: u64,
    ) -> Result<(), Error> {
        if tag == TAG_NONE {
            return Ok(());
        }
        match self.tags.prepare(a.0) {
            Some(t) => t.store(tag, Ordering::Release),
            None if tag & (TAG_KIND | TAG_OWNER) == TAG_ALLOC => {}
            None => {
                // Just allocated under this lock: giving it back cannot fail.
                let _ = g.free_pages(a, count as usize);
                return Err(Error::OutOfMemory);
            }
        }
        Ok(())
    }

    /// Fills `out` with up to `out.len()` blocks of order `o` under one
    /// lock acquisition, each tagged as cached while the lock is held
    /// (blocks whose pages have no tag are given back: a cache holds only
    /// blocks whose frees it can check).
    #[inline(never)]
    fn refill(&self, cpu: usize, o: usize, out: &mut [u64]) -> usize {
        let order = o as u32;
        let mut g = self.buddy.lock();
        let mut n = 0;
        if order == 0 {
            // SAFETY: PhysAddr is repr(transparent) over u64.
            let slots = unsafe {
                core::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<PhysAddr>(), out.len())
            };
            n = g.alloc_bulk(Constraint::ANY, slots).unwrap_or(0);
        } else {
            while n < out.len() {
                match g.alloc(order, Constraint::ANY) {
                    Ok(a) => {
                        out[n] = a.0;
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        let mut kept = 0;
        for i in 0..n {
            let f = out[i];
            match self.tags.prepare(f) {
                Some(t) => {
                    t.store(TAG_CACHED, Ordering::Relaxed);
                    out[kept] = f;
                    kept += 1;
                }
                // Just allocated under this lock: giving it back cannot fail.
                None => {
                    let _ = g.free(PhysAddr(f), order);
                }
            }
        }
        drop(g);
        for &f in &out[..kept] {
            self.add_held(cpu, f, 1 << order);
        }
        kept
    }

    /// Frees `frames` (all of `order`, all held by `cpu`'s cache) to the
    /// buddy under one lock acquisition, their tags cleared under it.
    #[inline(never)]
    fn drain_to_buddy(&self, cpu: usize, order: u32, frames: &[u64]) {
        let mut g = self.buddy.lock();
        for &f in frames {
            if let Some(t) = self.tags.get(f) {
                t.store(TAG_NONE, Ordering::Relaxed);
            }
        }
        if order == 0 {
            // SAFETY: PhysAddr is repr(transparent) over u64.
            let f = unsafe {
                core::slice::from_raw_parts(frames.as_ptr().cast::<PhysAddr>(), frames.len())
            };
            // Cached frames are allocated in the buddy: this cannot fail.
            let _ = g.free_bulk(f);
        } else {
            for &f in frames {
                let _ = g.free(PhysAddr(f), order);
            }
        }
        drop(g);
        for &f in frames {
            self.add_held(cpu, f, -(1i64 << order));
        }
    }

    /// Bookkeeping for block `f` of order `o` leaving `cpu`'s cache for
    /// its user: tagged `tag`, no longer counted as held. A plain store:
    /// the block is this CPU's alone while it is popped.
    #[inline(always)]
    fn hand_out(&self, cpu: usize, f: u64, o: usize, tag: u64) {
        if let Some(t) = self.tags.get(f) {
            t.store(tag, Ordering::Relaxed);
        }
        self.add_held(cpu, f, -(1i64 << o));
    }

    /// The owner's counter update: a plain load and store (only `cpu`
    /// writes `held[cpu]`; readers just sum).
    #[inline(always)]
    fn add_held(&self, cpu: usize, frame: u64, pages: i64) {
        let c = &self.held[cpu].0[zone_index(frame)];
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(pages as u64),
            Ordering::Relaxed,
        );
    }

    /// Frees a block of 2^`order` pages. A block handed out by a cache goes
    /// into the current CPU's cache (draining a batch to the buddy beyond
    /// `high`); anything else goes to the buddy, which checks it.
    ///
    /// The block is claimed with one compare-exchange on its tag, so two
    /// frees of the same block racing on two CPUs never both succeed.
    ///
    /// Errors: [`Error::TooLarge`], [`Error::Misaligned`],
    /// [`Error::DoubleFree`] (already free, in a cache or the buddy),
    /// [`Error::WrongCount`] (handed out with another order),
    /// [`Error::OwnedBySlab`], [`Error::OwnedByHeap`] (memory of a
    /// [`Heap`](crate::Heap) on top), and the buddy's errors.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// # c.add_section_static(allocator::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// use allocator::Error;
    /// let b = c.alloc(1).unwrap();
    /// assert_eq!(c.free(b, 0), Err(Error::WrongCount { allocated: 2 }));
    /// c.free(b, 1).unwrap();
    /// ```
    #[inline]
    pub fn free(&self, addr: PhysAddr, order: u32) -> Result<(), Error> {
        let o = order as usize;
        if o >= PCP_ORDERS {
            if order > MAX_ORDER {
                return Err(Error::TooLarge);
            }
            if addr.0 & ((PAGE_SIZE << order) - 1) != 0 {
                return Err(Error::Misaligned);
            }
            let count = 1u64 << order;
            return self.free_run_as(addr, count, TAG_NONE, |g| g.free(addr, order));
        }
        self.free_as::<true, 0>(addr, o)
    }

    /// [`free`](Self::free) of a block of cached order `o` handed out to
    /// `OWNER` (see [`alloc_as`](Self::alloc_as)). `ATOMIC` claims the tag with a compare-exchange, which
    /// safe callers need (nothing stops two of them freeing one block at
    /// once); the heap's frees, whose contract rules that out, check and
    /// store it with plain accesses.
    #[inline(always)]
    pub(crate) fn free_as<const ATOMIC: bool, const OWNER: u64>(
        &self,
        addr: PhysAddr,
        o: usize,
    ) -> Result<(), Error> {
        let tag = handout_tag(OWNER, o);
        if addr.0 & ((PAGE_SIZE << o) - 1) != 0 {
            return Err(Error::Misaligned);
        }
        let Some(t) = self.tags.get(addr.0) else {
            return self.free_untagged(addr, o, tag);
        };
        if ATOMIC {
            if let Err(actual) =
                t.compare_exchange(tag, TAG_CACHED, Ordering::Acquire, Ordering::Relaxed)
            {
                return self.free_mismatch(addr, o, actual, tag);
            }
        } else {
            let actual = t.load(Ordering::Acquire);
            if actual != tag {
                return self.free_mismatch(addr, o, actual, tag);
            }
            t.store(TAG_CACHED, Ordering::Relaxed);
        }
        // Claimed: the block is this free's alone now.
        let pushed = self.cpus.local::<P, _>(|cpu, l| {
            let pushed = l.push(o, addr.0, self.cfg.high[o] as usize);
            if pushed {
                self.add_held(cpu, addr.0, 1 << o);
            }
            pushed
        });
        // As in `alloc`: the slow paths run after the masked section.
        match pushed {
            Some(true) => Ok(()),
            Some(false) => self.free_overflow(addr, o),
            None => self.release_claimed(addr, o),
        }
    }

    /// A cached-order free whose page has no tag yet: a block of the
    /// buddy's (or nobody's), checked there.
    #[cold]
    #[inline(never)]
    fn free_untagged(&self, addr: PhysAddr, o: usize, tag: u64) -> Result<(), Error> {
        if tag != tag_alloc(o) {
            return Err(Error::NotInSection);
        }
        self.free_run_as(addr, 1 << o, TAG_NONE, |g| g.free(addr, o as u32))
    }

    /// A cached-order free whose tag is `actual`, not the `expected` one.
    #[cold]
    #[inline(never)]
    fn free_mismatch(
        &self,
        addr: PhysAddr,
        o: usize,
        actual: u64,
        expected: u64,
    ) -> Result<(), Error> {
        if actual == TAG_NONE && expected == tag_alloc(o) {
            return self.free_run_as(addr, 1 << o, TAG_NONE, |g| g.free(addr, o as u32));
        }
        Err(tag_error(actual, expected))
    }

    /// [`free`](Self::free) when the current CPU's list is at `high` (or
    /// the order is not cached): push after draining a batch, in a new
    /// masked section, or give the (claimed) block to the buddy.
    #[inline(never)]
    fn free_overflow(&self, addr: PhysAddr, o: usize) -> Result<(), Error> {
        let cached = self.cpus.local::<P, _>(|cpu, l| {
            if self.cfg.high[o] == 0 {
                return false;
            }
            self.add_held(cpu, addr.0, 1 << o);
            let (high, batch) = (self.cfg.high[o] as usize, self.cfg.batch[o] as usize);
            l.free(o, addr.0, high, batch, |fr| {
                self.drain_to_buddy(cpu, o as u32, fr)
            });
            true
        });
        if cached == Some(true) {
            return Ok(());
        }
        self.release_claimed(addr, o)
    }

    /// Gives a block whose tag this free claimed (now [`TAG_CACHED`]) to
    /// the buddy.
    #[cold]
    #[inline(never)]
    fn release_claimed(&self, addr: PhysAddr, o: usize) -> Result<(), Error> {
        let mut g = self.buddy.lock();
        if let Some(t) = self.tags.get(addr.0) {
            t.store(TAG_NONE, Ordering::Relaxed);
        }
        g.free(addr, o as u32)
    }

    /// Frees the allocation of `count` pages at `addr` to the buddy with
    /// `release`, if its head's tag is `expected`, or it is a block handed
    /// out by [`alloc`](Self::alloc) and `count` is its size. The tag is
    /// claimed and cleared under the buddy lock, and put back if the buddy
    /// refuses.
    pub(crate) fn free_run_as(
        &self,
        addr: PhysAddr,
        count: u64,
        expected: u64,
        release: impl FnOnce(&mut BuddyAllocator) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut g = self.buddy.lock();
        let tag = self.tags.get(addr.0);
        let actual = tag.map_or(TAG_NONE, |t| t.load(Ordering::Acquire));
        let ours = actual == expected
            || (expected == TAG_NONE
                && actual & (TAG_KIND | TAG_OWNER) == TAG_ALLOC
                && 1u64 << tag_order(actual) == count);
        if !ours {
            return Err(tag_error(actual, expected));
        }
        let Some(t) = tag.filter(|_| actual != TAG_NONE) else {
            return release(&mut g);
        };
        if t.compare_exchange(actual, TAG_NONE, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // A free through the cache claimed it first.
            return Err(Error::DoubleFree);
        }
        let r = release(&mut g);
        if r.is_err() {
            t.store(actual, Ordering::Release);
        }
        r
    }

    /// Empties the current CPU's cache into the buddy.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// # c.add_section_static(allocator::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// c.free(c.alloc(0).unwrap(), 0).unwrap();
    /// c.drain_local();
    /// assert_eq!(c.stats().buddy.free_pages(), 64);
    /// ```
    pub fn drain_local(&self) {
        self.cpus.local::<P, _>(|cpu, l| self.drain_lists(cpu, l));
    }

    fn drain_lists(&self, cpu: usize, l: &mut PcpLists) {
        for o in 0..PCP_ORDERS {
            l.take_all(o, |fr| self.drain_to_buddy(cpu, o as u32, fr));
        }
    }

    /// Empties CPU `cpu`'s cache into the buddy: directly if it is the
    /// current CPU, else running on that CPU through [`CpuLocal::run_on`].
    /// `false` if the platform could not.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// assert!(c.drain_cpu(1));
    /// assert!(!c.drain_cpu(2));   // no such CPU
    /// ```
    pub fn drain_cpu(&self, cpu: usize) -> bool {
        self.cpus
            .on::<P, _>(cpu, |l| self.drain_lists(cpu, l))
            .is_some()
    }

    /// Empties every CPU's cache; `true` if all of them could be drained.
    /// Called with interrupts masked, it can only empty the current CPU's
    /// (`run_on` refuses the others) and returns `false` if there are others.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// assert!(c.drain_all());
    /// ```
    pub fn drain_all(&self) -> bool {
        let mut all = true;
        for cpu in 0..self.cpus.len() {
            all &= self.drain_cpu(cpu);
        }
        all
    }

    /// Buddy statistics plus what the caches hold, per zone. Exact when no
    /// CPU is allocating at the same time.
    ///
    /// ```
    /// # allocator::host_cpu_local!(Cpu, 2);
    /// # let c = allocator::PageCaches::<Cpu, 2>::new(allocator::BuddyAllocator::new());
    /// # c.add_section_static(allocator::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let p = c.alloc(0).unwrap();
    /// let st = c.stats();
    /// assert_eq!(st.free_pages(), 63);
    /// assert!(st.cached_pages() > 0);
    /// # c.free(p, 0).unwrap();
    /// ```
    pub fn stats(&self) -> CacheStats {
        let buddy = self.buddy.stats();
        let mut cached = [0u64; 3];
        for h in &self.held {
            for (z, c) in cached.iter_mut().enumerate() {
                *c = c.wrapping_add(h.0[z].load(Ordering::Relaxed));
            }
        }
        CacheStats { buddy, cached }
    }
}
