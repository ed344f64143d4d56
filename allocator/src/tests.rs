//! Unit tests: every operation and every error (these also run under Miri).

use std::ptr::NonNull;
use std::vec;
use std::vec::Vec;

use crate::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// An allocator plus the metadata buffers it was given.
struct T {
    a: Box<BuddyAllocator>,
    metas: Vec<Vec<u64>>,
    /// Frame memory for poisoning tests (dropped after `a`).
    ram: Option<Ram>,
}

impl T {
    fn new(sections: &[(u64, u64)]) -> T {
        let mut t = T {
            a: Box::new(BuddyAllocator::new()),
            metas: Vec::new(),
            ram: None,
        };
        for &(s, p) in sections {
            t.add(s, p).unwrap();
        }
        t
    }
    fn add(&mut self, start: u64, pages: u64) -> Result<(), Error> {
        // Garbage metadata: lazy init must not trust it.
        let mut m = vec![0xDEAD_BEEF_F00D_CAFEu64; pages as usize];
        let ptr = NonNull::new(m.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `m` is kept in `self.metas` (its heap buffer never moves)
        // for as long as `self.a` lives, and nothing else uses it.
        let r = unsafe {
            self.a
                .add_section(PhysAddr(start), pages, ptr, metadata_bytes(pages))
        };
        if r.is_ok() {
            self.metas.push(m);
        }
        r
    }
    /// Makes `ram` the frames' memory (kept here, so it outlives the
    /// allocator's use of it) and turns poisoning on, zeroing too if `zero`.
    fn poison(&mut self, ram: Ram, zero: bool) {
        let ram = self.ram.insert(ram);
        let opts = FrameOptions {
            poison: true,
            zero_on_alloc: zero,
        };
        // SAFETY: `ram` maps its physical range and lives in `self`, which
        // drops it after the allocator.
        unsafe { self.a.set_frame_options(ram.offset(), opts) };
    }
    /// The memory given to [`poison`](Self::poison).
    fn ram(&mut self) -> &mut Ram {
        self.ram.as_mut().expect("poison() first")
    }
    fn snap(&self) -> (Stats, Vec<FreeBlock>) {
        (self.a.stats(), self.a.free_blocks().collect())
    }
    fn free(&self) -> u64 {
        self.a.stats().free_pages()
    }
}

/// Asserts `f` fails with `e` and leaves the allocator unchanged.
fn rejects<R: core::fmt::Debug>(
    t: &mut T,
    e: Error,
    f: impl FnOnce(&mut BuddyAllocator) -> Result<R, Error>,
) {
    let before = t.snap();
    let r = f(&mut t.a);
    assert_eq!(r.map(|_| ()).unwrap_err(), e);
    assert_eq!(t.snap(), before, "state changed by a rejected call");
}

#[test]
fn register_and_merge_to_maximal_blocks() {
    let t = T::new(&[(GIB, 1000)]);
    let st = t.a.stats();
    assert_eq!(st.zone(Zone::Dma32).managed_pages, 1000);
    assert_eq!(st.free_pages(), 1000);
    // 1000 = 512 + 256 + 128 + 64 + 32 + 8
    let mut orders: Vec<u32> = t.a.free_blocks().map(|b| b.order).collect();
    orders.sort();
    assert_eq!(orders, vec![3, 5, 6, 7, 8, 9]);
}

#[test]
fn unaligned_section_blocks_are_physically_aligned() {
    let t = T::new(&[(GIB + 3 * 4096, 100)]);
    for b in t.a.free_blocks() {
        assert_eq!(b.addr.0 % (4096 << b.order), 0);
    }
    assert_eq!(t.free(), 100);
}

#[test]
fn zones_split_at_16mib_and_4gib() {
    let t = T::new(&[(16 * MIB - 8 * 4096, 16), ((4 * GIB) - 4 * 4096, 12)]);
    let st = t.a.stats();
    assert_eq!(st.zone(Zone::Dma).managed_pages, 8);
    assert_eq!(st.zone(Zone::Dma32).managed_pages, 8 + 4);
    assert_eq!(st.zone(Zone::Normal).managed_pages, 8);
    assert_eq!(t.a.sections().count(), 4);
    for s in t.a.sections() {
        assert_eq!(Zone::of(s.start), s.zone);
        assert_eq!(Zone::of(PhysAddr(s.start.0 + (s.pages - 1) * 4096)), s.zone);
    }
}

#[test]
fn add_section_errors() {
    let mut t = T::new(&[(GIB, 64)]);
    rejects(&mut t, Error::ZeroCount, |a| {
        a.add_section_static(PhysAddr(2 * GIB), 0, vec![0u64; 1].leak())
    });
    rejects(&mut t, Error::Misaligned, |a| {
        a.add_section_static(PhysAddr(2 * GIB + 1), 4, vec![0u64; 4].leak())
    });
    rejects(&mut t, Error::SectionTooLarge, |a| {
        a.add_section_static(PhysAddr(0), MAX_SECTION_PAGES + 1, vec![0u64; 1].leak())
    });
    rejects(&mut t, Error::SectionWraps, |a| {
        a.add_section_static(PhysAddr(u64::MAX - 4095), 2, vec![0u64; 2].leak())
    });
    rejects(&mut t, Error::SectionWraps, |a| {
        a.add_section_static(PhysAddr(MAX_PHYS_ADDR - 4096), 2, vec![0u64; 2].leak())
    });
    rejects(&mut t, Error::MetadataTooSmall, |a| {
        a.add_section_static(PhysAddr(2 * GIB), 4, vec![0u64; 3].leak())
    });
    rejects(&mut t, Error::SectionOverlap, |a| {
        a.add_section_static(PhysAddr(GIB + 63 * 4096), 4, vec![0u64; 4].leak())
    });
    rejects(&mut t, Error::SectionOverlap, |a| {
        a.add_section_static(PhysAddr(GIB - 4096), 2, vec![0u64; 2].leak())
    });
    let mut buf = vec![0u64; 5];
    let bad = NonNull::new(buf.as_mut_ptr().cast::<u8>().wrapping_add(4)).unwrap();
    // SAFETY: rejected before the buffer is used.
    rejects(&mut t, Error::MetadataMisaligned, |a| unsafe {
        a.add_section(PhysAddr(2 * GIB), 4, bad, 32)
    });
    // Adjacent is fine.
    t.add(GIB + 64 * 4096, 8).unwrap();
    assert_eq!(t.free(), 72);
}

#[test]
#[cfg_attr(miri, ignore)] // MAX_SECTIONS registrations: 1.5 min under Miri
fn too_many_sections() {
    let mut t = T::new(&[]);
    for i in 0..MAX_SECTIONS as u64 {
        t.add(GIB + i * 2 * 4096, 1).unwrap();
    }
    rejects(&mut t, Error::TooManySections, |a| {
        a.add_section_static(PhysAddr(2 * GIB), 1, vec![0u64; 1].leak())
    });
    // A straddling section needing two slots is refused whole when one is left.
    t.a.remove_section(PhysAddr(GIB)).unwrap();
    rejects(&mut t, Error::TooManySections, |a| {
        a.add_section_static(PhysAddr(4 * GIB - 4096), 2, vec![0u64; 2].leak())
    });
}

#[test]
fn carve_metadata_fits() {
    for pages in [2u64, 3, 100, 513, 1 << 20] {
        let c = carve_metadata(PhysAddr(GIB), pages).unwrap();
        assert_eq!(c.meta_pages + c.pages, pages);
        assert!(c.meta_pages * 4096 >= metadata_bytes(c.pages) as u64);
        // Minimal: one page fewer would not do.
        assert!((c.meta_pages - 1) * 4096 < metadata_bytes(c.pages + 1) as u64);
    }
    assert_eq!(carve_metadata(PhysAddr(1), 10), Err(Error::Misaligned));
    assert_eq!(carve_metadata(PhysAddr(0), 0), Err(Error::ZeroCount));
}

/// Ranges that wrap, end above `MAX_PHYS_ADDR`, or hold more than one
/// section's pages are refused with the error `add_section` would give,
/// never carved into nonsense (an overflowing `pages * 8`, a wrapped
/// start).
#[test]
fn carve_metadata_refuses_impossible_ranges() {
    let top = !4095u64;
    for (start, pages) in [
        (0, u64::MAX),                   // pages * 8 overflows
        (0, 1 << 61),                    // pages * 8 wraps to 0
        (top, 100),                      // start + m * 4096 wraps
        (top, 2),                        // ends above 2^64
        (MAX_PHYS_ADDR - 10 * 4096, 11), // ends above 2^52
        (MAX_PHYS_ADDR, 2),              // starts at 2^52
        (0, (MAX_PHYS_ADDR >> 12) + 1),  // just over 2^52 bytes
    ] {
        assert_eq!(
            carve_metadata(PhysAddr(start), pages),
            Err(Error::SectionWraps),
            "{start:#x} + {pages} pages"
        );
    }
    // Just below the limit: fine, and exactly the range given.
    let c = carve_metadata(PhysAddr(MAX_PHYS_ADDR - 10 * 4096), 10).unwrap();
    assert_eq!(c.start.0 + c.pages * 4096, MAX_PHYS_ADDR);
    // More managed pages than a section holds.
    let big = MAX_SECTION_PAGES + MAX_SECTION_PAGES / 512 + 2;
    assert_eq!(
        carve_metadata(PhysAddr(0), big),
        Err(Error::SectionTooLarge)
    );
    let c = carve_metadata(PhysAddr(0), big - 2).unwrap();
    assert!(c.pages <= MAX_SECTION_PAGES);
}

#[test]
fn alloc_every_order_aligned_and_free() {
    let mut t = T::new(&[(GIB + 4096, 3000)]);
    let mut got = Vec::new();
    for o in 0..=10 {
        let p = t.a.alloc(o, Constraint::ANY).unwrap();
        assert_eq!(p.0 % (4096 << o), 0);
        got.push((p, o));
    }
    for (p, o) in got {
        t.a.free(p, o).unwrap();
    }
    assert_eq!(t.free(), 3000);
    assert_eq!(
        t.a.free_blocks().count(),
        T::new(&[(GIB + 4096, 3000)]).a.free_blocks().count()
    );
}

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
    let mut t = T::new(&[(GIB, 16)]);
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
        t.a.alloc(0, Constraint::ANY).unwrap();
    }
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, Constraint::ANY));
}

#[test]
fn free_errors() {
    let mut t = T::new(&[(GIB, 64)]);
    let p = t.a.alloc(2, Constraint::ANY).unwrap();
    let q = t.a.alloc_pages(3, Constraint::ANY).unwrap();
    rejects(&mut t, Error::TooLarge, |a| a.free(p, MAX_ORDER + 1));
    rejects(&mut t, Error::Misaligned, |a| a.free(PhysAddr(p.0 + 1), 0));
    rejects(&mut t, Error::Misaligned, |a| {
        a.free(PhysAddr(p.0 + 4096), 2)
    });
    rejects(&mut t, Error::Misaligned, |a| {
        a.free_pages(PhysAddr(p.0 + 8), 1)
    });
    rejects(&mut t, Error::ZeroCount, |a| a.free_pages(p, 0));
    rejects(&mut t, Error::NotInSection, |a| {
        a.free(PhysAddr(2 * GIB), 0)
    });
    rejects(&mut t, Error::NotInSection, |a| {
        a.free_pages(PhysAddr(GIB - 4096), 1)
    });
    rejects(&mut t, Error::WrongCount { allocated: 4 }, |a| a.free(p, 1));
    rejects(&mut t, Error::WrongCount { allocated: 4 }, |a| a.free(p, 3));
    rejects(&mut t, Error::WrongCount { allocated: 3 }, |a| {
        a.free_pages(q, 4)
    });
    rejects(&mut t, Error::WrongCount { allocated: 3 }, |a| a.free(q, 1));
    rejects(&mut t, Error::InteriorPage, |a| {
        a.free(PhysAddr(p.0 + 4096), 0)
    });
    rejects(&mut t, Error::InteriorPage, |a| {
        a.free_pages(PhysAddr(q.0 + 2 * 4096), 1)
    });
    // A page of a free block.
    let free_page = t.a.free_blocks().next().unwrap().addr;
    rejects(&mut t, Error::DoubleFree, |a| a.free(free_page, 0));
    rejects(&mut t, Error::DoubleFree, |a| {
        a.free(PhysAddr(q.0 + 3 * 4096), 0)
    }); // the given-back tail
    t.a.free(p, 2).unwrap();
    rejects(&mut t, Error::DoubleFree, |a| a.free(p, 2));
    // After merging, the absorbed head is not mistaken for an allocation.
    rejects(&mut t, Error::DoubleFree, |a| {
        a.free(PhysAddr(p.0 + 2 * 4096), 1)
    });
    t.a.free_pages(q, 3).unwrap();
    rejects(&mut t, Error::DoubleFree, |a| a.free_pages(q, 3));
    assert_eq!(t.free(), 64);
}

#[test]
fn exact_pages_give_the_tail_back() {
    let mut t = T::new(&[(GIB, 16)]);
    let p = t.a.alloc_pages(5, Constraint::ANY).unwrap();
    assert_eq!(t.free(), 11);
    assert_eq!(t.a.page_state(p), Ok(PageState::Allocated { pages: 5 }));
    assert!(matches!(
        t.a.page_state(PhysAddr(p.0 + 5 * 4096)),
        Ok(PageState::Free { .. })
    ));
    // The tail is usable.
    let mut rest = Vec::new();
    while let Ok(f) = t.a.alloc(0, Constraint::ANY) {
        rest.push(f);
    }
    assert_eq!(rest.len(), 11);
    for f in rest {
        t.a.free(f, 0).unwrap();
    }
    t.a.free_pages(p, 5).unwrap();
    t.a.drain_hot();
    assert_eq!(t.a.stats().free_blocks(4), 1);
}

#[test]
fn aligned_allocation_costs_only_its_pages() {
    let mut t = T::new(&[(GIB + 4096, 2047)]); // the only 2 MiB-aligned spot is at GIB + 2 MiB
    let p = t.a.alloc_aligned(1, 2 << 20, Constraint::ANY).unwrap();
    assert_eq!(p.0 % (2 << 20), 0);
    assert_eq!(t.free(), 2046);
    let q = t.a.alloc_aligned(3, 64 << 10, Constraint::ANY).unwrap();
    assert_eq!(q.0 % (64 << 10), 0);
    assert_eq!(t.free(), 2043);
    let r = t.a.alloc_aligned(2, 64, Constraint::ANY).unwrap(); // below a page: page aligned
    t.a.free_pages(r, 2).unwrap();
    t.a.free_pages(q, 3).unwrap();
    t.a.free_pages(p, 1).unwrap();
    assert_eq!(t.free(), 2047);
    // Section start not aligned to the request: no false OOM (peer's fault).
    let mut t = T::new(&[(GIB + 4096, 3)]);
    assert!(t.a.alloc_aligned(2, 8192, Constraint::ANY).is_ok());
}

/// An aligned run near the end of a section, where no block of the
/// request's order fits: found now (it used to be out of memory with the
/// pages free). A run between allocated pages is not looked for, as the
/// docs say.
#[test]
fn aligned_runs_are_found_where_the_section_end_cuts_the_block() {
    // 24 pages: blocks of 16 and 8. Page 16 is 64 KiB aligned.
    let mut t = T::new(&[(GIB, 24)]);
    let a64k = 64 << 10;
    assert_eq!(
        t.a.alloc_aligned(1, a64k, Constraint::ANY),
        Ok(PhysAddr(GIB))
    );
    let p = t.a.alloc_aligned(1, a64k, Constraint::ANY);
    assert_eq!(p, Ok(PhysAddr(GIB + 16 * 4096)));
    assert_eq!(t.free(), 22);
    t.a.free_pages(p.unwrap(), 1).unwrap();

    // 21 pages: after the 16-page block, [16, 21) is free, 8-aligned,
    // but only as blocks of 4 and 1.
    let mut t = T::new(&[(GIB, 21)]);
    let b = t.a.alloc(4, Constraint::ANY).unwrap();
    let r = t.a.alloc_pages(5, Constraint::ANY);
    assert_eq!(r, Ok(PhysAddr(GIB + 16 * 4096)));
    assert_eq!(
        t.a.page_state(r.unwrap()),
        Ok(PageState::Allocated { pages: 5 })
    );
    assert_eq!(t.free(), 0);
    t.a.free_pages(r.unwrap(), 5).unwrap();
    // The limit and the rest of the window are respected.
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(5, Constraint::Below(PhysAddr(GIB + 20 * 4096)))
    });
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(6, Constraint::ANY)
    });
    t.a.reserve_range(PhysAddr(GIB + 20 * 4096), 1).unwrap();
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(5, Constraint::ANY)
    });
    t.a.free(b, 4).unwrap();

    // Not at a section end: with [0, 8) and [13, 16) in use, [8, 13) is
    // free and 8-page aligned, but made of blocks of 4 and 1 between
    // allocated pages. Not looked for: out of memory, as documented; it
    // can be taken at its address.
    let mut t = T::new(&[(GIB, 16)]);
    t.a.reserve_range(PhysAddr(GIB), 8).unwrap();
    t.a.reserve_range(PhysAddr(GIB + 13 * 4096), 3).unwrap();
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_pages(5, Constraint::ANY)
    });
    t.a.reserve_range(PhysAddr(GIB + 8 * 4096), 5).unwrap();
}

#[test]
fn reserve_range_and_errors() {
    let mut t = T::new(&[(GIB + 4096, 100), (16 * MIB - 4 * 4096, 8)]);
    let r = PhysAddr(GIB + 10 * 4096);
    t.a.reserve_range(r, 37).unwrap();
    assert_eq!(t.free(), 108 - 37);
    assert_eq!(t.a.page_state(r), Ok(PageState::Allocated { pages: 37 }));
    assert_eq!(
        t.a.page_state(PhysAddr(r.0 + 36 * 4096)),
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
    t.a.free_pages(r, 37).unwrap();
    assert_eq!(t.free(), 108);
    // Whole section.
    t.a.reserve_range(PhysAddr(GIB + 4096), 100).unwrap();
    assert_eq!(
        t.a.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap().0,
        16 * MIB
    );
}

#[test]
fn bulk_alloc_and_free() {
    let mut t = T::new(&[(GIB, 40)]);
    let mut f = [PhysAddr(0); 32];
    assert_eq!(t.a.alloc_bulk(Constraint::ANY, &mut f), Ok(32));
    let mut sorted = f.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 32);
    let mut g = [PhysAddr(0); 16];
    assert_eq!(t.a.alloc_bulk(Constraint::ANY, &mut g), Ok(8)); // partial: memory ran out
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_bulk(Constraint::ANY, &mut [PhysAddr(0); 4])
    });
    rejects(&mut t, Error::ZeroCount, |a| {
        a.alloc_bulk(Constraint::ANY, &mut [])
    });
    let bulk = |frames: Vec<PhysAddr>, idx: usize, e: Error, t: &mut T| {
        let before = t.snap();
        assert_eq!(
            t.a.free_bulk(&frames),
            Err(BulkError {
                index: idx,
                error: e
            })
        );
        assert_eq!(t.snap(), before);
    };
    bulk(vec![f[0], f[1], f[0]], 2, Error::DoubleFree, &mut t);
    bulk(
        vec![f[0], PhysAddr(f[1].0 + 1)],
        1,
        Error::Misaligned,
        &mut t,
    );
    bulk(
        vec![f[0], PhysAddr(3 * GIB)],
        1,
        Error::NotInSection,
        &mut t,
    );
    bulk(vec![], 0, Error::ZeroCount, &mut t);
    t.a.free_bulk(&f[..4]).unwrap();
    bulk(vec![f[5], f[0]], 1, Error::DoubleFree, &mut t);
    t.a.free_bulk(&f[4..]).unwrap();
    t.a.free_bulk(&g[..8]).unwrap();
    assert_eq!(t.free(), 40);
    assert_eq!(t.a.free_blocks().count(), 2); // 32 + 8
}

#[test]
fn zone_constraints_and_fallback() {
    let mut t = T::new(&[(8 * MIB, 16), (GIB, 16), (8 * GIB, 16)]);
    for _ in 0..16 {
        assert!(t.a.alloc(0, Constraint::ANY).unwrap().0 >= 4 * GIB);
    }
    for _ in 0..16 {
        let p = t.a.alloc(0, Constraint::ANY).unwrap();
        assert_eq!(Zone::of(p), Zone::Dma32);
    }
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(Zone::of(p), Zone::Dma);
    let mut t = T::new(&[(8 * MIB, 16), (GIB, 16), (8 * GIB, 16)]);
    assert!(t.a.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap().0 < 4 * GIB);
    assert!(t.a.alloc(0, Constraint::Zone(Zone::Dma)).unwrap().0 < 16 * MIB);
    assert!(
        t.a.alloc(0, Constraint::Below(PhysAddr(GIB + 4 * 4096)))
            .unwrap()
            .0
            < GIB + 4 * 4096
    );
    // Page GIB is taken, so no order-2 block of DMA32 lies below the limit:
    // the request falls back to DMA.
    let p =
        t.a.alloc(2, Constraint::Below(PhysAddr(GIB + 4 * 4096)))
            .unwrap();
    assert_eq!(Zone::of(p), Zone::Dma);
    let mut t2 = T::new(&[(GIB, 16)]);
    assert_eq!(
        t2.a.alloc(2, Constraint::Below(PhysAddr(GIB + 4 * 4096))),
        Ok(PhysAddr(GIB))
    );
    assert!(
        t.a.alloc(0, Constraint::Below(PhysAddr(12 * MIB)))
            .unwrap()
            .0
            < 12 * MIB
    );
    assert!(
        t.a.alloc(0, Constraint::Below(PhysAddr(u64::MAX)))
            .unwrap()
            .0
            >= 4 * GIB
    );
}

/// Without Normal memory, unconstrained requests start in DMA32 (its hot
/// list, not the fallback); once a Normal section is added they start in
/// Normal again, and after it is removed in DMA32; a DMA32 reserve still
/// holds for them; with neither Normal nor DMA32 memory they go to DMA.
#[test]
fn requests_start_in_the_highest_zone_with_memory() {
    let mut t = T::new(&[(GIB, 64)]);
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    let q = t.a.alloc(0, Constraint::ANY).unwrap();
    t.a.free(p, 0).unwrap();
    assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(p), "not the parked page");
    assert_eq!(t.a.alloc(2, Constraint::ANY).map(Zone::of), Ok(Zone::Dma32));
    t.add(8 * GIB, 16).unwrap();
    t.a.free(p, 0).unwrap();
    for _ in 0..16 {
        assert!(t.a.alloc(0, Constraint::ANY).unwrap().0 >= 8 * GIB);
    }
    assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(p));
    for i in 0..16 {
        t.a.free(PhysAddr(8 * GIB + i * 4096), 0).unwrap();
    }
    assert_eq!(t.a.remove_section(PhysAddr(8 * GIB)).unwrap().pages, 16);
    t.a.free(p, 0).unwrap();
    assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(p));
    // The reserve is the fallback's to check: 64 - 2 - 4 pages are in use.
    t.a.set_reserve(Zone::Dma32, 58);
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, Constraint::ANY));
    t.a.set_reserve(Zone::Dma32, 0);
    assert_eq!(t.a.alloc(0, Constraint::ANY).map(Zone::of), Ok(Zone::Dma32));
    let mut d = T::new(&[(8 * MIB, 16)]);
    assert_eq!(d.a.alloc(0, Constraint::ANY).map(Zone::of), Ok(Zone::Dma));
    let _ = q;
}

/// A limit inside a section: the one free page below it is found even
/// when more than `LIMIT_SCAN` free blocks of its order come first in its
/// list (the bounded scan used to give up there: out of memory).
#[test]
fn a_limit_finds_the_page_below_it_behind_many_above() {
    // 8192 pages: buckets of 256 pages, so pages 0..=200 share a list.
    let mut t = T::new(&[(GIB, 8192)]);
    // Reserving the odd pages 1..=201 frees the even ones 0..=200 as
    // single pages, pushed in ascending order: page 0 ends up last.
    for i in 0..=100 {
        t.a.reserve_range(PhysAddr(GIB + (2 * i + 1) * 4096), 1)
            .unwrap();
    }
    const { assert!(100 > LIMIT_SCAN) };
    let below = Constraint::Below(PhysAddr(GIB + 4096));
    assert_eq!(t.a.alloc(0, below), Ok(PhysAddr(GIB)));
    // Now nothing is left below the limit.
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, below));
    // A limit not on a page boundary counts whole pages below it.
    t.a.free(PhysAddr(GIB), 0).unwrap();
    let mid = Constraint::Below(PhysAddr(GIB + 4096 + 100));
    assert_eq!(t.a.alloc(0, mid), Ok(PhysAddr(GIB)));
}

#[test]
fn dma32_reserve_is_kept_from_normal_requests() {
    let mut t = T::new(&[(GIB, 16), (8 * GIB, 4)]);
    t.a.set_reserve(Zone::Dma32, 10);
    assert_eq!(t.a.reserve(Zone::Dma32), 10);
    for _ in 0..4 {
        t.a.alloc(0, Constraint::ANY).unwrap();
    }
    for _ in 0..6 {
        assert_eq!(
            Zone::of(t.a.alloc(0, Constraint::ANY).unwrap()),
            Zone::Dma32
        );
    }
    rejects(&mut t, Error::OutOfMemory, |a| a.alloc(0, Constraint::ANY));
    for _ in 0..10 {
        t.a.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap();
    }
    assert_eq!(t.a.stats().zone(Zone::Dma32).reserve, 10);
}

#[test]
fn dma32_lookup_ignores_high_free_blocks() {
    // Many free blocks in Normal do not slow or confuse a DMA32 request.
    let mut t = T::new(&[(GIB, 1), (8 * GIB, 4096)]);
    let mut keep = Vec::new();
    for i in 0..4096 {
        let p = t.a.alloc(0, Constraint::ANY).unwrap();
        if i % 2 == 0 {
            keep.push(p);
        } else {
            t.a.free(p, 0).unwrap();
        }
        let _ = i;
    }
    let d = t.a.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap();
    assert_eq!(d, PhysAddr(GIB));
    t.a.free(d, 0).unwrap();
}

#[test]
fn hot_add_and_remove() {
    let mut t = T::new(&[(GIB, 32)]);
    t.add(4 * GIB - 16 * 4096, 32).unwrap(); // two pieces
    assert_eq!(t.free(), 64);
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    assert!(p.0 >= 4 * GIB);
    rejects(&mut t, Error::SectionInUse, |a| {
        a.remove_section(PhysAddr(4 * GIB - 16 * 4096))
    });
    rejects(&mut t, Error::NoSuchSection, |a| {
        a.remove_section(PhysAddr(4 * GIB))
    });
    rejects(&mut t, Error::NoSuchSection, |a| {
        a.remove_section(PhysAddr(5 * GIB))
    });
    t.a.free(p, 0).unwrap();
    let r = t.a.remove_section(PhysAddr(4 * GIB - 16 * 4096)).unwrap();
    assert_eq!(r.pages, 32);
    assert_eq!(r.meta.as_ptr(), t.metas[1].as_mut_ptr().cast::<u8>());
    assert_eq!(r.meta_bytes, 256);
    assert_eq!(t.free(), 32);
    assert_eq!(t.a.stats().zone(Zone::Normal).managed_pages, 0);
    assert_eq!(t.a.free(p, 0), Err(Error::NotInSection));
    // Re-add at the same place.
    t.add(4 * GIB - 16 * 4096, 32).unwrap();
    assert_eq!(t.free(), 64);
}

/// What metadata the allocator never wrote still holds.
const GARBAGE: u64 = 0x5A5A_5A5A_5A5A_5A5A;

/// Registers `pages` pages at 4 GiB over metadata full of [`GARBAGE`],
/// runs `f` on the allocator, drops it, and returns the metadata to look
/// at.
fn on_garbage_metadata(pages: u64, f: impl FnOnce(&mut BuddyAllocator)) -> Vec<u64> {
    let mut meta = vec![GARBAGE; pages as usize];
    let mut a = Box::new(BuddyAllocator::new());
    // SAFETY: `meta` outlives `a`, which is dropped before `meta` is
    // returned, and nothing else touches `meta` meanwhile.
    unsafe {
        a.add_section(
            PhysAddr(4 * GIB),
            pages,
            NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
            metadata_bytes(pages),
        )
        .unwrap();
    }
    f(&mut a);
    drop(a);
    meta
}

#[test]
#[cfg_attr(miri, ignore)] // scans 8 MiB of metadata: slow under Miri
fn lazy_init_touches_only_a_few_words() {
    let pages = 1u64 << 20; // 4 GiB
    // Registration writes no word at all (the pieces are pending).
    let meta = on_garbage_metadata(pages, |_| {});
    assert!(meta.iter().all(|&w| w == GARBAGE));
    let meta = on_garbage_metadata(pages, |a| {
        let p = a.alloc(0, Constraint::ANY).unwrap();
        a.free(p, 0).unwrap();
    });
    let touched = meta.iter().filter(|&&w| w != GARBAGE).count();
    // The first allocation writes the 4 order-18 heads and initialises one
    // 512-page chunk for the split; it and the free each take a step of
    // incremental initialisation (512 words).
    assert!(
        touched <= 4 + 512 + 2 * 512 + 64,
        "registration + one alloc touched {touched} words"
    );
}

/// A registered section's blocks stay pending until an allocation picks
/// it; statistics, free blocks (in list order) and page states must read
/// exactly as they do once the blocks are on the lists.
#[test]
#[cfg_attr(miri, ignore)] // 128 MiB of metadata
fn pending_sections_read_as_their_lists_would() {
    // Unaligned at both ends, and large enough (64 GiB) that two 1 GiB
    // blocks share an address bucket; the second straddles 16 MiB.
    let big = (1u64 << 24) + 12_345;
    let mut t = T::new(&[(4 * GIB + 3 * 4096, big), (16 * MIB - 40 * 4096, 1000)]);
    let probes: Vec<PhysAddr> = (0..200u64)
        .map(|i| PhysAddr(4 * GIB + 3 * 4096 + i * i * i * 4096 * 2003 % (big * 4096)))
        .chain((0..1000u64).map(|i| PhysAddr(16 * MIB - 40 * 4096 + i * 4096)))
        .collect();
    let states =
        |a: &BuddyAllocator| -> Vec<_> { probes.iter().map(|&p| a.page_state(p)).collect() };
    let (before, pstates) = (t.snap(), states(&t.a));
    assert_eq!(before.0.free_pages(), big + 1000);
    t.a.materialise_all();
    assert_eq!(t.snap(), before);
    assert_eq!(states(&t.a), pstates);
    // And pending sections answer bad frees as materialised ones do.
    let mut u = T::new(&[(4 * GIB, 64)]);
    assert_eq!(
        u.a.free(PhysAddr(4 * GIB + 4096), 0),
        Err(Error::DoubleFree)
    );
    assert_eq!(u.a.free_pages(PhysAddr(4 * GIB), 3), Err(Error::DoubleFree));
    assert_eq!(u.snap().1.len(), 1);
}

/// Allocations off the lists initialise the rest of the section step by
/// step: after one per 512 pages every word has been written, and the
/// allocator still agrees with itself.
#[test]
#[cfg_attr(miri, ignore)] // 512 KiB of metadata
fn incremental_init_covers_the_section() {
    let pages = 1u64 << 16;
    let meta = on_garbage_metadata(pages, |a| {
        // Nothing is freed yet, so every request is taken off the lists,
        // and each one (then each free) takes a step.
        let live: Vec<PhysAddr> = (0..pages / 512 + 1)
            .map(|_| a.alloc(1, Constraint::ANY).unwrap())
            .collect();
        for &p in &live {
            a.free(p, 1).unwrap();
            assert_eq!(a.free(p, 1), Err(Error::DoubleFree));
        }
        assert_eq!(a.stats().free_pages(), pages);
        assert_eq!(a.free_blocks().count(), 1);
    });
    let left = meta.iter().filter(|&&w| w == GARBAGE).count();
    assert_eq!(left, 0, "{left} words never initialised");
}

#[test]
#[cfg_attr(miri, ignore)]
fn register_4gib_is_fast() {
    let pages = 1u64 << 20;
    let mut meta: Vec<u64> = Vec::with_capacity(pages as usize);
    let ptr = NonNull::new(meta.as_mut_ptr().cast::<u8>()).unwrap();
    let mut best = u128::MAX;
    for _ in 0..20 {
        let mut a = BuddyAllocator::new();
        let t0 = std::time::Instant::now();
        // SAFETY: capacity for `pages` words, unused by anyone else.
        unsafe {
            a.add_section(PhysAddr(4 * GIB), pages, ptr, metadata_bytes(pages))
                .unwrap()
        };
        best = best.min(t0.elapsed().as_nanos());
    }
    std::println!("registering 4 GiB took {best} ns (best of 20)");
    assert!(best < 20_000, "{best} ns");
}

/// A section backed by real memory, for poisoning and zeroing.
struct Ram {
    buf: Vec<u64>,
    phys: u64,
}

impl Ram {
    fn new(phys: u64, pages: usize) -> Ram {
        Ram {
            buf: vec![0x1111_1111_1111_1111; pages * 512],
            phys,
        }
    }
    fn offset(&mut self) -> *mut u8 {
        self.buf
            .as_mut_ptr()
            .cast::<u8>()
            .wrapping_sub(self.phys as usize)
    }
    fn byte(&self, phys: u64) -> u8 {
        // SAFETY: reading the test's own buffer while the allocator is idle.
        let bytes = unsafe {
            core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.buf.len() * 8)
        };
        bytes[(phys - self.phys) as usize]
    }
    fn poke(&mut self, phys: u64, v: u8) {
        let off = (phys - self.phys) as usize;
        let w = &mut self.buf[off / 8];
        let mut b = w.to_ne_bytes();
        b[off % 8] = v;
        *w = u64::from_ne_bytes(b);
    }
}

#[test]
fn poison_detects_use_after_free() {
    let ram = Ram::new(GIB, 8);
    let mut t = T::new(&[(GIB, 8)]);
    t.poison(ram, false);
    assert_eq!(t.ram().byte(GIB + 5 * 4096 + 17), POISON_BYTE); // poisoned when enabled
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    t.a.free(p, 0).unwrap();
    // Use after free.
    t.ram().poke(p.0 + 123, 0x42);
    let mut seen = None;
    for _ in 0..8 {
        match t.a.alloc(0, Constraint::ANY) {
            Err(e @ Error::Corrupted { .. }) => {
                seen = Some(e);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        seen,
        Some(Error::Corrupted {
            frame: p,
            offset: 123,
            found: 0x42
        })
    );
    assert!(std::format!("{}", seen.unwrap()).contains("corrupted"));
    // Re-poisoned and free again.
    assert_eq!(t.ram().byte(p.0 + 123), POISON_BYTE);
    assert!(matches!(t.a.page_state(p), Ok(PageState::Free { .. })));
    t.a.clear_frame_options();
    assert_eq!(t.a.frame_options(), FrameOptions::default());
}

#[test]
fn zero_on_alloc_and_poison_on_add() {
    let ram = Ram::new(GIB, 16);
    let mut t = T::new(&[(GIB, 8)]);
    t.poison(ram, true);
    t.add(GIB + 8 * 4096, 8).unwrap(); // hot-added while poisoning: poisoned now
    assert_eq!(t.ram().byte(GIB + 12 * 4096), POISON_BYTE);
    let p = t.a.alloc_pages(3, Constraint::ANY).unwrap();
    for i in 0..3 * 4096 {
        assert_eq!(t.ram().byte(p.0 + i), 0);
    }
    t.a.free_pages(p, 3).unwrap();
    assert_eq!(t.ram().byte(p.0 + 4096 * 2 + 4095), POISON_BYTE);
    let mut f = [PhysAddr(0); 4];
    t.a.alloc_bulk(Constraint::ANY, &mut f).unwrap();
    t.ram().poke(f[0].0, 9); // live frame: no complaint
    t.a.free_bulk(&f).unwrap();
    assert_eq!(t.ram().byte(f[0].0), POISON_BYTE);
}

/// A safe registration never makes the allocator write frame memory: the
/// range is only named by address, nothing promises it is mapped. With
/// poisoning on, `add_section_static` poisoned the whole range; with
/// zeroing on, its pages would be zeroed when allocated. Either way it is
/// refused now, and nothing is written or registered.
#[test]
fn safe_registration_is_refused_while_frames_are_written() {
    for zero_only in [false, true] {
        // Frames backed by `ram`, so that a wrongful write lands there.
        let ram = Ram::new(GIB, 16);
        let mut t = T::new(&[(GIB, 8)]);
        t.poison(ram, false);
        if zero_only {
            let opts = FrameOptions {
                poison: false,
                zero_on_alloc: true,
            };
            let off = t.ram().offset();
            // SAFETY: as in `T::poison`: `ram` maps the range and outlives
            // the allocator.
            unsafe { t.a.set_frame_options(off, opts) };
        }
        let named = GIB + 8 * 4096;
        let marker = t.ram().byte(named);
        rejects(&mut t, Error::FramesNotMapped, |a| {
            a.add_section_static(PhysAddr(named), 8, vec![0u64; 8].leak())
        });
        // Poisoning fills whole frames: a sample of bytes shows a write.
        for i in (0..8 * 4096).step_by(61) {
            assert_eq!(t.ram().byte(named + i), marker, "byte {i} written");
        }
        assert_eq!(t.a.sections().count(), 1);
        // Without options that write frames, it is fine again.
        t.a.clear_frame_options();
        t.a.add_section_static(PhysAddr(named), 8, vec![0u64; 8].leak())
            .unwrap();
        assert_eq!(t.free(), 16);
    }
}

#[test]
fn stats_and_display() {
    let mut t = T::new(&[(8 * MIB, 16), (GIB, 1024), (8 * GIB, 512)]);
    let p = t.a.alloc_pages(1, Constraint::ANY).unwrap();
    // The single page came with a hot-list refill: its 15 neighbours are
    // parked (free, but outside the buddy counts until merged).
    let refill = (1u64 << crate::REFILL_ORDER) - 1;
    assert_eq!(t.a.stats().zone(Zone::Normal).hot_pages, refill);
    assert_eq!(t.a.stats().free_pages(), 16 + 1024 + 511);
    t.a.drain_hot();
    let st = t.a.stats();
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
    t.a.free_pages(p, 1).unwrap();
}

#[test]
fn page_state_queries() {
    let mut t = T::new(&[(GIB, 8)]);
    assert_eq!(t.a.page_state(PhysAddr(GIB + 1)), Err(Error::Misaligned));
    assert_eq!(t.a.page_state(PhysAddr(2 * GIB)), Err(Error::NotInSection));
    assert_eq!(
        t.a.page_state(PhysAddr(GIB + 4096 * 5)),
        Ok(PageState::Free {
            block: PhysAddr(GIB),
            order: 3
        })
    );
    let p = t.a.alloc(1, Constraint::ANY).unwrap();
    assert_eq!(t.a.page_state(p), Ok(PageState::Allocated { pages: 2 }));
}

#[test]
fn locked_wrapper_from_threads() {
    use std::sync::Arc;
    let mut t = T::new(&[(GIB, 256)]);
    let a = core::mem::take(&mut *t.a);
    let l = Arc::new(LockedAllocator::<NoInterrupts>::new(a));
    let threads = if cfg!(miri) { 2 } else { 4 };
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..rounds {
                    let p = l.alloc(i % 3, Constraint::ANY).unwrap();
                    l.free(p, i % 3).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(l.stats().free_pages(), 256);
    // Hand the allocator back so its metadata outlives it in `t`.
    let mut l = Arc::try_unwrap(l).ok().unwrap();
    *t.a = core::mem::take(l.get_mut());
}

#[test]
fn interrupt_control_is_called() {
    use core::sync::atomic::{AtomicUsize, Ordering};
    static DEPTH: AtomicUsize = AtomicUsize::new(0);
    struct Counting;
    impl InterruptControl for Counting {
        type Saved = usize;
        fn save_and_disable() -> usize {
            DEPTH.fetch_add(1, Ordering::SeqCst)
        }
        fn restore(s: usize) {
            assert_eq!(DEPTH.fetch_sub(1, Ordering::SeqCst), s + 1);
        }
    }
    let l = LockedAllocator::<Counting>::new(BuddyAllocator::new());
    {
        let g = l.lock();
        assert_eq!(DEPTH.load(Ordering::SeqCst), 1);
        assert!(l.try_lock().is_none());
        assert_eq!(DEPTH.load(Ordering::SeqCst), 1); // restored after the failed try
        drop(g);
    }
    assert_eq!(DEPTH.load(Ordering::SeqCst), 0);
}

#[test]
fn newtypes_and_zone_helpers() {
    assert_eq!(PhysAddr(0x3000).pfn(), Pfn(3));
    assert_eq!(Pfn(3).addr(), PhysAddr(0x3000));
    assert_eq!(Zone::of(PhysAddr(16 * MIB - 1)), Zone::Dma);
    assert_eq!(Zone::of(PhysAddr(4 * GIB - 1)), Zone::Dma32);
    assert_eq!(std::format!("{}", Zone::Normal), "Normal");
    assert_eq!(std::format!("{:?}", PhysAddr(16)), "PhysAddr(0x10)");
    for e in [
        Error::OutOfMemory,
        Error::WrongCount { allocated: 3 },
        Error::RangeInUse,
    ] {
        assert!(!std::format!("{e}").is_empty());
    }
}

// ----------------------------------------------------------------------
// Hot lists
// ----------------------------------------------------------------------

/// Allocates all `n` pages of a fresh section as single pages and frees
/// them evens first: every page's buddy is in use or parked when it is
/// freed, so all of them are parked (n <= HOT_CAP).
fn park_all(t: &mut T, n: usize) -> Vec<PhysAddr> {
    assert!(n <= HOT_CAP);
    let mut pages: Vec<PhysAddr> = (0..n)
        .map(|_| t.a.alloc(0, Constraint::ANY).unwrap())
        .collect();
    pages.sort_unstable();
    for i in (0..n).step_by(2).chain((1..n).step_by(2)) {
        t.a.free(pages[i], 0).unwrap();
    }
    pages
}

fn hot(t: &T) -> u64 {
    t.a.stats().zones.iter().map(|z| z.hot_pages).sum()
}

#[test]
fn freed_page_with_busy_buddy_is_parked_and_reused_first() {
    let mut t = T::new(&[(GIB, 64)]);
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    let q = t.a.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(p.0 ^ q.0, 4096, "buddies");
    // Merge the rest of the refill, which p's allocation parked.
    t.a.drain_hot();
    t.a.free(q, 0).unwrap();
    assert_eq!(hot(&t), 1);
    assert_eq!(t.free(), 63);
    assert_eq!(
        t.a.page_state(q),
        Ok(PageState::Free { block: q, order: 0 })
    );
    let hb: Vec<FreeBlock> = t.a.free_blocks().filter(|b| b.hot).collect();
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
        a.free_bulk(&[q]).map_err(|e| e.error)
    });
    // The next single page is the parked one.
    assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(q));
    assert_eq!(hot(&t), 0);
    // q parks again (p in use), then p parks too: its buddy is parked,
    // not free, and parked pages are not merged until they leave the list.
    t.a.free(q, 0).unwrap();
    t.a.free(p, 0).unwrap();
    assert_eq!(hot(&t), 2);
    t.a.drain_hot();
    assert_eq!((hot(&t), t.a.free_blocks().count()), (0, 1));
}

/// What an out-of-memory error guarantees: every allocation and the free
/// page count unchanged. It may merge parked blocks first (pages parked
/// next to parked buddies), so the per-order split of free memory is the
/// one thing that changes.
#[test]
fn out_of_memory_keeps_every_allocation_and_the_free_page_count() {
    let mut t = T::new(&[(GIB, 64)]);
    let pages: Vec<PhysAddr> = (0..64)
        .map(|_| t.a.alloc(0, Constraint::ANY).unwrap())
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
        t.a.free(p, 0).unwrap();
    }
    let before = t.a.stats();
    assert_eq!((hot(&t), before.free_blocks(0)), (32, 32));
    // No 4 free pages in a row: out of memory, after merging the pairs.
    assert_eq!(t.a.alloc(2, Constraint::ANY), Err(Error::OutOfMemory));
    let after = t.a.stats();
    assert_eq!(after.free_pages(), before.free_pages());
    for z in Zone::ALL {
        assert_eq!(after.zone(z).free_pages, before.zone(z).free_pages);
    }
    for &p in &kept {
        assert_eq!(t.a.page_state(p), Ok(PageState::Allocated { pages: 1 }));
    }
    // The split is what changed: 16 merged pairs instead of 32 pages.
    assert_eq!((after.free_blocks(0), after.free_blocks(1)), (0, 16));
    assert_eq!(hot(&t), 0);
    for &p in &kept {
        t.a.free(p, 0).unwrap();
    }
    t.a.drain_hot();
    assert_eq!(t.a.free_blocks().count(), 1);
}

#[test]
fn freeing_next_to_a_free_buddy_merges_instead_of_parking() {
    let mut t = T::new(&[(GIB, 64)]);
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    t.a.drain_hot(); // the refill's other pages
    t.a.free(p, 0).unwrap();
    // Merged all the way up: one block of the whole section (parked on
    // the order-6 hot list: merged blocks are parked like any other).
    let blocks: Vec<FreeBlock> = t.a.free_blocks().collect();
    assert_eq!(
        (blocks.len(), blocks[0].order, blocks[0].addr),
        (1, 6, PhysAddr(GIB))
    );
    assert_eq!(hot(&t), 64);
}

#[test]
fn parked_blocks_above_order_0_merge_with_their_buddy() {
    let mut t = T::new(&[(4 * GIB, 64)]);
    let x = PhysAddr(4 * GIB);
    let y = PhysAddr(4 * GIB + 4 * 4096);
    t.a.reserve_range(x, 4).unwrap();
    t.a.reserve_range(y, 4).unwrap();
    // x's buddy y is in use: x is parked, and taken back first.
    t.a.free(x, 2).unwrap();
    assert_eq!(hot(&t), 4);
    assert_eq!(
        t.a.page_state(x),
        Ok(PageState::Free { block: x, order: 2 })
    );
    assert_eq!(t.a.alloc(2, Constraint::ANY), Ok(x));
    t.a.free(x, 2).unwrap();
    // Freeing y merges it with the parked x (and on up to the section).
    t.a.free(y, 2).unwrap();
    let blocks: Vec<FreeBlock> = t.a.free_blocks().collect();
    assert_eq!((blocks.len(), blocks[0].addr, blocks[0].order), (1, x, 6));
}

/// Taking a parked block out of its hot list moves another into its slot;
/// removing a section compacts the lists. Either way the slots in the
/// words must follow, or a later merge takes the wrong block off.
#[test]
fn parked_block_slots_follow_their_moves() {
    // A: 3 pages from an odd frame, so its order-1 piece has no buddy.
    let (a0, b0) = (4 * GIB + 4096, 8 * GIB);
    let mut t = T::new(&[(a0, 3), (b0, 64)]);
    let page = |i: u64| PhysAddr(b0 + i * 4096);
    t.a.reserve_range(PhysAddr(a0 + 4096), 2).unwrap();
    t.a.free_pages(PhysAddr(a0 + 4096), 2).unwrap(); // parked: slot 0
    for i in [0, 2, 16, 18] {
        t.a.reserve_range(page(i), 2).unwrap();
    }
    t.a.free(page(0), 1).unwrap(); // slot 1 (buddy page(2) in use)
    t.a.free(page(16), 1).unwrap(); // slot 2 (buddy page(18) in use)
    assert_eq!(hot(&t), 6);
    t.a.remove_section(PhysAddr(a0)).unwrap();
    assert_eq!(hot(&t), 4);
    // Merges with page(0), which moved to slot 0 when A's block left.
    t.a.free(page(2), 1).unwrap();
    t.a.free(page(18), 1).unwrap();
    let blocks: Vec<FreeBlock> = t.a.free_blocks().collect();
    assert_eq!(
        (blocks.len(), blocks[0].addr, blocks[0].order),
        (1, page(0), 6)
    );
    assert_eq!(t.free(), 64);
}

#[test]
fn parked_pages_merge_before_an_allocation_fails() {
    let mut t = T::new(&[(GIB, 16)]);
    park_all(&mut t, 16);
    assert_eq!(hot(&t), 16);
    assert_eq!(t.a.stats().free_blocks(0), 16);
    let b = t.a.alloc(4, Constraint::ANY).unwrap();
    assert_eq!(b, PhysAddr(GIB));
    assert_eq!(hot(&t), 0);
    t.a.free(b, 4).unwrap();
    // A hopeless request (more pages than the section has) changes nothing.
    park_all(&mut t, 16);
    let before: Vec<FreeBlock> = t.a.free_blocks().collect();
    assert_eq!(t.a.alloc(5, Constraint::ANY), Err(Error::OutOfMemory));
    assert_eq!((t.free(), hot(&t)), (16, 16));
    assert_eq!(t.a.free_blocks().collect::<Vec<_>>(), before);
    // A genuine failure after draining still changes no free page count.
    let mut t = T::new(&[(GIB, 32)]);
    let pages = park_all(&mut t, 32);
    let keep = [pages[0], pages[16]];
    for p in keep {
        t.a.reserve_range(p, 1).unwrap();
    }
    assert_eq!((t.free(), hot(&t)), (30, 30));
    assert_eq!(t.a.alloc(4, Constraint::ANY), Err(Error::OutOfMemory));
    assert_eq!((t.free(), hot(&t)), (30, 0));
    assert_eq!(t.a.free_blocks().count(), 8); // orders 0, 1, 2, 3 twice
}

#[test]
fn parked_pages_of_the_top_zone_merge_before_a_fallback() {
    let mut t = T::new(&[(4 * GIB, 16), (GIB, 16)]);
    park_all(&mut t, 16);
    let st = t.a.stats();
    assert_eq!(st.zone(Zone::Normal).hot_pages, 16);
    let b = t.a.alloc(4, Constraint::ANY).unwrap();
    assert_eq!(b, PhysAddr(4 * GIB), "fell back to DMA32 with Normal whole");
    t.a.free(b, 4).unwrap();
    // A request confined to DMA32 does not use parked Normal pages.
    park_all(&mut t, 16);
    let d = t.a.alloc(0, Constraint::Zone(Zone::Dma32)).unwrap();
    assert!(d.0 < 4 * GIB);
    assert_eq!(t.a.stats().zone(Zone::Normal).hot_pages, 16);
    // A limit inside the zone does not take parked pages above it.
    let lim = PhysAddr(4 * GIB + 4 * 4096);
    let l = t.a.alloc(0, Constraint::Below(lim)).unwrap();
    assert!(
        l.0 < 4 * GIB || l.0 + 4096 <= lim.0,
        "{l:?} above the limit"
    );
}

#[test]
fn reserve_range_and_removal_take_parked_pages() {
    let mut t = T::new(&[(GIB, 16), (2 * GIB, 16)]);
    let pages = park_all(&mut t, 16);
    let first = pages.iter().copied().find(|p| p.0 < 2 * GIB).unwrap();
    assert_eq!(
        t.a.page_state(first),
        Ok(PageState::Free {
            block: first,
            order: 0
        })
    );
    t.a.reserve_range(first, 3).unwrap();
    assert_eq!(t.a.page_state(first), Ok(PageState::Allocated { pages: 3 }));
    assert_eq!(t.free(), 29);
    t.a.free_pages(first, 3).unwrap();
    assert_eq!(t.free(), 32);
    // Removing a section with parked pages: they are forgotten with it.
    let sec = pages[0];
    let r = t.a.remove_section(sec).unwrap();
    assert_eq!(r.pages, 16);
    assert!(t.a.free_blocks().all(|b| b.addr.0 >= 2 * GIB));
    assert_eq!(t.free(), 16);
    let mut n = 0;
    while let Ok(p) = t.a.alloc(0, Constraint::ANY) {
        assert!(p.0 >= 2 * GIB, "page {p:?} of the removed section");
        n += 1;
    }
    assert_eq!(n, 16);
}

#[test]
fn a_full_hot_list_takes_no_more() {
    let mut t = T::new(&[(GIB, 256)]);
    let pages: Vec<PhysAddr> = (0..2 * HOT_CAP + 2)
        .map(|_| t.a.alloc(0, Constraint::ANY).unwrap())
        .collect();
    t.a.drain_hot(); // what is left of the last refill
    // Evens only: every buddy stays in use, so every free parks.
    let evens: Vec<PhysAddr> = pages.iter().copied().filter(|p| p.0 & 4096 == 0).collect();
    for &p in &evens[..HOT_CAP] {
        t.a.free(p, 0).unwrap();
    }
    assert_eq!(hot(&t), HOT_CAP as u64);
    // The list is full: the next page goes to the buddy lists.
    let next = evens[HOT_CAP];
    t.a.free(next, 0).unwrap();
    assert_eq!(hot(&t), HOT_CAP as u64);
    assert!(
        t.a.free_blocks()
            .any(|b| !b.hot && b.addr == next && b.order == 0)
    );
    assert!(t.a.free_blocks().any(|b| b.hot && b.addr == evens[0]));
    assert_eq!(t.free(), 256 - pages.len() as u64 + HOT_CAP as u64 + 1);
    // The newest parked page is handed out first.
    assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(evens[HOT_CAP - 1]));
}

#[test]
fn a_full_hot_list_makes_room_for_an_aligned_page() {
    // No parked page below will be 2 MiB aligned.
    let mut t = T::new(&[(8 * GIB + (1 << 20), 1024)]);
    let pages: Vec<PhysAddr> = (0..2 * HOT_CAP)
        .map(|_| t.a.alloc(0, Constraint::ANY).unwrap())
        .collect();
    t.a.drain_hot(); // what is left of the last refill
    for p in pages.iter().filter(|p| p.0 & 4096 == 0) {
        t.a.free(*p, 0).unwrap();
    }
    assert_eq!(hot(&t), HOT_CAP as u64);
    // An aligned page is parked anyway: the older half goes to the buddy.
    let a = t.a.alloc_aligned(1, 2 << 20, Constraint::ANY).unwrap();
    assert_eq!(hot(&t), HOT_CAP as u64);
    t.a.free_pages(a, 1).unwrap();
    assert_eq!(hot(&t), (HOT_CAP / 2 + 1) as u64);
    assert!(t.a.free_blocks().any(|b| b.hot && b.addr == a));
    assert!(!t.a.free_blocks().any(|b| b.hot && b.addr == pages[0]));
}

#[test]
fn parked_pages_are_poisoned_and_checked() {
    let ram = Ram::new(GIB, 8);
    let mut t = T::new(&[(GIB, 8)]);
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    let q = t.a.alloc(0, Constraint::ANY).unwrap();
    t.a.drain_hot(); // the refill's other pages
    t.a.free(q, 0).unwrap();
    assert_eq!(hot(&t), 1);
    t.poison(ram, false);
    assert_eq!(
        t.ram().byte(q.0 + 100),
        POISON_BYTE,
        "parked page poisoned when enabled"
    );
    t.ram().poke(q.0 + 100, 7);
    assert_eq!(
        t.a.alloc(0, Constraint::ANY),
        Err(Error::Corrupted {
            frame: q,
            offset: 100,
            found: 7
        })
    );
    t.a.free(p, 0).unwrap();
    t.a.drain_hot();
    assert_eq!(t.free(), 8);
}

#[test]
fn a_single_page_request_refills_the_hot_list() {
    // Normal zone, so the request takes the direct path (no fallback).
    let mut t = T::new(&[(8 * GIB, 64)]);
    let r = (1u64 << REFILL_ORDER) - 1;
    let p = t.a.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(p, PhysAddr(8 * GIB));
    assert_eq!((hot(&t), t.free()), (r, 63));
    // The parked pages are free, never allocated: bad frees change nothing.
    let n = PhysAddr(p.0 + 4096);
    assert_eq!(
        t.a.page_state(n),
        Ok(PageState::Free { block: n, order: 0 })
    );
    rejects(&mut t, Error::DoubleFree, |a| a.free(n, 0));
    // They come out in address order, without touching the buddy lists.
    // (Parked pages count as free blocks of order 0 in the statistics.)
    let lists = t.a.stats().zone(Zone::Normal).free_blocks;
    for i in 1..=r {
        assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(PhysAddr(p.0 + i * 4096)));
    }
    let after = t.a.stats().zone(Zone::Normal).free_blocks;
    assert_eq!((after[0], &after[1..]), (lists[0] - r, &lists[1..]));
    assert_eq!(hot(&t), 0);
    // A parked page can still be reserved.
    let q = t.a.alloc(0, Constraint::ANY).unwrap();
    let parked = PhysAddr(q.0 + 4096);
    t.a.reserve_range(parked, 1).unwrap();
    assert_eq!(hot(&t), r - 1);
    assert_eq!(
        t.a.page_state(parked),
        Ok(PageState::Allocated { pages: 1 })
    );
}

#[test]
fn a_refill_takes_at_most_the_smallest_free_block() {
    // 4 free pages in one block: the refill parks the other 3.
    let mut t = T::new(&[(8 * GIB, 4)]);
    t.a.alloc(0, Constraint::ANY).unwrap();
    assert_eq!((hot(&t), t.free()), (3, 3));
    // No refill while a single page is free, nor below a limit.
    let mut t = T::new(&[(GIB, 3)]); // blocks of order 1 and 0
    assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(PhysAddr(GIB + 2 * 4096)));
    assert_eq!(hot(&t), 0);
    let mut t = T::new(&[(GIB, 64)]);
    let p =
        t.a.alloc(0, Constraint::Below(PhysAddr(GIB + (64 << 12))))
            .unwrap();
    assert_eq!(hot(&t), 0, "a limited request parked pages");
    t.a.free(p, 0).unwrap();
    assert_eq!(t.a.free_blocks().count(), 1);
}

#[test]
fn a_freed_aligned_page_is_parked_for_the_next_aligned_request() {
    // 2 MiB but not 4 MiB aligned, so the first 2 MiB-aligned page is not
    // 4 MiB aligned.
    let mut t = T::new(&[(8 * GIB + (2 << 20), 2048)]);
    let whole: Vec<FreeBlock> = t.a.free_blocks().collect();
    let p = t.a.alloc_aligned(1, 2 << 20, Constraint::ANY).unwrap();
    assert_eq!(p.0 % (2 << 20), 0);
    assert_eq!(t.a.page_state(p), Ok(PageState::Allocated { pages: 1 }));
    // Bad frees of the aligned page are still rejected as before.
    rejects(&mut t, Error::WrongCount { allocated: 1 }, |a| {
        a.free_pages(p, 2)
    });
    rejects(&mut t, Error::WrongCount { allocated: 1 }, |a| a.free(p, 1));
    // Its buddy is free, yet the page is parked, not merged.
    t.a.free_pages(p, 1).unwrap();
    assert_eq!(hot(&t), 1);
    assert_eq!(t.free(), 2048);
    rejects(&mut t, Error::DoubleFree, |a| a.free_pages(p, 1));
    // The next aligned request takes it back without splitting anything.
    let lists = t.a.stats().zone(Zone::Normal).free_blocks;
    assert_eq!(t.a.alloc_aligned(1, 2 << 20, Constraint::ANY), Ok(p));
    assert_eq!(hot(&t), 0);
    let after = t.a.stats().zone(Zone::Normal).free_blocks;
    assert_eq!((after[0] + 1, &after[1..]), (lists[0], &lists[1..]));
    // `free(p, 0)` parks it too; a request for a coarser alignment than
    // the parked page has is served elsewhere.
    t.a.free(p, 0).unwrap();
    assert_eq!(hot(&t), 1);
    let q = t.a.alloc_aligned(1, 4 << 20, Constraint::ANY).unwrap();
    assert_eq!(q.0 % (4 << 20), 0);
    assert_ne!(q, p);
    assert_eq!(hot(&t), 1);
    t.a.free_pages(q, 1).unwrap();
    // Merged back like any parked page.
    t.a.drain_hot();
    assert_eq!(hot(&t), 0);
    assert_eq!(t.a.free_blocks().collect::<Vec<_>>(), whole);
}

#[test]
fn an_aligned_page_freed_in_bulk_merges() {
    let mut t = T::new(&[(8 * GIB, 1024)]);
    let p = t.a.alloc_aligned(1, 1 << 20, Constraint::ANY).unwrap();
    t.a.free_bulk(&[p]).unwrap();
    assert_eq!(hot(&t), 0);
    assert_eq!(t.a.free_blocks().count(), 1);
}

#[test]
fn an_aligned_request_looks_past_a_newer_unaligned_parked_page() {
    let mut t = T::new(&[(8 * GIB, 1024)]);
    let p = t.a.alloc_aligned(1, MIB as usize, Constraint::ANY).unwrap();
    let q = t.a.alloc(0, Constraint::ANY).unwrap();
    assert_eq!(q.0, p.0 + 4096);
    t.a.free_pages(p, 1).unwrap();
    t.a.free(q, 0).unwrap(); // its buddy is parked: parked too, newest
    assert_eq!(hot(&t), 2);
    assert_eq!(t.a.alloc_aligned(1, MIB as usize, Constraint::ANY), Ok(p));
    assert_eq!(hot(&t), 1);
    assert_eq!(t.a.alloc(0, Constraint::ANY), Ok(q));
}

#[test]
fn a_freed_aligned_page_is_poisoned() {
    let ram = Ram::new(8 * GIB, 8);
    let mut t = T::new(&[(8 * GIB, 8)]);
    t.poison(ram, false);
    let p = t.a.alloc_aligned(1, 8192, Constraint::ANY).unwrap();
    t.ram().poke(p.0 + 100, 7);
    t.a.free_pages(p, 1).unwrap();
    assert_eq!((hot(&t), t.ram().byte(p.0 + 100)), (1, POISON_BYTE));
    assert_eq!(t.a.alloc_aligned(1, 8192, Constraint::ANY), Ok(p));
}
