//! Loom model of the slab's lock-free remote free protocol, on the
//! library's own `remote.rs`.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p framekeep --release --lib loom`

use super::remote::{BitFault, SlabDesc, next_incoming, push_incoming, take_incoming};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

struct Shared {
    desc: SlabDesc,
    incoming: AtomicPtr<SlabDesc>,
    tag: AtomicU64,
}

fn setup(nobj: u32) -> Arc<Shared> {
    let shared = Arc::new(Shared {
        desc: SlabDesc::blank(),
        incoming: AtomicPtr::new(std::ptr::null_mut()),
        tag: AtomicU64::new(1),
    });
    // SAFETY: the descriptor is not shared yet.
    unsafe { shared.desc.init(0x1000, 64, nobj, 0) };
    shared
}

fn dptr(shared: &Shared) -> *mut SlabDesc {
    &shared.desc as *const SlabDesc as *mut SlabDesc
}

/// The remote side of a free, as `Slab::free_remote` runs it.
fn remote_free(shared: &Shared, idx: u32) -> Result<(), Option<BitFault>> {
    if !shared
        .desc
        .enter(|| shared.tag.load(Ordering::Relaxed) == 1)
    {
        return Err(None);
    }
    let (push, fault) = shared.desc.free_remote(idx);
    if push {
        // SAFETY: we switched pending 0 -> 1; the descriptor is alive.
        unsafe { push_incoming(&shared.incoming, dptr(shared)) };
    }
    shared.desc.leave();
    fault.map_or(Ok(()), |f| Err(Some(f)))
}

/// The owner folding in its incoming list; returns (in use, double frees).
fn owner_collect(shared: &Shared) -> Option<(u32, u32)> {
    let mut desc = take_incoming(&shared.incoming);
    let mut result = None;
    while !desc.is_null() {
        // SAFETY: taken from the list, not yet collected.
        let next = unsafe { next_incoming(desc) };
        // SAFETY: the owner (this thread) is the only user of `own`.
        let mut dups = 0;
        let inuse = unsafe { (*desc).collect(|_| dups += 1) };
        result = Some((inuse, dups));
        desc = next;
    }
    result
}

/// A remote free races the owner's local free, allocations and collection:
/// no object is ever handed out while live, and everything adds up.
#[test]
fn remote_free_vs_owner() {
    loom::model(|| {
        let shared = setup(3);
        // SAFETY: the main thread is the owner (here and for every call on `shared.desc` below).
        let (a, b) = unsafe {
            (
                shared.desc.alloc_obj().unwrap(),
                shared.desc.alloc_obj().unwrap(),
            )
        };
        let shared2 = shared.clone();
        let remote = loom::thread::spawn(move || remote_free(&shared2, b));
        // SAFETY: the main thread is the owner.
        unsafe { shared.desc.free_local(a).unwrap() };
        // Live now: b until collected. The next allocation must not be b
        // unless b was collected.
        let collected = owner_collect(&shared).is_some();
        // SAFETY: the main thread is the owner.
        let x = unsafe { shared.desc.alloc_obj() }.unwrap();
        if !collected {
            assert_ne!(x, b, "handed out an object whose free was not collected");
        }
        assert_eq!(remote.join().unwrap(), Ok(()));
        owner_collect(&shared);
        // SAFETY: the main thread is the owner.
        unsafe { shared.desc.free_local(x).unwrap() };
        owner_collect(&shared);
        // SAFETY: the main thread is the owner.
        assert_eq!(unsafe { shared.desc.own().inuse }, 0);
        for i in 0..3 {
            assert!(shared.desc.is_free(i));
        }
    });
}

/// Two remote frees of the same object: exactly one succeeds, the other is
/// reported, and the object is free exactly once afterwards.
#[test]
fn concurrent_remote_double_free() {
    loom::model(|| {
        let shared = setup(2);
        // SAFETY: the main thread is the owner.
        let a = unsafe { shared.desc.alloc_obj().unwrap() };
        let (s1, shared2) = (shared.clone(), shared.clone());
        let t1 = loom::thread::spawn(move || remote_free(&s1, a));
        let t2 = loom::thread::spawn(move || remote_free(&shared2, a));
        let result = [t1.join().unwrap(), t2.join().unwrap()];
        assert_eq!(
            result.iter().filter(|result| result.is_ok()).count(),
            1,
            "{result:?}"
        );
        let (inuse, _) = owner_collect(&shared).expect("queued");
        assert_eq!(inuse, 0);
        // SAFETY: owner.
        let (x, y) = unsafe { (shared.desc.alloc_obj(), shared.desc.alloc_obj()) };
        assert!(x.is_some() && y.is_some() && x != y);
        // SAFETY: owner.
        assert_eq!(unsafe { shared.desc.alloc_obj() }, None);
    });
}

/// A late (double) remote free races the owner's local free of the same
/// object and the retiring of the then empty slab: if the owner reuses the
/// descriptor, the late free must have backed off without changing it;
/// otherwise it is queued (or rejected) and everything adds up.
#[test]
fn retire_vs_late_remote_free() {
    loom::model(|| {
        let shared = setup(1);
        // SAFETY: the main thread is the owner (here and for the owner calls below).
        let a = unsafe { shared.desc.alloc_obj().unwrap() };
        let shared2 = shared.clone();
        let t = loom::thread::spawn(move || remote_free(&shared2, a)); // a double free
        // SAFETY: owner.
        let local = unsafe { shared.desc.free_local(a) };
        let retired = local == Ok(0) && shared.desc.may_retire() && {
            shared.tag.store(0, Ordering::Relaxed);
            if shared.desc.finish_retire() {
                true
            } else {
                shared.tag.store(1, Ordering::Release);
                false
            }
        };
        let result = t.join().unwrap();
        if retired {
            // Backed off (tag gone), or saw the free bit: nothing written.
            assert_ne!(result, Ok(()), "a remote free touched a retired descriptor");
            // SAFETY: retired: the owner may re-initialise it.
            unsafe { shared.desc.init(0x2000, 64, 1, 0) };
        } else {
            // Exactly one of the two frees took effect (the other was
            // reported, or, racing the local free, parked and dropped).
            assert!(local.is_ok() || result.is_ok(), "{local:?} {result:?}");
            let (inuse, _) = owner_collect(&shared).expect("queued");
            assert_eq!(inuse, 0);
        }
        // SAFETY: the main thread is the owner.
        assert_eq!(unsafe { shared.desc.alloc_obj() }, Some(0));
        // SAFETY: the main thread is the owner.
        assert_eq!(unsafe { shared.desc.alloc_obj() }, None);
    });
}

/// A remote free of a live object races the owner collecting the slab,
/// which an earlier remote free already queued: the owner may fold in the
/// new free's bit before the remote side has finished, which must not make
/// that correct free look like a double free. (loom 0.7 does not reach
/// that interleaving — the owner's store landing between the remote side's
/// OR and its next plain load — so this model cannot catch that race; the
/// stress test `hammer_threads_8` in `tests/heap.rs` does.)
#[test]
fn remote_free_vs_collect_of_queued_slab() {
    loom::model(|| {
        let shared = setup(2);
        // SAFETY: the main thread is the owner.
        let (a, b) = unsafe {
            (
                shared.desc.alloc_obj().unwrap(),
                shared.desc.alloc_obj().unwrap(),
            )
        };
        // An earlier remote free queues the descriptor (pending = 1).
        assert_eq!(remote_free(&shared, a), Ok(()));
        let shared2 = shared.clone();
        let t = loom::thread::spawn(move || remote_free(&shared2, b));
        let first = owner_collect(&shared);
        assert_eq!(
            t.join().unwrap(),
            Ok(()),
            "a correct remote free was reported"
        );
        let second = owner_collect(&shared);
        let inuse = second.or(first).expect("collected").0;
        assert_eq!(inuse, 0);
        // SAFETY: owner.
        assert_eq!(unsafe { shared.desc.own().inuse }, 0);
        assert!(shared.desc.is_free(a) && shared.desc.is_free(b));
    });
}

/// A remote double free racing the owner's collection of the first free:
/// in every interleaving it is reported exactly once, either by the remote
/// side (the object is still marked) or by the owner when it collects the
/// parked bit, and the object is freed exactly once.
#[test]
fn remote_double_free_vs_collect_is_reported_once() {
    loom::model(|| {
        let shared = setup(2);
        // SAFETY: the main thread is the owner.
        let a = unsafe { shared.desc.alloc_obj().unwrap() };
        assert_eq!(remote_free(&shared, a), Ok(()));
        let shared2 = shared.clone();
        let t = loom::thread::spawn(move || remote_free(&shared2, a));
        let first = owner_collect(&shared);
        let remote = t.join().unwrap();
        let second = owner_collect(&shared);
        let late = first.map_or(0, |c| c.1) + second.map_or(0, |c| c.1);
        assert_eq!(
            remote.is_err() as u32 + late,
            1,
            "reported {late} late, remote {remote:?}"
        );
        // SAFETY: owner.
        assert_eq!(unsafe { shared.desc.own().inuse }, 0);
        assert!(shared.desc.is_free(a));
    });
}
