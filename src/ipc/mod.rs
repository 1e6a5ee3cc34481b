//! Blocking IPC between processes over shared-memory rings: a call made on
//! a green thread blocks only that green thread.
//!
//! [`Server::bind`] listens on a Unix socket; [`Client::connect`] connects
//! and sends an eight-byte hello (a magic word and the CPU its lane's
//! carrier is pinned to, if any; a connection without one is closed after
//! [`ServerConfig::handshake_timeout`]).
//! Per connection the server creates a sealed memfd [`Region`] (a request
//! ring and a response ring) and an arena memfd of its own, checks the
//! client's `SO_PEERCRED` against a [`CredentialPolicy`] and passes both
//! with `SCM_RIGHTS`; the client checks the server's credentials too,
//! refuses regions and arenas above [`ClientConfig::max_region`] in all,
//! attaches (which validates the whole layout), maps the server's arena
//! read-only, and answers with an arena memfd of its own; the server
//! attaches it and ends the handshake with one byte (a connection it
//! cannot set up, say for want of descriptors, fails `connect` rather
//! than the first call). Each side seals
//! its arena so that only its own mapping can write it (see
//! [`OwnArena`](crate::shm::OwnArena)), and refuses an arena from the peer
//! that is not sealed that way. The socket stays open for the
//! connection's life: it is the liveness channel.
//!
//! ```no_run
//! use std::io::Write;
//! # fn main() -> std::io::Result<()> {
//! // Server process:
//! std::thread::spawn(|| {
//!     green::ipc::Server::bind("/tmp/echo.sock")?.serve(|req, resp| {
//!         resp.write_all(&req.to_vec())
//!     })
//! });
//! // Client process (any green thread, any carrier, concurrently):
//! let client = green::ipc::Client::connect("/tmp/echo.sock")?;
//! let reply = client.call(b"ping")?;
//! assert_eq!(reply.to_vec(), b"ping");
//! # Ok(()) }
//! ```
//!
//! # One call, end to end
//!
//! ```text
//! client process                          shared memfd                         server process
//! --------------                          ------------                         --------------
//! caller green thread
//!  client.call(bytes)
//!   <= 16 bytes: into the descriptor                                          reader green thread
//!   else arena.alloc + copy -----------> [client arena: body]                  (spins, then io_uring
//!   lock state (short)                                                          FUTEX_WAIT on the
//!   pending[id] = (slot on this stack)                                          request ring's word)
//!   push Desc{id, CALL, body} ---------> [request ring]  ---- pop in bulk ---->  check opcode, flags,
//!   notify (FUTEX_WAKE only if the                                               id not in flight,
//!           server set need_wakeup)                                              body in bounds
//!   unlock                                                                       queue for a handler
//!  poll the response ring itself                                                   handler(&Request,
//!   (one caller per carrier, up to                                                        &mut ResponseWriter)
//!   50 µs; the reader stands aside)                                                (may block: files,
//!                                                                                   sockets, other IPC)
//!                                      [server arena: body] <-----------------    > 16 bytes: alloc+copy
//!  pop in bulk  <----------------------- [response ring] <-- Desc{id, REPLY,    push, notify
//!                                                             key, body}
//!  check opcode, flags, id pending,
//!  body in bounds; free the request
//!  body; write the result into each
//!  caller's slot, set its done flag
//! caller sees its done flag: Ok(Response)
//!  ... reads bytes (copying) ...
//! drop(Response) --------------------->  [request ring] -- Desc{RELEASE,   --->  arena.free(key)
//!   (arena bodies only)                                       key, body}         (validated: key,
//!                                                                                 offset, len)
//! ```
//!
//! Watcher green threads (one per side) do a blocking read on the Unix
//! socket, which on a green thread is an io_uring op. EOF or an error means
//! the peer is gone (kill -9 included: the kernel closes its socket): every
//! pending call fails with [`io::ErrorKind::ConnectionReset`], later calls
//! fail at once with [`io::ErrorKind::BrokenPipe`], and the reader is woken
//! (its own futex word is bumped) so it exits and the region is unmapped.
//!
//! A server shuts down gracefully through its [`ShutdownHandle`]
//! ([`Server::shutdown_handle`]): [`serve`](Server::serve) stops
//! accepting, each connection closes once the calls its handlers are
//! running are answered, and no handler starts a call after the
//! shutdown, so a client's call either gets its answer or fails with
//! [`io::ErrorKind::ConnectionReset`] without having run (the client
//! delivers the answers on the response ring before it fails the rest).
//! [`ShutdownHandle::abort`] closes every connection at once instead.
//!
//! A server that stays alive but does not answer is not gone: a plain
//! [`Client::call`] waits for it. [`Client::call_timeout`] bounds the
//! wait (for room and for the response together) and fails with
//! [`io::ErrorKind::TimedOut`]; the call is abandoned, its late response
//! released when it comes, and the connection stays open. Dropping a
//! [`CallFuture`] abandons an async call the same way, so
//! [`crate::time::timeout`] bounds one.
//!
//! # Choices
//!
//! - **One ring pair per carrier ("lanes").** A [`Client`] opens one
//!   connection to the server per carrier of its runtime
//!   ([`ClientConfig::lanes`]), and a call goes over the lane of the
//!   carrier it is made on (calls from other threads: the first lane).
//!   Callers on different carriers then share no ring, lock, counter or
//!   arena, and a response is delivered to callers of its own carrier
//!   (no cross-carrier wake-up). One lane shared by two carriers moved
//!   its lock, counters and ring indices between CPUs on every call:
//!   alternating runs with 200 callers gave 1.6-2.3M calls/s with one
//!   lane and 2.4-2.5M with two at 64 B. Within a lane, request-ring
//!   producers (callers on that carrier, plain threads using the first
//!   lane, and `Response` drops sending `RELEASE`) are serialised by one
//!   short [`parking_lot::Mutex`] that also guards the arena's allocator
//!   and the slab of pending calls. Its critical sections are a few loads
//!   and stores, never a park, so a green mutex (whose contended path
//!   parks) would cost more than it saves. The server sees each lane as a
//!   connection of its own.
//! - **Both ends of a lane on one CPU.** With pinned carriers
//!   ([`crate::runtime::Builder::pin_carriers`], or
//!   `GREEN_PIN_CARRIERS=1` for the default runtime), or floating ones
//!   with a home each (one carrier per CPU, the default: see
//!   `pin_carriers`), a lane's hello names its carrier's CPU, and a
//!   server whose carriers are placed the same way serves that connection
//!   (reader and handlers) on its carrier pinned to, or at home on, the
//!   same CPU; otherwise connections go to the least loaded carrier. The
//!   bodies a lane carries then stay in one core's caches: the two
//!   processes take turns on that CPU instead of pulling every line of
//!   every body across cores. With 200 callers over two lanes, lanes
//!   served on the same CPUs ran 15-27% more calls/s than the same lanes
//!   each served on the other CPU (64 B to 4 KiB), and 5% more than
//!   floating carriers in the median, whose worst runs were the slow
//!   placement. In the 200-caller bench, where every call also fills and
//!   checks its bodies, pinned and floating runs came out level
//!   (BENCHMARKS.md): the kernel often places floating carriers the
//!   same way.
//! - **Floating carriers keep apart** (see
//!   [`Builder::pin_carriers`](crate::runtime::Builder::pin_carriers)):
//!   with both processes' carriers busy on two CPUs, the kernel is as
//!   content with both client carriers on one CPU and both server
//!   carriers on the other as with one of each per CPU, but the first
//!   gives the client, which does more of the work per call, half the
//!   time. Placed by hand (200 callers, 4 KiB, `ipc_client`), one client
//!   carrier per CPU ran 1.47-1.70M calls/s and both on one CPU
//!   0.59-1.10M, with a p99 of 4 ms. A carrier that finds a sibling on
//!   its CPU now moves to a CPU without one; in alternating runs of the
//!   200-caller bench at 4 KiB that took green from 984 to 820 ns per
//!   call (medians of 12). Homes then fixed which server carrier shares
//!   each client carrier's CPU: before, a lane was served on its
//!   caller's CPU or across, by chance. In three sets of 12-16
//!   alternating `ipc_client` runs (200 callers, 4 KiB) homes ÷ before
//!   was 0.97x, 1.06x and 1.06x in calls/s (paired medians); the slow
//!   runs went (before: 6 of 16 at 0.68-1.25M calls/s; with homes the
//!   slowest 1.23M), and a set of 6 gave 1.73M with homes, 1.59M before
//!   and 1.70M pinned.
//! - **Responses are matched by id**: `id = seq << 32 | slab key`. A
//!   response whose id is not a pending, unanswered call is a protocol
//!   violation. The server's check that no id is in flight twice indexes
//!   a table by the low 32 bits, the client's slot (any id is accepted;
//!   ids that do not fit the table go to a keyed hash set).
//! - **Bodies of up to [`INLINE_MAX`] (16) bytes ride in the descriptor**
//!   ([`INLINE`]): no arena allocation, no copy through shared memory, no
//!   `RELEASE`.
//! - **Who writes where**: the client writes longer request bodies in its
//!   arena and frees them when the response for that call arrives (the
//!   server reads a request body only while its handler runs, which ends
//!   before the reply is sent). The server writes longer response bodies
//!   in its arena and frees them when the client hands them back with
//!   `RELEASE`, which names the block by the key the `REPLY` gave it
//!   ([`KEY_MASK`]): the block at that key must have the offset and
//!   length named, or the `RELEASE` is a violation. Zero-length and
//!   inline bodies take no arena space and need no `RELEASE`. Each arena
//!   is a memfd that only its owner can write (sealed, mapped read-only
//!   by the peer): a body under construction is handed out as a plain
//!   `&mut [u8]` ([`RequestBuilder::as_mut_bytes`],
//!   [`ResponseWriter::write_in_place`]), filled in place with no copy
//!   and no `unsafe`. Async tasks build requests in place too:
//!   [`Client::request_builder_async`] waits for the space without
//!   blocking a thread, and [`RequestBuilder::call_async`] sends it.
//! - **Full rings and arenas**: a full ring makes its producer (a caller,
//!   or a handler replying) retry, yielding for [`SPIN`] and then sleeping
//!   with a backoff from 20 µs to 1 ms: the ring frees when the other
//!   process pops, which it does without waiting for handlers. A full
//!   arena follows [`ArenaFullPolicy`]: wait (the call parks, or the
//!   future registers its waker, and is woken by a free in that arena: a
//!   response arriving frees its request body, a `RELEASE` frees a
//!   response body; up to the policy's limit) or fail with
//!   [`io::ErrorKind::OutOfMemory`]. A body larger than the whole arena
//!   fails at once.
//! - **Request bodies in flight are held to a few MiB per lane**
//!   ([`ClientConfig::max_in_flight`], default 4 MiB): while two or more
//!   calls with arena bodies are on their way, a call whose body would
//!   take the lane past the limit waits for one of them to be answered.
//!   Callers waiting for client arena space, for room or under this
//!   limit, queue first come first served: each freed body wakes the
//!   first in line, and each that gets its space wakes the next, so a
//!   free wakes one caller, not all of them. The limit is there because
//!   the bytes in flight decide where bodies live: 200 callers with
//!   1 MiB bodies wrote 200 MiB before the server read the first, so
//!   every body went out to memory and came back; held to 4 MiB they
//!   stay in the CPU caches between writer and reader. In alternating
//!   runs of the 200-caller bench this took green in place from 92-129
//!   to 54-71 µs per call at 1 MiB, 25-37 to 13-17 µs at 256 KiB and
//!   502-566 to 315-327 µs at 4 MiB.
//! - **Handlers per connection are capped**
//!   ([`ServerConfig::max_handlers`], default 1024): calls beyond the cap
//!   queue and run on the handler green threads as they free up. A
//!   handler thread runs queued calls until none is left, and before each
//!   call starts one more handler if calls still wait and none is on its
//!   way: a call that blocks never holds up the next, while handlers that
//!   do not block drain a whole batch with a spawn or two (not one per
//!   call). Once a ringful waits, the server
//!   stops popping requests, so the client's calls wait for ring space.
//!   A client cannot make the server create threads or queue memory
//!   without bound.
//! - **Waiting callers read the response ring themselves, one per
//!   carrier**: the first waiting caller on a carrier polls the ring
//!   (whoever holds its lock pops a batch and hands each result to its
//!   caller's slot, unparking it if it sleeps) for up to 50 µs, with
//!   `yield_now`, and only then parks; the other callers on that carrier
//!   park at once. Meanwhile the reader green thread stands aside
//!   (parks); the last caller to stop polling unparks it if calls still
//!   wait. A fast response thus reaches its caller with no hand-off
//!   between threads. Letting every waiting caller poll cost more than it
//!   saved: with hundreds waiting on a carrier, each spin round switched
//!   to all of them, and a delivered result sat in its slot until its
//!   caller's turn came round (one spinner per carrier: +20-30% calls/s
//!   at 64 B to 4 KiB with 200 callers). Callers check their own slot
//!   without the lock; async calls follow the same rule.
//! - **Spinning threads give up the CPU now and then**: a spinner calls
//!   `sched_yield` every 256 checks, and every 16 once a yield has shown
//!   that another thread wants its CPU. Two spinning peers that the
//!   kernel placed on one CPU otherwise take turns only at the end of a
//!   time slice, and every call then costs one (100+ µs). A spin window
//!   counts the spinner's own time: a yield that ran another thread does
//!   not use it up (up to 2 ms of wall time in all). Otherwise, with both
//!   processes' carriers busy on two CPUs, a single yield could last a
//!   whole window, readers slept after a glance at their ring and were
//!   woken by a system call per batch: such runs made 20-35k futex calls
//!   in 2 s and ran a third as many calls (200 callers, 4 KiB).
//! - **Idle**: a reader spins for [`SPIN`] with `yield_now` between
//!   checks (other green threads on its carrier keep running), then sets
//!   the ring's `need_wakeup` flag, re-checks and waits with an io_uring
//!   `FUTEX_WAIT` (Linux 6.7+) for at most [`IDLE_TIMEOUT`], so an idle
//!   connection costs about 0% CPU and no carrier (tests/ipc_idle.rs
//!   checks both sides over an idle second). Without `FUTEX_WAIT`
//!   (older kernels, or the blocking I/O backend) the reader instead polls
//!   with `green::thread::sleep` and an exponential backoff from 20 µs to
//!   1 ms: still cheap, slower to notice the first request after idling.
//!
//! # Trust
//!
//! The peer may write anything anywhere in the region at any time. Every
//! descriptor is copied out of the ring once and checked: known opcode; an
//! id that is a pending call (client) or not already in flight (server);
//! `offset + len` inside the sender's arena in `u64` arithmetic; for
//! `RELEASE`, a block handed out, at that key, offset and length.
//! Corrupt ring indices ([`RingError`]) count the same. A violation
//! closes that connection only, with an error naming it (the server
//! reports it to [`ServerConfig::on_error`]); nothing panics. On the
//! client the call waiting on it fails with `InvalidData` and every later
//! call with `BrokenPipe`, both naming the violation. Tested both ways:
//! `tests/ipc_hostile.rs` (hostile clients against the server) and
//! `tests/ipc_hostile_server.rs` (a fake server against the client,
//! including seeded random descriptors and ring words).
//!
//! Safe code never holds a `&[u8]` the peer can still write: a peer that
//! rewrites bytes under a live `&[u8]` is undefined behaviour in Rust's
//! model (the compiler may assume they do not change). Two rules follow.
//! Bytes in the peer's arena (a [`Request`]'s or a [`Response`]'s body)
//! the peer can write at any time, so they are handed out through copying
//! accessors built on [`PeerMem::copy_from`](crate::shm::PeerMem::copy_from)
//! (`to_vec`, `read_into`, `read_at`); the zero-copy `as_bytes_unchecked`
//! is `unsafe`, sound only against a trusted, well-behaved peer that
//! leaves the bytes alone until they are handed back. Bytes in this
//! side's own arena the peer cannot write at all: the kernel refuses it
//! every way to (see [`OwnArena`](crate::shm::OwnArena)), and each side
//! refuses a peer arena not sealed that way. So a body being built in
//! one's own arena is a `&mut [u8]` in safe code; the peer may read it
//! meanwhile, which changes nothing for us.
//!
//! [`Region`]: crate::shm::Region
//! [`CredentialPolicy`]: crate::shm::CredentialPolicy

use std::fmt;
use std::io;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use self::blocks::Block;
use crate::ring::{Consumer, RingError};
use crate::shm::{CredentialPolicy, Desc, PeerMem};

/// The copying accessors of a received body ([`Request`], [`Response`]):
/// `len`, `is_empty`, `to_vec`, `read_into`, `read_at`, and the unsafe
/// zero-copy view, whose safety contract is `$safety`.
macro_rules! body_accessors {
    ($safety:literal) => {
        /// Body length in bytes.
        pub fn len(&self) -> usize {
            self.body.len()
        }

        /// Whether the body is empty.
        pub fn is_empty(&self) -> bool {
            self.body.len() == 0
        }

        /// A copy of the body.
        pub fn to_vec(&self) -> Vec<u8> {
            self.body.to_vec()
        }

        /// Copies the first `dst.len()` bytes (at most the body) into
        /// `dst`; returns how many.
        pub fn read_into(&self, dst: &mut [u8]) -> usize {
            self.body.read_into(dst)
        }

        /// Copies the bytes from `pos` on into `dst` (at most to the end
        /// of the body); returns how many, 0 at or past the end. For
        /// reading a large body in pieces through a small buffer.
        pub fn read_at(&self, pos: usize, dst: &mut [u8]) -> usize {
            self.body.read_at(pos, dst)
        }

        /// The body without a copy.
        ///
        /// # Safety
        ///
        #[doc = $safety]
        pub unsafe fn as_bytes_unchecked(&self) -> &[u8] {
            // SAFETY: the caller's contract.
            unsafe { self.body.as_bytes_unchecked() }
        }
    };
}

mod blocks;
mod client;
mod hash;
mod ids;
mod server;

pub use self::client::{BuilderFuture, CallFuture, Client, RequestBuilder, Response};
pub use self::server::{Request, ResponseWriter, Server, ShutdownHandle};

/// Opcode of a request descriptor: a call, body in the client arena.
pub const CALL: u32 = 1;
/// Opcode of a request descriptor: hands a response body back; `flags`,
/// `offset` and `len` are the response's (`flags`: the block's key, see
/// [`KEY_MASK`]).
pub const RELEASE: u32 = 2;
/// Opcode of a response descriptor: the handler succeeded, body in the
/// server arena (or inline).
pub const REPLY: u32 = 3;
/// Opcode of a response descriptor: the handler failed; `flags` holds its
/// raw OS error code (0 if none), no body.
pub const ERROR: u32 = 4;

/// Flag of a `CALL` or `REPLY` descriptor: the body rides in the
/// descriptor itself, in the bytes of its `offset` and `len` fields (native
/// byte order, `offset` first); the low bits of `flags` are its length,
/// 1 to [`INLINE_MAX`]. Such a body takes no arena space and needs no
/// `RELEASE`. Without this flag the body is `offset .. offset + len` in
/// the sender's arena, and `flags` is 0 for a `CALL` and the block's key
/// for a `REPLY` (see [`KEY_MASK`]).
pub const INLINE: u32 = 1 << 31;
/// The bits of a `REPLY`'s `flags` that name its body's block when it is
/// in the server arena: the block's index in the server's table of blocks
/// handed out, which the client sends back in the `RELEASE`. The server
/// checks a `RELEASE` by that index (the block at the key must have the
/// offset and length named), without a hash lookup. Other bits, but for
/// [`INLINE`], must be 0.
pub const KEY_MASK: u32 = (1 << 28) - 1;
/// The longest body carried inline (see [`INLINE`]).
pub const INLINE_MAX: usize = 16;

/// How long a reader spins (yielding to its carrier's other green
/// threads) before it sleeps on the ring's futex word.
pub const SPIN: Duration = Duration::from_micros(50);
/// The longest a reader sleeps before re-checking its connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(100);

/// The handshake payload that rides with the memfds (the server's region
/// and arena, then the client's arena). Public for tests that play a
/// misbehaving peer.
#[doc(hidden)]
pub const PROTOCOL: &[u8] = b"green-ipc/7";

/// The byte a server sends once a connection is set up on its side (the
/// client's arena attached, the liveness watcher running): the client's
/// `connect` returns only after it, so a connection the server could not
/// set up (out of descriptors, a bad arena) fails at `connect`, never at
/// the first call. Public for tests that play a server by hand.
#[doc(hidden)]
pub const READY: u8 = b'!';

/// Waits up to `timeout` for the server's [`READY`].
fn recv_ready(sock: &std::os::unix::net::UnixStream, timeout: Duration) -> io::Result<()> {
    use std::io::Read;
    let mut b = [0u8; 1];
    match handshake_wait(
        sock,
        timeout,
        "ipc server did not finish the handshake",
        || (&*sock).read(&mut b),
    )? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "ipc server closed the connection before setting it up (see its error log)",
        )),
        _ if b[0] == READY => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ipc server ended the handshake with an unknown byte",
        )),
    }
}

/// The first four bytes a client sends on a new connection.
const HELLO_MAGIC: [u8; 4] = *b"gIPC";
/// The hello's CPU field when the lane's carrier is not pinned.
const NO_CPU: u32 = u32::MAX;
/// Bytes of a client's hello.
const HELLO_LEN: usize = 8;

/// The hello a client sends as soon as it connects, before the server
/// sends the region: [`HELLO_MAGIC`], then the CPU that the carrier
/// calling over this connection is pinned to (native-endian `u32`,
/// `u32::MAX` for none). A server whose carriers are pinned serves the
/// connection on its carrier pinned to that CPU, so both ends of the lane
/// share one core's caches. Public for tests that play a client by hand.
#[doc(hidden)]
pub fn hello(cpu: Option<usize>) -> [u8; HELLO_LEN] {
    let cpu = cpu.and_then(|c| u32::try_from(c).ok()).unwrap_or(NO_CPU);
    let mut b = [0u8; HELLO_LEN];
    b[..4].copy_from_slice(&HELLO_MAGIC);
    b[4..].copy_from_slice(&cpu.to_ne_bytes());
    b
}

/// The CPU named by a client's hello.
fn parse_hello(b: &[u8; HELLO_LEN]) -> io::Result<Option<usize>> {
    if b[..4] != HELLO_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ipc client did not start with a hello (not a green ipc client?)",
        ));
    }
    let cpu = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
    Ok((cpu != NO_CPU).then_some(cpu as usize))
}

/// What a call does when its arena has no room for the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaFullPolicy {
    /// Wait for space (responses being released) for up to this long,
    /// then fail with [`io::ErrorKind::OutOfMemory`].
    Wait(Duration),
    /// Fail at once with [`io::ErrorKind::OutOfMemory`].
    Fail,
}

impl Default for ArenaFullPolicy {
    /// Wait up to 30 s.
    fn default() -> Self {
        ArenaFullPolicy::Wait(Duration::from_secs(30))
    }
}

/// A hook that receives the error that closed a connection.
pub type ErrorHook = Arc<dyn Fn(&io::Error) + Send + Sync>;

/// Server settings: region sizes, who may connect, what to do when the
/// response arena is full, where connection errors go.
#[derive(Clone)]
pub struct ServerConfig {
    ring_entries: u32,
    max_handlers: usize,
    max_connections: usize,
    client_arena: u64,
    server_arena: u64,
    credentials: CredentialPolicy,
    arena_full: ArenaFullPolicy,
    handshake_timeout: Duration,
    on_error: ErrorHook,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("ring_entries", &self.ring_entries)
            .field("max_handlers", &self.max_handlers)
            .field("max_connections", &self.max_connections)
            .field("client_arena", &self.client_arena)
            .field("server_arena", &self.server_arena)
            .field("credentials", &self.credentials)
            .field("arena_full", &self.arena_full)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    /// 1024-entry rings, up to 1024 handlers at once per connection, no
    /// limit on connections, 4 MiB per arena, same uid only, wait up to
    /// 30 s for response space, 10 s for a client's hello, errors printed
    /// to stderr.
    fn default() -> Self {
        ServerConfig {
            ring_entries: 1024,
            max_handlers: 1024,
            max_connections: usize::MAX,
            client_arena: 4 << 20,
            server_arena: 4 << 20,
            credentials: CredentialPolicy::SameUid,
            arena_full: ArenaFullPolicy::default(),
            handshake_timeout: Duration::from_secs(10),
            on_error: Arc::new(|e| eprintln!("green::ipc server: {e}")),
        }
    }
}

impl ServerConfig {
    /// Entries in each ring (a power of two).
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.ring_entries = n;
        self
    }

    /// The most handler green threads one connection runs at once
    /// (default 1024, at least 1). Calls beyond that queue (at most one
    /// ringful; then the server stops taking requests off the ring until a
    /// handler finishes) and run on the handler threads as they free up,
    /// so a client cannot make the server create threads without bound.
    pub fn max_handlers(mut self, n: usize) -> Self {
        self.max_handlers = n.max(1);
        self
    }

    /// The most connections served at once (default: no limit; at least
    /// 1). Each lane of a client is a connection of its own. A client
    /// past the limit is closed after its hello and its credentials are
    /// checked, before any memory is made for it: its `connect` fails with
    /// [`io::ErrorKind::UnexpectedEof`], as for a refused peer, and
    /// [`on_error`](Self::on_error) gets a
    /// [`io::ErrorKind::ConnectionRefused`] error naming the limit. A
    /// connection counts from when its hello and credentials pass until
    /// it closes, so the limit bounds what served connections take
    /// (regions, arenas, handler threads, descriptors); a socket that has
    /// not sent its hello holds one descriptor, for at most
    /// [`handshake_timeout`](Self::handshake_timeout).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Bytes of the client arena (request bodies).
    pub fn client_arena(mut self, bytes: u64) -> Self {
        self.client_arena = bytes;
        self
    }

    /// Bytes of the server arena (response bodies).
    pub fn server_arena(mut self, bytes: u64) -> Self {
        self.server_arena = bytes;
        self
    }

    /// Which clients are accepted (default: same uid).
    pub fn credentials(mut self, policy: CredentialPolicy) -> Self {
        self.credentials = policy;
        self
    }

    /// What a handler's reply does when the server arena is full.
    pub fn arena_full(mut self, policy: ArenaFullPolicy) -> Self {
        self.arena_full = policy;
        self
    }

    /// How long a new connection may take to send its hello (the first
    /// bytes a client sends) before the server closes it with
    /// [`io::ErrorKind::TimedOut`] (default 10 s). The wait blocks only
    /// that connection's green thread.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Called with the error that closed a connection (a refused peer, a
    /// protocol violation) or that a failed `accept` gave (out of file
    /// descriptors: [`Server::serve`] goes on); not called for a peer that
    /// simply goes away. Default: a line on stderr.
    pub fn on_error(mut self, hook: impl Fn(&io::Error) + Send + Sync + 'static) -> Self {
        self.on_error = Arc::new(hook);
        self
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    credentials: CredentialPolicy,
    max_region: u64,
    arena_full: ArenaFullPolicy,
    lanes: Option<usize>,
    max_in_flight: u64,
    handshake_timeout: Duration,
}

/// Default of [`ClientConfig::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 4 << 20;

impl Default for ClientConfig {
    /// Same-uid servers only, up to 1 GiB mapped per lane, wait up to 30 s for
    /// request space, one lane per carrier, at most
    /// [`DEFAULT_MAX_IN_FLIGHT`] bytes of request bodies in flight per lane,
    /// wait up to 30 s for the server's region.
    fn default() -> Self {
        ClientConfig {
            credentials: CredentialPolicy::SameUid,
            max_region: 1 << 30,
            arena_full: ArenaFullPolicy::default(),
            lanes: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

impl ClientConfig {
    /// Which servers are accepted (default: same uid).
    pub fn credentials(mut self, policy: CredentialPolicy) -> Self {
        self.credentials = policy;
        self
    }

    /// The most bytes one lane agrees to map (default 1 GiB): the region
    /// and both arenas together (the client creates its own arena at the
    /// size the server asks for), so a hostile server cannot make it map
    /// or create a huge area.
    pub fn max_region(mut self, bytes: u64) -> Self {
        self.max_region = bytes;
        self
    }

    /// What a call does when the client arena is full.
    pub fn arena_full(mut self, policy: ArenaFullPolicy) -> Self {
        self.arena_full = policy;
        self
    }

    /// How many lanes the client opens (at least 1). Default: one per
    /// carrier of the runtime `connect` is called on (the default runtime
    /// off a carrier). A call goes over lane `carrier index % lanes`; each
    /// lane is a connection of its own on the server (its own region, so
    /// `max_region` and the server's arena sizes and handler cap apply per
    /// lane).
    pub fn lanes(mut self, n: usize) -> Self {
        self.lanes = Some(n.max(1));
        self
    }

    /// The most bytes of request bodies a lane keeps in its arena at once
    /// while two or more calls with such bodies are on their way (default
    /// [`DEFAULT_MAX_IN_FLIGHT`], 4 MiB; `u64::MAX`: no limit). A call
    /// whose body would go past it waits, first come first served, until
    /// calls in flight are answered; bodies short enough to travel inline
    /// never wait. This is flow control, not a shortage: the wait has no
    /// deadline ([`ArenaFullPolicy`] does not apply) and always ends,
    /// since it waits only on calls already sent. A body larger than the
    /// limit is sent when fewer than two others are in flight.
    ///
    /// Why: many callers with large bodies would otherwise each write
    /// theirs at once, and the bytes in flight (200 callers with 1 MiB
    /// each: 200 MiB each way) outgrow the CPU caches, so every body goes
    /// out to memory and back. Held to a few MiB, each body is still in
    /// cache when the server reads it, and the answer when the caller
    /// reads that (BENCHMARKS.md measures the difference).
    pub fn max_in_flight(mut self, bytes: u64) -> Self {
        self.max_in_flight = bytes;
        self
    }

    /// How long `connect` waits for the server to send its region after
    /// the client's hello, per lane (default 30 s); then `connect` fails
    /// with [`io::ErrorKind::TimedOut`]. The wait does not block the
    /// carrier.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// A body on its way out: inline in the descriptor, or in our arena.
#[derive(Clone, Copy, Debug)]
enum Out {
    /// Up to [`INLINE_MAX`] bytes (0: no body).
    Inline([u8; INLINE_MAX], u8),
    /// Written in our arena.
    Arena(Block),
}

impl Out {
    /// `bytes` inline, if short enough.
    fn inline(bytes: &[u8]) -> Option<Out> {
        (bytes.len() <= INLINE_MAX).then(|| {
            let mut b = [0u8; INLINE_MAX];
            b[..bytes.len()].copy_from_slice(bytes);
            Out::Inline(b, bytes.len() as u8)
        })
    }

    /// The arena block to free once the peer is done with it.
    fn arena_block(self) -> Option<Block> {
        match self {
            Out::Inline(..) => None,
            Out::Arena(a) => Some(a),
        }
    }

    /// The descriptor that carries this body; a `REPLY` names an arena
    /// block by its key (see [`KEY_MASK`]).
    fn desc(self, id: u64, opcode: u32) -> Desc {
        match self {
            Out::Inline(_, 0) => Desc {
                id,
                opcode,
                flags: 0,
                offset: 0,
                len: 0,
            },
            Out::Inline(b, n) => {
                let (lo, hi) = b.split_at(8);
                Desc {
                    id,
                    opcode,
                    flags: INLINE | u32::from(n),
                    offset: u64::from_ne_bytes(lo.try_into().expect("8 bytes")),
                    len: u64::from_ne_bytes(hi.try_into().expect("8 bytes")),
                }
            }
            Out::Arena(a) => Desc {
                id,
                opcode,
                flags: if opcode == REPLY { a.key & KEY_MASK } else { 0 },
                offset: a.offset,
                len: a.len,
            },
        }
    }
}

/// Bytes of a received body: inline (a private copy) or in an arena the
/// peer can write, reached only through copies (see the [module
/// docs](self#trust)). `M` holds the peer's arena: for a response, the
/// lane it came over (which it keeps alive, and which it hands the body
/// back to); for a request, a `&PeerMem` borrowed from the connection,
/// lent to its handler for the call (no reference count touched per
/// call).
#[derive(Clone)]
enum Body<M = PeerMem> {
    Inline([u8; INLINE_MAX], u8),
    /// `key`: the sender's key for the block (a response's, to send back
    /// in the `RELEASE`; 0 for a request).
    Shared {
        mem: M,
        offset: u64,
        len: u64,
        key: u32,
    },
}

impl Body {
    /// The body of a `CALL` or `REPLY` descriptor from the peer, checked
    /// (see [`check`](Self::check)).
    #[cfg(test)]
    fn from_desc(mem: &PeerMem, d: &Desc) -> Result<Body, String> {
        Body::check(mem, d)?;
        Ok(Body::decode_with(|| mem.clone(), d))
    }

    /// Checks the body of a `CALL` or `REPLY` descriptor from the peer:
    /// an inline length of 1 to [`INLINE_MAX`], or a range inside the
    /// peer's arena `mem` (in `u64` arithmetic) with a key for a `REPLY`;
    /// no other flags.
    fn check(mem: &PeerMem, d: &Desc) -> Result<(), String> {
        let key_bits = if d.opcode == REPLY { KEY_MASK } else { 0 };
        if d.flags & INLINE != 0 {
            let n = d.flags & !INLINE;
            if n == 0 || n as usize > INLINE_MAX {
                return Err(format!(
                    "descriptor id {:#x} opcode {}: inline body of {n} bytes (1 to {INLINE_MAX})",
                    d.id, d.opcode
                ));
            }
        } else if d.flags & !key_bits != 0 {
            return Err(format!(
                "descriptor id {:#x} opcode {}: unknown flags {:#x}",
                d.id, d.opcode, d.flags
            ));
        } else if d.len > 0 {
            mem.check(d.offset, d.len)
                .map_err(|e| format!("descriptor id {:#x} opcode {}: {e}", d.id, d.opcode))?;
        }
        Ok(())
    }
}

impl<'a> Body<&'a PeerMem> {
    /// The body of a descriptor [`check`](Body::check) accepted, borrowing
    /// `mem`.
    fn lent(mem: &'a PeerMem, d: &Desc) -> Self {
        Body::decode_with(|| mem, d)
    }
}

impl<M: std::borrow::Borrow<PeerMem>> Body<M> {
    /// The body of a descriptor [`check`](Body::check) accepted; `mem`
    /// gives the arena's handle if the body is there.
    fn decode_with(mem: impl FnOnce() -> M, d: &Desc) -> Self {
        if d.flags & INLINE != 0 {
            let mut b = [0u8; INLINE_MAX];
            b[..8].copy_from_slice(&d.offset.to_ne_bytes());
            b[8..].copy_from_slice(&d.len.to_ne_bytes());
            // Checked on arrival: 1 to INLINE_MAX.
            return Body::Inline(b, (d.flags & !INLINE).min(INLINE_MAX as u32) as u8);
        }
        Body::Shared {
            mem: mem(),
            offset: d.offset,
            len: d.len,
            key: d.flags & KEY_MASK,
        }
    }

    fn len(&self) -> usize {
        match self {
            Body::Inline(_, n) => usize::from(*n),
            Body::Shared { len, .. } => *len as usize,
        }
    }

    /// The arena range the peer must get back (`RELEASE`), if any, with
    /// the peer's key for it.
    fn shared_range(&self) -> Option<(u64, u64, u32)> {
        match self {
            Body::Shared {
                offset, len, key, ..
            } if *len > 0 => Some((*offset, *len, *key)),
            _ => None,
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len()];
        self.read_into(&mut v);
        v
    }

    fn read_into(&self, dst: &mut [u8]) -> usize {
        self.read_at(0, dst)
    }

    /// Copies bytes from `pos` on into `dst` (as many as both have);
    /// returns how many (0 at or past the end).
    fn read_at(&self, pos: usize, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len().saturating_sub(pos));
        if n == 0 {
            return 0;
        }
        match self {
            Body::Inline(b, _) => dst[..n].copy_from_slice(&b[pos..pos + n]),
            Body::Shared { mem, offset, .. } => {
                // Bounds were checked when the descriptor arrived, and
                // pos + n <= len.
                mem.borrow()
                    .copy_from(offset + pos as u64, &mut dst[..n])
                    .expect("body bounds checked on arrival");
            }
        }
        n
    }

    /// # Safety
    ///
    /// Nobody writes the bytes while the slice lives.
    unsafe fn as_bytes_unchecked(&self) -> &[u8] {
        match self {
            Body::Inline(b, n) => &b[..usize::from(*n)],
            Body::Shared { len: 0, .. } => &[],
            Body::Shared {
                mem, offset, len, ..
            } => {
                // SAFETY: the caller's contract; bounds checked on arrival.
                unsafe { mem.borrow().slice(*offset, *len) }
                    .expect("body bounds checked on arrival")
            }
        }
    }
}

/// Retry pacing for loops that wait on the peer (a full ring): first
/// [`SPIN`] of spinning (the peer is usually busy draining), then sleeps
/// from 20 µs doubling to 1 ms.
struct Backoff {
    spin: Spin,
    sleeping: bool,
    sleep: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            spin: Spin::new(),
            sleeping: false,
            sleep: Duration::from_micros(20),
        }
    }

    /// Sleeps from the first snooze (for a caller that spun already).
    fn sleeping() -> Self {
        Backoff {
            sleeping: true,
            ..Backoff::new()
        }
    }

    fn snooze(&mut self) {
        if !self.sleeping {
            if self.spin.round(SPIN) {
                crate::thread::yield_now();
                return;
            }
            self.sleeping = true;
        }
        crate::thread::sleep(self.sleep);
        self.sleep = (self.sleep * 2).min(Duration::from_millis(1));
    }
}

/// Paces a spin loop: the clock is read every 64th round (every 16th
/// while the CPU is shared, see below; reading it costs more than a round,
/// 25-30 ns under this VM's clock source, and at every 16th round a
/// single caller's spins read it twice per call), and the CPU is given up
/// (`sched_yield`) now and then, so that a peer thread the kernel placed
/// on the same CPU gets to run.
///
/// How often: a `sched_yield` costs about 0.3-0.5 µs here, and a message
/// that arrives during one waits for it, so while yields come back at
/// once (nobody else wants this CPU) only every 256th round yields, just
/// to notice a newcomer. A yield that took long means another thread ran
/// meanwhile; then every 16th round reads the clock and yields. Two
/// spinning peers on one CPU otherwise take turns only at the end of a
/// time slice, and every call costs one (100+ µs).
///
/// The window counts this thread's own spinning only: a yield that ran
/// another thread does not use it up. With more busy threads than CPUs
/// (two processes' carriers on two CPUs), one yield could otherwise take
/// a whole window, and a reader would go to sleep on its futex without
/// having looked at its ring more than a few times; its peer must then
/// wake it with a system call, each wake-up slows the calls, and their
/// rings run empty more often: throughput fell to a third whenever both
/// processes slid into that state. [`SPIN_WALL_MAX`] bounds the wall
/// time of one spin all the same.
struct Spin {
    rounds: u32,
    start: Option<Instant>,
    /// Time spent in yields that ran another thread.
    away: Duration,
    shared: bool,
}

/// A `sched_yield` that took at least this long ran another thread.
const SHARED_CPU: Duration = Duration::from_micros(2);

/// The longest wall time one spin lasts, however much of it went to
/// other threads.
const SPIN_WALL_MAX: Duration = Duration::from_millis(2);

impl Spin {
    fn new() -> Spin {
        Spin {
            rounds: 0,
            start: None,
            away: Duration::ZERO,
            shared: false,
        }
    }

    /// One round of a spin that lasts `window`; false once it has passed.
    /// The caller does its own green `yield_now` between rounds.
    fn round(&mut self, window: Duration) -> bool {
        self.rounds = self.rounds.wrapping_add(1);
        let every = if self.shared { 16 } else { 64 };
        if self.rounds % every != 0 {
            return true;
        }
        let now = Instant::now();
        let wall = now.duration_since(*self.start.get_or_insert(now));
        if wall.saturating_sub(self.away) >= window || wall >= SPIN_WALL_MAX {
            return false;
        }
        if self.shared || self.rounds % 256 == 0 {
            std::thread::yield_now();
            let took = now.elapsed();
            self.shared = took >= SHARED_CPU;
            if self.shared {
                self.away += took;
            }
        }
        true
    }
}

/// A value on cache lines of its own (two 64-byte lines: the adjacent-line
/// prefetcher pairs them), so that threads hammering one field of a
/// shared struct do not slow down those using its neighbours.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// How a reader waits for its ring.
struct Idle {
    futex: bool,
    backoff: Backoff,
}

impl Idle {
    fn new() -> Self {
        Idle {
            futex: true,
            backoff: Backoff::sleeping(),
        }
    }

    /// Entries arrived: the next sleep starts short again.
    fn reset(&mut self) {
        self.backoff = Backoff::sleeping();
    }

    /// Waits until `rx` may have entries or `stop()` holds: spins for
    /// [`SPIN`] with `yield_now`, then one sleep (futex or backoff). The
    /// lock is held only to look at the ring, never across a yield or the
    /// sleep, so other threads may pop meanwhile.
    fn wait(
        &mut self,
        rx: &Mutex<Consumer<Desc>>,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), RingError> {
        let mut spin = Spin::new();
        loop {
            if stop() || !rx.lock().is_empty()? {
                return Ok(());
            }
            if !spin.round(SPIN) {
                break;
            }
            crate::thread::yield_now();
        }
        use crate::sys::uring::{op, Sqe};
        if self.futex && crate::driver::ring_supports(op::FUTEX_WAIT) {
            let (word, expected) = match rx.lock().prepare_sleep()? {
                Some((word, expected)) => (word as *const AtomicU32, expected),
                None => return Ok(()),
            };
            // SeqCst, after reading the futex word in `prepare_sleep`: a
            // closer that sets `dead` and then bumps the word either is
            // seen here or makes the wait return at once.
            if stop() {
                rx.lock().finish_sleep();
                return Ok(());
            }
            /// `FUTEX2_SIZE_U32`; not `FUTEX2_PRIVATE`: the word is shared
            /// with another process.
            const FUTEX2_SIZE_U32: i32 = 0x02;
            let sqe = Sqe {
                opcode: op::FUTEX_WAIT,
                fd: FUTEX2_SIZE_U32,
                addr: word as u64,
                off: u64::from(expected),
                addr3: 0xffff_ffff,
                ..Sqe::default()
            };
            // SAFETY: the only pointer is the futex word, in ring memory
            // that the consumer in `rx` keeps mapped; `rx` outlives this
            // call, which returns only after the op's completion.
            let r = unsafe { crate::driver::green_op(sqe, Some(IDLE_TIMEOUT), "FUTEX_WAIT") };
            rx.lock().finish_sleep();
            match r {
                None => self.futex = false,
                Some(Ok(_)) => {}
                Some(Err(e)) => match e.raw_os_error() {
                    Some(
                        libc::EAGAIN
                        | libc::ETIME
                        | libc::ETIMEDOUT
                        | libc::ECANCELED
                        | libc::EINTR,
                    ) => {}
                    // Anything else: this kernel cannot do it; poll.
                    _ => self.futex = false,
                },
            }
        } else {
            self.backoff.snooze();
        }
        Ok(())
    }
}

/// Waits on a green UnixStream until the peer closes it (or sends bytes,
/// which the protocol does not allow). On the io_uring backend this is one
/// ring read; elsewhere a nonblocking poll with sleeps, so it never blocks
/// a carrier.
fn watch(sock: &crate::os::unix::net::UnixStream) -> io::Error {
    use std::io::Read;
    let on_ring = crate::driver::on_ring();
    if !on_ring {
        if let Err(e) = sock.set_nonblocking(true) {
            return e;
        }
    }
    let mut buf = [0u8; 64];
    let mut backoff = Backoff::new();
    loop {
        match (&*sock).read(&mut buf) {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the peer closed the connection",
                )
            }
            Ok(_) => {
                return io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer sent bytes on the liveness socket",
                )
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !on_ring => backoff.snooze(),
            Err(e) => return e,
        }
    }
}

/// Runs `attempt` on `sock` switched to non-blocking until it gives
/// something other than `WouldBlock`, snoozing between tries (a green
/// thread yields its carrier, a plain thread sleeps), for at most
/// `timeout`; then `TimedOut` saying that `what` did not come. The socket
/// is blocking again afterwards. For the connection handshake, where the
/// peer writes a few bytes right away but a stalled one must not hold a
/// carrier.
fn handshake_wait<T>(
    sock: &std::os::unix::net::UnixStream,
    timeout: Duration,
    what: &str,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    sock.set_nonblocking(true)?;
    let start = Instant::now();
    let mut backoff = Backoff::new();
    let res = loop {
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if start.elapsed() > timeout {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{what} within {timeout:?}"),
                    ));
                }
                backoff.snooze();
            }
            r => break r,
        }
    };
    sock.set_nonblocking(false)?;
    res
}

/// Connects to `path` (`@name` is an abstract socket name).
fn connect_socket(path: &std::path::Path) -> io::Result<crate::os::unix::net::UnixStream> {
    use crate::os::unix::net::{SocketAddr, UnixStream};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    match path.as_os_str().as_bytes().strip_prefix(b"@") {
        Some(name) => UnixStream::connect_addr(&SocketAddr::from_abstract_name(name)?),
        None => UnixStream::connect(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::ArenaMem;

    fn arena() -> PeerMem {
        ArenaMem::heap(4096).read_only()
    }

    #[test]
    fn inline_bodies_round_trip_through_a_descriptor() {
        let mem = arena();
        for n in 0..=INLINE_MAX {
            let bytes: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
            let d = Out::inline(&bytes).unwrap().desc(7, CALL);
            assert_eq!(d.id, 7);
            assert_eq!(d.opcode, CALL);
            let body = Body::from_desc(&mem, &d).unwrap();
            assert_eq!(body.len(), n);
            assert_eq!(body.to_vec(), bytes);
            assert_eq!(
                body.shared_range(),
                None,
                "inline bodies are never released"
            );
            let mut tail = [0u8; INLINE_MAX];
            for pos in 0..=n + 1 {
                let got = body.read_at(pos, &mut tail);
                assert_eq!(&tail[..got], &bytes[pos.min(n)..]);
            }
        }
        assert!(Out::inline(&[0; INLINE_MAX + 1]).is_none());
    }

    #[test]
    fn arena_bodies_are_checked_against_the_arena() {
        let mem = arena();
        let ok = Desc {
            id: 1,
            opcode: REPLY,
            flags: 5,
            offset: 64,
            len: 100,
        };
        let body = Body::from_desc(&mem, &ok).unwrap();
        assert_eq!(body.len(), 100);
        // The server's key for the block, to hand back.
        assert_eq!(body.shared_range(), Some((64, 100, 5)));
        let call = Desc {
            opcode: CALL,
            flags: 0,
            ..ok
        };
        assert_eq!(
            Body::from_desc(&mem, &call).unwrap().shared_range(),
            Some((64, 100, 0))
        );
        for bad in [
            Desc { len: 4097, ..ok },
            Desc {
                offset: u64::MAX - 10,
                ..ok
            },
            // A key on a request, bits above the key on a response.
            Desc { flags: 1, ..call },
            Desc {
                flags: KEY_MASK + 1,
                ..ok
            },
            Desc {
                flags: INLINE,
                ..ok
            },
            Desc {
                flags: INLINE | (INLINE_MAX as u32 + 1),
                ..ok
            },
            Desc {
                flags: INLINE | 0x100,
                ..ok
            },
        ] {
            assert!(Body::from_desc(&mem, &bad).is_err(), "{bad:?} accepted");
        }
    }
}
