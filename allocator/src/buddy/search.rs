//! Finding a free block for a request: the zone it starts in and its hot
//! lists first, then the fallback to lower zones (merging parked blocks
//! before falling back or failing), the search below a physical limit
//! (`Constraint::Below`), and aligned runs that a section's end cuts short.

use super::section::BUCKETS;
use super::word::{NIL, free_next};
use super::zone::zone_bounds;
use super::{BuddyAllocator, ceil_log2, set_bits};
use crate::types::{Constraint, Error, MAX_ORDER, MAX_SECTIONS};

/// How many free blocks of one order the first pass of an allocation
/// below an arbitrary physical limit ([`Constraint::Below`]) examines in
/// the one section that straddles the limit (sections entirely below it
/// are used without any scan). If the first pass finds no block below the
/// limit, a second pass examines every free block of that section that
/// could lie below it before the request fails, so the bound never makes
/// a request fail: it bounds the cost of a request that succeeds, and
/// decides which block it gets (one of a higher order found within the
/// bound is taken before one of a lower order beyond it).
///
/// ```
/// # let mut a = framekeep::doc_allocator!(64);  // 16 MiB .. 16 MiB + 256 KiB
/// use framekeep::{Constraint, PhysAddr};
/// let p = a.alloc(0, Constraint::Below(PhysAddr((16 << 20) + 4096))).unwrap();
/// assert_eq!(p, PhysAddr(16 << 20));              // the one page below the limit
/// ```
pub const LIMIT_SCAN: usize = 64;

impl BuddyAllocator {
    /// Removes a block of exactly `order` satisfying `constraint` from the
    /// free lists (splitting a bigger one if needed). Its head word is
    /// still the old free word: the caller overwrites it. `None`: out of
    /// memory.
    #[inline(always)]
    pub(super) fn take(&mut self, order: u32, constraint: Constraint) -> Option<(usize, u32)> {
        let constraint = match constraint {
            Constraint::Zone(zone) => {
                let start = self.start_zone(zone);
                let zone = start as usize;
                if let Some(block) = self.hot_pop(zone, order) {
                    return Some(block);
                }
                let listed = self.zones[zone].order_mask & (u32::MAX << order);
                if listed != 0 || self.parked_orders(zone, order) != 0 {
                    return Some(self.take_from(zone, order, listed));
                }
                Constraint::Zone(start)
            }
            other => other,
        };
        self.take_slow(order, constraint)
    }

    /// Takes a block of `order` from zone `zone` (`listed`: its orders >=
    /// `order` with listed blocks; one of them or a parked block of a
    /// higher order exists), whose hot list for `order` is empty.
    #[inline(always)]
    pub(super) fn take_from(&mut self, zone: usize, order: u32, listed: u32) -> (usize, u32) {
        if order == 0 && listed & 1 == 0 {
            return self.take_refill(zone, listed);
        }
        self.take_in(zone, order, listed)
    }

    /// Takes a block of `order` or above from zone `zone`: the smallest
    /// there is, listed (orders `listed`) or parked (a parked one where
    /// both exist).
    #[inline(always)]
    pub(super) fn take_in(&mut self, zone: usize, order: u32, listed: u32) -> (usize, u32) {
        let parked = self.parked_orders(zone, order);
        let block_order = (listed | parked).trailing_zeros() % 32;
        let hot = if parked & (1 << block_order) != 0 {
            self.hot_pop(zone, block_order)
        } else {
            None
        };
        let (section, idx) = match hot {
            Some(block) => block,
            None => self.take_listed(zone, block_order),
        };
        if block_order > order {
            self.split(section, idx, block_order, order);
        }
        if !self.secs[section].ready {
            self.secs[section].init_step();
        }
        (section, idx)
    }

    /// Takes the first block of listed `order` in zone `zone`.
    #[inline(always)]
    fn take_listed(&mut self, zone: usize, order: u32) -> (usize, u32) {
        let section =
            self.zones[zone].section_mask[order as usize].trailing_zeros() as usize % MAX_SECTIONS;
        if self.secs[section].pending {
            self.materialise(section);
        }
        (section, self.pop_first(section, order))
    }

    #[inline(never)]
    fn take_slow(&mut self, order: u32, constraint: Constraint) -> Option<(usize, u32)> {
        let (top, limit) = zone_bounds(constraint)?;
        // Parked blocks of the top zone are merged before a lower zone is
        // tried, and all of them before giving up: a hot list never makes
        // a request fall back or fail where the merged state would not.
        // Merging is skipped where it cannot help (too few free pages), so
        // a hopeless request changes nothing. `drained`: second pass.
        let mut drained = false;
        loop {
            if let Some(block) = self.take_zones(order, top, limit, drained) {
                return Some(block);
            }
            if drained {
                return None;
            }
            // Merge where that could help; either way the second pass
            // may fall back to a lower zone.
            if self.merging_could_help(order, top, limit) {
                self.drain_zones(top);
            }
            drained = true;
        }
    }

    /// Whether merging the parked blocks of zones `0..=top` could make a
    /// block of `order` (below frame `limit`, if any): some section with
    /// parked blocks has that many free pages and starts low enough, in a
    /// zone whose reserve would let the request have them. If not, a
    /// hopeless request fails without changing anything.
    fn merging_could_help(&self, order: u32, top: usize, limit: Option<u64>) -> bool {
        let need = 1u64 << order;
        for section in set_bits(self.used_slots) {
            let sec = &self.secs[section];
            let zone = sec.zone as usize;
            if zone <= top
                && (zone == top || !self.reserve_refuses(zone, need))
                && limit.is_none_or(|limit| sec.base + need <= limit)
                && self.hot_pages_in_section(section) != 0
                && self.section_free(section) >= need
            {
                return true;
            }
        }
        false
    }

    /// One pass of [`take_slow`](Self::take_slow) over zones `top` down to
    /// DMA. Unless `drained`, meets a lower zone only once the top zone's
    /// hot lists are empty (merging them first).
    fn take_zones(
        &mut self,
        order: u32,
        top: usize,
        limit: Option<u64>,
        drained: bool,
    ) -> Option<(usize, u32)> {
        let need = 1u64 << order;
        let top_hot = !drained && self.hot_pages_in_zone(top) != 0;
        for zone in (0..=top).rev() {
            if zone < top && top_hot {
                // About to fall back: merge the top zone's parked blocks
                // and look there again.
                return None;
            }
            if zone < top && self.reserve_refuses(zone, need) {
                continue;
            }
            // Hot blocks of the top zone may lie above a limit inside it.
            if (zone < top || limit.is_none())
                && let Some(block) = self.hot_pop(zone, order)
            {
                return Some(block);
            }
            let listed = self.zones[zone].order_mask & (u32::MAX << order);
            if listed == 0 && self.parked_orders(zone, order) == 0 {
                continue;
            }
            if zone == top
                && let Some(limit_pfn) = limit
            {
                if let Some((section, idx, block_order)) =
                    self.find_below(zone, order, listed, limit_pfn)
                {
                    self.split(section, idx, block_order, order);
                    return Some((section, idx));
                }
                continue;
            }
            return Some(self.take_from(zone, order, listed));
        }
        None
    }

    /// In zone `zone`, a free block of `order` or above (orders in
    /// `listed`) whose lowest 2^`order` pages end at or below frame
    /// `limit_pfn`; unlinked. A first pass looks at no more than
    /// [`LIMIT_SCAN`] blocks per order and section; only if that misses and
    /// was cut short, a second pass looks at every block that could fit,
    /// so the answer is exact and the extra cost falls on requests that
    /// would otherwise fail.
    fn find_below(
        &mut self,
        zone: usize,
        order: u32,
        listed: u32,
        limit_pfn: u64,
    ) -> Option<(usize, u32, u32)> {
        match self.scan_below(zone, order, listed, limit_pfn, LIMIT_SCAN) {
            Ok(block) => Some(block),
            Err(true) => self
                .scan_below(zone, order, listed, limit_pfn, usize::MAX)
                .ok(),
            Err(false) => None,
        }
    }

    /// [`find_below`](Self::find_below) looking at no more than `bound`
    /// blocks per order and section. `Err(cut)`: none found; `cut`: some
    /// blocks that could fit were not looked at.
    fn scan_below(
        &mut self,
        zone: usize,
        order: u32,
        listed: u32,
        limit_pfn: u64,
        bound: usize,
    ) -> Result<(usize, u32, u32), bool> {
        let mut cut = false;
        let mut orders = listed;
        while orders != 0 {
            let block_order = orders.trailing_zeros();
            orders &= orders - 1;
            for section in set_bits(self.zones[zone].section_mask[block_order as usize]) {
                let sec = &self.secs[section];
                if sec.base + (1 << order) > limit_pfn {
                    continue;
                }
                if sec.pending {
                    self.materialise(section);
                }
                let sec = &self.secs[section];
                let whole = sec.end() <= limit_pfn;
                let order_index = block_order as usize;
                // Buckets in address order (bucket `b` holds the blocks at
                // indexes `b << bucket_shift ..`), at most `bound` blocks.
                let mut buckets = sec.list_mask[order_index];
                let mut looked = 0;
                while buckets != 0 {
                    let bucket = buckets.trailing_zeros() as usize % BUCKETS;
                    buckets &= buckets - 1;
                    if sec.base + ((bucket as u64) << sec.bucket_shift) + (1 << order) > limit_pfn {
                        // This bucket and all later ones lie too high.
                        break;
                    }
                    let mut idx = sec.heads[order_index][bucket];
                    while idx != NIL {
                        if looked == bound {
                            cut = true;
                            break;
                        }
                        let word = sec.raw_read(idx);
                        if whole || sec.base + idx as u64 + (1 << order) <= limit_pfn {
                            self.unlink(section, idx, block_order, word);
                            return Ok((section, idx, block_order));
                        }
                        idx = free_next(word);
                        looked += 1;
                    }
                }
            }
        }
        Err(cut)
    }

    /// The first page of a free run of `count` pages aligned to
    /// 2^`align_order` pages, taken off the lists (the rest of its block
    /// given back); its head word is valid and still the caller's to write.
    pub(super) fn take_run(
        &mut self,
        count: u64,
        align_order: u32,
        constraint: Constraint,
    ) -> Result<(usize, u32), Error> {
        if count == 0 {
            return Err(Error::ZeroCount);
        }
        if count > 1 << MAX_ORDER {
            return Err(Error::TooLarge);
        }
        let order = ceil_log2(count).max(align_order);
        let Some((section, idx)) = self.take(order, constraint) else {
            return self
                .take_section_tail(count, order, constraint)
                .ok_or(Error::OutOfMemory);
        };
        if count.is_power_of_two() {
            // The tail is the upper halves of a split down to the count's
            // order (the same blocks `give_back` would push, faster).
            self.split(section, idx, order, count.trailing_zeros());
        } else {
            self.give_back(section, idx as u64 + count, idx as u64 + (1 << order));
        }
        Ok((section, idx))
    }

    /// The miss path of [`take_run`](Self::take_run): no free block of
    /// `order` is allowed by `constraint`, but a run of `count` pages at
    /// 2^`order` alignment may still be free where no such block can
    /// exist: at the start of the last 2^`order`-aligned window of a
    /// section, which the section's end cuts short. Looks there in every
    /// section of the zones the request may use (the zone's reserve and
    /// the limit as for any request), and takes the first such run that is
    /// free like `reserve_range`. O(sections); the head word is valid.
    #[cold]
    #[inline(never)]
    fn take_section_tail(
        &mut self,
        count: u64,
        order: u32,
        constraint: Constraint,
    ) -> Option<(usize, u32)> {
        let (top, limit) = zone_bounds(constraint)?;
        for zone in (0..=top).rev() {
            if zone < top && self.reserve_refuses(zone, count) {
                continue;
            }
            for section in set_bits(self.used_slots) {
                let sec = &self.secs[section];
                let window = sec.end() & !((1u64 << order) - 1);
                if sec.zone as usize != zone || window < sec.base || window + count > sec.end() {
                    continue;
                }
                if zone == top && limit.is_some_and(|limit| window + count > limit) {
                    continue;
                }
                let idx = (window - sec.base) as u32;
                if self.range_is_free(section, idx, count) {
                    self.carve(section, idx, count);
                    return Some((section, idx));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
