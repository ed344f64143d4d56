//! PCI configuration space through configuration mechanism #1 (the
//! address/data port pair 0xCF8/0xCFC), which every PC chipset and QEMU
//! machine implements; enough to find devices by class, read their BARs and
//! switch on I/O decoding and bus mastering. ECAM (memory-mapped config
//! space) would need the ACPI MCFG table, which we do not parse yet.
//!
//! The address and data accesses form a pair that must not interleave with
//! another pair, so they run under a lock with interrupts masked.

use core::fmt;
use spin::Mutex;
use x86_64::instructions::port::{PortReadOnly, PortWriteOnly};

use crate::arch::x86_64::cpu;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Serialises address/data pairs on 0xCF8/0xCFC.
static CONFIG: Mutex<()> = Mutex::new(());

// Offsets into the common part of the configuration header.
const VENDOR_ID: u8 = 0x00;
const DEVICE_ID: u8 = 0x02;
const COMMAND: u8 = 0x04;
const REVISION: u8 = 0x08;
const PROG_IF: u8 = 0x09;
const SUBCLASS: u8 = 0x0a;
const CLASS: u8 = 0x0b;
const HEADER_TYPE: u8 = 0x0e;
const BAR0: u8 = 0x10;

/// Header type bit 7: the device implements functions 1..=7 as well.
const MULTI_FUNCTION: u8 = 0x80;
/// What a read from a function that does not exist returns.
const NO_VENDOR: u16 = 0xffff;

/// Bus, device and function of one PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddress {
    bus: u8,
    device: u8,
    function: u8,
}

impl PciAddress {
    /// `None` unless `device < 32` and `function < 8`.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Self> {
        if device < 32 && function < 8 {
            Some(Self {
                bus,
                device,
                function,
            })
        } else {
            None
        }
    }

    pub const fn bus(self) -> u8 {
        self.bus
    }

    pub const fn device(self) -> u8 {
        self.device
    }

    pub const fn function(self) -> u8 {
        self.function
    }

    /// The value for CONFIG_ADDRESS: enable bit, bus, device, function and
    /// the dword-aligned register offset.
    const fn config_address(self, offset: u8) -> u32 {
        0x8000_0000
            | (self.bus as u32) << 16
            | (self.device as u32) << 11
            | (self.function as u32) << 8
            | (offset & 0xfc) as u32
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Reads the configuration dword containing `offset` (rounded down to 4).
pub fn read_u32(address: PciAddress, offset: u8) -> u32 {
    cpu::without_interrupts(|| {
        let _pair = CONFIG.lock();
        // SAFETY: 0xCF8/0xCFC are the chipset's configuration ports, used only
        // here under the CONFIG lock; selecting a register and reading it
        // has no side effect on the standard header registers we read.
        unsafe {
            PortWriteOnly::<u32>::new(CONFIG_ADDRESS).write(address.config_address(offset));
            PortReadOnly::<u32>::new(CONFIG_DATA).read()
        }
    })
}

/// Reads the configuration word at `offset` (rounded down to 2).
pub fn read_u16(address: PciAddress, offset: u8) -> u16 {
    (read_u32(address, offset) >> ((offset & 2) * 8)) as u16
}

/// Reads the configuration byte at `offset`.
pub fn read_u8(address: PciAddress, offset: u8) -> u8 {
    (read_u32(address, offset) >> ((offset & 3) * 8)) as u8
}

/// Writes the configuration word at `offset` (rounded down to 2) with a
/// 16-bit data-port access, so the neighbouring word (for the command
/// register: the status register, whose bits clear when written with 1) is
/// left alone.
///
/// # Safety
/// The write must not make the device touch memory the caller does not own:
/// no BAR moved onto RAM, no bus mastering for a device whose DMA engine is
/// programmed with memory someone else owns.
pub unsafe fn write_u16(address: PciAddress, offset: u8, value: u16) {
    cpu::without_interrupts(|| {
        let _pair = CONFIG.lock();
        // SAFETY: the ports as in `read_u32`; the caller vouches for the
        // effect of the write itself.
        unsafe {
            PortWriteOnly::<u32>::new(CONFIG_ADDRESS).write(address.config_address(offset));
            PortWriteOnly::<u16>::new(CONFIG_DATA + u16::from(offset & 2)).write(value);
        }
    })
}

/// Bits of the command register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command(pub u16);

impl Command {
    /// Respond to accesses in the I/O BARs.
    pub const IO_SPACE: Self = Self(1 << 0);
    /// The device may start DMA transfers.
    pub const BUS_MASTER: Self = Self(1 << 2);

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Command {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// One base address register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// A range of I/O ports starting at `port`.
    Io { port: u32 },
    /// A range of physical memory starting at `address`.
    Memory {
        address: u64,
        width: MemoryWidth,
        prefetchable: bool,
    },
}

/// How many address bits a memory BAR has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryWidth {
    /// One register, anywhere below 4 GiB.
    Bits32,
    /// Legacy type 01: below 1 MiB.
    Below1MiB,
    /// Two registers; the next BAR index holds the high half.
    Bits64,
}

/// Why a BAR could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// The header type has fewer BARs than that.
    NoSuchBar { index: u8, count: u8 },
    /// A 64-bit memory BAR in the last slot has no register for its high half.
    TruncatedBits64 { index: u8 },
    /// Memory BAR type 11 is reserved.
    ReservedType { index: u8, raw: u32 },
}

impl fmt::Display for BarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSuchBar { index, count } => {
                write!(
                    f,
                    "BAR{index} does not exist (this header type has {count})"
                )
            }
            Self::TruncatedBits64 { index } => {
                write!(
                    f,
                    "BAR{index} is 64-bit but is the last BAR, so its high half is missing"
                )
            }
            Self::ReservedType { index, raw } => {
                write!(
                    f,
                    "BAR{index} = {raw:#010x} has the reserved memory type 11"
                )
            }
        }
    }
}

/// Decodes a BAR from its register and (for 64-bit memory BARs) the next
/// one. `Ok(None)`: the BAR is not implemented (reads as zero).
fn decode_bar(
    index: u8,
    low: u32,
    high: impl FnOnce() -> Option<u32>,
) -> Result<Option<Bar>, BarError> {
    if low & 1 == 1 {
        let port = low & !0x3;
        return Ok((port != 0).then_some(Bar::Io { port }));
    }
    let prefetchable = low & 0x8 != 0;
    let base = u64::from(low & !0xf);
    let (address, width) = match (low >> 1) & 0b11 {
        0b00 => (base, MemoryWidth::Bits32),
        0b01 => (base, MemoryWidth::Below1MiB),
        0b10 => {
            let high = high().ok_or(BarError::TruncatedBits64 { index })?;
            (base | u64::from(high) << 32, MemoryWidth::Bits64)
        }
        _ => return Err(BarError::ReservedType { index, raw: low }),
    };
    Ok((address != 0).then_some(Bar::Memory {
        address,
        width,
        prefetchable,
    }))
}

/// A PCI function that answered, with its identification registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    /// Layout (bits 0..7) and the multi-function flag (bit 7).
    pub header_type: u8,
}

impl PciFunction {
    /// Reads the function at `address`; `None` if nothing answers there.
    pub fn probe(address: PciAddress) -> Option<Self> {
        let vendor_id = read_u16(address, VENDOR_ID);
        if vendor_id == NO_VENDOR {
            return None;
        }
        Some(Self {
            address,
            vendor_id,
            device_id: read_u16(address, DEVICE_ID),
            class: read_u8(address, CLASS),
            subclass: read_u8(address, SUBCLASS),
            prog_if: read_u8(address, PROG_IF),
            revision: read_u8(address, REVISION),
            header_type: read_u8(address, HEADER_TYPE),
        })
    }

    /// Whether functions 1..=7 of this device may exist (meaningful on function 0).
    pub fn is_multi_function(&self) -> bool {
        self.header_type & MULTI_FUNCTION != 0
    }

    /// How many BARs the header layout has: 6 for devices, 2 for PCI-PCI
    /// bridges, none for CardBus bridges and unknown layouts.
    pub fn bar_count(&self) -> u8 {
        match self.header_type & !MULTI_FUNCTION {
            0 => 6,
            1 => 2,
            _ => 0,
        }
    }

    /// Reads and decodes BAR `index` as the firmware programmed it (the
    /// size is not probed: that would mean writing the BAR).
    pub fn bar(&self, index: u8) -> Result<Option<Bar>, BarError> {
        let count = self.bar_count();
        if index >= count {
            return Err(BarError::NoSuchBar { index, count });
        }
        let offset = BAR0 + 4 * index;
        let low = read_u32(self.address, offset);
        decode_bar(index, low, || {
            (index + 1 < count).then(|| read_u32(self.address, offset + 4))
        })
    }

    /// The command register.
    pub fn command(&self) -> Command {
        Command(read_u16(self.address, COMMAND))
    }

    /// Sets `bits` in the command register, leaving the others as they are.
    ///
    /// # Safety
    /// Turning on decoding or bus mastering must not let the device touch
    /// memory the caller does not own: its BARs must not overlap RAM, and if
    /// [`Command::BUS_MASTER`] is set, its DMA engines must be idle or
    /// programmed with memory the caller owns.
    pub unsafe fn enable(&self, bits: Command) {
        let command = self.command();
        if !command.contains(bits) {
            // SAFETY: the caller vouches for the newly enabled decoding.
            unsafe { write_u16(self.address, COMMAND, (command | bits).0) };
        }
    }
}

impl fmt::Display for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x} rev {:02x} header {:02x}",
            self.address,
            self.vendor_id,
            self.device_id,
            self.class,
            self.subclass,
            self.prog_if,
            self.revision,
            self.header_type
        )?;
        if let Some(name) = class_name(self.class, self.subclass) {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

/// Names for the classes a PC emulator shows; `None` for the rest.
fn class_name(class: u8, subclass: u8) -> Option<&'static str> {
    Some(match (class, subclass) {
        (0x01, 0x01) => "IDE controller",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x08) => "NVM controller",
        (0x02, 0x00) => "Ethernet controller",
        (0x03, 0x00) => "VGA controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI-PCI bridge",
        (0x06, 0x80) => "other bridge",
        (0x0c, 0x03) => "USB controller",
        (0x0c, 0x05) => "SMBus controller",
        _ => return None,
    })
}

/// Every function on every bus, found by brute force: all 256 buses, 32
/// devices each, and functions 1..=7 only where function 0 exists and sets
/// the multi-function bit (single-function devices may decode their
/// function 0 at every function number).
pub fn scan() -> Scan {
    Scan { next: 0 }
}

/// The first function with this class and subclass, in scan order.
pub fn find(class: u8, subclass: u8) -> Option<PciFunction> {
    scan().find(|function| function.class == class && function.subclass == subclass)
}

/// Iterator returned by [`scan`].
pub struct Scan {
    /// bus << 8 | device << 3 | function of the next candidate; 1 << 16 when done.
    next: u32,
}

impl Iterator for Scan {
    type Item = PciFunction;

    fn next(&mut self) -> Option<PciFunction> {
        while self.next < 1 << 16 {
            let (bus, device, function) = (
                (self.next >> 8) as u8,
                (self.next >> 3) as u8 & 31,
                self.next as u8 & 7,
            );
            let address = PciAddress {
                bus,
                device,
                function,
            };
            let found = PciFunction::probe(address);
            self.next = match (function, &found) {
                // Function 0 decides whether the other seven are looked at.
                (0, Some(first)) if first.is_multi_function() => self.next + 1,
                (0, _) => self.next + 8,
                _ => self.next + 1,
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kprintln;

    #[test_case]
    fn bars_decode_io_and_memory_kinds() {
        let no_high = || -> Option<u32> { panic!("a 32-bit BAR must not read the next one") };
        assert_eq!(
            decode_bar(4, 0xc041, no_high),
            Ok(Some(Bar::Io { port: 0xc040 }))
        );
        assert_eq!(
            decode_bar(0, 0x0000_0001, no_high),
            Ok(None),
            "I/O BAR at 0 is unassigned"
        );
        assert_eq!(decode_bar(0, 0, no_high), Ok(None));
        assert_eq!(
            decode_bar(0, 0xfebf_0008, no_high),
            Ok(Some(Bar::Memory {
                address: 0xfebf_0000,
                width: MemoryWidth::Bits32,
                prefetchable: true
            }))
        );
        assert_eq!(
            decode_bar(2, 0xe000_000c, || Some(0x1)),
            Ok(Some(Bar::Memory {
                address: 0x1_e000_0000,
                width: MemoryWidth::Bits64,
                prefetchable: true
            }))
        );
        assert_eq!(
            decode_bar(5, 0x4, || None),
            Err(BarError::TruncatedBits64 { index: 5 })
        );
        assert_eq!(
            decode_bar(1, 0x6, no_high),
            Err(BarError::ReservedType { index: 1, raw: 0x6 })
        );
    }

    #[test_case]
    fn config_addresses_follow_mechanism_1() {
        let address = PciAddress::new(0x12, 0x1f, 7).unwrap();
        assert_eq!(address.config_address(0x3e), 0x8012_ff3c);
        assert_eq!(PciAddress::new(0, 32, 0), None);
        assert_eq!(PciAddress::new(0, 0, 8), None);
    }

    /// QEMU's `pc` machine: the i440FX host bridge at 00:00.0 and the PIIX3
    /// as one multi-function device (ISA bridge, IDE, ...). The scan must see
    /// the host bridge, reach functions behind a multi-function function 0,
    /// and never report a function > 0 of a single-function device.
    #[test_case]
    fn scan_finds_bridges_and_multi_function_devices() {
        let mut count = 0;
        let mut host_bridge = false;
        let mut beyond_function_0 = false;
        for function in scan() {
            kprintln!("# {function}");
            count += 1;
            let address = function.address;
            host_bridge |= function.class == 0x06 && function.subclass == 0x00;
            if address.function() != 0 {
                beyond_function_0 = true;
                let first = PciAddress::new(address.bus(), address.device(), 0)
                    .and_then(PciFunction::probe);
                assert!(
                    first.is_some_and(|first| first.is_multi_function()),
                    "{address} reported although function 0 is not multi-function"
                );
            }
            // Every BAR of a live device must decode; the high half of a
            // 64-bit BAR is not a BAR of its own.
            let mut index = 0;
            while index < function.bar_count() {
                match function.bar(index) {
                    Ok(Some(Bar::Memory {
                        width: MemoryWidth::Bits64,
                        ..
                    })) => index += 2,
                    Ok(_) => index += 1,
                    Err(error) => panic!("{address}: {error}"),
                }
            }
        }
        assert!(count >= 3, "only {count} PCI functions found");
        assert!(host_bridge, "no host bridge found");
        assert!(
            beyond_function_0,
            "no function behind a multi-function device found"
        );
    }
}
