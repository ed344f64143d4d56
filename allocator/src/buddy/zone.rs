//! Zones: what the allocator keeps per zone (which orders and sections
//! have free blocks, pages, reserve), the zone a request starts in, the
//! zones a constraint allows, and how a registered range is cut at zone
//! boundaries.

use super::{BuddyAllocator, set_bits};
use crate::types::{Constraint, NR_ORDERS, PAGE_SHIFT, PAGE_SIZE, PhysAddr, Zone};

/// Per-zone state. The masks mirror the sections' lists, so that a
/// request finds a section with a block of the order it needs without
/// looking at any section that has none.
#[derive(Clone, Copy)]
pub(super) struct ZoneState {
    /// Which orders have a free block in some section.
    pub(super) order_mask: u32,
    /// Per order: which sections have a free block of that order.
    pub(super) section_mask: [u64; NR_ORDERS],
    pub(super) managed_pages: u64,
    pub(super) reserve: u64,
    pub(super) section_count: u32,
    /// The zone a request for this zone starts in (see `start_zone`).
    pub(super) start: Zone,
}

impl ZoneState {
    pub(super) const EMPTY: ZoneState = ZoneState {
        order_mask: 0,
        section_mask: [0; NR_ORDERS],
        managed_pages: 0,
        reserve: 0,
        section_count: 0,
        start: Zone::Dma,
    };
}

/// The highest zone a request under `constraint` may use, and the frame
/// below which it must stay in that zone (`None`: all of it); `None` if
/// no page lies below a limit.
pub(super) fn zone_bounds(constraint: Constraint) -> Option<(usize, Option<u64>)> {
    Some(match constraint {
        Constraint::Zone(zone) => (zone as usize, None),
        Constraint::Below(limit) => {
            if limit.0 < PAGE_SIZE {
                return None;
            }
            let zone = Zone::of(PhysAddr(limit.0 - 1));
            let limit_pfn = if limit.0 >= zone.end().0 {
                None
            } else {
                Some(limit.0 >> PAGE_SHIFT)
            };
            (zone as usize, limit_pfn)
        }
    })
}

/// The frames `[start_pfn, end_pfn)` cut at zone boundaries: up to three
/// `(start, end, zone)` pieces, lowest first, and how many there are.
/// Each becomes a section of its own, so a section never spans two zones.
pub(super) fn zone_pieces(start_pfn: u64, end_pfn: u64) -> ([(u64, u64, u8); 3], usize) {
    let mut pieces = [(0u64, 0u64, 0u8); 3];
    let mut count = 0;
    for zone in Zone::ALL {
        let lo = start_pfn.max(zone.start().0 >> PAGE_SHIFT);
        let hi = end_pfn.min(zone.end().0 >> PAGE_SHIFT);
        if lo < hi {
            pieces[count] = (lo, hi, zone as u8);
            count += 1;
        }
    }
    (pieces, count)
}

impl BuddyAllocator {
    /// Section `section` gained its first free block of each order in
    /// `orders`.
    #[inline(always)]
    pub(super) fn zone_gained(&mut self, section: usize, orders: u32) {
        let zone = &mut self.zones[self.secs[section].zone as usize % 4];
        zone.order_mask |= orders;
        let mut left = orders;
        while left != 0 {
            let order = left.trailing_zeros() as usize % NR_ORDERS;
            left &= left - 1;
            zone.section_mask[order] |= 1 << section;
        }
    }

    /// Section `section` has no free block of `order` left: clears the
    /// zone's bits for it.
    #[inline(always)]
    pub(super) fn order_emptied(&mut self, section: usize, order: u32) {
        let zone = &mut self.zones[self.secs[section].zone as usize % 4];
        zone.section_mask[order as usize] &= !(1 << section);
        if zone.section_mask[order as usize] == 0 {
            zone.order_mask &= !(1 << order);
        }
    }

    /// Counts a newly registered section, whose free blocks have the
    /// orders in `orders`, in its zone.
    pub(super) fn zone_add_section(&mut self, section: usize, orders: u32) {
        let sec = &self.secs[section];
        let zone = &mut self.zones[sec.zone as usize];
        zone.managed_pages += sec.pages as u64;
        zone.section_count += 1;
        self.update_start_zones();
        self.zone_gained(section, orders);
    }

    /// Takes section `section`, about to be removed, out of its zone's
    /// masks and counts.
    pub(super) fn zone_remove_section(&mut self, section: usize) {
        let sec = &self.secs[section];
        let zone = &mut self.zones[sec.zone as usize];
        for order in 0..NR_ORDERS {
            zone.section_mask[order] &= !(1 << section);
            if zone.section_mask[order] == 0 {
                zone.order_mask &= !(1 << order);
            }
        }
        zone.managed_pages -= sec.pages as u64;
        zone.section_count -= 1;
        self.update_start_zones();
    }

    /// The zone a request for `zone` (and below) starts in: `zone`, or, if
    /// it has no memory at all (a machine without memory above 4 GiB has
    /// an empty Normal zone), the highest lower zone with memory, where it
    /// would fall back anyway. Starting there, the request takes that
    /// zone's hot path instead of the fallback's checks on every call.
    #[inline(always)]
    pub(super) fn start_zone(&self, zone: Zone) -> Zone {
        self.zones[zone as usize % 4].start
    }

    /// Recomputes [`start_zone`](Self::start_zone) after the zones' sections
    /// or reserves changed. Never past a zone that keeps a reserve: that is
    /// the fallback's check to make.
    fn update_start_zones(&mut self) {
        let zones = &mut self.zones;
        zones[0].start = Zone::Dma;
        zones[1].start = if zones[1].section_count == 0 && zones[0].reserve == 0 {
            Zone::Dma
        } else {
            Zone::Dma32
        };
        zones[2].start = if zones[2].section_count == 0 && zones[1].reserve == 0 {
            zones[1].start
        } else {
            Zone::Normal
        };
    }

    /// Whether the reserve of `zone` refuses a fallback request for `need`
    /// pages: it would leave fewer than the reserve free there.
    pub(super) fn reserve_refuses(&self, zone: usize, need: u64) -> bool {
        let reserve = self.zones[zone].reserve;
        reserve != 0 && self.zone_free(zone) < reserve.saturating_add(need)
    }

    /// Free pages of zone `zone` (O(sections x orders); only needed by the
    /// reserve check of a fallback and by statistics).
    pub(super) fn zone_free(&self, zone: usize) -> u64 {
        let mut free = self.hot_pages_in_zone(zone);
        for section in set_bits(self.used_slots) {
            if self.secs[section].zone as usize == zone {
                free += self.secs[section].free_pages();
            }
        }
        free
    }

    /// Keeps `pages` pages of `zone` for requests whose highest acceptable
    /// zone is `zone` itself (or a limit inside it): a request that may use
    /// higher zones does not fall back into `zone` if that would leave fewer
    /// than `pages` free there (like Linux's `lowmem_reserve`).
    ///
    /// ```
    /// # let mut a = framekeep::doc_allocator!(64);   // all DMA32
    /// use framekeep::{Constraint, Error, Zone};
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
    /// assert_eq!(framekeep::BuddyAllocator::new().reserve(framekeep::Zone::Dma32), 0);
    /// ```
    pub fn reserve(&self, zone: Zone) -> u64 {
        self.zones[zone as usize].reserve
    }
}

#[cfg(test)]
mod tests;
