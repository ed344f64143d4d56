//! Jobs for several CPUs at once (the all-CPU tests and benchmarks): the
//! calling CPU puts the job in each helper's slot and wakes it with an IPI,
//! runs the job itself, and waits for all. APs run jobs with interrupts
//! enabled, as ordinary kernel code, from their idle loop.

use spin::Mutex;
use x86_64::instructions::interrupts;

use crate::arch::x86_64::apic::{self, Ipi};
use crate::arch::x86_64::mailbox::Mailbox;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::tsc::Deadline;

/// A job: called with the index of the CPU it runs on.
pub type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// How long a job may run before the kernel gives up on it (and panics,
/// which stops every CPU).
const TIMEOUT_SECONDS: u64 = 600;

static SLOTS: [Mailbox<dyn Fn(usize) + Sync>; MAX_CPUS] = [const { Mailbox::new() }; MAX_CPUS];
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
        // SAFETY: `ONE_AT_A_TIME` makes us the only poster, every earlier
        // job was collected, and the job outlives the collection below.
        unsafe { SLOTS[cpu].post(erased.cast_mut()) };
        if let Some(apic_id) = percpu::apic_id(cpu) {
            apic::send(Ipi::Wake, apic_id);
        }
    }
    job(me);
    let deadline = Deadline::after_millis(TIMEOUT_SECONDS * 1_000);
    for &cpu in helpers.as_slice() {
        while !SLOTS[cpu].collect() {
            if deadline.passed() {
                panic!("CPU {cpu} did not finish its job within {TIMEOUT_SECONDS} s");
            }
            core::hint::spin_loop();
        }
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
    let mailbox = &SLOTS[percpu::current_index()];
    loop {
        interrupts::disable();
        if let Some(job) = mailbox.take() {
            interrupts::enable();
            // SAFETY: the poster keeps the job alive until it collects,
            // which waits for `finish`.
            unsafe { (*job)(percpu::current_index()) };
            mailbox.finish();
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
