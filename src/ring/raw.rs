//! [`RawRing`]: a validated view of ring memory, before it is split into
//! its [`Producer`] and [`Consumer`] halves.

use std::marker::PhantomData;
use std::mem::{self, offset_of};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::error::RingError;
use super::layout::{
    check_capacity, slot_size, stamp_offset, Header, RingLayout, HEADER_SIZE, MAGIC, VERSION,
};
use super::{Consumer, Pod, Producer};

/// A ring in caller-provided memory whose header has been written
/// ([`init`](Self::init)) or validated ([`attach`](Self::attach)).
///
/// It is not `Clone`: each side is taken once, with [`split`](Self::split)
/// (both in this process) or [`into_producer`](Self::into_producer) /
/// [`into_consumer`](Self::into_consumer) (the other side lives in a peer,
/// possibly another process).
pub struct RawRing<T: Pod> {
    ring: Shared<T>,
    /// `head` and `tail` as read once at init/attach; `tail - head` is in
    /// `0..=capacity`.
    head: u32,
    tail: u32,
}

// SAFETY: a RawRing is a not-yet-split pair of handles, each of which is
// `Send` (see `Producer` and `Consumer`); it holds no thread-bound state.
unsafe impl<T: Pod> Send for RawRing<T> {}

impl<T: Pod> RawRing<T> {
    /// Writes a fresh, empty ring of `capacity` entries into `mem`: zeroes
    /// the header and entries and fills in the header.
    ///
    /// # Errors
    ///
    /// [`RingError::BadPointer`] if `mem` is null or not aligned to
    /// [`RingLayout::ALIGN`]; [`RingError::TooSmall`] if `len` is below
    /// [`RingLayout::size`]; the errors of [`RingLayout::for_entry`].
    ///
    /// # Safety
    ///
    /// - `mem` is valid for reads and writes of `len` bytes until every
    ///   handle made from this ring is dropped (or owns the memory through
    ///   [`keep_alive`](Self::keep_alive));
    /// - nothing else accesses those bytes while `init` runs;
    /// - afterwards this process touches them only through this ring's
    ///   handles: at most one [`Producer`] and one [`Consumer`] at a time
    ///   in this process (a peer process may do anything, see the
    ///   [module docs](super#trust)).
    pub unsafe fn init(mem: *mut u8, len: usize, capacity: u32) -> Result<Self, RingError> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::init_with_start(mem, len, capacity, 0) }
    }

    /// Like [`init`](Self::init), with `head` and `tail` starting at
    /// `start` instead of 0. Any start is valid (indices wrap); this exists
    /// so tests can cross the `u32` wrap-around quickly.
    ///
    /// # Errors
    ///
    /// As [`init`](Self::init).
    ///
    /// # Safety
    ///
    /// As [`init`](Self::init).
    pub unsafe fn init_with_start(
        mem: *mut u8,
        len: usize,
        capacity: u32,
        start: u32,
    ) -> Result<Self, RingError> {
        let header = check_pointer(mem)?;
        let layout = RingLayout::for_entry::<T>(capacity)?;
        if len < layout.size() {
            return Err(RingError::TooSmall {
                needed: layout.size() as u64,
                len,
            });
        }
        // SAFETY: `mem` is valid for writes of `len >= layout.size()` bytes
        // and nobody else accesses it during init (caller's contract).
        // Zeroing the entries too means no slot is ever uninitialized, even
        // if a peer publishes slots it never wrote.
        unsafe { ptr::write_bytes(mem, 0, layout.size()) };
        // SAFETY: `header` is aligned and in bounds (checked above); the
        // bytes are initialized (zeroed), and all-zero is a valid `Header`.
        let ring = unsafe { Shared::new(header, capacity) };
        // Every stamp starts at `start`, which no index of the first lap
        // (`start + k`, k in `0..capacity`) expects: it waits for `start +
        // k + 1`, and `k + 1 <= capacity < 2^32`. Relaxed: as below.
        for k in 0..capacity {
            ring.stamp(start.wrapping_add(k))
                .store(start, Ordering::Relaxed);
        }
        // Relaxed, all of them: nobody can observe the ring before the
        // caller hands it over (thread spawn, fd passing), and that hand-over
        // orders these stores before the peer's `attach`.
        ring.field(offset_of!(Header, entry_size))
            .store(layout.entry_size() as u32, Ordering::Relaxed);
        ring.field(offset_of!(Header, capacity))
            .store(capacity, Ordering::Relaxed);
        ring.field(offset_of!(Header, version))
            .store(VERSION, Ordering::Relaxed);
        ring.tail().store(start, Ordering::Relaxed);
        ring.head().store(start, Ordering::Relaxed);
        ring.field(offset_of!(Header, magic))
            .store(MAGIC, Ordering::Relaxed);
        Ok(RawRing {
            ring,
            head: start,
            tail: start,
        })
    }

    /// Validates a ring that someone else (possibly an untrusted peer)
    /// wrote into `mem`, and copies its configuration: the header's
    /// configuration is read exactly once and never trusted again.
    ///
    /// Checks: `mem` aligned, `len` holds a header, magic, version, entry
    /// size `== size_of::<T>()`, capacity a nonzero power of two, the whole
    /// layout (computed in `u64`) within `len`, and `tail - head` in
    /// `0..=capacity`.
    ///
    /// # Errors
    ///
    /// The [`RingError`] naming the first check that failed.
    ///
    /// # Safety
    ///
    /// - `mem` is valid for reads and writes of `len` bytes until every
    ///   handle made from this ring is dropped (or owns the memory through
    ///   [`keep_alive`](Self::keep_alive));
    /// - this process touches those bytes only through this ring's handles:
    ///   at most one [`Producer`] and one [`Consumer`] at a time in this
    ///   process, and not while another `RawRing` of the same memory in this
    ///   process plays the same side. What a peer process does is not the
    ///   caller's concern: it can only produce errors or garbage entries.
    pub unsafe fn attach(mem: *mut u8, len: usize) -> Result<Self, RingError> {
        let header = check_pointer(mem)?;
        let (size, align) = (mem::size_of::<T>(), mem::align_of::<T>());
        if size == 0 || align > RingLayout::MAX_ENTRY_ALIGN {
            return Err(RingError::UnsupportedEntry { size, align });
        }
        if len < HEADER_SIZE {
            return Err(RingError::TooSmall {
                needed: HEADER_SIZE as u64,
                len,
            });
        }
        // The header is in bounds (checked above), so its atomic fields may
        // be read; nothing in it is trusted yet. Each configuration word is
        // read once, into a local.
        let config = |offset: usize| {
            // SAFETY: `header` is aligned and valid for reads of HEADER_SIZE
            // bytes (checked above, and the caller's contract); `offset` is
            // that of an `AtomicU32` field.
            let word = unsafe { header_word(header, offset) };
            // Relaxed: the configuration was written before the ring was
            // handed over (thread spawn, fd passing), which orders it before
            // this load; a peer changing it later is not trusted anyway.
            word.load(Ordering::Relaxed)
        };
        let magic = config(offset_of!(Header, magic));
        if magic != MAGIC {
            return Err(RingError::BadMagic { found: magic });
        }
        let version = config(offset_of!(Header, version));
        if version != VERSION {
            return Err(RingError::BadVersion { found: version });
        }
        let entry_size = config(offset_of!(Header, entry_size));
        if entry_size as usize != size {
            return Err(RingError::EntrySizeMismatch {
                found: entry_size,
                expected: size,
            });
        }
        let capacity = config(offset_of!(Header, capacity));
        check_capacity(capacity)?;
        // u64 arithmetic: a slot is below 2^33 and capacity at most 2^31.
        let needed = (HEADER_SIZE as u64)
            .saturating_add(u64::from(capacity).saturating_mul(slot_size(entry_size)));
        if needed > len as u64 {
            return Err(RingError::TooSmall { needed, len });
        }
        // SAFETY: aligned, in bounds (`needed <= len`), valid for reads and
        // writes (caller's contract).
        let ring = unsafe { Shared::new(header, capacity) };
        // Acquire, both: pairs with the Release stores of whichever side
        // already ran (perhaps a previous owner of this side), so entries
        // published before `tail` (and slots freed before `head`) are seen.
        let head = ring.head().load(Ordering::Acquire);
        let tail = ring.tail().load(Ordering::Acquire);
        if tail.wrapping_sub(head) > capacity {
            return Err(RingError::Corrupt {
                index: "tail",
                found: tail,
                min: head,
                max: head.wrapping_add(capacity),
            });
        }
        Ok(RawRing { ring, head, tail })
    }

    /// Keeps `owner` (the mapping or allocation holding the ring) alive
    /// for as long as any handle made from this ring exists.
    pub fn keep_alive(mut self, owner: Arc<dyn Send + Sync>) -> Self {
        self.ring.owner = Some(owner);
        self
    }

    /// Number of entries.
    pub fn capacity(&self) -> u32 {
        self.ring.capacity
    }

    /// Both halves, for use in this process (each may move to its own
    /// thread).
    pub fn split(self) -> (Producer<T>, Consumer<T>) {
        let producer = Producer::new(self.ring.clone(), self.head, self.tail);
        let consumer = Consumer::new(self.ring, self.head, self.tail);
        (producer, consumer)
    }

    /// The producer half; the consumer is the peer.
    pub fn into_producer(self) -> Producer<T> {
        Producer::new(self.ring, self.head, self.tail)
    }

    /// The consumer half; the producer is the peer.
    pub fn into_consumer(self) -> Consumer<T> {
        Consumer::new(self.ring, self.head, self.tail)
    }
}

/// `mem` as a header pointer, if non-null and aligned.
fn check_pointer(mem: *mut u8) -> Result<NonNull<Header>, RingError> {
    let addr = mem as usize;
    match NonNull::new(mem) {
        Some(p) if addr % RingLayout::ALIGN == 0 => Ok(p.cast()),
        _ => Err(RingError::BadPointer { addr }),
    }
}

/// The header's `AtomicU32` at byte `offset`.
///
/// Only atomic fields are ever borrowed, never the whole header: the peer
/// may write any byte at any time, which is sound for atomics only.
///
/// # Safety
///
/// `header` is aligned and valid for reads and writes of [`HEADER_SIZE`]
/// bytes for `'a`; `offset` is the offset of an `AtomicU32` field of
/// [`Header`].
unsafe fn header_word<'a>(header: NonNull<Header>, offset: usize) -> &'a AtomicU32 {
    debug_assert!(offset % 4 == 0 && offset + 4 <= HEADER_SIZE);
    // SAFETY: in bounds and 4-aligned (caller's contract); every bit pattern
    // is a valid `AtomicU32`, and atomics tolerate concurrent writers.
    unsafe { &*header.as_ptr().cast::<u8>().add(offset).cast::<AtomicU32>() }
}

/// What both handles hold: pointers into the ring memory and the local
/// copy of its geometry (never re-read from shared memory).
pub(crate) struct Shared<T> {
    header: NonNull<Header>,
    /// Slot 0, at `HEADER_SIZE`.
    slots: NonNull<u8>,
    /// Bytes per slot ([`slot_size`]); a multiple of `align_of::<T>()`.
    slot_size: usize,
    /// Offset of the stamp in a slot ([`stamp_offset`]); 4-aligned.
    stamp_offset: usize,
    /// Power of two in `1..=MAX_CAPACITY`.
    pub(crate) capacity: u32,
    owner: Option<Arc<dyn Send + Sync>>,
    _entries: PhantomData<T>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            header: self.header,
            slots: self.slots,
            slot_size: self.slot_size,
            stamp_offset: self.stamp_offset,
            capacity: self.capacity,
            owner: self.owner.clone(),
            _entries: PhantomData,
        }
    }
}

impl<T> Shared<T> {
    /// # Safety
    ///
    /// `header` is aligned to [`RingLayout::ALIGN`] and valid for reads and
    /// writes of `HEADER_SIZE + capacity * slot_size(size_of::<T>())` bytes
    /// for as long as this value and its clones exist; `capacity` is a
    /// power of two; `T` is not zero-sized, its size fits a `u32` and
    /// `align_of::<T>() <= RingLayout::MAX_ENTRY_ALIGN`.
    unsafe fn new(header: NonNull<Header>, capacity: u32) -> Self {
        let entry_size = mem::size_of::<T>() as u32;
        // SAFETY: HEADER_SIZE bytes past the header are within the region
        // (caller's contract).
        let slots = unsafe { header.cast::<u8>().add(HEADER_SIZE) };
        Shared {
            header,
            slots,
            // Both fit: the region of `capacity >= 1` slots fits in memory.
            slot_size: slot_size(entry_size) as usize,
            stamp_offset: stamp_offset(entry_size) as usize,
            capacity,
            owner: None,
            _entries: PhantomData,
        }
    }

    /// The header's `AtomicU32` at byte `offset`.
    pub(crate) fn field(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `header` points to live, aligned ring memory (`new`'s
        // contract); callers pass `offset_of!` an `AtomicU32` field.
        unsafe { header_word(self.header, offset) }
    }

    /// `tail`: written by the producer only.
    pub(crate) fn tail(&self) -> &AtomicU32 {
        self.field(offset_of!(Header, tail))
    }

    /// `head`: written by the consumer only.
    pub(crate) fn head(&self) -> &AtomicU32 {
        self.field(offset_of!(Header, head))
    }

    /// `need_wakeup`: written by the consumer only.
    pub(crate) fn need_wakeup(&self) -> &AtomicU32 {
        self.field(offset_of!(Header, need_wakeup))
    }

    /// `futex`: bumped by the producer, waited on by the consumer.
    pub(crate) fn futex(&self) -> &AtomicU32 {
        self.field(offset_of!(Header, futex))
    }

    /// The entry of wrapping index `index`: at the start of its slot.
    pub(crate) fn slot(&self, index: u32) -> *mut T {
        let i = (index & (self.capacity - 1)) as usize;
        // SAFETY: `i < capacity` and the slot array holds `capacity` slots
        // of `slot_size` bytes (`new`'s contract), so the result is in
        // bounds; it is aligned for `T` because HEADER_SIZE and `slot_size`
        // are multiples of `align_of::<T>()`.
        unsafe { self.slots.as_ptr().add(i * self.slot_size).cast::<T>() }
    }

    /// The stamp of wrapping index `index`'s slot: the producer stores
    /// `index + 1` there once the entry is published.
    pub(crate) fn stamp(&self, index: u32) -> &AtomicU32 {
        let i = (index & (self.capacity - 1)) as usize;
        // SAFETY: in bounds as in `slot`, plus `stamp_offset + 4 <=
        // slot_size`; 4-aligned since the slot start is and `stamp_offset`
        // is a multiple of 4. Every bit pattern is a valid `AtomicU32`, and
        // atomics tolerate a peer's concurrent writes. The stamp never
        // overlaps the entry (`stamp_offset >= size_of::<T>()`), so it is
        // never accessed non-atomically.
        unsafe {
            &*self
                .slots
                .as_ptr()
                .add(i * self.slot_size + self.stamp_offset)
                .cast::<AtomicU32>()
        }
    }
}
