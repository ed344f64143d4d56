//! Starting the application processors: the boot CPU enables its local
//! APIC, reads the CPUs from the MADT, copies the trampoline and its page
//! tables below 1 MiB, and starts each AP in turn with INIT-SIPI-SIPI,
//! giving it a guarded stack and a double-fault stack of its own. An AP that
//! does not come up in time is reported and skipped.

use core::sync::atomic::{AtomicUsize, Ordering};

use x86_64::instructions::interrupts;
use x86_64::registers::control::{Cr3, Cr4};
use x86_64::structures::paging::{Page, PageTableFlags, PhysFrame, Size4KiB};

use super::ap;
use crate::arch::x86_64::apic::{self, StartSignal};
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::trampoline::{self, PARAMS_OFFSET, Params};
use crate::arch::x86_64::{madt, tsc};
use crate::drivers::fw_cfg;
use crate::kprintln;
use crate::mem::frames::{PAGE_SIZE, phys_to_virt};
use crate::mem::stack::KernelStack;
use crate::mem::{low, paging};

/// Pages of each AP's kernel stack (as the boot CPU's: 256 KiB).
const STACK_PAGES: usize = 64;
/// Pages of each AP's double-fault stack.
const DOUBLE_FAULT_STACK_PAGES: usize = 8;
/// Waits of the start-up protocol (Intel SDM: INIT, 10 ms, SIPI, 200 us,
/// SIPI), then how long an AP may take to claim the trampoline and to
/// report online.
const INIT_WAIT_US: u64 = 10_000;
const SIPI_WAIT_US: u64 = 200;
const CLAIM_WAIT_US: u64 = 500_000;
const ONLINE_WAIT_US: u64 = 2_000_000;

/// Enabled CPUs the MADT lists (1 without a usable MADT).
static REPORTED: AtomicUsize = AtomicUsize::new(1);

/// How many CPUs the firmware reports that the kernel can start (that fit
/// in `MAX_CPUS`, with APIC ids the APIC mode can address).
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "a test compares it with the CPUs online")
)]
pub fn reported_cpus() -> usize {
    REPORTED.load(Ordering::SeqCst)
}

/// Brings every CPU the firmware reports online and prints the fixed line
/// `N CPUs online: APIC ids ...`. Without a usable MADT (or APIC) the
/// kernel runs on the boot CPU alone, with a warning.
pub fn start(rsdp: Option<u64>, physical_memory_offset: u64) {
    let boot_apic_id = apic::id_from_cpuid();
    let mode = match enable_boot_apic() {
        Ok(mode) => {
            log::info!("local APIC in {mode:?} mode");
            mode
        }
        Err(why) => {
            log::warn!("local APIC unusable ({why}): running on one CPU");
            percpu::set_online();
            print_online();
            return;
        }
    };
    percpu::set_online();
    // IPIs from other CPUs (calls, shootdowns) must reach us from now on.
    interrupts::enable();
    // SAFETY: the RSDP is the bootloader's, and the offset its linear map.
    let cpus = match unsafe { madt::cpus(rsdp.unwrap_or(0), physical_memory_offset) } {
        Ok(cpus) => cpus,
        Err(why) => {
            log::warn!("no usable MADT ({why}): running on one CPU");
            print_online();
            return;
        }
    };
    let reachable = cpus.ids().iter().filter(|&&id| apic::reachable(mode, id));
    REPORTED.store(reachable.count(), Ordering::SeqCst);
    if cpus.beyond_max > 0 {
        log::warn!(
            "{} CPUs beyond the kernel's {MAX_CPUS} are left stopped",
            cpus.beyond_max
        );
    }
    // The test runner may ask for a CPU that does not exist, to prove that
    // one that never answers is reported and skipped.
    let mut request = [0; 32];
    let phantom =
        (fw_cfg::injection(&mut request) == Some("phantom-cpu")).then_some(PHANTOM_APIC_ID);
    let unreachable = cpus
        .ids()
        .iter()
        .filter(|&&id| !apic::reachable(mode, id))
        .count();
    if unreachable > 0 {
        log::warn!("{unreachable} CPUs have APIC ids this APIC mode cannot address; left stopped");
    }
    // It goes first, so the real CPUs after it show that boot goes on.
    let others = phantom.into_iter().chain(
        cpus.ids()
            .iter()
            .copied()
            .filter(move |&id| id != boot_apic_id && apic::reachable(mode, id)),
    );
    if others.clone().next().is_some() {
        match Trampoline::install() {
            Some(mut trampoline) => {
                let mut next_index = 1;
                for apic_id in others {
                    if trampoline.start(next_index, apic_id) {
                        next_index += 1;
                    } else {
                        NOT_STARTED.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            None => log::warn!("no trampoline: running on one CPU"),
        }
    }
    print_online();
}

/// An APIC id no QEMU machine of the suite has (0xff is xAPIC broadcast).
const PHANTOM_APIC_ID: u32 = 0xfe;

/// CPUs that were tried and did not start.
static NOT_STARTED: AtomicUsize = AtomicUsize::new(0);

/// How many CPUs were tried and skipped because they did not start.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "a test checks the phantom CPU was skipped")
)]
pub fn not_started() -> usize {
    NOT_STARTED.load(Ordering::SeqCst)
}

/// Maps the xAPIC page if the CPU has no x2APIC, then enables the boot
/// CPU's APIC.
fn enable_boot_apic() -> Result<apic::Mode, &'static str> {
    if !apic::has_x2apic() {
        let virt = paging::reserve_virtual(PAGE_SIZE, PAGE_SIZE)
            .map_err(|_| "no virtual space for the xAPIC page")?;
        let flags = PageTableFlags::PRESENT
            | PageTableFlags::WRITABLE
            | PageTableFlags::NO_CACHE
            | PageTableFlags::WRITE_THROUGH
            | PageTableFlags::NO_EXECUTE;
        let frame = PhysFrame::<Size4KiB>::containing_address(x86_64::PhysAddr::new(
            apic::mmio_physical_base(),
        ));
        paging::map(Page::containing_address(virt), frame, flags)
            .map_err(|_| "cannot map the xAPIC page")?;
        // SAFETY: just mapped, uncached, to the xAPIC page, and never unmapped.
        unsafe { apic::set_mmio(virt.as_u64()) };
    }
    apic::enable()
}

/// The fixed line scripts wait for: `N CPUs online: APIC ids 0 1 2 3`.
fn print_online() {
    let count = percpu::online_count();
    let plural = if count == 1 { "CPU" } else { "CPUs" };
    crate::kprint!("{count} {plural} online: APIC ids");
    for cpu in percpu::online() {
        crate::kprint!(" {}", percpu::apic_id(cpu).unwrap_or(0));
    }
    kprintln!();
}

/// The trampoline page and its three page tables, below 1 MiB.
struct Trampoline {
    /// Physical address of the code page (a multiple of 4 KiB below 1 MiB).
    page: u64,
}

impl Trampoline {
    /// Copies the code and fills in the parameters that do not change
    /// between start-ups.
    fn install() -> Option<Self> {
        // The identity map takes virtual 0..2 MiB: the AP entry must not be there.
        if (ap::entry as *const () as u64) < 2 << 20 {
            log::warn!("the kernel lies in the first 2 MiB, which the trampoline needs");
            return None;
        }
        let Some(page) = low::take(4) else {
            log::warn!("no usable pages below 1 MiB for the trampoline");
            return None;
        };
        let code = trampoline::code();
        let (protected, long) = trampoline::entry_offsets();
        // SAFETY: the four pages below 1 MiB were taken from `low` for good
        // and are RAM mapped by the linear map; nothing else uses them.
        unsafe {
            let base = phys_to_virt(framekeep::PhysAddr(page)).as_mut_ptr::<u8>();
            core::ptr::write_bytes(base, 0, PAGE_SIZE as usize);
            core::ptr::copy_nonoverlapping(code.as_ptr(), base, code.len());
            let params = base.add(PARAMS_OFFSET).cast::<Params>();
            (*params).gdt = trampoline::GDT;
            let gdt_base = page as usize + PARAMS_OFFSET + core::mem::offset_of!(Params, gdt);
            (*params).gdtr = [
                (core::mem::size_of_val(&trampoline::GDT) - 1) as u16,
                gdt_base as u16,
                (gdt_base >> 16) as u16,
            ];
            (*params).protected_entry = page as u32 + protected;
            (*params).protected_selector = trampoline::CODE32;
            (*params).long_entry = page as u32 + long;
            (*params).long_selector = trampoline::CODE64;
            (*params).trampoline_cr3 = (page + PAGE_SIZE) as u32;
            (*params).kernel_cr3 = Cr3::read().0.start_address().as_u64();
            (*params).entry = ap::entry as *const () as u64;
        }
        ap::BOOT_CR4.store(Cr4::read_raw(), Ordering::SeqCst);
        log::info!("AP trampoline at {page:#x}");
        Some(Self { page })
    }

    /// Builds the trampoline's page tables (the three pages after the
    /// code) as a copy of the kernel's, except that virtual 0..2 MiB maps
    /// physical 0..2 MiB, so the trampoline survives turning paging on.
    /// Copied before each start-up, so mappings made since (the AP's
    /// stacks) are seen.
    fn copy_kernel_tables(&self) -> bool {
        let present_writable = (PageTableFlags::PRESENT | PageTableFlags::WRITABLE).bits();
        let huge = PageTableFlags::HUGE_PAGE.bits();
        let address = |entry: u64| entry & 0x000f_ffff_ffff_f000;
        let kernel_level4 = Cr3::read().0.start_address().as_u64();
        let (level4, level3, level2) = (
            self.page + PAGE_SIZE,
            self.page + 2 * PAGE_SIZE,
            self.page + 3 * PAGE_SIZE,
        );
        // SAFETY: the kernel's tables are read through the linear map; the
        // trampoline's three are ours alone, and no AP is using them now.
        unsafe {
            let table = |phys: u64| phys_to_virt(framekeep::PhysAddr(phys)).as_mut_ptr::<u64>();
            let present = PageTableFlags::PRESENT.bits();
            let copy_or_clear = |source: u64, target: u64| match source & present {
                0 => core::ptr::write_bytes(table(target), 0, 512),
                _ => core::ptr::copy_nonoverlapping(table(address(source)), table(target), 512),
            };
            let kernel_level3 = table(kernel_level4).read();
            copy_or_clear(kernel_level4 | present, level4);
            copy_or_clear(kernel_level3, level3);
            if table(level3).read() & huge != 0 {
                log::warn!(
                    "the kernel maps its first GiB with a huge page; the trampoline needs it"
                );
                return false;
            }
            copy_or_clear(table(level3).read(), level2);
            table(level2).write(huge | present_writable); // physical 0..2 MiB
            table(level3).write(level2 | present_writable);
            table(level4).write(level3 | present_writable);
        }
        true
    }

    fn params(&mut self) -> &mut Params {
        // SAFETY: the parameter block lies in the trampoline page, which
        // only the boot CPU writes (while no AP reads it, between start-ups)
        // and is mapped by the linear map.
        unsafe {
            &mut *phys_to_virt(framekeep::PhysAddr(self.page + PARAMS_OFFSET as u64))
                .as_mut_ptr::<Params>()
        }
    }

    /// Starts the CPU with APIC id `apic_id` as CPU `index`; whether the
    /// index was used (the CPU came up, or took its stacks and must keep
    /// them).
    fn start(&mut self, index: usize, apic_id: u32) -> bool {
        if index >= MAX_CPUS {
            return false;
        }
        let (stack, double_fault_stack) = match (
            KernelStack::new(STACK_PAGES),
            KernelStack::new(DOUBLE_FAULT_STACK_PAGES),
        ) {
            (Ok(stack), Ok(double_fault_stack)) => (stack, double_fault_stack),
            _ => {
                log::warn!("CPU with APIC id {apic_id}: no memory for its stacks; skipped");
                return false;
            }
        };
        if !self.copy_kernel_tables() {
            return false;
        }
        ap::DOUBLE_FAULT_STACKS[index].store(double_fault_stack.top().as_u64(), Ordering::SeqCst);
        let vector = (self.page >> 12) as u8;
        percpu::assign(index);
        let params = self.params();
        params.stack_top = stack.top().as_u64();
        params.cpu_index = index as u64;
        params.claimed.store(0, Ordering::SeqCst);
        // SAFETY: the CPU with this id is not running kernel code (it was
        // never started, or it is the phantom of a test), and the page
        // holds the trampoline.
        unsafe {
            apic::send_start(StartSignal::Init, apic_id);
            tsc::delay_micros(INIT_WAIT_US);
            apic::send_start(StartSignal::Startup(vector), apic_id);
            tsc::delay_micros(SIPI_WAIT_US);
            if params.claimed.load(Ordering::SeqCst) == 0 {
                apic::send_start(StartSignal::Startup(vector), apic_id);
            }
        }
        let claimed = tsc::poll_until(CLAIM_WAIT_US, || params.claimed.load(Ordering::SeqCst) != 0);
        // Bar a late AP from taking these parameters: it halts on a claimed block.
        if !claimed
            && params
                .claimed
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            log::warn!("CPU with APIC id {apic_id} did not start; skipped");
            // SAFETY: the CPU never claimed the parameters, and now never
            // can: nothing runs as `index`.
            unsafe { percpu::unassign(index) };
            return false;
        }
        // From here the AP owns its stacks for good.
        core::mem::forget(stack);
        core::mem::forget(double_fault_stack);
        if !tsc::poll_until(ONLINE_WAIT_US, || percpu::is_online(index)) {
            log::warn!("CPU with APIC id {apic_id} started but did not come online; skipped");
        }
        true
    }
}
