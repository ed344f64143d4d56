//! Host memory handed to the peers, and the common allocator interface.

use std::alloc::{Layout, alloc, dealloc};

use crate::trace::PAGE;

/// 1 GiB.
pub const GIB: usize = 1 << 30;

/// What every benchmarked allocator offers. Addresses are bytes: virtual
/// addresses for the peers, (fake) physical addresses for ours.
pub trait Frames {
    /// `2^order` pages, as the allocator is normally asked for them (the
    /// buddies return a naturally aligned block).
    fn alloc(&mut self, order: u32) -> Option<usize>;
    /// A block of `2^order` pages aligned to its size.
    fn alloc_block(&mut self, order: u32) -> Option<usize> {
        self.alloc(order)
    }
    /// Free a block returned by [`Frames::alloc`] with the same order.
    fn free(&mut self, addr: usize, order: u32);
    /// One page aligned to `align` bytes (an allocator may get this wrong:
    /// the caller checks the address).
    fn alloc_aligned_page(&mut self, align: usize) -> Option<usize>;
    /// Free a page returned by [`Frames::alloc_aligned_page`].
    fn free_aligned_page(&mut self, addr: usize, align: usize);
    /// The allocator's own count of free pages, if it keeps one (used to
    /// cross-check the benchmark's accounting).
    fn free_page_count(&self) -> Option<usize> {
        None
    }
}

/// A reservation of host address space, aligned to 1 GiB, of which only the
/// pages an allocator writes to are ever backed by memory.
///
/// Layout: `[base, base + 1 GiB)` is slack for metadata prefixes, `heap()`
/// is `base + 1 GiB` and `heap()..heap() + bytes` is the managed memory.
pub struct HostRegion {
    base: *mut u8,
    layout: Layout,
    bytes: usize,
}

impl HostRegion {
    pub fn new(bytes: usize) -> Self {
        let layout = Layout::from_size_align(GIB + bytes, GIB).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc(layout) };
        assert!(!base.is_null(), "cannot reserve {} bytes", layout.size());
        Self {
            base,
            layout,
            bytes,
        }
    }

    /// Start of the managed memory (1 GiB aligned).
    pub fn heap(&self) -> usize {
        self.base as usize + GIB
    }

    /// Size of the managed memory in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The managed memory preceded by `prefix` bytes of metadata room.
    ///
    /// # Safety
    /// The caller must not let two live allocators use the slice at once,
    /// and must stop using it before the region is dropped.
    pub unsafe fn with_prefix(&self, prefix: usize) -> &'static mut [u8] {
        assert!(prefix <= GIB && prefix.is_multiple_of(PAGE));
        // SAFETY: `heap() - prefix .. heap() + bytes` lies inside the
        // allocation (prefix <= 1 GiB); exclusivity and lifetime are the
        // caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut((self.heap() - prefix) as *mut u8, prefix + self.bytes)
        }
    }
}

impl Drop for HostRegion {
    fn drop(&mut self) {
        // SAFETY: `base` was returned by `alloc` with this same layout.
        unsafe { dealloc(self.base, self.layout) }
    }
}
