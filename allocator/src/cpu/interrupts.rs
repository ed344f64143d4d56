//! [`InterruptControl`]: masking interrupts on the current CPU, which every
//! lock and per-CPU fast path of the crate does while it runs.

/// How the lock keeps interrupt handlers that allocate from deadlocking:
/// the kernel implements it to mask interrupts on the current CPU while
/// the lock is held (e.g. `pushfq; cli` / `popfq`). Per-CPU caches (a later
/// layer) run their fast path under the same masking.
///
/// ```
/// use framekeep::InterruptControl;
/// struct Cli;
/// impl InterruptControl for Cli {
///     type Saved = bool;
///     fn save_and_disable() -> bool { /* read IF, then cli */ false }
///     fn restore(was_enabled: bool) { if was_enabled { /* sti */ } }
/// }
/// static A: framekeep::LockedAllocator<Cli> =
///     framekeep::LockedAllocator::new(framekeep::BuddyAllocator::new());
/// assert_eq!(A.lock().stats().free_pages(), 0);
/// ```
pub trait InterruptControl {
    /// What `save_and_disable` returns (typically the previous interrupt flag).
    type Saved;
    /// Masks interrupts on the current CPU and returns the previous state.
    fn save_and_disable() -> Self::Saved;
    /// Restores the state returned by `save_and_disable`.
    fn restore(saved: Self::Saved);
}

/// The host implementation: there are no interrupts, nothing to mask.
///
/// ```
/// use framekeep::{InterruptControl, NoInterrupts};
/// NoInterrupts::restore(NoInterrupts::save_and_disable());
/// ```
#[derive(Copy, Clone, Debug, Default)]
pub struct NoInterrupts;

impl InterruptControl for NoInterrupts {
    type Saved = ();
    #[inline(always)]
    fn save_and_disable() {}
    #[inline(always)]
    fn restore(_: ()) {}
}
