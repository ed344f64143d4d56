//! [`CacheStats`]: what the buddy and the caches hold.

use crate::buddy::Stats;
use crate::types::Zone;

/// Statistics of a [`PageCaches`](crate::PageCaches): the buddy's, plus what the per-CPU
/// caches hold (allocated in the buddy's view, free in truth).
///
/// ```
/// # framekeep::host_cpu_local!(Cpu, 4);
/// let c = framekeep::PageCaches::<Cpu, 4>::new(framekeep::BuddyAllocator::new());
/// let st = c.stats();
/// assert_eq!(st.free_pages(), st.buddy.free_pages() + st.cached_pages());
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct CacheStats {
    /// The buddy allocator's statistics (pages the per-CPU caches hold count as used there).
    pub buddy: Stats,
    /// Pages held by the per-CPU caches, per zone (`Zone as usize`).
    pub cached: [u64; 3],
}

impl CacheStats {
    /// Pages held by all caches.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 4);
    /// # let c = framekeep::PageCaches::<Cpu, 4>::new(framekeep::BuddyAllocator::new());
    /// assert_eq!(c.stats().cached_pages(), 0);
    /// ```
    pub fn cached_pages(&self) -> u64 {
        self.cached
            .iter()
            .fold(0, |total, &count| total.saturating_add(count))
    }

    /// Free pages, those the per-CPU caches hold included.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 4);
    /// # let c = framekeep::PageCaches::<Cpu, 4>::new(framekeep::BuddyAllocator::new());
    /// assert_eq!(c.stats().free_pages(), 0);
    /// ```
    pub fn free_pages(&self) -> u64 {
        self.buddy.free_pages().saturating_add(self.cached_pages())
    }

    /// Free pages of one zone, those the per-CPU caches hold included.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 4);
    /// # let c = framekeep::PageCaches::<Cpu, 4>::new(framekeep::BuddyAllocator::new());
    /// assert_eq!(c.stats().zone_free_pages(framekeep::Zone::Dma), 0);
    /// ```
    pub fn zone_free_pages(&self, zone: Zone) -> u64 {
        self.buddy
            .zone(zone)
            .free_pages
            .saturating_add(self.cached[zone as usize])
    }
}
