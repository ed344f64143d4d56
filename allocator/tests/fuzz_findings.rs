//! Bugs the `stack` fuzz target (`fuzz/fuzz_targets/stack.rs`) found,
//! each minimised to a test. They are ignored until fixed, so that CI
//! stays green: `cargo test -p allocator --test fuzz_findings -- --ignored`.

#[path = "common/host.rs"]
mod host;

use std::alloc::Layout;

use allocator::FaultKind;
use host::heap;

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// A slab object that does not start a page, freed with a page-sized
/// layout, is reported as never allocated: the page layer refuses the
/// address as misaligned, and `Heap::page_fault` only reads the tag of a
/// page-aligned address, so it never sees the slab tag of the page the
/// object lives in. (Refused and nothing changed, only the kind is wrong;
/// the first object of a slab starts a page and is reported correctly.)
#[test]
#[ignore = "found by fuzzing: a slab object not starting a page, freed with a page layout, is NotAllocated instead of WrongLayout"]
fn unaligned_slab_object_freed_with_a_page_layout_is_a_wrong_layout() {
    let (h, _ram) = heap(512);
    let l = lay(1024, 8);
    let first = h.allocate(l);
    let second = h.allocate(l);
    assert_eq!(second as usize % 4096, 1024);
    for wrong in [lay(4096, 4096), lay(12288, 4096), lay(122_880, 16384)] {
        // SAFETY: refused before anything is touched (what is tested).
        let e = unsafe { h.try_dealloc(first, wrong) }.unwrap_err();
        assert_eq!(
            e.kind,
            FaultKind::WrongLayout,
            "page-aligned object as {wrong:?}"
        );
        // SAFETY: as above.
        let e = unsafe { h.try_dealloc(second, wrong) }.unwrap_err();
        assert_eq!(
            e.kind,
            FaultKind::WrongLayout,
            "object at +1024 as {wrong:?}"
        );
    }
    // SAFETY: live, freed once with their layout.
    unsafe {
        h.try_dealloc(first, l).unwrap();
        h.try_dealloc(second, l).unwrap();
    }
}
