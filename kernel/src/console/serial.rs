//! COM1 through `uart_16550`, behind a spin lock taken with interrupts masked.
//!
//! Every write is bounded: if the transmitter does not drain within
//! [`STALL_LIMIT`] polls, the port is declared dead and later output is
//! dropped, so a machine without a UART (most laptops) never hangs here.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

use crate::arch::x86_64::cpu;

const COM1: u16 = 0x3f8;
/// Polls of a full transmitter before giving up on the port (far longer than
/// a 16-byte FIFO takes to drain at 115200 baud).
const STALL_LIMIT: u32 = 1_000_000;

struct Serial {
    uart: Option<Uart16550<PioBackend>>,
}

impl Serial {
    fn write_bytes(&mut self, mut bytes: &[u8]) {
        let Some(uart) = self.uart.as_mut() else {
            return;
        };
        let mut stalls = 0;
        while !bytes.is_empty() {
            match uart.send_bytes(bytes) {
                0 => {
                    stalls += 1;
                    if stalls == STALL_LIMIT {
                        self.uart = None;
                        return;
                    }
                    core::hint::spin_loop();
                }
                sent => {
                    bytes = &bytes[sent..];
                    stalls = 0;
                }
            }
        }
    }
}

impl Write for Serial {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Terminals want CR LF; the host runner strips the CR again.
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.write_bytes(b"\r\n");
            }
            self.write_bytes(line.as_bytes());
        }
        Ok(())
    }
}

static SERIAL: Mutex<Serial> = Mutex::new(Serial { uart: None });

/// Probes and configures COM1; returns whether a UART answered.
pub fn init() -> bool {
    // SAFETY: COM1's eight I/O ports belong to this driver alone.
    let uart = unsafe { Uart16550::new_port(COM1) };
    let uart = uart.ok().and_then(|mut uart| {
        let config = Config {
            baud_rate: BaudRate::Baud115200,
            ..Config::default()
        };
        // init() first checks the scratch register, so an absent UART fails here.
        uart.init(config).ok().map(|()| uart)
    });
    let present = uart.is_some();
    cpu::without_interrupts(|| SERIAL.lock().uart = uart);
    present
}

/// Writes formatted text; used by `kprint!` and the logger.
pub fn print(args: fmt::Arguments<'_>) {
    cpu::without_interrupts(|| {
        let _ = SERIAL.lock().write_fmt(args);
    });
}

/// One received byte, if the UART has one; never waits. `None` too when
/// no UART answered at boot (the shell then listens to the keyboard only).
#[cfg_attr(
    feature = "bench",
    expect(
        dead_code,
        reason = "the bench kernel exits instead of running the shell"
    )
)]
pub fn read_byte() -> Option<u8> {
    cpu::without_interrupts(|| SERIAL.lock().uart.as_mut()?.try_receive_byte().ok())
}

/// Writes from a context that may have interrupted the lock holder on this
/// CPU (panic, fatal exception): waits a bounded time, then takes the port.
pub fn print_emergency(args: fmt::Arguments<'_>) {
    cpu::without_interrupts(|| {
        for _ in 0..STALL_LIMIT {
            if let Some(mut serial) = SERIAL.try_lock() {
                let _ = serial.write_fmt(args);
                return;
            }
            core::hint::spin_loop();
        }
        // The holder is stopped for good: a context on this CPU that the
        // panic or exception interrupted and that never resumes, or another
        // CPU, halted by the stop NMI before any report is printed.
        // SAFETY: so nobody else is inside the critical section.
        unsafe { SERIAL.force_unlock() };
        let _ = SERIAL.lock().write_fmt(args);
    });
}
