//! The whole stack (heap, slab, per-CPU page caches, buddy) driven by
//! operations decoded from bytes, against a model of the live
//! allocations. Shared by the fuzz target `stack`
//! (`fuzz/fuzz_targets/stack.rs`) and `tests/stack.rs` (the same driver on
//! inputs from a seeded generator).
//!
//! The model is the set of live blocks (address, footprint, owner: a heap
//! layout or a page-layer allocation). After every operation that hands a
//! block out, the block must be aligned as asked, inside the heap's
//! managed memory and overlap no live block; every block carries a byte
//! pattern that is checked when it is freed or moved. Every bad call (a
//! wrong layout, a double or stale free, a foreign pointer, a page-layer
//! free of the heap's memory, a wrong count) must be refused with the
//! expected error and leave the free page counts, the cached and slab
//! pages and the buddy's free blocks as they were. A full drain must leave
//! exactly the live blocks' pages in use, and at the end everything is
//! freed and all managed pages must be free again.
//!
//! Set `STACK_TRACE=1` to print the decoded setup and operations.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use framekeep::{
    Constraint, CpuLocal, DMA_END, DMA32_END, Error, FaultKind, FreeBlock, PcpConfig, PhysAddr,
    SIZE_CLASSES, Zone, size_class, slab_order,
};

use crate::host::Ram;

/// CPU slots of the driven heap (few, so that operations "as another CPU"
/// meet each other's caches and slabs often).
pub const CPUS: usize = 4;

framekeep::host_cpu_local!(pub StackCpu, CPUS);

pub type StackHeap = framekeep::Heap<StackCpu, CPUS>;

/// Heap sizes (pages, metadata included) the input chooses from.
pub const MIN_PAGES: u64 = 512;
pub const MAX_PAGES: u64 = 2048;

/// Pages after the first region that `AddMemory` may add later.
pub const EXTRA_PAGES: u64 = 1024;

/// Host memory for [`run`]: enough for the largest heap and what may be
/// added to it.
pub fn ram() -> Ram {
    Ram::new((MAX_PAGES + EXTRA_PAGES) as usize, 1 << 21)
}

/// Where the heap's memory is physically (the host buffer is then mapped
/// at `phys_offset = buffer - start`), or `None`: at the buffer's own
/// address, offset 0 (above 4 GiB: all Normal). The others put it in
/// DMA32, across 16 MiB (DMA and DMA32), across 4 GiB (DMA32 and
/// Normal), or in Normal; all 2 MiB aligned, so virtual alignment is
/// physical alignment.
const PLACEMENTS: [Option<u64>; 5] = [
    None,
    Some(1 << 30),
    Some((16 << 20) - (2 << 20)),
    Some((1 << 32) - (4 << 20)),
    Some(8 << 30),
];

const PAGE: usize = 4096;

/// Page-cache configurations the input chooses from.
const CONFIGS: [PcpConfig; 4] = [
    PcpConfig::DEFAULT,
    PcpConfig {
        high: [8, 4, 4, 4],
        batch: [4, 2, 2, 2],
    },
    // Nothing cached: every page goes straight to the buddy.
    PcpConfig {
        high: [0; 4],
        batch: [1; 4],
    },
    PcpConfig {
        high: [128, 1, 0, 24],
        batch: [128, 1, 1, 8],
    },
];

/// Layouts the heap serves in interesting ways: size classes at their
/// edges, the cached page orders at and above their alignment, page runs
/// at large alignments.
const FIXED: [(usize, usize); 16] = [
    (0, 8),
    (1, 1),
    (24, 8),
    (2048, 2048),
    (2049, 8),
    (4096, 4096),
    (4096, 8192),
    (4096, 65536),
    (4097, 4096),
    (8192, 4096),
    (12288, 16384),
    (32768, 32768),
    (40000, 8),
    (65536, 65536),
    (100_000, 16384),
    (200 << 10, 4096),
];

/// Reads the input a few bytes at a time; `None` at its end.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) | (u16::from(self.u8()?) << 8))
    }
    fn layout(&mut self) -> Option<Layout> {
        let b = self.u8()?;
        let v = usize::from(self.u16()?);
        let (size, align) = match b & 7 {
            0..=2 => (1 + v % 2048, 0),
            3 => (1 + v % 128, 0),
            // 1, 2, 4 or 8 pages, sometimes a little less.
            4 => ((PAGE << (v % 4)) - (v >> 2) % 3000, 0),
            5 => (2049 + v * 3 % (200 << 10), 0),
            6 => (PAGE * (1 + v % 50), 0),
            _ => FIXED[v % FIXED.len()],
        };
        let align = match align {
            0 if b & 8 == 0 => 1 << ((b >> 4) % 4),
            0 => 1 << ((b >> 4) + 1), // up to 64 KiB
            a => a,
        };
        Layout::from_size_align(size, align).ok()
    }
    fn con(&mut self) -> Option<Con> {
        let b = self.u8()?;
        Some(match b % 8 {
            0..=3 => Con::Any,
            4 => Con::Zone(Zone::Dma32),
            5 => Con::Zone(Zone::Dma),
            _ => Con::Below(self.u16()?),
        })
    }
    fn op(&mut self) -> Option<Step> {
        let b = self.u8()?;
        let cpu = (b >> 5 >= 4).then(|| usize::from(b >> 5) - 4);
        let op = match b & 31 {
            0..=3 => Op::Alloc {
                l: self.layout()?,
                n: 1,
            },
            4 => Op::Alloc {
                l: self.layout()?,
                n: 1 + self.u8()? % 48,
            },
            5..=7 => Op::Free { which: self.u16()? },
            30 => Op::FreeRun {
                which: self.u16()?,
                n: 1 + self.u8()? % 64,
            },
            8 => Op::FreeAs {
                which: self.u16()?,
                l: self.layout()?,
            },
            9 => Op::DoubleFree { which: self.u16()? },
            10 => Op::StaleFree { which: self.u16()? },
            11 => Op::Foreign {
                kind: self.u8()?,
                which: self.u16()?,
                l: self.layout()?,
            },
            12 => Op::Interior {
                which: self.u16()?,
                off: self.u16()?,
            },
            13 | 14 => Op::Realloc {
                which: self.u16()?,
                how: self.u8()?,
                v: self.u16()?,
            },
            15 => Op::ReallocWrong {
                which: self.u16()?,
                l: self.layout()?,
                v: self.u16()?,
            },
            16 | 17 => Op::FAlloc {
                order: self.u8()? % 6,
                c: self.con()?,
            },
            18 => Op::FAllocPages {
                count: usize::from(self.u8()? % 65),
                c: self.con()?,
            },
            19 => {
                let b = self.u8()?;
                Op::FAllocAligned {
                    count: usize::from(b % 9),
                    // 17 and up: not a power of two.
                    shift: (b >> 4) + self.u8()? % 4,
                    c: self.con()?,
                }
            }
            20 => Op::FAllocBulk {
                n: usize::from(self.u8()? % 33),
                c: self.con()?,
            },
            21 | 22 => Op::FFree {
                which: self.u16()?,
                how: self.u8()?,
            },
            23 => {
                let n = self.u8()?;
                let b = self.u8()?;
                let bad = match b & 1 {
                    1 => Some((self.u8()?, b >> 1)),
                    _ => None,
                };
                Op::FFreeBulk {
                    n: usize::from(n % 24),
                    at: self.u16()?,
                    bad,
                }
            }
            24 => Op::FWrongCount {
                which: self.u16()?,
                v: self.u8()?,
            },
            25 | 26 => Op::Attack {
                which: self.u16()?,
                how: self.u8()?,
                page: self.u8()?,
            },
            27 => Op::FStale { which: self.u16()? },
            28 => Op::Reserve {
                off: self.u16()?,
                count: usize::from(self.u8()? % 48),
                drained: self.u8()? & 1 == 1,
            },
            29 => Op::Drain { kind: self.u8()? },
            // Rarely: more memory makes running out of it rarer.
            _ => match self.u8()? {
                b if b & 7 == 0 => Op::AddMemory {
                    gap: b >> 3 & 3,
                    pages: self.u16()?,
                },
                _ => Op::Alloc {
                    l: self.layout()?,
                    n: 1,
                },
            },
        };
        Some(Step { cpu, op })
    }
}

/// A page-layer constraint as decoded (limits are relative to the heap's
/// memory, which lies far above 4 GiB on a host).
#[derive(Clone, Copy, Debug)]
pub enum Con {
    Any,
    Zone(Zone),
    /// A limit this many pages past the start of the heap's memory.
    Below(u16),
}

/// One operation; `which` indexes are reduced modulo what they pick from.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `n` heap allocations of `l`.
    Alloc {
        l: Layout,
        n: u8,
    },
    /// A live heap block freed with its layout.
    Free {
        which: u16,
    },
    /// `n` live heap blocks, neighbours in address order, freed (empties
    /// whole slabs).
    FreeRun {
        which: u16,
        n: u8,
    },
    /// A live heap block freed with `l`: fine if the heap serves `l` as
    /// the block's layout, else refused (`WrongLayout`).
    FreeAs {
        which: u16,
        l: Layout,
    },
    /// A live heap block freed twice in a row.
    DoubleFree {
        which: u16,
    },
    /// A heap block freed earlier, freed again later.
    StaleFree {
        which: u16,
    },
    /// A heap free of something the heap never handed out.
    Foreign {
        kind: u8,
        which: u16,
        l: Layout,
    },
    /// A heap free of a pointer inside a live heap block.
    Interior {
        which: u16,
        off: u16,
    },
    /// `realloc` of a live heap block: same size, shrink or grow.
    Realloc {
        which: u16,
        how: u8,
        v: u16,
    },
    /// `realloc` of a live heap block with a layout the heap does not
    /// serve as the block's (null, nothing changed, one fault reported).
    ReallocWrong {
        which: u16,
        l: Layout,
        v: u16,
    },
    /// `frames().alloc` / `alloc_in`.
    FAlloc {
        order: u8,
        c: Con,
    },
    FAllocPages {
        count: usize,
        c: Con,
    },
    FAllocAligned {
        count: usize,
        shift: u8,
        c: Con,
    },
    FAllocBulk {
        n: usize,
        c: Con,
    },
    /// A live page-layer block freed the way it was allocated.
    FFree {
        which: u16,
        how: u8,
    },
    /// Single frames freed in bulk, possibly with one bad frame among them.
    FFreeBulk {
        n: usize,
        at: u16,
        bad: Option<(u8, u8)>,
    },
    /// A live page-layer block freed with another order or count.
    FWrongCount {
        which: u16,
        v: u8,
    },
    /// Page-layer frees (and a reservation) of the heap's memory.
    Attack {
        which: u16,
        how: u8,
        page: u8,
    },
    /// A page-layer block freed earlier, freed again later.
    FStale {
        which: u16,
    },
    /// `reserve_range` of a range of the heap's memory (`drained`: after
    /// a full drain, when the model knows exactly which pages are free).
    Reserve {
        off: u16,
        count: usize,
        drained: bool,
    },
    Drain {
        kind: u8,
    },
    /// More memory for the heap: `pages` (reduced to what the buffer has
    /// left) after a gap of `gap` pages.
    AddMemory {
        gap: u8,
        pages: u16,
    },
}

/// An operation, run as CPU `cpu` (through `run_on`, so with "interrupts
/// masked") or directly on the current thread.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub cpu: Option<usize>,
    pub op: Op,
}

/// Who owns a live block, and how it is freed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// A heap allocation; `own_page`: a small request served by a whole
    /// page (no slab descriptor was left).
    Heap { l: Layout, own_page: bool },
    /// `frames().alloc` / `alloc_in` of this order.
    Order(u32),
    /// This many pages from `alloc_pages`, `alloc_aligned` or `reserve_range`.
    Pages(usize),
    /// One frame from `alloc_bulk`.
    Bulk,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    /// Bytes the block occupies (its size class, or its whole pages).
    len: usize,
    /// Bytes carrying the pattern (the requested size).
    size: usize,
    stamp: u8,
    kind: Kind,
    /// The CPU it was allocated on.
    cpu: usize,
}

/// How the heap serves a layout (mirrors `global.rs`): layouts with the
/// same plan are the same to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Small(usize),
    Cached(u32),
    Run(usize, usize),
    Never,
}

fn plan(l: Layout) -> Plan {
    let (size, align) = (l.size().max(1), l.align());
    if let Some(k) = size_class(size, align) {
        return Plan::Small(k);
    }
    let pages = size.div_ceil(PAGE);
    if pages.is_power_of_two() && pages <= 8 && align <= pages * PAGE {
        return Plan::Cached(pages.trailing_zeros());
    }
    if pages > 1 << 18 || align > PAGE << 18 {
        return Plan::Never;
    }
    Plan::Run(pages, align.max(PAGE))
}

/// The buddy order a page-granular plan takes its block from.
fn plan_order(p: Plan) -> u32 {
    match p {
        Plan::Small(_) | Plan::Never => 0,
        Plan::Cached(o) => o,
        Plan::Run(pages, align) => ceil_log2(pages).max((align / PAGE).trailing_zeros()),
    }
}

fn ceil_log2(n: usize) -> u32 {
    n.next_power_of_two().trailing_zeros()
}

/// Everything a refused call must leave as it was.
#[derive(PartialEq, Eq, Debug)]
struct Snap {
    free: u64,
    cached: u64,
    slab: u64,
    descriptors: u64,
    blocks: Vec<FreeBlock>,
}

/// Pattern byte `i` of a block stamped `stamp`: position-dependent, so a
/// block copied from the wrong offset is caught too.
fn pattern(stamp: u8, i: usize) -> u8 {
    stamp ^ ((i as u32).wrapping_mul(0x9E37_79B1) >> 24) as u8
}

/// Paths the driver reached, counted over all runs of the process (the
/// regular test checks that each was reached at least once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    HeapAlloc,
    HeapOom,
    /// A small request served by a page of its own (no descriptor left).
    OwnPage,
    HeapFree,
    /// A heap free on a CPU other than the one that allocated.
    RemoteFree,
    FreeEquivalent,
    WrongLayout,
    DoubleFree,
    DoubleFreeSlabGone,
    StaleFree,
    Foreign,
    Interior,
    ReallocInPlace,
    ReallocMoved,
    ReallocNull,
    ReallocWrong,
    FramesAlloc,
    FramesOom,
    ConstrainedAlloc,
    BulkFree,
    BulkBad,
    WrongCount,
    Attack,
    StaleFrames,
    Reserve,
    ReserveDrained,
    /// A block allocated under a zone constraint below Normal.
    LowZone,
    ReserveRefusedDrained,
    DrainChecked,
    AddMemory,
    Masked,
}

pub const HITS: usize = Hit::Masked as usize + 1;

impl Hit {
    pub const ALL: [Hit; HITS] = [
        Hit::HeapAlloc,
        Hit::HeapOom,
        Hit::OwnPage,
        Hit::HeapFree,
        Hit::RemoteFree,
        Hit::FreeEquivalent,
        Hit::WrongLayout,
        Hit::DoubleFree,
        Hit::DoubleFreeSlabGone,
        Hit::StaleFree,
        Hit::Foreign,
        Hit::Interior,
        Hit::ReallocInPlace,
        Hit::ReallocMoved,
        Hit::ReallocNull,
        Hit::ReallocWrong,
        Hit::FramesAlloc,
        Hit::FramesOom,
        Hit::ConstrainedAlloc,
        Hit::BulkFree,
        Hit::BulkBad,
        Hit::WrongCount,
        Hit::Attack,
        Hit::StaleFrames,
        Hit::Reserve,
        Hit::ReserveDrained,
        Hit::LowZone,
        Hit::ReserveRefusedDrained,
        Hit::DrainChecked,
        Hit::AddMemory,
        Hit::Masked,
    ];
}
static COUNTS: [AtomicU64; HITS] = [const { AtomicU64::new(0) }; HITS];

fn hit(h: Hit) {
    COUNTS[h as usize].fetch_add(1, Ordering::Relaxed);
}

/// How often each path was reached so far.
pub fn hits() -> [u64; HITS] {
    core::array::from_fn(|i| COUNTS[i].load(Ordering::Relaxed))
}

fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("STACK_TRACE").is_some())
}

/// Runs `f` as CPU `cpu` (`run_on` of the host stand-in), or directly.
fn on_cpu<R>(cpu: Option<usize>, f: impl FnOnce() -> R) -> R {
    let Some(cpu) = cpu else {
        return f();
    };
    let mut f = Some(f);
    let mut out = None;
    assert!(StackCpu::run_on(cpu, &mut || out = Some((f.take().unwrap())())));
    out.unwrap()
}

/// How a run's heap is set up (from the first bytes of the input).
#[derive(Clone, Copy, Debug)]
struct Setup {
    /// Pages of the first region, metadata included.
    pages: u64,
    /// The byte the metadata starts out filled with.
    garbage: u8,
    cfg: PcpConfig,
    /// Physical address of the memory (`None`: identity).
    at: Option<u64>,
    opts: framekeep::FrameOptions,
}

pub struct Driver<'r> {
    h: Box<StackHeap>,
    ram: &'r Ram,
    garbage: u8,
    /// The physical-to-virtual offset.
    off: u64,
    /// Managed memory: virtual (start, end) of each section.
    secs: Vec<(usize, usize)>,
    /// End of the first region's metadata (virtual).
    meta_end: usize,
    /// Pages of the buffer given to the heap so far (added ones included).
    used: u64,
    managed: u64,
    live: BTreeMap<usize, Block>,
    /// Heap blocks freed earlier (most recent last).
    dead_heap: Vec<(usize, Block)>,
    /// Page-layer blocks freed earlier.
    dead_frames: Vec<(usize, Block)>,
    stamp: u8,
    /// Faults the heap must have counted (refused `realloc`s report).
    faults: u64,
    /// Whether the current step runs inside `run_on` (masked).
    masked: bool,
    /// Memory the heap does not manage, for foreign frees.
    foreign: Box<[u64; 1024]>,
}

/// Runs the input: a heap over (a prefix of) `ram`, the operations the
/// input decodes to, then everything freed and the memory accounted for.
/// Panics on any disagreement with the model.
pub fn run(data: &[u8], ram: &Ram) {
    let mut input = Bytes(data);
    let (Some(g), Some(p), Some(c)) = (input.u8(), input.u16(), input.u8()) else {
        return;
    };
    let setup = Setup {
        pages: MIN_PAGES + u64::from(p) % (MAX_PAGES - MIN_PAGES + 1),
        garbage: g,
        cfg: CONFIGS[usize::from(c & 3)],
        at: PLACEMENTS[usize::from(c >> 2 & 7) % PLACEMENTS.len()],
        opts: framekeep::FrameOptions {
            poison: c & 0x40 != 0,
            zero_on_alloc: c & 0x80 != 0,
        },
    };
    if trace() {
        eprintln!("stack: {setup:?}");
    }
    let mut d = Driver::new(ram, setup);
    while let Some(step) = input.op() {
        if trace() {
            eprintln!("stack: {step:?}");
        }
        d.step(step);
    }
    d.finish();
}

impl<'r> Driver<'r> {
    fn new(ram: &'r Ram, s: Setup) -> Self {
        assert!(ram.pages() >= MAX_PAGES + EXTRA_PAGES);
        let off = s.at.map_or(0, |p| ram.start().wrapping_sub(p));
        let h = Box::new(StackHeap::with_config(s.cfg));
        // SAFETY: no memory added yet; the host buffer is what physical
        // memory at `at` maps to, at this offset.
        unsafe { h.set_phys_offset(off) };
        // SAFETY: every page the heap will manage is in the Ram, mapped
        // read-write at `phys + off`, and used by nothing else.
        unsafe { h.frames().set_frame_options(off as *mut u8, s.opts) };
        let mut d = Driver {
            h,
            ram,
            garbage: s.garbage,
            off,
            secs: Vec::new(),
            meta_end: 0,
            used: 0,
            managed: 0,
            live: BTreeMap::new(),
            dead_heap: Vec::new(),
            dead_frames: Vec::new(),
            stamp: 0,
            faults: 0,
            masked: false,
            foreign: Box::new([0; 1024]),
        };
        d.add_memory(0, s.pages).unwrap();
        d.meta_end = d.secs[0].0;
        assert_eq!(d.h.stats().frames.free_pages(), d.managed);
        d
    }

    /// Physical address of virtual address `v` of the heap's memory.
    fn phys(&self, v: usize) -> PhysAddr {
        PhysAddr((v as u64).wrapping_sub(self.off))
    }

    /// Virtual address of physical address `p`.
    fn virt(&self, p: PhysAddr) -> usize {
        p.0.wrapping_add(self.off) as usize
    }

    /// Gives the heap `pages` more pages of the buffer, `gap` pages after
    /// what it has (their first pages become metadata, filled with the
    /// run's garbage first).
    fn add_memory(&mut self, gap: u64, pages: u64) -> Result<(), framekeep::Error> {
        let start = self.ram.start() as usize + ((self.used + gap) * 4096) as usize;
        let meta = (framekeep::heap_metadata_bytes(pages).div_ceil(PAGE) + 1).min(pages as usize);
        // SAFETY: this part of the Ram is not the heap's yet (nor used by
        // anything else: each run's heap is dropped before the next one).
        unsafe { (start as *mut u8).write_bytes(self.garbage, meta * PAGE) };
        // SAFETY: the Ram outlives the driver, which owns the heap; the
        // range is mapped at `phys + off` and used by nothing else.
        unsafe { self.h.add_memory(self.phys(start), pages)? };
        self.used += gap + pages;
        self.secs = self
            .h
            .frames()
            .with_buddy(|b| {
                b.sections()
                    .map(|s| (s.start, s.start.0 + s.pages * 4096))
                    .collect::<Vec<_>>()
            })
            .into_iter()
            .map(|(s, e)| (self.virt(s), self.virt(PhysAddr(e))))
            .collect();
        self.secs.sort();
        self.managed = self.h.stats().frames.buddy.managed_pages();
        Ok(())
    }

    pub fn step(&mut self, s: Step) {
        self.masked = s.cpu.is_some();
        if self.masked {
            hit(Hit::Masked);
        }
        on_cpu(s.cpu, || self.apply(s.op));
        self.masked = false;
    }

    fn snap(&self) -> Snap {
        let st = self.h.stats();
        Snap {
            free: st.frames.free_pages(),
            cached: st.frames.cached_pages(),
            slab: st.slab_pages,
            descriptors: st.descriptors,
            blocks: self.h.frames().with_buddy(|b| b.free_blocks().collect()),
        }
    }

    /// Runs a call that must be refused, and checks that it changed nothing.
    fn refused<E: Debug>(&self, what: impl Debug, f: impl FnOnce() -> Result<(), E>) -> E {
        let before = self.snap();
        let faults = self.h.stats().faults;
        let e = match f() {
            Ok(()) => panic!("{what:?}: accepted"),
            Err(e) => e,
        };
        assert_eq!(
            self.snap(),
            before,
            "{what:?} (refused: {e:?}) changed state"
        );
        assert_eq!(self.h.stats().faults, faults, "{what:?}: fault reported");
        e
    }

    fn next_stamp(&mut self) -> u8 {
        self.stamp = self.stamp.wrapping_add(1);
        self.stamp
    }

    fn fill(&self, addr: usize, b: &Block) {
        // SAFETY: a live block of ours, at least `size` bytes, in the Ram.
        let s = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, b.size) };
        for (i, x) in s.iter_mut().enumerate() {
            *x = pattern(b.stamp, i);
        }
    }

    /// Checks the first `n` bytes at `addr` against `b`'s pattern.
    fn check_pattern(&self, addr: usize, b: &Block, n: usize) {
        // SAFETY: a live block (or one just moved from it) of >= n bytes.
        let s = unsafe { std::slice::from_raw_parts(addr as *const u8, n) };
        if let Some(i) = (0..n).find(|&i| s[i] != pattern(b.stamp, i)) {
            panic!(
                "{addr:#x} ({b:?}): byte {i} is {:#04x}, not {:#04x}",
                s[i],
                pattern(b.stamp, i)
            );
        }
    }

    fn inside(&self, addr: usize, len: usize) -> bool {
        self.secs.iter().any(|&(s, e)| s <= addr && addr + len <= e)
    }

    /// The live block overlapping `[addr, addr + len)`, if any.
    fn overlap(&self, addr: usize, len: usize) -> Option<(usize, Block)> {
        if let Some((&a, &b)) = self.live.range(..=addr).next_back()
            && a + b.len > addr
        {
            return Some((a, b));
        }
        self.live
            .range(addr..addr + len.max(1))
            .next()
            .map(|(&a, &b)| (a, b))
    }

    /// A new block: checked (aligned, inside the managed memory, no
    /// overlap), stamped and added to the model.
    fn add(&mut self, addr: usize, len: usize, size: usize, align: usize, kind: Kind) {
        assert!(
            addr.is_multiple_of(align),
            "{addr:#x} ({kind:?}) not aligned to {align}"
        );
        assert!(
            self.inside(addr, len),
            "{addr:#x}+{len} ({kind:?}) outside {:x?}",
            self.secs
        );
        if let Some((a, b)) = self.overlap(addr, len) {
            panic!("{addr:#x}+{len} ({kind:?}) overlaps live {a:#x}: {b:?}");
        }
        let b = Block {
            len,
            size,
            stamp: self.next_stamp(),
            kind,
            cpu: StackCpu::cpu_id(),
        };
        self.fill(addr, &b);
        self.live.insert(addr, b);
    }

    fn remove(&mut self, addr: usize) -> Block {
        let b = self.live.remove(&addr).unwrap();
        self.bury(addr, b);
        b
    }

    /// Remembers a freed block for stale frees (the last 64 of each layer).
    fn bury(&mut self, addr: usize, b: Block) {
        let dead = match b.kind {
            Kind::Heap { .. } => &mut self.dead_heap,
            _ => &mut self.dead_frames,
        };
        if dead.len() == 64 {
            dead.remove(0);
        }
        dead.push((addr, b));
    }

    /// The `which`-th live block (mod their number) accepted by `f`.
    fn pick(&self, which: u16, f: impl Fn(&Block) -> bool) -> Option<(usize, Block)> {
        let n = self.live.values().filter(|b| f(b)).count();
        if n == 0 {
            return None;
        }
        self.live
            .iter()
            .filter(|(_, b)| f(b))
            .nth(usize::from(which) % n)
            .map(|(&a, &b)| (a, b))
    }

    fn pick_heap(&self, which: u16) -> Option<(usize, Block, Layout)> {
        let (a, b) = self.pick(which, |b| matches!(b.kind, Kind::Heap { .. }))?;
        let Kind::Heap { l, .. } = b.kind else {
            unreachable!()
        };
        Some((a, b, l))
    }

    /// A slab object allocated on this CPU that is the only live object
    /// of its slab.
    fn pick_alone(&self, which: u16) -> Option<(usize, Block, Layout)> {
        let slab_of = |a: usize, b: &Block| match b.kind {
            Kind::Heap { l, own_page: false } if matches!(plan(l), Plan::Small(_)) => {
                Some(a & !((PAGE << slab_order(b.len)) - 1))
            }
            _ => None,
        };
        let mut per_slab: BTreeMap<usize, usize> = BTreeMap::new();
        for (&a, b) in &self.live {
            if let Some(s) = slab_of(a, b) {
                *per_slab.entry(s).or_default() += 1;
            }
        }
        let me = StackCpu::cpu_id();
        let alone: Vec<_> = self
            .live
            .iter()
            .filter(|(a, b)| b.cpu == me && slab_of(**a, b).is_some_and(|s| per_slab[&s] == 1))
            .map(|(&a, &b)| (a, b))
            .collect();
        let (a, b) = *alone.get(usize::from(which) % alone.len().max(1))?;
        let Kind::Heap { l, .. } = b.kind else {
            unreachable!()
        };
        Some((a, b, l))
    }

    fn pick_frames(&self, which: u16) -> Option<(usize, Block)> {
        self.pick(which, |b| !matches!(b.kind, Kind::Heap { .. }))
    }

    /// The footprint of a fresh heap block of `l` at `p`.
    fn heap_block(&self, p: *mut u8, l: Layout) -> (usize, Kind) {
        match plan(l) {
            Plan::Small(k) => match self.h.is_free(p, l) {
                Some(false) => (SIZE_CLASSES[k], Kind::Heap { l, own_page: false }),
                None => {
                    hit(Hit::OwnPage);
                    (PAGE, Kind::Heap { l, own_page: true })
                }
                Some(true) => panic!("{p:?} ({l:?}) handed out but free in its slab"),
            },
            Plan::Cached(o) => (PAGE << o, Kind::Heap { l, own_page: false }),
            Plan::Run(pages, _) => (pages * PAGE, Kind::Heap { l, own_page: false }),
            Plan::Never => panic!("{l:?} cannot be served, got {p:?}"),
        }
    }

    /// After a heap allocation of `l` returned null: the page layer really
    /// had nothing to give. The heap drained every cache it could reach
    /// (the current CPU's only, when masked) and the buddy merged its
    /// parked pages before giving up.
    fn check_heap_oom(&self, l: Layout) {
        let st = self.h.stats().frames;
        let p = plan(l);
        if p == Plan::Never {
            return;
        }
        let k = plan_order(p);
        let largest = st.buddy.largest_free_order();
        assert!(
            largest.is_none_or(|o| o < k),
            "{l:?} ({p:?}): null, but a free block of order {largest:?} >= {k}"
        );
        if !self.masked {
            assert_eq!(st.cached_pages(), 0, "{l:?}: null with pages cached");
        }
    }

    /// After a page-layer request for a block of order `k` failed with
    /// out of memory (without a constraint).
    fn check_frames_oom(&self, what: impl Debug, k: u32) {
        hit(Hit::FramesOom);
        let st = self.h.stats().frames;
        let largest = st.buddy.largest_free_order();
        assert!(
            largest.is_none_or(|o| o < k),
            "{what:?}: out of memory, but a free block of order {largest:?} >= {k}"
        );
        if !self.masked {
            assert_eq!(
                st.cached_pages(),
                0,
                "{what:?}: out of memory with pages cached"
            );
        }
    }

    fn constraint(&self, c: Con) -> Constraint {
        match c {
            Con::Any => Constraint::ANY,
            Con::Zone(z) => Constraint::Zone(z),
            Con::Below(v) => {
                let base = self.phys(self.secs[0].0).0;
                let pages = MAX_PAGES + EXTRA_PAGES + 64;
                Constraint::Below(PhysAddr(base + u64::from(v) % pages * 4096))
            }
        }
    }

    /// Whether `[addr, addr + len)` satisfies `c`.
    fn satisfies(addr: usize, len: usize, c: Constraint) -> bool {
        let end = (addr + len) as u64;
        match c {
            Constraint::Below(PhysAddr(l)) => end <= l,
            Constraint::Zone(Zone::Dma) => end <= DMA_END,
            Constraint::Zone(Zone::Dma32) => end <= DMA32_END,
            Constraint::Zone(Zone::Normal) => true,
        }
    }

    fn heap_free(&mut self, a: usize, l: Layout) {
        let b = self.live[&a];
        self.check_pattern(a, &b, b.size);
        // SAFETY: a live block allocated with a layout the heap serves as `l`.
        if let Err(f) = unsafe { self.h.try_dealloc(a as *mut u8, l) } {
            panic!("free of {a:#x} ({b:?}) as {l:?}: {f:?}");
        }
        hit(Hit::HeapFree);
        if b.cpu != StackCpu::cpu_id() {
            hit(Hit::RemoteFree);
        }
        self.remove(a);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Alloc { l, n } => {
                for _ in 0..n {
                    let p = self.h.allocate(l);
                    if p.is_null() {
                        hit(Hit::HeapOom);
                        self.check_heap_oom(l);
                        break;
                    }
                    hit(Hit::HeapAlloc);
                    let (len, kind) = self.heap_block(p, l);
                    self.add(p as usize, len, l.size(), l.align(), kind);
                }
            }
            Op::Free { which } => {
                if let Some((a, _, l)) = self.pick_heap(which) {
                    self.heap_free(a, l);
                }
            }
            Op::FreeRun { which, n } => {
                let Some((a, _, _)) = self.pick_heap(which) else {
                    return;
                };
                let run: Vec<_> = self
                    .live
                    .range(a..)
                    .filter_map(|(&a, b)| match b.kind {
                        Kind::Heap { l, .. } => Some((a, l)),
                        _ => None,
                    })
                    .take(usize::from(n))
                    .collect();
                for (a, l) in run {
                    self.heap_free(a, l);
                }
            }
            Op::FreeAs { which, l: l2 } => {
                let Some((a, b, l)) = self.pick_heap(which) else {
                    return;
                };
                if plan(l2) == plan(l) {
                    hit(Hit::FreeEquivalent);
                    return self.heap_free(a, l2);
                }
                // SAFETY: refused before anything is touched (what is tested).
                let f = self.refused(op, || unsafe { self.h.try_dealloc(a as *mut u8, l2) });
                assert_eq!(
                    f.kind,
                    FaultKind::WrongLayout,
                    "{a:#x} {b:?} freed as {l2:?}"
                );
                hit(Hit::WrongLayout);
                self.check_pattern(a, &b, b.size);
            }
            Op::DoubleFree { which } => {
                // With the top bit: an object alone in its slab, allocated
                // on this CPU (its free may retire the slab).
                let pick = match which & 0x8000 {
                    0 => self.pick_heap(which),
                    _ => self.pick_alone(which),
                };
                let Some((a, b, l)) = pick else {
                    return;
                };
                self.heap_free(a, l);
                let slab_state = self.h.is_free(a as *mut u8, l);
                // SAFETY: refused.
                let f = self.refused(op, || unsafe { self.h.try_dealloc(a as *mut u8, l) });
                let slab_gone = matches!(plan(l), Plan::Small(_))
                    && b.kind == (Kind::Heap { l, own_page: false })
                    && slab_state.is_none();
                // An object whose slab was retired by the first free is
                // no longer in any slab: a second free cannot tell it from
                // a foreign pointer unless it starts a page.
                let ok = f.kind == FaultKind::DoubleFree
                    || (slab_gone && f.kind == FaultKind::NotAllocated);
                hit(match slab_gone {
                    true => Hit::DoubleFreeSlabGone,
                    false => Hit::DoubleFree,
                });
                assert!(
                    ok,
                    "second free of {a:#x} {b:?}: {f:?} (slab: {slab_state:?})"
                );
            }
            Op::StaleFree { which } => {
                if self.dead_heap.is_empty() {
                    return;
                }
                let (a, b) = self.dead_heap[usize::from(which) % self.dead_heap.len()];
                if self.overlap(a, b.len).is_some() {
                    return; // handed out again: not ours to free
                }
                let Kind::Heap { l, .. } = b.kind else {
                    unreachable!()
                };
                // SAFETY: refused.
                let f = self.refused(op, || unsafe { self.h.try_dealloc(a as *mut u8, l) });
                // Where its memory went since decides how it is told apart
                // from a live block: free pages and objects are double
                // frees, a slab that is gone makes it foreign, an empty
                // slab now in its page makes it the slab's memory.
                let ok = matches!(
                    f.kind,
                    FaultKind::DoubleFree | FaultKind::NotAllocated | FaultKind::WrongLayout
                );
                assert!(ok, "stale free of {a:#x} {b:?}: {f:?}");
                hit(Hit::StaleFree);
            }
            Op::Foreign { kind, which, l } => {
                let Some(p) = self.foreign_ptr(kind, which) else {
                    return;
                };
                // SAFETY: refused before anything is touched.
                let f = self.refused(op, || unsafe { self.h.try_dealloc(p, l) });
                assert_eq!(f.kind, FaultKind::NotAllocated, "foreign {p:?} as {l:?}");
                hit(Hit::Foreign);
            }
            Op::Interior { which, off } => {
                let Some((a, b, l)) = self.pick_heap(which) else {
                    return;
                };
                if b.size < 2 {
                    return;
                }
                let p = a + 1 + usize::from(off) * 61 % (b.size - 1);
                // SAFETY: refused.
                let f = self.refused(op, || unsafe { self.h.try_dealloc(p as *mut u8, l) });
                if b.kind == (Kind::Heap { l, own_page: false }) && b.len < PAGE {
                    assert_eq!(
                        f.kind,
                        FaultKind::NotObjectStart,
                        "{p:#x} inside {a:#x} {b:?}"
                    );
                }
                hit(Hit::Interior);
                self.check_pattern(a, &b, b.size);
            }
            Op::Realloc { which, how, v } => self.realloc(which, how, v),
            Op::ReallocWrong { which, l: l2, v } => {
                let Some((a, b, l)) = self.pick_heap(which) else {
                    return;
                };
                if plan(l2) == plan(l) {
                    return;
                }
                let new = 1 + usize::from(v) * 7 % (300 << 10);
                let before = self.snap();
                let faults = self.h.stats().faults;
                // SAFETY: refused before anything is read or written (what
                // is tested); `new` is a valid size at `l2.align()`.
                let r = unsafe { self.h.realloc(a as *mut u8, l2, new) };
                assert!(
                    r.is_null(),
                    "realloc of {a:#x} {b:?} as {l2:?} accepted: {r:?}"
                );
                assert_eq!(self.snap(), before, "{op:?} changed state");
                assert_eq!(
                    self.h.stats().faults,
                    faults + 1,
                    "{op:?}: no fault reported"
                );
                self.faults += 1;
                hit(Hit::ReallocWrong);
                self.check_pattern(a, &b, b.size);
            }
            Op::FAlloc { order, c } => {
                let order = u32::from(order);
                let c = self.constraint(c);
                let r = self.h.frames().alloc_in(order, c);
                match r {
                    Ok(p) => {
                        let len = PAGE << order;
                        assert!(Self::satisfies(p.0 as usize, len, c), "{op:?}: {p:?}");
                        hit(match c {
                            Constraint::ANY => Hit::FramesAlloc,
                            Constraint::Zone(_) => Hit::LowZone,
                            _ => Hit::ConstrainedAlloc,
                        });
                        self.add(self.virt(p), len, len, len, Kind::Order(order));
                    }
                    Err(Error::OutOfMemory) if c == Constraint::ANY => {
                        self.check_frames_oom(op, order)
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
            }
            Op::FAllocPages { count, c } => {
                let c = self.constraint(c);
                if count == 0 {
                    let e = self.refused(op, || self.h.frames().alloc_pages(0, c).map(drop));
                    assert_eq!(e, Error::ZeroCount);
                    return;
                }
                match self.h.frames().alloc_pages(count, c) {
                    Ok(p) => {
                        let len = count * PAGE;
                        assert!(Self::satisfies(p.0 as usize, len, c), "{op:?}: {p:?}");
                        self.add(self.virt(p), len, len, PAGE, Kind::Pages(count));
                    }
                    Err(Error::OutOfMemory) if c == Constraint::ANY => {
                        self.check_frames_oom(op, ceil_log2(count))
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
            }
            Op::FAllocAligned { count, shift, c } => {
                let c = self.constraint(c);
                let align = match shift {
                    0..=16 => 1usize << shift,
                    s => (3 << 12) << (s - 17),
                };
                let f = self.h.frames();
                if count == 0 || !align.is_power_of_two() {
                    let e = self.refused(op, || f.alloc_aligned(count, align, c).map(drop));
                    let want = match count {
                        0 if align.is_power_of_two() => Error::ZeroCount,
                        _ => Error::BadAlignment,
                    };
                    assert!(e == want || e == Error::ZeroCount, "{op:?}: {e:?}");
                    return;
                }
                match f.alloc_aligned(count, align, c) {
                    Ok(p) => {
                        let len = count * PAGE;
                        assert!(Self::satisfies(p.0 as usize, len, c), "{op:?}: {p:?}");
                        self.add(self.virt(p), len, len, align.max(PAGE), Kind::Pages(count));
                    }
                    Err(Error::OutOfMemory) if c == Constraint::ANY => {
                        let k = ceil_log2(count).max((align / PAGE).trailing_zeros());
                        self.check_frames_oom(op, k)
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
            }
            Op::FAllocBulk { n, c } => {
                let c = self.constraint(c);
                let mut out = [PhysAddr(0); 32];
                if n == 0 {
                    let e = self.refused(op, || {
                        self.h.frames().alloc_bulk(c, &mut out[..0]).map(drop)
                    });
                    assert_eq!(e, Error::ZeroCount);
                    return;
                }
                match self.h.frames().alloc_bulk(c, &mut out[..n]) {
                    Ok(k) => {
                        assert!(k >= 1 && k <= n, "{op:?}: {k}");
                        for p in &out[..k] {
                            assert!(Self::satisfies(p.0 as usize, PAGE, c), "{op:?}: {p:?}");
                            self.add(self.virt(*p), PAGE, PAGE, PAGE, Kind::Bulk);
                        }
                    }
                    Err(Error::OutOfMemory) if c == Constraint::ANY => {
                        self.check_frames_oom(op, 0);
                        assert_eq!(self.h.stats().frames.buddy.free_pages(), 0);
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
            }
            Op::FFree { which, how } => {
                if let Some((a, b)) = self.pick_frames(which) {
                    self.frames_free(a, b, how);
                }
            }
            Op::FFreeBulk { n, at, bad } => self.free_bulk(n, at, bad),
            Op::FWrongCount { which, v } => {
                let Some((a, b)) = self.pick_frames(which) else {
                    return;
                };
                let pages = b.len / PAGE;
                let f = self.h.frames();
                let p = self.phys(a);
                let e = if v & 1 == 0 {
                    let o = u32::from(v >> 1) % 7;
                    if matches!(b.kind, Kind::Pages(_)) || 1 << o == pages {
                        return;
                    }
                    self.refused(op, || f.free(p, o))
                } else {
                    let n = usize::from(v >> 1) % 70;
                    if n == pages {
                        return;
                    }
                    self.refused(op, || f.free_pages(p, n))
                };
                let ok = matches!(
                    e,
                    Error::WrongCount { .. } | Error::Misaligned | Error::ZeroCount
                );
                assert!(ok, "{op:?} of {a:#x} {b:?}: {e:?}");
                hit(Hit::WrongCount);
                self.check_pattern(a, &b, b.size);
            }
            Op::Attack { which, how, page } => self.attack(op, which, how, page),
            Op::FStale { which } => {
                if self.dead_frames.is_empty() {
                    return;
                }
                let (a, b) = self.dead_frames[usize::from(which) % self.dead_frames.len()];
                if self.overlap(a, b.len).is_some() {
                    return;
                }
                let (f, p) = (self.h.frames(), self.phys(a));
                let e = match b.kind {
                    Kind::Order(o) => self.refused(op, || f.free(p, o)),
                    Kind::Bulk => self.refused(op, || f.free_bulk(&[p])).error,
                    _ => self.refused(op, || f.free_pages(p, b.len / PAGE)),
                };
                // Free pages are double frees; a page inside a block a
                // cache holds is an interior page to the buddy; a page an
                // (empty) slab took is the slab's.
                let ok = matches!(
                    e,
                    Error::DoubleFree | Error::InteriorPage | Error::OwnedBySlab
                );
                assert!(ok, "stale free of {a:#x} {b:?}: {e:?}");
                hit(Hit::StaleFrames);
            }
            Op::Reserve {
                off,
                count,
                drained,
            } => self.reserve(op, off, count, drained),
            Op::Drain { kind } => self.drain(kind),
            Op::AddMemory { gap, pages } => {
                let gap = u64::from(gap);
                let left = (MAX_PAGES + EXTRA_PAGES).saturating_sub(self.used + gap);
                let pages = (2 + u64::from(pages) % 300).min(left);
                if pages < 2 {
                    return;
                }
                let before = self.snap();
                let capacity = self.h.stats().descriptor_capacity;
                match self.add_memory(gap, pages) {
                    Ok(()) => {
                        hit(Hit::AddMemory);
                        assert!(self.h.stats().descriptor_capacity > capacity);
                    }
                    Err(e) => {
                        assert_eq!(e, Error::TooManySections, "{op:?}");
                        assert_eq!(self.snap(), before, "{op:?} (refused: {e:?}) changed state");
                        assert_eq!(self.h.stats().descriptor_capacity, capacity);
                    }
                }
            }
        }
    }

    /// A pointer the heap never handed out.
    fn foreign_ptr(&self, kind: u8, which: u16) -> Option<*mut u8> {
        let w = usize::from(which);
        Some(match kind % 6 {
            // Host memory: a stack slot, the driver's own buffer (word
            // and page positions in it).
            0 => {
                let local = [0u64; 4];
                std::hint::black_box(&local).as_ptr().wrapping_add(w % 4) as *mut u8
            }
            1 => self.foreign.as_ptr().wrapping_add(w % 1024) as *mut u8,
            // The heap's metadata pages (in its memory, never managed).
            2 => {
                let meta = self.meta_end - self.ram.start() as usize;
                (self.ram.start() as usize + w * 8 % meta) as *mut u8
            }
            // Just past the managed memory.
            3 => (self.secs.last().unwrap().1 + w % 4 * PAGE) as *mut u8,
            // A page-layer block, or a page inside one.
            k => {
                let (a, b) = self.pick_frames(which)?;
                let pages = b.len / PAGE;
                let page = if k == 4 { 0 } else { w / 7 % pages };
                (a + page * PAGE) as *mut u8
            }
        })
    }

    fn realloc(&mut self, which: u16, how: u8, v: u16) {
        let Some((a, b, l)) = self.pick_heap(which) else {
            return;
        };
        let v = usize::from(v);
        let new = match how % 4 {
            0 => l.size().max(1),
            1 => 1 + v % l.size().max(1),
            2 => l.size() + 1 + v * 3 % (200 << 10),
            _ => 1 + v * 5 % (300 << 10),
        };
        let Ok(nl) = Layout::from_size_align(new, l.align()) else {
            return;
        };
        self.check_pattern(a, &b, b.size);
        // SAFETY: a live block of layout `l`, `new` > 0 and valid at its
        // alignment.
        let q = unsafe { self.h.realloc(a as *mut u8, l, new) };
        if q.is_null() {
            hit(Hit::ReallocNull);
            self.check_heap_oom(nl);
            return self.check_pattern(a, &b, b.size);
        }
        let kept = b.size.min(new);
        self.check_pattern(q as usize, &b, kept);
        self.live.remove(&a);
        let (len, kind) = self.heap_block(q, nl);
        self.add(q as usize, len, new, l.align(), kind);
        if q as usize != a {
            // Moved: the old block is dead.
            hit(Hit::ReallocMoved);
            self.bury(a, b);
        } else {
            hit(Hit::ReallocInPlace);
        }
    }

    fn frames_free(&mut self, a: usize, b: Block, how: u8) {
        self.check_pattern(a, &b, b.size);
        let (f, p) = (self.h.frames(), self.phys(a));
        let r = match (b.kind, how % 3) {
            (Kind::Order(o), 0) => f.free(p, o),
            (Kind::Order(o), _) => f.free_pages(p, 1 << o),
            (Kind::Bulk, 0) => f.free(p, 0),
            (Kind::Bulk, 1) => f.free_pages(p, 1),
            (Kind::Bulk, _) => f.free_bulk(&[p]).map_err(|e| e.error),
            (Kind::Pages(n), _) => f.free_pages(p, n),
            (Kind::Heap { .. }, _) => unreachable!(),
        };
        if let Err(e) = r {
            panic!("free of {a:#x} {b:?} ({how}): {e:?}");
        }
        self.remove(a);
    }

    /// Single frames freed together, with at most one bad frame among them.
    fn free_bulk(&mut self, n: usize, at: u16, bad: Option<(u8, u8)>) {
        let singles: Vec<usize> = self
            .live
            .iter()
            .filter(|(_, b)| matches!(b.kind, Kind::Bulk | Kind::Order(0)))
            .map(|(&a, _)| a)
            .collect();
        let n = n.min(singles.len());
        let start = if singles.is_empty() {
            0
        } else {
            usize::from(at) % singles.len()
        };
        let mut list: Vec<PhysAddr> = (0..n)
            .map(|i| self.phys(singles[(start + i) % singles.len()]))
            .collect();
        let f = self.h.frames();
        let Some((pos, kind)) = bad else {
            if list.is_empty() {
                let e = self.refused("empty bulk free", || f.free_bulk(&list));
                assert_eq!((e.index, e.error), (0, Error::ZeroCount));
                return;
            }
            for &p in &list {
                let b = self.live[&self.virt(p)];
                self.check_pattern(self.virt(p), &b, b.size);
            }
            if let Err(e) = f.free_bulk(&list) {
                panic!("bulk free of {list:x?}: {e:?}");
            }
            for p in list {
                self.remove(self.virt(p));
            }
            hit(Hit::BulkFree);
            return;
        };
        // The bad frame and the error it must be refused with (None: any).
        let (frame, want) = match kind % 5 {
            // A page-granular heap block's first page, or a slab's page.
            0 | 1 => {
                let slab = kind % 5 == 1;
                let Some((a, b)) = self.pick(u16::from(pos), |b| match b.kind {
                    Kind::Heap { l, own_page } => {
                        slab == (matches!(plan(l), Plan::Small(_)) && !own_page)
                    }
                    _ => false,
                }) else {
                    return;
                };
                let want = if slab {
                    Error::OwnedBySlab
                } else {
                    Error::OwnedByHeap
                };
                let _ = b;
                (self.phys(a & !(PAGE - 1)), Some(want))
            }
            // A frame already in the list.
            2 => {
                if list.is_empty() {
                    return;
                }
                (list[usize::from(pos) % list.len()], Some(Error::DoubleFree))
            }
            // A frame freed earlier (not handed out again).
            3 => {
                let dead: Vec<_> = self
                    .dead_frames
                    .iter()
                    .filter(|(a, b)| self.overlap(*a, b.len).is_none())
                    .map(|&(a, _)| a)
                    .collect();
                if dead.is_empty() {
                    return;
                }
                (self.phys(dead[usize::from(pos) % dead.len()]), None)
            }
            // Not a frame of this allocator.
            _ => {
                let outside = self.secs.last().unwrap().1 + usize::from(pos) * 4096;
                let p = if pos & 1 == 0 { outside } else { outside + 8 };
                (self.phys(p), None)
            }
        };
        // A duplicate goes after its original; anything else anywhere.
        let at = match kind % 5 {
            2 => {
                let orig = list.iter().position(|&p| p == frame).unwrap();
                orig + 1 + usize::from(pos / 3) % (list.len() - orig)
            }
            _ => usize::from(pos / 3) % (list.len() + 1),
        };
        list.insert(at, frame);
        let e = self.refused(("bulk free", &list, at), || f.free_bulk(&list));
        assert_eq!(e.index, at, "bulk free of {list:x?}: {e:?}");
        hit(Hit::BulkBad);
        if let Some(w) = want {
            assert_eq!(e.error, w, "bulk free of {list:x?} (bad at {at})");
        }
    }

    /// Page-layer frees of the heap's memory: refused as the heap's or the
    /// slab's, nothing changed.
    fn attack(&mut self, op: Op, which: u16, how: u8, page: u8) {
        let Some((a, b, l)) = self.pick_heap(which) else {
            return;
        };
        let slab =
            matches!(plan(l), Plan::Small(_)) && b.kind == (Kind::Heap { l, own_page: false });
        // The pages it lives in: its slab's, or its own.
        let (first, pages) = if slab {
            let o = slab_order(b.len);
            (a & !((PAGE << o) - 1), 1usize << o)
        } else {
            (a, b.len / PAGE)
        };
        let idx = usize::from(page) % pages;
        let v = first + idx * PAGE;
        let p = self.phys(v);
        let head = idx == 0;
        let f = self.h.frames();
        let e = match how % 5 {
            0 => {
                // The block's own order where it has one, else a page.
                let o = match (slab, head, plan(l)) {
                    (false, true, Plan::Cached(o)) => o,
                    _ => 0,
                };
                self.refused(op, || f.free(p, o))
            }
            1 => {
                let n = if head && !slab { pages } else { 1 };
                self.refused(op, || f.free_pages(p, n))
            }
            2 => self.refused(op, || f.free_bulk(&[p])).error,
            3 => {
                let n = 1 + usize::from(page) % 4;
                let e = self.refused(op, || f.reserve_range(p, n));
                let want = match self.inside(v, n * PAGE) {
                    true => Error::RangeInUse,
                    false => Error::RangeCrossesSection,
                };
                assert_eq!(e, want, "{op:?}: {p:?} of {a:#x} {b:?}");
                return;
            }
            _ => {
                // Any order: refused, but possibly for its alignment.
                self.refused(op, || f.free(p, u32::from(page) % 6));
                return;
            }
        };
        let want = match (slab, head) {
            (true, _) => Some(Error::OwnedBySlab),
            (false, true) => Some(Error::OwnedByHeap),
            // A page inside a heap block: the buddy's view (interior).
            (false, false) => None,
        };
        if let Some(w) = want {
            assert_eq!(e, w, "{op:?}: {p:?} of {a:#x} {b:?}");
        }
        hit(Hit::Attack);
        self.check_pattern(a, &b, b.size);
    }

    /// Pages the live blocks occupy (slab objects: their whole slab).
    fn occupied(&self) -> BTreeMap<usize, usize> {
        let mut pages = BTreeMap::new();
        for (&a, b) in &self.live {
            let (first, n) = match b.kind {
                Kind::Heap { l, own_page: false } if matches!(plan(l), Plan::Small(_)) => {
                    let o = slab_order(b.len);
                    (a & !((PAGE << o) - 1), 1 << o)
                }
                _ => (a, b.len / PAGE),
            };
            for i in 0..n {
                pages.insert(first + i * PAGE, a);
            }
        }
        pages
    }

    /// After a full drain, the model knows every page: free ones are free
    /// in the buddy, slab pages are exactly the slabs of live objects.
    fn check_drained(&self) {
        hit(Hit::DrainChecked);
        let occupied = self.occupied();
        let slab_pages = occupied
            .values()
            .filter(|&&a| {
                let b = self.live[&a];
                matches!(b.kind, Kind::Heap { l, own_page: false } if matches!(plan(l), Plan::Small(_)))
            })
            .count() as u64;
        let st = self.h.stats();
        assert_eq!(st.frames.cached_pages(), 0, "drained, but pages cached");
        assert_eq!(st.slab_pages, slab_pages, "slab pages after a drain");
        assert_eq!(
            st.frames.free_pages(),
            self.managed - occupied.len() as u64,
            "free pages after a drain ({} live blocks)",
            self.live.len()
        );
    }

    fn reserve(&mut self, op: Op, off: u16, count: usize, drained: bool) {
        let drained = drained && !self.masked;
        if drained {
            // The caches and empty slabs give everything back; parked
            // pages stay parked (the reservation must take them too).
            assert!(self.h.drain());
            self.check_drained();
        }
        let base = self.secs[0].0;
        let start = base + usize::from(off & 0x7fff) % (MAX_PAGES as usize + 8) * PAGE;
        let start = if off & 0x8000 != 0 { start + 8 } else { start };
        let f = self.h.frames();
        let p = self.phys(start);
        let fits = count > 0 && start % PAGE == 0 && self.inside(start, count * PAGE);
        let free = drained && fits && {
            let occ = self.occupied();
            occ.range(start..start + count * PAGE).next().is_none()
        };
        if count == 0 || start % PAGE != 0 || !fits || (drained && !free) {
            let e = self.refused(op, || f.reserve_range(p, count));
            let want = match () {
                _ if count == 0 => Error::ZeroCount,
                _ if start % PAGE != 0 => Error::Misaligned,
                _ if !fits && self.inside(start, PAGE) => Error::RangeCrossesSection,
                _ if !fits => Error::NotInSection,
                _ => Error::RangeInUse,
            };
            assert_eq!(e, want, "{op:?} at {start:#x}");
            if want == Error::RangeInUse {
                hit(Hit::ReserveRefusedDrained);
            }
            return;
        }
        let before = self.snap();
        match f.reserve_range(p, count) {
            Ok(()) => {
                hit(if drained {
                    Hit::ReserveDrained
                } else {
                    Hit::Reserve
                });
                self.add(start, count * PAGE, count * PAGE, PAGE, Kind::Pages(count))
            }
            Err(e) => {
                assert!(!free, "{op:?}: {start:#x}+{count} pages is free, but {e:?}");
                assert_eq!(self.snap(), before, "{op:?} (refused: {e:?}) changed state");
            }
        }
    }

    fn drain(&mut self, kind: u8) {
        let all = !self.masked;
        let f = self.h.frames();
        match kind % 6 {
            0 | 1 => {
                assert_eq!(self.h.drain(), all, "heap drain");
                if all {
                    if kind % 6 == 1 {
                        // Parked pages merged too.
                        assert!(f.drain());
                    }
                    self.check_drained();
                }
            }
            2 => assert_eq!(f.drain(), all),
            3 => assert_eq!(f.drain_all(), all),
            4 => f.drain_local(),
            _ => {
                let cpu = usize::from(kind / 6) % CPUS;
                let here = StackCpu::cpu_id() == cpu;
                assert_eq!(f.drain_cpu(cpu), all || here, "drain of CPU {cpu}");
            }
        }
        if all && kind % 6 < 4 {
            assert_eq!(self.h.stats().frames.cached_pages(), 0);
        }
    }

    /// Frees everything (checking every pattern), drains, and checks that
    /// every managed page is free and no slab is left.
    fn finish(mut self) {
        while let Some((&a, &b)) = self.live.iter().next() {
            match b.kind {
                Kind::Heap { l, .. } => self.heap_free(a, l),
                _ => self.frames_free(a, b, a as u8),
            }
        }
        assert!(self.h.drain());
        assert!(self.h.frames().drain());
        let st = self.h.stats();
        assert_eq!(st.slab_pages, 0, "slab pages left: {st:?}");
        assert_eq!(st.frames.cached_pages(), 0);
        assert_eq!(st.frames.free_pages(), self.managed, "pages lost: {st:?}");
        assert_eq!(st.faults, self.faults, "faults reported");
    }
}
