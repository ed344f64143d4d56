//! Frees through the per-CPU caches: claiming a block by its tag, the fast
//! path (a push on this CPU's list), draining beyond `high`, and frees
//! that go to the buddy, checked under its lock.

use core::sync::atomic::Ordering;

use super::caches::PageCaches;
use super::lists::PCP_ORDERS;
use super::tags::{
    TAG_CACHED, TAG_NONE, handout_tag, is_frames_alloc, tag_alloc, tag_error, tag_order,
};
use crate::buddy::BuddyAllocator;
use crate::cpu::CpuLocal;
use crate::types::{Error, MAX_ORDER, PAGE_SIZE, PhysAddr};

impl<P: CpuLocal, const N: usize> PageCaches<P, N> {
    /// Frees `frames` (all of `order`, all held by `cpu`'s cache) to the
    /// buddy under one lock acquisition, their tags cleared under it.
    #[inline(never)]
    pub(super) fn drain_to_buddy(&self, cpu: usize, order: u32, frames: &[u64]) {
        let mut guard = self.buddy.lock();
        for &frame in frames {
            if let Some(slot) = self.tags.get(frame) {
                slot.store(TAG_NONE, Ordering::Relaxed);
            }
        }
        if order == 0 {
            // Frames a cache holds are allocated in the buddy's view: this cannot fail.
            let _ = guard.free_bulk(PhysAddr::from_u64s(frames));
        } else {
            for &frame in frames {
                let _ = guard.free(PhysAddr(frame), order);
            }
        }
        drop(guard);
        for &frame in frames {
            self.add_held(cpu, frame, -(1i64 << order));
        }
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
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// use framekeep::Error;
    /// let b = c.alloc(1).unwrap();
    /// assert_eq!(c.free(b, 0), Err(Error::WrongCount { allocated: 2 }));
    /// c.free(b, 1).unwrap();
    /// ```
    #[inline]
    pub fn free(&self, addr: PhysAddr, order: u32) -> Result<(), Error> {
        let order_index = order as usize;
        if order_index >= PCP_ORDERS {
            if order > MAX_ORDER {
                return Err(Error::TooLarge);
            }
            if addr.0 & ((PAGE_SIZE << order) - 1) != 0 {
                return Err(Error::Misaligned);
            }
            let count = 1u64 << order;
            return self.free_run_as(addr, count, TAG_NONE, |buddy| buddy.free(addr, order));
        }
        self.free_as::<true, 0>(addr, order_index)
    }

    /// [`free`](Self::free) of a block of cached order `order` handed out to
    /// `OWNER` (see [`alloc_as`](Self::alloc_as)). `ATOMIC` claims the tag with a compare-exchange, which
    /// safe callers need (nothing stops two of them freeing one block at
    /// once); the heap's frees, whose contract rules that out, check and
    /// store it with plain accesses.
    #[inline(always)]
    pub(crate) fn free_as<const ATOMIC: bool, const OWNER: u64>(
        &self,
        addr: PhysAddr,
        order: usize,
    ) -> Result<(), Error> {
        if addr.0 & ((PAGE_SIZE << order) - 1) != 0 {
            return Err(Error::Misaligned);
        }
        self.free_aligned_as::<ATOMIC, OWNER>(addr, order)
    }

    /// [`free_as`](Self::free_as) of an address known to be aligned to
    /// its order (a [`Block`](crate::Block)'s).
    #[inline(always)]
    pub(super) fn free_aligned_as<const ATOMIC: bool, const OWNER: u64>(
        &self,
        addr: PhysAddr,
        order: usize,
    ) -> Result<(), Error> {
        let tag = handout_tag(OWNER, order);
        let Some(slot) = self.tags.get(addr.0) else {
            // No tag yet reads as none: the buddy's block, or nobody's.
            return self.free_mismatch(addr, order, TAG_NONE, tag);
        };
        if ATOMIC {
            if let Err(actual) =
                slot.compare_exchange(tag, TAG_CACHED, Ordering::Acquire, Ordering::Relaxed)
            {
                return self.free_mismatch(addr, order, actual, tag);
            }
        } else {
            let actual = slot.load(Ordering::Acquire);
            if actual != tag {
                return self.free_mismatch(addr, order, actual, tag);
            }
            slot.store(TAG_CACHED, Ordering::Relaxed);
        }
        // Claimed: the block is this free's alone now.
        self.cache_claimed(addr, order)
    }

    /// Puts a block whose tag this free claimed (now [`TAG_CACHED`]) into
    /// the current CPU's list; the slow paths run after the pinned section,
    /// as in `alloc`.
    #[inline(always)]
    pub(super) fn cache_claimed(&self, addr: PhysAddr, order: usize) -> Result<(), Error> {
        let high = self.cfg.high[order] as usize;
        let pushed = self.cpus.local::<P, _>(|cpu, lists| {
            let pushed = lists.push(order, addr.0, high);
            if pushed {
                self.publish(cpu, order, lists.len(order));
                self.add_held(cpu, addr.0, 1 << order);
            }
            pushed
        });
        if pushed == Some(true) {
            return Ok(());
        }
        self.cache_missed(addr, order, pushed.is_some())
    }

    /// [`cache_claimed`](Self::cache_claimed) when the push did not
    /// happen: the list was at `high` (`has_cache`), or this CPU has no
    /// cache.
    #[cold]
    #[inline(never)]
    fn cache_missed(&self, addr: PhysAddr, order: usize, has_cache: bool) -> Result<(), Error> {
        if has_cache {
            self.free_overflow(addr, order)
        } else {
            self.release_claimed(addr, order)
        }
    }

    /// A cached-order free whose tag is `actual`, not the `expected` one.
    #[cold]
    #[inline(never)]
    pub(super) fn free_mismatch(
        &self,
        addr: PhysAddr,
        order: usize,
        actual: u64,
        expected: u64,
    ) -> Result<(), Error> {
        if actual == TAG_NONE && expected == tag_alloc(order) {
            return self.free_run_as(addr, 1 << order, TAG_NONE, |buddy| {
                buddy.free(addr, order as u32)
            });
        }
        Err(tag_error(actual, expected))
    }

    /// [`free`](Self::free) when the current CPU's list is at `high` (or
    /// the order is not cached): push after draining a batch, in a new
    /// section, or give the (claimed) block to the buddy.
    #[inline(never)]
    pub(super) fn free_overflow(&self, addr: PhysAddr, order: usize) -> Result<(), Error> {
        let cached = self.cpus.local::<P, _>(|cpu, lists| {
            if self.cfg.high[order] == 0 {
                return false;
            }
            self.add_held(cpu, addr.0, 1 << order);
            let (high, batch) = (
                self.cfg.high[order] as usize,
                self.cfg.batch[order] as usize,
            );
            lists.free(order, addr.0, high, batch, |frames| {
                self.drain_to_buddy(cpu, order as u32, frames)
            });
            self.publish(cpu, order, lists.len(order));
            true
        });
        if cached == Some(true) {
            return Ok(());
        }
        self.release_claimed(addr, order)
    }

    /// Gives a block whose tag this free claimed (now [`TAG_CACHED`]) to
    /// the buddy.
    #[cold]
    #[inline(never)]
    pub(super) fn release_claimed(&self, addr: PhysAddr, order: usize) -> Result<(), Error> {
        let mut guard = self.buddy.lock();
        if let Some(slot) = self.tags.get(addr.0) {
            slot.store(TAG_NONE, Ordering::Relaxed);
        }
        guard.free(addr, order as u32)
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
        let mut guard = self.buddy.lock();
        let tag = self.tags.get(addr.0);
        let actual = tag.map_or(TAG_NONE, |slot| slot.load(Ordering::Acquire));
        let ours = actual == expected
            || (expected == TAG_NONE
                && is_frames_alloc(actual)
                && 1u64 << tag_order(actual) == count);
        if !ours {
            return Err(tag_error(actual, expected));
        }
        let Some(slot) = tag.filter(|_| actual != TAG_NONE) else {
            return release(&mut guard);
        };
        if slot
            .compare_exchange(actual, TAG_NONE, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // A free through the cache claimed it first.
            return Err(Error::DoubleFree);
        }
        let result = release(&mut guard);
        if result.is_err() {
            slot.store(actual, Ordering::Release);
        }
        result
    }
}
