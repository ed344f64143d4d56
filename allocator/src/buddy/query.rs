//! Looking at the allocator: page states, free blocks, sections, statistics.

use super::*;

/// What one page currently is.
///
/// ```
/// use allocator::PageState;
/// let s = PageState::Allocated { pages: 5 };
/// assert_ne!(s, PageState::Interior);
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
/// use allocator::{FreeBlock, PhysAddr, Zone};
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
    /// # use allocator::{FreeBlock, PhysAddr, Zone};
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
/// let mut a = allocator::BuddyAllocator::new();
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
/// # let a = allocator::doc_allocator!(64);
/// let it: allocator::FreeBlocks<'_> = a.free_blocks();
/// assert_eq!(it.count(), 1);
/// ```
pub struct FreeBlocks<'a> {
    a: &'a BuddyAllocator,
    used: u64,
    s: usize,
    list: usize,
    cur: u32,
    /// Position in the hot lists once the buddy lists are done:
    /// `(zone * HOT_ORDERS + order) * HOT_CAP + i`.
    hot: usize,
}

impl FreeBlocks<'_> {
    /// The next parked block.
    fn next_hot(&mut self) -> Option<FreeBlock> {
        while self.hot < 3 * HOT_ORDERS * HOT_CAP {
            let (list, i) = (self.hot / HOT_CAP, self.hot % HOT_CAP);
            let z = list / HOT_ORDERS;
            let o = list - z * HOT_ORDERS;
            let h = &self.a.hot.as_flattened()[list];
            if i >= h.len() {
                self.hot = (list + 1) * HOT_CAP;
                continue;
            }
            self.hot += 1;
            let (s, idx) = h.get(i);
            return Some(FreeBlock {
                addr: self.a.addr_of(s, idx),
                order: o as u32,
                zone: Zone::from_index(z),
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
            if self.cur != NIL {
                let sec = &self.a.secs[self.s];
                let idx = self.cur;
                self.cur = if sec.pending {
                    let (o, b) = list_order(self.list);
                    sec.pending_next(o, b, idx)
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
            if self.s != usize::MAX && self.list + 1 < NLISTS {
                self.list += 1;
            } else {
                if self.used == 0 {
                    return self.next_hot();
                }
                self.s = self.used.trailing_zeros() as usize;
                self.used &= self.used - 1;
                self.list = 0;
            }
            let (o, b) = list_order(self.list);
            let sec = &self.a.secs[self.s];
            self.cur = if sec.pending {
                sec.pending_next(o, b, NIL)
            } else {
                sec.list_first(o, b)
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
    /// # let mut a = allocator::doc_allocator!(64);
    /// # use allocator::{Constraint, PageState, PhysAddr};
    /// let p = a.alloc_pages(2, Constraint::ANY).unwrap();
    /// assert_eq!(a.page_state(p), Ok(PageState::Allocated { pages: 2 }));
    /// assert_eq!(a.page_state(PhysAddr(p.0 + 4096)), Ok(PageState::Interior));
    /// ```
    pub fn page_state(&self, addr: PhysAddr) -> Result<PageState, Error> {
        if !addr.is_page_aligned() {
            return Err(Error::Misaligned);
        }
        let (s, idx) = self.locate(addr).ok_or(Error::NotInSection)?;
        let e = self.secs[s].get(idx);
        if state(e) == ST_ALLOC {
            return Ok(PageState::Allocated {
                pages: alloc_count(e) as u64,
            });
        }
        Ok(match self.find_free_block(s, idx) {
            Some((h, order)) => PageState::Free {
                block: self.addr_of(s, h),
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
    /// # let a = allocator::doc_allocator!(64);
    /// let pages: u64 = a.free_blocks().map(|b| b.pages()).sum();
    /// assert_eq!(pages, 64);
    /// ```
    pub fn free_blocks(&self) -> FreeBlocks<'_> {
        FreeBlocks {
            a: self,
            used: self.used,
            s: usize::MAX,
            list: 0,
            cur: NIL,
            hot: 0,
        }
    }

    /// Iterates over the registered sections (zone pieces), in slot order.
    ///
    /// ```
    /// # let a = allocator::doc_allocator!(64);
    /// assert_eq!(a.sections().map(|s| s.pages).sum::<u64>(), 64);
    /// ```
    pub fn sections(&self) -> impl Iterator<Item = SectionInfo> + '_ {
        (0..MAX_SECTIONS)
            .filter(|s| self.used & (1 << s) != 0)
            .map(|s| {
                let sec = &self.secs[s];
                SectionInfo {
                    start: PhysAddr(sec.base << PAGE_SHIFT),
                    pages: sec.pages as u64,
                    zone: Zone::from_index(sec.zone as usize),
                    free_pages: self.section_free(s),
                    registered_at: PhysAddr(sec.reg_base << PAGE_SHIFT),
                }
            })
    }

    /// Free and managed pages per zone and order (O(sections x orders)).
    ///
    /// ```
    /// # let a = allocator::doc_allocator!(64);
    /// let st = a.stats();
    /// assert_eq!(st.free_pages(), 64);
    /// println!("{st}");
    /// ```
    pub fn stats(&self) -> Stats {
        let mut zones = [ZoneStats::EMPTY; 3];
        for (i, z) in zones.iter_mut().enumerate() {
            let zs = &self.zones[i];
            z.zone = Zone::from_index(i);
            z.managed_pages = zs.managed_pages;
            z.free_pages = self.zone_free(i);
            let mut m = self.used;
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                let sec = &self.secs[s];
                if sec.zone as usize == i && sec.pending {
                    for (_, o) in sec.pieces() {
                        z.free_blocks[o as usize] += 1;
                    }
                } else if sec.zone as usize == i {
                    for (fb, &n) in z.free_blocks.iter_mut().zip(&sec.nfree) {
                        *fb += n as u64;
                    }
                }
            }
            for (o, h) in self.hot[i].iter().enumerate() {
                z.free_blocks[o] += h.len() as u64;
            }
            z.hot_pages = self.hot_pages_in_zone(i);
            z.reserve = zs.reserve;
            z.sections = zs.sections;
        }
        Stats { zones }
    }
}
