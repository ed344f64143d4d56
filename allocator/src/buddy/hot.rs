//! Hot lists: recently freed blocks of orders below [`HOT_ORDERS`] parked
//! in a small stack per zone and order, so that the next allocation of
//! that order takes one back at once, with no list links to update (Linux
//! keeps lists like these per CPU for orders up to 3; here that is the
//! job of the per-CPU caches, [`PageCaches`](crate::PageCaches)).
//! Every order below `HOT_ORDERS` takes the same path on allocation and on
//! free, so a churn of mixed orders takes no branch on the order, which
//! would mispredict.
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
//! blocks into low memory. `tests/antifrag.rs` measures what that costs in
//! obtainable 2 MiB blocks.

use super::word::{hot_slot, hot_word};
use super::{BuddyAllocator, floor_log2};

/// Orders with hot lists: `0..HOT_ORDERS` (1, 2, ... 512 pages).
///
/// ```
/// # let mut a = framekeep::doc_allocator!(64);
/// # use framekeep::{Constraint, Zone};
/// let x = a.alloc(2, Constraint::ANY).unwrap();
/// let y = a.alloc(2, Constraint::ANY).unwrap(); // x's buddy
/// a.free(x, 2).unwrap();                         // y in use: x is parked
/// assert_eq!(a.stats().zone(Zone::Dma32).hot_pages, 4);
/// assert_eq!(a.alloc(2, Constraint::ANY), Ok(x)); // and taken back first
/// # a.free(x, 2).unwrap(); a.free(y, 2).unwrap();
/// ```
pub const HOT_ORDERS: usize = 10;
/// Blocks per hot list (one list per zone and order). Longer lists keep
/// more blocks out of address order, which fragments free memory; shorter
/// ones send more frees down the slower list path.
///
/// ```
/// # let mut a = framekeep::doc_allocator!(256);
/// # use framekeep::{Constraint, HOT_CAP};
/// // Free every other page: each buddy stays in use, so each free parks.
/// let pages: Vec<_> = (0..2 * HOT_CAP).map(|_| a.alloc(0, Constraint::ANY).unwrap()).collect();
/// for p in pages.iter().step_by(2) {
///     a.free(*p, 0).unwrap();
/// }
/// assert!(a.stats().zone(framekeep::Zone::Dma32).hot_pages <= HOT_CAP as u64);
/// ```
pub const HOT_CAP: usize = 32;

/// Order of the block a single-page allocation breaks up when its zone has
/// no free single page: the page asked for is handed out and the other
/// `2^REFILL_ORDER - 1` are parked, in address order (Linux refills its
/// per-CPU page lists in batches the same way). They are the pages a run of
/// single-page requests would have split off that block one by one.
///
/// ```
/// # let mut a = framekeep::doc_allocator!(64);
/// # use framekeep::{Constraint, REFILL_ORDER, Zone};
/// let p = a.alloc(0, Constraint::ANY).unwrap(); // no free single page: refill
/// assert_eq!(a.stats().zone(Zone::Dma32).hot_pages, (1 << REFILL_ORDER) - 1);
/// let q = a.alloc(0, Constraint::ANY).unwrap(); // the next page, off the hot list
/// assert_eq!(q.0, p.0 + 4096);
/// ```
pub const REFILL_ORDER: u32 = 4;
const _: () = assert!(1 << REFILL_ORDER <= HOT_CAP);

/// One hot list: a stack of blocks, oldest first.
#[derive(Clone, Copy)]
pub(super) struct HotList {
    len: u32,
    /// `(section slot << 32) | page index`; `[0, len)` are valid.
    entries: [u64; HOT_CAP],
}

#[inline(always)]
const fn pack(section: usize, idx: u32) -> u64 {
    ((section as u64) << 32) | idx as u64
}

#[inline(always)]
const fn unpack(entry: u64) -> (usize, u32) {
    ((entry >> 32) as usize, entry as u32)
}

impl HotList {
    pub(super) const EMPTY: HotList = HotList {
        len: 0,
        entries: [0; HOT_CAP],
    };

    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.len as usize
    }

    #[inline(always)]
    pub(super) fn is_full(&self) -> bool {
        self.len as usize >= HOT_CAP
    }

    /// Parks block `(section, idx)`; the caller checked that the list is
    /// not full.
    #[inline(always)]
    fn push(&mut self, section: usize, idx: u32) {
        debug_assert!(!self.is_full());
        self.entries[self.len as usize % HOT_CAP] = pack(section, idx);
        self.len += 1;
    }

    /// Takes block `i` out, moving the newest into its slot; returns the
    /// moved block (now in slot `i`), if one moved.
    #[inline(always)]
    fn swap_remove(&mut self, i: usize) -> Option<(usize, u32)> {
        debug_assert!(i < self.len());
        self.len -= 1;
        let last = self.len as usize;
        if i == last {
            return None;
        }
        self.entries[i % HOT_CAP] = self.entries[last % HOT_CAP];
        Some(unpack(self.entries[i % HOT_CAP]))
    }

    /// Takes the most recently parked block.
    #[inline(always)]
    pub(super) fn pop(&mut self) -> Option<(usize, u32)> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(unpack(self.entries[self.len as usize % HOT_CAP]))
    }

    /// Block `i` (0 = oldest).
    #[inline(always)]
    pub(super) fn get(&self, i: usize) -> (usize, u32) {
        debug_assert!(i < self.len());
        unpack(self.entries[i % HOT_CAP])
    }

    /// Forgets the `count` oldest blocks (the caller has freed them).
    fn drop_oldest(&mut self, count: usize) {
        let (count, len) = (count.min(self.len()), self.len());
        self.entries.copy_within(count..len, 0);
        self.len -= count as u32;
    }

    /// Forgets every block for which `gone` holds; keeps the others' order.
    fn forget(&mut self, mut gone: impl FnMut(usize, u32) -> bool) {
        let mut kept = 0;
        for i in 0..self.len() {
            let (section, idx) = self.get(i);
            if !gone(section, idx) {
                self.entries[kept] = self.entries[i];
                kept += 1;
            }
        }
        self.len = kept as u32;
    }

    /// Takes the most recently parked block if `fits` holds for it (one
    /// look: the common case of [`take_newest`](Self::take_newest)).
    #[inline(always)]
    pub(super) fn pop_if(&mut self, fits: impl FnOnce(usize, u32) -> bool) -> Option<(usize, u32)> {
        let i = self.len().checked_sub(1)?;
        let (section, idx) = self.get(i);
        if !fits(section, idx) {
            return None;
        }
        self.len -= 1;
        Some((section, idx))
    }

    /// Takes the most recently parked block for which `fits` holds (at
    /// most [`HOT_CAP`] looks); keeps the others' order.
    pub(super) fn take_newest(
        &mut self,
        mut fits: impl FnMut(usize, u32) -> bool,
    ) -> Option<(usize, u32)> {
        let len = self.len();
        let i = (0..len).rev().find(|&i| {
            let (section, idx) = self.get(i);
            fits(section, idx)
        })?;
        let block = self.get(i);
        if i + 1 < len {
            self.entries.copy_within(i + 1..len, i);
        }
        self.len -= 1;
        Some(block)
    }

    /// Blocks of section slot `section`.
    fn count_in(&self, section: usize) -> usize {
        (0..self.len())
            .filter(|&i| self.get(i).0 == section)
            .count()
    }
}

impl BuddyAllocator {
    /// Frees the aligned block `idx` of `order` whose head word was an
    /// allocation head: parked on its zone's hot list for small orders
    /// whose buddy is not free, otherwise freed into the buddy (`same_chunk`
    /// as in `free_block`). The merge loop is inlined here too, so that a
    /// free makes one call at most.
    #[inline(always)]
    pub(super) fn put_back(&mut self, section: usize, idx: u32, order: u32, same_chunk: u32) {
        match self.free_buddy(section, idx, order, same_chunk) {
            None => self.place(section, idx, order, false),
            Some((buddy, buddy_word)) => self.merge_loop(
                section, idx, order, false, same_chunk, buddy, buddy_word, true,
            ),
        }
    }

    /// Puts free block `idx` of `order`, whose buddy does not merge with
    /// it, on its zone's hot list for that order if there is room, else on
    /// the free lists (making room by freeing the list's older half would
    /// handle every block twice when frees outnumber allocations). Every
    /// order below [`HOT_ORDERS`] takes the same path, so a churn of mixed
    /// orders takes no branch on the order.
    #[inline(always)]
    pub(super) fn place(&mut self, section: usize, idx: u32, order: u32, checked: bool) {
        let zone = self.secs[section].zone as usize % 4;
        if (order as usize) < HOT_ORDERS && !self.hot[zone][order as usize].is_full() {
            let list = &mut self.hot[zone][order as usize];
            let word = hot_word(order, list.len());
            list.push(section, idx);
            self.secs[section].write_head(idx, order, word, checked);
        } else {
            self.push(section, idx, order, checked);
        }
    }

    /// Takes the parked block in `slot` of hot list `(zone, order)` off it
    /// (it merges with its buddy); the block moved into the slot gets its
    /// new slot in its word.
    #[inline(always)]
    pub(super) fn hot_take_slot(&mut self, zone: usize, order: u32, slot: usize) {
        if let Some((moved_section, moved_idx)) =
            self.hot[zone % 4][order as usize].swap_remove(slot)
        {
            // A hot head written when it was parked: valid.
            self.secs[moved_section].raw_write(moved_idx, hot_word(order, slot));
        }
    }

    /// Rewrites the slot in the words of every block of hot list
    /// `(zone, order)` after the list was compacted.
    fn hot_reindex(&mut self, zone: usize, order: usize) {
        for i in 0..self.hot[zone][order].len() {
            let (section, idx) = self.hot[zone][order].get(i);
            self.secs[section].raw_write(idx, hot_word(order as u32, i));
        }
    }

    /// Parks block `idx` of `order < HOT_ORDERS`, whose word is an
    /// allocation head (so valid, see Section::raw_read), on its zone's
    /// hot list, making room first if the list is full.
    #[inline(always)]
    pub(super) fn park(&mut self, section: usize, idx: u32, order: u32) {
        let zone = self.secs[section].zone as usize % 4;
        if self.hot[zone][order as usize].is_full() {
            self.hot_spill(zone, order as usize);
        }
        self.park_in_room(section, idx, order);
    }

    /// [`park`](Self::park) into a list known not to be full.
    #[inline(always)]
    pub(super) fn park_in_room(&mut self, section: usize, idx: u32, order: u32) {
        let zone = self.secs[section].zone as usize % 4;
        let list = &mut self.hot[zone][order as usize];
        self.secs[section].raw_write(idx, hot_word(order, list.len()));
        list.push(section, idx);
    }

    /// A parked block of `order` from zone `zone`, if any. Its word is
    /// still the hot word: the caller overwrites it.
    #[inline(always)]
    pub(super) fn hot_pop(&mut self, zone: usize, order: u32) -> Option<(usize, u32)> {
        if order as usize >= HOT_ORDERS {
            return None;
        }
        self.hot[zone % 4][order as usize].pop()
    }

    /// Frees the older half of a full hot list into the buddy.
    #[cold]
    #[inline(never)]
    fn hot_spill(&mut self, zone: usize, order: usize) {
        let half = self.hot[zone][order].len() / 2;
        self.hot_free_oldest(zone, order, half);
    }

    /// Frees the `count` oldest blocks of hot list `(zone, order)` into the
    /// buddy, merging them with free buddies.
    fn hot_free_oldest(&mut self, zone: usize, order: usize, count: usize) {
        // Off the list first: freeing one may merge it with a parked block
        // of a higher order, which takes that block off its list. (Only
        // single pages are freed in part; their slots are never used.)
        debug_assert!(order == 0 || count == self.hot[zone][order].len());
        let list = self.hot[zone][order];
        self.hot[zone][order].drop_oldest(count);
        for i in 0..count {
            let (section, idx) = list.get(i);
            // A hot word is neither a free nor an allocation head, and valid.
            self.free_block(section, idx, order as u32, false, 0);
        }
    }

    /// Frees every parked block of zones `0..=top` into the buddy. Returns
    /// whether there was any.
    pub(super) fn drain_zones(&mut self, top: usize) -> bool {
        let mut any = false;
        for zone in 0..=top.min(2) {
            for order in 0..HOT_ORDERS {
                let count = self.hot[zone][order].len();
                any |= count != 0;
                self.hot_free_oldest(zone, order, count);
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
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::Constraint;
    /// let p = a.alloc(0, Constraint::ANY).unwrap(); // parks the 15 pages after it
    /// a.free(p, 0).unwrap();                        // buddy parked: parked too
    /// assert_eq!(a.stats().zone(framekeep::Zone::Dma32).hot_pages, 16);
    /// assert_eq!(a.free_blocks().count(), 16 + 2);  // 16 parked pages, blocks of 16 and 32
    /// a.drain_hot();
    /// assert_eq!(a.free_blocks().count(), 1);       // all 64 pages again
    /// ```
    pub fn drain_hot(&mut self) {
        self.drain_zones(2);
    }

    /// Pages parked in zone `zone`.
    pub(super) fn hot_pages_in_zone(&self, zone: usize) -> u64 {
        (0..HOT_ORDERS)
            .map(|order| (self.hot[zone][order].len() as u64) << order)
            .sum()
    }

    /// Pages parked from section slot `section`.
    pub(super) fn hot_pages_in_section(&self, section: usize) -> u64 {
        let zone = self.secs[section].zone as usize % 4;
        (0..HOT_ORDERS)
            .map(|order| (self.hot[zone][order].count_in(section) as u64) << order)
            .sum()
    }

    /// Takes the parked block `idx` of `order`, word `word`, off its hot
    /// list (for `reserve_range`). Its word is left as it is.
    pub(super) fn hot_remove(&mut self, section: usize, idx: u32, order: u32, word: u64) {
        let zone = self.secs[section].zone as usize % 4;
        if order == 0 {
            self.hot[zone][0]
                .forget(|hot_section, hot_idx| hot_section == section && hot_idx == idx);
        } else {
            self.hot_take_slot(zone, order, hot_slot(word));
        }
    }

    /// Forgets every parked block of the sections in `slots` (a mask of
    /// section slots about to be removed), keeping the slots in the words
    /// of the others right.
    pub(super) fn hot_forget_sections(&mut self, slots: u64) {
        for zone in 0..4 {
            for order in 0..HOT_ORDERS {
                self.hot[zone][order].forget(|section, _| slots & (1 << section) != 0);
                if order > 0 {
                    self.hot_reindex(zone, order);
                }
            }
        }
    }

    /// Orders `min_order..HOT_ORDERS` whose hot list in zone `zone` is not
    /// empty.
    #[inline(always)]
    pub(super) fn parked_orders(&self, zone: usize, min_order: u32) -> u32 {
        let mut orders = 0;
        for (order, list) in self.hot[zone % 4]
            .iter()
            .enumerate()
            .skip(min_order as usize)
        {
            orders |= u32::from(list.len() != 0) << order;
        }
        orders
    }

    /// A single page from zone `zone`, which has no free single page and
    /// an empty hot list (`listed`: its orders with listed blocks, not
    /// empty): takes a block of up to [`REFILL_ORDER`], hands out its first
    /// page and parks the others.
    #[inline(never)]
    pub(super) fn take_refill(&mut self, zone: usize, listed: u32) -> (usize, u32) {
        // Callers found the hot list empty; never park beyond its room.
        let room = (HOT_CAP - self.hot[zone % 4][0].len()) as u64;
        let refill_order = (listed | self.parked_orders(zone, 1))
            .trailing_zeros()
            .min(REFILL_ORDER)
            .min(floor_log2(room + 1));
        let (section, idx) = self.take_in(zone, refill_order, listed);
        let sec = &mut self.secs[section];
        // A block of order < MIN_CHUNK_SHIFT lies in one chunk; its words
        // are written directly below, so the chunk must be initialised.
        let chunk = sec.chunk_of(idx);
        if !sec.chunk_ready(chunk) {
            sec.init_chunk(chunk);
        }
        let list = &mut self.hot[zone % 4][0];
        // Highest first: the stack hands them out in address order.
        for i in (1..1u32 << refill_order).rev() {
            sec.raw_write(idx + i, hot_word(0, list.len()));
            list.push(section, idx + i);
        }
        (section, idx)
    }
}

#[cfg(test)]
mod tests;
