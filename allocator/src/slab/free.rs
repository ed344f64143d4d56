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
    /// Frees the object at `ptr` of class `k`. Errors leave everything
    /// unchanged.
    ///
    /// One masked section: a free into this CPU's current slab of class `k`
    /// is recognised by its address range and needs no tag lookup; any
    /// other free reads the page tag once, inside the section (so an
    /// interrupt cannot retire the slab between the read and the use).
    #[inline(always)]
    pub(crate) fn free(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let local = |saved: P::Saved, cpu: usize, cs: &mut CpuSlab| {
            let c = &cs.classes[k];
            let rel = (ptr as u64).wrapping_sub(c.base);
            if rel >= c.span {
                return self.free_tagged_ending(saved, frames, map, cpu, cs, ptr, k);
            }
            // In the current slab (span != 0, so `cur` is set): a live
            // descriptor of class `k` owned by this CPU, and we are in its
            // masked section. The current slab is never listed or retired,
            // so `after_free` has nothing to do.
            let idx = (rel * RECIP[k]) >> 32;
            let r = if idx * SIZE_CLASSES[k] as u64 != rel {
                Err(FaultKind::NotObjectStart)
            } else {
                // SAFETY: as above.
                unsafe { (*c.cur).free_local(idx as u32) }
                    .map(|_| ())
                    .map_err(FaultKind::from)
            };
            P::restore(saved);
            r
        };
        // SAFETY: both branches of `local` end the section exactly once
        // (`free_tagged_ending` does, after its last use of `cs`).
        unsafe {
            self.cpus
                .local_ending::<P, _>(local, || self.free_unowned(frames, map, ptr, k))
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
        cs: &mut CpuSlab,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let r = self.free_tagged(frames, map, cpu, cs, ptr, k);
        P::restore(saved);
        r
    }

    /// `free` of an object outside the current slab, in `cpu`'s masked
    /// section: found through its page tag, local or remote.
    #[inline(always)]
    pub(super) fn free_tagged(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        cpu: usize,
        cs: &mut CpuSlab,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let phys = map.phys(ptr).0;
        let tag = frames.tags.get(phys).ok_or(FaultKind::NotAllocated)?;
        let t = tag.load(Ordering::Acquire);
        if t & TAG_KIND != TAG_SLAB {
            return Err(FaultKind::NotAllocated);
        }
        let d = (t & !63) as *mut SlabDesc;
        // SAFETY: tags only ever hold addresses of descriptors, which are
        // never freed (type-stable), so this is a valid SlabDesc.
        let dr = unsafe { &*d };
        let g = dr.geom.load(Ordering::Relaxed);
        if geom_owner(g) != cpu {
            return self.free_remote(tag, t, d, ptr, k);
        }
        // Ours, and the tag was read inside our masked section: nobody
        // retires or re-initialises the slab meanwhile.
        let idx = Self::index(dr, g, ptr, k)?;
        // SAFETY: owned by this CPU, in its masked section.
        unsafe {
            let was = dr.own().inuse;
            let now = dr.free_local(idx)?;
            self.after_free(frames, cpu, cs, d, was, now, SLAB_RESERVE);
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
        k: usize,
    ) -> Result<(), FaultKind> {
        let s = P::save_and_disable();
        let r = self.free_unowned_masked(frames, map, ptr, k);
        P::restore(s);
        r
    }

    pub(super) fn free_unowned_masked(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let phys = map.phys(ptr).0;
        let tag = frames.tags.get(phys).ok_or(FaultKind::NotAllocated)?;
        let t = tag.load(Ordering::Acquire);
        if t & TAG_KIND != TAG_SLAB {
            return Err(FaultKind::NotAllocated);
        }
        self.free_remote(tag, t, (t & !63) as *mut SlabDesc, ptr, k)
    }

    pub(super) fn free_remote(
        &self,
        tag: &AtomicU64,
        t: u64,
        d: *mut SlabDesc,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        // SAFETY: type-stable descriptor (see `free`).
        let dr = unsafe { &*d };
        if !dr.enter(|| tag.load(Ordering::Relaxed) == t) {
            // Retired meanwhile: the object cannot have been live.
            return Err(FaultKind::NotAllocated);
        }
        let g = dr.geom.load(Ordering::Relaxed);
        let r = Self::index(dr, g, ptr, k).and_then(|idx| {
            let (push, fault) = dr.free_remote(idx);
            if push {
                let owner = geom_owner(g);
                if let Some(sh) = self.shared.get(owner) {
                    // SAFETY: we switched `pending` 0 -> 1; `d` stays valid.
                    unsafe { push_incoming(&sh.incoming, d) };
                }
            }
            fault.map_or(Ok(()), |f| Err(f.into()))
        });
        dr.leave();
        r
    }

    /// The object index of `ptr` in the slab, checked.
    #[inline(always)]
    pub(super) fn index(d: &SlabDesc, g: u64, ptr: *mut u8, k: usize) -> Result<u32, FaultKind> {
        if geom_size(g) as usize != SIZE_CLASSES[k] {
            return Err(FaultKind::WrongLayout);
        }
        let off = (ptr as u64).wrapping_sub(d.base.load(Ordering::Relaxed));
        let idx = (off * RECIP[k]) >> 32;
        if off >= (geom_nobj(g) as u64) * SIZE_CLASSES[k] as u64 {
            return Err(FaultKind::NotObjectStart);
        }
        if idx * SIZE_CLASSES[k] as u64 != off {
            return Err(FaultKind::NotObjectStart);
        }
        Ok(idx as u32)
    }
}
