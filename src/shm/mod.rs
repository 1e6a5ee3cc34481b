//! Shared-memory regions between two processes: a sealed memfd holding a
//! header, a request ring and a response ring; one arena memfd per side,
//! written by its owner alone; and the handshake that passes them over a
//! Unix socket.
//!
//! This module owns the region's memory format (the header and where the
//! areas lie), creating and sealing the memfds, validating what a peer
//! sends, the arena allocator, bounds-checked access to arena bytes, and
//! fd passing with credential checks. The rings themselves are
//! [`crate::ring`]'s. It must never schedule, block on anything but the
//! handshake socket, know about green threads or the IPC protocol's
//! opcodes, trust a value read from shared memory without checking it,
//! keep allocator state in shared memory, or panic because of what a peer
//! wrote.
//!
//! ```
//! # #[cfg(not(miri))] {
//! use std::os::unix::net::UnixStream;
//! use green::shm::{self, Desc, OwnArena, PeerArena, Region, RegionLayout};
//!
//! // The creator (here the server) makes a region and its own arena and
//! // hands both memfds over a socket.
//! let (a, b) = UnixStream::pair()?;
//! let region = Region::create(&RegionLayout::new(64, 64, 1 << 16, 1 << 16))?;
//! let h = *region.header();
//! let server_arena = OwnArena::create(h.server_arena_len)?;
//! shm::send_fds(&a, &[region.fd(), server_arena.fd()], b"hello")?;
//!
//! // The peer (normally another process) checks who sent them, attaches
//! // and validates, maps the server's arena read-only, and answers with
//! // an arena of its own.
//! shm::CredentialPolicy::SameUid.verify(&b)?;
//! let (fds, payload) = shm::recv_fds(&b, 2)?;
//! assert_eq!(payload, b"hello");
//! let [region_fd, arena_fd]: [_; 2] = fds.try_into().unwrap();
//! let peer_region = Region::attach(region_fd)?;
//! let server_view = PeerArena::attach(arena_fd, "server_arena", h.server_arena_len)?;
//! let client_arena = OwnArena::create(h.client_arena_len)?;
//! shm::send_fd(&b, client_arena.fd(), b"")?;
//! let mut client = peer_region.into_client(client_arena, server_view)?;
//!
//! let (fd, _) = shm::recv_fd(&a)?;
//! let client_view = PeerArena::attach(fd, "client_arena", h.client_arena_len)?;
//! let mut server = region.into_server(server_arena, client_view)?;
//!
//! // A request: the body in the client arena, a descriptor on the ring.
//! let body = client.arena.alloc(5).unwrap();
//! client.arena.copy_to(body.offset, b"ping!")?;
//! let desc = Desc { id: 1, opcode: 7, flags: 0, offset: body.offset, len: body.len };
//! client.tx.push(desc).unwrap();
//!
//! // The server reads the body through a bounds-checked copy.
//! let req = server.rx.pop()?.unwrap();
//! let mut buf = vec![0; req.len as usize];
//! server.peer_arena.copy_from(req.offset, &mut buf)?;
//! assert_eq!(buf, b"ping!");
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Layout
//!
//! `P` is the page size. The region's areas start on page boundaries and
//! are whole numbers of pages; the header page holds a [`RegionHeader`]
//! of native-endian `u64`s and zeros:
//!
//! ```text
//!  region memfd (made by the server; both sides map it read-write)
//!  offset
//!       0 +-------+---------+------+--------------+---------------+------------------+------------------+
//!         | magic | version | size | request_ring | response_ring | client_arena_len | server_arena_len |  header page:
//!         | u64   | u64     | u64  | offset, len  | offset, len   | u64              | u64              |  72 bytes, then
//!       P +-------+---------+------+--------------+---------------+------------------+------------------+  zero to P
//!         | request ring: ring::Header + capacity x Desc (32 B)                                          |  client -> server
//!         +----------------------------------------------------------------------------------------------+
//!         | response ring: ring::Header + capacity x Desc                                                |  server -> client
//!    size +----------------------------------------------------------------------------------------------+
//!
//!  client arena memfd, client_arena_len bytes     server arena memfd, server_arena_len bytes
//!  (made, mapped read-write and sealed by the     (made, mapped read-write and sealed by the
//!   client; the server maps it read-only)          server; the client maps it read-only)
//!  +------------------------------------------+  +------------------------------------------+
//!  | request bodies                           |  | response bodies                          |
//!  +------------------------------------------+  +------------------------------------------+
//! ```
//!
//! Field ranges (checked by [`RegionHeader::validate`] on attach):
//! - `magic` is [`MAGIC`], `version` is [`VERSION`];
//! - `size` is the memfd's size, a multiple of `P`, at least `P`;
//! - each ring area's `offset` and `len` are multiples of `P`, `len > 0`,
//!   `offset + len` does not overflow `u64`, the area lies in `P..=size`,
//!   and the two do not overlap. [`Region::create`] puts them in the
//!   order drawn, but an attacher accepts either order;
//! - each arena length is a nonzero multiple of `P` that a mapping can
//!   have; the arena memfd must be exactly that long
//!   ([`PeerArena::attach`]).
//!
//! The rings are [`crate::ring`] rings of [`Desc`]; their own headers are
//! validated by [`RawRing::attach`](crate::ring::RawRing::attach).
//!
//! # Trust and who writes where
//!
//! The peer may write any byte of the region at any time. So:
//! - the region memfd must be sealed against shrinking and growing (else
//!   the peer could truncate it and turn our next access into `SIGBUS`);
//! - the header is read once, into a local copy, and validated; nothing
//!   reads it again;
//! - each arena is a memfd of its own with one owner, who maps it
//!   read-write and then seals it with `F_SEAL_FUTURE_WRITE` (and
//!   against resizing): from then on no other mapping can be made
//!   writable and no `write`, hole punch or `MADV_REMOVE` reaches it, for
//!   anyone holding the fd ([`OwnArena`]). The peer checks those seals
//!   and maps it read-only ([`PeerArena`]). So the owner's bytes change
//!   only when the owner writes them: an allocation it hands out as
//!   `&mut [u8]` is really exclusive (the peer may read it, never write
//!   it). The owner allocates with an [`Arena`] whose bookkeeping is in
//!   its private heap, writes an allocation's bytes and then publishes a
//!   [`Desc`] for them; the peer reads those bytes until it hands the
//!   descriptor back (the IPC layer defines how), and the owner then
//!   checks the returned offset against its outstanding allocations
//!   ([`Arena::free`], [`Arena::lookup`]);
//! - the peer's arena is still the peer's to write at any time, so safe
//!   code never holds a `&[u8]` over it: [`PeerMem`] copies bytes out,
//!   bounds-checked in `u64`, with the processor's string move inside
//!   `asm!` (x86-64) or atomic word accesses (elsewhere, and under Miri).
//!   Its `unsafe` slice accessor is for zero-copy users who can uphold
//!   that nobody writes the bytes meanwhile.
//!
//! Within one process, each side of a region can be taken once at a time
//! (the ring layer's one-producer-one-consumer rule), even through two
//! [`Region`]s of the same memfd.

mod arena;
mod desc;
mod error;
mod handshake;
pub(crate) use self::handshake::send_all;
mod layout;
mod mem;
mod region;

pub use self::arena::{Alloc, Arena, ArenaFull, UnknownAlloc, GRANULE};
pub use self::desc::Desc;
pub use self::error::RegionError;
pub use self::handshake::{
    peer_credentials, recv_fd, recv_fds, send_fd, send_fds, CredentialPolicy, PeerCredentials,
    MAX_FDS, MAX_PAYLOAD,
};
pub use self::layout::{
    Area, RegionHeader, RegionLayout, AREA_NAMES, ARENA_NAMES, HEADER_BYTES, HEADER_WORDS, MAGIC,
    VERSION,
};
pub use self::mem::{ArenaMem, OutOfBounds, PeerMem, ARENA_ALIGN, PREFETCH_MAX};
pub use self::region::{page_size, Endpoint, OwnArena, PeerArena, Region, Role};
