//! TLB shootdown, proven by a stale translation that must not survive: a
//! page mapped and read on the boot CPU (so its TLB holds the mapping) is
//! unmapped by another CPU; touching it again on the boot CPU must fault.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use framekeep::Constraint;
use x86_64::structures::paging::{Page, PageTableFlags, PhysFrame, Size4KiB};

use crate::arch::x86_64::cpu_local::KernelCpu;
use crate::arch::x86_64::exception::ExceptionKind;
use crate::arch::x86_64::percpu;
use crate::ktest::should_fault;
use crate::mem::frames::{self, PAGE_SIZE};
use crate::mem::paging;
use framekeep::CpuLocal;

/// The page the test maps; set before the fault.
static PAGE: AtomicU64 = AtomicU64::new(0);

fn the_page() -> Range<u64> {
    let page = PAGE.load(Ordering::SeqCst);
    page..page + PAGE_SIZE
}

fn unmapped_elsewhere_then_touched_here() {
    let Some(other) = percpu::online().find(|&cpu| cpu != 0) else {
        crate::ktest::skip("one CPU: no other CPU to unmap the page");
    };
    let frame = frames::alloc_order(0, Constraint::ANY).expect("a frame");
    let frame = PhysFrame::<Size4KiB>::containing_address(x86_64::PhysAddr::new(frame.0));
    let address = paging::reserve_virtual(PAGE_SIZE, PAGE_SIZE).expect("virtual space");
    let page = Page::<Size4KiB>::containing_address(address);
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    paging::map(page, frame, flags).expect("map");
    PAGE.store(address.as_u64(), Ordering::SeqCst);
    let pointer = address.as_mut_ptr::<u64>();
    // SAFETY: mapped just above, to a frame we own. The read fills this
    // CPU's TLB with the translation.
    unsafe { pointer.write_volatile(0x5eed) };
    // SAFETY: as above.
    assert_eq!(unsafe { pointer.read_volatile() }, 0x5eed);
    let mut unmapped = false;
    assert!(
        KernelCpu::run_on(other, &mut || unmapped = paging::unmap(page).is_ok()),
        "CPU {other} did not take the call"
    );
    assert!(unmapped, "CPU {other} could not unmap the page");
    // SAFETY: deliberately touches the unmapped page: only a stale TLB
    // entry could make this read succeed (the harness then fails the test
    // for returning); the fault ends the test.
    core::hint::black_box(unsafe { pointer.read_volatile() });
}

should_fault!(
    a_page_unmapped_by_another_cpu_faults_here,
    ExceptionKind::PageFault,
    Some(the_page),
    unmapped_elsewhere_then_touched_here
);
