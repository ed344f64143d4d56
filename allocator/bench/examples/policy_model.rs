//! A model of where the buddy allocator places blocks, run over the traces
//! of `allocator/tests/antifrag.rs`: the share of 2 MiB blocks obtainable
//! after the churn, per placement policy, in seconds instead of a rebuild.
//!
//! It models choice, not speed: exact per-order free sets (lowest address
//! first; a scratch variant with the allocator's 32 address buckets gave
//! the same mean without hot lists, 97.24% against 97.22%), eager
//! merging, and the hot lists of `src/hot.rs` (per-order stacks, newest
//! first, blocks of order >= 1 merge while parked, single pages refilled
//! from a block of up to `REFILL_ORDER`, everything merged back before an
//! allocation fails). The traces come from `tests/common/churn_trace.rs`,
//! as for the test. With the default options it gives 96.32% (uniform)
//! and 93.82% (skewed) where
//! `tests/antifrag.rs` measures 96.24% and 93.81% on the allocator.
//!
//! ```text
//! cargo run --release -p allocator-bench --example policy_model -- [options]
//!   --hot-orders N   orders with hot lists (0: none, which is plain
//!                    address-ordered best fit, buddy_system_allocator's
//!                    policy)                                [HOT_ORDERS]
//!   --hot-cap N      blocks per hot list                    [HOT_CAP]
//!   --refill N       refill order for single pages          [REFILL_ORDER]
//!   --cross K        requests of order <= K take the lowest-addressed
//!                    block of any order below 9 (smallest order on a tie
//!                    of address bucket) instead of the smallest order
//!   --park-low       park a freed block only if it lies at or below the
//!                    lowest listed block of its order (bucket granularity)
//!   --hot-groups G   take the newest parked block of the lowest of G
//!                    address groups (a power of two) instead of the newest
//!   --traces U S     uniform and skewed traces              [100 40]
//! ```

use std::collections::BTreeSet;

#[path = "../../tests/common/churn_trace.rs"]
mod churn_trace;

use churn_trace::{Churned, PAGES, PickOrder, churn};

use framekeep::{HOT_CAP, HOT_ORDERS, NR_ORDERS, REFILL_ORDER};

const PAGEBLOCK_ORDER: usize = framekeep::PAGEBLOCK_ORDER as usize;
/// Address bucket shift of the allocator for a 1 GiB section (32 buckets).
const BUCKET_SHIFT: u32 = 13;

#[derive(Clone, Copy)]
struct Policy {
    hot_orders: usize,
    hot_cap: usize,
    refill: u32,
    cross: Option<usize>,
    park_low: bool,
    /// log2 of the address groups a hot list pops from (0: one group).
    hot_group_bits: u32,
}

struct Model {
    p: Policy,
    /// Listed free blocks per order (page index).
    listed: Vec<BTreeSet<u64>>,
    /// Parked blocks per order, oldest first.
    hot: Vec<Vec<u64>>,
}

impl Model {
    fn new(p: Policy) -> Self {
        let mut listed = vec![BTreeSet::new(); NR_ORDERS];
        listed[NR_ORDERS - 1].insert(0);
        Model {
            p,
            listed,
            hot: vec![Vec::new(); NR_ORDERS],
        }
    }

    fn orders(&self, k: usize) -> u32 {
        (k..NR_ORDERS)
            .filter(|&o| {
                !self.listed[o].is_empty() || (o < self.p.hot_orders && !self.hot[o].is_empty())
            })
            .fold(0, |m, o| m | 1 << o)
    }

    /// The listed order to take from for a request of order `k` whose
    /// smallest listed order is `j`.
    fn listed_order(&self, k: usize, j: usize) -> usize {
        if self.p.cross.is_none_or(|c| k > c) || j >= PAGEBLOCK_ORDER {
            return j;
        }
        (j..PAGEBLOCK_ORDER)
            .filter_map(|o| self.listed[o].first().map(|&a| (a >> BUCKET_SHIFT, o)))
            .min()
            .map_or(j, |(_, o)| o)
    }

    /// Best fit over listed and parked blocks, split down to `k`.
    fn take(&mut self, k: usize) -> Option<u64> {
        let m = self.orders(k);
        if m == 0 {
            return None;
        }
        let mut j = m.trailing_zeros() as usize;
        let a = match self.hot_pop(j) {
            Some(a) => a,
            None => {
                j = self.listed_order(k, j);
                self.listed[j]
                    .pop_first()
                    .expect("order has a listed block")
            }
        };
        while j > k {
            j -= 1;
            self.listed[j].insert(a + (1 << j));
        }
        Some(a)
    }

    fn alloc_once(&mut self, k: usize) -> Option<u64> {
        if let Some(a) = self.hot_pop(k) {
            return Some(a);
        }
        if k == 0 && self.p.hot_orders > 0 && self.listed[0].is_empty() {
            let m = self.orders(1);
            if m == 0 {
                return None;
            }
            let room = (self.p.hot_cap - self.hot[0].len()) as u64;
            let r = m
                .trailing_zeros()
                .min(self.p.refill)
                .min((room + 1).ilog2());
            let a = self.take(r as usize)?;
            // Highest first: the stack hands them out in address order.
            self.hot[0].extend((1..1u64 << r).rev().map(|i| a + i));
            return Some(a);
        }
        self.take(k)
    }

    /// The newest parked block of order `k` (of the lowest address group).
    fn hot_pop(&mut self, k: usize) -> Option<u64> {
        if k >= self.p.hot_orders {
            return None;
        }
        let shift = PAGES.ilog2() - self.p.hot_group_bits;
        let h = &mut self.hot[k];
        let low = h.iter().map(|&a| a >> shift).min()?;
        let i = h.iter().rposition(|&a| a >> shift == low)?;
        Some(h.remove(i))
    }

    fn alloc(&mut self, k: usize) -> Option<u64> {
        self.alloc_once(k).or_else(|| {
            self.drain();
            self.alloc_once(k)
        })
    }

    fn drain(&mut self) {
        for o in 0..self.p.hot_orders {
            for a in std::mem::take(&mut self.hot[o]) {
                self.free(a, o, false);
            }
        }
    }

    /// Takes the free buddy `b` of order `k` out of its list or hot list.
    fn take_buddy(&mut self, b: u64, k: usize) -> bool {
        if self.listed[k].remove(&b) {
            return true;
        }
        if (1..self.p.hot_orders).contains(&k)
            && let Some(i) = self.hot[k].iter().position(|&x| x == b)
        {
            self.hot[k].swap_remove(i);
            return true;
        }
        false
    }

    fn free(&mut self, mut a: u64, mut k: usize, park: bool) {
        while k < NR_ORDERS - 1 && self.take_buddy(a ^ (1 << k), k) {
            a &= !(1 << k);
            k += 1;
        }
        let low_enough = !self.p.park_low
            || self.listed[k]
                .first()
                .is_none_or(|&f| a >> BUCKET_SHIFT <= f >> BUCKET_SHIFT);
        if park && k < self.p.hot_orders && self.hot[k].len() < self.p.hot_cap && low_enough {
            self.hot[k].push(a);
        } else {
            self.listed[k].insert(a);
        }
    }
}

impl Churned for Model {
    type Block = u64;
    fn alloc(&mut self, order: u32) -> u64 {
        Model::alloc(self, order as usize).expect("half of memory is free")
    }
    fn free(&mut self, block: u64, order: u32) {
        Model::free(self, block, order as usize, true);
    }
}

/// One trace of `tests/antifrag.rs`: % of 2 MiB blocks obtainable.
fn percentage(p: Policy, i: u64, pick: PickOrder) -> f64 {
    let mut m = Model::new(p);
    let live_pages = churn(&mut m, i, pick);
    let free = (PAGES - live_pages) as f64;
    let got = std::iter::from_fn(|| m.alloc(PAGEBLOCK_ORDER)).count();
    got as f64 * 100.0 / (free / 512.0)
}

fn report(what: &str, p: Policy, traces: u64, pick: PickOrder) {
    let pct: Vec<f64> = (1..=traces).map(|i| percentage(p, i, pick)).collect();
    let (mean, min, below) = churn_trace::summary(&pct);
    println!("{what}: {traces} traces, mean {mean:.2}%, min {min:.1}%, {below} below 95%");
}

fn main() {
    let mut p = Policy {
        hot_orders: HOT_ORDERS,
        hot_cap: HOT_CAP,
        refill: REFILL_ORDER,
        cross: None,
        park_low: false,
        hot_group_bits: 0,
    };
    let (mut uniform, mut skewed) = (100, 40);
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> u64 {
        v.and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hot-orders" => p.hot_orders = num(args.next(), &a).min(NR_ORDERS as u64) as usize,
            "--hot-cap" => p.hot_cap = num(args.next(), &a).max(1) as usize,
            "--refill" => p.refill = num(args.next(), &a).min(8) as u32,
            "--cross" => p.cross = Some(num(args.next(), &a) as usize),
            "--park-low" => p.park_low = true,
            "--hot-groups" => p.hot_group_bits = num(args.next(), &a).clamp(1, 1 << 10).ilog2(),
            "--traces" => (uniform, skewed) = (num(args.next(), &a), num(args.next(), &a)),
            _ => panic!("unknown option {a} (see the comment at the top of policy_model.rs)"),
        }
    }
    report("uniform orders 0..=9", p, uniform, churn_trace::uniform);
    report("skewed orders (P ~ 2^-k)", p, skewed, churn_trace::skewed);
}
