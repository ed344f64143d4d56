//! The heap peers, each behind `GlobalAlloc`, and ours.

use std::alloc::{GlobalAlloc, Layout, alloc, dealloc};
use std::cell::{Cell, UnsafeCell};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering, compiler_fence};

use buddy_slab_allocator::interface::BuddySlabIf;
use buddy_slab_allocator::{GlobalAllocator, PerCpuSlab, SlabPoolTrait, StaticSlabPool};
use framekeep::{CpuLocal, Heap, InterruptControl, PhysAddr};

/// Bytes of memory each allocator manages.
pub const REGION: usize = 256 << 20;

/// Host memory for one allocator, 2 MiB aligned, leaked (allocators live
/// for the whole run).
pub fn region() -> &'static mut [u8] {
    let l = Layout::from_size_align(REGION, 2 << 20).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { alloc(l) };
    assert!(!p.is_null());
    // SAFETY: fresh allocation of REGION bytes, never freed.
    unsafe { std::slice::from_raw_parts_mut(p, REGION) }
}

#[allow(dead_code)]
pub fn free_region(r: &'static mut [u8]) {
    // SAFETY: allocated by `region` with this layout.
    unsafe {
        dealloc(
            r.as_mut_ptr(),
            Layout::from_size_align(REGION, 2 << 20).unwrap(),
        )
    }
}

// ---------------------------------------------------------------------------
// Ours
// ---------------------------------------------------------------------------

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
    static MASKED: Cell<bool> = const { Cell::new(false) };
}

/// Sets the calling thread's CPU id (each benchmark thread its own).
pub fn set_cpu(id: usize) {
    CPU.with(|c| c.set(id));
}

/// The benchmark's platform: the CPU id is a thread-local, and "masking
/// interrupts" saves a thread-local "masked" flag, sets it and later
/// restores the saved value, with compiler fences: the shape of a kernel's
/// `pushfq; cli` ... `popfq` (the host cannot `cli`; on hardware those
/// instructions cost more, 7..37 cycles per peers.md).
pub struct BenchCpu;

impl InterruptControl for BenchCpu {
    type Saved = bool;
    #[inline(always)]
    fn save_and_disable() -> bool {
        let was = MASKED.with(|m| m.replace(true));
        compiler_fence(Ordering::SeqCst);
        was
    }
    #[inline(always)]
    fn restore(was: bool) {
        compiler_fence(Ordering::SeqCst);
        MASKED.with(|m| m.set(was));
    }
}

// SAFETY: every benchmark thread sets a distinct id before allocating;
// run_on only runs on the current CPU, outside masked sections.
unsafe impl CpuLocal for BenchCpu {
    #[inline(always)]
    fn cpu_id() -> usize {
        CPU.with(|c| c.get())
    }
    fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
        if cpu != Self::cpu_id() || MASKED.with(|m| m.get()) {
            return false;
        }
        let was = Self::save_and_disable();
        f();
        Self::restore(was);
        true
    }
}

pub type Ours = Heap<BenchCpu, 2>;

pub fn ours() -> &'static Ours {
    let h: &'static Ours = Box::leak(Box::new(Ours::new()));
    let r = region();
    // SAFETY: the region is leaked and only used by `h`; offset 0.
    unsafe {
        h.add_memory(PhysAddr(r.as_ptr() as u64), (REGION / 4096) as u64)
            .unwrap()
    };
    h
}

// ---------------------------------------------------------------------------
// buddy-slab-allocator 0.6.1: GlobalAllocator with its per-CPU slab pool
// ---------------------------------------------------------------------------

fn bsa_cpu() -> usize {
    CPU.with(|c| c.get())
}

static BSA_POOL: StaticSlabPool<4096, 2> =
    StaticSlabPool::new([PerCpuSlab::new(0), PerCpuSlab::new(1)], bsa_cpu);

struct BsaPlatform;

#[ax_crate_interface::impl_interface]
impl BuddySlabIf for BsaPlatform {
    fn virt_to_phys(vaddr: usize) -> usize {
        vaddr
    }
    fn slab_pool() -> &'static dyn SlabPoolTrait {
        &BSA_POOL
    }
}

/// buddy-slab-allocator's `GlobalAllocator` locks through ax-sync, whose
/// platform hooks we provide: a plain test-and-set spin lock (the host has
/// no interrupts to mask).
struct BsaSpin;

#[ax_crate_interface::impl_interface]
impl ax_sync::interface::SpinOps for BsaSpin {
    fn acquire(
        locked: &AtomicBool,
        _m: &ax_sync::interface::LockMetadata,
        _addr: usize,
        _ctx: u8,
        _sub: u32,
        _caller: &'static std::panic::Location<'static>,
    ) -> ax_sync::interface::ContextState {
        while locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while locked.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
        ax_sync::interface::ContextState::new(0, 0)
    }
    fn try_acquire(
        locked: &AtomicBool,
        _m: &ax_sync::interface::LockMetadata,
        _addr: usize,
        _ctx: u8,
        _sub: u32,
        _caller: &'static std::panic::Location<'static>,
    ) -> ax_sync::interface::AcquireResult {
        let ok = locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        ax_sync::interface::AcquireResult::new(ok, ax_sync::interface::ContextState::new(0, 0))
    }
    fn release(
        locked: &AtomicBool,
        _addr: usize,
        _ctx: u8,
        _state: ax_sync::interface::ContextState,
    ) {
        locked.store(false, Ordering::Release);
    }
    fn force_release(locked: &AtomicBool, _addr: usize, _ctx: u8) {
        locked.store(false, Ordering::Release);
    }
    fn is_locked(locked: &AtomicBool) -> bool {
        locked.load(Ordering::Relaxed)
    }
}

/// The process-wide buddy-slab-allocator (it allows one live instance).
pub fn bsa() -> &'static GlobalAllocator<4096> {
    static BSA: GlobalAllocator<4096> = GlobalAllocator::new();
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // SAFETY: the region is leaked and used only by BSA.
        unsafe { BSA.init(region()).expect("bsa init") };
    });
    &BSA
}

// ---------------------------------------------------------------------------
// talc 5, linked_list_allocator 0.10, buddy_system_allocator::Heap
// ---------------------------------------------------------------------------

pub type Talc = talc::TalcLock<spinning_top::RawSpinlock, talc::source::Claim>;

pub fn talc() -> &'static Talc {
    let r = region();
    // SAFETY: the region is leaked and used only by this Talc.
    let claim = unsafe { talc::source::Claim::new(r.as_mut_ptr(), r.len()) };
    Box::leak(Box::new(Talc::new(claim)))
}

/// A test-and-test-and-set spin lock, for the peers that ship without one
/// in our configuration.
pub struct Spin<T> {
    locked: AtomicBool,
    inner: UnsafeCell<T>,
}

// SAFETY: `inner` is only accessed with `locked` held.
unsafe impl<T: Send> Sync for Spin<T> {}

impl<T> Spin<T> {
    pub fn new(t: T) -> Self {
        Spin {
            locked: AtomicBool::new(false),
            inner: UnsafeCell::new(t),
        }
    }
    #[inline(always)]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
        // SAFETY: we hold the lock.
        let r = f(unsafe { &mut *self.inner.get() });
        self.locked.store(false, Ordering::Release);
        r
    }
}

pub type Lla = Spin<linked_list_allocator::Heap>;

pub fn lla() -> &'static Lla {
    let r = region();
    let mut h = linked_list_allocator::Heap::empty();
    // SAFETY: the region is leaked and used only by this heap.
    unsafe { h.init(r.as_mut_ptr(), r.len()) };
    Box::leak(Box::new(Spin::new(h)))
}

// SAFETY: forwards to the locked heap.
unsafe impl GlobalAlloc for Lla {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.with(|h| {
            h.allocate_first_fit(l)
                .map_or(std::ptr::null_mut(), |p| p.as_ptr())
        })
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: GlobalAlloc's contract.
        self.with(|h| unsafe { h.deallocate(NonNull::new_unchecked(p), l) })
    }
}

pub type Bsys = Spin<buddy_system_allocator::Heap<32>>;

pub fn bsys() -> &'static Bsys {
    let r = region();
    let mut h = buddy_system_allocator::Heap::<32>::new();
    // SAFETY: the region is leaked and used only by this heap.
    unsafe { h.init(r.as_mut_ptr() as usize, r.len()) };
    Box::leak(Box::new(Spin::new(h)))
}

// SAFETY: forwards to the locked heap.
unsafe impl GlobalAlloc for Bsys {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.with(|h| h.alloc(l).map_or(std::ptr::null_mut(), |p| p.as_ptr()))
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: GlobalAlloc's contract.
        self.with(|h| unsafe { h.dealloc(NonNull::new_unchecked(p), l) })
    }
}
