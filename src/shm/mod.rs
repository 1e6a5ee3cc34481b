//! Shared-memory regions between two processes: a sealed memfd holding a
//! header, a request ring, a response ring and two data arenas, plus the
//! handshake that passes it over a Unix socket.
//!
//! This module owns the region's memory format (the header and where the
//! areas lie), creating and sealing the memfd, validating a region received
//! from a peer, the arena allocator, bounds-checked access to arena bytes,
//! and fd passing with credential checks. The rings themselves are
//! [`crate::ring`]'s. It must never schedule, block on anything but the
//! handshake socket, know about green threads or the IPC protocol's
//! opcodes, trust a value read from shared memory without checking it,
//! keep allocator state in shared memory, or panic because of what a peer
//! wrote.
//!
//! ```
//! # #[cfg(not(miri))] {
//! use std::os::unix::net::UnixStream;
//! use green::shm::{self, Desc, Region, RegionLayout};
//!
//! // The creator makes a region and hands its memfd over a socket.
//! let (a, b) = UnixStream::pair()?;
//! let region = Region::create(&RegionLayout::new(64, 64, 1 << 16, 1 << 16))?;
//! shm::send_fd(&a, region.fd(), b"hello")?;
//! let mut client = region.into_client()?;
//!
//! // The peer (normally another process) checks who sent it, attaches and
//! // validates.
//! shm::CredentialPolicy::SameUid.verify(&b)?;
//! let (fd, payload) = shm::recv_fd(&b)?;
//! assert_eq!(payload, b"hello");
//! let mut server = Region::attach(fd)?.into_server()?;
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
//! `P` is the page size. Every area starts on a page boundary and is a
//! whole number of pages; the header page holds a [`RegionHeader`] of
//! native-endian `u64`s and zeros:
//!
//! ```text
//!  offset
//!       0 +-------+---------+------+--------------+--------------+-------------+-------------+
//!         | magic | version | size | request_ring | response_ring| client_arena| server_arena|  header page:
//!         | u64   | u64     | u64  | offset, len  | offset, len  | offset, len | offset, len |  88 bytes, then
//!       P +-------+---------+------+--------------+--------------+-------------+-------------+  zero to P
//!         | request ring: ring::Header + capacity x Desc (32 B)                              |  client -> server
//!         +----------------------------------------------------------------------------------+
//!         | response ring: ring::Header + capacity x Desc                                    |  server -> client
//!         +----------------------------------------------------------------------------------+
//!         | client arena: request bodies; the client allocates and writes, the server reads   |
//!         +----------------------------------------------------------------------------------+
//!         | server arena: response bodies; the server allocates and writes, the client reads  |
//!    size +----------------------------------------------------------------------------------+
//! ```
//!
//! Field ranges (checked by [`RegionHeader::validate`] on attach):
//! - `magic` is [`MAGIC`], `version` is [`VERSION`];
//! - `size` is the memfd's size, a multiple of `P`, at least `P`;
//! - each area's `offset` and `len` are multiples of `P`, `len > 0`,
//!   `offset + len` does not overflow `u64`, the area lies in `P..=size`,
//!   and no two areas overlap. [`Region::create`] puts them in the order
//!   drawn, but an attacher accepts any order.
//!
//! The rings are [`crate::ring`] rings of [`Desc`]; their own headers are
//! validated by [`RawRing::attach`](crate::ring::RawRing::attach).
//!
//! # Trust and who writes where
//!
//! The peer may write any byte of the region at any time. So:
//! - the memfd must be sealed against shrinking and growing (else the peer
//!   could truncate it and turn our next access into `SIGBUS`);
//! - the header is read once, into a local copy, and validated; nothing
//!   reads it again;
//! - each arena has one owner, who allocates in it with an [`Arena`] whose
//!   bookkeeping is in the owner's private heap. The owner writes an
//!   allocation's bytes and then publishes a [`Desc`] for them; the peer
//!   reads those bytes until it hands the descriptor back (the IPC layer
//!   defines how), and the owner then checks the returned offset against
//!   its outstanding allocations ([`Arena::free`], [`Arena::lookup`]);
//! - safe code never holds a `&[u8]` over shared memory: [`ArenaMem`]
//!   copies bytes in and out, bounds-checked in `u64`, with the
//!   processor's string move inside `asm!` (x86-64) or atomic word
//!   accesses (elsewhere, and under Miri). Its `unsafe` slice accessors are for zero-copy users who can
//!   uphold that nobody writes the bytes meanwhile.
//!
//! Within one process, each side of a region can be taken once at a time
//! (the ring layer's one-producer-one-consumer rule), even through two
//! [`Region`]s of the same memfd.

mod arena;
mod desc;
mod error;
mod handshake;
mod layout;
mod mem;
mod region;

pub use self::arena::{Alloc, Arena, ArenaFull, UnknownAlloc, GRANULE};
pub use self::desc::Desc;
pub use self::error::RegionError;
pub use self::handshake::{
    peer_credentials, recv_fd, send_fd, CredentialPolicy, PeerCredentials, MAX_PAYLOAD,
};
pub use self::layout::{
    Area, RegionHeader, RegionLayout, AREA_NAMES, HEADER_BYTES, HEADER_WORDS, MAGIC, VERSION,
};
pub use self::mem::{ArenaMem, OutOfBounds, ARENA_ALIGN, PREFETCH_MAX};
pub use self::region::{page_size, Endpoint, Region, Role};
