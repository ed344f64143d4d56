//! What an exception handler learned from the CPU, as plain data: the
//! vector, the interrupt stack frame, the error code and CR2, decoded into
//! words when printed. The IDT's handlers build it; whoever handles fatal
//! exceptions (and the test harness) reads it.

use core::fmt;
use x86_64::structures::idt::{InterruptStackFrame, PageFaultErrorCode};

/// What the CPU told us about an exception, ready to print.
pub struct ExceptionReport<'a> {
    pub vector: u8,
    pub name: &'static str,
    pub frame: &'a InterruptStackFrame,
    pub error_code: Option<u64>,
    /// CR2 for page faults.
    pub fault_address: Option<u64>,
}

/// The kinds of exception a test may expect (see `ktest::ShouldFault`).
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only should-fault tests match on kinds")
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionKind {
    PageFault,
    DoubleFault,
    GeneralProtection,
    InvalidOpcode,
    DivideError,
    Other,
}

impl ExceptionReport<'_> {
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only should-fault tests match on kinds")
    )]
    pub fn kind(&self) -> ExceptionKind {
        match self.vector {
            0 => ExceptionKind::DivideError,
            6 => ExceptionKind::InvalidOpcode,
            8 => ExceptionKind::DoubleFault,
            13 => ExceptionKind::GeneralProtection,
            14 => ExceptionKind::PageFault,
            _ => ExceptionKind::Other,
        }
    }
}

impl fmt::Display for ExceptionReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frame = self.frame;
        write!(f, "{} (vector {})", self.name, self.vector)?;
        if let Some(address) = self.fault_address {
            write!(f, " (cr2 {address:#x})")?;
        }
        write!(
            f,
            "\n  rip {:#x}  cs {:#x}  rflags {:#x}  rsp {:#x}  ss {:#x}",
            frame.instruction_pointer.as_u64(),
            frame.code_segment.0,
            frame.cpu_flags.bits(),
            frame.stack_pointer.as_u64(),
            frame.stack_segment.0,
        )?;
        match (self.vector, self.error_code) {
            (14, Some(code)) => write!(f, "\n  error code {code:#x}: {}", PageFaultCause(code)),
            (10..=13, Some(code)) if code != 0 => {
                write!(f, "\n  error code {code:#x}: {}", SelectorErrorCode(code))
            }
            (_, Some(code)) => write!(f, "\n  error code {code:#x}"),
            (_, None) => Ok(()),
        }
    }
}

/// Decodes a page-fault error code into words.
struct PageFaultCause(u64);

impl fmt::Display for PageFaultCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = PageFaultErrorCode::from_bits_truncate(self.0);
        let present = code.contains(PageFaultErrorCode::PROTECTION_VIOLATION);
        f.write_str(if present {
            "protection violation"
        } else {
            "page not present"
        })?;
        f.write_str(if code.contains(PageFaultErrorCode::INSTRUCTION_FETCH) {
            ", instruction fetch"
        } else if code.contains(PageFaultErrorCode::CAUSED_BY_WRITE) {
            ", write"
        } else {
            ", read"
        })?;
        f.write_str(if code.contains(PageFaultErrorCode::USER_MODE) {
            ", user mode"
        } else {
            ", kernel mode"
        })?;
        for (flag, words) in [
            (
                PageFaultErrorCode::MALFORMED_TABLE,
                ", reserved bit set in a page table",
            ),
            (PageFaultErrorCode::PROTECTION_KEY, ", protection key"),
            (PageFaultErrorCode::SHADOW_STACK, ", shadow stack"),
            (PageFaultErrorCode::SGX, ", SGX"),
        ] {
            if code.contains(flag) {
                f.write_str(words)?;
            }
        }
        Ok(())
    }
}

/// Decodes the selector error code of #TS, #NP, #SS and #GP.
struct SelectorErrorCode(u64);

impl fmt::Display for SelectorErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = match (self.0 >> 1) & 0b11 {
            0b00 => "GDT",
            0b10 => "LDT",
            _ => "IDT",
        };
        write!(f, "{table} selector index {}", (self.0 >> 3) & 0x1fff)?;
        if self.0 & 1 != 0 {
            f.write_str(", external event")?;
        }
        Ok(())
    }
}
