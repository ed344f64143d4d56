//! The legacy 8259 PICs. We do not use them, but firmware may leave them
//! unmasked with IRQs mapped onto CPU exception vectors (IRQ0 on vector 8
//! under BIOS), so they are masked before anything could enable interrupts.

use x86_64::instructions::port::PortWriteOnly;

/// Masks every line on both PICs.
pub fn mask_all() {
    let mut master_mask = PortWriteOnly::<u8>::new(0x21);
    let mut slave_mask = PortWriteOnly::<u8>::new(0xa1);
    // SAFETY: 0x21/0xa1 are the PIC data (mask) ports; writing 0xff only masks
    // interrupt lines and is harmless on machines without a legacy PIC.
    unsafe {
        master_mask.write(0xff);
        slave_mask.write(0xff);
    }
}
