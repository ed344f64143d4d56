//! Running a function on another CPU: the caller puts it in the target's
//! call slot, sends the CALL IPI, and waits; the target's handler runs it
//! with interrupts masked (it is an interrupt handler) and reports done.
//!
//! A caller waits only with interrupts enabled, so two CPUs calling each
//! other still serve each other's IPIs; with interrupts masked it refuses.
//! A call the target has not started within [`TIMEOUT_MS`] is withdrawn
//! (the target then never runs it), so a stuck CPU cannot hang the caller.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use spin::Mutex;
use x86_64::instructions::interrupts;

use super::apic::{self, Ipi, vector};
use super::percpu::{self, MAX_CPUS};
use super::tsc;

/// How long a call may wait for its target to start it.
const TIMEOUT_MS: u64 = 5_000;

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

struct CallSlot {
    /// One caller at a time per target.
    callers: Mutex<()>,
    state: AtomicU8,
    work: UnsafeCell<Option<*mut dyn FnMut()>>,
}

// SAFETY: `work` is written by the caller holding `callers` while `state`
// is IDLE, and read by the target only after it moved `state` from PENDING
// to RUNNING (acquire), so the two never touch it at once.
unsafe impl Sync for CallSlot {}

static SLOTS: [CallSlot; MAX_CPUS] = [const {
    CallSlot {
        callers: Mutex::new(()),
        state: AtomicU8::new(IDLE),
        work: UnsafeCell::new(None),
    }
}; MAX_CPUS];

/// Runs `work` on CPU `cpu` with interrupts masked there and waits for it.
/// For an index no CPU was ever started as, `work` runs here (masked):
/// nothing else can run as that CPU. `false` (without running it) for a
/// CPU that was started but is not online, when called with interrupts
/// masked (waiting could deadlock), or when the target did not take the
/// call in time.
pub fn run_on(cpu: usize, work: &mut dyn FnMut()) -> bool {
    if cpu == percpu::current_index() || percpu::never_assigned(cpu) {
        interrupts::without_interrupts(work);
        return true;
    }
    let Some(apic_id) = percpu::apic_id(cpu) else {
        return false;
    };
    if !interrupts::are_enabled() {
        return false;
    }
    let slot = &SLOTS[cpu];
    // Spinning with interrupts enabled: calls to us still get served.
    let _caller = slot.callers.lock();
    let work: *mut (dyn FnMut() + '_) = work;
    // SAFETY: only the lifetime is erased. The pointer is used only until
    // this function returns: either the target finished it (DONE), or the
    // call was withdrawn before the target could start it.
    let work: *mut (dyn FnMut() + 'static) = unsafe { core::mem::transmute(work) };
    // SAFETY: we hold `callers` and the state is IDLE: the target does not
    // read the slot now.
    unsafe { *slot.work.get() = Some(work) };
    slot.state.store(PENDING, Ordering::Release);
    if !apic::send(Ipi::Fixed(vector::CALL), apic_id) {
        slot.state.store(IDLE, Ordering::Release);
        return false;
    }
    let deadline = tsc::now() + tsc::frequency() / 1000 * TIMEOUT_MS;
    loop {
        match slot.state.load(Ordering::Acquire) {
            DONE => break,
            PENDING if tsc::now() > deadline => {
                if slot
                    .state
                    .compare_exchange(PENDING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    log::warn!("CPU {cpu} did not take a call within {TIMEOUT_MS} ms");
                    return false;
                }
            }
            _ => core::hint::spin_loop(),
        }
    }
    slot.state.store(IDLE, Ordering::Release);
    true
}

/// The CALL IPI's handler: runs the pending call, if any.
pub fn handle() {
    let slot = &SLOTS[percpu::current_index()];
    if slot
        .state
        .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return; // withdrawn, or a stray IPI
    }
    // SAFETY: the caller stored a live `work` before PENDING (we acquired
    // it) and waits for DONE, so the closure outlives this call; nothing
    // else uses it meanwhile.
    if let Some(work) = unsafe { *slot.work.get() } {
        // SAFETY: see above.
        unsafe { (*work)() };
    }
    slot.state.store(DONE, Ordering::Release);
}
