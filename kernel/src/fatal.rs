//! The end of the line: panics and exceptions nothing can recover from.
//!
//! On any CPU, both first stop every other CPU (see `arch::x86_64::stop`),
//! then print a marker line the host runner looks for (`KERNEL PANIC:` or
//! `KERNEL FAULT:`) naming the CPU, then, inside a test run, let the harness
//! report the test as failed; otherwise they tell QEMU to exit with
//! failure, or halt on real hardware.

use core::panic::PanicInfo;

use crate::arch::x86_64::debug_exit::{self, ExitCode};
use crate::arch::x86_64::exception::ExceptionReport;
use crate::arch::x86_64::{cpu, stop};
use crate::console::output::print_emergency;
use crate::console::screen::Ink;

/// The kernel's fatal-exception handler: `main` hands it to
/// `arch::x86_64::init`, and every exception but the breakpoint trap ends here.
pub fn exception(report: &ExceptionReport<'_>) -> ! {
    #[cfg(test)]
    crate::ktest::resume_if_expected(report);
    let cpu = stop::stop_others();
    print_emergency(
        Ink::Error,
        format_args!("KERNEL FAULT: CPU {cpu}: {report}\n"),
    );
    #[cfg(test)]
    crate::ktest::abort(format_args!("CPU {cpu}: {report}"));
    stop(ExitCode::Failure)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let cpu = stop::stop_others();
    print_emergency(
        Ink::Error,
        format_args!("KERNEL PANIC: CPU {cpu}: {info}\n"),
    );
    #[cfg(test)]
    crate::ktest::abort(format_args!("CPU {cpu}: {info}"));
    stop(ExitCode::Failure)
}

/// Leaves QEMU with `code`; on real hardware, halts every CPU.
pub fn stop(code: ExitCode) -> ! {
    stop::stop_others();
    debug_exit::exit(code);
    cpu::halt_forever()
}
