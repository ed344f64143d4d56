//! Physical memory: what the firmware reported, and (later) the allocator,
//! page tables, heap and DMA built from it.

pub mod map;
