//! Loom model of the per-CPU page cache protocol: masked per-CPU access,
//! batch refill and drain against a locked pool, and a remote drain
//! through `run_on`, on the library's own `PerCpu` and `PcpLists`.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p framekeep --release --lib loom`

use std::cell::Cell;

use super::lists::PcpLists;
use crate::cpu::per_cpu::PerCpu;
use crate::cpu::{CpuLocal, InterruptControl};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};

loom::lazy_static! {
    static ref MASK: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
}
loom::thread_local! {
    static ME: Cell<(usize, u32)> = Cell::new((0, 0));
}

/// Two CPUs; masking = the CPU's flag (as in the host platform).
struct Plat;

fn lock(cpu: usize) {
    while MASK[cpu]
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        loom::thread::yield_now();
    }
}

impl InterruptControl for Plat {
    type Saved = ();
    fn save_and_disable() {
        ME.with(|m| {
            let (id, depth) = m.get();
            if depth == 0 {
                lock(id);
            }
            m.set((id, depth + 1));
        })
    }
    fn restore(_: ()) {
        ME.with(|m| {
            let (id, depth) = m.get();
            if depth == 1 {
                MASK[id].store(false, Ordering::Release);
            }
            m.set((id, depth - 1));
        })
    }
}

// SAFETY: a CPU's masked sections are serialised by its flag; run_on holds
// the target's flag and reports the target's id.
unsafe impl CpuLocal for Plat {
    fn cpu_id() -> usize {
        ME.with(|m| m.get().0)
    }
    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
        let (me, depth) = ME.with(|m| m.get());
        if depth != 0 {
            return false;
        }
        lock(cpu);
        ME.with(|m| m.set((cpu, 1)));
        f();
        ME.with(|m| m.set((me, 0)));
        MASK[cpu].store(false, Ordering::Release);
        true
    }
}

struct World {
    cpus: PerCpu<PcpLists, 2>,
    pool: Mutex<Vec<u64>>,
    out: [AtomicBool; 5],
}

impl World {
    fn alloc(&self) -> Option<u64> {
        let frame = self
            .cpus
            .local::<Plat, _>(|_, lists| {
                lists.alloc(0, 2, |slots| {
                    let mut pool = self.pool.lock().unwrap();
                    let count = slots.len().min(pool.len());
                    for slot in &mut slots[..count] {
                        *slot = pool.pop().unwrap();
                    }
                    count
                })
            })
            .unwrap()?;
        assert!(
            !self.out[frame as usize].swap(true, Ordering::Relaxed),
            "frame {frame} handed out twice"
        );
        Some(frame)
    }
    fn free(&self, frame: u64) {
        assert!(self.out[frame as usize].swap(false, Ordering::Relaxed));
        self.cpus.local::<Plat, _>(|_, lists| {
            lists.free(0, frame, 2, 1, |frames| {
                self.pool.lock().unwrap().extend_from_slice(frames)
            })
        });
    }
    fn drain(&self, cpu: usize) -> bool {
        self.cpus
            .on::<Plat, _>(cpu, |lists| {
                lists.take_all(0, |frames| {
                    self.pool.lock().unwrap().extend_from_slice(frames)
                })
            })
            .is_some()
    }
}

/// CPU 0 refills, frees and allocates while CPU 1 allocates and drains
/// CPU 0's cache: no frame is ever handed out twice, and every frame ends
/// up in the pool exactly once.
#[test]
fn refill_free_and_remote_drain() {
    loom::model(|| {
        let world = Arc::new(World {
            cpus: PerCpu::new(),
            pool: Mutex::new(vec![1, 2, 3, 4]),
            out: std::array::from_fn(|_| AtomicBool::new(false)),
        });
        let world1 = world.clone();
        let cpu1 = loom::thread::spawn(move || {
            ME.with(|m| m.set((1, 0)));
            let frame = world1.alloc();
            assert!(world1.drain(0));
            if let Some(frame) = frame {
                world1.free(frame);
            }
        });
        ME.with(|m| m.set((0, 0)));
        let a = world.alloc().expect("4 frames for 2 CPUs");
        world.free(a);
        let b = world.alloc().expect("frames left");
        world.free(b);
        cpu1.join().unwrap();
        assert!(world.drain(0) && world.drain(1));
        let mut all = world.pool.lock().unwrap().clone();
        all.sort();
        assert_eq!(all, vec![1, 2, 3, 4]);
    });
}
