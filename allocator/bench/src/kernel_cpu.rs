//! [`KernelModelCpu`]: the platform a kernel gives framekeep's per-CPU
//! layers, executed as far as ring 3 allows, so that a benchmark of the
//! caches pays for interrupt masking what a kernel pays.
//!
//! What a kernel pays: the buddy lock and the slab mask interrupts (below);
//! the page caches' fast paths do not (they mark the CPU's lists in use
//! with a plain store instead), so a per-CPU page pair pays no `pushfq`,
//! `cli` or `sti` unless it misses into the buddy. `pin`/`unpin` keep
//! their no-op defaults, as in a kernel without preemption: a thread never
//! changes its id.
//!
//! A kernel masks with `pushfq; pop` (is IF set?), `cli`, and on restore
//! `sti` if IF was set (the workspace kernel's `KernelCpu`). At ring 3
//! with IOPL 0, `cli` and `sti` fault, so:
//!
//! - the flags are read exactly as the kernel reads them: `pushfq; pop`,
//!   with the same `asm!` options (the read is the same instruction, and
//!   IF is always set at ring 3, so every restore takes the `sti` branch,
//!   as a kernel does when called with interrupts enabled);
//! - `cli` and `sti` are each replaced by `cld`: the one-byte instruction
//!   of the same group (`cli`/`sti`/`cld`/`std` write one control bit of
//!   RFLAGS) that ring 3 may execute. It is not free: like `cli`, it is
//!   a write to RFLAGS that the core orders against other flag writes;
//!   the `asm!` block clobbers memory as the kernel's `cli`/`sti` blocks
//!   do, so the compiler cannot move loads or stores of the masked section
//!   across it. DF is clear by the ABI, so `cld` changes no state.
//!
//! The CPU id is a thread-local (an `fs`-relative load, as a kernel's
//! per-CPU id is a `gs`-relative one). A thread takes one with
//! [`KernelModelCpu::claim`], as a kernel sets a CPU's id when it brings
//! the CPU up; ids come from a counter and are never given back, so no
//! two threads ever share one. Until then it has none (`usize::MAX`: the
//! allocator's uncached paths).
//!
//! Signals cannot be masked from ring 3: like NMI handlers in a kernel,
//! signal handlers must not use the per-CPU layers.

use std::arch::asm;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use framekeep::{CpuLocal, InterruptControl};

/// RFLAGS.IF.
const IF: u64 = 1 << 9;
/// The thread-local id before the thread claims one.
const UNCLAIMED: usize = usize::MAX;

/// Ids handed out so far.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ID: Cell<usize> = const { Cell::new(UNCLAIMED) };
}

/// A kernel's interrupt masking and per-CPU id, at ring 3 (see the module
/// documentation for what stands in for `cli` and `sti`).
///
/// ```
/// use allocator_bench::KernelModelCpu;
/// use framekeep::{BuddyAllocator, CpuLocal, PageCaches, PhysAddr};
/// let me = KernelModelCpu::claim();
/// assert_eq!(KernelModelCpu::cpu_id(), me);
/// let c = PageCaches::<KernelModelCpu, 2>::new(BuddyAllocator::new());
/// c.add_section_static(PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
/// let b = c.alloc_block(0).unwrap();
/// c.free_block(b).unwrap();
/// assert_eq!(c.stats().free_pages(), 64);
/// ```
#[derive(Debug)]
pub struct KernelModelCpu;

impl KernelModelCpu {
    /// Gives the calling thread a CPU id of its own (once; later calls
    /// return the same id) and returns it.
    ///
    /// ```
    /// use allocator_bench::KernelModelCpu;
    /// let me = KernelModelCpu::claim();
    /// assert_eq!(KernelModelCpu::claim(), me);
    /// assert_ne!(std::thread::spawn(KernelModelCpu::claim).join().unwrap(), me);
    /// ```
    pub fn claim() -> usize {
        let id = ID.with(Cell::get);
        if id != UNCLAIMED {
            return id;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        assert!(id != UNCLAIMED, "CPU ids exhausted");
        ID.with(|cell| cell.set(id));
        id
    }
}

impl InterruptControl for KernelModelCpu {
    type Saved = bool;

    #[inline(always)]
    fn save_and_disable() -> bool {
        let flags: u64;
        // SAFETY: pushes RFLAGS and pops it into a register: the stack is
        // left as it was; the options are those of the kernel's read.
        unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) };
        flag_write();
        flags & IF != 0
    }

    #[inline(always)]
    fn restore(enabled: bool) {
        if enabled {
            flag_write();
        }
    }
}

/// The stand-in for `cli` and `sti`: a write of one RFLAGS control bit,
/// clobbering memory like them.
#[inline(always)]
fn flag_write() {
    // SAFETY: clears DF, which the ABI already requires clear: no state
    // changes. No `nomem`: a compiler barrier, as `cli`/`sti` are.
    unsafe { asm!("cld", options(nostack, preserves_flags)) };
}

// SAFETY: an id belongs to one thread for good (claimed once from a
// counter), so `cpu_id()` changes on a thread only from "none" to its id,
// outside any masked or pinned section (`claim` is not called by the
// allocator), and no two threads run as one id: nothing runs as a pinned
// section's CPU but that thread (pin: the default no-op); within a thread,
// masked sections do not overlap except by nesting (signal handlers must
// not use the caches, see the module documentation). `run_on` runs `f`
// only for the calling thread's own id, in a masked section, which the
// allocator never calls it inside of (nor inside a pinned one).
unsafe impl CpuLocal for KernelModelCpu {
    #[inline(always)]
    fn cpu_id() -> usize {
        ID.with(Cell::get)
    }

    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
        if cpu != Self::cpu_id() {
            return false;
        }
        let saved = Self::save_and_disable();
        f();
        Self::restore(saved);
        true
    }
}
