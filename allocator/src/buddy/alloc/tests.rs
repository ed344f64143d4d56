//! Tests of the allocating calls and their errors.

use core::ptr::NonNull;

use crate::buddy::test_support::{Fixture, GIB, MIB, rejects};
use crate::{
    BuddyAllocator, Constraint, Error, MAX_ORDER, PageState, PhysAddr, Zone, metadata_bytes,
};

#[test]
#[cfg_attr(miri, ignore)] // 2 MiB of metadata: slow under Miri
fn order_18_block() {
    let mut meta = vec![0u64; 1 << 18];
    let mut a = BuddyAllocator::new();
    // SAFETY: `meta` outlives `a`.
    unsafe {
        a.add_section(
            PhysAddr(4 * GIB),
            1 << 18,
            NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
            metadata_bytes(1 << 18),
        )
        .unwrap();
    }
    let p = a.alloc(18, Constraint::ANY).unwrap();
    assert_eq!(p, PhysAddr(4 * GIB));
    assert_eq!(a.alloc(0, Constraint::ANY), Err(Error::OutOfMemory));
    assert_eq!(a.free(PhysAddr(p.0 + 4096), 0), Err(Error::InteriorPage));
    a.free(p, 18).unwrap();
    assert_eq!(a.stats().free_blocks(18), 1);
}

#[test]
fn alloc_errors() {
    let mut t = Fixture::new(&[(GIB, 16)]);
    rejects(&mut t, Error::TooLarge, |a| {
        a.alloc(MAX_ORDER + 1, Constraint::ANY)
    });
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(5, Constraint::ANY));
    rejects(&mut t, Error::ZeroCount, |a| {
        a.alloc_pages(0, Constraint::ANY)
    });
    rejects(&mut t, Error::TooLarge, |a| {
        a.alloc_pages((1 << MAX_ORDER) + 1, Constraint::ANY)
    });
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(17, Constraint::ANY)
    });
    rejects(&mut t, Error::BadAlignment, |a| {
        a.alloc_aligned(1, 3 * 4096, Constraint::ANY)
    });
    rejects(&mut t, Error::BadAlignment, |a| {
        a.alloc_aligned(1, 0, Constraint::ANY)
    });
    rejects(&mut t, Error::TooLarge, |a| {
        a.alloc_aligned(1, 2 << 30, Constraint::ANY)
    });
    rejects(&mut t, Error::ZeroCount, |a| {
        a.alloc_aligned(0, 4096, Constraint::ANY)
    });
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc(0, Constraint::Zone(Zone::Dma))
    });
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc(0, Constraint::Below(PhysAddr(GIB)))
    });
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc(0, Constraint::Below(PhysAddr(0)))
    });
    // Exhaust, then OOM is an error, not a panic.
    for _ in 0..16 {
        t.buddy.alloc(0, Constraint::ANY).unwrap();
    }
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, Constraint::ANY));
}

#[test]
fn exact_pages_give_the_tail_back() {
    let mut t = Fixture::new(&[(GIB, 16)]);
    let p = t.buddy.alloc_pages(5, Constraint::ANY).unwrap();
    assert_eq!(t.free(), 11);
    assert_eq!(t.buddy.page_state(p), Ok(PageState::Allocated { pages: 5 }));
    assert!(matches!(
        t.buddy.page_state(PhysAddr(p.0 + 5 * 4096)),
        Ok(PageState::Free { .. })
    ));
    // The tail is usable.
    let mut rest = Vec::new();
    while let Ok(f) = t.buddy.alloc(0, Constraint::ANY) {
        rest.push(f);
    }
    assert_eq!(rest.len(), 11);
    for f in rest {
        t.buddy.free(f, 0).unwrap();
    }
    t.buddy.free_pages(p, 5).unwrap();
    t.buddy.drain_hot();
    assert_eq!(t.buddy.stats().free_blocks(4), 1);
}

#[test]
fn aligned_allocation_costs_only_its_pages() {
    let mut t = Fixture::new(&[(GIB + 4096, 2047)]); // the only 2 MiB-aligned spot is at GIB + 2 MiB
    let p = t.buddy.alloc_aligned(1, 2 << 20, Constraint::ANY).unwrap();
    assert_eq!(p.0 % (2 << 20), 0);
    assert_eq!(t.free(), 2046);
    let q = t.buddy.alloc_aligned(3, 64 << 10, Constraint::ANY).unwrap();
    assert_eq!(q.0 % (64 << 10), 0);
    assert_eq!(t.free(), 2043);
    let r = t.buddy.alloc_aligned(2, 64, Constraint::ANY).unwrap(); // below a page: page aligned
    t.buddy.free_pages(r, 2).unwrap();
    t.buddy.free_pages(q, 3).unwrap();
    t.buddy.free_pages(p, 1).unwrap();
    assert_eq!(t.free(), 2047);
    // Section start not aligned to the request: no false out of memory.
    let mut t = Fixture::new(&[(GIB + 4096, 3)]);
    assert!(t.buddy.alloc_aligned(2, 8192, Constraint::ANY).is_ok());
}

#[test]
fn reserve_range_and_errors() {
    let mut t = Fixture::new(&[(GIB + 4096, 100), (16 * MIB - 4 * 4096, 8)]);
    let r = PhysAddr(GIB + 10 * 4096);
    t.buddy.reserve_range(r, 37).unwrap();
    assert_eq!(t.free(), 108 - 37);
    assert_eq!(
        t.buddy.page_state(r),
        Ok(PageState::Allocated { pages: 37 })
    );
    assert_eq!(
        t.buddy.page_state(PhysAddr(r.0 + 36 * 4096)),
        Ok(PageState::Interior)
    );
    rejects(&mut t, Error::RangeInUse, |a| {
        a.reserve_range(PhysAddr(GIB + 40 * 4096), 10)
    });
    rejects(&mut t, Error::RangeInUse, |a| {
        a.reserve_range(PhysAddr(GIB + 4096), 10)
    });
    rejects(&mut t, Error::ZeroCount, |a| {
        a.reserve_range(PhysAddr(GIB + 4096), 0)
    });
    rejects(&mut t, Error::Misaligned, |a| {
        a.reserve_range(PhysAddr(GIB + 4097), 1)
    });
    rejects(&mut t, Error::NotInSection, |a| {
        a.reserve_range(PhysAddr(GIB), 1)
    });
    rejects(&mut t, Error::RangeCrossesSection, |a| {
        a.reserve_range(PhysAddr(GIB + 90 * 4096), 20)
    });
    rejects(&mut t, Error::TooLarge, |a| {
        a.reserve_range(PhysAddr(GIB + 4096), usize::MAX)
    });
    // Crossing the 16 MiB zone split.
    rejects(&mut t, Error::RangeCrossesSection, |a| {
        a.reserve_range(PhysAddr(16 * MIB - 4096), 2)
    });
    rejects(&mut t, Error::WrongCount { allocated: 37 }, |a| {
        a.free_pages(r, 36)
    });
    t.buddy.free_pages(r, 37).unwrap();
    assert_eq!(t.free(), 108);
    // Whole section.
    t.buddy.reserve_range(PhysAddr(GIB + 4096), 100).unwrap();
    assert_eq!(
        t.buddy.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap().0,
        16 * MIB
    );
}
