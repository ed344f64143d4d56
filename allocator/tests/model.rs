//! Model-based property test: random sequences of every operation against
//! the reference model in `common/model.rs`, fully checked after each step.

mod common;

use common::model::{Con, Harness, Op};
use proptest::prelude::*;

const LIMITS: [u64; 8] = [
    16 << 20,
    (16 << 20) + 100 * 4096,
    (16 << 20) - 10 * 4096,
    1 << 32,
    (1 << 32) - 100 * 4096,
    (8 << 30) + 500 * 4096,
    0,
    4096,
];

fn con() -> impl Strategy<Value = Con> {
    prop_oneof![
        4 => (0u8..3).prop_map(Con::Zone),
        1 => (0usize..LIMITS.len()).prop_map(|i| Con::Below(LIMITS[i])),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop_oneof![9 => 0u32..8, 1 => 8u32..20], con()).prop_map(|(order, c)| Op::Alloc { order, c }),
        5 => (0usize..40, con()).prop_map(|(count, c)| Op::AllocPages { count, c }),
        2 => (0usize..6, 0u32..10, con()).prop_map(|(count, align_shift, c)| Op::AllocAligned { count, align_shift, c }),
        2 => (0usize..5, 0u64..1100, 0usize..40).prop_map(|(region, offset, count)| Op::Reserve { region, offset, count }),
        2 => (0usize..20, con()).prop_map(|(n, c)| Op::AllocBulk { n, c }),
        10 => any::<usize>().prop_map(|which| Op::Free { which }),
        3 => any::<usize>().prop_map(|which| Op::FreeAsOrder { which }),
        2 => (0usize..12, proptest::option::of((any::<usize>(), any::<u8>()))).prop_map(|(n, bad)| Op::FreeBulk { n, bad }),
        4 => (any::<usize>(), any::<u8>(), 0u32..20).prop_map(|(which, kind, order)| Op::BadFree { which, kind, order }),
        1 => (0usize..5).prop_map(|region| Op::Add { region }),
        1 => (0usize..5, any::<u8>()).prop_map(|(region, kind)| Op::BadAdd { region, kind }),
        1 => (0usize..5).prop_map(|region| Op::Remove { region }),
        1 => (0u8..3, prop_oneof![3 => Just(0u64), 1 => 0u64..600]).prop_map(|(zone, pages)| Op::SetReserve { zone, pages }),
        1 => Just(Op::DrainHot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every operation, with the metadata buffers pre-filled with garbage
    /// (lazy initialisation must never trust a word it did not write).
    #[test]
    fn model(garbage in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
             ops in proptest::collection::vec(op(), 1..120)) {
        let mut h = Harness::new(garbage);
        for op in &ops {
            h.apply(op);
        }
        // Free everything: all sections must be whole again.
        let live: Vec<(u64, u64)> = h.live.iter().map(|(&a, &n)| (a, n)).collect();
        for (a, n) in live {
            h.a.free_pages(framekeep::PhysAddr(a), n as usize).unwrap();
            h.live.remove(&a);
        }
        h.check();
        let st = h.a.stats();
        prop_assert_eq!(st.free_pages(), st.managed_pages());
        // Merged, every section is whole again.
        h.apply(&Op::DrainHot);
        for sec in h.a.sections() {
            let blocks = h.a.free_blocks().filter(|b| b.addr.0 >= sec.start.0 && b.addr.0 < sec.start.0 + sec.pages * 4096);
            let mut p = sec.start.0 >> 12;
            let end = p + sec.pages;
            let mut expect = 0;
            while p < end {
                let o = p.trailing_zeros().min(63 - (end - p).leading_zeros()).min(framekeep::MAX_ORDER);
                expect += 1;
                p += 1 << o;
            }
            prop_assert_eq!(blocks.count(), expect, "section at {:#x} not whole", sec.start.0);
        }
    }
}
