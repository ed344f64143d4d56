//! [`Block`]: a block of the per-CPU caches held as a value.
//!
//! An address can be freed by anyone who knows it, so
//! [`PageCaches::free`] must claim the block with an atomic
//! compare-exchange: two threads may free the same address at once. A
//! `Block` cannot be copied, so only one free of it can exist; blocks held
//! by handles are tagged so that no free by address can take them either.
//! Freeing one is therefore plain loads and stores, the cheapest path
//! through the caches. A `Block` of a cached order also carries a
//! reference to its tag, found when it was handed out, so its free needs
//! no lookup: the tag lives in the caches' metadata, which stays put while
//! the block is allocated (its section cannot be removed: `SectionInUse`),
//! and the borrow of the caches keeps them (and so the metadata) alive.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::CpuLocal;
use crate::pcp::PageCaches;
use crate::pcp::lists::PCP_ORDERS;
use crate::pcp::tags::{TAG_CACHED, TAG_HANDLE_OWNED, TAG_NONE, handout_tag};
use crate::types::{Constraint, Error, PAGE_SIZE, PhysAddr};

/// A block of 2^order pages from [`PageCaches::alloc_block`], owned by
/// whoever holds this value; give it back with
/// [`PageCaches::free_block`]. It borrows the caches it came from.
///
/// ```
/// # framekeep::host_cpu_local!(Cpu, 2);
/// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
/// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
/// let b = c.alloc_block(1).unwrap();
/// assert_eq!((b.order(), b.bytes()), (1, 8192));
/// let addr = b.addr();
/// assert_eq!(c.free(addr, 1), Err(framekeep::Error::OwnedByHandle)); // not by address
/// c.free_block(b).unwrap();
/// ```
#[must_use = "a Block leaks unless given back with free_block"]
#[derive(Debug)]
pub struct Block<'a> {
    addr: PhysAddr,
    order: u32,
    /// The caches it came from, by address.
    owner: usize,
    /// Its tag (in the caches' metadata), for orders the caches serve.
    tag: Option<&'a AtomicU64>,
    _caches: PhantomData<&'a ()>,
}

/// Equal when they name the same block of the same caches (the tag
/// reference follows from those).
impl PartialEq for Block<'_> {
    fn eq(&self, other: &Self) -> bool {
        (self.addr, self.order, self.owner) == (other.addr, other.order, other.owner)
    }
}

impl Eq for Block<'_> {}

impl Block<'_> {
    /// Physical address of the first page.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let b = c.alloc_block(0).unwrap();
    /// assert!(b.addr().0 >= 1 << 32);
    /// # c.free_block(b).unwrap();
    /// ```
    pub fn addr(&self) -> PhysAddr {
        self.addr
    }

    /// The block's order: it is 2^order pages, aligned to its size.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let b = c.alloc_block(2).unwrap();
    /// assert_eq!(b.addr().0 % (4 << 12), 0);
    /// # c.free_block(b).unwrap();
    /// ```
    pub fn order(&self) -> u32 {
        self.order
    }

    /// Size in bytes.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let b = c.alloc_block(0).unwrap();
    /// assert_eq!(b.bytes(), 4096);
    /// # c.free_block(b).unwrap();
    /// ```
    pub fn bytes(&self) -> u64 {
        PAGE_SIZE << self.order
    }
}

impl<P: CpuLocal, const N: usize> PageCaches<P, N> {
    /// Allocates a block of 2^`order` pages like [`alloc`](Self::alloc),
    /// as a [`Block`] value: freeing it ([`free_block`](Self::free_block))
    /// needs no atomic claim, and nothing can free it by address.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// let b = c.alloc_block(0).unwrap();
    /// assert_eq!(c.stats().free_pages(), 63);
    /// c.free_block(b).unwrap();
    /// ```
    #[inline]
    pub fn alloc_block(&self, order: u32) -> Result<Block<'_>, Error> {
        let order_index = order as usize;
        let (addr, tag) = if order_index < PCP_ORDERS {
            let (addr, tag) = self.alloc_tagged_as::<TAG_HANDLE_OWNED>(order_index)?;
            // The slow paths tagged it under the buddy lock: find it now.
            (addr, tag.or_else(|| self.tags.get(addr.0)))
        } else {
            (self.buddy_alloc(order, Constraint::ANY, TAG_NONE)?, None)
        };
        Ok(Block {
            addr,
            order,
            owner: (self as *const Self).addr(),
            tag,
            _caches: PhantomData,
        })
    }

    /// Frees a [`Block`] from [`alloc_block`](Self::alloc_block) of these
    /// caches: into the current CPU's cache, with plain loads and stores.
    ///
    /// Errors: [`Error::NotInSection`] for a block of other caches (it is
    /// given back unfreed: leaked); the checks of [`free`](Self::free) for
    /// anything else, which cannot fail for a block of these caches.
    ///
    /// ```
    /// # framekeep::host_cpu_local!(Cpu, 2);
    /// # let c = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// # c.add_section_static(framekeep::PhysAddr(1 << 32), 64, vec![0u64; 128].leak()).unwrap();
    /// # let d = framekeep::PageCaches::<Cpu, 2>::new(framekeep::BuddyAllocator::new());
    /// let b = c.alloc_block(0).unwrap();
    /// assert_eq!(d.free_block(b), Err(framekeep::Error::NotInSection));
    /// ```
    #[inline]
    pub fn free_block(&self, block: Block<'_>) -> Result<(), Error> {
        if block.owner != (self as *const Self).addr() {
            return Err(Error::NotInSection);
        }
        let order_index = block.order as usize;
        if let Some(slot) = block.tag {
            // Only this value could free the block: no claim needed, and
            // the check cannot fail (it came from `alloc_block` of these
            // caches, aligned to its order); kept as a guard.
            let expected = handout_tag(TAG_HANDLE_OWNED, order_index % PCP_ORDERS);
            let actual = slot.load(Ordering::Acquire);
            if actual != expected {
                return self.free_mismatch(block.addr, order_index, actual, expected);
            }
            slot.store(TAG_CACHED, Ordering::Relaxed);
            return self.cache_claimed(block.addr, order_index % PCP_ORDERS);
        }
        if order_index < PCP_ORDERS {
            // A cached order without a tag cannot be handed out; checked.
            return self.free_aligned_as::<false, TAG_HANDLE_OWNED>(block.addr, order_index);
        }
        self.free(block.addr, block.order)
    }
}
