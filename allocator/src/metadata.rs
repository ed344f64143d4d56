//! What a section needs in metadata, for every layer, and where each
//! layer's part lies in the buffer handed over at registration:
//!
//! | part | bytes per managed page | used by |
//! |---|---|---|
//! | buddy words | [`META_BYTES_PER_PAGE`](crate::META_BYTES_PER_PAGE) (8) | [`BuddyAllocator`](crate::BuddyAllocator) |
//! | ownership tags | [`TAG_BYTES_PER_PAGE`] (8) | [`PageCaches`](crate::PageCaches) |
//! | slab descriptors | one per [`PAGES_PER_DESCRIPTOR`] pages | [`Heap`](crate::Heap) |
//!
//! Each layer's buffer is the one below it followed by its own part.

use crate::buddy::metadata_bytes;
use crate::slab::remote::SlabDesc;

/// Bytes of ownership tag per managed page.
pub const TAG_BYTES_PER_PAGE: usize = core::mem::size_of::<u64>();

/// Bytes of one slab descriptor, and its alignment.
pub(crate) const DESC_BYTES: usize = core::mem::size_of::<SlabDesc>();
pub(crate) const DESC_ALIGN: usize = core::mem::align_of::<SlabDesc>();

/// Where the tags start: after the buddy's words.
pub(crate) const fn tags_at(pages: u64) -> usize {
    metadata_bytes(pages)
}

/// Where the slab descriptors start: after the tags (then aligned).
pub(crate) const fn descriptors_at(pages: u64) -> usize {
    cache_metadata_bytes(pages)
}

/// Bytes of metadata [`PageCaches::add_section`](crate::PageCaches::add_section)
/// needs for `pages` pages: the buddy's words, then a tag per page.
///
/// ```
/// assert_eq!(framekeep::cache_metadata_bytes(1024), 16 * 1024);
/// ```
pub const fn cache_metadata_bytes(pages: u64) -> usize {
    let tags = (pages as usize).saturating_mul(TAG_BYTES_PER_PAGE);
    metadata_bytes(pages).saturating_add(tags)
}

/// Managed pages per slab descriptor reserved at registration: enough for
/// slabs over all memory when they are 8 pages each, or over an eighth of
/// it when they are single pages. Beyond that, small requests get whole
/// pages (see [`Heap`](crate::Heap)).
pub const PAGES_PER_DESCRIPTOR: u64 = 8;

/// Descriptors reserved for `pages` managed pages.
pub(crate) const fn descriptors_for(pages: u64) -> u64 {
    pages.div_ceil(PAGES_PER_DESCRIPTOR)
}

/// Bytes of metadata a [`Heap`](crate::Heap) needs for `pages` pages: the
/// page caches' ([`cache_metadata_bytes`](crate::cache_metadata_bytes)),
/// then the slab descriptors reserved for them (room for aligning them
/// included). `usize::MAX` if that does not fit.
///
/// ```
/// let n = framekeep::heap_metadata_bytes(8);
/// assert!(n >= framekeep::cache_metadata_bytes(8) + 64);
/// ```
pub const fn heap_metadata_bytes(pages: u64) -> usize {
    let descs = descriptors_for(pages) as usize;
    let cache = cache_metadata_bytes(pages);
    match descs.checked_mul(DESC_BYTES) {
        Some(d) => match cache.checked_add(d) {
            Some(n) => n.saturating_add(DESC_ALIGN),
            None => usize::MAX,
        },
        None => usize::MAX,
    }
}
