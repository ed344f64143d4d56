//! TLB shootdown: after a mapping is removed or its permissions reduced,
//! every other CPU may still hold the old translation in its TLB. The CPU
//! that changed the tables invalidates its own entry, then asks every other
//! online CPU to do the same (the SHOOTDOWN IPI) and waits until all have.
//!
//! One shootdown runs at a time. A CPU waiting for its turn, or for the
//! others, keeps answering requests addressed to itself, so two CPUs
//! shooting down at once (or one waiting with interrupts masked) cannot
//! deadlock.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;
use x86_64::VirtAddr;
use x86_64::instructions::tlb;

use super::apic::{self, Ipi};
use super::percpu::{self, MAX_CPUS};

/// Beyond this many pages a CPU flushes its whole TLB instead.
const FLUSH_ALL_ABOVE: u64 = 32;

static TURN: Mutex<()> = Mutex::new(());
/// The range of the shootdown in progress.
static START: AtomicU64 = AtomicU64::new(0);
static PAGES: AtomicU64 = AtomicU64::new(0);
/// Set per target by the initiator; cleared by the target once flushed.
static PENDING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// How many shootdowns this kernel has sent (for tests and reports).
pub static SENT: AtomicU64 = AtomicU64::new(0);

/// Invalidates `pages` 4 KiB pages from `start` on this CPU.
fn flush_local(start: u64, pages: u64) {
    if pages > FLUSH_ALL_ABOVE {
        tlb::flush_all();
        return;
    }
    for index in 0..pages {
        tlb::flush(VirtAddr::new_truncate(start + index * 4096));
    }
}

/// Answers a shootdown addressed to this CPU, if one is pending.
pub(super) fn serve() {
    let me = percpu::current_index();
    if PENDING[me].load(Ordering::Acquire) {
        flush_local(START.load(Ordering::Acquire), PAGES.load(Ordering::Acquire));
        PENDING[me].store(false, Ordering::Release);
    }
}

/// Invalidates `pages` pages from `start` on every online CPU and returns
/// when all have done it. The caller has already changed the tables.
pub fn shoot_down(start: VirtAddr, pages: u64) {
    flush_local(start.as_u64(), pages);
    let me = percpu::current_index();
    if percpu::online().all(|cpu| cpu == me) {
        return;
    }
    let _turn = loop {
        if let Some(turn) = TURN.try_lock() {
            break turn;
        }
        serve();
        core::hint::spin_loop();
    };
    START.store(start.as_u64(), Ordering::Release);
    PAGES.store(pages, Ordering::Release);
    for cpu in percpu::online().filter(|&cpu| cpu != me) {
        PENDING[cpu].store(true, Ordering::Release);
        let sent = percpu::apic_id(cpu).is_some_and(|id| apic::send(Ipi::Shootdown, id));
        if !sent {
            // No APIC yet on this CPU: nobody else can be running.
            PENDING[cpu].store(false, Ordering::Release);
        }
    }
    SENT.fetch_add(1, Ordering::Relaxed);
    for cpu in percpu::online().filter(|&cpu| cpu != me) {
        while PENDING[cpu].load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
}
