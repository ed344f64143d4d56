//! Memory below 1 MiB: the sanitiser keeps it out of the frame allocator,
//! because some things must live there (a real-mode trampoline can only
//! start from a page below 1 MiB). This hands out those pages, each once.

use spin::Mutex;

use super::frames::PAGE_SIZE;
use super::map::{LOW_MEMORY_END, PhysRange, SanitisedMap};
use crate::arch::x86_64::cpu;

/// Page 0 is never handed out: a null physical address must stay invalid,
/// and some firmware keeps data there.
const FIRST_PAGE: u64 = PAGE_SIZE;

static FREE: Mutex<[PhysRange; 8]> = Mutex::new([PhysRange { start: 0, end: 0 }; 8]);

/// Records the usable ranges below 1 MiB from the sanitised map.
pub fn init(map: &SanitisedMap) {
    cpu::without_interrupts(|| {
        let mut free = FREE.lock();
        for (slot, range) in free.iter_mut().zip(map.low_memory.as_slice()) {
            let start = range.start.max(FIRST_PAGE).next_multiple_of(PAGE_SIZE);
            let end = range.end.min(LOW_MEMORY_END) / PAGE_SIZE * PAGE_SIZE;
            if start < end {
                *slot = PhysRange { start, end };
            }
        }
    });
}

/// Takes `pages` contiguous, page-aligned pages below 1 MiB (the lowest
/// that fit); they are never given back. `None` if no usable range fits.
pub fn take(pages: u64) -> Option<u64> {
    let bytes = pages * PAGE_SIZE;
    cpu::without_interrupts(|| {
        let mut free = FREE.lock();
        let range = free
            .iter_mut()
            .filter(|range| range.end - range.start >= bytes)
            .min_by_key(|range| range.start)?;
        let start = range.start;
        range.start += bytes;
        Some(start)
    })
}
