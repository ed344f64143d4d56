//! Tests of the free lists: maximal aligned blocks, splitting and merging
//! back.

use crate::buddy::test_support::{Fixture, GIB};
use crate::{Constraint, Zone};

#[test]
fn register_and_merge_to_maximal_blocks() {
    let t = Fixture::new(&[(GIB, 1000)]);
    let st = t.buddy.stats();
    assert_eq!(st.zone(Zone::Dma32).managed_pages, 1000);
    assert_eq!(st.free_pages(), 1000);
    // 1000 = 512 + 256 + 128 + 64 + 32 + 8
    let mut orders: Vec<u32> = t.buddy.free_blocks().map(|b| b.order).collect();
    orders.sort();
    assert_eq!(orders, vec![3, 5, 6, 7, 8, 9]);
}

#[test]
fn unaligned_section_blocks_are_physically_aligned() {
    let t = Fixture::new(&[(GIB + 3 * 4096, 100)]);
    for b in t.buddy.free_blocks() {
        assert_eq!(b.addr.0 % (4096 << b.order), 0);
    }
    assert_eq!(t.free(), 100);
}

#[test]
fn alloc_every_order_aligned_and_free() {
    let mut t = Fixture::new(&[(GIB + 4096, 3000)]);
    let mut got = Vec::new();
    for o in 0..=10 {
        let p = t.buddy.alloc(o, Constraint::ANY).unwrap();
        assert_eq!(p.0 % (4096 << o), 0);
        got.push((p, o));
    }
    for (p, o) in got {
        t.buddy.free(p, o).unwrap();
    }
    assert_eq!(t.free(), 3000);
    assert_eq!(
        t.buddy.free_blocks().count(),
        Fixture::new(&[(GIB + 4096, 3000)])
            .buddy
            .free_blocks()
            .count()
    );
}
