//! The buddy allocator proper.

use core::ptr::NonNull;

mod alloc;
mod free;
mod hot;
mod lists;
mod poison;
mod search;
mod section;
mod sections;
pub(crate) mod stats;
mod word;
mod zone;

pub use free::BulkError;
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
