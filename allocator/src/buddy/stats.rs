//! Statistics: buddyinfo-like free counts per zone and order.

use core::fmt;

use crate::types::{NR_ORDERS, PAGEBLOCK_ORDER, Zone};

/// Statistics of one zone.
///
/// ```
/// let st = framekeep::BuddyAllocator::new().stats();
/// assert_eq!(st.zone(framekeep::Zone::Normal).largest_free_order(), None);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct ZoneStats {
    /// Which zone.
    pub zone: Zone,
    /// Pages registered in the zone.
    pub managed_pages: u64,
    /// Free pages in the zone.
    pub free_pages: u64,
    /// Number of free blocks of each order (like `/proc/buddyinfo`).
    pub free_blocks: [u64; NR_ORDERS],
    /// Of `free_pages`, those in blocks parked on hot lists (free, not
    /// merged yet; see `BuddyAllocator::drain_hot`).
    pub hot_pages: u64,
    /// Pages kept back from fallback requests (see `BuddyAllocator::set_reserve`).
    pub reserve: u64,
    /// Number of sections in the zone.
    pub sections: u32,
}

impl ZoneStats {
    pub(crate) const EMPTY: ZoneStats = ZoneStats {
        zone: Zone::Dma,
        managed_pages: 0,
        free_pages: 0,
        free_blocks: [0; NR_ORDERS],
        hot_pages: 0,
        reserve: 0,
        sections: 0,
    };

    /// Pages in use (managed minus free; 0 if a hand-made value has more
    /// free than managed pages).
    ///
    /// ```
    /// let st = framekeep::BuddyAllocator::new().stats();
    /// assert_eq!(st.zone(framekeep::Zone::Dma).used_pages(), 0);
    /// ```
    pub fn used_pages(&self) -> u64 {
        self.managed_pages.saturating_sub(self.free_pages)
    }

    /// Order of the largest free block, if any page is free.
    ///
    /// ```
    /// let st = framekeep::BuddyAllocator::new().stats();
    /// assert!(st.zone(framekeep::Zone::Dma).largest_free_order().is_none());
    /// ```
    pub fn largest_free_order(&self) -> Option<u32> {
        (0..NR_ORDERS)
            .rev()
            .find(|&o| self.free_blocks[o] != 0)
            .map(|o| o as u32)
    }

    /// Free pages held in blocks of at least `order` (0 above the largest
    /// order; saturates at `u64::MAX` for hand-made values).
    ///
    /// ```
    /// let st = framekeep::BuddyAllocator::new().stats();
    /// assert_eq!(st.zone(framekeep::Zone::Dma).free_pages_at_least(9), 0);
    /// ```
    pub fn free_pages_at_least(&self, order: u32) -> u64 {
        (order as usize..NR_ORDERS)
            .map(|o| self.free_blocks[o].saturating_mul(1 << o))
            .fold(0, u64::saturating_add)
    }

    /// Fragmentation index for `order`, in per mille: the share of free
    /// memory that cannot serve a request of that order (Gorman's
    /// "unusable free space index"). 0 = perfect, 1000 = nothing usable.
    /// 0 when nothing is free.
    ///
    /// ```
    /// let st = framekeep::BuddyAllocator::new().stats();
    /// assert_eq!(st.zone(framekeep::Zone::Dma).fragmentation_permille(9), 0);
    /// ```
    pub fn fragmentation_permille(&self, order: u32) -> u32 {
        permille_unusable(self.free_pages, self.free_pages_at_least(order))
    }
}

/// Statistics of the whole allocator; `Display` prints a compact table.
///
/// ```
/// let st = framekeep::BuddyAllocator::new().stats();
/// let text = format!("{st}");
/// assert!(text.contains("DMA32"));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Stats {
    /// Per zone, indexed by `Zone as usize`.
    pub zones: [ZoneStats; 3],
}

impl Stats {
    /// The statistics of one zone.
    ///
    /// ```
    /// let st = framekeep::BuddyAllocator::new().stats();
    /// assert_eq!(st.zone(framekeep::Zone::Dma32).zone, framekeep::Zone::Dma32);
    /// ```
    pub fn zone(&self, zone: Zone) -> &ZoneStats {
        &self.zones[zone as usize]
    }

    /// Free pages in all zones.
    ///
    /// ```
    /// assert_eq!(framekeep::BuddyAllocator::new().stats().free_pages(), 0);
    /// ```
    pub fn free_pages(&self) -> u64 {
        self.zones
            .iter()
            .map(|zone| zone.free_pages)
            .fold(0, u64::saturating_add)
    }

    /// Managed pages in all zones.
    ///
    /// ```
    /// assert_eq!(framekeep::BuddyAllocator::new().stats().managed_pages(), 0);
    /// ```
    pub fn managed_pages(&self) -> u64 {
        self.zones
            .iter()
            .map(|zone| zone.managed_pages)
            .fold(0, u64::saturating_add)
    }

    /// Pages in use in all zones.
    ///
    /// ```
    /// assert_eq!(framekeep::BuddyAllocator::new().stats().used_pages(), 0);
    /// ```
    pub fn used_pages(&self) -> u64 {
        self.managed_pages().saturating_sub(self.free_pages())
    }

    /// Free blocks of `order` in all zones; 0 for an order above
    /// [`MAX_ORDER`](crate::MAX_ORDER) (there are none).
    ///
    /// ```
    /// let st = framekeep::BuddyAllocator::new().stats();
    /// assert_eq!(st.free_blocks(0), 0);
    /// assert_eq!(st.free_blocks(u32::MAX), 0);
    /// ```
    pub fn free_blocks(&self, order: u32) -> u64 {
        self.zones
            .iter()
            .map(|zone| zone.free_blocks.get(order as usize).copied().unwrap_or(0))
            .fold(0, u64::saturating_add)
    }

    /// Largest free order in any zone.
    ///
    /// ```
    /// assert_eq!(framekeep::BuddyAllocator::new().stats().largest_free_order(), None);
    /// ```
    pub fn largest_free_order(&self) -> Option<u32> {
        self.zones
            .iter()
            .filter_map(|zone| zone.largest_free_order())
            .max()
    }

    /// Fragmentation index over all zones, per mille (see
    /// [`ZoneStats::fragmentation_permille`]).
    ///
    /// ```
    /// assert_eq!(framekeep::BuddyAllocator::new().stats().fragmentation_permille(9), 0);
    /// ```
    pub fn fragmentation_permille(&self, order: u32) -> u32 {
        let usable = self
            .zones
            .iter()
            .map(|zone| zone.free_pages_at_least(order))
            .fold(0, u64::saturating_add);
        permille_unusable(self.free_pages(), usable)
    }
}

/// Per mille of `free` pages not in `usable`: 0 when nothing is free, at
/// most 1000 (hand-made statistics may claim more usable than free pages,
/// or counts near `u64::MAX`).
fn permille_unusable(free: u64, usable: u64) -> u32 {
    if free == 0 {
        return 0;
    }
    let unusable = free.saturating_sub(usable) as u128;
    (unusable * 1000 / free as u128) as u32
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<6} {:>10} {:>10} {:>5} {:>3} {:>6} | free blocks per order 0..{}",
            "zone",
            "managed",
            "free",
            "hot",
            "max",
            "frag9",
            NR_ORDERS - 1
        )?;
        for zone in &self.zones {
            write!(
                f,
                "{:<6} {:>10} {:>10} {:>5} ",
                zone.zone.name(),
                zone.managed_pages,
                zone.free_pages,
                zone.hot_pages
            )?;
            match zone.largest_free_order() {
                Some(o) => write!(f, "{o:>3} ")?,
                None => write!(f, "{:>3} ", "-")?,
            }
            let p = zone.fragmentation_permille(PAGEBLOCK_ORDER);
            write!(f, "{:>4}.{}% |", p / 10, p % 10)?;
            for n in &zone.free_blocks {
                write!(f, " {n}")?;
            }
            writeln!(f)?;
        }
        let p = self.fragmentation_permille(PAGEBLOCK_ORDER);
        writeln!(
            f,
            "{:<6} {:>10} {:>10} {:>5} {:>3} {:>4}.{}% |",
            "total",
            self.managed_pages(),
            self.free_pages(),
            self.zones
                .iter()
                .map(|zone| zone.hot_pages)
                .fold(0, u64::saturating_add),
            match self.largest_free_order() {
                Some(o) => o as i64,
                None => -1,
            },
            p / 10,
            p % 10
        )
    }
}
