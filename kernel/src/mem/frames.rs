//! The kernel's memory: one `framekeep::Heap` (per-CPU page caches and
//! slabs over a buddy allocator whose lock is taken with interrupts masked),
//! fed from the sanitised memory map.
//!
//! Everything in the kernel gets memory from it: page tables, DMA buffers and
//! other frames through this module, `alloc` collections through
//! [`super::heap`].

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use framekeep::{
    Constraint, DMA_END, Error, Heap, HeapStats, PageState, PcpConfig, PhysAddr, Stats, Zone,
};
use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};
use x86_64::{PhysAddr as X86PhysAddr, VirtAddr};

use super::map::{ByteSize, SanitisedMap};
use super::zone_cut::cut_at_zones;
use crate::arch::x86_64::cpu_local::{KernelCpu, MAX_CPUS};
use crate::arch::x86_64::tsc;
use crate::kprintln;

pub const PAGE_SIZE: u64 = framekeep::PAGE_SIZE;

/// All of the kernel's memory; `heap::KernelHeap` forwards to it.
pub(super) static MEMORY: Heap<KernelCpu, MAX_CPUS> = Heap::new();
/// Virtual address of physical 0 (the bootloader's linear map); 0 = unset.
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);
static SETUP_TICKS: AtomicU64 = AtomicU64::new(0);
/// End of the highest usable range handed over.
static MEMORY_TOP: AtomicU64 = AtomicU64::new(0);
/// Usable bytes below 16 MiB in the sanitised map, and in how many pieces:
/// what the DMA zone could manage at best (tests compare against it).
static DMA_OFFERED: AtomicU64 = AtomicU64::new(0);
static DMA_PIECES: AtomicU64 = AtomicU64::new(0);

/// Hands every sanitised range to the allocator, cut at zone boundaries
/// ([`cut_at_zones`]), so that each piece's metadata, which the allocator
/// carves from the piece's own first pages (reached through the linear
/// map), lies in the zone it describes. Pieces too small to hold their own
/// metadata are skipped.
pub fn init(map: &SanitisedMap, physical_memory_offset: u64) {
    let start = tsc::now();
    PHYS_OFFSET.store(physical_memory_offset, Ordering::SeqCst);
    // SAFETY: the bootloader maps all physical memory at this offset.
    unsafe { MEMORY.set_phys_offset(physical_memory_offset) };
    for &range in map.usable.as_slice() {
        MEMORY_TOP.fetch_max(range.end, Ordering::Relaxed);
        if range.start < DMA_END {
            DMA_OFFERED.fetch_add(range.end.min(DMA_END) - range.start, Ordering::Relaxed);
            DMA_PIECES.fetch_add(1, Ordering::Relaxed);
        }
        for piece in cut_at_zones(range) {
            // SAFETY: the piece is usable RAM from the sanitised map (no
            // firmware, bootloader or kernel frames), mapped by the linear
            // map, and handed over for good.
            if let Err(error) = unsafe { MEMORY.add_memory(PhysAddr(piece.start), piece.pages()) } {
                log::info!(
                    "usable memory {:#x}..{:#x} ({}) is left unused: {}",
                    piece.start,
                    piece.end,
                    ByteSize(piece.bytes()),
                    Unmanaged(error)
                );
            }
        }
    }
    SETUP_TICKS.store(tsc::now() - start, Ordering::Relaxed);
}

/// Why the allocator refused a range, in words a boot log reader needs:
/// the allocator's own message says what failed, not what it means here.
struct Unmanaged(Error);

impl fmt::Display for Unmanaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::SectionTooSmall => f.write_str(
                "too small to hold the allocator's metadata for it and leave a page to manage",
            ),
            Error::TooManySections => {
                f.write_str("the allocator already manages as many separate ranges as it can hold")
            }
            other => write!(f, "the allocator refused it ({other})"),
        }
    }
}

/// The kernel virtual address of a physical address (linear map).
pub fn phys_to_virt(phys: PhysAddr) -> VirtAddr {
    VirtAddr::new(PHYS_OFFSET.load(Ordering::Relaxed) + phys.0)
}

/// A run of physically contiguous frames, owned by whoever holds it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "frames leak unless given back with `free_run`"]
pub struct FrameRun {
    pub start: PhysAddr,
    pub pages: usize,
}

impl FrameRun {
    pub fn end(&self) -> PhysAddr {
        PhysAddr(self.start.0 + self.pages as u64 * PAGE_SIZE)
    }
}

/// One block of `2^order` frames, aligned to its size. Unconstrained
/// requests of orders 0..=3 come from this CPU's cache without a lock.
pub fn alloc_order(order: u32, constraint: Constraint) -> Result<PhysAddr, Error> {
    MEMORY.frames().alloc_in(order, constraint)
}

/// Gives back a block from [`alloc_order`].
pub fn free_order(start: PhysAddr, order: u32) -> Result<(), Error> {
    MEMORY.frames().free(start, order)
}

/// Exactly `pages` contiguous frames (not rounded to a power of two).
pub fn alloc_run(pages: usize, constraint: Constraint) -> Result<FrameRun, Error> {
    let start = MEMORY.frames().alloc_pages(pages, constraint)?;
    Ok(FrameRun { start, pages })
}

/// Gives a run back.
pub fn free_run(run: FrameRun) -> Result<(), Error> {
    MEMORY.frames().free_pages(run.start, run.pages)
}

/// Fills `out` with single frames under one lock acquisition; returns how
/// many it got (fewer only when memory runs out).
pub fn alloc_bulk(constraint: Constraint, out: &mut [PhysAddr]) -> Result<usize, Error> {
    MEMORY.frames().alloc_bulk(constraint, out)
}

/// Frees single frames under one lock acquisition; all or nothing.
pub fn free_bulk(frames: &[PhysAddr]) -> Result<(), framekeep::BulkError> {
    MEMORY.frames().free_bulk(frames)
}

/// Statistics of the buddy allocator, exact and fully merged: the per-CPU
/// caches and empty slabs are drained into it first, and its hot lists
/// merged.
pub fn stats() -> Stats {
    MEMORY.drain();
    MEMORY.frames().drain();
    MEMORY.frames().stats().buddy
}

/// One past the highest physical address the allocator manages.
pub fn memory_end() -> u64 {
    MEMORY_TOP.load(Ordering::Relaxed)
}

/// Pages the per-CPU caches of every CPU hold now.
pub fn cached_pages() -> u64 {
    MEMORY.frames().stats().cached_pages()
}

/// Gives every CPU's cached pages back to the buddy allocator (through a
/// call to each CPU); `false` if some CPU could not be reached.
pub fn drain_caches() -> bool {
    MEMORY.frames().drain()
}

/// The allocator's view of one page, with every per-CPU cache and empty
/// slab drained first, so that a frame a cache holds shows as free.
pub fn page_state(addr: PhysAddr) -> Result<PageState, Error> {
    MEMORY.drain();
    MEMORY.frames().drain();
    MEMORY.frames().with_buddy(|buddy| buddy.page_state(addr))
}

/// Slab and per-CPU cache statistics, as they are (nothing drained).
pub fn heap_stats() -> HeapStats {
    MEMORY.stats()
}

/// How many frames each CPU's page cache keeps and moves at a time.
pub fn cache_config() -> PcpConfig {
    MEMORY.frames().config()
}

/// The `x86_64` crate's frame traits over the kernel-wide allocator; used by
/// the page-table code. Any zone will do for page tables.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelFrames;

// SAFETY: frames come from the buddy allocator, which hands each frame out
// once until it is freed; they are unused when returned.
unsafe impl FrameAllocator<Size4KiB> for KernelFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let start = alloc_order(0, Constraint::ANY).ok()?;
        Some(PhysFrame::containing_address(X86PhysAddr::new(start.0)))
    }
}

impl FrameDeallocator<Size4KiB> for KernelFrames {
    /// # Safety
    /// The contract of [`FrameDeallocator::deallocate_frame`]: the frame came
    /// from [`KernelFrames`] and is no longer used.
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        if let Err(error) = free_order(PhysAddr(frame.start_address().as_u64()), 0) {
            log::error!("freeing page-table frame {frame:?} failed: {error:?}");
        }
    }
}

/// A bar of `WIDTH` cells: `#` used, `.` free.
struct UsageBar {
    used: u64,
    total: u64,
}

impl fmt::Display for UsageBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const WIDTH: u64 = 32;
        let filled = match self.total {
            0 => 0,
            total => (self.used * WIDTH).div_ceil(total),
        };
        f.write_str("[")?;
        for cell in 0..WIDTH {
            f.write_str(if cell < filled { "#" } else { "." })?;
        }
        f.write_str("]")
    }
}

/// The per-zone boot report: sizes, a usage bar, metadata overhead, the
/// buddyinfo table and how long setup took.
pub fn print_report() {
    let stats = stats();
    let micros = tsc::ticks_to_micros(SETUP_TICKS.load(Ordering::Relaxed));
    kprintln!("memory zones (allocator setup took {micros} us):");
    kprintln!(
        "  {:<6} {:>10} {:>10} {:>10}  {:<34}  metadata",
        "zone",
        "managed",
        "used",
        "free",
        "usage"
    );
    for zone in [Zone::Dma, Zone::Dma32, Zone::Normal] {
        let zone_stats = stats.zone(zone);
        // Metadata describing this zone's pages (carved from the start of
        // each range, so it may physically sit in a lower zone).
        let metadata = framekeep::heap_metadata_bytes(zone_stats.managed_pages) as u64;
        kprintln!(
            "  {:<6} {:>10} {:>10} {:>10}  {}  {}",
            zone.name(),
            ByteSize(zone_stats.managed_pages * PAGE_SIZE),
            ByteSize(zone_stats.used_pages() * PAGE_SIZE),
            ByteSize(zone_stats.free_pages * PAGE_SIZE),
            UsageBar {
                used: zone_stats.used_pages(),
                total: zone_stats.managed_pages
            },
            ByteSize(metadata)
        );
    }
    kprintln!("free blocks per zone and order (like /proc/buddyinfo):");
    kprintln!("  managed, free: 4 KiB pages; hot: free pages parked on hot lists, not merged yet;");
    kprintln!("  max: largest free block is 2^max pages; frag9: share of free memory in blocks");
    kprintln!("  too small for 2 MiB (order 9); then the number of free blocks of 2^order pages");
    kprintln!("{stats}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0x7a67_5f6b_7465_7374;

    /// Allocates everything `constraint` allows in a mix of orders, tags
    /// every page, links the blocks through their own first pages (no heap
    /// needed, however much memory there is), checks `accept` on each block,
    /// verifies every tag, frees it all. Returns the pages it got.
    fn drain_tag_and_return(constraint: Constraint, accept: impl Fn(u64, u32) -> bool) -> u64 {
        const ORDERS: [u32; 12] = [9, 0, 3, 1, 5, 0, 2, 7, 4, 0, 6, 8];
        let before = stats();
        let mut head = 0u64;
        let mut pages = 0u64;
        let mut max_order = 9;
        let mut step = 0;
        loop {
            let order = ORDERS[step % ORDERS.len()].min(max_order);
            step += 1;
            match alloc_order(order, constraint) {
                Ok(block) => {
                    assert!(
                        accept(block.0, order),
                        "block {:#x} of order {order} breaks the constraint",
                        block.0
                    );
                    for page in 0..1u64 << order {
                        let frame = block.0 + page * PAGE_SIZE;
                        let words = phys_to_virt(PhysAddr(frame)).as_mut_ptr::<u64>();
                        // SAFETY: the frame was just allocated to this test
                        // and is mapped by the linear map.
                        unsafe { words.write(frame ^ SALT) };
                    }
                    let first = phys_to_virt(block).as_mut_ptr::<u64>();
                    // SAFETY: as above; words 1 and 2 of the first page.
                    unsafe {
                        first.add(1).write(head);
                        first.add(2).write(order as u64);
                    }
                    head = block.0;
                    pages += 1 << order;
                }
                Err(Error::OutOfMemory) if order == 0 => break,
                // No block of this order is left: none larger either.
                Err(Error::OutOfMemory) => max_order = order - 1,
                Err(other) => panic!("allocation failed unexpectedly: {other:?}"),
            }
        }
        assert_eq!(stats().zone(Zone::Dma).free_pages.min(1), 0, "DMA drained");
        // Verify every tag, then free.
        let (mut block, mut verified) = (head, 0u64);
        while block != 0 {
            let first = phys_to_virt(PhysAddr(block)).as_ptr::<u64>();
            // SAFETY: the block is still allocated to this test.
            let (next, order) = unsafe { (first.add(1).read(), first.add(2).read() as u32) };
            for page in 0..1u64 << order {
                let frame = block + page * PAGE_SIZE;
                // SAFETY: as above.
                let tag = unsafe { phys_to_virt(PhysAddr(frame)).as_ptr::<u64>().read() };
                assert_eq!(
                    tag,
                    frame ^ SALT,
                    "frame {frame:#x} was overwritten: handed out twice?"
                );
            }
            free_order(PhysAddr(block), order).expect("freeing a block we own");
            verified += 1 << order;
            block = next;
        }
        assert_eq!(verified, pages);
        let after = stats();
        for zone in [Zone::Dma, Zone::Dma32, Zone::Normal] {
            assert_eq!(
                after.zone(zone).free_pages,
                before.zone(zone).free_pages,
                "{zone:?} free pages changed"
            );
        }
        pages
    }

    #[test_case]
    fn every_free_frame_is_handed_out_once_and_comes_back() {
        let free = stats().free_pages();
        let pages = drain_tag_and_return(Constraint::ANY, |_, _| true);
        assert_eq!(pages, free, "all free memory must be obtainable");
    }

    #[test_case]
    fn zone_limits_hold() {
        let dma32 = drain_tag_and_return(Constraint::Zone(Zone::Dma32), |start, order| {
            start + (PAGE_SIZE << order) <= 1 << 32
        });
        let dma = drain_tag_and_return(Constraint::Zone(Zone::Dma), |start, order| {
            start + (PAGE_SIZE << order) <= 16 << 20
        });
        let stats = stats();
        assert_eq!(
            dma32,
            stats.zone(Zone::Dma).free_pages + stats.zone(Zone::Dma32).free_pages
        );
        assert_eq!(dma, stats.zone(Zone::Dma).free_pages);
    }

    #[test_case]
    fn zones_match_the_machine() {
        let stats = stats();
        assert!(
            stats.zone(Zone::Dma).managed_pages > 0,
            "no memory below 16 MiB"
        );
        assert!(
            stats.zone(Zone::Dma32).managed_pages > 0,
            "no memory between 16 MiB and 4 GiB"
        );
        // On machines with memory above 4 GiB (QEMU gives it once -m > ~3G)
        // both DMA32 and Normal must be managed.
        let top = MEMORY_TOP.load(Ordering::Relaxed);
        assert_eq!(
            stats.zone(Zone::Normal).managed_pages > 0,
            top > 1 << 32,
            "memory top {top:#x}"
        );
        log::info!(
            "memory top {top:#x}: Normal zone {} pages",
            stats.zone(Zone::Normal).managed_pages
        );
    }

    /// The DMA zone manages what the map offers below 16 MiB, less only its
    /// own metadata (about 1.2 %: 1/32 is the bound) and a page or two per
    /// piece for rounding or a piece too small to keep. It failed when the
    /// metadata of a range running from below 16 MiB to gigabytes was all
    /// carved from the range's first pages (UEFI 512 MiB: 13.6 MiB offered,
    /// 8.1 MiB managed).
    #[test_case]
    fn dma_zone_is_not_eaten_by_metadata_of_higher_memory() {
        let offered = DMA_OFFERED.load(Ordering::Relaxed);
        let pieces = DMA_PIECES.load(Ordering::Relaxed);
        let managed = stats().zone(Zone::Dma).managed_pages * PAGE_SIZE;
        let allowed_loss = offered / 32 + pieces * 2 * PAGE_SIZE;
        kprintln!(
            "# DMA zone: {} offered in {pieces} pieces, {} managed",
            ByteSize(offered),
            ByteSize(managed)
        );
        assert!(
            managed + allowed_loss >= offered,
            "DMA zone manages {} of the {} the map offers below 16 MiB",
            ByteSize(managed),
            ByteSize(offered)
        );
    }

    #[test_case]
    fn bulk_frames_are_distinct_and_a_bad_batch_changes_nothing() {
        let before = stats();
        let mut batch = [PhysAddr(0); 512];
        assert_eq!(
            alloc_bulk(Constraint::Zone(Zone::Dma32), &mut batch),
            Ok(batch.len())
        );
        let mut sorted = batch;
        sorted.sort_unstable();
        assert!(
            sorted.windows(2).all(|pair| pair[0] != pair[1]),
            "a frame was handed out twice"
        );
        assert!(batch.iter().all(|frame| frame.0 < 1 << 32));
        // A batch naming one frame twice is refused as a whole.
        let mut bad = [batch[0], batch[1], batch[0]];
        assert!(free_bulk(&bad).is_err());
        bad[2] = batch[2];
        free_bulk(&bad).expect("the corrected batch");
        free_bulk(&batch[3..]).expect("the rest");
        assert_eq!(stats(), before);
    }

    #[test_case]
    fn bad_frees_are_rejected_and_change_nothing() {
        let before = stats();
        let block = alloc_order(2, Constraint::ANY).expect("a small block");
        assert_eq!(
            free_order(PhysAddr(block.0 + PAGE_SIZE), 0),
            Err(Error::InteriorPage)
        );
        assert!(free_order(block, 1).is_err(), "wrong order");
        assert_eq!(free_order(PhysAddr(0x1234), 0), Err(Error::Misaligned));
        free_order(block, 2).expect("the right free");
        assert_eq!(free_order(block, 2), Err(Error::DoubleFree));
        assert_eq!(stats(), before);
    }
}
