//! Where everything the kernel prints goes: the serial port and the screen.
//! Serial first, so a fault while drawing still leaves the line on serial.
//! Each has its own lock: a slow UART never holds up the screen's users.

use core::fmt;

use super::screen::{self, Ink};
use super::serial;

/// Prints `args` in `ink` (the screen's colour; serial has none).
pub fn print(ink: Ink, args: fmt::Arguments<'_>) {
    serial::print(args);
    screen::print(ink, args);
}

/// [`print`] from a panic or fatal exception, which may have interrupted
/// a lock holder: each device waits a bounded time, then is taken over.
pub fn print_emergency(ink: Ink, args: fmt::Arguments<'_>) {
    serial::print_emergency(args);
    screen::print_emergency(ink, args);
}
