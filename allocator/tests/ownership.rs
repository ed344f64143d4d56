//! Each layer owns what it hands out: attacks through the public API only.
//!
//! Every test here is a bad call a kernel could make (a wrong layout, a
//! free through the wrong layer, a stale pointer, two frees racing) and
//! checks that it is refused, changes nothing, and never leads to memory
//! being handed out twice.

#[path = "common/host.rs"]
mod host;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use framekeep::{BuddyAllocator, Constraint, Error, FaultKind, PhysAddr};
use host::{Ram, TestCaches, TestHeap, heap};

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Everything observable about a heap's memory, to compare before/after.
fn snapshot(heap: &TestHeap) -> (u64, u64, u64, Vec<framekeep::FreeBlock>) {
    let st = heap.stats();
    let blocks = heap
        .frames()
        .with_buddy(|block| block.free_blocks().collect());
    (
        st.frames.free_pages(),
        st.frames.cached_pages(),
        st.slab_pages,
        blocks,
    )
}

/// Allocates `n` blocks of `l` and asserts that none overlaps another.
fn distinct(heap: &TestHeap, layout: Layout, n: usize) -> Vec<*mut u8> {
    let blocks: Vec<_> = (0..n).map(|_| heap.allocate(layout)).collect();
    let mut spans: Vec<_> = blocks
        .iter()
        .map(|&ptr| (ptr as usize, ptr as usize + layout.size()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "blocks overlap: {:#x?}", w);
    }
    blocks
}

/// The layouts the heap serves differently: small classes, cached page
/// orders, exact page runs at several alignments.
const LAYOUTS: [(usize, usize); 12] = [
    (8, 8),
    (64, 8),
    (2048, 2048),
    (4096, 8),
    (4096, 4096),
    (4096, 8192),
    (8192, 4096),
    (12288, 4096),
    (12288, 16384),
    (32768, 32768),
    (40000, 8),
    (1 << 20, 1 << 20),
];

fn plan_of(size: usize, align: usize) -> (usize, usize) {
    // Layouts the heap serves identically count as the same.
    if let Some(k) = framekeep::size_class(size, align) {
        return (0, k);
    }
    let pages = size.div_ceil(4096);
    if pages.is_power_of_two() && pages <= 8 && align <= pages * 4096 {
        return (1, pages);
    }
    (2 + pages, align.max(4096))
}

#[test]
fn every_wrong_layout_is_refused_and_changes_nothing() {
    let (heap, _ram) = heap(4096);
    // Under Miri, one layout of each kind (small, cached pages, page runs).
    let layouts: &[(usize, usize)] = if cfg!(miri) { &LAYOUTS[1..8] } else { &LAYOUTS };
    for &(size, align) in layouts {
        for &(fs, fa) in layouts {
            if plan_of(size, align) == plan_of(fs, fa) {
                continue;
            }
            let ptr = heap.allocate(lay(size, align));
            assert!(!ptr.is_null());
            let before = snapshot(&heap);
            // SAFETY: refused before anything is touched (what is tested).
            let error = unsafe { heap.try_dealloc(ptr, lay(fs, fa)) }.unwrap_err();
            assert_eq!(
                error.kind,
                FaultKind::WrongLayout,
                "alloc {size}/{align} freed as {fs}/{fa}"
            );
            assert_eq!(
                snapshot(&heap),
                before,
                "alloc {size}/{align} freed as {fs}/{fa}"
            );
            // realloc with the wrong layout: refused, the block untouched.
            // SAFETY: as above.
            let result = unsafe { heap.realloc(ptr, lay(fs, fa), fs * 2) };
            assert!(
                result.is_null(),
                "realloc of {size}/{align} as {fs}/{fa} accepted"
            );
            assert_eq!(snapshot(&heap), before);
            // SAFETY: the right layout, once.
            unsafe { heap.try_dealloc(ptr, lay(size, align)).unwrap() };
            // SAFETY: refused.
            let error = unsafe { heap.try_dealloc(ptr, lay(size, align)) }.unwrap_err();
            assert_eq!(
                error.kind,
                FaultKind::DoubleFree,
                "{size}/{align} freed twice"
            );
        }
    }
    assert!(heap.drain());
    assert_eq!(
        heap.stats().frames.free_pages(),
        heap.stats().frames.buddy.managed_pages()
    );
}

#[test]
fn page_at_8k_alignment_freed_as_4k_is_refused() {
    let (heap, _ram) = heap(1024);
    let ptr = heap.allocate(lay(4096, 8192));
    // SAFETY: refused.
    let error = unsafe { heap.try_dealloc(ptr, lay(4096, 4096)) }.unwrap_err();
    assert_eq!(error.kind, FaultKind::WrongLayout);
    // Still live: the page is not handed out again.
    let others = distinct(&heap, lay(4096, 4096), 500);
    assert!(!others.contains(&ptr));
    // SAFETY: the right layout.
    unsafe { heap.try_dealloc(ptr, lay(4096, 8192)).unwrap() };
}

#[test]
fn a_page_the_heap_never_handed_out_is_refused() {
    let (heap, _ram) = heap(1024);
    // A page-table frame: taken from the page layer, not the heap.
    let frame = heap.frames().alloc(0).unwrap();
    let run = heap.frames().alloc_pages(3, Constraint::ANY).unwrap();
    for (addr, layout) in [
        (frame, lay(8, 8)),
        (frame, lay(4096, 4096)),
        (run, lay(12288, 4096)),
    ] {
        // SAFETY: refused.
        let error = unsafe { heap.try_dealloc(addr.0 as *mut u8, layout) }.unwrap_err();
        assert_eq!(error.kind, FaultKind::NotAllocated, "{addr} as {layout:?}");
    }
    heap.frames().free(frame, 0).unwrap();
    heap.frames().free_pages(run, 3).unwrap();
}

#[test]
fn the_page_layer_refuses_the_heaps_memory() {
    let (heap, _ram) = heap(2048);
    let obj = heap.allocate(lay(64, 8));
    let slab_page = PhysAddr(obj as u64 & !4095);
    let page = PhysAddr(heap.allocate(lay(4096, 4096)) as u64);
    let run = PhysAddr(heap.allocate(lay(12288, 4096)) as u64);
    let frames = heap.frames();
    let before = snapshot(&heap);
    assert_eq!(frames.free(slab_page, 0), Err(Error::OwnedBySlab));
    assert_eq!(frames.free_pages(slab_page, 1), Err(Error::OwnedBySlab));
    assert_eq!(
        frames.free_bulk(&[slab_page]).unwrap_err().error,
        Error::OwnedBySlab
    );
    assert_eq!(frames.free(page, 0), Err(Error::OwnedByHeap));
    assert_eq!(frames.free_pages(page, 1), Err(Error::OwnedByHeap));
    assert_eq!(
        frames.free_bulk(&[page]).unwrap_err().error,
        Error::OwnedByHeap
    );
    assert_eq!(frames.free_pages(run, 3), Err(Error::OwnedByHeap));
    assert_eq!(snapshot(&heap), before);
    // Nothing of the above is handed out again.
    let more = distinct(&heap, lay(4096, 4096), 1000);
    for ptr in [slab_page.0, page.0, run.0, run.0 + 4096, run.0 + 8192] {
        assert!(
            !more.contains(&(ptr as *mut u8)),
            "{ptr:#x} handed out twice"
        );
    }
}

#[test]
fn a_cached_page_cannot_be_freed_around_the_cache() {
    let caches = Box::new(TestCaches::new(BuddyAllocator::new()));
    caches
        .add_section_static(PhysAddr(1 << 32), 256, vec![0u64; 512].leak())
        .unwrap();
    let ptr = caches.alloc(0).unwrap();
    caches.free(ptr, 0).unwrap(); // into this CPU's cache
    assert_eq!(caches.free_pages(ptr, 1), Err(Error::DoubleFree));
    assert_eq!(
        caches.free_bulk(&[ptr]).unwrap_err().error,
        Error::DoubleFree
    );
    assert_eq!(caches.free(ptr, 0), Err(Error::DoubleFree));
    let mut seen = HashSet::new();
    while let Ok(q) = caches.alloc(0) {
        assert!(seen.insert(q), "{q} handed out twice");
    }
    assert_eq!(seen.len(), 256);
}

#[test]
fn memory_cannot_be_registered_by_name_under_a_heap() {
    let (heap, _ram) = heap(256);
    let before = snapshot(&heap);
    let result = heap
        .frames()
        .add_section_static(PhysAddr(1 << 40), 16, vec![0u64; 32].leak());
    assert_eq!(result, Err(Error::FramesNotMapped));
    let start = heap
        .frames()
        .with_buddy(|block| block.sections().next().unwrap().start);
    assert_eq!(
        heap.frames().remove_section(start).unwrap_err(),
        Error::NotRemovable
    );
    assert_eq!(snapshot(&heap), before);
}

/// A `Block` keeps a reference into its section's metadata: the section
/// must stay while the block is out, and the block's free must still work.
#[test]
fn a_section_with_a_block_out_cannot_be_removed() {
    let caches = TestCaches::new(BuddyAllocator::new());
    let start = PhysAddr(1 << 32);
    caches
        .add_section_static(start, 16, vec![0u64; 32].leak())
        .unwrap();
    let block = caches.alloc_block(0).unwrap();
    assert_eq!(
        caches.remove_section(start).unwrap_err(),
        Error::SectionInUse
    );
    caches.free_block(block).unwrap();
    assert_eq!(caches.remove_section(start).unwrap().pages, 16);
}

#[test]
fn poisoning_refuses_memory_named_only() {
    let caches = TestCaches::new(BuddyAllocator::new());
    let opts = framekeep::FrameOptions {
        poison: true,
        zero_on_alloc: false,
    };
    // SAFETY: nothing registered, and only mapped memory is below.
    unsafe { caches.set_frame_options(std::ptr::null_mut(), opts) };
    let result = caches.add_section_static(PhysAddr(1 << 40), 16, vec![0u64; 32].leak());
    assert_eq!(result, Err(Error::FramesNotMapped));
}

/// A write through a stale pointer to a freed page lands wherever that
/// page went next; slab bookkeeping is never there.
#[test]
fn a_stale_pointer_cannot_forge_slab_bookkeeping() {
    let (heap, ram) = heap(4096);
    let page = lay(4096, 4096);
    let stale: Vec<_> = (0..64).map(|_| heap.allocate(page)).collect();
    for &ptr in &stale {
        // SAFETY: live, freed once.
        unsafe { heap.try_dealloc(ptr, page).unwrap() };
    }
    let small = lay(64, 8);
    let count = if cfg!(miri) { 200 } else { 2000 };
    let mut objs = distinct(&heap, small, count);
    for &ptr in &stale {
        // The stale writes: every byte of every page freed above.
        // SAFETY: host memory of the test's RAM (what the heap manages).
        unsafe { ptr.write_bytes(0xff, 4096) };
    }
    objs.extend(distinct(&heap, small, count));
    let mut seen = HashSet::new();
    let span = ram.start()..ram.start() + ram.pages() * 4096;
    for &o in &objs {
        assert!(span.contains(&(o as u64)), "{o:?} is outside the heap");
        assert!(seen.insert(o as usize), "{o:?} handed out twice");
    }
    for &o in &objs {
        // SAFETY: live objects of layout `small`, freed once.
        unsafe { heap.try_dealloc(o, small).unwrap() };
    }
    assert!(heap.drain());
    assert_eq!(heap.stats().slab_pages, 0);
    assert_eq!(
        heap.stats().frames.free_pages(),
        heap.stats().frames.buddy.managed_pages()
    );
}

/// Two CPUs freeing the same block at the same moment: one wins.
#[test]
fn racing_frees_of_one_block_succeed_once() {
    let caches: Arc<TestCaches> = Arc::new(TestCaches::new(BuddyAllocator::new()));
    caches
        .add_section_static(PhysAddr(1 << 32), 1024, vec![0u64; 2048].leak())
        .unwrap();
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    for _ in 0..rounds {
        let ptr = caches.alloc(0).unwrap();
        let wins = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (caches, wins, start) = (caches.clone(), wins.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let result = if i == 0 {
                        caches.free(ptr, 0)
                    } else {
                        caches.free_pages(ptr, 1)
                    };
                    if result.is_ok() {
                        wins.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(wins.load(Ordering::Relaxed), 1, "{ptr} freed twice");
    }
    assert!(caches.drain_all());
    let mut seen = HashSet::new();
    while let Ok(q) = caches.alloc(0) {
        assert!(seen.insert(q), "{q} handed out twice");
    }
    assert_eq!(seen.len(), 1024);
}

#[test]
fn heap_memory_added_with_separate_metadata_needs_room_for_descriptors() {
    let heap = TestHeap::new();
    let ram = Ram::new(64, 4096);
    let meta = vec![0u64; framekeep::cache_metadata_bytes(64) / 8].leak();
    // SAFETY: both buffers are ours; the call is refused before use.
    let result = unsafe {
        heap.add_section(
            PhysAddr(ram.start()),
            64,
            std::ptr::NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
            framekeep::cache_metadata_bytes(64),
        )
    };
    assert_eq!(result, Err(Error::MetadataTooSmall));
    assert_eq!(heap.stats().frames.buddy.managed_pages(), 0);
}

/// A `Block` can only be freed by giving it back: no free by address takes
/// it, and a race between the two frees the block once.
#[test]
fn a_block_is_freed_only_through_its_handle() {
    let caches: Arc<TestCaches> = Arc::new(TestCaches::new(BuddyAllocator::new()));
    caches
        .add_section_static(PhysAddr(1 << 32), 256, vec![0u64; 512].leak())
        .unwrap();
    let block = caches.alloc_block(0).unwrap();
    let addr = block.addr();
    assert_eq!(caches.free(addr, 0), Err(Error::OwnedByHandle));
    assert_eq!(caches.free_pages(addr, 1), Err(Error::OwnedByHandle));
    assert_eq!(
        caches.free_bulk(&[addr]).unwrap_err().error,
        Error::OwnedByHandle
    );
    let other = TestCaches::new(BuddyAllocator::new());
    let stray = caches.alloc_block(1).unwrap();
    assert_eq!(other.free_block(stray), Err(Error::NotInSection));
    caches.free_block(block).unwrap();
    let rounds = if cfg!(miri) { 10 } else { 1000 };
    for _ in 0..rounds {
        let block = caches.alloc_block(0).unwrap();
        let addr = block.addr();
        let caches2 = caches.clone();
        let thread = std::thread::spawn(move || caches2.free(addr, 0));
        caches.free_block(block).unwrap();
        assert!(
            thread.join().unwrap().is_err(),
            "{addr} freed by address too"
        );
    }
    assert!(caches.drain_all());
    let mut seen = HashSet::new();
    while let Ok(q) = caches.alloc(0) {
        assert!(seen.insert(q), "{q} handed out twice");
    }
    // 256 pages, less the order-1 block leaked into the other caches' free.
    assert_eq!(seen.len(), 254);
}
