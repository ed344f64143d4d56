//! The workloads, generic over the allocator so each one is compiled
//! (and inlined) separately for every contender.

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::host::Frames;
use crate::measure::{Sampler, calibrate, ns_per};
use crate::trace::{EMPTY, Op, PAGES_2M, TWO_MIB, Trace};

/// A contender: how to get memory for it and how to build a fresh instance.
pub trait Contender: Frames + Sized + 'static {
    /// Whatever backs the allocator (host memory, metadata buffers).
    type Mem: 'static;
    /// Memory for `pages` pages of Normal-zone memory.
    fn mem(pages: usize) -> Self::Mem;
    /// A fresh allocator over `mem` (a previous instance over the same
    /// `mem` is dead by then).
    fn make(mem: &Self::Mem) -> Self;
}

/// Target length of one sample of a calibrated loop.
pub const SAMPLE: Duration = Duration::from_millis(3);

#[inline(never)]
pub fn pairs<A: Frames>(a: &mut A, n: usize) {
    for _ in 0..n {
        let p = a.alloc(0).expect("single page");
        a.free(black_box(p), 0);
    }
}

/// Rows 1 and 2: single-page alloc+free pairs, on a fresh allocator (no
/// live allocation: every pair splits the largest block down and merges it
/// back) and warm (one page kept live so its buddy never merges).
pub fn pair_sampler<C: Contender>(pages: usize) -> Sampler<'static> {
    let (mem_f, mem_w) = (C::mem(pages), C::mem(pages));
    let mut fresh = C::make(&mem_f);
    let mut warm = C::make(&mem_w);
    let _held = warm.alloc(0).expect("held page");
    let mut f = |n| pairs(&mut fresh, n);
    let nf = calibrate(&mut f, SAMPLE, 1 << 22);
    let mut w = |n| pairs(&mut warm, n);
    let nw = calibrate(&mut w, SAMPLE, 1 << 22);
    Box::new(move || {
        let _keep = (&mem_f, &mem_w);
        vec![
            ns_per(nf, &mut |n| pairs(&mut fresh, n)),
            ns_per(nw, &mut |n| pairs(&mut warm, n)),
        ]
    })
}

/// Rows 3 and 4: allocate `count` single pages on a fresh allocator, then
/// free them in the order given by `perm` (indices into the allocations).
pub fn bulk_sampler<C: Contender>(pages: usize, perm: Rc<Vec<u32>>) -> Sampler<'static> {
    let mem = C::mem(pages);
    let mut addrs = vec![0usize; perm.len()];
    let mut shuffled = vec![0usize; perm.len()];
    Box::new(move || {
        let mut a = C::make(&mem);
        let t = Instant::now();
        for slot in addrs.iter_mut() {
            *slot = a.alloc(0).expect("single page");
        }
        let t_alloc = t.elapsed();
        for (s, &i) in shuffled.iter_mut().zip(perm.iter()) {
            *s = addrs[i as usize];
        }
        let t = Instant::now();
        for &p in shuffled.iter() {
            a.free(p, 0);
        }
        let t_free = t.elapsed();
        drop(black_box(a));
        let n = perm.len() as f64;
        vec![t_alloc.as_nanos() as f64 / n, t_free.as_nanos() as f64 / n]
    })
}

/// Replays `ops`; returns the number of failed allocations (the slot stays
/// empty and its later free is skipped).
#[inline(never)]
pub fn replay<A: Frames>(a: &mut A, ops: &[Op], slots: &mut [usize], orders: &mut [u8]) -> usize {
    let mut fails = 0;
    for op in ops {
        let s = op.slot as usize;
        if op.alloc {
            match a.alloc(u32::from(op.order)) {
                Some(p) => {
                    slots[s] = p;
                    orders[s] = op.order;
                }
                None => {
                    slots[s] = EMPTY;
                    fails += 1;
                }
            }
        } else if slots[s] != EMPTY {
            a.free(slots[s], u32::from(op.order));
            slots[s] = EMPTY;
        }
    }
    fails
}

/// What a churned allocator can report after the churn rows.
pub trait Churned {
    /// Replays `trace` from the next sample on (the memory is kept).
    fn retrace(&mut self, trace: Rc<Trace>);
    /// One sample of rows 5/6: `[ns per churn op, failed allocations]`.
    fn sample(&mut self) -> Vec<f64>;
    /// One sample of row 7 on the final state: `[ns per aligned alloc,
    /// ns per aligned alloc+free pair, misaligned results, failures]`.
    fn aligned(&mut self) -> Vec<f64>;
    /// Row 10 on the final state (destructive): 2 MiB blocks obtained as a
    /// percentage of `free_pages / 512`.
    fn obtainable(&mut self) -> f64;
}

pub struct ChurnState<C: Contender> {
    // `a` is declared (so dropped) before the memory it uses.
    a: Option<C>,
    mem: C::Mem,
    total_pages: usize,
    trace: Rc<Trace>,
    slots: Vec<usize>,
    orders: Vec<u8>,
    timer_ns: f64,
}

impl<C: Contender> ChurnState<C> {
    pub fn new(pages: usize, trace: Rc<Trace>, timer_ns: f64) -> Self {
        Self {
            mem: C::mem(pages),
            total_pages: pages,
            slots: vec![EMPTY; trace.slots],
            orders: vec![0; trace.slots],
            trace,
            a: None,
            timer_ns,
        }
    }

    fn live_pages(&self) -> usize {
        self.slots
            .iter()
            .zip(&self.orders)
            .filter(|(s, _)| **s != EMPTY)
            .map(|(_, o)| 1usize << o)
            .sum()
    }
}

/// Aligned single pages allocated back to back per timed batch.
const ALIGNED_BATCH: usize = 16;

impl<C: Contender> Churned for ChurnState<C> {
    fn retrace(&mut self, trace: Rc<Trace>) {
        self.a = None;
        self.slots = vec![EMPTY; trace.slots];
        self.orders = vec![0; trace.slots];
        self.trace = trace;
    }

    fn sample(&mut self) -> Vec<f64> {
        self.a = None;
        let mut a = C::make(&self.mem);
        self.slots.fill(EMPTY);
        let fill_fails = replay(&mut a, &self.trace.fill, &mut self.slots, &mut self.orders);
        let t = Instant::now();
        let fails = replay(&mut a, &self.trace.churn, &mut self.slots, &mut self.orders);
        let ns = t.elapsed().as_nanos() as f64 / self.trace.churn.len() as f64;
        self.a = Some(a);
        vec![ns, (fill_fails + fails) as f64]
    }

    fn aligned(&mut self) -> Vec<f64> {
        let a = self.a.as_mut().expect("churned state");
        let (mut misaligned, mut fails) = (0usize, 0usize);
        let mut got = [0usize; ALIGNED_BATCH];
        // Alloc-only cost: batches of back-to-back requests, timer cost removed.
        let mut alloc_ns = 0.0;
        let mut n_alloc = 0usize;
        for _ in 0..64 {
            let t = Instant::now();
            for g in got.iter_mut() {
                *g = a.alloc_aligned_page(TWO_MIB).unwrap_or(EMPTY);
            }
            alloc_ns += t.elapsed().as_nanos() as f64 - self.timer_ns;
            n_alloc += ALIGNED_BATCH;
            for &g in got.iter() {
                if g == EMPTY {
                    fails += 1;
                } else {
                    misaligned += usize::from(!g.is_multiple_of(TWO_MIB));
                    a.free_aligned_page(g, TWO_MIB);
                }
            }
        }
        // Pair cost: a calibrated loop of alloc+free.
        let mut pair = |n: usize| {
            for _ in 0..n {
                if let Some(p) = a.alloc_aligned_page(TWO_MIB) {
                    a.free_aligned_page(black_box(p), TWO_MIB);
                }
            }
        };
        let n = calibrate(&mut pair, SAMPLE, 1 << 20);
        let pair_ns = ns_per(n, &mut pair);
        vec![
            alloc_ns.max(0.0) / n_alloc as f64,
            pair_ns,
            misaligned as f64,
            fails as f64,
        ]
    }

    fn obtainable(&mut self) -> f64 {
        let free = self.total_pages - self.live_pages();
        let a = self.a.as_mut().expect("churned state");
        if let Some(own) = a.free_page_count() {
            assert_eq!(
                own, free,
                "allocator's free-page count disagrees with the trace"
            );
        }
        let mut got = 0usize;
        while let Some(p) = a.alloc_block(PAGES_2M.trailing_zeros()) {
            assert!(p.is_multiple_of(TWO_MIB), "2 MiB block misaligned");
            got += 1;
        }
        self.a = None;
        100.0 * got as f64 / (free / PAGES_2M) as f64
    }
}
