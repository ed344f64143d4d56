//! [`TryPerCpu`]: one value per CPU, each guarded by an in-use flag that
//! only its CPU writes (Linux's per-CPU trylock of the page lists, 6.0),
//! so that a fast path needs neither interrupt masking nor an atomic
//! read-modify-write.
//!
//! Why a plain flag is enough: a slot is only used *as its CPU*, by code
//! pinned there ([`CpuLocal::pin`]) or by code that interrupts it (an
//! interrupt handler, a [`CpuLocal::run_on`] closure). Interrupting code
//! runs to completion between two instructions of the interrupted code, so
//! two users of one slot overlap only by nesting, and the inner one sees
//! the outer one's flag: it leaves the slot alone and takes a slow path
//! (an allocation: the buddy under its lock; a drain: "busy", retried).
//! Between the two, order is program order on one CPU: compiler fences
//! keep the compiler from moving the slot's accesses across the flag's
//! stores, which is all an interrupt needs (no CPU fence).

use super::CpuLocal;
use crate::sync::{AtomicBool, Ordering, UnsafeCell, spin_loop};
use core::sync::atomic::compiler_fence;

use super::per_cpu::CpuInit;

/// How many times [`TryPerCpu::on`] asks another CPU to run a closure that
/// finds its slot in use before giving up. Each attempt is an IPI round
/// trip (microseconds), after which the interrupted fast path (tens of
/// nanoseconds) has long finished unless the CPU entered another one.
pub(crate) const ON_ATTEMPTS: usize = 16;

/// A CPU's value, its in-use flag and what other CPUs may read of it
/// (`S`: atomics only this CPU writes, e.g. counters), on a cache line
/// pair of their own: the fast path finds all three from one address.
#[repr(align(128))]
pub(crate) struct TrySlot<T, S = ()> {
    /// Set while code running as this CPU uses `value`. Written only as
    /// this CPU; an atomic (relaxed: plain `mov`s) so that loom and Miri
    /// see the accesses of `run_on` closures on other host threads.
    pub(crate) in_use: AtomicBool,
    /// Readable by anyone, written only as this CPU.
    pub(crate) shared: S,
    value: UnsafeCell<T>,
}

impl CpuInit for () {
    const INIT: Self = ();
}

impl<T, S> TrySlot<T, S> {
    /// Runs `f` on the value with the flag set, or gives `f` back if the
    /// flag is already set (the caller interrupted a user of the slot).
    /// Must run as this slot's CPU, pinned or interrupting.
    #[inline(always)]
    pub(crate) fn try_with<R, F: FnOnce(&mut T) -> R>(&self, f: F) -> Result<R, F> {
        if self.in_use.load(Ordering::Relaxed) {
            return Err(f);
        }
        self.in_use.store(true, Ordering::Relaxed);
        // The value's accesses stay after the flag is set...
        compiler_fence(Ordering::SeqCst);
        let r = self.value.with_mut(|p| {
            // Only code running as this slot's CPU gets here (the callers'
            // contract). Such code that is not interrupting us ran before
            // or runs after us (CpuLocal's pinning contract); code that
            // interrupts us after the store above sees the flag and
            // returns above without touching the value.
            // SAFETY: so this is the only reference until the flag is cleared.
            f(unsafe { &mut *p })
        });
        // ...and before it is cleared.
        compiler_fence(Ordering::SeqCst);
        self.in_use.store(false, Ordering::Relaxed);
        Ok(r)
    }
}

/// One `T` per CPU, each used only as its CPU, with interrupts enabled,
/// guarded by its slot's in-use flag (see the module documentation).
///
/// Constructed by `TryPerCpu::new()`: a `const fn`, or a plain one under
/// `--cfg loom`, whose cells are not `const`-constructible.
pub(crate) struct TryPerCpu<T, const N: usize, S = ()> {
    pub(crate) slots: [TrySlot<T, S>; N],
}

// SAFETY: a slot's value is only reached through `try_with`, as its CPU,
// which serialises the accesses (see there); T: Send because `run_on` may
// execute such an access on another thread.
// `S` is shared as is (it must be Sync itself).
unsafe impl<T: Send, const N: usize, S: Sync> Sync for TryPerCpu<T, N, S> {}

impl<T, const N: usize, S> TryPerCpu<T, N, S> {
    /// Runs `f(cpu, value)` on the current CPU's value, pinned and with
    /// interrupts enabled. `None` (without calling `f`) if the CPU id is
    /// `>= N`, or if the slot is in use: this code interrupted another
    /// user of it on this CPU; the caller then takes its slow path.
    /// `f` must not reach this `TryPerCpu` again (`local`, `on`): it would
    /// find the slot in use.
    #[inline(always)]
    pub(crate) fn local<P: CpuLocal, R>(&self, f: impl FnOnce(usize, &mut T) -> R) -> Option<R> {
        P::pin();
        let cpu = P::cpu_id();
        let r = match self.slots.get(cpu) {
            Some(slot) => slot.try_with(|v| f(cpu, v)).ok(),
            None => None,
        };
        P::unpin();
        r
    }

    /// Runs `f` on CPU `cpu`'s value as that CPU: directly if `cpu` is the
    /// current CPU, else via [`CpuLocal::run_on`]. `None` if `cpu >= N`,
    /// the platform could not run it, or the slot stayed in use:
    ///
    /// - as the current CPU, an in-use slot means the caller interrupted
    ///   this CPU's own user of it (an interrupt handler draining): that
    ///   user cannot finish before the caller returns, so `None` at once;
    /// - on another CPU, the closure run by `run_on` interrupted that
    ///   CPU's user of the slot; it reports "busy" and `run_on` is called
    ///   again (the interrupted user finishes as soon as the IPI handler
    ///   returns), up to [`ON_ATTEMPTS`] times in all.
    ///
    /// Must not be called inside a masked or pinned section of this crate.
    pub(crate) fn on<P: CpuLocal, R>(&self, cpu: usize, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let slot = self.slots.get(cpu)?;
        let mut f = Some(f);
        // Pinned while deciding: no migration between the test and the call.
        P::pin();
        let here = (P::cpu_id() == cpu).then(|| f.take().and_then(|g| slot.try_with(g).ok()));
        P::unpin();
        if let Some(r) = here {
            return r;
        }
        let mut out = None;
        for _ in 0..ON_ATTEMPTS {
            let ran = P::run_on(cpu, &mut || {
                if let Some(g) = f.take() {
                    match slot.try_with(g) {
                        Ok(r) => out = Some(r),
                        // Busy: keep the closure for the next attempt.
                        Err(g) => f = Some(g),
                    }
                }
            });
            if !ran || out.is_some() {
                break;
            }
            spin_loop();
        }
        out
    }

    /// Number of CPU slots.
    pub(crate) const fn len(&self) -> usize {
        N
    }
}

impl<T: CpuInit, const N: usize, S: CpuInit> TryPerCpu<T, N, S> {
    /// Every CPU's value is `T::INIT`, no slot in use.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        TryPerCpu {
            slots: [const {
                TrySlot {
                    in_use: AtomicBool::new(false),
                    shared: S::INIT,
                    value: UnsafeCell::new(T::INIT),
                }
            }; N],
        }
    }
}

#[cfg(loom)]
impl<T: CpuInit, const N: usize, S: CpuInit> TryPerCpu<T, N, S> {
    /// Every CPU's value is `T::INIT` (loom's cells are not `const`).
    pub(crate) fn new() -> Self {
        TryPerCpu {
            slots: core::array::from_fn(|_| TrySlot {
                in_use: AtomicBool::new(false),
                shared: S::INIT,
                value: UnsafeCell::new(T::INIT),
            }),
        }
    }
}
