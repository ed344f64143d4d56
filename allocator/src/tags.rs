//! Per-page tags of the per-CPU layers: one `AtomicU64` per managed page,
//! in caller-provided metadata next to the buddy's own words, readable
//! without any lock (the region table is append-only and published with
//! release stores).
//!
//! A tag says who owns a page beyond the buddy's view:
//! - [`TAG_NONE`]: the buddy's business (free there, or allocated directly);
//! - [`tag_alloc`]`(k)`: head of an order-`k` block handed out by a per-CPU cache;
//! - [`TAG_CACHED`]: head of a block sitting in some CPU's cache;
//! - `desc | TAG_SLAB`: every page of a slab, pointing at its descriptor;
//! - `TAG_INTERNAL`: a descriptor page (never freed).

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::types::PAGE_SHIFT;

pub(crate) const TAG_NONE: u64 = 0;
pub(crate) const TAG_KIND: u64 = 7;
pub(crate) const TAG_ALLOC: u64 = 1;
pub(crate) const TAG_CACHED: u64 = 2;
/// A page the allocator keeps for itself (slab descriptors): never freed.
pub(crate) const TAG_INTERNAL: u64 = 3;
pub(crate) const TAG_SLAB: u64 = 4;

#[inline(always)]
pub(crate) const fn tag_alloc(order: usize) -> u64 {
    TAG_ALLOC | ((order as u64) << 3)
}

#[inline(always)]
pub(crate) const fn tag_order(t: u64) -> usize {
    (t >> 3) as usize & 0xf
}

/// Most registrations the tag table tracks at once.
pub(crate) const MAX_REGIONS: usize = 64;

struct Region {
    /// Number of pages; 0 = slot unused. Stored last (release) when a slot
    /// is filled, so a reader that sees it non-zero sees the rest.
    pages: AtomicU64,
    /// First frame number.
    base: AtomicU64,
    /// Frame number the registration started at (its key for removal).
    key: AtomicU64,
    tags: AtomicPtr<AtomicU64>,
}

pub(crate) struct Tags {
    used: AtomicUsize,
    regions: [Region; MAX_REGIONS],
}

impl Tags {
    pub(crate) const fn new() -> Self {
        Tags {
            used: AtomicUsize::new(0),
            regions: [const {
                Region {
                    pages: AtomicU64::new(0),
                    base: AtomicU64::new(0),
                    key: AtomicU64::new(0),
                    tags: AtomicPtr::new(core::ptr::null_mut()),
                }
            }; MAX_REGIONS],
        }
    }

    /// The tag of the page containing physical address `phys`.
    ///
    /// Slot 0 (the first registration, usually the only one) is checked
    /// inline without a loop; the other slots are scanned out of line.
    #[inline(always)]
    pub(crate) fn get(&self, phys: u64) -> Option<&AtomicU64> {
        let pfn = phys >> PAGE_SHIFT;
        let r = &self.regions[0];
        let pages = r.pages.load(Ordering::Acquire);
        let idx = pfn.wrapping_sub(r.base.load(Ordering::Relaxed));
        if idx < pages {
            let t = r.tags.load(Ordering::Relaxed);
            // SAFETY: `add` registered `tags` as `pages` valid,
            // zero-initialised AtomicU64s that stay ours until `remove`
            // (which first sets `pages` to 0); idx < pages.
            return Some(unsafe { &*t.add(idx as usize) });
        }
        self.get_other(pfn)
    }

    /// `get` for the slots after the first.
    #[inline(never)]
    fn get_other(&self, pfn: u64) -> Option<&AtomicU64> {
        let used = self.used.load(Ordering::Acquire);
        for r in self.regions[..used.min(MAX_REGIONS)].iter().skip(1) {
            let pages = r.pages.load(Ordering::Acquire);
            let idx = pfn.wrapping_sub(r.base.load(Ordering::Relaxed));
            if idx < pages {
                let t = r.tags.load(Ordering::Relaxed);
                // SAFETY: as in `get`.
                return Some(unsafe { &*t.add(idx as usize) });
            }
        }
        None
    }

    /// Registers `pages` tags for the frames from `base`, zeroing them.
    /// Callers serialise `add` and `remove` (they hold the buddy lock).
    ///
    /// # Safety
    /// `tags` points to `pages` writable, 8-aligned u64s used by nothing
    /// else until `remove(key)`.
    pub(crate) unsafe fn add(&self, key: u64, base: u64, pages: u64, tags: *mut u64) -> bool {
        let used = self.used.load(Ordering::Relaxed);
        let slot = match self.regions[..used]
            .iter()
            .position(|r| r.pages.load(Ordering::Relaxed) == 0)
        {
            Some(i) => i,
            None if used < MAX_REGIONS => used,
            None => return false,
        };
        // SAFETY: the caller hands us `pages` writable u64s.
        unsafe { core::ptr::write_bytes(tags, 0, pages as usize) };
        let r = &self.regions[slot];
        r.base.store(base, Ordering::Relaxed);
        r.key.store(key, Ordering::Relaxed);
        r.tags.store(tags.cast(), Ordering::Relaxed);
        r.pages.store(pages, Ordering::Release);
        if slot == used {
            self.used.store(used + 1, Ordering::Release);
        }
        true
    }

    /// Forgets every region registered under `key`.
    pub(crate) fn remove(&self, key: u64) {
        for r in &self.regions[..self.used.load(Ordering::Relaxed)] {
            if r.pages.load(Ordering::Relaxed) != 0 && r.key.load(Ordering::Relaxed) == key {
                r.pages.store(0, Ordering::Release);
            }
        }
    }
}
