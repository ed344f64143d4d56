//! Loom model of the per-CPU page cache protocol: masked per-CPU access,
//! batch refill and drain against a locked pool, and a remote drain
//! through `run_on`, on the library's own `PerCpu` and `PcpLists`.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p allocator --release --lib loom`

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
            let (id, d) = m.get();
            if d == 0 {
                lock(id);
            }
            m.set((id, d + 1));
        })
    }
    fn restore(_: ()) {
        ME.with(|m| {
            let (id, d) = m.get();
            if d == 1 {
                MASK[id].store(false, Ordering::Release);
            }
            m.set((id, d - 1));
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
        let (me, d) = ME.with(|m| m.get());
        if d != 0 {
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
        let f = self
            .cpus
            .local::<Plat, _>(|_, l| {
                l.alloc(0, 2, |slots| {
                    let mut p = self.pool.lock().unwrap();
                    let n = slots.len().min(p.len());
                    for s in &mut slots[..n] {
                        *s = p.pop().unwrap();
                    }
                    n
                })
            })
            .unwrap()?;
        assert!(
            !self.out[f as usize].swap(true, Ordering::Relaxed),
            "frame {f} handed out twice"
        );
        Some(f)
    }
    fn free(&self, f: u64) {
        assert!(self.out[f as usize].swap(false, Ordering::Relaxed));
        self.cpus.local::<Plat, _>(|_, l| {
            l.free(0, f, 2, 1, |fr| {
                self.pool.lock().unwrap().extend_from_slice(fr)
            })
        });
    }
    fn drain(&self, cpu: usize) -> bool {
        self.cpus
            .on::<Plat, _>(cpu, |l| {
                l.take_all(0, |fr| self.pool.lock().unwrap().extend_from_slice(fr))
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
        let w = Arc::new(World {
            cpus: PerCpu::new(),
            pool: Mutex::new(vec![1, 2, 3, 4]),
            out: std::array::from_fn(|_| AtomicBool::new(false)),
        });
        let w1 = w.clone();
        let t = loom::thread::spawn(move || {
            ME.with(|m| m.set((1, 0)));
            let f = w1.alloc();
            assert!(w1.drain(0));
            if let Some(f) = f {
                w1.free(f);
            }
        });
        ME.with(|m| m.set((0, 0)));
        let a = w.alloc().expect("4 frames for 2 CPUs");
        w.free(a);
        let b = w.alloc().expect("frames left");
        w.free(b);
        t.join().unwrap();
        assert!(w.drain(0) && w.drain(1));
        let mut all = w.pool.lock().unwrap().clone();
        all.sort();
        assert_eq!(all, vec![1, 2, 3, 4]);
    });
}
