//! Slab descriptors, kept in registration metadata.
//!
//! A slab's bookkeeping (its descriptor: bitmaps, owner, links) must never
//! share memory with anything handed out to users, or a write through a
//! stale user pointer could forge it. So descriptors live where the
//! per-page metadata lives: in memory given over at registration
//! ([`heap_metadata_bytes`](crate::heap_metadata_bytes) sizes it), one descriptor for every
//! [`PAGES_PER_DESCRIPTOR`](crate::PAGES_PER_DESCRIPTOR) pages, never handed out and never freed.
//!
//! The pool is a list of regions, one per registration, each handed out
//! by a bump index: descriptors are never returned to it (a retired slab's
//! descriptor stays on its CPU's spare list), so taking one is a single
//! atomic add, and a descriptor's memory is valid for as long as the heap.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::metadata::{DESC_ALIGN, DESC_BYTES};
use crate::pcp::tags::MAX_REGIONS;
use crate::slab::remote::SlabDesc;

struct Region {
    base: AtomicPtr<SlabDesc>,
    /// Descriptors in the region; 0 while the slot is being filled.
    len: AtomicU32,
    /// Descriptors handed out (may run past `len` under contention).
    next: AtomicU32,
}

/// Every region of descriptor memory registered so far.
pub(crate) struct DescPool {
    used: AtomicUsize,
    regions: [Region; MAX_REGIONS],
    capacity: AtomicU64,
    taken: AtomicU64,
}

impl DescPool {
    pub(crate) const fn new() -> Self {
        DescPool {
            used: AtomicUsize::new(0),
            regions: [const {
                Region {
                    base: AtomicPtr::new(core::ptr::null_mut()),
                    len: AtomicU32::new(0),
                    next: AtomicU32::new(0),
                }
            }; MAX_REGIONS],
            capacity: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    /// Adds the descriptors that fit in `bytes` bytes at `mem` (aligned up
    /// as needed); `false` if the pool has no slot left (then nothing is
    /// added: the memory stays unused).
    ///
    /// # Safety
    /// `mem..mem + bytes` is writable memory used by nothing else, for as
    /// long as this pool is used.
    pub(crate) unsafe fn add(&self, mem: *mut u8, bytes: usize) -> bool {
        let pad = mem.align_offset(DESC_ALIGN);
        if pad >= bytes {
            return true;
        }
        let count = ((bytes - pad) / DESC_BYTES).min(u32::MAX as usize) as u32;
        if count == 0 {
            return true;
        }
        let slot = self.used.fetch_add(1, Ordering::AcqRel);
        if slot >= MAX_REGIONS {
            self.used.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let region = &self.regions[slot];
        // SAFETY: `pad < bytes`, so the aligned start is inside the memory.
        region
            .base
            .store(unsafe { mem.add(pad) }.cast(), Ordering::Relaxed);
        region.next.store(0, Ordering::Relaxed);
        region.len.store(count, Ordering::Release);
        self.capacity.fetch_add(count as u64, Ordering::Relaxed);
        true
    }

    /// A blank descriptor of its own, never handed out before; `None` when
    /// every region is used up.
    pub(crate) fn take(&self) -> Option<*mut SlabDesc> {
        let used = self.used.load(Ordering::Acquire).min(MAX_REGIONS);
        for region in &self.regions[..used] {
            let len = region.len.load(Ordering::Acquire);
            if region.next.load(Ordering::Relaxed) >= len {
                continue;
            }
            let i = region.next.fetch_add(1, Ordering::Relaxed);
            if i < len {
                self.taken.fetch_add(1, Ordering::Relaxed);
                let desc = region.base.load(Ordering::Relaxed).wrapping_add(i as usize);
                // SAFETY: descriptor `i < len` of the region, registered as
                // ours (`add`), aligned, and taken by nobody else (the
                // bump index gave `i` to this call alone).
                unsafe { desc.write(SlabDesc::blank()) };
                return Some(desc);
            }
        }
        None
    }

    /// (descriptors taken, descriptors registered).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.capacity.load(Ordering::Relaxed),
        )
    }
}
