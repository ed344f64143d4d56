//! A one-item mailbox through which one CPU hands another a borrowed
//! closure and waits for it to be run: the CALL IPI's slots (`call`) and
//! the job slots of the idle loop (`smp::job`) both use it.
//!
//! States: EMPTY → READY (posted) → RUNNING (taken by the target) → DONE
//! (finished) → EMPTY (collected by the poster). A posting not yet taken
//! can be withdrawn (READY → EMPTY), after which the target never runs it.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const READY: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// Holds a pointer to `T` (a closure) from post to collection.
pub struct Mailbox<T: ?Sized + 'static> {
    state: AtomicU8,
    item: UnsafeCell<Option<*mut T>>,
}

// SAFETY: `item` is written only by the poster while the state is EMPTY
// (`post`'s contract: one poster at a time), and read by the target only
// after it moved the state from READY to RUNNING (acquiring the poster's
// release), so the two never touch it at once.
unsafe impl<T: ?Sized + 'static> Sync for Mailbox<T> {}

impl<T: ?Sized + 'static> Mailbox<T> {
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            item: UnsafeCell::new(None),
        }
    }

    /// Posts `item` for the target.
    ///
    /// # Safety
    /// The caller is the only poster until it has collected (or withdrawn)
    /// this posting, the mailbox is empty, and `item` stays valid until
    /// then: the target may run it until `collect` or `withdraw` says
    /// otherwise.
    pub unsafe fn post(&self, item: *mut T) {
        // SAFETY: per the contract the state is EMPTY, so the target does
        // not read `item` now.
        unsafe { *self.item.get() = Some(item) };
        self.state.store(READY, Ordering::Release);
    }

    /// The target's side: takes the posted item, if any, to run it; then
    /// call [`finish`](Self::finish).
    pub fn take(&self) -> Option<*mut T> {
        self.state
            .compare_exchange(READY, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        // SAFETY: we moved READY → RUNNING: the poster wrote `item` before
        // READY (acquired) and does not write it again until DONE.
        unsafe { *self.item.get() }
    }

    /// The target's side: the taken item has run.
    pub fn finish(&self) {
        self.state.store(DONE, Ordering::Release);
    }

    /// The poster's side: empties the mailbox if the item has run; whether
    /// it had.
    pub fn collect(&self) -> bool {
        let done = self.state.load(Ordering::Acquire) == DONE;
        if done {
            self.state.store(EMPTY, Ordering::Release);
        }
        done
    }

    /// The poster's side: takes the posting back if the target has not
    /// taken it; whether it was withdrawn (if not, it runs or has run).
    pub fn withdraw(&self) -> bool {
        self.state
            .compare_exchange(READY, EMPTY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
