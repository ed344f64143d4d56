//! The size classes: which object sizes the slab serves, and how big a
//! slab of each is.

use super::remote::MAX_OBJS;
use crate::types::PAGE_SIZE;

/// The object sizes, smallest first (see the module documentation).
///
/// ```
/// assert_eq!(allocator::SIZE_CLASSES[2], 24);
/// assert_eq!(*allocator::SIZE_CLASSES.last().unwrap(), allocator::MAX_SMALL_SIZE);
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
/// assert_eq!(allocator::class_align(48), 16);
/// assert_eq!(allocator::class_align(2048), 2048);
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
/// assert_eq!(allocator::slab_order(8), 0);     // 512 objects in 4 KiB
/// assert_eq!(allocator::slab_order(768), 1);   // 10 objects in 8 KiB
/// assert_eq!(allocator::slab_order(1536), 2);  // 10 objects in 16 KiB
/// ```
pub const fn slab_order(size: usize) -> u32 {
    let mut o = 0;
    while o < 3 {
        let bytes = (PAGE_SIZE as usize) << o;
        let n = bytes / if size == 0 { 1 } else { size };
        if n >= 8 && bytes - n * size <= bytes / 16 {
            return o;
        }
        o += 1;
    }
    3
}

pub(crate) const fn objects(size: usize) -> usize {
    let n = ((PAGE_SIZE as usize) << slab_order(size)) / size;
    if n > MAX_OBJS { MAX_OBJS } else { n }
}

const LOOKUP: [u8; MAX_SMALL_SIZE / 8 + 1] = {
    let mut t = [0u8; MAX_SMALL_SIZE / 8 + 1];
    let mut i = 0;
    let mut c = 0;
    while i < t.len() {
        while SIZE_CLASSES[c] < i * 8 {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// ceil(2^32 / size): `(offset * RECIP) >> 32 == offset / size` for every
/// offset inside a slab (< 2^15), without a division.
pub(crate) const RECIP: [u64; NR_CLASSES] = {
    let mut t = [0u64; NR_CLASSES];
    let mut c = 0;
    while c < NR_CLASSES {
        t[c] = (1u64 << 32).div_ceil(SIZE_CLASSES[c] as u64);
        c += 1;
    }
    t
};

/// The size class for `size` bytes at alignment `align`, or `None` if the
/// request is too big for the slab.
///
/// ```
/// use allocator::{size_class, SIZE_CLASSES};
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
    let mut c = LOOKUP[size.div_ceil(8)] as usize;
    if align <= 8 {
        // Every class is a multiple of 8 bytes, so 8-aligned.
        return Some(c);
    }
    while class_align(SIZE_CLASSES[c]) < align {
        c += 1;
        if c == NR_CLASSES {
            return None;
        }
    }
    Some(c)
}
