//! Tests of the lazy initialisation of a section's metadata: chunk
//! sizing, pending sections, incremental initialisation.

use super::{MAX_CHUNKS, MIN_CHUNK_SHIFT, chunk_shift_for};
use crate::buddy::test_support::{Fixture, GARBAGE, GIB, MIB, on_garbage_metadata};
use crate::{BuddyAllocator, Constraint, Error, PhysAddr};

#[test]
fn chunk_shift_is_the_smallest_that_fits() {
    let count_up = |base: u64, pages: u64| {
        (MIN_CHUNK_SHIFT..64)
            .find(|&shift| ((base + pages - 1) >> shift) - (base >> shift) < MAX_CHUNKS)
            .unwrap()
    };
    for pages in [
        1,
        2,
        2047,
        2048,
        2049,
        1 << 17,
        (1 << 20) + 1,
        (1 << 28) - 1,
    ] {
        for base in [0, 1, 63, 64 * 2047, 1 << 20, (1 << 20) + 5] {
            assert_eq!(
                chunk_shift_for(base, pages),
                count_up(base, pages),
                "{base} {pages}"
            );
        }
    }
}

#[test]
fn chunk_shift_bounds() {
    // 4 GiB, aligned: 2^20 pages -> 512-page chunks.
    assert_eq!(chunk_shift_for(1 << 20, 1 << 20), 9);
    assert_eq!(chunk_shift_for(0, 100), MIN_CHUNK_SHIFT);
    let shift = chunk_shift_for(3, (1 << 28) - 1);
    assert!((((3 + (1u64 << 28) - 2) >> shift) - (3 >> shift) + 1) <= MAX_CHUNKS);
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
    let mut t = Fixture::new(&[(4 * GIB + 3 * 4096, big), (16 * MIB - 40 * 4096, 1000)]);
    let probes: Vec<PhysAddr> = (0..200u64)
        .map(|i| PhysAddr(4 * GIB + 3 * 4096 + i * i * i * 4096 * 2003 % (big * 4096)))
        .chain((0..1000u64).map(|i| PhysAddr(16 * MIB - 40 * 4096 + i * 4096)))
        .collect();
    let states =
        |a: &BuddyAllocator| -> Vec<_> { probes.iter().map(|&p| a.page_state(p)).collect() };
    let (before, pstates) = (t.snap(), states(&t.buddy));
    assert_eq!(before.0.free_pages(), big + 1000);
    t.buddy.materialise_all();
    assert_eq!(t.snap(), before);
    assert_eq!(states(&t.buddy), pstates);
    // And pending sections answer bad frees as materialised ones do.
    let mut u = Fixture::new(&[(4 * GIB, 64)]);
    assert_eq!(
        u.buddy.free(PhysAddr(4 * GIB + 4096), 0),
        Err(Error::DoubleFree)
    );
    assert_eq!(
        u.buddy.free_pages(PhysAddr(4 * GIB), 3),
        Err(Error::DoubleFree)
    );
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
