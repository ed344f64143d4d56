//! Running a function on another CPU: the caller posts it in the target's
//! call mailbox, sends the CALL IPI, and waits; the target's handler runs
//! it with interrupts masked (it is an interrupt handler) and reports done.
//!
//! A caller waits only with interrupts enabled, so two CPUs calling each
//! other still serve each other's IPIs; with interrupts masked it refuses.
//! A call the target has not started within [`TIMEOUT_MS`] is withdrawn
//! (the target then never runs it), so a stuck CPU cannot hang the caller.

use spin::Mutex;
use x86_64::instructions::interrupts;

use super::apic::{self, Ipi};
use super::mailbox::Mailbox;
use super::percpu::{self, MAX_CPUS};
use super::tsc::Deadline;

/// How long a call may wait for its target to start it.
const TIMEOUT_MS: u64 = 5_000;

struct CallSlot {
    /// One caller at a time per target.
    callers: Mutex<()>,
    mailbox: Mailbox<dyn FnMut()>,
}

static SLOTS: [CallSlot; MAX_CPUS] = [const {
    CallSlot {
        callers: Mutex::new(()),
        mailbox: Mailbox::new(),
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
    // SAFETY: only the lifetime is erased; the mailbox holds the pointer
    // until this function returns, by which time the call has run or has
    // been withdrawn before the target could take it.
    let work: *mut (dyn FnMut() + 'static) = unsafe { core::mem::transmute(work) };
    // SAFETY: we hold `callers` (the only poster) and collected or
    // withdrew every earlier call, so the mailbox is empty; `work` lives
    // until we return, and we return only after `collect` or `withdraw`.
    unsafe { slot.mailbox.post(work) };
    // An IPI that could not be sent is taken back (unless, somehow, it ran).
    if !apic::send(Ipi::Call, apic_id) && slot.mailbox.withdraw() {
        return false;
    }
    let deadline = Deadline::after_millis(TIMEOUT_MS);
    loop {
        if slot.mailbox.collect() {
            return true;
        }
        if deadline.passed() && slot.mailbox.withdraw() {
            log::warn!("CPU {cpu} did not take a call within {TIMEOUT_MS} ms");
            return false;
        }
        core::hint::spin_loop();
    }
}

/// The CALL IPI's handler: runs the pending call, if any.
pub(super) fn handle() {
    let mailbox = &SLOTS[percpu::current_index()].mailbox;
    // None: withdrawn, or a stray IPI.
    if let Some(work) = mailbox.take() {
        // SAFETY: the caller keeps the closure alive until it collects,
        // which waits for `finish`; nothing else uses it meanwhile.
        unsafe { (*work)() };
        mailbox.finish();
    }
}
