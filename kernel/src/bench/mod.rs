//! In-kernel benchmarks (`make bench`): cycles per operation of the memory
//! paths, measured with the TSC on the real (or KVM) CPU. They print
//! figures and assert nothing.

use alloc::vec::Vec;
use core::hint::black_box;

use framekeep::{Constraint, PhysAddr, Zone};
use x86_64::structures::paging::{Page, PageTableFlags, PhysFrame, Size4KiB};

use crate::arch::x86_64::tsc;
use crate::kprintln;

mod per_cpu;
use crate::mem::{frames, paging};

const ROUNDS: usize = 7;

/// Median over ROUNDS of the cycles per operation of `round`, which runs
/// `ops` operations.
pub(crate) fn measure(ops: u64, mut round: impl FnMut()) -> u64 {
    round(); // warm up caches and lazily initialised metadata
    let mut samples = [0u64; ROUNDS];
    for sample in &mut samples {
        let start = tsc::now_serialised();
        round();
        *sample = (tsc::now_serialised() - start) / ops;
    }
    samples.sort_unstable();
    samples[ROUNDS / 2]
}

fn row(name: &str, cycles: u64, target: &str) {
    let hz = tsc::frequency().max(1);
    let nanos = cycles as f64 * 1e9 / hz as f64;
    kprintln!("  {name:<48} {cycles:>9} {nanos:>10.1}  {target}");
}

/// Cycles per byte of a 1 MiB copy: on real hardware and healthy VMs well
/// under 1; far above that, memory access itself is being emulated or
/// trapped and no figure below means what it says.
fn memory_cycles_per_kib() -> u64 {
    let mut source = alloc::vec![1u8; 1 << 20];
    let mut target = alloc::vec![0u8; 1 << 20];
    measure(1024, || {
        target.copy_from_slice(black_box(&source));
        source[0] = target[1];
    })
}

/// Runs every benchmark and prints the table.
pub fn run() {
    kprintln!(
        "kernel memory benchmarks (median of {ROUNDS} rounds, TSC at {} MHz)",
        tsc::frequency() / 1_000_000
    );
    let copy = memory_cycles_per_kib();
    kprintln!("  memory copy: {copy} cycles per KiB");
    if copy > 2_000 {
        kprintln!("  WARNING: memory is abnormally slow here (nested or trapping hypervisor?);");
        kprintln!("  the figures below measure the host, not the allocator.");
    }
    kprintln!(
        "  {:<48} {:>9} {:>10}  {}",
        "operation",
        "cycles/op",
        "ns/op",
        "target"
    );

    const PAIRS: u64 = 10_000;
    let pair = measure(PAIRS, || {
        for _ in 0..PAIRS {
            let frame = frames::alloc_order(0, Constraint::ANY).expect("a frame");
            frames::free_order(black_box(frame), 0).expect("free");
        }
    });
    row(
        "single-frame alloc+free",
        pair,
        "<= 40 (Linux order-0: 115-231)",
    );

    const BATCH: usize = 1000;
    let mut batch = alloc::vec![PhysAddr(0); BATCH];
    let bulk = measure(BATCH as u64, || {
        let got = frames::alloc_bulk(Constraint::ANY, &mut batch).expect("bulk alloc");
        assert_eq!(got, BATCH);
        frames::free_bulk(&batch).expect("bulk free");
    });
    row("1000-frame batch alloc then free, per frame", bulk, "");

    let order9 = measure(PAIRS / 10, || {
        for _ in 0..PAIRS / 10 {
            let block = frames::alloc_order(9, Constraint::ANY).expect("a 2 MiB block");
            frames::free_order(black_box(block), 9).expect("free");
        }
    });
    row("2 MiB (order 9) alloc+free", order9, "");

    map_unmap_row();
    dma32_row();
    per_cpu::run();
}

/// Map+unmap of one 4 KiB page in a table that stays (a neighbour stays
/// mapped), so the figure is the steady-state cost, not table allocation.
fn map_unmap_row() {
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    let area = paging::reserve_virtual(2 * 4096, 4096).expect("virtual space");
    let anchor = Page::<Size4KiB>::containing_address(area);
    let page = anchor + 1;
    let frame_of =
        |phys: PhysAddr| PhysFrame::<Size4KiB>::containing_address(x86_64::PhysAddr::new(phys.0));
    let anchor_frame = frames::alloc_order(0, Constraint::ANY).expect("frame");
    let frame = frames::alloc_order(0, Constraint::ANY).expect("frame");
    paging::map(anchor, frame_of(anchor_frame), flags).expect("map anchor");
    const OPS: u64 = 20_000;
    let cost = measure(OPS, || {
        for _ in 0..OPS {
            paging::map(page, frame_of(frame), flags).expect("map");
            paging::unmap(page).expect("unmap");
        }
    });
    row("map+unmap of a 4 KiB page", cost, "");
    paging::unmap(anchor).expect("unmap anchor");
    let _ = frames::free_order(anchor_frame, 0);
    let _ = frames::free_order(frame, 0);
}

/// DMA32 single-frame pair while Normal memory is cut into 100k free
/// single frames (every other one of 200k allocated frames freed).
fn dma32_row() {
    if frames::stats().zone(Zone::Normal).free_pages < 200_000 {
        kprintln!("  (DMA32 row skipped: boot with more than 4 GiB for a Normal zone)");
        return;
    }
    let mut held: Vec<PhysAddr> = alloc::vec![PhysAddr(0); 200_000];
    let got = frames::alloc_bulk(Constraint::Zone(Zone::Normal), &mut held).expect("bulk");
    held.truncate(got);
    let (keep, release): (Vec<PhysAddr>, Vec<PhysAddr>) = held
        .chunks(2)
        .map(|pair| (pair[0], pair[pair.len() - 1]))
        .unzip();
    frames::free_bulk(&release).expect("free every other frame");
    let free_blocks = frames::stats().zone(Zone::Normal).free_blocks[0];
    const PAIRS: u64 = 10_000;
    let cost = measure(PAIRS, || {
        for _ in 0..PAIRS {
            let frame =
                frames::alloc_order(0, Constraint::Zone(Zone::Dma32)).expect("a DMA32 frame");
            frames::free_order(black_box(frame), 0).expect("free");
        }
    });
    let plain = measure(PAIRS, || {
        for _ in 0..PAIRS {
            let frame = frames::alloc_order(0, Constraint::ANY).expect("a frame");
            frames::free_order(black_box(frame), 0).expect("free");
        }
    });
    let label = alloc::format!("DMA32 alloc+free, {free_blocks} free order-0 blocks high");
    row(&label, cost, "");
    row(
        "  plain single-frame pair, same state",
        plain,
        "DMA32 within 1.2x",
    );
    frames::free_bulk(&keep).expect("free the rest");
}
