//! An interrupt-safe spin-locked wrapper.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::buddy::BuddyAllocator;
use crate::cpu::InterruptControl;

/// A [`BuddyAllocator`] behind a spin lock that masks interrupts (through
/// `I`) for as long as it is held. `const`-constructible for a `static`.
///
/// ```
/// use framekeep::{BuddyAllocator, Constraint, LockedAllocator, NoInterrupts, PhysAddr};
/// static FRAMES: LockedAllocator<NoInterrupts> = LockedAllocator::new(BuddyAllocator::new());
/// FRAMES.lock().add_section_static(PhysAddr(1 << 32), 64, vec![0u64; 64].leak()).unwrap();
/// let f = FRAMES.alloc(0, Constraint::ANY).unwrap();
/// FRAMES.free(f, 0).unwrap();
/// ```
pub struct LockedAllocator<I: InterruptControl> {
    locked: AtomicBool,
    inner: UnsafeCell<BuddyAllocator>,
    _irq: PhantomData<fn() -> I>,
}

// SAFETY: access to `inner` is serialised by `locked` (acquire on lock,
// release on unlock); BuddyAllocator is Send.
unsafe impl<I: InterruptControl> Sync for LockedAllocator<I> {}

impl<I: InterruptControl> LockedAllocator<I> {
    /// Wraps an allocator.
    ///
    /// ```
    /// let l = framekeep::LockedAllocator::<framekeep::NoInterrupts>::new(
    ///     framekeep::BuddyAllocator::new());
    /// # let _ = l;
    /// ```
    pub const fn new(a: BuddyAllocator) -> Self {
        LockedAllocator {
            locked: AtomicBool::new(false),
            inner: UnsafeCell::new(a),
            _irq: PhantomData,
        }
    }

    /// Masks interrupts, then spins until the lock is free. Hold the guard
    /// for batches of operations (one acquisition for many frames).
    ///
    /// ```
    /// # use framekeep::*;
    /// let l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    /// let g = l.lock();
    /// assert!(l.try_lock().is_none());
    /// drop(g);
    /// assert!(l.try_lock().is_some());
    /// ```
    pub fn lock(&self) -> LockGuard<'_, I> {
        let saved = I::save_and_disable();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        LockGuard {
            lock: self,
            saved: Some(saved),
            _not_send: PhantomData,
        }
    }

    /// Like [`lock`](Self::lock) but gives up at once if the lock is held
    /// (interrupts are restored then).
    ///
    /// ```
    /// # use framekeep::*;
    /// let l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    /// assert!(l.try_lock().is_some());
    /// ```
    pub fn try_lock(&self) -> Option<LockGuard<'_, I>> {
        let saved = I::save_and_disable();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Some(LockGuard {
                lock: self,
                saved: Some(saved),
                _not_send: PhantomData,
            })
        } else {
            I::restore(saved);
            None
        }
    }

    /// [`BuddyAllocator::alloc`] under the lock.
    ///
    /// ```
    /// # use framekeep::*;
    /// let l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    /// assert_eq!(l.alloc(0, Constraint::ANY), Err(Error::OutOfMemory));
    /// ```
    pub fn alloc(
        &self,
        order: u32,
        constraint: crate::Constraint,
    ) -> Result<crate::PhysAddr, crate::Error> {
        self.lock().alloc(order, constraint)
    }

    /// [`BuddyAllocator::free`] under the lock.
    ///
    /// ```
    /// # use framekeep::*;
    /// let l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    /// assert_eq!(l.free(PhysAddr(0), 0), Err(Error::NotInSection));
    /// ```
    pub fn free(&self, addr: crate::PhysAddr, order: u32) -> Result<(), crate::Error> {
        self.lock().free(addr, order)
    }

    /// [`BuddyAllocator::stats`] under the lock.
    ///
    /// ```
    /// # use framekeep::*;
    /// let l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    /// assert_eq!(l.stats().free_pages(), 0);
    /// ```
    pub fn stats(&self) -> crate::Stats {
        self.lock().stats()
    }

    /// The allocator itself, without locking: `&mut self` proves exclusivity.
    ///
    /// ```
    /// # use framekeep::*;
    /// let mut l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
    /// assert_eq!(l.get_mut().stats().free_pages(), 0);
    /// ```
    pub fn get_mut(&mut self) -> &mut BuddyAllocator {
        self.inner.get_mut()
    }
}

/// Holds the lock (and the masked-interrupt state) of a [`LockedAllocator`];
/// dereferences to the [`BuddyAllocator`]. Unlocks, then restores
/// interrupts, on drop. Not `Send`: the interrupt state belongs to this CPU.
///
/// ```
/// # use framekeep::*;
/// let l = LockedAllocator::<NoInterrupts>::new(BuddyAllocator::new());
/// let mut g: LockGuard<'_, NoInterrupts> = l.lock();
/// g.set_reserve(Zone::Dma32, 10);
/// ```
pub struct LockGuard<'a, I: InterruptControl> {
    lock: &'a LockedAllocator<I>,
    saved: Option<I::Saved>,
    _not_send: PhantomData<*const ()>,
}

impl<I: InterruptControl> Deref for LockGuard<'_, I> {
    type Target = BuddyAllocator;
    fn deref(&self) -> &BuddyAllocator {
        // SAFETY: we hold the lock, so no other reference to `inner` exists.
        unsafe { &*self.lock.inner.get() }
    }
}

impl<I: InterruptControl> DerefMut for LockGuard<'_, I> {
    fn deref_mut(&mut self) -> &mut BuddyAllocator {
        // SAFETY: we hold the lock, so no other reference to `inner` exists.
        unsafe { &mut *self.lock.inner.get() }
    }
}

impl<I: InterruptControl> Drop for LockGuard<'_, I> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        if let Some(s) = self.saved.take() {
            I::restore(s);
        }
    }
}

#[cfg(test)]
mod tests;
