//! The kernel: boots through `bootloader_api`, sets up the CPU and the
//! serial console, reports what it was given, then runs the console shell
//! (or, in a `cargo test` build, runs the in-kernel test suite).

#![no_std]
#![no_main]
// `unsafe` is refused everywhere except in the modules below, which must
// hold hardware or raw-pointer code and say so with `#[allow(unsafe_code)]`
// on their declaration:
// - arch: CPU instructions, descriptor tables, port I/O, the allocator's CPU hooks
// - console::serial: the UART's ports, and the console lock taken back after a panic
// - console::screen::live: the screen's lock taken back after a panic
// - mem::frames: raw physical ranges handed to the allocator, frame traits for paging
// - mem::heap: the `#[global_allocator]` (`GlobalAlloc` is an unsafe trait)
// - mem::paging: page tables edited through the linear map
// - mem::dma: DMA buffers seen as byte slices through the linear map
// - mem::stack::tests: writes to a fresh stack and to its guard page
// - bench: raw heap allocations timed without a collection around them
// - smp: the trampoline and its page tables written below 1 MiB, borrowed
//   jobs handed to other CPUs
// - drivers::fw_cfg: QEMU's configuration ports
// - drivers::pci: configuration ports, and the command bit that enables DMA
// - drivers::ide::channel: claims the channel's ports, enables bus mastering
// - drivers::ide::registers: every IDE port access, starting the DMA engine
// - drivers::ide::dma: the `DmaMemory` contract, memory lent to the DMA engine
// - drivers::ahci::hba: the HBA's memory-mapped registers, handing it memory
// - drivers::ahci::port: lends the port's command pages and read buffers to the HBA
// - drivers::ps2: the keyboard controller's ports
// - shell::commands::power: the empty IDT that makes `reboot`'s triple fault
// - ktest: the test harness resumes on a saved stack after an expected fault
// - kernel_main, one statement: hands the bootloader's linear map to paging
#![deny(unsafe_code)]
#![feature(abi_x86_interrupt)]
#![feature(custom_test_frameworks)]
#![test_runner(crate::ktest::run)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

#[allow(unsafe_code)]
mod arch;
#[cfg(feature = "bench")]
#[allow(unsafe_code)]
mod bench;
mod boot;
mod console;
mod drivers;
mod fatal;
#[cfg(test)]
#[allow(unsafe_code)]
mod ktest;
// The memory API is wider than what boot itself uses; the test suite and
// later subsystems use the rest.
#[cfg_attr(not(test), allow(dead_code))]
mod mem;
#[cfg_attr(
    feature = "bench",
    expect(
        dead_code,
        reason = "the bench kernel exits instead of running the shell"
    )
)]
mod shell;
#[allow(unsafe_code)]
mod smp;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{BootInfo, entry_point};

use arch::x86_64::{cpu, tsc};

/// How the bootloader must prepare the machine for us.
pub const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    // Page tables, the allocator's metadata and DMA buffers are reached
    // through a linear map of all physical memory.
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    // 256 KiB: deep enough for formatting-heavy tests and allocator
    // recursion, small enough that the overflow test reaches the guard page
    // quickly. The bootloader leaves an unmapped guard page below it.
    config.kernel_stack_size = 256 * 1024;
    config
};

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    let serial = console::serial::init();
    let (tsc_hz, tsc_source) = tsc::calibrate();
    console::logger::init(log::LevelFilter::Info);
    console::screen::init(boot_info.framebuffer.take());
    arch::x86_64::init(fatal::exception);

    log::info!(
        "{} {} starting",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION")
    );
    if !serial {
        log::warn!("no UART answered at COM1");
    }
    let mhz = tsc_hz / 1_000_000;
    match tsc_source {
        tsc::Source::Cpuid => log::info!("TSC runs at {mhz} MHz (CPUID leaf 0x15)"),
        tsc::Source::Hypervisor => log::info!("TSC runs at {mhz} MHz (as the hypervisor says)"),
        tsc::Source::Pit { windows, spread } => log::info!(
            "TSC runs at {mhz} MHz (median of {windows} PIT windows; they spread {}.{}%)",
            spread / 10,
            spread % 10
        ),
        tsc::Source::Assumed => log::warn!("PIT did not answer; assuming a {mhz} MHz TSC"),
    }
    if let Some(vendor) = cpu::hypervisor() {
        let name = core::str::from_utf8(&vendor)
            .unwrap_or("?")
            .trim_end_matches('\0');
        log::info!("running under a hypervisor: {name}");
    }
    let facts = boot::record(boot_info);
    log::info!(
        "kernel image offset {:#x}, stack {:#x}..{:#x}, physical memory at {:#x}",
        facts.kernel_image_offset,
        facts.kernel_stack.start,
        facts.kernel_stack.end,
        facts.physical_memory_offset.unwrap_or(0)
    );
    mem::map_summary::print(&boot_info.memory_regions);
    let map = mem::map::sanitise(&boot_info.memory_regions);
    let map = boot::keep_memory_maps(&boot_info.memory_regions, map);
    mem::map::print_sanitised(map);
    let Some(physical_memory_offset) = facts.physical_memory_offset else {
        panic!("the bootloader did not map physical memory (BOOTLOADER_CONFIG asks it to)");
    };
    mem::low::init(map);
    mem::frames::init(map, physical_memory_offset);
    mem::heap::init();
    mem::frames::print_report();
    // SAFETY: the offset is the bootloader's linear map, and from here on
    // only mem::paging edits the page tables.
    #[allow(unsafe_code)]
    unsafe {
        mem::paging::init(physical_memory_offset)
    };
    smp::start(boot_info.rsdp_addr.into_option(), physical_memory_offset);

    kprintln!("boot complete");
    #[cfg(test)]
    test_main();
    #[cfg(feature = "bench")]
    {
        bench::run();
        fatal::stop(arch::x86_64::debug_exit::ExitCode::Success)
    }
    #[cfg(not(feature = "bench"))]
    shell::run()
}
