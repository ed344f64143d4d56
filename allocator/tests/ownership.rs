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
fn snapshot(h: &TestHeap) -> (u64, u64, u64, Vec<framekeep::FreeBlock>) {
    let st = h.stats();
    let blocks = h.frames().with_buddy(|b| b.free_blocks().collect());
    (
        st.frames.free_pages(),
        st.frames.cached_pages(),
        st.slab_pages,
        blocks,
    )
}

/// Allocates `n` blocks of `l` and asserts that none overlaps another.
fn distinct(h: &TestHeap, l: Layout, n: usize) -> Vec<*mut u8> {
    let v: Vec<_> = (0..n).map(|_| h.allocate(l)).collect();
    let mut spans: Vec<_> = v
        .iter()
        .map(|&p| (p as usize, p as usize + l.size()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "blocks overlap: {:#x?}", w);
    }
    v
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
    let (h, _ram) = heap(4096);
    for &(s, a) in &LAYOUTS {
        for &(fs, fa) in &LAYOUTS {
            if plan_of(s, a) == plan_of(fs, fa) {
                continue;
            }
            let p = h.allocate(lay(s, a));
            assert!(!p.is_null());
            let before = snapshot(&h);
            // SAFETY: refused before anything is touched (what is tested).
            let e = unsafe { h.try_dealloc(p, lay(fs, fa)) }.unwrap_err();
            assert_eq!(
                e.kind,
                FaultKind::WrongLayout,
                "alloc {s}/{a} freed as {fs}/{fa}"
            );
            assert_eq!(snapshot(&h), before, "alloc {s}/{a} freed as {fs}/{fa}");
            // realloc with the wrong layout: refused, the block untouched.
            // SAFETY: as above.
            let r = unsafe { h.realloc(p, lay(fs, fa), fs * 2) };
            assert!(r.is_null(), "realloc of {s}/{a} as {fs}/{fa} accepted");
            assert_eq!(snapshot(&h), before);
            // SAFETY: the right layout, once.
            unsafe { h.try_dealloc(p, lay(s, a)).unwrap() };
            // SAFETY: refused.
            let e = unsafe { h.try_dealloc(p, lay(s, a)) }.unwrap_err();
            assert_eq!(e.kind, FaultKind::DoubleFree, "{s}/{a} freed twice");
        }
    }
    assert!(h.drain());
    assert_eq!(
        h.stats().frames.free_pages(),
        h.stats().frames.buddy.managed_pages()
    );
}

#[test]
fn page_at_8k_alignment_freed_as_4k_is_refused() {
    let (h, _ram) = heap(1024);
    let p = h.allocate(lay(4096, 8192));
    // SAFETY: refused.
    let e = unsafe { h.try_dealloc(p, lay(4096, 4096)) }.unwrap_err();
    assert_eq!(e.kind, FaultKind::WrongLayout);
    // Still live: the page is not handed out again.
    let others = distinct(&h, lay(4096, 4096), 500);
    assert!(!others.contains(&p));
    // SAFETY: the right layout.
    unsafe { h.try_dealloc(p, lay(4096, 8192)).unwrap() };
}

#[test]
fn a_page_the_heap_never_handed_out_is_refused() {
    let (h, _ram) = heap(1024);
    // A page-table frame: taken from the page layer, not the heap.
    let frame = h.frames().alloc(0).unwrap();
    let run = h.frames().alloc_pages(3, Constraint::ANY).unwrap();
    for (addr, l) in [
        (frame, lay(8, 8)),
        (frame, lay(4096, 4096)),
        (run, lay(12288, 4096)),
    ] {
        // SAFETY: refused.
        let e = unsafe { h.try_dealloc(addr.0 as *mut u8, l) }.unwrap_err();
        assert_eq!(e.kind, FaultKind::NotAllocated, "{addr} as {l:?}");
    }
    h.frames().free(frame, 0).unwrap();
    h.frames().free_pages(run, 3).unwrap();
}

#[test]
fn the_page_layer_refuses_the_heaps_memory() {
    let (h, _ram) = heap(2048);
    let obj = h.allocate(lay(64, 8));
    let slab_page = PhysAddr(obj as u64 & !4095);
    let page = PhysAddr(h.allocate(lay(4096, 4096)) as u64);
    let run = PhysAddr(h.allocate(lay(12288, 4096)) as u64);
    let f = h.frames();
    let before = snapshot(&h);
    assert_eq!(f.free(slab_page, 0), Err(Error::OwnedBySlab));
    assert_eq!(f.free_pages(slab_page, 1), Err(Error::OwnedBySlab));
    assert_eq!(
        f.free_bulk(&[slab_page]).unwrap_err().error,
        Error::OwnedBySlab
    );
    assert_eq!(f.free(page, 0), Err(Error::OwnedByHeap));
    assert_eq!(f.free_pages(page, 1), Err(Error::OwnedByHeap));
    assert_eq!(f.free_bulk(&[page]).unwrap_err().error, Error::OwnedByHeap);
    assert_eq!(f.free_pages(run, 3), Err(Error::OwnedByHeap));
    assert_eq!(snapshot(&h), before);
    // Nothing of the above is handed out again.
    let more = distinct(&h, lay(4096, 4096), 1000);
    for p in [slab_page.0, page.0, run.0, run.0 + 4096, run.0 + 8192] {
        assert!(!more.contains(&(p as *mut u8)), "{p:#x} handed out twice");
    }
}

#[test]
fn a_cached_page_cannot_be_freed_around_the_cache() {
    let c = Box::new(TestCaches::new(BuddyAllocator::new()));
    c.add_section_static(PhysAddr(1 << 32), 256, vec![0u64; 512].leak())
        .unwrap();
    let p = c.alloc(0).unwrap();
    c.free(p, 0).unwrap(); // into this CPU's cache
    assert_eq!(c.free_pages(p, 1), Err(Error::DoubleFree));
    assert_eq!(c.free_bulk(&[p]).unwrap_err().error, Error::DoubleFree);
    assert_eq!(c.free(p, 0), Err(Error::DoubleFree));
    let mut seen = HashSet::new();
    while let Ok(q) = c.alloc(0) {
        assert!(seen.insert(q), "{q} handed out twice");
    }
    assert_eq!(seen.len(), 256);
}

#[test]
fn memory_cannot_be_registered_by_name_under_a_heap() {
    let (h, _ram) = heap(256);
    let before = snapshot(&h);
    let r = h
        .frames()
        .add_section_static(PhysAddr(1 << 40), 16, vec![0u64; 32].leak());
    assert_eq!(r, Err(Error::FramesNotMapped));
    let start = h
        .frames()
        .with_buddy(|b| b.sections().next().unwrap().start);
    assert_eq!(
        h.frames().remove_section(start).unwrap_err(),
        Error::NotRemovable
    );
    assert_eq!(snapshot(&h), before);
}

#[test]
fn poisoning_refuses_memory_named_only() {
    let c = TestCaches::new(BuddyAllocator::new());
    let opts = framekeep::FrameOptions {
        poison: true,
        zero_on_alloc: false,
    };
    // SAFETY: nothing registered, and only mapped memory is below.
    unsafe { c.set_frame_options(std::ptr::null_mut(), opts) };
    let r = c.add_section_static(PhysAddr(1 << 40), 16, vec![0u64; 32].leak());
    assert_eq!(r, Err(Error::FramesNotMapped));
}

/// A write through a stale pointer to a freed page lands wherever that
/// page went next; slab bookkeeping is never there.
#[test]
fn a_stale_pointer_cannot_forge_slab_bookkeeping() {
    let (h, ram) = heap(4096);
    let page = lay(4096, 4096);
    let stale: Vec<_> = (0..64).map(|_| h.allocate(page)).collect();
    for &p in &stale {
        // SAFETY: live, freed once.
        unsafe { h.try_dealloc(p, page).unwrap() };
    }
    let small = lay(64, 8);
    let mut objs = distinct(&h, small, 2000);
    for &p in &stale {
        // The stale writes: every byte of every page freed above.
        // SAFETY: host memory of the test's RAM (what the heap manages).
        unsafe { p.write_bytes(0xff, 4096) };
    }
    objs.extend(distinct(&h, small, 2000));
    let mut seen = HashSet::new();
    let span = ram.start()..ram.start() + ram.pages() * 4096;
    for &o in &objs {
        assert!(span.contains(&(o as u64)), "{o:?} is outside the heap");
        assert!(seen.insert(o as usize), "{o:?} handed out twice");
    }
    for &o in &objs {
        // SAFETY: live objects of layout `small`, freed once.
        unsafe { h.try_dealloc(o, small).unwrap() };
    }
    assert!(h.drain());
    assert_eq!(h.stats().slab_pages, 0);
    assert_eq!(
        h.stats().frames.free_pages(),
        h.stats().frames.buddy.managed_pages()
    );
}

/// Two CPUs freeing the same block at the same moment: one wins.
#[test]
fn racing_frees_of_one_block_succeed_once() {
    let c: Arc<TestCaches> = Arc::new(TestCaches::new(BuddyAllocator::new()));
    c.add_section_static(PhysAddr(1 << 32), 1024, vec![0u64; 2048].leak())
        .unwrap();
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    for _ in 0..rounds {
        let p = c.alloc(0).unwrap();
        let wins = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (c, wins, start) = (c.clone(), wins.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let r = if i == 0 {
                        c.free(p, 0)
                    } else {
                        c.free_pages(p, 1)
                    };
                    if r.is_ok() {
                        wins.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(wins.load(Ordering::Relaxed), 1, "{p} freed twice");
    }
    assert!(c.drain_all());
    let mut seen = HashSet::new();
    while let Ok(q) = c.alloc(0) {
        assert!(seen.insert(q), "{q} handed out twice");
    }
    assert_eq!(seen.len(), 1024);
}

#[test]
fn heap_memory_added_with_separate_metadata_needs_room_for_descriptors() {
    let h = TestHeap::new();
    let ram = Ram::new(64, 4096);
    let meta = vec![0u64; framekeep::cache_metadata_bytes(64) / 8].leak();
    // SAFETY: both buffers are ours; the call is refused before use.
    let r = unsafe {
        h.add_section(
            PhysAddr(ram.start()),
            64,
            std::ptr::NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
            framekeep::cache_metadata_bytes(64),
        )
    };
    assert_eq!(r, Err(Error::MetadataTooSmall));
    assert_eq!(h.stats().frames.buddy.managed_pages(), 0);
}

/// A `Block` can only be freed by giving it back: no free by address takes
/// it, and a race between the two frees the block once.
#[test]
fn a_block_is_freed_only_through_its_handle() {
    let c: Arc<TestCaches> = Arc::new(TestCaches::new(BuddyAllocator::new()));
    c.add_section_static(PhysAddr(1 << 32), 256, vec![0u64; 512].leak())
        .unwrap();
    let b = c.alloc_block(0).unwrap();
    let addr = b.addr();
    assert_eq!(c.free(addr, 0), Err(Error::OwnedByHandle));
    assert_eq!(c.free_pages(addr, 1), Err(Error::OwnedByHandle));
    assert_eq!(
        c.free_bulk(&[addr]).unwrap_err().error,
        Error::OwnedByHandle
    );
    let other = TestCaches::new(BuddyAllocator::new());
    let stray = c.alloc_block(1).unwrap();
    assert_eq!(other.free_block(stray), Err(Error::NotInSection));
    c.free_block(b).unwrap();
    let rounds = if cfg!(miri) { 10 } else { 1000 };
    for _ in 0..rounds {
        let b = c.alloc_block(0).unwrap();
        let addr = b.addr();
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.free(addr, 0));
        c.free_block(b).unwrap();
        assert!(t.join().unwrap().is_err(), "{addr} freed by address too");
    }
    assert!(c.drain_all());
    let mut seen = HashSet::new();
    while let Ok(q) = c.alloc(0) {
        assert!(seen.insert(q), "{q} handed out twice");
    }
    // 256 pages, less the order-1 block leaked into the other caches' free.
    assert_eq!(seen.len(), 254);
}
