//! Per-CPU page caches for orders `0..=3` in front of the buddy allocator
//! (Linux's per-CPU page lists).
//!
//! - A cache hit is an array pop or push on the current CPU with no lock
//!   and no interrupt masking: the CPU's lists are marked in use with a
//!   plain store (`TryPerCpu`). An interrupt handler that allocates or
//!   frees on the same CPU meanwhile finds the mark and goes to the buddy
//!   under its lock; a drain run there by `run_on` reports the CPU busy
//!   and is retried. The statistics counter is a plain load and store;
//!   the tag too, except for a free by address (below).
//! - A miss refills `batch` frames, an overflow beyond `high` drains
//!   `batch` frames, each under one acquisition of the buddy lock.
//! - A frame freed on another CPU goes to that CPU's cache.
//! - [`PageCaches::drain_all`] empties every CPU's cache (the current
//!   CPU's directly, the others through [`CpuLocal::run_on`]); it runs
//!   before a section is removed and before an allocation reports out of
//!   memory. With interrupts masked, where `run_on` refuses, only the
//!   current CPU's cache can be emptied (and not even that one from an
//!   interrupt handler that interrupted this CPU's use of it).
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
//!   tags (`buddy_ops.rs`): nothing a cache, the slab or the heap owns can
//!   be freed around them.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use super::config::PcpConfig;
use super::lists::{PCP_ORDERS, PcpLists};
use super::stats::CacheStats;
use super::tags::Tags;
use crate::buddy::LockedAllocator;
use crate::buddy::{BuddyAllocator, FrameOptions, RemovedSection};
use crate::cpu::CpuLocal;
use crate::cpu::per_cpu::{CpuInit, add_owned};
use crate::cpu::try_per_cpu::TryPerCpu;
use crate::metadata::{cache_metadata_bytes, tags_at};
use crate::types::{Error, PAGE_SHIFT, PhysAddr, Zone};

/// What a CPU's cache holds, for [`PageCaches::stats`]: the length of
/// each of its lists (a copy the owner stores after each change: a plain
/// store of a value it has in a register, so no chain of loads and stores
/// runs from one operation to the next), and the pages it holds in the
/// zones below Normal (`Zone as usize`; Normal's are the rest). Written
/// only by that CPU, kept in its slot next to its lists and in-use flag.
pub(crate) struct Held {
    lens: [AtomicU64; PCP_ORDERS],
    low: [AtomicU64; 2],
}

impl CpuInit for Held {
    const INIT: Self = Held {
        lens: [const { AtomicU64::new(0) }; PCP_ORDERS],
        low: [const { AtomicU64::new(0) }; 2],
    };
}

/// A [`LockedAllocator`] with per-CPU caches of free blocks of orders
/// `0..=3` in front. `N` is the number of CPUs (ids `0..N`; other ids use
/// the buddy directly). `const`-constructible for a `static`.
///
/// ```
/// use framekeep::{BuddyAllocator, Error, PageCaches, PhysAddr, cache_metadata_bytes};
/// framekeep::host_cpu_local!(Cpu, 4);
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
    pub(super) cpus: TryPerCpu<PcpLists, N, Held>,
    pub(crate) tags: Tags,
    pub(super) cfg: PcpConfig,
    /// A [`Heap`](crate::Heap) sits on top: it writes the frames, and
    /// its sections hold slab bookkeeping, so memory cannot be registered
    /// by name only, nor removed.
    pub(super) heap_owned: bool,
}

impl<P: CpuLocal, const N: usize> PageCaches<P, N> {
    /// Caches in front of `buddy`, with [`PcpConfig::DEFAULT`].
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// static F: framekeep::PageCaches<Cpu, 2> =
    ///     framekeep::PageCaches::new(framekeep::BuddyAllocator::new());
    /// assert_eq!(F.config(), framekeep::PcpConfig::DEFAULT);
    /// ```
    pub const fn new(buddy: BuddyAllocator) -> Self {
        Self::with_config(buddy, PcpConfig::DEFAULT)
    }

    /// Caches in front of `buddy` with the given (validated) configuration.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// use framekeep::{BuddyAllocator, PageCaches, PcpConfig};
    /// let c = PageCaches::<Cpu, 2>::with_config(BuddyAllocator::new(),
    ///     PcpConfig { high: [16, 0, 0, 0], batch: [8, 1, 1, 1] });
    /// assert_eq!(c.config().high[1], 0);
    /// ```
    pub const fn with_config(buddy: BuddyAllocator, cfg: PcpConfig) -> Self {
        PageCaches {
            buddy: LockedAllocator::new(buddy),
            cpus: TryPerCpu::new(),
            tags: Tags::new(),
            cfg: cfg.validated(),
            heap_owned: false,
        }
    }

    /// Caches for a [`Heap`](crate::Heap) (see `heap_owned`).
    pub(crate) const fn for_heap(cfg: PcpConfig) -> Self {
        let mut caches = Self::with_config(BuddyAllocator::new(), cfg);
        caches.heap_owned = true;
        caches
    }

    /// The configuration in use.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// assert_eq!(c.config().high[0], 96);
    /// ```
    pub fn config(&self) -> PcpConfig {
        self.cfg
    }

    /// Changes the configuration (`&mut self`: no CPU is using the caches).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let mut c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// c.set_config(framekeep::PcpConfig { high: [8; 4], batch: [4; 4] });
    /// assert_eq!(c.config().batch[0], 4);
    /// ```
    pub fn set_config(&mut self, cfg: PcpConfig) {
        self.cfg = cfg.validated();
    }

    /// Registers memory like [`BuddyAllocator::add_section`], but `meta`
    /// must hold [`cache_metadata_bytes`]`(pages)` bytes: the buddy's words
    /// followed by one tag per page. Registration writes no tag: they are
    /// zeroed a chunk at a time as pages first get one.
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// use framekeep::{BuddyAllocator, PageCaches, PhysAddr, cache_metadata_bytes};
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
        let mut guard = self.buddy.lock();
        let half = tags_at(pages);
        // SAFETY: the caller's contract covers `meta_bytes` >= 2 * half
        // bytes; the first half goes to the buddy.
        unsafe { guard.add_section(start, pages, meta, half)? };
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
            let _ = guard.remove_section(start);
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// c.add_section_static(framekeep::PhysAddr(1 << 32), 8, vec![0u64; 16].leak()).unwrap();
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 8, vec![0u64; 16].leak()).unwrap();
    /// let p = c.alloc(0).unwrap();
    /// c.free(p, 0).unwrap();                        // cached
    /// let r = c.remove_section(framekeep::PhysAddr(1 << 32)).unwrap();
    /// assert_eq!(r.pages, 8);
    /// ```
    pub fn remove_section(&self, start: PhysAddr) -> Result<RemovedSection, Error> {
        if self.heap_owned {
            return Err(Error::NotRemovable);
        }
        self.drain_all();
        let mut guard = self.buddy.lock();
        let removed = guard.remove_section(start)?;
        self.tags.remove(start.0 >> PAGE_SHIFT);
        Ok(removed)
    }

    /// Counts `pages` more (or fewer) pages held by `cpu` in the zone of
    /// `frame`, if below Normal (Normal's count is what the list lengths
    /// leave: [`publish`](Self::publish)). A plain load and store (only
    /// `cpu` writes its counters; readers just sum). Called as `cpu`, with
    /// its slot in use (so `cpu < N`).
    #[inline(always)]
    pub(super) fn add_held(&self, cpu: usize, frame: u64, pages: i64) {
        if frame < Zone::Normal.start().0 {
            let held = &self.cpus.slots[cpu].shared;
            add_owned(&held.low[Zone::index_of(frame) & 1], pages);
        }
    }

    /// Publishes the new length of `cpu`'s list of order `order` after a
    /// change (as in `add_held`).
    #[inline(always)]
    pub(super) fn publish(&self, cpu: usize, order: usize, len: usize) {
        let held = &self.cpus.slots[cpu].shared;
        held.lens[order % PCP_ORDERS].store(len as u64, Ordering::Relaxed);
    }

    /// Empties the current CPU's cache into the buddy (nothing, in an
    /// interrupt handler that interrupted this CPU's use of it).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// c.free(c.alloc(0).unwrap(), 0).unwrap();
    /// c.drain_local();
    /// assert_eq!(c.stats().buddy.free_pages(), 64);
    /// ```
    pub fn drain_local(&self) {
        self.cpus
            .local::<P, _>(|cpu, lists| self.drain_lists(cpu, lists));
    }

    pub(super) fn drain_lists(&self, cpu: usize, lists: &mut PcpLists) {
        for order in 0..PCP_ORDERS {
            lists.take_all(order, |frames| {
                self.drain_to_buddy(cpu, order as u32, frames)
            });
            self.publish(cpu, order, 0);
        }
    }

    /// Empties CPU `cpu`'s cache into the buddy: directly if it is the
    /// current CPU, else running on that CPU through [`CpuLocal::run_on`].
    /// `false` if the platform could not, or the cache stayed in use: the
    /// IPI interrupted that CPU's own use of it each of 16 times in a row
    /// (each try is a new `run_on`), or, for the current CPU, the caller
    /// is an interrupt handler that interrupted it.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// assert!(c.drain_cpu(1));
    /// assert!(!c.drain_cpu(2));   // no such CPU
    /// ```
    pub fn drain_cpu(&self, cpu: usize) -> bool {
        self.cpus
            .on::<P, _>(cpu, |lists| self.drain_lists(cpu, lists))
            .is_some()
    }

    /// Empties every CPU's cache; `true` if all of them could be drained.
    /// Called with interrupts masked, it can only empty the current CPU's
    /// (`run_on` refuses the others) and returns `false` if there are others.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let p = c.alloc(0).unwrap();
    /// let st = c.stats();
    /// assert_eq!(st.free_pages(), 63);
    /// assert!(st.cached_pages() > 0);
    /// # c.free(p, 0).unwrap();
    /// ```
    pub fn stats(&self) -> CacheStats {
        let buddy = self.buddy.stats();
        let mut cached = [0u64; 3];
        for slot in &self.cpus.slots {
            let held = &slot.shared;
            let dma = held.low[Zone::Dma as usize].load(Ordering::Relaxed);
            let dma32 = held.low[Zone::Dma32 as usize].load(Ordering::Relaxed);
            let total = (held.lens.iter().enumerate()).fold(0u64, |sum, (order, len)| {
                sum.wrapping_add(len.load(Ordering::Relaxed) << order)
            });
            // Wrapping: the counters of one CPU may be read mid-update.
            let normal = total.wrapping_sub(dma).wrapping_sub(dma32);
            for (count, add) in cached.iter_mut().zip([dma, dma32, normal]) {
                *count = count.wrapping_add(add);
            }
        }
        CacheStats { buddy, cached }
    }
}
