//! The in-use flag protocol of the per-CPU caches, deterministically: code
//! that interrupts a fast path on its CPU (an interrupt handler
//! allocating, a drain run there by `run_on`) meets the flag set.
//!
//! A test sets a slot's flag by hand, which is exactly the state an
//! interrupt finds a fast path in (the flag is set first and cleared
//! last), then runs the interrupting code as that CPU.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::try_per_cpu::ON_ATTEMPTS;
use crate::cpu::{CpuLocal, InterruptControl};
use crate::{BuddyAllocator, Error, PageCaches, PhysAddr};

crate::host_cpu_local!(pub(crate) HostCpu, 2);

/// Caches of 2 CPUs over 1024 pages at 4 GiB, for the rest of the test run.
fn caches<P: CpuLocal>() -> &'static PageCaches<P, 2> {
    let c: &'static PageCaches<P, 2> = Box::leak(Box::new(PageCaches::new(BuddyAllocator::new())));
    c.add_section_static(PhysAddr(1 << 32), 1024, vec![0u64; 2048].leak())
        .unwrap();
    c
}

/// An interrupt handler on a CPU whose fast path it interrupted (flag
/// set) allocates and frees, by address and as `Block`s: everything goes
/// to the buddy, the interrupted CPU's cache is untouched, every check
/// still holds; a drain of that CPU from there gives up at once.
/// Fails without the flag check in `TrySlot::try_with` (the handler pops
/// from the list under the interrupted fast path: the cached count drops).
#[test]
fn interrupting_alloc_takes_the_slow_path() {
    let c = caches::<HostCpu>();
    let me = HostCpu::cpu_id();
    let warm = c.alloc(0).unwrap();
    c.free(warm, 0).unwrap();
    let cached = c.stats().cached_pages();
    assert!(cached > 0, "the cache was refilled");
    let buddy_free = c.stats().buddy.free_pages();

    c.cpus.slots[me].in_use.store(true, Ordering::Relaxed); // mid-fast-path
    let a = c.alloc(0).unwrap();
    let b = c.alloc_block(0).unwrap();
    assert_eq!(
        c.stats().cached_pages(),
        cached,
        "the cache was not touched"
    );
    assert_eq!(
        c.stats().buddy.free_pages(),
        buddy_free - 2,
        "both from the buddy"
    );
    assert_eq!(c.free(b.addr(), 0), Err(Error::OwnedByHandle));
    assert_eq!(c.free(a, 1), Err(Error::WrongCount { allocated: 1 }));
    c.free(a, 0).unwrap();
    assert_eq!(c.free(a, 0), Err(Error::DoubleFree));
    c.free_block(b).unwrap();
    assert_eq!(
        c.stats().buddy.free_pages(),
        buddy_free,
        "both back in the buddy"
    );
    c.drain_local();
    assert!(
        !c.drain_cpu(me),
        "an interrupt cannot wait for what it interrupted"
    );
    assert_eq!(
        c.stats().cached_pages(),
        cached,
        "the cache was not touched"
    );

    c.cpus.slots[me].in_use.store(false, Ordering::Relaxed); // it finished
    let p = c.alloc(0).unwrap();
    assert_eq!(
        c.stats().cached_pages(),
        cached - 1,
        "served by the cache again"
    );
    c.free(p, 0).unwrap();
    assert!(c.drain_all());
    assert_eq!(c.stats().cached_pages(), 0);
    assert_eq!(c.stats().free_pages(), 1024);
}

thread_local! {
    /// (CPU id, run_on calls, calls after which the interrupted fast path
    /// finishes (clears `FLAG`), the flag).
    static IPI: Cell<(usize, usize, usize, Option<&'static AtomicBool>)> =
        const { Cell::new((0, 0, usize::MAX, None)) };
}

/// One thread plays every CPU: `run_on` runs the closure as the target
/// "in its IPI handler", which may interrupt a fast path of the target;
/// when the handler returns, the interrupted fast path may finish.
struct IpiCpu;

impl InterruptControl for IpiCpu {
    type Saved = ();
    fn save_and_disable() {}
    fn restore(_: ()) {}
}

// SAFETY: one thread runs everything, so nothing overlaps but by nesting:
// `run_on` runs `f` as `cpu` between two steps of whatever `cpu` was doing,
// to completion.
unsafe impl CpuLocal for IpiCpu {
    fn cpu_id() -> usize {
        IPI.with(|s| s.get().0)
    }
    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
        let (me, calls, finish_after, flag) = IPI.with(Cell::get);
        IPI.with(|s| s.set((cpu, calls, finish_after, flag)));
        f();
        let calls = calls + 1;
        if calls == finish_after
            && let Some(flag) = flag
        {
            flag.store(false, Ordering::Relaxed); // the interrupted fast path ends
        }
        IPI.with(|s| s.set((me, calls, finish_after, flag)));
        true
    }
}

fn ipi_setup(finish_after: usize, flag: Option<&'static AtomicBool>) {
    IPI.with(|s| s.set((0, 0, finish_after, flag)));
}

fn ipi_calls() -> usize {
    IPI.with(|s| s.get().1)
}

/// A drain of CPU 1 from CPU 0 lands in CPU 1's fast path (flag set): the
/// closure reports busy and `run_on` is called again, after which CPU 1
/// finished and the drain empties its cache. If CPU 1 never finishes, the
/// drain gives up after `ON_ATTEMPTS` tries, its cache untouched.
/// Fails without the flag check in the drain (drained on the first call,
/// under the interrupted fast path: 1 call, not 2), and without the retry
/// (`drain_cpu` returns false).
#[test]
fn drain_meeting_a_busy_slot_retries() {
    let c = caches::<IpiCpu>();
    ipi_setup(usize::MAX, None);
    IPI.with(|s| s.set((1, 0, usize::MAX, None))); // as CPU 1: fill its cache
    let p = c.alloc(0).unwrap();
    c.free(p, 0).unwrap();
    IPI.with(|s| s.set((0, 0, usize::MAX, None)));
    let cached = c.stats().cached_pages();
    assert!(cached > 0);

    let flag = &c.cpus.slots[1].in_use;
    flag.store(true, Ordering::Relaxed); // CPU 1 is inside a fast path
    ipi_setup(usize::MAX, Some(flag)); // ... and never leaves it
    assert!(!c.drain_cpu(1), "gives up");
    assert_eq!(ipi_calls(), ON_ATTEMPTS);
    assert_eq!(c.stats().cached_pages(), cached, "nothing drained under it");

    ipi_setup(1, Some(flag)); // CPU 1 finishes once the first IPI returns
    assert!(c.drain_cpu(1), "drained on the retry");
    assert_eq!(ipi_calls(), 2, "the first attempt found CPU 1 busy");
    assert_eq!(c.stats().cached_pages(), 0);
    assert_eq!(c.stats().free_pages(), 1024);
}
