//! Tests of zones: how a range is cut into zones, the zone a request
//! starts in, reserves.

use crate::buddy::test_support::{Fixture, GIB, MIB, rejects};
use crate::{Constraint, Error, PhysAddr, Zone};

#[test]
fn zones_split_at_16mib_and_4gib() {
    let t = Fixture::new(&[(16 * MIB - 8 * 4096, 16), ((4 * GIB) - 4 * 4096, 12)]);
    let st = t.buddy.stats();
    assert_eq!(st.zone(Zone::Dma).managed_pages, 8);
    assert_eq!(st.zone(Zone::Dma32).managed_pages, 8 + 4);
    assert_eq!(st.zone(Zone::Normal).managed_pages, 8);
    assert_eq!(t.buddy.sections().count(), 4);
    for section in t.buddy.sections() {
        assert_eq!(Zone::of(section.start), section.zone);
        let last = PhysAddr(section.start.0 + (section.pages - 1) * 4096);
        assert_eq!(Zone::of(last), section.zone);
    }
}

/// Without Normal memory, unconstrained requests start in DMA32 (its hot
/// list, not the fallback); once a Normal section is added they start in
/// Normal again, and after it is removed in DMA32; a DMA32 reserve still
/// holds for them; with neither Normal nor DMA32 memory they go to DMA.
#[test]
fn requests_start_in_the_highest_zone_with_memory() {
    let mut t = Fixture::new(&[(GIB, 64)]);
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
    let q = t.buddy.alloc(0, Constraint::ANY).unwrap();
    t.buddy.free(p, 0).unwrap();
    assert_eq!(
        t.buddy.alloc(0, Constraint::ANY),
        Ok(p),
        "not the parked page"
    );
    assert_eq!(
        t.buddy.alloc(2, Constraint::ANY).map(Zone::of),
        Ok(Zone::Dma32)
    );
    t.add(8 * GIB, 16).unwrap();
    t.buddy.free(p, 0).unwrap();
    for _ in 0..16 {
        assert!(t.buddy.alloc(0, Constraint::ANY).unwrap().0 >= 8 * GIB);
    }
    assert_eq!(t.buddy.alloc(0, Constraint::ANY), Ok(p));
    for i in 0..16 {
        t.buddy.free(PhysAddr(8 * GIB + i * 4096), 0).unwrap();
    }
    assert_eq!(t.buddy.remove_section(PhysAddr(8 * GIB)).unwrap().pages, 16);
    t.buddy.free(p, 0).unwrap();
    assert_eq!(t.buddy.alloc(0, Constraint::ANY), Ok(p));
    // The reserve is the fallback's to check: 64 - 2 - 4 pages are in use.
    t.buddy.set_reserve(Zone::Dma32, 58);
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, Constraint::ANY));
    t.buddy.set_reserve(Zone::Dma32, 0);
    assert_eq!(
        t.buddy.alloc(0, Constraint::ANY).map(Zone::of),
        Ok(Zone::Dma32)
    );
    let mut dma_only = Fixture::new(&[(8 * MIB, 16)]);
    assert_eq!(
        dma_only.buddy.alloc(0, Constraint::ANY).map(Zone::of),
        Ok(Zone::Dma)
    );
    let _ = q;
}

#[test]
fn dma32_reserve_is_kept_from_normal_requests() {
    let mut t = Fixture::new(&[(GIB, 16), (8 * GIB, 4)]);
    t.buddy.set_reserve(Zone::Dma32, 10);
    assert_eq!(t.buddy.reserve(Zone::Dma32), 10);
    for _ in 0..4 {
        t.buddy.alloc(0, Constraint::ANY).unwrap();
    }
    for _ in 0..6 {
        assert_eq!(
            Zone::of(t.buddy.alloc(0, Constraint::ANY).unwrap()),
            Zone::Dma32
        );
    }
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, Constraint::ANY));
    for _ in 0..10 {
        t.buddy.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap();
    }
    assert_eq!(t.buddy.stats().zone(Zone::Dma32).reserve, 10);
}
