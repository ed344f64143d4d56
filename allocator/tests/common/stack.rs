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
        let (&byte, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(byte)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) | (u16::from(self.u8()?) << 8))
    }
    fn layout(&mut self) -> Option<Layout> {
        let byte = self.u8()?;
        let value = usize::from(self.u16()?);
        let (size, align) = match byte & 7 {
            0..=2 => (1 + value % 2048, 0),
            3 => (1 + value % 128, 0),
            // 1, 2, 4 or 8 pages, sometimes a little less.
            4 => ((PAGE << (value % 4)) - (value >> 2) % 3000, 0),
            5 => (2049 + value * 3 % (200 << 10), 0),
            6 => (PAGE * (1 + value % 50), 0),
            _ => FIXED[value % FIXED.len()],
        };
        let align = match align {
            0 if byte & 8 == 0 => 1 << ((byte >> 4) % 4),
            0 => 1 << ((byte >> 4) + 1), // up to 64 KiB
            a => a,
        };
        Layout::from_size_align(size, align).ok()
    }
    fn con(&mut self) -> Option<Con> {
        let byte = self.u8()?;
        Some(match byte % 8 {
            0..=3 => Con::Any,
            4 => Con::Zone(Zone::Dma32),
            5 => Con::Zone(Zone::Dma),
            _ => Con::Below(self.u16()?),
        })
    }
    fn op(&mut self) -> Option<Step> {
        let byte = self.u8()?;
        let cpu = (byte >> 5 >= 4).then(|| usize::from(byte >> 5) - 4);
        let op = match byte & 31 {
            0..=3 => Op::Alloc {
                layout: self.layout()?,
                n: 1,
            },
            4 => Op::Alloc {
                layout: self.layout()?,
                n: 1 + self.u8()? % 48,
            },
            5..=7 => Op::Free { which: self.u16()? },
            30 => Op::FreeRun {
                which: self.u16()?,
                n: 1 + self.u8()? % 64,
            },
            8 => Op::FreeAs {
                which: self.u16()?,
                layout: self.layout()?,
            },
            9 => Op::DoubleFree { which: self.u16()? },
            10 => Op::StaleFree { which: self.u16()? },
            11 => Op::Foreign {
                kind: self.u8()?,
                which: self.u16()?,
                layout: self.layout()?,
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
                layout: self.layout()?,
                v: self.u16()?,
            },
            16 | 17 => Op::FAlloc {
                order: self.u8()? % 6,
                con: self.con()?,
            },
            18 => Op::FAllocPages {
                count: usize::from(self.u8()? % 65),
                con: self.con()?,
            },
            19 => {
                let byte = self.u8()?;
                Op::FAllocAligned {
                    count: usize::from(byte % 9),
                    // 17 and up: not a power of two.
                    shift: (byte >> 4) + self.u8()? % 4,
                    con: self.con()?,
                }
            }
            20 => Op::FAllocBulk {
                n: usize::from(self.u8()? % 33),
                con: self.con()?,
            },
            21 | 22 => Op::FFree {
                which: self.u16()?,
                how: self.u8()?,
            },
            23 => {
                let n = self.u8()?;
                let byte = self.u8()?;
                let bad = match byte & 1 {
                    1 => Some((self.u8()?, byte >> 1)),
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
                byte if byte & 7 == 0 => Op::AddMemory {
                    gap: byte >> 3 & 3,
                    pages: self.u16()?,
                },
                _ => Op::Alloc {
                    layout: self.layout()?,
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
    /// `n` heap allocations of `layout`.
    Alloc {
        layout: Layout,
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
    /// A live heap block freed with `layout`: fine if the heap serves `layout` as
    /// the block's layout, else refused (`WrongLayout`).
    FreeAs {
        which: u16,
        layout: Layout,
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
        layout: Layout,
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
        layout: Layout,
        v: u16,
    },
    /// `frames().alloc` / `alloc_in`.
    FAlloc {
        order: u8,
        con: Con,
    },
    FAllocPages {
        count: usize,
        con: Con,
    },
    FAllocAligned {
        count: usize,
        shift: u8,
        con: Con,
    },
    FAllocBulk {
        n: usize,
        con: Con,
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
    Heap { layout: Layout, own_page: bool },
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

fn plan(layout: Layout) -> Plan {
    let (size, align) = (layout.size().max(1), layout.align());
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

fn hit(path: Hit) {
    COUNTS[path as usize].fetch_add(1, Ordering::Relaxed);
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
    heap: Box<StackHeap>,
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
    let (Some(garbage), Some(size), Some(config)) = (input.u8(), input.u16(), input.u8()) else {
        return;
    };
    let setup = Setup {
        pages: MIN_PAGES + u64::from(size) % (MAX_PAGES - MIN_PAGES + 1),
        garbage,
        cfg: CONFIGS[usize::from(config & 3)],
        at: PLACEMENTS[usize::from(config >> 2 & 7) % PLACEMENTS.len()],
        opts: framekeep::FrameOptions {
            poison: config & 0x40 != 0,
            zero_on_alloc: config & 0x80 != 0,
        },
    };
    if trace() {
        eprintln!("stack: {setup:?}");
    }
    let mut driver = Driver::new(ram, setup);
    while let Some(step) = input.op() {
        if trace() {
            eprintln!("stack: {step:?}");
        }
        driver.step(step);
    }
    driver.finish();
}

impl<'r> Driver<'r> {
    fn new(ram: &'r Ram, s: Setup) -> Self {
        assert!(ram.pages() >= MAX_PAGES + EXTRA_PAGES);
        let off = s.at.map_or(0, |p| ram.start().wrapping_sub(p));
        let heap = Box::new(StackHeap::with_config(s.cfg));
        // SAFETY: no memory added yet; the host buffer is what physical
        // memory at `at` maps to, at this offset.
        unsafe { heap.set_phys_offset(off) };
        // SAFETY: every page the heap will manage is in the Ram, mapped
        // read-write at `phys + off`, and used by nothing else.
        unsafe { heap.frames().set_frame_options(off as *mut u8, s.opts) };
        let mut driver = Driver {
            heap,
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
        driver.add_memory(0, s.pages).unwrap();
        driver.meta_end = driver.secs[0].0;
        assert_eq!(driver.heap.stats().frames.free_pages(), driver.managed);
        driver
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
        unsafe { self.heap.add_memory(self.phys(start), pages)? };
        self.used += gap + pages;
        self.secs = self
            .heap
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
        self.managed = self.heap.stats().frames.buddy.managed_pages();
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
        let stats = self.heap.stats();
        Snap {
            free: stats.frames.free_pages(),
            cached: stats.frames.cached_pages(),
            slab: stats.slab_pages,
            descriptors: stats.descriptors,
            blocks: self.heap.frames().with_buddy(|b| b.free_blocks().collect()),
        }
    }

    /// Runs a call that must be refused, and checks that it changed nothing.
    fn refused<E: Debug>(&self, what: impl Debug, f: impl FnOnce() -> Result<(), E>) -> E {
        let before = self.snap();
        let faults = self.heap.stats().faults;
        let e = match f() {
            Ok(()) => panic!("{what:?}: accepted"),
            Err(e) => e,
        };
        assert_eq!(
            self.snap(),
            before,
            "{what:?} (refused: {e:?}) changed state"
        );
        assert_eq!(self.heap.stats().faults, faults, "{what:?}: fault reported");
        e
    }

    fn next_stamp(&mut self) -> u8 {
        self.stamp = self.stamp.wrapping_add(1);
        self.stamp
    }

    fn fill(&self, addr: usize, block: &Block) {
        // SAFETY: a live block of ours, at least `size` bytes, in the Ram.
        let bytes = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, block.size) };
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = pattern(block.stamp, i);
        }
    }

    /// Checks the first `n` bytes at `addr` against `block`'s pattern.
    fn check_pattern(&self, addr: usize, block: &Block, n: usize) {
        // SAFETY: a live block (or one just moved from it) of >= n bytes.
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, n) };
        if let Some(i) = (0..n).find(|&i| bytes[i] != pattern(block.stamp, i)) {
            panic!(
                "{addr:#x} ({block:?}): byte {i} is {:#04x}, not {:#04x}",
                bytes[i],
                pattern(block.stamp, i)
            );
        }
    }

    fn inside(&self, addr: usize, len: usize) -> bool {
        self.secs
            .iter()
            .any(|&(start, end)| start <= addr && addr + len <= end)
    }

    /// The live block overlapping `[addr, addr + len)`, if any.
    fn overlap(&self, addr: usize, len: usize) -> Option<(usize, Block)> {
        if let Some((&start, &block)) = self.live.range(..=addr).next_back()
            && start + block.len > addr
        {
            return Some((start, block));
        }
        self.live
            .range(addr..addr + len.max(1))
            .next()
            .map(|(&start, &block)| (start, block))
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
        if let Some((other, block)) = self.overlap(addr, len) {
            panic!("{addr:#x}+{len} ({kind:?}) overlaps live {other:#x}: {block:?}");
        }
        let block = Block {
            len,
            size,
            stamp: self.next_stamp(),
            kind,
            cpu: StackCpu::cpu_id(),
        };
        self.fill(addr, &block);
        self.live.insert(addr, block);
    }

    fn remove(&mut self, addr: usize) -> Block {
        let block = self.live.remove(&addr).unwrap();
        self.bury(addr, block);
        block
    }

    /// Remembers a freed block for stale frees (the last 64 of each layer).
    fn bury(&mut self, addr: usize, block: Block) {
        let dead = match block.kind {
            Kind::Heap { .. } => &mut self.dead_heap,
            _ => &mut self.dead_frames,
        };
        if dead.len() == 64 {
            dead.remove(0);
        }
        dead.push((addr, block));
    }

    /// The `which`-th live block (mod their number) accepted by `f`.
    fn pick(&self, which: u16, keep: impl Fn(&Block) -> bool) -> Option<(usize, Block)> {
        let n = self.live.values().filter(|block| keep(block)).count();
        if n == 0 {
            return None;
        }
        self.live
            .iter()
            .filter(|(_, block)| keep(block))
            .nth(usize::from(which) % n)
            .map(|(&addr, &block)| (addr, block))
    }

    fn pick_heap(&self, which: u16) -> Option<(usize, Block, Layout)> {
        let (addr, block) = self.pick(which, |block| matches!(block.kind, Kind::Heap { .. }))?;
        let Kind::Heap { layout, .. } = block.kind else {
            unreachable!()
        };
        Some((addr, block, layout))
    }

    /// A slab object allocated on this CPU that is the only live object
    /// of its slab.
    fn pick_alone(&self, which: u16) -> Option<(usize, Block, Layout)> {
        let slab_of = |addr: usize, block: &Block| match block.kind {
            Kind::Heap {
                layout,
                own_page: false,
            } if matches!(plan(layout), Plan::Small(_)) => {
                Some(addr & !((PAGE << slab_order(block.len)) - 1))
            }
            _ => None,
        };
        let mut per_slab: BTreeMap<usize, usize> = BTreeMap::new();
        for (&addr, block) in &self.live {
            if let Some(slab) = slab_of(addr, block) {
                *per_slab.entry(slab).or_default() += 1;
            }
        }
        let me = StackCpu::cpu_id();
        let alone: Vec<_> = self
            .live
            .iter()
            .filter(|(addr, block)| {
                block.cpu == me && slab_of(**addr, block).is_some_and(|slab| per_slab[&slab] == 1)
            })
            .map(|(&addr, &block)| (addr, block))
            .collect();
        let (addr, block) = *alone.get(usize::from(which) % alone.len().max(1))?;
        let Kind::Heap { layout, .. } = block.kind else {
            unreachable!()
        };
        Some((addr, block, layout))
    }

    fn pick_frames(&self, which: u16) -> Option<(usize, Block)> {
        self.pick(which, |b| !matches!(b.kind, Kind::Heap { .. }))
    }

    /// The footprint of a fresh heap block of `layout` at `p`.
    fn heap_block(&self, ptr: *mut u8, layout: Layout) -> (usize, Kind) {
        match plan(layout) {
            Plan::Small(class) => match self.heap.is_free(ptr, layout) {
                Some(false) => (
                    SIZE_CLASSES[class],
                    Kind::Heap {
                        layout,
                        own_page: false,
                    },
                ),
                None => {
                    hit(Hit::OwnPage);
                    (
                        PAGE,
                        Kind::Heap {
                            layout,
                            own_page: true,
                        },
                    )
                }
                Some(true) => panic!("{ptr:?} ({layout:?}) handed out but free in its slab"),
            },
            Plan::Cached(order) => (
                PAGE << order,
                Kind::Heap {
                    layout,
                    own_page: false,
                },
            ),
            Plan::Run(pages, _) => (
                pages * PAGE,
                Kind::Heap {
                    layout,
                    own_page: false,
                },
            ),
            Plan::Never => panic!("{layout:?} cannot be served, got {ptr:?}"),
        }
    }

    /// After a heap allocation of `layout` returned null: the page layer really
    /// had nothing to give. The heap drained every cache it could reach
    /// (the current CPU's only, when masked) and the buddy merged its
    /// parked pages before giving up.
    fn check_heap_oom(&self, layout: Layout) {
        let plan = plan(layout);
        if plan == Plan::Never {
            return;
        }
        self.check_nothing_left(format_args!("{layout:?} ({plan:?})"), plan_order(plan));
    }

    /// After a page-layer request for a block of order `k` failed with
    /// out of memory (without a constraint).
    fn check_frames_oom(&self, what: impl Debug, order: u32) {
        hit(Hit::FramesOom);
        self.check_nothing_left(format_args!("{what:?}"), order);
    }

    /// What out of memory for a block of `order` promises: no free block
    /// of that order or above, and (unmasked) no pages left in any cache.
    fn check_nothing_left(&self, what: std::fmt::Arguments, order: u32) {
        let stats = self.heap.stats().frames;
        let largest = stats.buddy.largest_free_order();
        assert!(
            largest.is_none_or(|largest| largest < order),
            "{what}: out of memory, but a free block of order {largest:?} >= {order}"
        );
        if !self.masked {
            assert_eq!(
                stats.cached_pages(),
                0,
                "{what}: out of memory with pages cached"
            );
        }
    }

    fn constraint(&self, con: Con) -> Constraint {
        match con {
            Con::Any => Constraint::ANY,
            Con::Zone(zone) => Constraint::Zone(zone),
            Con::Below(limit) => {
                let base = self.phys(self.secs[0].0).0;
                let pages = MAX_PAGES + EXTRA_PAGES + 64;
                Constraint::Below(PhysAddr(base + u64::from(limit) % pages * 4096))
            }
        }
    }

    /// Whether `[addr, addr + len)` satisfies `c`.
    fn satisfies(addr: usize, len: usize, constraint: Constraint) -> bool {
        let end = (addr + len) as u64;
        match constraint {
            Constraint::Below(PhysAddr(limit)) => end <= limit,
            Constraint::Zone(Zone::Dma) => end <= DMA_END,
            Constraint::Zone(Zone::Dma32) => end <= DMA32_END,
            Constraint::Zone(Zone::Normal) => true,
        }
    }

    fn heap_free(&mut self, addr: usize, layout: Layout) {
        let block = self.live[&addr];
        self.check_pattern(addr, &block, block.size);
        // SAFETY: a live block allocated with a layout the heap serves as `layout`.
        if let Err(fault) = unsafe { self.heap.try_dealloc(addr as *mut u8, layout) } {
            panic!("free of {addr:#x} ({block:?}) as {layout:?}: {fault:?}");
        }
        hit(Hit::HeapFree);
        if block.cpu != StackCpu::cpu_id() {
            hit(Hit::RemoteFree);
        }
        self.remove(addr);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Alloc { layout, n } => {
                for _ in 0..n {
                    let ptr = self.heap.allocate(layout);
                    if ptr.is_null() {
                        hit(Hit::HeapOom);
                        self.check_heap_oom(layout);
                        break;
                    }
                    hit(Hit::HeapAlloc);
                    let (len, kind) = self.heap_block(ptr, layout);
                    self.add(ptr as usize, len, layout.size(), layout.align(), kind);
                }
            }
            Op::Free { which } => {
                if let Some((addr, _, layout)) = self.pick_heap(which) {
                    self.heap_free(addr, layout);
                }
            }
            Op::FreeRun { which, n } => {
                let Some((addr, _, _)) = self.pick_heap(which) else {
                    return;
                };
                let run: Vec<_> = self
                    .live
                    .range(addr..)
                    .filter_map(|(&addr, block)| match block.kind {
                        Kind::Heap { layout, .. } => Some((addr, layout)),
                        _ => None,
                    })
                    .take(usize::from(n))
                    .collect();
                for (addr, layout) in run {
                    self.heap_free(addr, layout);
                }
            }
            Op::FreeAs {
                which,
                layout: other,
            } => {
                let Some((addr, block, layout)) = self.pick_heap(which) else {
                    return;
                };
                if plan(other) == plan(layout) {
                    hit(Hit::FreeEquivalent);
                    return self.heap_free(addr, other);
                }
                // SAFETY: refused before anything is touched (what is tested).
                let fault = self.refused(op, || unsafe {
                    self.heap.try_dealloc(addr as *mut u8, other)
                });
                assert_eq!(
                    fault.kind,
                    FaultKind::WrongLayout,
                    "{addr:#x} {block:?} freed as {other:?}"
                );
                hit(Hit::WrongLayout);
                self.check_pattern(addr, &block, block.size);
            }
            Op::DoubleFree { which } => {
                // With the top bit: an object alone in its slab, allocated
                // on this CPU (its free may retire the slab).
                let pick = match which & 0x8000 {
                    0 => self.pick_heap(which),
                    _ => self.pick_alone(which),
                };
                let Some((addr, block, layout)) = pick else {
                    return;
                };
                self.heap_free(addr, layout);
                let slab_state = self.heap.is_free(addr as *mut u8, layout);
                // SAFETY: refused.
                let fault = self.refused(op, || unsafe {
                    self.heap.try_dealloc(addr as *mut u8, layout)
                });
                let slab_gone = matches!(plan(layout), Plan::Small(_))
                    && block.kind
                        == (Kind::Heap {
                            layout,
                            own_page: false,
                        })
                    && slab_state.is_none();
                // An object whose slab was retired by the first free is
                // no longer in any slab: a second free cannot tell it from
                // a foreign pointer unless it starts a page.
                let ok = fault.kind == FaultKind::DoubleFree
                    || (slab_gone && fault.kind == FaultKind::NotAllocated);
                hit(match slab_gone {
                    true => Hit::DoubleFreeSlabGone,
                    false => Hit::DoubleFree,
                });
                assert!(
                    ok,
                    "second free of {addr:#x} {block:?}: {fault:?} (slab: {slab_state:?})"
                );
            }
            Op::StaleFree { which } => {
                if self.dead_heap.is_empty() {
                    return;
                }
                let (addr, block) = self.dead_heap[usize::from(which) % self.dead_heap.len()];
                if self.overlap(addr, block.len).is_some() {
                    return; // handed out again: not ours to free
                }
                let Kind::Heap { layout, .. } = block.kind else {
                    unreachable!()
                };
                // SAFETY: refused.
                let fault = self.refused(op, || unsafe {
                    self.heap.try_dealloc(addr as *mut u8, layout)
                });
                // Where its memory went since decides how it is told apart
                // from a live block: free pages and objects are double
                // frees, a slab that is gone makes it foreign, an empty
                // slab now in its page makes it the slab's memory.
                let ok = matches!(
                    fault.kind,
                    FaultKind::DoubleFree | FaultKind::NotAllocated | FaultKind::WrongLayout
                );
                assert!(ok, "stale free of {addr:#x} {block:?}: {fault:?}");
                hit(Hit::StaleFree);
            }
            Op::Foreign {
                kind,
                which,
                layout,
            } => {
                let Some(ptr) = self.foreign_ptr(kind, which) else {
                    return;
                };
                // SAFETY: refused before anything is touched.
                let fault = self.refused(op, || unsafe { self.heap.try_dealloc(ptr, layout) });
                assert_eq!(
                    fault.kind,
                    FaultKind::NotAllocated,
                    "foreign {ptr:?} as {layout:?}"
                );
                hit(Hit::Foreign);
            }
            Op::Interior { which, off } => {
                let Some((addr, block, layout)) = self.pick_heap(which) else {
                    return;
                };
                if block.size < 2 {
                    return;
                }
                let inner = addr + 1 + usize::from(off) * 61 % (block.size - 1);
                // SAFETY: refused.
                let fault = self.refused(op, || unsafe {
                    self.heap.try_dealloc(inner as *mut u8, layout)
                });
                if block.kind
                    == (Kind::Heap {
                        layout,
                        own_page: false,
                    })
                    && block.len < PAGE
                {
                    assert_eq!(
                        fault.kind,
                        FaultKind::NotObjectStart,
                        "{inner:#x} inside {addr:#x} {block:?}"
                    );
                }
                hit(Hit::Interior);
                self.check_pattern(addr, &block, block.size);
            }
            Op::Realloc { which, how, v } => self.realloc(which, how, v),
            Op::ReallocWrong {
                which,
                layout: other,
                v,
            } => {
                let Some((addr, block, layout)) = self.pick_heap(which) else {
                    return;
                };
                if plan(other) == plan(layout) {
                    return;
                }
                let new = 1 + usize::from(v) * 7 % (300 << 10);
                let before = self.snap();
                let faults = self.heap.stats().faults;
                // SAFETY: refused before anything is read or written (what
                // is tested); `new` is a valid size at `l2.align()`.
                let result = unsafe { self.heap.realloc(addr as *mut u8, other, new) };
                assert!(
                    result.is_null(),
                    "realloc of {addr:#x} {block:?} as {other:?} accepted: {result:?}"
                );
                assert_eq!(self.snap(), before, "{op:?} changed state");
                assert_eq!(
                    self.heap.stats().faults,
                    faults + 1,
                    "{op:?}: no fault reported"
                );
                self.faults += 1;
                hit(Hit::ReallocWrong);
                self.check_pattern(addr, &block, block.size);
            }
            Op::FAlloc { order, con } => {
                let order = u32::from(order);
                let constraint = self.constraint(con);
                let result = self.heap.frames().alloc_in(order, constraint);
                match result {
                    Ok(frame) => {
                        let len = PAGE << order;
                        assert!(
                            Self::satisfies(frame.0 as usize, len, constraint),
                            "{op:?}: {frame:?}"
                        );
                        hit(match constraint {
                            Constraint::ANY => Hit::FramesAlloc,
                            Constraint::Zone(_) => Hit::LowZone,
                            _ => Hit::ConstrainedAlloc,
                        });
                        self.add(self.virt(frame), len, len, len, Kind::Order(order));
                    }
                    Err(Error::OutOfMemory) if constraint == Constraint::ANY => {
                        self.check_frames_oom(op, order)
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(error) => panic!("{op:?}: {error:?}"),
                }
            }
            Op::FAllocPages { count, con } => {
                let constraint = self.constraint(con);
                if count == 0 {
                    let error = self.refused(op, || {
                        self.heap.frames().alloc_pages(0, constraint).map(drop)
                    });
                    assert_eq!(error, Error::ZeroCount);
                    return;
                }
                match self.heap.frames().alloc_pages(count, constraint) {
                    Ok(frame) => {
                        let len = count * PAGE;
                        assert!(
                            Self::satisfies(frame.0 as usize, len, constraint),
                            "{op:?}: {frame:?}"
                        );
                        self.add(self.virt(frame), len, len, PAGE, Kind::Pages(count));
                    }
                    Err(Error::OutOfMemory) if constraint == Constraint::ANY => {
                        self.check_frames_oom(op, ceil_log2(count))
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(error) => panic!("{op:?}: {error:?}"),
                }
            }
            Op::FAllocAligned { count, shift, con } => {
                let constraint = self.constraint(con);
                let align = match shift {
                    0..=16 => 1usize << shift,
                    s => (3 << 12) << (s - 17),
                };
                let frames = self.heap.frames();
                if count == 0 || !align.is_power_of_two() {
                    let error = self.refused(op, || {
                        frames.alloc_aligned(count, align, constraint).map(drop)
                    });
                    let want = match count {
                        0 if align.is_power_of_two() => Error::ZeroCount,
                        _ => Error::BadAlignment,
                    };
                    assert!(
                        error == want || error == Error::ZeroCount,
                        "{op:?}: {error:?}"
                    );
                    return;
                }
                match frames.alloc_aligned(count, align, constraint) {
                    Ok(frame) => {
                        let len = count * PAGE;
                        assert!(
                            Self::satisfies(frame.0 as usize, len, constraint),
                            "{op:?}: {frame:?}"
                        );
                        self.add(
                            self.virt(frame),
                            len,
                            len,
                            align.max(PAGE),
                            Kind::Pages(count),
                        );
                    }
                    Err(Error::OutOfMemory) if constraint == Constraint::ANY => {
                        let order = ceil_log2(count).max((align / PAGE).trailing_zeros());
                        self.check_frames_oom(op, order)
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(error) => panic!("{op:?}: {error:?}"),
                }
            }
            Op::FAllocBulk { n, con } => {
                let constraint = self.constraint(con);
                let mut out = [PhysAddr(0); 32];
                if n == 0 {
                    let error = self.refused(op, || {
                        self.heap
                            .frames()
                            .alloc_bulk(constraint, &mut out[..0])
                            .map(drop)
                    });
                    assert_eq!(error, Error::ZeroCount);
                    return;
                }
                match self.heap.frames().alloc_bulk(constraint, &mut out[..n]) {
                    Ok(count) => {
                        assert!(count >= 1 && count <= n, "{op:?}: {count}");
                        for frame in &out[..count] {
                            assert!(
                                Self::satisfies(frame.0 as usize, PAGE, constraint),
                                "{op:?}: {frame:?}"
                            );
                            self.add(self.virt(*frame), PAGE, PAGE, PAGE, Kind::Bulk);
                        }
                    }
                    Err(Error::OutOfMemory) if constraint == Constraint::ANY => {
                        self.check_frames_oom(op, 0);
                        assert_eq!(self.heap.stats().frames.buddy.free_pages(), 0);
                    }
                    Err(Error::OutOfMemory) => {}
                    Err(error) => panic!("{op:?}: {error:?}"),
                }
            }
            Op::FFree { which, how } => {
                if let Some((addr, block)) = self.pick_frames(which) {
                    self.frames_free(addr, block, how);
                }
            }
            Op::FFreeBulk { n, at, bad } => self.free_bulk(n, at, bad),
            Op::FWrongCount { which, v } => {
                let Some((addr, block)) = self.pick_frames(which) else {
                    return;
                };
                let pages = block.len / PAGE;
                let frames = self.heap.frames();
                let frame = self.phys(addr);
                let error = if v & 1 == 0 {
                    let order = u32::from(v >> 1) % 7;
                    if matches!(block.kind, Kind::Pages(_)) || 1 << order == pages {
                        return;
                    }
                    self.refused(op, || frames.free(frame, order))
                } else {
                    let n = usize::from(v >> 1) % 70;
                    if n == pages {
                        return;
                    }
                    self.refused(op, || frames.free_pages(frame, n))
                };
                let ok = matches!(
                    error,
                    Error::WrongCount { .. } | Error::Misaligned | Error::ZeroCount
                );
                assert!(ok, "{op:?} of {addr:#x} {block:?}: {error:?}");
                hit(Hit::WrongCount);
                self.check_pattern(addr, &block, block.size);
            }
            Op::Attack { which, how, page } => self.attack(op, which, how, page),
            Op::FStale { which } => {
                if self.dead_frames.is_empty() {
                    return;
                }
                let (addr, block) = self.dead_frames[usize::from(which) % self.dead_frames.len()];
                if self.overlap(addr, block.len).is_some() {
                    return;
                }
                let (frames, frame) = (self.heap.frames(), self.phys(addr));
                let error = match block.kind {
                    Kind::Order(order) => self.refused(op, || frames.free(frame, order)),
                    Kind::Bulk => self.refused(op, || frames.free_bulk(&[frame])).error,
                    _ => self.refused(op, || frames.free_pages(frame, block.len / PAGE)),
                };
                // Free pages are double frees; a page inside a block a
                // cache holds is an interior page to the buddy; a page an
                // (empty) slab took is the slab's.
                let ok = matches!(
                    error,
                    Error::DoubleFree | Error::InteriorPage | Error::OwnedBySlab
                );
                assert!(ok, "stale free of {addr:#x} {block:?}: {error:?}");
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
                let capacity = self.heap.stats().descriptor_capacity;
                match self.add_memory(gap, pages) {
                    Ok(()) => {
                        hit(Hit::AddMemory);
                        assert!(self.heap.stats().descriptor_capacity > capacity);
                    }
                    Err(error) => {
                        assert_eq!(error, Error::TooManySections, "{op:?}");
                        assert_eq!(
                            self.snap(),
                            before,
                            "{op:?} (refused: {error:?}) changed state"
                        );
                        assert_eq!(self.heap.stats().descriptor_capacity, capacity);
                    }
                }
            }
        }
    }

    /// A pointer the heap never handed out.
    fn foreign_ptr(&self, kind: u8, which: u16) -> Option<*mut u8> {
        let index = usize::from(which);
        Some(match kind % 6 {
            // Host memory: a stack slot, the driver's own buffer (word
            // and page positions in it).
            0 => {
                let local = [0u64; 4];
                std::hint::black_box(&local)
                    .as_ptr()
                    .wrapping_add(index % 4) as *mut u8
            }
            1 => self.foreign.as_ptr().wrapping_add(index % 1024) as *mut u8,
            // The heap's metadata pages (in its memory, never managed).
            2 => {
                let meta = self.meta_end - self.ram.start() as usize;
                (self.ram.start() as usize + index * 8 % meta) as *mut u8
            }
            // Just past the managed memory.
            3 => (self.secs.last().unwrap().1 + index % 4 * PAGE) as *mut u8,
            // A page-layer block, or a page inside one.
            other => {
                let (addr, block) = self.pick_frames(which)?;
                let pages = block.len / PAGE;
                let page = if other == 4 { 0 } else { index / 7 % pages };
                (addr + page * PAGE) as *mut u8
            }
        })
    }

    fn realloc(&mut self, which: u16, how: u8, value: u16) {
        let Some((addr, block, layout)) = self.pick_heap(which) else {
            return;
        };
        let value = usize::from(value);
        let new = match how % 4 {
            0 => layout.size().max(1),
            1 => 1 + value % layout.size().max(1),
            2 => layout.size() + 1 + value * 3 % (200 << 10),
            _ => 1 + value * 5 % (300 << 10),
        };
        let Ok(nl) = Layout::from_size_align(new, layout.align()) else {
            return;
        };
        self.check_pattern(addr, &block, block.size);
        // SAFETY: a live block of layout `layout`, `new` > 0 and valid at its
        // alignment.
        let moved = unsafe { self.heap.realloc(addr as *mut u8, layout, new) };
        if moved.is_null() {
            hit(Hit::ReallocNull);
            self.check_heap_oom(nl);
            return self.check_pattern(addr, &block, block.size);
        }
        let kept = block.size.min(new);
        self.check_pattern(moved as usize, &block, kept);
        self.live.remove(&addr);
        let (len, kind) = self.heap_block(moved, nl);
        self.add(moved as usize, len, new, layout.align(), kind);
        if moved as usize != addr {
            // Moved: the old block is dead.
            hit(Hit::ReallocMoved);
            self.bury(addr, block);
        } else {
            hit(Hit::ReallocInPlace);
        }
    }

    fn frames_free(&mut self, addr: usize, block: Block, how: u8) {
        self.check_pattern(addr, &block, block.size);
        let (frames, frame) = (self.heap.frames(), self.phys(addr));
        let result = match (block.kind, how % 3) {
            (Kind::Order(order), 0) => frames.free(frame, order),
            (Kind::Order(order), _) => frames.free_pages(frame, 1 << order),
            (Kind::Bulk, 0) => frames.free(frame, 0),
            (Kind::Bulk, 1) => frames.free_pages(frame, 1),
            (Kind::Bulk, _) => frames.free_bulk(&[frame]).map_err(|error| error.error),
            (Kind::Pages(n), _) => frames.free_pages(frame, n),
            (Kind::Heap { .. }, _) => unreachable!(),
        };
        if let Err(error) = result {
            panic!("free of {addr:#x} {block:?} ({how}): {error:?}");
        }
        self.remove(addr);
    }

    /// Single frames freed together, with at most one bad frame among them.
    fn free_bulk(&mut self, n: usize, at: u16, bad: Option<(u8, u8)>) {
        let singles: Vec<usize> = self
            .live
            .iter()
            .filter(|(_, block)| matches!(block.kind, Kind::Bulk | Kind::Order(0)))
            .map(|(&addr, _)| addr)
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
        let frames = self.heap.frames();
        let Some((pos, kind)) = bad else {
            if list.is_empty() {
                let error = self.refused("empty bulk free", || frames.free_bulk(&list));
                assert_eq!((error.index, error.error), (0, Error::ZeroCount));
                return;
            }
            for &frame in &list {
                let block = self.live[&self.virt(frame)];
                self.check_pattern(self.virt(frame), &block, block.size);
            }
            if let Err(error) = frames.free_bulk(&list) {
                panic!("bulk free of {list:x?}: {error:?}");
            }
            for frame in list {
                self.remove(self.virt(frame));
            }
            hit(Hit::BulkFree);
            return;
        };
        // The bad frame and the error it must be refused with (None: any).
        let (frame, want) = match kind % 5 {
            // A page-granular heap block's first page, or a slab's page.
            0 | 1 => {
                let slab = kind % 5 == 1;
                let Some((addr, block)) = self.pick(u16::from(pos), |block| match block.kind {
                    Kind::Heap { layout, own_page } => {
                        slab == (matches!(plan(layout), Plan::Small(_)) && !own_page)
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
                let _ = block;
                (self.phys(addr & !(PAGE - 1)), Some(want))
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
                    .filter(|(addr, block)| self.overlap(*addr, block.len).is_none())
                    .map(|&(addr, _)| addr)
                    .collect();
                if dead.is_empty() {
                    return;
                }
                (self.phys(dead[usize::from(pos) % dead.len()]), None)
            }
            // Not a frame of this allocator.
            _ => {
                let outside = self.secs.last().unwrap().1 + usize::from(pos) * 4096;
                let frame = if pos & 1 == 0 { outside } else { outside + 8 };
                (self.phys(frame), None)
            }
        };
        // A duplicate goes after its original; anything else anywhere.
        let at = match kind % 5 {
            2 => {
                let orig = list.iter().position(|&other| other == frame).unwrap();
                orig + 1 + usize::from(pos / 3) % (list.len() - orig)
            }
            _ => usize::from(pos / 3) % (list.len() + 1),
        };
        list.insert(at, frame);
        let error = self.refused(("bulk free", &list, at), || frames.free_bulk(&list));
        assert_eq!(error.index, at, "bulk free of {list:x?}: {error:?}");
        hit(Hit::BulkBad);
        if let Some(wanted) = want {
            assert_eq!(error.error, wanted, "bulk free of {list:x?} (bad at {at})");
        }
    }

    /// Page-layer frees of the heap's memory: refused as the heap's or the
    /// slab's, nothing changed.
    fn attack(&mut self, op: Op, which: u16, how: u8, page: u8) {
        let Some((addr, block, layout)) = self.pick_heap(which) else {
            return;
        };
        let slab = matches!(plan(layout), Plan::Small(_))
            && block.kind
                == (Kind::Heap {
                    layout,
                    own_page: false,
                });
        // The pages it lives in: its slab's, or its own.
        let (first, pages) = if slab {
            let order = slab_order(block.len);
            (addr & !((PAGE << order) - 1), 1usize << order)
        } else {
            (addr, block.len / PAGE)
        };
        let idx = usize::from(page) % pages;
        let virt = first + idx * PAGE;
        let frame = self.phys(virt);
        let head = idx == 0;
        let frames = self.heap.frames();
        let error = match how % 5 {
            0 => {
                // The block's own order where it has one, else a page.
                let order = match (slab, head, plan(layout)) {
                    (false, true, Plan::Cached(order)) => order,
                    _ => 0,
                };
                self.refused(op, || frames.free(frame, order))
            }
            1 => {
                let n = if head && !slab { pages } else { 1 };
                self.refused(op, || frames.free_pages(frame, n))
            }
            2 => self.refused(op, || frames.free_bulk(&[frame])).error,
            3 => {
                let n = 1 + usize::from(page) % 4;
                let error = self.refused(op, || frames.reserve_range(frame, n));
                let want = match self.inside(virt, n * PAGE) {
                    true => Error::RangeInUse,
                    false => Error::RangeCrossesSection,
                };
                assert_eq!(error, want, "{op:?}: {frame:?} of {addr:#x} {block:?}");
                return;
            }
            _ => {
                // Any order: refused, but possibly for its alignment.
                self.refused(op, || frames.free(frame, u32::from(page) % 6));
                return;
            }
        };
        let want = match (slab, head) {
            (true, _) => Some(Error::OwnedBySlab),
            (false, true) => Some(Error::OwnedByHeap),
            // A page inside a heap block: the buddy's view (interior).
            (false, false) => None,
        };
        if let Some(wanted) = want {
            assert_eq!(error, wanted, "{op:?}: {frame:?} of {addr:#x} {block:?}");
        }
        hit(Hit::Attack);
        self.check_pattern(addr, &block, block.size);
    }

    /// Pages the live blocks occupy (slab objects: their whole slab).
    fn occupied(&self) -> BTreeMap<usize, usize> {
        let mut pages = BTreeMap::new();
        for (&addr, block) in &self.live {
            let (first, n) = match block.kind {
                Kind::Heap {
                    layout,
                    own_page: false,
                } if matches!(plan(layout), Plan::Small(_)) => {
                    let order = slab_order(block.len);
                    (addr & !((PAGE << order) - 1), 1 << order)
                }
                _ => (addr, block.len / PAGE),
            };
            for i in 0..n {
                pages.insert(first + i * PAGE, addr);
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
            .filter(|&&addr| {
                let block = self.live[&addr];
                matches!(block.kind, Kind::Heap { layout, own_page: false } if matches!(plan(layout), Plan::Small(_)))
            })
            .count() as u64;
        let stats = self.heap.stats();
        assert_eq!(stats.frames.cached_pages(), 0, "drained, but pages cached");
        assert_eq!(stats.slab_pages, slab_pages, "slab pages after a drain");
        assert_eq!(
            stats.frames.free_pages(),
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
            assert!(self.heap.drain());
            self.check_drained();
        }
        let base = self.secs[0].0;
        let start = base + usize::from(off & 0x7fff) % (MAX_PAGES as usize + 8) * PAGE;
        let start = if off & 0x8000 != 0 { start + 8 } else { start };
        let frames = self.heap.frames();
        let frame = self.phys(start);
        let fits = count > 0 && start % PAGE == 0 && self.inside(start, count * PAGE);
        let free = drained && fits && {
            let occ = self.occupied();
            occ.range(start..start + count * PAGE).next().is_none()
        };
        if count == 0 || start % PAGE != 0 || !fits || (drained && !free) {
            let error = self.refused(op, || frames.reserve_range(frame, count));
            let want = match () {
                _ if count == 0 => Error::ZeroCount,
                _ if start % PAGE != 0 => Error::Misaligned,
                _ if !fits && self.inside(start, PAGE) => Error::RangeCrossesSection,
                _ if !fits => Error::NotInSection,
                _ => Error::RangeInUse,
            };
            assert_eq!(error, want, "{op:?} at {start:#x}");
            if want == Error::RangeInUse {
                hit(Hit::ReserveRefusedDrained);
            }
            return;
        }
        let before = self.snap();
        match frames.reserve_range(frame, count) {
            Ok(()) => {
                hit(if drained {
                    Hit::ReserveDrained
                } else {
                    Hit::Reserve
                });
                self.add(start, count * PAGE, count * PAGE, PAGE, Kind::Pages(count))
            }
            Err(error) => {
                assert!(
                    !free,
                    "{op:?}: {start:#x}+{count} pages is free, but {error:?}"
                );
                assert_eq!(
                    self.snap(),
                    before,
                    "{op:?} (refused: {error:?}) changed state"
                );
            }
        }
    }

    fn drain(&mut self, kind: u8) {
        let all = !self.masked;
        let frames = self.heap.frames();
        match kind % 6 {
            0 | 1 => {
                assert_eq!(self.heap.drain(), all, "heap drain");
                if all {
                    if kind % 6 == 1 {
                        // Parked pages merged too.
                        assert!(frames.drain());
                    }
                    self.check_drained();
                }
            }
            2 => assert_eq!(frames.drain(), all),
            3 => assert_eq!(frames.drain_all(), all),
            4 => frames.drain_local(),
            _ => {
                let cpu = usize::from(kind / 6) % CPUS;
                let here = StackCpu::cpu_id() == cpu;
                assert_eq!(frames.drain_cpu(cpu), all || here, "drain of CPU {cpu}");
            }
        }
        if all && kind % 6 < 4 {
            assert_eq!(self.heap.stats().frames.cached_pages(), 0);
        }
    }

    /// Frees everything (checking every pattern), drains, and checks that
    /// every managed page is free and no slab is left.
    fn finish(mut self) {
        while let Some((&addr, &block)) = self.live.iter().next() {
            match block.kind {
                Kind::Heap { layout, .. } => self.heap_free(addr, layout),
                _ => self.frames_free(addr, block, addr as u8),
            }
        }
        assert!(self.heap.drain());
        assert!(self.heap.frames().drain());
        let stats = self.heap.stats();
        assert_eq!(stats.slab_pages, 0, "slab pages left: {stats:?}");
        assert_eq!(stats.frames.cached_pages(), 0);
        assert_eq!(
            stats.frames.free_pages(),
            self.managed,
            "pages lost: {stats:?}"
        );
        assert_eq!(stats.faults, self.faults, "faults reported");
    }
}
