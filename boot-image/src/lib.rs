//! Host side of the kernel: disk images, QEMU, and the in-kernel test runner.
//!
//! The data flows one way: kernel ELF → [`image`] → [`qemu`] command →
//! [`session`] (captured serial) → [`ktap`] report → verdict and exit code.
//! Machines without a serial port are judged by their [`screen`] instead.

#![forbid(unsafe_code)]

pub mod accel;
pub mod console_check;
pub mod image;
pub mod ktap;
pub mod qemu;
pub mod qmp;
pub mod screen;
pub mod session;
pub mod suite;
pub mod usb;
