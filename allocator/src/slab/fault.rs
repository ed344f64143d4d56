//! Bad frees the heap detects: what kind, and where they are reported.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::remote::BitFault;

/// What kind of bad free was detected.
///
/// ```
/// let f = framekeep::Fault { kind: framekeep::FaultKind::DoubleFree, addr: 0x1000 };
/// assert_eq!(f.kind, framekeep::FaultKind::DoubleFree);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum FaultKind {
    /// The object is already free.
    DoubleFree,
    /// The address is not in any slab (foreign, or its slab is gone).
    NotAllocated,
    /// The address is inside a slab but not at the start of an object.
    NotObjectStart,
    /// The layout's size class differs from the slab's.
    WrongLayout,
    /// A page-sized allocation was rejected by the page allocator.
    Page(crate::Error),
}

/// A bad free detected (and ignored) by the [`Heap`](crate::Heap).
///
/// ```
/// let f = framekeep::Fault { kind: framekeep::FaultKind::NotAllocated, addr: 8 };
/// assert_eq!(f.addr, 8);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Fault {
    /// What was wrong.
    pub kind: FaultKind,
    /// The address passed to the free.
    pub addr: usize,
}

/// Where detected bad frees go: a counter and an optional handler. Shared
/// by the heap (faults found when a free is made) and the slab (remote
/// double frees found only when the owner collects them).
pub(crate) struct FaultSink {
    faults: AtomicU64,
    handler: AtomicPtr<()>,
}

impl FaultSink {
    pub(crate) const fn new() -> Self {
        FaultSink {
            faults: AtomicU64::new(0),
            handler: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    pub(crate) fn set_handler(&self, fault: fn(Fault)) {
        self.handler.store(fault as *mut (), Ordering::Release);
    }

    /// Faults reported so far.
    pub(crate) fn count(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    #[cold]
    pub(crate) fn report(&self, fault: Fault) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        let handler = self.handler.load(Ordering::Acquire);
        if !handler.is_null() {
            // SAFETY: `handler` only ever holds a `fn(Fault)` (set_handler).
            let handler = unsafe { core::mem::transmute::<*mut (), fn(Fault)>(handler) };
            handler(fault);
        }
    }
}

impl From<BitFault> for FaultKind {
    fn from(fault: BitFault) -> Self {
        match fault {
            BitFault::DoubleFree => FaultKind::DoubleFree,
        }
    }
}
