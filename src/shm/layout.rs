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
pub const VERSION: u64 = 1;

/// Number of `u64` words in a [`RegionHeader`].
pub const HEADER_WORDS: usize = mem::size_of::<RegionHeader>() / 8;

/// Size of a [`RegionHeader`] in bytes (the rest of the header page is
/// zero).
pub const HEADER_BYTES: usize = mem::size_of::<RegionHeader>();

/// The names of the four areas, in header order; errors name areas by
/// these.
pub const AREA_NAMES: [&str; 4] = [
    "request_ring",
    "response_ring",
    "client_arena",
    "server_arena",
];

/// `<area>.offset` and `<area>.len` for each area, for error messages.
const AREA_FIELDS: [(&str, &str); 4] = [
    ("request_ring.offset", "request_ring.len"),
    ("response_ring.offset", "response_ring.len"),
    ("client_arena.offset", "client_arena.len"),
    ("server_arena.offset", "server_arena.len"),
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
    /// The client's arena: request bodies, allocated and written by the
    /// client.
    pub client_arena: Area,
    /// The server's arena: response bodies, allocated and written by the
    /// server.
    pub server_arena: Area,
}

const _: () = assert!(HEADER_BYTES == HEADER_WORDS * 8 && HEADER_WORDS == 11);

impl RegionHeader {
    /// The header as `u64` words, in field order.
    pub fn to_words(&self) -> [u64; HEADER_WORDS] {
        let a = [
            self.request_ring,
            self.response_ring,
            self.client_arena,
            self.server_arena,
        ];
        [
            self.magic,
            self.version,
            self.size,
            a[0].offset,
            a[0].len,
            a[1].offset,
            a[1].len,
            a[2].offset,
            a[2].len,
            a[3].offset,
            a[3].len,
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
            client_arena: area(2),
            server_arena: area(3),
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

    /// The four areas with their names, in header order.
    pub fn areas(&self) -> [(&'static str, Area); 4] {
        [
            (AREA_NAMES[0], self.request_ring),
            (AREA_NAMES[1], self.response_ring),
            (AREA_NAMES[2], self.client_arena),
            (AREA_NAMES[3], self.server_arena),
        ]
    }

    /// Checks a header read from an untrusted region of `actual_size`
    /// bytes (the file's size) on a machine with pages of `page_size`
    /// bytes (a power of two).
    ///
    /// In order: magic, version, `size == actual_size`, the header page
    /// fits, the size is page-aligned and fits the address space; then for
    /// each area: nonzero length, page-aligned offset and length, `offset
    /// + len` without `u64` overflow,
    /// and the area inside `page_size ..= size`; last, no two areas
    /// overlap. All arithmetic is checked `u64`. The ring areas' contents
    /// are checked later, by [`RawRing::attach`](crate::ring::RawRing::attach).
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
        let mut ranges = [("", 0u64, 0u64); 4];
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
        // Sorted by start, each area must end at or before the next starts.
        ranges.sort_unstable_by_key(|&(_, start, _)| start);
        for pair in ranges.windows(2) {
            let ((first, _, first_end), (second, second_offset, _)) = (pair[0], pair[1]);
            if first_end > second_offset {
                return Err(RegionError::Overlap {
                    first,
                    first_end,
                    second,
                    second_offset,
                });
            }
        }
        Ok(())
    }
}

/// What a creator asks for: ring capacities and arena sizes. Areas are
/// laid out in header order, each starting on a page boundary and rounded
/// up to whole pages.
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
            self.client_arena.max(1),
            self.server_arena.max(1),
        ];
        let too_large = RegionError::TooLarge {
            what: "region layout",
        };
        let mut areas = [Area::default(); 4];
        let mut next = page_size;
        for (area, len) in areas.iter_mut().zip(lens) {
            let len = round_up(len, page_size).ok_or(too_large.clone())?;
            *area = Area { offset: next, len };
            next = next.checked_add(len).ok_or(too_large.clone())?;
        }
        if usize::try_from(next).is_err() {
            return Err(too_large);
        }
        Ok(RegionHeader {
            magic: MAGIC,
            version: VERSION,
            size: next,
            request_ring: areas[0],
            response_ring: areas[1],
            client_arena: areas[2],
            server_arena: areas[3],
        })
    }
}

/// `n` rounded up to a multiple of `align` (a power of two), if that fits.
fn round_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}
