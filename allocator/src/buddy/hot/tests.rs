//! Tests of the hot lists: what is parked, what merges, when parked
//! blocks go back to the lists.

use super::HotList;
use crate::buddy::test_support::{Fixture, GIB, MIB, hot_pages, park_all, rejects};
use crate::{Constraint, Error, FreeBlock, HOT_CAP, PageState, PhysAddr, REFILL_ORDER, Zone};

#[test]
fn stack_order_and_forget() {
    let mut list = HotList::EMPTY;
    for i in 0..HOT_CAP as u32 {
        list.push((i % 3) as usize, i);
    }
    assert!(list.is_full());
    assert_eq!(list.count_in(0), HOT_CAP.div_ceil(3));
    assert_eq!(list.pop(), Some((((HOT_CAP - 1) % 3), HOT_CAP as u32 - 1)));
    list.drop_oldest(4);
    assert_eq!(list.get(0), (1, 4));
    list.forget(|section, _| section == 1);
    assert_eq!(list.count_in(1), 0);
    assert_eq!(list.get(0), (2, 5));
    let mut last = None;
    while let Some(block) = list.pop() {
        last = Some(block);
    }
    assert_eq!(last, Some((2, 5)));
    assert_eq!(list.len(), 0);
}

#[test]
fn freed_page_with_busy_buddy_is_parked_and_reused_first() {
    let mut t = Fixture::new(&[(GIB, 64)]);
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
    let q = t.buddy.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(p.0 ^ q.0, 4096, "buddies");
    // Merge the rest of the refill, which p's allocation parked.
    t.buddy.drain_hot();
    t.buddy.free(q, 0).unwrap();
    assert_eq!(hot_pages(&t), 1);
    assert_eq!(t.free(), 63);
    assert_eq!(
        t.buddy.page_state(q),
        Ok(PageState::Free { block: q, order: 0 })
    );
    let hb: Vec<FreeBlock> = t.buddy.free_blocks().filter(|b| b.hot).collect();
    assert_eq!(hb.len(), 1);
    assert_eq!((hb[0].addr, hb[0].order), (q, 0));
    // Bad frees of a parked page change nothing.
    rejects(&mut t, Error::DoubleFree, |a| a.free(q, 0));
    rejects(&mut t, Error::DoubleFree, |a| a.free_pages(q, 1));
    rejects(&mut t, Error::DoubleFree, |a| a.free_pages(q, 2));
    let qa = PhysAddr(q.0 & !8191);
    rejects(&mut t, Error::WrongCount { allocated: 1 }, |a| {
        a.free(qa, 1)
    });
    rejects(&mut t, Error::DoubleFree, |a| {
        a.free_bulk(&[q]).map_err(|bulk| bulk.error)
    });
    // The next single page is the parked one.
    assert_eq!(t.buddy.alloc(0, Constraint::ANY), Ok(q));
    assert_eq!(hot_pages(&t), 0);
    // q parks again (p in use), then p parks too: its buddy is parked,
    // not free, and parked pages are not merged until they leave the list.
    t.buddy.free(q, 0).unwrap();
    t.buddy.free(p, 0).unwrap();
    assert_eq!(hot_pages(&t), 2);
    t.buddy.drain_hot();
    assert_eq!((hot_pages(&t), t.buddy.free_blocks().count()), (0, 1));
}

/// What an out-of-memory error guarantees: every allocation and the free
/// page count unchanged. It may merge parked blocks first (pages parked
/// next to parked buddies), so the per-order split of free memory is the
/// one thing that changes.
#[test]
fn out_of_memory_keeps_every_allocation_and_the_free_page_count() {
    let mut t = Fixture::new(&[(GIB, 64)]);
    let pages: Vec<PhysAddr> = (0..64)
        .map(|_| t.buddy.alloc(0, Constraint::ANY).unwrap())
        .collect();
    // Free pages 4i and 4i + 1: each pair parked unmerged, its order-1
    // buddy (4i + 2, 4i + 3) in use.
    let mut sorted = pages.clone();
    sorted.sort();
    let (freed, kept): (Vec<_>, Vec<_>) = (0..64).partition(|i| i % 4 < 2);
    let (freed, kept): (Vec<PhysAddr>, Vec<PhysAddr>) = (
        freed.iter().map(|&i| sorted[i]).collect(),
        kept.iter().map(|&i| sorted[i]).collect(),
    );
    for &p in &freed {
        t.buddy.free(p, 0).unwrap();
    }
    let before = t.buddy.stats();
    assert_eq!((hot_pages(&t), before.free_blocks(0)), (32, 32));
    // No 4 free pages in a row: out of memory, after merging the pairs.
    assert_eq!(t.buddy.alloc(2, Constraint::ANY), Err(Error::OutOfMemory));
    let after = t.buddy.stats();
    assert_eq!(after.free_pages(), before.free_pages());
    for zone in Zone::ALL {
        assert_eq!(after.zone(zone).free_pages, before.zone(zone).free_pages);
    }
    for &p in &kept {
        assert_eq!(t.buddy.page_state(p), Ok(PageState::Allocated { pages: 1 }));
    }
    // The split is what changed: 16 merged pairs instead of 32 pages.
    assert_eq!((after.free_blocks(0), after.free_blocks(1)), (0, 16));
    assert_eq!(hot_pages(&t), 0);
    for &p in &kept {
        t.buddy.free(p, 0).unwrap();
    }
    t.buddy.drain_hot();
    assert_eq!(t.buddy.free_blocks().count(), 1);
}

#[test]
fn freeing_next_to_a_free_buddy_merges_instead_of_parking() {
    let mut t = Fixture::new(&[(GIB, 64)]);
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
    t.buddy.drain_hot(); // the refill's other pages
    t.buddy.free(p, 0).unwrap();
    // Merged all the way up: one block of the whole section (parked on
    // the order-6 hot list: merged blocks are parked like any other).
    let blocks: Vec<FreeBlock> = t.buddy.free_blocks().collect();
    assert_eq!(
        (blocks.len(), blocks[0].order, blocks[0].addr),
        (1, 6, PhysAddr(GIB))
    );
    assert_eq!(hot_pages(&t), 64);
}

#[test]
fn parked_blocks_above_order_0_merge_with_their_buddy() {
    let mut t = Fixture::new(&[(4 * GIB, 64)]);
    let x = PhysAddr(4 * GIB);
    let y = PhysAddr(4 * GIB + 4 * 4096);
    t.buddy.reserve_range(x, 4).unwrap();
    t.buddy.reserve_range(y, 4).unwrap();
    // x's buddy y is in use: x is parked, and taken back first.
    t.buddy.free(x, 2).unwrap();
    assert_eq!(hot_pages(&t), 4);
    assert_eq!(
        t.buddy.page_state(x),
        Ok(PageState::Free { block: x, order: 2 })
    );
    assert_eq!(t.buddy.alloc(2, Constraint::ANY), Ok(x));
    t.buddy.free(x, 2).unwrap();
    // Freeing y merges it with the parked x (and on up to the section).
    t.buddy.free(y, 2).unwrap();
    let blocks: Vec<FreeBlock> = t.buddy.free_blocks().collect();
    assert_eq!((blocks.len(), blocks[0].addr, blocks[0].order), (1, x, 6));
}

/// Taking a parked block out of its hot list moves another into its slot;
/// removing a section compacts the lists. Either way the slots in the
/// words must follow, or a later merge takes the wrong block off.
#[test]
fn parked_block_slots_follow_their_moves() {
    // A: 3 pages from an odd frame, so its order-1 piece has no buddy.
    let (a0, b0) = (4 * GIB + 4096, 8 * GIB);
    let mut t = Fixture::new(&[(a0, 3), (b0, 64)]);
    let page = |i: u64| PhysAddr(b0 + i * 4096);
    t.buddy.reserve_range(PhysAddr(a0 + 4096), 2).unwrap();
    t.buddy.free_pages(PhysAddr(a0 + 4096), 2).unwrap(); // parked: slot 0
    for i in [0, 2, 16, 18] {
        t.buddy.reserve_range(page(i), 2).unwrap();
    }
    t.buddy.free(page(0), 1).unwrap(); // slot 1 (buddy page(2) in use)
    t.buddy.free(page(16), 1).unwrap(); // slot 2 (buddy page(18) in use)
    assert_eq!(hot_pages(&t), 6);
    t.buddy.remove_section(PhysAddr(a0)).unwrap();
    assert_eq!(hot_pages(&t), 4);
    // Merges with page(0), which moved to slot 0 when A's block left.
    t.buddy.free(page(2), 1).unwrap();
    t.buddy.free(page(18), 1).unwrap();
    let blocks: Vec<FreeBlock> = t.buddy.free_blocks().collect();
    assert_eq!(
        (blocks.len(), blocks[0].addr, blocks[0].order),
        (1, page(0), 6)
    );
    assert_eq!(t.free(), 64);
}

#[test]
fn parked_pages_merge_before_an_allocation_fails() {
    let mut t = Fixture::new(&[(GIB, 16)]);
    park_all(&mut t, 16);
    assert_eq!(hot_pages(&t), 16);
    assert_eq!(t.buddy.stats().free_blocks(0), 16);
    let b = t.buddy.alloc(4, Constraint::ANY).unwrap();
    assert_eq!(b, PhysAddr(GIB));
    assert_eq!(hot_pages(&t), 0);
    t.buddy.free(b, 4).unwrap();
    // A hopeless request (more pages than the section has) changes nothing.
    park_all(&mut t, 16);
    let before: Vec<FreeBlock> = t.buddy.free_blocks().collect();
    assert_eq!(t.buddy.alloc(5, Constraint::ANY), Err(Error::OutOfMemory));
    assert_eq!((t.free(), hot_pages(&t)), (16, 16));
    assert_eq!(t.buddy.free_blocks().collect::<Vec<_>>(), before);
    // A genuine failure after draining still changes no free page count.
    let mut t = Fixture::new(&[(GIB, 32)]);
    let pages = park_all(&mut t, 32);
    let keep = [pages[0], pages[16]];
    for p in keep {
        t.buddy.reserve_range(p, 1).unwrap();
    }
    assert_eq!((t.free(), hot_pages(&t)), (30, 30));
    assert_eq!(t.buddy.alloc(4, Constraint::ANY), Err(Error::OutOfMemory));
    assert_eq!((t.free(), hot_pages(&t)), (30, 0));
    assert_eq!(t.buddy.free_blocks().count(), 8); // orders 0, 1, 2, 3 twice
}

#[test]
fn parked_pages_of_the_top_zone_merge_before_a_fallback() {
    let mut t = Fixture::new(&[(4 * GIB, 16), (GIB, 16)]);
    park_all(&mut t, 16);
    let st = t.buddy.stats();
    assert_eq!(st.zone(Zone::Normal).hot_pages, 16);
    let b = t.buddy.alloc(4, Constraint::ANY).unwrap();
    assert_eq!(b, PhysAddr(4 * GIB), "fell back to DMA32 with Normal whole");
    t.buddy.free(b, 4).unwrap();
    // A request confined to DMA32 does not use parked Normal pages.
    park_all(&mut t, 16);
    let dma = t.buddy.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap();
    assert!(dma.0 < 4 * GIB);
    assert_eq!(t.buddy.stats().zone(Zone::Normal).hot_pages, 16);
    // A limit inside the zone does not take parked pages above it.
    let lim = PhysAddr(4 * GIB + 4 * 4096);
    let l = t.buddy.alloc(0, Constraint::Below(lim)).unwrap();
    assert!(
        l.0 < 4 * GIB || l.0 + 4096 <= lim.0,
        "{l:?} above the limit"
    );
}

#[test]
fn reserve_range_and_removal_take_parked_pages() {
    let mut t = Fixture::new(&[(GIB, 16), (2 * GIB, 16)]);
    let pages = park_all(&mut t, 16);
    let first = pages.iter().copied().find(|p| p.0 < 2 * GIB).unwrap();
    assert_eq!(
        t.buddy.page_state(first),
        Ok(PageState::Free {
            block: first,
            order: 0
        })
    );
    t.buddy.reserve_range(first, 3).unwrap();
    assert_eq!(
        t.buddy.page_state(first),
        Ok(PageState::Allocated { pages: 3 })
    );
    assert_eq!(t.free(), 29);
    t.buddy.free_pages(first, 3).unwrap();
    assert_eq!(t.free(), 32);
    // Removing a section with parked pages: they are forgotten with it.
    let sec = pages[0];
    let r = t.buddy.remove_section(sec).unwrap();
    assert_eq!(r.pages, 16);
    assert!(t.buddy.free_blocks().all(|b| b.addr.0 >= 2 * GIB));
    assert_eq!(t.free(), 16);
    let mut n = 0;
    while let Ok(p) = t.buddy.alloc(0, Constraint::ANY) {
        assert!(p.0 >= 2 * GIB, "page {p:?} of the removed section");
        n += 1;
    }
    assert_eq!(n, 16);
}

#[test]
fn a_full_hot_list_takes_no_more() {
    let mut t = Fixture::new(&[(GIB, 256)]);
    let pages: Vec<PhysAddr> = (0..2 * HOT_CAP + 2)
        .map(|_| t.buddy.alloc(0, Constraint::ANY).unwrap())
        .collect();
    t.buddy.drain_hot(); // what is left of the last refill
    // Evens only: every buddy stays in use, so every free parks.
    let evens: Vec<PhysAddr> = pages.iter().copied().filter(|p| p.0 & 4096 == 0).collect();
    for &p in &evens[..HOT_CAP] {
        t.buddy.free(p, 0).unwrap();
    }
    assert_eq!(hot_pages(&t), HOT_CAP as u64);
    // The list is full: the next page goes to the buddy lists.
    let next = evens[HOT_CAP];
    t.buddy.free(next, 0).unwrap();
    assert_eq!(hot_pages(&t), HOT_CAP as u64);
    assert!(
        t.buddy
            .free_blocks()
            .any(|b| !b.hot && b.addr == next && b.order == 0)
    );
    assert!(t.buddy.free_blocks().any(|b| b.hot && b.addr == evens[0]));
    assert_eq!(t.free(), 256 - pages.len() as u64 + HOT_CAP as u64 + 1);
    // The newest parked page is handed out first.
    assert_eq!(t.buddy.alloc(0, Constraint::ANY), Ok(evens[HOT_CAP - 1]));
}

#[test]
fn a_full_hot_list_makes_room_for_an_aligned_page() {
    // No parked page below will be 2 MiB aligned.
    let mut t = Fixture::new(&[(8 * GIB + (1 << 20), 1024)]);
    let pages: Vec<PhysAddr> = (0..2 * HOT_CAP)
        .map(|_| t.buddy.alloc(0, Constraint::ANY).unwrap())
        .collect();
    t.buddy.drain_hot(); // what is left of the last refill
    for p in pages.iter().filter(|p| p.0 & 4096 == 0) {
        t.buddy.free(*p, 0).unwrap();
    }
    assert_eq!(hot_pages(&t), HOT_CAP as u64);
    // An aligned page is parked anyway: the older half goes to the buddy.
    let a = t.buddy.alloc_aligned(1, 2 << 20, Constraint::ANY).unwrap();
    assert_eq!(hot_pages(&t), HOT_CAP as u64);
    t.buddy.free_pages(a, 1).unwrap();
    assert_eq!(hot_pages(&t), (HOT_CAP / 2 + 1) as u64);
    assert!(t.buddy.free_blocks().any(|b| b.hot && b.addr == a));
    assert!(!t.buddy.free_blocks().any(|b| b.hot && b.addr == pages[0]));
}

#[test]
fn a_single_page_request_refills_the_hot_list() {
    // Normal zone, so the request takes the direct path (no fallback).
    let mut t = Fixture::new(&[(8 * GIB, 64)]);
    let r = (1u64 << REFILL_ORDER) - 1;
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(p, PhysAddr(8 * GIB));
    assert_eq!((hot_pages(&t), t.free()), (r, 63));
    // The parked pages are free, never allocated: bad frees change nothing.
    let n = PhysAddr(p.0 + 4096);
    assert_eq!(
        t.buddy.page_state(n),
        Ok(PageState::Free { block: n, order: 0 })
    );
    rejects(&mut t, Error::DoubleFree, |a| a.free(n, 0));
    // They come out in address order, without touching the buddy lists.
    // (Parked pages count as free blocks of order 0 in the statistics.)
    let lists = t.buddy.stats().zone(Zone::Normal).free_blocks;
    for i in 1..=r {
        assert_eq!(
            t.buddy.alloc(0, Constraint::ANY),
            Ok(PhysAddr(p.0 + i * 4096))
        );
    }
    let after = t.buddy.stats().zone(Zone::Normal).free_blocks;
    assert_eq!((after[0], &after[1..]), (lists[0] - r, &lists[1..]));
    assert_eq!(hot_pages(&t), 0);
    // A parked page can still be reserved.
    let q = t.buddy.alloc(0, Constraint::ANY).unwrap();
    let parked = PhysAddr(q.0 + 4096);
    t.buddy.reserve_range(parked, 1).unwrap();
    assert_eq!(hot_pages(&t), r - 1);
    assert_eq!(
        t.buddy.page_state(parked),
        Ok(PageState::Allocated { pages: 1 })
    );
}

#[test]
fn a_refill_takes_at_most_the_smallest_free_block() {
    // 4 free pages in one block: the refill parks the other 3.
    let mut t = Fixture::new(&[(8 * GIB, 4)]);
    t.buddy.alloc(0, Constraint::ANY).unwrap();
    assert_eq!((hot_pages(&t), t.free()), (3, 3));
    // No refill while a single page is free, nor below a limit.
    let mut t = Fixture::new(&[(GIB, 3)]); // blocks of order 1 and 0
    assert_eq!(
        t.buddy.alloc(0, Constraint::ANY),
        Ok(PhysAddr(GIB + 2 * 4096))
    );
    assert_eq!(hot_pages(&t), 0);
    let mut t = Fixture::new(&[(GIB, 64)]);
    let p = t
        .buddy
        .alloc(0, Constraint::Below(PhysAddr(GIB + (64 << 12))))
        .unwrap();
    assert_eq!(hot_pages(&t), 0, "a limited request parked pages");
    t.buddy.free(p, 0).unwrap();
    assert_eq!(t.buddy.free_blocks().count(), 1);
}

#[test]
fn a_freed_aligned_page_is_parked_for_the_next_aligned_request() {
    // 2 MiB but not 4 MiB aligned, so the first 2 MiB-aligned page is not
    // 4 MiB aligned.
    let mut t = Fixture::new(&[(8 * GIB + (2 << 20), 2048)]);
    let whole: Vec<FreeBlock> = t.buddy.free_blocks().collect();
    let p = t.buddy.alloc_aligned(1, 2 << 20, Constraint::ANY).unwrap();
    assert_eq!(p.0 % (2 << 20), 0);
    assert_eq!(t.buddy.page_state(p), Ok(PageState::Allocated { pages: 1 }));
    // Bad frees of the aligned page are rejected.
    rejects(&mut t, Error::WrongCount { allocated: 1 }, |a| {
        a.free_pages(p, 2)
    });
    rejects(&mut t, Error::WrongCount { allocated: 1 }, |a| a.free(p, 1));
    // Its buddy is free, yet the page is parked, not merged.
    t.buddy.free_pages(p, 1).unwrap();
    assert_eq!(hot_pages(&t), 1);
    assert_eq!(t.free(), 2048);
    rejects(&mut t, Error::DoubleFree, |a| a.free_pages(p, 1));
    // The next aligned request takes it back without splitting anything.
    let lists = t.buddy.stats().zone(Zone::Normal).free_blocks;
    assert_eq!(t.buddy.alloc_aligned(1, 2 << 20, Constraint::ANY), Ok(p));
    assert_eq!(hot_pages(&t), 0);
    let after = t.buddy.stats().zone(Zone::Normal).free_blocks;
    assert_eq!((after[0] + 1, &after[1..]), (lists[0], &lists[1..]));
    // `free(p, 0)` parks it too; a request for a coarser alignment than
    // the parked page has is served elsewhere.
    t.buddy.free(p, 0).unwrap();
    assert_eq!(hot_pages(&t), 1);
    let q = t.buddy.alloc_aligned(1, 4 << 20, Constraint::ANY).unwrap();
    assert_eq!(q.0 % (4 << 20), 0);
    assert_ne!(q, p);
    assert_eq!(hot_pages(&t), 1);
    t.buddy.free_pages(q, 1).unwrap();
    // Merged back like any parked page.
    t.buddy.drain_hot();
    assert_eq!(hot_pages(&t), 0);
    assert_eq!(t.buddy.free_blocks().collect::<Vec<_>>(), whole);
}

#[test]
fn an_aligned_page_freed_in_bulk_merges() {
    let mut t = Fixture::new(&[(8 * GIB, 1024)]);
    let p = t.buddy.alloc_aligned(1, 1 << 20, Constraint::ANY).unwrap();
    t.buddy.free_bulk(&[p]).unwrap();
    assert_eq!(hot_pages(&t), 0);
    assert_eq!(t.buddy.free_blocks().count(), 1);
}

#[test]
fn an_aligned_request_looks_past_a_newer_unaligned_parked_page() {
    let mut t = Fixture::new(&[(8 * GIB, 1024)]);
    let p = t
        .buddy
        .alloc_aligned(1, MIB as usize, Constraint::ANY)
        .unwrap();
    let q = t.buddy.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(q.0, p.0 + 4096);
    t.buddy.free_pages(p, 1).unwrap();
    t.buddy.free(q, 0).unwrap(); // its buddy is parked: parked too, newest
    assert_eq!(hot_pages(&t), 2);
    assert_eq!(
        t.buddy.alloc_aligned(1, MIB as usize, Constraint::ANY),
        Ok(p)
    );
    assert_eq!(hot_pages(&t), 1);
    assert_eq!(t.buddy.alloc(0, Constraint::ANY), Ok(q));
}
