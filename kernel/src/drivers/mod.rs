//! Device drivers that talk to hardware directly.
//!
//! QEMU's fw_cfg carries requests from the test runner. The rest is what
//! the DMA32 memory path needs for its proof: a PCI
//! configuration-space scan to find devices, a PIIX IDE driver whose
//! bus-master engine writes into caller-provided memory by 32-bit physical
//! address (QEMU `pc`), and a minimal AHCI driver doing the same on `q35`.
//! The drivers poll (no device interrupt is routed to a CPU) and every wait
//! is bounded, so absent or wedged hardware yields an error, never a hang.
//!
//! The PS/2 keyboard ([`ps2`]) is the shell's input on the screen.

// Nothing outside the tests drives PCI and IDE yet; the DMA32 buffer type will.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only the in-kernel tests use AHCI so far")
)]
pub mod ahci;
#[allow(unsafe_code)]
pub mod fw_cfg;
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
