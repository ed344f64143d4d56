//! Jobs for several CPUs at once (the all-CPU tests and benchmarks): the
//! calling CPU puts the job in each helper's slot and wakes it with an IPI,
//! runs the job itself, and waits for all. APs run jobs with interrupts
//! enabled, as ordinary kernel code, from their idle loop.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use spin::Mutex;
use x86_64::instructions::interrupts;

use crate::arch::x86_64::apic::{self, Ipi, vector};
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::tsc;

/// A job: called with the index of the CPU it runs on.
pub type Job<'a> = &'a (dyn Fn(usize) + Sync);

const EMPTY: u8 = 0;
const READY: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// How long a job may run before the kernel gives up on it (and panics,
/// which stops every CPU).
const TIMEOUT_SECONDS: u64 = 600;

struct JobSlot {
    state: AtomicU8,
    job: UnsafeCell<Option<*const (dyn Fn(usize) + Sync)>>,
}

// SAFETY: `job` is written by the one caller (under `ONE_AT_A_TIME`) while
// the slot is EMPTY and read by its CPU only after seeing READY (acquire).
unsafe impl Sync for JobSlot {}

static SLOTS: [JobSlot; MAX_CPUS] = [const {
    JobSlot {
        state: AtomicU8::new(EMPTY),
        job: UnsafeCell::new(None),
    }
}; MAX_CPUS];
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `job` on the calling CPU and on the first `cpus - 1` other online
/// CPUs at once; returns how many CPUs ran it when all have finished.
pub fn on_cpus(cpus: usize, job: Job<'_>) -> usize {
    let _one = ONE_AT_A_TIME.lock();
    let me = percpu::current_index();
    let helpers: cpu_set::CpuSet = percpu::online()
        .filter(|&cpu| cpu != me)
        .take(cpus.saturating_sub(1))
        .collect();
    let erased: *const (dyn Fn(usize) + Sync + '_) = job;
    // SAFETY: only the lifetime is erased; every helper finishes with the
    // job before this function returns (or the kernel stops on a timeout).
    let erased: *const (dyn Fn(usize) + Sync + 'static) = unsafe { core::mem::transmute(erased) };
    for &cpu in helpers.as_slice() {
        let slot = &SLOTS[cpu];
        // SAFETY: the slot is EMPTY and we are the only caller.
        unsafe { *slot.job.get() = Some(erased) };
        slot.state.store(READY, Ordering::Release);
        if let Some(apic_id) = percpu::apic_id(cpu) {
            apic::send(Ipi::Fixed(vector::WAKE), apic_id);
        }
    }
    job(me);
    let deadline = tsc::now() + tsc::frequency() * TIMEOUT_SECONDS;
    for &cpu in helpers.as_slice() {
        let slot = &SLOTS[cpu];
        while slot.state.load(Ordering::Acquire) != DONE {
            if tsc::now() > deadline {
                panic!("CPU {cpu} did not finish its job within {TIMEOUT_SECONDS} s");
            }
            core::hint::spin_loop();
        }
        slot.state.store(EMPTY, Ordering::Release);
    }
    helpers.as_slice().len() + 1
}

/// Runs `job` on every online CPU at once.
#[cfg_attr(not(test), expect(dead_code, reason = "the tests run jobs everywhere"))]
pub fn on_every_cpu(job: Job<'_>) -> usize {
    on_cpus(MAX_CPUS, job)
}

/// An AP's life after start-up: sleep until woken, run the job if one is
/// ready, repeat.
pub fn idle_loop() -> ! {
    let me = percpu::current_index();
    let slot = &SLOTS[me];
    loop {
        interrupts::disable();
        if slot
            .state
            .compare_exchange(READY, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            interrupts::enable();
            // SAFETY: the caller stored the job before READY (acquired
            // above) and waits for DONE, so it is alive until then.
            if let Some(job) = unsafe { *slot.job.get() } {
                // SAFETY: see above.
                unsafe { (*job)(me) };
            }
            slot.state.store(DONE, Ordering::Release);
            continue;
        }
        // Enabling interrupts and halting in one step: a WAKE that arrives
        // after the check above still ends this `hlt`.
        interrupts::enable_and_hlt();
    }
}

/// A fixed-capacity list of CPU indices (no allocation on this path).
mod cpu_set {
    use crate::arch::x86_64::percpu::MAX_CPUS;

    pub struct CpuSet {
        items: [usize; MAX_CPUS],
        len: usize,
    }

    impl CpuSet {
        pub fn as_slice(&self) -> &[usize] {
            &self.items[..self.len]
        }
    }

    impl FromIterator<usize> for CpuSet {
        fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
            let mut list = Self {
                items: [0; MAX_CPUS],
                len: 0,
            };
            for item in iter.into_iter().take(MAX_CPUS) {
                list.items[list.len] = item;
                list.len += 1;
            }
            list
        }
    }
}
