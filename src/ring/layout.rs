//! The ring's memory format: the `#[repr(C)]` [`Header`] and the size
//! arithmetic of a whole ring ([`RingLayout`]).
//!
//! This is the wire format two processes agree on. Changing a field, an
//! offset or a meaning bumps [`VERSION`].

use std::alloc::Layout;
use std::mem;
use std::sync::atomic::AtomicU32;

use super::error::RingError;

/// First word of every ring: `b"grnR"` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"grnR");

/// Version of the format described by [`Header`] and [`RingLayout`]
/// (version 2: every slot carries a stamp). [`attach`] refuses any other
/// value.
///
/// [`attach`]: super::RawRing::attach
pub const VERSION: u32 = 2;

/// Cache-line padding unit: 128 bytes, so two hot fields never share a
/// line, nor a pair of adjacent lines that the L2 prefetcher fetches
/// together (Intel's spatial prefetcher, Apple/ARM 128-byte lines).
pub const CACHE_PAD: usize = 128;

/// Largest capacity: with `u32` indices, `tail - head` must distinguish
/// "empty" (0) from "full" (capacity), so capacity fits in 31 bits.
pub const MAX_CAPACITY: u32 = 1 << 31;

/// The ring header, at offset 0 of the ring memory, followed directly by
/// the slot array (see the [module drawing](super)).
///
/// Every field is an atomic: the memory may be shared with a peer process
/// that can write any field at any time, so this crate never forms a
/// reference to a whole `Header` or to non-atomic bytes in it; it only
/// borrows individual atomic fields. The configuration words are written
/// once by [`init`](super::RawRing::init) and read once by
/// [`attach`](super::RawRing::attach), which copies them; they are never
/// re-read.
#[repr(C, align(128))]
pub struct Header {
    /// [`MAGIC`].
    pub magic: AtomicU32,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// `size_of::<T>()` of the entry type, in bytes.
    pub entry_size: AtomicU32,
    /// Number of entries: a power of two in `1..=MAX_CAPACITY`.
    pub capacity: AtomicU32,
    _pad0: [u8; CACHE_PAD - 16],
    /// Index of the next entry the producer will write. Written by the
    /// producer only; wrapping, in `0..2^32`; `tail - head` (wrapping) is in
    /// `0..=capacity`.
    pub tail: AtomicU32,
    _pad1: [u8; CACHE_PAD - 4],
    /// Index of the next entry the consumer will read. Written by the
    /// consumer only; wrapping, in `0..2^32`.
    pub head: AtomicU32,
    _pad2: [u8; CACHE_PAD - 4],
    /// 1 while the consumer is (about to be) asleep on [`futex`](Self::futex)
    /// and wants [`notify`](super::Producer::notify) to wake it; else 0.
    /// Written by the consumer only.
    pub need_wakeup: AtomicU32,
    /// Futex word: bumped (wrapping) by the producer before each wake, so a
    /// consumer whose `FUTEX_WAIT` races with the wake sees a changed value
    /// and does not sleep. Written by the producer only.
    pub futex: AtomicU32,
    _pad3: [u8; CACHE_PAD - 8],
}

/// Size of [`Header`]: four 128-byte lines. Slots start at this offset.
pub const HEADER_SIZE: usize = mem::size_of::<Header>();

const _: () = {
    assert!(HEADER_SIZE == 4 * CACHE_PAD);
    assert!(mem::align_of::<Header>() == CACHE_PAD);
    assert!(mem::offset_of!(Header, magic) == 0);
    assert!(mem::offset_of!(Header, version) == 4);
    assert!(mem::offset_of!(Header, entry_size) == 8);
    assert!(mem::offset_of!(Header, capacity) == 12);
    assert!(mem::offset_of!(Header, tail) == CACHE_PAD);
    assert!(mem::offset_of!(Header, head) == 2 * CACHE_PAD);
    assert!(mem::offset_of!(Header, need_wakeup) == 3 * CACHE_PAD);
    assert!(mem::offset_of!(Header, futex) == 3 * CACHE_PAD + 4);
};

/// Size and alignment of a ring of `capacity` entries of `entry_size`
/// bytes: [`HEADER_SIZE`] bytes of header, then `capacity` slots of
/// [`slot_size`](Self::slot_size) bytes, the whole aligned to
/// [`RingLayout::ALIGN`].
///
/// A slot is the entry at offset 0 followed by its stamp, a `u32` at
/// [`stamp_offset`](Self::stamp_offset) (`entry_size` rounded up to 4).
/// A slot of up to 64 bytes is padded to a power of two, so no slot
/// straddles a 64-byte line and the consumer's one read of a stamp brings
/// in the entry with it; a larger one to a multiple of [`CACHE_PAD`].
/// Both depend on `entry_size` alone, so two processes compute the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    capacity: u32,
    entry_size: u32,
    slot_size: usize,
    layout: Layout,
}

impl RingLayout {
    /// Alignment the ring memory must have (that of [`Header`]). Page-aligned
    /// mappings always satisfy it.
    pub const ALIGN: usize = CACHE_PAD;

    /// Largest entry alignment supported: entries start at
    /// [`HEADER_SIZE`], a multiple of this.
    pub const MAX_ENTRY_ALIGN: usize = CACHE_PAD;

    /// The layout of a ring of `capacity` entries of `entry_size` bytes.
    ///
    /// # Errors
    ///
    /// [`RingError::BadCapacity`] unless `capacity` is a power of two in
    /// `1..=MAX_CAPACITY`; [`RingError::UnsupportedEntry`] for a zero or
    /// `> u32::MAX` entry size; [`RingError::TooLarge`] if the total does not
    /// fit the address space.
    pub fn new(capacity: u32, entry_size: usize) -> Result<Self, RingError> {
        check_capacity(capacity)?;
        let entry_size32 = match u32::try_from(entry_size) {
            Ok(s) if s > 0 => s,
            _ => {
                return Err(RingError::UnsupportedEntry {
                    size: entry_size,
                    align: 1,
                })
            }
        };
        let slot = slot_size(entry_size32);
        // u64: a slot is below 2^33 and capacity at most 2^31, so the
        // product and the sum stay below 2^64; saturate all the same.
        let bytes = (HEADER_SIZE as u64).saturating_add(u64::from(capacity).saturating_mul(slot));
        let layout = usize::try_from(bytes)
            .ok()
            .and_then(|size| Layout::from_size_align(size, Self::ALIGN).ok())
            .ok_or(RingError::TooLarge { bytes })?;
        Ok(RingLayout {
            capacity,
            entry_size: entry_size32,
            // Fits: it is at most `bytes`, which fit a usize above.
            slot_size: slot as usize,
            layout,
        })
    }

    /// The layout of a ring of `capacity` entries of type `T`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), plus [`RingError::UnsupportedEntry`] if `T`
    /// is zero-sized or aligned to more than [`MAX_ENTRY_ALIGN`](Self::MAX_ENTRY_ALIGN).
    pub fn for_entry<T>(capacity: u32) -> Result<Self, RingError> {
        let (size, align) = (mem::size_of::<T>(), mem::align_of::<T>());
        if size == 0 || align > Self::MAX_ENTRY_ALIGN {
            return Err(RingError::UnsupportedEntry { size, align });
        }
        Self::new(capacity, size)
    }

    /// Total bytes of a ring of `capacity` entries of `entry_size` bytes;
    /// shorthand for `RingLayout::new(capacity, entry_size)?.size()`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn bytes(capacity: u32, entry_size: usize) -> Result<usize, RingError> {
        Self::new(capacity, entry_size).map(|l| l.size())
    }

    /// Total bytes: header plus slots.
    pub fn size(&self) -> usize {
        self.layout.size()
    }

    /// Required alignment of the ring memory ([`Self::ALIGN`]).
    pub fn align(&self) -> usize {
        Self::ALIGN
    }

    /// Number of entries.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Size of one entry in bytes.
    pub fn entry_size(&self) -> usize {
        self.entry_size as usize
    }

    /// Bytes from one slot to the next: the entry, its stamp, padding.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Offset of a slot's stamp from the start of the slot.
    pub fn stamp_offset(&self) -> usize {
        stamp_offset(self.entry_size) as usize
    }

    /// Offset of slot 0 from the start of the ring memory.
    pub fn entries_offset(&self) -> usize {
        HEADER_SIZE
    }

    /// The same size and alignment as a [`std::alloc::Layout`].
    pub fn to_alloc_layout(&self) -> Layout {
        self.layout
    }
}

/// Offset of the stamp in a slot: the entry size rounded up to 4 (`u64`:
/// no overflow for any `u32` size).
pub(crate) fn stamp_offset(entry_size: u32) -> u64 {
    (u64::from(entry_size) + 3) & !3
}

/// Bytes per slot for entries of `entry_size` bytes: entry and stamp,
/// padded to a power of two up to 64 bytes, else to a multiple of
/// [`CACHE_PAD`]. Either way a multiple of the entry's alignment (which
/// divides its size and is at most `CACHE_PAD`). Below 2^33.
pub(crate) fn slot_size(entry_size: u32) -> u64 {
    let raw = stamp_offset(entry_size) + 4;
    if raw <= 64 {
        raw.next_power_of_two()
    } else {
        raw.next_multiple_of(CACHE_PAD as u64)
    }
}

/// Capacity is a power of two in `1..=MAX_CAPACITY`.
pub(crate) fn check_capacity(capacity: u32) -> Result<(), RingError> {
    if capacity.is_power_of_two() && capacity <= MAX_CAPACITY {
        Ok(())
    } else {
        Err(RingError::BadCapacity { capacity })
    }
}
