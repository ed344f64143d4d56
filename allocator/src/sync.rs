//! The synchronisation primitives of the lock-free protocols.
//!
//! `percpu.rs`, `pcp_list.rs` and `remote.rs` name their atomics and cells
//! through `crate::sync`. In the library that is `core`; the loom tests
//! (`tests/loom_*.rs`) include those same source files with `#[path]` and
//! define their own `sync` module on top of `loom`, so the code the model
//! checker explores is exactly the code that ships.

pub(crate) use core::hint::spin_loop;
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

/// `core::cell::UnsafeCell` with loom's closure-based access API.
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    pub(crate) const fn new(v: T) -> Self {
        UnsafeCell(core::cell::UnsafeCell::new(v))
    }

    /// Calls `f` with a raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
