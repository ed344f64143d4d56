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

/// A reservation of more pages than the largest block used to be
/// accepted; freeing it then indexed the per-order lists out of bounds (a
/// panic, with the range already written off). Reservations are limited
/// like every other allocation, and no count makes `free_pages` index
/// out of bounds.
#[test]
fn reservations_are_limited_to_the_largest_order() {
    let pages = 1u64 << (MAX_ORDER + 1);
    let start = PhysAddr(1 << 40);
    let mut a = Box::new(BuddyAllocator::new());
    a.add_section_static(start, pages, vec![0u64; pages as usize].leak())
        .unwrap();
    let before = (a.stats(), a.free_blocks().collect::<Vec<_>>());
    for count in [pages as usize, (1 << MAX_ORDER) + 1, usize::MAX] {
        assert_eq!(
            a.reserve_range(start, count),
            Err(Error::TooLarge),
            "{count}"
        );
        let at = PhysAddr(start.0 + 4096);
        assert_eq!(a.reserve_range(at, count), Err(Error::TooLarge), "{count}");
    }
    assert_eq!((a.stats(), a.free_blocks().collect::<Vec<_>>()), before);
    // The largest reservation there can be, and frees of every bad size.
    a.reserve_range(start, 1 << MAX_ORDER).unwrap();
    let held = (a.stats(), a.free_blocks().collect::<Vec<_>>());
    for count in [
        (1 << MAX_ORDER) + 1,
        pages as usize,
        u32::MAX as usize + 1,
        usize::MAX,
    ] {
        assert_eq!(a.free_pages(start, count), Err(Error::TooLarge), "{count}");
    }
    assert_eq!((a.stats(), a.free_blocks().collect::<Vec<_>>()), held);
    a.free_pages(start, 1 << MAX_ORDER).unwrap();
    assert_eq!(a.stats().free_pages(), pages);
}

/// Statistics take any order: above the largest there are no free blocks
/// (this indexed out of bounds), and hand-made values (the fields are
/// public) never overflow.
#[test]
fn statistics_take_any_order_and_any_values() {
    let a = framekeep::doc_allocator!(64);
    let st = a.stats();
    for order in [MAX_ORDER + 1, 32, 64, u32::MAX] {
        assert_eq!(st.free_blocks(order), 0, "{order}");
        assert_eq!(st.zone(Zone::Dma32).free_pages_at_least(order), 0);
        assert_eq!(st.fragmentation_permille(order), 1000);
    }
    let mut odd = st;
    for z in &mut odd.zones {
        z.managed_pages = 1;
        z.free_pages = u64::MAX;
        z.hot_pages = u64::MAX;
        z.free_blocks = [u64::MAX; NR_ORDERS];
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
    let b = FreeBlock {
        addr: PhysAddr(0),
        order: u32::MAX,
        zone: Zone::Dma,
        hot: false,
    };
    assert_eq!(b.pages(), u64::MAX);
}

// ----------------------------------------------------------------------
// Extreme arguments to every safe function
// ----------------------------------------------------------------------

use proptest::prelude::*;

/// Two sections (Normal at 8 GiB + 1 page, DMA32 at 1 GiB), allocations of
/// every kind, freed blocks and parked ones. Returns it and live
/// addresses to aim at.
fn populated() -> (Box<BuddyAllocator>, Vec<PhysAddr>) {
    let mut a = Box::new(BuddyAllocator::new());
    a.add_section_static(PhysAddr(8 * GIB + 4096), 300, vec![0u64; 300].leak())
        .unwrap();
    a.add_section_static(PhysAddr(GIB), 200, vec![0u64; 200].leak())
        .unwrap();
    let mut live = vec![
        a.alloc(3, Constraint::ANY).unwrap(),
        a.alloc_pages(5, Constraint::Zone(Zone::Dma32)).unwrap(),
        a.alloc_aligned(1, 64 << 10, Constraint::ANY).unwrap(),
    ];
    a.reserve_range(PhysAddr(GIB + 150 * 4096), 9).unwrap();
    live.push(PhysAddr(GIB + 150 * 4096));
    let mut f = [PhysAddr(0); 12];
    a.alloc_bulk(Constraint::ANY, &mut f).unwrap();
    // Every other one freed: parked next to busy buddies.
    for p in f.iter().step_by(2) {
        a.free(*p, 0).unwrap();
    }
    live.extend(f.iter().skip(1).step_by(2));
    assert!(a.stats().zones.iter().any(|z| z.hot_pages != 0));
    (a, live)
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
    edge_u64().prop_filter("outside the sections", |&a| !(GIB..9 * GIB).contains(&a))
}

/// A count no allocation has: zero, or above 2^MAX_ORDER pages.
fn bad_count() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        edge_u64().prop_map(|c| c.max((1 << MAX_ORDER) + 1) as usize),
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
        any::<usize>().prop_filter("not a valid alignment", |&a| !a.is_power_of_two()
            || a > 1 << 30),
    ]
}

fn any_constraint() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        (0usize..3).prop_map(|z| Constraint::Zone(Zone::ALL[z])),
        edge_u64().prop_map(|a| Constraint::Below(PhysAddr(a))),
    ]
}

/// A limit below which no page fits.
fn below_a_page() -> impl Strategy<Value = Constraint> {
    prop_oneof![Just(0u64), Just(1), Just(4095)].prop_map(|a| Constraint::Below(PhysAddr(a)))
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
        (bad_order(), any_constraint()).prop_map(|(o, c)| BadCall::Alloc(o, c)),
        (0..=MAX_ORDER, below_a_page()).prop_map(|(o, c)| BadCall::AllocBelowAPage(o, c)),
        (edge_u64(), bad_order()).prop_map(|(a, o)| BadCall::Free(a, o)),
        (bad_addr(), 0..=MAX_ORDER).prop_map(|(a, o)| BadCall::FreeOutside(a, o)),
        (bad_count(), any_constraint()).prop_map(|(n, c)| BadCall::AllocPages(n, c)),
        (any::<usize>(), bad_align(), any_constraint())
            .prop_map(|(n, al, c)| BadCall::AllocAligned(n, al, c)),
        (bad_count(), any_constraint()).prop_map(|(n, c)| BadCall::AllocAlignedCount(n, c)),
        (bad_addr(), any::<usize>()).prop_map(|(a, n)| BadCall::FreePages(a, n)),
        (any::<usize>(), bad_count()).prop_map(|(i, n)| BadCall::FreeLivePages(i, n)),
        (bad_addr(), any::<usize>()).prop_map(|(a, n)| BadCall::Reserve(a, n)),
        (0usize..500, bad_count()).prop_map(|(i, n)| BadCall::ReserveCount(i, n)),
        (below_a_page(), 1usize..4).prop_map(|(c, n)| BadCall::AllocBulk(c, n)),
        (any::<usize>(), bad_addr()).prop_map(|(i, a)| BadCall::FreeBulk(i, a)),
        bad_addr().prop_map(BadCall::PageState),
        edge_u64().prop_map(BadCall::Remove),
        // Zero pages, or more than the metadata (0 to 2 words) covers.
        (
            edge_u64(),
            edge_u64().prop_filter("bad size", |&p| p == 0 || p > 2),
            0usize..3
        )
            .prop_map(|(s, p, m)| BadCall::AddStatic(s, p, m)),
    ]
}

/// Runs `call`; returns its error, or `None` for a call that succeeded.
fn run(a: &mut BuddyAllocator, live: &[PhysAddr], call: &BadCall) -> Option<Error> {
    let pick = |i: usize| live[i % live.len()];
    let r = match *call {
        BadCall::Alloc(o, c) | BadCall::AllocBelowAPage(o, c) => a.alloc(o, c).map(drop),
        BadCall::Free(addr, o) | BadCall::FreeOutside(addr, o) => a.free(PhysAddr(addr), o),
        BadCall::AllocPages(n, c) => a.alloc_pages(n, c).map(drop),
        BadCall::AllocAligned(n, al, c) => a.alloc_aligned(n, al, c).map(drop),
        BadCall::AllocAlignedCount(n, c) => a.alloc_aligned(n, 4096, c).map(drop),
        BadCall::FreePages(addr, n) => a.free_pages(PhysAddr(addr), n),
        BadCall::FreeLivePages(i, n) => a.free_pages(pick(i), n),
        BadCall::Reserve(addr, n) => a.reserve_range(PhysAddr(addr), n),
        BadCall::ReserveCount(i, n) => {
            // Any page of either section, free or not.
            let s: Vec<SectionInfo> = a.sections().collect();
            let sec = s[i % s.len()];
            let p = PhysAddr(sec.start.0 + (i as u64 % sec.pages) * 4096);
            a.reserve_range(p, n)
        }
        BadCall::AllocBulk(c, n) => a.alloc_bulk(c, &mut vec![PhysAddr(0); n]).map(drop),
        BadCall::FreeBulk(i, addr) => a.free_bulk(&[pick(i), PhysAddr(addr)]).map_err(|e| e.error),
        BadCall::PageState(addr) => a.page_state(PhysAddr(addr)).map(drop),
        BadCall::Remove(addr) => a.remove_section(PhysAddr(addr)).map(drop),
        BadCall::AddStatic(start, pages, words) => {
            a.add_section_static(PhysAddr(start), pages, vec![0u64; words].leak())
        }
    };
    r.err()
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
        let (mut a, live) = populated();
        for call in &calls {
            let before = snapshot(&a);
            let err = run(&mut a, &live, call);
            prop_assert!(err.is_some(), "{call:?} succeeded");
            let after = snapshot(&a);
            if err == Some(Error::OutOfMemory) {
                prop_assert_eq!(after.stats.free_pages(), before.stats.free_pages(), "{:?}", call);
                prop_assert_eq!(&after.sections, &before.sections, "{:?}", call);
                for (x, y) in before.pages.iter().zip(&after.pages) {
                    if !matches!(x, Ok(PageState::Free { .. })) {
                        prop_assert_eq!(x, y, "{:?}", call);
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
    fn queries_take_any_value(x in edge_u64(), n in edge_u64(), order in any::<u32>()) {
        let (a, _) = populated();
        let st = a.stats();
        prop_assert!(st.free_blocks(order) <= st.free_pages());
        prop_assert!(st.fragmentation_permille(order) <= 1000);
        for z in &st.zones {
            prop_assert!(z.free_pages_at_least(order) <= z.free_pages);
            prop_assert!(z.fragmentation_permille(order) <= 1000);
        }
        let _ = a.page_state(PhysAddr(x));
        prop_assert_eq!(PhysAddr(x).pfn(), Pfn(x >> 12));
        prop_assert_eq!(PhysAddr::new(x).is_page_aligned(), x % 4096 == 0);
        prop_assert_eq!(Pfn(x).addr().pfn().0, x & ((1 << 52) - 1));
        let z = Zone::of(PhysAddr(x));
        prop_assert!(z.start().0 <= x && (x < z.end().0 || z == Zone::Normal));
        let m = metadata_bytes(n);
        prop_assert!(m as u64 == n.saturating_mul(8) || m == usize::MAX);
        if let Ok(c) = carve_metadata(PhysAddr(x), n) {
            prop_assert_eq!(c.meta_start.0, x);
            prop_assert_eq!(c.start.0, x + c.meta_pages * 4096);
            prop_assert_eq!(c.meta_pages + c.pages, n);
            prop_assert!(c.start.0 + c.pages * 4096 <= MAX_PHYS_ADDR);
            prop_assert!(c.pages <= MAX_SECTION_PAGES);
        }
        let b = FreeBlock { addr: PhysAddr(x), order, zone: z, hot: false };
        prop_assert!(b.pages() >= 1);
    }

    /// `set_reserve` with any value: requests that fall back, and those
    /// that do not, never overflow on it.
    #[test]
    fn any_reserve_is_safe(pages in edge_u64(), zone in 0usize..3, order in 0..=MAX_ORDER, c in any_constraint()) {
        let (mut a, _) = populated();
        a.set_reserve(Zone::ALL[zone], pages);
        prop_assert_eq!(a.reserve(Zone::ALL[zone]), pages);
        let free = a.stats().free_pages();
        match a.alloc(order, c) {
            Ok(p) => {
                a.free(p, order).unwrap();
                prop_assert_eq!(a.stats().free_pages(), free);
            }
            Err(e) => prop_assert_eq!(e, Error::OutOfMemory),
        }
        a.set_reserve(Zone::ALL[zone], 0);
    }
}

/// The locked wrapper forwards the same checks.
#[test]
fn locked_allocator_rejects_extreme_arguments() {
    let l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    assert_eq!(l.alloc(u32::MAX, Constraint::ANY), Err(Error::TooLarge));
    assert_eq!(
        l.alloc(0, Constraint::Below(PhysAddr(0))),
        Err(Error::OutOfMemory)
    );
    assert_eq!(l.free(PhysAddr(!4095u64), u32::MAX), Err(Error::TooLarge));
    assert_eq!(l.free(PhysAddr(!4095u64), 0), Err(Error::NotInSection));
    assert_eq!(l.stats().free_blocks(u32::MAX), 0);
}

/// The pure functions and statistics of the layers above the buddy take
/// any value: an answer, never a panic or a wrap.
#[test]
fn upper_layer_functions_take_any_value() {
    use framekeep::{
        CacheStats, cache_metadata_bytes, class_align, heap_metadata_bytes, size_class, slab_order,
    };
    for v in [0usize, 1, 3, 4095, 4096, usize::MAX / 2, usize::MAX] {
        let _ = class_align(v);
        let _ = slab_order(v);
        for a in [0usize, 1, 3, 8, 12, 4096, 1 << 40, usize::MAX] {
            let _ = size_class(v, a);
        }
    }
    assert_eq!(class_align(0), 0);
    for p in [0u64, 1, u64::MAX / 2, u64::MAX] {
        assert!(heap_metadata_bytes(p) >= cache_metadata_bytes(p).min(usize::MAX / 2));
    }
    assert_eq!(heap_metadata_bytes(u64::MAX), usize::MAX);
    let st = framekeep::BuddyAllocator::new().stats();
    let c = CacheStats {
        buddy: st,
        cached: [u64::MAX; 3],
    };
    assert_eq!(c.cached_pages(), u64::MAX);
    assert_eq!(c.free_pages(), u64::MAX);
    assert_eq!(c.zone_free_pages(framekeep::Zone::Dma), u64::MAX);
}
