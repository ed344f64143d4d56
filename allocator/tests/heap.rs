//! Host tests of the slab + page-cache `GlobalAlloc` (`Heap`): every path,
//! every detected fault, and threads hammering it with a uniqueness checker.

#[path = "common/host.rs"]
mod host;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};

use framekeep::{FaultKind, MAX_SMALL_SIZE, SIZE_CLASSES, SLAB_RESERVE, size_class};
use host::{TestHeap, as_cpu, heap, my_cpu};

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Pages not accounted as free or in slabs: page-sized allocations.
fn pages_out(heap: &TestHeap) -> i64 {
    let stats = heap.stats();
    let managed = stats.frames.buddy.managed_pages() as i64;
    managed - stats.frames.free_pages() as i64 - stats.slab_pages as i64
}

/// Live-range checker: no two live blocks may overlap.
#[derive(Default)]
struct Live(BTreeMap<usize, usize>);

impl Live {
    fn add(&mut self, ptr: *mut u8, len: usize) {
        let a = ptr as usize;
        if let Some((&s, &layout)) = self.0.range(..=a).next_back() {
            assert!(
                s + layout <= a,
                "{a:#x} handed out inside live {s:#x}+{layout}"
            );
        }
        if let Some((&s, _)) = self.0.range(a..).next() {
            assert!(a + len <= s, "{a:#x}+{len} overlaps live {s:#x}");
        }
        self.0.insert(a, len);
    }
    fn remove(&mut self, ptr: *mut u8) {
        assert!(self.0.remove(&(ptr as usize)).is_some());
    }
}

#[test]
fn classes_alignment_and_contents() {
    let (heap, _ram) = heap(8192);
    let mut live = Live::default();
    let mut blocks = Vec::new();
    for size in [
        1usize, 7, 8, 9, 16, 24, 25, 40, 48, 64, 100, 200, 500, 1000, 1500, 2048, 2049, 4096, 5000,
        12288, 40000,
    ] {
        for align in [1usize, 8, 16, 64, 256, 2048, 4096, 65536] {
            let layout = lay(size, align);
            for i in 0..5 {
                let ptr = heap.allocate(layout);
                assert!(
                    !ptr.is_null(),
                    "size {size} align {align}: {:?}",
                    heap.stats()
                );
                assert_eq!(ptr as usize % align, 0);
                live.add(ptr, size);
                // SAFETY: fresh block of `size` bytes.
                unsafe { ptr.write_bytes((size + i) as u8, size) };
                blocks.push((ptr, layout, (size + i) as u8));
            }
        }
    }
    for &(ptr, layout, b) in &blocks {
        // SAFETY: live block of l.size() bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
        assert!(
            bytes.iter().all(|&x| x == b),
            "block {ptr:?} {layout:?} overwritten"
        );
    }
    for (ptr, layout, _) in blocks {
        live.remove(ptr);
        // SAFETY: allocated with l, freed once.
        unsafe { heap.try_dealloc(ptr, layout).unwrap() };
    }
    assert_eq!(pages_out(&heap), 0);
    assert!(heap.drain());
    let stats = heap.stats();
    assert_eq!(stats.slab_pages, 0);
    assert_eq!(stats.frames.cached_pages(), 0);
    assert_eq!(stats.faults, 0);
    assert_eq!(
        stats.frames.buddy.free_pages(),
        stats.frames.buddy.managed_pages()
    );
}

#[test]
fn size_class_table() {
    for size in 1..=MAX_SMALL_SIZE {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048] {
            let class = size_class(size, align).unwrap();
            let class_size = SIZE_CLASSES[class];
            assert!(class_size >= size && class_size.is_multiple_of(align));
            // Smallest such class.
            assert!(
                SIZE_CLASSES[..class]
                    .iter()
                    .all(|&other| other < size || other % align != 0)
            );
        }
    }
    assert_eq!(size_class(MAX_SMALL_SIZE + 1, 1), None);
    assert_eq!(size_class(8, 4096), None);
}

#[test]
fn faults_are_detected_and_harmless() {
    let (heap, _ram) = heap(1024);
    let layout = lay(64, 8);
    let ps: Vec<_> = (0..100).map(|_| heap.allocate(layout)).collect();
    let victim = ps[10];
    // SAFETY: every bad call below is rejected before anything is touched.
    unsafe {
        heap.try_dealloc(victim, layout).unwrap();
        assert_eq!(
            heap.try_dealloc(victim, layout).unwrap_err().kind,
            FaultKind::DoubleFree
        );
        assert_eq!(
            heap.try_dealloc(ps[11].add(1), layout).unwrap_err().kind,
            FaultKind::NotObjectStart
        );
        assert_eq!(
            heap.try_dealloc(ps[11], lay(128, 8)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        let mut x = [0u64; 8];
        assert_eq!(
            heap.try_dealloc(x.as_mut_ptr().cast(), layout)
                .unwrap_err()
                .kind,
            FaultKind::NotAllocated
        );
        // A page freed as an object, a slab page freed as a page: the
        // heap's memory with another layout.
        let page = heap.allocate(lay(4096, 4096));
        assert_eq!(
            heap.try_dealloc(page, layout).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        let base = (ps[0] as usize & !4095) as *mut u8;
        assert_eq!(
            heap.try_dealloc(base, lay(4096, 4096)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        heap.try_dealloc(page, lay(4096, 4096)).unwrap();
        assert_eq!(
            heap.try_dealloc(page, lay(4096, 4096)).unwrap_err().kind,
            FaultKind::DoubleFree
        );
        // Through GlobalAlloc: reported and counted, not panicking.
        heap.dealloc(victim, layout);
        assert_eq!(heap.stats().faults, 1);
    }
    // Nothing was corrupted: the freed object comes back exactly once, and
    // every other object stays live.
    let mut seen = std::collections::HashSet::new();
    let mut more = Vec::new();
    for _ in 0..300 {
        let ptr = heap.allocate(layout);
        assert!(!ps.iter().enumerate().any(|(i, &q)| i != 10 && q == ptr));
        assert!(seen.insert(ptr as usize), "handed out twice");
        more.push(ptr);
    }
    assert!(more.contains(&victim));
    for ptr in ps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 10)
        .map(|(_, &ptr)| ptr)
        .chain(more)
    {
        // SAFETY: live objects of layout l.
        unsafe { heap.try_dealloc(ptr, layout).unwrap() };
    }
}

#[test]
fn remote_free_and_remote_double_free() {
    let (heap, _ram) = heap(1024);
    let heap: Arc<TestHeap> = Arc::from(heap);
    let layout = lay(32, 8);
    let ps: Vec<usize> = (0..1000).map(|_| heap.allocate(layout) as usize).collect();
    let heap2 = heap.clone();
    let ps2 = ps.clone();
    std::thread::spawn(move || {
        for &ptr in &ps2 {
            // SAFETY: live objects of layout l, freed once here.
            unsafe { heap2.try_dealloc(ptr as *mut u8, layout).unwrap() };
        }
        // Second time: already freed remotely (uncollected) -> detected.
        for &ptr in &ps2[..10] {
            // SAFETY: rejected, nothing touched.
            let error = unsafe { heap2.try_dealloc(ptr as *mut u8, layout) }.unwrap_err();
            assert_eq!(error.kind, FaultKind::DoubleFree);
        }
    })
    .join()
    .unwrap();
    // Owner's view: still live until collected; a local double free of a
    // remotely freed object is detected too.
    // SAFETY: rejected, nothing touched.
    let error = unsafe { heap.try_dealloc(ps[500] as *mut u8, layout) }.unwrap_err();
    assert_eq!(error.kind, FaultKind::DoubleFree);
    // Allocating again collects; every object is available exactly once.
    let mut again = std::collections::HashSet::new();
    for _ in 0..1000 {
        assert!(again.insert(heap.allocate(layout) as usize));
    }
    let old: std::collections::HashSet<usize> = ps.iter().copied().collect();
    assert!(again.iter().filter(|ptr| old.contains(ptr)).count() >= 900);
    // After collection, a remote double free of a free object is detected.
    let ptr = *again.iter().next().unwrap();
    // SAFETY: live object, freed once, then rejected.
    unsafe { heap.try_dealloc(ptr as *mut u8, layout).unwrap() };
    let heap3 = heap.clone();
    std::thread::spawn(move || {
        // SAFETY: rejected, nothing touched.
        let error = unsafe { heap3.try_dealloc(ptr as *mut u8, layout) }.unwrap_err();
        assert_eq!(error.kind, FaultKind::DoubleFree);
    })
    .join()
    .unwrap();
    // The parked double free never makes the object appear twice.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let q = heap.allocate(layout) as usize;
        assert!(q != 0 && seen.insert(q), "handed out twice");
        assert!(
            q == ptr || !again.contains(&q),
            "a live object handed out again"
        );
    }
}

#[test]
fn slabs_emptied_by_remote_frees_are_returned() {
    let (heap, _ram) = heap(4096);
    let heap: Arc<TestHeap> = Arc::from(heap);
    let layout = lay(256, 8); // 16 objects per slab
    let ps: Vec<usize> = (0..16 * 50)
        .map(|_| heap.allocate(layout) as usize)
        .collect();
    assert_eq!(heap.stats().slab_pages, 50);
    let heap2 = heap.clone();
    std::thread::spawn(move || {
        for ptr in ps {
            // SAFETY: live objects, freed once.
            unsafe { heap2.try_dealloc(ptr as *mut u8, layout).unwrap() };
        }
    })
    .join()
    .unwrap();
    assert_eq!(heap.stats().slab_pages, 50); // not collected yet
    // The owner's next slow path collects them (a class with no current slab).
    let q = heap.allocate(lay(1024, 8));
    let stats = heap.stats();
    assert!(
        stats.slab_pages <= 2 + 2 * SLAB_RESERVE as u64,
        "{} slab pages left",
        stats.slab_pages
    );
    // SAFETY: live, freed once.
    unsafe { heap.try_dealloc(q, lay(1024, 8)).unwrap() };
    assert_eq!(pages_out(&heap), 0);
}

#[test]
fn local_empty_slabs_beyond_reserve_are_returned() {
    let (heap, _ram) = heap(4096);
    let layout = lay(2048, 8); // 8 objects per 16 KiB slab
    let ps: Vec<_> = (0..8 * 20).map(|_| heap.allocate(layout)).collect();
    assert_eq!(heap.stats().slab_pages, 20 * 4);
    for ptr in ps {
        // SAFETY: live, freed once.
        unsafe { heap.try_dealloc(ptr, layout).unwrap() };
    }
    // The current slab plus the reserve stay.
    assert!(heap.stats().slab_pages <= 4 * (1 + SLAB_RESERVE as u64));
    assert!(heap.drain());
    assert_eq!(heap.stats().slab_pages, 0);
}

#[test]
fn out_of_memory_returns_null_and_drains_other_cpus() {
    let (heap, _ram) = heap(256);
    let heap: Arc<TestHeap> = Arc::from(heap);
    // Another thread (CPU) fills its caches, frees everything, and stays
    // alive holding them.
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let heap2 = heap.clone();
    let thread = std::thread::spawn(move || {
        let small: Vec<_> = (0..2000).map(|_| heap2.allocate(lay(48, 16))).collect();
        let pages: Vec<_> = (0..40).map(|_| heap2.allocate(lay(4096, 4096))).collect();
        for ptr in small {
            // SAFETY: live, freed once.
            unsafe { heap2.try_dealloc(ptr, lay(48, 16)).unwrap() };
        }
        for ptr in pages {
            // SAFETY: live, freed once.
            unsafe { heap2.try_dealloc(ptr, lay(4096, 4096)).unwrap() };
        }
        tx.send(my_cpu()).unwrap();
        done_rx.recv().unwrap();
    });
    let other = rx.recv().unwrap();
    assert!(heap.stats().frames.cached_pages() > 0 || heap.stats().slab_pages > 0);
    // Now take every page from this CPU: must get them all (other CPU drained).
    let mut got = Vec::new();
    loop {
        let ptr = heap.allocate(lay(4096, 4096));
        if ptr.is_null() {
            break;
        }
        got.push(ptr);
    }
    let stats = heap.stats();
    assert_eq!(stats.frames.free_pages(), 0);
    assert_eq!(stats.slab_pages, 0, "other CPU {other} kept slabs");
    assert_eq!(got.len() as u64, stats.frames.buddy.managed_pages());
    // Small and huge requests fail cleanly.
    assert!(heap.allocate(lay(8, 8)).is_null());
    assert!(heap.allocate(lay(1 << 40, 8)).is_null());
    assert!(heap.allocate(lay(8, 1 << 31)).is_null());
    for ptr in got {
        // SAFETY: live, freed once.
        unsafe { heap.try_dealloc(ptr, lay(4096, 4096)).unwrap() };
    }
    done_tx.send(()).unwrap();
    thread.join().unwrap();
}

#[test]
fn realloc_in_place_and_moving() {
    let (heap, _ram) = heap(4096);
    // SAFETY: standard GlobalAlloc use: each pointer is reallocated or
    // freed once, with its current layout.
    unsafe {
        let ptr = heap.alloc(lay(20, 8));
        ptr.write_bytes(0x11, 20);
        assert_eq!(heap.realloc(ptr, lay(20, 8), 24), ptr); // same class (24)
        let grown = heap.realloc(ptr, lay(24, 8), 100);
        assert_ne!(grown, ptr);
        assert!(
            std::slice::from_raw_parts(grown, 20)
                .iter()
                .all(|&byte| byte == 0x11)
        );
        // Large, buddy path (20 pages -> 30 pages): in place if the next
        // pages are free, which they are in a fresh heap.
        let big = heap.alloc(lay(20 * 4096, 4096));
        big.write_bytes(0x22, 20 * 4096);
        let big2 = heap.realloc(big, lay(20 * 4096, 4096), 30 * 4096);
        assert_eq!(big2, big);
        let big3 = heap.realloc(big2, lay(30 * 4096, 4096), 17 * 4096 + 5);
        assert_eq!(big3, big);
        // Block the growth, then grow: it must move and keep the contents.
        let blocker = heap.alloc(lay(9 * 4096, 4096));
        let big4 = heap.realloc(big3, lay(17 * 4096 + 5, 4096), 300 * 4096);
        assert!(!big4.is_null());
        assert!(
            std::slice::from_raw_parts(big4, 17 * 4096)
                .iter()
                .all(|&byte| byte == 0x22)
        );
        // Small -> large -> small.
        let large = heap.realloc(grown, lay(100, 8), 10_000);
        assert!(
            std::slice::from_raw_parts(large, 20)
                .iter()
                .all(|&byte| byte == 0x11)
        );
        let small = heap.realloc(large, lay(10_000, 8), 10);
        assert!(
            std::slice::from_raw_parts(small, 10)
                .iter()
                .all(|&byte| byte == 0x11)
        );
        heap.dealloc(small, lay(10, 8));
        heap.dealloc(big4, lay(300 * 4096, 4096));
        heap.dealloc(blocker, lay(9 * 4096, 4096));
        // Out of memory in realloc: null, old block intact.
        let other = heap.alloc(lay(64, 8));
        assert!(heap.realloc(other, lay(64, 8), 1 << 40).is_null());
        heap.dealloc(other, lay(64, 8));
    }
    assert_eq!(heap.stats().faults, 0);
    assert_eq!(pages_out(&heap), 0);
}

#[test]
fn huge_alignment() {
    let (heap, _ram) = heap(4096); // 16 MiB
    for align in [1 << 13, 1 << 16, 1 << 21] {
        let layout = lay(100, align);
        let ptr = heap.allocate(layout);
        assert_eq!(ptr as usize % align, 0);
        // SAFETY: live, freed once.
        unsafe { heap.try_dealloc(ptr, layout).unwrap() };
    }
    assert_eq!(pages_out(&heap), 0);
}

#[test]
fn many_instances() {
    let hs: Vec<_> = (0..8).map(|_| heap(256)).collect();
    let layout = lay(40, 8);
    let ps: Vec<_> = hs.iter().map(|(heap, _)| heap.allocate(layout)).collect();
    for ((heap, _), &ptr) in hs.iter().zip(&ps) {
        // Another heap's object is foreign here.
        for &q in &ps {
            if q != ptr {
                // SAFETY: rejected, nothing touched.
                assert!(unsafe { heap.try_dealloc(q, layout) }.is_err());
            }
        }
        // SAFETY: live, freed once.
        unsafe { heap.try_dealloc(ptr, layout).unwrap() };
    }
}

#[test]
fn pages_freed_on_another_cpu_go_to_its_cache() {
    let (heap, _ram) = heap(1024);
    let frames = heap.frames();
    let frame = frames.alloc(0).unwrap();
    let me = my_cpu();
    let other = (me + 1) % host::CPUS;
    let before = frames.stats();
    as_cpu(other, || frames.free(frame, 0).unwrap());
    assert_eq!(frames.stats().cached_pages(), before.cached_pages() + 1);
    // Draining only `other` gives it back.
    frames.drain_local();
    let mid = frames.stats().cached_pages();
    assert_eq!(mid, 1);
    assert!(frames.drain_cpu(other));
    assert_eq!(frames.stats().cached_pages(), 0);
}

/// Out of memory with interrupts masked (`as_cpu`): the current CPU's own
/// cache is drained before the request fails, other CPUs' caches cannot be
/// (`run_on` refuses); unmasked, every cache is drained.
#[test]
fn out_of_memory_while_masked_drains_own_cache() {
    use framekeep::{BuddyAllocator, Error, PhysAddr};
    use host::TestCaches;
    let caches = Box::new(TestCaches::new(BuddyAllocator::new()));
    caches
        .add_section_static(PhysAddr(1 << 32), 64, vec![0u64; 128].leak())
        .unwrap();
    let mut got = Vec::new();
    while let Ok(frame) = caches.alloc(0) {
        got.push(frame);
    }
    assert_eq!(got.len(), 64);
    assert_eq!(caches.stats().cached_pages(), 0);
    // Two pages that are not buddies, one cached on each of two CPUs.
    got.sort();
    let (pa, pb) = (got.remove(0), got.remove(1));
    assert_ne!(pa.0 ^ 4096, pb.0);
    let (a, block) = ((my_cpu() + 1) % host::CPUS, (my_cpu() + 2) % host::CPUS);
    as_cpu(a, || caches.free(pa, 0)).unwrap();
    as_cpu(block, || caches.free(pb, 0)).unwrap();
    assert_eq!(caches.stats().cached_pages(), 2);
    assert_eq!(as_cpu(a, || caches.alloc(1)), Err(Error::OutOfMemory));
    assert_eq!(caches.stats().cached_pages(), 1, "a's cache kept its page");
    assert_eq!(caches.stats().buddy.free_pages(), 1);
    assert_eq!(caches.alloc(1), Err(Error::OutOfMemory));
    assert_eq!(caches.stats().cached_pages(), 0, "b's cache kept its page");
    assert_eq!(caches.stats().buddy.free_pages(), 2);
    for frame in got {
        caches.free(frame, 0).unwrap();
    }
    assert!(caches.drain_all());
    assert_eq!(caches.stats().buddy.free_pages(), 64);
}

/// Registration writes no tag, and tags past the valid prefix are never
/// read: the metadata starts full of words that would each read as "handed
/// out by a cache, order 0" (the tag for exactly that is 1).
#[test]
fn registration_writes_no_tags_and_garbage_is_never_read() {
    use framekeep::{BuddyAllocator, Constraint, Error, PhysAddr, cache_metadata_bytes};
    use host::TestCaches;
    let pages = 4096u64;
    let meta: &'static mut [u64] = vec![1u64; 2 * pages as usize].leak();
    let ptr = meta.as_mut_ptr();
    let tags = |from: usize| {
        // SAFETY: the leaked buffer lives forever; the caches only write it
        // from this thread, and not while we read.
        unsafe { std::slice::from_raw_parts(ptr.add(pages as usize + from), pages as usize - from) }
            .iter()
            .filter(|&&w| w != 1)
            .count()
    };
    let caches = Box::new(TestCaches::new(BuddyAllocator::new()));
    let start = PhysAddr(1 << 32);
    // SAFETY: the buffer is leaked and only used by `c`.
    unsafe {
        caches
            .add_section(
                start,
                pages,
                std::ptr::NonNull::new(ptr.cast()).unwrap(),
                cache_metadata_bytes(pages),
            )
            .unwrap()
    };
    assert_eq!(tags(0), 0, "registration wrote tags");
    // A page straight from the buddy, freed through the caches: it goes
    // back to the buddy (its garbage tag is not trusted).
    let block = caches.alloc_pages(1, Constraint::ANY).unwrap();
    caches.free(block, 0).unwrap();
    assert_eq!(caches.stats().cached_pages(), 0);
    // A page nobody allocated is the buddy's double free, never cached.
    let top = PhysAddr(start.0 + (pages - 1) * 4096);
    assert_eq!(caches.free(top, 0), Err(Error::DoubleFree));
    assert_eq!(
        caches.free(PhysAddr(start.0 + 64 * 4096), 0),
        Err(Error::DoubleFree)
    );
    // Cached traffic grows the prefix (here the low pages) and works.
    let ps: Vec<_> = (0..1000).map(|_| caches.alloc(0).unwrap()).collect();
    let mut uniq = ps.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 1000);
    for &frame in &ps {
        caches.free(frame, 0).unwrap();
    }
    assert_eq!(caches.free(ps[0], 0), Err(Error::DoubleFree));
    assert!(tags(2048) == 0, "tags zeroed far past the pages in use");
    assert!(caches.drain_all());
    assert_eq!(caches.stats().free_pages(), pages);
    assert_eq!(caches.free(top, 0), Err(Error::DoubleFree));
}

/// The same through a `Heap` on memory full of such words (metadata
/// carved from it): objects, pages, faults and statistics all work.
#[test]
fn heap_on_garbage_memory() {
    let ram = host::Ram::new(8192, 1 << 21);
    // SAFETY: the Ram is ours; fill it with words reading as tag 1.
    unsafe {
        std::slice::from_raw_parts_mut(ram.start() as *mut u64, 8192 * 512).fill(1);
    }
    let heap = Box::new(TestHeap::new());
    // SAFETY: `ram` outlives `h` (dropped first).
    unsafe {
        heap.add_memory(framekeep::PhysAddr(ram.start()), ram.pages())
            .unwrap()
    };
    let managed = heap.stats().frames.buddy.managed_pages();
    let mut live = Vec::new();
    for i in 0..3000usize {
        let layout = lay([8, 24, 200, 1500, 4096, 8192, 20_000][i % 7], 8);
        let ptr = heap.allocate(layout);
        assert!(!ptr.is_null());
        // SAFETY: a fresh block of l.size() bytes.
        unsafe { ptr.write_bytes(0x5a, layout.size()) };
        live.push((ptr, layout));
    }
    for &(ptr, layout) in &live {
        // SAFETY: live, freed once.
        unsafe { heap.try_dealloc(ptr, layout).unwrap() };
    }
    // SAFETY: double frees are detected before anything changes.
    unsafe {
        assert_eq!(
            heap.try_dealloc(live[0].0, live[0].1).unwrap_err().kind,
            FaultKind::DoubleFree
        );
        assert!(heap.try_dealloc(live[4].0, live[4].1).is_err());
    }
    assert!(heap.drain());
    let stats = heap.stats();
    assert_eq!(stats.frames.free_pages(), managed);
    drop(heap);
    drop(ram);
}

/// Threads hammer alloc / free / remote free; every live block is checked
/// against all others (no overlap: nothing handed out twice) and carries a
/// stamp verified on free.
fn hammer(threads: usize, ops: usize) {
    let (heap, _ram) = heap(16384);
    let heap: Arc<TestHeap> = Arc::from(heap);
    let live = Arc::new(Mutex::new(Live::default()));
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = mpsc::sync_channel::<(usize, Layout, u64)>(64);
        txs.push(tx);
        rxs.push(rx);
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(thread, rx)| {
            let heap = heap.clone();
            let live = live.clone();
            let txs = txs.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                // Counts this thread as done even if it panics, so the
                // others stop waiting and the failure is reported instead
                // of hanging the test.
                struct Done(Arc<std::sync::atomic::AtomicUsize>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    }
                }
                let finished = Done(done.clone());
                let mut rng = 0x9E37_79B9_7F4A_7C15u64
                    ^ (thread as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut mine: Vec<(usize, Layout, u64)> = Vec::new();
                let check_free = |ptr: usize, layout: Layout, stamp: u64| {
                    // SAFETY: a live block we own, at least 8 bytes.
                    let stored = unsafe { (ptr as *const u64).read_unaligned() };
                    assert_eq!(stored, stamp, "block {ptr:#x} overwritten");
                    live.lock().unwrap().remove(ptr as *mut u8);
                    // SAFETY: live, freed once.
                    unsafe { heap.try_dealloc(ptr as *mut u8, layout).unwrap() };
                };
                for i in 0..ops {
                    while let Ok((ptr, layout, stamp)) = rx.try_recv() {
                        check_free(ptr, layout, stamp);
                    }
                    let random = next();
                    if mine.len() < 200 && random % 3 != 0 {
                        let size = match random % 16 {
                            0 => 4096 + (random >> 8) as usize % 20000,
                            1..=3 => 8 + (random >> 8) as usize % 2040,
                            _ => 8 + (random >> 8) as usize % 120,
                        };
                        let align = 8usize << ((random >> 40) % 4);
                        let layout = lay(size, align);
                        let ptr = heap.allocate(layout);
                        assert!(
                            !ptr.is_null(),
                            "OOM for {layout:?} at op {i}: {:?}, {} live",
                            heap.stats(),
                            live.lock().unwrap().0.len()
                        );
                        live.lock().unwrap().add(ptr, size);
                        let stamp = ((thread as u64) << 48) | i as u64;
                        // SAFETY: fresh block of >= 8 bytes.
                        unsafe { (ptr as *mut u64).write_unaligned(stamp) };
                        mine.push((ptr as usize, layout, stamp));
                    } else if !mine.is_empty() {
                        let (ptr, layout, stamp) =
                            mine.swap_remove((random as usize >> 3) % mine.len());
                        let dest = (random >> 20) as usize % threads;
                        // A remote free, unless the other thread lags behind.
                        if dest == thread || txs[dest].try_send((ptr, layout, stamp)).is_err() {
                            check_free(ptr, layout, stamp);
                        }
                    }
                }
                for (ptr, layout, stamp) in mine {
                    check_free(ptr, layout, stamp);
                }
                // Keep serving remote frees until every thread has stopped
                // sending, so they never pile up.
                drop(finished);
                while done.load(std::sync::atomic::Ordering::Acquire) < threads {
                    while let Ok((ptr, layout, s)) = rx.try_recv() {
                        check_free(ptr, layout, s);
                    }
                    std::thread::yield_now();
                }
                (rx, thread)
            })
        })
        .collect();
    drop(txs);
    // Join every thread before failing: the heap's memory must outlive them.
    let joined: Vec<_> = handles.into_iter().map(|j| j.join()).collect();
    let rxs: Vec<_> = joined.into_iter().map(|r| r.unwrap().0).collect();
    for rx in rxs {
        // Leftover remote frees for a finished thread: free them here.
        while let Ok((ptr, layout, _)) = rx.try_recv() {
            live.lock().unwrap().remove(ptr as *mut u8);
            // SAFETY: live, freed once.
            unsafe { heap.try_dealloc(ptr as *mut u8, layout).unwrap() };
        }
    }
    assert!(live.lock().unwrap().0.is_empty());
    let stats = heap.stats();
    assert_eq!(stats.faults, 0);
    assert_eq!(pages_out(&heap), 0);
    assert!(heap.drain());
    let stats = heap.stats();
    assert_eq!(stats.slab_pages, 0);
    assert_eq!(
        stats.frames.free_pages(),
        stats.frames.buddy.managed_pages()
    );
}

#[test]
fn hammer_threads() {
    hammer(4, 20_000);
}

/// More threads than cores (preempted mid-operation), as the heavy variant
/// below, but short enough for the default run.
#[test]
fn hammer_threads_8() {
    hammer(8, 100_000);
}

#[test]
#[ignore = "heavy: cargo test -p framekeep --release --test heap -- --ignored"]
fn hammer_threads_heavy() {
    hammer(8, 400_000);
}

/// When the slab descriptors reserved at registration run out, small
/// requests get pages of their own: still served, still checked.
#[test]
fn small_requests_get_pages_when_descriptors_run_out() {
    let (heap, _ram) = heap(512);
    let cap = heap.stats().descriptor_capacity;
    assert!(cap >= 512 / framekeep::PAGES_PER_DESCRIPTOR);
    let mut live = Live::default();
    let mut got = Vec::new();
    // Every class on every CPU: more slabs than there are descriptors.
    'fill: for cpu in 0..host::CPUS {
        for (class, &size) in SIZE_CLASSES.iter().enumerate() {
            let layout = lay(size, 8);
            let ptr = as_cpu(cpu, || heap.allocate(layout));
            if ptr.is_null() {
                break 'fill;
            }
            live.add(ptr, size);
            got.push((cpu, ptr, layout, class));
        }
    }
    let stats = heap.stats();
    assert_eq!(stats.descriptors, cap, "the descriptors ran out");
    assert!(
        got.len() > cap as usize,
        "small requests went on with pages"
    );
    for &(cpu, ptr, layout, class) in &got {
        // A wrong layout is refused whatever served the object.
        let other = lay(SIZE_CLASSES[(class + 1) % SIZE_CLASSES.len()], 8);
        // SAFETY: refused before anything is touched.
        let error = unsafe { heap.try_dealloc(ptr, other) }.unwrap_err();
        assert_eq!(error.kind, FaultKind::WrongLayout);
        // SAFETY: live, with its layout, once.
        as_cpu(cpu, || unsafe { heap.try_dealloc(ptr, layout) }).unwrap();
    }
    assert!(heap.drain());
    let stats = heap.stats();
    assert_eq!(stats.slab_pages, 0);
    assert_eq!(
        stats.frames.free_pages(),
        stats.frames.buddy.managed_pages()
    );
}
