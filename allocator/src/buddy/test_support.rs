//! What the buddy's unit tests share: an allocator over test metadata
//! ([`Fixture`]), the check that a rejected call changes nothing
//! ([`rejects`]), frame memory for poisoning ([`Ram`]), metadata whose
//! untouched words can be told apart ([`on_garbage_metadata`]), and
//! parking pages on purpose ([`park_all`]).

use core::ptr::NonNull;

use crate::{
    BuddyAllocator, Constraint, Error, FrameOptions, FreeBlock, HOT_CAP, PhysAddr, Stats,
    metadata_bytes,
};

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

/// An allocator plus the metadata buffers it was given.
pub(crate) struct Fixture {
    pub(crate) buddy: Box<BuddyAllocator>,
    pub(crate) metas: Vec<Vec<u64>>,
    /// Frame memory for poisoning tests (dropped after `buddy`).
    ram: Option<Ram>,
}

impl Fixture {
    /// An allocator with a section of `pages` pages at each `(start, pages)`.
    pub(crate) fn new(sections: &[(u64, u64)]) -> Fixture {
        let mut fixture = Fixture {
            buddy: Box::new(BuddyAllocator::new()),
            metas: Vec::new(),
            ram: None,
        };
        for &(start, pages) in sections {
            fixture.add(start, pages).unwrap();
        }
        fixture
    }

    /// Registers `pages` pages at `start` over fresh metadata.
    pub(crate) fn add(&mut self, start: u64, pages: u64) -> Result<(), Error> {
        // Garbage metadata: lazy init must not trust it.
        let mut meta = vec![0xDEAD_BEEF_F00D_CAFEu64; pages as usize];
        let ptr = NonNull::new(meta.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `meta` is kept in `self.metas` (its heap buffer never
        // moves) for as long as `self.buddy` lives, and nothing else uses it.
        let added = unsafe {
            self.buddy
                .add_section(PhysAddr(start), pages, ptr, metadata_bytes(pages))
        };
        if added.is_ok() {
            self.metas.push(meta);
        }
        added
    }

    /// Makes `ram` the frames' memory (kept here, so it outlives the
    /// allocator's use of it) and turns poisoning on, zeroing too if `zero`.
    pub(crate) fn poison(&mut self, ram: Ram, zero: bool) {
        let ram = self.ram.insert(ram);
        let opts = FrameOptions {
            poison: true,
            zero_on_alloc: zero,
        };
        // SAFETY: `ram` maps its physical range and lives in `self`, which
        // drops it after the allocator.
        unsafe { self.buddy.set_frame_options(ram.offset(), opts) };
    }

    /// The memory given to [`poison`](Self::poison).
    pub(crate) fn ram(&mut self) -> &mut Ram {
        self.ram.as_mut().expect("poison() first")
    }

    /// What a call must not change: statistics and every free block.
    pub(crate) fn snap(&self) -> (Stats, Vec<FreeBlock>) {
        (self.buddy.stats(), self.buddy.free_blocks().collect())
    }

    pub(crate) fn free(&self) -> u64 {
        self.buddy.stats().free_pages()
    }
}

/// Asserts `call` fails with `error` and leaves the allocator unchanged.
pub(crate) fn rejects<R: core::fmt::Debug>(
    fixture: &mut Fixture,
    error: Error,
    call: impl FnOnce(&mut BuddyAllocator) -> Result<R, Error>,
) {
    let before = fixture.snap();
    let result = call(&mut fixture.buddy);
    assert_eq!(result.map(|_| ()).unwrap_err(), error);
    assert_eq!(fixture.snap(), before, "state changed by a rejected call");
}

/// What metadata the allocator never wrote still holds.
pub(crate) const GARBAGE: u64 = 0x5A5A_5A5A_5A5A_5A5A;

/// Registers `pages` pages at 4 GiB over metadata full of [`GARBAGE`],
/// runs `f` on the allocator, drops it, and returns the metadata to look
/// at.
pub(crate) fn on_garbage_metadata(pages: u64, f: impl FnOnce(&mut BuddyAllocator)) -> Vec<u64> {
    let mut meta = vec![GARBAGE; pages as usize];
    let mut buddy = Box::new(BuddyAllocator::new());
    // SAFETY: `meta` outlives `buddy`, which is dropped before `meta` is
    // returned, and nothing else touches `meta` meanwhile.
    unsafe {
        buddy
            .add_section(
                PhysAddr(4 * GIB),
                pages,
                NonNull::new(meta.as_mut_ptr().cast()).unwrap(),
                metadata_bytes(pages),
            )
            .unwrap();
    }
    f(&mut buddy);
    drop(buddy);
    meta
}

/// A section backed by real memory, for poisoning and zeroing.
pub(crate) struct Ram {
    buf: Vec<u64>,
    phys: u64,
}

impl Ram {
    /// `pages` pages of memory standing for the frames at `phys`.
    pub(crate) fn new(phys: u64, pages: usize) -> Ram {
        Ram {
            buf: vec![0x1111_1111_1111_1111; pages * 512],
            phys,
        }
    }

    /// Where physical address 0 would be mapped.
    pub(crate) fn offset(&mut self) -> *mut u8 {
        self.buf
            .as_mut_ptr()
            .cast::<u8>()
            .wrapping_sub(self.phys as usize)
    }

    /// The byte at physical address `phys`.
    pub(crate) fn byte(&self, phys: u64) -> u8 {
        // SAFETY: reading the test's own buffer while the allocator is idle.
        let bytes = unsafe {
            core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.buf.len() * 8)
        };
        bytes[(phys - self.phys) as usize]
    }

    /// Writes `value` at physical address `phys`.
    pub(crate) fn poke(&mut self, phys: u64, value: u8) {
        let offset = (phys - self.phys) as usize;
        let word = &mut self.buf[offset / 8];
        let mut bytes = word.to_ne_bytes();
        bytes[offset % 8] = value;
        *word = u64::from_ne_bytes(bytes);
    }
}

/// Allocates all `n` pages of a fresh section as single pages and frees
/// them evens first: every page's buddy is in use or parked when it is
/// freed, so all of them are parked (n <= HOT_CAP).
pub(crate) fn park_all(fixture: &mut Fixture, n: usize) -> Vec<PhysAddr> {
    assert!(n <= HOT_CAP);
    let mut pages: Vec<PhysAddr> = (0..n)
        .map(|_| fixture.buddy.alloc(0, Constraint::ANY).unwrap())
        .collect();
    pages.sort_unstable();
    for i in (0..n).step_by(2).chain((1..n).step_by(2)) {
        fixture.buddy.free(pages[i], 0).unwrap();
    }
    pages
}

/// Pages parked on hot lists, all zones.
pub(crate) fn hot_pages(fixture: &Fixture) -> u64 {
    fixture
        .buddy
        .stats()
        .zones
        .iter()
        .map(|zone| zone.hot_pages)
        .sum()
}
