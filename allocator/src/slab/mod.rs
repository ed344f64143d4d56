//! Slab allocation of small objects (8 B ..= 2 KiB) on top of the per-CPU
//! page caches.
//!
//! # Size classes
//! [`SIZE_CLASSES`]: 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
//! 768, 1024, 1536, 2048 — sixteen classes instead of the nine powers of
//! two. Every power of two from 32 up gets a 1.5x neighbour (48, 96, 192,
//! 384, 768, 1536), which caps the internal waste at 33% instead of 50%
//! (a 1100-byte object costs 1536 bytes, not 2048; a 40-byte one 48, not
//! 64), and 24 is added because 24-byte objects are everywhere in Rust
//! (`Vec`, `String`, three-word structs) and would otherwise cost 32. A
//! class aligns its objects to the largest power of two dividing its size
//! (24 -> 8, 48 -> 16, 96 -> 32, ...); a stricter alignment moves the
//! request up to the next class that provides it.
//!
//! # Slabs
//! A slab is one buddy block of order 0..=3 (from the per-CPU page cache),
//! the smallest order that holds at least 8 objects with at most 1/16 of
//! it wasted ([`slab_order`]). Its descriptor (free and remote-free
//! bitmaps, owner, counts) lives outside the slab, in registration
//! metadata that is never handed out (`descriptors.rs`), and every page of
//! the slab is tagged with the descriptor's address in the allocator's
//! per-page tag table — nothing is ever looked up from memory a user was
//! given, so no user write, not even through a stale pointer, can forge or
//! corrupt it.
//!
//! # Per-CPU ownership
//! Each slab belongs to the CPU that created it. That CPU's current slab
//! per class is its object cache: allocating and freeing there are plain
//! bitmap loads and stores with interrupts masked. An object freed on
//! another CPU is returned to its owning slab without a lock (see
//! `remote.rs`): an atomic OR in the slab's remote bitmap, and the slab is
//! queued on the owner's incoming list, which the owner folds in on its
//! next slow path (or when drained).
//!
//! # Empty slabs
//! A slab left empty by local or (once collected) remote frees goes back to
//! the page caches, except for [`SLAB_RESERVE`] empty slabs per class and
//! CPU. A drain (on out of memory, or [`Heap::drain`](crate::Heap::drain))
//! returns the reserve too.
//!
//! # Checked frees
//! In release builds: an address outside every slab, a pointer that is not
//! the start of an object, a size class that differs from the slab's, and a
//! second free of the same object are all reported ([`Fault`]) and change
//! nothing. Two frees of one object racing on two CPUs at the same moment
//! are detected when they meet in the remote bitmap, but not if one of them
//! is the owner's local free (that would need an atomic RMW per free).

// Unsafe code is allowed in every submodule but `classes`: slab
// descriptors live in caller-given metadata and are shared between CPUs by
// raw pointers, objects are pointers into the heap's memory, and the fault
// handler is a function pointer kept in an atomic.
#[cfg(all(test, loom))]
#[allow(unsafe_code)]
mod loom_tests;
#[allow(unsafe_code)]
pub(crate) mod remote;

#[cfg(not(loom))]
#[allow(unsafe_code)]
mod cache;
#[cfg(not(loom))]
mod classes;
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub(crate) mod descriptors;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod fault;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod free;

#[cfg(not(loom))]
pub(crate) use cache::Slab;
#[cfg(not(loom))]
pub use classes::{
    MAX_SMALL_SIZE, NR_CLASSES, SIZE_CLASSES, SLAB_RESERVE, class_align, size_class, slab_order,
};
#[cfg(not(loom))]
#[cfg(not(loom))]
pub use fault::{Fault, FaultKind};
