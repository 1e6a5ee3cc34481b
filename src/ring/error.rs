//! Errors of the ring layer. Each says what was found and what was
//! expected, so a bad peer can be diagnosed from the message alone.

use std::fmt;
use std::io;

use super::layout::{CACHE_PAD, MAGIC, MAX_CAPACITY, VERSION};

/// Why a ring could not be set up, or why it can no longer be used.
///
/// Every error about the ring's contents means the peer (or whoever else
/// writes the memory) broke the protocol: the handle that saw it stays
/// failed, and the connection built on it should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The ring memory pointer is null or not aligned to
    /// [`RingLayout::ALIGN`](super::RingLayout::ALIGN).
    BadPointer {
        /// The address given.
        addr: usize,
    },
    /// The memory is smaller than the ring's layout.
    TooSmall {
        /// Bytes the header or the whole ring needs.
        needed: u64,
        /// Bytes available.
        len: usize,
    },
    /// The layout would not fit the address space.
    TooLarge {
        /// Bytes the ring would need.
        bytes: u64,
    },
    /// The header does not start with [`MAGIC`](super::MAGIC).
    BadMagic {
        /// The first word found.
        found: u32,
    },
    /// The header has a version this build does not speak.
    BadVersion {
        /// The version found.
        found: u32,
    },
    /// The capacity is zero, not a power of two, or above
    /// [`MAX_CAPACITY`](super::MAX_CAPACITY).
    BadCapacity {
        /// The capacity given or found.
        capacity: u32,
    },
    /// The header's entry size differs from this side's entry type.
    EntrySizeMismatch {
        /// Entry size in the header.
        found: u32,
        /// `size_of` of this side's entry type.
        expected: usize,
    },
    /// The entry type cannot be stored in a ring: zero-sized, larger than
    /// `u32::MAX` bytes, or aligned to more than 128 bytes.
    UnsupportedEntry {
        /// Its size in bytes.
        size: usize,
        /// Its alignment in bytes.
        align: usize,
    },
    /// An index written by the peer is outside the range the protocol
    /// allows: a `tail` behind the last seen tail or more than `capacity`
    /// ahead of `head`, or a `head` behind the last seen head or ahead of
    /// `tail`.
    Corrupt {
        /// Which index: `"head"` or `"tail"`.
        index: &'static str,
        /// The value read.
        found: u32,
        /// Lowest allowed value (inclusive; wrapping range).
        min: u32,
        /// Highest allowed value (inclusive; wrapping range).
        max: u32,
    },
    /// `FUTEX_WAIT` or `FUTEX_WAKE` failed with an unexpected error.
    Futex {
        /// The raw `errno`.
        errno: i32,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RingError::BadPointer { addr } => write!(
                f,
                "ring memory at {addr:#x} is null or not aligned to {CACHE_PAD} bytes"
            ),
            RingError::TooSmall { needed, len } => write!(
                f,
                "ring memory too small: the layout needs {needed} bytes, the region has {len}"
            ),
            RingError::TooLarge { bytes } => write!(
                f,
                "ring layout of {bytes} bytes does not fit the address space"
            ),
            RingError::BadMagic { found } => write!(
                f,
                "not a ring header: magic is {found:#010x}, expected {MAGIC:#010x}"
            ),
            RingError::BadVersion { found } => write!(
                f,
                "unsupported ring version {found}: this build speaks version {VERSION}"
            ),
            RingError::BadCapacity { capacity } => write!(
                f,
                "ring capacity {capacity} is not a power of two in 1..={MAX_CAPACITY}"
            ),
            RingError::EntrySizeMismatch { found, expected } => write!(
                f,
                "ring entry size mismatch: the header says {found} bytes, \
                 this side's entry type is {expected} bytes"
            ),
            RingError::UnsupportedEntry { size, align } => write!(
                f,
                "unsupported ring entry type ({size} bytes, alignment {align}): \
                 size must be in 1..=u32::MAX and alignment at most {CACHE_PAD}"
            ),
            RingError::Corrupt {
                index,
                found,
                min,
                max,
            } => write!(
                f,
                "ring corrupt: peer's {index} is {found}, outside the valid range \
                 {min}..={max} (wrapping u32 indices)"
            ),
            RingError::Futex { errno } => write!(
                f,
                "ring futex call failed: {}",
                io::Error::from_raw_os_error(errno)
            ),
        }
    }
}

impl std::error::Error for RingError {}

impl From<RingError> for io::Error {
    /// Futex failures keep their OS error; everything else is
    /// [`io::ErrorKind::InvalidData`] (the peer broke the format).
    fn from(e: RingError) -> io::Error {
        match e {
            RingError::Futex { errno } => io::Error::from_raw_os_error(errno),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// A push that did not happen; hands the value back.
pub enum PushError<T> {
    /// The ring has no free slot.
    Full(T),
    /// The peer corrupted the ring (see [`RingError::Corrupt`]); the
    /// producer is failed and every later push returns this.
    Corrupt(T, RingError),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(v) | PushError::Corrupt(v, _) => v,
        }
    }
}

// Manual impls: no `T: Debug` bound, so `push(v).unwrap()` works for any
// entry type.
impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full(_) => f.write_str("Full(..)"),
            PushError::Corrupt(_, e) => f.debug_tuple("Corrupt").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full(_) => f.write_str("ring is full"),
            PushError::Corrupt(_, e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<T> std::error::Error for PushError<T> {}

/// How [`Consumer::wait`](super::Consumer::wait) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum WaitOutcome {
    /// The ring has at least one entry.
    Ready,
    /// The timeout passed with the ring still empty.
    TimedOut,
}
