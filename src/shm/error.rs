//! Errors of the shm layer. Each names the field or area at fault and
//! says what was found and what was expected, so a bad peer can be
//! diagnosed from the message alone.

use std::fmt;
use std::io;

use crate::ring::RingError;

use super::layout::{MAGIC, VERSION};

/// Why a region could not be created or attached.
///
/// Every variant but [`TooLarge`](Self::TooLarge) means the region (and so
/// the peer that made it) breaks the format: drop the connection. It
/// converts to an [`io::Error`] that keeps this value (`err.get_ref()` and
/// `downcast_ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionError {
    /// The fd does not support seals (it is not a memfd, or was made
    /// without `MFD_ALLOW_SEALING`).
    NotSealable,
    /// The fd lacks a required seal: without `F_SEAL_SHRINK` the peer could
    /// shrink the file under our mapping and a later access would raise
    /// `SIGBUS`.
    Unsealed {
        /// The seals found (`F_GET_SEALS`).
        found: u32,
        /// The required seals missing from `found`.
        missing: u32,
    },
    /// The fd is write-sealed (`F_SEAL_WRITE` or `F_SEAL_FUTURE_WRITE`):
    /// both sides must write the region.
    WriteSealed {
        /// The seals found (`F_GET_SEALS`).
        found: u32,
    },
    /// The region is smaller than its header page.
    TooSmall {
        /// Region size in bytes (`fstat`).
        size: u64,
        /// Bytes the header page needs (the page size).
        needed: u64,
    },
    /// A region or layout too large for this address space (or for `u64`
    /// arithmetic).
    TooLarge {
        /// What overflowed.
        what: &'static str,
    },
    /// The header does not start with [`MAGIC`](super::MAGIC).
    BadMagic {
        /// The magic word found.
        found: u64,
    },
    /// The header has a version this build does not speak.
    BadVersion {
        /// The version found.
        found: u64,
    },
    /// The header's `size` differs from the file's size.
    SizeMismatch {
        /// `size` in the header.
        header: u64,
        /// The file's size (`fstat`).
        actual: u64,
    },
    /// The region size, or an area's offset or length, is not a multiple
    /// of the page size.
    Misaligned {
        /// The header field: `"size"`, `"<area>.offset"` or `"<area>.len"`.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The page size.
        page_size: u64,
    },
    /// An area has length zero.
    EmptyArea {
        /// The area's field name in the header.
        area: &'static str,
    },
    /// `offset + len` of an area overflows `u64`.
    Overflow {
        /// The area's field name in the header.
        area: &'static str,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// An area starts inside the header page or ends past the region.
    OutOfRange {
        /// The area's field name in the header.
        area: &'static str,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// Where the areas may start (the header page's end).
        min: u64,
        /// Where they must end at the latest (the region size).
        max: u64,
    },
    /// Two areas share bytes.
    Overlap {
        /// The area that starts first (field name).
        first: &'static str,
        /// Its end offset (exclusive).
        first_end: u64,
        /// The other area (field name).
        second: &'static str,
        /// Its start offset.
        second_offset: u64,
    },
    /// A peer's arena memfd is not sealed against writes: its creator
    /// must hold the only writable mapping (`F_SEAL_FUTURE_WRITE`, or
    /// `F_SEAL_WRITE`), else the bytes we read could be changed by anyone
    /// holding the fd, this process's safe in-place writes included.
    ArenaWritable {
        /// The arena (`client_arena` or `server_arena`).
        arena: &'static str,
        /// The seals found (`F_GET_SEALS`).
        found: u32,
    },
    /// A peer's arena memfd is not the size the region's header gives.
    ArenaSizeMismatch {
        /// The arena (`client_arena` or `server_arena`).
        arena: &'static str,
        /// The size in the header.
        header: u64,
        /// The file's size.
        actual: u64,
    },
    /// A ring area failed the ring layer's own validation.
    Ring {
        /// The area's field name in the header.
        area: &'static str,
        /// What the ring layer found.
        error: RingError,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::NotSealable => f.write_str(
                "shm fd does not support seals: not a memfd made with MFD_ALLOW_SEALING",
            ),
            RegionError::Unsealed { found, missing } => write!(
                f,
                "shm memfd is not sealed: seals {found:#x} lack {missing:#x} \
                 (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL are required, else the \
                 file could shrink under the mapping)"
            ),
            RegionError::WriteSealed { found } => write!(
                f,
                "shm region is write-sealed (seals {found:#x}): both sides must write it"
            ),
            RegionError::TooSmall { size, needed } => write!(
                f,
                "shm region of {size} bytes is smaller than its header page ({needed} bytes)"
            ),
            RegionError::TooLarge { what } => {
                write!(f, "shm region too large: {what} overflows")
            }
            RegionError::BadMagic { found } => write!(
                f,
                "not a shm region header: magic is {found:#018x}, expected {MAGIC:#018x}"
            ),
            RegionError::BadVersion { found } => write!(
                f,
                "unsupported shm region version {found}: this build speaks version {VERSION}"
            ),
            RegionError::SizeMismatch { header, actual } => write!(
                f,
                "shm region header field size is {header}, but the file has {actual} bytes"
            ),
            RegionError::Misaligned {
                field,
                value,
                page_size,
            } => write!(
                f,
                "shm region header field {field} is {value:#x}, \
                 not a multiple of the page size {page_size:#x}"
            ),
            RegionError::EmptyArea { area } => {
                write!(f, "shm region header field {area}.len is 0")
            }
            RegionError::Overflow { area, offset, len } => write!(
                f,
                "shm region header field {area}: offset {offset:#x} + len {len:#x} overflows u64"
            ),
            RegionError::OutOfRange {
                area,
                offset,
                len,
                min,
                max,
            } => write!(
                f,
                "shm region header field {area} ({offset:#x}, len {len:#x}) is outside \
                 the areas' range {min:#x}..{max:#x}"
            ),
            RegionError::Overlap {
                first,
                first_end,
                second,
                second_offset,
            } => write!(
                f,
                "shm region areas overlap: {first} ends at {first_end:#x}, \
                 after {second} starts at {second_offset:#x}"
            ),
            RegionError::ArenaWritable { arena, found } => write!(
                f,
                "shm {arena} memfd is not write-sealed (seals {found:#x}): \
                 F_SEAL_FUTURE_WRITE is required, so that only its owner writes it"
            ),
            RegionError::ArenaSizeMismatch {
                arena,
                header,
                actual,
            } => write!(
                f,
                "shm {arena} memfd has {actual} bytes, but the region header gives {header}"
            ),
            RegionError::Ring { area, error } => {
                write!(f, "shm region {area}: {error}")
            }
        }
    }
}

impl std::error::Error for RegionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegionError::Ring { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<RegionError> for io::Error {
    /// [`io::ErrorKind::InvalidInput`] for [`RegionError::TooLarge`] (a
    /// layout this side asked for), [`io::ErrorKind::InvalidData`] for the
    /// rest (a region that breaks the format); the [`RegionError`] is kept.
    fn from(e: RegionError) -> io::Error {
        let kind = match e {
            RegionError::TooLarge { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
