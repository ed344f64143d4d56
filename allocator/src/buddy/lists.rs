//! Free lists: pushing a block on its section's list, unlinking it,
//! splitting a block down to the order asked for, merging a freed block
//! with its free buddies, and putting a pending section's blocks on the
//! lists when it is first used.

use super::section::BUCKETS;
use super::word::{
    NIL, ST_FREE, ST_HOT, ST_NONE, free_next, free_order, free_prev, hot_slot, merges_at, state,
    with_next, with_prev,
};
use super::{BuddyAllocator, piece_order};
use crate::types::MAX_ORDER;

impl BuddyAllocator {
    /// Puts free block `idx` of `order` at the head of its list. `checked`:
    /// the word of `idx` may lie in an uninitialised chunk (otherwise it is
    /// known to be valid: a former free or allocation head). Blocks of
    /// order >= `chunk_shift` start at a chunk start: their word is made
    /// valid through the chunk-head bit.
    #[inline(always)]
    pub(super) fn push(&mut self, section: usize, idx: u32, order: u32, checked: bool) {
        if self.secs[section].push_local(idx, order, checked) {
            self.zone_gained(section, 1 << order);
        }
    }

    /// Removes free block `idx` (whose word is `word`) from its list. Its
    /// own word is left as it is: the caller overwrites it.
    #[inline(always)]
    pub(super) fn unlink(&mut self, section: usize, idx: u32, order: u32, word: u64) {
        let order_index = order as usize;
        let sec = &mut self.secs[section];
        let prev = free_prev(word);
        let next = free_next(word);
        if prev != NIL {
            let prev_word = sec.raw_read(prev);
            sec.raw_write(prev, with_next(prev_word, next));
        } else {
            let bucket = sec.bucket(idx);
            sec.heads[order_index][bucket] = next;
            if next == NIL {
                self.bucket_emptied(section, order, bucket);
            }
        }
        let sec = &mut self.secs[section];
        if next != NIL {
            let next_word = sec.raw_read(next);
            sec.raw_write(next, with_prev(next_word, prev));
        }
        sec.free_count[order_index] -= 1;
    }

    /// Takes the first block off the lowest-addressed non-empty bucket of
    /// `order` in section `section` (best fit by order, then lowest
    /// address: small blocks pack into the low pageblocks, and whole
    /// pageblocks are split only when no smaller block is free).
    /// [`unlink`](Self::unlink) for a list head, whose `prev` is known to
    /// be none. Its own word is left as it is: the caller overwrites it.
    #[inline(always)]
    pub(super) fn pop_first(&mut self, section: usize, order: u32) -> u32 {
        let order_index = order as usize;
        let sec = &mut self.secs[section];
        let bucket = sec.list_mask[order_index].trailing_zeros() as usize % BUCKETS;
        let idx = sec.heads[order_index][bucket];
        let next = free_next(sec.raw_read(idx));
        // Stale once the bucket is empty (its list_mask bit says so).
        sec.heads[order_index][bucket] = next;
        sec.set_prev_of(next, NIL);
        sec.free_count[order_index] -= 1;
        // Clear the bucket's bit if it emptied, without a branch on it.
        sec.list_mask[order_index] &= !(u32::from(next == NIL) << bucket);
        if sec.list_mask[order_index] == 0 {
            self.order_emptied(section, order);
        }
        idx
    }

    /// The last block of `bucket` of `order` in section `section` left:
    /// clears the list bit, and the zone's bits if that was the last list.
    #[inline(always)]
    fn bucket_emptied(&mut self, section: usize, order: u32, bucket: usize) {
        let sec = &mut self.secs[section];
        sec.list_mask[order as usize] &= !(1 << bucket);
        if sec.list_mask[order as usize] == 0 {
            self.order_emptied(section, order);
        }
    }

    /// Splits block `idx` of `block_order`, already off the lists, down to
    /// `order`, keeping the lowest part; the upper halves go back to the
    /// free lists.
    #[inline(never)]
    pub(super) fn split(&mut self, section: usize, idx: u32, mut block_order: u32, order: u32) {
        let sec = &mut self.secs[section];
        let chunk_shift = sec.chunk_shift;
        let mut gained = 0u32;
        while block_order > order && block_order > chunk_shift {
            block_order -= 1;
            // A chunk start.
            if sec.push_local(idx + (1 << block_order), block_order, true) {
                gained |= 1 << block_order;
            }
        }
        if block_order > order {
            // The rest lies in the chunk of `idx`.
            let chunk = sec.chunk_of(idx);
            if !sec.chunk_ready(chunk) {
                sec.init_chunk(chunk);
            }
            while block_order > order {
                block_order -= 1;
                if sec.push_local(idx + (1 << block_order), block_order, false) {
                    gained |= 1 << block_order;
                }
            }
        }
        if gained != 0 {
            self.zone_gained(section, gained);
        }
    }

    /// Frees the aligned block `idx` of `order` (its head word must not be
    /// a free or allocation head any more), merging with free buddies.
    /// `checked`: as in [`push`](Self::push), for the word of `idx`.
    /// `same_chunk`: orders below it have their buddy in the (initialised)
    /// chunk of `idx`, so its word is read directly; 0 if unknown.
    #[inline(always)]
    pub(super) fn free_block(
        &mut self,
        section: usize,
        idx: u32,
        order: u32,
        checked: bool,
        same_chunk: u32,
    ) {
        match self.free_buddy(section, idx, order, same_chunk) {
            None => self.push(section, idx, order, checked),
            Some((buddy, buddy_word)) => {
                self.free_merge(section, idx, order, checked, same_chunk, buddy, buddy_word)
            }
        }
    }

    /// The buddy of block `idx` of `order` if it is a free block of the
    /// same order that merges: on a free list, or parked with an order
    /// above 0 (a parked single page does not merge): (index, word).
    #[inline(always)]
    pub(super) fn free_buddy(
        &self,
        section: usize,
        idx: u32,
        order: u32,
        same_chunk: u32,
    ) -> Option<(u32, u64)> {
        if order >= MAX_ORDER {
            return None;
        }
        let sec = &self.secs[section];
        let base = sec.base;
        let buddy_pfn = (base + idx as u64) ^ (1 << order);
        if buddy_pfn < base || buddy_pfn - base + (1 << order) > sec.pages as u64 {
            return None;
        }
        let buddy = (buddy_pfn - base) as u32;
        let buddy_word = if order < same_chunk {
            sec.raw_read(buddy)
        } else if order >= sec.chunk_shift {
            sec.read_chunk_start(buddy)
        } else {
            sec.read(buddy)
        };
        if !merges_at(buddy_word, order) {
            return None;
        }
        Some((buddy, buddy_word))
    }

    /// The merging part of [`free_block`](Self::free_block): the buddy
    /// `buddy` (word `buddy_word`) of `order` is free.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn free_merge(
        &mut self,
        section: usize,
        idx: u32,
        order: u32,
        checked: bool,
        same_chunk: u32,
        buddy: u32,
        buddy_word: u64,
    ) {
        self.merge_loop(
            section, idx, order, checked, same_chunk, buddy, buddy_word, false,
        );
    }

    /// The body of [`free_merge`](Self::free_merge), inlined into `free`.
    /// The merged block goes to a hot list if `park` (see
    /// [`place`](Self::place)), else to the free lists.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn merge_loop(
        &mut self,
        section: usize,
        mut idx: u32,
        mut order: u32,
        mut checked: bool,
        same_chunk: u32,
        mut buddy: u32,
        mut buddy_word: u64,
        park: bool,
    ) {
        loop {
            if state(buddy_word) == ST_HOT {
                let zone = self.secs[section].zone as usize % 4;
                self.hot_take_slot(zone, order, hot_slot(buddy_word));
            } else {
                self.unlink(section, buddy, order, buddy_word);
            }
            // The upper half's head (the absorbed buddy's, or our own stale
            // word) is no longer a head; the lower one is rewritten later.
            // A write of "none" is harmless even in an uninitialised chunk.
            self.secs[section].raw_write(idx.max(buddy), ST_NONE);
            if buddy < idx {
                idx = buddy;
                checked = false;
            }
            order += 1;
            match self.free_buddy(section, idx, order, same_chunk) {
                Some(next) => (buddy, buddy_word) = next,
                None => break,
            }
        }
        if park {
            self.place(section, idx, order, checked);
        } else {
            self.push(section, idx, order, checked);
        }
    }

    /// Frees `[idx, idx + count)` as a sequence of aligned blocks. The word
    /// of `idx` is known valid; those of later pieces are not.
    pub(super) fn release(&mut self, section: usize, idx: u32, count: u64) {
        let base = self.secs[section].base;
        let end = idx as u64 + count;
        let mut pos = idx as u64;
        while pos < end {
            let order = piece_order(base + pos, end - pos);
            self.free_block(section, pos as u32, order, pos != idx as u64, 0);
            pos += 1 << order;
        }
    }

    /// Does what registration deferred for pending section `section`:
    /// initialises its partial edge chunks and puts its pieces on the free
    /// lists.
    #[cold]
    #[inline(never)]
    pub(super) fn materialise(&mut self, section: usize) {
        let sec = &mut self.secs[section];
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
        self.give_back(section, 0, hi - lo);
    }

    /// Materialises every pending section (tests compare the views).
    #[cfg(test)]
    pub(super) fn materialise_all(&mut self) {
        for section in super::set_bits(self.used_slots) {
            if self.secs[section].pending {
                self.materialise(section);
            }
        }
    }

    /// Puts the free range `[from, to)` of section `section` on the free
    /// lists without merging (its pieces' buddies are known not to be
    /// free).
    pub(super) fn give_back(&mut self, section: usize, from: u64, to: u64) {
        let base = self.secs[section].base;
        let mut pos = from;
        while pos < to {
            let order = piece_order(base + pos, to - pos);
            self.push(section, pos as u32, order, true);
            pos += 1 << order;
        }
    }

    /// The free block containing page `idx`, if any: (head, order).
    pub(super) fn find_free_block(&self, section: usize, idx: u32) -> Option<(u32, u32)> {
        let sec = &self.secs[section];
        if sec.pending {
            return sec
                .pieces()
                .find(|&(head, order)| idx.wrapping_sub(head) < 1 << order);
        }
        let pfn = sec.base + idx as u64;
        for order in 0..=MAX_ORDER {
            let head_pfn = pfn & !((1u64 << order) - 1);
            if head_pfn < sec.base {
                break;
            }
            let head = (head_pfn - sec.base) as u32;
            let word = sec.read(head);
            // Hot heads carry their order where free heads do.
            if (state(word) == ST_FREE || state(word) == ST_HOT) && free_order(word) >= order {
                return Some((head, free_order(word)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
