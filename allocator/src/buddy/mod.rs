//! The buddy allocator proper.

use core::ptr::NonNull;

mod alloc;
mod hot;
mod lists;
mod poison;
mod search;
mod section;
mod sections;
pub(crate) mod stats;
mod word;
mod zone;

pub use hot::{HOT_CAP, HOT_ORDERS, REFILL_ORDER};
pub use poison::{FrameOptions, POISON_BYTE};
pub use search::LIMIT_SCAN;
pub use sections::{Carved, RemovedSection, carve_metadata, metadata_bytes};
pub use stats::{Stats, ZoneStats};

use crate::types::*;
use hot::*;
use section::*;
use word::*;
use zone::*;

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

/// An error from [`BuddyAllocator::free_bulk`]: the frame at `index` was
/// rejected and nothing was freed.
///
/// ```
/// let e = allocator::BulkError { index: 3, error: allocator::Error::DoubleFree };
/// assert_eq!(e.index, 3);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct BulkError {
    /// Index of the first offending frame in the slice.
    pub index: usize,
    /// Why it was rejected.
    pub error: Error,
}

/// A buddy allocator of physical page frames.
///
/// Holds no heap memory and is `const`-constructible, so a kernel can keep
/// one in a `static` (wrapped in [`LockedAllocator`](crate::LockedAllocator)).
/// Per-page metadata (8 bytes a page) lives in memory handed over by
/// [`add_section`](Self::add_section).
///
/// ```
/// use allocator::{BuddyAllocator, Constraint, PhysAddr, metadata_bytes};
/// use core::ptr::NonNull;
///
/// let mut meta = vec![0u64; 1024];
/// let mut a = BuddyAllocator::new();
/// // SAFETY: `meta` outlives `a` and is used by nobody else meanwhile.
/// unsafe {
///     a.add_section(PhysAddr(0x4000_0000), 1024,
///                   NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
///                   metadata_bytes(1024)).unwrap();
/// }
/// let b = a.alloc(9, Constraint::ANY).unwrap();          // 2 MiB, 2 MiB-aligned
/// assert_eq!(b.0 % (2 << 20), 0);
/// let p = a.alloc_pages(5, Constraint::ANY).unwrap();     // exactly 5 pages
/// assert_eq!(a.stats().free_pages(), 1024 - 512 - 5);
/// a.free_pages(p, 5).unwrap();
/// a.free(b, 9).unwrap();
/// assert_eq!(a.free(b, 9), Err(allocator::Error::DoubleFree));
/// ```
pub struct BuddyAllocator {
    /// Indexed by `Zone as usize` (the fourth entry is never used; it
    /// lets a masked index go without a bounds check).
    zones: [ZoneState; 4],
    /// Frame poisoning is active (`opts.poison` and a mapping is set).
    poisoning: bool,
    /// Number of registered sections (entries of `sorted_base`/`sorted_slot`).
    nsec: u32,
    used: u64,
    /// Registered sections' first frames, ascending (for `locate`).
    sorted_base: [u64; MAX_SECTIONS],
    /// The slot in `secs` of each `sorted_base` entry.
    sorted_slot: [u8; MAX_SECTIONS],
    frame_base: *mut u8,
    opts: FrameOptions,
    /// Hot lists per zone (indexed like `zones`) and order.
    hot: [[HotList; HOT_ORDERS]; 4],
    secs: [Section; MAX_SECTIONS],
}

// SAFETY: the raw pointers refer to metadata and frame memory that the
// add_section / set_frame_options contracts make exclusively ours; nothing
// in them is tied to a thread.
unsafe impl Send for BuddyAllocator {}
// SAFETY: `&self` methods only read that memory; every write needs `&mut self`.
unsafe impl Sync for BuddyAllocator {}

impl Default for BuddyAllocator {
    fn default() -> Self {
        Self::new()
    }
}

#[inline(always)]
const fn floor_log2(x: u64) -> u32 {
    63 - x.leading_zeros()
}

#[inline(always)]
const fn ceil_log2(x: u64) -> u32 {
    if x <= 1 {
        0
    } else {
        64 - (x - 1).leading_zeros()
    }
}

/// Largest order of an aligned block starting at frame `pfn` that fits in
/// `remaining` pages.
#[inline(always)]
fn piece_order(pfn: u64, remaining: u64) -> u32 {
    (pfn.trailing_zeros())
        .min(floor_log2(remaining))
        .min(MAX_ORDER)
}

impl BuddyAllocator {
    /// An empty allocator with no sections.
    ///
    /// ```
    /// static A: allocator::LockedAllocator<allocator::NoInterrupts> =
    ///     allocator::LockedAllocator::new(allocator::BuddyAllocator::new());
    /// assert_eq!(A.lock().stats().free_pages(), 0);
    /// ```
    pub const fn new() -> Self {
        BuddyAllocator {
            zones: [ZoneState::EMPTY; 4],
            poisoning: false,
            nsec: 0,
            used: 0,
            sorted_base: [0; MAX_SECTIONS],
            sorted_slot: [0; MAX_SECTIONS],
            frame_base: core::ptr::null_mut(),
            opts: FrameOptions {
                poison: false,
                zero_on_alloc: false,
            },
            hot: [[HotList::EMPTY; HOT_ORDERS]; 4],
            secs: [Section::EMPTY; MAX_SECTIONS],
        }
    }

    // ------------------------------------------------------------------
    // Public API: allocation
    // ------------------------------------------------------------------

    /// Frees a block from [`alloc`](Self::alloc) (or any allocation of
    /// exactly 2^`order` pages).
    ///
    /// Errors: [`Error::TooLarge`], [`Error::Misaligned`] (not aligned to
    /// the order), [`Error::NotInSection`], [`Error::DoubleFree`],
    /// [`Error::InteriorPage`], [`Error::WrongCount`].
    ///
    /// ```
    /// # let mut a = allocator::doc_allocator!(64);
    /// # use allocator::{Constraint, Error};
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
        let Some((s, idx)) = self.locate(addr) else {
            return Err(Error::NotInSection);
        };
        // One word read establishes the page state: exactly an unmarked
        // allocation head of 2^order pages, or an error.
        let (e, same_chunk) = self.secs[s].read_own(idx);
        if e != alloc_word(1 << order) {
            return self.free_uncommon(s, idx, e, order);
        }
        self.on_free(s, idx, 1 << order);
        self.put_back(s, idx, order, same_chunk);
        // Frees, too, advance the section's initialisation: a workload of
        // parked pages alone takes nothing off the lists, and the free path
        // is shorter once the section is ready.
        if !self.secs[s].ready {
            self.secs[s].init_step();
        }
        Ok(())
    }

    /// [`free`](Self::free) of a page whose word is not a plain allocation
    /// head of 2^`order` pages: an aligned single page, or an error.
    #[cold]
    #[inline(never)]
    fn free_uncommon(&mut self, s: usize, idx: u32, e: u64, order: u32) -> Result<(), Error> {
        if order == 0 && e == aligned_page_word() {
            self.free_aligned_page(s, idx);
            return Ok(());
        }
        Err(self.free_error(s, idx, e, 1 << order))
    }

    /// Frees a single page handed out for an alignment above one page: it is
    /// parked whatever its buddy's state, so that the next such request
    /// takes it back instead of splitting a block of the alignment's order
    /// and merging it again on the next free (9 list operations each way
    /// for 2 MiB). Like any parked page it is merged before an allocation
    /// would fail or fall back, and on `drain_hot`.
    fn free_aligned_page(&mut self, s: usize, idx: u32) {
        self.on_free(s, idx, 1);
        self.park(s, idx, 0);
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
    /// # let mut a = allocator::doc_allocator!(64);
    /// # use allocator::{Constraint, Error, PhysAddr};
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
        let Some((s, idx)) = self.locate(addr) else {
            return Err(Error::NotInSection);
        };
        let sec = &self.secs[s];
        let (e, same_chunk) = sec.read_own(idx);
        // An aligned single page (its word is exactly a valid head of one
        // page) that `free_aligned_page` would only park: parked here.
        if count == 1
            && e == aligned_page_word()
            && !self.poisoning
            && !self.hot[sec.zone as usize % 4][0].is_full()
        {
            self.park_in_room(s, idx, 0);
            return Ok(());
        }
        self.free_run(s, idx, e, same_chunk, count as u64)
    }

    /// Checks that `addr` starts an allocation of `count` pages.
    #[inline(always)]
    fn check_alloc_head(&self, addr: PhysAddr, count: u64) -> Result<(usize, u32, u64), Error> {
        let Some((s, idx)) = self.locate(addr) else {
            return Err(Error::NotInSection);
        };
        let e = self.secs[s].get(idx);
        self.check_head(s, idx, e, count)?;
        Ok((s, idx, e))
    }

    /// Checks that page `idx`, whose word is `e`, starts an allocation of
    /// `count` pages.
    #[inline(always)]
    fn check_head(&self, s: usize, idx: u32, e: u64, count: u64) -> Result<(), Error> {
        if state(e) == ST_ALLOC && alloc_count(e) as u64 == count {
            return Ok(());
        }
        Err(self.free_error(s, idx, e, count))
    }

    /// Why page `idx` (word `e`) is not an allocation head of `count` pages
    /// (the caller checked that it is not an unmarked one).
    #[cold]
    #[inline(never)]
    fn free_error(&self, s: usize, idx: u32, e: u64, count: u64) -> Error {
        if count > 1 << MAX_ORDER {
            return Error::TooLarge;
        }
        match state(e) {
            ST_ALLOC if alloc_count(e) as u64 != count => Error::WrongCount {
                allocated: alloc_count(e) as u64,
            },
            // Marked by a `free_bulk` in progress: a duplicate.
            ST_ALLOC => Error::DoubleFree,
            ST_FREE | ST_HOT => Error::DoubleFree,
            _ => {
                if self.find_free_block(s, idx).is_some() {
                    Error::DoubleFree
                } else {
                    Error::InteriorPage
                }
            }
        }
    }

    /// The rest of [`free_pages`](Self::free_pages) for page `idx`, whose
    /// word is `e` (`same_chunk` as [`Section::read_own`] gave it): the
    /// checks, and every free its fast path leaves (an aligned page too,
    /// when frames are poisoned or its list is full).
    #[inline(never)]
    fn free_run(
        &mut self,
        s: usize,
        idx: u32,
        e: u64,
        same_chunk: u32,
        count: u64,
    ) -> Result<(), Error> {
        self.check_head(s, idx, e, count)?;
        // `count` is now the allocation's size, at most 2^MAX_ORDER pages
        // (every way of making an allocation checks that): its order
        // indexes the per-order lists.
        debug_assert!(count <= 1 << MAX_ORDER);
        if e == aligned_page_word() {
            self.free_aligned_page(s, idx);
            return Ok(());
        }
        self.on_free(s, idx, count);
        self.secs[s].raw_write(idx, ST_NONE);
        if count.is_power_of_two() && (self.secs[s].base + idx as u64) & (count - 1) == 0 {
            self.put_back(s, idx, count.trailing_zeros(), same_chunk);
        } else {
            self.release(s, idx, count);
        }
        Ok(())
    }

    /// Frees many single frames in one call. All of them are checked first
    /// (including duplicates within `frames`); if any is bad, nothing is
    /// freed and the first bad index is reported.
    ///
    /// ```
    /// # let mut a = allocator::doc_allocator!(64);
    /// # use allocator::{Constraint, Error, PhysAddr};
    /// let mut f = [PhysAddr(0); 2];
    /// a.alloc_bulk(Constraint::ANY, &mut f).unwrap();
    /// let e = a.free_bulk(&[f[0], f[1], f[0]]).unwrap_err();
    /// assert_eq!((e.index, e.error), (2, Error::DoubleFree));
    /// a.free_bulk(&f).unwrap();
    /// ```
    pub fn free_bulk(&mut self, frames: &[PhysAddr]) -> Result<(), BulkError> {
        if frames.is_empty() {
            return Err(BulkError {
                index: 0,
                error: Error::ZeroCount,
            });
        }
        for (i, &f) in frames.iter().enumerate() {
            let r = if f.is_page_aligned() {
                self.check_alloc_head(f, 1)
            } else {
                Err(Error::Misaligned)
            };
            match r {
                Ok((s, idx, e)) if !is_marked(e) => self.secs[s].set(idx, marked(e)),
                Ok(_) => return Err(self.unmark(frames, i, Error::DoubleFree)),
                Err(err) => return Err(self.unmark(frames, i, err)),
            }
        }
        for &f in frames {
            if let Some((s, idx)) = self.locate(f) {
                self.on_free(s, idx, 1);
                self.secs[s].set(idx, ST_NONE);
                self.release(s, idx, 1);
            }
        }
        Ok(())
    }

    fn unmark(&mut self, frames: &[PhysAddr], upto: usize, error: Error) -> BulkError {
        for &f in &frames[..upto] {
            if let Some((s, idx)) = self.locate(f) {
                let e = self.secs[s].get(idx);
                self.secs[s].set(idx, unmarked(e));
            }
        }
        BulkError { index: upto, error }
    }

    // ------------------------------------------------------------------
    // Options and queries
    // ------------------------------------------------------------------

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
