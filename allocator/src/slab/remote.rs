//! Slab descriptors and the lock-free remote free protocol.
//!
//! A slab belongs to one CPU (its owner), which allocates from it and
//! frees into it with plain loads and stores on its bitmaps. Another CPU
//! frees an object by setting the object's bit in the `remote` bitmap with
//! an atomic OR and, if it is the first such free since the owner last
//! looked, pushing the descriptor onto the owner's incoming list. The owner
//! folds remote bits back into `free` when it pops that list. Nobody takes
//! a lock.
//!
//! Per object the state is (`free` bit, `remote` bit):
//! - `(0, 0)`: live (handed out);
//! - `(1, 0)`: free in the slab;
//! - `(0, 1)`: freed remotely, not yet collected;
//! - `(1, 1)`: a remote double free that raced the owner collecting the
//!   first free (a remote free of an object already free before it started
//!   is rejected without a change), parked until the owner collects it,
//!   reports it and drops it; the owner never hands out an object whose
//!   remote bit is set.
//!
//! Retiring an empty slab races with remote frees that already read the
//! slab's page tag: a remote free announces itself in `inflight` and then
//! re-reads the tag; the owner clears the tag, waits for `inflight` to drop
//! to zero, and retires only if the descriptor is not queued (`pending`).
//! Descriptors are never returned to the page allocator (type-stable), so a
//! late reader touches a descriptor, never unrelated memory.
//!
//! Model-checked with loom (`loom_tests.rs`).

use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering, UnsafeCell, fence, spin_loop};

/// Most objects in one slab.
pub(crate) const MAX_OBJS: usize = 512;
/// Bitmap words per slab.
pub(crate) const WORDS: usize = MAX_OBJS / 64;

/// Why a free was refused.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum BitFault {
    /// The object is already free (or already freed remotely).
    DoubleFree,
}

/// The owner's private part of a descriptor.
pub(crate) struct OwnerState {
    /// Objects not free in the owner's view (live or remotely freed but
    /// not collected yet).
    pub(crate) inuse: u32,
    /// First bitmap word that may have a free bit.
    pub(crate) hint: u32,
    /// Links of the owner's partial list (or its spare-descriptor list).
    pub(crate) prev: *mut SlabDesc,
    pub(crate) next: *mut SlabDesc,
    /// On the partial list.
    pub(crate) listed: bool,
    /// Size class index, slab order, physical address of the first page.
    pub(crate) class: u8,
    pub(crate) order: u8,
    pub(crate) phys: u64,
}

/// A slab descriptor. Lives outside the slab's memory (in descriptor pages)
/// and is found through the per-page tags, never through anything stored
/// in object memory.
#[repr(C, align(64))]
pub(crate) struct SlabDesc {
    free: [AtomicU64; WORDS],
    remote: [AtomicU64; WORDS],
    /// 1 while the descriptor is on its owner's incoming list.
    pending: AtomicU32,
    /// Remote frees currently working on this descriptor.
    inflight: AtomicU32,
    /// Link of the owner's incoming list.
    next_in: AtomicPtr<SlabDesc>,
    /// Virtual address of object 0. Written before the slab is tagged.
    pub(crate) base: AtomicU64,
    /// Object size (bits 0..32), object count (32..48), owner CPU (48..64).
    pub(crate) geom: AtomicU64,
    own: UnsafeCell<OwnerState>,
}

// SAFETY: the atomics are shared; `own` is only touched by the owner CPU
// (inside its masked sections), which serialises those accesses.
unsafe impl Sync for SlabDesc {}
// SAFETY: as above; the raw pointers in OwnerState are owner-private links.
unsafe impl Send for SlabDesc {}

#[inline(always)]
pub(crate) const fn geom(size: u32, nobj: u32, owner: usize) -> u64 {
    size as u64 | ((nobj as u64) << 32) | ((owner as u64 & 0xffff) << 48)
}

#[inline(always)]
pub(crate) const fn geom_size(geom: u64) -> u32 {
    geom as u32
}

#[inline(always)]
pub(crate) const fn geom_nobj(geom: u64) -> u32 {
    (geom >> 32) as u32 & 0xffff
}

#[inline(always)]
pub(crate) const fn geom_owner(geom: u64) -> usize {
    (geom >> 48) as usize
}

impl SlabDesc {
    /// A blank descriptor (written into descriptor memory before first use).
    pub(crate) fn blank() -> Self {
        SlabDesc {
            free: core::array::from_fn(|_| AtomicU64::new(0)),
            remote: core::array::from_fn(|_| AtomicU64::new(0)),
            pending: AtomicU32::new(0),
            inflight: AtomicU32::new(0),
            next_in: AtomicPtr::new(core::ptr::null_mut()),
            base: AtomicU64::new(0),
            geom: AtomicU64::new(0),
            own: UnsafeCell::new(OwnerState {
                inuse: 0,
                hint: 0,
                prev: core::ptr::null_mut(),
                next: core::ptr::null_mut(),
                listed: false,
                class: 0,
                order: 0,
                phys: 0,
            }),
        }
    }

    /// Owner only: the private part.
    ///
    /// # Safety
    /// The caller is the owner CPU inside a masked section (or the only
    /// user of the descriptor), and holds no other reference from `own`.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn own(&self) -> &mut OwnerState {
        // SAFETY: the caller's contract makes this the only access.
        self.own.with_mut(|p| unsafe { &mut *p })
    }

    /// Owner only: (re)initialises an unused descriptor for a slab of
    /// `nobj` objects of `size` bytes at virtual `base`, owned by `owner`.
    /// Must happen before the slab's pages are tagged (release) with it.
    ///
    /// # Safety
    /// As for [`own`](Self::own); the descriptor is not in use by any slab.
    pub(crate) unsafe fn init(&self, base: u64, size: u32, nobj: u32, owner: usize) {
        debug_assert!(nobj as usize <= MAX_OBJS && nobj > 0);
        for word in 0..WORDS {
            let lo = word as u32 * 64;
            let bits = if nobj >= lo + 64 {
                u64::MAX
            } else if nobj > lo {
                (1u64 << (nobj - lo)) - 1
            } else {
                0
            };
            self.free[word].store(bits, Ordering::Relaxed);
            self.remote[word].store(0, Ordering::Relaxed);
        }
        self.base.store(base, Ordering::Relaxed);
        self.geom.store(geom(size, nobj, owner), Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        let own = unsafe { self.own() };
        own.inuse = 0;
        own.hint = 0;
    }

    /// Owner only: takes a free object (lowest index first); `None` if the
    /// slab has none (in the owner's view).
    ///
    /// # Safety
    /// As for [`own`](Self::own).
    #[inline(always)]
    pub(crate) unsafe fn alloc_obj(&self) -> Option<u32> {
        // SAFETY: forwarded from the caller.
        let own = unsafe { self.own() };
        let mut word = own.hint as usize;
        while word < WORDS {
            let free_bits = self.free[word].load(Ordering::Relaxed);
            if free_bits != 0 {
                let avail = free_bits & !self.remote[word].load(Ordering::Relaxed);
                if avail != 0 {
                    let bit = avail.trailing_zeros();
                    self.free[word].store(free_bits & !(1u64 << bit), Ordering::Relaxed);
                    own.inuse += 1;
                    own.hint = word as u32;
                    return Some(word as u32 * 64 + bit);
                }
            }
            word += 1;
        }
        own.hint = WORDS as u32;
        None
    }

    /// Owner only: [`alloc_obj`](Self::alloc_obj) restricted to the hint
    /// word (the allocation fast path); `None` if that word has no free
    /// object, and then nothing changed.
    ///
    /// # Safety
    /// As for [`own`](Self::own).
    #[inline(always)]
    pub(crate) unsafe fn alloc_hint(&self) -> Option<u32> {
        // SAFETY: forwarded from the caller.
        let own = unsafe { self.own() };
        let word = own.hint as usize;
        let free_bits = self.free.get(word)?.load(Ordering::Relaxed);
        let avail = free_bits & !self.remote[word].load(Ordering::Relaxed);
        if avail == 0 {
            return None;
        }
        let bit = avail.trailing_zeros();
        self.free[word].store(free_bits & !(1u64 << bit), Ordering::Relaxed);
        own.inuse += 1;
        Some(word as u32 * 64 + bit)
    }

    /// Owner only: frees object `idx` (< the object count); returns the
    /// number of objects still in use.
    ///
    /// # Safety
    /// As for [`own`](Self::own).
    #[inline(always)]
    pub(crate) unsafe fn free_local(&self, idx: u32) -> Result<u32, BitFault> {
        let (word, bit) = ((idx / 64) as usize, 1u64 << (idx % 64));
        let free_bits = self.free[word].load(Ordering::Relaxed);
        if free_bits & bit != 0 || self.remote[word].load(Ordering::Acquire) & bit != 0 {
            return Err(BitFault::DoubleFree);
        }
        self.free[word].store(free_bits | bit, Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        let own = unsafe { self.own() };
        own.inuse -= 1;
        own.hint = own.hint.min(word as u32);
        Ok(own.inuse)
    }

    /// Remote side, step 1: announces a remote free and re-validates the
    /// caller's lookup (`still_tagged` re-reads the page tag; any ordering). `false`: the
    /// slab was retired meanwhile; nothing was changed.
    #[inline]
    pub(crate) fn enter(&self, still_tagged: impl FnOnce() -> bool) -> bool {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        // Dekker with `finish_retire`: our increment or the owner's tag
        // clearing is seen by the other side (SeqCst fences on both sides).
        fence(Ordering::SeqCst);
        if still_tagged() {
            true
        } else {
            self.inflight.fetch_sub(1, Ordering::Release);
            false
        }
    }

    /// Remote side, step 3: done with the descriptor.
    #[inline]
    pub(crate) fn leave(&self) {
        self.inflight.fetch_sub(1, Ordering::Release);
    }

    /// Remote side, step 2 (between `enter` and `leave`): frees object
    /// `idx`. Returns whether the caller must push the descriptor onto the
    /// owner's incoming list, and the fault if this was a double free.
    #[inline]
    pub(crate) fn free_remote(&self, idx: u32) -> (bool, Option<BitFault>) {
        let (word, bit) = ((idx / 64) as usize, 1u64 << (idx % 64));
        // The free bit is checked *before* our remote bit is published:
        // once it is, the owner may collect it at any moment (the
        // descriptor may already be on its incoming list from an earlier
        // remote free) and set the free bit itself, so a check after the
        // OR would report this very free as a double free. Only the owner
        // sets free bits; a free of an already free object is ordered
        // after the free that made it free (or it races, see the module
        // documentation), so this acquire load sees that bit.
        if self.free[word].load(Ordering::Acquire) & bit != 0 {
            return (false, Some(BitFault::DoubleFree));
        }
        let old = self.remote[word].fetch_or(bit, Ordering::AcqRel);
        if old & bit != 0 {
            // Already freed remotely and not collected: the earlier free
            // queued the descriptor.
            return (false, Some(BitFault::DoubleFree));
        }
        // Always an RMW: either we queue the descriptor, or the owner's
        // later swap to 0 synchronises with us and sees our bit.
        let push = self.pending.swap(1, Ordering::AcqRel) == 0;
        (push, None)
    }

    /// Owner only: folds remotely freed objects back into the free bitmap.
    /// Returns the objects still in use. `dup(idx)` is called for each
    /// object whose remote bit was set while it was already free: a remote
    /// double free that raced the owner collecting the first free (the
    /// remote side could not see it). It is not folded in twice.
    ///
    /// # Safety
    /// As for [`own`](Self::own).
    pub(crate) unsafe fn collect(&self, mut dup: impl FnMut(u32)) -> u32 {
        // First: a remote free that comes later queues the descriptor again.
        self.pending.swap(0, Ordering::AcqRel);
        let mut freed = 0;
        for word in 0..WORDS {
            let remote_bits = self.remote[word].load(Ordering::Acquire);
            if remote_bits == 0 {
                continue;
            }
            let free_bits = self.free[word].load(Ordering::Relaxed);
            freed += (remote_bits & !free_bits).count_ones();
            // Free bits first, then clear the remote bits (release): a
            // remote free that sees the cleared bit also sees the free bit.
            self.free[word].store(free_bits | remote_bits, Ordering::Relaxed);
            self.remote[word].fetch_and(!remote_bits, Ordering::AcqRel);
            let mut doubles = remote_bits & free_bits;
            while doubles != 0 {
                dup(word as u32 * 64 + doubles.trailing_zeros());
                doubles &= doubles - 1;
            }
        }
        // SAFETY: forwarded from the caller.
        let own = unsafe { self.own() };
        own.inuse -= freed;
        own.hint = 0;
        own.inuse
    }

    /// Owner only, retiring step 1: `false` if the descriptor is queued on
    /// the incoming list (retire later, after collecting it).
    #[inline]
    pub(crate) fn may_retire(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Owner only, retiring step 2, after the slab's tags were cleared:
    /// waits for in-flight remote frees, then `true` if the
    /// descriptor may be reused (`false`: a remote free queued it
    /// meanwhile; re-tag the slab and retire it after collecting).
    pub(crate) fn finish_retire(&self) -> bool {
        fence(Ordering::SeqCst);
        while self.inflight.load(Ordering::Acquire) != 0 {
            spin_loop();
        }
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Whether object `idx` is free in the owner's view (for checks).
    pub(crate) fn is_free(&self, idx: u32) -> bool {
        self.free[(idx / 64) as usize].load(Ordering::Relaxed) & (1u64 << (idx % 64)) != 0
    }
}

/// Pushes `desc` onto an incoming list (any CPU).
///
/// # Safety
/// `desc` points to a live descriptor whose `pending` this caller just
/// switched from 0 to 1 (so nobody else links it now).
#[inline]
pub(crate) unsafe fn push_incoming(head: &AtomicPtr<SlabDesc>, desc: *mut SlabDesc) {
    let mut seen = head.load(Ordering::Relaxed);
    loop {
        // SAFETY: the caller's contract: `desc` is valid and only we link it.
        unsafe { (*desc).next_in.store(seen, Ordering::Relaxed) };
        match head.compare_exchange_weak(seen, desc, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(cur) => seen = cur,
        }
    }
}

/// Owner only: takes the whole incoming list (no ABA: the list is taken
/// whole, never popped one by one).
#[inline]
pub(crate) fn take_incoming(head: &AtomicPtr<SlabDesc>) -> *mut SlabDesc {
    if head.load(Ordering::Relaxed).is_null() {
        return core::ptr::null_mut();
    }
    head.swap(core::ptr::null_mut(), Ordering::Acquire)
}

/// The next descriptor of a list returned by [`take_incoming`]. Read it
/// *before* collecting `desc` (collecting lets remote frees queue `desc` again).
///
/// # Safety
/// `desc` is on a list taken by [`take_incoming`] and not yet collected.
#[inline]
pub(crate) unsafe fn next_incoming(desc: *mut SlabDesc) -> *mut SlabDesc {
    // SAFETY: the caller's contract.
    unsafe { (*desc).next_in.load(Ordering::Relaxed) }
}
