//! Freeing small objects: into this CPU's current slab by its address
//! range, into another of its slabs through the page tag, or remotely into
//! a slab another CPU owns.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cache::{CpuSlab, Slab};
use super::classes::{RECIP, SIZE_CLASSES, SLAB_RESERVE};
use super::fault::FaultKind;
use super::remote::{SlabDesc, geom_nobj, geom_owner, geom_size, push_incoming};
use crate::cpu::CpuLocal;
use crate::pcp::PageCaches;
use crate::pcp::tags::{TAG_KIND, TAG_SLAB};
use crate::types::PhysMap;

impl<P: CpuLocal, const N: usize> Slab<P, N> {
    /// Frees the object at `ptr` of class `class`. Errors leave everything
    /// unchanged.
    ///
    /// One masked section: a free into this CPU's current slab of class `class`
    /// is recognised by its address range and needs no tag lookup; any
    /// other free reads the page tag once, inside the section (so an
    /// interrupt cannot retire the slab between the read and the use).
    #[inline(always)]
    pub(crate) fn free(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
        class: usize,
    ) -> Result<(), FaultKind> {
        let local = |saved: P::Saved, cpu: usize, cpu_slab: &mut CpuSlab| {
            let class_state = &cpu_slab.classes[class];
            let rel = (ptr as u64).wrapping_sub(class_state.base);
            if rel >= class_state.span {
                return self.free_tagged_ending(saved, frames, map, cpu, cpu_slab, ptr, class);
            }
            // In the current slab (span != 0, so `cur` is set): a live
            // descriptor of class `class` owned by this CPU, and we are in its
            // masked section. The current slab is never listed or retired,
            // so `after_free` has nothing to do.
            let idx = (rel * RECIP[class]) >> 32;
            let result = if idx * SIZE_CLASSES[class] as u64 != rel {
                Err(FaultKind::NotObjectStart)
            } else {
                // SAFETY: as above.
                unsafe { (*class_state.cur).free_local(idx as u32) }
                    .map(|_| ())
                    .map_err(FaultKind::from)
            };
            P::restore(saved);
            result
        };
        // SAFETY: both branches of `local` end the section exactly once
        // (`free_tagged_ending` does, after its last use of `cpu_slab`).
        unsafe {
            self.cpus
                .local_ending::<P, _>(local, || self.free_unowned(frames, map, ptr, class))
        }
    }

    /// `free_tagged`, then the end of the masked section `saved` came from.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn free_tagged_ending(
        &self,
        saved: P::Saved,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        cpu: usize,
        cpu_slab: &mut CpuSlab,
        ptr: *mut u8,
        class: usize,
    ) -> Result<(), FaultKind> {
        let result = self.free_tagged(frames, map, cpu, cpu_slab, ptr, class);
        P::restore(saved);
        result
    }

    /// `free` of an object outside the current slab, in `cpu`'s masked
    /// section: found through its page tag, local or remote.
    #[inline(always)]
    pub(super) fn free_tagged(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        cpu: usize,
        cpu_slab: &mut CpuSlab,
        ptr: *mut u8,
        class: usize,
    ) -> Result<(), FaultKind> {
        let (tag, tag_value) = Self::slab_tag(frames, map, ptr)?;
        let desc_ptr = (tag_value & !63) as *mut SlabDesc;
        // SAFETY: tags only ever hold addresses of descriptors, which are
        // never freed (type-stable), so this is a valid SlabDesc.
        let desc = unsafe { &*desc_ptr };
        let geom = desc.geom.load(Ordering::Relaxed);
        if geom_owner(geom) != cpu {
            return self.free_remote(tag, tag_value, desc_ptr, ptr, class);
        }
        // Ours, and the tag was read inside our masked section: nobody
        // retires or re-initialises the slab meanwhile.
        let idx = Self::index(desc, geom, ptr, class)?;
        // SAFETY: owned by this CPU, in its masked section.
        unsafe {
            let was = desc.own().inuse;
            let now = desc.free_local(idx)?;
            self.after_free(frames, cpu, cpu_slab, desc_ptr, was, now, SLAB_RESERVE);
        }
        Ok(())
    }

    /// `free` on a CPU without a slot (every slab belongs to someone else):
    /// a remote free, masked anyway (as on a CPU with a slot), so the owner
    /// never waits long for us in `finish_retire`.
    #[cold]
    #[inline(never)]
    pub(super) fn free_unowned(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
        class: usize,
    ) -> Result<(), FaultKind> {
        let saved = P::save_and_disable();
        let result = self.free_unowned_masked(frames, map, ptr, class);
        P::restore(saved);
        result
    }

    /// The ownership tag of the page holding `ptr` and its value, if that
    /// page belongs to a slab; [`FaultKind::NotAllocated`] if not.
    fn slab_tag(
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
    ) -> Result<(&AtomicU64, u64), FaultKind> {
        let tag = frames
            .tags
            .get(map.phys(ptr).0)
            .ok_or(FaultKind::NotAllocated)?;
        let tag_value = tag.load(Ordering::Acquire);
        if tag_value & TAG_KIND != TAG_SLAB {
            return Err(FaultKind::NotAllocated);
        }
        Ok((tag, tag_value))
    }

    pub(super) fn free_unowned_masked(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
        class: usize,
    ) -> Result<(), FaultKind> {
        let (tag, tag_value) = Self::slab_tag(frames, map, ptr)?;
        self.free_remote(
            tag,
            tag_value,
            (tag_value & !63) as *mut SlabDesc,
            ptr,
            class,
        )
    }

    pub(super) fn free_remote(
        &self,
        tag: &AtomicU64,
        tag_value: u64,
        desc_ptr: *mut SlabDesc,
        ptr: *mut u8,
        class: usize,
    ) -> Result<(), FaultKind> {
        // SAFETY: type-stable descriptor (see `free`).
        let desc = unsafe { &*desc_ptr };
        if !desc.enter(|| tag.load(Ordering::Relaxed) == tag_value) {
            // Retired meanwhile: the object cannot have been live.
            return Err(FaultKind::NotAllocated);
        }
        let geom = desc.geom.load(Ordering::Relaxed);
        let result = Self::index(desc, geom, ptr, class).and_then(|idx| {
            let (push, fault) = desc.free_remote(idx);
            if push {
                let owner = geom_owner(geom);
                if let Some(sh) = self.shared.get(owner) {
                    // SAFETY: we switched `pending` 0 -> 1; `desc_ptr` stays valid.
                    unsafe { push_incoming(&sh.incoming, desc_ptr) };
                }
            }
            fault.map_or(Ok(()), |f| Err(f.into()))
        });
        desc.leave();
        result
    }

    /// The object index of `ptr` in the slab, checked.
    #[inline(always)]
    pub(super) fn index(
        desc: &SlabDesc,
        geom: u64,
        ptr: *mut u8,
        class: usize,
    ) -> Result<u32, FaultKind> {
        if geom_size(geom) as usize != SIZE_CLASSES[class] {
            return Err(FaultKind::WrongLayout);
        }
        let off = (ptr as u64).wrapping_sub(desc.base.load(Ordering::Relaxed));
        let idx = (off * RECIP[class]) >> 32;
        if off >= (geom_nobj(geom) as u64) * SIZE_CLASSES[class] as u64 {
            return Err(FaultKind::NotObjectStart);
        }
        if idx * SIZE_CLASSES[class] as u64 != off {
            return Err(FaultKind::NotObjectStart);
        }
        Ok(idx as u32)
    }
}
