//! Kernel output: the COM1 serial console, the screen, the fan-out to both
//! (`output`) and the `log` backend on top of it.

pub mod logger;
pub mod output;
pub mod screen;
#[allow(unsafe_code)]
pub mod serial;
pub mod text;

/// Prints to serial and screen without a log header (KTAP lines, tables).
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::output::print($crate::console::screen::Ink::Plain, format_args!($($arg)*)) };
}

/// [`kprint!`] with a newline.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::kprint!("{}\n", format_args!($($arg)*)) };
}
