//! `alloc` and `free`: blocks of frames by hand, through the same checked
//! calls the kernel uses (`mem::frames::{alloc_order, free_order}`).
//!
//! The allocator refuses bad frees (wrong order, interior page, double
//! free, outside every section) with an error and changes nothing. What it
//! cannot tell is whose a well-formed block is: a page table allocated by
//! the kernel looks like any other block. So `free` frees only blocks this
//! shell's `alloc` handed out (the [`Ledger`]); any other address is shown
//! the allocator's verdict on it without freeing anything.

use framekeep::{Constraint, Error, PAGE_SIZE, PageState, PhysAddr, Zone};

use crate::kprintln;
use crate::mem::frames;
use crate::mem::map::ByteSize;

/// Blocks held by the shell at once; a person typing needs few.
const HELD_MAX: usize = 32;

/// Blocks `alloc` handed out and `free` has not taken back.
pub struct Ledger {
    /// Start addresses; the order is the allocator's business (it checks it).
    held: [Option<PhysAddr>; HELD_MAX],
}

impl Ledger {
    pub const fn new() -> Self {
        Self {
            held: [None; HELD_MAX],
        }
    }

    fn slot_of(&self, addr: PhysAddr) -> Option<usize> {
        self.held.iter().position(|&held| held == Some(addr))
    }

    fn free_slot(&self) -> Option<usize> {
        self.held.iter().position(Option::is_none)
    }
}

fn block_size(order: u32) -> ByteSize {
    ByteSize(PAGE_SIZE.checked_shl(order).unwrap_or(0))
}

/// `alloc ORDER [ZONE]`.
pub fn alloc(ledger: &mut Ledger, order: u32, zone: Zone) {
    let Some(slot) = ledger.free_slot() else {
        kprintln!("alloc: refused: the shell already holds {HELD_MAX} blocks; free one first");
        return;
    };
    match frames::alloc_order(order, Constraint::Zone(zone)) {
        Ok(block) => {
            ledger.held[slot] = Some(block);
            kprintln!(
                "allocated {} (order {order}) at {block} in zone {}",
                block_size(order),
                Zone::of(block)
            );
        }
        Err(error) => kprintln!("alloc: refused: {error}; nothing changed"),
    }
}

/// `free ADDR ORDER`.
pub fn free(ledger: &mut Ledger, addr: u64, order: u32) {
    let block = PhysAddr(addr);
    let Some(slot) = ledger.slot_of(block) else {
        refuse_foreign(block);
        return;
    };
    match frames::free_order(block, order) {
        Ok(()) => {
            ledger.held[slot] = None;
            kprintln!("freed {} (order {order}) at {block}", block_size(order));
        }
        Err(error) => kprintln!("free: refused: {error}; nothing changed"),
    }
}

/// Explains why a block `alloc` did not hand out is not freed, in the
/// allocator's words where it has some.
fn refuse_foreign(block: PhysAddr) {
    let why = match frames::page_state(block) {
        Err(error) => error,
        Ok(PageState::Free { .. }) => Error::DoubleFree,
        Ok(PageState::Interior) => Error::InteriorPage,
        Ok(PageState::Allocated { pages }) => {
            kprintln!(
                "free: refused: {block} starts {} in use by the kernel, not a block from `alloc`; \
                 nothing changed",
                ByteSize(pages * PAGE_SIZE)
            );
            return;
        }
    };
    kprintln!("free: refused: {why}; nothing changed");
}
