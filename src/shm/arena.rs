//! [`Arena`]: the variable-size allocator of one arena area, kept by the
//! arena's owner in its private heap.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;

use super::mem::{ArenaMem, OutOfBounds, ARENA_ALIGN};

/// Allocation granularity and alignment: every allocation starts at a
/// multiple of this offset and occupies a multiple of this many bytes.
pub const GRANULE: u64 = ARENA_ALIGN as u64;

/// One allocation: `offset .. offset + len`, relative to the arena's
/// start. The space reserved is `len` rounded up to [`GRANULE`] (at least
/// one granule, so a zero-length allocation has an offset of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Alloc {
    /// Start, a multiple of [`GRANULE`].
    pub offset: u64,
    /// Bytes asked for.
    pub len: u64,
}

/// The arena has no free range large enough; nothing was allocated.
/// Whether to wait for space or fail the call is the IPC layer's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaFull {
    /// Bytes asked for.
    pub requested: u64,
    /// Free bytes in all (possibly fragmented).
    pub free: u64,
    /// The largest free range.
    pub largest: u64,
    /// Size of the arena.
    pub capacity: u64,
}

impl fmt::Display for ArenaFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shm arena full: cannot allocate {} bytes ({} of {} bytes free, largest free range {})",
            self.requested, self.free, self.capacity, self.largest
        )
    }
}

impl std::error::Error for ArenaFull {}

impl From<ArenaFull> for io::Error {
    /// [`io::ErrorKind::OutOfMemory`], keeping the [`ArenaFull`].
    fn from(e: ArenaFull) -> io::Error {
        io::Error::new(io::ErrorKind::OutOfMemory, e)
    }
}

/// An offset (and length) that is not an outstanding allocation: a bogus
/// or stale descriptor, or a double free. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownAlloc {
    /// The offset given.
    pub offset: u64,
    /// The length given (0 for [`Arena::free`]).
    pub len: u64,
    /// Whether this was a [`free`](Arena::free) (else a
    /// [`lookup`](Arena::lookup)).
    pub freeing: bool,
}

impl fmt::Display for UnknownAlloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.freeing {
            write!(
                f,
                "shm arena: no outstanding allocation starts at offset {:#x} \
                 (bogus offset or double free)",
                self.offset
            )
        } else {
            write!(
                f,
                "shm arena: range at offset {:#x}, len {:#x} is not within an outstanding allocation",
                self.offset, self.len
            )
        }
    }
}

impl std::error::Error for UnknownAlloc {}

impl From<UnknownAlloc> for io::Error {
    /// [`io::ErrorKind::InvalidData`]: the descriptor is not one we handed
    /// out.
    fn from(e: UnknownAlloc) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A variable-size allocator over one arena, used only by the side that
/// owns that arena (the client for the client arena, the server for the
/// server arena).
///
/// Its bookkeeping lives in this value, in the owner's private heap, never
/// in shared memory: the peer cannot corrupt it, and every offset the peer
/// hands back is checked against it ([`free`](Self::free),
/// [`lookup`](Self::lookup)) rather than trusted.
///
/// Best fit over a free list kept coalesced: free ranges are indexed by
/// offset (to merge neighbours on free) and by size (to find the smallest
/// range that fits). Allocation and free are `O(log n)` in the number of
/// free ranges and outstanding allocations.
///
/// Who writes where: the owner writes the bytes of its allocations (with
/// [`copy_to`](Self::copy_to) or the unsafe slices of
/// [`mem`](Self::mem)), then publishes a descriptor; the peer only reads
/// the bytes of an allocation it was handed a descriptor for, until it
/// hands that descriptor back; then the owner frees it. See [`ArenaMem`]
/// for why reads and writes go through copies.
pub struct Arena {
    mem: ArenaMem,
    /// Usable bytes: the arena's length rounded down to [`GRANULE`].
    capacity: u64,
    /// Free ranges, offset -> length; never two adjacent (coalesced), all
    /// lengths nonzero multiples of GRANULE.
    free_by_offset: BTreeMap<u64, u64>,
    /// The same ranges as `(length, offset)`, for best fit.
    free_by_size: BTreeSet<(u64, u64)>,
    /// Outstanding allocations, offset -> (requested len, reserved len).
    live: BTreeMap<u64, (u64, u64)>,
    /// Sum of the free ranges' lengths.
    free_bytes: u64,
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("capacity", &self.capacity)
            .field("free_bytes", &self.free_bytes)
            .field("outstanding", &self.live.len())
            .field("free_ranges", &self.free_by_offset.len())
            .finish()
    }
}

impl Arena {
    /// An allocator over all of `mem`, everything free.
    pub fn new(mem: ArenaMem) -> Self {
        let capacity = mem.len() as u64 / GRANULE * GRANULE;
        let mut arena = Arena {
            mem,
            capacity,
            free_by_offset: BTreeMap::new(),
            free_by_size: BTreeSet::new(),
            live: BTreeMap::new(),
            free_bytes: 0,
        };
        if capacity > 0 {
            arena.insert_free(0, capacity);
        }
        arena
    }

    /// An allocator over a fresh zeroed heap arena of `len` bytes (for
    /// in-process use and tests, Miri included).
    pub fn heap(len: usize) -> Self {
        Arena::new(ArenaMem::heap(len))
    }

    /// The arena's bytes.
    pub fn mem(&self) -> &ArenaMem {
        &self.mem
    }

    /// Usable bytes (the arena's length rounded down to [`GRANULE`]).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Free bytes in all (possibly fragmented).
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// The largest free range: the largest allocation that would succeed
    /// now.
    pub fn largest_free(&self) -> u64 {
        self.free_by_size.last().map_or(0, |&(len, _)| len)
    }

    /// Number of outstanding allocations.
    pub fn outstanding(&self) -> usize {
        self.live.len()
    }

    /// Reserves `len` bytes (rounded up to [`GRANULE`], at least one
    /// granule) and returns where. The bytes hold whatever was there
    /// before.
    ///
    /// # Errors
    ///
    /// [`ArenaFull`] if no free range is large enough.
    pub fn alloc(&mut self, len: u64) -> Result<Alloc, ArenaFull> {
        let full = ArenaFull {
            requested: len,
            free: self.free_bytes,
            largest: self.largest_free(),
            capacity: self.capacity,
        };
        let need = match len.max(1).checked_next_multiple_of(GRANULE) {
            Some(n) => n,
            None => return Err(full),
        };
        // Best fit: the smallest free range of at least `need` bytes (the
        // lowest offset among equals).
        let Some(&(size, offset)) = self.free_by_size.range((need, 0)..).next() else {
            return Err(full);
        };
        self.remove_free(offset, size);
        if size > need {
            self.insert_free(offset + need, size - need);
        }
        self.live.insert(offset, (len, need));
        Ok(Alloc { offset, len })
    }

    /// Releases the allocation that starts at `offset` and returns it.
    ///
    /// # Errors
    ///
    /// [`UnknownAlloc`] if no outstanding allocation starts there (a bogus
    /// descriptor or a double free); nothing changes then.
    pub fn free(&mut self, offset: u64) -> Result<Alloc, UnknownAlloc> {
        let Some((len, reserved)) = self.live.remove(&offset) else {
            return Err(UnknownAlloc {
                offset,
                len: 0,
                freeing: true,
            });
        };
        let (mut start, mut size) = (offset, reserved);
        // Merge with the free range just before, if it ends here.
        if let Some((&prev, &prev_len)) = self.free_by_offset.range(..start).next_back() {
            if prev + prev_len == start {
                self.remove_free(prev, prev_len);
                start = prev;
                size += prev_len;
            }
        }
        // And with the one just after, if it starts where we end.
        if let Some(&next_len) = self.free_by_offset.get(&(start + size)) {
            self.remove_free(start + size, next_len);
            size += next_len;
        }
        self.insert_free(start, size);
        Ok(Alloc { offset, len })
    }

    /// The outstanding allocation that contains all of `offset .. offset +
    /// len` (within the bytes it asked for): how a descriptor that comes
    /// back from the peer is validated before use. A zero `len` needs
    /// `offset` within an allocation (or at its end).
    ///
    /// # Errors
    ///
    /// [`UnknownAlloc`] if there is none (arithmetic in checked `u64`).
    pub fn lookup(&self, offset: u64, len: u64) -> Result<Alloc, UnknownAlloc> {
        let unknown = UnknownAlloc {
            offset,
            len,
            freeing: false,
        };
        let end = offset.checked_add(len).ok_or(unknown)?;
        match self.live.range(..=offset).next_back() {
            // `start + alloc_len` cannot overflow: it is within capacity.
            Some((&start, &(alloc_len, _))) if end <= start + alloc_len => Ok(Alloc {
                offset: start,
                len: alloc_len,
            }),
            _ => Err(unknown),
        }
    }

    /// Copies `src` into the arena at `offset` (see
    /// [`ArenaMem::copy_to`]). Bounds are the arena's, not an
    /// allocation's.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if the range is not within the arena.
    pub fn copy_to(&self, offset: u64, src: &[u8]) -> Result<(), OutOfBounds> {
        self.mem.copy_to(offset, src)
    }

    /// Copies arena bytes at `offset` into `dst` (see
    /// [`ArenaMem::copy_from`]).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if the range is not within the arena.
    pub fn copy_from(&self, offset: u64, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        self.mem.copy_from(offset, dst)
    }

    fn insert_free(&mut self, offset: u64, len: u64) {
        self.free_by_offset.insert(offset, len);
        self.free_by_size.insert((len, offset));
        self.free_bytes += len;
    }

    fn remove_free(&mut self, offset: u64, len: u64) {
        self.free_by_offset.remove(&offset);
        self.free_by_size.remove(&(len, offset));
        self.free_bytes -= len;
    }
}
