//! The in-kernel test harness (compiled only into `cargo test` builds).
//!
//! Tests are ordinary functions marked `#[test_case]` anywhere in the
//! kernel; rustc's custom test framework collects them and hands them to
//! [`run`]. A test that must fault is a `#[test_case] static` of type
//! [`ShouldFault`]. Results go out as KTAP version 1 over serial:
//!
//! ```text
//! KTAP version 1
//! 1..3
//! # start 1 mem::map::tests::sizes_print_readably
//! ok 1 mem::map::tests::sizes_print_readably
//! ...
//! 3 passed, 0 failed
//! ```
//!
//! A panic or an unexpected exception inside a test reports that test as
//! `not ok` with the message, reports every later test as not run, and ends
//! the run as a failure. An expected fault reports `ok` and the run goes on
//! from the next test on a fresh stack.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Once;

use crate::arch::x86_64::cpu;
use crate::arch::x86_64::debug_exit::ExitCode;
use crate::arch::x86_64::exception::{ExceptionKind, ExceptionReport};
use crate::console::output::{self, print_emergency};
use crate::console::screen::Ink;
use crate::{fatal, kprintln};

/// Anything the harness can run.
pub trait Testable: Sync {
    /// Name printed in the KTAP result line.
    fn name(&self) -> &'static str;
    /// The exception the test must raise, if it is a should-fault test.
    fn expected_fault(&self) -> Option<&ExpectedFault> {
        None
    }
    fn run(&self);
}

impl<T: Fn() + Sync> Testable for T {
    fn name(&self) -> &'static str {
        let name = core::any::type_name::<T>();
        name.strip_prefix("kernel::").unwrap_or(name)
    }

    fn run(&self) {
        self()
    }
}

/// What a should-fault test must raise.
pub struct ExpectedFault {
    pub kind: ExceptionKind,
    /// If set, the fault address (CR2) must fall in this range.
    pub address: Option<fn() -> core::ops::Range<u64>>,
}

/// A test that passes only if `body` raises the expected exception.
pub struct ShouldFault {
    pub name: &'static str,
    pub expect: ExpectedFault,
    pub body: fn(),
}

impl Testable for ShouldFault {
    fn name(&self) -> &'static str {
        self.name.strip_prefix("kernel::").unwrap_or(self.name)
    }

    fn expected_fault(&self) -> Option<&ExpectedFault> {
        Some(&self.expect)
    }

    fn run(&self) {
        (self.body)()
    }
}

/// Declares a should-fault test: `should_fault!(name, kind, address, body)`
/// where `address` is `None` or `Some(fn() -> Range<u64>)` that CR2 must fall in.
macro_rules! should_fault {
    ($name:ident, $kind:expr, $address:expr, $body:expr) => {
        #[test_case]
        #[allow(non_upper_case_globals)]
        static $name: $crate::ktest::ShouldFault = $crate::ktest::ShouldFault {
            name: concat!(module_path!(), "::", stringify!($name)),
            expect: $crate::ktest::ExpectedFault {
                kind: $kind,
                address: $address,
            },
            body: $body,
        };
    };
}
pub(crate) use should_fault;

static TESTS: Once<&'static [&'static dyn Testable]> = Once::new();
/// 1-based number of the running test; 0 when none runs.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PASSED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);
static SKIPPED: AtomicUsize = AtomicUsize::new(0);
/// Stack pointer at the start of the run: where a test resumes after an
/// expected fault (everything below it belongs to the abandoned test).
static RESUME_STACK: AtomicU64 = AtomicU64::new(0);
/// Whether interrupts were enabled when the run started: a test resumed
/// after an expected fault (taken through an interrupt gate, which masks
/// them) gets them back, so IPIs still reach the boot CPU.
static INTERRUPTS_ENABLED: AtomicBool = AtomicBool::new(false);

/// The custom test framework's runner.
pub fn run(tests: &[&dyn Testable]) -> ! {
    // SAFETY: the slice lives in the frame of the generated `test_main`,
    // which calls us and is never returned to: we diverge, and a resume after
    // an expected fault only rewinds the stack to *our* frame, below it.
    let tests: &'static [&'static dyn Testable] = unsafe { core::mem::transmute(tests) };
    TESTS.call_once(|| tests);
    kprintln!("KTAP version 1");
    kprintln!("1..{}", tests.len());
    RESUME_STACK.store(cpu::stack_pointer(), Ordering::SeqCst);
    INTERRUPTS_ENABLED.store(
        x86_64::instructions::interrupts::are_enabled(),
        Ordering::SeqCst,
    );
    run_from(0)
}

fn run_from(first: usize) -> ! {
    let tests = tests();
    for (index, test) in tests.iter().enumerate().skip(first) {
        let number = index + 1;
        kprintln!("# start {number} {}", test.name());
        CURRENT.store(number, Ordering::SeqCst);
        test.run();
        CURRENT.store(0, Ordering::SeqCst);
        match test.expected_fault() {
            None => report_ok(number, test.name(), None),
            Some(expect) => report_not_ok(
                Path::Normal,
                number,
                test.name(),
                format_args!("expected {:?}, but the test returned", expect.kind),
            ),
        }
    }
    finish(Path::Normal, 0)
}

/// How a report line is printed: normally, or (on the panic and fault
/// paths, where the console lock may be held by the context that died, and
/// every other CPU has been stopped) through the emergency printer.
#[derive(Clone, Copy)]
enum Path {
    Normal,
    Fatal,
}

fn emit(path: Path, ink: Ink, args: fmt::Arguments<'_>) {
    match path {
        Path::Normal => output::print(ink, args),
        Path::Fatal => output::print_emergency(ink, args),
    }
}

fn tests() -> &'static [&'static dyn Testable] {
    TESTS.get().copied().unwrap_or(&[])
}

fn report_ok(number: usize, name: &str, note: Option<fmt::Arguments<'_>>) {
    PASSED.fetch_add(1, Ordering::SeqCst);
    kprintln!("ok {number} {name}");
    if let Some(note) = note {
        kprintln!("# {note}");
    }
}

fn report_not_ok(path: Path, number: usize, name: &str, why: fmt::Arguments<'_>) {
    FAILED.fetch_add(1, Ordering::SeqCst);
    emit(path, Ink::Error, format_args!("not ok {number} {name}\n"));
    // Multi-line reasons stay KTAP diagnostics line by line.
    emit(path, Ink::Error, format_args!("# {}\n", Indented(why)));
}

/// Prefixes every line after the first with `# `.
struct Indented<'a>(fmt::Arguments<'a>);

impl fmt::Display for Indented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Lines<'f, 'g>(&'f mut fmt::Formatter<'g>);
        impl fmt::Write for Lines<'_, '_> {
            fn write_str(&mut self, text: &str) -> fmt::Result {
                for (i, part) in text.split('\n').enumerate() {
                    if i > 0 {
                        self.0.write_str("\n# ")?;
                    }
                    self.0.write_str(part)?;
                }
                Ok(())
            }
        }
        fmt::write(&mut Lines(f), self.0)
    }
}

/// Prints the summary line and leaves QEMU. `not_run` counts tests that
/// never ran because an earlier one died; they fail the run.
fn finish(path: Path, not_run: usize) -> ! {
    let passed = PASSED.load(Ordering::SeqCst);
    let failed = FAILED.load(Ordering::SeqCst);
    let skipped = SKIPPED.load(Ordering::SeqCst) + not_run;
    if skipped > 0 {
        emit(
            path,
            Ink::Plain,
            format_args!("{passed} passed, {failed} failed, {skipped} skipped\n"),
        );
    } else {
        emit(
            path,
            Ink::Plain,
            format_args!("{passed} passed, {failed} failed\n"),
        );
    }
    let code = if failed == 0 && not_run == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    };
    fatal::stop(code)
}

/// Called for every fatal exception: if the running test expects exactly
/// this fault, reports it as passed and continues with the next test.
/// Tests run on the boot CPU: a fault on any other CPU is never expected.
pub fn resume_if_expected(report: &ExceptionReport<'_>) {
    if crate::arch::x86_64::percpu::current_index() != 0 {
        return;
    }
    let number = CURRENT.load(Ordering::SeqCst);
    let Some(test) = number.checked_sub(1).and_then(|index| tests().get(index)) else {
        return;
    };
    let Some(expect) = test.expected_fault() else {
        return;
    };
    if expect.kind != report.kind() {
        return;
    }
    if let Some(range) = expect.address {
        let range = range();
        match report.fault_address {
            Some(address) if range.contains(&address) => {}
            _ => return,
        }
    }
    CURRENT.store(0, Ordering::SeqCst);
    report_ok(
        number,
        test.name(),
        Some(format_args!("raised as expected: {}", report.name)),
    );
    resume_at(number);
}

/// Ends the running test as skipped (`ok N name # SKIP reason`) and goes on
/// with the next one. Call it only from a test body.
pub fn skip(reason: &str) -> ! {
    let number = CURRENT.swap(0, Ordering::SeqCst);
    let name = number
        .checked_sub(1)
        .and_then(|index| tests().get(index))
        .map_or("?", |test| test.name());
    kprintln!("ok {number} {name} # SKIP {reason}");
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    resume_at(number)
}

/// Abandons the faulted test's stack and runs the tests after it.
fn resume_at(next_index: usize) -> ! {
    let stack = RESUME_STACK.load(Ordering::SeqCst) & !0xf;
    // SAFETY: `stack` is the frame of `run` (which never returns) in the kernel
    // stack; all below it was the faulted test's, now dead. `resume_entry`
    // takes rdi and never returns: nothing depends on the abandoned frames.
    unsafe {
        core::arch::asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            stack = in(reg) stack,
            entry = sym resume_entry,
            in("rdi") next_index,
            options(noreturn),
        )
    }
}

extern "sysv64" fn resume_entry(next_index: usize) -> ! {
    if INTERRUPTS_ENABLED.load(Ordering::SeqCst) {
        x86_64::instructions::interrupts::enable();
    }
    run_from(next_index)
}

/// Called on a panic or unexpected exception: fails the running test, if
/// any, reports every later test as not run and ends the run. Returns only
/// when no test is running.
pub fn abort(why: fmt::Arguments<'_>) {
    let number = CURRENT.swap(0, Ordering::SeqCst);
    let tests = tests();
    let Some(test) = number.checked_sub(1).and_then(|index| tests.get(index)) else {
        return;
    };
    report_not_ok(Path::Fatal, number, test.name(), why);
    for (index, later) in tests.iter().enumerate().skip(number) {
        print_emergency(
            Ink::Plain,
            format_args!(
                "not ok {} {} # SKIP not run: test {number} did not finish\n",
                index + 1,
                later.name()
            ),
        );
    }
    finish(Path::Fatal, tests.len() - number)
}

#[cfg(test)]
mod tests {
    use super::Indented;
    use crate::console::text::FixedText;

    #[test_case]
    fn multi_line_diagnostics_stay_diagnostics() {
        let text = FixedText::<64>::format(format_args!(
            "{}",
            Indented(format_args!("page fault\n  rip 0x1"))
        ));
        assert_eq!(&*text, "page fault\n#   rip 0x1");
    }
}
