//! The primary channel of a PIIX-style IDE controller (QEMU `pc`: PIIX3 at
//! class 01/01), read by PIO and by bus-master DMA.
//!
//! It exists to prove the DMA32 memory path with a real device: the
//! bus-master engine takes its descriptor table and buffers by 32-bit
//! physical address, so memory for it must come from below 4 GiB. LBA28
//! reads only. No device interrupt is routed, so completion is polled
//! (the bus-master interrupt bit and the drive status); every wait has a
//! deadline (`tsc::Deadline`), and a failed command resets the channel so the next one starts
//! clean.
//!
//! DMA memory is whatever the caller lends through [`dma::DmaMemory`]; the driver
//! does not care how it was obtained.
//!
//! - `channel`: finding the controller, claiming the channel, reset
//! - `protocol`: ATA commands, drive selection, IDENTIFY and PIO reads
//! - `dma`: lent DMA memory and bus-master reads
//! - `prd`: the PRD table that describes a transfer to the engine
//! - `registers`: every port access, and the fences around the engine
//! - `error`: what can go wrong, decoded

#[allow(unsafe_code)]
pub mod channel;
#[allow(unsafe_code)]
pub mod dma;
pub mod error;
pub mod prd;
pub mod protocol;
#[allow(unsafe_code)]
mod registers;
#[cfg(test)]
mod test_support;
