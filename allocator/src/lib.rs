//! A buddy allocator of physical page frames for x86_64 kernels.
//!
//! - `#![no_std]`, no heap, `const fn new`: one global instance in a `static`.
//! - Per-page metadata is one 8-byte word in memory the caller hands over
//!   ([`metadata_bytes`] says how much); it is initialised lazily, a chunk
//!   at a time, so registering 4 GiB writes a few words, not 8 MiB.
//! - Orders `0..=18` (4 KiB .. 1 GiB), blocks physically aligned to their
//!   size, buddies never cross a section.
//! - Zones DMA (< 16 MiB), DMA32 (< 4 GiB), Normal; requests name the highest
//!   zone they accept or a physical limit ([`Constraint`]); Normal first,
//!   with a configurable reserve of the lower zones ([`BuddyAllocator::set_reserve`]).
//! - Hot lists: a freed single page whose buddy is in use is parked and
//!   handed out again first (a few instructions a pair); parked pages are
//!   merged when a list overflows, before a request would fall back or
//!   fail, or on [`BuddyAllocator::drain_hot`].
//! - Exact page counts, alignment beyond the size, fixed ranges, bulk
//!   single frames, hot-add and removal of sections.
//! - Every bad call returns a specific [`Error`], in release builds too,
//!   and leaves every allocation and the free page count of every zone
//!   unchanged. Every error but two changes nothing at all:
//!   [`Error::OutOfMemory`] may first have merged parked free blocks (see
//!   the hot lists below), which changes how free memory is split into
//!   blocks (per-order counts, [`BuddyAllocator::free_blocks`]) but not
//!   how much of it is free; [`Error::Corrupted`] re-poisons the frame.
//! - Each layer owns what it hands out: a per-page tag says whether a
//!   block belongs to a per-CPU cache, the slab or the heap, and no other
//!   layer can free it. A free by address claims its block atomically, so
//!   two frees racing on two CPUs never both succeed; a [`Block`] handle
//!   from the per-CPU caches cannot be copied, so freeing it needs no
//!   atomic at all.
//! - Optional poisoning and zeroing of frames ([`FrameOptions`]).
//! - [`Stats`] like Linux's buddyinfo, with a `Display` table.
//! - [`LockedAllocator`]: an interrupt-masking spin lock ([`InterruptControl`]).
//! - Feature `x86_64`: `FrameAllocator<Size4KiB>` and `FrameDeallocator<Size4KiB>`.
//!
//! ```
//! use allocator::{BuddyAllocator, Constraint, Zone, PhysAddr, metadata_bytes};
//! use core::ptr::NonNull;
//!
//! let pages = 4096; // 16 MiB at 4 GiB - 8 MiB: half DMA32, half Normal
//! let mut meta = vec![0u64; pages];
//! let mut a = BuddyAllocator::new();
//! // SAFETY: `meta` outlives `a` and nothing else touches it meanwhile.
//! unsafe {
//!     a.add_section(PhysAddr((1 << 32) - (8 << 20)), pages as u64,
//!                   NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
//!                   metadata_bytes(pages as u64)).unwrap();
//! }
//! let dma = a.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap();
//! assert!(dma.0 < 1 << 32);
//! let any = a.alloc(0, Constraint::ANY).unwrap();
//! assert!(any.0 >= 1 << 32);
//! a.free(dma, 0).unwrap();
//! a.free(any, 0).unwrap();
//! print!("{}", a.stats());
//! ```

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_code)]
// The loom build (`--cfg loom`) compiles only the lock-free protocols.
#![cfg_attr(loom, allow(dead_code))]

// Unsafe code is denied here and allowed only in these modules, for these
// reasons:
// - in `cpu`, `pcp` and `slab`: the submodules their own roots list;
// - `buddy`: per-page words in caller-given metadata, frames written
//   through the physical mapping (poisoning, zeroing), and the lock that
//   hands out the allocator behind an `UnsafeCell`;
// - `heap`: `GlobalAlloc` itself, and pointers made from physical addresses;
// - `types`: slices of addresses viewed as `PhysAddr` (`repr(transparent)`);
// - `x86`: the `x86_64` crate's frame allocator traits are `unsafe`.
pub mod cpu;
mod pcp;
mod slab;
mod sync;

// The rest is not built for the loom models (`--cfg loom`), whose atomics
// cannot be constructed in `const` contexts.
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod buddy;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod heap;
#[cfg(not(loom))]
mod metadata;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod types;
#[cfg(all(feature = "x86_64", not(loom)))]
#[allow(unsafe_code)]
mod x86;

#[cfg(not(loom))]
pub use buddy::{
    BuddyAllocator, BulkError, Carved, FrameOptions, FreeBlock, FreeBlocks, HOT_CAP, HOT_ORDERS,
    LIMIT_SCAN, LockGuard, LockedAllocator, META_BYTES_PER_PAGE, POISON_BYTE, PageState,
    REFILL_ORDER, RemovedSection, SectionInfo, Stats, ZoneStats, carve_metadata, metadata_bytes,
};
pub use cpu::{CpuLocal, InterruptControl, NoInterrupts};
#[cfg(not(loom))]
pub use heap::{Heap, HeapStats};
#[cfg(not(loom))]
pub use metadata::{
    PAGES_PER_DESCRIPTOR, TAG_BYTES_PER_PAGE, cache_metadata_bytes, heap_metadata_bytes,
};
#[cfg(not(loom))]
pub use pcp::{Block, CacheStats, PageCaches, PcpConfig};
pub use pcp::{PCP_CAPACITY, PCP_ORDERS};
#[cfg(not(loom))]
pub use slab::{
    Fault, FaultKind, MAX_SMALL_SIZE, NR_CLASSES, SIZE_CLASSES, SLAB_RESERVE, class_align,
    size_class, slab_order,
};
#[cfg(not(loom))]
pub use types::{
    Constraint, DMA_END, DMA32_END, Error, MAX_ORDER, MAX_PHYS_ADDR, MAX_SECTION_PAGES,
    MAX_SECTIONS, NR_ORDERS, PAGE_SHIFT, PAGE_SIZE, PAGEBLOCK_ORDER, Pfn, PhysAddr, PhysMap, Zone,
};

/// Doctest helper: an allocator with one DMA32 section of `$pages` pages at
/// 16 MiB, metadata leaked from a `Vec` (needs `std`).
#[doc(hidden)]
#[macro_export]
macro_rules! doc_allocator {
    ($pages:expr) => {{
        let mut a = $crate::BuddyAllocator::new();
        a.add_section_static(
            $crate::PhysAddr(0x100_0000),
            $pages as u64,
            ::std::vec![0u64; $pages as usize].leak(),
        )
        .unwrap();
        a
    }};
}
