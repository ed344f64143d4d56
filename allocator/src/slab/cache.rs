//! [`Slab`]: the per-CPU slab state and the object allocation and free
//! paths over the page caches.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::classes::{NR_CLASSES, SIZE_CLASSES, SLAB_RESERVE, objects, slab_order};
use super::descriptors::DescPool;
use super::fault::{Fault, FaultKind, FaultSink};
use super::remote::{SlabDesc, geom_nobj, geom_size, next_incoming, take_incoming};
use crate::cpu::CpuLocal;
use crate::cpu::per_cpu::{CpuInit, PerCpu};
use crate::pcp::PageCaches;
use crate::pcp::tags::{TAG_INTERNAL, TAG_KIND, TAG_NONE, TAG_SLAB};
use crate::types::{PAGE_SIZE, PhysAddr, PhysMap};

/// One CPU's state for one size class. `base`/`span` mirror the current
/// slab (virtual address of object 0, `objects * size` bytes; `span == 0`
/// without one), so that a free into the current slab is recognised by one
/// subtraction and comparison, without the page-tag lookup (SLUB's
/// `slab == c->slab` fast path).
#[derive(Copy, Clone)]
pub(super) struct ClassState {
    pub(super) cur: *mut SlabDesc,
    pub(super) base: u64,
    pub(super) span: u64,
    partial: *mut SlabDesc,
    nempty: u32,
}

impl ClassState {
    /// Makes `d` (null, or a live descriptor of this CPU whose class is
    /// this one) the current slab.
    #[inline(always)]
    fn set_cur(&mut self, d: *mut SlabDesc) {
        self.cur = d;
        if d.is_null() {
            (self.base, self.span) = (0, 0);
        } else {
            // SAFETY: the caller's contract: a live descriptor.
            let d = unsafe { &*d };
            let g = d.geom.load(Ordering::Relaxed);
            self.base = d.base.load(Ordering::Relaxed);
            self.span = geom_nobj(g) as u64 * geom_size(g) as u64;
        }
    }
}

/// One CPU's slab state.
pub(crate) struct CpuSlab {
    pub(super) classes: [ClassState; NR_CLASSES],
    spare: *mut SlabDesc,
}

// SAFETY: the pointers are owner-private links to type-stable descriptors;
// PerCpu serialises every access to a CpuSlab.
unsafe impl Send for CpuSlab {}

impl CpuInit for CpuSlab {
    const INIT: Self = CpuSlab {
        classes: [ClassState {
            cur: core::ptr::null_mut(),
            base: 0,
            span: 0,
            partial: core::ptr::null_mut(),
            nempty: 0,
        }; NR_CLASSES],
        spare: core::ptr::null_mut(),
    };
}

#[repr(align(128))]
pub(super) struct Shared {
    /// Descriptors with remote frees for this CPU to collect.
    pub(super) incoming: AtomicPtr<SlabDesc>,
    /// Pages in this CPU's slabs (owner-written).
    slab_pages: AtomicU64,
}

/// The slab layer: per-CPU slab state over a [`PageCaches`].
pub(crate) struct Slab<P: CpuLocal, const N: usize> {
    pub(super) cpus: PerCpu<CpuSlab, N>,
    pub(super) shared: [Shared; N],
    /// Bad frees; the slab itself reports remote double frees it finds
    /// while collecting.
    pub(crate) faults: FaultSink,
    /// Where descriptors come from.
    pub(crate) descs: DescPool,
    _p: core::marker::PhantomData<fn() -> P>,
}

/// Descriptors a CPU takes from the pool at a time.
const DESC_BATCH: usize = 8;

impl<P: CpuLocal, const N: usize> Slab<P, N> {
    pub(crate) const fn new() -> Self {
        Slab {
            cpus: PerCpu::new(),
            shared: [const {
                Shared {
                    incoming: AtomicPtr::new(core::ptr::null_mut()),
                    slab_pages: AtomicU64::new(0),
                }
            }; N],
            faults: FaultSink::new(),
            descs: DescPool::new(),
            _p: core::marker::PhantomData,
        }
    }

    /// Pages in slabs, all CPUs.
    pub(crate) fn pages(&self) -> u64 {
        self.shared
            .iter()
            .map(|x| x.slab_pages.load(Ordering::Relaxed))
            .sum()
    }

    fn bump(c: &AtomicU64, by: i64) {
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(by as u64),
            Ordering::Relaxed,
        );
    }

    /// Allocates an object of class `k` on the current CPU. `None`: the
    /// CPU id is out of range; `Some(null)`: out of memory.
    ///
    /// One masked section. The fast path takes an object from the hint
    /// word of this CPU's current slab; everything else is `alloc_slow`.
    #[inline]
    pub(crate) fn alloc(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        k: usize,
    ) -> Option<*mut u8> {
        self.cpus.local::<P, _>(|cpu, cs| {
            let c = &cs.classes[k];
            if !c.cur.is_null() {
                // SAFETY: `cur` is a live descriptor owned by this CPU, and
                // we are in this CPU's masked section.
                if let Some(i) = unsafe { (*c.cur).alloc_hint() } {
                    return (c.base + i as u64 * SIZE_CLASSES[k] as u64) as *mut u8;
                }
            }
            self.alloc_slow(frames, map, cpu, cs, k)
        })
    }

    /// The allocation fast path on its own: an object from the hint word
    /// of this CPU's current slab of class `k`, in one masked section, or
    /// `None` (nothing changed; use [`alloc`](Self::alloc)). Small enough
    /// to inline without spilling registers.
    #[inline(always)]
    pub(crate) fn alloc_fast(&self, k: usize) -> Option<*mut u8> {
        self.cpus
            .local::<P, _>(|_, cs| {
                let c = &cs.classes[k];
                if c.cur.is_null() {
                    return None;
                }
                // SAFETY: `cur` is a live descriptor owned by this CPU, and
                // we are in this CPU's masked section.
                let i = unsafe { (*c.cur).alloc_hint() }?;
                Some((c.base + i as u64 * SIZE_CLASSES[k] as u64) as *mut u8)
            })
            .flatten()
    }

    #[inline(never)]
    fn alloc_slow(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        cpu: usize,
        cs: &mut CpuSlab,
        k: usize,
    ) -> *mut u8 {
        self.collect_incoming(frames, cpu, cs);
        loop {
            let cur = cs.classes[k].cur;
            if !cur.is_null() {
                // SAFETY: a live descriptor of this CPU, in its masked section.
                let d = unsafe { &*cur };
                // SAFETY: as above.
                if let Some(i) = unsafe { d.alloc_obj() } {
                    let base = d.base.load(Ordering::Relaxed);
                    return (base + i as u64 * SIZE_CLASSES[k] as u64) as *mut u8;
                }
            }
            let p = cs.classes[k].partial;
            if !p.is_null() {
                // SAFETY: on this CPU's partial list: live and owned by us.
                unsafe {
                    Self::unlist(cs, p);
                    if (*p).own().inuse == 0 {
                        cs.classes[k].nempty -= 1;
                    }
                }
                cs.classes[k].set_cur(p);
                continue;
            }
            let d = self.new_slab(frames, map, cpu, cs, k);
            if d.is_null() {
                return core::ptr::null_mut();
            }
            cs.classes[k].set_cur(d);
        }
    }

    /// A fresh slab of class `k` owned by `cpu`, tagged and ready.
    fn new_slab(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        cpu: usize,
        cs: &mut CpuSlab,
        k: usize,
    ) -> *mut SlabDesc {
        if cs.spare.is_null() && !self.grow_descs(cs) {
            return core::ptr::null_mut();
        }
        let size = SIZE_CLASSES[k];
        let order = slab_order(size);
        // Tagged as the slab's own until the slab tags replace it.
        let Ok(phys) = frames.alloc_as::<TAG_INTERNAL>(order as usize) else {
            return core::ptr::null_mut();
        };
        let d = cs.spare;
        // SAFETY: spare descriptors are owned by this CPU and unused.
        unsafe {
            let own = (*d).own();
            cs.spare = own.next;
            own.next = core::ptr::null_mut();
            own.prev = core::ptr::null_mut();
            own.listed = false;
            own.class = k as u8;
            own.order = order as u8;
            own.phys = phys.0;
            (*d).init(
                map.virt(phys) as u64,
                size as u32,
                objects(size) as u32,
                cpu,
            );
        }
        let t = d as u64 | TAG_SLAB;
        for i in 0..1u64 << order {
            if let Some(tag) = frames.tags.prepare(phys.0 + i * PAGE_SIZE) {
                tag.store(t, Ordering::Release);
            }
        }
        Self::bump(&self.shared[cpu].slab_pages, 1 << order);
        d
    }

    /// Takes a few descriptors from the pool onto this CPU's spare list;
    /// `false` if the pool is used up.
    #[cold]
    fn grow_descs(&self, cs: &mut CpuSlab) -> bool {
        for _ in 0..DESC_BATCH {
            let Some(d) = self.descs.take() else {
                break;
            };
            // SAFETY: a fresh descriptor, ours alone (DescPool::take).
            unsafe { (*d).own().next = cs.spare };
            cs.spare = d;
        }
        !cs.spare.is_null()
    }

    /// Removes `d` from its class's partial list.
    ///
    /// # Safety
    /// `d` is a live descriptor of this CPU on its partial list.
    unsafe fn unlist(cs: &mut CpuSlab, d: *mut SlabDesc) {
        // SAFETY: the caller's contract; links point to descriptors of the
        // same list.
        unsafe {
            let own = (*d).own();
            let (prev, next) = (own.prev, own.next);
            if prev.is_null() {
                cs.classes[own.class as usize].partial = next;
            } else {
                (*prev).own().next = next;
            }
            if !next.is_null() {
                (*next).own().prev = prev;
            }
            let own = (*d).own();
            own.prev = core::ptr::null_mut();
            own.next = core::ptr::null_mut();
            own.listed = false;
        }
    }

    /// After objects of `d` were freed (in use: `was` -> `now`): list it,
    /// count it empty, retire it beyond the reserve (`reserve`).
    ///
    /// # Safety
    /// `d` is a live descriptor of `cpu`, we are in `cpu`'s masked section.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn after_free(
        &self,
        frames: &PageCaches<P, N>,
        cpu: usize,
        cs: &mut CpuSlab,
        d: *mut SlabDesc,
        was: u32,
        now: u32,
        reserve: u32,
    ) {
        // SAFETY: the caller's contract.
        let own = unsafe { (*d).own() };
        let k = own.class as usize;
        if cs.classes[k].cur == d {
            return;
        }
        if !own.listed {
            own.listed = true;
            own.prev = core::ptr::null_mut();
            own.next = cs.classes[k].partial;
            if !own.next.is_null() {
                // SAFETY: list members are live descriptors of this CPU.
                unsafe { (*own.next).own().prev = d };
            }
            cs.classes[k].partial = d;
        }
        if now == 0 {
            if was != 0 {
                cs.classes[k].nempty += 1;
            }
            if cs.classes[k].nempty > reserve {
                // SAFETY: forwarded.
                unsafe { self.retire(frames, cpu, cs, d) };
            }
        }
    }

    /// Gives empty, listed slab `d` back to the page caches, unless a
    /// remote free is in the way (then it stays, and is retried after the
    /// owner collects it).
    ///
    /// # Safety
    /// As for `after_free`; `d` is empty and on the partial list.
    unsafe fn retire(
        &self,
        frames: &PageCaches<P, N>,
        cpu: usize,
        cs: &mut CpuSlab,
        d: *mut SlabDesc,
    ) {
        // SAFETY: the caller's contract.
        let dr = unsafe { &*d };
        if !dr.may_retire() {
            return;
        }
        // SAFETY: the caller's contract.
        let (phys, order, k) = unsafe {
            let own = dr.own();
            (own.phys, own.order as u32, own.class as usize)
        };
        let pages = 1u64 << order;
        for i in 0..pages {
            if let Some(tag) = frames.tags.get(phys + i * PAGE_SIZE) {
                let t = if i == 0 { TAG_INTERNAL } else { TAG_NONE };
                tag.store(t, Ordering::Relaxed);
            }
        }
        if !dr.finish_retire() {
            let t = d as u64 | TAG_SLAB;
            for i in 0..pages {
                if let Some(tag) = frames.tags.get(phys + i * PAGE_SIZE) {
                    tag.store(t, Ordering::Release);
                }
            }
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { Self::unlist(cs, d) };
        cs.classes[k].nempty -= 1;
        // Tagged as the slab's own block of this order just above.
        let _ = frames.free_as::<false, TAG_INTERNAL>(PhysAddr(phys), order as usize);
        Self::bump(&self.shared[cpu].slab_pages, -(pages as i64));
        // SAFETY: the descriptor is unused now and owned by this CPU.
        unsafe { dr.own().next = cs.spare };
        cs.spare = d;
    }

    /// Folds in every remote free queued for `cpu`.
    fn collect_incoming(&self, frames: &PageCaches<P, N>, cpu: usize, cs: &mut CpuSlab) {
        self.collect_with_reserve(frames, cpu, cs, SLAB_RESERVE)
    }

    fn collect_with_reserve(
        &self,
        frames: &PageCaches<P, N>,
        cpu: usize,
        cs: &mut CpuSlab,
        reserve: u32,
    ) {
        let mut d = take_incoming(&self.shared[cpu].incoming);
        while !d.is_null() {
            // SAFETY: `d` is on the list we just took; read its link before
            // collecting it (collecting lets it be queued again).
            let next = unsafe { next_incoming(d) };
            // SAFETY: queued descriptors are live (a queued one is never
            // retired) and owned by this CPU; we are in its masked section.
            unsafe {
                let was = (*d).own().inuse;
                let now = (*d).collect(|i| self.report_late(d, i));
                self.after_free(frames, cpu, cs, d, was, now, reserve);
            }
            d = next;
        }
    }

    /// Reports object `idx` of `d` as a double free found by collecting
    /// (the remote free that made it could not see it).
    #[cold]
    fn report_late(&self, d: *const SlabDesc, idx: u32) {
        // SAFETY: `d` is a live descriptor (collect is running on it).
        let (base, g) = unsafe {
            (
                (*d).base.load(Ordering::Relaxed),
                (*d).geom.load(Ordering::Relaxed),
            )
        };
        self.faults.report(Fault {
            kind: FaultKind::DoubleFree,
            addr: (base + idx as u64 * geom_size(g) as u64) as usize,
        });
    }

    /// Runs on `cpu` (as that CPU): collects its remote frees and gives
    /// every empty slab back (no reserve).
    fn trim_cpu(&self, frames: &PageCaches<P, N>, cpu: usize, cs: &mut CpuSlab) {
        self.collect_with_reserve(frames, cpu, cs, 0);
        for k in 0..NR_CLASSES {
            // The current slab too, if it is empty.
            let cur = cs.classes[k].cur;
            // SAFETY: live descriptor of this CPU, in its masked section.
            if !cur.is_null() && unsafe { (*cur).own().inuse } == 0 {
                cs.classes[k].set_cur(core::ptr::null_mut());
                // SAFETY: as above; now not current, so it gets listed.
                unsafe { self.after_free(frames, cpu, cs, cur, 1, 0, 0) };
            }
            let mut d = cs.classes[k].partial;
            while !d.is_null() {
                // SAFETY: list members are live descriptors of this CPU.
                let (next, empty) = unsafe { ((*d).own().next, (*d).own().inuse == 0) };
                if empty {
                    // SAFETY: empty and listed.
                    unsafe { self.retire(frames, cpu, cs, d) };
                }
                d = next;
            }
        }
    }

    /// Trims every CPU through `run_on`; whether every CPU was reached.
    pub(crate) fn trim_all(&self, frames: &PageCaches<P, N>) -> bool {
        let mut all = true;
        for cpu in 0..N {
            match self
                .cpus
                .on::<P, _>(cpu, |cs| self.trim_cpu(frames, cpu, cs))
            {
                Some(()) => {}
                None => all = false,
            }
        }
        all
    }

    /// Whether the object at `ptr` (class `k`) is currently free in its
    /// owner's view (test support).
    pub(crate) fn is_free(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
        k: usize,
    ) -> Option<bool> {
        let t = frames.tags.get(map.phys(ptr).0)?.load(Ordering::Acquire);
        if t & TAG_KIND != TAG_SLAB {
            return None;
        }
        // SAFETY: type-stable descriptor.
        let d = unsafe { &*((t & !63) as *const SlabDesc) };
        let idx = Self::index(d, d.geom.load(Ordering::Relaxed), ptr, k).ok()?;
        Some(d.is_free(idx))
    }
}
