//! The per-CPU free lists of the page cache: one bounded stack of frames
//! per order, refilled and drained in batches.
//!
//! Pure data structure: the caller runs every method on its own CPU, with
//! the lists marked in use (through `TryPerCpu`), and supplies the buddy side as
//! closures that do a whole batch under one lock acquisition. Those
//! closures run while the lists are mutably borrowed, so they must not
//! reach the `PerCpu` holding them (no `local`, `on` or drain of it); a
//! slow path that does runs after the section. Model-checked with
//! loom (`loom_tests.rs`).

use crate::cpu::per_cpu::CpuInit;

/// Orders served by the per-CPU page caches: `0..PCP_ORDERS` (4 KiB .. 32 KiB).
pub const PCP_ORDERS: usize = 4;
/// Capacity of one per-CPU list (an upper bound for `high`). (8 under
/// `--cfg loom`, whose model threads have small stacks.)
pub const PCP_CAPACITY: usize = if cfg!(loom) { 8 } else { 128 };
const _: () = assert!(PCP_CAPACITY.is_power_of_two());

/// One CPU's lists: frame addresses (bytes) per order.
pub(crate) struct PcpLists {
    n: [usize; PCP_ORDERS],
    frames: [[u64; PCP_CAPACITY]; PCP_ORDERS],
}

impl CpuInit for PcpLists {
    const INIT: Self = PcpLists {
        n: [0; PCP_ORDERS],
        frames: [[0; PCP_CAPACITY]; PCP_ORDERS],
    };
}

impl PcpLists {
    /// Frames held for order `order`.
    #[inline(always)]
    pub(crate) fn len(&self, order: usize) -> usize {
        self.n[order]
    }

    /// Pops a frame of order `order`; `None` if the list is empty.
    #[inline(always)]
    pub(crate) fn pop(&mut self, order: usize) -> Option<u64> {
        let count = self.n[order];
        if count == 0 {
            return None;
        }
        self.n[order] = count - 1;
        // `count <= PCP_CAPACITY` (a power of two): the mask only spares the
        // bounds check.
        Some(self.frames[order][(count - 1) % PCP_CAPACITY])
    }

    /// Pushes `frame` if the list holds fewer than `high` frames (`high`
    /// at most [`PCP_CAPACITY`]); `false` (nothing changed) otherwise.
    #[inline(always)]
    pub(crate) fn push(&mut self, order: usize, frame: u64, high: usize) -> bool {
        let count = self.n[order];
        if count >= high {
            return false;
        }
        self.frames[order][count % PCP_CAPACITY] = frame;
        self.n[order] = count + 1;
        true
    }

    /// Pops a frame of order `order`. When the list is empty, first calls
    /// `refill` once with room for `batch` frames; it returns how many it
    /// wrote (0: the buddy is out of memory, and `None` is returned).
    #[inline(always)]
    pub(crate) fn alloc(
        &mut self,
        order: usize,
        batch: usize,
        refill: impl FnOnce(&mut [u64]) -> usize,
    ) -> Option<u64> {
        let mut count = self.n[order];
        if count == 0 {
            let want = batch.clamp(1, PCP_CAPACITY);
            count = refill(&mut self.frames[order][..want]).min(want);
            if count == 0 {
                return None;
            }
        }
        count -= 1;
        self.n[order] = count;
        Some(self.frames[order][count])
    }

    /// Pushes `frame`. If the list then holds more than `high` frames (or
    /// is full), the `batch` coldest ones (bottom of the stack) are handed
    /// to `drain` and removed.
    #[inline(always)]
    pub(crate) fn free(
        &mut self,
        order: usize,
        frame: u64,
        high: usize,
        batch: usize,
        mut drain: impl FnMut(&[u64]),
    ) {
        let count = self.n[order];
        if count >= high.min(PCP_CAPACITY) {
            let moved = batch.clamp(1, count.max(1)).min(count);
            drain(&self.frames[order][..moved]);
            self.frames[order].copy_within(moved..count, 0);
            self.n[order] = count - moved;
        }
        let count = self.n[order];
        if count < PCP_CAPACITY {
            self.frames[order][count] = frame;
            self.n[order] = count + 1;
        } else {
            drain(&[frame]);
        }
    }

    /// Hands every frame of order `order` to `drain` and empties the list.
    pub(crate) fn take_all(&mut self, order: usize, drain: impl FnOnce(&[u64])) {
        let count = self.n[order];
        if count > 0 {
            drain(&self.frames[order][..count]);
            self.n[order] = 0;
        }
    }
}
