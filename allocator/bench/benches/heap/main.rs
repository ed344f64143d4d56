//! Heap benchmark: our slab + per-CPU page cache `GlobalAlloc`
//! (`framekeep::Heap`) against buddy-slab-allocator 0.6.1's
//! `GlobalAllocator`, talc 5 (`TalcLock` with a spin lock),
//! linked_list_allocator 0.10 and `buddy_system_allocator::Heap` (both
//! behind the same test-and-test-and-set spin lock), in one run.
//!
//! Rows: alloc+free pairs of 16, 64, 256 and 2048 bytes; random-size churn
//! with 10k live objects; single-page alloc+free (ours: through the
//! per-CPU page cache, held as a `Block`, and again freed by address); the
//! page pair and the 64-byte pair on 2 threads.
//! Each figure is the median of samples taken round-robin across the
//! allocators (`frames/measure.rs`). Run: `cargo bench -p allocator-bench --bench heap`.

#[allow(dead_code)]
#[path = "../frames/measure.rs"]
mod measure;
mod peers;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use measure::{Policy, Sampler, pin, rounds, timer_overhead};
use peers::{Bsys, Lla, Ours, Talc};

const NAMES: [&str; 5] = ["ours", "bsa 0.6.1", "talc 5", "lla 0.10", "bsys Heap"];
const LIVE: usize = 10_000;

/// One contender: `GlobalAlloc` plus its single-page interface.
trait Contender: Sync + 'static {
    unsafe fn a(&self, l: Layout) -> *mut u8;
    unsafe fn d(&self, p: *mut u8, l: Layout);
    fn page(&self) -> usize {
        // SAFETY: non-zero layout.
        unsafe { self.a(PAGE) as usize }
    }
    fn unpage(&self, p: usize) {
        // SAFETY: from `page`.
        unsafe { self.d(p as *mut u8, PAGE) }
    }
    /// One single-page alloc+free through the fastest page interface
    /// (ours: a `Block` handle, which needs no atomic claim to free).
    #[inline(always)]
    fn page_pair(&self) {
        let p = self.page();
        assert_ne!(p, 0);
        self.unpage(black_box(p));
    }
}

const PAGE: Layout = match Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!(),
};

macro_rules! via_global_alloc {
    ($t:ty) => {
        impl Contender for $t {
            #[inline(always)]
            unsafe fn a(&self, l: Layout) -> *mut u8 {
                // SAFETY: forwarded.
                unsafe { GlobalAlloc::alloc(self, l) }
            }
            #[inline(always)]
            unsafe fn d(&self, p: *mut u8, l: Layout) {
                // SAFETY: forwarded.
                unsafe { GlobalAlloc::dealloc(self, p, l) }
            }
        }
    };
}
via_global_alloc!(Talc);
via_global_alloc!(Lla);
via_global_alloc!(Bsys);

impl Contender for Ours {
    #[inline(always)]
    unsafe fn a(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { GlobalAlloc::alloc(self, l) }
    }
    #[inline(always)]
    unsafe fn d(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded.
        unsafe { GlobalAlloc::dealloc(self, p, l) }
    }
    #[inline(always)]
    fn page(&self) -> usize {
        self.frames().alloc(0).map_or(0, |p| p.0 as usize)
    }
    #[inline(always)]
    fn unpage(&self, p: usize) {
        let _ = self.frames().free(framekeep::PhysAddr(p as u64), 0);
    }
    #[inline(always)]
    fn page_pair(&self) {
        let b = self.frames().alloc_block(0).unwrap();
        let _ = self.frames().free_block(black_box(b));
    }
}

impl Contender for buddy_slab_allocator::GlobalAllocator<4096> {
    #[inline(always)]
    unsafe fn a(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { GlobalAlloc::alloc(self, l) }
    }
    #[inline(always)]
    unsafe fn d(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded.
        unsafe { GlobalAlloc::dealloc(self, p, l) }
    }
    fn page(&self) -> usize {
        self.alloc_pages(1, 4096).unwrap_or(0)
    }
    fn unpage(&self, p: usize) {
        self.dealloc_pages(p, 1)
    }
}

const N_PAIRS: usize = 20_000;

/// ns per alloc+free pair of `l`.
fn pair_sampler<C: Contender>(c: &'static C, l: Layout) -> Sampler<'static> {
    Box::new(move || {
        let t = Instant::now();
        for _ in 0..N_PAIRS {
            // SAFETY: non-zero layout; freed once with it.
            unsafe {
                let p = c.a(black_box(l));
                assert!(!p.is_null());
                c.d(black_box(p), l);
            }
        }
        vec![t.elapsed().as_nanos() as f64 / N_PAIRS as f64]
    })
}

/// Single-page pairs: through `page_pair`, or `by_address` (ours: a
/// free by address, which claims the page with a compare-exchange).
fn page_sampler<C: Contender>(c: &'static C, by_address: bool) -> Sampler<'static> {
    Box::new(move || {
        let t = Instant::now();
        for _ in 0..N_PAIRS {
            if by_address {
                let p = c.page();
                assert_ne!(p, 0);
                c.unpage(black_box(p));
            } else {
                c.page_pair();
            }
        }
        vec![t.elapsed().as_nanos() as f64 / N_PAIRS as f64]
    })
}

/// Two threads (CPU ids 0 and 1, pinned to two cores), each doing `op`
/// pairs; ns per pair per thread (the slower thread's time).
fn two_thread_sampler<C: Contender>(c: &'static C, l: Option<Layout>) -> Sampler<'static> {
    Box::new(move || {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let bar = Barrier::new(2);
        let times: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let bar = &bar;
                    let core = cores.get(cores.len().saturating_sub(2) + i).copied();
                    s.spawn(move || {
                        if let Some(core) = core {
                            core_affinity::set_for_current(core);
                        }
                        peers::set_cpu(i);
                        bar.wait();
                        let t = Instant::now();
                        for _ in 0..N_PAIRS {
                            match l {
                                // SAFETY: non-zero layout; freed once with it.
                                Some(l) => unsafe {
                                    let p = c.a(black_box(l));
                                    assert!(!p.is_null());
                                    c.d(black_box(p), l);
                                },
                                None => c.page_pair(),
                            }
                        }
                        t.elapsed().as_nanos() as f64 / N_PAIRS as f64
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        peers::set_cpu(0);
        vec![times.iter().cloned().fold(0.0, f64::max)]
    })
}

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 80%: 8..=256 bytes, 15%: 257..=2048, 5%: 2049..=16384.
    fn size(&mut self) -> usize {
        let r = self.next();
        let x = (r >> 8) as usize;
        match r % 20 {
            0 => 2049 + x % 14336,
            1..=3 => 257 + x % 1792,
            _ => 8 + x % 249,
        }
    }
}

const CHURN_OPS: usize = 20_000;

/// Random-size churn around 10k live objects: each step frees a random
/// live object and allocates a new random-size one; ns per operation
/// (an allocation or a free).
fn churn_sampler<C: Contender>(c: &'static C) -> Sampler<'static> {
    let mut rng = Rng(42);
    let mut slots: Vec<(*mut u8, Layout)> = (0..LIVE)
        .map(|_| {
            let l = Layout::from_size_align(rng.size(), 8).unwrap();
            // SAFETY: non-zero layout.
            (unsafe { c.a(l) }, l)
        })
        .collect();
    assert!(slots.iter().all(|s| !s.0.is_null()));
    Box::new(move || {
        let t = Instant::now();
        for _ in 0..CHURN_OPS {
            let i = rng.next() as usize % LIVE;
            let l = Layout::from_size_align(rng.size(), 8).unwrap();
            // SAFETY: slot i is live with its layout; replaced by a new block.
            unsafe {
                c.d(slots[i].0, slots[i].1);
                let p = c.a(l);
                assert!(!p.is_null());
                slots[i] = (p, l);
            }
        }
        vec![t.elapsed().as_nanos() as f64 / (2 * CHURN_OPS) as f64]
    })
}

struct Row {
    label: String,
    /// The target, in ns on the machine `peers.md` was measured on.
    target: Option<f64>,
    /// That target on this machine: scaled by how much slower talc runs
    /// here than in `peers.md` (set once the whole table is measured).
    scaled: Option<f64>,
    v: Vec<f64>,
}

/// talc's figures in `../shared/docs/peers.md` (same workloads, the
/// machine the targets refer to): alloc+free pair of a small
/// object, and random-size churn with 10k live objects.
const TALC_PEERS_PAIR: f64 = 15.1;
const TALC_PEERS_CHURN: f64 = 21.5;

/// Index of talc in `Row::v`.
const TALC: usize = 2;

fn render(rows: &[Row]) -> String {
    let lw = rows.iter().map(|r| r.label.len()).max().unwrap_or(10);
    let mut out = format!(
        "{:<lw$} {:>6} {:>8}",
        "workload (ns per op)", "target", NAMES[0]
    );
    for n in &NAMES[1..] {
        out += &format!("  {n:>9} {:>6}", "ours/");
    }
    out += "  scaled     met  ahead\n";
    out += &"-".repeat(out.len() - 1);
    out.push('\n');
    for r in rows {
        let t = r.target.map_or("-".into(), |t| format!("<={t}"));
        let mut line = format!("{:<lw$} {:>6} {:>8.1}", r.label, t, r.v[0]);
        for &p in &r.v[1..] {
            line += &format!("  {p:>9.1} {:>6.2}", r.v[0] / p);
        }
        let pass = r
            .scaled
            .map_or("-", |t| if r.v[0] <= t { "yes" } else { "NO" });
        line += &r
            .scaled
            .map_or(format!("  {:>6}", "-"), |t| format!("  {t:>6.1}"));
        let ahead = if r.v[1..].iter().all(|&p| r.v[0] < p) {
            "yes"
        } else {
            "NO"
        };
        line += &format!("  {pass:>6}  {ahead:>5}");
        out += &line;
        out.push('\n');
    }
    out
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("heap: measurement skipped; run `cargo bench -p allocator-bench --bench heap`");
        return;
    }
    let pinned = pin();
    peers::set_cpu(0);
    println!("allocator-bench: heap — peer comparison");
    println!(
        "{pinned}; timer overhead {:.0} ns; medians of round-robin samples; ours masks \
         \"interrupts\" by saving, setting and restoring a thread-local flag (host), CPU ids are thread-locals",
        timer_overhead()
    );
    let ours = peers::ours();
    let bsa = peers::bsa();
    let talc = peers::talc();
    let lla = peers::lla();
    let bsys = peers::bsys();
    let pol = |secs: f64| Policy {
        warmup: 2,
        min: 7,
        max: 41,
        budget: Duration::from_secs_f64(secs),
    };
    let med = |s: Vec<Sampler<'static>>, secs: f64| -> Vec<f64> {
        let mut s = s;
        rounds(&mut s, &pol(secs))
            .into_iter()
            .map(|m| m[0])
            .collect()
    };
    let mut rows = Vec::new();
    for size in [16usize, 64, 256, 2048] {
        eprintln!("[heap] {size}-byte pairs");
        let l = Layout::from_size_align(size, 8).unwrap();
        let v = med(
            vec![
                pair_sampler(ours, l),
                pair_sampler(bsa, l),
                pair_sampler(talc, l),
                pair_sampler(lla, l),
                pair_sampler(bsys, l),
            ],
            2.0,
        );
        rows.push(Row {
            label: format!("alloc+free pair, {size} B"),
            target: Some(8.0),
            scaled: None,
            v,
        });
    }
    eprintln!("[heap] churn");
    // linked_list_allocator is O(live) per operation: ~10 us per op at
    // 10k live objects, so its sampler dominates the budget; still run.
    let v = med(
        vec![
            churn_sampler(ours),
            churn_sampler(bsa),
            churn_sampler(talc),
            churn_sampler(lla),
            churn_sampler(bsys),
        ],
        6.0,
    );
    rows.push(Row {
        label: format!("random-size churn, {LIVE} live"),
        target: Some(12.0),
        scaled: None,
        v,
    });
    eprintln!("[heap] page pairs");
    for by_address in [false, true] {
        let v = med(
            vec![
                page_sampler(ours, by_address),
                page_sampler(bsa, by_address),
                page_sampler(talc, by_address),
                page_sampler(lla, by_address),
                page_sampler(bsys, by_address),
            ],
            2.0,
        );
        let label = match by_address {
            false => "1-page alloc+free (per-CPU cache)",
            true => "1-page pair, freed by address",
        };
        rows.push(Row {
            label: label.into(),
            target: Some(4.0),
            scaled: None,
            v,
        });
    }
    eprintln!("[heap] 2 threads");
    let v = med(
        vec![
            two_thread_sampler(ours, None),
            two_thread_sampler(bsa, None),
            two_thread_sampler(talc, None),
            two_thread_sampler(lla, None),
            two_thread_sampler(bsys, None),
        ],
        3.0,
    );
    rows.push(Row {
        label: "1-page alloc+free, 2 threads".into(),
        target: Some(4.0),
        scaled: None,
        v,
    });
    let l = Layout::from_size_align(64, 8).unwrap();
    let v = med(
        vec![
            two_thread_sampler(ours, Some(l)),
            two_thread_sampler(bsa, Some(l)),
            two_thread_sampler(talc, Some(l)),
            two_thread_sampler(lla, Some(l)),
            two_thread_sampler(bsys, Some(l)),
        ],
        3.0,
    );
    rows.push(Row {
        label: "alloc+free pair, 64 B, 2 threads".into(),
        target: Some(8.0),
        scaled: None,
        v,
    });
    // The machine factor: talc here against talc in peers.md, per row for
    // the object pairs and the churn (so a load spike during one row
    // scales that row's target too); the page rows have no talc figure in
    // peers.md and use the median factor of the 16..256-byte rows.
    let mut f3: Vec<f64> = rows[..3]
        .iter()
        .map(|r| r.v[TALC] / TALC_PEERS_PAIR)
        .collect();
    f3.sort_by(f64::total_cmp);
    let page_factor = f3[1];
    for r in rows.iter_mut() {
        let f = if r.label.starts_with("random-size churn") {
            r.v[TALC] / TALC_PEERS_CHURN
        } else if r.label.starts_with("alloc+free pair") {
            r.v[TALC] / TALC_PEERS_PAIR
        } else {
            page_factor
        };
        r.scaled = r.target.map(|t| t * f);
    }
    println!();
    print!("{}", render(&rows));
    println!(
        "\n\"scaled\": the targets (talc in this row / talc in peers.md: \
         {TALC_PEERS_PAIR} ns per small pair, {TALC_PEERS_CHURN} ns per churn op); the page rows \
         use the median factor of the 16..256-byte rows, {page_factor:.2}x. \
         \"met\" compares ours with it."
    );
    let st = ours.stats();
    println!(
        "\nours after the run: {} slab pages, {} slab descriptors, {} cached pages, {} faults",
        st.slab_pages,
        st.descriptors,
        st.frames.cached_pages(),
        st.faults
    );
}
