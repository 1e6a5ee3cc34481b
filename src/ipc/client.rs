//! [`Client`]: one connection, shared by any number of callers.

use std::future::Future;
use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;
use slab::Slab;

use super::{
    check_body, connect_socket, watch, ArenaFullPolicy, Backoff, Body, ClientConfig, Idle, CALL,
    ERROR, PROTOCOL, RELEASE, REPLY,
};
use crate::ring::{Producer, PushError};
use crate::shm::{recv_fd, Alloc, Arena, ArenaMem, Desc, Endpoint, Region};
use crate::thread::Thread;

/// How long a caller polls for its response before it parks.
const CALLER_SPIN: std::time::Duration = std::time::Duration::from_micros(10);

/// A connection to a [`Server`](super::Server). Share it (`&Client` or
/// `Arc<Client>`) between green threads on any carriers: each
/// [`call`](Self::call) blocks only its caller. Dropping it closes the
/// connection.
pub struct Client {
    inner: Arc<Inner>,
}

enum Waiter {
    Thread(Thread),
    Waker(Option<Waker>),
}

struct Pending {
    id: u64,
    waiter: Waiter,
    /// The response descriptor, or why the call failed.
    result: Option<io::Result<Desc>>,
    /// The request body, freed when the response arrives.
    req: Option<u64>,
    /// The caller is gone (a dropped future): release whatever arrives.
    abandoned: bool,
}

struct State {
    tx: Producer<Desc>,
    arena: Arena,
    pending: Slab<Pending>,
    seq: u32,
    /// `RELEASE`s not yet on the ring (it was full).
    releases: Vec<Desc>,
    /// Why the connection is closed, once it is.
    closed: Option<(io::ErrorKind, String)>,
}

struct Inner {
    state: Mutex<State>,
    /// Our arena's bytes, for copying request bodies in without the lock.
    mem: ArenaMem,
    /// The server's arena, where response bodies are.
    peer_mem: ArenaMem,
    dead: AtomicBool,
    sock: crate::os::unix::net::UnixStream,
    wake_reader: Box<dyn Fn() + Send + Sync>,
    config: ClientConfig,
}

impl State {
    /// Pushes queued `RELEASE`s; returns whether any went out.
    fn flush_releases(&mut self) -> bool {
        if self.releases.is_empty() {
            return false;
        }
        match self.tx.push_slice(&self.releases) {
            Ok(n) => {
                self.releases.drain(..n);
                n > 0
            }
            Err(_) => false, // a corrupt ring: the reader closes the connection
        }
    }

    fn closed_error(&self) -> io::Error {
        match &self.closed {
            Some((_, msg)) => io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("ipc connection is closed: {msg}"),
            ),
            None => io::Error::new(io::ErrorKind::BrokenPipe, "ipc connection is closed"),
        }
    }
}

impl Inner {
    /// Closes the connection: fails every pending call with `kind`, wakes
    /// their callers and the reader.
    fn close(&self, kind: io::ErrorKind, msg: String) {
        let mut wake = Vec::new();
        {
            let mut st = self.state.lock();
            self.dead.store(true, Ordering::SeqCst);
            if st.closed.is_none() {
                st.closed = Some((kind, msg.clone()));
            }
            for (_, p) in st.pending.iter_mut() {
                if p.result.is_none() {
                    p.result = Some(Err(io::Error::new(kind, msg.clone())));
                    wake.push(take_waiter(&mut p.waiter));
                }
            }
        }
        for w in wake {
            w.wake();
        }
        (self.wake_reader)();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    /// Allocates `len` bytes in our arena under the configured policy.
    fn alloc(&self, len: u64, start: Instant, nonblocking: bool) -> io::Result<Option<Alloc>> {
        let mut backoff = Backoff::new();
        loop {
            {
                let mut st = self.state.lock();
                if st.closed.is_some() {
                    return Err(st.closed_error());
                }
                if len > st.arena.capacity() {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        format!(
                            "ipc request of {len} bytes exceeds the client arena ({} bytes)",
                            st.arena.capacity()
                        ),
                    ));
                }
                match st.arena.alloc(len) {
                    Ok(a) => return Ok(Some(a)),
                    Err(full) => match self.config.arena_full {
                        ArenaFullPolicy::Fail => return Err(full.into()),
                        ArenaFullPolicy::Wait(t) if start.elapsed() >= t => return Err(full.into()),
                        ArenaFullPolicy::Wait(_) if nonblocking => return Ok(None),
                        ArenaFullPolicy::Wait(_) => {}
                    },
                }
            }
            backoff.snooze();
        }
    }

    /// Pushes the call; returns its slab key, or `None` if the ring is
    /// full (nothing changed then).
    fn try_push(
        &self,
        body: Option<Alloc>,
        len: u64,
        waiter: &mut Option<Waiter>,
    ) -> io::Result<Option<usize>> {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            if let Some(a) = body {
                let _ = st.arena.free(a.offset);
            }
            return Err(st.closed_error());
        }
        st.flush_releases();
        let seq = st.seq;
        let entry = st.pending.vacant_entry();
        let key = entry.key();
        let id = u64::from(seq) << 32 | key as u64;
        let desc = Desc {
            id,
            opcode: CALL,
            flags: 0,
            offset: body.map_or(0, |a| a.offset),
            len,
        };
        match st.tx.push(desc) {
            Ok(()) => {}
            Err(PushError::Full(_)) => return Ok(None),
            Err(PushError::Corrupt(_, e)) => {
                drop(st);
                self.close(io::ErrorKind::InvalidData, format!("request ring: {e}"));
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()));
            }
        }
        st.pending.insert(Pending {
            id,
            waiter: waiter.take().expect("one push per call"),
            result: None,
            req: body.map(|a| a.offset),
            abandoned: false,
        });
        st.seq = seq.wrapping_add(1);
        let _ = st.tx.notify();
        Ok(Some(key))
    }

    /// Pushes the call, waiting while the ring is full.
    fn push_blocking(&self, body: Option<Alloc>, len: u64) -> io::Result<usize> {
        let mut waiter = Some(Waiter::Thread(crate::thread::current()));
        let mut backoff = Backoff::new();
        loop {
            if let Some(key) = self.try_push(body, len, &mut waiter)? {
                return Ok(key);
            }
            backoff.snooze();
        }
    }

    /// Waits (parks) for call `key`'s result.
    fn wait(self: &Arc<Self>, key: usize) -> io::Result<Response> {
        // A short poll first: a fast response then costs no park/unpark
        // (which is a cross-carrier wake-up when the reader runs on
        // another carrier).
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            {
                let mut st = self.state.lock();
                if let Some(r) = st.pending[key].result.take() {
                    st.pending.remove(key);
                    drop(st);
                    return self.finish(r);
                }
            }
            polls += 1;
            if polls % 8 == 0 && start.elapsed() >= CALLER_SPIN {
                break;
            }
            crate::thread::yield_now();
        }
        loop {
            {
                let mut st = self.state.lock();
                if let Some(r) = st.pending[key].result.take() {
                    st.pending.remove(key);
                    drop(st);
                    return self.finish(r);
                }
            }
            crate::thread::park();
        }
    }

    fn finish(self: &Arc<Self>, r: io::Result<Desc>) -> io::Result<Response> {
        let d = r?;
        if d.opcode == ERROR {
            let code = d.flags as i32;
            return Err(if code != 0 {
                let os = io::Error::from_raw_os_error(code);
                io::Error::new(os.kind(), format!("ipc handler failed: {os}"))
            } else {
                io::Error::other("ipc handler failed")
            });
        }
        Ok(Response {
            inner: self.clone(),
            body: Body {
                mem: self.peer_mem.clone(),
                offset: d.offset,
                len: d.len,
            },
        })
    }

    /// Handles a batch of response descriptors (the reader).
    fn complete(&self, descs: &[Desc]) -> Result<(), String> {
        let mut wake = Vec::new();
        let mut res = Ok(());
        {
            let mut st = self.state.lock();
            for d in descs {
                if let Err(e) = self.complete_one(&mut st, d, &mut wake) {
                    res = Err(e);
                    break;
                }
            }
            if st.flush_releases() {
                let _ = st.tx.notify();
            }
        }
        for w in wake {
            w.wake();
        }
        res
    }

    fn complete_one(&self, st: &mut State, d: &Desc, wake: &mut Vec<Waiter>) -> Result<(), String> {
        if d.opcode != REPLY && d.opcode != ERROR {
            return Err(format!(
                "unknown response opcode {} (id {:#x})",
                d.opcode, d.id
            ));
        }
        if d.opcode == ERROR && d.len != 0 {
            return Err(format!("ERROR response with a body (id {:#x})", d.id));
        }
        check_body(&self.peer_mem, d)?;
        let key = d.id as u32 as usize;
        let p = match st.pending.get_mut(key) {
            Some(p) if p.id == d.id && p.result.is_none() => p,
            _ => {
                return Err(format!(
                    "response for unknown or answered call id {:#x}",
                    d.id
                ))
            }
        };
        let req = p.req.take();
        let abandoned = p.abandoned;
        if abandoned {
            st.pending.remove(key);
        } else {
            p.result = Some(Ok(*d));
            wake.push(take_waiter(&mut p.waiter));
        }
        if let Some(off) = req {
            // Ours: cannot fail unless our own bookkeeping is wrong.
            let _ = st.arena.free(off);
        }
        if abandoned && d.opcode == REPLY && d.len > 0 {
            st.releases.push(release(d));
        }
        Ok(())
    }

    fn release(&self, body: &Body) {
        if body.len == 0 {
            return;
        }
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return;
        }
        st.releases.push(Desc {
            id: 0,
            opcode: RELEASE,
            flags: 0,
            offset: body.offset,
            len: body.len,
        });
        if st.flush_releases() {
            let _ = st.tx.notify();
        }
    }
}

fn release(d: &Desc) -> Desc {
    Desc {
        id: d.id,
        opcode: RELEASE,
        flags: 0,
        offset: d.offset,
        len: d.len,
    }
}

fn take_waiter(w: &mut Waiter) -> Waiter {
    match w {
        Waiter::Thread(t) => Waiter::Thread(t.clone()),
        Waiter::Waker(w) => Waiter::Waker(w.take()),
    }
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Waker(Some(w)) => w.wake(),
            Waiter::Waker(None) => {}
        }
    }
}

impl Client {
    /// Connects to the server at `path` (`@name`: an abstract socket) with
    /// the default [`ClientConfig`].
    ///
    /// # Errors
    ///
    /// The socket's errors; [`io::ErrorKind::PermissionDenied`] if the
    /// server's credentials fail the policy; `UnexpectedEof` if the server
    /// refused us; `InvalidData` for a region that fails validation or
    /// exceeds the size limit.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        Client::connect_with(path, ClientConfig::default())
    }

    /// [`connect`](Self::connect) with `config`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_with(path: impl AsRef<Path>, config: ClientConfig) -> io::Result<Client> {
        let (ep, sock) = Client::connect_raw(path.as_ref(), &config)?;
        Client::from_endpoint(ep, sock.into(), config)
    }

    /// The handshake alone: the raw endpoint and the liveness socket. For
    /// tests that play a misbehaving client.
    #[doc(hidden)]
    pub fn connect_raw(
        path: &Path,
        config: &ClientConfig,
    ) -> io::Result<(Endpoint, StdUnixStream)> {
        let sock: StdUnixStream = connect_socket(path)?.into();
        config.credentials.verify(&sock)?;
        // The server sends the fd right after accepting; wait for it
        // without blocking the carrier.
        sock.set_nonblocking(true)?;
        let start = Instant::now();
        let mut backoff = Backoff::new();
        let got = loop {
            match recv_fd(&sock) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() > std::time::Duration::from_secs(30) {
                        break Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "ipc server sent no region within 30 s",
                        ));
                    }
                    backoff.snooze();
                }
                r => break r,
            }
        };
        sock.set_nonblocking(false)?;
        let (fd, payload) = got?;
        if payload != PROTOCOL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ipc server speaks an unknown protocol",
            ));
        }
        let size = u64::try_from(rustix::fs::fstat(&fd)?.st_size).unwrap_or(u64::MAX);
        if size > config.max_region {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "ipc server offered a region of {size} bytes, above the limit of {}",
                    config.max_region
                ),
            ));
        }
        let ep = Region::attach(fd)?.into_client()?;
        Ok((ep, sock))
    }

    fn from_endpoint(
        ep: Endpoint,
        sock: crate::os::unix::net::UnixStream,
        config: ClientConfig,
    ) -> io::Result<Client> {
        let Endpoint {
            tx,
            mut rx,
            arena,
            peer_arena,
            ..
        } = ep;
        let waker = rx.sleep_waker();
        let watch_sock = sock.try_clone()?;
        let inner = Arc::new(Inner {
            mem: arena.mem().clone(),
            state: Mutex::new(State {
                tx,
                arena,
                pending: Slab::new(),
                seq: 0,
                releases: Vec::new(),
                closed: None,
            }),
            peer_mem: peer_arena,
            dead: AtomicBool::new(false),
            sock,
            wake_reader: Box::new(move || {
                let _ = waker.wake();
            }),
            config,
        });
        let r = inner.clone();
        crate::thread::Builder::new()
            .name("ipc-client-reader".into())
            .spawn(move || {
                let mut buf = [Desc::default(); 64];
                let mut idle = Idle::new();
                while !r.dead.load(Ordering::SeqCst) {
                    match rx.pop_into(&mut buf) {
                        Err(e) => {
                            r.close(io::ErrorKind::InvalidData, format!("response ring: {e}"));
                        }
                        Ok(0) => {
                            if let Err(e) = idle.wait(&mut rx, &r.dead) {
                                r.close(io::ErrorKind::InvalidData, format!("response ring: {e}"));
                            }
                        }
                        Ok(n) => {
                            idle.reset();
                            if let Err(msg) = r.complete(&buf[..n]) {
                                r.close(io::ErrorKind::InvalidData, format!("bad response: {msg}"));
                            }
                        }
                    }
                }
            })?;
        let w = inner.clone();
        crate::thread::Builder::new()
            .name("ipc-client-watcher".into())
            .spawn(move || {
                let e = watch(&watch_sock);
                w.close(
                    io::ErrorKind::ConnectionReset,
                    format!("ipc server gone: {e}"),
                );
            })?;
        Ok(Client { inner })
    }

    /// Sends `request` and waits for the response. Only the calling green
    /// thread waits (or the OS thread, off the runtime).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::ConnectionReset`] if the server died while the call
    /// was pending; [`io::ErrorKind::BrokenPipe`] once the connection is
    /// closed; [`io::ErrorKind::OutOfMemory`] when the arena has no room
    /// (see [`ArenaFullPolicy`]); the handler's error kind if it failed.
    pub fn call(&self, request: &[u8]) -> io::Result<Response> {
        let len = request.len() as u64;
        let body = if len > 0 {
            let a = self
                .inner
                .alloc(len, Instant::now(), false)?
                .expect("blocking alloc");
            self.inner.mem.copy_to(a.offset, request)?;
            Some(a)
        } else {
            None
        };
        let key = self.inner.push_blocking(body, len)?;
        self.inner.wait(key)
    }

    /// Reserves `len` bytes for a request in the arena, to be written in
    /// place and sent with [`RequestBuilder::call`]: no intermediate copy
    /// for large requests.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call)'s allocation.
    pub fn request_builder(&self, len: usize) -> io::Result<RequestBuilder<'_>> {
        let alloc = if len > 0 {
            self.inner.alloc(len as u64, Instant::now(), false)?
        } else {
            None
        };
        Ok(RequestBuilder {
            client: self,
            alloc,
            len: len as u64,
        })
    }

    /// [`call`](Self::call) as a future, on the same rings: the request is
    /// copied into the arena now (or, if the arena or ring is full, at a
    /// later poll); the response is awaited without blocking a thread.
    pub fn call_async(&self, request: &[u8]) -> CallFuture {
        let len = request.len() as u64;
        let state = if len == 0 {
            FutState::Push(None, 0)
        } else {
            match self.inner.alloc(len, Instant::now(), true) {
                Ok(Some(a)) => match self.inner.mem.copy_to(a.offset, request) {
                    Ok(()) => FutState::Push(Some(a), len),
                    Err(e) => FutState::Failed(e.into()),
                },
                Ok(None) => FutState::Start(request.to_vec(), Instant::now()),
                Err(e) => FutState::Failed(e),
            }
        };
        CallFuture {
            inner: self.inner.clone(),
            state,
        }
    }

    /// Whether the connection is closed (the server is gone, or broke the
    /// protocol).
    pub fn is_closed(&self) -> bool {
        self.inner.dead.load(Ordering::SeqCst)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.inner
            .close(io::ErrorKind::BrokenPipe, "the client was dropped".into());
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A request being built in place in the client arena; see
/// [`Client::request_builder`].
pub struct RequestBuilder<'a> {
    client: &'a Client,
    alloc: Option<Alloc>,
    len: u64,
}

impl RequestBuilder<'_> {
    /// The request's length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the request is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `bytes` into the request at `offset`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if the range is outside the request.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(bytes.len());
        if end.is_none_or(|e| e as u64 > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write outside the request",
            ));
        }
        match self.alloc {
            Some(a) => Ok(self
                .client
                .inner
                .mem
                .copy_to(a.offset + offset as u64, bytes)?),
            None => Ok(()),
        }
    }

    /// The request's bytes, to write in place.
    ///
    /// # Safety
    ///
    /// The server must not write the client arena (a trusted, well-behaved
    /// peer does not: it only reads request bodies it was sent).
    pub unsafe fn as_mut_bytes_unchecked(&mut self) -> &mut [u8] {
        match self.alloc {
            // SAFETY: our allocation, not yet published; the caller vouches
            // for the peer.
            Some(a) => unsafe { self.client.inner.mem.slice_mut(a.offset, a.len) }
                .expect("our own allocation is in bounds"),
            None => &mut [],
        }
    }

    /// Sends the request and waits for the response, as
    /// [`Client::call`].
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn call(mut self) -> io::Result<Response> {
        let alloc = self.alloc.take();
        let key = self.client.inner.push_blocking(alloc, self.len)?;
        self.client.inner.wait(key)
    }
}

impl Drop for RequestBuilder<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.alloc.take() {
            let _ = self.client.inner.state.lock().arena.free(a.offset);
        }
    }
}

/// A response body in the server's arena. Dropping it hands the space
/// back to the server.
///
/// The bytes are read through copies ([`to_vec`](Self::to_vec),
/// [`read_into`](Self::read_into)): the server could still write them,
/// and safe code never holds a `&[u8]` that another process may change.
pub struct Response {
    inner: Arc<Inner>,
    body: Body,
}

impl Response {
    /// Body length in bytes.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.body.len == 0
    }

    /// A copy of the body.
    pub fn to_vec(&self) -> Vec<u8> {
        self.body.to_vec()
    }

    /// Copies the first `dst.len()` bytes (at most the body) into `dst`;
    /// returns how many.
    pub fn read_into(&self, dst: &mut [u8]) -> usize {
        self.body.read_into(dst)
    }

    /// The body without a copy.
    ///
    /// # Safety
    ///
    /// Sound only against a trusted, well-behaved server that leaves the
    /// bytes alone until this response is dropped (a peer writing them
    /// while the slice lives is undefined behaviour).
    pub unsafe fn as_bytes_unchecked(&self) -> &[u8] {
        // SAFETY: the caller's contract.
        unsafe { self.body.as_bytes_unchecked() }
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        self.inner.release(&self.body);
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("len", &self.len())
            .finish()
    }
}

enum FutState {
    /// The arena was full: the bytes, and when the call began.
    Start(Vec<u8>, Instant),
    /// Allocated and written, not yet pushed.
    Push(Option<Alloc>, u64),
    /// On the ring, waiting for the response.
    Waiting(usize),
    Failed(io::Error),
    Done,
}

/// The future of [`Client::call_async`]. While the arena or the request
/// ring is full it re-polls itself (a busy retry through the executor);
/// once the call is on the ring it sleeps until the reader wakes it.
/// Dropping it early abandons the call: the response is released when it
/// arrives.
pub struct CallFuture {
    inner: Arc<Inner>,
    state: FutState,
}

impl Future for CallFuture {
    type Output = io::Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let inner = this.inner.clone();
        loop {
            match std::mem::replace(&mut this.state, FutState::Done) {
                FutState::Start(bytes, t0) => match inner.alloc(bytes.len() as u64, t0, true) {
                    Ok(Some(a)) => {
                        if let Err(e) = inner.mem.copy_to(a.offset, &bytes) {
                            return Poll::Ready(Err(e.into()));
                        }
                        this.state = FutState::Push(Some(a), bytes.len() as u64);
                    }
                    Ok(None) => {
                        this.state = FutState::Start(bytes, t0);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                },
                FutState::Push(alloc, len) => {
                    let mut w = Some(Waiter::Waker(Some(cx.waker().clone())));
                    match inner.try_push(alloc, len, &mut w) {
                        Ok(Some(key)) => this.state = FutState::Waiting(key),
                        Ok(None) => {
                            this.state = FutState::Push(alloc, len);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                FutState::Waiting(key) => {
                    let mut st = inner.state.lock();
                    if let Some(r) = st.pending[key].result.take() {
                        st.pending.remove(key);
                        drop(st);
                        return Poll::Ready(inner.finish(r));
                    }
                    st.pending[key].waiter = Waiter::Waker(Some(cx.waker().clone()));
                    this.state = FutState::Waiting(key);
                    return Poll::Pending;
                }
                FutState::Failed(e) => return Poll::Ready(Err(e)),
                FutState::Done => panic!("CallFuture polled after completion"),
            }
        }
    }
}

impl Drop for CallFuture {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, FutState::Done) {
            FutState::Push(Some(a), _) => {
                let _ = self.inner.state.lock().arena.free(a.offset);
            }
            FutState::Waiting(key) => {
                let mut st = self.inner.state.lock();
                match st.pending[key].result.take() {
                    Some(r) => {
                        st.pending.remove(key);
                        if let Ok(d) = r {
                            if d.opcode == REPLY && d.len > 0 && st.closed.is_none() {
                                st.releases.push(release(&d));
                                if st.flush_releases() {
                                    let _ = st.tx.notify();
                                }
                            }
                        }
                    }
                    None => st.pending[key].abandoned = true,
                }
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for CallFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallFuture").finish_non_exhaustive()
    }
}
