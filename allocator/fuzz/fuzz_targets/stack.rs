//! Fuzz target: the whole stack (heap, slab, per-CPU page caches, buddy)
//! against a model of the live allocations; the driver is
//! `tests/common/stack.rs`, shared with `tests/stack.rs`.
//!
//! Run: `cd allocator/fuzz && cargo fuzz run stack` (needs `cargo install cargo-fuzz`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/host.rs"]
mod host;
#[path = "../../tests/common/stack.rs"]
mod stack;

/// One buffer of host memory for every run (each run's heap is gone
/// before the next starts; the metadata part is refilled from the input).
static RAM: OnceLock<host::Ram> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    stack::run(data, RAM.get_or_init(stack::ram));
});
