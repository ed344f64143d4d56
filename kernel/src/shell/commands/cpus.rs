//! `cpus`: which CPUs run the kernel.

use crate::arch::x86_64::{percpu, tsc};
use crate::kprintln;

pub fn list() {
    let me = percpu::current_index();
    kprintln!(
        "{} CPUs online (TSC at {} MHz):",
        percpu::online_count(),
        tsc::frequency() / 1_000_000
    );
    kprintln!("  {:>3}  {:>7}", "cpu", "apic id");
    for index in percpu::online() {
        let apic = percpu::apic_id(index).unwrap_or(u32::MAX);
        let note = match (index == 0, index == me) {
            (true, true) => "  boot CPU, runs the shell",
            (true, false) => "  boot CPU",
            (false, true) => "  runs the shell",
            (false, false) => "",
        };
        kprintln!("  {index:>3}  {apic:>7}{note}");
    }
}
