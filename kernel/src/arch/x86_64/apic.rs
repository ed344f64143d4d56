//! The local APIC, through the `x2apic` crate: x2APIC mode where the CPU
//! has it (`-cpu max`), xAPIC through its MMIO page otherwise (`-cpu
//! qemu64`). Each CPU enables its own APIC; IPIs (inter-processor
//! interrupts) are how CPUs start each other, ask each other for work and
//! stop each other.
//!
//! Two things the crate leaves to us, both in xAPIC mode only: the
//! destination of an IPI belongs in bits 24..32 of the ICR's high half,
//! and the ID register holds the id in its top byte; and the previous IPI
//! must have left the ICR before the next one is written.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;
use x2apic::lapic::{
    IpiAllShorthand, LocalApic, LocalApicBuilder, TimerDivide, TimerMode, xapic_base,
};

use super::percpu::MAX_CPUS;

/// Interrupt vectors the kernel uses for its APIC.
pub mod vector {
    /// "Run the function in your call slot" (`smp::call`).
    pub const CALL: u8 = 0xf0;
    /// "Invalidate these pages" (`smp::shootdown`).
    pub const SHOOTDOWN: u8 = 0xf1;
    /// "Look at your job slot" (`smp::job`); the handler only acknowledges.
    pub const WAKE: u8 = 0xf2;
    /// The APIC timer (kept masked) and error interrupts.
    pub const TIMER: u8 = 0xfd;
    pub const ERROR: u8 = 0xfe;
    /// Spurious interrupts: no EOI.
    pub const SPURIOUS: u8 = 0xff;
}

/// Which register interface the APICs use; the same on every CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    XApic,
    X2Apic,
}

/// The xAPIC MMIO page's virtual address (0 in x2APIC mode).
static MMIO: AtomicU64 = AtomicU64::new(0);
static MODE: Once<Mode> = Once::new();

/// Each CPU's APIC handle, used only by that CPU with interrupts masked.
struct Slot(core::cell::UnsafeCell<Option<LocalApic>>);

// SAFETY: slot `i` is touched only by CPU `i` (see `with_local`), with
// interrupts masked, so no two contexts use one `LocalApic` at once.
unsafe impl Sync for Slot {}

static APICS: [Slot; MAX_CPUS] = [const { Slot(core::cell::UnsafeCell::new(None)) }; MAX_CPUS];

/// The physical address of the xAPIC MMIO page (from `IA32_APIC_BASE`).
pub fn mmio_physical_base() -> u64 {
    // SAFETY: reading IA32_APIC_BASE has no side effects; every x86_64 CPU
    // has a local APIC.
    unsafe { xapic_base() }
}

/// Records where the xAPIC page is mapped; call once before the first
/// [`enable`] when the CPU has no x2APIC.
///
/// # Safety
/// `virtual_base` maps the xAPIC page (physical [`mmio_physical_base`]),
/// uncached, for the rest of the kernel's life: every APIC access writes
/// through it.
pub unsafe fn set_mmio(virtual_base: u64) {
    MMIO.store(virtual_base, Ordering::SeqCst);
}

/// Whether this CPU supports x2APIC mode.
pub fn has_x2apic() -> bool {
    // Leaf 1, ECX bit 21.
    core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0
}

/// Enables the running CPU's APIC, with its timer masked. Returns the mode
/// or why it could not.
pub fn enable() -> Result<Mode, &'static str> {
    let cpu = super::percpu::current_index();
    let mode = *MODE.call_once(|| match has_x2apic() {
        true => Mode::X2Apic,
        false => Mode::XApic,
    });
    let mut builder = LocalApicBuilder::new();
    builder
        .timer_vector(vector::TIMER as usize)
        .error_vector(vector::ERROR as usize)
        .spurious_vector(vector::SPURIOUS as usize);
    if mode == Mode::XApic {
        match MMIO.load(Ordering::SeqCst) {
            0 => return Err("the xAPIC page is not mapped"),
            base => {
                builder.set_xapic_base(base);
            }
        }
    }
    let mut apic = builder.build()?;
    // SAFETY: the vectors above have handlers in the IDT; the timer is
    // masked again at once (we use the TSC for time), and a tick that
    // fires in between only reaches the timer handler, which acknowledges.
    unsafe {
        apic.enable();
        apic.disable_timer();
    }
    super::cpu::without_interrupts(|| {
        // SAFETY: slot `cpu` is the running CPU's, and interrupts are masked.
        unsafe { *APICS[cpu].0.get() = Some(apic) };
    });
    Ok(mode)
}

/// The mode every APIC runs in, once the first was enabled.
pub fn mode() -> Option<Mode> {
    MODE.get().copied()
}

/// Runs `f` on the running CPU's APIC with interrupts masked; `None` before
/// [`enable`] ran on it.
fn with_local<R>(f: impl FnOnce(&mut LocalApic) -> R) -> Option<R> {
    super::cpu::without_interrupts(|| {
        let cpu = super::percpu::current_index();
        // SAFETY: slot `cpu` belongs to the running CPU, and interrupts are
        // masked, so nothing else on this CPU holds a reference to it.
        let apic = unsafe { &mut *APICS[cpu].0.get() };
        apic.as_mut().map(f)
    })
}

/// The running CPU's APIC id, read from CPUID (valid before the APIC is
/// enabled): leaf 0xB's x2APIC id where present, else leaf 1's 8-bit id.
pub fn id_from_cpuid() -> u32 {
    use core::arch::x86_64::__cpuid_count;
    if core::arch::x86_64::__cpuid(0).eax >= 0xb {
        let leaf = __cpuid_count(0xb, 0);
        if leaf.ebx != 0 {
            return leaf.edx;
        }
    }
    core::arch::x86_64::__cpuid(1).ebx >> 24
}

/// How a destination id goes into the crate's ICR value.
fn destination(apic_id: u32) -> u32 {
    match mode() {
        Some(Mode::XApic) => apic_id << 24,
        _ => apic_id,
    }
}

/// Waits until the previous IPI has left the ICR (xAPIC; x2APIC has no
/// such state), for at most [`ICR_WAIT_US`]: an ICR that stays busy (a
/// broken APIC) must not hang the kernel, and the next write then goes
/// out as it would on hardware that never reports busy.
fn wait_idle(apic: &mut LocalApic) {
    if mode() == Some(Mode::XApic) {
        // SAFETY: reading the ICR's delivery status has no side effects.
        super::tsc::poll_until(ICR_WAIT_US, || unsafe { !apic.get_ipi_delivery_status() });
    }
}

/// Longest wait for the ICR: delivery takes well under a microsecond.
const ICR_WAIT_US: u64 = 10_000;

/// Whether an IPI can reach APIC id `apic_id` in `mode`: xAPIC addresses
/// 8-bit ids, and 0xff is its broadcast id.
pub fn reachable(mode: Mode, apic_id: u32) -> bool {
    match mode {
        Mode::XApic => apic_id < 0xff,
        Mode::X2Apic => apic_id != u32::MAX,
    }
}

/// The kernel's own IPIs, each with a handler on every CPU (a fixed IPI
/// on any other vector could land on an exception's handler, which would
/// read an error code nobody pushed).
#[derive(Clone, Copy, Debug)]
pub enum Ipi {
    /// Run the call posted for you (`call`).
    Call,
    /// Flush the pages of the shootdown under way (`tlb`).
    Shootdown,
    /// Look at your job slot (`smp::job`).
    Wake,
}

/// The start-up signals, for a CPU that runs no kernel code yet.
#[derive(Clone, Copy, Debug)]
pub enum StartSignal {
    Init,
    /// Start-up at the real-mode page `page` (physical `page << 12`).
    Startup(u8),
}

/// Sends `ipi` to the CPU with APIC id `apic_id`; `false` if this CPU's
/// APIC is not enabled.
pub fn send(ipi: Ipi, apic_id: u32) -> bool {
    let vector = match ipi {
        Ipi::Call => vector::CALL,
        Ipi::Shootdown => vector::SHOOTDOWN,
        Ipi::Wake => vector::WAKE,
    };
    let dest = destination(apic_id);
    with_local(|apic| {
        wait_idle(apic);
        // SAFETY: a fixed IPI on one of the vectors the IDT gives a handler
        // on every CPU; the handlers find nothing to do if none was meant.
        unsafe { apic.send_ipi(vector, dest) };
        wait_idle(apic);
    })
    .is_some()
}

/// Sends a start-up signal to the CPU with APIC id `apic_id`; `false` if
/// this CPU's APIC is not enabled.
///
/// # Safety
/// That CPU runs no kernel code (INIT resets it wherever it is), and for
/// `Startup(page)`, physical `page << 12` holds code it may run in real
/// mode (the trampoline).
pub unsafe fn send_start(signal: StartSignal, apic_id: u32) -> bool {
    let dest = destination(apic_id);
    with_local(|apic| {
        wait_idle(apic);
        // SAFETY: per the contract.
        unsafe {
            match signal {
                StartSignal::Init => apic.send_init_ipi(dest),
                StartSignal::Startup(page) => apic.send_sipi(page, dest),
            }
        }
        wait_idle(apic);
    })
    .is_some()
}

/// Sends a non-maskable interrupt to every CPU but this one.
pub fn send_nmi_to_others() -> bool {
    with_local(|apic| {
        wait_idle(apic);
        // SAFETY: an NMI on every other CPU: their NMI handler decides what
        // it means (see `smp::stop`).
        unsafe { apic.send_nmi_all(IpiAllShorthand::AllExcludingSelf) };
        wait_idle(apic);
    })
    .is_some()
}

/// Starts a periodic tick of `hz` on the running CPU's APIC timer, so a
/// `hlt` there wakes at least that often (the console waits for keys that
/// raise no interrupt this way instead of spinning). The timer's rate is
/// measured against the TSC first. `false` if this CPU's APIC is not
/// enabled or its timer does not count.
#[cfg_attr(
    feature = "bench",
    expect(dead_code, reason = "only the console idles")
)]
pub fn start_tick(hz: u64) -> bool {
    let window = super::tsc::frequency() / 100;
    with_local(|apic| {
        // SAFETY: the timer's vector has a handler (acknowledge only); it
        // stays masked while it is measured.
        unsafe {
            apic.disable_timer();
            apic.set_timer_divide(TimerDivide::Div16);
            apic.set_timer_mode(TimerMode::OneShot);
            apic.set_timer_initial(u32::MAX);
            let start = super::tsc::now();
            while super::tsc::now() - start < window {
                core::hint::spin_loop();
            }
            let per_10ms = u64::from(u32::MAX - apic.timer_current());
            let initial = (per_10ms * 100 / hz.max(1)).clamp(1, u64::from(u32::MAX)) as u32;
            if per_10ms == 0 {
                return false;
            }
            apic.set_timer_mode(TimerMode::Periodic);
            apic.set_timer_initial(initial);
            apic.enable_timer();
        }
        true
    })
    .unwrap_or(false)
}

/// Acknowledges the interrupt being handled.
pub fn end_of_interrupt() {
    // SAFETY: called at the end of a handler of a fixed-vector interrupt.
    with_local(|apic| unsafe { apic.end_of_interrupt() });
}

#[cfg(test)]
mod tests {
    use super::{Mode, reachable};

    #[test_case]
    fn xapic_reaches_only_8_bit_ids_below_broadcast() {
        assert!(reachable(Mode::XApic, 0));
        assert!(reachable(Mode::XApic, 0xfe));
        assert!(
            !reachable(Mode::XApic, 0xff),
            "0xff is the xAPIC broadcast id"
        );
        assert!(!reachable(Mode::XApic, 0x100));
        assert!(reachable(Mode::X2Apic, 0x100));
        assert!(!reachable(Mode::X2Apic, u32::MAX), "x2APIC broadcast");
    }
}
