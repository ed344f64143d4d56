//! The buddy allocator proper: [`BuddyAllocator`].
//!
//! One idea per file:
//!
//! - [`word`]: the 8-byte metadata word each page has, how its bits are
//!   laid out, and the metadata size per page.
//! - [`section`]: a section (a zone-split run of pages): its free lists by
//!   order and address bucket, their masks, and the lazy, incremental
//!   initialisation of its metadata.
//! - [`zone`]: per-zone state and masks, the zone a request starts in,
//!   the zones a constraint allows, reserves.
//! - [`lists`]: the free lists: push, unlink, split, merge, release.
//! - [`hot`]: hot lists: recently freed small blocks parked per zone and
//!   order, handed out first.
//! - [`search`]: finding a block for a request: zones, fallback, limits
//!   (`Below`), aligned runs at a section's end.
//! - [`alloc`] and [`free`]: the public allocating and freeing calls, and
//!   the checks every free makes.
//! - [`sections`]: hot-add and removal of sections, the metadata they
//!   need, and the sorted index that maps an address to its section.
//! - [`poison`]: frame options: poisoning free frames, zeroing allocated
//!   ones.
//! - [`query`]: page states, free blocks, sections, statistics.
//! - [`stats`]: the statistics types and their `Display`.
//!
//! Tests sit beside the file they test (`alloc/tests.rs` for `alloc.rs`,
//! ...), with the fixtures they share in `test_support.rs`.

use crate::types::{MAX_ORDER, MAX_SECTIONS};

mod alloc;
mod free;
mod hot;
mod lists;
mod locked;
mod poison;
mod query;
mod search;
mod section;
mod sections;
pub(crate) mod stats;
#[cfg(test)]
pub(crate) mod test_support;
mod word;
mod zone;

pub use free::BulkError;
pub use hot::{HOT_CAP, HOT_ORDERS, REFILL_ORDER};
pub use locked::{LockGuard, LockedAllocator};
pub use poison::{FrameOptions, POISON_BYTE};
pub use query::{FreeBlock, FreeBlocks, PageState, SectionInfo};
pub use search::LIMIT_SCAN;
pub use sections::{Carved, RemovedSection, carve_metadata, metadata_bytes};
pub use stats::{Stats, ZoneStats};
pub use word::META_BYTES_PER_PAGE;

use hot::HotList;
use section::Section;
use zone::ZoneState;

/// A buddy allocator of physical page frames.
///
/// Holds no heap memory and is `const`-constructible, so a kernel can keep
/// one in a `static` (wrapped in [`LockedAllocator`](crate::LockedAllocator)).
/// Per-page metadata (8 bytes a page) lives in memory handed over by
/// [`add_section`](Self::add_section).
///
/// ```
/// use framekeep::{BuddyAllocator, Constraint, PhysAddr, metadata_bytes};
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
/// assert_eq!(a.free(b, 9), Err(framekeep::Error::DoubleFree));
/// ```
pub struct BuddyAllocator {
    /// Indexed by `Zone as usize` (the fourth entry is never used; it
    /// lets a masked index go without a bounds check).
    zones: [ZoneState; 4],
    /// Frame poisoning is active (`opts.poison` and a mapping is set).
    poisoning: bool,
    /// Number of registered sections (entries of `sorted_base`/`sorted_slot`).
    section_count: u32,
    /// Which slots of `secs` hold a registered section (bit `i` = slot `i`).
    used_slots: u64,
    /// Registered sections' first frames, ascending (for `locate`).
    sorted_base: [u64; MAX_SECTIONS],
    /// The slot in `secs` of each `sorted_base` entry.
    sorted_slot: [u8; MAX_SECTIONS],
    /// Where physical address 0 is mapped, for frame options; null: none.
    frame_base: *mut u8,
    opts: FrameOptions,
    /// Hot lists per zone (indexed like `zones`) and order.
    hot: [[HotList; HOT_ORDERS]; 4],
    /// The sections, by slot; a free slot is [`Section::EMPTY`].
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

impl BuddyAllocator {
    /// An empty allocator with no sections.
    ///
    /// ```
    /// static A: framekeep::LockedAllocator<framekeep::NoInterrupts> =
    ///     framekeep::LockedAllocator::new(framekeep::BuddyAllocator::new());
    /// assert_eq!(A.lock().stats().free_pages(), 0);
    /// ```
    pub const fn new() -> Self {
        BuddyAllocator {
            zones: [ZoneState::EMPTY; 4],
            poisoning: false,
            section_count: 0,
            used_slots: 0,
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

/// The indexes of the bits set in `mask`, lowest first: the slots of a
/// section mask.
#[inline(always)]
fn set_bits(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let bit = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(bit)
    })
}
