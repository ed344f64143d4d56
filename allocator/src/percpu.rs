//! Per-CPU data, accessed with interrupts masked, and the platform trait
//! that provides "current CPU" and "run this on that CPU".
//!
//! This file is also compiled into the loom tests (`tests/loom_pcp.rs`), so
//! it only uses `crate::sync` and `crate::InterruptControl`.

use crate::InterruptControl;
use crate::sync::UnsafeCell;

/// What the per-CPU layers ([`PageCaches`](crate::PageCaches),
/// [`Heap`](crate::Heap)) need from the kernel: interrupt masking (the
/// [`InterruptControl`] supertrait), the current CPU's id, and a way to run
/// a function on another CPU (an IPI) for draining its caches.
///
/// The fast paths run between `save_and_disable()` and `restore()`, read
/// `cpu_id()` once, and then use that CPU's data with plain loads and stores
/// only (no lock, no atomic read-modify-write).
///
/// # Safety
/// The implementation promises:
/// - while interrupts are masked by `save_and_disable` (nesting allowed),
///   `cpu_id()` returns the same value, and no other code runs as that CPU
///   inside such a masked section at the same time (on real hardware: the
///   CPU cannot be preempted or interrupted; NMI handlers must not allocate);
/// - `run_on(cpu, f)` either returns `false` without calling `f`, or calls
///   `f` exactly once *as CPU `cpu`* — `cpu_id()` returns `cpu` inside `f`
///   and `f` runs in a masked section of `cpu` (excluding that CPU's other
///   masked sections) — and returns `true` after `f` has returned, with
///   everything `f` did visible to the caller (an IPI whose handler runs `f`
///   and then signals completion, or a direct call for the current or an
///   offline CPU). It must return `false` rather than deadlock, e.g. when
///   called with interrupts masked. The allocator never calls it inside
///   one of its own masked sections.
///
/// A kernel sketch (x86_64):
///
/// ```ignore
/// struct Cpu;
/// impl allocator::InterruptControl for Cpu {
///     type Saved = bool;
///     fn save_and_disable() -> bool { let f = interrupts::are_enabled(); interrupts::disable(); f }
///     fn restore(was: bool) { if was { interrupts::enable() } }
/// }
/// // SAFETY: ids come from per-CPU data; IPIs run `f` on the target with IF=0.
/// unsafe impl allocator::CpuLocal for Cpu {
///     fn cpu_id() -> usize { percpu::current().index }          // e.g. from GS base
///     fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
///         if !interrupts::are_enabled() { return false; }       // waiting could deadlock
///         smp::call_function_single(cpu, f)                      // IPI + wait
///     }
/// }
/// ```
///
/// On the host, threads stand in for CPUs (see `tests/common/cpu.rs`):
///
/// ```
/// allocator::host_cpu_local!(HostCpu, 8);
/// use allocator::CpuLocal;
/// let me = HostCpu::cpu_id();
/// assert!(me < 8);
/// let mut seen = usize::MAX;
/// assert!(HostCpu::run_on((me + 1) % 8, &mut || seen = HostCpu::cpu_id()));
/// assert_eq!(seen, (me + 1) % 8);
/// ```
pub unsafe trait CpuLocal: InterruptControl {
    /// The id of the CPU this code runs on. Ids at or above a per-CPU
    /// structure's CPU count are served by its uncached paths.
    fn cpu_id() -> usize;

    /// Runs `f` as CPU `cpu` and waits for it (see the trait's safety
    /// contract); `false` if that is not possible now.
    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool;
}

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
/// Constructed by `PerCpu::new()`, which lives outside this file (a `const
/// fn` in the library, a plain one in the loom tests, whose cells are not
/// `const`-constructible).
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

    /// Number of CPU slots.
    pub(crate) const fn len(&self) -> usize {
        N
    }
}
