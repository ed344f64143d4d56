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

/// Registers `pages` pages at `start` with metadata `m` (which must
/// outlive the allocator and be used by nothing else meanwhile).
fn add(a: &mut BuddyAllocator, start: u64, pages: u64, m: &mut [u64]) -> Result<(), Error> {
    let bytes = std::mem::size_of_val(m);
    // SAFETY: every caller keeps `m` alive and untouched until `a` is gone.
    unsafe { a.add_section(PhysAddr(start), pages, NonNull::from(m).cast(), bytes) }
}

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

// ---------------------------------------------------------------- buddy

#[test]
fn buddy_orders_pages_alignment_ranges_and_bulk() {
    let mut m = meta(256, false);
    let mut a = BuddyAllocator::new();
    let base = 1u64 << 32; // Normal
    add(&mut a, base, 256, &mut m).unwrap();
    // Every order up to the section, naturally aligned, merged back.
    for order in 0..=8 {
        let p = a.alloc(order, Constraint::ANY).unwrap();
        assert_eq!(p.0 % (PAGE << order), 0);
        a.free(p, order).unwrap();
    }
    assert_eq!(a.stats().free_pages(), 256);
    // Exact counts and alignment beyond the size.
    let p = a.alloc_pages(5, Constraint::ANY).unwrap();
    assert_eq!(a.stats().free_pages(), 251);
    let q = a.alloc_aligned(3, 64 << 10, Constraint::ANY).unwrap();
    assert_eq!(q.0 % (64 << 10), 0);
    a.free_pages(p, 5).unwrap();
    a.free_pages(q, 3).unwrap();
    // Hot lists: a page whose buddy is busy is parked and handed out again.
    let (x, y) = (
        a.alloc(0, Constraint::ANY).unwrap(),
        a.alloc(0, Constraint::ANY).unwrap(),
    );
    a.free(x, 0).unwrap();
    assert_eq!(a.alloc(0, Constraint::ANY), Ok(x));
    a.free(x, 0).unwrap();
    a.free(y, 0).unwrap();
    a.drain_hot();
    // A fixed range, and bulk single frames.
    let r = PhysAddr(base + 17 * PAGE);
    a.reserve_range(r, 10).unwrap();
    assert_eq!(
        a.reserve_range(PhysAddr(base + 20 * PAGE), 2),
        Err(Error::RangeInUse)
    );
    let mut frames = [PhysAddr(0); 24];
    assert_eq!(a.alloc_bulk(Constraint::ANY, &mut frames), Ok(24));
    let e = a.free_bulk(&[frames[0], frames[1], frames[0]]).unwrap_err();
    assert_eq!((e.index, e.error), (2, Error::DoubleFree));
    a.free_bulk(&frames).unwrap();
    a.free_pages(r, 10).unwrap();
    // Bad calls change nothing.
    assert_eq!(a.free(PhysAddr(base + 1), 0), Err(Error::Misaligned));
    assert_eq!(a.free(PhysAddr(base), 0), Err(Error::DoubleFree));
    assert_eq!(a.alloc_pages(0, Constraint::ANY), Err(Error::ZeroCount));
    a.drain_hot();
    assert_eq!(a.stats().free_pages(), 256);
    assert_eq!(a.free_blocks().count(), 1);
}

#[test]
fn buddy_zones_reserves_and_sections() {
    let (mut m1, mut m2, mut m3) = (meta(64, false), meta(64, false), meta(32, false));
    let mut a = BuddyAllocator::new();
    add(&mut a, 0x80_0000, 64, &mut m1).unwrap(); // DMA
    add(&mut a, 0x100_0000, 64, &mut m2).unwrap(); // DMA32
    assert_eq!(
        add(&mut a, 0x100_0000 + 32 * PAGE, 32, &mut m3),
        Err(Error::SectionOverlap)
    );
    // Normal memory hot-added later.
    add(&mut a, 1 << 32, 32, &mut m3).unwrap();
    let n = a.alloc(0, Constraint::ANY).unwrap();
    assert!(n.0 >= 1 << 32);
    let d = a.alloc(0, Constraint::Zone(Zone::Dma)).unwrap();
    assert!(d.0 < 16 << 20);
    // A reserve keeps DMA32 from requests that could go higher.
    a.set_reserve(Zone::Dma32, 64);
    let mut normal = vec![n];
    while let Ok(p) = a.alloc(0, Constraint::ANY) {
        assert!(p.0 >= 1 << 32 || p.0 < 16 << 20, "{p:?}");
        normal.push(p);
    }
    assert!(a.alloc(0, Constraint::Zone(Zone::Dma32)).is_ok());
    a.set_reserve(Zone::Dma32, 0);
    // A section with allocated pages cannot go; a free one can.
    assert_eq!(
        a.remove_section(PhysAddr(1 << 32)),
        Err(Error::SectionInUse)
    );
    for p in normal {
        a.free(p, 0).unwrap();
    }
    a.drain_hot();
    let r = a.remove_section(PhysAddr(1 << 32)).unwrap();
    assert_eq!(r.pages, 32);
    assert!(a.sections().all(|s| s.start.0 < 1 << 32));
}

#[test]
fn buddy_poisons_and_zeroes_frame_memory() {
    // 16 pages of "physical" memory at 2 MiB, mapped at `ram`.
    let ram = Ram::new(16, PAGE as usize);
    let phys = 0x20_0000u64;
    let mut m = meta(16, false);
    let mut a = BuddyAllocator::new();
    add(&mut a, phys, 16, &mut m).unwrap();
    let off = (ram.start() as *mut u8).wrapping_sub(phys as usize);
    // SAFETY: `ram` outlives `a` and stands for [phys, phys + 64 KiB).
    unsafe {
        a.set_frame_options(
            off,
            FrameOptions {
                poison: true,
                zero_on_alloc: true,
            },
        )
    };
    let p = a.alloc(1, Constraint::ANY).unwrap();
    let bytes = off.wrapping_add(p.0 as usize);
    // SAFETY: the two pages at `p` are ours now.
    unsafe {
        assert!((0..2 * PAGE as usize).all(|i| *bytes.add(i) == 0));
        bytes.write_bytes(0x5a, 2 * PAGE as usize);
    }
    a.free(p, 1).unwrap();
    // A write to a free (poisoned) frame is caught on its next allocation.
    // SAFETY: test-only scribble on free memory we own.
    unsafe { *bytes.add(100) = 1 };
    let mut got = Vec::new();
    let mut caught = false;
    for _ in 0..16 {
        match a.alloc(0, Constraint::ANY) {
            Ok(q) => got.push(q),
            Err(Error::Corrupted { .. }) => caught = true,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(caught);
    a.clear_frame_options();
    for q in got {
        a.free(q, 0).unwrap();
    }
}

#[test]
fn locked_allocator_from_two_threads() {
    let mut m = meta(64, false);
    let mut b = BuddyAllocator::new();
    add(&mut b, 1 << 32, 64, &mut m).unwrap();
    let a = LockedAllocator::<NoInterrupts>::new(b);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..8u32 {
                    let p = a.alloc(i % 3, Constraint::ANY).unwrap();
                    a.free(p, i % 3).unwrap();
                }
            });
        }
    });
    assert_eq!(a.stats().free_pages(), 64);
}

// ---------------------------------------------------- per-CPU page caches

type Caches = PageCaches<HostCpu, { host::CPUS }>;

/// Page caches over `pages` Normal pages (metadata in `m`).
fn caches(pages: u64, cfg: PcpConfig, m: &mut Vec<u64>) -> Box<Caches> {
    *m = meta(pages, true);
    let c = Box::new(Caches::with_config(BuddyAllocator::new(), cfg));
    let bytes = std::mem::size_of_val(m.as_slice());
    // SAFETY: every caller keeps `m` alive and untouched until `c` is gone.
    unsafe {
        c.add_section(
            PhysAddr(1 << 32),
            pages,
            NonNull::from(m.as_mut_slice()).cast(),
            bytes,
        )
        .unwrap()
    };
    c
}

/// The first allocation refills the empty list from the buddy (Miri used
/// to flag it: the refill re-borrowed the lists while the fast path's
/// borrow was still live).
#[test]
fn pcp_first_refill() {
    let mut m = Vec::new();
    let c = caches(64, PcpConfig::DEFAULT, &mut m);
    let p = c.alloc(0).unwrap();
    let st = c.stats();
    assert_eq!(st.cached_pages(), PcpConfig::DEFAULT.batch[0] as u64 - 1);
    c.free(p, 0).unwrap();
    assert_eq!(c.free(p, 0), Err(Error::DoubleFree));
    assert_eq!(c.stats().free_pages(), 64);
    drop(c);
}

/// Frees beyond `high` drain a batch to the buddy (the overflow path had
/// the same shape as the refill), for every cached order.
#[test]
fn pcp_overflow_drains_a_batch() {
    let mut m = Vec::new();
    let cfg = PcpConfig {
        high: [4; 4],
        batch: [2; 4],
    };
    let c = caches(128, cfg, &mut m);
    for order in 0..4u32 {
        let blocks: Vec<_> = (0..6).map(|_| c.alloc(order).unwrap()).collect();
        for &b in &blocks {
            assert_eq!(b.0 % (PAGE << order), 0);
        }
        if order > 0 {
            let e = Error::WrongCount {
                allocated: 1 << order,
            };
            assert_eq!(c.free(blocks[0], order - 1), Err(e));
        }
        for b in blocks {
            c.free(b, order).unwrap();
        }
        // At most `high` blocks of each order so far.
        assert!(c.stats().cached_pages() <= 4 * ((2 << order) - 1));
    }
    assert_eq!(c.stats().free_pages(), 128);
    c.drain_local();
    assert_eq!(c.stats().buddy.free_pages(), 128);
}

/// Another thread (CPU) keeps pages in its cache; this thread drains it
/// through `run_on`, explicitly and when an allocation would fail.
#[test]
fn pcp_drain_other_cpu_and_out_of_memory() {
    let mut m = Vec::new();
    let c = caches(64, PcpConfig::DEFAULT, &mut m);
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let c = &c;
        s.spawn(move || {
            let ps: Vec<_> = (0..4).map(|_| c.alloc(0).unwrap()).collect();
            for p in ps {
                c.free(p, 0).unwrap();
            }
            tx.send(my_cpu()).unwrap();
            done_rx.recv().unwrap();
        });
        let other = rx.recv().unwrap();
        assert_ne!(other, my_cpu());
        assert!(c.stats().cached_pages() > 0);
        assert!(c.drain_cpu(other));
        assert_eq!(c.stats().cached_pages(), 0);
        // Its cache fills again (as that CPU), then an allocation here
        // that finds the buddy empty drains it.
        as_cpu(other, || {
            let p = c.alloc(0).unwrap();
            c.free(p, 0).unwrap();
        });
        let mut got = Vec::new();
        while let Ok(p) = c.alloc(0) {
            got.push(p);
        }
        assert_eq!(got.len(), 64);
        assert_eq!(c.stats().free_pages(), 0);
        // Masked (as another CPU, through run_on): only that CPU's own
        // cache can be drained before the request fails.
        let (pa, pb) = (got.pop().unwrap(), got.pop().unwrap());
        as_cpu(other, || c.free(pa, 0)).unwrap();
        c.free(pb, 0).unwrap(); // into this CPU's cache
        assert_eq!(as_cpu(other, || c.alloc(3)), Err(Error::OutOfMemory));
        assert_eq!(c.stats().cached_pages(), 1);
        for p in got {
            c.free(p, 0).unwrap();
        }
        done_tx.send(()).unwrap();
    });
    // Removal drains every cache first.
    let r = c.remove_section(PhysAddr(1 << 32)).unwrap();
    assert_eq!(r.pages, 64);
    drop(c);
}

// ------------------------------------------------------------ slab, Heap

/// Objects freed on their own CPU and on another (remote), collected by
/// the owner; double frees of both kinds; empty slabs given back.
#[test]
fn slab_local_remote_collect_and_retire() {
    let (h, _ram) = heap(128);
    let h: Arc<TestHeap> = Arc::from(h);
    let l = lay(256, 8); // 16 objects in a 4 KiB slab
    let ps: Vec<usize> = (0..48).map(|_| h.allocate(l) as usize).collect();
    assert_eq!(h.stats().slab_pages, 3);
    // SAFETY: live objects of layout `l`, each freed once; then rejected.
    unsafe {
        for &p in &ps[..8] {
            h.try_dealloc(p as *mut u8, l).unwrap();
        }
        let e = h.try_dealloc(ps[0] as *mut u8, l).unwrap_err();
        assert_eq!(e.kind, FaultKind::DoubleFree);
    }
    let h2 = h.clone();
    let remote = ps[8..].to_vec();
    std::thread::spawn(move || {
        assert_ne!(my_cpu(), usize::MAX);
        for &p in &remote {
            // SAFETY: live objects, freed once (remotely).
            unsafe { h2.try_dealloc(p as *mut u8, l).unwrap() };
        }
        // SAFETY: rejected, nothing touched.
        let e = unsafe { h2.try_dealloc(remote[0] as *mut u8, l) }.unwrap_err();
        assert_eq!(e.kind, FaultKind::DoubleFree);
    })
    .join()
    .unwrap();
    // Uncollected: a local free of a remotely freed object is a double free.
    // SAFETY: rejected, nothing touched.
    let e = unsafe { h.try_dealloc(ps[20] as *mut u8, l) }.unwrap_err();
    assert_eq!(e.kind, FaultKind::DoubleFree);
    // The owner's slow path (a class without a current slab) collects them
    // and retires the empty slabs beyond the reserve.
    let q = h.allocate(lay(1024, 8));
    assert!(h.stats().slab_pages <= 1 + 4 + SLAB_RESERVE as u64);
    // Everything comes back exactly once.
    let again: Vec<usize> = (0..48).map(|_| h.allocate(l) as usize).collect();
    let mut sorted = again.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 48);
    // SAFETY: live, freed once each.
    unsafe {
        h.try_dealloc(q, lay(1024, 8)).unwrap();
        for p in again {
            h.try_dealloc(p as *mut u8, l).unwrap();
        }
    }
    assert!(h.drain());
    assert_eq!(h.stats().slab_pages, 0);
    assert_eq!(h.stats().frames.cached_pages(), 0);
}

/// `Heap::drain` trims a CPU that is another live thread (through
/// `run_on`), collecting the remote frees it has not seen yet.
#[test]
fn slab_trim_other_cpu() {
    let (h, _ram) = heap(128);
    let l = lay(64, 8);
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let h = &h;
        s.spawn(move || {
            let ps: Vec<usize> = (0..80).map(|_| h.allocate(l) as usize).collect();
            let page = h.allocate(lay(4096, 4096)) as usize;
            tx.send((my_cpu(), ps, page)).unwrap();
            go_rx.recv().unwrap();
        });
        let (other, ps, page) = rx.recv().unwrap();
        assert_ne!(other, my_cpu());
        // SAFETY: live objects (of the other CPU), freed once here.
        unsafe {
            for p in ps {
                h.try_dealloc(p as *mut u8, l).unwrap();
            }
            h.try_dealloc(page as *mut u8, lay(4096, 4096)).unwrap();
        }
        assert!(h.stats().slab_pages > 0);
        assert!(h.drain());
        let st = h.stats();
        assert_eq!((st.slab_pages, st.frames.cached_pages()), (0, 0));
        go_tx.send(()).unwrap();
    });
}

static FAULTS: AtomicUsize = AtomicUsize::new(0);

fn on_fault(_: framekeep::Fault) {
    FAULTS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn heap_alloc_realloc_dealloc_and_faults() {
    let (h, _ram) = heap(256);
    h.set_fault_handler(on_fault);
    // SAFETY: GlobalAlloc use: each block reallocated or freed once with
    // its current layout; the bad frees are rejected before anything is
    // touched.
    unsafe {
        // Small: in place within a class, then moving to another class.
        let p = h.alloc(lay(20, 8));
        p.write_bytes(0x11, 20);
        assert_eq!(h.realloc(p, lay(20, 8), 24), p);
        let q = h.realloc(p, lay(24, 8), 100);
        assert_ne!(q, p);
        assert!(std::slice::from_raw_parts(q, 20).iter().all(|&b| b == 0x11));
        // Pages from the per-CPU cache, and a multi-page run from the
        // buddy: grown and shrunk in place, then grown by moving.
        let pg = h.alloc(lay(8192, 4096));
        pg.write_bytes(0x33, 8192);
        let big = h.alloc(lay(20 * 4096, 4096));
        big.write_bytes(0x22, 20 * 4096);
        assert_eq!(h.realloc(big, lay(20 * 4096, 4096), 24 * 4096), big);
        assert_eq!(h.realloc(big, lay(24 * 4096, 4096), 17 * 4096 + 5), big);
        let blocker = h.alloc(lay(15 * 4096, 4096));
        let moved = h.realloc(big, lay(17 * 4096 + 5, 4096), 40 * 4096);
        assert!(!moved.is_null() && moved != big);
        assert!(
            std::slice::from_raw_parts(moved, 17 * 4096)
                .iter()
                .all(|&b| b == 0x22)
        );
        // Small -> pages -> small.
        let s = h.realloc(q, lay(100, 8), 10_000);
        let s2 = h.realloc(s, lay(10_000, 8), 10);
        assert!(
            std::slice::from_raw_parts(s2, 10)
                .iter()
                .all(|&b| b == 0x11)
        );
        // Alignment beyond the size.
        let al = h.alloc(lay(100, 1 << 16));
        assert_eq!(al as usize % (1 << 16), 0);
        // Out of memory: null, the old block intact.
        assert!(h.alloc(lay(1 << 40, 8)).is_null());
        assert!(h.realloc(s2, lay(10, 8), 1 << 40).is_null());
        // Bad frees: returned by try_dealloc, reported by dealloc.
        let l = lay(64, 8);
        let o = h.alloc(l);
        let o2 = h.alloc(l);
        assert_eq!(
            h.try_dealloc(o.add(1), l).unwrap_err().kind,
            FaultKind::NotObjectStart
        );
        assert_eq!(
            h.try_dealloc(o, lay(128, 8)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        let mut local = [0u64; 8];
        assert_eq!(
            h.try_dealloc(local.as_mut_ptr().cast(), l)
                .unwrap_err()
                .kind,
            FaultKind::NotAllocated
        );
        assert_eq!(
            h.try_dealloc(pg, lay(4096, 4096)).unwrap_err().kind,
            FaultKind::WrongLayout
        );
        h.dealloc(o, l);
        h.dealloc(o, l); // double free: reported, ignored
        assert_eq!(FAULTS.load(Ordering::Relaxed), 1);
        assert_eq!(h.stats().faults, 1);
        for (p, l) in [
            (o2, l),
            (s2, lay(10, 8)),
            (pg, lay(8192, 4096)),
            (moved, lay(40 * 4096, 4096)),
            (blocker, lay(15 * 4096, 4096)),
            (al, lay(100, 1 << 16)),
        ] {
            h.try_dealloc(p, l).unwrap();
        }
    }
    assert!(h.drain());
    let st = h.stats();
    assert_eq!(
        st.frames.buddy.free_pages(),
        st.frames.buddy.managed_pages()
    );
}
