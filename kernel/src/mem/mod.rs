//! Memory, in the order it is set up: the firmware map is sanitised
//! ([`map`]), handed to the frame allocator ([`frames`]), and everything
//! else that needs memory is built on top.

#[allow(unsafe_code)]
pub mod dma;
#[allow(unsafe_code)]
pub mod frames;
#[allow(unsafe_code)]
pub mod heap;
pub mod low;
pub mod map;
pub mod map_summary;
#[allow(unsafe_code)]
pub mod paging;
pub mod stack;
pub mod zone_cut;
