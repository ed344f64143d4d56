//! Model-based property test of the per-CPU layers: random operations on
//! several CPUs (run as each CPU through `run_on`) against a model of the
//! live blocks, for the page caches (`PageCaches`) and the heap (`Heap`).
//! Reuses the regions and constraints of `common/model.rs`.

#[path = "common/host.rs"]
mod host;
#[path = "common/model.rs"]
mod model;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use framekeep::*;
use host::{TestCaches, TestHeap, as_cpu};
use model::REGIONS;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum POp {
    Alloc { order: u32, cpu: usize },
    Free { which: usize, cpu: usize },
    WrongOrder { which: usize, order: u32 },
    DoubleFree { which: usize, cpu: usize },
    Foreign { cpu: usize },
    Drain { cpu: usize },
    DrainAll,
    Remove { region: usize },
    Add { region: usize },
}

fn pop() -> impl Strategy<Value = POp> {
    let cpu = 0usize..4;
    prop_oneof![
        8 => (prop_oneof![8 => 0u32..4, 1 => 4u32..7], cpu.clone()).prop_map(|(order, cpu)| POp::Alloc { order, cpu }),
        7 => (any::<usize>(), cpu.clone()).prop_map(|(which, cpu)| POp::Free { which, cpu }),
        1 => (any::<usize>(), 0u32..6).prop_map(|(which, order)| POp::WrongOrder { which, order }),
        1 => (any::<usize>(), cpu.clone()).prop_map(|(which, cpu)| POp::DoubleFree { which, cpu }),
        1 => cpu.clone().prop_map(|cpu| POp::Foreign { cpu }),
        1 => cpu.prop_map(|cpu| POp::Drain { cpu }),
        1 => Just(POp::DrainAll),
        1 => (0usize..3).prop_map(|region| POp::Remove { region }),
        1 => (0usize..3).prop_map(|region| POp::Add { region }),
    ]
}

struct PModel {
    c: Box<TestCaches>,
    metas: BTreeMap<usize, Vec<u64>>,
    live: BTreeMap<u64, u32>,
}

impl PModel {
    fn new(garbage: u64) -> Self {
        let cfg = PcpConfig {
            high: [4, 2, 2, 2],
            batch: [2, 1, 1, 1],
        };
        let mut m = PModel {
            c: Box::new(TestCaches::with_config(BuddyAllocator::new(), cfg)),
            metas: BTreeMap::new(),
            live: BTreeMap::new(),
        };
        for r in 0..3 {
            m.add(r, garbage).unwrap();
        }
        m
    }

    fn add(&mut self, r: usize, garbage: u64) -> Result<(), Error> {
        let (s, p) = REGIONS[r];
        let mut meta = vec![garbage; 2 * p as usize];
        // SAFETY: the buffer is kept in `metas` until removed, used by nobody else.
        let res = unsafe {
            self.c.add_section(
                PhysAddr(s),
                p,
                std::ptr::NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
                cache_metadata_bytes(p),
            )
        };
        if res.is_ok() {
            self.metas.insert(r, meta);
        }
        res
    }

    fn nth(&self, which: usize) -> Option<(u64, u32)> {
        (!self.live.is_empty()).then(|| {
            self.live
                .iter()
                .nth(which % self.live.len())
                .map(|(&a, &o)| (a, o))
                .unwrap()
        })
    }

    fn snapshot(&self) -> (u64, u64, Vec<FreeBlock>) {
        let st = self.c.stats();
        (
            st.free_pages(),
            st.cached_pages(),
            self.c.with_buddy(|b| b.free_blocks().collect()),
        )
    }

    fn apply(&mut self, op: &POp) {
        match *op {
            POp::Alloc { order, cpu } => match as_cpu(cpu, || self.c.alloc(order)) {
                Ok(a) => {
                    assert_eq!(a.0 % (4096 << order), 0);
                    assert!(
                        self.live.insert(a.0, order).is_none(),
                        "block {a:?} handed out twice"
                    );
                }
                Err(Error::OutOfMemory) => {
                    // `as_cpu` runs the request with "interrupts masked",
                    // where only this CPU's own cache can be drained: it is
                    // empty, and the buddy has no such block.
                    let before = self.snapshot();
                    assert!(self.c.drain_cpu(cpu));
                    assert_eq!(self.snapshot(), before, "OOM with pages cached on {cpu}");
                    self.assert_no_block(order);
                    // Unmasked, every CPU's cache is drained before OOM.
                    match self.c.alloc(order) {
                        Ok(a) => {
                            assert!(before.1 > 0, "OOM masked, but a block was free");
                            self.live.insert(a.0, order);
                        }
                        Err(Error::OutOfMemory) => {
                            assert_eq!(self.c.stats().cached_pages(), 0, "OOM with pages cached");
                            self.assert_no_block(order);
                        }
                        Err(e) => panic!("alloc: {e:?}"),
                    }
                }
                Err(e) => panic!("alloc: {e:?}"),
            },
            POp::Free { which, cpu } => {
                if let Some((a, o)) = self.nth(which) {
                    assert_eq!(as_cpu(cpu, || self.c.free(PhysAddr(a), o)), Ok(()));
                    self.live.remove(&a);
                }
            }
            POp::WrongOrder { which, order } => {
                if let Some((a, o)) = self.nth(which)
                    && o != order
                {
                    let before = self.snapshot();
                    let exp = if a % (4096 << order) != 0 {
                        Error::Misaligned
                    } else {
                        Error::WrongCount { allocated: 1 << o }
                    };
                    assert_eq!(self.c.free(PhysAddr(a), order), Err(exp));
                    assert_eq!(self.snapshot(), before);
                }
            }
            POp::DoubleFree { which, cpu } => {
                if let Some((a, o)) = self.nth(which) {
                    as_cpu(cpu, || self.c.free(PhysAddr(a), o)).unwrap();
                    self.live.remove(&a);
                    let before = self.snapshot();
                    let other = (cpu + 1) % 4;
                    assert_eq!(
                        as_cpu(other, || self.c.free(PhysAddr(a), o)),
                        Err(Error::DoubleFree)
                    );
                    assert_eq!(self.snapshot(), before);
                }
            }
            POp::Foreign { cpu } => {
                assert_eq!(
                    as_cpu(cpu, || self.c.free(PhysAddr(0x7000_0000_0000), 0)),
                    Err(Error::NotInSection)
                );
            }
            POp::Drain { cpu } => assert!(self.c.drain_cpu(cpu)),
            POp::DrainAll => {
                assert!(self.c.drain_all());
                assert_eq!(self.c.stats().cached_pages(), 0);
            }
            POp::Remove { region } => {
                let (s, p) = REGIONS[region];
                let res = self.c.remove_section(PhysAddr(s));
                if !self.metas.contains_key(&region) {
                    assert_eq!(res.unwrap_err(), Error::NoSuchSection);
                } else if self.live.range(s..s + p * 4096).next().is_some() {
                    assert_eq!(res.unwrap_err(), Error::SectionInUse);
                } else {
                    // Cached pages of the region were drained first.
                    assert_eq!(res.unwrap().pages, p);
                    self.metas.remove(&region);
                }
            }
            POp::Add { region } => {
                let had = self.metas.contains_key(&region);
                let r = self.add(region, 0x5a5a);
                assert_eq!(r.is_ok(), !had);
            }
        }
        self.check();
    }

    /// The buddy has no free block of `order` or more.
    fn assert_no_block(&self, order: u32) {
        let st = self.c.stats().buddy;
        let n: u64 = st.zones.iter().map(|z| z.free_pages_at_least(order)).sum();
        assert_eq!(n, 0, "OOM with a free block of order {order} or more");
    }

    fn check(&self) {
        let st = self.c.stats();
        let managed: u64 = self.metas.keys().map(|&r| REGIONS[r].1).sum();
        let live: u64 = self.live.values().map(|&o| 1u64 << o).sum();
        assert_eq!(st.buddy.managed_pages(), managed);
        assert_eq!(
            st.free_pages() + live,
            managed,
            "pages do not add up: {st:?}"
        );
        self.c.with_buddy(|g| {
            for (&a, &o) in &self.live {
                assert_eq!(
                    g.page_state(PhysAddr(a)),
                    Ok(PageState::Allocated { pages: 1 << o })
                );
            }
        });
        let mut prev_end = 0;
        for (&a, &o) in &self.live {
            assert!(a >= prev_end, "live blocks overlap at {a:#x}");
            prev_end = a + (4096 << o);
        }
    }
}

#[derive(Clone, Debug)]
enum HOp {
    Alloc {
        size: usize,
        align_shift: u32,
        cpu: usize,
    },
    Free {
        which: usize,
        cpu: usize,
    },
    Realloc {
        which: usize,
        size: usize,
        cpu: usize,
    },
    DoubleFree {
        which: usize,
        cpu: usize,
        cpu2: usize,
    },
    Drain,
}

fn hop() -> impl Strategy<Value = HOp> {
    let cpu = 0usize..4;
    let size = prop_oneof![8 => 1usize..300, 3 => 300usize..2100, 1 => 2100usize..40000];
    prop_oneof![
        10 => (size.clone(), 0u32..8, cpu.clone()).prop_map(|(size, align_shift, cpu)| HOp::Alloc { size, align_shift, cpu }),
        8 => (any::<usize>(), cpu.clone()).prop_map(|(which, cpu)| HOp::Free { which, cpu }),
        2 => (any::<usize>(), size, cpu.clone()).prop_map(|(which, size, cpu)| HOp::Realloc { which, size, cpu }),
        1 => (any::<usize>(), cpu.clone(), cpu).prop_map(|(which, cpu, cpu2)| HOp::DoubleFree { which, cpu, cpu2 }),
        1 => Just(HOp::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Page caches on 4 CPUs, small high/batch so that refills and drains
    /// happen all the time, garbage-filled metadata.
    #[test]
    fn page_caches(garbage in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
                   ops in proptest::collection::vec(pop(), 1..150)) {
        let mut m = PModel::new(garbage);
        for op in &ops {
            m.apply(op);
        }
        let live: Vec<_> = m.live.iter().map(|(&a, &o)| (a, o)).collect();
        for (a, o) in live {
            m.c.free(PhysAddr(a), o).unwrap();
            m.live.remove(&a);
        }
        prop_assert!(m.c.drain_all());
        let st = m.c.stats();
        prop_assert_eq!(st.buddy.free_pages(), st.buddy.managed_pages());
    }

    /// The heap on 4 CPUs: objects never overlap and keep their contents,
    /// double frees (local and remote) are reported, and after freeing
    /// everything and draining, every page is back in the buddy.
    #[test]
    fn heap(ops in proptest::collection::vec(hop(), 1..200)) {
        let (h, _ram) = host::heap(4096);
        let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
        let mut stamp = 0u8;
        let nth = |live: &BTreeMap<usize, (Layout, u8)>, w: usize| {
            (!live.is_empty()).then(|| live.iter().nth(w % live.len()).map(|(&p, &v)| (p, v)).unwrap())
        };
        let check = |p: usize, l: Layout, s: u8| {
            // SAFETY: a live block of l.size() bytes.
            let b = unsafe { std::slice::from_raw_parts(p as *const u8, l.size()) };
            assert!(b.iter().all(|&x| x == s), "block {p:#x} {l:?} overwritten");
        };
        for op in &ops {
            match *op {
                HOp::Alloc { size, align_shift, cpu } => {
                    let l = Layout::from_size_align(size, 1 << align_shift).unwrap();
                    let p = as_cpu(cpu, || h.allocate(l)) as usize;
                    prop_assert!(p != 0 && p.is_multiple_of(l.align()));
                    if let Some((&q, &(ql, _))) = live.range(..=p).next_back() { prop_assert!(q + ql.size() <= p, "overlap"); }
                    if let Some((&q, _)) = live.range(p..).next() { prop_assert!(p + size <= q, "overlap"); }
                    stamp = stamp.wrapping_add(1);
                    // SAFETY: fresh block.
                    unsafe { (p as *mut u8).write_bytes(stamp, size) };
                    live.insert(p, (l, stamp));
                }
                HOp::Free { which, cpu } => {
                    if let Some((p, (l, s))) = nth(&live, which) {
                        check(p, l, s);
                        // SAFETY: live, freed once.
                        as_cpu(cpu, || unsafe { h.try_dealloc(p as *mut u8, l) }).unwrap();
                        live.remove(&p);
                    }
                }
                HOp::Realloc { which, size, cpu } => {
                    if let Some((p, (l, s))) = nth(&live, which) {
                        check(p, l, s);
                        // SAFETY: live block with layout l.
                        let q = as_cpu(cpu, || unsafe { h.realloc(p as *mut u8, l, size) }) as usize;
                        prop_assert!(q != 0 && q.is_multiple_of(l.align()));
                        live.remove(&p);
                        let nl = Layout::from_size_align(size, l.align()).unwrap();
                        check(q, Layout::from_size_align(size.min(l.size()), 1).unwrap(), s);
                        // SAFETY: the new block.
                        unsafe { (q as *mut u8).write_bytes(s, size) };
                        live.insert(q, (nl, s));
                    }
                }
                HOp::DoubleFree { which, cpu, cpu2 } => {
                    if let Some((p, (l, _))) = nth(&live, which) {
                        // SAFETY: live, freed once; the second free is rejected.
                        as_cpu(cpu, || unsafe { h.try_dealloc(p as *mut u8, l) }).unwrap();
                        live.remove(&p);
                        // SAFETY: rejected before anything is touched.
                        let e = as_cpu(cpu2, || unsafe { h.try_dealloc(p as *mut u8, l) }).unwrap_err();
                        if size_class(l.size(), l.align()).is_some() {
                            prop_assert_eq!(e.kind, FaultKind::DoubleFree);
                        }
                    }
                }
                HOp::Drain => prop_assert!(h.drain()),
            }
        }
        for (p, (l, s)) in std::mem::take(&mut live) {
            check(p, l, s);
            // SAFETY: live, freed once.
            let r = unsafe { h.try_dealloc(p as *mut u8, l) };
            prop_assert!(r.is_ok(), "final free of {:#x} {:?}: {:?}", p, l, r);
        }
        prop_assert_eq!(h.stats().faults, 0);
        prop_assert!(h.drain());
        let st = h.stats();
        prop_assert_eq!(st.slab_pages, 0);
        prop_assert_eq!(st.frames.buddy.free_pages(), st.frames.buddy.managed_pages());
        let _: &TestHeap = &h;
    }
}
