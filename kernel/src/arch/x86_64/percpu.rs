//! Per-CPU data, reached through the GS base: each CPU points GS at its own
//! [`CpuData`], so `gs:[0]` is the running CPU's index, read in one
//! instruction without knowing which CPU we are.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::GsBase;

/// CPUs the kernel can run; CPUs the firmware reports beyond this are left
/// in their wait-for-SIPI state (and said so at boot).
pub const MAX_CPUS: usize = 64;

/// What the kernel keeps per CPU. `index` must stay the first field: the
/// fast `current_index` reads it at offset 0 from the GS base.
#[repr(C, align(64))]
pub struct CpuData {
    index: usize,
    /// The local APIC id: where IPIs for this CPU go.
    apic_id: AtomicU32,
    /// Set by the boot CPU before it starts a CPU as this index: from then
    /// on some CPU may run as it.
    assigned: AtomicBool,
    /// Set by the CPU itself once it runs kernel code with its own tables.
    online: AtomicBool,
}

impl CpuData {
    const fn new(index: usize) -> Self {
        Self {
            index,
            apic_id: AtomicU32::new(0),
            assigned: AtomicBool::new(false),
            online: AtomicBool::new(false),
        }
    }
}

static CPUS: [CpuData; MAX_CPUS] = {
    let mut cpus = [const { CpuData::new(0) }; MAX_CPUS];
    let mut index = 0;
    while index < MAX_CPUS {
        cpus[index] = CpuData::new(index);
        index += 1;
    }
    cpus
};

/// Points this CPU's GS base at CPU `index`'s data. Runs first on every
/// CPU, before anything asks which CPU it is.
///
/// # Safety
/// This CPU is the one the kernel starts as `index`, and no other CPU is
/// or will be `index`: per-CPU data (the allocator's caches among it) is
/// used without locks on the strength of that.
pub unsafe fn install(index: usize) {
    assert!(index < MAX_CPUS, "CPU index {index} beyond MAX_CPUS");
    GsBase::write(VirtAddr::from_ptr(&CPUS[index]));
}

/// The running CPU's index (0 is the boot CPU).
#[inline(always)]
pub fn current_index() -> usize {
    let index: usize;
    // SAFETY: `install` ran first on every CPU, so GS points at a live
    // `CpuData` whose first field is its index; the read has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[0]",
            out(reg) index,
            options(nostack, preserves_flags, readonly)
        )
    };
    index
}

/// Records that a CPU is about to be started as CPU `index`.
pub fn assign(index: usize) {
    CPUS[index].assigned.store(true, Ordering::SeqCst);
}

/// Takes back an index whose CPU never started.
///
/// # Safety
/// No CPU runs, or will ever run, as `index` (its start-up was barred):
/// from now on other CPUs use its per-CPU data directly.
pub unsafe fn unassign(index: usize) {
    CPUS[index].assigned.store(false, Ordering::SeqCst);
}

/// Whether no CPU ever ran, or will run, as CPU `index` (an index no CPU
/// was started as): its per-CPU data can be used from anywhere.
pub fn never_assigned(index: usize) -> bool {
    CPUS.get(index)
        .is_some_and(|cpu| !cpu.assigned.load(Ordering::SeqCst))
}

/// Records that the running CPU is online, with the local APIC id CPUID
/// reports: IPIs for its index go there from now on.
pub fn set_online() {
    let cpu = &CPUS[current_index()];
    cpu.assigned.store(true, Ordering::SeqCst);
    cpu.apic_id
        .store(super::apic::id_from_cpuid(), Ordering::SeqCst);
    cpu.online.store(true, Ordering::SeqCst);
}

/// Whether CPU `index` has come up.
pub fn is_online(index: usize) -> bool {
    CPUS.get(index)
        .is_some_and(|cpu| cpu.online.load(Ordering::SeqCst))
}

/// The local APIC id of an online CPU.
pub fn apic_id(index: usize) -> Option<u32> {
    is_online(index).then(|| CPUS[index].apic_id.load(Ordering::SeqCst))
}

/// Indices of every online CPU, in order.
pub fn online() -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).filter(|&index| is_online(index))
}

/// How many CPUs are online.
pub fn online_count() -> usize {
    online().count()
}
