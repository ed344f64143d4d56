//! The size classes: which object sizes the slab serves, and how big a
//! slab of each is.

use super::remote::MAX_OBJS;
use crate::types::PAGE_SIZE;

/// The object sizes, smallest first (see the module documentation).
///
/// ```
/// assert_eq!(framekeep::SIZE_CLASSES[2], 24);
/// assert_eq!(*framekeep::SIZE_CLASSES.last().unwrap(), framekeep::MAX_SMALL_SIZE);
/// ```
pub const SIZE_CLASSES: [usize; NR_CLASSES] = [
    8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
];
/// Number of size classes.
pub const NR_CLASSES: usize = 16;
/// The largest size (and alignment) served by the slab; larger requests
/// get whole pages.
pub const MAX_SMALL_SIZE: usize = 2048;
/// Empty slabs each CPU keeps per size class instead of returning them.
pub const SLAB_RESERVE: u32 = 1;

/// Alignment a class guarantees: the largest power of two dividing its size
/// (0 for 0).
///
/// ```
/// assert_eq!(framekeep::class_align(48), 16);
/// assert_eq!(framekeep::class_align(2048), 2048);
/// ```
pub const fn class_align(size: usize) -> usize {
    if size == 0 {
        0
    } else {
        1 << size.trailing_zeros()
    }
}

/// The buddy order of a slab of objects of `size` bytes: the smallest
/// order `<= 3` giving at least 8 objects and at most 1/16 waste.
///
/// ```
/// assert_eq!(framekeep::slab_order(8), 0);     // 512 objects in 4 KiB
/// assert_eq!(framekeep::slab_order(768), 1);   // 10 objects in 8 KiB
/// assert_eq!(framekeep::slab_order(1536), 2);  // 10 objects in 16 KiB
/// ```
pub const fn slab_order(size: usize) -> u32 {
    let mut order = 0;
    while order < 3 {
        let bytes = (PAGE_SIZE as usize) << order;
        let count = bytes / if size == 0 { 1 } else { size };
        if count >= 8 && bytes - count * size <= bytes / 16 {
            return order;
        }
        order += 1;
    }
    3
}

pub(crate) const fn objects(size: usize) -> usize {
    let count = ((PAGE_SIZE as usize) << slab_order(size)) / size;
    if count > MAX_OBJS { MAX_OBJS } else { count }
}

const LOOKUP: [u8; MAX_SMALL_SIZE / 8 + 1] = {
    let mut table = [0u8; MAX_SMALL_SIZE / 8 + 1];
    let mut i = 0;
    let mut class = 0;
    while i < table.len() {
        while SIZE_CLASSES[class] < i * 8 {
            class += 1;
        }
        table[i] = class as u8;
        i += 1;
    }
    table
};

/// ceil(2^32 / size): `(offset * RECIP) >> 32 == offset / size` for every
/// offset inside a slab (< 2^15), without a division.
pub(crate) const RECIP: [u64; NR_CLASSES] = {
    let mut table = [0u64; NR_CLASSES];
    let mut class = 0;
    while class < NR_CLASSES {
        table[class] = (1u64 << 32).div_ceil(SIZE_CLASSES[class] as u64);
        class += 1;
    }
    table
};

/// The size class for `size` bytes at alignment `align`, or `None` if the
/// request is too big for the slab.
///
/// ```
/// use framekeep::{size_class, SIZE_CLASSES};
/// assert_eq!(SIZE_CLASSES[size_class(20, 8).unwrap()], 24);
/// assert_eq!(SIZE_CLASSES[size_class(20, 16).unwrap()], 32);   // 24 is only 8-aligned
/// assert_eq!(SIZE_CLASSES[size_class(1, 1024).unwrap()], 1024);
/// assert_eq!(size_class(2049, 8), None);
/// ```
#[inline(always)]
pub const fn size_class(size: usize, align: usize) -> Option<usize> {
    if size > MAX_SMALL_SIZE || align > MAX_SMALL_SIZE {
        return None;
    }
    let mut class = LOOKUP[size.div_ceil(8)] as usize;
    if align <= 8 {
        // Every class is a multiple of 8 bytes, so 8-aligned.
        return Some(class);
    }
    while class_align(SIZE_CLASSES[class]) < align {
        class += 1;
        if class == NR_CLASSES {
            return None;
        }
    }
    Some(class)
}
