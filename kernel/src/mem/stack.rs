//! Kernel stacks: frames mapped writable and no-execute in the kernel's own
//! mapping area, with an unmapped guard page below, so an overflow faults
//! instead of silently overwriting whatever lies beneath.

use framekeep::Constraint;
use x86_64::VirtAddr;
use x86_64::structures::paging::{Page, PageTableFlags, PhysFrame, Size4KiB};

use super::frames::{self, FrameRun, PAGE_SIZE};
use super::paging::{self, PagingError};

/// A mapped kernel stack; unmapped and freed on drop.
#[derive(Debug)]
pub struct KernelStack {
    /// Lowest mapped address; the guard page is the page below.
    bottom: VirtAddr,
    pages: usize,
    frames: Option<FrameRun>,
}

/// Why a stack could not be made.
#[derive(Debug)]
pub enum StackError {
    Frames(framekeep::Error),
    Paging(PagingError),
}

impl core::fmt::Display for StackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Frames(error) => write!(f, "no frames for the stack: {error:?}"),
            Self::Paging(error) => write!(f, "cannot map the stack: {error:?}"),
        }
    }
}

impl KernelStack {
    /// A stack of `pages` pages (at least one) with a guard page below it.
    pub fn new(pages: usize) -> Result<Self, StackError> {
        let pages = pages.max(1);
        let run = frames::alloc_run(pages, Constraint::ANY).map_err(StackError::Frames)?;
        let area = match paging::reserve_virtual((pages as u64 + 1) * PAGE_SIZE, PAGE_SIZE) {
            Ok(area) => area,
            Err(error) => {
                let _ = frames::free_run(run);
                return Err(StackError::Paging(error));
            }
        };
        let mut stack = Self {
            bottom: area + PAGE_SIZE,
            pages: 0,
            frames: None,
        };
        let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
        for index in 0..pages {
            let page =
                Page::<Size4KiB>::containing_address(stack.bottom + index as u64 * PAGE_SIZE);
            let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(
                run.start.0 + index as u64 * PAGE_SIZE,
            ));
            if let Err(error) = paging::map(page, frame, flags) {
                stack.frames = Some(run);
                // Drop unmaps what was mapped and frees the frames.
                return Err(StackError::Paging(error));
            }
            stack.pages = index + 1;
        }
        stack.frames = Some(run);
        Ok(stack)
    }

    /// One past the highest address: the initial stack pointer.
    pub fn top(&self) -> VirtAddr {
        self.bottom + self.pages as u64 * PAGE_SIZE
    }

    /// The unmapped page just below the stack.
    pub fn guard_page(&self) -> VirtAddr {
        self.bottom - PAGE_SIZE
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        for index in 0..self.pages {
            let page = Page::<Size4KiB>::containing_address(self.bottom + index as u64 * PAGE_SIZE);
            if let Err(error) = paging::unmap(page) {
                log::error!("stack: unmapping {page:?} failed: {error:?}");
            }
        }
        if let Some(run) = self.frames.take()
            && let Err(error) = frames::free_run(run)
        {
            log::error!("stack: freeing frames failed: {error:?}");
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use crate::arch::x86_64::exception::ExceptionKind;
    use crate::ktest::should_fault;
    use core::ops::Range;
    use core::sync::atomic::{AtomicU64, Ordering};

    #[test_case]
    fn stacks_are_mapped_data_and_give_everything_back() {
        let free_before = frames::stats().free_pages();
        let stack = KernelStack::new(4).unwrap_or_else(|error| panic!("{error}"));
        let (_, flags) = paging::translate(stack.top() - 8u64).expect("top mapped");
        assert!(flags.contains(PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE));
        assert!(
            paging::translate(stack.guard_page()).is_none(),
            "guard page must stay unmapped"
        );
        // SAFETY: the whole stack is mapped and ours.
        unsafe {
            core::ptr::write_bytes(
                stack.bottom.as_mut_ptr::<u8>(),
                0xab,
                4 * PAGE_SIZE as usize,
            )
        };
        drop(stack);
        assert_eq!(frames::stats().free_pages(), free_before);
    }

    static GUARD: AtomicU64 = AtomicU64::new(0);

    fn guard() -> Range<u64> {
        let guard = GUARD.load(Ordering::SeqCst);
        guard..guard + PAGE_SIZE
    }

    /// Stores just below the stack, as an overflowing push would.
    fn touch_the_guard_page() {
        let stack = KernelStack::new(2).expect("a stack");
        GUARD.store(stack.guard_page().as_u64(), Ordering::SeqCst);
        let below = (stack.bottom - 8u64).as_mut_ptr::<u64>();
        // SAFETY: deliberately faults on the unmapped guard page.
        unsafe { below.write_volatile(0) };
        core::mem::forget(stack);
    }

    should_fault!(
        a_stack_guard_page_faults,
        ExceptionKind::PageFault,
        Some(guard),
        touch_the_guard_page
    );
}
