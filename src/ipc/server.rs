//! [`Server`]: accepts connections and runs a handler per call.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::blocks::{Block, Blocks};
use super::ids::InFlight;
use super::{
    handshake_wait, parse_hello, watch, ArenaFullPolicy, Backoff, Body, ErrorHook, Idle, Out,
    ServerConfig, CALL, ERROR, HELLO_LEN, INLINE_MAX, PROTOCOL, RELEASE, REPLY,
};
use crate::os::unix::net::{UnixListener, UnixStream};
use crate::ring::{Producer, PushError};
use crate::shm::{
    peer_credentials, recv_fd, send_fds, ArenaMem, Desc, Endpoint, OwnArena, PeerArena,
    PeerCredentials, PeerMem, Region, RegionLayout, ARENA_NAMES,
};

/// Listens on a Unix socket and serves IPC connections.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    config: ServerConfig,
    shut: Arc<Shutdown>,
}

/// Stops a [`Server`]'s [`serve`](Server::serve) from any thread; from
/// [`Server::shutdown_handle`]. Clones stop the same server.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shut: Arc<Shutdown>,
}

/// What a server's accept loop, its connections and its
/// [`ShutdownHandle`]s share.
#[derive(Debug)]
struct Shutdown {
    /// Set once `shutdown` or `abort` is called: connections finish the
    /// calls their handlers run and start no more.
    draining: AtomicBool,
    reg: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Whether `shutdown` (`Some(false)`) or `abort` (`Some(true)`) was
    /// called.
    stop: Option<bool>,
    /// The listening socket while `serve` may accept on it: shut down to
    /// end a blocked `accept`. `None` once the listener is gone, so the
    /// number is never used after it was closed.
    listener: Option<RawFd>,
    /// Connections from their accept until their last green thread of
    /// serving ends.
    conns: slab::Slab<Entry>,
    /// Of those, the ones admitted past their handshake's checks (see
    /// [`ServerConfig::max_connections`](super::ServerConfig::max_connections)).
    admitted: usize,
    /// `serve`, waiting for `conns` to empty after a shutdown.
    waiter: Option<crate::thread::Thread>,
}

#[derive(Debug)]
enum Entry {
    /// Accepted, in its handshake: its socket, shut down to end that.
    Handshake(StdUnixStream),
    /// Served.
    Serving(Arc<Conn>),
}

impl Shutdown {
    fn new(listener: RawFd) -> Shutdown {
        Shutdown {
            draining: AtomicBool::new(false),
            reg: Mutex::new(Registry {
                listener: Some(listener),
                ..Registry::default()
            }),
        }
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Stops accepting, and has every connection drain (`abort`: close at
    /// once).
    fn stop(&self, abort: bool) {
        let mut wake = Vec::new();
        {
            let mut reg = self.reg.lock();
            if reg.stop == Some(true) || reg.stop == Some(abort) {
                return;
            }
            reg.stop = Some(abort);
            self.draining.store(true, Ordering::SeqCst);
            if let Some(fd) = reg.listener {
                // SAFETY: `fd` is the listener's, still open: `serve` sets
                // `listener` to `None` under this lock before it drops the
                // listener. Shutting a listening socket down makes its
                // blocked and later `accept`s fail (EINVAL).
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
            for (_, e) in &reg.conns {
                match e {
                    Entry::Handshake(s) => {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    Entry::Serving(c) => wake.push(c.clone()),
                }
            }
        }
        for c in wake {
            if abort {
                c.close(None);
            } else {
                c.wake();
            }
        }
    }

    /// Counts a connection just accepted on `sock`: `None` (and nothing
    /// counted) if the server is stopping.
    fn track(self: &Arc<Self>, sock: &UnixStream) -> io::Result<Option<Track>> {
        let std_sock: StdUnixStream = sock.try_clone()?.into();
        let mut reg = self.reg.lock();
        if reg.stop.is_some() {
            return Ok(None);
        }
        let key = reg.conns.insert(Entry::Handshake(std_sock));
        Ok(Some(Track {
            shut: self.clone(),
            key,
            admitted: false,
        }))
    }
}

/// A connection's place in its server's [`Registry`], from its accept
/// until it is dropped with the last of its serving.
struct Track {
    shut: Arc<Shutdown>,
    key: usize,
    /// Counted in `Registry::admitted`.
    admitted: bool,
}

impl Track {
    /// Counts the connection among those served if fewer than `max` are;
    /// false if the limit is reached.
    fn admit(&mut self, max: usize) -> bool {
        let mut reg = self.shut.reg.lock();
        if reg.admitted >= max {
            return false;
        }
        reg.admitted += 1;
        self.admitted = true;
        true
    }

    /// The connection is served from here on, by `conn` (closed at once
    /// if the server was aborted meanwhile; after a graceful shutdown its
    /// reader sees it drained and closes it).
    fn serving(&self, conn: &Arc<Conn>) {
        let mut reg = self.shut.reg.lock();
        reg.conns[self.key] = Entry::Serving(conn.clone());
        if reg.stop == Some(true) {
            drop(reg);
            conn.close(None);
        }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        let waiter = {
            let mut reg = self.shut.reg.lock();
            reg.conns.remove(self.key);
            reg.admitted -= usize::from(self.admitted);
            if reg.conns.is_empty() {
                reg.waiter.take()
            } else {
                None
            }
        };
        if let Some(t) = waiter {
            t.unpark();
        }
    }
}

impl ShutdownHandle {
    /// Shuts the server down gracefully: [`Server::serve`] stops
    /// accepting connections, and each open connection closes as soon as
    /// the calls its handlers are running are answered. No handler starts
    /// a call after this; a client's calls that had not started fail with
    /// [`io::ErrorKind::ConnectionReset`] (they never reached a handler),
    /// and its later calls with [`io::ErrorKind::BrokenPipe`]. `serve`
    /// returns `Ok(())` once every connection is closed. Returns at once;
    /// calling it again does nothing.
    pub fn shutdown(&self) {
        self.shut.stop(false);
    }

    /// Like [`shutdown`](Self::shutdown), but closes every connection at
    /// once: calls whose handlers are still running fail on the client
    /// with [`io::ErrorKind::ConnectionReset`] as well (the handlers run
    /// to their end; their responses are dropped). Also ends a graceful
    /// shutdown that waits on a handler.
    pub fn abort(&self) {
        self.shut.stop(true);
    }

    /// Whether [`shutdown`](Self::shutdown) or [`abort`](Self::abort) was
    /// called.
    pub fn is_shutdown(&self) -> bool {
        self.shut.draining()
    }
}

type Handler = dyn Fn(&Request<'_>, &mut ResponseWriter<'_>) -> io::Result<()> + Send + Sync;

struct State {
    tx: Producer<Desc>,
    arena: Blocks,
    /// Ids of calls taken off the ring and not yet answered: a duplicate
    /// is a protocol error.
    in_flight: InFlight,
    /// Calls waiting for a handler thread.
    queue: VecDeque<Desc>,
    /// Handler green threads running.
    handlers: usize,
    /// Of those, the ones spawned that have not yet taken a call.
    starting: usize,
    /// Handlers waiting for arena space, woken when a `RELEASE` frees
    /// some.
    space_waiters: Vec<crate::thread::Thread>,
    /// Calls a handler is running (taken from `queue`, reply not yet
    /// pushed): what a graceful shutdown waits for.
    running: usize,
}

/// A handler's answer to one call, pushed with the next lock.
#[derive(Clone, Copy)]
struct Reply {
    desc: Desc,
    /// A response body written in place: its block, with its final length
    /// (for `Blocks::set_len`).
    set_len: Option<Block>,
}

impl State {
    /// Whether to start one more handler thread: calls wait, none is
    /// already on its way, and the cap allows. Counts it if so.
    fn want_handler(&mut self, max_handlers: usize) -> bool {
        let want = !self.queue.is_empty() && self.starting == 0 && self.handlers < max_handlers;
        if want {
            self.handlers += 1;
            self.starting += 1;
        }
        want
    }
}

struct Conn {
    state: Mutex<State>,
    handler: Arc<Handler>,
    mem: ArenaMem,
    peer_mem: PeerMem,
    dead: AtomicBool,
    sock: UnixStream,
    wake_reader: Box<dyn Fn() + Send + Sync>,
    arena_full: ArenaFullPolicy,
    on_error: ErrorHook,
    max_handlers: usize,
    /// The most calls that wait in `State::queue` before the reader stops
    /// popping requests.
    max_queued: usize,
    /// The reader green thread, unparked when the queue has room again.
    reader: crate::thread::Thread,
    /// The server's shutdown state.
    shut: Arc<Shutdown>,
    /// The client, as the kernel recorded it when it connected.
    peer: PeerCredentials,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Closes the connection; reports `err` if it is a protocol error.
    fn close(&self, err: Option<io::Error>) {
        if self.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        (self.wake_reader)();
        self.reader.unpark();
        let waiters = std::mem::take(&mut self.state.lock().space_waiters);
        for t in waiters {
            t.unpark();
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(e) = err {
            (self.on_error)(&e);
        }
    }

    /// Wakes the reader to look at the server's shutdown state.
    fn wake(&self) {
        (self.wake_reader)();
        self.reader.unpark();
    }

    /// Whether a graceful shutdown has begun and no handler runs a call
    /// any more: the connection may close.
    fn drained(&self) -> bool {
        self.shut.draining() && self.state.lock().running == 0
    }

    fn violation(&self, msg: String) {
        self.close(Some(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ipc client broke the protocol, connection closed: {msg}"),
        )));
    }

    /// Handles a batch of request descriptors (the reader), under one
    /// lock.
    fn dispatch(self: &Arc<Self>, descs: &[Desc]) -> Result<(), String> {
        let mut spawn = false;
        let mut released = Vec::new();
        let res = (|| {
            let mut st = self.state.lock();
            for d in descs {
                match d.opcode {
                    CALL => {
                        Body::check(&self.peer_mem, d)?;
                        if d.flags & super::INLINE == 0 {
                            // Its handler reads it soon: start fetching
                            // the batch's bodies together.
                            self.peer_mem.prefetch(d.offset, d.len);
                        }
                        if !st.in_flight.insert(d.id) {
                            return Err(format!("duplicate call id {:#x} in flight", d.id));
                        }
                        st.queue.push_back(*d);
                        spawn |= st.want_handler(self.max_handlers);
                    }
                    RELEASE => {
                        if !st.arena.free(d.flags, d.offset, Some(d.len)) {
                            return Err(format!(
                                "RELEASE of key {}, offset {:#x}, length {}: not a response \
                                 body the client holds",
                                d.flags, d.offset, d.len
                            ));
                        }
                        released.append(&mut st.space_waiters);
                    }
                    op => return Err(format!("unknown request opcode {op} (id {:#x})", d.id)),
                }
            }
            Ok(())
        })();
        for t in released {
            t.unpark();
        }
        if spawn {
            self.spawn_handler();
        }
        res
    }

    /// Starts a handler green thread (counted in `State::handlers` and
    /// `State::starting` by [`State::want_handler`]).
    fn spawn_handler(self: &Arc<Self>) {
        let conn = self.clone();
        crate::spawn(move || conn.work());
    }

    /// Room for more calls in the queue (the reader pops at most this
    /// many descriptors).
    fn room(&self) -> usize {
        self.max_queued
            .saturating_sub(self.state.lock().queue.len())
    }

    /// A handler green thread: runs queued calls until none is left.
    ///
    /// Before it runs a call it makes sure another handler is on its way
    /// if calls still wait ([`State::want_handler`]): should this call
    /// block, the next one does not wait for it. Handlers whose calls do
    /// not block thus drain a whole batch on one thread, a spawn or two
    /// per batch instead of one per call. A call's reply is pushed under
    /// the same lock that takes the next call.
    fn work(self: &Arc<Self>) {
        let mut started = false;
        let mut reply: Option<Reply> = None;
        let mut backoff = Backoff::new();
        loop {
            let next = {
                let mut st = self.state.lock();
                if !started {
                    st.starting -= 1;
                    started = true;
                }
                if self.dead.load(Ordering::SeqCst) {
                    st.handlers -= 1;
                    return;
                }
                if let Some(r) = reply {
                    match st.tx.push(r.desc) {
                        Ok(()) => {
                            if let Some(b) = r.set_len {
                                st.arena.set_len(b.key, b.offset, b.len);
                            }
                            st.in_flight.remove(r.desc.id);
                            st.running -= 1;
                            let _ = st.tx.notify();
                            reply = None;
                            backoff = Backoff::new();
                            if st.running == 0 && self.shut.draining() {
                                // The last call a graceful shutdown waits for.
                                self.wake();
                            }
                        }
                        Err(PushError::Full(_)) => {}
                        Err(PushError::Corrupt(_, e)) => {
                            st.handlers -= 1;
                            drop(st);
                            self.violation(format!("response ring: {e}"));
                            return;
                        }
                    }
                }
                if reply.is_some() {
                    // The response ring is full: the client pops it
                    // without waiting for anything of ours.
                    None
                } else {
                    loop {
                        let Some(call) = st.queue.pop_front() else {
                            st.handlers -= 1;
                            return;
                        };
                        if st.queue.len() + 1 == self.max_queued {
                            // The reader may be waiting for room.
                            self.reader.unpark();
                        }
                        if self.shut.draining() {
                            // Shutting down: no call starts. The client
                            // fails it when the connection closes.
                            st.in_flight.remove(call.id);
                            continue;
                        }
                        st.running += 1;
                        break Some((call, st.want_handler(self.max_handlers)));
                    }
                }
            };
            match next {
                None => backoff.snooze(),
                Some((call, spawn)) => {
                    if spawn {
                        self.spawn_handler();
                    }
                    reply = Some(self.run(&call));
                }
            }
        }
    }

    /// Runs the handler for call `d` (checked on arrival); returns its
    /// reply. The request and the writer borrow the connection: the
    /// handler only gets them by reference, for the call.
    fn run(&self, d: &Desc) -> Reply {
        let id = d.id;
        let req = Request {
            body: Body::lent(&self.peer_mem, d),
            peer: self.peer,
        };
        let mut w = ResponseWriter {
            body: Buf::default(),
            conn: Some(self),
        };
        // A panicking handler fails its call (the panic is reported by
        // the panic hook as usual); the connection goes on.
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.handler)(&req, &mut w)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("ipc handler panicked")));
        match res.and_then(|()| self.place(w)) {
            Ok((out, set_len)) => Reply {
                desc: out.desc(id, REPLY),
                set_len,
            },
            Err(e) => Reply {
                desc: Desc {
                    id,
                    opcode: ERROR,
                    flags: e.raw_os_error().unwrap_or(0) as u32,
                    offset: 0,
                    len: 0,
                },
                set_len: None,
            },
        }
    }

    /// Where the handler's response goes: inline, or in our arena. For a
    /// body written in place, its block comes back a second time too,
    /// with the final length to record (`Blocks::set_len`) when the reply
    /// is pushed.
    fn place(&self, mut w: ResponseWriter) -> io::Result<(Out, Option<Block>)> {
        w.flush_stage()?;
        let body = match std::mem::take(&mut w.body) {
            Buf::Small(b, n) => return Ok((Out::Inline(b, n), None)),
            Buf::Arena { block, len, .. } => {
                if len as usize <= INLINE_MAX {
                    let mut b = [0u8; INLINE_MAX];
                    let n = len as usize;
                    let copied = self.mem.copy_from(block.offset, &mut b[..n]);
                    self.free_block(block);
                    copied?;
                    return Ok((Out::Inline(b, n as u8), None));
                }
                let block = Block { len, ..block };
                return Ok((Out::Arena(block), Some(block)));
            }
            Buf::Vec(v) => v,
        };
        let len = body.len() as u64;
        let start = Instant::now();
        let a = loop {
            let deadline = {
                let mut st = self.state.lock();
                if self.dead.load(Ordering::SeqCst) {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                match st.arena.alloc(len) {
                    Ok(a) => break a,
                    Err(_) => match self.arena_full {
                        ArenaFullPolicy::Wait(t)
                            if start.elapsed() < t && len <= st.arena.capacity() =>
                        {
                            st.space_waiters.push(crate::thread::current());
                            // A limit too long to count is none.
                            start.checked_add(t)
                        }
                        _ => return Err(io::Error::from_raw_os_error(libc::ENOMEM)),
                    },
                }
            };
            // Woken by the next RELEASE (or at the deadline); the park
            // token makes a wake-up between the unlock and here count.
            match deadline {
                Some(d) => crate::thread::park_timeout(d.saturating_duration_since(Instant::now())),
                None => crate::thread::park(),
            }
        };
        if let Err(e) = self.mem.copy_to_owned(a.offset, &body) {
            self.free_block(a);
            return Err(e.into());
        }
        Ok((Out::Arena(a), None))
    }

    /// A block of at least `len` bytes for a body written in place, if
    /// the arena has room now.
    fn try_block(&self, len: u64) -> Option<Block> {
        self.state.lock().arena.alloc(len).ok()
    }

    fn free_block(&self, block: Block) {
        self.state.lock().arena.free(block.key, block.offset, None);
    }
}

impl Server {
    /// Listens on `path` (`@name`: an abstract socket name) with the
    /// default [`ServerConfig`].
    ///
    /// # Errors
    ///
    /// The socket's errors.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Server> {
        Server::bind_with(path, ServerConfig::default())
    }

    /// [`bind`](Self::bind) with `config`.
    ///
    /// # Errors
    ///
    /// The socket's errors.
    pub fn bind_with(path: impl AsRef<Path>, config: ServerConfig) -> io::Result<Server> {
        use crate::os::unix::net::SocketAddr;
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        let path = path.as_ref();
        let listener = match path.as_os_str().as_bytes().strip_prefix(b"@") {
            Some(name) => UnixListener::bind_addr(&SocketAddr::from_abstract_name(name)?)?,
            None => UnixListener::bind(path)?,
        };
        let shut = Arc::new(Shutdown::new(listener.as_raw_fd()));
        Ok(Server {
            listener,
            config,
            shut,
        })
    }

    /// A handle that shuts this server down from any thread (graceful
    /// [`ShutdownHandle::shutdown`] or immediate [`ShutdownHandle::abort`]),
    /// before or while [`serve`](Self::serve) runs.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shut: self.shut.clone(),
        }
    }

    /// The address the server listens on.
    ///
    /// # Errors
    ///
    /// The socket's errors.
    pub fn local_addr(&self) -> io::Result<crate::os::unix::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until accepting fails or the server is shut
    /// down (see [`shutdown_handle`](Self::shutdown_handle)), running
    /// `handler` for every call on a green thread of its own (it may
    /// block). Each connection is served by its own green threads; a
    /// connection whose client breaks the protocol or dies is closed and
    /// its region freed, and the others go on.
    ///
    /// Call it from an OS thread or a green thread. On the blocking I/O
    /// backend `accept` is a plain blocking syscall, so there call it from
    /// an OS thread (a green thread would hold its carrier).
    ///
    /// # Errors
    ///
    /// The listener's `accept` error that ended the loop. Errors that
    /// pass (out of file descriptors or memory, a connection aborted
    /// before its accept) do not end it: they go to
    /// [`ServerConfig::on_error`](super::ServerConfig::on_error) and
    /// `accept` is retried after a pause that grows from 1 ms to 1 s while
    /// they repeat. After a shutdown it returns `Ok(())` once every
    /// connection is closed.
    pub fn serve<H>(self, handler: H) -> io::Result<()>
    where
        H: Fn(&Request<'_>, &mut ResponseWriter<'_>) -> io::Result<()> + Send + Sync + 'static,
    {
        let handler: Arc<Handler> = Arc::new(handler);
        let mut pause = Duration::ZERO;
        loop {
            let admitted = match self.listener.accept() {
                Ok((stream, _)) => self.shut.track(&stream).map(|t| (stream, t)),
                Err(e) => Err(e),
            };
            let (stream, track) = match admitted {
                Ok((stream, Some(track))) => (stream, track),
                Ok((_, None)) => break, // shut down since: it closes unserved
                Err(_) if self.shut.draining() => break,
                Err(e) if accept_error_passes(&e) => {
                    // Out of descriptors or memory, or a client gone
                    // before its accept: not the listener's end. Report
                    // it and wait a little longer each time in a row, so
                    // that closing connections can free what is short.
                    (self.config.on_error)(&io::Error::new(
                        e.kind(),
                        format!("ipc server: accepting a connection failed: {e}; retrying"),
                    ));
                    pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
                    crate::thread::sleep(pause);
                    continue;
                }
                Err(e) => return Err(e),
            };
            pause = Duration::ZERO;
            let handler = handler.clone();
            let config = self.config.clone();
            // Connections share nothing: each goes to the least loaded
            // carrier (a client's lanes then run side by side), and moves
            // to the one its hello asks for if our carriers are pinned.
            crate::runtime::spawn_balanced(move || {
                let shut = track.shut.clone();
                if let Err(e) = accept_connection(stream, handler, config.clone(), track) {
                    // Handshakes cut short by a shutdown are not errors.
                    if !shut.draining() {
                        (config.on_error)(&e);
                    }
                }
            })?;
        }
        // Shut down: no more accepts; wait for the connections to close.
        self.shut.reg.lock().listener = None;
        loop {
            {
                let mut reg = self.shut.reg.lock();
                if reg.conns.is_empty() {
                    return Ok(());
                }
                reg.waiter = Some(crate::thread::current());
            }
            // The last connection's `Track` unparks us; the token makes an
            // unpark between the unlock and here count.
            crate::thread::park();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The listener closes after this: `stop` must not shut its number
        // down any more.
        self.shut.reg.lock().listener = None;
    }
}

/// Whether `accept` (or the descriptor the registry keeps of a new
/// connection) failed for a reason that passes: descriptors or memory
/// short for now, or a connection aborted before it was accepted.
fn accept_error_passes(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
        )
    )
}

/// Reads a new connection's hello and checks its credentials, then
/// serves it here or on our carrier pinned to the CPU the hello names. A
/// peer that hangs up before its hello is gone, not an error.
fn accept_connection(
    stream: UnixStream,
    handler: Arc<Handler>,
    config: ServerConfig,
    mut track: Track,
) -> io::Result<()> {
    let std_sock: StdUnixStream = stream.into();
    // The hello first: a refused client then sees a clean EOF, not a
    // reset for bytes left unread.
    let cpu = match recv_hello(&std_sock, config.handshake_timeout) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        r => r?,
    };
    let peer = peer_credentials(&std_sock)?;
    config.credentials.check(&peer)?;
    if !track.admit(config.max_connections) {
        // Closed on return, after its hello was read: a clean EOF.
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "ipc server at its limit of {} connections: refused pid {} uid {}",
                config.max_connections, peer.pid, peer.uid
            ),
        ));
    }
    let on_error = config.on_error.clone();
    let serve = move || serve_connection(std_sock, handler, &config, &track, peer);
    match cpu.filter(|&c| crate::runtime::carrier_cpu() != Some(c)) {
        None => serve(),
        Some(cpu) => {
            let report = move || {
                if let Err(e) = serve() {
                    on_error(&e);
                }
            };
            match crate::runtime::spawn_on_cpu(cpu, report) {
                Ok(spawned) => spawned.map(drop),
                // No carrier of ours is pinned or at home there: serve it
                // here.
                Err(report) => {
                    report();
                    Ok(())
                }
            }
        }
    }
}

/// Reads a client's hello (see [`super::hello`]) without blocking the
/// carrier: the CPU it names, if any.
fn recv_hello(sock: &StdUnixStream, timeout: Duration) -> io::Result<Option<usize>> {
    use std::io::Read;
    let mut buf = [0u8; HELLO_LEN];
    let mut got = 0;
    handshake_wait(sock, timeout, "ipc client sent no hello", || {
        while got < HELLO_LEN {
            match (&*sock).read(&mut buf[got..])? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "ipc client closed before its hello",
                    ))
                }
                n => got += n,
            }
        }
        parse_hello(&buf)
    })
}

fn serve_connection(
    std_sock: StdUnixStream,
    handler: Arc<Handler>,
    config: &ServerConfig,
    track: &Track,
    client: PeerCredentials,
) -> io::Result<()> {
    let layout = RegionLayout::new(
        config.ring_entries,
        config.ring_entries,
        config.client_arena,
        config.server_arena,
    );
    let region = Region::create(&layout)?;
    let h = *region.header();
    let own = OwnArena::create(h.server_arena_len)?;
    send_fds(&std_sock, &[region.fd(), own.fd()], PROTOCOL)?;
    // The client answers with its own arena, made and sealed on its side.
    // A client that hangs up instead is gone, not an error.
    let (fd, payload) = match handshake_wait(
        &std_sock,
        config.handshake_timeout,
        "ipc client sent no arena",
        || recv_fd(&std_sock),
    ) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        r => r?,
    };
    if payload != PROTOCOL {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ipc client sent its arena with an unknown protocol",
        ));
    }
    let peer = PeerArena::attach(fd, ARENA_NAMES[0], h.client_arena_len)?;
    let Endpoint {
        tx,
        rx,
        arena,
        peer_arena,
        ..
    } = region.into_server(own, peer)?;
    let sock: UnixStream = std_sock.into();
    let watch_sock = sock.try_clone()?;
    let waker = rx.sleep_waker();
    let conn = Arc::new(Conn {
        mem: arena.mem().clone(),
        state: Mutex::new(State {
            tx,
            arena: Blocks::new(arena),
            in_flight: InFlight::new(),
            queue: VecDeque::new(),
            handlers: 0,
            starting: 0,
            space_waiters: Vec::new(),
            running: 0,
        }),
        peer_mem: peer_arena,
        dead: AtomicBool::new(false),
        sock,
        wake_reader: Box::new(move || {
            let _ = waker.wake();
        }),
        arena_full: config.arena_full,
        on_error: config.on_error.clone(),
        max_handlers: config.max_handlers,
        max_queued: config.ring_entries.max(1) as usize,
        reader: crate::thread::current(),
        handler,
        shut: track.shut.clone(),
        peer: client,
    });
    track.serving(&conn);
    let w = conn.clone();
    crate::thread::Builder::new()
        .name("ipc-server-watcher".into())
        .spawn(move || {
            let e = watch(&watch_sock);
            // A client going away is normal; bytes on the socket are not.
            let report = (e.kind() == io::ErrorKind::InvalidData).then_some(e);
            w.close(report);
        })?;
    // Set up: tell the client with one byte, into a buffer that holds
    // nothing else of ours (it never blocks). One that hung up meanwhile
    // is gone.
    if let Err(e) = crate::shm::send_all(&conn.sock, &[super::READY]) {
        conn.close(None);
        return match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Ok(()),
            _ => Err(e),
        };
    }
    // This green thread is the connection's reader (the only user of
    // `rx`: the lock is never contended).
    let rx = Mutex::new(rx);
    let mut buf = [Desc::default(); 64];
    let mut idle = Idle::new();
    let stop = || conn.dead.load(Ordering::SeqCst) || conn.drained();
    while !stop() {
        let room = conn.room().min(buf.len());
        if room == 0 {
            // Every handler is busy and a ringful of calls waits: leave
            // the rest on the ring (the client then waits for room) until
            // a handler takes one. The timeout is a backstop.
            crate::thread::park_timeout(super::IDLE_TIMEOUT);
            continue;
        }
        let popped = rx.lock().pop_into(&mut buf[..room]);
        match popped {
            Err(e) => conn.violation(format!("request ring: {e}")),
            Ok(0) => {
                if let Err(e) = idle.wait(&rx, &stop) {
                    conn.violation(format!("request ring: {e}"));
                }
            }
            Ok(n) => {
                idle.reset();
                if let Err(msg) = conn.dispatch(&buf[..n]) {
                    conn.violation(msg);
                }
            }
        }
    }
    // Shut down: every answer is on the ring, which the client drains
    // before it fails what is left.
    conn.close(None);
    Ok(())
}

/// A request body in the client's arena, valid while the handler runs.
///
/// The bytes are read through copies ([`to_vec`](Self::to_vec),
/// [`read_into`](Self::read_into)): the client could still write them,
/// and safe code never holds a `&[u8]` that another process may change.
pub struct Request<'a> {
    body: Body<&'a PeerMem>,
    peer: PeerCredentials,
}

impl Request<'_> {
    /// Who made the call: the client process's pid, uid and gid, as the
    /// kernel recorded them when it connected (`SO_PEERCRED`; the same
    /// that [`ServerConfig::credentials`](super::ServerConfig::credentials)
    /// checked), for decisions per caller beyond that policy.
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    body_accessors!(
        "Sound only against a trusted, well-behaved client that leaves the \
         bytes alone until the call is answered (a peer writing them while \
         the slice lives is undefined behaviour)."
    );
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("len", &self.len())
            .field("peer", &self.peer)
            .finish()
    }
}

/// Collects a handler's response body ([`io::Write`]). A body of up to
/// [`INLINE_MAX`] bytes travels inside the reply descriptor. A longer one
/// is written straight into the server arena when there is room for it
/// there (announce its size with [`reserve`](Self::reserve) and it takes
/// one block; without a hint the first block is the size written so far,
/// rounded up to the arena cache's next size class up to 64 KiB); past its block, or when the
/// arena is full, it is collected in memory and copied into the arena once
/// the handler returns (waiting for room per
/// [`ArenaFullPolicy`](super::ArenaFullPolicy)).
#[derive(Default)]
pub struct ResponseWriter<'a> {
    body: Buf,
    conn: Option<&'a Conn>,
}

impl std::fmt::Debug for ResponseWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseWriter")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Buf {
    Small([u8; INLINE_MAX], u8),
    Vec(Vec<u8>),
    /// In place in our arena, in `block` (room for `block.reserved`
    /// bytes): `len` bytes copied in, then `staged` more held in `stage`
    /// (see [`STAGE`]).
    Arena {
        block: Block,
        len: u64,
        stage: [u8; STAGE],
        staged: u8,
    },
}

/// Writes shorter than this into an arena body wait in a private buffer
/// and go in with the next write. A copy into shared memory that covers
/// part of an 8-byte word must merge with the word's other bytes in one
/// atomic read-modify-write, which waits for the cache line to come over
/// from the client (the last to read it); from 32 bytes up a copy is a
/// string move with no atomics. So a 4-byte header then a body costs one
/// copy, not a stall and a copy.
const STAGE: usize = 32;

/// Appends `buf` to an arena body (see [`STAGE`]).
fn arena_write(
    mem: &ArenaMem,
    at: u64,
    len: &mut u64,
    stage: &mut [u8; STAGE],
    staged: &mut u8,
    buf: &[u8],
) -> io::Result<()> {
    let n = usize::from(*staged);
    if n + buf.len() < STAGE {
        stage[n..n + buf.len()].copy_from_slice(buf);
        *staged += buf.len() as u8;
        return Ok(());
    }
    let mut rest = buf;
    if n > 0 {
        // The staged bytes and the head of `buf`: 32 bytes or more.
        let mut joined = [0u8; 2 * STAGE];
        joined[..n].copy_from_slice(&stage[..n]);
        let take = (2 * STAGE - n).min(rest.len());
        joined[n..n + take].copy_from_slice(&rest[..take]);
        mem.copy_to_owned(at + *len, &joined[..n + take])?;
        *len += (n + take) as u64;
        *staged = 0;
        rest = &rest[take..];
    }
    if rest.len() >= STAGE {
        mem.copy_to_owned(at + *len, rest)?;
        *len += rest.len() as u64;
    } else {
        stage[..rest.len()].copy_from_slice(rest);
        *staged = rest.len() as u8;
    }
    Ok(())
}

impl Default for Buf {
    fn default() -> Self {
        Buf::Small([0; INLINE_MAX], 0)
    }
}

impl ResponseWriter<'_> {
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        match &self.body {
            Buf::Small(_, n) => usize::from(*n),
            Buf::Vec(v) => v.len(),
            Buf::Arena { len, staged, .. } => *len as usize + usize::from(*staged),
        }
    }

    /// Copies staged bytes of an arena body in.
    fn flush_stage(&mut self) -> io::Result<()> {
        if let (
            Buf::Arena {
                block,
                len,
                stage,
                staged,
            },
            Some(conn),
        ) = (&mut self.body, &self.conn)
        {
            let n = usize::from(*staged);
            if n > 0 {
                conn.mem.copy_to_owned(block.offset + *len, &stage[..n])?;
                *len += n as u64;
                *staged = 0;
            }
        }
        Ok(())
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves room for `additional` more bytes: with the final size
    /// known, a long body is written in place in the arena.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len().saturating_add(additional);
        match &mut self.body {
            Buf::Small(..) if want <= INLINE_MAX => {}
            Buf::Arena { block, .. } if want as u64 <= block.reserved => {}
            Buf::Vec(v) => v.reserve(additional),
            _ => self.grow(want, &[]),
        }
    }

    /// Appends `len` bytes to the body and returns them, to be written in
    /// place. After [`reserve`](Self::reserve) they lie in the server
    /// arena's block for this body, and no copy follows; otherwise where
    /// [`write`](io::Write::write) would have put them.
    ///
    /// A plain `&mut [u8]` is sound here: the server arena is a memfd
    /// sealed so that only this process's mapping can write it (the
    /// client maps it read-only, see [`OwnArena`]), and the block is this
    /// body's alone until the reply is sent. The bytes hold what was there
    /// before (zeros, or an earlier body of this connection): write all
    /// of them.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// green::ipc::Server::bind("/tmp/fill.sock")?.serve(|req, resp| {
    ///     let n = req.len();
    ///     resp.reserve(n);
    ///     let out = resp.write_in_place(n);
    ///     req.read_into(out); // the request, copied straight into the reply
    ///     out.reverse();
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn write_in_place(&mut self, len: usize) -> &mut [u8] {
        let want = self.len().saturating_add(len);
        let fits = match &self.body {
            Buf::Small(..) => want <= INLINE_MAX,
            Buf::Arena { block, .. } => want as u64 <= block.reserved,
            Buf::Vec(_) => true,
        };
        if !fits {
            self.grow(want, &[]);
        }
        // Staged bytes go in first: they precede the new ones. (Copies
        // into our own block are in bounds: they cannot fail.)
        let _ = self.flush_stage();
        match &mut self.body {
            Buf::Small(b, n) => {
                let at = usize::from(*n);
                *n += len as u8;
                &mut b[at..at + len]
            }
            Buf::Vec(v) => {
                let at = v.len();
                v.resize(at + len, 0);
                &mut v[at..]
            }
            Buf::Arena {
                block, len: done, ..
            } => {
                let at = block.offset + *done;
                *done += len as u64;
                match &self.conn {
                    // SAFETY: `at .. at + len` lies in this body's block
                    // (`done + len <= block.reserved`), which is ours
                    // alone until the reply is pushed (that consumes this
                    // writer), and the slice borrows `self` mutably, so no
                    // other access to those bytes exists in this process;
                    // the client cannot write them: the arena is an
                    // OwnArena, sealed against every writer but our own
                    // mapping.
                    Some(conn) => unsafe { conn.mem.slice_mut(at, len as u64) }
                        .expect("a body's block lies in the arena"),
                    // Arena bodies exist only with a connection.
                    None => &mut [],
                }
            }
        }
    }

    /// Moves the body to a place with room for `want` bytes and appends
    /// `tail`: an arena block if there is room, else a `Vec`.
    fn grow(&mut self, want: usize, tail: &[u8]) {
        // Copies into our own block are in bounds: they cannot fail.
        let _ = self.flush_stage();
        let old = std::mem::take(&mut self.body);
        let (head, n) = match &old {
            Buf::Small(b, n) => (Some(b), usize::from(*n)),
            Buf::Arena { len, .. } => (None, *len as usize),
            Buf::Vec(v) => (None, v.len()),
        };
        let in_arena = match (&old, &self.conn) {
            (Buf::Small(..), Some(conn)) => conn.try_block(want as u64),
            _ => None,
        };
        if let (Some(block), Some(conn), Some(head)) = (in_arena, &self.conn, head) {
            let offset = block.offset;
            // Our fresh block, in bounds: copies cannot fail. The short
            // head is staged and goes in with the tail.
            let (mut len, mut stage, mut staged) = (0, [0u8; STAGE], 0);
            let ok = arena_write(
                &conn.mem,
                offset,
                &mut len,
                &mut stage,
                &mut staged,
                &head[..n],
            )
            .and_then(|()| arena_write(&conn.mem, offset, &mut len, &mut stage, &mut staged, tail))
            .is_ok();
            if ok {
                self.body = Buf::Arena {
                    block,
                    len,
                    stage,
                    staged,
                };
                return;
            }
            conn.free_block(block);
        }
        let mut v = Vec::with_capacity(want.max(n + tail.len()));
        match (&old, &self.conn) {
            (Buf::Small(b, _), _) => v.extend_from_slice(&b[..n]),
            (Buf::Vec(old_v), _) => v.extend_from_slice(old_v),
            (Buf::Arena { block, .. }, Some(conn)) => {
                v.resize(n, 0);
                let _ = conn.mem.copy_from(block.offset, &mut v);
                conn.free_block(*block);
            }
            (Buf::Arena { .. }, None) => {}
        }
        v.extend_from_slice(tail);
        self.body = Buf::Vec(v);
    }
}

impl io::Write for ResponseWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.body {
            Buf::Small(b, n) if usize::from(*n) + buf.len() <= INLINE_MAX => {
                let at = usize::from(*n);
                b[at..at + buf.len()].copy_from_slice(buf);
                *n += buf.len() as u8;
            }
            Buf::Arena {
                block,
                len,
                stage,
                staged,
            } if *len + u64::from(*staged) + buf.len() as u64 <= block.reserved => match &self.conn
            {
                Some(conn) => arena_write(&conn.mem, block.offset, len, stage, staged, buf)?,
                None => *len += buf.len() as u64,
            },
            Buf::Vec(v) => v.extend_from_slice(buf),
            _ => self.grow(self.len() + buf.len(), buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ResponseWriter<'_> {
    fn drop(&mut self) {
        // A body written in place that is not sent (the handler failed).
        if let (Buf::Arena { block, .. }, Some(conn)) = (&self.body, &self.conn) {
            conn.free_block(*block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn write_in_place_appends_after_what_was_written() {
        let mut w = ResponseWriter::default();
        w.write_all(b"ab").unwrap();
        w.write_in_place(3).copy_from_slice(b"cde");
        assert!(matches!(w.body, Buf::Small(_, 5)));
        // Past what a descriptor carries (no arena here: memory).
        w.write_in_place(20).fill(b'x');
        w.write_all(b"!").unwrap();
        assert_eq!(w.len(), 26);
        match &w.body {
            Buf::Vec(v) => assert_eq!(v, &[&b"abcde"[..], &[b'x'; 20], b"!"].concat()),
            other => panic!("26 bytes with no arena went to {other:?}"),
        }
        assert!(w.write_in_place(0).is_empty());
        assert_eq!(w.len(), 26);
    }

    #[test]
    fn response_writer_keeps_short_bodies_inline_and_spills_longer_ones() {
        let mut w = ResponseWriter::default();
        assert!(w.is_empty());
        w.write_all(&[1; 10]).unwrap();
        w.write_all(&[2; 6]).unwrap();
        assert!(matches!(w.body, Buf::Small(_, 16)));
        w.write_all(&[3]).unwrap();
        assert_eq!(w.len(), 17);
        match &w.body {
            Buf::Vec(v) => {
                let mut want = vec![1; 10];
                want.extend([2; 6]);
                want.push(3);
                assert_eq!(v, &want);
            }
            other => panic!("17 bytes with no arena went to {other:?}"),
        }
        let mut w = ResponseWriter::default();
        w.write_all(&[5; 3]).unwrap();
        w.reserve(100);
        assert_eq!(w.len(), 3);
        w.write_all(&[6; 100]).unwrap();
        assert_eq!(w.len(), 103);
        assert!(matches!(&w.body, Buf::Vec(v) if v[..3] == [5; 3] && v[3..] == [6; 100]));
    }
}
