//! Allocation through the per-CPU caches: the fast path (a pop on this
//! CPU's list), the refill from the buddy, and the tags a block leaves
//! with.

use core::sync::atomic::{AtomicU64, Ordering};

use super::caches::PageCaches;
use super::lists::PCP_ORDERS;
use super::tags::{TAG_CACHED, TAG_NONE, handout_tag, is_frames_alloc};
use crate::buddy::BuddyAllocator;
use crate::cpu::CpuLocal;
use crate::types::{Constraint, Error, MAX_ORDER, PhysAddr};

impl<P: CpuLocal, const N: usize> PageCaches<P, N> {
    /// Allocates a block of 2^`order` pages (any zone, Normal first).
    /// Orders `0..=3` come from the current CPU's cache (refilled in a
    /// batch when empty); if the buddy is out of memory, every CPU's cache
    /// is drained ([`drain_all`](Self::drain_all)) and the buddy asked
    /// again before [`Error::OutOfMemory`] is returned. Called with
    /// interrupts masked, only the current CPU's cache can be drained.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let b = c.alloc(3).unwrap();
    /// assert_eq!(b.0 % (8 * 4096), 0);
    /// c.free(b, 3).unwrap();
    /// ```
    #[inline]
    pub fn alloc(&self, order: u32) -> Result<PhysAddr, Error> {
        let order_index = order as usize;
        if order_index >= PCP_ORDERS {
            return self.buddy_alloc(order, Constraint::ANY, TAG_NONE);
        }
        self.alloc_as::<0>(order_index)
    }

    /// [`alloc`](Self::alloc) of a cached order `order` for `OWNER`, handing
    /// the block out with [`handout_tag`]`(OWNER, order)` (which its free must
    /// present again). A constant owner gives each owner's fast path its
    /// own copy, inlined where it is used.
    #[inline(always)]
    pub(crate) fn alloc_as<const OWNER: u64>(&self, order: usize) -> Result<PhysAddr, Error> {
        self.alloc_tagged_as::<OWNER>(order).map(|(addr, _)| addr)
    }

    /// [`alloc_as`](Self::alloc_as), also returning the block's tag when
    /// the fast path had it at hand (`None` from the slow paths).
    #[inline(always)]
    pub(crate) fn alloc_tagged_as<const OWNER: u64>(
        &self,
        order: usize,
    ) -> Result<(PhysAddr, Option<&AtomicU64>), Error> {
        let tag = handout_tag(OWNER, order);
        let hit = self.cpus.local::<P, _>(|cpu, lists| {
            let frame = lists.pop(order)?;
            self.publish(cpu, order, lists.len(order));
            let slot = self.hand_out(cpu, frame, order, tag);
            Some((PhysAddr(frame), slot))
        });
        // The slow paths run after the pinned section, when no borrow of
        // the lists is live (they enter the per-CPU lists again).
        match hit {
            Some(Some(hit)) => Ok(hit),
            Some(None) => self.alloc_refill(order, tag).map(|addr| (addr, None)),
            None => self
                .buddy_alloc(order as u32, Constraint::ANY, tag)
                .map(|addr| (addr, None)),
        }
    }

    /// [`alloc`](Self::alloc) after finding the current CPU's list empty:
    /// refill it (a new section: the CPU may have changed), or go
    /// to the buddy if this order is not cached.
    #[inline(never)]
    pub(super) fn alloc_refill(&self, order: usize, tag: u64) -> Result<PhysAddr, Error> {
        if self.cfg.high[order] != 0 {
            let refilled = self.cpus.local::<P, _>(|cpu, lists| {
                let frame = lists.alloc(order, self.cfg.batch[order] as usize, |out| {
                    self.refill(cpu, order, out)
                });
                self.publish(cpu, order, lists.len(order));
                let frame = frame?;
                self.hand_out(cpu, frame, order, tag);
                Some(PhysAddr(frame))
            });
            if let Some(Some(frame)) = refilled {
                return Ok(frame);
            }
        }
        self.buddy_alloc(order as u32, Constraint::ANY, tag)
    }

    /// A block straight from the buddy, tagged `tag` (nothing for
    /// [`TAG_NONE`]); on out of memory, again after draining every cache.
    #[cold]
    pub(crate) fn buddy_alloc(
        &self,
        order: u32,
        constraint: Constraint,
        tag: u64,
    ) -> Result<PhysAddr, Error> {
        let pages = 1 << order.min(MAX_ORDER);
        self.buddy_alloc_tagged(pages, tag, |buddy| buddy.alloc(order, constraint))
    }

    /// Runs the buddy allocation `alloc` of `pages` pages under the lock
    /// (again after draining every cache if it runs out of memory) and
    /// tags the block's head with `tag` under the same lock.
    pub(crate) fn buddy_alloc_tagged(
        &self,
        pages: u64,
        tag: u64,
        mut alloc: impl FnMut(&mut BuddyAllocator) -> Result<PhysAddr, Error>,
    ) -> Result<PhysAddr, Error> {
        self.buddy_retry(|buddy| {
            let addr = alloc(buddy)?;
            self.tag_new(buddy, addr, pages, tag)?;
            Ok(addr)
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

    /// Tags the head of `count` pages at `addr`, just allocated from
    /// `buddy` under its lock. A page outside every tag region cannot carry
    /// an owner: plain blocks go out untagged, owned ones are given back.
    pub(crate) fn tag_new(
        &self,
        buddy: &mut BuddyAllocator,
        addr: PhysAddr,
        count: u64,
        tag: u64,
    ) -> Result<(), Error> {
        if tag == TAG_NONE {
            return Ok(());
        }
        match self.tags.prepare(addr.0) {
            Some(slot) => slot.store(tag, Ordering::Release),
            None if is_frames_alloc(tag) => {}
            None => {
                // Just allocated under this lock: giving it back cannot fail.
                let _ = buddy.free_pages(addr, count as usize);
                return Err(Error::OutOfMemory);
            }
        }
        Ok(())
    }

    /// Fills `out` with up to `out.len()` blocks of order `order_index` under one
    /// lock acquisition, each tagged as cached while the lock is held
    /// (blocks whose pages have no tag are given back: a cache holds only
    /// blocks whose frees it can check).
    #[inline(never)]
    pub(super) fn refill(&self, cpu: usize, order_index: usize, out: &mut [u64]) -> usize {
        let order = order_index as u32;
        let mut guard = self.buddy.lock();
        let mut count = 0;
        if order == 0 {
            count = guard
                .alloc_bulk(Constraint::ANY, PhysAddr::from_u64s_mut(out))
                .unwrap_or(0);
        } else {
            while count < out.len() {
                match guard.alloc(order, Constraint::ANY) {
                    Ok(addr) => {
                        out[count] = addr.0;
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        let mut kept = 0;
        for i in 0..count {
            let frame = out[i];
            match self.tags.prepare(frame) {
                Some(slot) => {
                    slot.store(TAG_CACHED, Ordering::Relaxed);
                    out[kept] = frame;
                    kept += 1;
                }
                // Just allocated under this lock: giving it back cannot fail.
                None => {
                    let _ = guard.free(PhysAddr(frame), order);
                }
            }
        }
        drop(guard);
        for &frame in &out[..kept] {
            self.add_held(cpu, frame, 1 << order);
        }
        kept
    }

    /// Bookkeeping for block `frame` of order `order` leaving `cpu`'s cache for
    /// its user: tagged `tag`, no longer counted as held. A plain store:
    /// the block is this CPU's alone while it is popped. Returns the tag.
    #[inline(always)]
    pub(super) fn hand_out(
        &self,
        cpu: usize,
        frame: u64,
        order: usize,
        tag: u64,
    ) -> Option<&AtomicU64> {
        self.add_held(cpu, frame, -(1i64 << order));
        self.tags.store_owned(frame, tag)
    }
}
