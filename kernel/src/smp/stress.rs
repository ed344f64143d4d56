//! The all-CPU allocator stress: every online CPU at once allocates and
//! frees single frames, blocks of orders up to 9, exact-count runs, DMA32
//! frames and heap objects of every slab class, and frees what other CPUs
//! allocated, long enough to refill and drain every per-CPU cache many
//! times.
//!
//! Every frame a CPU holds is marked in a global ownership bitmap (set on
//! allocation, cleared on free): a frame handed out twice is caught the
//! moment the second owner marks it. Every frame and object is stamped with
//! its owner and checked before it is freed, so a frame or object someone
//! else wrote into is caught too. Any such finding panics on the CPU that
//! found it, which stops every CPU and fails the run naming that CPU.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use framekeep::{Constraint, PhysAddr, SIZE_CLASSES, Zone};
use spin::Mutex;

use super::job;
use crate::arch::x86_64::percpu;
use crate::drivers::fw_cfg;
use crate::mem::frames::{self, PAGE_SIZE};

/// Operations per CPU.
const ROUNDS: usize = 40_000;
/// Most items one CPU holds at once.
const MAX_HELD: usize = 160;
/// Slots through which CPUs hand items to each other.
const EXCHANGE_SLOTS: usize = 64;

/// Something a CPU holds, with the stamp written into it.
#[derive(Clone, Copy, Debug)]
enum Item {
    Block {
        addr: u64,
        order: u32,
        stamp: u64,
    },
    Run {
        addr: u64,
        pages: u64,
        stamp: u64,
    },
    Object {
        addr: usize,
        size: usize,
        stamp: u64,
    },
}

/// What the CPUs share: the ownership bitmap and the exchange.
struct Shared {
    /// One bit per frame below `frames::memory_end()`.
    owned: Vec<AtomicU64>,
    exchange: Vec<Mutex<Option<Item>>>,
    allocations: AtomicUsize,
    foreign_frees: AtomicUsize,
}

impl Shared {
    /// Marks `pages` frames from `addr` as held; a frame already held was
    /// handed out twice.
    fn claim(&self, addr: u64, pages: u64, cpu: usize) {
        for frame in addr / PAGE_SIZE..addr / PAGE_SIZE + pages {
            let bit = 1 << (frame % 64);
            let previous = self.owned[(frame / 64) as usize].fetch_or(bit, Ordering::SeqCst);
            assert!(
                previous & bit == 0,
                "frame {:#x} handed out twice (second time to CPU {cpu})",
                frame * PAGE_SIZE
            );
        }
    }

    fn release(&self, addr: u64, pages: u64, cpu: usize) {
        for frame in addr / PAGE_SIZE..addr / PAGE_SIZE + pages {
            let bit = 1 << (frame % 64);
            let previous = self.owned[(frame / 64) as usize].fetch_and(!bit, Ordering::SeqCst);
            assert!(
                previous & bit != 0,
                "CPU {cpu} frees frame {:#x}, which nobody held",
                frame * PAGE_SIZE
            );
        }
    }
}

/// The stamp for an item: who allocated it and which allocation it was.
fn stamp(cpu: usize, serial: u64) -> u64 {
    0x5eed_0000_0000_0000 ^ ((cpu as u64) << 40) ^ serial.wrapping_mul(0x9e37_79b9)
}

fn frame_words(addr: u64, pages: u64) -> impl Iterator<Item = *mut u64> {
    (0..pages).map(move |page| {
        frames::phys_to_virt(PhysAddr(addr + page * PAGE_SIZE)).as_mut_ptr::<u64>()
    })
}

fn write_frames(addr: u64, pages: u64, value: u64) {
    for word in frame_words(addr, pages) {
        // SAFETY: the frames are held by this test (claimed in the bitmap)
        // and mapped by the linear map.
        unsafe { word.write_volatile(value) };
    }
}

fn check_frames(addr: u64, pages: u64, value: u64, cpu: usize) {
    for (page, word) in frame_words(addr, pages).enumerate() {
        // SAFETY: as in `write_frames`.
        let found = unsafe { word.read_volatile() };
        assert_eq!(
            found,
            value,
            "CPU {cpu}: stamp of frame {:#x} changed",
            addr + page as u64 * PAGE_SIZE
        );
    }
}

fn object_words(addr: usize, size: usize) -> impl Iterator<Item = *mut u64> {
    (0..size / 8).map(move |index| (addr + index * 8) as *mut u64)
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, size.next_power_of_two().min(PAGE_SIZE as usize)).unwrap()
}

impl Item {
    fn write_stamp(self) {
        match self {
            Self::Block { addr, order, stamp } => write_frames(addr, 1 << order, stamp),
            Self::Run { addr, pages, stamp } => write_frames(addr, pages, stamp),
            Self::Object { addr, size, stamp } => {
                for word in object_words(addr, size) {
                    // SAFETY: a live heap object of `size` bytes held by us.
                    unsafe { word.write_volatile(stamp) };
                }
            }
        }
    }

    /// Checks the stamp, forgets the ownership and frees the item.
    fn check_and_free(self, shared: &Shared, cpu: usize) {
        match self {
            Self::Block { addr, order, stamp } => {
                check_frames(addr, 1 << order, stamp, cpu);
                shared.release(addr, 1 << order, cpu);
                frames::free_order(PhysAddr(addr), order)
                    .unwrap_or_else(|error| panic!("CPU {cpu}: free of {addr:#x}: {error:?}"));
            }
            Self::Run { addr, pages, stamp } => {
                check_frames(addr, pages, stamp, cpu);
                shared.release(addr, pages, cpu);
                let run = frames::FrameRun {
                    start: PhysAddr(addr),
                    pages: pages as usize,
                };
                frames::free_run(run)
                    .unwrap_or_else(|error| panic!("CPU {cpu}: free of run {addr:#x}: {error:?}"));
            }
            Self::Object { addr, size, stamp } => {
                for word in object_words(addr, size) {
                    // SAFETY: a live heap object of `size` bytes held by us.
                    let found = unsafe { word.read_volatile() };
                    assert_eq!(found, stamp, "CPU {cpu}: stamp of object {addr:#x} changed");
                }
                // SAFETY: allocated by `alloc::alloc::alloc` with this
                // layout, freed once (whoever took it from the exchange
                // owns it alone).
                unsafe { alloc::alloc::dealloc(addr as *mut u8, layout(size)) };
            }
        }
    }
}

/// A small xorshift generator: each CPU's workload differs but repeats.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Allocates one item of a random kind; `None` when memory ran out for it.
fn allocate(random: &mut Random, shared: &Shared, cpu: usize, serial: u64) -> Option<Item> {
    let stamp = stamp(cpu, serial);
    let block = |order: u32, constraint: Constraint| {
        let addr = frames::alloc_order(order, constraint).ok()?.0;
        shared.claim(addr, 1 << order, cpu);
        Some(Item::Block { addr, order, stamp })
    };
    let item = match random.below(100) {
        0..35 => block(0, Constraint::ANY)?,
        35..47 => block(1 + random.below(3) as u32, Constraint::ANY)?,
        47..50 => block(4 + random.below(6) as u32, Constraint::ANY)?,
        50..56 => {
            let item = block(0, Constraint::Zone(Zone::Dma32))?;
            if let Item::Block { addr, .. } = item {
                assert!(addr < 1 << 32, "CPU {cpu}: DMA32 frame at {addr:#x}");
            }
            item
        }
        56..62 => {
            let pages = 1 + random.below(40);
            let run = frames::alloc_run(pages as usize, Constraint::ANY).ok()?;
            shared.claim(run.start.0, pages, cpu);
            Item::Run {
                addr: run.start.0,
                pages,
                stamp,
            }
        }
        _ => {
            let size = SIZE_CLASSES[random.below(SIZE_CLASSES.len() as u64) as usize];
            // SAFETY: the layout has a non-zero size.
            let addr = unsafe { alloc::alloc::alloc(layout(size)) };
            if addr.is_null() {
                return None;
            }
            Item::Object {
                addr: addr as usize,
                size,
                stamp,
            }
        }
    };
    item.write_stamp();
    shared.allocations.fetch_add(1, Ordering::Relaxed);
    Some(item)
}

/// A failure the test runner asked CPU 1 to hit halfway through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Injected {
    Nothing,
    Panic,
    /// A page fault: a fatal exception rather than a panic.
    Fault,
}

impl Injected {
    fn requested() -> Self {
        let mut request = [0; 32];
        match fw_cfg::injection(&mut request) {
            Some("ap-panic") => Self::Panic,
            Some("ap-fault") => Self::Fault,
            _ => Self::Nothing,
        }
    }

    fn hit(self) {
        match self {
            Self::Nothing => {}
            Self::Panic => panic!(
                "injected panic on an application processor (fw_cfg opt/framekeep/inject=ap-panic)"
            ),
            Self::Fault => {
                // A lower-half address nothing maps (see the page-fault test
                // in arch::x86_64::idt).
                let unmapped = 0x5eed_0000 as *const u64;
                // SAFETY: deliberately faults; the fault stops every CPU.
                core::hint::black_box(unsafe { unmapped.read_volatile() });
            }
        }
    }
}

/// One CPU's share of the stress.
fn worker(shared: &Shared, cpu: usize, injected: Injected) {
    let mut random = Random(0x5eed_cafe_f00d ^ ((cpu as u64 + 1) << 32));
    let mut held: Vec<Item> = Vec::with_capacity(MAX_HELD);
    for round in 0..ROUNDS {
        if round == ROUNDS / 2 {
            injected.hit();
        }
        let choice = random.below(100);
        if held.len() >= MAX_HELD || (choice < 30 && !held.is_empty()) {
            let index = random.below(held.len() as u64) as usize;
            held.swap_remove(index).check_and_free(shared, cpu);
        } else if choice < 38 && !held.is_empty() {
            // Hand an item to whichever CPU takes it.
            let index = random.below(held.len() as u64) as usize;
            let slot = &shared.exchange[random.below(EXCHANGE_SLOTS as u64) as usize];
            let mut slot = slot.lock();
            if slot.is_none() {
                *slot = Some(held.swap_remove(index));
            }
        } else if choice < 46 {
            let slot = &shared.exchange[random.below(EXCHANGE_SLOTS as u64) as usize];
            let taken = slot.lock().take();
            if let Some(item) = taken {
                item.check_and_free(shared, cpu);
                shared.foreign_frees.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some(item) = allocate(&mut random, shared, cpu, round as u64) {
            held.push(item);
        }
    }
    for item in held {
        item.check_and_free(shared, cpu);
    }
}

#[test_case]
fn every_cpu_stresses_the_allocator_at_once() {
    let injected = Injected::requested();
    let free_before = frames::stats().free_pages();
    let words = frames::memory_end().div_ceil(PAGE_SIZE * 64) as usize;
    let shared = Shared {
        owned: (0..words).map(|_| AtomicU64::new(0)).collect(),
        exchange: (0..EXCHANGE_SLOTS).map(|_| Mutex::new(None)).collect(),
        allocations: AtomicUsize::new(0),
        foreign_frees: AtomicUsize::new(0),
    };
    let cpus = job::on_every_cpu(&|cpu| {
        let injected = if cpu == 1 {
            injected
        } else {
            Injected::Nothing
        };
        worker(&shared, cpu, injected)
    });
    for slot in &shared.exchange {
        if let Some(item) = slot.lock().take() {
            item.check_and_free(&shared, percpu::current_index());
        }
    }
    let allocations = shared.allocations.load(Ordering::Relaxed);
    let foreign = shared.foreign_frees.load(Ordering::Relaxed);
    crate::kprintln!(
        "# {cpus} CPUs: {allocations} allocations, {foreign} freed by a CPU that did not allocate them"
    );
    assert!(
        allocations > cpus * ROUNDS / 3,
        "only {allocations} allocations succeeded"
    );
    if cpus > 1 {
        assert!(foreign > cpus * 100, "only {foreign} cross-CPU frees");
    }
    assert!(
        shared
            .owned
            .iter()
            .all(|word| word.load(Ordering::SeqCst) == 0),
        "frames still marked held"
    );
    drop(shared);
    assert_eq!(
        frames::stats().free_pages(),
        free_before,
        "free pages after the stress and a drain of every CPU's caches"
    );
}

#[test_case]
fn draining_from_one_cpu_empties_every_cpu_cache() {
    // Each CPU takes 40 frames and gives them back: they stay in its cache.
    job::on_every_cpu(&|cpu| {
        let mut taken = [PhysAddr(0); 40];
        for frame in &mut taken {
            *frame = frames::alloc_order(0, Constraint::ANY)
                .unwrap_or_else(|error| panic!("CPU {cpu}: {error:?}"));
        }
        for frame in taken {
            frames::free_order(frame, 0).unwrap();
        }
    });
    let cpus = percpu::online_count() as u64;
    let cached = frames::cached_pages();
    assert!(
        cached >= 40 * cpus,
        "{cached} pages cached after every CPU freed 40"
    );
    assert!(frames::drain_caches(), "some CPU's cache was out of reach");
    assert_eq!(
        frames::cached_pages(),
        0,
        "pages left in caches after the drain"
    );
}
