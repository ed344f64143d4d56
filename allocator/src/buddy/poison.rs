//! Frame contents: poisoning free frames and zeroing allocated ones.

use super::*;

/// The byte freed frames are filled with when poisoning is on.
pub const POISON_BYTE: u8 = 0xAA;

pub(super) const POISON_WORD: u64 = u64::from_ne_bytes([POISON_BYTE; 8]);

/// Frame-content options (they need the physical memory mapping).
///
/// ```
/// let o = allocator::FrameOptions { poison: true, zero_on_alloc: false };
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
    #[inline(always)]
    pub(super) fn frame_ptr(&self, s: usize, idx: u32) -> *mut u8 {
        let phys = (self.secs[s].base + idx as u64) << PAGE_SHIFT;
        self.frame_base.wrapping_add(phys as usize)
    }

    #[cold]
    #[inline(never)]
    pub(super) fn fill(&self, s: usize, idx: u32, pages: u64, byte: u8) {
        for i in 0..pages {
            let p = self.frame_ptr(s, idx + i as u32);
            // SAFETY: set_frame_options' contract: every managed frame is
            // mapped writable at frame_base + phys, and free or freshly
            // allocated frames are not accessed by anyone else right now.
            unsafe { core::ptr::write_bytes(p, byte, PAGE_SIZE as usize) }
        }
    }

    /// First poisoned-pattern mismatch in `[idx, idx + pages)`.
    pub(super) fn check_poison(
        &self,
        s: usize,
        idx: u32,
        pages: u64,
    ) -> Option<(PhysAddr, u32, u8)> {
        for i in 0..pages {
            let p = self.frame_ptr(s, idx + i as u32).cast::<u64>();
            for w in 0..(PAGE_SIZE as usize / 8) {
                // SAFETY: as in `fill`; frame_base + phys is 8-aligned
                // because set_frame_options requires a page-aligned base.
                let v = unsafe { p.add(w).read() };
                if v != POISON_WORD {
                    let bytes = v.to_ne_bytes();
                    let b = bytes.iter().position(|&x| x != POISON_BYTE).unwrap_or(0);
                    return Some((
                        self.addr_of(s, idx + i as u32),
                        (w * 8 + b) as u32,
                        bytes[b],
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
    pub(super) fn on_alloc(&mut self, s: usize, idx: u32, pages: u64) -> Result<(), Error> {
        if self.frame_base.is_null() {
            return Ok(());
        }
        self.on_alloc_slow(s, idx, pages)
    }

    #[cold]
    #[inline(never)]
    pub(super) fn on_alloc_slow(&mut self, s: usize, idx: u32, pages: u64) -> Result<(), Error> {
        if self.opts.poison
            && let Some((frame, offset, found)) = self.check_poison(s, idx, pages)
        {
            self.fill(s, idx, pages, POISON_BYTE);
            self.secs[s].raw_write(idx, ST_NONE);
            self.release(s, idx, pages);
            return Err(Error::Corrupted {
                frame,
                offset,
                found,
            });
        }
        if self.opts.zero_on_alloc {
            self.fill(s, idx, pages, 0);
        }
        Ok(())
    }

    #[inline(always)]
    pub(super) fn on_free(&self, s: usize, idx: u32, pages: u64) {
        if self.poisoning {
            self.fill(s, idx, pages, POISON_BYTE);
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
    /// use allocator::{BuddyAllocator, Constraint, Error, FrameOptions, PhysAddr, metadata_bytes};
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
            let mut m = self.used;
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                if self.secs[s].pending {
                    self.fill(s, 0, self.secs[s].pages as u64, POISON_BYTE);
                    continue;
                }
                for l in 0..NLISTS {
                    let (o, b) = list_order(l);
                    let mut idx = self.secs[s].list_first(o, b);
                    while idx != NIL {
                        self.fill(s, idx, 1 << o, POISON_BYTE);
                        idx = free_next(self.secs[s].raw_read(idx));
                    }
                }
            }
            for z in 0..3 {
                for o in 0..HOT_ORDERS {
                    for i in 0..self.hot[z][o].len() {
                        let (s, idx) = self.hot[z][o].get(i);
                        self.fill(s, idx, 1 << o, POISON_BYTE);
                    }
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
    /// let mut a = allocator::BuddyAllocator::new();
    /// a.clear_frame_options();
    /// assert_eq!(a.frame_options(), allocator::FrameOptions::default());
    /// ```
    pub fn clear_frame_options(&mut self) {
        self.opts = FrameOptions::default();
        self.frame_base = core::ptr::null_mut();
        self.poisoning = false;
    }

    /// The active frame options.
    ///
    /// ```
    /// assert!(!allocator::BuddyAllocator::new().frame_options().poison);
    /// ```
    pub fn frame_options(&self) -> FrameOptions {
        self.opts
    }
}
