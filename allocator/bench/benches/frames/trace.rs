//! Deterministic workloads: the same trace is replayed on every allocator.

/// Page size used by every allocator in the benchmark.
pub const PAGE: usize = 4096;
/// 2 MiB in bytes.
pub const TWO_MIB: usize = 2 << 20;
/// Pages in a 2 MiB block.
pub const PAGES_2M: usize = TWO_MIB / PAGE;
/// Marks an empty slot (never a valid block address: not page aligned).
pub const EMPTY: usize = usize::MAX;

/// SplitMix64: small, fast, and good enough for workload generation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// A random permutation of `0..n` (Fisher-Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// How the orders of a churn trace are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OrderDist {
    /// Orders 0..=9, each equally likely.
    Uniform,
    /// Mostly small orders: P(order k) proportional to 2^-k for k in 0..=9
    /// (half of all requests are single pages, 0.1% are 2 MiB).
    Skewed,
}

impl OrderDist {
    fn draw(self, rng: &mut Rng) -> u8 {
        match self {
            OrderDist::Uniform => rng.below(10) as u8,
            OrderDist::Skewed => {
                // 1023 = 2^10 - 1 tickets; order k gets 2^(9-k) of them.
                let mut t = rng.below(1023) as u32;
                let mut k = 0u8;
                let mut share = 512u32;
                while t >= share {
                    t -= share;
                    share /= 2;
                    k += 1;
                }
                k
            }
        }
    }
}

/// One step of a trace. `alloc == false` frees whatever the slot holds.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub slot: u32,
    pub order: u8,
    pub alloc: bool,
}

/// A churn trace: a fill phase to reach the target live size, then the churn.
pub struct Trace {
    pub fill: Vec<Op>,
    pub churn: Vec<Op>,
    pub slots: usize,
}

/// Book-keeping of the trace generator (allocator independent).
struct GenState {
    rng: Rng,
    dist: OrderDist,
    live: Vec<u32>,
    slot_order: Vec<u8>,
    free_slots: Vec<u32>,
    live_pages: usize,
}

impl GenState {
    fn alloc_op(&mut self) -> Op {
        let order = self.dist.draw(&mut self.rng);
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slot_order.push(0);
                (self.slot_order.len() - 1) as u32
            }
        };
        self.slot_order[slot as usize] = order;
        self.live.push(slot);
        self.live_pages += 1 << order;
        Op {
            slot,
            order,
            alloc: true,
        }
    }

    fn free_op(&mut self) -> Op {
        let i = self.rng.below(self.live.len());
        let slot = self.live.swap_remove(i);
        let order = self.slot_order[slot as usize];
        self.live_pages -= 1 << order;
        self.free_slots.push(slot);
        Op {
            slot,
            order,
            alloc: false,
        }
    }
}

/// Generate a trace over `total_pages` pages that keeps about half of memory
/// live: it fills to half, then every op frees a random live block or
/// allocates a new one (a random walk kept within +-1/16 of half).
pub fn churn_trace(total_pages: usize, dist: OrderDist, churn_ops: usize, seed: u64) -> Trace {
    let target = total_pages / 2;
    let band = target / 16;
    let mut g = GenState {
        rng: Rng::new(seed),
        dist,
        live: Vec::new(),
        slot_order: Vec::new(),
        free_slots: Vec::new(),
        live_pages: 0,
    };
    let mut fill = Vec::new();
    while g.live_pages < target {
        fill.push(g.alloc_op());
    }
    let mut churn = Vec::with_capacity(churn_ops);
    for _ in 0..churn_ops {
        let do_alloc = if g.live.is_empty() || g.live_pages + band < target {
            true
        } else if g.live_pages > target + band {
            false
        } else {
            g.rng.coin()
        };
        churn.push(if do_alloc { g.alloc_op() } else { g.free_op() });
    }
    Trace {
        fill,
        churn,
        slots: g.slot_order.len(),
    }
}
