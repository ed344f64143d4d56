//! The kernel heap: `alloc::{Box, Vec, String, BTreeMap}` in the kernel.
//!
//! Until the slab layer lands, every allocation is served honestly from
//! whole pages of the frame allocator, reached through the linear map: an
//! allocation of n bytes takes ceil(n / 4 KiB) contiguous frames (aligned
//! as asked), and freeing gives exactly those frames back. There is no
//! fixed-size arena: the heap can use all of memory.

use core::alloc::{GlobalAlloc, Layout};

use allocator::{Constraint, PhysAddr};

use super::frames::{self, FrameRun, PAGE_SIZE};

pub struct PageHeap;

#[global_allocator]
static HEAP: PageHeap = PageHeap;

fn pages_for(layout: Layout) -> usize {
    layout.size().max(1).div_ceil(PAGE_SIZE as usize)
}

// SAFETY: every pointer handed out is the linear-map address of frames
// allocated for it alone, at least `layout.size()` bytes, aligned to
// `layout.align()` (page-aligned, or allocated aligned for larger
// alignments); dealloc gives back exactly those frames.
unsafe impl GlobalAlloc for PageHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pages = pages_for(layout);
        let run = if layout.align() as u64 > PAGE_SIZE {
            frames::alloc_run_aligned(pages, layout.align(), Constraint::ANY)
        } else {
            frames::alloc_run(pages, Constraint::ANY)
        };
        match run {
            Ok(run) => {
                let address = frames::phys_to_virt(run.start).as_mut_ptr();
                core::mem::forget(run);
                address
            }
            Err(error) => {
                // The default alloc error handler then panics with the size;
                // this names the whole layout and the allocator's reason.
                log::error!(
                    "heap: cannot allocate {} bytes aligned to {}: {error:?}",
                    layout.size(),
                    layout.align()
                );
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        let start = PhysAddr(pointer as u64 - frames::phys_to_virt(PhysAddr(0)).as_u64());
        if let Err(error) = frames::free_run(FrameRun {
            start,
            pages: pages_for(layout),
        }) {
            log::error!("heap: freeing {pointer:p} ({layout:?}) failed: {error:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::mem::frames;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt::Write;

    #[test_case]
    fn collections_of_many_sizes_work_and_give_memory_back() {
        let free_before = frames::stats().free_pages();
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
        assert_eq!(frames::stats().free_pages(), free_before);
    }

    #[test_case]
    fn large_and_aligned_allocations() {
        let free_before = frames::stats().free_pages();
        let mut big = Vec::<u8>::with_capacity(8 << 20);
        big.resize(8 << 20, 0x5a);
        assert!(big.iter().all(|&b| b == 0x5a));
        #[repr(align(65536))]
        struct Aligned([u8; 100]);
        let aligned = Box::new(Aligned([1; 100]));
        assert_eq!(&*aligned as *const Aligned as usize % 65536, 0);
        assert_eq!(aligned.0[99], 1);
        drop(big);
        drop(aligned);
        assert_eq!(frames::stats().free_pages(), free_before);
    }

    #[test_case]
    fn fragmented_heap_memory_is_reused() {
        let free_before = frames::stats().free_pages();
        let mut blocks: Vec<Vec<u64>> = (0..256)
            .map(|i| alloc::vec![i; 600 + (i as usize % 7) * 300])
            .collect();
        // Free every other one, then allocate again into the holes.
        for i in (0..blocks.len()).step_by(2) {
            blocks[i] = Vec::new();
        }
        let after_holes = frames::stats().free_pages();
        for i in (0..blocks.len()).step_by(2) {
            blocks[i] = alloc::vec![i as u64; 600];
        }
        assert!(frames::stats().free_pages() < after_holes);
        for (i, block) in blocks.iter().enumerate() {
            assert!(block.iter().all(|&v| v == i as u64), "block {i} corrupted");
        }
        drop(blocks);
        assert_eq!(frames::stats().free_pages(), free_before);
    }
}
