//! Page tables: the active tables, reached through the bootloader's linear
//! map of physical memory and edited with the `x86_64` crate's
//! `OffsetPageTable`. Table frames come from and go back to the kernel's
//! frame allocator: unmapping the last entry of a table frees that table.
//!
//! Mappings the kernel makes for itself (stacks, test mappings) live in one
//! level-4 slot the bootloader left empty, handed out by a bump pointer.
//!
//! Removing a mapping or taking a permission away invalidates it on every
//! CPU (a TLB shootdown) before the call returns; page tables emptied by
//! an unmap go back to the allocator only after that, since another CPU's
//! paging-structure caches may still point into them until then.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::{
    CleanUp, FlagUpdateError, MapToError, MapperFlush, TranslateResult, UnmapError,
};
use x86_64::structures::paging::{
    FrameDeallocator, Mapper, OffsetPageTable, Page, PageSize, PageTable, PageTableFlags,
    PhysFrame, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::frames::KernelFrames;
use crate::arch::x86_64::{cpu, tlb};

static TABLES: Mutex<Option<OffsetPageTable<'static>>> = Mutex::new(None);
/// Next free address of the kernel's own mapping area; 0 before init.
static NEXT_VIRT: AtomicU64 = AtomicU64::new(0);
static VIRT_END: AtomicU64 = AtomicU64::new(0);

/// Bytes covered by one level-4 entry.
const P4_SLOT_BYTES: u64 = 1 << 39;

/// Why a mapping request failed.
#[derive(Debug)]
pub enum PagingError {
    NotInitialised,
    /// No frame for a page table.
    OutOfFrames,
    AlreadyMapped,
    /// A huge page is in the way of a smaller mapping (or the reverse).
    HugePageInTheWay,
    NotMapped,
    /// The kernel's mapping area is used up.
    OutOfVirtualSpace,
}

impl<S: PageSize> From<MapToError<S>> for PagingError {
    fn from(error: MapToError<S>) -> Self {
        match error {
            MapToError::FrameAllocationFailed => Self::OutOfFrames,
            MapToError::PageAlreadyMapped(_) => Self::AlreadyMapped,
            MapToError::ParentEntryHugePage => Self::HugePageInTheWay,
        }
    }
}

impl From<UnmapError> for PagingError {
    fn from(error: UnmapError) -> Self {
        match error {
            UnmapError::ParentEntryHugePage => Self::HugePageInTheWay,
            UnmapError::PageNotMapped | UnmapError::InvalidFrameAddress(_) => Self::NotMapped,
        }
    }
}

impl From<FlagUpdateError> for PagingError {
    fn from(error: FlagUpdateError) -> Self {
        match error {
            FlagUpdateError::PageNotMapped => Self::NotMapped,
            FlagUpdateError::ParentEntryHugePage => Self::HugePageInTheWay,
        }
    }
}

/// Takes over the active page tables and picks the kernel's mapping area.
///
/// # Safety
/// `physical_memory_offset` must be where the bootloader mapped all
/// physical memory, and nothing else may edit the page tables from now on.
pub unsafe fn init(physical_memory_offset: u64) {
    let (p4_frame, _) = Cr3::read();
    let offset = VirtAddr::new(physical_memory_offset);
    let p4 = (offset + p4_frame.start_address().as_u64()).as_mut_ptr::<PageTable>();
    // SAFETY: per the contract, CR3's table is reachable through the linear
    // map and this is the only reference to it from now on.
    let tables = unsafe { OffsetPageTable::new(&mut *p4, offset) };
    // The highest empty upper-half slot: far from the bootloader's
    // mappings, which it places from the bottom of the free space.
    let free_slot = (256..512)
        .rev()
        .find(|&index| tables.level_4_table()[index].is_unused());
    if let Some(index) = free_slot {
        let start = VirtAddr::new_truncate(index as u64 * P4_SLOT_BYTES).as_u64();
        NEXT_VIRT.store(start, Ordering::SeqCst);
        VIRT_END.store(start + (P4_SLOT_BYTES - 1), Ordering::SeqCst);
    } else {
        log::warn!("paging: no free level-4 slot; the kernel cannot make mappings of its own");
    }
    cpu::without_interrupts(|| *TABLES.lock() = Some(tables));
}

/// Runs `f` on the page tables with the lock held and interrupts masked.
fn with_tables<R>(
    f: impl FnOnce(&mut OffsetPageTable<'static>) -> Result<R, PagingError>,
) -> Result<R, PagingError> {
    cpu::without_interrupts(|| match TABLES.lock().as_mut() {
        Some(tables) => f(tables),
        None => Err(PagingError::NotInitialised),
    })
}

/// Reserves `bytes` (rounded up to `align`, a power of two of at least 4 KiB)
/// of the kernel's mapping area; nothing is mapped yet. The area is a
/// 512 GiB bump region and is never reused.
pub fn reserve_virtual(bytes: u64, align: u64) -> Result<VirtAddr, PagingError> {
    let align = align.max(Size4KiB::SIZE);
    let end = VIRT_END.load(Ordering::SeqCst);
    let mut current = NEXT_VIRT.load(Ordering::SeqCst);
    loop {
        if current == 0 {
            return Err(PagingError::NotInitialised);
        }
        let start = current.next_multiple_of(align);
        let next = start
            .checked_add(bytes.next_multiple_of(Size4KiB::SIZE))
            .filter(|&next| next - 1 <= end)
            .ok_or(PagingError::OutOfVirtualSpace)?;
        match NEXT_VIRT.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Ok(VirtAddr::new(start)),
            Err(actual) => current = actual,
        }
    }
}

/// Maps `page` to `frame`; intermediate tables come from the frame allocator.
pub fn map<S: PageSize>(
    page: Page<S>,
    frame: PhysFrame<S>,
    flags: PageTableFlags,
) -> Result<(), PagingError>
where
    OffsetPageTable<'static>: Mapper<S>,
{
    let parents = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    with_tables(|tables| {
        // SAFETY: the frame is owned by the caller, who hands it to this
        // mapping; the page is in the kernel's own area or otherwise unused.
        let flush: MapperFlush<S> = unsafe {
            tables.map_to_with_table_flags(page, frame, flags, parents, &mut KernelFrames)?
        };
        flush.flush();
        Ok(())
    })
}

/// Unmaps `page` on every CPU and frees every page table this leaves
/// empty. Returns the frame that was mapped (still owned by the caller).
pub fn unmap<S: PageSize>(page: Page<S>) -> Result<PhysFrame<S>, PagingError>
where
    OffsetPageTable<'static>: Mapper<S>,
{
    let mut emptied = EmptiedTables::default();
    let frame = with_tables(|tables| {
        let (frame, flush) = tables.unmap(page)?;
        // The shootdown below flushes this CPU too.
        flush.ignore();
        let first = Page::<Size4KiB>::containing_address(page.start_address());
        let last = Page::<Size4KiB>::containing_address(page.start_address() + (S::SIZE - 1));
        // SAFETY: no references into page tables are held across this call,
        // and only tables left with no entries at all are collected.
        unsafe { tables.clean_up_addr_range(Page::range_inclusive(first, last), &mut emptied) };
        Ok(frame)
    })?;
    tlb::shoot_down(page.start_address(), S::SIZE / Size4KiB::SIZE);
    emptied.free();
    Ok(frame)
}

/// Page tables an unmap emptied, freed once no CPU can use them.
#[derive(Default)]
struct EmptiedTables {
    frames: [Option<PhysFrame<Size4KiB>>; 4],
}

impl FrameDeallocator<Size4KiB> for EmptiedTables {
    /// # Safety
    /// As for [`KernelFrames`]: the frame came from it and is unused.
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        match self.frames.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(frame),
            // An unmap of one page empties at most three tables.
            None => log::error!("paging: more emptied tables than expected; {frame:?} leaked"),
        }
    }
}

impl EmptiedTables {
    fn free(self) {
        for frame in self.frames.into_iter().flatten() {
            // SAFETY: the frame came from `KernelFrames`, and after the
            // shootdown no CPU's paging-structure cache points into it.
            unsafe { KernelFrames.deallocate_frame(frame) };
        }
    }
}

/// Changes the flags of a mapped page, on every CPU.
pub fn update_flags<S: PageSize>(page: Page<S>, flags: PageTableFlags) -> Result<(), PagingError>
where
    OffsetPageTable<'static>: Mapper<S>,
{
    with_tables(|tables| {
        // SAFETY: changing flags of a mapping the caller owns.
        let flush = unsafe { tables.update_flags(page, flags)? };
        flush.ignore();
        Ok(())
    })?;
    tlb::shoot_down(page.start_address(), S::SIZE / Size4KiB::SIZE);
    Ok(())
}

/// The physical address `addr` maps to, with the mapping's flags.
pub fn translate(addr: VirtAddr) -> Option<(PhysAddr, PageTableFlags)> {
    with_tables(|tables| match tables.translate(addr) {
        TranslateResult::Mapped {
            frame,
            offset,
            flags,
        } => Ok((frame.start_address() + offset, flags)),
        _ => Err(PagingError::NotMapped),
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::exception::ExceptionKind;
    use crate::ktest::should_fault;
    use crate::mem::frames::{self, PAGE_SIZE};
    use core::ops::Range;
    use framekeep::Constraint;
    use x86_64::structures::paging::Size2MiB;

    const DATA: PageTableFlags = PageTableFlags::PRESENT
        .union(PageTableFlags::WRITABLE)
        .union(PageTableFlags::NO_EXECUTE);

    fn frame_4k() -> PhysFrame<Size4KiB> {
        let start = frames::alloc_order(0, Constraint::ANY).expect("a frame");
        PhysFrame::containing_address(PhysAddr::new(start.0))
    }

    #[test_case]
    fn map_translate_unmap_4k_returns_table_frames() {
        let free_before = frames::stats().free_pages();
        let frame = frame_4k();
        // A fresh 1 GiB-aligned area needs new level-3..1 tables.
        let page = Page::<Size4KiB>::containing_address(reserve_virtual(1 << 30, 1 << 30).unwrap());
        map(page, frame, DATA).expect("map");
        assert!(
            frames::stats().free_pages() < free_before - 1,
            "tables came from our allocator"
        );
        let (phys, flags) = translate(page.start_address() + 0x123u64).expect("mapped");
        assert_eq!(phys, frame.start_address() + 0x123u64);
        assert!(flags.contains(PageTableFlags::NO_EXECUTE));
        // Writes through the new mapping land in the frame.
        // SAFETY: the page was just mapped writable to a frame we own.
        unsafe {
            page.start_address()
                .as_mut_ptr::<u64>()
                .write_volatile(0x5eed)
        };
        let via_linear = frames::phys_to_virt(framekeep::PhysAddr(frame.start_address().as_u64()));
        // SAFETY: the frame is ours; the linear map aliases it.
        let read_back = unsafe { via_linear.as_ptr::<u64>().read_volatile() };
        assert_eq!(read_back, 0x5eed);
        assert_eq!(unmap(page).expect("unmap"), frame);
        assert!(translate(page.start_address()).is_none());
        assert!(matches!(unmap(page), Err(PagingError::NotMapped)));
        frames::free_order(framekeep::PhysAddr(frame.start_address().as_u64()), 0).unwrap();
        assert_eq!(
            frames::stats().free_pages(),
            free_before,
            "every table frame went back"
        );
    }

    #[test_case]
    fn map_translate_unmap_2m_uses_an_order_9_block() {
        let free_before = frames::stats().free_pages();
        let block = frames::alloc_order(9, Constraint::ANY).expect("an order-9 block");
        let frame = PhysFrame::<Size2MiB>::from_start_address(PhysAddr::new(block.0))
            .expect("order-9 blocks are 2 MiB aligned");
        let page = Page::<Size2MiB>::containing_address(reserve_virtual(1 << 30, 1 << 30).unwrap());
        map(page, frame, DATA).expect("map 2 MiB");
        let (phys, flags) = translate(page.start_address() + 0x1f_f000u64).expect("mapped");
        assert_eq!(phys, frame.start_address() + 0x1f_f000u64);
        assert!(flags.contains(PageTableFlags::HUGE_PAGE));
        // A 4 KiB mapping inside it must be refused.
        let inner = Page::<Size4KiB>::containing_address(page.start_address());
        assert!(matches!(
            map(inner, frame_4k_leak_checked(), DATA),
            Err(PagingError::HugePageInTheWay)
        ));
        assert_eq!(unmap(page).expect("unmap"), frame);
        frames::free_order(block, 9).unwrap();
        assert_eq!(frames::stats().free_pages(), free_before);
    }

    /// A frame for a mapping that must fail; freed again right away.
    fn frame_4k_leak_checked() -> PhysFrame<Size4KiB> {
        let frame = frame_4k();
        frames::free_order(framekeep::PhysAddr(frame.start_address().as_u64()), 0).unwrap();
        frame
    }

    #[test_case]
    fn flags_can_be_changed() {
        let frame = frame_4k();
        let page =
            Page::<Size4KiB>::containing_address(reserve_virtual(PAGE_SIZE, PAGE_SIZE).unwrap());
        map(page, frame, DATA).unwrap();
        update_flags(page, PageTableFlags::PRESENT | PageTableFlags::NO_EXECUTE).unwrap();
        let (_, flags) = translate(page.start_address()).unwrap();
        assert!(!flags.contains(PageTableFlags::WRITABLE));
        unmap(page).unwrap();
        frames::free_order(framekeep::PhysAddr(frame.start_address().as_u64()), 0).unwrap();
    }

    /// Where the fault tests below map their page; set before the fault.
    static FAULT_PAGE: AtomicU64 = AtomicU64::new(0);

    fn fault_page() -> Range<u64> {
        let page = FAULT_PAGE.load(Ordering::SeqCst);
        page..page + PAGE_SIZE
    }

    fn map_fault_page(flags: PageTableFlags) -> VirtAddr {
        let page =
            Page::<Size4KiB>::containing_address(reserve_virtual(PAGE_SIZE, PAGE_SIZE).unwrap());
        map(page, frame_4k(), flags).unwrap();
        FAULT_PAGE.store(page.start_address().as_u64(), Ordering::SeqCst);
        page.start_address()
    }

    fn write_read_only_page() {
        let address = map_fault_page(PageTableFlags::PRESENT | PageTableFlags::NO_EXECUTE);
        // SAFETY: deliberately faults (the page is read-only).
        unsafe { address.as_mut_ptr::<u64>().write_volatile(1) };
    }

    fn execute_data_page() {
        let address = map_fault_page(DATA);
        // SAFETY: the page holds `ret`, but it is mapped no-execute, so the
        // call faults before running anything.
        unsafe {
            address.as_mut_ptr::<u8>().write_volatile(0xc3);
            let function: extern "C" fn() = core::mem::transmute(address.as_ptr::<u8>());
            function();
        }
    }

    should_fault!(
        writing_a_read_only_page_faults,
        ExceptionKind::PageFault,
        Some(fault_page),
        write_read_only_page
    );
    should_fault!(
        executing_a_data_page_faults,
        ExceptionKind::PageFault,
        Some(fault_page),
        execute_data_page
    );
}
