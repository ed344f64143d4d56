//! How the heap tells a bad free from a good one: the ownership tag of the
//! page a pointer is in, compared with what the layout says it should be.

use super::Heap;
use super::plan::{Plan, plan, run_tag, small_page_tag};
use crate::buddy::PageState;
use crate::cpu::CpuLocal;
use crate::pcp::tags::{
    TAG_CACHED, TAG_CLAIMED, TAG_HEAP_OWNED, TAG_KIND, TAG_SLAB, handout_tag, is_heap_tag,
};
use crate::slab::{Fault, FaultKind, size_class};
use crate::types::{Error, PhysAddr, PhysMap};

impl<P: CpuLocal, const N: usize> Heap<P, N> {
    /// A small free the slab refused: a page of its own (given while this
    /// CPU had no slot, or no descriptor was left), or a fault.
    #[cold]
    #[inline(never)]
    pub(super) fn small_free_fault(
        &self,
        ptr: *mut u8,
        map: PhysMap,
        class: usize,
        kind: FaultKind,
    ) -> Result<(), Fault> {
        let phys = map.phys(ptr);
        if kind != FaultKind::NotAllocated {
            return Err(Fault {
                kind,
                addr: ptr as usize,
            });
        }
        if !phys.is_page_aligned() {
            return Err(self.page_fault(ptr, phys, Error::Misaligned));
        }
        let tag = small_page_tag(class);
        self.frames
            .free_run_as(phys, 1, tag, |buddy| buddy.free_pages(phys, 1))
            .map_err(|error| self.page_fault(ptr, phys, error))
    }

    /// What a refused free of `ptr` (at `phys`; the page layer said `error`)
    /// was, told by the page's ownership tag: memory of the heap's freed
    /// with another layout, a second free, or something the heap never
    /// handed out.
    #[cold]
    #[inline(never)]
    pub(super) fn page_fault(&self, ptr: *mut u8, phys: PhysAddr, error: Error) -> Fault {
        // The tag of the page `ptr` is in; only a slab's pages are handed
        // out at addresses other than their start.
        let tag = self.frames.tags.value(phys.0);
        let aligned = phys.is_page_aligned();
        let kind = match tag {
            Some(t) if t & TAG_KIND == TAG_SLAB => FaultKind::WrongLayout,
            _ if !aligned => FaultKind::NotAllocated,
            Some(t) if matches!(t & TAG_KIND, TAG_CACHED | TAG_CLAIMED) => FaultKind::DoubleFree,
            Some(t) if is_heap_tag(t) => FaultKind::WrongLayout,
            Some(_) if self.is_free_page(phys) => FaultKind::DoubleFree,
            Some(_) => FaultKind::NotAllocated,
            None if error == Error::TooLarge => FaultKind::WrongLayout,
            None => FaultKind::NotAllocated,
        };
        Fault {
            kind,
            addr: ptr as usize,
        }
    }

    /// Whether the page at `phys` is free in the buddy.
    pub(super) fn is_free_page(&self, phys: PhysAddr) -> bool {
        self.frames
            .with_buddy(|buddy| matches!(buddy.page_state(phys), Ok(PageState::Free { .. })))
    }

    /// Checks that `ptr` is a live allocation made with a layout of
    /// `size` bytes at `align` (or one the heap serves identically),
    /// reading only the heap's own metadata.
    pub(super) fn check_live(&self, ptr: *mut u8, size: usize, align: usize) -> Result<(), Fault> {
        let map = self.phys_map();
        let phys = map.phys(ptr);
        let expect = if let Some(class) = size_class(size, align) {
            match self.slab.is_free(&self.frames, map, ptr, class) {
                Some(false) => return Ok(()),
                Some(true) => {
                    return Err(Fault {
                        kind: FaultKind::DoubleFree,
                        addr: ptr as usize,
                    });
                }
                None => small_page_tag(class),
            }
        } else {
            match plan(size, align) {
                Some(Plan::Cached(order)) => handout_tag(TAG_HEAP_OWNED, order as usize),
                Some(Plan::Buddy(pages, align)) => run_tag(pages, align),
                None => return Err(self.page_fault(ptr, phys, Error::TooLarge)),
            }
        };
        let found = match phys.is_page_aligned() {
            true => self.frames.tags.value(phys.0),
            false => None,
        };
        if found == Some(expect) {
            return Ok(());
        }
        Err(self.page_fault(ptr, phys, Error::NotInSection))
    }
}
