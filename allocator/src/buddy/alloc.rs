//! The allocating calls: a block of an order, an exact page count, an
//! aligned run, a fixed range, bulk single frames; and handing a block
//! out (its head word, frame options, its address).

use super::hot::HOT_ORDERS;
use super::word::{ST_HOT, ST_NONE, aligned_page_word, alloc_word, state};
use super::{BuddyAllocator, ceil_log2};
use crate::types::{Constraint, Error, MAX_ORDER, PAGE_SIZE, PhysAddr, Zone};

impl BuddyAllocator {
    /// Allocates a block of 2^`order` pages, aligned to its size.
    ///
    /// Errors: [`Error::TooLarge`] for `order > MAX_ORDER`,
    /// [`Error::OutOfMemory`] if no zone allowed by `constraint` has such a
    /// block (lower zones keep their [`reserve`](Self::set_reserve)). An error
    /// leaves every allocation and the free page count unchanged; out of
    /// memory may merge parked free blocks first, which changes how free
    /// memory is split (per-order counts) but not how much is free (see
    /// [`Error::OutOfMemory`]). The same holds for every allocating call.
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(4096);
    /// use framekeep::{Constraint, Zone};
    /// let b = a.alloc(3, Constraint::Zone(Zone::Dma32)).unwrap();
    /// assert!(b.0 < 1 << 32 && b.0 % (8 * 4096) == 0);
    /// a.free(b, 3).unwrap();
    /// ```
    #[inline]
    pub fn alloc(&mut self, order: u32, constraint: Constraint) -> Result<PhysAddr, Error> {
        if let Constraint::Zone(zone) = constraint {
            // The zone requests for `zone` start in: `zone` unless it has
            // no memory (see `start_zone`). Looked up before the hot list,
            // so that a machine without memory in the zone asked for still
            // takes the inline hit path instead of a call on every miss.
            let start = self.start_zone(zone);
            if (order as usize) < HOT_ORDERS
                && let Some((section, idx)) = self.hot[start as usize % 4][order as usize].pop()
            {
                return self.hand_out(section, idx, 1 << order);
            }
            return self.alloc_in_zone(order, start);
        }
        self.alloc_from_lists(order, constraint)
    }

    /// [`alloc`](Self::alloc) past the hot list of zone `zone` (where the
    /// request starts), when that zone has a big enough block; otherwise
    /// [`alloc_from_lists`](Self::alloc_from_lists).
    /// (A `Constraint` is passed through memory, a `Zone` in a register.)
    #[inline(never)]
    fn alloc_in_zone(&mut self, order: u32, zone: Zone) -> Result<PhysAddr, Error> {
        if order > MAX_ORDER {
            return Err(Error::TooLarge);
        }
        let index = zone as usize % 4;
        let listed = self.zones[index].order_mask & (u32::MAX << order);
        if listed == 0 && self.parked_orders(index, order) == 0 {
            return self.alloc_from_lists(order, Constraint::Zone(zone));
        }
        let (section, idx) = self.take_from(index, order, listed);
        self.hand_out(section, idx, 1 << order)
    }

    /// [`alloc`](Self::alloc) past the hot lists.
    #[inline(never)]
    fn alloc_from_lists(&mut self, order: u32, constraint: Constraint) -> Result<PhysAddr, Error> {
        if order > MAX_ORDER {
            return Err(Error::TooLarge);
        }
        let Some((section, idx)) = self.take(order, constraint) else {
            return Err(Error::OutOfMemory);
        };
        self.hand_out(section, idx, 1 << order)
    }

    /// Makes the block just taken at `idx` (off a free or hot list, so its
    /// head word is valid) an allocation of `pages` pages: head word,
    /// poison check and zeroing, address.
    #[inline(always)]
    fn hand_out(&mut self, section: usize, idx: u32, pages: u64) -> Result<PhysAddr, Error> {
        self.hand_out_as(section, idx, pages, alloc_word(pages as u32))
    }

    /// [`hand_out`](Self::hand_out) with head word `word` (an allocation
    /// head of `pages` pages, possibly flagged).
    #[inline(always)]
    fn hand_out_as(
        &mut self,
        section: usize,
        idx: u32,
        pages: u64,
        word: u64,
    ) -> Result<PhysAddr, Error> {
        self.secs[section].raw_write(idx, word);
        self.on_alloc(section, idx, pages)?;
        Ok(self.addr_of(section, idx))
    }

    /// Allocates exactly `count` contiguous pages, aligned to
    /// 2^ceil(log2(count)) pages; the rest of that block stays free.
    /// Where it finds them is said at [`alloc_aligned`](Self::alloc_aligned)
    /// (this is `alloc_aligned(count, 4096, constraint)`).
    ///
    /// Errors: [`Error::ZeroCount`], [`Error::TooLarge`] (more than 2^18
    /// pages), [`Error::OutOfMemory`].
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::Constraint;
    /// let before = a.stats().free_pages();
    /// let p = a.alloc_pages(5, Constraint::ANY).unwrap();
    /// assert_eq!(a.stats().free_pages(), before - 5);
    /// a.free_pages(p, 5).unwrap();
    /// ```
    pub fn alloc_pages(&mut self, count: usize, constraint: Constraint) -> Result<PhysAddr, Error> {
        self.alloc_run(count as u64, 0, constraint)
    }

    /// Allocates exactly `count` pages starting at a multiple of `align`
    /// bytes (a power of two; values up to 4096 mean page alignment). Takes
    /// one free block of order k = max(ceil(log2(count)), log2(align/4096))
    /// and gives everything after the first `count` pages back: 1 page at
    /// 2 MiB alignment costs 1 page. Free it with [`free_pages`](Self::free_pages).
    ///
    /// Where the pages come from, exactly: the start is always a multiple
    /// of 2^k pages. The request succeeds if a free block of order k (or
    /// above) lies where `constraint` allows, or else if, in a section
    /// where `constraint` allows, the first `count` pages of the last
    /// 2^k-aligned window are free, a window that the section's end cuts
    /// short so that no such block can exist there (an aligned page near
    /// the end of a section, say). A run of `count` free pages made of smaller blocks anywhere
    /// else (between allocated pages) is not looked for: take such a run
    /// at a known address with [`reserve_range`](Self::reserve_range).
    ///
    /// A single page at an alignment above 4 KiB is parked on the zone's
    /// hot list when freed, even though its buddy is free, and the next
    /// such request takes the newest parked page with the alignment (at
    /// most [`HOT_CAP`](crate::HOT_CAP) looks) before it splits a block: a repeated
    /// alloc/free of such pages costs no split and no merge. Parked pages
    /// are merged as usual ([`drain_hot`](Self::drain_hot)).
    ///
    /// Errors: [`Error::ZeroCount`], [`Error::BadAlignment`],
    /// [`Error::TooLarge`] (count above 2^18 pages or align above 1 GiB),
    /// [`Error::OutOfMemory`].
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(2048);
    /// # use framekeep::Constraint;
    /// let p = a.alloc_aligned(1, 2 << 20, Constraint::ANY).unwrap();
    /// assert_eq!(p.0 % (2 << 20), 0);
    /// assert_eq!(a.stats().free_pages(), 2047);
    /// a.free_pages(p, 1).unwrap();
    /// ```
    #[inline]
    pub fn alloc_aligned(
        &mut self,
        count: usize,
        align: usize,
        constraint: Constraint,
    ) -> Result<PhysAddr, Error> {
        if !align.is_power_of_two() {
            return Err(Error::BadAlignment);
        }
        let align_order = ceil_log2((align as u64).div_ceil(PAGE_SIZE));
        if align_order > MAX_ORDER {
            return Err(Error::TooLarge);
        }
        if count == 1 && align_order > 0 {
            // A repeated alloc/free of such pages finds its page newest on
            // the hot list: taken here, inline, where the checks above fold
            // for constant arguments; the full scan is out of line.
            if let Constraint::Zone(zone) = constraint {
                let secs = &self.secs;
                if let Some((section, idx)) = self.hot[zone as usize % 4][0]
                    .pop_if(|section, idx| secs[section].starts_aligned(idx, align_order))
                {
                    return self.hand_out_as(section, idx, 1, aligned_page_word());
                }
            }
            return self.alloc_aligned_page(align_order, constraint);
        }
        self.alloc_run(count as u64, align_order, constraint)
    }

    /// One page aligned to 2^`align_order` pages (> 1): a parked page of
    /// the zone with that alignment if there is one (the newest; at most
    /// [`HOT_CAP`](crate::HOT_CAP) looks), else the first page of a block of that order,
    /// the rest given back. Either way it is marked so that its free parks
    /// it again (see `free_aligned_page`).
    #[inline(never)]
    fn alloc_aligned_page(
        &mut self,
        align_order: u32,
        constraint: Constraint,
    ) -> Result<PhysAddr, Error> {
        if let Constraint::Zone(zone) = constraint {
            let start = self.start_zone(zone);
            let secs = &self.secs;
            if let Some((section, idx)) = self.hot[start as usize % 4][0]
                .take_newest(|section, idx| secs[section].starts_aligned(idx, align_order))
            {
                return self.hand_out_as(section, idx, 1, aligned_page_word());
            }
        }
        let (section, idx) = self.take_run(1, align_order, constraint)?;
        self.hand_out_as(section, idx, 1, aligned_page_word())
    }

    /// `count` pages at 2^`align_order`-page alignment, handed out.
    fn alloc_run(
        &mut self,
        count: u64,
        align_order: u32,
        constraint: Constraint,
    ) -> Result<PhysAddr, Error> {
        let (section, idx) = self.take_run(count, align_order, constraint)?;
        self.hand_out(section, idx, count)
    }

    /// Reserves the fixed range of `count` pages at `start` (all of it must
    /// be free and inside one section), as one allocation: release it with
    /// [`free_pages`](Self::free_pages)`(start, count)`. Frame contents are
    /// not touched (no poison check, no zeroing).
    ///
    /// Errors: [`Error::ZeroCount`], [`Error::TooLarge`] (more than
    /// 2^[`MAX_ORDER`] pages: no allocation is larger, so no free could
    /// give it back), [`Error::Misaligned`], [`Error::NotInSection`],
    /// [`Error::RangeCrossesSection`], [`Error::RangeInUse`] (nothing
    /// reserved then).
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::{Error, PhysAddr};
    /// let base = a.sections().next().unwrap().start;
    /// let r = PhysAddr(base.0 + 3 * 4096);
    /// a.reserve_range(r, 10).unwrap();
    /// assert_eq!(a.reserve_range(PhysAddr(base.0 + 12 * 4096), 2), Err(Error::RangeInUse));
    /// a.free_pages(r, 10).unwrap();
    /// ```
    pub fn reserve_range(&mut self, start: PhysAddr, count: usize) -> Result<(), Error> {
        if count == 0 {
            return Err(Error::ZeroCount);
        }
        // The limit every allocation has: the free path relies on it (a
        // run's order indexes the per-order lists).
        if count as u64 > 1 << MAX_ORDER {
            return Err(Error::TooLarge);
        }
        if !start.is_page_aligned() {
            return Err(Error::Misaligned);
        }
        let (section, idx) = self.locate(start).ok_or(Error::NotInSection)?;
        // Both terms are below 2^32: no overflow.
        let end = idx as u64 + count as u64;
        if end > self.secs[section].pages as u64 {
            return Err(Error::RangeCrossesSection);
        }
        if !self.range_is_free(section, idx, count as u64) {
            return Err(Error::RangeInUse);
        }
        self.carve(section, idx, count as u64);
        Ok(())
    }

    /// Whether every page of `[idx, idx + count)` (inside section
    /// `section`) is free, parked or not.
    pub(super) fn range_is_free(&self, section: usize, idx: u32, count: u64) -> bool {
        let end = idx as u64 + count;
        let mut pos = idx as u64;
        while pos < end {
            let Some((head, order)) = self.find_free_block(section, pos as u32) else {
                return false;
            };
            pos = head as u64 + (1u64 << order);
        }
        true
    }

    /// Makes the free range `[idx, idx + count)` of section `section` (see
    /// [`range_is_free`](Self::range_is_free)) an allocation of `count`
    /// pages: takes the free blocks it overlaps off their lists and gives
    /// back their parts outside it. The head word is valid afterwards.
    pub(super) fn carve(&mut self, section: usize, idx: u32, count: u64) {
        if self.secs[section].pending {
            self.materialise(section);
        }
        let end = idx as u64 + count;
        let mut pos = idx as u64;
        while pos < end {
            let Some((head, order)) = self.find_free_block(section, pos as u32) else {
                debug_assert!(false, "carve of a range that is not free");
                return;
            };
            let word = self.secs[section].read(head);
            if state(word) == ST_HOT {
                self.hot_remove(section, head, order, word);
            } else {
                self.unlink(section, head, order, word);
            }
            // No longer a free head (a piece may be pushed here again below).
            self.secs[section].raw_write(head, ST_NONE);
            let block_end = head as u64 + (1u64 << order);
            self.give_back(section, head as u64, (idx as u64).max(head as u64));
            self.give_back(section, end.min(block_end), block_end);
            pos = block_end;
        }
        self.secs[section].write(idx, alloc_word(count as u32));
    }

    /// Allocates up to `out.len()` single frames under `constraint` in one
    /// call and returns how many were allocated (fewer only when memory
    /// ran out).
    ///
    /// Errors: [`Error::ZeroCount`] for an empty `out`,
    /// [`Error::OutOfMemory`] if not even one frame was available,
    /// [`Error::Corrupted`] (all frames of this call freed again).
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::{Constraint, PhysAddr};
    /// let mut frames = [PhysAddr(0); 16];
    /// assert_eq!(a.alloc_bulk(Constraint::ANY, &mut frames), Ok(16));
    /// a.free_bulk(&frames).unwrap();
    /// ```
    pub fn alloc_bulk(
        &mut self,
        constraint: Constraint,
        out: &mut [PhysAddr],
    ) -> Result<usize, Error> {
        if out.is_empty() {
            return Err(Error::ZeroCount);
        }
        for i in 0..out.len() {
            let frame = self
                .take(0, constraint)
                .ok_or(Error::OutOfMemory)
                .and_then(|(section, idx)| self.hand_out(section, idx, 1));
            match frame {
                Ok(addr) => out[i] = addr,
                Err(Error::OutOfMemory) if i > 0 => return Ok(i),
                Err(error) => {
                    for &taken in &out[..i] {
                        // Just allocated by us: cannot fail.
                        let _ = self.free_pages(taken, 1);
                    }
                    return Err(error);
                }
            }
        }
        Ok(out.len())
    }
}

#[cfg(test)]
mod tests;
