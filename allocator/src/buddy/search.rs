//! Finding a free block for a request: the zones it may use, fallback,
//! limits, and aligned runs.

use super::*;

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
/// # let mut a = allocator::doc_allocator!(64);  // 16 MiB .. 16 MiB + 256 KiB
/// use allocator::{Constraint, PhysAddr};
/// let p = a.alloc(0, Constraint::Below(PhysAddr((16 << 20) + 4096))).unwrap();
/// assert_eq!(p, PhysAddr(16 << 20));              // the one page below the limit
/// ```
pub const LIMIT_SCAN: usize = 64;

impl BuddyAllocator {
    /// Removes a block of exactly order `k` satisfying `c` from the free
    /// lists (splitting a bigger one if needed). Its head word is still
    /// the old free word: the caller overwrites it. `None`: out of memory.
    #[inline(always)]
    pub(super) fn take(&mut self, k: u32, c: Constraint) -> Option<(usize, u32)> {
        let c = match c {
            Constraint::Zone(z) => {
                let z = self.start_zone(z);
                let y = z as usize;
                if let Some(b) = self.hot_pop(y, k) {
                    return Some(b);
                }
                let m = self.zones[y].order_mask & (u32::MAX << k);
                if m != 0 || self.parked_orders(y, k) != 0 {
                    return Some(self.take_from(y, k, m));
                }
                Constraint::Zone(z)
            }
            c => c,
        };
        self.take_slow(k, c)
    }

    /// Takes a block of order `k` from zone `y` (listed orders `m` >= `k`;
    /// this or a parked block of a higher order exists), whose hot list for
    /// order `k` is empty.
    #[inline(always)]
    pub(super) fn take_from(&mut self, y: usize, k: u32, m: u32) -> (usize, u32) {
        if k == 0 && m & 1 == 0 {
            return self.take_refill(y, m);
        }
        self.take_in(y, k, m)
    }

    /// Takes a block of order >= `k` from zone `y`: the smallest there is,
    /// listed (orders `m`) or parked (a parked one where both exist).
    #[inline(always)]
    pub(super) fn take_in(&mut self, y: usize, k: u32, m: u32) -> (usize, u32) {
        let parked = self.parked_orders(y, k);
        let j = (m | parked).trailing_zeros() % 32;
        let hot = if parked & (1 << j) != 0 {
            self.hot_pop(y, j)
        } else {
            None
        };
        let (s, idx) = match hot {
            Some(b) => b,
            None => self.take_listed(y, j),
        };
        if j > k {
            self.split(s, idx, j, k);
        }
        if !self.secs[s].ready {
            self.secs[s].init_step();
        }
        (s, idx)
    }

    /// Takes the first block of listed order `j` in zone `y`.
    #[inline(always)]
    pub(super) fn take_listed(&mut self, y: usize, j: u32) -> (usize, u32) {
        let s = self.zones[y].sec_mask[j as usize].trailing_zeros() as usize % MAX_SECTIONS;
        if self.secs[s].pending {
            self.materialise(s);
        }
        (s, self.pop_first(s, j))
    }

    #[inline(never)]
    pub(super) fn take_slow(&mut self, k: u32, c: Constraint) -> Option<(usize, u32)> {
        let (top, limit) = zone_bounds(c)?;
        // Parked blocks of the top zone are merged before a lower zone is
        // tried, and all of them before giving up: a hot list never makes
        // a request fall back or fail where the merged state would not.
        // Merging is skipped where it cannot help (too few free pages), so
        // a hopeless request changes nothing. `drained`: second pass.
        let mut drained = false;
        loop {
            if let Some(b) = self.take_zones(k, top, limit, drained) {
                return Some(b);
            }
            if drained {
                return None;
            }
            // Merge where that could help; either way the second pass
            // may fall back to a lower zone.
            if self.merging_could_help(k, top, limit) {
                self.drain_zones(top);
            }
            drained = true;
        }
    }

    /// Whether merging the parked blocks of zones `0..=top` could make a
    /// block of order `k` (below frame `limit`, if any): some section with
    /// parked blocks has that many free pages and starts low enough, in a
    /// zone whose reserve would let the request have them. If not, a
    /// hopeless request fails without changing anything.
    pub(super) fn merging_could_help(&self, k: u32, top: usize, limit: Option<u64>) -> bool {
        let need = 1u64 << k;
        let mut m = self.used;
        while m != 0 {
            let s = m.trailing_zeros() as usize;
            m &= m - 1;
            let sec = &self.secs[s];
            let y = sec.zone as usize;
            if y <= top
                && (y == top
                    || self.zones[y].reserve == 0
                    || self.zone_free(y) >= self.zones[y].reserve.saturating_add(need))
                && limit.is_none_or(|l| sec.base + need <= l)
                && self.hot_pages_in_section(s) != 0
                && self.section_free(s) >= need
            {
                return true;
            }
        }
        false
    }

    /// One pass of [`take_slow`](Self::take_slow) over zones `top` down to
    /// DMA. Unless `drained`, meets a lower zone only once the top zone's
    /// hot lists are empty (merging them first).
    pub(super) fn take_zones(
        &mut self,
        k: u32,
        top: usize,
        limit: Option<u64>,
        drained: bool,
    ) -> Option<(usize, u32)> {
        let need = 1u64 << k;
        let top_hot = !drained && self.hot_pages_in_zone(top) != 0;
        let mut y = top + 1;
        while y > 0 {
            y -= 1;
            if y < top && top_hot {
                // About to fall back: merge the top zone's parked blocks
                // and look there again.
                return None;
            }
            let zs = &self.zones[y];
            if y < top && zs.reserve != 0 && self.zone_free(y) < zs.reserve.saturating_add(need) {
                continue;
            }
            // Hot blocks of the top zone may lie above a limit inside it.
            if (y < top || limit.is_none())
                && let Some(b) = self.hot_pop(y, k)
            {
                return Some(b);
            }
            let m = self.zones[y].order_mask & (u32::MAX << k);
            if m == 0 && self.parked_orders(y, k) == 0 {
                continue;
            }
            if y == top
                && let Some(lpfn) = limit
            {
                if let Some((s, idx, j)) = self.find_below(y, k, m, lpfn) {
                    self.split(s, idx, j, k);
                    return Some((s, idx));
                }
                continue;
            }
            return Some(self.take_from(y, k, m));
        }
        None
    }

    /// In zone `y`, a free block of order >= `k` (orders in `m`) whose
    /// lowest 2^k pages end at or below frame `lpfn`; unlinked. A first
    /// pass looks at no more than [`LIMIT_SCAN`] blocks per order and
    /// section; only if that misses and was cut short, a second pass looks
    /// at every block that could fit, so the answer is exact and the
    /// extra cost falls on requests that would otherwise fail.
    pub(super) fn find_below(
        &mut self,
        y: usize,
        k: u32,
        m: u32,
        lpfn: u64,
    ) -> Option<(usize, u32, u32)> {
        match self.scan_below(y, k, m, lpfn, LIMIT_SCAN) {
            Ok(b) => Some(b),
            Err(true) => self.scan_below(y, k, m, lpfn, usize::MAX).ok(),
            Err(false) => None,
        }
    }

    /// [`find_below`](Self::find_below) looking at no more than `bound`
    /// blocks per order and section. `Err(cut)`: none found; `cut`: some
    /// blocks that could fit were not looked at.
    pub(super) fn scan_below(
        &mut self,
        y: usize,
        k: u32,
        mut m: u32,
        lpfn: u64,
        bound: usize,
    ) -> Result<(usize, u32, u32), bool> {
        let mut cut = false;
        while m != 0 {
            let j = m.trailing_zeros();
            m &= m - 1;
            let mut sm = self.zones[y].sec_mask[j as usize];
            while sm != 0 {
                let s = sm.trailing_zeros() as usize;
                sm &= sm - 1;
                let sec = &self.secs[s];
                if sec.base + (1 << k) > lpfn {
                    continue;
                }
                if sec.pending {
                    self.materialise(s);
                }
                let sec = &self.secs[s];
                let whole = sec.end() <= lpfn;
                let o = j as usize;
                // Buckets in address order (bucket `b` holds the blocks at
                // indexes `b << bshift ..`), at most `bound` blocks.
                let mut bm = sec.lmask[o];
                let mut n = 0;
                while bm != 0 {
                    let b = bm.trailing_zeros() as usize % BUCKETS;
                    bm &= bm - 1;
                    if sec.base + ((b as u64) << sec.bshift) + (1 << k) > lpfn {
                        // This bucket and all later ones lie too high.
                        break;
                    }
                    let mut idx = sec.heads[o][b];
                    while idx != NIL {
                        if n == bound {
                            cut = true;
                            break;
                        }
                        let e = sec.raw_read(idx);
                        if whole || sec.base + idx as u64 + (1 << k) <= lpfn {
                            self.unlink(s, idx, j, e);
                            return Ok((s, idx, j));
                        }
                        idx = free_next(e);
                        n += 1;
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
        c: Constraint,
    ) -> Result<(usize, u32), Error> {
        if count == 0 {
            return Err(Error::ZeroCount);
        }
        if count > 1 << MAX_ORDER {
            return Err(Error::TooLarge);
        }
        let k = ceil_log2(count).max(align_order);
        let Some((s, idx)) = self.take(k, c) else {
            return self
                .take_section_tail(count, k, c)
                .ok_or(Error::OutOfMemory);
        };
        if count.is_power_of_two() {
            // The tail is the upper halves of a split down to the count's
            // order (the same blocks `give_back` would push, faster).
            self.split(s, idx, k, count.trailing_zeros());
        } else {
            self.give_back(s, idx as u64 + count, idx as u64 + (1 << k));
        }
        Ok((s, idx))
    }

    /// The miss path of [`take_run`](Self::take_run): no free block of
    /// order `k` is allowed by `c`, but a run of `count` pages at 2^`k`
    /// alignment may still be free where no such block can exist: at the
    /// start of the last 2^`k`-aligned window of a section, which the
    /// section's end cuts short. Looks there in every section of the
    /// zones the request may use (the zone's reserve and the limit as for
    /// any request), and takes the first such run that is free like
    /// `reserve_range`. O(sections); the head word is valid.
    #[cold]
    #[inline(never)]
    pub(super) fn take_section_tail(
        &mut self,
        count: u64,
        k: u32,
        c: Constraint,
    ) -> Option<(usize, u32)> {
        let (top, limit) = zone_bounds(c)?;
        for y in (0..=top).rev() {
            let zs = &self.zones[y];
            if y < top && zs.reserve != 0 && self.zone_free(y) < zs.reserve.saturating_add(count) {
                continue;
            }
            let mut m = self.used;
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                let sec = &self.secs[s];
                let window = sec.end() & !((1u64 << k) - 1);
                if sec.zone as usize != y || window < sec.base || window + count > sec.end() {
                    continue;
                }
                if y == top && limit.is_some_and(|l| window + count > l) {
                    continue;
                }
                let idx = (window - sec.base) as u32;
                if self.range_is_free(s, idx, count) {
                    self.carve(s, idx, count);
                    return Some((s, idx));
                }
            }
        }
        None
    }
}
