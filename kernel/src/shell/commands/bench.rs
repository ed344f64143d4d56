//! `bench`: a quick look at the two hot paths on this CPU, in cycles per
//! alloc+free pair (median of a few rounds). `make bench` has the full
//! table; this one answers "is this machine's allocator healthy" in a
//! fraction of a second.

use alloc::boxed::Box;
use core::hint::black_box;

use framekeep::Constraint;

use crate::arch::x86_64::tsc;
use crate::kprintln;
use crate::mem::frames;

const PAIRS: u64 = 10_000;
const ROUNDS: usize = 5;

/// Median over ROUNDS of cycles per pair. Each round is long (10 000
/// pairs), so plain `rdtsc` at its ends is precise enough.
fn cycles_per_pair(
    mut round: impl FnMut() -> Result<(), framekeep::Error>,
) -> Result<u64, framekeep::Error> {
    round()?; // warm the per-CPU caches and slabs
    let mut samples = [0u64; ROUNDS];
    for sample in &mut samples {
        let start = tsc::now();
        round()?;
        *sample = (tsc::now() - start) / PAIRS;
    }
    samples.sort_unstable();
    Ok(samples[ROUNDS / 2])
}

fn row(what: &str, cycles: Result<u64, framekeep::Error>) {
    match cycles {
        Ok(cycles) => {
            let nanos = match tsc::frequency() {
                0 => 0,
                hz => cycles * 1_000_000_000 / hz,
            };
            kprintln!("  {what:<36} {cycles:>8} {nanos:>8}");
        }
        Err(error) => kprintln!("  {what:<36} failed: {error}"),
    }
}

pub fn run() {
    kprintln!("{PAIRS} pairs per round, median of {ROUNDS} rounds, this CPU:");
    kprintln!("  {:<36} {:>8} {:>8}", "operation", "cycles", "ns");
    let pages = cycles_per_pair(|| {
        for _ in 0..PAIRS {
            let frame = frames::alloc_order(0, Constraint::ANY)?;
            frames::free_order(black_box(frame), 0)?;
        }
        Ok(())
    });
    row("4 KiB frame alloc+free", pages);
    let objects = cycles_per_pair(|| {
        for _ in 0..PAIRS {
            drop(black_box(Box::new([0u64; 8])));
        }
        Ok(())
    });
    row("64-byte heap object alloc+free", objects);
}
