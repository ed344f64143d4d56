//! Zones: per-zone state, the zone a request starts in, and the zones a
//! constraint allows.

use super::*;

#[derive(Clone, Copy)]
pub(super) struct ZoneState {
    /// Which orders have a free block in some section.
    pub(super) order_mask: u32,
    /// Per order: which sections have a free block of that order.
    pub(super) sec_mask: [u64; NR_ORDERS],
    pub(super) managed_pages: u64,
    pub(super) reserve: u64,
    pub(super) sections: u32,
    /// The zone a request for this zone starts in (see `start_zone`).
    pub(super) start: Zone,
}

impl ZoneState {
    pub(super) const EMPTY: ZoneState = ZoneState {
        order_mask: 0,
        sec_mask: [0; NR_ORDERS],
        managed_pages: 0,
        reserve: 0,
        sections: 0,
        start: Zone::Dma,
    };
}

/// The highest zone a request under `c` may use, and the frame below
/// which it must stay in that zone (`None`: all of it); `None` if no
/// page lies below a limit.
pub(super) fn zone_bounds(c: Constraint) -> Option<(usize, Option<u64>)> {
    Some(match c {
        Constraint::Zone(z) => (z as usize, None),
        Constraint::Below(a) => {
            if a.0 < PAGE_SIZE {
                return None;
            }
            let z = Zone::of(PhysAddr(a.0 - 1));
            let lim = if a.0 >= z.end().0 {
                None
            } else {
                Some(a.0 >> PAGE_SHIFT)
            };
            (z as usize, lim)
        }
    })
}

impl BuddyAllocator {
    /// Section `s` gained its first free block of each order in `orders`.
    #[inline(always)]
    pub(super) fn zone_gained(&mut self, s: usize, orders: u32) {
        let z = &mut self.zones[self.secs[s].zone as usize % 4];
        z.order_mask |= orders;
        let mut m = orders;
        while m != 0 {
            let o = m.trailing_zeros() as usize % NR_ORDERS;
            m &= m - 1;
            z.sec_mask[o] |= 1 << s;
        }
    }

    /// Section `s` has no free block of `order` left: clears the zone's
    /// bits for it.
    #[inline(always)]
    pub(super) fn order_emptied(&mut self, s: usize, order: u32) {
        let o = order as usize;
        let z = &mut self.zones[self.secs[s].zone as usize % 4];
        z.sec_mask[o] &= !(1 << s);
        if z.sec_mask[o] == 0 {
            z.order_mask &= !(1 << order);
        }
    }

    /// The zone a request for zone `z` (and below) starts in: `z`, or, if
    /// `z` has no memory at all (a machine without memory above 4 GiB has
    /// an empty Normal zone), the highest lower zone with memory, where it
    /// would fall back anyway. Starting there, the request takes that
    /// zone's hot path instead of the fallback's checks on every call.
    #[inline(always)]
    pub(super) fn start_zone(&self, z: Zone) -> Zone {
        self.zones[z as usize % 4].start
    }

    /// Recomputes [`start_zone`](Self::start_zone) after the zones' sections
    /// or reserves changed. Never past a zone that keeps a reserve: that is
    /// the fallback's check to make.
    pub(super) fn update_start_zones(&mut self) {
        let z = &mut self.zones;
        z[0].start = Zone::Dma;
        z[1].start = if z[1].sections == 0 && z[0].reserve == 0 {
            Zone::Dma
        } else {
            Zone::Dma32
        };
        z[2].start = if z[2].sections == 0 && z[1].reserve == 0 {
            z[1].start
        } else {
            Zone::Normal
        };
    }

    /// Free pages of zone `y` (O(sections x orders); only needed by the
    /// reserve check of a fallback and by statistics).
    pub(super) fn zone_free(&self, y: usize) -> u64 {
        let mut m = self.used;
        let mut n = self.hot_pages_in_zone(y);
        while m != 0 {
            let s = m.trailing_zeros() as usize;
            m &= m - 1;
            if self.secs[s].zone as usize == y {
                n += self.secs[s].free_pages();
            }
        }
        n
    }

    /// Keeps `pages` pages of `zone` for requests whose highest acceptable
    /// zone is `zone` itself (or a limit inside it): a request that may use
    /// higher zones does not fall back into `zone` if that would leave fewer
    /// than `pages` free there (like Linux's `lowmem_reserve`).
    ///
    /// ```
    /// # let mut a = allocator::doc_allocator!(64);   // all DMA32
    /// use allocator::{Constraint, Error, Zone};
    /// a.set_reserve(Zone::Dma32, 64);
    /// assert_eq!(a.alloc(0, Constraint::ANY), Err(Error::OutOfMemory));
    /// assert!(a.alloc(0, Constraint::Zone(Zone::Dma32)).is_ok());
    /// ```
    pub fn set_reserve(&mut self, zone: Zone, pages: u64) {
        self.zones[zone as usize].reserve = pages;
        self.update_start_zones();
    }

    /// The reserve set by [`set_reserve`](Self::set_reserve) (0 by default).
    ///
    /// ```
    /// assert_eq!(allocator::BuddyAllocator::new().reserve(allocator::Zone::Dma32), 0);
    /// ```
    pub fn reserve(&self, zone: Zone) -> u64 {
        self.zones[zone as usize].reserve
    }
}
