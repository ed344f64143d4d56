//! Tests of every CPU at work: all CPUs the firmware reports are online,
//! `run_on` runs on its target, jobs run everywhere at once.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::x86_64::cpu_local::KernelCpu;
use crate::arch::x86_64::percpu;
use framekeep::CpuLocal;

use super::job;

#[test_case]
fn every_cpu_the_firmware_reports_is_online() {
    assert_eq!(percpu::online_count(), super::start::reported_cpus());
    assert!(percpu::is_online(0));
}

#[test_case]
fn a_cpu_that_never_answers_is_reported_and_skipped() {
    let mut request = [0; 32];
    if crate::drivers::fw_cfg::injection(&mut request) != Some("phantom-cpu") {
        crate::ktest::skip("no phantom CPU injected (machine flag inject=phantom-cpu)");
    }
    // The phantom got no index: the CPUs after it (and the suite) came up.
    assert_eq!(super::start::not_started(), 1);
    assert_eq!(percpu::online_count(), super::start::reported_cpus());
}

#[test_case]
fn run_on_runs_on_the_target_cpu() {
    for cpu in percpu::online() {
        let mut seen = usize::MAX;
        let mut masked = false;
        assert!(
            KernelCpu::run_on(cpu, &mut || {
                seen = KernelCpu::cpu_id();
                masked = !x86_64::instructions::interrupts::are_enabled();
            }),
            "run_on({cpu}) refused"
        );
        assert_eq!(seen, cpu, "run_on({cpu}) ran on CPU {seen}");
        assert!(masked, "run_on({cpu}) ran with interrupts enabled");
    }
    assert!(!KernelCpu::run_on(percpu::MAX_CPUS, &mut || {}));
}

#[test_case]
fn run_on_refuses_with_interrupts_masked() {
    let Some(other) = percpu::online().find(|&cpu| cpu != 0) else {
        crate::ktest::skip("one CPU: nothing to call");
    };
    let ran = x86_64::instructions::interrupts::without_interrupts(|| {
        KernelCpu::run_on(other, &mut || {})
    });
    assert!(!ran, "a masked caller waited for another CPU");
}

#[test_case]
fn jobs_run_on_every_cpu_at_once() {
    let ran = AtomicUsize::new(0);
    let mask = AtomicUsize::new(0);
    let cpus = job::on_every_cpu(&|cpu| {
        ran.fetch_add(1, Ordering::SeqCst);
        mask.fetch_or(1 << cpu, Ordering::SeqCst);
    });
    assert_eq!(cpus, percpu::online_count());
    assert_eq!(ran.load(Ordering::SeqCst), cpus);
    let expected = percpu::online().fold(0, |mask, cpu| mask | 1 << cpu);
    assert_eq!(mask.load(Ordering::SeqCst), expected);
}
