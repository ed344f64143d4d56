//! Per-page tags of the per-CPU layers: one `AtomicU64` per managed page,
//! in caller-provided metadata next to the buddy's own words, readable
//! without any lock (the region table is append-only and published with
//! release stores).
//!
//! Registration writes no tag: each region's tags are valid in a prefix
//! (`ready` pages from its start) that grows, zeroed, on the first write
//! beyond it ([`Tags::prepare`]). Past the prefix every tag is logically
//! [`TAG_NONE`], and lookups treat it as "no tag", which means the same.
//!
//! A tag says who owns a page beyond the buddy's view:
//! - [`TAG_NONE`]: the buddy's business (free there, or allocated directly);
//! - [`tag_alloc`]`(order)`: head of an order-`order` block handed out by a per-CPU cache;
//! - [`tag_alloc`]`(order) | `[`TAG_HEAP_OWNED`]: the same, handed out to the heap;
//! - [`tag_alloc`]`(order) | `[`TAG_HANDLE_OWNED`]: the same, held by a [`Block`](crate::Block);
//! - [`TAG_CACHED`]: head of a block sitting in some CPU's cache;
//! - `desc | TAG_SLAB`: every page of a slab, pointing at its descriptor;
//! - [`TAG_INTERNAL`]: head of a block the slab is creating or retiring;
//! - [`tag_heap`]`(key)`: head of a heap allocation served by the buddy,
//!   `key` naming the layout it was allocated with.
//!
//! A tag moves between [`TAG_NONE`] and any other value only under the
//! buddy lock, together with the buddy's own change, and a free claims a
//! tag with one compare-exchange: so two frees of one block, on any CPUs
//! and through any layer, never both succeed.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::types::{Error, PAGE_SHIFT};

pub(crate) const TAG_NONE: u64 = 0;
pub(crate) const TAG_KIND: u64 = 7;
pub(crate) const TAG_ALLOC: u64 = 1;
pub(crate) const TAG_CACHED: u64 = 2;
/// A block the slab holds outside any slab (being created or retired):
/// nobody else may free it.
pub(crate) const TAG_INTERNAL: u64 = 3;
pub(crate) const TAG_SLAB: u64 = 4;
/// A heap allocation served by the buddy; the bits above the kind hold
/// the heap's key for its layout.
pub(crate) const TAG_HEAP: u64 = 5;
/// A block a bulk free is freeing under the buddy lock.
pub(crate) const TAG_CLAIMED: u64 = 6;
/// The owner field of a [`TAG_ALLOC`] tag: who the block was handed out
/// to, and so who may free it. Zero: a caller of `PageCaches::alloc`.
pub(crate) const TAG_OWNER: u64 = 3 << 7;
/// Owner: the heap.
pub(crate) const TAG_HEAP_OWNED: u64 = 1 << 7;
/// Owner: a [`Block`](crate::Block) handle, freed only by consuming it.
pub(crate) const TAG_HANDLE_OWNED: u64 = 2 << 7;

#[inline(always)]
pub(crate) const fn tag_alloc(order: usize) -> u64 {
    TAG_ALLOC | ((order as u64) << 3)
}

#[inline(always)]
pub(crate) const fn tag_order(tag: u64) -> usize {
    (tag >> 3) as usize & 0xf
}

#[inline(always)]
pub(crate) const fn tag_heap(key: u64) -> u64 {
    TAG_HEAP | (key << 3)
}

/// The tag a block of order `order` is handed out with to `owner`: an owner
/// field value ([`TAG_OWNER`]), or [`TAG_INTERNAL`] for the slab's own.
#[inline(always)]
pub(crate) const fn handout_tag(owner: u64, order: usize) -> u64 {
    if owner == TAG_INTERNAL {
        TAG_INTERNAL
    } else {
        tag_alloc(order) | owner
    }
}

/// Whether tag `tag` is a block handed out to a caller of
/// `PageCaches::alloc` (not to the heap or a `Block`).
#[inline(always)]
pub(crate) const fn is_frames_alloc(tag: u64) -> bool {
    tag & (TAG_KIND | TAG_OWNER) == TAG_ALLOC
}

/// Whether tag `tag` marks memory of the heap (its page-granular
/// allocations, or its slabs).
pub(crate) const fn is_heap_tag(tag: u64) -> bool {
    let kind = tag & TAG_KIND;
    kind == TAG_HEAP
        || kind == TAG_SLAB
        || kind == TAG_INTERNAL
        || (kind == TAG_ALLOC && tag & TAG_OWNER == TAG_HEAP_OWNED)
}

/// Most registrations the tag table tracks at once.
pub(crate) const MAX_REGIONS: usize = 64;

/// The prefix grows to a multiple of this many pages (physically aligned),
/// so a block of up to this many pages lies either wholly inside or
/// wholly outside it.
const GROW_PAGES: u64 = 512;

struct Region {
    /// Pages from `base` whose tags are valid (zeroed or written since).
    /// Grows (release) after the new tags are zeroed; 0 when unused.
    ready: AtomicU64,
    /// Number of pages; 0 = slot unused. Stored last (release) when a slot
    /// is filled, so a reader that sees it non-zero sees the rest.
    pages: AtomicU64,
    /// Held while the prefix grows.
    growing: AtomicBool,
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
                    ready: AtomicU64::new(0),
                    pages: AtomicU64::new(0),
                    growing: AtomicBool::new(false),
                    base: AtomicU64::new(0),
                    key: AtomicU64::new(0),
                    tags: AtomicPtr::new(core::ptr::null_mut()),
                }
            }; MAX_REGIONS],
        }
    }

    /// The tag of the page containing physical address `phys`, if it is
    /// in a region's valid prefix (`None` otherwise: no tag, which is what
    /// [`TAG_NONE`] means too). For writing a tag other than `TAG_NONE`
    /// use [`prepare`](Self::prepare).
    ///
    /// Slot 0 (the first registration, usually the only one) is checked
    /// inline without a loop; the other slots are scanned out of line.
    #[inline(always)]
    pub(crate) fn get(&self, phys: u64) -> Option<&AtomicU64> {
        let pfn = phys >> PAGE_SHIFT;
        let region = &self.regions[0];
        let ready = region.ready.load(Ordering::Acquire);
        let idx = pfn.wrapping_sub(region.base.load(Ordering::Relaxed));
        if idx < ready {
            let tags = region.tags.load(Ordering::Relaxed);
            // `add` registered `pages` u64s that stay ours until `remove`
            // (which first sets `ready` to 0).
            // SAFETY: idx < ready, and the first `ready` tags were zeroed
            // (as AtomicU64s) before `ready` was published.
            return Some(unsafe { &*tags.add(idx as usize) });
        }
        self.get_other(pfn)
    }

    /// Stores `tag` (a plain store) into the tag of the page at `phys`, if
    /// it has one: for a block this CPU holds alone, whose tag exists.
    /// Returns the tag, so that a [`Block`](crate::Block) can keep it.
    /// Slot 0 inline, as in [`get`](Self::get), the others out of line.
    #[inline(always)]
    pub(crate) fn store_owned(&self, phys: u64, tag: u64) -> Option<&AtomicU64> {
        let pfn = phys >> PAGE_SHIFT;
        let region = &self.regions[0];
        let ready = region.ready.load(Ordering::Acquire);
        let idx = pfn.wrapping_sub(region.base.load(Ordering::Relaxed));
        if idx < ready {
            let tags = region.tags.load(Ordering::Relaxed);
            // SAFETY: as in `get`.
            let slot = unsafe { &*tags.add(idx as usize) };
            slot.store(tag, Ordering::Relaxed);
            Some(slot)
        } else {
            self.store_other(pfn, tag)
        }
    }

    /// `store_owned` for the slots after the first.
    #[cold]
    #[inline(never)]
    fn store_other(&self, pfn: u64, tag: u64) -> Option<&AtomicU64> {
        let slot = self.get_other(pfn)?;
        slot.store(tag, Ordering::Relaxed);
        Some(slot)
    }

    /// `get` for the slots after the first.
    #[inline(never)]
    fn get_other(&self, pfn: u64) -> Option<&AtomicU64> {
        let used = self.used.load(Ordering::Acquire);
        for region in self.regions[..used.min(MAX_REGIONS)].iter().skip(1) {
            let ready = region.ready.load(Ordering::Acquire);
            let idx = pfn.wrapping_sub(region.base.load(Ordering::Relaxed));
            if idx < ready {
                let tags = region.tags.load(Ordering::Relaxed);
                // SAFETY: as in `get`.
                return Some(unsafe { &*tags.add(idx as usize) });
            }
        }
        None
    }

    /// The tag value of the page at `phys`: `None` outside every region,
    /// [`TAG_NONE`] past a region's valid prefix.
    pub(crate) fn value(&self, phys: u64) -> Option<u64> {
        if let Some(slot) = self.get(phys) {
            return Some(slot.load(Ordering::Acquire));
        }
        self.region_of(phys >> PAGE_SHIFT).map(|_| TAG_NONE)
    }

    /// The registered region containing frame `pfn`, and its index.
    fn region_of(&self, pfn: u64) -> Option<(&Region, u64)> {
        let used = self.used.load(Ordering::Acquire);
        self.regions[..used.min(MAX_REGIONS)]
            .iter()
            .find_map(|region| {
                let idx = pfn.wrapping_sub(region.base.load(Ordering::Relaxed));
                (idx < region.pages.load(Ordering::Acquire)).then_some((region, idx))
            })
    }

    /// Like [`get`](Self::get), but first grows the region's valid prefix
    /// over `phys` if needed: for writing a tag. `None` only outside every
    /// region.
    #[inline(always)]
    pub(crate) fn prepare(&self, phys: u64) -> Option<&AtomicU64> {
        match self.get(phys) {
            Some(slot) => Some(slot),
            None => self.grow(phys >> PAGE_SHIFT),
        }
    }

    /// Zeroes a region's tags from its valid prefix up to past `pfn` (to
    /// the next `GROW_PAGES` boundary or the region's end) and publishes
    /// them. Growers of one region are serialised by its flag; readers
    /// never look past the published prefix, so they see none of this.
    #[cold]
    #[inline(never)]
    fn grow(&self, pfn: u64) -> Option<&AtomicU64> {
        let (region, idx) = self.region_of(pfn)?;
        while region
            .growing
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let tags = region.tags.load(Ordering::Relaxed);
        let ready = region.ready.load(Ordering::Relaxed);
        if idx >= ready {
            let base = region.base.load(Ordering::Relaxed);
            let pages = region.pages.load(Ordering::Relaxed);
            let upto = (((base + idx) | (GROW_PAGES - 1)) + 1 - base).min(pages);
            // SAFETY: [ready, upto) lies within the region's `pages` tags,
            // which are ours (see `get`), and nobody reads or writes them
            // before `ready` covers them; growers are serialised.
            unsafe { core::ptr::write_bytes(tags.add(ready as usize), 0, (upto - ready) as usize) };
            region.ready.store(upto, Ordering::Release);
        }
        region.growing.store(false, Ordering::Release);
        // SAFETY: idx < ready now (as in `get`).
        Some(unsafe { &*tags.add(idx as usize) })
    }

    /// Registers `pages` tags for the frames from `base`, writing none of
    /// them (see the module documentation). Callers serialise `add` and
    /// `remove` (they hold the buddy lock).
    ///
    /// # Safety
    /// `tags` points to `pages` writable, 8-aligned u64s used by nothing
    /// else until `remove(key)`.
    pub(crate) unsafe fn add(&self, key: u64, base: u64, pages: u64, tags: *mut u64) -> bool {
        let used = self.used.load(Ordering::Relaxed);
        let slot = match self.regions[..used]
            .iter()
            .position(|region| region.pages.load(Ordering::Relaxed) == 0)
        {
            Some(i) => i,
            None if used < MAX_REGIONS => used,
            None => return false,
        };
        let region = &self.regions[slot];
        region.ready.store(0, Ordering::Relaxed);
        region.base.store(base, Ordering::Relaxed);
        region.key.store(key, Ordering::Relaxed);
        region.tags.store(tags.cast(), Ordering::Relaxed);
        region.pages.store(pages, Ordering::Release);
        if slot == used {
            self.used.store(used + 1, Ordering::Release);
        }
        true
    }

    /// Forgets every region registered under `key`.
    pub(crate) fn remove(&self, key: u64) {
        for region in &self.regions[..self.used.load(Ordering::Relaxed)] {
            if region.pages.load(Ordering::Relaxed) != 0
                && region.key.load(Ordering::Relaxed) == key
            {
                region.ready.store(0, Ordering::Release);
                region.pages.store(0, Ordering::Release);
            }
        }
    }
}

/// Why a free presenting tag `expected` is refused where the page's tag
/// is `actual`.
#[cold]
pub(crate) fn tag_error(actual: u64, expected: u64) -> Error {
    match actual & TAG_KIND {
        TAG_CACHED | TAG_CLAIMED => Error::DoubleFree,
        TAG_SLAB | TAG_INTERNAL => Error::OwnedBySlab,
        TAG_HEAP => Error::OwnedByHeap,
        TAG_ALLOC if actual & TAG_OWNER == expected & TAG_OWNER => Error::WrongCount {
            allocated: 1 << tag_order(actual),
        },
        TAG_ALLOC if actual & TAG_OWNER == TAG_HEAP_OWNED => Error::OwnedByHeap,
        TAG_ALLOC if actual & TAG_OWNER == TAG_HANDLE_OWNED => Error::OwnedByHandle,
        // Not handed out to the one presenting `expected`.
        _ => Error::NotInSection,
    }
}
