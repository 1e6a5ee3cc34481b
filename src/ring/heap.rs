//! Heap-backed rings: [`channel`] for in-process use and tests.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

use super::error::RingError;
use super::layout::RingLayout;
use super::{Consumer, Pod, Producer, RawRing};

/// A ring of `capacity` entries in a fresh heap allocation, split into its
/// two halves. The memory is freed when both halves are dropped.
///
/// # Errors
///
/// [`RingError::BadCapacity`] unless `capacity` is a power of two in
/// `1..=MAX_CAPACITY`; [`RingError::UnsupportedEntry`] or
/// [`RingError::TooLarge`] as for [`RingLayout::for_entry`].
///
/// ```
/// let (mut tx, mut rx) = green::ring::channel::<u64>(8)?;
/// tx.push(7).unwrap();
/// assert_eq!(rx.pop()?, Some(7));
/// assert_eq!(rx.pop()?, None);
/// # Ok::<(), green::ring::RingError>(())
/// ```
pub fn channel<T: Pod>(capacity: u32) -> Result<(Producer<T>, Consumer<T>), RingError> {
    channel_with_start(capacity, 0)
}

/// Like [`channel`], with `head` and `tail` starting at `start` (see
/// [`RawRing::init_with_start`]); for tests of index wrap-around.
///
/// # Errors
///
/// As [`channel`].
pub fn channel_with_start<T: Pod>(
    capacity: u32,
    start: u32,
) -> Result<(Producer<T>, Consumer<T>), RingError> {
    let layout = RingLayout::for_entry::<T>(capacity)?;
    let region = HeapRegion::new(layout.to_alloc_layout());
    // SAFETY: the region is valid for reads and writes of `layout.size()`
    // bytes, aligned to RingLayout::ALIGN, and nothing else can reach it;
    // the Arc handed to both halves keeps it alive as long as either
    // exists; each half is taken exactly once by `split`.
    let raw = unsafe {
        RawRing::<T>::init_with_start(region.ptr.as_ptr(), region.layout.size(), capacity, start)?
    };
    Ok(raw.keep_alive(Arc::new(region)).split())
}

/// An owned, zeroed heap allocation.
struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain memory owned by this value; it is accessed
// only through the ring handles, which synchronize with atomics, and freed
// once, in `drop`, from whichever thread drops the last handle.
unsafe impl Send for HeapRegion {}
// SAFETY: `&HeapRegion` gives no access to the memory at all.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    /// `layout` has a nonzero size (a ring has a header).
    fn new(layout: Layout) -> Self {
        debug_assert!(layout.size() > 0);
        // SAFETY: `layout` has a nonzero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        HeapRegion { ptr, layout }
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
