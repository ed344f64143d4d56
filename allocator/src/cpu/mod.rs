//! What the allocator needs from the CPU it runs on: interrupt masking
//! ([`InterruptControl`]), the current CPU's id and a way to run code on
//! another CPU ([`CpuLocal`]), and per-CPU storage built on them.

#[cfg(not(loom))]
mod host;
mod interrupts;
// Values reached through cells that only their CPU touches.
#[allow(unsafe_code)]
pub(crate) mod per_cpu;

pub use interrupts::{InterruptControl, NoInterrupts};

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
/// impl framekeep::InterruptControl for Cpu {
///     type Saved = bool;
///     fn save_and_disable() -> bool { let f = interrupts::are_enabled(); interrupts::disable(); f }
///     fn restore(was: bool) { if was { interrupts::enable() } }
/// }
/// // SAFETY: ids come from per-CPU data; IPIs run `f` on the target with IF=0.
/// unsafe impl framekeep::CpuLocal for Cpu {
///     fn cpu_id() -> usize { percpu::current().index }          // e.g. from GS base
///     fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
///         if !interrupts::are_enabled() { return false; }       // waiting could deadlock
///         smp::call_function_single(cpu, f)                      // IPI + wait
///     }
/// }
/// ```
///
/// On the host, threads stand in for CPUs (see [`host_cpu_local!`](crate::host_cpu_local)):
///
/// ```
/// framekeep::host_cpu_local!(HostCpu, 8);
/// use framekeep::CpuLocal;
/// let me = HostCpu::cpu_id();
/// assert!(me < 8);
/// let mut seen = usize::MAX;
/// assert!(HostCpu::run_on((me + 1) % 8, &mut || seen = HostCpu::cpu_id()));
/// assert_eq!(seen, (me + 1) % 8);
/// ```
#[allow(unsafe_code)] // the contract above is the implementation's to keep
pub unsafe trait CpuLocal: InterruptControl {
    /// The id of the CPU this code runs on. Ids at or above a per-CPU
    /// structure's CPU count are served by its uncached paths.
    fn cpu_id() -> usize;

    /// Runs `f` as CPU `cpu` and waits for it (see the trait's safety
    /// contract); `false` if that is not possible now.
    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool;
}
