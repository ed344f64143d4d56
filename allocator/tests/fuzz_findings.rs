//! Bugs the `stack` fuzz target (`fuzz/fuzz_targets/stack.rs`) found,
//! each minimised to a test that failed before its fix.

#[path = "common/host.rs"]
mod host;

use std::alloc::Layout;

use framekeep::FaultKind;
use host::heap;

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// A slab object that does not start a page, freed with a page-sized
/// layout, is a wrong layout (it was reported as never allocated: the
/// tag of the page the object lives in was not read for an address that
/// is not a page's start).
#[test]
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
