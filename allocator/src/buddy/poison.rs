//! Frame options: poisoning free frames (filled with [`POISON_BYTE`],
//! checked when allocated again) and zeroing allocated ones. Both write
//! frame memory, so they need the mapping `set_frame_options` is given.

use super::section::BUCKETS;
use super::word::{NIL, ST_NONE, free_next};
use super::{BuddyAllocator, HOT_ORDERS, set_bits};
use crate::types::{Error, NR_ORDERS, PAGE_SHIFT, PAGE_SIZE, PhysAddr};

/// The byte freed frames are filled with when poisoning is on.
pub const POISON_BYTE: u8 = 0xAA;

const POISON_WORD: u64 = u64::from_ne_bytes([POISON_BYTE; 8]);

/// Frame-content options (they need the physical memory mapping).
///
/// ```
/// let o = framekeep::FrameOptions { poison: true, zero_on_alloc: false };
/// assert!(o.poison);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct FrameOptions {
    /// Fill freed frames with [`POISON_BYTE`] and verify the pattern when
    /// they are allocated again ([`Error::Corrupted`] on mismatch).
    pub poison: bool,
    /// Fill allocated frames with zeros before returning them.
    pub zero_on_alloc: bool,
}

impl BuddyAllocator {
    /// Where page `idx` of section `section` is mapped.
    #[inline(always)]
    fn frame_ptr(&self, section: usize, idx: u32) -> *mut u8 {
        let phys = (self.secs[section].base + idx as u64) << PAGE_SHIFT;
        self.frame_base.wrapping_add(phys as usize)
    }

    #[cold]
    #[inline(never)]
    fn fill(&self, section: usize, idx: u32, pages: u64, byte: u8) {
        for i in 0..pages {
            let frame = self.frame_ptr(section, idx + i as u32);
            // SAFETY: set_frame_options' contract: every managed frame is
            // mapped writable at frame_base + phys, and free or freshly
            // allocated frames are not accessed by anyone else right now.
            unsafe { core::ptr::write_bytes(frame, byte, PAGE_SIZE as usize) }
        }
    }

    /// First poisoned-pattern mismatch in `[idx, idx + pages)`: the frame,
    /// the offset in it and the byte found there.
    fn check_poison(&self, section: usize, idx: u32, pages: u64) -> Option<(PhysAddr, u32, u8)> {
        for i in 0..pages {
            let frame = self.frame_ptr(section, idx + i as u32).cast::<u64>();
            for w in 0..(PAGE_SIZE as usize / 8) {
                // SAFETY: as in `fill`; frame_base + phys is 8-aligned
                // because set_frame_options requires a page-aligned base.
                let found = unsafe { frame.add(w).read() };
                if found != POISON_WORD {
                    let bytes = found.to_ne_bytes();
                    let at = bytes.iter().position(|&x| x != POISON_BYTE).unwrap_or(0);
                    return Some((
                        self.addr_of(section, idx + i as u32),
                        (w * 8 + at) as u32,
                        bytes[at],
                    ));
                }
            }
        }
        None
    }

    /// Applies verify/zero to a freshly taken allocation `[idx, idx+pages)`
    /// whose head word is already written. On corruption the allocation is
    /// re-poisoned and freed again.
    #[inline(always)]
    pub(super) fn on_alloc(&mut self, section: usize, idx: u32, pages: u64) -> Result<(), Error> {
        if self.frame_base.is_null() {
            return Ok(());
        }
        self.on_alloc_slow(section, idx, pages)
    }

    #[cold]
    #[inline(never)]
    fn on_alloc_slow(&mut self, section: usize, idx: u32, pages: u64) -> Result<(), Error> {
        if self.opts.poison
            && let Some((frame, offset, found)) = self.check_poison(section, idx, pages)
        {
            self.fill(section, idx, pages, POISON_BYTE);
            self.secs[section].raw_write(idx, ST_NONE);
            self.release(section, idx, pages);
            return Err(Error::Corrupted {
                frame,
                offset,
                found,
            });
        }
        if self.opts.zero_on_alloc {
            self.fill(section, idx, pages, 0);
        }
        Ok(())
    }

    /// Poisons `[idx, idx + pages)`, just freed (or just registered), if
    /// poisoning is on.
    #[inline(always)]
    pub(super) fn on_free(&self, section: usize, idx: u32, pages: u64) {
        if self.poisoning {
            self.fill(section, idx, pages, POISON_BYTE);
        }
    }

    /// Turns on frame poisoning and/or zeroing. If poisoning is being
    /// switched on, every currently free frame is poisoned now. While
    /// either is on (with a non-null `phys_offset`),
    /// [`add_section_static`](Self::add_section_static) is refused.
    ///
    /// # Safety
    /// `phys_offset` is the virtual address at which physical address 0 is
    /// mapped, page aligned. For as long as the options stay on, every
    /// page of every section registered with this allocator, those
    /// registered before this call (safely or not) as well as those
    /// registered after it, must be mapped at `phys_offset + p` (its
    /// physical address `p`): valid for reads and writes of 4096 bytes,
    /// and, while the page is free, accessed by nobody but the allocator
    /// (free frames are written to and read back).
    ///
    /// ```
    /// use framekeep::{BuddyAllocator, Constraint, Error, FrameOptions, PhysAddr, metadata_bytes};
    /// use core::ptr::NonNull;
    ///
    /// /// One page of host memory standing for a physical frame.
    /// #[derive(Clone)]
    /// #[repr(C, align(4096))]
    /// struct Frame([u8; 4096]);
    ///
    /// // 16 frames of "physical" memory and their metadata, leaked: they
    /// // outlive the allocator, and nothing else ever uses them.
    /// let ram: &'static mut [Frame] = vec![Frame([0; 4096]); 16].leak();
    /// let meta: &'static mut [u64] = vec![0u64; 16].leak();
    /// let phys = PhysAddr(0x20_0000);
    /// let mut a = BuddyAllocator::new();
    /// // SAFETY: `ram` is page aligned, so is the offset, which maps
    /// // physical [phys, phys + 64 KiB) onto `ram`, the only section ever
    /// // registered; `ram` and `meta` are used by nothing but `a`.
    /// unsafe {
    ///     let off = ram.as_mut_ptr().cast::<u8>().wrapping_sub(phys.0 as usize);
    ///     a.set_frame_options(off, FrameOptions { poison: true, zero_on_alloc: true });
    ///     a.add_section(phys, 16, NonNull::from(meta).cast(), metadata_bytes(16)).unwrap();
    /// }
    /// let p = a.alloc(0, Constraint::ANY).unwrap();
    /// a.free(p, 0).unwrap();
    /// // Memory named by address alone is not written: refused.
    /// let more = a.add_section_static(PhysAddr(0x40_0000), 8, vec![0u64; 8].leak());
    /// assert_eq!(more, Err(Error::FramesNotMapped));
    /// ```
    pub unsafe fn set_frame_options(&mut self, phys_offset: *mut u8, opts: FrameOptions) {
        let was_poisoning = self.opts.poison && !self.frame_base.is_null();
        self.frame_base = phys_offset;
        self.opts = opts;
        self.poisoning = opts.poison && !phys_offset.is_null();
        if opts.poison && !was_poisoning && !phys_offset.is_null() {
            self.poison_free_frames();
        }
    }

    /// Poisons every free frame: those of pending sections, those on the
    /// free lists and those parked on hot lists.
    fn poison_free_frames(&mut self) {
        for section in set_bits(self.used_slots) {
            if self.secs[section].pending {
                self.fill(section, 0, self.secs[section].pages as u64, POISON_BYTE);
                continue;
            }
            for order in 0..NR_ORDERS {
                for bucket in 0..BUCKETS {
                    let mut idx = self.secs[section].list_first(order, bucket);
                    while idx != NIL {
                        self.fill(section, idx, 1 << order, POISON_BYTE);
                        idx = free_next(self.secs[section].raw_read(idx));
                    }
                }
            }
        }
        for zone in 0..3 {
            for order in 0..HOT_ORDERS {
                for i in 0..self.hot[zone][order].len() {
                    let (section, idx) = self.hot[zone][order].get(i);
                    self.fill(section, idx, 1 << order, POISON_BYTE);
                }
            }
        }
    }

    /// Whether frame memory is written: poisoning or zeroing is on, with
    /// a mapping set (`on_alloc` and `on_free` write nothing without one).
    pub(super) fn writes_frames(&self) -> bool {
        !self.frame_base.is_null() && (self.opts.poison || self.opts.zero_on_alloc)
    }

    /// Turns poisoning and zeroing off (frame memory is no longer touched).
    ///
    /// ```
    /// let mut a = framekeep::BuddyAllocator::new();
    /// a.clear_frame_options();
    /// assert_eq!(a.frame_options(), framekeep::FrameOptions::default());
    /// ```
    pub fn clear_frame_options(&mut self) {
        self.opts = FrameOptions::default();
        self.frame_base = core::ptr::null_mut();
        self.poisoning = false;
    }

    /// The active frame options.
    ///
    /// ```
    /// assert!(!framekeep::BuddyAllocator::new().frame_options().poison);
    /// ```
    pub fn frame_options(&self) -> FrameOptions {
        self.opts
    }
}

#[cfg(test)]
mod tests;
