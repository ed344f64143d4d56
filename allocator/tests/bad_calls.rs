//! Every bad call in the specification's list is rejected with a specific error
//! and leaves the allocator exactly as it was. Meant for release builds
//! (`cargo test -p framekeep --release --test bad_calls`), where no
//! `debug_assert!` can help; it runs in debug builds too.

use framekeep::*;
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

fn snapshot(alloc: &BuddyAllocator) -> Snapshot {
    let sections: Vec<SectionInfo> = alloc.sections().collect();
    let mut pages = Vec::new();
    for section in &sections {
        for i in 0..section.pages {
            pages.push(alloc.page_state(PhysAddr(section.start.0 + i * 4096)));
        }
    }
    Snapshot {
        stats: alloc.stats(),
        free: alloc.free_blocks().collect(),
        pages,
        sections,
    }
}

#[test]
fn every_bad_call_is_rejected_and_changes_nothing() {
    println!("debug assertions: {}", cfg!(debug_assertions));
    let mut metas = [vec![0u64; 700], vec![0u64; 300]];
    let mut alloc = Box::new(BuddyAllocator::new());
    // SAFETY: the buffers outlive `alloc` and are only used through it.
    unsafe {
        alloc
            .add_section(
                PhysAddr(GIB + 4096),
                700,
                NonNull::new(metas[0].as_mut_ptr().cast()).unwrap(),
                5600,
            )
            .unwrap();
        alloc
            .add_section(
                PhysAddr(4 * GIB - 100 * 4096),
                300,
                NonNull::new(metas[1].as_mut_ptr().cast()).unwrap(),
                2400,
            )
            .unwrap();
    }
    // Populate: blocks, exact runs, a reserved range, singles; free some.
    let b4 = alloc.alloc(4, Constraint::ANY).unwrap();
    let run = alloc.alloc_pages(5, Constraint::Zone(Zone::Dma32)).unwrap();
    let al = alloc.alloc_aligned(1, 64 << 10, Constraint::ANY).unwrap();
    alloc.reserve_range(PhysAddr(GIB + 301 * 4096), 33).unwrap();
    let mut singles = [PhysAddr(0); 20];
    alloc.alloc_bulk(Constraint::ANY, &mut singles).unwrap();
    let freed = alloc.alloc(2, Constraint::ANY).unwrap();
    alloc.free(freed, 2).unwrap();
    alloc.free_bulk(&singles[10..]).unwrap();
    let free_page = singles[15];
    assert!(matches!(
        alloc.page_state(free_page),
        Ok(PageState::Free { .. })
    ));

    /// Registration that is always rejected in these cases (asserted), so
    /// the buffer is never used.
    fn add(
        alloc: &mut BuddyAllocator,
        start: u64,
        pages: u64,
        meta: NonNull<u8>,
        bytes: usize,
    ) -> Result<(), Error> {
        // SAFETY: `meta` points to a live 64-word buffer that nothing else
        // uses; every call here is rejected before it is touched.
        unsafe { alloc.add_section(PhysAddr(start), pages, meta, bytes) }
    }
    let mut other = vec![0u64; 64];
    let optr = NonNull::new(other.as_mut_ptr().cast::<u8>()).unwrap();
    let cases: Vec<Case> = vec![
        (
            "double free (block)",
            Error::DoubleFree,
            Box::new(move |alloc| alloc.free(freed, 2)),
        ),
        (
            "double free (single)",
            Error::DoubleFree,
            Box::new(move |alloc| alloc.free(free_page, 0)),
        ),
        (
            "double free in bulk",
            Error::DoubleFree,
            Box::new(move |alloc| {
                alloc
                    .free_bulk(&[singles[0], singles[0]])
                    .map_err(|error| error.error)
            }),
        ),
        (
            "freed frame in bulk",
            Error::DoubleFree,
            Box::new(move |alloc| {
                alloc
                    .free_bulk(&[singles[0], free_page])
                    .map_err(|error| error.error)
            }),
        ),
        (
            "interior page of block",
            Error::InteriorPage,
            Box::new(move |alloc| alloc.free(PhysAddr(b4.0 + 3 * 4096), 0)),
        ),
        (
            "interior page of run",
            Error::InteriorPage,
            Box::new(move |alloc| alloc.free_pages(PhysAddr(run.0 + 4096), 4)),
        ),
        (
            "interior page of range",
            Error::InteriorPage,
            Box::new(|alloc| alloc.free_pages(PhysAddr(GIB + 320 * 4096), 1)),
        ),
        (
            "wrong order",
            Error::WrongCount { allocated: 16 },
            Box::new(move |alloc| alloc.free(b4, 3)),
        ),
        (
            "wrong count",
            Error::WrongCount { allocated: 5 },
            Box::new(move |alloc| alloc.free_pages(run, 8)),
        ),
        (
            "wrong count of range",
            Error::WrongCount { allocated: 33 },
            Box::new(|alloc| alloc.free_pages(PhysAddr(GIB + 301 * 4096), 32)),
        ),
        (
            "misaligned address",
            Error::Misaligned,
            Box::new(move |alloc| alloc.free(PhysAddr(b4.0 + 12), 0)),
        ),
        (
            "misaligned for order",
            Error::Misaligned,
            Box::new(move |alloc| alloc.free(PhysAddr(al.0 | 4096), 5)),
        ),
        (
            "outside every section",
            Error::NotInSection,
            Box::new(|alloc| alloc.free(PhysAddr(2 * GIB), 0)),
        ),
        (
            "outside, in bulk",
            Error::NotInSection,
            Box::new(move |alloc| {
                alloc
                    .free_bulk(&[singles[1], PhysAddr(0)])
                    .map_err(|error| error.error)
            }),
        ),
        (
            "beyond max order (free)",
            Error::TooLarge,
            Box::new(move |alloc| alloc.free(b4, 19)),
        ),
        (
            "beyond max order (alloc)",
            Error::TooLarge,
            Box::new(|alloc| alloc.alloc(19, Constraint::ANY).map(|_| ())),
        ),
        (
            "count beyond max order",
            Error::TooLarge,
            Box::new(|alloc| {
                alloc
                    .alloc_pages((1 << 18) + 1, Constraint::ANY)
                    .map(|_| ())
            }),
        ),
        (
            "alignment beyond max order",
            Error::TooLarge,
            Box::new(|alloc| alloc.alloc_aligned(1, 1 << 31, Constraint::ANY).map(|_| ())),
        ),
        (
            "alignment not a power of two",
            Error::BadAlignment,
            Box::new(|alloc| alloc.alloc_aligned(1, 12288, Constraint::ANY).map(|_| ())),
        ),
        (
            "zero count alloc",
            Error::ZeroCount,
            Box::new(|alloc| alloc.alloc_pages(0, Constraint::ANY).map(|_| ())),
        ),
        (
            "zero count free",
            Error::ZeroCount,
            Box::new(move |alloc| alloc.free_pages(run, 0)),
        ),
        (
            "zero count bulk alloc",
            Error::ZeroCount,
            Box::new(|alloc| alloc.alloc_bulk(Constraint::ANY, &mut []).map(|_| ())),
        ),
        (
            "zero count bulk free",
            Error::ZeroCount,
            Box::new(|alloc| alloc.free_bulk(&[]).map_err(|error| error.error)),
        ),
        (
            "zero count reserve",
            Error::ZeroCount,
            Box::new(|alloc| alloc.reserve_range(PhysAddr(GIB + 4096), 0)),
        ),
        (
            "reserve in use",
            Error::RangeInUse,
            Box::new(|alloc| alloc.reserve_range(PhysAddr(GIB + 290 * 4096), 20)),
        ),
        (
            "reserve across sections",
            Error::RangeCrossesSection,
            Box::new(|alloc| alloc.reserve_range(PhysAddr(GIB + 690 * 4096), 20)),
        ),
        (
            "reserve across zones",
            Error::RangeCrossesSection,
            Box::new(|alloc| alloc.reserve_range(PhysAddr(4 * GIB - 4096), 2)),
        ),
        (
            "out of memory",
            Error::OutOfMemory,
            Box::new(|alloc| alloc.alloc(12, Constraint::ANY).map(|_| ())),
        ),
        (
            "out of memory below limit",
            Error::OutOfMemory,
            Box::new(|alloc| alloc.alloc(0, Constraint::Below(PhysAddr(GIB))).map(|_| ())),
        ),
        (
            "zero-page section",
            Error::ZeroCount,
            Box::new(move |alloc| add(alloc, 8 * GIB, 0, optr, 512)),
        ),
        (
            "misaligned section",
            Error::Misaligned,
            Box::new(move |alloc| add(alloc, 8 * GIB + 1, 8, optr, 512)),
        ),
        (
            "overlapping section",
            Error::SectionOverlap,
            Box::new(move |alloc| add(alloc, GIB, 8, optr, 512)),
        ),
        (
            "wrapping section",
            Error::SectionWraps,
            Box::new(move |alloc| add(alloc, !4095, 8, optr, 512)),
        ),
        (
            "section beyond 2^52",
            Error::SectionWraps,
            Box::new(move |alloc| add(alloc, (1 << 52) - 4096, 8, optr, 512)),
        ),
        (
            "too-small metadata",
            Error::MetadataTooSmall,
            Box::new(move |alloc| add(alloc, 8 * GIB, 64, optr, 511)),
        ),
        (
            "too-large section",
            Error::SectionTooLarge,
            Box::new(move |alloc| add(alloc, 8 * GIB, 1 << 28, optr, 512)),
        ),
        (
            "misaligned metadata",
            Error::MetadataMisaligned,
            Box::new(move |alloc| {
                add(
                    alloc,
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
            Box::new(|alloc| alloc.remove_section(PhysAddr(GIB + 4096)).map(|_| ())),
        ),
        (
            "remove unknown section",
            Error::NoSuchSection,
            Box::new(|alloc| alloc.remove_section(PhysAddr(GIB)).map(|_| ())),
        ),
    ];
    let n = cases.len();
    for (name, want, call) in cases {
        let before = snapshot(&alloc);
        let got = call(&mut alloc);
        assert_eq!(got, Err(want), "{name}");
        assert_eq!(snapshot(&alloc), before, "{name}: state changed");
        println!("rejected unchanged: {name} -> {want:?}");
    }
    println!("{n} bad calls rejected, state unchanged");
    // Still fully usable afterwards.
    alloc.free(b4, 4).unwrap();
    alloc.free_pages(run, 5).unwrap();
    alloc.free_pages(al, 1).unwrap();
    alloc.free_pages(PhysAddr(GIB + 301 * 4096), 33).unwrap();
    alloc.free_bulk(&singles[..10]).unwrap();
    assert_eq!(alloc.stats().free_pages(), 1000);
    drop(other);
}

/// A reservation of more pages than the largest block used to be
/// accepted; freeing it then indexed the per-order lists out of bounds (a
/// panic, with the range already written off). Reservations are limited
/// like every other allocation, and no count makes `free_pages` index
/// out of bounds.
#[test]
fn reservations_are_limited_to_the_largest_order() {
    let pages = 1u64 << (MAX_ORDER + 1);
    let start = PhysAddr(1 << 40);
    let mut alloc = Box::new(BuddyAllocator::new());
    alloc
        .add_section_static(start, pages, vec![0u64; pages as usize].leak())
        .unwrap();
    let before = (alloc.stats(), alloc.free_blocks().collect::<Vec<_>>());
    for count in [pages as usize, (1 << MAX_ORDER) + 1, usize::MAX] {
        assert_eq!(
            alloc.reserve_range(start, count),
            Err(Error::TooLarge),
            "{count}"
        );
        let at = PhysAddr(start.0 + 4096);
        assert_eq!(
            alloc.reserve_range(at, count),
            Err(Error::TooLarge),
            "{count}"
        );
    }
    assert_eq!(
        (alloc.stats(), alloc.free_blocks().collect::<Vec<_>>()),
        before
    );
    // The largest reservation there can be, and frees of every bad size.
    alloc.reserve_range(start, 1 << MAX_ORDER).unwrap();
    let held = (alloc.stats(), alloc.free_blocks().collect::<Vec<_>>());
    for count in [
        (1 << MAX_ORDER) + 1,
        pages as usize,
        u32::MAX as usize + 1,
        usize::MAX,
    ] {
        assert_eq!(
            alloc.free_pages(start, count),
            Err(Error::TooLarge),
            "{count}"
        );
    }
    assert_eq!(
        (alloc.stats(), alloc.free_blocks().collect::<Vec<_>>()),
        held
    );
    alloc.free_pages(start, 1 << MAX_ORDER).unwrap();
    assert_eq!(alloc.stats().free_pages(), pages);
}

/// Statistics take any order: above the largest there are no free blocks
/// (this indexed out of bounds), and hand-made values (the fields are
/// public) never overflow.
#[test]
fn statistics_take_any_order_and_any_values() {
    let alloc = framekeep::doc_allocator!(64);
    let stats = alloc.stats();
    for order in [MAX_ORDER + 1, 32, 64, u32::MAX] {
        assert_eq!(stats.free_blocks(order), 0, "{order}");
        assert_eq!(stats.zone(Zone::Dma32).free_pages_at_least(order), 0);
        assert_eq!(stats.fragmentation_permille(order), 1000);
    }
    let mut odd = stats;
    for zone in &mut odd.zones {
        zone.managed_pages = 1;
        zone.free_pages = u64::MAX;
        zone.hot_pages = u64::MAX;
        zone.free_blocks = [u64::MAX; NR_ORDERS];
    }
    assert_eq!(odd.free_pages(), u64::MAX);
    assert_eq!(odd.used_pages(), 0);
    assert_eq!(odd.zone(Zone::Dma).used_pages(), 0);
    assert_eq!(odd.free_blocks(0), u64::MAX);
    for order in [0, 9, MAX_ORDER, u32::MAX] {
        assert!(odd.fragmentation_permille(order) <= 1000);
        assert!(odd.zone(Zone::Normal).fragmentation_permille(order) <= 1000);
    }
    assert!(!format!("{odd}").is_empty());
    let block = FreeBlock {
        addr: PhysAddr(0),
        order: u32::MAX,
        zone: Zone::Dma,
        hot: false,
    };
    assert_eq!(block.pages(), u64::MAX);
}

// ----------------------------------------------------------------------
// Extreme arguments to every safe function
// ----------------------------------------------------------------------

use proptest::prelude::*;

/// Two sections (Normal at 8 GiB + 1 page, DMA32 at 1 GiB), allocations of
/// every kind, freed blocks and parked ones. Returns it and live
/// addresses to aim at.
fn populated() -> (Box<BuddyAllocator>, Vec<PhysAddr>) {
    let mut alloc = Box::new(BuddyAllocator::new());
    alloc
        .add_section_static(PhysAddr(8 * GIB + 4096), 300, vec![0u64; 300].leak())
        .unwrap();
    alloc
        .add_section_static(PhysAddr(GIB), 200, vec![0u64; 200].leak())
        .unwrap();
    let mut live = vec![
        alloc.alloc(3, Constraint::ANY).unwrap(),
        alloc.alloc_pages(5, Constraint::Zone(Zone::Dma32)).unwrap(),
        alloc.alloc_aligned(1, 64 << 10, Constraint::ANY).unwrap(),
    ];
    alloc.reserve_range(PhysAddr(GIB + 150 * 4096), 9).unwrap();
    live.push(PhysAddr(GIB + 150 * 4096));
    let mut frames = [PhysAddr(0); 12];
    alloc.alloc_bulk(Constraint::ANY, &mut frames).unwrap();
    // Every other one freed: parked next to busy buddies.
    for frame in frames.iter().step_by(2) {
        alloc.free(*frame, 0).unwrap();
    }
    live.extend(frames.iter().skip(1).step_by(2));
    assert!(alloc.stats().zones.iter().any(|zone| zone.hot_pages != 0));
    (alloc, live)
}

/// Values at the ends of the range of a `u64`, and around the allocator's
/// own limits.
fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(4095),
        Just(4096),
        Just((1 << MAX_ORDER) + 1),
        Just(u32::MAX as u64),
        Just(u32::MAX as u64 + 1),
        Just(MAX_SECTION_PAGES),
        Just(MAX_SECTION_PAGES + 1),
        Just(MAX_PHYS_ADDR - 4096),
        Just(MAX_PHYS_ADDR),
        Just(1 << 63),
        Just(u64::MAX - 4095),
        Just(!4095u64),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

/// An address that lies in no section (the sections are near 1 and 8 GiB).
fn bad_addr() -> impl Strategy<Value = u64> {
    edge_u64().prop_filter("outside the sections", |&addr| {
        !(GIB..9 * GIB).contains(&addr)
    })
}

/// A count no allocation has: zero, or above 2^MAX_ORDER pages.
fn bad_count() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        edge_u64().prop_map(|count| count.max((1 << MAX_ORDER) + 1) as usize),
    ]
}

/// An order above the largest.
fn bad_order() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(MAX_ORDER + 1),
        Just(31),
        Just(32),
        Just(63),
        Just(64),
        Just(u32::MAX),
        MAX_ORDER + 1..
    ]
}

/// An alignment that is not a power of two, or one above 1 GiB.
fn bad_align() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(3),
        Just(12288),
        Just(usize::MAX),
        Just(1 << 31),
        Just(1 << 63),
        any::<usize>().prop_filter("not a valid alignment", |&align| !align.is_power_of_two()
            || align > 1 << 30),
    ]
}

fn any_constraint() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        (0usize..3).prop_map(|zone| Constraint::Zone(Zone::ALL[zone])),
        edge_u64().prop_map(|limit| Constraint::Below(PhysAddr(limit))),
    ]
}

/// A limit below which no page fits.
fn below_a_page() -> impl Strategy<Value = Constraint> {
    prop_oneof![Just(0u64), Just(1), Just(4095)]
        .prop_map(|limit| Constraint::Below(PhysAddr(limit)))
}

/// A call that must fail, with what makes it bad.
#[derive(Clone, Debug)]
enum BadCall {
    Alloc(u32, Constraint),
    AllocBelowAPage(u32, Constraint),
    Free(u64, u32),
    FreeOutside(u64, u32),
    AllocPages(usize, Constraint),
    AllocAligned(usize, usize, Constraint),
    AllocAlignedCount(usize, Constraint),
    FreePages(u64, usize),
    FreeLivePages(usize, usize),
    Reserve(u64, usize),
    ReserveCount(usize, usize),
    AllocBulk(Constraint, usize),
    FreeBulk(usize, u64),
    PageState(u64),
    Remove(u64),
    AddStatic(u64, u64, usize),
}

fn bad_call() -> impl Strategy<Value = BadCall> {
    prop_oneof![
        (bad_order(), any_constraint()).prop_map(|(order, con)| BadCall::Alloc(order, con)),
        (0..=MAX_ORDER, below_a_page())
            .prop_map(|(order, con)| BadCall::AllocBelowAPage(order, con)),
        (edge_u64(), bad_order()).prop_map(|(addr, order)| BadCall::Free(addr, order)),
        (bad_addr(), 0..=MAX_ORDER).prop_map(|(addr, order)| BadCall::FreeOutside(addr, order)),
        (bad_count(), any_constraint()).prop_map(|(n, con)| BadCall::AllocPages(n, con)),
        (any::<usize>(), bad_align(), any_constraint())
            .prop_map(|(n, al, con)| BadCall::AllocAligned(n, al, con)),
        (bad_count(), any_constraint()).prop_map(|(n, con)| BadCall::AllocAlignedCount(n, con)),
        (bad_addr(), any::<usize>()).prop_map(|(addr, n)| BadCall::FreePages(addr, n)),
        (any::<usize>(), bad_count()).prop_map(|(i, n)| BadCall::FreeLivePages(i, n)),
        (bad_addr(), any::<usize>()).prop_map(|(addr, n)| BadCall::Reserve(addr, n)),
        (0usize..500, bad_count()).prop_map(|(i, n)| BadCall::ReserveCount(i, n)),
        (below_a_page(), 1usize..4).prop_map(|(con, n)| BadCall::AllocBulk(con, n)),
        (any::<usize>(), bad_addr()).prop_map(|(i, addr)| BadCall::FreeBulk(i, addr)),
        bad_addr().prop_map(BadCall::PageState),
        edge_u64().prop_map(BadCall::Remove),
        // Zero pages, or more than the metadata (0 to 2 words) covers.
        (
            edge_u64(),
            edge_u64().prop_filter("bad size", |&pages| pages == 0 || pages > 2),
            0usize..3
        )
            .prop_map(|(start, pages, words)| BadCall::AddStatic(start, pages, words)),
    ]
}

/// Runs `call`; returns its error, or `None` for a call that succeeded.
fn run(alloc: &mut BuddyAllocator, live: &[PhysAddr], call: &BadCall) -> Option<Error> {
    let pick = |i: usize| live[i % live.len()];
    let result = match *call {
        BadCall::Alloc(order, con) | BadCall::AllocBelowAPage(order, con) => {
            alloc.alloc(order, con).map(drop)
        }
        BadCall::Free(addr, order) | BadCall::FreeOutside(addr, order) => {
            alloc.free(PhysAddr(addr), order)
        }
        BadCall::AllocPages(n, con) => alloc.alloc_pages(n, con).map(drop),
        BadCall::AllocAligned(n, al, con) => alloc.alloc_aligned(n, al, con).map(drop),
        BadCall::AllocAlignedCount(n, con) => alloc.alloc_aligned(n, 4096, con).map(drop),
        BadCall::FreePages(addr, n) => alloc.free_pages(PhysAddr(addr), n),
        BadCall::FreeLivePages(i, n) => alloc.free_pages(pick(i), n),
        BadCall::Reserve(addr, n) => alloc.reserve_range(PhysAddr(addr), n),
        BadCall::ReserveCount(i, n) => {
            // Any page of either section, free or not.
            let sections: Vec<SectionInfo> = alloc.sections().collect();
            let sec = sections[i % sections.len()];
            let frame = PhysAddr(sec.start.0 + (i as u64 % sec.pages) * 4096);
            alloc.reserve_range(frame, n)
        }
        BadCall::AllocBulk(con, n) => alloc.alloc_bulk(con, &mut vec![PhysAddr(0); n]).map(drop),
        BadCall::FreeBulk(i, addr) => alloc
            .free_bulk(&[pick(i), PhysAddr(addr)])
            .map_err(|error| error.error),
        BadCall::PageState(addr) => alloc.page_state(PhysAddr(addr)).map(drop),
        BadCall::Remove(addr) => alloc.remove_section(PhysAddr(addr)).map(drop),
        BadCall::AddStatic(start, pages, words) => {
            alloc.add_section_static(PhysAddr(start), pages, vec![0u64; words].leak())
        }
    };
    result.err()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Extreme values for every parameter of every safe mutating call:
    /// no panic (in debug builds no arithmetic overflow either), an error,
    /// and nothing changed. An out-of-memory error may merge parked blocks
    /// (see `Error`), so there only the free page count and every
    /// allocation are compared.
    #[test]
    fn extreme_arguments_are_rejected_and_change_nothing(
        calls in proptest::collection::vec(bad_call(), 1..6),
    ) {
        let (mut alloc, live) = populated();
        for call in &calls {
            let before = snapshot(&alloc);
            let err = run(&mut alloc, &live, call);
            prop_assert!(err.is_some(), "{call:?} succeeded");
            let after = snapshot(&alloc);
            if err == Some(Error::OutOfMemory) {
                prop_assert_eq!(after.stats.free_pages(), before.stats.free_pages(), "{:?}", call);
                prop_assert_eq!(&after.sections, &before.sections, "{:?}", call);
                for (old, new) in before.pages.iter().zip(&after.pages) {
                    if !matches!(old, Ok(PageState::Free { .. })) {
                        prop_assert_eq!(old, new, "{:?}", call);
                    }
                }
            } else {
                prop_assert_eq!(after, before, "{:?} -> {:?}", call, err);
            }
        }
    }

    /// The pure functions and queries take any value without a panic and
    /// with a consistent answer.
    #[test]
    fn queries_take_any_value(value in edge_u64(), n in edge_u64(), order in any::<u32>()) {
        let (alloc, _) = populated();
        let stats = alloc.stats();
        prop_assert!(stats.free_blocks(order) <= stats.free_pages());
        prop_assert!(stats.fragmentation_permille(order) <= 1000);
        for zone in &stats.zones {
            prop_assert!(zone.free_pages_at_least(order) <= zone.free_pages);
            prop_assert!(zone.fragmentation_permille(order) <= 1000);
        }
        let _ = alloc.page_state(PhysAddr(value));
        prop_assert_eq!(PhysAddr(value).pfn(), Pfn(value >> 12));
        prop_assert_eq!(PhysAddr::new(value).is_page_aligned(), value % 4096 == 0);
        prop_assert_eq!(Pfn(value).addr().pfn().0, value & ((1 << 52) - 1));
        let zone = Zone::of(PhysAddr(value));
        prop_assert!(zone.start().0 <= value && (value < zone.end().0 || zone == Zone::Normal));
        let bytes = metadata_bytes(n);
        prop_assert!(bytes as u64 == n.saturating_mul(8) || bytes == usize::MAX);
        if let Ok(carved) = carve_metadata(PhysAddr(value), n) {
            prop_assert_eq!(carved.meta_start.0, value);
            prop_assert_eq!(carved.start.0, value + carved.meta_pages * 4096);
            prop_assert_eq!(carved.meta_pages + carved.pages, n);
            prop_assert!(carved.start.0 + carved.pages * 4096 <= MAX_PHYS_ADDR);
            prop_assert!(carved.pages <= MAX_SECTION_PAGES);
        }
        let block = FreeBlock { addr: PhysAddr(value), order, zone, hot: false };
        prop_assert!(block.pages() >= 1);
    }

    /// `set_reserve` with any value: requests that fall back, and those
    /// that do not, never overflow on it.
    #[test]
    fn any_reserve_is_safe(pages in edge_u64(), zone in 0usize..3, order in 0..=MAX_ORDER, con in any_constraint()) {
        let (mut alloc, _) = populated();
        alloc.set_reserve(Zone::ALL[zone], pages);
        prop_assert_eq!(alloc.reserve(Zone::ALL[zone]), pages);
        let free = alloc.stats().free_pages();
        match alloc.alloc(order, con) {
            Ok(frame) => {
                alloc.free(frame, order).unwrap();
                prop_assert_eq!(alloc.stats().free_pages(), free);
            }
            Err(error) => prop_assert_eq!(error, Error::OutOfMemory),
        }
        alloc.set_reserve(Zone::ALL[zone], 0);
    }
}

/// The locked wrapper forwards the same checks.
#[test]
fn locked_allocator_rejects_extreme_arguments() {
    let locked = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    assert_eq!(
        locked.alloc(u32::MAX, Constraint::ANY),
        Err(Error::TooLarge)
    );
    assert_eq!(
        locked.alloc(0, Constraint::Below(PhysAddr(0))),
        Err(Error::OutOfMemory)
    );
    assert_eq!(
        locked.free(PhysAddr(!4095u64), u32::MAX),
        Err(Error::TooLarge)
    );
    assert_eq!(locked.free(PhysAddr(!4095u64), 0), Err(Error::NotInSection));
    assert_eq!(locked.stats().free_blocks(u32::MAX), 0);
}

/// The pure functions and statistics of the layers above the buddy take
/// any value: an answer, never a panic or a wrap.
#[test]
fn upper_layer_functions_take_any_value() {
    use framekeep::{
        CacheStats, cache_metadata_bytes, class_align, heap_metadata_bytes, size_class, slab_order,
    };
    for size in [0usize, 1, 3, 4095, 4096, usize::MAX / 2, usize::MAX] {
        let _ = class_align(size);
        let _ = slab_order(size);
        for align in [0usize, 1, 3, 8, 12, 4096, 1 << 40, usize::MAX] {
            let _ = size_class(size, align);
        }
    }
    assert_eq!(class_align(0), 0);
    for pages in [0u64, 1, u64::MAX / 2, u64::MAX] {
        assert!(heap_metadata_bytes(pages) >= cache_metadata_bytes(pages).min(usize::MAX / 2));
    }
    assert_eq!(heap_metadata_bytes(u64::MAX), usize::MAX);
    let stats = framekeep::BuddyAllocator::new().stats();
    let caches = CacheStats {
        buddy: stats,
        cached: [u64::MAX; 3],
    };
    assert_eq!(caches.cached_pages(), u64::MAX);
    assert_eq!(caches.free_pages(), u64::MAX);
    assert_eq!(caches.zone_free_pages(framekeep::Zone::Dma), u64::MAX);
}
