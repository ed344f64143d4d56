//! Every bad call from the list is rejected with a specific error
//! and leaves the allocator exactly as it was. Meant for release builds
//! (`cargo test -p allocator --release --test bad_calls`), where no
//! `debug_assert!` can help; it runs in debug builds too.

use allocator::*;
use std::ptr::NonNull;

const GIB: u64 = 1 << 30;

/// A named bad call and the error it must get.
type Case = (
    &'static str,
    Error,
    Box<dyn Fn(&mut BuddyAllocator) -> Result<(), Error>>,
);

/// Everything observable: statistics, free lists in list order, the state
/// of every managed page, and the sections.
#[derive(PartialEq, Debug)]
struct Snapshot {
    stats: Stats,
    free: Vec<FreeBlock>,
    pages: Vec<Result<PageState, Error>>,
    sections: Vec<SectionInfo>,
}

fn snapshot(a: &BuddyAllocator) -> Snapshot {
    let sections: Vec<SectionInfo> = a.sections().collect();
    let mut pages = Vec::new();
    for s in &sections {
        for i in 0..s.pages {
            pages.push(a.page_state(PhysAddr(s.start.0 + i * 4096)));
        }
    }
    Snapshot {
        stats: a.stats(),
        free: a.free_blocks().collect(),
        pages,
        sections,
    }
}

#[test]
fn every_bad_call_is_rejected_and_changes_nothing() {
    println!("debug assertions: {}", cfg!(debug_assertions));
    let mut metas = [vec![0u64; 700], vec![0u64; 300]];
    let mut a = Box::new(BuddyAllocator::new());
    // SAFETY: the buffers outlive `a` and are only used through it.
    unsafe {
        a.add_section(
            PhysAddr(GIB + 4096),
            700,
            NonNull::new(metas[0].as_mut_ptr().cast()).unwrap(),
            5600,
        )
        .unwrap();
        a.add_section(
            PhysAddr(4 * GIB - 100 * 4096),
            300,
            NonNull::new(metas[1].as_mut_ptr().cast()).unwrap(),
            2400,
        )
        .unwrap();
    }
    // Populate: blocks, exact runs, a reserved range, singles; free some.
    let b4 = a.alloc(4, Constraint::ANY).unwrap();
    let run = a.alloc_pages(5, Constraint::Zone(Zone::Dma32)).unwrap();
    let al = a.alloc_aligned(1, 64 << 10, Constraint::ANY).unwrap();
    a.reserve_range(PhysAddr(GIB + 301 * 4096), 33).unwrap();
    let mut singles = [PhysAddr(0); 20];
    a.alloc_bulk(Constraint::ANY, &mut singles).unwrap();
    let freed = a.alloc(2, Constraint::ANY).unwrap();
    a.free(freed, 2).unwrap();
    a.free_bulk(&singles[10..]).unwrap();
    let free_page = singles[15];
    assert!(matches!(
        a.page_state(free_page),
        Ok(PageState::Free { .. })
    ));

    /// Registration that is always rejected in these cases (asserted), so
    /// the buffer is never used.
    fn add(
        a: &mut BuddyAllocator,
        start: u64,
        pages: u64,
        meta: NonNull<u8>,
        bytes: usize,
    ) -> Result<(), Error> {
        // SAFETY: `meta` points to a live 64-word buffer that nothing else
        // uses; every call here is rejected before it is touched.
        unsafe { a.add_section(PhysAddr(start), pages, meta, bytes) }
    }
    let mut other = vec![0u64; 64];
    let optr = NonNull::new(other.as_mut_ptr().cast::<u8>()).unwrap();
    let cases: Vec<Case> = vec![
        (
            "double free (block)",
            Error::DoubleFree,
            Box::new(move |a| a.free(freed, 2)),
        ),
        (
            "double free (single)",
            Error::DoubleFree,
            Box::new(move |a| a.free(free_page, 0)),
        ),
        (
            "double free in bulk",
            Error::DoubleFree,
            Box::new(move |a| a.free_bulk(&[singles[0], singles[0]]).map_err(|e| e.error)),
        ),
        (
            "freed frame in bulk",
            Error::DoubleFree,
            Box::new(move |a| a.free_bulk(&[singles[0], free_page]).map_err(|e| e.error)),
        ),
        (
            "interior page of block",
            Error::InteriorPage,
            Box::new(move |a| a.free(PhysAddr(b4.0 + 3 * 4096), 0)),
        ),
        (
            "interior page of run",
            Error::InteriorPage,
            Box::new(move |a| a.free_pages(PhysAddr(run.0 + 4096), 4)),
        ),
        (
            "interior page of range",
            Error::InteriorPage,
            Box::new(|a| a.free_pages(PhysAddr(GIB + 320 * 4096), 1)),
        ),
        (
            "wrong order",
            Error::WrongCount { allocated: 16 },
            Box::new(move |a| a.free(b4, 3)),
        ),
        (
            "wrong count",
            Error::WrongCount { allocated: 5 },
            Box::new(move |a| a.free_pages(run, 8)),
        ),
        (
            "wrong count of range",
            Error::WrongCount { allocated: 33 },
            Box::new(|a| a.free_pages(PhysAddr(GIB + 301 * 4096), 32)),
        ),
        (
            "misaligned address",
            Error::Misaligned,
            Box::new(move |a| a.free(PhysAddr(b4.0 + 12), 0)),
        ),
        (
            "misaligned for order",
            Error::Misaligned,
            Box::new(move |a| a.free(PhysAddr(al.0 | 4096), 5)),
        ),
        (
            "outside every section",
            Error::NotInSection,
            Box::new(|a| a.free(PhysAddr(2 * GIB), 0)),
        ),
        (
            "outside, in bulk",
            Error::NotInSection,
            Box::new(move |a| a.free_bulk(&[singles[1], PhysAddr(0)]).map_err(|e| e.error)),
        ),
        (
            "beyond max order (free)",
            Error::TooLarge,
            Box::new(move |a| a.free(b4, 19)),
        ),
        (
            "beyond max order (alloc)",
            Error::TooLarge,
            Box::new(|a| a.alloc(19, Constraint::ANY).map(|_| ())),
        ),
        (
            "count beyond max order",
            Error::TooLarge,
            Box::new(|a| a.alloc_pages((1 << 18) + 1, Constraint::ANY).map(|_| ())),
        ),
        (
            "alignment beyond max order",
            Error::TooLarge,
            Box::new(|a| a.alloc_aligned(1, 1 << 31, Constraint::ANY).map(|_| ())),
        ),
        (
            "alignment not a power of two",
            Error::BadAlignment,
            Box::new(|a| a.alloc_aligned(1, 12288, Constraint::ANY).map(|_| ())),
        ),
        (
            "zero count alloc",
            Error::ZeroCount,
            Box::new(|a| a.alloc_pages(0, Constraint::ANY).map(|_| ())),
        ),
        (
            "zero count free",
            Error::ZeroCount,
            Box::new(move |a| a.free_pages(run, 0)),
        ),
        (
            "zero count bulk alloc",
            Error::ZeroCount,
            Box::new(|a| a.alloc_bulk(Constraint::ANY, &mut []).map(|_| ())),
        ),
        (
            "zero count bulk free",
            Error::ZeroCount,
            Box::new(|a| a.free_bulk(&[]).map_err(|e| e.error)),
        ),
        (
            "zero count reserve",
            Error::ZeroCount,
            Box::new(|a| a.reserve_range(PhysAddr(GIB + 4096), 0)),
        ),
        (
            "reserve in use",
            Error::RangeInUse,
            Box::new(|a| a.reserve_range(PhysAddr(GIB + 290 * 4096), 20)),
        ),
        (
            "reserve across sections",
            Error::RangeCrossesSection,
            Box::new(|a| a.reserve_range(PhysAddr(GIB + 690 * 4096), 20)),
        ),
        (
            "reserve across zones",
            Error::RangeCrossesSection,
            Box::new(|a| a.reserve_range(PhysAddr(4 * GIB - 4096), 2)),
        ),
        (
            "out of memory",
            Error::OutOfMemory,
            Box::new(|a| a.alloc(12, Constraint::ANY).map(|_| ())),
        ),
        (
            "out of memory below limit",
            Error::OutOfMemory,
            Box::new(|a| a.alloc(0, Constraint::Below(PhysAddr(GIB))).map(|_| ())),
        ),
        (
            "zero-page section",
            Error::ZeroCount,
            Box::new(move |a| add(a, 8 * GIB, 0, optr, 512)),
        ),
        (
            "misaligned section",
            Error::Misaligned,
            Box::new(move |a| add(a, 8 * GIB + 1, 8, optr, 512)),
        ),
        (
            "overlapping section",
            Error::SectionOverlap,
            Box::new(move |a| add(a, GIB, 8, optr, 512)),
        ),
        (
            "wrapping section",
            Error::SectionWraps,
            Box::new(move |a| add(a, !4095, 8, optr, 512)),
        ),
        (
            "section beyond 2^52",
            Error::SectionWraps,
            Box::new(move |a| add(a, (1 << 52) - 4096, 8, optr, 512)),
        ),
        (
            "too-small metadata",
            Error::MetadataTooSmall,
            Box::new(move |a| add(a, 8 * GIB, 64, optr, 511)),
        ),
        (
            "too-large section",
            Error::SectionTooLarge,
            Box::new(move |a| add(a, 8 * GIB, 1 << 28, optr, 512)),
        ),
        (
            "misaligned metadata",
            Error::MetadataMisaligned,
            Box::new(move |a| {
                add(
                    a,
                    8 * GIB,
                    8,
                    NonNull::new(optr.as_ptr().wrapping_add(1)).unwrap(),
                    64,
                )
            }),
        ),
        (
            "remove section in use",
            Error::SectionInUse,
            Box::new(|a| a.remove_section(PhysAddr(GIB + 4096)).map(|_| ())),
        ),
        (
            "remove unknown section",
            Error::NoSuchSection,
            Box::new(|a| a.remove_section(PhysAddr(GIB)).map(|_| ())),
        ),
    ];
    let n = cases.len();
    for (name, want, call) in cases {
        let before = snapshot(&a);
        let got = call(&mut a);
        assert_eq!(got, Err(want), "{name}");
        assert_eq!(snapshot(&a), before, "{name}: state changed");
        println!("rejected unchanged: {name} -> {want:?}");
    }
    println!("{n} bad calls rejected, state unchanged");
    // Still fully usable afterwards.
    a.free(b4, 4).unwrap();
    a.free_pages(run, 5).unwrap();
    a.free_pages(al, 1).unwrap();
    a.free_pages(PhysAddr(GIB + 301 * 4096), 33).unwrap();
    a.free_bulk(&singles[..10]).unwrap();
    assert_eq!(a.stats().free_pages(), 1000);
    drop(other);
}
