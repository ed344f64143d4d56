//! The freeing calls, and the checks that make every bad free an error:
//! the one word of the page freed tells whether it starts an allocation
//! of that size.

use super::BuddyAllocator;
use super::word::{
    ST_ALLOC, ST_FREE, ST_HOT, ST_NONE, aligned_page_word, alloc_count, alloc_word, is_marked,
    marked, state, unmarked,
};
use crate::types::{Error, MAX_ORDER, PAGE_SIZE, PhysAddr};

/// An error from [`BuddyAllocator::free_bulk`]: the frame at `index` was
/// rejected and nothing was freed.
///
/// ```
/// let bulk = framekeep::BulkError { index: 3, error: framekeep::Error::DoubleFree };
/// assert_eq!(bulk.index, 3);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct BulkError {
    /// Index of the first offending frame in the slice.
    pub index: usize,
    /// Why it was rejected.
    pub error: Error,
}

impl BuddyAllocator {
    /// Frees a block from [`alloc`](Self::alloc) (or any allocation of
    /// exactly 2^`order` pages).
    ///
    /// Errors: [`Error::TooLarge`], [`Error::Misaligned`] (not aligned to
    /// the order), [`Error::NotInSection`], [`Error::DoubleFree`],
    /// [`Error::InteriorPage`], [`Error::WrongCount`].
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::{Constraint, Error};
    /// let b = a.alloc(2, Constraint::ANY).unwrap();
    /// assert_eq!(a.free(b, 1), Err(Error::WrongCount { allocated: 4 }));
    /// a.free(b, 2).unwrap();
    /// ```
    #[inline]
    pub fn free(&mut self, addr: PhysAddr, order: u32) -> Result<(), Error> {
        if order > MAX_ORDER {
            return Err(Error::TooLarge);
        }
        if addr.0 & ((PAGE_SIZE << order) - 1) != 0 {
            return Err(Error::Misaligned);
        }
        let Some((section, idx)) = self.locate(addr) else {
            return Err(Error::NotInSection);
        };
        // One word read establishes the page state: exactly an unmarked
        // allocation head of 2^order pages, or an error.
        let (word, same_chunk) = self.secs[section].read_own(idx);
        if word != alloc_word(1 << order) {
            return self.free_uncommon(section, idx, word, order);
        }
        self.on_free(section, idx, 1 << order);
        self.put_back(section, idx, order, same_chunk);
        // Frees, too, advance the section's initialisation: a workload of
        // parked pages alone takes nothing off the lists, and the free path
        // is shorter once the section is ready.
        if !self.secs[section].ready {
            self.secs[section].init_step();
        }
        Ok(())
    }

    /// [`free`](Self::free) of a page whose word is not a plain allocation
    /// head of 2^`order` pages: an aligned single page, or an error.
    #[cold]
    #[inline(never)]
    fn free_uncommon(
        &mut self,
        section: usize,
        idx: u32,
        word: u64,
        order: u32,
    ) -> Result<(), Error> {
        if order == 0 && word == aligned_page_word() {
            self.free_aligned_page(section, idx);
            return Ok(());
        }
        Err(self.free_error(section, idx, word, 1 << order))
    }

    /// Frees a single page handed out for an alignment above one page: it
    /// is parked whatever its buddy's state, so that the next such request
    /// takes it back instead of splitting a block of the alignment's order
    /// and merging it again on the next free. Like any parked page it is
    /// merged before an allocation would fail or fall back, and on
    /// `drain_hot`.
    fn free_aligned_page(&mut self, section: usize, idx: u32) {
        self.on_free(section, idx, 1);
        self.park(section, idx, 0);
    }

    /// Frees an allocation of exactly `count` pages starting at `addr`
    /// (from [`alloc_pages`](Self::alloc_pages), [`alloc_aligned`](Self::alloc_aligned),
    /// [`reserve_range`](Self::reserve_range), or [`alloc`](Self::alloc) with
    /// `count = 2^order`).
    ///
    /// Errors: [`Error::ZeroCount`], [`Error::Misaligned`] (not page
    /// aligned), [`Error::NotInSection`], [`Error::TooLarge`] (a count
    /// above 2^[`MAX_ORDER`] pages, which no allocation has),
    /// [`Error::DoubleFree`], [`Error::InteriorPage`], [`Error::WrongCount`].
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::{Constraint, Error, PhysAddr};
    /// let p = a.alloc_pages(3, Constraint::ANY).unwrap();
    /// assert_eq!(a.free_pages(PhysAddr(p.0 + 4096), 1), Err(Error::InteriorPage));
    /// a.free_pages(p, 3).unwrap();
    /// ```
    #[inline]
    pub fn free_pages(&mut self, addr: PhysAddr, count: usize) -> Result<(), Error> {
        if count == 0 {
            return Err(Error::ZeroCount);
        }
        if !addr.is_page_aligned() {
            return Err(Error::Misaligned);
        }
        let Some((section, idx)) = self.locate(addr) else {
            return Err(Error::NotInSection);
        };
        let sec = &self.secs[section];
        let (word, same_chunk) = sec.read_own(idx);
        // An aligned single page (its word is exactly a valid head of one
        // page) that `free_aligned_page` would only park: parked here.
        if count == 1
            && word == aligned_page_word()
            && !self.poisoning
            && !self.hot[sec.zone as usize % 4][0].is_full()
        {
            self.park_in_room(section, idx, 0);
            return Ok(());
        }
        self.free_run(section, idx, word, same_chunk, count as u64)
    }

    /// Checks that `addr` starts an allocation of `count` pages; returns
    /// its section, page index and word.
    #[inline(always)]
    fn check_alloc_head(&self, addr: PhysAddr, count: u64) -> Result<(usize, u32, u64), Error> {
        let Some((section, idx)) = self.locate(addr) else {
            return Err(Error::NotInSection);
        };
        let word = self.secs[section].read(idx);
        self.check_head(section, idx, word, count)?;
        Ok((section, idx, word))
    }

    /// Checks that page `idx`, whose word is `word`, starts an allocation
    /// of `count` pages.
    #[inline(always)]
    fn check_head(&self, section: usize, idx: u32, word: u64, count: u64) -> Result<(), Error> {
        if state(word) == ST_ALLOC && alloc_count(word) as u64 == count {
            return Ok(());
        }
        Err(self.free_error(section, idx, word, count))
    }

    /// Why page `idx` (word `word`) is not an allocation head of `count`
    /// pages (the caller checked that it is not an unmarked one).
    #[cold]
    #[inline(never)]
    fn free_error(&self, section: usize, idx: u32, word: u64, count: u64) -> Error {
        if count > 1 << MAX_ORDER {
            return Error::TooLarge;
        }
        match state(word) {
            ST_ALLOC if alloc_count(word) as u64 != count => Error::WrongCount {
                allocated: alloc_count(word) as u64,
            },
            // Marked by a `free_bulk` in progress: a duplicate.
            ST_ALLOC => Error::DoubleFree,
            ST_FREE | ST_HOT => Error::DoubleFree,
            _ => {
                if self.find_free_block(section, idx).is_some() {
                    Error::DoubleFree
                } else {
                    Error::InteriorPage
                }
            }
        }
    }

    /// The rest of [`free_pages`](Self::free_pages) for page `idx`, whose
    /// word is `word` (`same_chunk` as `Section::read_own` gave it): the
    /// checks, and every free its fast path leaves (an aligned page too,
    /// when frames are poisoned or its list is full).
    #[inline(never)]
    fn free_run(
        &mut self,
        section: usize,
        idx: u32,
        word: u64,
        same_chunk: u32,
        count: u64,
    ) -> Result<(), Error> {
        self.check_head(section, idx, word, count)?;
        // `count` is now the allocation's size, at most 2^MAX_ORDER pages
        // (every way of making an allocation checks that): its order
        // indexes the per-order lists.
        debug_assert!(count <= 1 << MAX_ORDER);
        if word == aligned_page_word() {
            self.free_aligned_page(section, idx);
            return Ok(());
        }
        self.on_free(section, idx, count);
        self.secs[section].raw_write(idx, ST_NONE);
        if count.is_power_of_two() && (self.secs[section].base + idx as u64) & (count - 1) == 0 {
            self.put_back(section, idx, count.trailing_zeros(), same_chunk);
        } else {
            self.release(section, idx, count);
        }
        Ok(())
    }

    /// Frees many single frames in one call. All of them are checked first
    /// (including duplicates within `frames`); if any is bad, nothing is
    /// freed and the first bad index is reported.
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::{Constraint, Error, PhysAddr};
    /// let mut f = [PhysAddr(0); 2];
    /// a.alloc_bulk(Constraint::ANY, &mut f).unwrap();
    /// let bulk = a.free_bulk(&[f[0], f[1], f[0]]).unwrap_err();
    /// assert_eq!((bulk.index, bulk.error), (2, Error::DoubleFree));
    /// a.free_bulk(&f).unwrap();
    /// ```
    pub fn free_bulk(&mut self, frames: &[PhysAddr]) -> Result<(), BulkError> {
        if frames.is_empty() {
            return Err(BulkError {
                index: 0,
                error: Error::ZeroCount,
            });
        }
        // Every frame is checked and marked first, so that a duplicate
        // finds its twin marked and a bad frame frees nothing.
        for (i, &frame) in frames.iter().enumerate() {
            let head = if frame.is_page_aligned() {
                self.check_alloc_head(frame, 1)
            } else {
                Err(Error::Misaligned)
            };
            match head {
                Ok((section, idx, word)) if !is_marked(word) => {
                    self.secs[section].write(idx, marked(word))
                }
                Ok(_) => return Err(self.unmark(frames, i, Error::DoubleFree)),
                Err(error) => return Err(self.unmark(frames, i, error)),
            }
        }
        for &frame in frames {
            if let Some((section, idx)) = self.locate(frame) {
                self.on_free(section, idx, 1);
                self.secs[section].write(idx, ST_NONE);
                self.release(section, idx, 1);
            }
        }
        Ok(())
    }

    /// Takes the marks of `free_bulk` off the first `upto` frames, which
    /// it checked and marked before frame `upto` failed with `error`.
    fn unmark(&mut self, frames: &[PhysAddr], upto: usize, error: Error) -> BulkError {
        for &frame in &frames[..upto] {
            if let Some((section, idx)) = self.locate(frame) {
                let word = self.secs[section].read(idx);
                self.secs[section].write(idx, unmarked(word));
            }
        }
        BulkError { index: upto, error }
    }
}

#[cfg(test)]
mod tests;
