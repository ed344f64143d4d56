//! Free lists: pushing, unlinking, splitting and merging blocks.

use super::*;

impl BuddyAllocator {
    /// Puts free block `idx` of `order` at the head of its list. `checked`:
    /// the word of `idx` may lie in an uninitialised chunk (otherwise it is
    /// known to be valid: a former free or allocation head). Blocks of
    /// order >= `chunk_shift` start at a chunk start: their word is made
    /// valid through the chunk-head bit.
    #[inline(always)]
    pub(super) fn push(&mut self, s: usize, idx: u32, order: u32, checked: bool) {
        if self.secs[s].push_local(idx, order, checked) {
            self.zone_gained(s, 1 << order);
        }
    }

    /// Removes free block `idx` (whose word is `e`) from its list. Its own
    /// word is left as it is: the caller overwrites it.
    #[inline(always)]
    pub(super) fn unlink(&mut self, s: usize, idx: u32, order: u32, e: u64) {
        let o = order as usize;
        let sec = &mut self.secs[s];
        let prev = free_prev(e);
        let next = free_next(e);
        if prev != NIL {
            let pe = sec.raw_read(prev);
            sec.raw_write(prev, with_next(pe, next));
        } else {
            let b = sec.bucket(idx);
            sec.heads[o][b] = next;
            if next == NIL {
                self.bucket_emptied(s, order, b);
            }
        }
        let sec = &mut self.secs[s];
        if next != NIL {
            let ne = sec.raw_read(next);
            sec.raw_write(next, with_prev(ne, prev));
        }
        sec.nfree[o] -= 1;
    }

    /// Takes the first block off the lowest-addressed non-empty bucket of
    /// order `j` in section `s` (best fit by order, then lowest address:
    /// small blocks pack into the low pageblocks, and whole pageblocks are
    /// split only when no smaller block is free). [`unlink`](Self::unlink)
    /// for a list head, whose `prev` is known to be none. Its own word is
    /// left as it is: the caller overwrites it.
    #[inline(always)]
    pub(super) fn pop_first(&mut self, s: usize, j: u32) -> u32 {
        let o = j as usize;
        let sec = &mut self.secs[s];
        let b = sec.lmask[o].trailing_zeros() as usize % BUCKETS;
        let idx = sec.heads[o][b];
        let next = free_next(sec.raw_read(idx));
        // Stale once the bucket is empty (its lmask bit says so).
        sec.heads[o][b] = next;
        sec.set_prev_of(next, NIL);
        sec.nfree[o] -= 1;
        // Clear the bucket's bit if it emptied, without a branch on it.
        sec.lmask[o] &= !(u32::from(next == NIL) << b);
        if sec.lmask[o] == 0 {
            self.order_emptied(s, j);
        }
        idx
    }

    /// The last block of bucket `b` of order `order` in section `s` left:
    /// clears the list bit, and the zone's bits if that was the last list.
    #[inline(always)]
    pub(super) fn bucket_emptied(&mut self, s: usize, order: u32, b: usize) {
        let sec = &mut self.secs[s];
        sec.lmask[order as usize] &= !(1 << b);
        if sec.lmask[order as usize] == 0 {
            self.order_emptied(s, order);
        }
    }

    /// Splits free-list-removed block `idx` of order `j` down to order `k`,
    /// keeping the lowest part; the upper halves go back to the free lists.
    #[inline(never)]
    pub(super) fn split(&mut self, s: usize, idx: u32, mut j: u32, k: u32) {
        let sec = &mut self.secs[s];
        let cs = sec.chunk_shift;
        let mut gained = 0u32;
        while j > k && j > cs {
            j -= 1;
            // A chunk start.
            if sec.push_local(idx + (1 << j), j, true) {
                gained |= 1 << j;
            }
        }
        if j > k {
            // The rest lies in the chunk of `idx`.
            let c = sec.chunk_of(idx);
            if !sec.chunk_ready(c) {
                sec.init_chunk(c);
            }
            while j > k {
                j -= 1;
                if sec.push_local(idx + (1 << j), j, false) {
                    gained |= 1 << j;
                }
            }
        }
        if gained != 0 {
            self.zone_gained(s, gained);
        }
    }

    /// Frees the aligned block `idx` of order `k` (its head word must not
    /// be a free or allocation head any more), merging with free buddies.
    /// `checked`: as in [`push`](Self::push), for the word of `idx`.
    /// `same_chunk`: orders below it have their buddy in the (initialised)
    /// chunk of `idx`, so its word is read directly; 0 if unknown.
    #[inline(always)]
    pub(super) fn free_block(
        &mut self,
        s: usize,
        idx: u32,
        k: u32,
        checked: bool,
        same_chunk: u32,
    ) {
        match self.free_buddy(s, idx, k, same_chunk) {
            None => self.push(s, idx, k, checked),
            Some((bidx, be)) => self.free_merge(s, idx, k, checked, same_chunk, bidx, be),
        }
    }

    /// The buddy of block `idx` of order `k` if it is a free block of the
    /// same order that merges: on a free list, or parked with an order
    /// above 0 (a parked single page does not merge): (index, word).
    #[inline(always)]
    pub(super) fn free_buddy(
        &self,
        s: usize,
        idx: u32,
        k: u32,
        same_chunk: u32,
    ) -> Option<(u32, u64)> {
        if k >= MAX_ORDER {
            return None;
        }
        let sec = &self.secs[s];
        let base = sec.base;
        let bpfn = (base + idx as u64) ^ (1 << k);
        if bpfn < base || bpfn - base + (1 << k) > sec.pages as u64 {
            return None;
        }
        let bidx = (bpfn - base) as u32;
        let be = if k < same_chunk {
            sec.raw_read(bidx)
        } else if k >= sec.chunk_shift {
            sec.get_cs(bidx)
        } else {
            sec.get(bidx)
        };
        // A free (01) or hot (11) head of order k: clearing bit 1 leaves
        // 01 for both, 00 for allocation (10) and none (00) heads. But not
        // a hot single page, which is the bare hot state.
        let head = be & 0x7f;
        if (head & !ST_ALLOC) != (ST_FREE | ((k as u64) << 2)) || head == ST_HOT {
            return None;
        }
        Some((bidx, be))
    }

    /// The merging part of [`free_block`](Self::free_block): the buddy
    /// `bidx` (word `be`) of order `k` is free.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn free_merge(
        &mut self,
        s: usize,
        idx: u32,
        k: u32,
        checked: bool,
        same_chunk: u32,
        bidx: u32,
        be: u64,
    ) {
        self.merge_loop(s, idx, k, checked, same_chunk, bidx, be, false);
    }

    /// The body of [`free_merge`](Self::free_merge), inlined into `free`.
    /// The merged block goes to a hot list if `park` (see
    /// [`place`](Self::place)), else to the free lists.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn merge_loop(
        &mut self,
        s: usize,
        mut idx: u32,
        mut k: u32,
        mut checked: bool,
        same_chunk: u32,
        mut bidx: u32,
        mut be: u64,
        park: bool,
    ) {
        loop {
            if state(be) == ST_HOT {
                self.hot_take_slot(self.secs[s].zone as usize % 4, k, hot_slot(be));
            } else {
                self.unlink(s, bidx, k, be);
            }
            // The upper half's head (the absorbed buddy's, or our own stale
            // word) is no longer a head; the lower one is rewritten later.
            // A write of "none" is harmless even in an uninitialised chunk.
            self.secs[s].raw_write(idx.max(bidx), ST_NONE);
            if bidx < idx {
                idx = bidx;
                checked = false;
            }
            k += 1;
            match self.free_buddy(s, idx, k, same_chunk) {
                Some((b, e)) => (bidx, be) = (b, e),
                None => break,
            }
        }
        if park {
            self.place(s, idx, k, checked);
        } else {
            self.push(s, idx, k, checked);
        }
    }

    /// Frees `[idx, idx + count)` as a sequence of aligned blocks. The word
    /// of `idx` is known valid; those of later pieces are not.
    pub(super) fn release(&mut self, s: usize, idx: u32, count: u64) {
        let base = self.secs[s].base;
        let end = idx as u64 + count;
        let mut p = idx as u64;
        while p < end {
            let o = piece_order(base + p, end - p);
            self.free_block(s, p as u32, o, p != idx as u64, 0);
            p += 1 << o;
        }
    }

    /// Does what registration deferred for pending section `s`: initialises
    /// its partial edge chunks and puts its pieces on the free lists.
    #[cold]
    #[inline(never)]
    pub(super) fn materialise(&mut self, s: usize) {
        let sec = &mut self.secs[s];
        sec.pending = false;
        let (lo, hi) = (sec.base, sec.end());
        let last = sec.chunk_of(sec.pages - 1);
        let mask = (1u64 << sec.chunk_shift) - 1;
        if lo & mask != 0 {
            sec.init_chunk(0);
        }
        if hi & mask != 0 {
            sec.init_chunk(last);
        }
        self.give_back(s, 0, hi - lo);
    }

    /// Materialises every pending section (tests compare the views).
    #[cfg(test)]
    pub(crate) fn materialise_all(&mut self) {
        for s in 0..MAX_SECTIONS {
            if self.used & (1 << s) != 0 && self.secs[s].pending {
                self.materialise(s);
            }
        }
    }

    /// Puts the free range `[from, to)` of section `s` on the free lists
    /// without merging (its pieces' buddies are known not to be free).
    pub(super) fn give_back(&mut self, s: usize, from: u64, to: u64) {
        let base = self.secs[s].base;
        let mut p = from;
        while p < to {
            let o = piece_order(base + p, to - p);
            self.push(s, p as u32, o, true);
            p += 1 << o;
        }
    }

    /// The free block containing page `idx`, if any: (head, order).
    pub(super) fn find_free_block(&self, s: usize, idx: u32) -> Option<(u32, u32)> {
        let sec = &self.secs[s];
        if sec.pending {
            return sec.pieces().find(|&(h, o)| idx.wrapping_sub(h) < 1 << o);
        }
        let pfn = sec.base + idx as u64;
        for k in 0..=MAX_ORDER {
            let h = pfn & !((1u64 << k) - 1);
            if h < sec.base {
                break;
            }
            let hidx = (h - sec.base) as u32;
            let e = sec.get(hidx);
            // Hot heads carry their order where free heads do.
            if (state(e) == ST_FREE || state(e) == ST_HOT) && free_order(e) >= k {
                return Some((hidx, free_order(e)));
            }
        }
        None
    }
}
