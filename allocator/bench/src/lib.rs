//! Peer-comparison benchmark for the `allocator` crate.
//!
//! Everything lives in the `frames` bench target (`benches/frames/`); run it
//! with `cargo bench -p allocator-bench`. This library is intentionally empty.
