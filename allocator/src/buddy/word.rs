//! The 8-byte per-page metadata word.
//!
//! Word layout (bits):
//! - `0..2` state: `0` none (interior of a block, or never touched),
//!   `1` free block head, `2` allocation head, `3` hot block head (free,
//!   parked on a hot list).
//! - free head: `2..7` order, `7..35` prev index, `35..63` next index
//!   (section-relative page indexes, [`NIL`] = none).
//! - allocation head: `2..34` page count, `34` transient mark used by bulk
//!   free, `35` aligned (a single page from `alloc_aligned` with an
//!   alignment above one page: parked on free), `36..64` reserved (zero).
//! - hot head: `2..7` order, `7..13` slot in its hot list (a block of
//!   order >= 1 is taken out of that slot when its buddy merges with it),
//!   every other bit zero.
//! - none: every other bit zero.

pub(crate) const ST_MASK: u64 = 3;
pub(crate) const ST_NONE: u64 = 0;
pub(crate) const ST_FREE: u64 = 1;
pub(crate) const ST_ALLOC: u64 = 2;
pub(crate) const ST_HOT: u64 = 3;

/// "No page" in a free-list link.
pub(crate) const NIL: u32 = (1 << 28) - 1;
const LINK_MASK: u64 = (1 << 28) - 1;
const MARK_BIT: u64 = 1 << 34;
const ALIGNED_BIT: u64 = 1 << 35;

#[inline(always)]
pub(crate) const fn state(e: u64) -> u64 {
    e & ST_MASK
}

#[inline(always)]
pub(crate) const fn free_word(order: u32, prev: u32, next: u32) -> u64 {
    ST_FREE | ((order as u64) << 2) | ((prev as u64) << 7) | ((next as u64) << 35)
}

#[inline(always)]
pub(crate) const fn free_order(e: u64) -> u32 {
    ((e >> 2) & 0x1f) as u32
}

#[inline(always)]
pub(crate) const fn free_prev(e: u64) -> u32 {
    ((e >> 7) & LINK_MASK) as u32
}

#[inline(always)]
pub(crate) const fn free_next(e: u64) -> u32 {
    ((e >> 35) & LINK_MASK) as u32
}

#[inline(always)]
pub(crate) const fn with_prev(e: u64, prev: u32) -> u64 {
    (e & !(LINK_MASK << 7)) | ((prev as u64) << 7)
}

#[inline(always)]
pub(crate) const fn with_next(e: u64, next: u32) -> u64 {
    (e & !(LINK_MASK << 35)) | ((next as u64) << 35)
}

#[inline(always)]
pub(crate) const fn alloc_word(count: u32) -> u64 {
    ST_ALLOC | ((count as u64) << 2)
}

/// The allocation head of a single page handed out for an alignment above
/// one page.
#[inline(always)]
pub(crate) const fn aligned_page_word() -> u64 {
    alloc_word(1) | ALIGNED_BIT
}

/// The word of a block of `order` parked in `slot` of its hot list.
#[inline(always)]
pub(crate) const fn hot_word(order: u32, slot: usize) -> u64 {
    ST_HOT | ((order as u64) << 2) | ((slot as u64) << 7)
}

/// The hot-list slot of a hot head.
#[inline(always)]
pub(crate) const fn hot_slot(e: u64) -> usize {
    ((e >> 7) & 0x3f) as usize
}

#[inline(always)]
pub(crate) const fn alloc_count(e: u64) -> u32 {
    ((e >> 2) & 0xffff_ffff) as u32
}

#[inline(always)]
pub(crate) const fn is_marked(e: u64) -> bool {
    e & MARK_BIT != 0
}

#[inline(always)]
pub(crate) const fn marked(e: u64) -> u64 {
    e | MARK_BIT
}

#[inline(always)]
pub(crate) const fn unmarked(e: u64) -> u64 {
    e & !MARK_BIT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_word_roundtrip() {
        let e = free_word(18, NIL, 12345);
        assert_eq!(state(e), ST_FREE);
        assert_eq!(free_order(e), 18);
        assert_eq!(free_prev(e), NIL);
        assert_eq!(free_next(e), 12345);
        let e = with_prev(e, 7);
        assert_eq!(free_prev(e), 7);
        assert_eq!(free_next(e), 12345);
        let e = with_next(e, NIL);
        assert_eq!(free_next(e), NIL);
        assert_eq!(free_order(e), 18);
    }

    #[test]
    fn alloc_word_roundtrip() {
        let e = alloc_word(u32::MAX);
        assert_eq!(state(e), ST_ALLOC);
        assert_eq!(alloc_count(e), u32::MAX);
        assert!(!is_marked(e));
        assert!(is_marked(marked(e)));
        assert_eq!(unmarked(marked(e)), e);
    }
}
