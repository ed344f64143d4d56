//! Fuzz target: the same reference model as the property test
//! (`tests/common/model.rs`), driven by operations decoded from the input.
//!
//! Run: `cd allocator/fuzz && cargo fuzz run model` (needs `cargo install cargo-fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/model.rs"]
mod model;

use model::{Con, Harness, Op};

const LIMITS: [u64; 6] = [
    16 << 20,
    (16 << 20) + 100 * 4096,
    1 << 32,
    (1 << 32) - 100 * 4096,
    (8 << 30) + 500 * 4096,
    4096,
];

/// Reads little chunks of the input as operations.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) | (u16::from(self.u8()?) << 8))
    }
    fn con(&mut self) -> Option<Con> {
        let b = self.u8()?;
        Some(if b < 200 {
            Con::Zone(b % 3)
        } else {
            Con::Below(LIMITS[b as usize % LIMITS.len()])
        })
    }
    fn op(&mut self) -> Option<Op> {
        Some(match self.u8()? % 13 {
            0 => Op::Alloc {
                order: u32::from(self.u8()? % 20),
                c: self.con()?,
            },
            1 => Op::AllocPages {
                count: usize::from(self.u8()? % 48),
                c: self.con()?,
            },
            2 => Op::AllocAligned {
                count: usize::from(self.u8()? % 8),
                align_shift: u32::from(self.u8()? % 11),
                c: self.con()?,
            },
            3 => Op::Reserve {
                region: usize::from(self.u8()?),
                offset: u64::from(self.u16()?),
                count: usize::from(self.u8()? % 48),
            },
            4 => Op::AllocBulk {
                n: usize::from(self.u8()? % 24),
                c: self.con()?,
            },
            5 | 6 => Op::Free {
                which: usize::from(self.u16()?),
            },
            7 => Op::FreeAsOrder {
                which: usize::from(self.u16()?),
            },
            8 => {
                let n = usize::from(self.u8()? % 16);
                let b = self.u8()?;
                let bad = if b & 1 == 1 {
                    Some((usize::from(self.u8()?), self.u8()?))
                } else {
                    None
                };
                Op::FreeBulk { n, bad }
            }
            9 => Op::BadFree {
                which: usize::from(self.u16()?),
                kind: self.u8()?,
                order: u32::from(self.u8()? % 20),
            },
            10 => match self.u8()? % 3 {
                0 => Op::Add {
                    region: usize::from(self.u8()?),
                },
                1 => Op::BadAdd {
                    region: usize::from(self.u8()?),
                    kind: self.u8()?,
                },
                _ => Op::Remove {
                    region: usize::from(self.u8()?),
                },
            },
            11 => Op::SetReserve {
                zone: self.u8()?,
                pages: u64::from(self.u16()? % 700),
            },
            12 => Op::DrainHot,
            _ => Op::Free {
                which: usize::from(self.u8()?),
            },
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let garbage = u64::from(input.u8().unwrap_or(0)) * 0x0101_0101_0101_0101;
    let mut h = Harness::new(garbage);
    while let Some(op) = input.op() {
        h.apply(&op);
    }
    h.check();
});
