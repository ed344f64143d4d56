//! Hot-add and removal of sections: registering a range of pages (cut at
//! zone boundaries, one section per piece) with the metadata it needs,
//! removing it again, and the sorted index that maps an address to its
//! section.

use core::ptr::NonNull;

use super::section::Section;
use super::word::{META_ALIGN, META_BYTES_PER_PAGE};
use super::zone::zone_pieces;
use super::{BuddyAllocator, set_bits};
use crate::types::{
    Error, MAX_PHYS_ADDR, MAX_SECTION_PAGES, MAX_SECTIONS, PAGE_SHIFT, PAGE_SIZE, PhysAddr,
};

/// Bytes of metadata a section of `pages` pages needs: exactly
/// [`META_BYTES_PER_PAGE`](crate::META_BYTES_PER_PAGE) (8) per page,
/// nothing more; `usize::MAX` if that does not fit in a `usize` (no buffer
/// is that large).
///
/// ```
/// assert_eq!(framekeep::metadata_bytes(1 << 20), 8 << 20); // 4 GiB -> 8 MiB
/// assert_eq!(framekeep::metadata_bytes(u64::MAX), usize::MAX);
/// ```
pub const fn metadata_bytes(pages: u64) -> usize {
    // Compared as u64 first: on a 32-bit target `pages as usize` would
    // drop the high bits and understate the need.
    if pages > (usize::MAX / META_BYTES_PER_PAGE) as u64 {
        return usize::MAX;
    }
    pages as usize * META_BYTES_PER_PAGE
}

/// The fewest pages `m` of a range of `pages` pages that hold the metadata
/// of the other `pages - m`: `m * PAGE_SIZE >= metadata_bytes(pages - m)`.
/// `pages` must be below 2^40 (a range below [`MAX_PHYS_ADDR`]), so that
/// nothing overflows.
const fn metadata_pages(pages: u64) -> u64 {
    // m * PAGE_SIZE >= (pages - m) * B  <=>  m >= pages * B / (PAGE_SIZE + B).
    let per_page = META_BYTES_PER_PAGE as u64;
    let meta_pages = (pages * per_page).div_ceil(PAGE_SIZE + per_page);
    debug_assert!(
        meta_pages >= pages || metadata_bytes(pages - meta_pages) as u64 <= meta_pages * PAGE_SIZE
    );
    meta_pages
}

/// A section split so that its first pages hold the metadata for the rest.
///
/// ```
/// use framekeep::{carve_metadata, PhysAddr};
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
/// use framekeep::{carve_metadata, Error, PhysAddr};
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
    // products below cannot overflow, nor can `start + meta_pages * PAGE_SIZE`.
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
    let meta_pages = metadata_pages(pages);
    if meta_pages >= pages {
        return Err(Error::SectionTooSmall);
    }
    if pages - meta_pages > MAX_SECTION_PAGES {
        return Err(Error::SectionTooLarge);
    }
    Ok(Carved {
        meta_start: start,
        meta_pages,
        start: PhysAddr(start.0 + meta_pages * PAGE_SIZE),
        pages: pages - meta_pages,
    })
}

/// What [`BuddyAllocator::remove_section`] hands back: the metadata buffer
/// that was given to [`BuddyAllocator::add_section`], now the caller's again.
///
/// ```
/// # fn f(r: framekeep::RemovedSection) { let _ = (r.meta, r.meta_bytes, r.pages); }
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
        let mut len = self.section_count as usize;
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
        let section = self.sorted_slot[lo] as usize;
        let sec = &self.secs[section];
        let offset = pfn.wrapping_sub(sec.base);
        if offset < sec.pages as u64 {
            Some((section, offset as u32))
        } else {
            None
        }
    }

    /// The physical address of page `idx` of section `section`.
    #[inline(always)]
    pub(super) fn addr_of(&self, section: usize, idx: u32) -> PhysAddr {
        PhysAddr((self.secs[section].base + idx as u64) << PAGE_SHIFT)
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
    /// use framekeep::{BuddyAllocator, PhysAddr, metadata_bytes, Zone};
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
            Some(end) if end <= MAX_PHYS_ADDR => end,
            _ => return Err(Error::SectionWraps),
        };
        if !(meta.as_ptr() as usize).is_multiple_of(META_ALIGN) {
            return Err(Error::MetadataMisaligned);
        }
        if meta_bytes < metadata_bytes(pages) {
            return Err(Error::MetadataTooSmall);
        }
        let (start_pfn, end_pfn) = (start.0 >> PAGE_SHIFT, end >> PAGE_SHIFT);
        for section in set_bits(self.used_slots) {
            let sec = &self.secs[section];
            if start_pfn < sec.end() && sec.base < end_pfn {
                return Err(Error::SectionOverlap);
            }
        }
        let (pieces, count) = zone_pieces(start_pfn, end_pfn);
        if self.section_count as usize + count > MAX_SECTIONS {
            return Err(Error::TooManySections);
        }
        for &(lo, hi, zone) in &pieces[..count] {
            let section = (!self.used_slots).trailing_zeros() as usize;
            self.used_slots |= 1 << section;
            let sec = &mut self.secs[section];
            // SAFETY: lo - start_pfn < pages, inside the caller's buffer.
            let words = unsafe { meta.as_ptr().cast::<u64>().add((lo - start_pfn) as usize) };
            sec.occupy(lo, hi, zone, words);
            sec.reg_base = start_pfn;
            sec.reg_meta = meta.as_ptr();
            sec.reg_meta_bytes = meta_bytes;
            sec.reg_pages = pages;
            let orders = sec
                .pieces()
                .fold(0u32, |orders, (_, order)| orders | 1 << order);
            self.insert_sorted(section);
            self.zone_add_section(section, orders);
            // New free frames: poisoned like freed ones.
            self.on_free(section, 0, hi - lo);
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
    /// let mut a = framekeep::BuddyAllocator::new();
    /// a.add_section_static(framekeep::PhysAddr(0x10_0000), 32, vec![0u64; 32].leak()).unwrap();
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
    /// # let mut a = framekeep::doc_allocator!(64);
    /// # use framekeep::{Constraint, Error};
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
        for section in set_bits(self.used_slots) {
            if self.secs[section].reg_base == pfn && start.is_page_aligned() {
                pieces |= 1 << section;
                if self.section_free(section) != self.secs[section].pages as u64 {
                    return Err(Error::SectionInUse);
                }
            }
        }
        if pieces == 0 {
            return Err(Error::NoSuchSection);
        }
        let first = &self.secs[pieces.trailing_zeros() as usize];
        let removed = RemovedSection {
            meta: NonNull::new(first.reg_meta).ok_or(Error::NoSuchSection)?,
            meta_bytes: first.reg_meta_bytes,
            pages: first.reg_pages,
        };
        self.hot_forget_sections(pieces);
        for section in set_bits(pieces) {
            self.zone_remove_section(section);
            self.remove_sorted(section);
            self.secs[section] = Section::EMPTY;
            self.used_slots &= !(1 << section);
        }
        Ok(removed)
    }

    /// Free pages of section slot `section`, parked ones included.
    pub(super) fn section_free(&self, section: usize) -> u64 {
        self.secs[section].free_pages() + self.hot_pages_in_section(section)
    }

    /// Adds slot `section` (its `base` set) to the sorted section index.
    fn insert_sorted(&mut self, section: usize) {
        let base = self.secs[section].base;
        let mut i = self.section_count as usize;
        while i > 0 && self.sorted_base[i - 1] > base {
            self.sorted_base[i] = self.sorted_base[i - 1];
            self.sorted_slot[i] = self.sorted_slot[i - 1];
            i -= 1;
        }
        self.sorted_base[i] = base;
        self.sorted_slot[i] = section as u8;
        self.section_count += 1;
    }

    /// Removes slot `section` from the sorted section index.
    fn remove_sorted(&mut self, section: usize) {
        let count = self.section_count as usize;
        if let Some(i) = self.sorted_slot[..count]
            .iter()
            .position(|&slot| slot as usize == section)
        {
            self.sorted_base.copy_within(i + 1..count, i);
            self.sorted_slot.copy_within(i + 1..count, i);
            self.section_count -= 1;
        }
    }
}

#[cfg(test)]
mod tests;
