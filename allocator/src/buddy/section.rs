//! A section: one zone-split run of pages with its own free lists (by
//! order and address bucket, with masks of the non-empty ones), and the
//! lazy initialisation of its metadata: registration writes no word; a
//! chunk of words is initialised when first needed, and every allocation
//! off the lists and every free initialises a few more, until the whole
//! section is ready.

use super::piece_order;
use super::word::{NIL, ST_NONE, free_word, with_prev};
use crate::types::NR_ORDERS;

/// Metadata words (4 KiB) that each allocation taken off the free lists,
/// and each `free`, initialises until its section is fully initialised:
/// registration writes nothing, and a 1 GiB section is done after 512
/// such operations, from then on the free path tests one flag instead of
/// per-chunk state.
const INIT_STEP_WORDS: u32 = 512;

/// Address buckets per order: each section's free blocks of one order are
/// kept in this many lists by address, and allocation takes from the
/// lowest non-empty one (approximately address-ordered best fit, which
/// packs small blocks into few pageblocks and keeps high memory whole).
pub(super) const BUCKETS: usize = 32;

/// Lists per section.
pub(super) const LISTS: usize = NR_ORDERS * BUCKETS;

/// The (order, bucket) of list number `list`, lists numbered by order
/// first.
#[inline(always)]
pub(super) const fn list_order(list: usize) -> (usize, usize) {
    (list / BUCKETS, list % BUCKETS)
}

/// Number of 64-bit words in each per-section chunk bitmap.
const CHUNK_WORDS: usize = 32;
/// Maximum number of lazily initialised chunks per section.
const MAX_CHUNKS: u64 = (CHUNK_WORDS * 64) as u64;
/// Smallest chunk: 64 pages (512 bytes of metadata).
const MIN_CHUNK_SHIFT: u32 = 6;

/// Smallest chunk shift for which a section `[base, base + pages)` (in
/// frame numbers) has at most [`MAX_CHUNKS`] chunks.
const fn chunk_shift_for(base: u64, pages: u64) -> u32 {
    // Below ceil(log2(pages)) - log2(MAX_CHUNKS) even an aligned section
    // has too many chunks: start there (an unaligned base may need one more
    // step) instead of counting up from MIN_CHUNK_SHIFT at registration.
    let fit = (64 - (pages - 1).leading_zeros()).saturating_sub(MAX_CHUNKS.trailing_zeros());
    let mut shift = if fit > MIN_CHUNK_SHIFT {
        fit
    } else {
        MIN_CHUNK_SHIFT
    };
    loop {
        let chunks = ((base + pages - 1) >> shift) - (base >> shift) + 1;
        if chunks <= MAX_CHUNKS {
            return shift;
        }
        shift += 1;
    }
}

#[derive(Clone, Copy)]
pub(super) struct Section {
    /// First frame number.
    pub(super) base: u64,
    pub(super) pages: u32,
    pub(super) chunk_shift: u32,
    /// `base >> chunk_shift`: chunk `c` covers frames
    /// `(chunk_base + c) << chunk_shift ..`.
    chunk_base: u64,
    /// The word of page `idx` is `meta[idx]`.
    meta: *mut u64,
    pub(super) zone: u8,
    /// Per order: which of its lists are non-empty (bit `b` = bucket `b`).
    pub(super) list_mask: [u32; NR_ORDERS],
    /// A block at index `idx` is in bucket `idx >> bucket_shift`.
    pub(super) bucket_shift: u32,
    /// List heads per order and bucket (section-relative page index); only
    /// meaningful where `list_mask` says the list is non-empty.
    pub(super) heads: [[u32; BUCKETS]; NR_ORDERS],
    /// Per order: number of free blocks (the section's free pages are
    /// derived from it where needed, off the hot path).
    pub(super) free_count: [u32; NR_ORDERS],
    /// The registration this section is a zone piece of: its first frame,
    /// metadata buffer and length, and page count (handed back by
    /// `remove_section`).
    pub(super) reg_base: u64,
    pub(super) reg_meta: *mut u8,
    pub(super) reg_meta_bytes: usize,
    pub(super) reg_pages: u64,
    /// Chunk fully initialised (every word valid).
    chunk_init: [u64; CHUNK_WORDS],
    /// The first word of the chunk is valid (always set for initialised
    /// chunks). Blocks of order >= `chunk_shift` start at chunk starts, so
    /// their head words are read and written through this bit alone.
    chunk_head: [u64; CHUNK_WORDS],
    /// Scratch word: list updates that have no neighbour to update write
    /// here instead of branching on the (random) list length.
    sink: u64,
    /// Registered, but its free blocks (the pieces of
    /// [`Section::pieces`]) are not on its lists yet and no metadata word
    /// of it has been written: registration touches no caller memory.
    /// The zone masks already count the pieces, so the first allocation
    /// that picks the section calls `BuddyAllocator::materialise`; the
    /// `&self` views (free pages, statistics, free blocks) read the pieces.
    pub(super) pending: bool,
    /// Every chunk is initialised: every word is valid, and the free path
    /// reads the caller's word and every buddy directly (one predictable
    /// test instead of per-chunk ones, which mispredict in a churn of
    /// mixed orders: blocks of order >= `chunk_shift` leave their chunks
    /// uninitialised). Reached by [`Section::init_step`].
    pub(super) ready: bool,
    /// Incremental initialisation has reached this page index: each
    /// allocation taken off the lists, and each `free`, initialises up to
    /// [`INIT_STEP_WORDS`] more words, skipping initialised chunks.
    init_next: u32,
}

impl Section {
    /// A free slot: all zero (so an allocator in a `static` lives in
    /// `.bss`); [`occupy`](Self::occupy) relies on free slots being
    /// exactly this.
    pub(super) const EMPTY: Section = Section {
        base: 0,
        pages: 0,
        chunk_shift: 0,
        chunk_base: 0,
        meta: core::ptr::null_mut(),
        zone: 0,
        list_mask: [0; NR_ORDERS],
        bucket_shift: 0,
        heads: [[0; BUCKETS]; NR_ORDERS],
        free_count: [0; NR_ORDERS],
        reg_base: 0,
        reg_meta: core::ptr::null_mut(),
        reg_meta_bytes: 0,
        reg_pages: 0,
        chunk_init: [0; CHUNK_WORDS],
        chunk_head: [0; CHUNK_WORDS],
        sink: 0,
        pending: false,
        ready: false,
        init_next: 0,
    };

    /// Makes this free slot the pending section of frames `[base, end)` in
    /// `zone`, whose words start at `meta`. Only the scalars are written
    /// (registration touches few cache lines): a free slot is always
    /// [`EMPTY`](Self::EMPTY), its masks, counts and chunk maps zero
    /// already, and list heads are only read where `list_mask` says a
    /// list is non-empty.
    pub(super) fn occupy(&mut self, base: u64, end: u64, zone: u8, meta: *mut u64) {
        debug_assert!(self.list_mask == [0; NR_ORDERS] && self.free_count == [0; NR_ORDERS]);
        debug_assert!(
            self.chunk_init
                .iter()
                .chain(&self.chunk_head)
                .all(|&bits| bits == 0)
        );
        self.base = base;
        self.pages = (end - base) as u32;
        self.zone = zone;
        self.chunk_shift = chunk_shift_for(base, end - base);
        self.chunk_base = base >> self.chunk_shift;
        self.bucket_shift = super::ceil_log2(end - base).saturating_sub(BUCKETS.trailing_zeros());
        self.meta = meta;
        // Its pieces go on the lists when an allocation first picks the
        // section (`materialise`); until then only the zone masks know
        // them.
        self.pending = true;
    }

    #[inline(always)]
    pub(super) fn end(&self) -> u64 {
        self.base + self.pages as u64
    }

    /// Free pages of the section, from the per-order counts (O(orders)).
    pub(super) fn free_pages(&self) -> u64 {
        if self.pending {
            return self.pages as u64;
        }
        (0..NR_ORDERS)
            .map(|order| (self.free_count[order] as u64) << order)
            .sum()
    }

    /// The section as the aligned blocks registration frees: (index,
    /// order), ascending. No piece's buddy lies wholly in the section, so
    /// none of them can merge.
    pub(super) fn pieces(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut pos = 0u64;
        core::iter::from_fn(move || {
            let left = self.pages as u64 - pos;
            if left == 0 {
                return None;
            }
            let order = piece_order(self.base + pos, left);
            let piece = (pos as u32, order);
            pos += 1 << order;
            Some(piece)
        })
    }

    /// For a pending section: the piece that list `(order, bucket)` would
    /// hold after the one at `after` (NIL: its first), or NIL.
    /// Registration pushes the pieces in ascending order, each at the head
    /// of its list, so a list holds its pieces in descending order.
    pub(super) fn pending_next(&self, order: usize, bucket: usize, after: u32) -> u32 {
        self.pieces()
            .filter(|&(idx, piece_order)| {
                piece_order as usize == order && self.bucket(idx) == bucket && idx < after
            })
            .map(|(idx, _)| idx)
            .last()
            .unwrap_or(NIL)
    }

    /// The list part of `BuddyAllocator::push`: puts free block `idx` of
    /// `order` at the head of its list. Returns whether the section had no
    /// free block of that order before (the zone masks need the bit).
    #[inline(always)]
    pub(super) fn push_local(&mut self, idx: u32, order: u32, checked: bool) -> bool {
        let order_index = order as usize;
        let bucket = self.bucket(idx);
        let mask = self.list_mask[order_index];
        let occupied = mask & (1 << bucket) != 0;
        // The old head (if any) gets `idx` as its prev.
        let next = core::hint::select_unpredictable(occupied, self.heads[order_index][bucket], NIL);
        self.set_prev_of(next, idx);
        self.list_mask[order_index] = mask | (1 << bucket);
        self.write_head(idx, order, free_word(order, NIL, next), checked);
        self.heads[order_index][bucket] = idx;
        self.free_count[order_index] += 1;
        mask == 0
    }

    /// Writes `word` as the head word of block `idx` of `order`. `checked`:
    /// the word may lie in an uninitialised chunk (see `BuddyAllocator::push`).
    #[inline(always)]
    pub(super) fn write_head(&mut self, idx: u32, order: u32, word: u64, checked: bool) {
        if !checked {
            self.raw_write(idx, word);
        } else if order >= self.chunk_shift {
            self.write_chunk_start(idx, word);
        } else {
            self.write(idx, word);
        }
    }

    /// Sets the prev link of free-list member `idx`, or writes the scratch
    /// word for `NIL`: a select, not a branch, on whether a neighbour
    /// exists, which is random in a churn and would mispredict often.
    #[inline(always)]
    pub(super) fn set_prev_of(&mut self, idx: u32, prev: u32) {
        debug_assert!(idx == NIL || idx < self.pages);
        let sink: *mut u64 = &mut self.sink;
        let target = core::hint::select_unpredictable(
            idx != NIL,
            self.meta.wrapping_add(idx as usize),
            sink,
        );
        // SAFETY: `target` is either the word of free-list member `idx`
        // (`idx < pages`, valid per add_section's contract, see raw_read)
        // or this section's own scratch word.
        unsafe { target.write(with_prev(target.read(), prev)) }
    }

    /// The bucket of a block at `idx`.
    #[inline(always)]
    pub(super) fn bucket(&self, idx: u32) -> usize {
        (idx >> self.bucket_shift) as usize % BUCKETS
    }

    /// The first block of list `(order, bucket)`, or NIL.
    #[inline(always)]
    pub(super) fn list_first(&self, order: usize, bucket: usize) -> u32 {
        if self.list_mask[order] & (1 << bucket) != 0 {
            self.heads[order][bucket]
        } else {
            NIL
        }
    }

    /// Whether page `idx` starts a block of 2^`order` pages.
    #[inline(always)]
    pub(super) fn starts_aligned(&self, idx: u32, order: u32) -> bool {
        (self.base + idx as u64) & ((1 << order) - 1) == 0
    }

    #[inline(always)]
    pub(super) fn chunk_of(&self, idx: u32) -> usize {
        (((self.base + idx as u64) >> self.chunk_shift) - self.chunk_base) as usize
    }

    #[inline(always)]
    fn is_chunk_start(&self, idx: u32) -> bool {
        (self.base + idx as u64) & ((1u64 << self.chunk_shift) - 1) == 0
    }

    /// Reads the word of page `idx` directly. Only for words known to be
    /// valid: free-list members (their words were written as free heads)
    /// and heads of allocations found valid before.
    #[inline(always)]
    pub(super) fn raw_read(&self, idx: u32) -> u64 {
        debug_assert!(idx < self.pages);
        // SAFETY: idx < self.pages, and add_section's contract makes
        // `meta[0..pages]` valid, 8-aligned and exclusively ours.
        unsafe { self.meta.add(idx as usize).read() }
    }

    /// Writes the word of page `idx` directly. Only where the word is known
    /// to be valid (see [`Section::raw_read`]); a valid word stays valid.
    #[inline(always)]
    pub(super) fn raw_write(&mut self, idx: u32, word: u64) {
        debug_assert!(idx < self.pages);
        // SAFETY: as in raw_read.
        unsafe { self.meta.add(idx as usize).write(word) }
    }

    /// The logical metadata word of page `idx` (uninitialised chunks read
    /// as "none" except for a valid chunk-head word). Use for any page
    /// that is not known to hold a valid word.
    #[inline(always)]
    pub(super) fn read(&self, idx: u32) -> u64 {
        let chunk = self.chunk_of(idx);
        let bit = 1u64 << (chunk % 64);
        if self.chunk_init[chunk / 64] & bit != 0 {
            return self.raw_read(idx);
        }
        self.read_lazy(idx, chunk)
    }

    #[inline(never)]
    fn read_lazy(&self, idx: u32, chunk: usize) -> u64 {
        let bit = 1u64 << (chunk % 64);
        if self.chunk_head[chunk / 64] & bit != 0 && self.is_chunk_start(idx) {
            self.raw_read(idx)
        } else {
            ST_NONE
        }
    }

    /// Whether chunk `chunk` is fully initialised.
    #[inline(always)]
    pub(super) fn chunk_ready(&self, chunk: usize) -> bool {
        self.chunk_init[chunk / 64] & (1 << (chunk % 64)) != 0
    }

    /// [`read`](Self::read) for a page at a chunk start (a block of order
    /// >= `chunk_shift`).
    #[inline(always)]
    pub(super) fn read_chunk_start(&self, idx: u32) -> u64 {
        debug_assert!(self.is_chunk_start(idx));
        let chunk = self.chunk_of(idx);
        if self.chunk_head[chunk / 64] & (1 << (chunk % 64)) != 0 {
            self.raw_read(idx)
        } else {
            ST_NONE
        }
    }

    /// [`write`](Self::write) for a page at a chunk start: the word becomes
    /// valid whatever the state of the rest of the chunk.
    #[inline(always)]
    fn write_chunk_start(&mut self, idx: u32, word: u64) {
        debug_assert!(self.is_chunk_start(idx));
        let chunk = self.chunk_of(idx);
        self.chunk_head[chunk / 64] |= 1 << (chunk % 64);
        self.raw_write(idx, word);
    }

    /// Writes the logical word of page `idx`, initialising its chunk first
    /// when needed.
    #[inline(always)]
    pub(super) fn write(&mut self, idx: u32, word: u64) {
        let chunk = self.chunk_of(idx);
        let bit = 1u64 << (chunk % 64);
        if self.chunk_init[chunk / 64] & bit == 0 {
            self.write_lazy(idx, word, chunk);
            return;
        }
        self.raw_write(idx, word);
    }

    #[inline(never)]
    fn write_lazy(&mut self, idx: u32, word: u64, chunk: usize) {
        let bit = 1u64 << (chunk % 64);
        if self.is_chunk_start(idx) {
            self.chunk_head[chunk / 64] |= bit;
            self.raw_write(idx, word);
            return;
        }
        if word == ST_NONE {
            // Already "none" logically.
            return;
        }
        self.init_chunk(chunk);
        self.raw_write(idx, word);
    }

    /// The word of page `idx`, which may lie anywhere (a caller's address),
    /// and the order below which its buddies' words may be read directly
    /// (see `free_buddy`): all orders once the section is ready, orders
    /// below the chunk order in an initialised chunk, else none.
    #[inline(always)]
    pub(super) fn read_own(&self, idx: u32) -> (u64, u32) {
        if self.ready {
            return (self.raw_read(idx), u32::MAX);
        }
        let chunk = self.chunk_of(idx);
        if self.chunk_ready(chunk) {
            (self.raw_read(idx), self.chunk_shift)
        } else {
            (self.read_lazy(idx, chunk), 0)
        }
    }

    /// One step of incremental initialisation: "none" into up to
    /// [`INIT_STEP_WORDS`] more words of uninitialised chunks (keeping a
    /// valid chunk-head word), marking each chunk initialised once all of
    /// it is; sets `ready` at the end of the section. Logically a no-op:
    /// an uninitialised chunk reads as "none" except its head word.
    #[cold]
    #[inline(never)]
    pub(super) fn init_step(&mut self) {
        let mut budget = INIT_STEP_WORDS;
        while budget > 0 {
            let pos = self.init_next;
            if pos >= self.pages {
                self.ready = true;
                return;
            }
            let chunk = self.chunk_of(pos);
            let abs_chunk = self.chunk_base + chunk as u64;
            let start = ((abs_chunk << self.chunk_shift).max(self.base) - self.base) as u32;
            let end = ((((abs_chunk + 1) << self.chunk_shift) - self.base) as u32).min(self.pages);
            if self.chunk_ready(chunk) {
                self.init_next = end;
                continue;
            }
            let to = end.min(pos + budget);
            let bit = 1u64 << (chunk % 64);
            let keep_head =
                pos == start && self.is_chunk_start(pos) && self.chunk_head[chunk / 64] & bit != 0;
            let from = pos + u32::from(keep_head);
            // SAFETY: [from, to) lies within [0, pages), valid per add_section.
            unsafe {
                core::ptr::write_bytes(self.meta.add(from as usize), 0, (to - from) as usize)
            };
            budget -= to - pos;
            self.init_next = to;
            if to == end {
                self.chunk_init[chunk / 64] |= bit;
                self.chunk_head[chunk / 64] |= bit;
            }
        }
    }

    /// Writes "none" into every word of chunk `chunk` except a valid head
    /// word.
    #[cold]
    pub(super) fn init_chunk(&mut self, chunk: usize) {
        let bit = 1u64 << (chunk % 64);
        let first_pfn = (self.chunk_base + chunk as u64) << self.chunk_shift;
        let lo = first_pfn.max(self.base) - self.base;
        let hi = (first_pfn + (1 << self.chunk_shift)).min(self.end()) - self.base;
        let keep_head = self.chunk_head[chunk / 64] & bit != 0 && first_pfn >= self.base;
        let from = if keep_head { lo + 1 } else { lo };
        if hi > from {
            // SAFETY: [from, hi) lies within [0, pages), valid per add_section.
            unsafe {
                core::ptr::write_bytes(self.meta.add(from as usize), 0, (hi - from) as usize);
            }
        }
        self.chunk_init[chunk / 64] |= bit;
        self.chunk_head[chunk / 64] |= bit;
    }
}

#[cfg(test)]
mod tests;
