//! Tests of finding blocks: fallback to lower zones, limits, aligned runs
//! at a section's end.

use crate::buddy::test_support::{Fixture, GIB, MIB, rejects};
use crate::{Constraint, Error, LIMIT_SCAN, PageState, PhysAddr, Zone};

#[test]
fn zone_constraints_and_fallback() {
    let mut t = Fixture::new(&[(8 * MIB, 16), (GIB, 16), (8 * GIB, 16)]);
    for _ in 0..16 {
        assert!(t.buddy.alloc(0, Constraint::ANY).unwrap().0 >= 4 * GIB);
    }
    for _ in 0..16 {
        let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
        assert_eq!(Zone::of(p), Zone::Dma32);
    }
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(Zone::of(p), Zone::Dma);
    let mut t = Fixture::new(&[(8 * MIB, 16), (GIB, 16), (8 * GIB, 16)]);
    assert!(t.buddy.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap().0 < 4 * GIB);
    assert!(t.buddy.alloc(0, Constraint::Zone(Zone::Dma)).unwrap().0 < 16 * MIB);
    assert!(
        t.buddy
            .alloc(0, Constraint::Below(PhysAddr(GIB + 4 * 4096)))
            .unwrap()
            .0
            < GIB + 4 * 4096
    );
    // Page GIB is taken, so no order-2 block of DMA32 lies below the limit:
    // the request falls back to DMA.
    let p = t
        .buddy
        .alloc(2, Constraint::Below(PhysAddr(GIB + 4 * 4096)))
        .unwrap();
    assert_eq!(Zone::of(p), Zone::Dma);
    let mut t2 = Fixture::new(&[(GIB, 16)]);
    assert_eq!(
        t2.buddy
            .alloc(2, Constraint::Below(PhysAddr(GIB + 4 * 4096))),
        Ok(PhysAddr(GIB))
    );
    assert!(
        t.buddy
            .alloc(0, Constraint::Below(PhysAddr(12 * MIB)))
            .unwrap()
            .0
            < 12 * MIB
    );
    assert!(
        t.buddy
            .alloc(0, Constraint::Below(PhysAddr(u64::MAX)))
            .unwrap()
            .0
            >= 4 * GIB
    );
}

/// A limit inside a section: the one free page below it is found even
/// when more than `LIMIT_SCAN` free blocks of its order come first in its
/// list: the bounded first pass misses it, the second finds it.
#[test]
fn a_limit_finds_the_page_below_it_behind_many_above() {
    // 8192 pages: buckets of 256 pages, so pages 0..=200 share a list.
    let mut t = Fixture::new(&[(GIB, 8192)]);
    // Reserving the odd pages 1..=201 frees the even ones 0..=200 as
    // single pages, pushed in ascending order: page 0 ends up last.
    for i in 0..=100 {
        t.buddy
            .reserve_range(PhysAddr(GIB + (2 * i + 1) * 4096), 1)
            .unwrap();
    }
    const { assert!(100 > LIMIT_SCAN) };
    let below = Constraint::Below(PhysAddr(GIB + 4096));
    assert_eq!(t.buddy.alloc(0, below), Ok(PhysAddr(GIB)));
    // Now nothing is left below the limit.
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, below));
    // A limit not on a page boundary counts whole pages below it.
    t.buddy.free(PhysAddr(GIB), 0).unwrap();
    let mid = Constraint::Below(PhysAddr(GIB + 4096 + 100));
    assert_eq!(t.buddy.alloc(0, mid), Ok(PhysAddr(GIB)));
}

#[test]
fn dma32_lookup_ignores_high_free_blocks() {
    // Many free blocks in Normal do not slow or confuse a DMA32 request.
    let mut t = Fixture::new(&[(GIB, 1), (8 * GIB, 4096)]);
    let mut keep = Vec::new();
    for i in 0..4096 {
        let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
        if i % 2 == 0 {
            keep.push(p);
        } else {
            t.buddy.free(p, 0).unwrap();
        }
        let _ = i;
    }
    let dma = t.buddy.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap();
    assert_eq!(dma, PhysAddr(GIB));
    t.buddy.free(dma, 0).unwrap();
}

/// An aligned run near the end of a section, where no block of the
/// request's order fits, is found. A run between allocated pages is not
/// looked for, as the docs say.
#[test]
fn aligned_runs_are_found_where_the_section_end_cuts_the_block() {
    // 24 pages: blocks of 16 and 8. Page 16 is 64 KiB aligned.
    let mut t = Fixture::new(&[(GIB, 24)]);
    let a64k = 64 << 10;
    assert_eq!(
        t.buddy.alloc_aligned(1, a64k, Constraint::ANY),
        Ok(PhysAddr(GIB))
    );
    let p = t.buddy.alloc_aligned(1, a64k, Constraint::ANY);
    assert_eq!(p, Ok(PhysAddr(GIB + 16 * 4096)));
    assert_eq!(t.free(), 22);
    t.buddy.free_pages(p.unwrap(), 1).unwrap();

    // 21 pages: after the 16-page block, [16, 21) is free, 8-aligned,
    // but only as blocks of 4 and 1.
    let mut t = Fixture::new(&[(GIB, 21)]);
    let b = t.buddy.alloc(4, Constraint::ANY).unwrap();
    let r = t.buddy.alloc_pages(5, Constraint::ANY);
    assert_eq!(r, Ok(PhysAddr(GIB + 16 * 4096)));
    assert_eq!(
        t.buddy.page_state(r.unwrap()),
        Ok(PageState::Allocated { pages: 5 })
    );
    assert_eq!(t.free(), 0);
    t.buddy.free_pages(r.unwrap(), 5).unwrap();
    // The limit and the rest of the window are respected.
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(5, Constraint::Below(PhysAddr(GIB + 20 * 4096)))
    });
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(6, Constraint::ANY)
    });
    t.buddy.reserve_range(PhysAddr(GIB + 20 * 4096), 1).unwrap();
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(5, Constraint::ANY)
    });
    t.buddy.free(b, 4).unwrap();

    // Not at a section end: with [0, 8) and [13, 16) in use, [8, 13) is
    // free and 8-page aligned, but made of blocks of 4 and 1 between
    // allocated pages. Not looked for: out of memory, as documented; it
    // can be taken at its address.
    let mut t = Fixture::new(&[(GIB, 16)]);
    t.buddy.reserve_range(PhysAddr(GIB), 8).unwrap();
    t.buddy.reserve_range(PhysAddr(GIB + 13 * 4096), 3).unwrap();
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(5, Constraint::ANY)
    });
    t.buddy.reserve_range(PhysAddr(GIB + 8 * 4096), 5).unwrap();
}
