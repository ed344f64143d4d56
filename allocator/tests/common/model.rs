//! A reference model of the allocator, shared by the property test
//! (`tests/model.rs`) and the fuzz target (`fuzz/fuzz_targets/model.rs`).
//!
//! The model knows the registered sections and the live allocations; after
//! every operation [`Harness::check`] compares the real allocator with it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::ptr::NonNull;

use framekeep::*;

/// Candidate registrations: (start, pages). Chosen to straddle the 16 MiB
/// and 4 GiB zone boundaries and to start/end unaligned.
pub const REGIONS: [(u64, u64); 5] = [
    ((16 << 20) - 37 * 4096, 237),
    ((1 << 32) - 300 * 4096, 823),
    ((8 << 30) + 3 * 4096, 1000),
    (64 << 20, 1024),
    ((1 << 20) + 5 * 4096, 90),
];

#[derive(Clone, Copy, Debug)]
pub enum Con {
    Zone(u8),
    Below(u64),
}

impl Con {
    fn get(self) -> Constraint {
        match self {
            Con::Zone(z) => Constraint::Zone(Zone::ALL[z as usize % 3]),
            Con::Below(a) => Constraint::Below(PhysAddr(a)),
        }
    }
}

/// One operation; indexes are reduced modulo whatever they select from.
#[derive(Clone, Debug)]
pub enum Op {
    Alloc {
        order: u32,
        c: Con,
    },
    AllocPages {
        count: usize,
        c: Con,
    },
    AllocAligned {
        count: usize,
        align_shift: u32,
        c: Con,
    },
    Reserve {
        region: usize,
        offset: u64,
        count: usize,
    },
    AllocBulk {
        n: usize,
        c: Con,
    },
    Free {
        which: usize,
    },
    FreeAsOrder {
        which: usize,
    },
    FreeBulk {
        n: usize,
        bad: Option<(usize, u8)>,
    },
    BadFree {
        which: usize,
        kind: u8,
        order: u32,
    },
    Add {
        region: usize,
    },
    BadAdd {
        region: usize,
        kind: u8,
    },
    Remove {
        region: usize,
    },
    SetReserve {
        zone: u8,
        pages: u64,
    },
    DrainHot,
}

pub struct Harness {
    pub a: Box<BuddyAllocator>,
    /// Registered regions: index into REGIONS -> metadata buffer.
    metas: BTreeMap<usize, Vec<u64>>,
    /// Live allocations: start address -> pages.
    pub live: BTreeMap<u64, u64>,
    reserves: [u64; 3],
    garbage: u64,
    pub steps: u64,
}

fn zone_of(addr: u64) -> usize {
    Zone::of(PhysAddr(addr)) as usize
}

fn ceil_log2(x: u64) -> u32 {
    if x <= 1 {
        0
    } else {
        64 - (x - 1).leading_zeros()
    }
}

type Snapshot = (Stats, Vec<FreeBlock>);

impl Harness {
    pub fn new(garbage: u64) -> Self {
        let mut h = Harness {
            a: Box::new(BuddyAllocator::new()),
            metas: BTreeMap::new(),
            live: BTreeMap::new(),
            reserves: [0; 3],
            garbage,
            steps: 0,
        };
        for r in 0..3 {
            h.apply(&Op::Add { region: r });
        }
        h
    }

    fn snapshot(&self) -> Snapshot {
        (self.a.stats(), self.a.free_blocks().collect())
    }

    /// The internal (zone-split) piece containing `addr`: (start, end).
    fn piece_of(&self, addr: u64) -> Option<(u64, u64)> {
        for &r in self.metas.keys() {
            let (s, p) = REGIONS[r];
            let e = s + p * 4096;
            if addr >= s && addr < e {
                let z = Zone::of(PhysAddr(addr));
                return Some((s.max(z.start().0), e.min(z.end().0)));
            }
        }
        None
    }

    fn live_containing(&self, addr: u64) -> Option<(u64, u64)> {
        self.live
            .range(..=addr)
            .next_back()
            .filter(|&(&s, &n)| addr < s + n * 4096)
            .map(|(&s, &n)| (s, n))
    }

    /// What freeing `count` pages at `addr` must return.
    fn expect_free(&self, addr: u64, count: u64) -> Result<(), Error> {
        if addr % 4096 != 0 {
            return Err(Error::Misaligned);
        }
        if self.piece_of(addr).is_none() {
            return Err(Error::NotInSection);
        }
        match self.live_containing(addr) {
            Some((s, n)) if s == addr => {
                if n == count {
                    Ok(())
                } else {
                    Err(Error::WrongCount { allocated: n })
                }
            }
            Some(_) => Err(Error::InteriorPage),
            None => Err(Error::DoubleFree),
        }
    }

    fn nth_live(&self, which: usize) -> Option<(u64, u64)> {
        if self.live.is_empty() {
            return None;
        }
        self.live
            .iter()
            .nth(which % self.live.len())
            .map(|(&a, &n)| (a, n))
    }

    /// Checks an allocation result: placement, then records it.
    fn took(
        &mut self,
        r: Result<PhysAddr, Error>,
        pages: u64,
        align_pages: u64,
        c: Con,
        before: &Snapshot,
    ) {
        match r {
            Ok(a) => {
                let a = a.0;
                assert_eq!(a % (align_pages * 4096), 0, "misaligned allocation {a:#x}");
                let end = a + pages * 4096;
                match c {
                    Con::Zone(z) => assert!(zone_of(a) <= z as usize % 3, "zone violated"),
                    Con::Below(l) => assert!(end <= l, "limit violated: {a:#x}+{pages} > {l:#x}"),
                }
                assert_eq!(zone_of(a), zone_of(end - 4096), "allocation crosses a zone");
                assert!(self.live.insert(a, pages).is_none());
            }
            Err(Error::OutOfMemory) => {
                // Genuine? For zone constraints, no allowed zone may have had a
                // big enough block (honouring reserves).
                if let Con::Zone(z) = c {
                    let top = z as usize % 3;
                    let k = ceil_log2(pages).max(align_pages.trailing_zeros());
                    for (y, zs) in before.0.zones.iter().enumerate().take(top + 1) {
                        if y < top && zs.free_pages < zs.reserve + (1 << k) {
                            continue;
                        }
                        assert!(
                            zs.free_pages_at_least(k) == 0,
                            "false OOM: zone {y} has a block of order >= {k}"
                        );
                    }
                }
                self.unchanged_but_merged(before, "failed allocation");
            }
            Err(e) => panic!("unexpected allocation error {e:?}"),
        }
    }

    pub fn apply(&mut self, op: &Op) {
        self.steps += 1;
        let before = self.snapshot();
        match *op {
            Op::Alloc { order, c } => {
                let r = self.a.alloc(order, c.get());
                if order > MAX_ORDER {
                    assert_eq!(r, Err(Error::TooLarge));
                    assert_eq!(self.snapshot(), before);
                } else {
                    self.took(r, 1 << order, 1 << order, c, &before);
                }
            }
            Op::AllocPages { count, c } => {
                let r = self.a.alloc_pages(count, c.get());
                if count == 0 {
                    assert_eq!(r, Err(Error::ZeroCount));
                    assert_eq!(self.snapshot(), before);
                } else {
                    self.took(r, count as u64, 1, c, &before);
                }
            }
            Op::AllocAligned {
                count,
                align_shift,
                c,
            } => {
                let align = 1usize << (align_shift + 12);
                let r = self.a.alloc_aligned(count, align, c.get());
                if count == 0 {
                    assert_eq!(r, Err(Error::ZeroCount));
                    assert_eq!(self.snapshot(), before);
                } else {
                    self.took(r, count as u64, 1 << align_shift, c, &before);
                }
            }
            Op::Reserve {
                region,
                offset,
                count,
            } => {
                let (s, p) = REGIONS[region % REGIONS.len()];
                let start = s + (offset % (p + 8)) * 4096;
                let exp = if count == 0 {
                    Err(Error::ZeroCount)
                } else {
                    match self.piece_of(start) {
                        None => Err(Error::NotInSection),
                        Some((_, pe)) if start + count as u64 * 4096 > pe => {
                            Err(Error::RangeCrossesSection)
                        }
                        Some(_) => {
                            let end = start + count as u64 * 4096;
                            let busy = self.live.range(..end).any(|(&a, &n)| a + n * 4096 > start);
                            if busy { Err(Error::RangeInUse) } else { Ok(()) }
                        }
                    }
                };
                let r = self.a.reserve_range(PhysAddr(start), count);
                assert_eq!(r, exp, "reserve_range({start:#x}, {count})");
                if r.is_ok() {
                    self.live.insert(start, count as u64);
                } else {
                    assert_eq!(self.snapshot(), before);
                }
            }
            Op::AllocBulk { n, c } => {
                let mut out = vec![PhysAddr(0); n];
                match self.a.alloc_bulk(c.get(), &mut out) {
                    Ok(m) => {
                        assert!(m >= 1 && m <= n);
                        for &f in &out[..m] {
                            self.took(Ok(f), 1, 1, c, &before);
                        }
                    }
                    Err(Error::ZeroCount) => assert_eq!(n, 0),
                    Err(Error::OutOfMemory) => {
                        assert!(n > 0);
                        self.unchanged_but_merged(&before, "failed alloc_bulk");
                    }
                    Err(e) => panic!("alloc_bulk: {e:?}"),
                }
            }
            Op::Free { which } => {
                if let Some((a, n)) = self.nth_live(which) {
                    assert_eq!(self.a.free_pages(PhysAddr(a), n as usize), Ok(()));
                    self.live.remove(&a);
                }
            }
            Op::FreeAsOrder { which } => {
                if let Some((a, n)) = self.nth_live(which)
                    && n.is_power_of_two()
                    && a % (n * 4096) == 0
                {
                    assert_eq!(self.a.free(PhysAddr(a), n.trailing_zeros()), Ok(()));
                    self.live.remove(&a);
                }
            }
            Op::FreeBulk { n, bad } => {
                let mut frames: Vec<PhysAddr> = self
                    .live
                    .iter()
                    .filter(|&(_, &c)| c == 1)
                    .map(|(&a, _)| PhysAddr(a))
                    .take(n)
                    .collect();
                let mut exp_bad = None;
                if let Some((pos, kind)) = bad
                    && !frames.is_empty()
                {
                    let pos = pos % (frames.len() + 1);
                    let f = match kind % 3 {
                        0 => frames[0],                  // duplicate
                        1 => PhysAddr(frames[0].0 + 1),  // misaligned
                        _ => PhysAddr(0x7000_0000_0000), // outside
                    };
                    let err = match kind % 3 {
                        0 => Error::DoubleFree,
                        1 => Error::Misaligned,
                        _ => Error::NotInSection,
                    };
                    // A duplicate placed before the original shifts the report
                    // to the original's later position.
                    let idx = if kind % 3 == 0 && pos == 0 { 1 } else { pos };
                    frames.insert(pos, f);
                    exp_bad = Some(BulkError {
                        index: idx,
                        error: err,
                    });
                }
                let r = self.a.free_bulk(&frames);
                if frames.is_empty() {
                    assert_eq!(
                        r,
                        Err(BulkError {
                            index: 0,
                            error: Error::ZeroCount
                        })
                    );
                } else if let Some(e) = exp_bad {
                    assert_eq!(r, Err(e));
                    assert_eq!(self.snapshot(), before, "rejected free_bulk changed state");
                } else {
                    assert_eq!(r, Ok(()));
                    for f in frames {
                        self.live.remove(&f.0);
                    }
                }
            }
            Op::BadFree { which, kind, order } => {
                // Build a (probably) bad free and predict its result.
                let (addr, count, as_order) = match (kind % 6, self.nth_live(which)) {
                    (0, Some((a, n))) => (a, n + 1, None), // wrong count
                    (1, Some((a, n))) if n > 1 => (a + 4096, 1, None), // interior
                    (2, _) => {
                        // a page in a registered region, maybe free
                        let (s, p) = REGIONS[which % REGIONS.len()];
                        (s + (which as u64 % p) * 4096, 1, None)
                    }
                    (3, _) => (0x7000_0000_0000 + (which as u64 % 1000) * 4096, 1, None), // outside
                    (4, Some((a, _))) => (a + 8, 1, None), // misaligned
                    (5, Some((a, _))) => (a, 0, Some(order)), // as order
                    _ => return,
                };
                let before = self.snapshot();
                let (r, exp) = match as_order {
                    Some(o) => {
                        let exp = if o > MAX_ORDER {
                            Err(Error::TooLarge)
                        } else if addr % (4096 << o) != 0 {
                            Err(Error::Misaligned)
                        } else {
                            self.expect_free(addr, 1 << o)
                        };
                        (self.a.free(PhysAddr(addr), o), exp)
                    }
                    None => (
                        self.a.free_pages(PhysAddr(addr), count as usize),
                        self.expect_free(addr, count),
                    ),
                };
                assert_eq!(r, exp, "free of {addr:#x} x{count} / order {as_order:?}");
                if r.is_ok() {
                    self.live.remove(&addr);
                } else {
                    assert_eq!(self.snapshot(), before, "rejected free changed state");
                }
            }
            Op::Add { region } => {
                let r = region % REGIONS.len();
                let (s, p) = REGIONS[r];
                let mut meta = vec![self.garbage; p as usize];
                let ptr = NonNull::new(meta.as_mut_ptr().cast::<u8>()).unwrap();
                // SAFETY: the buffer is kept in `metas` until the region is
                // removed, and used by nothing else.
                let res = unsafe { self.a.add_section(PhysAddr(s), p, ptr, p as usize * 8) };
                if let std::collections::btree_map::Entry::Vacant(v) = self.metas.entry(r) {
                    assert_eq!(res, Ok(()));
                    v.insert(meta);
                } else {
                    assert_eq!(res, Err(Error::SectionOverlap));
                    assert_eq!(self.snapshot(), before);
                }
            }
            Op::BadAdd { region, kind } => {
                let (s, p) = REGIONS[region % REGIONS.len()];
                let mut meta = vec![0u64; p as usize + 1];
                let ptr = NonNull::new(meta.as_mut_ptr().cast::<u8>()).unwrap();
                let (start, pages, ptr, bytes, exp) = match kind % 6 {
                    0 => (s, 0, ptr, 8, Error::ZeroCount),
                    1 => (s + 100, p, ptr, p as usize * 8, Error::Misaligned),
                    2 => (!4095, p, ptr, p as usize * 8, Error::SectionWraps),
                    3 => (s, p, ptr, p as usize * 8 - 1, Error::MetadataTooSmall),
                    4 => (
                        s,
                        p,
                        NonNull::new(ptr.as_ptr().wrapping_add(4)).unwrap(),
                        p as usize * 8,
                        Error::MetadataMisaligned,
                    ),
                    _ => (
                        s + 4096 * (p / 2),
                        p,
                        ptr,
                        p as usize * 8,
                        Error::SectionOverlap,
                    ),
                };
                let exp = if kind % 6 == 5 && !self.metas.contains_key(&(region % REGIONS.len())) {
                    // Overlap only if this or a neighbouring region is registered.
                    let e = start + pages * 4096;
                    let overlaps = self.metas.keys().any(|&q| {
                        let (qs, qp) = REGIONS[q];
                        start < qs + qp * 4096 && qs < e
                    });
                    if overlaps { Err(exp) } else { return }
                } else {
                    Err(exp)
                };
                // SAFETY: every case is rejected before the buffer is
                // used (asserted below); `meta` outlives the call.
                let res = unsafe { self.a.add_section(PhysAddr(start), pages, ptr, bytes) };
                assert_eq!(res, exp);
                assert_eq!(self.snapshot(), before);
                drop(meta);
            }
            Op::Remove { region } => {
                let r = region % REGIONS.len();
                let (s, p) = REGIONS[r];
                let res = self.a.remove_section(PhysAddr(s));
                if !self.metas.contains_key(&r) {
                    assert_eq!(res, Err(Error::NoSuchSection));
                    assert_eq!(self.snapshot(), before);
                } else if self.live.range(s..s + p * 4096).next().is_some() {
                    assert_eq!(res, Err(Error::SectionInUse));
                    assert_eq!(self.snapshot(), before);
                } else {
                    let removed = res.expect("remove of a free section");
                    let mut meta = self.metas.remove(&r).unwrap();
                    assert_eq!(removed.meta.as_ptr(), meta.as_mut_ptr().cast::<u8>());
                    assert_eq!(removed.pages, p);
                }
            }
            Op::SetReserve { zone, pages } => {
                let z = zone as usize % 3;
                self.a.set_reserve(Zone::ALL[z], pages);
                self.reserves[z] = pages;
            }
            Op::DrainHot => {
                self.a.drain_hot();
                assert!(
                    self.a.free_blocks().all(|b| !b.hot),
                    "a block stayed hot after drain_hot"
                );
                self.unchanged_but_merged(&before, "drain_hot");
            }
        }
        self.check();
    }

    /// A failed allocation (or `drain_hot`) may merge parked blocks (it
    /// drains the hot lists before giving up) but must not change which
    /// pages are free. Without parked blocks before, nothing may change.
    fn unchanged_but_merged(&self, before: &Snapshot, what: &str) {
        let after = self.snapshot();
        if !before.1.iter().any(|b| b.hot) {
            assert_eq!(&after, before, "{what} changed state");
            return;
        }
        let pages = |s: &Snapshot| {
            let mut v: Vec<u64> =
                s.1.iter()
                    .flat_map(|b| (0..1u64 << b.order).map(move |i| b.addr.0 + i * 4096))
                    .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            pages(&after),
            pages(before),
            "{what} changed the free pages"
        );
        for (a, b) in after.0.zones.iter().zip(&before.0.zones) {
            assert_eq!(a.free_pages, b.free_pages, "{what} changed free pages");
            assert_eq!(a.managed_pages, b.managed_pages);
        }
    }

    /// Full consistency check of the allocator against the model.
    pub fn check(&self) {
        // Page maps per registered region.
        let mut maps: BTreeMap<usize, Vec<u8>> = self
            .metas
            .keys()
            .map(|&r| (r, vec![0u8; REGIONS[r].1 as usize]))
            .collect();
        let mut mark = |addr: u64, pages: u64, what: &str| {
            for i in 0..pages {
                let a = addr + i * 4096;
                let (r, m) = maps
                    .iter_mut()
                    .find(|(r, _)| {
                        a >= REGIONS[**r].0 && a < REGIONS[**r].0 + REGIONS[**r].1 * 4096
                    })
                    .unwrap_or_else(|| panic!("{what} page {a:#x} outside every section"));
                let idx = ((a - REGIONS[*r].0) / 4096) as usize;
                assert_eq!(m[idx], 0, "{what} page {a:#x} accounted twice");
                m[idx] = 1;
            }
        };
        let mut per_zone = [0u64; 3];
        let mut per_zone_order = [[0u64; NR_ORDERS]; 3];
        let mut free_set = HashSet::new();
        let mut hot = HashSet::new();
        let mut hot_pages = [0u64; 3];
        for b in self.a.free_blocks() {
            if b.hot {
                assert!(
                    (b.order as usize) < HOT_ORDERS,
                    "hot block of order {}",
                    b.order
                );
                hot.insert((b.addr.0, b.order));
                hot_pages[b.zone as usize] += 1 << b.order;
            }
            assert_eq!(b.addr.0 % (4096 << b.order), 0, "free block misaligned");
            assert_eq!(b.zone, Zone::of(b.addr));
            assert_eq!(
                Zone::of(b.addr),
                Zone::of(PhysAddr(b.addr.0 + (4096 << b.order) - 4096))
            );
            mark(b.addr.0, 1 << b.order, "free");
            per_zone[b.zone as usize] += 1 << b.order;
            per_zone_order[b.zone as usize][b.order as usize] += 1;
            free_set.insert((b.addr.0, b.order));
        }
        for (&a, &n) in &self.live {
            mark(a, n, "live");
            assert_eq!(
                self.a.page_state(PhysAddr(a)),
                Ok(PageState::Allocated { pages: n })
            );
            if n > 1 {
                assert_eq!(
                    self.a.page_state(PhysAddr(a + 4096)),
                    Ok(PageState::Interior)
                );
            }
        }
        for (r, m) in &maps {
            if let Some(i) = m.iter().position(|&x| x == 0) {
                panic!(
                    "page {:#x} neither free nor live",
                    REGIONS[*r].0 + i as u64 * 4096
                );
            }
        }
        // No two free buddies of the same order in the same piece, unless
        // one of them is a single page parked on a hot list (merged when it
        // leaves it): parked blocks of higher orders merge like listed ones.
        let parked_page = |a: u64, o: u32| o == 0 && hot.contains(&(a, o));
        for &(a, o) in &free_set {
            if o >= MAX_ORDER || parked_page(a, o) {
                continue;
            }
            let b = a ^ (4096 << o);
            if free_set.contains(&(b, o))
                && !parked_page(b, o)
                && self.piece_of(a) == self.piece_of(b)
            {
                panic!("free buddies {a:#x} and {b:#x} of order {o} not merged");
            }
        }
        // Statistics against the model.
        let st = self.a.stats();
        let mut managed = [0u64; 3];
        for &r in self.metas.keys() {
            let (s, p) = REGIONS[r];
            for z in Zone::ALL {
                let lo = s.max(z.start().0);
                let hi = (s + p * 4096).min(z.end().0);
                if lo < hi {
                    managed[z as usize] += (hi - lo) / 4096;
                }
            }
        }
        let mut live = [0u64; 3];
        for (&a, &n) in &self.live {
            live[zone_of(a)] += n;
        }
        for z in 0..3 {
            let zs = &st.zones[z];
            assert_eq!(zs.managed_pages, managed[z], "managed pages of zone {z}");
            assert_eq!(
                zs.free_pages,
                managed[z] - live[z],
                "free pages of zone {z}"
            );
            assert_eq!(zs.free_pages, per_zone[z]);
            assert_eq!(zs.free_blocks, per_zone_order[z], "buddyinfo of zone {z}");
            assert_eq!(zs.hot_pages, hot_pages[z], "hot pages of zone {z}");
            assert!(zs.hot_pages <= (HOT_CAP as u64) << (HOT_ORDERS - 1));
            assert_eq!(zs.reserve, self.reserves[z]);
        }
    }
}
