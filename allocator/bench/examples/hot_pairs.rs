//! The fast-path pairs alone, for counting instructions: one warm-up pass, then
//! `N` alloc+free pairs of one kind, nothing else.
//!
//! ```text
//! cargo build --release -p allocator-bench --example hot_pairs
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/hot_pairs KIND [N] [CPU]
//! ```
//!
//! KIND: `page` (a 4 KiB `Heap` allocation, through the per-CPU page
//! cache), `small` (a 64-byte `Heap` allocation, from the slab), `pcp`
//! (`PageCaches::alloc(0)` and `free` by address), `block`
//! (`PageCaches::alloc_block(0)` and `free_block`), `buddy` (`BuddyAllocator::alloc(0)`
//! and `free`). Compare the totals of two builds: the difference divided
//! by `N` is the cost per pair.
//!
//! CPU: `kernel` (the default: [`KernelModelCpu`], a kernel's `pushfq`,
//! `cli`, `sti` as ring 3 can run them, the platform of the frames bench's
//! per-CPU row) or `host` (`host_cpu_local!`, whose "masking" is a spin
//! flag behind a thread-local).

use std::alloc::Layout;
use std::hint::black_box;

use allocator_bench::KernelModelCpu;
use framekeep::{BuddyAllocator, Constraint, CpuLocal, Heap, PageCaches, PhysAddr};

framekeep::host_cpu_local!(HostCpu, 4);

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "page".into());
    let n: usize = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    if kind == "buddy" {
        let mut b = BuddyAllocator::new();
        b.add_section_static(PhysAddr(1 << 32), 4096, vec![0u64; 4096].leak())
            .unwrap();
        for _ in 0..n + 1 {
            let p = b.alloc(black_box(0), Constraint::ANY).unwrap();
            b.free(black_box(p), 0).unwrap();
        }
        return;
    }
    match args.next().as_deref() {
        None | Some("kernel") => run::<KernelModelCpu>(&kind, n),
        Some("host") => run::<HostCpu>(&kind, n),
        Some(other) => panic!("unknown CPU {other}: kernel or host"),
    }
}

fn run<P: CpuLocal + 'static>(kind: &str, n: usize) {
    KernelModelCpu::claim();
    match kind {
        "page" | "small" => {
            let layout = if kind == "page" {
                Layout::from_size_align(4096, 4096).unwrap()
            } else {
                Layout::from_size_align(64, 8).unwrap()
            };
            let heap: &'static Heap<P, 4> = Box::leak(Box::new(Heap::new()));
            let ram = Box::leak(vec![0u8; 4097 * 4096].into_boxed_slice());
            let start = (ram.as_ptr() as u64).next_multiple_of(4096);
            // SAFETY: leaked host memory, used only by the heap.
            unsafe { heap.add_memory(PhysAddr(start), 4096).unwrap() };
            for _ in 0..n + 1 {
                let p = heap.allocate(black_box(layout));
                // SAFETY: just allocated with `layout`, freed once.
                unsafe { heap.try_dealloc(black_box(p), layout).unwrap() };
            }
        }
        "pcp" | "block" => {
            let c: &'static PageCaches<P, 4> =
                Box::leak(Box::new(PageCaches::new(BuddyAllocator::new())));
            c.add_section_static(PhysAddr(1 << 32), 4096, vec![0u64; 8192].leak())
                .unwrap();
            if kind == "pcp" {
                for _ in 0..n + 1 {
                    let p = c.alloc(black_box(0)).unwrap();
                    c.free(black_box(p), 0).unwrap();
                }
            } else {
                for _ in 0..n + 1 {
                    let b = c.alloc_block(black_box(0)).unwrap();
                    c.free_block(black_box(b)).unwrap();
                }
            }
        }
        other => panic!("unknown kind {other}: page, small, pcp, block or buddy"),
    }
}
