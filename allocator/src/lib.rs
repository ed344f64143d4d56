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
//!   handed out again first (no search, no merge); parked pages are
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
//! # Layers
//!
//! Each layer wraps the one below it; use the highest one that fits.
//!
//! - [`BuddyAllocator`]: the page-frame allocator itself, single-threaded
//!   (`&mut self`). Everything else is built on it.
//! - [`LockedAllocator`]: a `BuddyAllocator` behind a spin lock that masks
//!   interrupts while held, for sharing between CPUs and interrupt handlers.
//! - [`PageCaches`]: a `LockedAllocator` with a per-CPU cache of free
//!   blocks of orders 0..=3 in front, so that most small allocations and
//!   frees take no lock; per-page ownership tags check every free.
//! - [`Heap`]: a `GlobalAlloc` over `PageCaches`: a per-CPU slab for small
//!   objects, the per-CPU caches for page-sized ones, the buddy beyond.
//! - [`CpuLocal`] and [`InterruptControl`]: what the kernel supplies to the
//!   layers above the buddy (interrupt masking, the CPU id, running code on
//!   another CPU). On the host, [`host_cpu_local!`] makes threads stand in
//!   for CPUs; [`doc_allocator!`] builds a small `BuddyAllocator` for
//!   examples and tests.
//!
//! # Glossary
//!
//! - **buddy**: the [`BuddyAllocator`]; also a block's buddy, the block of
//!   the same order it merges with.
//! - **section**: a physically contiguous range of registered memory, with
//!   its own metadata; blocks never cross one.
//! - **zone**: DMA, DMA32 or Normal ([`Zone`]), by physical address.
//! - **order**: a block of order `n` is 2^n pages, aligned to its size.
//! - **parked block**, **hot list**: a freed block of the buddy that is not
//!   merged yet but kept on a short per-zone, per-order stack (its hot
//!   list), to be handed out again first.
//! - **per-CPU cache**: one CPU's lists of free blocks in [`PageCaches`]
//!   (the module is `pcp`, after Linux's per-CPU page lists).
//! - **held**: pages a CPU's cache holds: free in truth, allocated in the
//!   buddy's view ([`CacheStats::cached`]).
//! - **ownership tag**: the per-page word that says which layer (a per-CPU
//!   cache, a [`Block`], the slab, the heap) owns a block, so that no other
//!   layer can free it.
//! - **slab**: a block cut into objects of one size class for the [`Heap`].
//! - **descriptor**: a slab's bookkeeping (free bitmap, owner CPU, remote
//!   frees), kept outside the slab.
//! - **remote free**: a free of a slab object on a CPU other than the
//!   slab's owner; it is queued for the owner to collect.
//! - [`Block`]: a block from the per-CPU caches held as a value, which
//!   cannot be copied, so freeing it needs no atomic claim.
//!
//! ```
//! use framekeep::{BuddyAllocator, Constraint, Zone, PhysAddr, metadata_bytes};
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

/// For examples and tests (needs `std`): a [`BuddyAllocator`] with one
/// DMA32 section of `$pages` pages at 16 MiB, whose metadata is leaked
/// from a `Vec` so that it lives as long as the program.
///
/// ```
/// let mut a = framekeep::doc_allocator!(64);
/// let p = a.alloc(0, framekeep::Constraint::ANY).unwrap();
/// assert!(p.0 >= 0x100_0000 && p.0 < 0x100_0000 + 64 * 4096);
/// a.free(p, 0).unwrap();
/// ```
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
