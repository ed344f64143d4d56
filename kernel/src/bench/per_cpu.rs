//! The per-CPU table of `make bench`: 1, 2 and all CPUs allocating at once,
//! each timing page pairs and small-object pairs through its own caches,
//! then freeing what another CPU allocated (the cross-CPU free: a page goes
//! into the freeing CPU's cache; an object goes back to its slab's owner
//! through the lock-free remote free).

use alloc::vec::Vec;
use core::alloc::Layout;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use framekeep::{Constraint, PhysAddr};
use spin::Mutex;

use super::measure;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::{cpu, tsc};
use crate::kprintln;
use crate::mem::frames;
use crate::smp::job;

const PAIRS: u64 = 5_000;
/// Items each CPU hands to another for the cross-CPU rows.
const HANDED: usize = 2_000;
const OBJECT: Layout = match Layout::from_size_align(64, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("a valid layout"),
};

/// What each CPU measured, in cycles per operation.
#[derive(Default)]
struct Figures {
    page_pair: AtomicU64,
    object_pair: AtomicU64,
    page_remote_free: AtomicU64,
    object_remote_free: AtomicU64,
}

/// Prints the table.
pub fn run() {
    let online = percpu::online_count();
    let emulated = cpu::hypervisor().is_some_and(|vendor| vendor.starts_with(b"TCGTCGTCG"));
    kprintln!();
    kprintln!("per-CPU caches, all CPUs at once (cycles per operation, mean over the CPUs)");
    if emulated {
        kprintln!("  UNRELIABLE: running under emulation (QEMU TCG): these are host figures");
    }
    kprintln!(
        "  {:>4}  {:>10}  {:>12}  {:>16}  {:>18}",
        "CPUs",
        "page pair",
        "64 B pair",
        "page freed by",
        "object freed by"
    );
    kprintln!(
        "  {:>4}  {:>10}  {:>12}  {:>16}  {:>18}",
        "",
        "",
        "",
        "another CPU",
        "another CPU"
    );
    let mut counts = [1, 2, online];
    counts.sort_unstable();
    let mut previous = 0;
    for cpus in counts {
        if cpus == previous || cpus > online {
            continue;
        }
        previous = cpus;
        let figures = measure_with(cpus);
        let mean = |value: &AtomicU64| value.load(Ordering::Relaxed) / cpus as u64;
        let remote = |value: &AtomicU64| match cpus {
            1 => alloc::string::String::from("-"),
            _ => alloc::format!("{}", mean(value)),
        };
        kprintln!(
            "  {cpus:>4}  {:>10}  {:>12}  {:>16}  {:>18}",
            mean(&figures.page_pair),
            mean(&figures.object_pair),
            remote(&figures.page_remote_free),
            remote(&figures.object_remote_free)
        );
    }
}

fn measure_with(cpus: usize) -> Figures {
    let figures = Figures::default();
    job::on_cpus(cpus, &|_| {
        let pages = measure(PAIRS, || {
            for _ in 0..PAIRS {
                let frame = frames::alloc_order(0, Constraint::ANY).expect("a frame");
                frames::free_order(black_box(frame), 0).expect("free");
            }
        });
        let objects = measure(PAIRS, || {
            for _ in 0..PAIRS {
                // SAFETY: a non-zero-size layout; freed at once with it.
                unsafe {
                    let object = alloc::alloc::alloc(OBJECT);
                    assert!(!object.is_null());
                    alloc::alloc::dealloc(black_box(object), OBJECT);
                }
            }
        });
        figures.page_pair.fetch_add(pages, Ordering::Relaxed);
        figures.object_pair.fetch_add(objects, Ordering::Relaxed);
    });
    if cpus > 1 {
        cross_cpu_frees(cpus, &figures);
    }
    figures
}

/// Each CPU allocates pages and objects; after a barrier (the end of the
/// job), each frees what the next CPU allocated, timing the frees.
fn cross_cpu_frees(cpus: usize, figures: &Figures) {
    let pages: Vec<Mutex<Vec<PhysAddr>>> = (0..MAX_CPUS).map(|_| Mutex::new(Vec::new())).collect();
    let objects: Vec<Mutex<Vec<usize>>> = (0..MAX_CPUS).map(|_| Mutex::new(Vec::new())).collect();
    let order: Vec<AtomicUsize> = (0..MAX_CPUS)
        .map(|_| AtomicUsize::new(usize::MAX))
        .collect();
    let joined = AtomicUsize::new(0);
    job::on_cpus(cpus, &|cpu| {
        order[joined.fetch_add(1, Ordering::SeqCst)].store(cpu, Ordering::SeqCst);
        let mut mine = Vec::with_capacity(HANDED);
        for _ in 0..HANDED {
            mine.push(frames::alloc_order(0, Constraint::ANY).expect("a frame"));
        }
        *pages[cpu].lock() = mine;
        let mut mine = Vec::with_capacity(HANDED);
        for _ in 0..HANDED {
            // SAFETY: a non-zero-size layout; freed by another CPU below.
            mine.push(unsafe { alloc::alloc::alloc(OBJECT) } as usize);
        }
        *objects[cpu].lock() = mine;
    });
    job::on_cpus(cpus, &|cpu| {
        let slot = (0..cpus)
            .find(|&slot| order[slot].load(Ordering::SeqCst) == cpu)
            .expect("this CPU allocated in the first job");
        let from = order[(slot + 1) % cpus].load(Ordering::SeqCst);
        let theirs = core::mem::take(&mut *pages[from].lock());
        let start = tsc::now_serialised();
        for &frame in &theirs {
            frames::free_order(black_box(frame), 0).expect("free");
        }
        let cost = (tsc::now_serialised() - start) / HANDED as u64;
        figures.page_remote_free.fetch_add(cost, Ordering::Relaxed);
        let theirs = core::mem::take(&mut *objects[from].lock());
        let start = tsc::now_serialised();
        for &object in &theirs {
            // SAFETY: allocated above with OBJECT, freed once, here.
            unsafe { alloc::alloc::dealloc(black_box(object as *mut u8), OBJECT) };
        }
        let cost = (tsc::now_serialised() - start) / HANDED as u64;
        figures
            .object_remote_free
            .fetch_add(cost, Ordering::Relaxed);
    });
}
