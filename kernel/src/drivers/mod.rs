//! Device drivers that talk to hardware directly.
//!
//! For now this is what the DMA32 memory path needs for its proof: a PCI
//! configuration-space scan to find devices, and a PIIX IDE driver whose
//! bus-master engine writes into caller-provided memory by 32-bit physical
//! address. The drivers poll (interrupts stay off in this kernel) and every
//! wait is bounded, so absent or wedged hardware yields an error, never a hang.
//!
//! The PS/2 keyboard ([`ps2`]) is the shell's input on the screen.

// Nothing outside the tests drives PCI and IDE yet; the DMA32 buffer type will.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only the in-kernel tests use IDE so far")
)]
pub mod ide;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only the in-kernel tests use PCI so far")
)]
#[allow(unsafe_code)]
pub mod pci;
#[cfg_attr(
    feature = "bench",
    expect(
        dead_code,
        reason = "the bench kernel exits instead of running the shell"
    )
)]
#[allow(unsafe_code)]
pub mod ps2;
