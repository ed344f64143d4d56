//! Tests of registering and removing sections and of the metadata they
//! need.

use core::ptr::NonNull;

use crate::buddy::test_support::{Fixture, GIB, rejects};
use crate::{
    BuddyAllocator, Constraint, Error, MAX_PHYS_ADDR, MAX_SECTION_PAGES, MAX_SECTIONS, PhysAddr,
    Zone, carve_metadata, metadata_bytes,
};

#[test]
fn add_section_errors() {
    let mut t = Fixture::new(&[(GIB, 64)]);
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
#[cfg_attr(miri, ignore)] // fills every section slot: slow under Miri
fn too_many_sections() {
    let mut t = Fixture::new(&[]);
    for i in 0..MAX_SECTIONS as u64 {
        t.add(GIB + i * 2 * 4096, 1).unwrap();
    }
    rejects(&mut t, Error::TooManySections, |a| {
        a.add_section_static(PhysAddr(2 * GIB), 1, vec![0u64; 1].leak())
    });
    // A straddling section needing two slots is refused whole when one is left.
    t.buddy.remove_section(PhysAddr(GIB)).unwrap();
    rejects(&mut t, Error::TooManySections, |a| {
        a.add_section_static(PhysAddr(4 * GIB - 4096), 2, vec![0u64; 2].leak())
    });
}

#[test]
fn carve_metadata_fits() {
    for pages in [2u64, 3, 100, 513, 1 << 20] {
        let carved = carve_metadata(PhysAddr(GIB), pages).unwrap();
        assert_eq!(carved.meta_pages + carved.pages, pages);
        assert!(carved.meta_pages * 4096 >= metadata_bytes(carved.pages) as u64);
        // Minimal: one page fewer would not do.
        assert!((carved.meta_pages - 1) * 4096 < metadata_bytes(carved.pages + 1) as u64);
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
    let carved = carve_metadata(PhysAddr(MAX_PHYS_ADDR - 10 * 4096), 10).unwrap();
    assert_eq!(carved.start.0 + carved.pages * 4096, MAX_PHYS_ADDR);
    // More managed pages than a section holds.
    let big = MAX_SECTION_PAGES + MAX_SECTION_PAGES / 512 + 2;
    assert_eq!(
        carve_metadata(PhysAddr(0), big),
        Err(Error::SectionTooLarge)
    );
    let carved = carve_metadata(PhysAddr(0), big - 2).unwrap();
    assert!(carved.pages <= MAX_SECTION_PAGES);
}

#[test]
fn hot_add_and_remove() {
    let mut t = Fixture::new(&[(GIB, 32)]);
    t.add(4 * GIB - 16 * 4096, 32).unwrap(); // two pieces
    assert_eq!(t.free(), 64);
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
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
    t.buddy.free(p, 0).unwrap();
    let r = t
        .buddy
        .remove_section(PhysAddr(4 * GIB - 16 * 4096))
        .unwrap();
    assert_eq!(r.pages, 32);
    assert_eq!(r.meta.as_ptr(), t.metas[1].as_mut_ptr().cast::<u8>());
    assert_eq!(r.meta_bytes, 256);
    assert_eq!(t.free(), 32);
    assert_eq!(t.buddy.stats().zone(Zone::Normal).managed_pages, 0);
    assert_eq!(t.buddy.free(p, 0), Err(Error::NotInSection));
    // Re-add at the same place.
    t.add(4 * GIB - 16 * 4096, 32).unwrap();
    assert_eq!(t.free(), 64);
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
    assert!(
        best < 20_000,
        "registering 4 GiB took {best} ns, best of 20"
    );
}
