//! Tests of frame options: poisoning and zeroing.

use crate::buddy::test_support::{Fixture, GIB, Ram, hot_pages, rejects};
use crate::{Constraint, Error, FrameOptions, POISON_BYTE, PageState, PhysAddr};

#[test]
fn poison_detects_use_after_free() {
    let ram = Ram::new(GIB, 8);
    let mut t = Fixture::new(&[(GIB, 8)]);
    t.poison(ram, false);
    assert_eq!(t.ram().byte(GIB + 5 * 4096 + 17), POISON_BYTE); // poisoned when enabled
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
    t.buddy.free(p, 0).unwrap();
    // Use after free.
    t.ram().poke(p.0 + 123, 0x42);
    let mut seen = None;
    for _ in 0..8 {
        match t.buddy.alloc(0, Constraint::ANY) {
            Err(error @ Error::Corrupted { .. }) => {
                seen = Some(error);
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
    assert!(matches!(t.buddy.page_state(p), Ok(PageState::Free { .. })));
    t.buddy.clear_frame_options();
    assert_eq!(t.buddy.frame_options(), FrameOptions::default());
}

#[test]
fn zero_on_alloc_and_poison_on_add() {
    let ram = Ram::new(GIB, 16);
    let mut t = Fixture::new(&[(GIB, 8)]);
    t.poison(ram, true);
    t.add(GIB + 8 * 4096, 8).unwrap(); // hot-added while poisoning: poisoned now
    assert_eq!(t.ram().byte(GIB + 12 * 4096), POISON_BYTE);
    let p = t.buddy.alloc_pages(3, Constraint::ANY).unwrap();
    for i in 0..3 * 4096 {
        assert_eq!(t.ram().byte(p.0 + i), 0);
    }
    t.buddy.free_pages(p, 3).unwrap();
    assert_eq!(t.ram().byte(p.0 + 4096 * 2 + 4095), POISON_BYTE);
    let mut f = [PhysAddr(0); 4];
    t.buddy.alloc_bulk(Constraint::ANY, &mut f).unwrap();
    t.ram().poke(f[0].0, 9); // live frame: no complaint
    t.buddy.free_bulk(&f).unwrap();
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
        let mut t = Fixture::new(&[(GIB, 8)]);
        t.poison(ram, false);
        if zero_only {
            let opts = FrameOptions {
                poison: false,
                zero_on_alloc: true,
            };
            let off = t.ram().offset();
            // SAFETY: as in `Fixture::poison`: `ram` maps the range and outlives
            // the allocator.
            unsafe { t.buddy.set_frame_options(off, opts) };
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
        assert_eq!(t.buddy.sections().count(), 1);
        // Without options that write frames, it is fine again.
        t.buddy.clear_frame_options();
        t.buddy
            .add_section_static(PhysAddr(named), 8, vec![0u64; 8].leak())
            .unwrap();
        assert_eq!(t.free(), 16);
    }
}

#[test]
fn parked_pages_are_poisoned_and_checked() {
    let ram = Ram::new(GIB, 8);
    let mut t = Fixture::new(&[(GIB, 8)]);
    let p = t.buddy.alloc(0, Constraint::ANY).unwrap();
    let q = t.buddy.alloc(0, Constraint::ANY).unwrap();
    t.buddy.drain_hot(); // the refill's other pages
    t.buddy.free(q, 0).unwrap();
    assert_eq!(hot_pages(&t), 1);
    t.poison(ram, false);
    assert_eq!(
        t.ram().byte(q.0 + 100),
        POISON_BYTE,
        "parked page poisoned when enabled"
    );
    t.ram().poke(q.0 + 100, 7);
    assert_eq!(
        t.buddy.alloc(0, Constraint::ANY),
        Err(Error::Corrupted {
            frame: q,
            offset: 100,
            found: 7
        })
    );
    t.buddy.free(p, 0).unwrap();
    t.buddy.drain_hot();
    assert_eq!(t.free(), 8);
}

#[test]
fn a_freed_aligned_page_is_poisoned() {
    let ram = Ram::new(8 * GIB, 8);
    let mut t = Fixture::new(&[(8 * GIB, 8)]);
    t.poison(ram, false);
    let p = t.buddy.alloc_aligned(1, 8192, Constraint::ANY).unwrap();
    t.ram().poke(p.0 + 100, 7);
    t.buddy.free_pages(p, 1).unwrap();
    assert_eq!((hot_pages(&t), t.ram().byte(p.0 + 100)), (1, POISON_BYTE));
    assert_eq!(t.buddy.alloc_aligned(1, 8192, Constraint::ANY), Ok(p));
}
