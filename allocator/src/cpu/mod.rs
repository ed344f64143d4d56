//! What the allocator needs from the CPU it runs on: interrupt masking
//! ([`InterruptControl`]), the current CPU's id and a way to run code on
//! another CPU ([`CpuLocal`]), and per-CPU storage built on them: masked
//! (`per_cpu`) or guarded by an in-use flag (`try_per_cpu`).

#[cfg(not(loom))]
mod host;
mod interrupts;
// Values reached through cells that only their CPU touches.
#[allow(unsafe_code)]
pub(crate) mod per_cpu;
// Values reached through cells guarded by a flag only their CPU writes.
#[allow(unsafe_code)]
pub(crate) mod try_per_cpu;

pub use interrupts::{InterruptControl, NoInterrupts};

/// What the per-CPU layers ([`PageCaches`](crate::PageCaches),
/// [`Heap`](crate::Heap)) need from the kernel: interrupt masking (the
/// [`InterruptControl`] supertrait), the current CPU's id, a way to keep
/// code on its CPU ([`pin`](Self::pin)), and a way to run a function on
/// another CPU (an IPI) for draining its caches.
///
/// Two kinds of per-CPU section use this:
/// - *masked* (the slab): between `save_and_disable()` and `restore()`,
///   nothing else runs as the CPU;
/// - *pinned* (the page caches' fast paths): between `pin()` and
///   `unpin()`, interrupts stay enabled; the section reads `cpu_id()` once
///   and marks that CPU's slot in use with a plain store. An interrupt
///   handler (or a `run_on` closure) that arrives meanwhile on the same
///   CPU finds the mark and leaves the slot alone (it takes the locked
///   slow path, or reports the CPU busy), so no `cli`/`sti` is paid on
///   the fast path.
///
/// # Safety
/// The implementation promises:
/// - while interrupts are masked by `save_and_disable` (nesting allowed),
///   `cpu_id()` returns the same value, and no other code runs as that CPU
///   inside such a masked section at the same time (on real hardware: the
///   CPU cannot be preempted or interrupted; NMI handlers must not allocate);
/// - between `pin()` and the matching `unpin()` (nesting allowed, also
///   with masked sections), `cpu_id()` returns the same value, and other
///   code runs as that CPU only by *interrupting* the pinned code: it
///   starts and finishes between two of its instructions, in its program
///   order (so compiler fences order the two, as for a signal handler),
///   e.g. an interrupt handler or a `run_on` closure. No other thread
///   runs as that CPU meanwhile: a kernel that preempts kernel code
///   disables preemption in `pin` (Linux's `preempt_disable`) and enables
///   it in `unpin`; a kernel that never preempts or migrates kernel code
///   keeps the default no-ops. Code that cannot interrupt at an
///   instruction boundary (threads standing in for CPUs, as on the host)
///   must exclude the others in `pin` instead (a lock, as masking is);
/// - `run_on(cpu, f)` either returns `false` without calling `f`, or calls
///   `f` exactly once *as CPU `cpu`* — `cpu_id()` returns `cpu` inside `f`
///   and `f` runs in a masked section of `cpu` (excluding that CPU's other
///   masked sections; it may interrupt a pinned one, as an IPI does) —
///   and returns `true` after `f` has returned, with everything `f` did
///   visible to the caller (an IPI whose handler runs `f` and then signals
///   completion, or a direct call for the current or an offline CPU). It
///   must return `false` rather than deadlock, e.g. when called with
///   interrupts masked. The allocator never calls it inside one of its own
///   masked or pinned sections.
///
/// A kernel sketch (x86_64, no kernel preemption: `pin` keeps its default):
///
/// ```ignore
/// struct Cpu;
/// impl framekeep::InterruptControl for Cpu {
///     type Saved = bool;
///     fn save_and_disable() -> bool { let f = interrupts::are_enabled(); interrupts::disable(); f }
///     fn restore(was: bool) { if was { interrupts::enable() } }
/// }
/// // SAFETY: ids come from per-CPU data; kernel code never migrates and
/// // interrupts return to the CPU they interrupted; IPIs run `f` on the
/// // target with IF=0.
/// unsafe impl framekeep::CpuLocal for Cpu {
///     fn cpu_id() -> usize { percpu::current().index }          // e.g. from GS base
///     fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
///         if !interrupts::are_enabled() { return false; }       // waiting could deadlock
///         smp::call_function_single(cpu, f)                      // IPI + wait
///     }
/// }
/// ```
///
/// A preemptive kernel pins with its preemption counter:
///
/// ```ignore
/// unsafe impl framekeep::CpuLocal for Cpu {
///     fn cpu_id() -> usize { percpu::current().index }
///     fn pin() { percpu::preempt_disable() }                     // a per-CPU increment
///     fn unpin() { percpu::preempt_enable() }                    // may reschedule
///     fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool { smp::call_function_single(cpu, f) }
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
/// HostCpu::pin();
/// assert_eq!(HostCpu::cpu_id(), me);
/// HostCpu::unpin();
/// ```
#[allow(unsafe_code)] // the contract above is the implementation's to keep
pub unsafe trait CpuLocal: InterruptControl {
    /// The id of the CPU this code runs on. Ids at or above a per-CPU
    /// structure's CPU count are served by its uncached paths.
    fn cpu_id() -> usize;

    /// Keeps the caller on its CPU until the matching [`unpin`](Self::unpin)
    /// (see the trait's safety contract). The default does nothing: right
    /// for a kernel that never preempts or migrates kernel code.
    ///
    /// ```
    /// framekeep::host_cpu_local!(Cpu, 2);
    /// use framekeep::CpuLocal;
    /// Cpu::pin();
    /// let here = Cpu::cpu_id();
    /// assert_eq!(Cpu::cpu_id(), here);   // the same CPU until unpin
    /// Cpu::unpin();
    /// ```
    #[inline(always)]
    fn pin() {}

    /// Ends the section begun by the matching [`pin`](Self::pin).
    #[inline(always)]
    fn unpin() {}

    /// Runs `f` as CPU `cpu` and waits for it (see the trait's safety
    /// contract); `false` if that is not possible now.
    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool;
}
