//! The region format as data: sizes and offsets of the `#[repr(C)]`
//! types, the layout a creator computes, and header validation on forged
//! headers. No syscalls, so these run under Miri too.

use std::mem::{offset_of, size_of};

use green::shm::{
    Area, Desc, RegionError, RegionHeader, RegionLayout, HEADER_BYTES, HEADER_WORDS, MAGIC, VERSION,
};

const PAGE: u64 = 4096;

fn header() -> RegionHeader {
    RegionLayout::new(64, 64, 100_000, 5_000)
        .header(PAGE)
        .unwrap()
}

#[test]
fn repr_c_sizes_and_offsets() {
    assert_eq!(size_of::<Desc>(), 32);
    assert_eq!(offset_of!(Desc, id), 0);
    assert_eq!(offset_of!(Desc, opcode), 8);
    assert_eq!(offset_of!(Desc, flags), 12);
    assert_eq!(offset_of!(Desc, offset), 16);
    assert_eq!(offset_of!(Desc, len), 24);
    assert_eq!(size_of::<Area>(), 16);
    assert_eq!(size_of::<RegionHeader>(), HEADER_BYTES);
    assert_eq!(HEADER_BYTES, 72);
    assert_eq!(HEADER_WORDS, 9);
    assert_eq!(offset_of!(RegionHeader, magic), 0);
    assert_eq!(offset_of!(RegionHeader, version), 8);
    assert_eq!(offset_of!(RegionHeader, size), 16);
    assert_eq!(offset_of!(RegionHeader, request_ring), 24);
    assert_eq!(offset_of!(RegionHeader, response_ring), 40);
    assert_eq!(offset_of!(RegionHeader, client_arena_len), 56);
    assert_eq!(offset_of!(RegionHeader, server_arena_len), 64);
    assert_eq!(&MAGIC.to_le_bytes(), b"grnShm\0\0");
}

#[test]
fn layout_is_page_aligned_in_header_order() {
    let h = header();
    assert_eq!((h.magic, h.version), (MAGIC, VERSION));
    // 64 descriptors in 64-byte slots: 512 + 64 * 64 = 4608 bytes, two
    // pages each ring.
    assert_eq!(
        h.request_ring,
        Area {
            offset: PAGE,
            len: 2 * PAGE
        }
    );
    assert_eq!(
        h.response_ring,
        Area {
            offset: 3 * PAGE,
            len: 2 * PAGE
        }
    );
    // The arenas are files of their own: only their sizes, in pages.
    assert_eq!(h.client_arena_len, 25 * PAGE);
    assert_eq!(h.server_arena_len, 2 * PAGE);
    assert_eq!(h.size, 5 * PAGE);
    assert_eq!(h.validate(h.size, PAGE), Ok(()));
    assert_eq!(RegionHeader::from_words(h.to_words()), h);
    let bytes = h.to_bytes();
    assert_eq!(&bytes[16..24], &h.size.to_ne_bytes());
}

#[test]
fn layout_errors() {
    let e = RegionLayout::new(0, 64, 1, 1).header(PAGE).unwrap_err();
    assert!(
        matches!(
            e,
            RegionError::Ring {
                area: "request_ring",
                ..
            }
        ),
        "{e:?}"
    );
    let e = RegionLayout::new(64, 48, 1, 1).header(PAGE).unwrap_err();
    assert!(
        matches!(
            e,
            RegionError::Ring {
                area: "response_ring",
                ..
            }
        ),
        "{e:?}"
    );
    for (c, s) in [
        (u64::MAX, 1),
        (1, u64::MAX - PAGE),
        (u64::MAX / 2, u64::MAX / 2),
    ] {
        let e = RegionLayout::new(64, 64, c, s).header(PAGE).unwrap_err();
        assert!(matches!(e, RegionError::TooLarge { .. }), "{e:?}");
    }
    // Zero-sized arenas still get a page.
    let h = RegionLayout::new(1, 1, 0, 0).header(PAGE).unwrap();
    assert_eq!((h.client_arena_len, h.server_arena_len), (PAGE, PAGE));
}

/// Validates `h` after `forge`, against the unforged size.
fn check(forge: impl FnOnce(&mut RegionHeader)) -> Result<(), RegionError> {
    let mut h = header();
    let size = h.size;
    forge(&mut h);
    h.validate(size, PAGE)
}

#[test]
fn validate_names_the_bad_field() {
    type Forge = Box<dyn FnOnce(&mut RegionHeader)>;
    let cases: Vec<(Forge, &str)> = vec![
        (Box::new(|h| h.magic ^= 1), "magic"),
        (Box::new(|h| h.version = 0), "version 0"),
        (Box::new(|h| h.size = 0), "field size"),
        (
            Box::new(|h| h.request_ring.offset = 100),
            "request_ring.offset",
        ),
        (Box::new(|h| h.response_ring.len = 1), "response_ring.len"),
        (
            Box::new(|h| h.client_arena_len = 0),
            "client_arena.len is 0",
        ),
        (
            Box::new(|h| h.server_arena_len = 3 * PAGE + 1),
            "server_arena_len",
        ),
        (Box::new(|h| h.server_arena_len = 1 << 63), "too large"),
        (
            Box::new(|h| h.response_ring.len = 3 * PAGE),
            "response_ring",
        ),
        (Box::new(|h| h.response_ring.offset = 0), "response_ring"),
        (
            Box::new(|h| h.request_ring.offset = !(PAGE - 1)),
            "overflows u64",
        ),
        (Box::new(|h| h.response_ring = h.request_ring), "overlap"),
        (Box::new(|h| h.request_ring.len += PAGE), "overlap"),
    ];
    for (forge, needle) in cases {
        let e = check(forge).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle), "{msg:?} does not name {needle:?}");
    }
}

#[test]
fn validate_checks_the_whole_u64_range() {
    // Offsets and lengths near u64::MAX, page-aligned, in both ring
    // areas, and such arena sizes: always an error, never an overflow
    // panic.
    let big = [0, PAGE, !(PAGE - 1), (u64::MAX / 2) & !(PAGE - 1), 1 << 63];
    let mut n = 0;
    for &offset in &big {
        for &len in &big {
            for area in 0..2 {
                let r = check(|h| {
                    let a = match area {
                        0 => &mut h.request_ring,
                        _ => &mut h.response_ring,
                    };
                    *a = Area { offset, len };
                });
                // The one combination that is the real request ring.
                let valid = area == 0 && offset == PAGE && len == PAGE;
                assert_eq!(r.is_ok(), valid, "area {area}: {offset:#x}+{len:#x}: {r:?}");
                n += 1;
            }
        }
    }
    assert_eq!(n, 5 * 5 * 2);
    for &len in &big {
        for arena in 0..2 {
            let r = check(|h| match arena {
                0 => h.client_arena_len = len,
                _ => h.server_arena_len = len,
            });
            // Any nonzero page multiple that a mapping can have is a valid
            // size (the client's `max_region` bounds what it maps).
            let valid = len != 0 && len <= isize::MAX as u64;
            assert_eq!(r.is_ok(), valid, "arena {arena}: {len:#x}: {r:?}");
        }
    }
}
