//! DMA buffers: physically contiguous, entirely below a device's address
//! limit (4 GiB for 32-bit bus masters, 16 MiB for ISA DMA), zeroed, with
//! both the kernel's virtual address and the device's (physical) address.
//! The frames go back to the allocator on drop.

use framekeep::{Constraint, Error, PhysAddr, Zone};

use super::frames::{self, FrameRun, PAGE_SIZE};

/// Device address limits with a zone of their own (exact and O(1)).
pub const LIMIT_ISA: u64 = 16 << 20;
pub const LIMIT_32BIT: u64 = 1 << 32;

/// A zeroed, physically contiguous buffer a device can reach.
#[derive(Debug)]
pub struct DmaBuffer {
    run: Option<FrameRun>,
    len: usize,
}

impl DmaBuffer {
    /// `len` bytes below 4 GiB.
    pub fn new(len: usize) -> Result<Self, Error> {
        Self::below(len, LIMIT_32BIT)
    }

    /// `len` bytes entirely below physical address `limit`.
    pub fn below(len: usize, limit: u64) -> Result<Self, Error> {
        if len == 0 {
            return Err(Error::ZeroCount);
        }
        let constraint = match limit {
            LIMIT_ISA => Constraint::Zone(Zone::Dma),
            LIMIT_32BIT => Constraint::Zone(Zone::Dma32),
            other => Constraint::Below(PhysAddr(other)),
        };
        let pages = len.div_ceil(PAGE_SIZE as usize);
        let run = frames::alloc_run(pages, constraint)?;
        if run.end().0 > limit {
            // The allocator promised otherwise: refuse rather than corrupt.
            let _ = frames::free_run(run);
            return Err(Error::OutOfMemory);
        }
        let mut buffer = Self {
            run: Some(run),
            len,
        };
        buffer.as_mut_slice().fill(0);
        Ok(buffer)
    }

    /// The address the device uses.
    pub fn device_address(&self) -> u64 {
        self.run.as_ref().map_or(0, |run| run.start.0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        let start = frames::phys_to_virt(PhysAddr(self.device_address())).as_ptr::<u8>();
        // SAFETY: the frames are this buffer's alone, mapped by the linear
        // map, and at least `len` bytes long.
        unsafe { core::slice::from_raw_parts(start, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let start = frames::phys_to_virt(PhysAddr(self.device_address())).as_mut_ptr::<u8>();
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(start, self.len) }
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        if let Some(run) = self.run.take()
            && let Err(error) = frames::free_run(run)
        {
            log::error!("dma: freeing buffer frames failed: {error:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_case]
    fn buffers_respect_their_limit_are_zeroed_and_go_back() {
        let free_before = frames::stats().free_pages();
        for (len, limit) in [
            (4096, LIMIT_32BIT),
            (3 * 4096 + 5, LIMIT_32BIT),
            (64 << 10, LIMIT_ISA),
            (8192, 512 << 20),
        ] {
            let mut buffer = DmaBuffer::below(len, limit).expect("a DMA buffer");
            assert_eq!(buffer.len(), len);
            assert!(
                buffer.device_address() + len as u64 <= limit,
                "buffer crosses {limit:#x}"
            );
            assert_eq!(buffer.device_address() % PAGE_SIZE, 0);
            assert!(
                buffer.as_slice().iter().all(|&byte| byte == 0),
                "not zeroed"
            );
            buffer.as_mut_slice().fill(0xee);
        }
        assert_eq!(DmaBuffer::new(0).unwrap_err(), Error::ZeroCount);
        assert_eq!(frames::stats().free_pages(), free_before);
    }
}
