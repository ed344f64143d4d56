//! Kernel output: the COM1 serial console and the `log` backend on top of it.

pub mod logger;
#[allow(unsafe_code)]
pub mod serial;
pub mod text;

/// Prints to the console without a log header (KTAP lines, tables).
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::serial::print(format_args!($($arg)*)) };
}

/// [`kprint!`] with a newline.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::kprint!("{}\n", format_args!($($arg)*)) };
}
