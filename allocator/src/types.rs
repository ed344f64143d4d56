//! Plain-integer newtypes, zones, request constraints and errors.

use core::fmt;

/// Size of one page frame in bytes (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// The largest block order (inclusive): order 18 is 2^18 pages = 1 GiB.
pub const MAX_ORDER: u32 = 18;
/// Number of distinct orders (`0..=MAX_ORDER`).
pub const NR_ORDERS: usize = MAX_ORDER as usize + 1;
/// Order of a pageblock (2 MiB), the unit the anti-fragmentation policy
/// reasons about and the size of a huge page.
pub const PAGEBLOCK_ORDER: u32 = 9;
/// The largest number of (zone-split) sections one allocator manages.
pub const MAX_SECTIONS: usize = 64;
/// The largest number of pages one section may hold (2^28 - 1 pages,
/// just under 1 TiB). Register bigger ranges as several sections.
pub const MAX_SECTION_PAGES: u64 = (1 << 28) - 1;
/// Highest physical address (exclusive) the allocator accepts: 2^52,
/// the x86_64 architectural limit.
pub const MAX_PHYS_ADDR: u64 = 1 << 52;

/// A physical address.
///
/// ```
/// use framekeep::{PhysAddr, Pfn};
/// let a = PhysAddr::new(0x20_0000);
/// assert!(a.is_page_aligned());
/// assert_eq!(a.pfn(), Pfn(0x200));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(pub u64);

impl PhysAddr {
    /// Addresses held as plain words, viewed as `PhysAddr`s (the per-CPU
    /// lists keep words, the buddy's bulk calls take addresses).
    pub(crate) fn from_u64s(words: &[u64]) -> &[PhysAddr] {
        // SAFETY: PhysAddr is repr(transparent) over u64, so the slices
        // have the same layout; the borrow carries over.
        unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<PhysAddr>(), words.len()) }
    }

    /// [`from_u64s`](Self::from_u64s), mutable.
    pub(crate) fn from_u64s_mut(words: &mut [u64]) -> &mut [PhysAddr] {
        // SAFETY: as in `from_u64s`; the exclusive borrow carries over.
        unsafe {
            core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<PhysAddr>(), words.len())
        }
    }

    /// Wraps a raw physical address.
    ///
    /// ```
    /// assert_eq!(framekeep::PhysAddr::new(4096).as_u64(), 4096);
    /// ```
    pub const fn new(addr: u64) -> Self {
        PhysAddr(addr)
    }
    /// The raw address.
    ///
    /// ```
    /// assert_eq!(framekeep::PhysAddr(7).as_u64(), 7);
    /// ```
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// Whether the address is a multiple of [`PAGE_SIZE`].
    ///
    /// ```
    /// assert!(!framekeep::PhysAddr(4097).is_page_aligned());
    /// ```
    pub const fn is_page_aligned(self) -> bool {
        self.0.is_multiple_of(PAGE_SIZE)
    }
    /// The frame number containing this address (rounds down).
    ///
    /// ```
    /// assert_eq!(framekeep::PhysAddr(8191).pfn().0, 1);
    /// ```
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A physical frame number (physical address / 4096).
///
/// ```
/// use framekeep::{Pfn, PhysAddr};
/// assert_eq!(Pfn(3).addr(), PhysAddr(3 * 4096));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The physical address of the first byte of this frame. A frame
    /// number of 2^52 or more (above [`MAX_PHYS_ADDR`], no frame) has no
    /// such address: its top 12 bits are shifted out.
    ///
    /// ```
    /// assert_eq!(framekeep::Pfn(1).addr().0, 4096);
    /// ```
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
}

/// Where physical memory is mapped: physical address `p` is at virtual
/// address `p + offset` (wrapping, so a mapping "below" zero works too).
/// The heap and frame poisoning reach frames through it.
///
/// ```
/// use framekeep::{PhysAddr, PhysMap};
/// let map = PhysMap::new(0xffff_8000_0000_0000);
/// let v = map.virt(PhysAddr(0x1000));
/// assert_eq!(v as u64, 0xffff_8000_0000_1000);
/// assert_eq!(map.phys(v), PhysAddr(0x1000));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct PhysMap {
    offset: u64,
}

impl PhysMap {
    /// The mapping at `offset`.
    ///
    /// ```
    /// assert_eq!(framekeep::PhysMap::new(8).offset(), 8);
    /// ```
    pub const fn new(offset: u64) -> Self {
        PhysMap { offset }
    }

    /// The offset added to a physical address.
    ///
    /// ```
    /// assert_eq!(framekeep::PhysMap::default().offset(), 0);
    /// ```
    pub const fn offset(self) -> u64 {
        self.offset
    }

    /// The virtual address of physical `addr`.
    ///
    /// ```
    /// let map = framekeep::PhysMap::new(0x1000);
    /// assert_eq!(map.virt(framekeep::PhysAddr(0x20)) as u64, 0x1020);
    /// ```
    #[inline(always)]
    pub fn virt(self, addr: PhysAddr) -> *mut u8 {
        addr.0.wrapping_add(self.offset) as *mut u8
    }

    /// The physical address that `ptr` maps.
    ///
    /// ```
    /// let map = framekeep::PhysMap::new(0x1000);
    /// assert_eq!(map.phys(0x1020 as *const u8), framekeep::PhysAddr(0x20));
    /// ```
    #[inline(always)]
    pub fn phys(self, ptr: *const u8) -> PhysAddr {
        PhysAddr((ptr as u64).wrapping_sub(self.offset))
    }
}

/// A memory zone, ordered from lowest to highest.
///
/// ```
/// use framekeep::{PhysAddr, Zone};
/// assert_eq!(Zone::of(PhysAddr(0x100_0000)), Zone::Dma32);
/// assert!(Zone::Dma < Zone::Normal);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum Zone {
    /// Below 16 MiB (ISA DMA).
    Dma = 0,
    /// From 16 MiB to below 4 GiB (32-bit DMA).
    Dma32 = 1,
    /// 4 GiB and above.
    Normal = 2,
}

impl Zone {
    /// All zones, lowest first.
    ///
    /// ```
    /// assert_eq!(framekeep::Zone::ALL.len(), 3);
    /// ```
    pub const ALL: [Zone; 3] = [Zone::Dma, Zone::Dma32, Zone::Normal];

    /// The zone a physical address belongs to.
    ///
    /// ```
    /// use framekeep::{PhysAddr, Zone};
    /// assert_eq!(Zone::of(PhysAddr(0xFFFF_F000)), Zone::Dma32);
    /// assert_eq!(Zone::of(PhysAddr(0x1_0000_0000)), Zone::Normal);
    /// ```
    pub const fn of(addr: PhysAddr) -> Zone {
        [Zone::Dma, Zone::Dma32, Zone::Normal][Zone::index_of(addr.0)]
    }

    /// `Zone::of(addr) as usize` for a raw address, without a branch (two
    /// compares added): the zone classifier every layer uses.
    ///
    /// ```
    /// assert_eq!(framekeep::Zone::index_of(1 << 32), framekeep::Zone::Normal as usize);
    /// ```
    #[inline(always)]
    pub const fn index_of(addr: u64) -> usize {
        (addr >= DMA_END) as usize + (addr >= DMA32_END) as usize
    }

    /// First physical address of the zone.
    ///
    /// ```
    /// assert_eq!(framekeep::Zone::Dma32.start().0, 16 << 20);
    /// ```
    pub const fn start(self) -> PhysAddr {
        PhysAddr(match self {
            Zone::Dma => 0,
            Zone::Dma32 => DMA_END,
            Zone::Normal => DMA32_END,
        })
    }

    /// End (exclusive) of the zone.
    ///
    /// ```
    /// assert_eq!(framekeep::Zone::Dma32.end().0, 1 << 32);
    /// ```
    pub const fn end(self) -> PhysAddr {
        PhysAddr(match self {
            Zone::Dma => DMA_END,
            Zone::Dma32 => DMA32_END,
            Zone::Normal => MAX_PHYS_ADDR,
        })
    }

    /// Short name, as in Linux's `/proc/buddyinfo`.
    ///
    /// ```
    /// assert_eq!(framekeep::Zone::Dma32.name(), "DMA32");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Zone::Dma => "DMA",
            Zone::Dma32 => "DMA32",
            Zone::Normal => "Normal",
        }
    }

    pub(crate) const fn from_index(index: usize) -> Zone {
        match index {
            0 => Zone::Dma,
            1 => Zone::Dma32,
            _ => Zone::Normal,
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// End of the DMA zone: 16 MiB.
pub const DMA_END: u64 = 16 << 20;
/// End of the DMA32 zone: 4 GiB.
pub const DMA32_END: u64 = 1 << 32;

/// Where an allocation may come from.
///
/// ```
/// use framekeep::{Constraint, PhysAddr, Zone};
/// let any = Constraint::ANY;                       // Normal, then DMA32, then DMA
/// let dev = Constraint::Zone(Zone::Dma32);         // below 4 GiB
/// let isa = Constraint::Below(PhysAddr(1 << 24));  // below 16 MiB
/// assert_ne!(any, dev);
/// # let _ = isa;
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Constraint {
    /// The highest zone the caller accepts; lower zones are fallbacks.
    Zone(Zone),
    /// Every page of the allocation must lie below this physical address.
    /// Exact: a request fails only if no free block it could use lies
    /// below the limit (after merging parked blocks). The zone of the limit
    /// is tried first, then the lower zones as for [`Constraint::Zone`];
    /// a limit at a zone's end costs what that zone does, and within a
    /// zone, sections entirely below the limit are used at once while the
    /// one straddling it is searched ([`LIMIT_SCAN`](crate::LIMIT_SCAN)
    /// blocks per order at first, every block that could fit before
    /// failing). A limit below 4096 leaves no page: out of memory.
    Below(PhysAddr),
}

impl Constraint {
    /// No constraint: Normal first, falling back to DMA32 then DMA.
    pub const ANY: Constraint = Constraint::Zone(Zone::Normal);
}

/// Everything that can go wrong. Every error leaves every allocation and
/// every zone's free page count as they were before the call; every error
/// except [`Error::OutOfMemory`] and [`Error::Corrupted`] (see there)
/// leaves the allocator exactly as it was.
///
/// ```
/// use framekeep::{BuddyAllocator, Error, PhysAddr};
/// let mut a = BuddyAllocator::new();
/// assert_eq!(a.free(PhysAddr(0x1000), 0), Err(Error::NotInSection));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Error {
    /// No free block satisfies the request (out of memory in the allowed zones).
    ///
    /// Before failing, the allocation may have merged blocks parked on hot
    /// lists with their free buddies (that is how it looks for memory):
    /// then statistics show fewer, bigger free blocks (per-order counts,
    /// `hot_pages`) and `free_blocks` and `page_state` report them so, but
    /// the same pages are free and every allocation is untouched. Where
    /// merging cannot help (no section with parked blocks has enough free
    /// pages for the request), nothing changes at all.
    OutOfMemory,
    /// A count of pages (or frames) was zero.
    ZeroCount,
    /// An order above [`MAX_ORDER`], a count above 2^`MAX_ORDER` pages, or an
    /// alignment above 1 GiB.
    TooLarge,
    /// An address is not aligned as required (to a page, or to the block's order).
    Misaligned,
    /// An alignment that is not a power of two.
    BadAlignment,
    /// The address lies outside every registered section.
    NotInSection,
    /// The page is already free.
    DoubleFree,
    /// The page is allocated but is not the first page of its allocation.
    InteriorPage,
    /// The allocation starting here has a different size (in pages).
    WrongCount {
        /// The number of pages actually allocated at this address.
        allocated: u64,
    },
    /// Some page of a requested fixed range is not free.
    RangeInUse,
    /// A fixed range is not contained in a single section.
    RangeCrossesSection,
    /// A new section overlaps an existing one.
    SectionOverlap,
    /// A new section wraps around or ends above [`MAX_PHYS_ADDR`].
    SectionWraps,
    /// A new section has more than [`MAX_SECTION_PAGES`] pages.
    SectionTooLarge,
    /// The section is too small to hold its own metadata and at least one page.
    SectionTooSmall,
    /// The metadata buffer is smaller than [`metadata_bytes`](crate::metadata_bytes) says.
    MetadataTooSmall,
    /// The metadata buffer is not 8-byte aligned.
    MetadataMisaligned,
    /// All [`MAX_SECTIONS`] section slots are in use.
    TooManySections,
    /// The section to remove still has allocated pages.
    SectionInUse,
    /// No section was registered starting at this address.
    NoSuchSection,
    /// The page belongs to the slab (a slab's memory): only the heap that
    /// owns the slab frees it, object by object.
    OwnedBySlab,
    /// The block is an allocation of the [`Heap`](crate::Heap): free it
    /// through the heap, with the layout it was allocated with.
    OwnedByHeap,
    /// A registration by name only (`add_section_static`) was refused
    /// because the allocator writes the frames it manages (poisoning or
    /// zeroing is on, or a [`Heap`](crate::Heap) sits on top): register
    /// such memory with the `unsafe` `add_section`, which promises that it
    /// is mapped and writable.
    FramesNotMapped,
    /// The block is held by a [`Block`](crate::Block) handle: free it by
    /// giving the handle to [`PageCaches::free_block`](crate::PageCaches::free_block).
    OwnedByHandle,
    /// Memory given to a [`Heap`](crate::Heap) stays for good: its
    /// metadata holds slab bookkeeping that any slab may be using.
    NotRemovable,
    /// Frame poisoning found a byte changed while the frame was free. The
    /// frame has been re-poisoned and left free; the request was not served.
    Corrupted {
        /// The corrupted frame.
        frame: PhysAddr,
        /// Offset of the first differing byte within the frame.
        offset: u32,
        /// The byte found there.
        found: u8,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfMemory => f.write_str("out of memory"),
            Error::ZeroCount => f.write_str("count of zero"),
            Error::TooLarge => f.write_str("order, count or alignment beyond the largest order"),
            Error::Misaligned => f.write_str("misaligned address"),
            Error::BadAlignment => f.write_str("alignment is not a power of two"),
            Error::NotInSection => f.write_str("address outside every section"),
            Error::DoubleFree => f.write_str("double free: page is already free"),
            Error::InteriorPage => f.write_str("page is inside an allocation, not its start"),
            Error::WrongCount { allocated } => {
                write!(f, "wrong size: {allocated} pages are allocated here")
            }
            Error::RangeInUse => f.write_str("range is not entirely free"),
            Error::RangeCrossesSection => f.write_str("range crosses a section boundary"),
            Error::SectionOverlap => f.write_str("section overlaps an existing section"),
            Error::SectionWraps => {
                f.write_str("section wraps or exceeds the physical address limit")
            }
            Error::SectionTooLarge => f.write_str("section has too many pages"),
            Error::SectionTooSmall => f.write_str("section too small"),
            Error::MetadataTooSmall => f.write_str("metadata buffer too small"),
            Error::MetadataMisaligned => f.write_str("metadata buffer not 8-byte aligned"),
            Error::TooManySections => f.write_str("too many sections"),
            Error::SectionInUse => f.write_str("section still has allocated pages"),
            Error::NoSuchSection => f.write_str("no section starts at this address"),
            Error::OwnedBySlab => f.write_str("page belongs to the slab, not to this caller"),
            Error::OwnedByHeap => {
                f.write_str("block is a heap allocation: free it through the heap")
            }
            Error::FramesNotMapped => f.write_str(
                "frames this allocator writes must be registered with the unsafe add_section",
            ),
            Error::OwnedByHandle => {
                f.write_str("block is held by a Block handle: free it with free_block")
            }
            Error::NotRemovable => f.write_str("memory given to a heap cannot be removed"),
            Error::Corrupted {
                frame,
                offset,
                found,
            } => write!(
                f,
                "free frame {frame} corrupted: byte {offset} is {found:#04x}, not {:#04x}",
                crate::POISON_BYTE
            ),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::{Error, Pfn, PhysAddr, Zone};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn newtypes_and_zone_helpers() {
        assert_eq!(PhysAddr(0x3000).pfn(), Pfn(3));
        assert_eq!(Pfn(3).addr(), PhysAddr(0x3000));
        assert_eq!(Zone::of(PhysAddr(16 * MIB - 1)), Zone::Dma);
        assert_eq!(Zone::of(PhysAddr(4 * GIB - 1)), Zone::Dma32);
        assert_eq!(std::format!("{}", Zone::Normal), "Normal");
        assert_eq!(std::format!("{:?}", PhysAddr(16)), "PhysAddr(0x10)");
        for error in [
            Error::OutOfMemory,
            Error::WrongCount { allocated: 3 },
            Error::RangeInUse,
        ] {
            assert!(!std::format!("{error}").is_empty());
        }
    }
}
