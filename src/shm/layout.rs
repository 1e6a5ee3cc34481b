//! The region's memory format: the [`RegionHeader`] in the first page, the
//! [`Area`]s it points to, the [`RegionLayout`] a creator asks for, and the
//! checks an attacher runs ([`RegionHeader::validate`]).
//!
//! This is the wire format two processes agree on. Changing a field, an
//! offset or a meaning bumps [`VERSION`].

use std::mem;

use crate::ring::RingLayout;

use super::desc::Desc;
use super::error::RegionError;

/// First word of every region: `b"grnShm\0\0"` read as a little-endian
/// `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"grnShm\0\0");

/// Version of the format described by [`RegionHeader`]. Attaching refuses
/// any other value.
pub const VERSION: u64 = 2;

/// Number of `u64` words in a [`RegionHeader`].
pub const HEADER_WORDS: usize = mem::size_of::<RegionHeader>() / 8;

/// Size of a [`RegionHeader`] in bytes (the rest of the header page is
/// zero).
pub const HEADER_BYTES: usize = mem::size_of::<RegionHeader>();

/// The names of the two ring areas, in header order; errors name areas by
/// these.
pub const AREA_NAMES: [&str; 2] = ["request_ring", "response_ring"];

/// The names of the two arenas (each its own memfd, see
/// [`OwnArena`](super::OwnArena)); errors name them by these.
pub const ARENA_NAMES: [&str; 2] = ["client_arena", "server_arena"];

/// `<area>.offset` and `<area>.len` for each area, for error messages.
const AREA_FIELDS: [(&str, &str); 2] = [
    ("request_ring.offset", "request_ring.len"),
    ("response_ring.offset", "response_ring.len"),
];

/// A byte range of the region: `offset .. offset + len`, relative to the
/// region's start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Area {
    /// Start, a multiple of the page size, at or after the header page.
    pub offset: u64,
    /// Length in bytes, a nonzero multiple of the page size; `offset +
    /// len` is at most the region size.
    pub len: u64,
}

/// The header at offset 0 of a region (see the [module drawing](super)).
///
/// Every field is a native-endian `u64` (both sides share a machine), so
/// the struct has no padding and each field can be read as one
/// `AtomicU64`. The creator writes it before handing the fd over; the
/// attacher reads each word exactly once, into a local `RegionHeader`, and
/// validates that copy. Nobody reads the shared header again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RegionHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u64,
    /// Total region size in bytes, a multiple of the page size; equals the
    /// memfd's size.
    pub size: u64,
    /// The ring of requests: client produces, server consumes.
    pub request_ring: Area,
    /// The ring of responses: server produces, client consumes.
    pub response_ring: Area,
    /// Size of the client's arena (request bodies), a memfd of its own
    /// that the client creates, writes and seals; a nonzero multiple of
    /// the page size.
    pub client_arena_len: u64,
    /// Size of the server's arena (response bodies), a memfd of its own
    /// that the server creates, writes and seals; a nonzero multiple of
    /// the page size.
    pub server_arena_len: u64,
}

const _: () = assert!(HEADER_BYTES == HEADER_WORDS * 8 && HEADER_WORDS == 9);

impl RegionHeader {
    /// The header as `u64` words, in field order.
    pub fn to_words(&self) -> [u64; HEADER_WORDS] {
        [
            self.magic,
            self.version,
            self.size,
            self.request_ring.offset,
            self.request_ring.len,
            self.response_ring.offset,
            self.response_ring.len,
            self.client_arena_len,
            self.server_arena_len,
        ]
    }

    /// The header from `u64` words in field order; no validation.
    pub fn from_words(w: [u64; HEADER_WORDS]) -> Self {
        let area = |i: usize| Area {
            offset: w[3 + 2 * i],
            len: w[4 + 2 * i],
        };
        RegionHeader {
            magic: w[0],
            version: w[1],
            size: w[2],
            request_ring: area(0),
            response_ring: area(1),
            client_arena_len: w[7],
            server_arena_len: w[8],
        }
    }

    /// The header's bytes as they lie in memory (native endian); tests use
    /// this to forge headers.
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.to_words()) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        out
    }

    /// The two ring areas with their names, in header order.
    pub fn areas(&self) -> [(&'static str, Area); 2] {
        [
            (AREA_NAMES[0], self.request_ring),
            (AREA_NAMES[1], self.response_ring),
        ]
    }

    /// The two arena sizes with their names, client first.
    pub fn arenas(&self) -> [(&'static str, u64); 2] {
        [
            (ARENA_NAMES[0], self.client_arena_len),
            (ARENA_NAMES[1], self.server_arena_len),
        ]
    }

    /// Checks a header read from an untrusted region of `actual_size`
    /// bytes (the file's size) on a machine with pages of `page_size`
    /// bytes (a power of two).
    ///
    /// In order: magic, version, `size == actual_size`, the header page
    /// fits, the size is page-aligned and fits the address space; then for
    /// each ring area: nonzero length, page-aligned offset and length,
    /// `offset + len` without `u64` overflow, and the area inside
    /// `page_size ..= size`; then that the two do not overlap; last, each
    /// arena size is nonzero, page-aligned and fits the address space.
    /// All arithmetic is checked `u64`. The ring areas' contents are
    /// checked later, by
    /// [`RawRing::attach`](crate::ring::RawRing::attach), and the arena
    /// files by [`PeerArena::attach`](super::PeerArena::attach).
    ///
    /// # Errors
    ///
    /// The [`RegionError`] of the first check that fails, naming the field.
    pub fn validate(&self, actual_size: u64, page_size: u64) -> Result<(), RegionError> {
        debug_assert!(page_size.is_power_of_two());
        if self.magic != MAGIC {
            return Err(RegionError::BadMagic { found: self.magic });
        }
        if self.version != VERSION {
            return Err(RegionError::BadVersion {
                found: self.version,
            });
        }
        if self.size != actual_size {
            return Err(RegionError::SizeMismatch {
                header: self.size,
                actual: actual_size,
            });
        }
        if self.size < page_size {
            return Err(RegionError::TooSmall {
                size: self.size,
                needed: page_size,
            });
        }
        if self.size % page_size != 0 {
            return Err(RegionError::Misaligned {
                field: "size",
                value: self.size,
                page_size,
            });
        }
        if usize::try_from(self.size).is_err() {
            return Err(RegionError::TooLarge {
                what: "region size",
            });
        }
        let mut ranges = [("", 0u64, 0u64); 2];
        for ((slot, (area, a)), (offset_field, len_field)) in
            ranges.iter_mut().zip(self.areas()).zip(AREA_FIELDS)
        {
            if a.len == 0 {
                return Err(RegionError::EmptyArea { area });
            }
            for (field, value) in [(offset_field, a.offset), (len_field, a.len)] {
                if value % page_size != 0 {
                    return Err(RegionError::Misaligned {
                        field,
                        value,
                        page_size,
                    });
                }
            }
            let end = a.offset.checked_add(a.len).ok_or(RegionError::Overflow {
                area,
                offset: a.offset,
                len: a.len,
            })?;
            if a.offset < page_size || end > self.size {
                return Err(RegionError::OutOfRange {
                    area,
                    offset: a.offset,
                    len: a.len,
                    min: page_size,
                    max: self.size,
                });
            }
            *slot = (area, a.offset, end);
        }
        // Sorted by start, the first must end at or before the second
        // starts.
        ranges.sort_unstable_by_key(|&(_, start, _)| start);
        let ((first, _, first_end), (second, second_offset, _)) = (ranges[0], ranges[1]);
        if first_end > second_offset {
            return Err(RegionError::Overlap {
                first,
                first_end,
                second,
                second_offset,
            });
        }
        for ((area, len), field) in self
            .arenas()
            .into_iter()
            .zip(["client_arena_len", "server_arena_len"])
        {
            if len == 0 {
                return Err(RegionError::EmptyArea { area });
            }
            if len % page_size != 0 {
                return Err(RegionError::Misaligned {
                    field,
                    value: len,
                    page_size,
                });
            }
            // A mapping is at most isize::MAX bytes.
            if isize::try_from(len).is_err() {
                return Err(RegionError::TooLarge { what: field });
            }
        }
        Ok(())
    }
}

/// What a creator asks for: ring capacities and arena sizes. The ring
/// areas are laid out in header order, each starting on a page boundary
/// and rounded up to whole pages; arena sizes are rounded up to whole
/// pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionLayout {
    request_capacity: u32,
    response_capacity: u32,
    client_arena: u64,
    server_arena: u64,
}

impl Default for RegionLayout {
    /// 256-entry rings and 1 MiB arenas.
    fn default() -> Self {
        RegionLayout::new(256, 256, 1 << 20, 1 << 20)
    }
}

impl RegionLayout {
    /// Rings of `request_capacity` and `response_capacity` [`Desc`]
    /// entries (powers of two), and arenas of at least `client_arena` and
    /// `server_arena` bytes (rounded up to pages; zero becomes one page).
    /// Nothing is checked until [`header`](Self::header).
    pub fn new(
        request_capacity: u32,
        response_capacity: u32,
        client_arena: u64,
        server_arena: u64,
    ) -> Self {
        RegionLayout {
            request_capacity,
            response_capacity,
            client_arena,
            server_arena,
        }
    }

    /// Entries in the request ring.
    pub fn request_capacity(&self) -> u32 {
        self.request_capacity
    }

    /// Entries in the response ring.
    pub fn response_capacity(&self) -> u32 {
        self.response_capacity
    }

    /// Requested client arena bytes (before rounding).
    pub fn client_arena(&self) -> u64 {
        self.client_arena
    }

    /// Requested server arena bytes (before rounding).
    pub fn server_arena(&self) -> u64 {
        self.server_arena
    }

    /// The header of a region with this layout on a machine with pages of
    /// `page_size` bytes (a power of two).
    ///
    /// # Errors
    ///
    /// [`RegionError::Ring`] for a capacity the ring layer refuses;
    /// [`RegionError::TooLarge`] if the region would not fit `u64` or the
    /// address space.
    pub fn header(&self, page_size: u64) -> Result<RegionHeader, RegionError> {
        debug_assert!(page_size.is_power_of_two());
        let ring_bytes = |area: &'static str, capacity: u32| {
            RingLayout::for_entry::<Desc>(capacity)
                .map(|l| l.size() as u64)
                .map_err(|error| RegionError::Ring { area, error })
        };
        let lens = [
            ring_bytes(AREA_NAMES[0], self.request_capacity)?,
            ring_bytes(AREA_NAMES[1], self.response_capacity)?,
        ];
        let too_large = |what| RegionError::TooLarge { what };
        let mut areas = [Area::default(); 2];
        let mut next = page_size;
        for (area, len) in areas.iter_mut().zip(lens) {
            let len = round_up(len, page_size).ok_or(too_large("region layout"))?;
            *area = Area { offset: next, len };
            next = next.checked_add(len).ok_or(too_large("region layout"))?;
        }
        if usize::try_from(next).is_err() {
            return Err(too_large("region layout"));
        }
        let arena = |len: u64, what| {
            round_up(len.max(1), page_size)
                .filter(|&l| isize::try_from(l).is_ok())
                .ok_or(too_large(what))
        };
        Ok(RegionHeader {
            magic: MAGIC,
            version: VERSION,
            size: next,
            request_ring: areas[0],
            response_ring: areas[1],
            client_arena_len: arena(self.client_arena, "client_arena_len")?,
            server_arena_len: arena(self.server_arena, "server_arena_len")?,
        })
    }
}

/// `n` rounded up to a multiple of `align` (a power of two), if that fits.
fn round_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}
