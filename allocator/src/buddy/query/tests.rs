//! Tests of statistics and page states.

use crate::buddy::test_support::{Fixture, GIB, MIB};
use crate::{Constraint, Error, PageState, PhysAddr, REFILL_ORDER, Zone};

#[test]
fn stats_and_display() {
    let mut t = Fixture::new(&[(8 * MIB, 16), (GIB, 1024), (8 * GIB, 512)]);
    let p = t.buddy.alloc_pages(1, Constraint::ANY).unwrap();
    // The single page came with a hot-list refill: its 15 neighbours are
    // parked (free, but outside the buddy counts until merged).
    let refill = (1u64 << REFILL_ORDER) - 1;
    assert_eq!(t.buddy.stats().zone(Zone::Normal).hot_pages, refill);
    assert_eq!(t.buddy.stats().free_pages(), 16 + 1024 + 511);
    t.buddy.drain_hot();
    let st = t.buddy.stats();
    assert_eq!(st.zone(Zone::Normal).hot_pages, 0);
    assert_eq!(st.free_pages(), 16 + 1024 + 511);
    assert_eq!(st.used_pages(), 1);
    assert_eq!(st.managed_pages(), 1552);
    assert_eq!(st.zone(Zone::Normal).largest_free_order(), Some(8));
    assert_eq!(st.zone(Zone::Dma32).largest_free_order(), Some(10));
    assert_eq!(
        st.zone(Zone::Normal).free_blocks[..9],
        [1, 1, 1, 1, 1, 1, 1, 1, 1]
    );
    assert_eq!(st.largest_free_order(), Some(10));
    // 511 free in Normal, none in a block of order >= 9.
    assert_eq!(st.zone(Zone::Normal).fragmentation_permille(9), 1000);
    assert_eq!(st.zone(Zone::Dma32).fragmentation_permille(9), 0);
    let text = std::format!("{st}");
    assert!(text.contains("Normal"));
    assert!(text.contains(" 1 1 1 1 1 1 1 1 1 0"));
    std::println!("{text}");
    t.buddy.free_pages(p, 1).unwrap();
}

#[test]
fn page_state_queries() {
    let mut t = Fixture::new(&[(GIB, 8)]);
    assert_eq!(
        t.buddy.page_state(PhysAddr(GIB + 1)),
        Err(Error::Misaligned)
    );
    assert_eq!(
        t.buddy.page_state(PhysAddr(2 * GIB)),
        Err(Error::NotInSection)
    );
    assert_eq!(
        t.buddy.page_state(PhysAddr(GIB + 4096 * 5)),
        Ok(PageState::Free {
            block: PhysAddr(GIB),
            order: 3
        })
    );
    let p = t.buddy.alloc(1, Constraint::ANY).unwrap();
    assert_eq!(t.buddy.page_state(p), Ok(PageState::Allocated { pages: 2 }));
}
