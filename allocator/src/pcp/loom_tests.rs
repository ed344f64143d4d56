//! Loom model of the per-CPU page cache protocol on the library's own
//! `TryPerCpu` and `PcpLists`: fast paths guarded by the in-use flag (no
//! masking), batch refill and drain against a locked pool, and a remote
//! drain through `run_on` that may interrupt the target's fast path.
//!
//! The model's `run_on` is an IPI: it posts the closure to the target
//! CPU's mailbox and waits; the target's own thread runs it at its next
//! *interrupt point* (the model's places where an interrupt can land:
//! inside each fast path, with the flag set, and between them), unless it
//! is masked there. So a drain that lands inside a fast path finds the
//! flag set, reports busy, and `TryPerCpu::on` posts it again; the target
//! runs it at a later point, after its fast path ended.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p framekeep --release --lib loom`

use std::cell::Cell;

use super::lists::PcpLists;
use crate::cpu::try_per_cpu::TryPerCpu;
use crate::cpu::{CpuLocal, InterruptControl};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};

/// A closure posted to a CPU, and whether it has run.
struct Mailbox {
    job: Mutex<Option<Job>>,
    done: AtomicBool,
    /// The CPU's thread has exited: `run_on` calls it directly (as a
    /// kernel does for an offline CPU).
    offline: AtomicBool,
}

/// The closure of a `run_on` waiting for its target.
struct Job(*mut (dyn FnMut() + 'static));
// SAFETY: the poster waits until the job has run (`done`), so the closure
// outlives its use on the target's thread; only one thread uses it at a time.
unsafe impl Send for Job {}

loom::lazy_static! {
    static ref MAIL: [Mailbox; 2] = std::array::from_fn(|_| Mailbox {
        job: Mutex::new(None),
        done: AtomicBool::new(false),
        offline: AtomicBool::new(false),
    });
}
loom::thread_local! {
    /// (CPU id, masking depth, run_on calls made).
    static ME: Cell<(usize, u32, usize)> = Cell::new((0, 0, 0));
}

/// Executions in which some drain needed more than one `run_on` (outside
/// loom: counted across all the executions it explores).
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Plat;

impl Plat {
    /// Where an interrupt may land on the calling CPU: runs a posted
    /// `run_on` closure, as this CPU and masked, unless already masked.
    fn interrupt_point() {
        let (cpu, depth, calls) = ME.with(Cell::get);
        if depth != 0 {
            return;
        }
        let job = MAIL[cpu].job.lock().unwrap().take();
        if let Some(Job(f)) = job {
            ME.with(|m| m.set((cpu, 1, calls)));
            // SAFETY: see `Job`: the poster is waiting for `done`.
            unsafe { (*f)() };
            ME.with(|m| m.set((cpu, 0, calls)));
            MAIL[cpu].done.store(true, Ordering::Release);
        }
    }
}

impl InterruptControl for Plat {
    type Saved = ();
    fn save_and_disable() {
        ME.with(|m| {
            let (id, depth, calls) = m.get();
            m.set((id, depth + 1, calls));
        })
    }
    fn restore(_: ()) {
        ME.with(|m| {
            let (id, depth, calls) = m.get();
            m.set((id, depth - 1, calls));
        })
    }
}

// SAFETY: each thread is its CPU for good (pin: the default no-op); a
// `run_on` closure runs on the target's thread, masked, at an interrupt
// point: between two steps of that CPU's code, to completion, and the
// poster sees its effects (release/acquire on `done`); an exited CPU's
// closure runs on the caller as that CPU, which nothing else runs as.
unsafe impl CpuLocal for Plat {
    fn cpu_id() -> usize {
        ME.with(|m| m.get().0)
    }
    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
        let (me, depth, calls) = ME.with(Cell::get);
        if depth != 0 {
            return false;
        }
        ME.with(|m| m.set((me, depth, calls + 1)));
        let mail = &MAIL[cpu];
        if mail.offline.load(Ordering::Acquire) {
            ME.with(|m| m.set((cpu, 1, calls + 1)));
            f();
            ME.with(|m| m.set((me, 0, calls + 1)));
            return true;
        }
        // SAFETY: only the lifetime is erased; we wait for `done` below.
        let f: *mut (dyn FnMut() + 'static) = unsafe { std::mem::transmute(f) };
        mail.done.store(false, Ordering::Relaxed);
        *mail.job.lock().unwrap() = Some(Job(f));
        while !mail.done.load(Ordering::Acquire) {
            loom::thread::yield_now();
        }
        true
    }
}

struct World {
    cpus: TryPerCpu<PcpLists, 2>,
    pool: Mutex<Vec<u64>>,
    out: [AtomicBool; 5],
    /// Drains of CPU 0 done by CPU 1.
    drained: AtomicUsize,
}

impl World {
    fn refill(&self, slots: &mut [u64]) -> usize {
        let mut pool = self.pool.lock().unwrap();
        let count = slots.len().min(pool.len());
        for slot in &mut slots[..count] {
            *slot = pool.pop().unwrap();
        }
        count
    }

    /// The fast path (with an interrupt point inside), or the pool.
    fn alloc(&self) -> Option<u64> {
        let cached = self.cpus.local::<Plat, _>(|_, lists| {
            Plat::interrupt_point();
            lists.alloc(0, 2, |slots| self.refill(slots))
        });
        Plat::interrupt_point();
        let frame = match cached {
            Some(frame) => frame?,
            // Busy (an interrupt handler's allocation): straight from the pool.
            None => self.pool.lock().unwrap().pop()?,
        };
        assert!(
            !self.out[frame as usize].swap(true, Ordering::Relaxed),
            "frame {frame} handed out twice"
        );
        Some(frame)
    }

    fn free(&self, frame: u64) {
        assert!(self.out[frame as usize].swap(false, Ordering::Relaxed));
        let cached = self.cpus.local::<Plat, _>(|_, lists| {
            Plat::interrupt_point();
            lists.free(0, frame, 2, 1, |frames| {
                self.pool.lock().unwrap().extend_from_slice(frames)
            })
        });
        if cached.is_none() {
            self.pool.lock().unwrap().push(frame);
        }
        Plat::interrupt_point();
    }

    /// Drains `cpu`; records whether it took more than one `run_on`.
    fn drain(&self, cpu: usize) -> bool {
        let before = ME.with(|m| m.get().2);
        let done = self
            .cpus
            .on::<Plat, _>(cpu, |lists| {
                lists.take_all(0, |frames| {
                    self.pool.lock().unwrap().extend_from_slice(frames)
                })
            })
            .is_some();
        if ME.with(|m| m.get().2) - before > 1 {
            RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        done
    }
}

/// CPU 0 refills, frees and allocates (interruptible inside each fast
/// path) while CPU 1 allocates, drains CPU 0's cache through `run_on` and
/// frees: no frame is ever handed out twice, the drain always succeeds
/// (retrying when it lands inside a fast path), and every frame ends up in
/// the pool exactly once. Some explored execution must have retried.
#[test]
fn refill_free_and_remote_drain() {
    RETRIED.store(0, std::sync::atomic::Ordering::Relaxed);
    loom::model(|| {
        for mail in MAIL.iter() {
            mail.offline.store(false, Ordering::Relaxed);
            *mail.job.lock().unwrap() = None;
        }
        let world = Arc::new(World {
            cpus: TryPerCpu::new(),
            pool: Mutex::new(vec![1, 2, 3, 4]),
            out: std::array::from_fn(|_| AtomicBool::new(false)),
            drained: AtomicUsize::new(0),
        });
        let world1 = world.clone();
        let cpu1 = loom::thread::spawn(move || {
            ME.with(|m| m.set((1, 0, 0)));
            let frame = world1.alloc();
            assert!(world1.drain(0), "the drain of CPU 0 gets through");
            world1.drained.store(1, Ordering::Release);
            if let Some(frame) = frame {
                world1.free(frame);
            }
            MAIL[1].offline.store(true, Ordering::Release);
        });
        ME.with(|m| m.set((0, 0, 0)));
        let a = world.alloc().expect("4 frames for 2 CPUs");
        world.free(a);
        let b = world.alloc().expect("frames left");
        world.free(b);
        // CPU 0 idles, interruptible, until CPU 1's drain got through.
        while world.drained.load(Ordering::Acquire) == 0 {
            Plat::interrupt_point();
            loom::thread::yield_now();
        }
        cpu1.join().unwrap();
        assert!(world.drain(0) && world.drain(1));
        let mut all = world.pool.lock().unwrap().clone();
        all.sort();
        assert_eq!(all, vec![1, 2, 3, 4]);
    });
    assert!(
        RETRIED.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no explored execution had a drain land inside a fast path"
    );
}
