//! The kernel heap: `alloc::{Box, Vec, String, BTreeMap}` in the kernel,
//! served by the allocator crate's `Heap`: size classes up to 2 KiB from
//! per-CPU slabs, larger requests in whole pages from the same buddy the
//! frame allocator uses. There is no fixed-size arena.

use core::alloc::{GlobalAlloc, Layout};

use framekeep::Fault;

use super::frames::MEMORY;

/// The `#[global_allocator]`: forwards to [`MEMORY`], and names the
/// layout when it cannot serve one (the default alloc error handler then
/// panics with the size).
pub struct KernelHeap;

#[global_allocator]
static HEAP: KernelHeap = KernelHeap;

/// Called for every bad free the heap detects (double free, foreign or
/// interior pointer, wrong layout); the heap has already ignored it.
fn report_fault(fault: Fault) {
    log::error!("heap: bad free detected and ignored: {fault:?}");
}

/// Installs the fault reporter; call once after the frame allocator is up.
pub fn init() {
    MEMORY.set_fault_handler(report_fault);
}

// SAFETY: forwards to `framekeep::Heap`, itself a `GlobalAlloc` with the
// same contract.
unsafe impl GlobalAlloc for KernelHeap {
    /// # Safety
    /// The contract of [`GlobalAlloc::alloc`], passed on unchanged.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let pointer = unsafe { MEMORY.alloc(layout) };
        if pointer.is_null() {
            log::error!(
                "heap: out of memory for {} bytes aligned to {}",
                layout.size(),
                layout.align()
            );
        }
        pointer
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::dealloc`], passed on unchanged.
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MEMORY.dealloc(pointer, layout) }
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::realloc`], passed on unchanged.
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MEMORY.realloc(pointer, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use crate::mem::frames;

    /// Free pages: constant across any sequence of allocations that is
    /// fully freed (slab descriptors live in the allocator's metadata).
    fn free_or_kept() -> u64 {
        frames::stats().free_pages()
    }
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt::Write;

    #[test_case]
    fn collections_of_many_sizes_work_and_give_memory_back() {
        let free_before = free_or_kept();
        {
            let boxed = Box::new([7u64; 100]);
            let mut text = String::new();
            let mut numbers = Vec::new();
            let mut map = BTreeMap::new();
            for i in 0..2000u64 {
                numbers.push(i * 3);
                map.insert(i, i * i);
                write!(text, "{i},").unwrap();
            }
            assert_eq!(boxed.iter().sum::<u64>(), 700);
            assert_eq!(numbers.iter().sum::<u64>(), 3 * 1999 * 2000 / 2);
            assert_eq!(map.get(&1999), Some(&(1999 * 1999)));
            assert!(text.starts_with("0,1,2,") && text.ends_with("1999,"));
        }
        assert_eq!(free_or_kept(), free_before);
    }

    #[test_case]
    fn large_and_aligned_allocations() {
        let free_before = free_or_kept();
        let mut big = Vec::<u8>::with_capacity(8 << 20);
        big.resize(8 << 20, 0x5a);
        assert!(big.iter().all(|&byte| byte == 0x5a));
        #[repr(align(65536))]
        struct Aligned([u8; 100]);
        let aligned = Box::new(Aligned([1; 100]));
        assert_eq!(&*aligned as *const Aligned as usize % 65536, 0);
        assert_eq!(aligned.0[99], 1);
        drop(big);
        drop(aligned);
        assert_eq!(free_or_kept(), free_before);
    }

    #[test_case]
    fn fragmented_heap_memory_is_reused() {
        let free_before = free_or_kept();
        let mut blocks: Vec<Vec<u64>> = (0..256)
            .map(|i| alloc::vec![i; 600 + (i as usize % 7) * 300])
            .collect();
        // Free every other one, then allocate again into the holes.
        for i in (0..blocks.len()).step_by(2) {
            blocks[i] = Vec::new();
        }
        let after_holes = free_or_kept();
        for i in (0..blocks.len()).step_by(2) {
            blocks[i] = alloc::vec![i as u64; 600];
        }
        assert!(free_or_kept() < after_holes);
        for (i, block) in blocks.iter().enumerate() {
            assert!(
                block.iter().all(|&value| value == i as u64),
                "block {i} corrupted"
            );
        }
        drop(blocks);
        assert_eq!(free_or_kept(), free_before);
    }
}
