//! Registering and removing sections, the metadata they need, and finding
//! the section of an address.

use super::*;

/// Bytes of metadata a section of `pages` pages needs: exactly
/// [`META_BYTES_PER_PAGE`] (8) per page, nothing more; `usize::MAX` if
/// that does not fit in a `usize` (no buffer is that large).
///
/// ```
/// assert_eq!(allocator::metadata_bytes(1 << 20), 8 << 20); // 4 GiB -> 8 MiB
/// assert_eq!(allocator::metadata_bytes(u64::MAX), usize::MAX);
/// ```
pub const fn metadata_bytes(pages: u64) -> usize {
    // Compared as u64 first: on a 32-bit target `pages as usize` would
    // drop the high bits and understate the need.
    if pages > (usize::MAX / META_BYTES_PER_PAGE) as u64 {
        return usize::MAX;
    }
    pages as usize * META_BYTES_PER_PAGE
}

/// A section split so that its first pages hold the metadata for the rest.
///
/// ```
/// use allocator::{carve_metadata, PhysAddr};
/// let c = carve_metadata(PhysAddr(0x10_0000), 1000).unwrap();
/// assert_eq!(c.meta_start, PhysAddr(0x10_0000));
/// assert_eq!(c.meta_pages, 2); // 2 pages hold 8 bytes for each of 998 pages
/// assert_eq!(c.start.0, 0x10_0000 + 2 * 4096);
/// assert_eq!(c.pages, 998);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Carved {
    /// Where the metadata begins (the start of the original range).
    pub meta_start: PhysAddr,
    /// Pages given over to metadata.
    pub meta_pages: u64,
    /// First managed page.
    pub start: PhysAddr,
    /// Number of managed pages.
    pub pages: u64,
}

/// Splits `[start, start + pages)` into a metadata prefix and the pages it
/// describes, one section's worth. Fails with [`Error::ZeroCount`] for zero
/// pages, [`Error::Misaligned`] for an unaligned start,
/// [`Error::SectionWraps`] if the range wraps or ends above
/// [`MAX_PHYS_ADDR`], [`Error::SectionTooSmall`] if nothing would be left
/// to manage, [`Error::SectionTooLarge`] if more than
/// [`MAX_SECTION_PAGES`] would be (the same limits `add_section` applies).
///
/// ```
/// use allocator::{carve_metadata, Error, PhysAddr};
/// assert_eq!(carve_metadata(PhysAddr(0), 1), Err(Error::SectionTooSmall));
/// assert_eq!(carve_metadata(PhysAddr(1 << 52), 1), Err(Error::SectionWraps));
/// ```
pub const fn carve_metadata(start: PhysAddr, pages: u64) -> Result<Carved, Error> {
    if pages == 0 {
        return Err(Error::ZeroCount);
    }
    if !start.is_page_aligned() {
        return Err(Error::Misaligned);
    }
    // The range must lie below MAX_PHYS_ADDR, so `pages` < 2^40: the
    // products below cannot overflow, nor can `start + m * PAGE_SIZE`.
    let fits = match pages.checked_mul(PAGE_SIZE) {
        Some(bytes) => match start.0.checked_add(bytes) {
            Some(end) => end <= MAX_PHYS_ADDR,
            None => false,
        },
        None => false,
    };
    if !fits {
        return Err(Error::SectionWraps);
    }
    // Smallest m with m * 4096 >= 8 * (pages - m).
    let per = PAGE_SIZE + META_BYTES_PER_PAGE as u64;
    let m = (pages * META_BYTES_PER_PAGE as u64).div_ceil(per);
    if m >= pages {
        return Err(Error::SectionTooSmall);
    }
    if pages - m > MAX_SECTION_PAGES {
        return Err(Error::SectionTooLarge);
    }
    Ok(Carved {
        meta_start: start,
        meta_pages: m,
        start: PhysAddr(start.0 + m * PAGE_SIZE),
        pages: pages - m,
    })
}

/// What [`BuddyAllocator::remove_section`] hands back: the metadata buffer
/// that was given to [`BuddyAllocator::add_section`], now the caller's again.
///
/// ```
/// # fn f(r: allocator::RemovedSection) { let _ = (r.meta, r.meta_bytes, r.pages); }
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct RemovedSection {
    /// The metadata buffer.
    pub meta: NonNull<u8>,
    /// Its length in bytes.
    pub meta_bytes: usize,
    /// The pages the registration managed.
    pub pages: u64,
}

impl BuddyAllocator {
    /// Section and page index of `addr` (binary search over the sorted
    /// section starts: at most 6 steps, none with a single section).
    #[inline(always)]
    pub(super) fn locate(&self, addr: PhysAddr) -> Option<(usize, u32)> {
        let pfn = addr.0 >> PAGE_SHIFT;
        let mut len = self.nsec as usize;
        if len == 0 {
            return None;
        }
        let mut lo = 0usize;
        while len > 1 {
            let half = len / 2;
            if self.sorted_base[lo + half] <= pfn {
                lo += half;
            }
            len -= half;
        }
        let s = self.sorted_slot[lo] as usize;
        let sec = &self.secs[s];
        let off = pfn.wrapping_sub(sec.base);
        if off < sec.pages as u64 {
            Some((s, off as u32))
        } else {
            None
        }
    }

    #[inline(always)]
    pub(super) fn addr_of(&self, s: usize, idx: u32) -> PhysAddr {
        PhysAddr((self.secs[s].base + idx as u64) << PAGE_SHIFT)
    }

    /// Registers the `pages` pages at `start` (page aligned, any size up to
    /// [`MAX_SECTION_PAGES`]), all free. A range straddling 16 MiB or 4 GiB is
    /// split into one section per zone. Costs O(log pages + pages / 2^18):
    /// metadata is initialised lazily, a chunk at a time, when first needed.
    ///
    /// Errors (nothing registered): [`Error::ZeroCount`], [`Error::Misaligned`],
    /// [`Error::SectionTooLarge`], [`Error::SectionWraps`],
    /// [`Error::MetadataMisaligned`], [`Error::MetadataTooSmall`],
    /// [`Error::SectionOverlap`], [`Error::TooManySections`].
    ///
    /// # Safety
    /// `meta` must point to at least `meta_bytes` bytes of writable memory,
    /// that from now until [`remove_section`](Self::remove_section) returns
    /// it (or the allocator is dropped) is used by nothing but this
    /// allocator: no reads, no writes, no references, no other section.
    /// Its previous contents do not matter. If frame options are active,
    /// the new pages must also be mapped as `set_frame_options` requires
    /// (they are poisoned now if poisoning is on).
    ///
    /// ```
    /// use allocator::{BuddyAllocator, PhysAddr, metadata_bytes, Zone};
    /// use core::ptr::NonNull;
    /// let mut meta = vec![0u64; 8192];
    /// let mut a = BuddyAllocator::new();
    /// // 32 MiB straddling 4 GiB: two sections, DMA32 and Normal.
    /// // SAFETY: `meta` is exclusively the allocator's while `a` lives.
    /// unsafe {
    ///     a.add_section(PhysAddr((1 << 32) - (16 << 20)), 8192,
    ///                   NonNull::new(meta.as_mut_ptr().cast()).unwrap(), metadata_bytes(8192))
    ///         .unwrap();
    /// }
    /// assert_eq!(a.stats().zone(Zone::Dma32).free_pages, 4096);
    /// assert_eq!(a.stats().zone(Zone::Normal).free_pages, 4096);
    /// ```
    pub unsafe fn add_section(
        &mut self,
        start: PhysAddr,
        pages: u64,
        meta: NonNull<u8>,
        meta_bytes: usize,
    ) -> Result<(), Error> {
        if pages == 0 {
            return Err(Error::ZeroCount);
        }
        if !start.is_page_aligned() {
            return Err(Error::Misaligned);
        }
        if pages > MAX_SECTION_PAGES {
            return Err(Error::SectionTooLarge);
        }
        let end = match start.0.checked_add(pages << PAGE_SHIFT) {
            Some(e) if e <= MAX_PHYS_ADDR => e,
            _ => return Err(Error::SectionWraps),
        };
        if !(meta.as_ptr() as usize).is_multiple_of(8) {
            return Err(Error::MetadataMisaligned);
        }
        if meta_bytes < metadata_bytes(pages) {
            return Err(Error::MetadataTooSmall);
        }
        let (spfn, epfn) = (start.0 >> PAGE_SHIFT, end >> PAGE_SHIFT);
        let mut m = self.used;
        while m != 0 {
            let s = m.trailing_zeros() as usize;
            m &= m - 1;
            let sec = &self.secs[s];
            if spfn < sec.end() && sec.base < epfn {
                return Err(Error::SectionOverlap);
            }
        }
        // Zone pieces.
        let mut cuts = [(0u64, 0u64, 0u8); 3];
        let mut n = 0;
        for z in Zone::ALL {
            let lo = spfn.max(z.start().0 >> PAGE_SHIFT);
            let hi = epfn.min(z.end().0 >> PAGE_SHIFT);
            if lo < hi {
                cuts[n] = (lo, hi, z as u8);
                n += 1;
            }
        }
        if self.nsec as usize + n > MAX_SECTIONS {
            return Err(Error::TooManySections);
        }
        for &(lo, hi, z) in &cuts[..n] {
            let s = (!self.used).trailing_zeros() as usize;
            self.used |= 1 << s;
            // Fill the slot in place. A free slot is always
            // `Section::EMPTY` (from `new` or `remove_section`): its masks,
            // counts and chunk maps are zero already, and list heads are
            // only read where `lmask` says a list is non-empty. So only the
            // scalars are written (registration touches few cache lines).
            let sec = &mut self.secs[s];
            debug_assert!(sec.lmask == [0; NR_ORDERS] && sec.nfree == [0; NR_ORDERS]);
            debug_assert!(
                sec.chunk_init
                    .iter()
                    .chain(&sec.chunk_head)
                    .all(|&w| w == 0)
            );
            sec.base = lo;
            sec.pages = (hi - lo) as u32;
            sec.zone = z;
            sec.chunk_shift = chunk_shift_for(lo, hi - lo);
            sec.cbase = lo >> sec.chunk_shift;
            sec.bshift = ceil_log2(hi - lo).saturating_sub(BUCKETS.trailing_zeros());
            // SAFETY: lo - spfn < pages, inside the caller's buffer.
            sec.meta = unsafe { meta.as_ptr().cast::<u64>().add((lo - spfn) as usize) };
            sec.reg_base = spfn;
            sec.reg_meta = meta.as_ptr();
            sec.reg_meta_bytes = meta_bytes;
            sec.reg_pages = pages;
            // Its pieces go on the lists when an allocation first picks
            // the section (`materialise`); until then only the zone masks
            // know them.
            sec.pending = true;
            let gained = sec.pieces().fold(0u32, |g, (_, o)| g | 1 << o);
            self.insert_sorted(s);
            let zs = &mut self.zones[z as usize];
            zs.managed_pages += hi - lo;
            zs.sections += 1;
            self.update_start_zones();
            self.zone_gained(s, gained);
            if self.opts.poison && !self.frame_base.is_null() {
                self.fill(s, 0, hi - lo, POISON_BYTE);
            }
        }
        Ok(())
    }

    /// Safe [`add_section`](Self::add_section) for metadata that lives
    /// forever (a `static` buffer, or leaked memory): the `'static mut`
    /// borrow proves the exclusivity that `add_section` asks for.
    ///
    /// A safe call never makes the allocator write frame memory, which
    /// it only names by address: while frame options that write frames
    /// are active (poisoning or zeroing, see
    /// [`set_frame_options`](Self::set_frame_options)) it fails with
    /// [`Error::FramesNotMapped`]; register such memory with the unsafe
    /// `add_section`, whose contract covers the mapping.
    ///
    /// Errors: [`Error::FramesNotMapped`], and those of `add_section`.
    ///
    /// ```
    /// let mut a = allocator::BuddyAllocator::new();
    /// a.add_section_static(allocator::PhysAddr(0x10_0000), 32, vec![0u64; 32].leak()).unwrap();
    /// assert_eq!(a.stats().free_pages(), 32);
    /// ```
    pub fn add_section_static(
        &mut self,
        start: PhysAddr,
        pages: u64,
        meta: &'static mut [u64],
    ) -> Result<(), Error> {
        if self.writes_frames() {
            return Err(Error::FramesNotMapped);
        }
        let bytes = core::mem::size_of_val(meta);
        let ptr = NonNull::from(meta).cast::<u8>();
        // SAFETY: `meta` is an exclusive borrow for 'static, consumed here,
        // so nothing else can ever use that memory; it is 8-aligned and
        // `bytes` long.
        unsafe { self.add_section(start, pages, ptr, bytes) }
    }

    /// Removes the registration made by `add_section(start, ..)` (all its
    /// zone pieces). Every page must be free. Returns the metadata buffer.
    ///
    /// Errors: [`Error::NoSuchSection`], [`Error::SectionInUse`] (nothing removed).
    ///
    /// ```
    /// # let mut a = allocator::doc_allocator!(64);
    /// # use allocator::{Constraint, Error};
    /// let start = a.sections().next().unwrap().registered_at;
    /// let p = a.alloc(0, Constraint::ANY).unwrap();
    /// assert_eq!(a.remove_section(start), Err(Error::SectionInUse));
    /// a.free(p, 0).unwrap();
    /// let r = a.remove_section(start).unwrap();
    /// assert_eq!(r.pages, 64);
    /// assert_eq!(a.stats().free_pages(), 0);
    /// ```
    pub fn remove_section(&mut self, start: PhysAddr) -> Result<RemovedSection, Error> {
        let pfn = start.0 >> PAGE_SHIFT;
        let mut pieces = 0u64;
        let mut m = self.used;
        while m != 0 {
            let s = m.trailing_zeros() as usize;
            m &= m - 1;
            if self.secs[s].reg_base == pfn && start.is_page_aligned() {
                pieces |= 1 << s;
                if self.section_free(s) != self.secs[s].pages as u64 {
                    return Err(Error::SectionInUse);
                }
            }
        }
        if pieces == 0 {
            return Err(Error::NoSuchSection);
        }
        let s0 = pieces.trailing_zeros() as usize;
        let removed = RemovedSection {
            meta: NonNull::new(self.secs[s0].reg_meta).ok_or(Error::NoSuchSection)?,
            meta_bytes: self.secs[s0].reg_meta_bytes,
            pages: self.secs[s0].reg_pages,
        };
        for z in 0..4 {
            for o in 0..HOT_ORDERS {
                self.hot[z][o].forget(|s, _| pieces & (1 << s) != 0);
                if o > 0 {
                    self.hot_reindex(z, o);
                }
            }
        }
        let mut m = pieces;
        while m != 0 {
            let s = m.trailing_zeros() as usize;
            m &= m - 1;
            let (zone, pages) = {
                let sec = &self.secs[s];
                (sec.zone as usize, sec.pages as u64)
            };
            let zs = &mut self.zones[zone];
            for o in 0..NR_ORDERS {
                zs.sec_mask[o] &= !(1 << s);
                if zs.sec_mask[o] == 0 {
                    zs.order_mask &= !(1 << o);
                }
            }
            zs.managed_pages -= pages;
            zs.sections -= 1;
            self.update_start_zones();
            self.remove_sorted(s);
            self.secs[s] = Section::EMPTY;
            self.used &= !(1 << s);
        }
        Ok(removed)
    }

    /// Free pages of section slot `s`, parked ones included.
    pub(super) fn section_free(&self, s: usize) -> u64 {
        self.secs[s].free_pages() + self.hot_pages_in_section(s)
    }

    /// Adds slot `s` (its `base` set) to the sorted section index.
    pub(super) fn insert_sorted(&mut self, s: usize) {
        let base = self.secs[s].base;
        let n = self.nsec as usize;
        let mut i = n;
        while i > 0 && self.sorted_base[i - 1] > base {
            self.sorted_base[i] = self.sorted_base[i - 1];
            self.sorted_slot[i] = self.sorted_slot[i - 1];
            i -= 1;
        }
        self.sorted_base[i] = base;
        self.sorted_slot[i] = s as u8;
        self.nsec += 1;
    }

    /// Removes slot `s` from the sorted section index.
    pub(super) fn remove_sorted(&mut self, s: usize) {
        let n = self.nsec as usize;
        if let Some(i) = self.sorted_slot[..n].iter().position(|&x| x as usize == s) {
            self.sorted_base.copy_within(i + 1..n, i);
            self.sorted_slot.copy_within(i + 1..n, i);
            self.nsec -= 1;
        }
    }
}
