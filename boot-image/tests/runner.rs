//! The runner judged on serial streams recorded from real QEMU boots of the
//! test kernel (see tests/streams/README.md for how each was made).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use boot_image::ktap::{self, EXIT_FAILURE, EXIT_SUCCESS, Exit};
use boot_image::session;
use boot_image::session::Capture;

fn stream_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/streams")
        .join(name)
}

fn stream(name: &str) -> String {
    let bytes = std::fs::read(stream_path(name)).expect("recorded stream");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn a_passing_uefi_run_passes_despite_firmware_noise() {
    let report = ktap::parse(&stream("pass-uefi.txt"));
    assert!(report.boot_complete);
    let verdict = ktap::judge(&report, Exit::Status(EXIT_SUCCESS));
    assert!(verdict.success(), "{:?}", verdict.problems);
    assert_eq!((verdict.passed, verdict.failed), (report.plan.unwrap(), 0));
    assert_eq!(
        verdict.to_string(),
        format!("{} passed, 0 failed", verdict.passed)
    );
}

#[test]
fn a_failing_test_fails_the_run_and_is_named() {
    let report = ktap::parse(&stream("fail.txt"));
    let verdict = ktap::judge(&report, Exit::Status(EXIT_FAILURE));
    assert!(!verdict.success());
    assert_eq!(verdict.failed, 1);
    assert!(verdict.passed > 0, "the tests after the failure still ran");
    assert!(
        verdict.problems.iter().any(
            |problem| problem.contains("injected_fault_that_never_comes")
                && problem.contains("expected PageFault, but the test returned")
        ),
        "{:?}",
        verdict.problems
    );
}

#[test]
fn a_panic_mid_run_fails_names_the_test_and_the_unrun_ones() {
    let report = ktap::parse(&stream("panic-mid-run.txt"));
    assert!(
        report
            .crash
            .as_deref()
            .is_some_and(|crash| crash.starts_with("KERNEL PANIC:"))
    );
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|result| result.outcome == ktap::Outcome::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].name,
        "mem::map::injected::injected_failing_assertion"
    );
    assert!(
        failed[0]
            .diagnostics
            .iter()
            .any(|line| line.contains("free pages after the churn"))
    );
    let not_run = report
        .results
        .iter()
        .filter(|result| matches!(&result.outcome, ktap::Outcome::Skipped(why) if why.starts_with("not run")))
        .count();
    assert_eq!(not_run, 4);
    // Even a success exit status would not make this a pass.
    for exit in [Exit::Status(EXIT_FAILURE), Exit::Status(EXIT_SUCCESS)] {
        let verdict = ktap::judge(&report, exit);
        assert!(!verdict.success());
        assert!(
            verdict
                .problems
                .iter()
                .any(|problem| problem.contains("KERNEL PANIC"))
        );
    }
}

#[test]
fn a_truncated_plan_fails() {
    // The kernel triple-faulted mid-test: QEMU (with -no-reboot) exits 0.
    let report = ktap::parse(&stream("triple-fault.txt"));
    assert!(report.plan.unwrap() > report.results.len());
    let verdict = ktap::judge(&report, Exit::Status(0));
    assert!(!verdict.success());
    assert!(
        verdict
            .problems
            .iter()
            .any(|problem| problem.starts_with("incomplete: the plan announced"))
    );
    assert!(
        verdict
            .problems
            .iter()
            .any(|problem| problem.contains("QEMU exited with status 0"))
    );
    // The unreported tests are counted as failed.
    assert_eq!(
        verdict.passed + verdict.failed + verdict.skipped,
        report.plan.unwrap()
    );
}

#[test]
fn a_hang_times_out_and_names_the_running_test() {
    let report = ktap::parse(&stream("hang.txt"));
    let verdict = ktap::judge(&report, Exit::TimedOut(25));
    assert!(!verdict.success());
    assert!(
        verdict
            .problems
            .iter()
            .any(|problem| problem.contains("timed out after 25 s")
                && problem.contains("mem::map::injected::injected_hang")),
        "{:?}",
        verdict.problems
    );
}

/// A stand-in for QEMU: prints a recorded stream, then behaves as told.
fn fake_qemu(stream: &str, then: &str) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("cat '{}'; {then}", stream_path(stream).display()));
    command
}

fn run(command: Command, timeout: Duration) -> Capture {
    session::run(command, timeout, &mut std::io::sink(), None).expect("sh runs")
}

#[test]
fn the_session_kills_a_hung_kernel_at_the_deadline() {
    let started = Instant::now();
    let outcome = run(
        fake_qemu("hang.txt", "exec sleep 60"),
        Duration::from_secs(1),
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the runner waited for the hung process"
    );
    assert_eq!(outcome.exit, Exit::TimedOut(1));
    assert_eq!(
        outcome
            .report
            .running
            .as_ref()
            .map(|(_, name)| name.as_str()),
        Some("mem::map::injected::injected_hang")
    );
    assert!(!ktap::judge(&outcome.report, outcome.exit).success());
}

#[test]
fn the_session_passes_exit_statuses_through() {
    let pass = run(
        fake_qemu("pass-uefi.txt", "exit 33"),
        Duration::from_secs(20),
    );
    assert_eq!(pass.exit, Exit::Status(EXIT_SUCCESS));
    assert!(ktap::judge(&pass.report, pass.exit).success());

    let wrong = run(
        fake_qemu(
            "pass-uefi.txt",
            "echo 'qemu: could not open disk' >&2; exit 1",
        ),
        Duration::from_secs(20),
    );
    assert_eq!(wrong.exit, Exit::Status(1));
    assert!(wrong.stderr.contains("could not open disk"));
    assert!(!ktap::judge(&wrong.report, wrong.exit).success());
}

#[test]
fn the_summary_adds_up_machines_and_ends_with_the_plain_line() {
    use boot_image::qemu::Machine;
    use boot_image::suite::print_summary;
    let pass = ktap::judge(
        &ktap::parse(&stream("pass-uefi.txt")),
        Exit::Status(EXIT_SUCCESS),
    );
    let fail = ktap::judge(
        &ktap::parse(&stream("fail.txt")),
        Exit::Status(EXIT_FAILURE),
    );
    let mut out = Vec::new();
    let all_passed = print_summary(
        &[
            (
                "uefi:512M".parse::<Machine>().unwrap().to_string(),
                pass.clone(),
            ),
            (
                "bios:256M".parse::<Machine>().unwrap().to_string(),
                fail.clone(),
            ),
        ],
        &mut out,
    );
    assert!(!all_passed);
    let text = String::from_utf8(out).unwrap();
    let last = text.lines().last().unwrap();
    let skipped = pass.skipped + fail.skipped;
    let expected = format!(
        "{} passed, {} failed",
        pass.passed + fail.passed,
        pass.failed + fail.failed
    );
    let expected = if skipped > 0 {
        format!("{expected}, {skipped} skipped")
    } else {
        expected
    };
    assert_eq!(last, expected);
}
