//! Regions in one process: create, attach a dup of the fd, and move
//! requests and responses through the rings and arenas; attach refusing
//! every kind of bad region or arena with a clear error, never a panic;
//! and an arena's owner being the only one who can write it.

#![cfg(not(miri))] // memfd and mmap: not available under Miri

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use green::ring::RingError;
use green::shm::{
    page_size, Desc, Endpoint, OwnArena, PeerArena, Region, RegionError, RegionHeader,
    RegionLayout, MAGIC,
};
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};

fn small_layout() -> RegionLayout {
    RegionLayout::new(16, 16, 64 * 1024, 64 * 1024)
}

fn dup(region: &Region) -> OwnedFd {
    region.fd().try_clone_to_owned().unwrap()
}

/// The `RegionError` inside an attach error, asserting the error kind.
fn region_error(e: io::Error) -> RegionError {
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<RegionError>())
        .unwrap_or_else(|| panic!("not a RegionError: {e}"))
        .clone()
}

/// Attaches to `fd`, expecting failure; returns the error after checking
/// that its message names `needle`.
fn attach_err(fd: OwnedFd, needle: &str) -> RegionError {
    let e = Region::attach(fd).expect_err("attach accepted a bad region");
    let msg = e.to_string();
    assert!(
        msg.contains(needle),
        "error {msg:?} does not name {needle:?}"
    );
    region_error(e)
}

/// A valid region whose header (on a dup of its fd) is replaced by
/// `forge(header)`.
fn forged(forge: impl FnOnce(&mut RegionHeader)) -> OwnedFd {
    forged_with(&small_layout(), forge)
}

/// As [`forged`], for a region of `layout`.
fn forged_with(layout: &RegionLayout, forge: impl FnOnce(&mut RegionHeader)) -> OwnedFd {
    let region = Region::create(layout).unwrap();
    let mut header = *region.header();
    forge(&mut header);
    let fd = dup(&region);
    File::from(fd.try_clone().unwrap())
        .write_all_at(&header.to_bytes(), 0)
        .unwrap();
    fd
}

/// A memfd of `size` bytes with `seals`, holding `header`.
fn memfd(size: u64, sealing: bool, seals: SealFlags, header: Option<RegionHeader>) -> OwnedFd {
    let flags = if sealing {
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING
    } else {
        MemfdFlags::CLOEXEC
    };
    let fd = memfd_create("green-shm-test", flags).unwrap();
    ftruncate(&fd, size).unwrap();
    if let Some(h) = header {
        File::from(fd.try_clone().unwrap())
            .write_all_at(&h.to_bytes(), 0)
            .unwrap();
    }
    if !seals.is_empty() {
        fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

fn all_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// A fresh own arena for `side` of a region with header `h`
/// (`"client_arena"` or `"server_arena"`), and a read-only attach of it as
/// the other side sees it.
fn arena_pair(h: &RegionHeader, side: &'static str) -> (OwnArena, PeerArena) {
    let len = match side {
        "client_arena" => h.client_arena_len,
        _ => h.server_arena_len,
    };
    let own = OwnArena::create(len).unwrap();
    let peer = PeerArena::attach(own.fd().try_clone_to_owned().unwrap(), side, len).unwrap();
    (own, peer)
}

/// Both sides of a region in this process: `region` as the client, `peer`
/// (another Region of the same memfd) as the server, each with its own
/// arena and the other's, read-only.
fn sides(region: Region, peer: Region) -> (Endpoint, Endpoint) {
    let h = *region.header();
    let (client_own, server_view) = arena_pair(&h, "client_arena");
    let (server_own, client_view) = arena_pair(&h, "server_arena");
    (
        region.into_client(client_own, client_view).unwrap(),
        peer.into_server(server_own, server_view).unwrap(),
    )
}

/// Arenas for one side alone (`into_client`), both fresh.
fn client_arenas(h: &RegionHeader) -> (OwnArena, PeerArena) {
    (
        arena_pair(h, "client_arena").0,
        arena_pair(h, "server_arena").1,
    )
}

#[test]
fn create_then_attach_a_dup_agrees_on_the_layout() {
    let region = Region::create(&small_layout()).unwrap();
    let page = page_size();
    let h = *region.header();
    assert_eq!(h.magic, MAGIC);
    assert_eq!(h.request_ring.offset, page);
    assert_eq!(h.size % page, 0);
    assert!(h.server_arena_len >= 64 * 1024);
    assert_eq!(h.client_arena_len % page, 0);
    let other = Region::attach(dup(&region)).unwrap();
    assert_eq!(*other.header(), h);
    assert_eq!(other.size(), h.size);
}

#[test]
fn requests_and_responses_cross_one_region() {
    let region = Region::create(&small_layout()).unwrap();
    let peer = Region::attach(dup(&region)).unwrap();
    let (mut client, mut server) = sides(region, peer);

    for round in 0..100u64 {
        // Client: a body of `round * 37 % 5000` bytes, pattern from id.
        let len = round * 37 % 5000;
        let body: Vec<u8> = (0..len).map(|i| (i ^ round) as u8).collect();
        let a = client.arena.alloc(len).unwrap();
        client.arena.copy_to(a.offset, &body).unwrap();
        let req = Desc {
            id: round,
            opcode: 1,
            flags: 0,
            offset: a.offset,
            len,
        };
        client.tx.push(req).unwrap();
        client.tx.notify().unwrap();

        // Server: read, check, answer with the bytes reversed.
        let got = server.rx.pop().unwrap().expect("request");
        assert_eq!(got, req);
        let mut buf = vec![0u8; got.len as usize];
        server.peer_arena.copy_from(got.offset, &mut buf).unwrap();
        assert_eq!(buf, body);
        buf.reverse();
        let r = server.arena.alloc(got.len).unwrap();
        server.arena.copy_to(r.offset, &buf).unwrap();
        server
            .tx
            .push(Desc {
                id: got.id,
                opcode: 0,
                flags: 0,
                offset: r.offset,
                len: got.len,
            })
            .unwrap();

        // Client: check the response, free its request body; the server
        // frees the response body once "handed back".
        let resp = client.rx.pop().unwrap().expect("response");
        assert_eq!(resp.id, round);
        let mut out = vec![0u8; resp.len as usize];
        client.peer_arena.copy_from(resp.offset, &mut out).unwrap();
        out.reverse();
        assert_eq!(out, body);
        client.arena.lookup(req.offset, req.len).unwrap();
        client.arena.free(req.offset).unwrap();
        server.arena.lookup(resp.offset, resp.len).unwrap();
        server.arena.free(resp.offset).unwrap();
    }
    assert_eq!(client.arena.outstanding(), 0);
    assert_eq!(server.arena.outstanding(), 0);
}

#[test]
fn each_side_is_taken_once_per_process() {
    let region = Region::create(&small_layout()).unwrap();
    let (a, b) = (
        Region::attach(dup(&region)).unwrap(),
        Region::attach(dup(&region)).unwrap(),
    );
    let h = *region.header();
    let (own, peer) = client_arenas(&h);
    let client = region.into_client(own, peer).unwrap();
    let (own, peer) = client_arenas(&h);
    let e = a.into_client(own, peer).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("Client side"), "{e}");
    // Once every handle of the first client is gone, the side is free.
    drop(client);
    let (own, peer) = client_arenas(&h);
    let client = b.into_client(own, peer).unwrap();
    drop(client);
}

#[test]
fn endpoints_outlive_the_region_fd() {
    let region = Region::create(&small_layout()).unwrap();
    let peer = Region::attach(dup(&region)).unwrap();
    let (mut client, mut server) = sides(region, peer);
    // Move halves into other threads: the mapping stays alive.
    let t = std::thread::spawn(move || {
        client.tx.push(Desc::default()).unwrap();
        client.arena
    });
    let arena = t.join().unwrap();
    assert_eq!(server.rx.pop().unwrap(), Some(Desc::default()));
    arena.copy_to(0, b"still mapped").unwrap();
    let mut buf = [0u8; 12];
    server.peer_arena.copy_from(0, &mut buf).unwrap();
    assert_eq!(&buf, b"still mapped");
}

#[test]
fn create_rejects_bad_layouts() {
    let e = Region::create(&RegionLayout::new(3, 16, 4096, 4096)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("request_ring"), "{e}");
    let e = Region::create(&RegionLayout::new(16, 16, u64::MAX - 10, 4096)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("too large"), "{e}");
}

#[test]
fn attach_rejects_unsealed_memfd() {
    let header = *Region::create(&small_layout()).unwrap().header();
    // Sealable but not sealed.
    let e = attach_err(
        memfd(header.size, true, SealFlags::empty(), Some(header)),
        "not sealed",
    );
    assert!(matches!(e, RegionError::Unsealed { found: 0, .. }), "{e:?}");
    // Made without MFD_ALLOW_SEALING: only F_SEAL_SEAL is set.
    let e = attach_err(
        memfd(header.size, false, SealFlags::empty(), Some(header)),
        "not sealed",
    );
    let missing = (SealFlags::SHRINK | SealFlags::GROW).bits();
    assert!(
        matches!(e, RegionError::Unsealed { missing: m, .. } if m == missing),
        "{e:?}"
    );
    // Shrink and grow sealed but seals still open.
    let e = attach_err(
        memfd(
            header.size,
            true,
            SealFlags::SHRINK | SealFlags::GROW,
            Some(header),
        ),
        "not sealed",
    );
    assert!(
        matches!(e, RegionError::Unsealed { missing: m, .. } if m == SealFlags::SEAL.bits()),
        "{e:?}"
    );
}

#[test]
fn attach_rejects_write_sealed_and_non_memfd() {
    let header = *Region::create(&small_layout()).unwrap().header();
    let e = attach_err(
        memfd(
            header.size,
            true,
            all_seals() | SealFlags::WRITE,
            Some(header),
        ),
        "write-sealed",
    );
    assert!(matches!(e, RegionError::WriteSealed { .. }), "{e:?}");
    let (sock, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = attach_err(OwnedFd::from(sock), "does not support seals");
    assert_eq!(e, RegionError::NotSealable);
}

#[test]
fn attach_rejects_tiny_and_unaligned_files() {
    let e = attach_err(
        memfd(100, true, all_seals(), None),
        "smaller than its header page",
    );
    assert!(
        matches!(e, RegionError::TooSmall { size: 100, .. }),
        "{e:?}"
    );
    // A file size off the page grid, with a header that agrees with it.
    let mut header = *Region::create(&small_layout()).unwrap().header();
    header.size += 100;
    let e = attach_err(
        memfd(header.size, true, all_seals(), Some(header)),
        "field size",
    );
    assert!(
        matches!(e, RegionError::Misaligned { field: "size", .. }),
        "{e:?}"
    );
}

#[test]
fn attach_rejects_bad_magic_and_version() {
    let e = attach_err(forged(|h| h.magic = 0x1234), "magic");
    assert_eq!(e, RegionError::BadMagic { found: 0x1234 });
    let e = attach_err(forged(|h| h.version = 99), "version 99");
    assert_eq!(e, RegionError::BadVersion { found: 99 });
}

#[test]
fn attach_rejects_size_mismatch() {
    let page = page_size();
    let mut actual = 0;
    let e = attach_err(
        forged(|h| {
            actual = h.size;
            h.size += page;
        }),
        "field size",
    );
    assert_eq!(
        e,
        RegionError::SizeMismatch {
            header: actual + page,
            actual
        }
    );
}

#[test]
fn attach_rejects_misaligned_and_empty_areas() {
    let e = attach_err(
        forged(|h| h.response_ring.offset += 64),
        "response_ring.offset",
    );
    assert!(matches!(e, RegionError::Misaligned { .. }), "{e:?}");
    let e = attach_err(forged(|h| h.request_ring.len -= 1), "request_ring.len");
    assert!(matches!(e, RegionError::Misaligned { .. }), "{e:?}");
    let e = attach_err(
        forged(|h| h.response_ring.len = 0),
        "response_ring.len is 0",
    );
    assert_eq!(
        e,
        RegionError::EmptyArea {
            area: "response_ring"
        }
    );
    let e = attach_err(forged(|h| h.server_arena_len -= 1), "server_arena_len");
    assert!(matches!(e, RegionError::Misaligned { .. }), "{e:?}");
    let e = attach_err(forged(|h| h.client_arena_len = 0), "client_arena.len is 0");
    assert_eq!(
        e,
        RegionError::EmptyArea {
            area: "client_arena"
        }
    );
}

#[test]
fn attach_rejects_out_of_range_areas() {
    let page = page_size();
    // Past the end of the region.
    let e = attach_err(forged(|h| h.response_ring.len += page), "response_ring");
    assert!(matches!(e, RegionError::OutOfRange { .. }), "{e:?}");
    // Starting far beyond it.
    let e = attach_err(forged(|h| h.request_ring.offset = 1 << 40), "request_ring");
    assert!(matches!(e, RegionError::OutOfRange { .. }), "{e:?}");
    // Inside the header page.
    let e = attach_err(forged(|h| h.request_ring.offset = 0), "request_ring");
    assert!(
        matches!(e, RegionError::OutOfRange { offset: 0, .. }),
        "{e:?}"
    );
}

#[test]
fn attach_rejects_offsets_that_overflow() {
    let page = page_size();
    let e = attach_err(
        forged(|h| {
            h.response_ring.offset = u64::MAX - page + 1; // page-aligned
            h.response_ring.len = 2 * page;
        }),
        "overflows u64",
    );
    assert!(
        matches!(
            e,
            RegionError::Overflow {
                area: "response_ring",
                ..
            }
        ),
        "{e:?}"
    );
    let e = attach_err(
        forged(|h| {
            h.request_ring.offset = page;
            h.request_ring.len = u64::MAX - page + 1;
        }),
        "overflows u64",
    );
    assert!(matches!(e, RegionError::Overflow { .. }), "{e:?}");
}

#[test]
fn attach_rejects_overlapping_areas() {
    // The response ring laid over the request ring.
    let e = attach_err(
        forged(|h| h.response_ring.offset = h.request_ring.offset),
        "overlap",
    );
    assert!(matches!(e, RegionError::Overlap { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("response_ring") && msg.contains("request_ring"),
        "{msg}"
    );
    // Areas may come in any order if they are disjoint.
    let fd = forged(|h| std::mem::swap(&mut h.request_ring, &mut h.response_ring));
    // (The rings then hold each other's headers: same capacity, so valid.)
    Region::attach(fd).unwrap();
}

/// The `RegionError` of a failed `PeerArena::attach`, after checking that
/// its message names `needle`.
fn arena_err(fd: OwnedFd, len: u64, needle: &str) -> RegionError {
    let e = PeerArena::attach(fd, "server_arena", len).expect_err("attach accepted a bad arena");
    let msg = e.to_string();
    assert!(
        msg.contains(needle),
        "error {msg:?} does not name {needle:?}"
    );
    region_error(e)
}

#[test]
fn peer_arenas_must_be_sealed_against_writes_and_sized() {
    let page = page_size();
    let len = 16 * page;
    // Sealed against resizing but still writable by any holder.
    let e = arena_err(memfd(len, true, all_seals(), None), len, "not write-sealed");
    assert!(
        matches!(
            e,
            RegionError::ArenaWritable {
                arena: "server_arena",
                ..
            }
        ),
        "{e:?}"
    );
    // Write-sealed, but it could still shrink under the mapping.
    let e = arena_err(
        memfd(len, true, SealFlags::FUTURE_WRITE, None),
        len,
        "not sealed",
    );
    assert!(matches!(e, RegionError::Unsealed { .. }), "{e:?}");
    // Not the size the header gives.
    let e = arena_err(
        memfd(len, true, all_seals() | SealFlags::FUTURE_WRITE, None),
        len + page,
        "but the region header gives",
    );
    assert_eq!(
        e,
        RegionError::ArenaSizeMismatch {
            arena: "server_arena",
            header: len + page,
            actual: len
        }
    );
    // Not a memfd at all.
    let (sock, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = arena_err(OwnedFd::from(sock), len, "does not support seals");
    assert_eq!(e, RegionError::NotSealable);
    // F_SEAL_WRITE (nobody writes, not even the creator) is accepted.
    let fd = memfd(len, true, all_seals() | SealFlags::WRITE, None);
    let peer = PeerArena::attach(fd, "server_arena", len).unwrap();
    assert_eq!(peer.len(), len);
}

#[test]
fn into_a_side_checks_the_arena_sizes_against_the_header() {
    let region = Region::create(&small_layout()).unwrap();
    let h = *region.header();
    let own = OwnArena::create(h.client_arena_len + page_size()).unwrap();
    let (_, peer) = arena_pair(&h, "server_arena");
    let e = region.into_client(own, peer).unwrap_err();
    assert!(matches!(
        region_error(e),
        RegionError::ArenaSizeMismatch {
            arena: "client_arena",
            ..
        }
    ),);
}

/// `errno` of a libc call that returned -1 (or MAP_FAILED).
fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[test]
fn only_the_owner_can_write_its_arena() {
    let len = 4 * page_size();
    let own = OwnArena::create(len).unwrap();
    let fd = own.fd().try_clone_to_owned().unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let n = len as usize;
    // Every way a holder of the fd (the peer) could write the bytes fails.
    // SAFETY: mmap with a null hint makes a new mapping or fails; it
    // touches no memory of ours.
    let shared_rw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            raw,
            0,
        )
    };
    assert_eq!(
        shared_rw,
        libc::MAP_FAILED,
        "a writable shared mapping was allowed"
    );
    assert_eq!(errno(), libc::EPERM);
    // SAFETY: as above: a new read-only mapping, unmapped at the end.
    let ro = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n,
            libc::PROT_READ,
            libc::MAP_SHARED,
            raw,
            0,
        )
    };
    assert_ne!(ro, libc::MAP_FAILED, "{}", io::Error::last_os_error());
    // SAFETY: `ro .. ro + n` is our own mapping, no Rust reference points
    // into it; the call is expected to fail (if it succeeded, nothing
    // would write through the mapping).
    let protected = unsafe { libc::mprotect(ro, n, libc::PROT_READ | libc::PROT_WRITE) };
    assert_eq!(protected, -1);
    assert_eq!(errno(), libc::EACCES);
    // SAFETY: as for mprotect: our mapping, no references into it.
    assert_eq!(unsafe { libc::madvise(ro, n, libc::MADV_REMOVE) }, -1);
    assert_eq!(errno(), libc::EACCES);
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on our own fd touches no memory of ours.
    assert_eq!(unsafe { libc::fallocate(raw, punch, 0, 4096) }, -1);
    assert_eq!(errno(), libc::EPERM);
    let e = File::from(fd.try_clone().unwrap())
        .write_at(b"x", 0)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let e = ftruncate(&fd, 0).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EPERM);
    // Reopened through /proc with write access: still refused.
    let reopened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{raw}"))
        .unwrap();
    let e = reopened.write_at(b"x", 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    // The owner's own mapping still writes, and the read-only view sees it.
    let peer = PeerArena::attach(fd, "client_arena", len).unwrap();
    let arena = own.into_arena();
    arena.copy_to(100, b"owner writes").unwrap();
    let mut buf = [0u8; 12];
    peer.mem().copy_from(100, &mut buf).unwrap();
    assert_eq!(&buf, b"owner writes");
    let mut seen = [0u8; 12];
    // SAFETY: `ro` maps `n` bytes, readable; 100 + 12 <= n.
    unsafe { std::ptr::copy_nonoverlapping(ro.cast::<u8>().add(100), seen.as_mut_ptr(), 12) };
    assert_eq!(&seen, b"owner writes");
    // SAFETY: our mapping, unmapped once, no references into it remain.
    assert_eq!(unsafe { libc::munmap(ro, n) }, 0);
}

#[test]
fn attach_rejects_a_corrupt_ring() {
    let region = Region::create(&small_layout()).unwrap();
    let h = *region.header();
    let file = File::from(dup(&region));
    // The request ring's magic.
    file.write_all_at(&0xdead_beef_u32.to_ne_bytes(), h.request_ring.offset)
        .unwrap();
    let e = attach_err(dup(&region), "request_ring");
    assert_eq!(
        e,
        RegionError::Ring {
            area: "request_ring",
            error: RingError::BadMagic { found: 0xdead_beef }
        }
    );
    // A ring area too small for the capacity its ring header claims (256
    // entries of 32 bytes need more than a page).
    let layout = RegionLayout::new(256, 16, 4096, 4096);
    let e = attach_err(
        forged_with(&layout, |h| h.request_ring.len = page_size()),
        "request_ring",
    );
    assert!(
        matches!(
            e,
            RegionError::Ring {
                error: RingError::TooSmall { .. },
                ..
            }
        ),
        "{e:?}"
    );
}
