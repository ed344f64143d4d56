//! The per-CPU page caches: [`PageCaches`] in front of the buddy, with
//! per-page ownership tags that say which layer owns each block.
//!
//! - `lists`: one CPU's bounded stacks of free blocks.
//! - `caches`: [`PageCaches`] itself: construction, registration, drains,
//!   statistics.
//! - `alloc`, `free`: the fast paths, refill from the buddy, overflow into
//!   it, and the tag checks of every free.
//! - `tags`: the per-page ownership tags and what a mismatch means.
//! - `buddy_ops`: the buddy's own operations, checked against the tags.
//! - `block`: [`Block`], a cache block held as a value.
//! - `config`, `stats`: [`PcpConfig`] and [`CacheStats`].

#[cfg(all(test, not(loom)))]
#[allow(unsafe_code)]
mod interrupt_tests;
pub(crate) mod lists;
#[cfg(all(test, loom))]
#[allow(unsafe_code)]
mod loom_tests;

#[cfg(not(loom))]
mod alloc;
#[cfg(not(loom))]
mod block;
// Frame options: the buddy's unsafe contract, forwarded.
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod buddy_ops;
// Registration: metadata handed over by pointer.
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod caches;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod free;
#[cfg(not(loom))]
mod stats;
// Tags live in caller-given metadata and are read without a lock.
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub(crate) mod tags;

#[cfg(not(loom))]
pub use block::Block;
#[cfg(not(loom))]
pub use caches::PageCaches;
#[cfg(not(loom))]
pub use config::PcpConfig;
pub use lists::{PCP_CAPACITY, PCP_ORDERS};
#[cfg(not(loom))]
pub use stats::CacheStats;
