//! How the heap serves a layout: from the slab, from the per-CPU page
//! caches, or as an exact run from the buddy, and the tag each kind of
//! allocation carries; and how much of a range its metadata takes.

use crate::metadata::heap_metadata_bytes;
use crate::pcp::tags::tag_heap;
use crate::types::{Error, MAX_ORDER, PAGE_SHIFT, PAGE_SIZE};

/// How a request that is too big for the slab is served.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// A block of this order (<= 3) through the per-CPU page cache.
    Cached(u32),
    /// Exactly this many pages at this alignment, from the buddy.
    Buddy(usize, usize),
}

/// The per-CPU cache order that serves `size` bytes (>= 1) at `align`:
/// 1, 2, 4 or 8 whole pages, aligned at most to the block.
#[inline(always)]
pub(super) fn cached_order(size: usize, align: usize) -> Option<u32> {
    // pages - 1 is 0, 1, 3 or 7 exactly for 1, 2, 4 or 8 pages.
    let meta_pages = (size - 1) >> PAGE_SHIFT;
    if meta_pages < 8
        && meta_pages & (meta_pages + 1) == 0
        && align <= (meta_pages + 1) << PAGE_SHIFT
    {
        return Some((meta_pages + 1).trailing_zeros());
    }
    None
}

/// The tag of a run of `pages` pages at `align` bytes served by the buddy:
/// its layout's key, so a free with another layout does not match.
pub(super) const fn run_tag(pages: usize, align: usize) -> u64 {
    tag_heap(pages as u64 | ((align.trailing_zeros() as u64) << 20))
}

/// The tag of a page given to a small request of class `class` (on a CPU
/// without a slot, or with no slab descriptor left).
pub(super) const fn small_page_tag(class: usize) -> u64 {
    tag_heap((1 << 40) | class as u64)
}

pub(super) fn plan(size: usize, align: usize) -> Option<Plan> {
    if let Some(order) = cached_order(size, align) {
        return Some(Plan::Cached(order));
    }
    let pages = size.div_ceil(PAGE_SIZE as usize);
    let max = (PAGE_SIZE as usize) << MAX_ORDER;
    if pages > 1 << MAX_ORDER || align > max {
        return None;
    }
    Some(Plan::Buddy(pages, align.max(PAGE_SIZE as usize)))
}

/// The heap's metadata pages at the start of a range of `pages` pages:
/// the fewest that describe all the rest.
pub(super) fn metadata_pages(pages: u64) -> Result<u64, Error> {
    if pages > crate::types::MAX_PHYS_ADDR >> crate::types::PAGE_SHIFT {
        return Err(Error::SectionTooLarge);
    }
    let bytes = |managed: u64| heap_metadata_bytes(managed) as u64;
    // From a lower bound (whole bytes per page, rounding down) up to the
    // fewest pages that fit: the rounding adds a page or two at most.
    let per_page = bytes(PAGE_SIZE) / PAGE_SIZE;
    let mut meta_pages = pages * per_page / (PAGE_SIZE + per_page);
    while meta_pages < pages && bytes(pages - meta_pages) > meta_pages * PAGE_SIZE {
        meta_pages += 1;
    }
    if meta_pages == 0 || meta_pages >= pages {
        return Err(Error::SectionTooSmall);
    }
    Ok(meta_pages)
}

#[cfg(test)]
mod tests {
    use super::{cached_order, metadata_pages};
    use crate::{Error, PAGE_SIZE, heap_metadata_bytes};

    /// The metadata carved from a range is the fewest pages that describe
    /// the rest, and impossible ranges are refused.
    #[test]
    fn metadata_pages_are_the_fewest_that_fit() {
        let fits = |pages: u64, meta_pages: u64| {
            heap_metadata_bytes(pages - meta_pages) as u64 <= meta_pages * PAGE_SIZE
        };
        for pages in (2..3000).chain([1 << 18, (1 << 20) + 7, 1 << 30]) {
            match metadata_pages(pages) {
                Ok(meta_pages) => assert!(
                    fits(pages, meta_pages) && !fits(pages, meta_pages - 1),
                    "{pages} pages: {meta_pages}"
                ),
                Err(e) => assert_eq!((pages, e), (pages, Error::SectionTooSmall)),
            }
        }
        assert_eq!(metadata_pages(1), Err(Error::SectionTooSmall));
        assert_eq!(metadata_pages(u64::MAX), Err(Error::SectionTooLarge));
    }

    /// The branch-light order computation agrees with its definition: 1,
    /// 2, 4 or 8 whole pages, alignment at most the block.
    #[test]
    #[cfg_attr(miri, ignore)] // 800k cases of plain arithmetic: minutes under Miri
    fn cached_order_matches_definition() {
        for size in (1..=40_000).chain([usize::MAX / 2, usize::MAX]) {
            for shift in 0..20 {
                let align = 1usize << shift;
                let pages = size.div_ceil(4096);
                let want = (pages <= 8 && pages.is_power_of_two() && align <= pages * 4096)
                    .then(|| pages.trailing_zeros());
                assert_eq!(cached_order(size, align), want, "size {size} align {align}");
            }
        }
    }
}
