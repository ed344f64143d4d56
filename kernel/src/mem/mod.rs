//! Memory, in the order it is set up: the firmware map is sanitised
//! ([`map`]), handed to the frame allocator ([`frames`]), and everything
//! else that needs memory is built on top.

pub mod dma;
pub mod frames;
pub mod heap;
pub mod map;
pub mod paging;
pub mod stack;
