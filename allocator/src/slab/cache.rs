//! [`Slab`]: the per-CPU slab state and the object allocation and free
//! paths over the page caches.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::classes::{NR_CLASSES, SIZE_CLASSES, SLAB_RESERVE, objects, slab_order};
use super::descriptors::DescPool;
use super::fault::{Fault, FaultKind, FaultSink};
use super::remote::{SlabDesc, geom_nobj, geom_size, next_incoming, take_incoming};
use crate::cpu::CpuLocal;
use crate::cpu::per_cpu::{CpuInit, PerCpu, add_owned};
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
    /// Makes `desc` (null, or a live descriptor of this CPU whose class is
    /// this one) the current slab.
    #[inline(always)]
    fn set_cur(&mut self, desc: *mut SlabDesc) {
        self.cur = desc;
        if desc.is_null() {
            (self.base, self.span) = (0, 0);
        } else {
            // SAFETY: the caller's contract: a live descriptor.
            let desc = unsafe { &*desc };
            let geom = desc.geom.load(Ordering::Relaxed);
            self.base = desc.base.load(Ordering::Relaxed);
            self.span = geom_nobj(geom) as u64 * geom_size(geom) as u64;
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

    /// Allocates an object of class `class` on the current CPU. `None`: the
    /// CPU id is out of range; `Some(null)`: out of memory.
    ///
    /// One masked section. The fast path takes an object from the hint
    /// word of this CPU's current slab; everything else is `alloc_slow`.
    #[inline]
    pub(crate) fn alloc(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        class: usize,
    ) -> Option<*mut u8> {
        self.cpus.local::<P, _>(|cpu, cpu_slab| {
            let class_state = &cpu_slab.classes[class];
            if !class_state.cur.is_null() {
                // SAFETY: `cur` is a live descriptor owned by this CPU, and
                // we are in this CPU's masked section.
                if let Some(i) = unsafe { (*class_state.cur).alloc_hint() } {
                    return (class_state.base + i as u64 * SIZE_CLASSES[class] as u64) as *mut u8;
                }
            }
            self.alloc_slow(frames, map, cpu, cpu_slab, class)
        })
    }

    /// The allocation fast path on its own: an object from the hint word
    /// of this CPU's current slab of class `class`, in one masked section, or
    /// `None` (nothing changed; use [`alloc`](Self::alloc)). Small enough
    /// to inline without spilling registers.
    #[inline(always)]
    pub(crate) fn alloc_fast(&self, class: usize) -> Option<*mut u8> {
        self.cpus
            .local::<P, _>(|_, cpu_slab| {
                let class_state = &cpu_slab.classes[class];
                if class_state.cur.is_null() {
                    return None;
                }
                // SAFETY: `cur` is a live descriptor owned by this CPU, and
                // we are in this CPU's masked section.
                let i = unsafe { (*class_state.cur).alloc_hint() }?;
                Some((class_state.base + i as u64 * SIZE_CLASSES[class] as u64) as *mut u8)
            })
            .flatten()
    }

    #[inline(never)]
    fn alloc_slow(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        cpu: usize,
        cpu_slab: &mut CpuSlab,
        class: usize,
    ) -> *mut u8 {
        self.collect_incoming(frames, cpu, cpu_slab);
        loop {
            let cur = cpu_slab.classes[class].cur;
            if !cur.is_null() {
                // SAFETY: a live descriptor of this CPU, in its masked section.
                let desc = unsafe { &*cur };
                // SAFETY: as above.
                if let Some(i) = unsafe { desc.alloc_obj() } {
                    let base = desc.base.load(Ordering::Relaxed);
                    return (base + i as u64 * SIZE_CLASSES[class] as u64) as *mut u8;
                }
            }
            let partial = cpu_slab.classes[class].partial;
            if !partial.is_null() {
                // SAFETY: on this CPU's partial list: live and owned by us.
                unsafe {
                    Self::unlist(cpu_slab, partial);
                    if (*partial).own().inuse == 0 {
                        cpu_slab.classes[class].nempty -= 1;
                    }
                }
                cpu_slab.classes[class].set_cur(partial);
                continue;
            }
            let desc = self.new_slab(frames, map, cpu, cpu_slab, class);
            if desc.is_null() {
                return core::ptr::null_mut();
            }
            cpu_slab.classes[class].set_cur(desc);
        }
    }

    /// A fresh slab of class `class` owned by `cpu`, tagged and ready.
    fn new_slab(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        cpu: usize,
        cpu_slab: &mut CpuSlab,
        class: usize,
    ) -> *mut SlabDesc {
        if cpu_slab.spare.is_null() && !self.grow_descs(cpu_slab) {
            return core::ptr::null_mut();
        }
        let size = SIZE_CLASSES[class];
        let order = slab_order(size);
        // Tagged as the slab's own until the slab tags replace it.
        let Ok(phys) = frames.alloc_as::<TAG_INTERNAL>(order as usize) else {
            return core::ptr::null_mut();
        };
        let desc = cpu_slab.spare;
        // SAFETY: spare descriptors are owned by this CPU and unused.
        unsafe {
            let own = (*desc).own();
            cpu_slab.spare = own.next;
            own.next = core::ptr::null_mut();
            own.prev = core::ptr::null_mut();
            own.listed = false;
            own.class = class as u8;
            own.order = order as u8;
            own.phys = phys.0;
            (*desc).init(
                map.virt(phys) as u64,
                size as u32,
                objects(size) as u32,
                cpu,
            );
        }
        let tag_value = desc as u64 | TAG_SLAB;
        for i in 0..1u64 << order {
            if let Some(tag) = frames.tags.prepare(phys.0 + i * PAGE_SIZE) {
                tag.store(tag_value, Ordering::Release);
            }
        }
        add_owned(&self.shared[cpu].slab_pages, 1 << order);
        desc
    }

    /// Takes a few descriptors from the pool onto this CPU's spare list;
    /// `false` if the pool is used up.
    #[cold]
    fn grow_descs(&self, cpu_slab: &mut CpuSlab) -> bool {
        for _ in 0..DESC_BATCH {
            let Some(desc) = self.descs.take() else {
                break;
            };
            // SAFETY: a fresh descriptor, ours alone (DescPool::take).
            unsafe { (*desc).own().next = cpu_slab.spare };
            cpu_slab.spare = desc;
        }
        !cpu_slab.spare.is_null()
    }

    /// Removes `desc` from its class's partial list.
    ///
    /// # Safety
    /// `desc` is a live descriptor of this CPU on its partial list.
    unsafe fn unlist(cpu_slab: &mut CpuSlab, desc: *mut SlabDesc) {
        // SAFETY: the caller's contract; links point to descriptors of the
        // same list.
        unsafe {
            let own = (*desc).own();
            let (prev, next) = (own.prev, own.next);
            if prev.is_null() {
                cpu_slab.classes[own.class as usize].partial = next;
            } else {
                (*prev).own().next = next;
            }
            if !next.is_null() {
                (*next).own().prev = prev;
            }
            let own = (*desc).own();
            own.prev = core::ptr::null_mut();
            own.next = core::ptr::null_mut();
            own.listed = false;
        }
    }

    /// After objects of `desc` were freed (in use: `was` -> `now`): list it,
    /// count it empty, retire it beyond the reserve (`reserve`).
    ///
    /// # Safety
    /// `desc` is a live descriptor of `cpu`, we are in `cpu`'s masked section.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn after_free(
        &self,
        frames: &PageCaches<P, N>,
        cpu: usize,
        cpu_slab: &mut CpuSlab,
        desc: *mut SlabDesc,
        was: u32,
        now: u32,
        reserve: u32,
    ) {
        // SAFETY: the caller's contract.
        let own = unsafe { (*desc).own() };
        let class = own.class as usize;
        if cpu_slab.classes[class].cur == desc {
            return;
        }
        if !own.listed {
            own.listed = true;
            own.prev = core::ptr::null_mut();
            own.next = cpu_slab.classes[class].partial;
            if !own.next.is_null() {
                // SAFETY: list members are live descriptors of this CPU.
                unsafe { (*own.next).own().prev = desc };
            }
            cpu_slab.classes[class].partial = desc;
        }
        if now == 0 {
            if was != 0 {
                cpu_slab.classes[class].nempty += 1;
            }
            if cpu_slab.classes[class].nempty > reserve {
                // SAFETY: forwarded.
                unsafe { self.retire(frames, cpu, cpu_slab, desc) };
            }
        }
    }

    /// Gives empty, listed slab `desc_ptr` back to the page caches, unless a
    /// remote free is in the way (then it stays, and is retried after the
    /// owner collects it).
    ///
    /// # Safety
    /// As for `after_free`; `desc_ptr` is empty and on the partial list.
    unsafe fn retire(
        &self,
        frames: &PageCaches<P, N>,
        cpu: usize,
        cpu_slab: &mut CpuSlab,
        desc_ptr: *mut SlabDesc,
    ) {
        // SAFETY: the caller's contract.
        let desc = unsafe { &*desc_ptr };
        if !desc.may_retire() {
            return;
        }
        // SAFETY: the caller's contract.
        let (phys, order, class) = unsafe {
            let own = desc.own();
            (own.phys, own.order as u32, own.class as usize)
        };
        let pages = 1u64 << order;
        for i in 0..pages {
            if let Some(tag) = frames.tags.get(phys + i * PAGE_SIZE) {
                let tag_value = if i == 0 { TAG_INTERNAL } else { TAG_NONE };
                tag.store(tag_value, Ordering::Relaxed);
            }
        }
        if !desc.finish_retire() {
            let tag_value = desc_ptr as u64 | TAG_SLAB;
            for i in 0..pages {
                if let Some(tag) = frames.tags.get(phys + i * PAGE_SIZE) {
                    tag.store(tag_value, Ordering::Release);
                }
            }
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { Self::unlist(cpu_slab, desc_ptr) };
        cpu_slab.classes[class].nempty -= 1;
        // Tagged as the slab's own block of this order just above.
        let _ = frames.free_as::<false, TAG_INTERNAL>(PhysAddr(phys), order as usize);
        add_owned(&self.shared[cpu].slab_pages, -(pages as i64));
        // SAFETY: the descriptor is unused now and owned by this CPU.
        unsafe { desc.own().next = cpu_slab.spare };
        cpu_slab.spare = desc_ptr;
    }

    /// Folds in every remote free queued for `cpu`.
    fn collect_incoming(&self, frames: &PageCaches<P, N>, cpu: usize, cpu_slab: &mut CpuSlab) {
        self.collect_with_reserve(frames, cpu, cpu_slab, SLAB_RESERVE)
    }

    fn collect_with_reserve(
        &self,
        frames: &PageCaches<P, N>,
        cpu: usize,
        cpu_slab: &mut CpuSlab,
        reserve: u32,
    ) {
        let mut desc = take_incoming(&self.shared[cpu].incoming);
        while !desc.is_null() {
            // SAFETY: `desc` is on the list we just took; read its link before
            // collecting it (collecting lets it be queued again).
            let next = unsafe { next_incoming(desc) };
            // SAFETY: queued descriptors are live (a queued one is never
            // retired) and owned by this CPU; we are in its masked section.
            unsafe {
                let was = (*desc).own().inuse;
                let now = (*desc).collect(|i| self.report_late(desc, i));
                self.after_free(frames, cpu, cpu_slab, desc, was, now, reserve);
            }
            desc = next;
        }
    }

    /// Reports object `idx` of `desc` as a double free found by collecting
    /// (the remote free that made it could not see it).
    #[cold]
    fn report_late(&self, desc: *const SlabDesc, idx: u32) {
        // SAFETY: `desc` is a live descriptor (collect is running on it).
        let (base, geom) = unsafe {
            (
                (*desc).base.load(Ordering::Relaxed),
                (*desc).geom.load(Ordering::Relaxed),
            )
        };
        self.faults.report(Fault {
            kind: FaultKind::DoubleFree,
            addr: (base + idx as u64 * geom_size(geom) as u64) as usize,
        });
    }

    /// Runs on `cpu` (as that CPU): collects its remote frees and gives
    /// every empty slab back (no reserve).
    fn trim_cpu(&self, frames: &PageCaches<P, N>, cpu: usize, cpu_slab: &mut CpuSlab) {
        self.collect_with_reserve(frames, cpu, cpu_slab, 0);
        for class in 0..NR_CLASSES {
            // The current slab too, if it is empty.
            let cur = cpu_slab.classes[class].cur;
            // SAFETY: live descriptor of this CPU, in its masked section.
            if !cur.is_null() && unsafe { (*cur).own().inuse } == 0 {
                cpu_slab.classes[class].set_cur(core::ptr::null_mut());
                // SAFETY: as above; now not current, so it gets listed.
                unsafe { self.after_free(frames, cpu, cpu_slab, cur, 1, 0, 0) };
            }
            let mut desc = cpu_slab.classes[class].partial;
            while !desc.is_null() {
                // SAFETY: list members are live descriptors of this CPU.
                let (next, empty) = unsafe { ((*desc).own().next, (*desc).own().inuse == 0) };
                if empty {
                    // SAFETY: empty and listed.
                    unsafe { self.retire(frames, cpu, cpu_slab, desc) };
                }
                desc = next;
            }
        }
    }

    /// Trims every CPU through `run_on`; whether every CPU was reached.
    pub(crate) fn trim_all(&self, frames: &PageCaches<P, N>) -> bool {
        let mut all = true;
        for cpu in 0..N {
            match self
                .cpus
                .on::<P, _>(cpu, |cpu_slab| self.trim_cpu(frames, cpu, cpu_slab))
            {
                Some(()) => {}
                None => all = false,
            }
        }
        all
    }

    /// Whether the object at `ptr` (class `class`) is currently free in its
    /// owner's view (test support).
    pub(crate) fn is_free(
        &self,
        frames: &PageCaches<P, N>,
        map: PhysMap,
        ptr: *mut u8,
        class: usize,
    ) -> Option<bool> {
        let tag = frames.tags.get(map.phys(ptr).0)?.load(Ordering::Acquire);
        if tag & TAG_KIND != TAG_SLAB {
            return None;
        }
        // SAFETY: type-stable descriptor.
        let desc = unsafe { &*((tag & !63) as *const SlabDesc) };
        let idx = Self::index(desc, desc.geom.load(Ordering::Relaxed), ptr, class).ok()?;
        Some(desc.is_free(idx))
    }
}
