//! A minimal AHCI (SATA) driver: enough to read sectors by DMA from the
//! first disk of the first AHCI controller. QEMU's `q35` machine has no IDE
//! controller, only the ICH9's AHCI at 00:1f.2, so this is how the DMA32
//! memory path gets its proof there: the HBA fetches its command list and
//! writes its data by physical address, from frames our allocator handed
//! out.
//!
//! One command at a time, no interrupts (completion is polled, every wait
//! bounded), no NCQ, no hot plug. The HBA's registers are reached through
//! the bootloader's linear map of physical memory; QEMU emulates them
//! whatever the cache attributes, a real machine would need an uncached
//! mapping first.
//!
//! - `hba`: finding the controller and every access to its registers
//! - `port`: taking over a port from the firmware and running one read
//! - `command`: the command list entry, FIS and PRD table, as bytes
//! - `error`: what can go wrong

pub mod command;
pub mod error;
#[allow(unsafe_code)]
pub mod hba;
#[allow(unsafe_code)]
pub mod port;
