//! Tests of the freeing calls and their errors.

use crate::buddy::test_support::{Fixture, GIB, rejects};
use crate::{BulkError, Constraint, Error, MAX_ORDER, PhysAddr};

#[test]
fn free_errors() {
    let mut t = Fixture::new(&[(GIB, 64)]);
    let p = t.buddy.alloc(2, Constraint::ANY).unwrap();
    let q = t.buddy.alloc_pages(3, Constraint::ANY).unwrap();
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
    let free_page = t.buddy.free_blocks().next().unwrap().addr;
    rejects(&mut t, Error::DoubleFree, |a| a.free(free_page, 0));
    rejects(&mut t, Error::DoubleFree, |a| {
        a.free(PhysAddr(q.0 + 3 * 4096), 0)
    }); // the given-back tail
    t.buddy.free(p, 2).unwrap();
    rejects(&mut t, Error::DoubleFree, |a| a.free(p, 2));
    // After merging, the absorbed head is not mistaken for an allocation.
    rejects(&mut t, Error::DoubleFree, |a| {
        a.free(PhysAddr(p.0 + 2 * 4096), 1)
    });
    t.buddy.free_pages(q, 3).unwrap();
    rejects(&mut t, Error::DoubleFree, |a| a.free_pages(q, 3));
    assert_eq!(t.free(), 64);
}

#[test]
fn bulk_alloc_and_free() {
    let mut t = Fixture::new(&[(GIB, 40)]);
    let mut f = [PhysAddr(0); 32];
    assert_eq!(t.buddy.alloc_bulk(Constraint::ANY, &mut f), Ok(32));
    let mut sorted = f.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 32);
    let mut partial = [PhysAddr(0); 16];
    assert_eq!(t.buddy.alloc_bulk(Constraint::ANY, &mut partial), Ok(8)); // partial: memory ran out
    rejects(&mut t, Error::OutOfMemory, |a| {
        a.alloc_bulk(Constraint::ANY, &mut [PhysAddr(0); 4])
    });
    rejects(&mut t, Error::ZeroCount, |a| {
        a.alloc_bulk(Constraint::ANY, &mut [])
    });
    let bulk = |frames: Vec<PhysAddr>, idx: usize, expected: Error, t: &mut Fixture| {
        let before = t.snap();
        assert_eq!(
            t.buddy.free_bulk(&frames),
            Err(BulkError {
                index: idx,
                error: expected
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
    t.buddy.free_bulk(&f[..4]).unwrap();
    bulk(vec![f[5], f[0]], 1, Error::DoubleFree, &mut t);
    t.buddy.free_bulk(&f[4..]).unwrap();
    t.buddy.free_bulk(&partial[..8]).unwrap();
    assert_eq!(t.free(), 40);
    assert_eq!(t.buddy.free_blocks().count(), 2); // 32 + 8
}
