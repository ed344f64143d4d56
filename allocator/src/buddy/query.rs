//! Looking at the allocator without changing it: the state of a page,
//! every free block, the registered sections, statistics. Pending
//! sections answer from their pieces exactly as their lists would.

use super::hot::{HOT_CAP, HOT_ORDERS};
use super::section::{LISTS, list_order};
use super::stats::{Stats, ZoneStats};
use super::word::{NIL, ST_ALLOC, alloc_count, free_next, state};
use super::{BuddyAllocator, set_bits};
use crate::types::{Error, MAX_SECTIONS, PAGE_SHIFT, PhysAddr, Zone};

/// What one page currently is.
///
/// ```
/// use framekeep::PageState;
/// let state = PageState::Allocated { pages: 5 };
/// assert_ne!(state, PageState::Interior);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum PageState {
    /// Inside the free block starting at `block`, of `order`.
    Free {
        /// First page of the free block.
        block: PhysAddr,
        /// Order of the free block.
        order: u32,
    },
    /// First page of an allocation of `pages` pages.
    Allocated {
        /// Size of the allocation in pages.
        pages: u64,
    },
    /// An allocated page that is not the first page of its allocation.
    Interior,
}

/// A free block, as yielded by [`BuddyAllocator::free_blocks`].
///
/// ```
/// use framekeep::{FreeBlock, PhysAddr, Zone};
/// let b = FreeBlock { addr: PhysAddr(0), order: 0, zone: Zone::Dma, hot: false };
/// assert_eq!(b.pages(), 1);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug, Hash)]
pub struct FreeBlock {
    /// First page.
    pub addr: PhysAddr,
    /// Order (the block has 2^order pages).
    pub order: u32,
    /// Zone of the block.
    pub zone: Zone,
    /// Parked on a hot list: free, but not merged with a free buddy until
    /// it leaves the list (see [`BuddyAllocator::drain_hot`]).
    pub hot: bool,
}

impl FreeBlock {
    /// Number of pages in the block (`u64::MAX` for an order of 64 or
    /// more, which only a hand-made `FreeBlock` can have).
    ///
    /// ```
    /// # use framekeep::{FreeBlock, PhysAddr, Zone};
    /// let b = FreeBlock { addr: PhysAddr(0), order: 9, zone: Zone::Dma, hot: false };
    /// assert_eq!(b.pages(), 512);
    /// ```
    pub const fn pages(&self) -> u64 {
        // The fields are public: an order of 64 or more (never one the
        // allocator yields) saturates instead of overflowing the shift.
        match 1u64.checked_shl(self.order) {
            Some(n) => n,
            None => u64::MAX,
        }
    }
}

/// A registered (zone-split) section, as yielded by [`BuddyAllocator::sections`].
///
/// ```
/// let mut a = framekeep::BuddyAllocator::new();
/// assert_eq!(a.sections().count(), 0);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct SectionInfo {
    /// First managed page.
    pub start: PhysAddr,
    /// Number of managed pages.
    pub pages: u64,
    /// Zone of every page in the section.
    pub zone: Zone,
    /// Free pages in the section.
    pub free_pages: u64,
    /// Start of the [`BuddyAllocator::add_section`] call this piece came from
    /// (pass it to [`BuddyAllocator::remove_section`]).
    pub registered_at: PhysAddr,
}

/// Iterator returned by [`BuddyAllocator::free_blocks`].
///
/// ```
/// # let a = framekeep::doc_allocator!(64);
/// let it: framekeep::FreeBlocks<'_> = a.free_blocks();
/// assert_eq!(it.count(), 1);
/// ```
pub struct FreeBlocks<'a> {
    allocator: &'a BuddyAllocator,
    /// Section slots not visited yet.
    slots_left: u64,
    /// The section being visited (`usize::MAX` before the first).
    section: usize,
    /// Its list being visited (`order * BUCKETS + bucket`).
    list: usize,
    /// The next block of that list, or NIL.
    next_idx: u32,
    /// Position in the hot lists once the buddy lists are done:
    /// `(zone * HOT_ORDERS + order) * HOT_CAP + i`.
    hot_pos: usize,
}

impl FreeBlocks<'_> {
    /// The next parked block.
    fn next_hot(&mut self) -> Option<FreeBlock> {
        while self.hot_pos < 3 * HOT_ORDERS * HOT_CAP {
            let (list, i) = (self.hot_pos / HOT_CAP, self.hot_pos % HOT_CAP);
            let zone = list / HOT_ORDERS;
            let order = list - zone * HOT_ORDERS;
            let hot = &self.allocator.hot.as_flattened()[list];
            if i >= hot.len() {
                self.hot_pos = (list + 1) * HOT_CAP;
                continue;
            }
            self.hot_pos += 1;
            let (section, idx) = hot.get(i);
            return Some(FreeBlock {
                addr: self.allocator.addr_of(section, idx),
                order: order as u32,
                zone: Zone::from_index(zone),
                hot: true,
            });
        }
        None
    }
}

impl Iterator for FreeBlocks<'_> {
    type Item = FreeBlock;
    fn next(&mut self) -> Option<FreeBlock> {
        loop {
            if self.next_idx != NIL {
                let sec = &self.allocator.secs[self.section];
                let idx = self.next_idx;
                self.next_idx = if sec.pending {
                    let (order, bucket) = list_order(self.list);
                    sec.pending_next(order, bucket, idx)
                } else {
                    free_next(sec.raw_read(idx))
                };
                return Some(FreeBlock {
                    addr: PhysAddr((sec.base + idx as u64) << PAGE_SHIFT),
                    order: list_order(self.list).0 as u32,
                    zone: Zone::from_index(sec.zone as usize),
                    hot: false,
                });
            }
            if self.section != usize::MAX && self.list + 1 < LISTS {
                self.list += 1;
            } else {
                if self.slots_left == 0 {
                    return self.next_hot();
                }
                self.section = self.slots_left.trailing_zeros() as usize;
                self.slots_left &= self.slots_left - 1;
                self.list = 0;
            }
            let (order, bucket) = list_order(self.list);
            let sec = &self.allocator.secs[self.section];
            self.next_idx = if sec.pending {
                sec.pending_next(order, bucket, NIL)
            } else {
                sec.list_first(order, bucket)
            };
        }
    }
}

impl BuddyAllocator {
    /// What the page at `addr` currently is.
    ///
    /// Errors: [`Error::Misaligned`], [`Error::NotInSection`].
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::{Constraint, PageState, PhysAddr};
    /// let p = a.alloc_pages(2, Constraint::ANY).unwrap();
    /// assert_eq!(a.page_state(p), Ok(PageState::Allocated { pages: 2 }));
    /// assert_eq!(a.page_state(PhysAddr(p.0 + 4096)), Ok(PageState::Interior));
    /// ```
    pub fn page_state(&self, addr: PhysAddr) -> Result<PageState, Error> {
        if !addr.is_page_aligned() {
            return Err(Error::Misaligned);
        }
        let (section, idx) = self.locate(addr).ok_or(Error::NotInSection)?;
        let word = self.secs[section].read(idx);
        if state(word) == ST_ALLOC {
            return Ok(PageState::Allocated {
                pages: alloc_count(word) as u64,
            });
        }
        Ok(match self.find_free_block(section, idx) {
            Some((head, order)) => PageState::Free {
                block: self.addr_of(section, head),
                order,
            },
            None => PageState::Interior,
        })
    }

    /// Iterates over every free block: those on the buddy lists section by
    /// section and order by order, in free-list order, then those parked on
    /// hot lists (`hot: true`) zone by zone and order by order, oldest first.
    ///
    /// ```
    /// # let a = framekeep::doc_allocator!(64);
    /// let pages: u64 = a.free_blocks().map(|b| b.pages()).sum();
    /// assert_eq!(pages, 64);
    /// ```
    pub fn free_blocks(&self) -> FreeBlocks<'_> {
        FreeBlocks {
            allocator: self,
            slots_left: self.used_slots,
            section: usize::MAX,
            list: 0,
            next_idx: NIL,
            hot_pos: 0,
        }
    }

    /// Iterates over the registered sections (zone pieces), in slot order.
    ///
    /// ```
    /// # let a = framekeep::doc_allocator!(64);
    /// assert_eq!(a.sections().map(|section| section.pages).sum::<u64>(), 64);
    /// ```
    pub fn sections(&self) -> impl Iterator<Item = SectionInfo> + '_ {
        (0..MAX_SECTIONS)
            .filter(|section| self.used_slots & (1 << section) != 0)
            .map(|section| {
                let sec = &self.secs[section];
                SectionInfo {
                    start: PhysAddr(sec.base << PAGE_SHIFT),
                    pages: sec.pages as u64,
                    zone: Zone::from_index(sec.zone as usize),
                    free_pages: self.section_free(section),
                    registered_at: PhysAddr(sec.reg_base << PAGE_SHIFT),
                }
            })
    }

    /// Free and managed pages per zone and order (O(sections x orders)).
    ///
    /// ```
    /// # let a = framekeep::doc_allocator!(64);
    /// let st = a.stats();
    /// assert_eq!(st.free_pages(), 64);
    /// println!("{st}");
    /// ```
    pub fn stats(&self) -> Stats {
        let mut zones = [ZoneStats::EMPTY; 3];
        for (index, stats) in zones.iter_mut().enumerate() {
            let zone = &self.zones[index];
            stats.zone = Zone::from_index(index);
            stats.managed_pages = zone.managed_pages;
            stats.free_pages = self.zone_free(index);
            for section in set_bits(self.used_slots) {
                let sec = &self.secs[section];
                if sec.zone as usize == index && sec.pending {
                    for (_, order) in sec.pieces() {
                        stats.free_blocks[order as usize] += 1;
                    }
                } else if sec.zone as usize == index {
                    for (blocks, &count) in stats.free_blocks.iter_mut().zip(&sec.free_count) {
                        *blocks += count as u64;
                    }
                }
            }
            for (order, list) in self.hot[index].iter().enumerate() {
                stats.free_blocks[order] += list.len() as u64;
            }
            stats.hot_pages = self.hot_pages_in_zone(index);
            stats.reserve = zone.reserve;
            stats.sections = zone.section_count;
        }
        Stats { zones }
    }
}

#[cfg(test)]
mod tests;
