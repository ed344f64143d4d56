//! The churn traces of `tests/antifrag.rs`: random mixed orders with about
//! half of a 1 GiB section live. Shared with the policy model
//! (`bench/examples/policy_model.rs`) so that both replay the same
//! operations.

/// Pages of the churned section (1 GiB).
pub const PAGES: u64 = 1 << 18;
/// Churn steps per trace.
pub const STEPS: usize = 400_000;

/// xorshift64*: deterministic, no dependency.
pub struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An order distribution: draws the order of the next allocation.
pub type PickOrder = fn(&mut Rng) -> u32;

/// Orders 0..=9, equally likely (the reference trace).
pub fn uniform(r: &mut Rng) -> u32 {
    r.below(10) as u32
}

/// Small orders dominate: P(order k) ~ 2^-k for k < 9, order 9 rare.
pub fn skewed(r: &mut Rng) -> u32 {
    let x = r.below(1 << 10);
    (x.leading_zeros() - 54).min(9)
}

/// What a trace churns: an allocator, or a model of one.
pub trait Churned {
    type Block;
    /// Allocates a block of `order`; must succeed (half of memory is free).
    fn alloc(&mut self, order: u32) -> Self::Block;
    fn free(&mut self, block: Self::Block, order: u32);
}

/// Runs trace `i` (1-based) of distribution `pick` on `a`: while fewer
/// than half of [`PAGES`] are live it allocates, else it frees a random
/// live block. Returns the pages still live.
pub fn churn<A: Churned>(a: &mut A, i: u64, pick: PickOrder) -> u64 {
    let mut rng = Rng(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut live: Vec<(A::Block, u32)> = Vec::new();
    let mut live_pages = 0u64;
    for _ in 0..STEPS {
        if live_pages < PAGES / 2 {
            let o = pick(&mut rng);
            live.push((a.alloc(o), o));
            live_pages += 1 << o;
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (b, o) = live.swap_remove(i);
            a.free(b, o);
            live_pages -= 1 << o;
        }
    }
    live_pages
}

/// (mean, min, traces below 95%) of per-trace percentages.
pub fn summary(pct: &[f64]) -> (f64, f64, usize) {
    let mean = pct.iter().sum::<f64>() / pct.len() as f64;
    let min = pct.iter().copied().fold(f64::INFINITY, f64::min);
    let below = pct.iter().filter(|&&p| p < 95.0).count();
    (mean, min, below)
}
