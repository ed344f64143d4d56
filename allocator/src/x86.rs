//! `x86_64` crate integration (feature `x86_64`).

use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};

use crate::{BuddyAllocator, Constraint, InterruptControl, LockGuard, LockedAllocator, PhysAddr};

fn to_frame(a: PhysAddr) -> PhysFrame<Size4KiB> {
    PhysFrame::containing_address(x86_64::PhysAddr::new(a.0))
}

// SAFETY: `alloc` returns frames that are free, page aligned and handed out
// to nobody else until freed.
unsafe impl FrameAllocator<Size4KiB> for BuddyAllocator {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.alloc(0, Constraint::ANY).ok().map(to_frame)
    }
}

impl FrameDeallocator<Size4KiB> for BuddyAllocator {
    /// A frame that is not a live single-frame allocation is rejected and
    /// ignored (the trait cannot report it); the allocator stays unchanged.
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        let _ = self.free(PhysAddr(frame.start_address().as_u64()), 0);
    }
}

// SAFETY: as for BuddyAllocator; the lock serialises access.
unsafe impl<I: InterruptControl> FrameAllocator<Size4KiB> for &LockedAllocator<I> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.alloc(0, Constraint::ANY).ok().map(to_frame)
    }
}

impl<I: InterruptControl> FrameDeallocator<Size4KiB> for &LockedAllocator<I> {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        let _ = self.free(PhysAddr(frame.start_address().as_u64()), 0);
    }
}

// SAFETY: as for BuddyAllocator; the guard holds the lock.
unsafe impl<I: InterruptControl> FrameAllocator<Size4KiB> for LockGuard<'_, I> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.alloc(0, Constraint::ANY).ok().map(to_frame)
    }
}

impl<I: InterruptControl> FrameDeallocator<Size4KiB> for LockGuard<'_, I> {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        let _ = self.free(PhysAddr(frame.start_address().as_u64()), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_allocator_traits() {
        let mut a = BuddyAllocator::new();
        a.add_section_static(PhysAddr(0x10_0000), 8, std::vec![0u64; 8].leak())
            .unwrap();
        let f = a.allocate_frame().unwrap();
        assert_eq!(a.stats().free_pages(), 7);
        // SAFETY: f came from this allocator and is unused.
        unsafe { a.deallocate_frame(f) };
        assert_eq!(a.stats().free_pages(), 8);
        // A second deallocation is rejected, not applied.
        // SAFETY: the call is checked; nothing is dereferenced.
        unsafe { a.deallocate_frame(f) };
        assert_eq!(a.stats().free_pages(), 8);
        let l = LockedAllocator::<crate::NoInterrupts>::new(a);
        let mut r = &l;
        let f = r.allocate_frame().unwrap();
        assert_eq!(l.stats().free_pages(), 7);
        // SAFETY: f came from this allocator and is unused.
        unsafe { r.deallocate_frame(f) };
        assert_eq!(l.stats().free_pages(), 8);
    }
}
