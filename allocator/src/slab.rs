//! Slab allocation of small objects (8 B ..= 2 KiB) on top of the per-CPU
//! page caches.
//!
//! # Size classes
//! [`SIZE_CLASSES`]: 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
//! 768, 1024, 1536, 2048 — sixteen classes instead of the nine powers of
//! two. Every power of two from 32 up gets a 1.5x neighbour (48, 96, 192,
//! 384, 768, 1536), which caps the internal waste at 33% instead of 50%
//! (a 1100-byte object costs 1536 bytes, not 2048; a 40-byte one 48, not
//! 64), and 24 is added because 24-byte objects are everywhere in Rust
//! (`Vec`, `String`, three-word structs) and would otherwise cost 32. A
//! class aligns its objects to the largest power of two dividing its size
//! (24 -> 8, 48 -> 16, 96 -> 32, ...); a stricter alignment moves the
//! request up to the next class that provides it.
//!
//! # Slabs
//! A slab is one buddy block of order 0..=3 (from the per-CPU page cache),
//! the smallest order that holds at least 8 objects with at most 1/16 of
//! it wasted ([`slab_order`]). Its descriptor (free and remote-free
//! bitmaps, owner, counts) lives outside the slab, in registration
//! metadata that is never handed out (`desc_pool.rs`), and every page of
//! the slab is tagged with the descriptor's address in the allocator's
//! per-page tag table — nothing is ever looked up from memory a user was
//! given, so no user write, not even through a stale pointer, can forge or
//! corrupt it.
//!
//! # Per-CPU ownership
//! Each slab belongs to the CPU that created it. That CPU's current slab
//! per class is its object cache: allocating and freeing there are plain
//! bitmap loads and stores with interrupts masked. An object freed on
//! another CPU is returned to its owning slab without a lock (see
//! `remote.rs`): an atomic OR in the slab's remote bitmap, and the slab is
//! queued on the owner's incoming list, which the owner folds in on its
//! next slow path (or when drained).
//!
//! # Empty slabs
//! A slab left empty by local or (once collected) remote frees goes back to
//! the page caches, except for [`SLAB_RESERVE`] empty slabs per class and
//! CPU. A drain (on out of memory, or [`Heap::drain`](crate::Heap::drain))
//! returns the reserve too.
//!
//! # Checked frees
//! In release builds: an address outside every slab, a pointer that is not
//! the start of an object, a size class that differs from the slab's, and a
//! second free of the same object are all reported ([`Fault`]) and change
//! nothing. Two frees of one object racing on two CPUs at the same moment
//! are detected when they meet in the remote bitmap, but not if one of them
//! is the owner's local free (that would need an atomic RMW per free).

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::desc_pool::DescPool;
use crate::pcp::PageCaches;
use crate::percpu::{CpuInit, CpuLocal, PerCpu};
use crate::remote::{
    BitFault, MAX_OBJS, SlabDesc, geom_nobj, geom_owner, geom_size, next_incoming, push_incoming,
    take_incoming,
};
use crate::tags::{TAG_INTERNAL, TAG_KIND, TAG_NONE, TAG_SLAB};
use crate::types::{PAGE_SIZE, PhysAddr};

/// The object sizes, smallest first (see the module documentation).
///
/// ```
/// assert_eq!(allocator::SIZE_CLASSES[2], 24);
/// assert_eq!(*allocator::SIZE_CLASSES.last().unwrap(), allocator::MAX_SMALL_SIZE);
/// ```
pub const SIZE_CLASSES: [usize; NR_CLASSES] = [
    8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
];
/// Number of size classes.
pub const NR_CLASSES: usize = 16;
/// The largest size (and alignment) served by the slab; larger requests
/// get whole pages.
pub const MAX_SMALL_SIZE: usize = 2048;
/// Empty slabs each CPU keeps per size class instead of returning them.
pub const SLAB_RESERVE: u32 = 1;

/// Alignment a class guarantees: the largest power of two dividing its size
/// (0 for 0).
///
/// ```
/// assert_eq!(allocator::class_align(48), 16);
/// assert_eq!(allocator::class_align(2048), 2048);
/// ```
pub const fn class_align(size: usize) -> usize {
    if size == 0 {
        0
    } else {
        1 << size.trailing_zeros()
    }
}

/// The buddy order of a slab of objects of `size` bytes: the smallest
/// order `<= 3` giving at least 8 objects and at most 1/16 waste.
///
/// ```
/// assert_eq!(allocator::slab_order(8), 0);     // 512 objects in 4 KiB
/// assert_eq!(allocator::slab_order(768), 1);   // 10 objects in 8 KiB
/// assert_eq!(allocator::slab_order(1536), 2);  // 10 objects in 16 KiB
/// ```
pub const fn slab_order(size: usize) -> u32 {
    let mut o = 0;
    while o < 3 {
        let bytes = (PAGE_SIZE as usize) << o;
        let n = bytes / if size == 0 { 1 } else { size };
        if n >= 8 && bytes - n * size <= bytes / 16 {
            return o;
        }
        o += 1;
    }
    3
}

const fn objects(size: usize) -> usize {
    let n = ((PAGE_SIZE as usize) << slab_order(size)) / size;
    if n > MAX_OBJS { MAX_OBJS } else { n }
}

const LOOKUP: [u8; MAX_SMALL_SIZE / 8 + 1] = {
    let mut t = [0u8; MAX_SMALL_SIZE / 8 + 1];
    let mut i = 0;
    let mut c = 0;
    while i < t.len() {
        while SIZE_CLASSES[c] < i * 8 {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// ceil(2^32 / size): `(offset * RECIP) >> 32 == offset / size` for every
/// offset inside a slab (< 2^15), without a division.
const RECIP: [u64; NR_CLASSES] = {
    let mut t = [0u64; NR_CLASSES];
    let mut c = 0;
    while c < NR_CLASSES {
        t[c] = (1u64 << 32).div_ceil(SIZE_CLASSES[c] as u64);
        c += 1;
    }
    t
};

/// The size class for `size` bytes at alignment `align`, or `None` if the
/// request is too big for the slab.
///
/// ```
/// use allocator::{size_class, SIZE_CLASSES};
/// assert_eq!(SIZE_CLASSES[size_class(20, 8).unwrap()], 24);
/// assert_eq!(SIZE_CLASSES[size_class(20, 16).unwrap()], 32);   // 24 is only 8-aligned
/// assert_eq!(SIZE_CLASSES[size_class(1, 1024).unwrap()], 1024);
/// assert_eq!(size_class(2049, 8), None);
/// ```
#[inline(always)]
pub const fn size_class(size: usize, align: usize) -> Option<usize> {
    if size > MAX_SMALL_SIZE || align > MAX_SMALL_SIZE {
        return None;
    }
    let mut c = LOOKUP[size.div_ceil(8)] as usize;
    if align <= 8 {
        // Every class is a multiple of 8 bytes, so 8-aligned.
        return Some(c);
    }
    while class_align(SIZE_CLASSES[c]) < align {
        c += 1;
        if c == NR_CLASSES {
            return None;
        }
    }
    Some(c)
}

/// What kind of bad free was detected.
///
/// ```
/// let f = allocator::Fault { kind: allocator::FaultKind::DoubleFree, addr: 0x1000 };
/// assert_eq!(f.kind, allocator::FaultKind::DoubleFree);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum FaultKind {
    /// The object is already free.
    DoubleFree,
    /// The address is not in any slab (foreign, or its slab is gone).
    NotAllocated,
    /// The address is inside a slab but not at the start of an object.
    NotObjectStart,
    /// The layout's size class differs from the slab's.
    WrongLayout,
    /// A page-sized allocation was rejected by the page allocator.
    Page(crate::Error),
}

/// A bad free detected (and ignored) by the [`Heap`](crate::Heap).
///
/// ```
/// let f = allocator::Fault { kind: allocator::FaultKind::NotAllocated, addr: 8 };
/// assert_eq!(f.addr, 8);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Fault {
    /// What was wrong.
    pub kind: FaultKind,
    /// The address passed to the free.
    pub addr: usize,
}

/// Where detected bad frees go: a counter and an optional handler. Shared
/// by the heap (faults found when a free is made) and the slab (remote
/// double frees found only when the owner collects them).
pub(crate) struct FaultSink {
    faults: AtomicU64,
    handler: AtomicPtr<()>,
}

impl FaultSink {
    pub(crate) const fn new() -> Self {
        FaultSink {
            faults: AtomicU64::new(0),
            handler: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    pub(crate) fn set_handler(&self, f: fn(Fault)) {
        self.handler.store(f as *mut (), Ordering::Release);
    }

    /// Faults reported so far.
    pub(crate) fn count(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    #[cold]
    pub(crate) fn report(&self, f: Fault) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        let h = self.handler.load(Ordering::Acquire);
        if !h.is_null() {
            // SAFETY: `handler` only ever holds a `fn(Fault)` (set_handler).
            let h = unsafe { core::mem::transmute::<*mut (), fn(Fault)>(h) };
            h(f);
        }
    }
}

impl From<BitFault> for FaultKind {
    fn from(f: BitFault) -> Self {
        match f {
            BitFault::DoubleFree => FaultKind::DoubleFree,
        }
    }
}

/// One CPU's state for one size class. `base`/`span` mirror the current
/// slab (virtual address of object 0, `objects * size` bytes; `span == 0`
/// without one), so that a free into the current slab is recognised by one
/// subtraction and comparison, without the page-tag lookup (SLUB's
/// `slab == c->slab` fast path).
#[derive(Copy, Clone)]
struct ClassState {
    cur: *mut SlabDesc,
    base: u64,
    span: u64,
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
    classes: [ClassState; NR_CLASSES],
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
struct Shared {
    /// Descriptors with remote frees for this CPU to collect.
    incoming: AtomicPtr<SlabDesc>,
    /// Pages in this CPU's slabs (owner-written).
    slab_pages: AtomicU64,
}

/// The slab layer: per-CPU slab state over a [`PageCaches`].
pub(crate) struct Slab<P: CpuLocal, const N: usize> {
    cpus: PerCpu<CpuSlab, N>,
    shared: [Shared; N],
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
    pub(crate) fn alloc(&self, frames: &PageCaches<P, N>, off: u64, k: usize) -> Option<*mut u8> {
        self.cpus.local::<P, _>(|cpu, cs| {
            let c = &cs.classes[k];
            if !c.cur.is_null() {
                // SAFETY: `cur` is a live descriptor owned by this CPU, and
                // we are in this CPU's masked section.
                if let Some(i) = unsafe { (*c.cur).alloc_hint() } {
                    return (c.base + i as u64 * SIZE_CLASSES[k] as u64) as *mut u8;
                }
            }
            self.alloc_slow(frames, off, cpu, cs, k)
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
        off: u64,
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
            let d = self.new_slab(frames, off, cpu, cs, k);
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
        off: u64,
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
                phys.0.wrapping_add(off),
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
    unsafe fn after_free(
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
        off: u64,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let local = |saved: P::Saved, cpu: usize, cs: &mut CpuSlab| {
            let c = &cs.classes[k];
            let rel = (ptr as u64).wrapping_sub(c.base);
            if rel >= c.span {
                return self.free_tagged_ending(saved, frames, off, cpu, cs, ptr, k);
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
                .local_ending::<P, _>(local, || self.free_unowned(frames, off, ptr, k))
        }
    }

    /// `free_tagged`, then the end of the masked section `saved` came from.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn free_tagged_ending(
        &self,
        saved: P::Saved,
        frames: &PageCaches<P, N>,
        off: u64,
        cpu: usize,
        cs: &mut CpuSlab,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let r = self.free_tagged(frames, off, cpu, cs, ptr, k);
        P::restore(saved);
        r
    }

    /// `free` of an object outside the current slab, in `cpu`'s masked
    /// section: found through its page tag, local or remote.
    #[inline(always)]
    fn free_tagged(
        &self,
        frames: &PageCaches<P, N>,
        off: u64,
        cpu: usize,
        cs: &mut CpuSlab,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let phys = (ptr as u64).wrapping_sub(off);
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
    fn free_unowned(
        &self,
        frames: &PageCaches<P, N>,
        off: u64,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let s = P::save_and_disable();
        let r = self.free_unowned_masked(frames, off, ptr, k);
        P::restore(s);
        r
    }

    fn free_unowned_masked(
        &self,
        frames: &PageCaches<P, N>,
        off: u64,
        ptr: *mut u8,
        k: usize,
    ) -> Result<(), FaultKind> {
        let phys = (ptr as u64).wrapping_sub(off);
        let tag = frames.tags.get(phys).ok_or(FaultKind::NotAllocated)?;
        let t = tag.load(Ordering::Acquire);
        if t & TAG_KIND != TAG_SLAB {
            return Err(FaultKind::NotAllocated);
        }
        self.free_remote(tag, t, (t & !63) as *mut SlabDesc, ptr, k)
    }

    fn free_remote(
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
    fn index(d: &SlabDesc, g: u64, ptr: *mut u8, k: usize) -> Result<u32, FaultKind> {
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
        off: u64,
        ptr: *mut u8,
        k: usize,
    ) -> Option<bool> {
        let t = frames
            .tags
            .get((ptr as u64).wrapping_sub(off))?
            .load(Ordering::Acquire);
        if t & TAG_KIND != TAG_SLAB {
            return None;
        }
        // SAFETY: type-stable descriptor.
        let d = unsafe { &*((t & !63) as *const SlabDesc) };
        let idx = Self::index(d, d.geom.load(Ordering::Relaxed), ptr, k).ok()?;
        Some(d.is_free(idx))
    }
}
