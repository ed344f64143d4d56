//! The buddy's own operations behind the per-CPU caches: constrained,
//! exact-count, aligned, fixed-range and bulk allocations and their frees.
//!
//! Every free here is checked against the per-page ownership tags under
//! the buddy lock, so that a block a cache holds, a slab's page or a heap
//! allocation cannot be freed around the layer that owns it, and the tag
//! of a block freed here is cleared under the same lock as the buddy's
//! own change (see `tags.rs`).

use core::sync::atomic::Ordering;

use super::caches::PageCaches;
use super::tags::tag_error;
use super::tags::{TAG_CLAIMED, TAG_NONE, tag_alloc};
use crate::buddy::{BuddyAllocator, BulkError, FrameOptions};
use crate::cpu::CpuLocal;
use crate::types::{Constraint, Error, PhysAddr, Zone};

impl<P: CpuLocal, const N: usize> PageCaches<P, N> {
    /// A block of 2^`order` pages under `constraint`: unconstrained requests of the
    /// cached orders come from this CPU's cache ([`alloc`](Self::alloc)),
    /// everything else from the buddy. Free it with [`free`](Self::free).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(0x100_0000), 64, vec![0u64; 128].leak()).unwrap();
    /// use framekeep::{Constraint, Zone};
    /// let b = c.alloc_in(2, Constraint::Zone(Zone::Dma32)).unwrap();
    /// assert!(b.0 < 1 << 32);
    /// c.free(b, 2).unwrap();
    /// ```
    pub fn alloc_in(&self, order: u32, constraint: Constraint) -> Result<PhysAddr, Error> {
        if constraint == Constraint::ANY {
            return self.alloc(order);
        }
        self.buddy_alloc(order, constraint, TAG_NONE)
    }

    /// Exactly `count` contiguous pages under `constraint`
    /// ([`BuddyAllocator::alloc_pages`]); on out of memory, again after
    /// draining every CPU's cache. Free them with [`free_pages`](Self::free_pages).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let run = c.alloc_pages(5, framekeep::Constraint::ANY).unwrap();
    /// c.free_pages(run, 5).unwrap();
    /// ```
    pub fn alloc_pages(&self, count: usize, constraint: Constraint) -> Result<PhysAddr, Error> {
        self.buddy_retry(|buddy| buddy.alloc_pages(count, constraint))
    }

    /// Exactly `count` pages at a multiple of `align` bytes under `constraint`
    /// ([`BuddyAllocator::alloc_aligned`]). Free them with
    /// [`free_pages`](Self::free_pages).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let p = c.alloc_aligned(1, 64 << 10, framekeep::Constraint::ANY).unwrap();
    /// assert_eq!(p.0 % (64 << 10), 0);
    /// c.free_pages(p, 1).unwrap();
    /// ```
    pub fn alloc_aligned(
        &self,
        count: usize,
        align: usize,
        constraint: Constraint,
    ) -> Result<PhysAddr, Error> {
        self.buddy_retry(|buddy| buddy.alloc_aligned(count, align, constraint))
    }

    /// Frees the allocation of exactly `count` pages at `addr`: one made
    /// here ([`alloc_pages`](Self::alloc_pages), [`alloc_aligned`](Self::alloc_aligned),
    /// [`reserve_range`](Self::reserve_range), [`alloc_in`](Self::alloc_in)),
    /// or a block from [`alloc`](Self::alloc) of `count` pages.
    ///
    /// Errors: the buddy's ([`BuddyAllocator::free_pages`]), and
    /// [`Error::DoubleFree`] for a block sitting in a cache,
    /// [`Error::OwnedBySlab`] and [`Error::OwnedByHeap`] for memory of a
    /// [`Heap`](crate::Heap) on top; nothing changes then.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// use framekeep::Error;
    /// let p = c.alloc(0).unwrap();
    /// c.free(p, 0).unwrap();                            // now in this CPU's cache
    /// assert_eq!(c.free_pages(p, 1), Err(Error::DoubleFree));
    /// ```
    pub fn free_pages(&self, addr: PhysAddr, count: usize) -> Result<(), Error> {
        self.free_run_as(addr, count as u64, TAG_NONE, |buddy| {
            buddy.free_pages(addr, count)
        })
    }

    /// Reserves the fixed range of `count` free pages at `start`
    /// ([`BuddyAllocator::reserve_range`]); release it with
    /// [`free_pages`](Self::free_pages). Pages held by a cache count as in
    /// use ([`drain_all`](Self::drain_all) first to give them back).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let r = framekeep::PhysAddr((1 << 32) + 8 * 4096);
    /// c.reserve_range(r, 4).unwrap();
    /// c.free_pages(r, 4).unwrap();
    /// ```
    pub fn reserve_range(&self, start: PhysAddr, count: usize) -> Result<(), Error> {
        self.buddy.lock().reserve_range(start, count)
    }

    /// Fills `out` with single frames under `constraint` in one lock acquisition
    /// ([`BuddyAllocator::alloc_bulk`]); how many it got.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let mut f = [framekeep::PhysAddr(0); 8];
    /// assert_eq!(c.alloc_bulk(framekeep::Constraint::ANY, &mut f), Ok(8));
    /// c.free_bulk(&f).unwrap();
    /// ```
    pub fn alloc_bulk(&self, constraint: Constraint, out: &mut [PhysAddr]) -> Result<usize, Error> {
        self.buddy_retry(|buddy| buddy.alloc_bulk(constraint, out))
    }

    /// Frees single frames in one lock acquisition, all or nothing
    /// ([`BuddyAllocator::free_bulk`]): frames from
    /// [`alloc_bulk`](Self::alloc_bulk), or from [`alloc`](Self::alloc)
    /// of order 0. A frame a cache holds, or one of a layer above, is
    /// rejected as in [`free_pages`](Self::free_pages).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// use framekeep::{Error, PhysAddr};
    /// let a = c.alloc(0).unwrap();
    /// let b = c.alloc(0).unwrap();
    /// c.free(b, 0).unwrap();                            // b is cached
    /// assert_eq!(c.free_bulk(&[a, b]).unwrap_err().error, Error::DoubleFree);
    /// c.free_bulk(&[a]).unwrap();
    /// ```
    pub fn free_bulk(&self, frames: &[PhysAddr]) -> Result<(), BulkError> {
        let mut guard = self.buddy.lock();
        // Claim the cache-handed frames, so that no free through a cache
        // can take them meanwhile; undone if anything is refused.
        for (index, frame) in frames.iter().enumerate() {
            let Some(slot) = self.tags.get(frame.0) else {
                continue;
            };
            let claimed = slot.compare_exchange(
                tag_alloc(0),
                TAG_CLAIMED,
                Ordering::Acquire,
                Ordering::Relaxed,
            );
            match claimed {
                Ok(_) | Err(TAG_NONE) => {}
                Err(actual) => {
                    self.unclaim(&frames[..index], tag_alloc(0));
                    return Err(BulkError {
                        index,
                        error: tag_error(actual, TAG_NONE),
                    });
                }
            }
        }
        let result = guard.free_bulk(frames);
        self.unclaim(
            frames,
            if result.is_ok() {
                TAG_NONE
            } else {
                tag_alloc(0)
            },
        );
        result
    }

    /// Sets every [`TAG_CLAIMED`] tag among `frames` to `to`.
    fn unclaim(&self, frames: &[PhysAddr], to: u64) {
        for frame in frames {
            if let Some(slot) = self.tags.get(frame.0)
                && slot.load(Ordering::Relaxed) == TAG_CLAIMED
            {
                slot.store(to, Ordering::Release);
            }
        }
    }

    /// Keeps `pages` pages of `zone` for requests that name it
    /// ([`BuddyAllocator::set_reserve`]).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// c.set_reserve(framekeep::Zone::Dma32, 16);
    /// assert_eq!(c.with_buddy(|b| b.reserve(framekeep::Zone::Dma32)), 16);
    /// ```
    pub fn set_reserve(&self, zone: Zone, pages: u64) {
        self.buddy.lock().set_reserve(zone, pages);
    }

    /// Gives everything cached back: every CPU's cache, then the buddy's
    /// parked blocks merged ([`BuddyAllocator::drain_hot`]). `false` if
    /// some CPU's cache could not be reached ([`drain_all`](Self::drain_all)).
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// c.free(c.alloc(0).unwrap(), 0).unwrap();
    /// assert!(c.drain());
    /// assert_eq!(c.with_buddy(|b| b.free_blocks().count()), 1); // merged whole
    /// ```
    pub fn drain(&self) -> bool {
        let all = self.drain_all();
        self.buddy.lock().drain_hot();
        all
    }

    /// Runs `f` on the buddy allocator, under its lock, for its queries
    /// ([`BuddyAllocator::free_blocks`], [`sections`](BuddyAllocator::sections),
    /// [`page_state`](BuddyAllocator::page_state), ...). Keep it short:
    /// interrupts are masked meanwhile.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// assert_eq!(c.with_buddy(|b| b.sections().count()), 1);
    /// ```
    pub fn with_buddy<R>(&self, f: impl FnOnce(&BuddyAllocator) -> R) -> R {
        f(&self.buddy.lock())
    }

    /// Turns on poisoning or zeroing of frames
    /// ([`BuddyAllocator::set_frame_options`]).
    ///
    /// # Safety
    /// As for [`BuddyAllocator::set_frame_options`]: every page registered
    /// now and later is mapped read-write at `phys + phys_offset` and
    /// used by nothing else while it is free.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// let opts = framekeep::FrameOptions { poison: true, zero_on_alloc: false };
    /// // SAFETY: no memory registered yet, and none will be.
    /// unsafe { c.set_frame_options(core::ptr::null_mut(), opts) };
    /// assert!(c.with_buddy(|b| b.frame_options().poison));
    /// ```
    pub unsafe fn set_frame_options(&self, phys_offset: *mut u8, opts: FrameOptions) {
        // SAFETY: the caller's contract is the buddy's.
        unsafe { self.buddy.lock().set_frame_options(phys_offset, opts) }
    }

    /// Turns poisoning and zeroing off again.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// c.clear_frame_options();
    /// assert_eq!(c.with_buddy(|b| b.frame_options()), Default::default());
    /// ```
    pub fn clear_frame_options(&self) {
        self.buddy.lock().clear_frame_options();
    }

    /// `count` pages at `align` for the heap, tagged `tag` under the lock.
    pub(crate) fn alloc_run_as(
        &self,
        count: usize,
        align: usize,
        tag: u64,
    ) -> Result<PhysAddr, Error> {
        self.buddy_alloc_tagged(count as u64, tag, |buddy| {
            buddy.alloc_aligned(count, align, Constraint::ANY)
        })
    }

    /// Resizes the heap's run at `addr` from `old` pages (tagged
    /// `old_tag`) to `new` pages (tagged `new_tag`) where it lies, if the
    /// pages after it are free; `Ok(false)` (nothing changed) if not.
    pub(crate) fn resize_run_as(
        &self,
        addr: PhysAddr,
        (old, old_tag): (usize, u64),
        (new, new_tag): (usize, u64),
    ) -> Result<bool, Error> {
        let mut guard = self.buddy.lock();
        if guard.frame_options() != FrameOptions::default() {
            return Ok(false); // freeing would poison or zero the contents
        }
        let slot = self.tags.get(addr.0);
        let actual = slot.map_or(TAG_NONE, |slot| slot.load(Ordering::Acquire));
        let Some(slot) = slot.filter(|_| actual == old_tag) else {
            return Err(tag_error(actual, old_tag));
        };
        guard.free_pages(addr, old)?;
        if guard.reserve_range(addr, new).is_ok() {
            slot.store(new_tag, Ordering::Release);
            return Ok(true);
        }
        // Just freed under the same lock: taking it back cannot fail.
        let _ = guard.reserve_range(addr, old);
        Ok(false)
    }
}
