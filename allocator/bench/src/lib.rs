//! Benchmarks of the `framekeep` allocator against its peers.
//!
//! The workloads live in the bench targets (`benches/frames/`,
//! `benches/heap/`; run them with `cargo bench -p allocator-bench`). This
//! library holds what they and the examples share: [`KernelModelCpu`], the
//! kernel's interrupt masking as far as ring 3 can execute it.

mod kernel_cpu;

pub use kernel_cpu::KernelModelCpu;
