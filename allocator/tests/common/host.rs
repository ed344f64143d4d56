//! Host memory and the host CPU stand-in shared by the cache/slab/heap tests.
#![allow(dead_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};

framekeep::host_cpu_local!(pub HostCpu, 32);

/// Number of CPU slots the tests' heaps have.
pub const CPUS: usize = 32;

pub type TestHeap = framekeep::Heap<HostCpu, CPUS>;
pub type TestCaches = framekeep::PageCaches<HostCpu, CPUS>;

/// Page-aligned host memory standing in for physical RAM (offset 0).
pub struct Ram {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: plain memory.
unsafe impl Send for Ram {}
// SAFETY: plain memory.
unsafe impl Sync for Ram {}

impl Ram {
    pub fn new(pages: usize, align: usize) -> Ram {
        let layout = Layout::from_size_align(pages * 4096, align.max(4096)).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Ram { ptr, layout }
    }
    pub fn start(&self) -> u64 {
        self.ptr as u64
    }
    pub fn pages(&self) -> u64 {
        (self.layout.size() / 4096) as u64
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A heap over fresh host memory (the heap must not outlive the Ram: keep
/// both in the returned tuple, heap first so it is dropped first).
pub fn heap(pages: usize) -> (Box<TestHeap>, Ram) {
    heap_with(pages, framekeep::PcpConfig::DEFAULT)
}

pub fn heap_with(pages: usize, cfg: framekeep::PcpConfig) -> (Box<TestHeap>, Ram) {
    let ram = Ram::new(pages, 1 << 21);
    let h = Box::new(TestHeap::with_config(cfg));
    // SAFETY: `ram` is ours and outlives the heap in every test.
    unsafe {
        h.add_memory(framekeep::PhysAddr(ram.start()), ram.pages())
            .unwrap()
    };
    (h, ram)
}

/// Runs `f` as CPU `cpu` (from this thread), like an IPI would.
pub fn as_cpu<R>(cpu: usize, f: impl FnOnce() -> R) -> R {
    use framekeep::CpuLocal;
    let mut f = Some(f);
    let mut out = None;
    assert!(HostCpu::run_on(cpu, &mut || out = Some((f.take().unwrap())())));
    out.unwrap()
}

pub fn my_cpu() -> usize {
    <HostCpu as framekeep::CpuLocal>::cpu_id()
}
