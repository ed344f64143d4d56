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
fn pages_out(h: &TestHeap) -> i64 {
    let st = h.stats();
    let managed = st.frames.buddy.managed_pages() as i64;
    managed - st.frames.free_pages() as i64 - st.slab_pages as i64
}

/// Live-range checker: no two live blocks may overlap.
#[derive(Default)]
struct Live(BTreeMap<usize, usize>);

impl Live {
    fn add(&mut self, p: *mut u8, len: usize) {
        let a = p as usize;
        if let Some((&s, &l)) = self.0.range(..=a).next_back() {
            assert!(s + l <= a, "{a:#x} handed out inside live {s:#x}+{l}");
        }
        if let Some((&s, _)) = self.0.range(a..).next() {
            assert!(a + len <= s, "{a:#x}+{len} overlaps live {s:#x}");
        }
        self.0.insert(a, len);
    }
    fn remove(&mut self, p: *mut u8) {
        assert!(self.0.remove(&(p as usize)).is_some());
    }
}

#[test]
fn classes_alignment_and_contents() {
    let (h, _ram) = heap(8192);
    let mut live = Live::default();
    let mut blocks = Vec::new();
    for size in [
        1usize, 7, 8, 9, 16, 24, 25, 40, 48, 64, 100, 200, 500, 1000, 1500, 2048, 2049, 4096, 5000,
        12288, 40000,
    ] {
        for align in [1usize, 8, 16, 64, 256, 2048, 4096, 65536] {
            let l = lay(size, align);
            for i in 0..5 {
                let p = h.allocate(l);
                assert!(!p.is_null(), "size {size} align {align}: {:?}", h.stats());
                assert_eq!(p as usize % align, 0);
                live.add(p, size);
                // SAFETY: fresh block of `size` bytes.
                unsafe { p.write_bytes((size + i) as u8, size) };
                blocks.push((p, l, (size + i) as u8));
            }
        }
    }
    for &(p, l, b) in &blocks {
        // SAFETY: live block of l.size() bytes.
        let s = unsafe { std::slice::from_raw_parts(p, l.size()) };
        assert!(s.iter().all(|&x| x == b), "block {p:?} {l:?} overwritten");
    }
    for (p, l, _) in blocks {
        live.remove(p);
        // SAFETY: allocated with l, freed once.
        unsafe { h.try_dealloc(p, l).unwrap() };
    }
    assert_eq!(pages_out(&h), 0);
    assert!(h.drain());
    let st = h.stats();
    assert_eq!(st.slab_pages, 0);
    assert_eq!(st.frames.cached_pages(), 0);
    assert_eq!(st.faults, 0);
    assert_eq!(
        st.frames.buddy.free_pages(),
        st.frames.buddy.managed_pages()
    );
}

#[test]
fn size_class_table() {
    for size in 1..=MAX_SMALL_SIZE {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048] {
            let k = size_class(size, align).unwrap();
            let c = SIZE_CLASSES[k];
            assert!(c >= size && c.is_multiple_of(align));
            // Smallest such class.
            assert!(
                SIZE_CLASSES[..k]
                    .iter()
                    .all(|&s| s < size || s % align != 0)
            );
        }
    }
    assert_eq!(size_class(MAX_SMALL_SIZE + 1, 1), None);
    assert_eq!(size_class(8, 4096), None);
}

#[test]
fn faults_are_detected_and_harmless() {
    let (h, _ram) = heap(1024);
    let l = lay(64, 8);
    let ps: Vec<_> = (0..100).map(|_| h.allocate(l)).collect();
    let victim = ps[10];
    // SAFETY: every bad call below is rejected before anything is touched.
    unsafe {
        h.try_dealloc(victim, l).unwrap();
        assert_eq!(
            h.try_dealloc(victim, l).unwrap_err().kind,
            FaultKind::DoubleFree
        );
        assert_eq!(
            h.try_dealloc(ps[11].add(1), l).unwrap_err().kind,
            FaultKind::NotObjectStart
        );
        assert_eq!(
            h.try_dealloc(ps[11], lay(128, 8)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        let mut x = [0u64; 8];
        assert_eq!(
            h.try_dealloc(x.as_mut_ptr().cast(), l).unwrap_err().kind,
            FaultKind::NotAllocated
        );
        // A page freed as an object, a slab page freed as a page: the
        // heap's memory with another layout.
        let page = h.allocate(lay(4096, 4096));
        assert_eq!(
            h.try_dealloc(page, l).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        let base = (ps[0] as usize & !4095) as *mut u8;
        assert_eq!(
            h.try_dealloc(base, lay(4096, 4096)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        h.try_dealloc(page, lay(4096, 4096)).unwrap();
        assert_eq!(
            h.try_dealloc(page, lay(4096, 4096)).unwrap_err().kind,
            FaultKind::DoubleFree
        );
        // Through GlobalAlloc: reported and counted, not panicking.
        h.dealloc(victim, l);
        assert_eq!(h.stats().faults, 1);
    }
    // Nothing was corrupted: the freed object comes back exactly once, and
    // every other object stays live.
    let mut seen = std::collections::HashSet::new();
    let mut more = Vec::new();
    for _ in 0..300 {
        let p = h.allocate(l);
        assert!(!ps.iter().enumerate().any(|(i, &q)| i != 10 && q == p));
        assert!(seen.insert(p as usize), "handed out twice");
        more.push(p);
    }
    assert!(more.contains(&victim));
    for p in ps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 10)
        .map(|(_, &p)| p)
        .chain(more)
    {
        // SAFETY: live objects of layout l.
        unsafe { h.try_dealloc(p, l).unwrap() };
    }
}

#[test]
fn remote_free_and_remote_double_free() {
    let (h, _ram) = heap(1024);
    let h: Arc<TestHeap> = Arc::from(h);
    let l = lay(32, 8);
    let ps: Vec<usize> = (0..1000).map(|_| h.allocate(l) as usize).collect();
    let h2 = h.clone();
    let ps2 = ps.clone();
    std::thread::spawn(move || {
        for &p in &ps2 {
            // SAFETY: live objects of layout l, freed once here.
            unsafe { h2.try_dealloc(p as *mut u8, l).unwrap() };
        }
        // Second time: already freed remotely (uncollected) -> detected.
        for &p in &ps2[..10] {
            // SAFETY: rejected, nothing touched.
            let e = unsafe { h2.try_dealloc(p as *mut u8, l) }.unwrap_err();
            assert_eq!(e.kind, FaultKind::DoubleFree);
        }
    })
    .join()
    .unwrap();
    // Owner's view: still live until collected; a local double free of a
    // remotely freed object is detected too.
    // SAFETY: rejected, nothing touched.
    let e = unsafe { h.try_dealloc(ps[500] as *mut u8, l) }.unwrap_err();
    assert_eq!(e.kind, FaultKind::DoubleFree);
    // Allocating again collects; every object is available exactly once.
    let mut again = std::collections::HashSet::new();
    for _ in 0..1000 {
        assert!(again.insert(h.allocate(l) as usize));
    }
    let old: std::collections::HashSet<usize> = ps.iter().copied().collect();
    assert!(again.iter().filter(|p| old.contains(p)).count() >= 900);
    // After collection, a remote double free of a free object is detected.
    let p = *again.iter().next().unwrap();
    // SAFETY: live object, freed once, then rejected.
    unsafe { h.try_dealloc(p as *mut u8, l).unwrap() };
    let h3 = h.clone();
    std::thread::spawn(move || {
        // SAFETY: rejected, nothing touched.
        let e = unsafe { h3.try_dealloc(p as *mut u8, l) }.unwrap_err();
        assert_eq!(e.kind, FaultKind::DoubleFree);
    })
    .join()
    .unwrap();
    // The parked double free never makes the object appear twice.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let q = h.allocate(l) as usize;
        assert!(q != 0 && seen.insert(q), "handed out twice");
        assert!(
            q == p || !again.contains(&q),
            "a live object handed out again"
        );
    }
}

#[test]
fn slabs_emptied_by_remote_frees_are_returned() {
    let (h, _ram) = heap(4096);
    let h: Arc<TestHeap> = Arc::from(h);
    let l = lay(256, 8); // 16 objects per slab
    let ps: Vec<usize> = (0..16 * 50).map(|_| h.allocate(l) as usize).collect();
    assert_eq!(h.stats().slab_pages, 50);
    let h2 = h.clone();
    std::thread::spawn(move || {
        for p in ps {
            // SAFETY: live objects, freed once.
            unsafe { h2.try_dealloc(p as *mut u8, l).unwrap() };
        }
    })
    .join()
    .unwrap();
    assert_eq!(h.stats().slab_pages, 50); // not collected yet
    // The owner's next slow path collects them (a class with no current slab).
    let q = h.allocate(lay(1024, 8));
    let st = h.stats();
    assert!(
        st.slab_pages <= 2 + 2 * SLAB_RESERVE as u64,
        "{} slab pages left",
        st.slab_pages
    );
    // SAFETY: live, freed once.
    unsafe { h.try_dealloc(q, lay(1024, 8)).unwrap() };
    assert_eq!(pages_out(&h), 0);
}

#[test]
fn local_empty_slabs_beyond_reserve_are_returned() {
    let (h, _ram) = heap(4096);
    let l = lay(2048, 8); // 8 objects per 16 KiB slab
    let ps: Vec<_> = (0..8 * 20).map(|_| h.allocate(l)).collect();
    assert_eq!(h.stats().slab_pages, 20 * 4);
    for p in ps {
        // SAFETY: live, freed once.
        unsafe { h.try_dealloc(p, l).unwrap() };
    }
    // The current slab plus the reserve stay.
    assert!(h.stats().slab_pages <= 4 * (1 + SLAB_RESERVE as u64));
    assert!(h.drain());
    assert_eq!(h.stats().slab_pages, 0);
}

#[test]
fn out_of_memory_returns_null_and_drains_other_cpus() {
    let (h, _ram) = heap(256);
    let h: Arc<TestHeap> = Arc::from(h);
    // Another thread (CPU) fills its caches, frees everything, and stays
    // alive holding them.
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let h2 = h.clone();
    let t = std::thread::spawn(move || {
        let small: Vec<_> = (0..2000).map(|_| h2.allocate(lay(48, 16))).collect();
        let pages: Vec<_> = (0..40).map(|_| h2.allocate(lay(4096, 4096))).collect();
        for p in small {
            // SAFETY: live, freed once.
            unsafe { h2.try_dealloc(p, lay(48, 16)).unwrap() };
        }
        for p in pages {
            // SAFETY: live, freed once.
            unsafe { h2.try_dealloc(p, lay(4096, 4096)).unwrap() };
        }
        tx.send(my_cpu()).unwrap();
        done_rx.recv().unwrap();
    });
    let other = rx.recv().unwrap();
    assert!(h.stats().frames.cached_pages() > 0 || h.stats().slab_pages > 0);
    // Now take every page from this CPU: must get them all (other CPU drained).
    let mut got = Vec::new();
    loop {
        let p = h.allocate(lay(4096, 4096));
        if p.is_null() {
            break;
        }
        got.push(p);
    }
    let st = h.stats();
    assert_eq!(st.frames.free_pages(), 0);
    assert_eq!(st.slab_pages, 0, "other CPU {other} kept slabs");
    assert_eq!(got.len() as u64, st.frames.buddy.managed_pages());
    // Small and huge requests fail cleanly.
    assert!(h.allocate(lay(8, 8)).is_null());
    assert!(h.allocate(lay(1 << 40, 8)).is_null());
    assert!(h.allocate(lay(8, 1 << 31)).is_null());
    for p in got {
        // SAFETY: live, freed once.
        unsafe { h.try_dealloc(p, lay(4096, 4096)).unwrap() };
    }
    done_tx.send(()).unwrap();
    t.join().unwrap();
}

#[test]
fn realloc_in_place_and_moving() {
    let (h, _ram) = heap(4096);
    // SAFETY: standard GlobalAlloc use: each pointer is reallocated or
    // freed once, with its current layout.
    unsafe {
        let p = h.alloc(lay(20, 8));
        p.write_bytes(0x11, 20);
        assert_eq!(h.realloc(p, lay(20, 8), 24), p); // same class (24)
        let q = h.realloc(p, lay(24, 8), 100);
        assert_ne!(q, p);
        assert!(std::slice::from_raw_parts(q, 20).iter().all(|&b| b == 0x11));
        // Large, buddy path (20 pages -> 30 pages): in place if the next
        // pages are free, which they are in a fresh heap.
        let big = h.alloc(lay(20 * 4096, 4096));
        big.write_bytes(0x22, 20 * 4096);
        let big2 = h.realloc(big, lay(20 * 4096, 4096), 30 * 4096);
        assert_eq!(big2, big);
        let big3 = h.realloc(big2, lay(30 * 4096, 4096), 17 * 4096 + 5);
        assert_eq!(big3, big);
        // Block the growth, then grow: it must move and keep the contents.
        let blocker = h.alloc(lay(9 * 4096, 4096));
        let big4 = h.realloc(big3, lay(17 * 4096 + 5, 4096), 300 * 4096);
        assert!(!big4.is_null());
        assert!(
            std::slice::from_raw_parts(big4, 17 * 4096)
                .iter()
                .all(|&b| b == 0x22)
        );
        // Small -> large -> small.
        let s = h.realloc(q, lay(100, 8), 10_000);
        assert!(std::slice::from_raw_parts(s, 20).iter().all(|&b| b == 0x11));
        let s2 = h.realloc(s, lay(10_000, 8), 10);
        assert!(
            std::slice::from_raw_parts(s2, 10)
                .iter()
                .all(|&b| b == 0x11)
        );
        h.dealloc(s2, lay(10, 8));
        h.dealloc(big4, lay(300 * 4096, 4096));
        h.dealloc(blocker, lay(9 * 4096, 4096));
        // Out of memory in realloc: null, old block intact.
        let r = h.alloc(lay(64, 8));
        assert!(h.realloc(r, lay(64, 8), 1 << 40).is_null());
        h.dealloc(r, lay(64, 8));
    }
    assert_eq!(h.stats().faults, 0);
    assert_eq!(pages_out(&h), 0);
}

#[test]
fn huge_alignment() {
    let (h, _ram) = heap(4096); // 16 MiB
    for align in [1 << 13, 1 << 16, 1 << 21] {
        let l = lay(100, align);
        let p = h.allocate(l);
        assert_eq!(p as usize % align, 0);
        // SAFETY: live, freed once.
        unsafe { h.try_dealloc(p, l).unwrap() };
    }
    assert_eq!(pages_out(&h), 0);
}

#[test]
fn many_instances() {
    let hs: Vec<_> = (0..8).map(|_| heap(256)).collect();
    let l = lay(40, 8);
    let ps: Vec<_> = hs.iter().map(|(h, _)| h.allocate(l)).collect();
    for ((h, _), &p) in hs.iter().zip(&ps) {
        // Another heap's object is foreign here.
        for &q in &ps {
            if q != p {
                // SAFETY: rejected, nothing touched.
                assert!(unsafe { h.try_dealloc(q, l) }.is_err());
            }
        }
        // SAFETY: live, freed once.
        unsafe { h.try_dealloc(p, l).unwrap() };
    }
}

#[test]
fn pages_freed_on_another_cpu_go_to_its_cache() {
    let (h, _ram) = heap(1024);
    let f = h.frames();
    let p = f.alloc(0).unwrap();
    let me = my_cpu();
    let other = (me + 1) % host::CPUS;
    let before = f.stats();
    as_cpu(other, || f.free(p, 0).unwrap());
    assert_eq!(f.stats().cached_pages(), before.cached_pages() + 1);
    // Draining only `other` gives it back.
    f.drain_local();
    let mid = f.stats().cached_pages();
    assert_eq!(mid, 1);
    assert!(f.drain_cpu(other));
    assert_eq!(f.stats().cached_pages(), 0);
}

/// Out of memory with interrupts masked (`as_cpu`): the current CPU's own
/// cache is drained before the request fails, other CPUs' caches cannot be
/// (`run_on` refuses); unmasked, every cache is drained.
#[test]
fn out_of_memory_while_masked_drains_own_cache() {
    use framekeep::{BuddyAllocator, Error, PhysAddr};
    use host::TestCaches;
    let c = Box::new(TestCaches::new(BuddyAllocator::new()));
    c.add_section_static(PhysAddr(1 << 32), 64, vec![0u64; 128].leak())
        .unwrap();
    let mut got = Vec::new();
    while let Ok(p) = c.alloc(0) {
        got.push(p);
    }
    assert_eq!(got.len(), 64);
    assert_eq!(c.stats().cached_pages(), 0);
    // Two pages that are not buddies, one cached on each of two CPUs.
    got.sort();
    let (pa, pb) = (got.remove(0), got.remove(1));
    assert_ne!(pa.0 ^ 4096, pb.0);
    let (a, b) = ((my_cpu() + 1) % host::CPUS, (my_cpu() + 2) % host::CPUS);
    as_cpu(a, || c.free(pa, 0)).unwrap();
    as_cpu(b, || c.free(pb, 0)).unwrap();
    assert_eq!(c.stats().cached_pages(), 2);
    assert_eq!(as_cpu(a, || c.alloc(1)), Err(Error::OutOfMemory));
    assert_eq!(c.stats().cached_pages(), 1, "a's cache kept its page");
    assert_eq!(c.stats().buddy.free_pages(), 1);
    assert_eq!(c.alloc(1), Err(Error::OutOfMemory));
    assert_eq!(c.stats().cached_pages(), 0, "b's cache kept its page");
    assert_eq!(c.stats().buddy.free_pages(), 2);
    for p in got {
        c.free(p, 0).unwrap();
    }
    assert!(c.drain_all());
    assert_eq!(c.stats().buddy.free_pages(), 64);
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
    let c = Box::new(TestCaches::new(BuddyAllocator::new()));
    let start = PhysAddr(1 << 32);
    // SAFETY: the buffer is leaked and only used by `c`.
    unsafe {
        c.add_section(
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
    let b = c.alloc_pages(1, Constraint::ANY).unwrap();
    c.free(b, 0).unwrap();
    assert_eq!(c.stats().cached_pages(), 0);
    // A page nobody allocated is the buddy's double free, never cached.
    let top = PhysAddr(start.0 + (pages - 1) * 4096);
    assert_eq!(c.free(top, 0), Err(Error::DoubleFree));
    assert_eq!(
        c.free(PhysAddr(start.0 + 64 * 4096), 0),
        Err(Error::DoubleFree)
    );
    // Cached traffic grows the prefix (here the low pages) and works.
    let ps: Vec<_> = (0..1000).map(|_| c.alloc(0).unwrap()).collect();
    let mut uniq = ps.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 1000);
    for &p in &ps {
        c.free(p, 0).unwrap();
    }
    assert_eq!(c.free(ps[0], 0), Err(Error::DoubleFree));
    assert!(tags(2048) == 0, "tags zeroed far past the pages in use");
    assert!(c.drain_all());
    assert_eq!(c.stats().free_pages(), pages);
    assert_eq!(c.free(top, 0), Err(Error::DoubleFree));
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
    let h = Box::new(TestHeap::new());
    // SAFETY: `ram` outlives `h` (dropped first).
    unsafe {
        h.add_memory(framekeep::PhysAddr(ram.start()), ram.pages())
            .unwrap()
    };
    let managed = h.stats().frames.buddy.managed_pages();
    let mut live = Vec::new();
    for i in 0..3000usize {
        let l = lay([8, 24, 200, 1500, 4096, 8192, 20_000][i % 7], 8);
        let p = h.allocate(l);
        assert!(!p.is_null());
        // SAFETY: a fresh block of l.size() bytes.
        unsafe { p.write_bytes(0x5a, l.size()) };
        live.push((p, l));
    }
    for &(p, l) in &live {
        // SAFETY: live, freed once.
        unsafe { h.try_dealloc(p, l).unwrap() };
    }
    // SAFETY: double frees are detected before anything changes.
    unsafe {
        assert_eq!(
            h.try_dealloc(live[0].0, live[0].1).unwrap_err().kind,
            FaultKind::DoubleFree
        );
        assert!(h.try_dealloc(live[4].0, live[4].1).is_err());
    }
    assert!(h.drain());
    let st = h.stats();
    assert_eq!(st.frames.free_pages(), managed);
    drop(h);
    drop(ram);
}

/// Threads hammer alloc / free / remote free; every live block is checked
/// against all others (no overlap: nothing handed out twice) and carries a
/// stamp verified on free.
fn hammer(threads: usize, ops: usize) {
    let (h, _ram) = heap(16384);
    let h: Arc<TestHeap> = Arc::from(h);
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
        .map(|(t, rx)| {
            let h = h.clone();
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
                let mut rng =
                    0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut mine: Vec<(usize, Layout, u64)> = Vec::new();
                let check_free = |p: usize, l: Layout, stamp: u64| {
                    // SAFETY: a live block we own, at least 8 bytes.
                    let s = unsafe { (p as *const u64).read_unaligned() };
                    assert_eq!(s, stamp, "block {p:#x} overwritten");
                    live.lock().unwrap().remove(p as *mut u8);
                    // SAFETY: live, freed once.
                    unsafe { h.try_dealloc(p as *mut u8, l).unwrap() };
                };
                for i in 0..ops {
                    while let Ok((p, l, s)) = rx.try_recv() {
                        check_free(p, l, s);
                    }
                    let r = next();
                    if mine.len() < 200 && r % 3 != 0 {
                        let size = match r % 16 {
                            0 => 4096 + (r >> 8) as usize % 20000,
                            1..=3 => 8 + (r >> 8) as usize % 2040,
                            _ => 8 + (r >> 8) as usize % 120,
                        };
                        let align = 8usize << ((r >> 40) % 4);
                        let l = lay(size, align);
                        let p = h.allocate(l);
                        assert!(
                            !p.is_null(),
                            "OOM for {l:?} at op {i}: {:?}, {} live",
                            h.stats(),
                            live.lock().unwrap().0.len()
                        );
                        live.lock().unwrap().add(p, size);
                        let stamp = ((t as u64) << 48) | i as u64;
                        // SAFETY: fresh block of >= 8 bytes.
                        unsafe { (p as *mut u64).write_unaligned(stamp) };
                        mine.push((p as usize, l, stamp));
                    } else if !mine.is_empty() {
                        let (p, l, s) = mine.swap_remove((r as usize >> 3) % mine.len());
                        let dest = (r >> 20) as usize % threads;
                        // A remote free, unless the other thread lags behind.
                        if dest == t || txs[dest].try_send((p, l, s)).is_err() {
                            check_free(p, l, s);
                        }
                    }
                }
                for (p, l, s) in mine {
                    check_free(p, l, s);
                }
                // Keep serving remote frees until every thread has stopped
                // sending, so they never pile up.
                drop(finished);
                while done.load(std::sync::atomic::Ordering::Acquire) < threads {
                    while let Ok((p, l, s)) = rx.try_recv() {
                        check_free(p, l, s);
                    }
                    std::thread::yield_now();
                }
                (rx, t)
            })
        })
        .collect();
    drop(txs);
    // Join every thread before failing: the heap's memory must outlive them.
    let joined: Vec<_> = handles.into_iter().map(|j| j.join()).collect();
    let rxs: Vec<_> = joined.into_iter().map(|r| r.unwrap().0).collect();
    for rx in rxs {
        // Leftover remote frees for a finished thread: free them here.
        while let Ok((p, l, _)) = rx.try_recv() {
            live.lock().unwrap().remove(p as *mut u8);
            // SAFETY: live, freed once.
            unsafe { h.try_dealloc(p as *mut u8, l).unwrap() };
        }
    }
    assert!(live.lock().unwrap().0.is_empty());
    let st = h.stats();
    assert_eq!(st.faults, 0);
    assert_eq!(pages_out(&h), 0);
    assert!(h.drain());
    let st = h.stats();
    assert_eq!(st.slab_pages, 0);
    assert_eq!(st.frames.free_pages(), st.frames.buddy.managed_pages());
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
    let (h, _ram) = heap(512);
    let cap = h.stats().descriptor_capacity;
    assert!(cap >= 512 / framekeep::PAGES_PER_DESCRIPTOR);
    let mut live = Live::default();
    let mut got = Vec::new();
    // Every class on every CPU: more slabs than there are descriptors.
    'fill: for cpu in 0..host::CPUS {
        for (k, &size) in SIZE_CLASSES.iter().enumerate() {
            let l = lay(size, 8);
            let p = as_cpu(cpu, || h.allocate(l));
            if p.is_null() {
                break 'fill;
            }
            live.add(p, size);
            got.push((cpu, p, l, k));
        }
    }
    let st = h.stats();
    assert_eq!(st.descriptors, cap, "the descriptors ran out");
    assert!(
        got.len() > cap as usize,
        "small requests went on with pages"
    );
    for &(cpu, p, l, k) in &got {
        // A wrong layout is refused whatever served the object.
        let other = lay(SIZE_CLASSES[(k + 1) % SIZE_CLASSES.len()], 8);
        // SAFETY: refused before anything is touched.
        let e = unsafe { h.try_dealloc(p, other) }.unwrap_err();
        assert_eq!(e.kind, FaultKind::WrongLayout);
        // SAFETY: live, with its layout, once.
        as_cpu(cpu, || unsafe { h.try_dealloc(p, l) }).unwrap();
    }
    assert!(h.drain());
    let st = h.stats();
    assert_eq!(st.slab_pages, 0);
    assert_eq!(st.frames.free_pages(), st.frames.buddy.managed_pages());
}
