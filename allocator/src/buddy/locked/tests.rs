//! Tests of the interrupt-masking lock around the buddy allocator.

use crate::buddy::test_support::{Fixture, GIB};
use crate::{BuddyAllocator, Constraint, InterruptControl, LockedAllocator, NoInterrupts};

#[test]
fn locked_wrapper_from_threads() {
    use std::sync::Arc;
    let mut t = Fixture::new(&[(GIB, 256)]);
    let a = core::mem::take(&mut *t.buddy);
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
    *t.buddy = core::mem::take(l.get_mut());
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
        fn restore(saved: usize) {
            assert_eq!(DEPTH.fetch_sub(1, Ordering::SeqCst), saved + 1);
        }
    }
    let l = LockedAllocator::<Counting>::new(BuddyAllocator::new());
    {
        let guard = l.lock();
        assert_eq!(DEPTH.load(Ordering::SeqCst), 1);
        assert!(l.try_lock().is_none());
        assert_eq!(DEPTH.load(Ordering::SeqCst), 1); // restored after the failed try
        drop(guard);
    }
    assert_eq!(DEPTH.load(Ordering::SeqCst), 0);
}
