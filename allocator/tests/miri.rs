//! Every layer in sizes Miri runs in seconds: the suite `make miri` runs
//! under Stacked and Tree Borrows (it passes natively too, as part of
//! `cargo test`). Nothing here leaks, so Miri's leak check stays on.
//!
//! - buddy: every order, exact page counts, alignment, fixed ranges, bulk,
//!   zone reserves, hot lists, sections added and removed, poisoning and
//!   zeroing of frame memory, the locked wrapper from two threads;
//! - per-CPU page caches: the first refill, frees beyond `high` (a batch
//!   drained), every cached order, draining another CPU's cache through
//!   `run_on` (explicitly, and before an allocation fails), masked
//!   out-of-memory, removing a section that has cached pages;
//! - slab: local frees, remote frees from another thread and their
//!   collection, remote double frees, empty slabs retired, trimming every
//!   CPU (one of them another live thread);
//! - `Heap`: alloc, realloc (in place, growing, shrinking, moving), dealloc,
//!   huge alignment, out of memory, bad frees reported to the handler.

#[path = "common/host.rs"]
mod host;

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use framekeep::{
    BuddyAllocator, Constraint, Error, FaultKind, FrameOptions, LockedAllocator, NoInterrupts,
    PageCaches, PcpConfig, PhysAddr, SLAB_RESERVE, Zone, cache_metadata_bytes, metadata_bytes,
};
use host::{HostCpu, Ram, TestHeap, as_cpu, heap, my_cpu};

const PAGE: u64 = 4096;

/// Metadata words for `pages` pages of a buddy (`caches`: of page caches).
fn meta(pages: u64, caches: bool) -> Vec<u64> {
    let bytes = if caches {
        cache_metadata_bytes(pages)
    } else {
        metadata_bytes(pages)
    };
    vec![0u64; bytes.div_ceil(8)]
}

/// Registers `pages` pages at `start` with metadata `metadata` (which must
/// outlive the allocator and be used by nothing else meanwhile).
fn add(
    alloc: &mut BuddyAllocator,
    start: u64,
    pages: u64,
    metadata: &mut [u64],
) -> Result<(), Error> {
    let bytes = std::mem::size_of_val(metadata);
    // SAFETY: every caller keeps `metadata` alive and untouched until `alloc` is gone.
    unsafe {
        alloc.add_section(
            PhysAddr(start),
            pages,
            NonNull::from(metadata).cast(),
            bytes,
        )
    }
}

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

// ---------------------------------------------------------------- buddy

#[test]
fn buddy_orders_pages_alignment_ranges_and_bulk() {
    let mut metadata = meta(256, false);
    let mut alloc = BuddyAllocator::new();
    let base = 1u64 << 32; // Normal
    add(&mut alloc, base, 256, &mut metadata).unwrap();
    // Every order up to the section, naturally aligned, merged back.
    for order in 0..=8 {
        let frame = alloc.alloc(order, Constraint::ANY).unwrap();
        assert_eq!(frame.0 % (PAGE << order), 0);
        alloc.free(frame, order).unwrap();
    }
    assert_eq!(alloc.stats().free_pages(), 256);
    // Exact counts and alignment beyond the size.
    let frame = alloc.alloc_pages(5, Constraint::ANY).unwrap();
    assert_eq!(alloc.stats().free_pages(), 251);
    let aligned = alloc.alloc_aligned(3, 64 << 10, Constraint::ANY).unwrap();
    assert_eq!(aligned.0 % (64 << 10), 0);
    alloc.free_pages(frame, 5).unwrap();
    alloc.free_pages(aligned, 3).unwrap();
    // Hot lists: a page whose buddy is busy is parked and handed out again.
    let (first, second) = (
        alloc.alloc(0, Constraint::ANY).unwrap(),
        alloc.alloc(0, Constraint::ANY).unwrap(),
    );
    alloc.free(first, 0).unwrap();
    assert_eq!(alloc.alloc(0, Constraint::ANY), Ok(first));
    alloc.free(first, 0).unwrap();
    alloc.free(second, 0).unwrap();
    alloc.drain_hot();
    // A fixed range, and bulk single frames.
    let range = PhysAddr(base + 17 * PAGE);
    alloc.reserve_range(range, 10).unwrap();
    assert_eq!(
        alloc.reserve_range(PhysAddr(base + 20 * PAGE), 2),
        Err(Error::RangeInUse)
    );
    let mut frames = [PhysAddr(0); 24];
    assert_eq!(alloc.alloc_bulk(Constraint::ANY, &mut frames), Ok(24));
    let error = alloc
        .free_bulk(&[frames[0], frames[1], frames[0]])
        .unwrap_err();
    assert_eq!((error.index, error.error), (2, Error::DoubleFree));
    alloc.free_bulk(&frames).unwrap();
    alloc.free_pages(range, 10).unwrap();
    // Bad calls change nothing.
    assert_eq!(alloc.free(PhysAddr(base + 1), 0), Err(Error::Misaligned));
    assert_eq!(alloc.free(PhysAddr(base), 0), Err(Error::DoubleFree));
    assert_eq!(alloc.alloc_pages(0, Constraint::ANY), Err(Error::ZeroCount));
    alloc.drain_hot();
    assert_eq!(alloc.stats().free_pages(), 256);
    assert_eq!(alloc.free_blocks().count(), 1);
}

#[test]
fn buddy_zones_reserves_and_sections() {
    let (mut m1, mut m2, mut m3) = (meta(64, false), meta(64, false), meta(32, false));
    let mut alloc = BuddyAllocator::new();
    add(&mut alloc, 0x80_0000, 64, &mut m1).unwrap(); // DMA
    add(&mut alloc, 0x100_0000, 64, &mut m2).unwrap(); // DMA32
    assert_eq!(
        add(&mut alloc, 0x100_0000 + 32 * PAGE, 32, &mut m3),
        Err(Error::SectionOverlap)
    );
    // Normal memory hot-added later.
    add(&mut alloc, 1 << 32, 32, &mut m3).unwrap();
    let normal_frame = alloc.alloc(0, Constraint::ANY).unwrap();
    assert!(normal_frame.0 >= 1 << 32);
    let dma_frame = alloc.alloc(0, Constraint::Zone(Zone::Dma)).unwrap();
    assert!(dma_frame.0 < 16 << 20);
    // A reserve keeps DMA32 from requests that could go higher.
    alloc.set_reserve(Zone::Dma32, 64);
    let mut normal = vec![normal_frame];
    while let Ok(frame) = alloc.alloc(0, Constraint::ANY) {
        assert!(frame.0 >= 1 << 32 || frame.0 < 16 << 20, "{frame:?}");
        normal.push(frame);
    }
    assert!(alloc.alloc(0, Constraint::Zone(Zone::Dma32)).is_ok());
    alloc.set_reserve(Zone::Dma32, 0);
    // A section with allocated pages cannot go; a free one can.
    assert_eq!(
        alloc.remove_section(PhysAddr(1 << 32)),
        Err(Error::SectionInUse)
    );
    for frame in normal {
        alloc.free(frame, 0).unwrap();
    }
    alloc.drain_hot();
    let removed = alloc.remove_section(PhysAddr(1 << 32)).unwrap();
    assert_eq!(removed.pages, 32);
    assert!(alloc.sections().all(|section| section.start.0 < 1 << 32));
}

#[test]
fn buddy_poisons_and_zeroes_frame_memory() {
    // 16 pages of "physical" memory at 2 MiB, mapped at `ram`.
    let ram = Ram::new(16, PAGE as usize);
    let phys = 0x20_0000u64;
    let mut metadata = meta(16, false);
    let mut alloc = BuddyAllocator::new();
    add(&mut alloc, phys, 16, &mut metadata).unwrap();
    let off = (ram.start() as *mut u8).wrapping_sub(phys as usize);
    // SAFETY: `ram` outlives `alloc` and stands for [phys, phys + 64 KiB).
    unsafe {
        alloc.set_frame_options(
            off,
            FrameOptions {
                poison: true,
                zero_on_alloc: true,
            },
        )
    };
    let frame = alloc.alloc(1, Constraint::ANY).unwrap();
    let bytes = off.wrapping_add(frame.0 as usize);
    // SAFETY: the two pages at `frame` are ours now.
    unsafe {
        assert!((0..2 * PAGE as usize).all(|i| *bytes.add(i) == 0));
        bytes.write_bytes(0x5a, 2 * PAGE as usize);
    }
    alloc.free(frame, 1).unwrap();
    // A write to a free (poisoned) frame is caught on its next allocation.
    // SAFETY: test-only scribble on free memory we own.
    unsafe { *bytes.add(100) = 1 };
    let mut got = Vec::new();
    let mut caught = false;
    for _ in 0..16 {
        match alloc.alloc(0, Constraint::ANY) {
            Ok(frame) => got.push(frame),
            Err(Error::Corrupted { .. }) => caught = true,
            Err(error) => panic!("{error:?}"),
        }
    }
    assert!(caught);
    alloc.clear_frame_options();
    for frame in got {
        alloc.free(frame, 0).unwrap();
    }
}

#[test]
fn locked_allocator_from_two_threads() {
    let mut metadata = meta(64, false);
    let mut buddy = BuddyAllocator::new();
    add(&mut buddy, 1 << 32, 64, &mut metadata).unwrap();
    let locked = LockedAllocator::<NoInterrupts>::new(buddy);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for i in 0..8u32 {
                    let frame = locked.alloc(i % 3, Constraint::ANY).unwrap();
                    locked.free(frame, i % 3).unwrap();
                }
            });
        }
    });
    assert_eq!(locked.stats().free_pages(), 64);
}

// ---------------------------------------------------- per-CPU page caches

type Caches = PageCaches<HostCpu, { host::CPUS }>;

/// Page caches over `pages` Normal pages (metadata in `metadata`).
fn caches(pages: u64, cfg: PcpConfig, metadata: &mut Vec<u64>) -> Box<Caches> {
    *metadata = meta(pages, true);
    let caches = Box::new(Caches::with_config(BuddyAllocator::new(), cfg));
    let bytes = std::mem::size_of_val(metadata.as_slice());
    // SAFETY: every caller keeps `metadata` alive and untouched until `caches` is gone.
    unsafe {
        caches
            .add_section(
                PhysAddr(1 << 32),
                pages,
                NonNull::from(metadata.as_mut_slice()).cast(),
                bytes,
            )
            .unwrap()
    };
    caches
}

/// The first allocation refills the empty list from the buddy (Miri used
/// to flag it: the refill re-borrowed the lists while the fast path's
/// borrow was still live).
#[test]
fn pcp_first_refill() {
    let mut metadata = Vec::new();
    let caches = caches(64, PcpConfig::DEFAULT, &mut metadata);
    let frame = caches.alloc(0).unwrap();
    let stats = caches.stats();
    assert_eq!(stats.cached_pages(), PcpConfig::DEFAULT.batch[0] as u64 - 1);
    caches.free(frame, 0).unwrap();
    assert_eq!(caches.free(frame, 0), Err(Error::DoubleFree));
    assert_eq!(caches.stats().free_pages(), 64);
    drop(caches);
}

/// Frees beyond `high` drain a batch to the buddy (the overflow path had
/// the same shape as the refill), for every cached order.
#[test]
fn pcp_overflow_drains_a_batch() {
    let mut metadata = Vec::new();
    let cfg = PcpConfig {
        high: [4; 4],
        batch: [2; 4],
    };
    let caches = caches(128, cfg, &mut metadata);
    for order in 0..4u32 {
        let blocks: Vec<_> = (0..6).map(|_| caches.alloc(order).unwrap()).collect();
        for &block in &blocks {
            assert_eq!(block.0 % (PAGE << order), 0);
        }
        if order > 0 {
            let error = Error::WrongCount {
                allocated: 1 << order,
            };
            assert_eq!(caches.free(blocks[0], order - 1), Err(error));
        }
        for block in blocks {
            caches.free(block, order).unwrap();
        }
        // At most `high` blocks of each order so far.
        assert!(caches.stats().cached_pages() <= 4 * ((2 << order) - 1));
    }
    assert_eq!(caches.stats().free_pages(), 128);
    caches.drain_local();
    assert_eq!(caches.stats().buddy.free_pages(), 128);
}

/// Another thread (CPU) keeps pages in its cache; this thread drains it
/// through `run_on`, explicitly and when an allocation would fail.
#[test]
fn pcp_drain_other_cpu_and_out_of_memory() {
    let mut metadata = Vec::new();
    let caches = caches(64, PcpConfig::DEFAULT, &mut metadata);
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let caches = &caches;
        scope.spawn(move || {
            let frames: Vec<_> = (0..4).map(|_| caches.alloc(0).unwrap()).collect();
            for frame in frames {
                caches.free(frame, 0).unwrap();
            }
            tx.send(my_cpu()).unwrap();
            done_rx.recv().unwrap();
        });
        let other = rx.recv().unwrap();
        assert_ne!(other, my_cpu());
        assert!(caches.stats().cached_pages() > 0);
        assert!(caches.drain_cpu(other));
        assert_eq!(caches.stats().cached_pages(), 0);
        // Its cache fills again (as that CPU), then an allocation here
        // that finds the buddy empty drains it.
        as_cpu(other, || {
            let frame = caches.alloc(0).unwrap();
            caches.free(frame, 0).unwrap();
        });
        let mut got = Vec::new();
        while let Ok(frame) = caches.alloc(0) {
            got.push(frame);
        }
        assert_eq!(got.len(), 64);
        assert_eq!(caches.stats().free_pages(), 0);
        // Masked (as another CPU, through run_on): only that CPU's own
        // cache can be drained before the request fails.
        let (pa, pb) = (got.pop().unwrap(), got.pop().unwrap());
        as_cpu(other, || caches.free(pa, 0)).unwrap();
        caches.free(pb, 0).unwrap(); // into this CPU's cache
        assert_eq!(as_cpu(other, || caches.alloc(3)), Err(Error::OutOfMemory));
        assert_eq!(caches.stats().cached_pages(), 1);
        for frame in got {
            caches.free(frame, 0).unwrap();
        }
        done_tx.send(()).unwrap();
    });
    // Removal drains every cache first.
    let removed = caches.remove_section(PhysAddr(1 << 32)).unwrap();
    assert_eq!(removed.pages, 64);
    drop(caches);
}

// ------------------------------------------------------------ slab, Heap

/// Objects freed on their own CPU and on another (remote), collected by
/// the owner; double frees of both kinds; empty slabs given back.
#[test]
fn slab_local_remote_collect_and_retire() {
    let (heap, _ram) = heap(128);
    let heap: Arc<TestHeap> = Arc::from(heap);
    let layout = lay(256, 8); // 16 objects in a 4 KiB slab
    let addrs: Vec<usize> = (0..48).map(|_| heap.allocate(layout) as usize).collect();
    assert_eq!(heap.stats().slab_pages, 3);
    // SAFETY: live objects of layout `layout`, each freed once; then rejected.
    unsafe {
        for &addr in &addrs[..8] {
            heap.try_dealloc(addr as *mut u8, layout).unwrap();
        }
        let error = heap.try_dealloc(addrs[0] as *mut u8, layout).unwrap_err();
        assert_eq!(error.kind, FaultKind::DoubleFree);
    }
    let remote_heap = heap.clone();
    let remote = addrs[8..].to_vec();
    std::thread::spawn(move || {
        assert_ne!(my_cpu(), usize::MAX);
        for &addr in &remote {
            // SAFETY: live objects, freed once (remotely).
            unsafe { remote_heap.try_dealloc(addr as *mut u8, layout).unwrap() };
        }
        // SAFETY: rejected, nothing touched.
        let error = unsafe { remote_heap.try_dealloc(remote[0] as *mut u8, layout) }.unwrap_err();
        assert_eq!(error.kind, FaultKind::DoubleFree);
    })
    .join()
    .unwrap();
    // Uncollected: a local free of a remotely freed object is a double free.
    // SAFETY: rejected, nothing touched.
    let error = unsafe { heap.try_dealloc(addrs[20] as *mut u8, layout) }.unwrap_err();
    assert_eq!(error.kind, FaultKind::DoubleFree);
    // The owner's slow path (a class without a current slab) collects them
    // and retires the empty slabs beyond the reserve.
    let refill = heap.allocate(lay(1024, 8));
    assert!(heap.stats().slab_pages <= 1 + 4 + SLAB_RESERVE as u64);
    // Everything comes back exactly once.
    let again: Vec<usize> = (0..48).map(|_| heap.allocate(layout) as usize).collect();
    let mut sorted = again.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 48);
    // SAFETY: live, freed once each.
    unsafe {
        heap.try_dealloc(refill, lay(1024, 8)).unwrap();
        for addr in again {
            heap.try_dealloc(addr as *mut u8, layout).unwrap();
        }
    }
    assert!(heap.drain());
    assert_eq!(heap.stats().slab_pages, 0);
    assert_eq!(heap.stats().frames.cached_pages(), 0);
}

/// `Heap::drain` trims a CPU that is another live thread (through
/// `run_on`), collecting the remote frees it has not seen yet.
#[test]
fn slab_trim_other_cpu() {
    let (heap, _ram) = heap(128);
    let layout = lay(64, 8);
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let heap = &heap;
        scope.spawn(move || {
            let addrs: Vec<usize> = (0..80).map(|_| heap.allocate(layout) as usize).collect();
            let page = heap.allocate(lay(4096, 4096)) as usize;
            tx.send((my_cpu(), addrs, page)).unwrap();
            go_rx.recv().unwrap();
        });
        let (other, addrs, page) = rx.recv().unwrap();
        assert_ne!(other, my_cpu());
        // SAFETY: live objects (of the other CPU), freed once here.
        unsafe {
            for addr in addrs {
                heap.try_dealloc(addr as *mut u8, layout).unwrap();
            }
            heap.try_dealloc(page as *mut u8, lay(4096, 4096)).unwrap();
        }
        assert!(heap.stats().slab_pages > 0);
        assert!(heap.drain());
        let stats = heap.stats();
        assert_eq!((stats.slab_pages, stats.frames.cached_pages()), (0, 0));
        go_tx.send(()).unwrap();
    });
}

static FAULTS: AtomicUsize = AtomicUsize::new(0);

fn on_fault(_: framekeep::Fault) {
    FAULTS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn heap_alloc_realloc_dealloc_and_faults() {
    let (heap, _ram) = heap(256);
    heap.set_fault_handler(on_fault);
    // SAFETY: GlobalAlloc use: each block reallocated or freed once with
    // its current layout; the bad frees are rejected before anything is
    // touched.
    unsafe {
        // Small: in place within a class, then moving to another class.
        let small = heap.alloc(lay(20, 8));
        small.write_bytes(0x11, 20);
        assert_eq!(heap.realloc(small, lay(20, 8), 24), small);
        let grown = heap.realloc(small, lay(24, 8), 100);
        assert_ne!(grown, small);
        assert!(
            std::slice::from_raw_parts(grown, 20)
                .iter()
                .all(|&byte| byte == 0x11)
        );
        // Pages from the per-CPU cache, and a multi-page run from the
        // buddy: grown and shrunk in place, then grown by moving.
        let pg = heap.alloc(lay(8192, 4096));
        pg.write_bytes(0x33, 8192);
        let big = heap.alloc(lay(20 * 4096, 4096));
        big.write_bytes(0x22, 20 * 4096);
        assert_eq!(heap.realloc(big, lay(20 * 4096, 4096), 24 * 4096), big);
        assert_eq!(heap.realloc(big, lay(24 * 4096, 4096), 17 * 4096 + 5), big);
        let blocker = heap.alloc(lay(15 * 4096, 4096));
        let moved = heap.realloc(big, lay(17 * 4096 + 5, 4096), 40 * 4096);
        assert!(!moved.is_null() && moved != big);
        assert!(
            std::slice::from_raw_parts(moved, 17 * 4096)
                .iter()
                .all(|&byte| byte == 0x22)
        );
        // Small -> pages -> small.
        let paged = heap.realloc(grown, lay(100, 8), 10_000);
        let shrunk = heap.realloc(paged, lay(10_000, 8), 10);
        assert!(
            std::slice::from_raw_parts(shrunk, 10)
                .iter()
                .all(|&byte| byte == 0x11)
        );
        // Alignment beyond the size.
        let al = heap.alloc(lay(100, 1 << 16));
        assert_eq!(al as usize % (1 << 16), 0);
        // Out of memory: null, the old block intact.
        assert!(heap.alloc(lay(1 << 40, 8)).is_null());
        assert!(heap.realloc(shrunk, lay(10, 8), 1 << 40).is_null());
        // Bad frees: returned by try_dealloc, reported by dealloc.
        let layout = lay(64, 8);
        let object = heap.alloc(layout);
        let object2 = heap.alloc(layout);
        assert_eq!(
            heap.try_dealloc(object.add(1), layout).unwrap_err().kind,
            FaultKind::NotObjectStart
        );
        assert_eq!(
            heap.try_dealloc(object, lay(128, 8)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        let mut local = [0u64; 8];
        assert_eq!(
            heap.try_dealloc(local.as_mut_ptr().cast(), layout)
                .unwrap_err()
                .kind,
            FaultKind::NotAllocated
        );
        assert_eq!(
            heap.try_dealloc(pg, lay(4096, 4096)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        heap.dealloc(object, layout);
        heap.dealloc(object, layout); // double free: reported, ignored
        assert_eq!(FAULTS.load(Ordering::Relaxed), 1);
        assert_eq!(heap.stats().faults, 1);
        for (ptr, layout) in [
            (object2, layout),
            (shrunk, lay(10, 8)),
            (pg, lay(8192, 4096)),
            (moved, lay(40 * 4096, 4096)),
            (blocker, lay(15 * 4096, 4096)),
            (al, lay(100, 1 << 16)),
        ] {
            heap.try_dealloc(ptr, layout).unwrap();
        }
    }
    assert!(heap.drain());
    let stats = heap.stats();
    assert_eq!(
        stats.frames.buddy.free_pages(),
        stats.frames.buddy.managed_pages()
    );
}
