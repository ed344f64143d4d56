//! [`PerCpu`]: one value per CPU, each used only by its CPU with
//! interrupts masked (or by [`CpuLocal::run_on`] as that CPU).

use super::CpuLocal;
use crate::sync::UnsafeCell;

/// A value whose initial state is a constant (lets [`PerCpu::new`] be
/// `const` for any `T`).
pub(crate) trait CpuInit {
    const INIT: Self;
}

#[repr(align(128))]
pub(crate) struct Slot<T>(pub(crate) UnsafeCell<T>);

/// One `T` per CPU, each used only by its CPU with interrupts masked (or
/// by `run_on` as that CPU).
///
/// Constructed by `PerCpu::new()`: a `const fn`, or a plain one under
/// `--cfg loom`, whose cells are not `const`-constructible.
pub(crate) struct PerCpu<T, const N: usize> {
    pub(crate) slots: [Slot<T>; N],
}

// SAFETY: a slot is only ever accessed by the CPU it belongs to inside a
// masked section (CpuLocal's contract), which serialises all accesses to
// it; T: Send because `run_on` may execute that access on another thread.
unsafe impl<T: Send, const N: usize> Sync for PerCpu<T, N> {}

impl<T, const N: usize> PerCpu<T, N> {
    /// Masks interrupts and runs `f(cpu, value)` on the current CPU's
    /// value. `None` (without calling `f`) if the CPU id is `>= N`.
    /// `f` must not call `local` or `on` of the same `PerCpu`, directly or
    /// through anything that does: the value is mutably borrowed for all
    /// of `f`. A slow path that needs this `PerCpu` again runs after
    /// `local` returns (decided by `f`'s result).
    #[inline(always)]
    pub(crate) fn local<P: CpuLocal, R>(&self, f: impl FnOnce(usize, &mut T) -> R) -> Option<R> {
        let saved = P::save_and_disable();
        let cpu = P::cpu_id();
        let r = self.slots.get(cpu).map(|slot| {
            slot.0.with_mut(|p| {
                // SAFETY: interrupts are masked on `cpu`, so by CpuLocal's contract only
                // this masked section touches the slot, and `f` does not re-enter this
                // PerCpu: this is the only reference.
                f(cpu, unsafe { &mut *p })
            })
        });
        P::restore(saved);
        r
    }

    /// Like [`local`](Self::local), but `f` ends the masked section
    /// itself: it receives the saved state and passes it to `P::restore`
    /// after its last use of the value, so that a slow path can be a tail
    /// call that ends the section (the fast path then needs no spills).
    /// Without a slot (CPU id `>= N`) the section ends and `none()` runs.
    ///
    /// # Safety
    /// `f` calls `P::restore` with the saved state exactly once, and does
    /// not use the `&mut T` (or anything borrowed from it) afterwards.
    /// Ending the section does not end the borrow: the `&mut T` is an
    /// argument of `f`, live until `f` returns, so `f` must not reach this
    /// `PerCpu` (`local`, `on`) even after `P::restore` — a slow path that
    /// does belongs after `local_ending` returns, not in a tail call from
    /// `f`.
    #[inline(always)]
    pub(crate) unsafe fn local_ending<P: CpuLocal, R>(
        &self,
        f: impl FnOnce(P::Saved, usize, &mut T) -> R,
        none: impl FnOnce() -> R,
    ) -> R {
        let saved = P::save_and_disable();
        let cpu = P::cpu_id();
        match self.slots.get(cpu) {
            Some(slot) => slot.0.with_mut(|p| {
                // SAFETY: as in `local`, for as long as `f` uses the
                // reference, which (the caller's contract) ends before `f`
                // ends the masked section.
                f(saved, cpu, unsafe { &mut *p })
            }),
            None => {
                P::restore(saved);
                none()
            }
        }
    }

    /// Runs `f` on CPU `cpu`'s value as that CPU: directly if `cpu` is the
    /// current CPU (which works with interrupts masked, where `run_on` may
    /// refuse), else via [`CpuLocal::run_on`]. `None` if `cpu >= N` or the
    /// platform could not run it. Must not be called inside a masked
    /// section of this crate.
    pub(crate) fn on<P: CpuLocal, R>(&self, cpu: usize, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let slot = self.slots.get(cpu)?;
        let mut f = Some(f);
        // `local` holds the CPU id fixed while it decides: no migration
        // between the test and the call.
        let here = self.local::<P, _>(|me, v| match f.take() {
            Some(g) if me == cpu => Some(g(v)),
            g => {
                f = g;
                None
            }
        });
        if let Some(Some(r)) = here {
            return Some(r);
        }
        let mut out = None;
        let ran = P::run_on(cpu, &mut || {
            if let Some(f) = f.take() {
                out = Some(slot.0.with_mut(|p| {
                    // SAFETY: run_on runs this as `cpu` in a masked section
                    // of `cpu` (CpuLocal's contract): exclusive, as in `local`.
                    f(unsafe { &mut *p })
                }));
            }
        });
        if ran { out } else { None }
    }
}

impl<T: CpuInit, const N: usize> PerCpu<T, N> {
    /// Every CPU's value is `T::INIT`.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        PerCpu {
            slots: [const { Slot(UnsafeCell::new(T::INIT)) }; N],
        }
    }
}

#[cfg(loom)]
impl<T: CpuInit, const N: usize> PerCpu<T, N> {
    /// Every CPU's value is `T::INIT` (loom's cells are not `const`).
    pub(crate) fn new() -> Self {
        PerCpu {
            slots: core::array::from_fn(|_| Slot(UnsafeCell::new(T::INIT))),
        }
    }
}

/// Adds `by` to a counter only one CPU writes (others just read it): a
/// plain load and store, no read-modify-write.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn add_owned(counter: &core::sync::atomic::AtomicU64, by: i64) {
    use core::sync::atomic::Ordering;
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by as u64),
        Ordering::Relaxed,
    );
}
