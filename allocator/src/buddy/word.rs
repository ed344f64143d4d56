//! The per-page metadata word: one `u64` per managed page, in memory the
//! caller hands over, and how its bits are laid out.
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

/// Bytes of caller-provided metadata per managed page: one word. Every
/// metadata size of the buddy ([`metadata_bytes`](crate::metadata_bytes),
/// [`carve_metadata`](crate::carve_metadata), the check in
/// `add_section`) is derived from this constant.
pub const META_BYTES_PER_PAGE: usize = core::mem::size_of::<u64>();

/// The alignment the metadata buffer needs: that of a word.
pub(super) const META_ALIGN: usize = core::mem::align_of::<u64>();

const ST_MASK: u64 = 3;
pub(super) const ST_NONE: u64 = 0;
pub(super) const ST_FREE: u64 = 1;
pub(super) const ST_ALLOC: u64 = 2;
pub(super) const ST_HOT: u64 = 3;

/// "No page" in a free-list link.
pub(super) const NIL: u32 = (1 << 28) - 1;
const LINK_MASK: u64 = (1 << 28) - 1;
const MARK_BIT: u64 = 1 << 34;
const ALIGNED_BIT: u64 = 1 << 35;

#[inline(always)]
pub(super) const fn state(word: u64) -> u64 {
    word & ST_MASK
}

#[inline(always)]
pub(super) const fn free_word(order: u32, prev: u32, next: u32) -> u64 {
    ST_FREE | ((order as u64) << 2) | ((prev as u64) << 7) | ((next as u64) << 35)
}

/// The order of a free head, or of a hot head (both keep it in the same
/// bits).
#[inline(always)]
pub(super) const fn free_order(word: u64) -> u32 {
    ((word >> 2) & 0x1f) as u32
}

#[inline(always)]
pub(super) const fn free_prev(word: u64) -> u32 {
    ((word >> 7) & LINK_MASK) as u32
}

#[inline(always)]
pub(super) const fn free_next(word: u64) -> u32 {
    ((word >> 35) & LINK_MASK) as u32
}

#[inline(always)]
pub(super) const fn with_prev(word: u64, prev: u32) -> u64 {
    (word & !(LINK_MASK << 7)) | ((prev as u64) << 7)
}

#[inline(always)]
pub(super) const fn with_next(word: u64, next: u32) -> u64 {
    (word & !(LINK_MASK << 35)) | ((next as u64) << 35)
}

#[inline(always)]
pub(super) const fn alloc_word(count: u32) -> u64 {
    ST_ALLOC | ((count as u64) << 2)
}

/// The allocation head of a single page handed out for an alignment above
/// one page.
#[inline(always)]
pub(super) const fn aligned_page_word() -> u64 {
    alloc_word(1) | ALIGNED_BIT
}

/// The word of a block of `order` parked in `slot` of its hot list.
#[inline(always)]
pub(super) const fn hot_word(order: u32, slot: usize) -> u64 {
    ST_HOT | ((order as u64) << 2) | ((slot as u64) << 7)
}

/// The hot-list slot of a hot head.
#[inline(always)]
pub(super) const fn hot_slot(word: u64) -> usize {
    ((word >> 7) & 0x3f) as usize
}

/// Whether `word` heads a free block of `order` that merges with its
/// buddy: a free head (01) or a hot head (11) of that order, but not a
/// hot single page, which is the bare hot state and stays parked.
#[inline(always)]
pub(super) const fn merges_at(word: u64, order: u32) -> bool {
    // Clearing bit 1 leaves 01 for free and hot heads, 00 for allocation
    // (10) and none (00): one compare covers both states and the order.
    let head = word & 0x7f;
    (head & !ST_ALLOC) == (ST_FREE | ((order as u64) << 2)) && head != ST_HOT
}

#[inline(always)]
pub(super) const fn alloc_count(word: u64) -> u32 {
    ((word >> 2) & 0xffff_ffff) as u32
}

#[inline(always)]
pub(super) const fn is_marked(word: u64) -> bool {
    word & MARK_BIT != 0
}

#[inline(always)]
pub(super) const fn marked(word: u64) -> u64 {
    word | MARK_BIT
}

#[inline(always)]
pub(super) const fn unmarked(word: u64) -> u64 {
    word & !MARK_BIT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_word_roundtrip() {
        let word = free_word(18, NIL, 12345);
        assert_eq!(state(word), ST_FREE);
        assert_eq!(free_order(word), 18);
        assert_eq!(free_prev(word), NIL);
        assert_eq!(free_next(word), 12345);
        let word = with_prev(word, 7);
        assert_eq!(free_prev(word), 7);
        assert_eq!(free_next(word), 12345);
        let word = with_next(word, NIL);
        assert_eq!(free_next(word), NIL);
        assert_eq!(free_order(word), 18);
    }

    #[test]
    fn alloc_word_roundtrip() {
        let word = alloc_word(u32::MAX);
        assert_eq!(state(word), ST_ALLOC);
        assert_eq!(alloc_count(word), u32::MAX);
        assert!(!is_marked(word));
        assert!(is_marked(marked(word)));
        assert_eq!(unmarked(marked(word)), word);
    }
}
