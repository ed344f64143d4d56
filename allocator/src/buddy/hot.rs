//! Hot lists: recently freed blocks of orders below [`HOT_ORDERS`] parked
//! in a small stack per zone and order, so that the next allocation of
//! that order takes one back in a few instructions, with no list links to
//! update (Linux keeps lists like these per CPU for orders up to 3, `pcp`).
//! Every order below `HOT_ORDERS` takes the same path on allocation and on
//! free, so a churn of mixed orders takes no branch on the order (with
//! single pages alone parked, that branch was a coin toss on the skewed
//! trace: about 0.5 mispredictions per operation).
//!
//! A freed block is parked only if its buddy does not merge with it: a
//! free that merges merges at once, and the merged block is parked (or
//! listed) in its turn. A parked block of order 1 or more stays mergeable:
//! its word holds its slot, and freeing its buddy takes it out of the stack
//! (the newest entry moves into the slot) and merges, so free memory is as
//! merged as without hot lists. A parked single page does not merge while
//! parked (the refill below parks pages whose buddies are parked too). A
//! single-page request that finds neither a parked page nor a free single
//! page breaks up a block of [`REFILL_ORDER`] and parks the rest of it. A
//! single page handed out for an alignment above 4 KiB is parked when
//! freed whatever its buddy's state, for the next such request (which
//! would otherwise split a block of the alignment's order again).
//!
//! A parked block is free (counted so in statistics, reported by
//! `page_state` and `free_blocks`) but sits on no buddy list. Allocation
//! looks at parked blocks first, and for best fit at the parked blocks of
//! higher orders too. Parked blocks go back to the buddy lists (single
//! pages merging then) when an allocation would otherwise fail or fall back
//! to a lower zone, on `BuddyAllocator::drain_hot`, or when an aligned page
//! needs room in a full list (its older half). Any other block freed into a
//! full list goes to the buddy lists.
//!
//! The cost is where blocks are reused: a stack hands back the newest
//! block, the buddy lists the lowest-addressed one, which packs small
//! blocks into low memory. Over the 100 uniform traces of
//! `tests/antifrag.rs` the mean share of obtainable 2 MiB blocks went from
//! 96.8% (single pages parked) to 96.2%; over the 40 skewed ones it stayed
//! at 93.8%. A 16-entry stack: 96.35%; parking only blocks at or below the
//! lowest listed address bucket: 96.6%, but most frees then take the list
//! path again (churn 10.3 instead of 8.8 ns per operation in the driver).

/// Orders with hot lists: `0..HOT_ORDERS` (1, 2, ... 512 pages).
///
/// ```
/// # let mut a = allocator::doc_allocator!(64);
/// # use allocator::{Constraint, Zone};
/// let x = a.alloc(2, Constraint::ANY).unwrap();
/// let y = a.alloc(2, Constraint::ANY).unwrap(); // x's buddy
/// a.free(x, 2).unwrap();                         // y in use: x is parked
/// assert_eq!(a.stats().zone(Zone::Dma32).hot_pages, 4);
/// assert_eq!(a.alloc(2, Constraint::ANY), Ok(x)); // and taken back first
/// # a.free(x, 2).unwrap(); a.free(y, 2).unwrap();
/// ```
pub const HOT_ORDERS: usize = 10;
/// Blocks per hot list (one list per zone and order). Longer lists keep
/// more blocks out of address order: over the uniform traces of
/// `tests/antifrag.rs`, 16 gave a mean of 96.35% obtainable 2 MiB blocks,
/// 32 96.2%, 64 96.25% (the churn is 0.4 ns per operation faster with 32
/// than with 16).
///
/// ```
/// # let mut a = allocator::doc_allocator!(256);
/// # use allocator::{Constraint, HOT_CAP};
/// // Free every other page: each buddy stays in use, so each free parks.
/// let pages: Vec<_> = (0..2 * HOT_CAP).map(|_| a.alloc(0, Constraint::ANY).unwrap()).collect();
/// for p in pages.iter().step_by(2) {
///     a.free(*p, 0).unwrap();
/// }
/// assert!(a.stats().zone(allocator::Zone::Dma32).hot_pages <= HOT_CAP as u64);
/// ```
pub const HOT_CAP: usize = 32;

/// Order of the block a single-page allocation breaks up when its zone has
/// no free single page: the page asked for is handed out and the other
/// `2^REFILL_ORDER - 1` are parked, in address order (Linux refills its
/// `pcp` lists in batches the same way). They are the pages a run of
/// single-page requests would have split off that block one by one.
///
/// ```
/// # let mut a = allocator::doc_allocator!(64);
/// # use allocator::{Constraint, REFILL_ORDER, Zone};
/// let p = a.alloc(0, Constraint::ANY).unwrap(); // no free single page: refill
/// assert_eq!(a.stats().zone(Zone::Dma32).hot_pages, (1 << REFILL_ORDER) - 1);
/// let q = a.alloc(0, Constraint::ANY).unwrap(); // the next page, off the hot list
/// assert_eq!(q.0, p.0 + 4096);
/// ```
pub const REFILL_ORDER: u32 = 4;
const _: () = assert!(1 << REFILL_ORDER <= HOT_CAP);

/// One hot list: a stack of blocks, oldest first.
#[derive(Clone, Copy)]
pub(crate) struct HotList {
    len: u32,
    /// `(section slot << 32) | page index`; `[0, len)` are valid.
    ent: [u64; HOT_CAP],
}

#[inline(always)]
const fn pack(s: usize, idx: u32) -> u64 {
    ((s as u64) << 32) | idx as u64
}

#[inline(always)]
const fn unpack(e: u64) -> (usize, u32) {
    ((e >> 32) as usize, e as u32)
}

impl HotList {
    pub(crate) const EMPTY: HotList = HotList {
        len: 0,
        ent: [0; HOT_CAP],
    };

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    #[inline(always)]
    pub(crate) fn is_full(&self) -> bool {
        self.len as usize >= HOT_CAP
    }

    /// Parks block `(s, idx)`; the caller checked that the list is not full.
    #[inline(always)]
    pub(crate) fn push(&mut self, s: usize, idx: u32) {
        debug_assert!(!self.is_full());
        self.ent[self.len as usize % HOT_CAP] = pack(s, idx);
        self.len += 1;
    }

    /// Takes block `i` out, moving the newest into its slot; returns the
    /// moved block (now in slot `i`), if one moved.
    #[inline(always)]
    pub(crate) fn swap_remove(&mut self, i: usize) -> Option<(usize, u32)> {
        debug_assert!(i < self.len());
        self.len -= 1;
        let last = self.len as usize;
        if i == last {
            return None;
        }
        self.ent[i % HOT_CAP] = self.ent[last % HOT_CAP];
        Some(unpack(self.ent[i % HOT_CAP]))
    }

    /// Takes the most recently parked block.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<(usize, u32)> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(unpack(self.ent[self.len as usize % HOT_CAP]))
    }

    /// Block `i` (0 = oldest).
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> (usize, u32) {
        debug_assert!(i < self.len());
        unpack(self.ent[i % HOT_CAP])
    }

    /// Forgets the `n` oldest blocks (the caller has freed them).
    pub(crate) fn drop_oldest(&mut self, n: usize) {
        let (n, len) = (n.min(self.len()), self.len());
        self.ent.copy_within(n..len, 0);
        self.len -= n as u32;
    }

    /// Forgets every block for which `gone` holds; keeps the others' order.
    pub(crate) fn forget(&mut self, mut gone: impl FnMut(usize, u32) -> bool) {
        let mut kept = 0;
        for i in 0..self.len() {
            let (s, idx) = self.get(i);
            if !gone(s, idx) {
                self.ent[kept] = self.ent[i];
                kept += 1;
            }
        }
        self.len = kept as u32;
    }

    /// Takes the most recently parked block if `fits` holds for it (one
    /// look: the common case of [`take_newest`](Self::take_newest)).
    #[inline(always)]
    pub(crate) fn pop_if(&mut self, fits: impl FnOnce(usize, u32) -> bool) -> Option<(usize, u32)> {
        let i = self.len().checked_sub(1)?;
        let (s, idx) = self.get(i);
        if !fits(s, idx) {
            return None;
        }
        self.len -= 1;
        Some((s, idx))
    }

    /// Takes the most recently parked block for which `fits` holds (at
    /// most [`HOT_CAP`] looks); keeps the others' order.
    pub(crate) fn take_newest(
        &mut self,
        mut fits: impl FnMut(usize, u32) -> bool,
    ) -> Option<(usize, u32)> {
        let len = self.len();
        let i = (0..len).rev().find(|&i| {
            let (s, idx) = self.get(i);
            fits(s, idx)
        })?;
        let b = self.get(i);
        if i + 1 < len {
            self.ent.copy_within(i + 1..len, i);
        }
        self.len -= 1;
        Some(b)
    }

    /// Blocks of section slot `s`.
    pub(crate) fn count_in(&self, s: usize) -> usize {
        (0..self.len()).filter(|&i| self.get(i).0 == s).count()
    }
}

use super::*;

impl BuddyAllocator {
    /// Frees the aligned block `idx` of order `k` whose head word was an
    /// allocation head: parked on its zone's hot list for small orders
    /// whose buddy is not free, otherwise freed into the buddy (`same_chunk`
    /// as in `free_block`). The merge loop is inlined here too: one call
    /// per free at most (measured: 6.5% fewer instructions on the uniform
    /// churn than with the list code out of line, one more per hot pair).
    #[inline(always)]
    pub(super) fn put_back(&mut self, s: usize, idx: u32, k: u32, same_chunk: u32) {
        match self.free_buddy(s, idx, k, same_chunk) {
            None => self.place(s, idx, k, false),
            Some((bidx, be)) => self.merge_loop(s, idx, k, false, same_chunk, bidx, be, true),
        }
    }

    /// Puts free block `idx` of order `k`, whose buddy does not merge with
    /// it, on its zone's hot list for that order if there is room, else on
    /// the free lists (making room by freeing the list's older half
    /// instead handled every block twice when frees outnumber
    /// allocations). Every order below [`HOT_ORDERS`] takes the same path,
    /// so a churn of mixed orders takes no branch on the order.
    #[inline(always)]
    pub(super) fn place(&mut self, s: usize, idx: u32, k: u32, checked: bool) {
        let z = self.secs[s].zone as usize % 4;
        if (k as usize) < HOT_ORDERS && !self.hot[z][k as usize].is_full() {
            let h = &mut self.hot[z][k as usize];
            let word = hot_word(k, h.len());
            h.push(s, idx);
            self.secs[s].write_head(idx, k, word, checked);
        } else {
            self.push(s, idx, k, checked);
        }
    }

    /// Takes the parked block in `slot` of hot list `(z, k)` off it (it
    /// merges with its buddy); the block moved into the slot gets its new
    /// slot in its word.
    #[inline(always)]
    pub(super) fn hot_take_slot(&mut self, z: usize, k: u32, slot: usize) {
        if let Some((ms, midx)) = self.hot[z % 4][k as usize].swap_remove(slot) {
            // A hot head written when it was parked: valid.
            self.secs[ms].raw_write(midx, hot_word(k, slot));
        }
    }

    /// Rewrites the slot in the words of every block of hot list `(z, o)`
    /// after the list was compacted.
    pub(super) fn hot_reindex(&mut self, z: usize, o: usize) {
        for i in 0..self.hot[z][o].len() {
            let (s, idx) = self.hot[z][o].get(i);
            self.secs[s].raw_write(idx, hot_word(o as u32, i));
        }
    }

    /// Parks block `idx` of order `k < HOT_ORDERS`, whose word is an
    /// allocation head (so valid, see Section::raw_read), on its zone's hot
    /// list, making room first if the list is full.
    #[inline(always)]
    pub(super) fn park(&mut self, s: usize, idx: u32, k: u32) {
        let z = self.secs[s].zone as usize % 4;
        if self.hot[z][k as usize].is_full() {
            self.hot_spill(z, k as usize);
        }
        self.park_in_room(s, idx, k);
    }

    /// [`park`](Self::park) into a list known not to be full.
    #[inline(always)]
    pub(super) fn park_in_room(&mut self, s: usize, idx: u32, k: u32) {
        let z = self.secs[s].zone as usize % 4;
        let h = &mut self.hot[z][k as usize];
        self.secs[s].raw_write(idx, hot_word(k, h.len()));
        h.push(s, idx);
    }

    /// A parked block of order `k` from zone `y`, if any. Its word is still
    /// the hot word: the caller overwrites it.
    #[inline(always)]
    pub(super) fn hot_pop(&mut self, y: usize, k: u32) -> Option<(usize, u32)> {
        if k as usize >= HOT_ORDERS {
            return None;
        }
        self.hot[y % 4][k as usize].pop()
    }

    /// Frees the older half of a full hot list into the buddy.
    #[cold]
    #[inline(never)]
    pub(super) fn hot_spill(&mut self, z: usize, o: usize) {
        let n = self.hot[z][o].len() / 2;
        self.hot_free_oldest(z, o, n);
    }

    /// Frees the `n` oldest blocks of hot list `(z, o)` into the buddy,
    /// merging them with free buddies.
    pub(super) fn hot_free_oldest(&mut self, z: usize, o: usize, n: usize) {
        // Off the list first: freeing one may merge it with a parked block
        // of a higher order, which takes that block off its list. (Only
        // single pages are freed in part; their slots are never used.)
        debug_assert!(o == 0 || n == self.hot[z][o].len());
        let list = self.hot[z][o];
        self.hot[z][o].drop_oldest(n);
        for i in 0..n {
            let (s, idx) = list.get(i);
            // A hot word is neither a free nor an allocation head, and valid.
            self.free_block(s, idx, o as u32, false, 0);
        }
    }

    /// Frees every parked block of zones `0..=top` into the buddy. Returns
    /// whether there was any.
    pub(super) fn drain_zones(&mut self, top: usize) -> bool {
        let mut any = false;
        for z in 0..=top.min(2) {
            for o in 0..HOT_ORDERS {
                let n = self.hot[z][o].len();
                any |= n != 0;
                self.hot_free_oldest(z, o, n);
            }
        }
        any
    }

    /// Frees every block parked on a hot list into the buddy, merging it
    /// with free buddies. Allocation does this by itself before it fails or
    /// falls back to a lower zone; call it to see the fully merged state
    /// (before a fragmentation report, say). Changes no free page count.
    ///
    /// ```
    /// # let mut a = allocator::doc_allocator!(64);
    /// # use allocator::Constraint;
    /// let p = a.alloc(0, Constraint::ANY).unwrap(); // parks the 15 pages after it
    /// a.free(p, 0).unwrap();                        // buddy parked: parked too
    /// assert_eq!(a.stats().zone(allocator::Zone::Dma32).hot_pages, 16);
    /// assert_eq!(a.free_blocks().count(), 16 + 2);  // 16 parked pages, blocks of 16 and 32
    /// a.drain_hot();
    /// assert_eq!(a.free_blocks().count(), 1);       // all 64 pages again
    /// ```
    pub fn drain_hot(&mut self) {
        self.drain_zones(2);
    }

    /// Pages parked in zone `y`.
    pub(super) fn hot_pages_in_zone(&self, y: usize) -> u64 {
        (0..HOT_ORDERS)
            .map(|o| (self.hot[y][o].len() as u64) << o)
            .sum()
    }

    /// Pages parked from section slot `s`.
    pub(super) fn hot_pages_in_section(&self, s: usize) -> u64 {
        let z = self.secs[s].zone as usize % 4;
        (0..HOT_ORDERS)
            .map(|o| (self.hot[z][o].count_in(s) as u64) << o)
            .sum()
    }

    /// Takes the parked block `idx` of order `o`, word `e`, off its hot
    /// list (for `reserve_range`). Its word is left as it is.
    pub(super) fn hot_remove(&mut self, s: usize, idx: u32, o: u32, e: u64) {
        let z = self.secs[s].zone as usize % 4;
        if o == 0 {
            self.hot[z][0].forget(|hs, hidx| hs == s && hidx == idx);
        } else {
            self.hot_take_slot(z, o, hot_slot(e));
        }
    }

    /// Orders `k..HOT_ORDERS` whose hot list in zone `y` is not empty.
    #[inline(always)]
    pub(super) fn parked_orders(&self, y: usize, k: u32) -> u32 {
        let mut m = 0;
        for (o, h) in self.hot[y % 4].iter().enumerate().skip(k as usize) {
            m |= u32::from(h.len() != 0) << o;
        }
        m
    }

    /// A single page from zone `y`, which has no free single page and an
    /// empty hot list (orders `m` non-empty): takes a block of up to
    /// [`REFILL_ORDER`](crate::REFILL_ORDER), hands out its first page and
    /// parks the others.
    #[inline(never)]
    pub(super) fn take_refill(&mut self, y: usize, m: u32) -> (usize, u32) {
        // Callers found the hot list empty; never park beyond its room.
        let room = (HOT_CAP - self.hot[y % 4][0].len()) as u64;
        let r = (m | self.parked_orders(y, 1))
            .trailing_zeros()
            .min(REFILL_ORDER)
            .min(floor_log2(room + 1));
        let (s, idx) = self.take_in(y, r, m);
        let sec = &mut self.secs[s];
        // A block of order < MIN_CHUNK_SHIFT lies in one chunk; its words
        // are written directly below, so the chunk must be initialised.
        let c = sec.chunk_of(idx);
        if !sec.chunk_ready(c) {
            sec.init_chunk(c);
        }
        let hot = &mut self.hot[y % 4][0];
        // Highest first: the stack hands them out in address order.
        for i in (1..1u32 << r).rev() {
            sec.raw_write(idx + i, hot_word(0, hot.len()));
            hot.push(s, idx + i);
        }
        (s, idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_order_and_forget() {
        let mut h = HotList::EMPTY;
        for i in 0..HOT_CAP as u32 {
            h.push((i % 3) as usize, i);
        }
        assert!(h.is_full());
        assert_eq!(h.count_in(0), HOT_CAP.div_ceil(3));
        assert_eq!(h.pop(), Some((((HOT_CAP - 1) % 3), HOT_CAP as u32 - 1)));
        h.drop_oldest(4);
        assert_eq!(h.get(0), (1, 4));
        h.forget(|s, _| s == 1);
        assert_eq!(h.count_in(1), 0);
        assert_eq!(h.get(0), (2, 5));
        let mut last = None;
        while let Some(x) = h.pop() {
            last = Some(x);
        }
        assert_eq!(last, Some((2, 5)));
        assert_eq!(h.len(), 0);
    }
}
