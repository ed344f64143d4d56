//! Judging a boot by its screen, for machines without a serial port.
//!
//! - `ppm`: QEMU's screendump format
//! - `font`: the kernel's font, to render the text we expect
//! - `find`: finding rendered text in a screendump, pixel-exactly
//! - `boot`: a boot judged by the text on its screen

pub mod boot;
pub mod find;
pub mod font;
pub mod ppm;
#[cfg(test)]
mod tests;
