//! [`Client`]: one connection, shared by any number of callers.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use slab::Slab;

use super::blocks::{Block, Blocks};
use super::{
    connect_socket, handshake_wait, hello, watch, ArenaFullPolicy, Backoff, Body, ClientConfig,
    Idle, Out, Padded, Spin, CALL, ERROR, INLINE, INLINE_MAX, KEY_MASK, PROTOCOL, RELEASE, REPLY,
};
use crate::ring::{Consumer, Peek, Producer, PushError, RingError};
use crate::shm::{
    recv_fds, send_fds, ArenaMem, Desc, Endpoint, OwnArena, PeerArena, PeerMem, Region, ARENA_NAMES,
};
use crate::thread::Thread;

/// Which threads (carriers: green threads never move to another) have a
/// caller spinning on a connection's response ring, one bit per thread.
/// Threads are numbered as they first call, modulo 64: two threads that
/// share a bit only spin less. Relaxed throughout: a scheduling hint that
/// guards no data.
#[derive(Default)]
struct SpinClaims(AtomicU64);

impl SpinClaims {
    /// This thread's bit.
    fn bit() -> u64 {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        thread_local! {
            static BIT: u64 = 1 << (NEXT.fetch_add(1, Ordering::Relaxed) % 64);
        }
        BIT.with(|b| *b)
    }

    /// Claims the right to spin for this thread, if no caller here holds
    /// it; returns the bit to give back with [`unclaim`](Self::unclaim)
    /// (from any thread).
    fn claim(&self) -> Option<u64> {
        let bit = Self::bit();
        if self.0.load(Ordering::Relaxed) & bit != 0 {
            return None;
        }
        (self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0).then_some(bit)
    }

    fn unclaim(&self, bit: u64) {
        self.0.fetch_and(!bit, Ordering::Relaxed);
    }
}

/// How long a caller polls for its response before it parks.
const CALLER_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Copied requests up to this size are copied in under the lane's lock,
/// with their allocation and push (see [`Inner::try_push_copy`]); larger
/// ones take the usual way and are copied outside it, so the lock is never
/// held for long.
const COPY_UNDER_LOCK_MAX: usize = 16 << 10;

/// A connection to a [`Server`](super::Server). Share it (`&Client` or
/// `Arc<Client>`) between green threads on any carriers: each
/// [`call`](Self::call) blocks only its caller. Dropping it closes the
/// connection.
///
/// It holds one lane per carrier of its runtime (see
/// [`ClientConfig::lanes`]): a lane is a connection of its own to the
/// server (region, rings, reader), and a call goes over the lane of the
/// carrier it is made on, so callers on different carriers share no ring,
/// lock or counter. Calls from threads that are not carriers use the first
/// lane.
pub struct Client {
    lanes: Box<[Arc<Inner>]>,
}

enum Waiter {
    /// A blocking caller: the result goes to its slot.
    Slot(SlotRef),
    /// A future: the result stays in [`Pending::result`] until polled.
    Waker(Option<Waker>),
}

/// Where a blocking call's result is delivered: on the caller's stack.
/// The caller polls `state` without taking the connection's lock, and
/// leaves (freeing the slot) only once it is [`DONE`].
///
/// `state` goes `POLLING -> DONE` (delivered while the caller polls: no
/// wake-up needed), or `POLLING -> PARKING` (the caller stored its
/// `thread` and will park) `-> DONE` (the deliverer unparks it). Both
/// sides move it with compare-exchange, so a delivery never misses a
/// parked caller, and a caller that got its result while polling never
/// needed a handle to its thread.
struct CallSlot {
    state: AtomicU8,
    result: UnsafeCell<Option<io::Result<Desc>>>,
    /// Set by the caller before `PARKING`, read by the deliverer after.
    thread: UnsafeCell<Option<Thread>>,
}

const POLLING: u8 = 0;
const PARKING: u8 = 1;
const DONE: u8 = 2;

impl CallSlot {
    fn new() -> CallSlot {
        CallSlot {
            state: AtomicU8::new(POLLING),
            result: UnsafeCell::new(None),
            thread: UnsafeCell::new(None),
        }
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Waits (parked) until the result is delivered, or until `deadline`
    /// (`None`: none); whether it was delivered. A caller that gets
    /// `false` must take its [`SlotRef`] back ([`Inner::abandon`]) or else
    /// [`wait_parked`](Self::wait_parked) for DONE before it may return:
    /// the slot lives on its stack.
    fn park_until(&self, deadline: Option<Instant>) -> bool {
        // SAFETY: the deliverer reads `thread` only after seeing PARKING,
        // which is published (Release) after this write; before that only
        // this thread touches it.
        unsafe { *self.thread.get() = Some(crate::thread::current()) };
        if self
            .state
            .compare_exchange(POLLING, PARKING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return true; // DONE meanwhile
        }
        self.wait_parked(deadline)
    }

    /// Once PARKING is set: waits for DONE (the deliverer unparks this
    /// thread after setting it), or until `deadline`; whether it came.
    fn wait_parked(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.is_done() {
                return true;
            }
            match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                None => crate::thread::park(),
                Some(left) if left.is_zero() => return false,
                Some(left) => crate::thread::park_timeout(left),
            }
        }
    }

    /// Takes the delivered result.
    ///
    /// # Safety
    ///
    /// Only after [`is_done`](Self::is_done) returned true.
    unsafe fn take_result(&self) -> Option<io::Result<Desc>> {
        // SAFETY: DONE is set (Release) after the one deliverer wrote
        // `result` and never touches the slot again; the caller's contract.
        unsafe { (*self.result.get()).take() }
    }
}

/// A pointer to a caller's [`CallSlot`], held in exactly one place: the
/// call's [`Pending`] entry, until [`deliver`](SlotRef::deliver) consumes
/// it (after removing the entry, under the state lock, so a slot is
/// delivered to at most once).
struct SlotRef(NonNull<CallSlot>);

// SAFETY: a `SlotRef` only travels from the caller to the thread that
// delivers the result; `CallSlot`'s `state` is atomic, `result` is
// written by the one deliverer before DONE is set (Release) and read by
// the caller after it sees DONE (Acquire), and `thread` is written by
// the caller before PARKING is set (Release) and read by the deliverer
// after it sees PARKING (Acquire).
unsafe impl Send for SlotRef {}

impl SlotRef {
    /// Writes the result, sets DONE, wakes the caller if it parks.
    fn deliver(self, r: io::Result<Desc>) {
        // SAFETY: the caller keeps the slot alive until DONE is set (it
        // returns only then), and this is the only `SlotRef` to it (see
        // the type's docs).
        let slot = unsafe { self.0.as_ref() };
        // SAFETY: the caller reads `result` only after seeing DONE, which
        // is set below; nobody else touches it.
        unsafe { *slot.result.get() = Some(r) };
        if slot
            .state
            .compare_exchange(POLLING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return; // the caller was polling: it sees DONE by itself
        }
        // PARKING: the caller stored its thread first and waits for DONE.
        // SAFETY: see the type's docs; the slot is alive until DONE.
        let thread = unsafe { (*slot.thread.get()).take() };
        slot.state.store(DONE, Ordering::Release);
        // The slot may be gone from here on.
        if let Some(t) = thread {
            t.unpark();
        }
    }
}

/// The error of a call that timed out while `what`.
fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("ipc call timed out {what}"),
    )
}

/// A wake-up to do once the state lock is released.
enum Wake {
    Slot(SlotRef, io::Result<Desc>),
    Waker(Option<Waker>),
}

/// The most response descriptors popped and completed at once.
const BATCH: usize = 32;

/// The wake-ups of one batch of responses, to run once the lock is
/// released.
struct Wakes {
    items: [Option<Wake>; BATCH],
    len: usize,
}

impl Wake {
    fn run(self) {
        match self {
            Wake::Slot(s, r) => s.deliver(r),
            Wake::Waker(Some(w)) => w.wake(),
            Wake::Waker(None) => {}
        }
    }
}

struct Pending {
    id: u64,
    waiter: Waiter,
    /// For a future: the response descriptor, or why the call failed.
    result: Option<io::Result<Desc>>,
    /// The request body, freed when the response arrives.
    req: Option<Block>,
    /// The caller is gone (a dropped future): release whatever arrives.
    abandoned: bool,
}

struct State {
    tx: Producer<Desc>,
    arena: Blocks,
    pending: Slab<Pending>,
    seq: u32,
    /// `RELEASE`s not yet on the ring (it was full).
    releases: Vec<Desc>,
    /// Why the connection is closed, once it is.
    closed: Option<(io::ErrorKind, String)>,
    /// Calls waiting to place a body in the arena (for room, or under
    /// [`ClientConfig::max_in_flight`]), first come first served, by
    /// ticket. One is woken per body freed, and each that gets its space
    /// wakes the next: a waiter taken off the queue holds the turn until
    /// it has space, queues again at the front, or hands the turn on.
    space_waiters: VecDeque<(u64, SpaceWaiter)>,
    next_ticket: u64,
    /// Request bodies in our arena on their way: counted from allocation
    /// for a request copied in (it is pushed right after), from the push
    /// for one built in place (a builder the caller holds is not counted:
    /// a wait on it might never end), until the response frees the body.
    /// Each ends, so a wait for one of them to end does too.
    sending: usize,
}

/// A call waiting for space in the client arena.
enum SpaceWaiter {
    Thread(Thread),
    Waker(Waker),
}

/// A call's progress toward space for its body.
#[derive(Default)]
struct SpaceWait {
    /// When it first found the arena full: the [`ArenaFullPolicy`]
    /// deadline runs from here.
    full_since: Option<Instant>,
    /// Its ticket, from when it first queued until it has space or gives
    /// up. Queued, or (no longer in the queue) its turn has come.
    ticket: Option<u64>,
}

/// What one attempt at space gave.
enum Space {
    Got(Block),
    /// Wait to be woken, or until the deadline (`None`: no deadline).
    Wait(Option<Instant>),
    Fail(io::Error),
}

/// A future's wait for space in the client arena: its place in line, and
/// the timer for the [`ArenaFullPolicy`] deadline once there is one.
#[derive(Default)]
struct AsyncSpace {
    wait: SpaceWait,
    timer: Option<Pin<Box<crate::time::Sleep>>>,
}

impl AsyncSpace {
    /// Tries for a block of `len` bytes (`copied` as for
    /// [`State::try_space`]); while it must wait, the task is woken when
    /// its turn comes, or by the timer at the policy's deadline (then
    /// `try_alloc` fails).
    fn poll(
        &mut self,
        inner: &Inner,
        len: u64,
        copied: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Block>> {
        match inner.try_alloc(len, &mut self.wait, Asker::Task(cx.waker()), copied) {
            Space::Got(a) => Poll::Ready(Ok(a)),
            Space::Wait(None) => Poll::Pending,
            Space::Wait(Some(deadline)) => {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(crate::time::sleep_until_async(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            Space::Fail(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Who a call that must wait for space is: made into a [`SpaceWaiter`]
/// only if it does wait, so a call that gets its space at once clones no
/// thread handle or waker.
#[derive(Clone, Copy)]
enum Asker<'a> {
    /// The current thread, parked.
    Thread,
    /// A future's task.
    Task(&'a Waker),
}

impl Asker<'_> {
    fn waiter(self) -> SpaceWaiter {
        match self {
            Asker::Thread => SpaceWaiter::Thread(crate::thread::current()),
            Asker::Task(w) => SpaceWaiter::Waker(w.clone()),
        }
    }
}

impl SpaceWaiter {
    fn wake(self) {
        match self {
            SpaceWaiter::Thread(t) => t.unpark(),
            SpaceWaiter::Waker(w) => w.wake(),
        }
    }
}

/// What [`Inner::call`] sends.
enum Src<'a> {
    /// A body already placed (inline, or in our arena); `built`: built in
    /// place (see [`Inner::try_push`]).
    Placed(Out, bool),
    /// Bytes to copy into our arena.
    Copy(&'a [u8]),
}

/// How [`Inner::try_push_copy`] went.
enum Fast {
    /// Placed and pushed: the call's slab key.
    Pushed(usize),
    /// Placed, but the ring is full: push it with the usual wait.
    Placed(Out),
    /// Nothing done: place it the usual way.
    Fallback,
}

struct Inner {
    state: Padded<Mutex<State>>,
    /// The response ring. Popped by callers while they wait for their
    /// response (see [`Inner::call`]) and by the reader green thread
    /// while no caller does.
    rx: Padded<Mutex<Consumer<Desc>>>,
    /// Whether `rx` seems to hold responses, without its lock: pollers
    /// look here first, so spinning callers on several carriers do not
    /// pass the lock's cache line back and forth while nothing arrives.
    rx_peek: Peek<Desc>,
    /// Callers now polling `rx`; the reader stands aside while any do.
    pollers: Padded<AtomicUsize>,
    /// Which carriers have a caller spinning on `rx`: at most one each.
    spinners: Padded<SpinClaims>,
    /// The reader green thread, to unpark.
    reader: OnceLock<Thread>,
    /// Our arena's bytes, for copying request bodies in without the lock.
    mem: ArenaMem,
    /// The server's arena, where response bodies are.
    peer_mem: PeerMem,
    dead: AtomicBool,
    sock: crate::os::unix::net::UnixStream,
    wake_reader: Box<dyn Fn() + Send + Sync>,
    config: ClientConfig,
}

impl State {
    /// Frees a body of ours; returns the call whose turn for space it is
    /// now (to wake once the lock is released).
    /// `sending`: the body was counted in [`State::sending`].
    fn free_body(&mut self, body: Block, sending: bool) -> Option<SpaceWaiter> {
        self.arena.free(body.key, body.offset, None);
        self.sending -= usize::from(sending);
        self.next_turn()
    }

    /// Takes the first waiter for space off the queue: its turn.
    fn next_turn(&mut self) -> Option<SpaceWaiter> {
        self.space_waiters.pop_front().map(|(_, w)| w)
    }

    /// One attempt to place a body of `len` bytes (`len` fits the arena),
    /// for a call at `wait`, with `config`'s limits. `asker` is whom to
    /// queue if it must wait; `copied`: the body is
    /// a request copied in and sent at once (counted in `sending` from
    /// here). The second value is a call whose turn has come, to wake once
    /// the lock is released.
    fn try_space(
        &mut self,
        len: u64,
        wait: &mut SpaceWait,
        asker: Asker<'_>,
        copied: bool,
        config: &ClientConfig,
    ) -> (Space, Option<SpaceWaiter>) {
        if let Some(t) = wait.ticket {
            if let Some(slot) = self.space_waiters.iter_mut().find(|(k, _)| *k == t) {
                // Still queued (woken by something else): keep the place,
                // with the latest waker.
                slot.1 = asker.waiter();
                let limit = match (wait.full_since, config.arena_full) {
                    (Some(since), ArenaFullPolicy::Wait(d)) => Some((since, d)),
                    _ => None,
                };
                if let Some((_, d)) = limit.filter(|&(since, d)| since.elapsed() >= d) {
                    let turn = self.leave(wait);
                    return (Space::Fail(self.no_room(len, d)), turn);
                }
                // A limit too long to count (`Duration::MAX`) is none.
                return (
                    Space::Wait(limit.and_then(|(since, d)| since.checked_add(d))),
                    None,
                );
            }
        }
        // A call whose turn came goes back to the front; a new one waits
        // behind those already waiting.
        let turn = wait.ticket.is_some();
        let window =
            self.sending >= 2 && self.arena.live_bytes().saturating_add(len) > config.max_in_flight;
        if window || (!turn && !self.space_waiters.is_empty()) {
            self.queue(wait, asker, turn);
            return (Space::Wait(None), None);
        }
        match self.arena.alloc(len) {
            Ok(a) => {
                wait.ticket = None;
                self.sending += usize::from(copied);
                // Room may remain for the next in line: its turn.
                (Space::Got(a), self.next_turn())
            }
            Err(full) => match config.arena_full {
                ArenaFullPolicy::Wait(d) => {
                    let since = *wait.full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= d {
                        return (Space::Fail(full.into()), self.leave(wait));
                    }
                    self.queue(wait, asker, turn);
                    (Space::Wait(since.checked_add(d)), None)
                }
                ArenaFullPolicy::Fail => (Space::Fail(full.into()), self.leave(wait)),
            },
        }
    }

    /// Pushes a call with `body` (the lane is open); returns its slab key,
    /// or `None` if the ring is full (nothing changed then). `built` as
    /// for [`Inner::try_push`].
    fn push(
        &mut self,
        body: Out,
        built: bool,
        waiter: &mut Option<Waiter>,
    ) -> Result<Option<usize>, RingError> {
        self.flush_releases();
        let seq = self.seq;
        let key = self.pending.vacant_key();
        let id = u64::from(seq) << 32 | key as u64;
        match self.tx.push(body.desc(id, CALL)) {
            Ok(()) => {}
            Err(PushError::Full(_)) => return Ok(None),
            Err(PushError::Corrupt(_, e)) => return Err(e),
        }
        let req = body.arena_block();
        self.sending += usize::from(built && req.is_some());
        self.pending.insert(Pending {
            id,
            waiter: waiter.take().expect("one push per call"),
            result: None,
            req,
            abandoned: false,
        });
        self.seq = seq.wrapping_add(1);
        let _ = self.tx.notify();
        Ok(Some(key))
    }

    /// Queues the call at `wait` (at the front if its turn had come).
    fn queue(&mut self, wait: &mut SpaceWait, asker: Asker<'_>, front: bool) {
        let w = asker.waiter();
        let t = *wait.ticket.get_or_insert_with(|| {
            self.next_ticket += 1;
            self.next_ticket
        });
        if front {
            self.space_waiters.push_front((t, w));
        } else {
            self.space_waiters.push_back((t, w));
        }
    }

    /// The call at `wait` stops waiting for space. If its turn had come,
    /// or it was first in line, the turn passes to the next (returned, to
    /// wake): nobody else would wake that one.
    #[must_use]
    fn leave(&mut self, wait: &mut SpaceWait) -> Option<SpaceWaiter> {
        let t = wait.ticket.take()?;
        match self.space_waiters.iter().position(|(k, _)| *k == t) {
            Some(i) => {
                self.space_waiters.remove(i);
                if i == 0 {
                    self.next_turn()
                } else {
                    None
                }
            }
            None => self.next_turn(),
        }
    }

    /// The error of a call that waited `waited` for room for `len` bytes.
    fn no_room(&self, len: u64, waited: Duration) -> io::Error {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "ipc: no room for a {len}-byte request body in the client arena \
                 ({} of {} bytes in use) after waiting {waited:?}",
                self.arena.live_bytes(),
                self.arena.capacity()
            ),
        )
    }

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
        let space;
        {
            let mut st = self.state.lock();
            self.dead.store(true, Ordering::SeqCst);
            if st.closed.is_none() {
                st.closed = Some((kind, msg.clone()));
            }
            let keys: Vec<usize> = st
                .pending
                .iter()
                .filter(|(_, p)| p.result.is_none())
                .map(|(k, _)| k)
                .collect();
            for k in keys {
                let err = io::Error::new(kind, msg.clone());
                if let Some(w) = settle(&mut st.pending, k, Err(err)) {
                    wake.push(w);
                }
            }
            space = std::mem::take(&mut st.space_waiters);
        }
        for w in wake {
            w.run();
        }
        for (_, w) in space {
            w.wake();
        }
        (self.wake_reader)();
        self.unpark_reader();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    /// A caller stops polling the response ring (`done`: it has its
    /// result). The last poller to leave hands the ring back to the reader
    /// if any call still waits. Every call counts as a poller from before
    /// its push until it stops polling, so a waiting call nobody polls for
    /// has passed through here.
    fn stop_polling(&self, done: bool) {
        if self.pollers.fetch_sub(1, Ordering::SeqCst) == 1
            && (!done || !self.state.lock().pending.is_empty())
        {
            self.unpark_reader();
        }
    }

    fn unpark_reader(&self) {
        if let Some(t) = self.reader.get() {
            t.unpark();
        }
    }

    /// Pops what the response ring holds and completes it, unless another
    /// thread is popping it now. Returns whether anything was popped.
    fn poll_ring(&self) -> bool {
        if !self.rx_peek.has_entries() {
            return false;
        }
        let mut buf = [Desc::default(); BATCH];
        let Some(mut rx) = self.rx.try_lock() else {
            return false;
        };
        // Held until the batch is completed: `drain_ring` then knows that
        // every response popped before it is delivered.
        let popped = rx.pop_into(&mut buf);
        match popped {
            Ok(0) => false,
            Ok(n) => {
                let done = self.complete(&buf[..n]);
                drop(rx);
                if let Err(msg) = done {
                    self.close(io::ErrorKind::InvalidData, format!("bad response: {msg}"));
                }
                true
            }
            Err(e) => {
                self.close(io::ErrorKind::InvalidData, format!("response ring: {e}"));
                false
            }
        }
    }

    /// Completes what the response ring holds now, after a poller that
    /// holds it has completed what it popped. At most a ringful: a peer
    /// that keeps pushing does not keep us here.
    fn drain_ring(&self) {
        let mut left = self.rx.lock().capacity() as usize;
        let mut buf = [Desc::default(); BATCH];
        while left > 0 {
            let want = left.min(buf.len());
            // Never held across a park: `complete` only wakes threads.
            let mut rx = self.rx.lock();
            let popped = rx.pop_into(&mut buf[..want]);
            match popped {
                Ok(0) => return,
                Ok(n) => {
                    left -= n;
                    let done = self.complete(&buf[..n]);
                    drop(rx);
                    if let Err(msg) = done {
                        self.close(io::ErrorKind::InvalidData, format!("bad response: {msg}"));
                        return;
                    }
                }
                Err(e) => {
                    self.close(io::ErrorKind::InvalidData, format!("response ring: {e}"));
                    return;
                }
            }
        }
    }

    /// One attempt to place a body of `len` bytes in our arena (see
    /// [`State::try_space`]); wakes the call whose turn it makes.
    fn try_alloc(&self, len: u64, wait: &mut SpaceWait, asker: Asker<'_>, copied: bool) -> Space {
        let (space, turn) = {
            let mut st = self.state.lock();
            if st.closed.is_some() {
                let turn = st.leave(wait);
                (Space::Fail(st.closed_error()), turn)
            } else if len > st.arena.capacity() {
                let turn = st.leave(wait);
                let e = io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "ipc request of {len} bytes exceeds the client arena ({} bytes)",
                        st.arena.capacity()
                    ),
                );
                (Space::Fail(e), turn)
            } else {
                st.try_space(len, wait, asker, copied, &self.config)
            }
        };
        if let Some(w) = turn {
            w.wake();
        }
        space
    }

    /// Places a body of `len` bytes in our arena, parking while it must
    /// wait (for room, under the [`ArenaFullPolicy`], or for calls in
    /// flight, under [`ClientConfig::max_in_flight`]). `copied` as for
    /// [`State::try_space`].
    /// A call with a `deadline` (see [`Client::call_timeout`]) gives up
    /// its place at it, with [`io::ErrorKind::TimedOut`].
    fn alloc(&self, len: u64, copied: bool, deadline: Option<Instant>) -> io::Result<Block> {
        let mut wait = SpaceWait::default();
        loop {
            let until = match self.try_alloc(len, &mut wait, Asker::Thread, copied) {
                Space::Got(a) => return Ok(a),
                Space::Fail(e) => return Err(e),
                // The policy's deadline or the call's, whichever is first.
                Space::Wait(policy) => policy.into_iter().chain(deadline).min(),
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.leave(&mut wait);
                return Err(timed_out("waiting for room in the client arena"));
            }
            // Woken when its turn comes (a body freed, or the call before
            // it placed its own), or at the deadline; the park token makes
            // a wake-up between the unlock and here count.
            match until {
                None => crate::thread::park(),
                Some(t) => crate::thread::park_timeout(t.saturating_duration_since(Instant::now())),
            }
        }
    }

    /// The call at `wait` stops waiting for space (see [`State::leave`]);
    /// the call whose turn it now is is woken.
    fn leave(&self, wait: &mut SpaceWait) {
        if wait.ticket.is_none() {
            return; // never queued, or already out of line
        }
        let turn = self.state.lock().leave(wait);
        if let Some(w) = turn {
            w.wake();
        }
    }

    /// Pushes the call; returns its slab key, or `None` if the ring is
    /// full (nothing changed then).
    /// `built`: the body was built in place (not yet counted in
    /// [`State::sending`]).
    fn try_push(
        &self,
        body: Out,
        built: bool,
        waiter: &mut Option<Waiter>,
    ) -> io::Result<Option<usize>> {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            if let Some(b) = body.arena_block() {
                let _ = st.free_body(b, !built);
            }
            return Err(st.closed_error());
        }
        match st.push(body, built, waiter) {
            Ok(pushed) => Ok(pushed),
            Err(e) => {
                drop(st);
                self.close(io::ErrorKind::InvalidData, format!("request ring: {e}"));
                Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
            }
        }
    }

    /// A copied request's way in with one lock: when it is at most
    /// [`COPY_UNDER_LOCK_MAX`] bytes, nothing waits for space, and the
    /// window and the arena have room, the body is allocated, copied in
    /// and pushed under the same lock. Otherwise (`Fallback`) nothing
    /// changed.
    fn try_push_copy(&self, bytes: &[u8], waiter: &mut Option<Waiter>) -> io::Result<Fast> {
        if bytes.len() > COPY_UNDER_LOCK_MAX {
            return Ok(Fast::Fallback);
        }
        let len = bytes.len() as u64;
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Err(st.closed_error());
        }
        let window = st.sending >= 2
            && st.arena.live_bytes().saturating_add(len) > self.config.max_in_flight;
        if window || !st.space_waiters.is_empty() {
            return Ok(Fast::Fallback);
        }
        let Ok(a) = st.arena.alloc(len) else {
            return Ok(Fast::Fallback);
        };
        st.sending += 1;
        if let Err(e) = self.mem.copy_to_owned(a.offset, bytes) {
            let turn = st.free_body(a, true);
            drop(st);
            if let Some(w) = turn {
                w.wake();
            }
            return Err(e.into());
        }
        let body = Out::Arena(a);
        match st.push(body, false, waiter) {
            Ok(Some(key)) => Ok(Fast::Pushed(key)),
            Ok(None) => Ok(Fast::Placed(body)),
            Err(e) => {
                drop(st);
                self.close(io::ErrorKind::InvalidData, format!("request ring: {e}"));
                Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
            }
        }
    }

    /// Makes the call: pushes it (waiting while the ring is full), then
    /// waits for its result in a slot on this stack.
    fn call(self: &Arc<Self>, src: Src<'_>, deadline: Option<Instant>) -> io::Result<Response> {
        let slot = CallSlot::new();
        let mut waiter = Some(Waiter::Slot(SlotRef(NonNull::from(&slot))));
        // The caller polls the response ring itself from before its push
        // until its response comes or a short while passes: a fast
        // response then goes from the ring to this thread with no hand-off
        // (no park/unpark, which is a cross-carrier wake-up when the reader
        // runs on another carrier, and no reader spinning on another CPU
        // meanwhile).
        self.pollers.fetch_add(1, Ordering::SeqCst);
        let mut key = None;
        let (body, built) = match src {
            Src::Placed(body, built) => (Some(body), built),
            Src::Copy(bytes) => match self.try_push_copy(bytes, &mut waiter) {
                Ok(Fast::Pushed(k)) => {
                    key = Some(k);
                    (None, false)
                }
                Ok(Fast::Placed(body)) => (Some(body), false),
                Ok(Fast::Fallback) => {
                    // It may wait for space: not polling meanwhile, or a
                    // reader parked for pollers would wait on it.
                    self.stop_polling(true);
                    let body = self.write_body(bytes, deadline)?;
                    self.pollers.fetch_add(1, Ordering::SeqCst);
                    (Some(body), false)
                }
                Err(e) => {
                    self.stop_polling(true);
                    return Err(e);
                }
            },
        };
        if let Some(body) = body {
            let mut backoff = Backoff::new();
            loop {
                match self.try_push(body, built, &mut waiter) {
                    Ok(Some(k)) => {
                        key = Some(k);
                        break;
                    }
                    Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                        self.stop_polling(true);
                        if let Some(b) = body.arena_block() {
                            self.free_body(b, !built);
                        }
                        return Err(timed_out("waiting for room on the request ring"));
                    }
                    Ok(None) => {
                        // The request ring is full: keep responses flowing
                        // while waiting for room.
                        self.poll_ring();
                        backoff.snooze();
                    }
                    Err(e) => {
                        self.stop_polling(true);
                        return Err(e);
                    }
                }
            }
        }
        // One caller per carrier spins; the others park at once and are
        // woken by whoever pops their response. Every spinner switches to
        // each waiting caller of its carrier once per round, so with
        // hundreds waiting a response sat in its slot for a whole round
        // before its caller noticed (the next call waited as long), and
        // the switches themselves cost more than the polling.
        if let Some(bit) = self.spinners.claim() {
            let mut spin = Spin::new();
            while !slot.is_done() {
                self.poll_ring();
                if slot.is_done() || !spin.round(CALLER_SPIN) {
                    break;
                }
                crate::thread::yield_now();
            }
            self.spinners.unclaim(bit);
        }
        self.stop_polling(slot.is_done());
        // Past a deadline the call was pushed (it had a key), unless the
        // wait for room ended it above.
        if !slot.park_until(deadline) {
            if key.is_some_and(|k| self.abandon(k, &slot)) {
                return Err(timed_out("waiting for the response"));
            }
            // Being delivered: the deliverer writes into the slot.
            slot.wait_parked(None);
        }
        // SAFETY: the slot is DONE: `park_until` returned true, or
        // `wait_parked(None)` returned, which it does only then.
        let r = unsafe { slot.take_result() };
        self.finish(
            r.unwrap_or_else(|| Err(io::Error::other("ipc call finished without a result"))),
        )
    }

    /// Gives up waiting for call `key`, whose result goes to `slot`, if
    /// nothing is delivering it yet: takes the slot's [`SlotRef`] out of
    /// the call's entry and marks the call abandoned (its response, when
    /// it comes, is released and its request body freed then: the server
    /// may still be reading it). False if the result is on its way (the
    /// entry is gone with the `SlotRef`): the caller must then wait for
    /// DONE, since the deliverer writes into `slot`.
    fn abandon(&self, key: usize, slot: &CallSlot) -> bool {
        let mut st = self.state.lock();
        match st.pending.get_mut(key) {
            Some(p) if matches!(&p.waiter, Waiter::Slot(s) if s.0 == NonNull::from(slot)) => {
                p.waiter = Waiter::Waker(None);
                p.abandoned = true;
                true
            }
            _ => false,
        }
    }

    /// A future's state once its call `key` is pushed (it counts as a
    /// poller since before the push): one spinner per carrier, as for
    /// blocking calls; the others wait for their waker.
    fn waiting<'a>(&self, key: usize) -> FutState<'a> {
        let spin = self.spinners.claim().map(|bit| (Spin::new(), bit));
        if spin.is_none() {
            self.stop_polling(false);
        }
        FutState::Waiting { key, spin }
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
            body: Body::decode_with(|| LaneMem(self.clone()), &d),
        })
    }

    /// Allocates a body in our arena (waiting for space, see
    /// [`alloc`](Self::alloc)) and copies `bytes` in.
    fn write_body(&self, bytes: &[u8], deadline: Option<Instant>) -> io::Result<Out> {
        let a = self.alloc(bytes.len() as u64, true, deadline)?;
        if let Err(e) = self.mem.copy_to_owned(a.offset, bytes) {
            self.free_body(a, true);
            return Err(e.into());
        }
        Ok(Out::Arena(a))
    }

    /// Frees a body of ours that was never sent and wakes the call whose
    /// turn for space it is. `sending` as for [`State::free_body`].
    fn free_body(&self, body: Block, sending: bool) {
        let turn = self.state.lock().free_body(body, sending);
        if let Some(w) = turn {
            w.wake();
        }
    }

    /// Handles a batch of response descriptors, [`BATCH`] at a time.
    fn complete(&self, descs: &[Desc]) -> Result<(), String> {
        descs
            .chunks(BATCH)
            .try_for_each(|chunk| self.complete_batch(chunk))
    }

    /// Handles at most [`BATCH`] response descriptors under one lock.
    fn complete_batch(&self, descs: &[Desc]) -> Result<(), String> {
        // On the stack: no allocation per batch.
        let mut wake = Wakes {
            items: [const { None }; BATCH],
            len: 0,
        };
        let mut turns = Vec::new();
        let mut res = Ok(());
        {
            let mut st = self.state.lock();
            for d in descs {
                if let Err(e) = self.complete_one(&mut st, d, &mut wake, &mut turns) {
                    res = Err(e);
                    break;
                }
            }
            if st.flush_releases() {
                let _ = st.tx.notify();
            }
        }
        for w in wake.items[..wake.len].iter_mut() {
            if let Some(w) = w.take() {
                w.run();
            }
        }
        for w in turns {
            w.wake();
        }
        res
    }

    /// Handles one response: settles its call and frees its request body;
    /// the call whose turn for space that makes goes in `turns`.
    fn complete_one(
        &self,
        st: &mut State,
        d: &Desc,
        wake: &mut Wakes,
        turns: &mut Vec<SpaceWaiter>,
    ) -> Result<(), String> {
        match d.opcode {
            REPLY => {
                Body::check(&self.peer_mem, d)?;
                if d.flags & INLINE == 0 {
                    // Its caller reads it soon: start fetching the batch's
                    // bodies together.
                    self.peer_mem.prefetch(d.offset, d.len);
                }
            }
            ERROR if d.len != 0 => {
                return Err(format!("ERROR response with a body (id {:#x})", d.id));
            }
            ERROR => {}
            op => return Err(format!("unknown response opcode {op} (id {:#x})", d.id)),
        }
        let key = d.id as u32 as usize;
        let req = match st.pending.get_mut(key) {
            Some(p) if p.id == d.id && p.result.is_none() => p.req.take(),
            _ => {
                return Err(format!(
                    "response for unknown or answered call id {:#x}",
                    d.id
                ))
            }
        };
        if let Some(b) = req {
            turns.extend(st.free_body(b, true));
        }
        if st.pending[key].abandoned {
            st.pending.remove(key);
            if let Some(r) = needs_release(d) {
                st.releases.push(r);
            }
        } else if let Some(w) = settle(&mut st.pending, key, Ok(*d)) {
            // One per descriptor, at most BATCH of them.
            if let Some(slot) = wake.items.get_mut(wake.len) {
                *slot = Some(w);
                wake.len += 1;
            }
        }
        Ok(())
    }

    /// Hands a response body back: `(offset, len, key)` from
    /// [`Body::shared_range`].
    fn release(&self, (offset, len, key): (u64, u64, u32)) {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return;
        }
        st.releases.push(Desc {
            id: 0,
            opcode: RELEASE,
            flags: key,
            offset,
            len,
        });
        if st.flush_releases() {
            let _ = st.tx.notify();
        }
    }
}

/// The `RELEASE` that hands back the body of response `d`, if it has one
/// in the server arena.
fn needs_release(d: &Desc) -> Option<Desc> {
    (d.opcode == REPLY && d.flags & INLINE == 0 && d.len > 0).then_some(Desc {
        id: d.id,
        opcode: RELEASE,
        flags: d.flags & KEY_MASK,
        offset: d.offset,
        len: d.len,
    })
}

/// Settles pending call `key` with `r`: a blocking caller's entry is
/// removed and its slot gets the result; a future's entry keeps the
/// result for its next poll. Returns the wake-up to run after unlocking.
fn settle(pending: &mut Slab<Pending>, key: usize, r: io::Result<Desc>) -> Option<Wake> {
    match &mut pending[key].waiter {
        Waiter::Slot(_) => match pending.remove(key).waiter {
            Waiter::Slot(s) => Some(Wake::Slot(s, r)),
            Waiter::Waker(_) => None,
        },
        Waiter::Waker(w) => {
            let w = w.take();
            pending[key].result = Some(r);
            Some(Wake::Waker(w))
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
    /// refused us or could not set the connection up (it reports why to
    /// its error hook); `InvalidData` for a region that fails validation or
    /// exceeds the size limit, or a handshake in another protocol;
    /// `TimedOut` if the server does not send its region, or confirm the
    /// connection, within [`ClientConfig::handshake_timeout`].
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        Client::connect_with(path, ClientConfig::default())
    }

    /// [`connect`](Self::connect) with `config`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_with(path: impl AsRef<Path>, config: ClientConfig) -> io::Result<Client> {
        let n = config
            .lanes
            .unwrap_or_else(crate::runtime::carriers_here)
            .max(1);
        // Lane i carries the calls of carrier i (and i + n, ...): if that
        // carrier is pinned or has a home CPU, the server is asked to serve
        // the lane on the same CPU.
        let cpus = crate::runtime::placed_cpus_here();
        let mut lanes = Vec::with_capacity(n);
        let connected = (0..n).try_for_each(|i| {
            let cpu = cpus.as_ref().and_then(|c| c.get(i).copied());
            let (ep, sock) = Client::connect_lane(path.as_ref(), &config, cpu)?;
            lanes.push(Client::lane_from_endpoint(ep, sock.into(), config.clone())?);
            Ok::<(), io::Error>(())
        });
        if let Err(e) = connected {
            // The lanes already open have readers and watchers holding
            // them: close them, or they would stay connected.
            for l in &lanes {
                l.close(
                    io::ErrorKind::BrokenPipe,
                    "the client failed to connect".into(),
                );
            }
            return Err(e);
        }
        Ok(Client {
            lanes: lanes.into(),
        })
    }

    /// The lane for a call made on this thread.
    fn lane(&self) -> &Arc<Inner> {
        let i = crate::runtime::carrier_index().map_or(0, |(i, _)| i % self.lanes.len());
        &self.lanes[i]
    }

    /// The number of lanes (connections to the server) this client holds.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The handshake alone: the raw endpoint and the liveness socket. For
    /// tests that play a misbehaving client.
    #[doc(hidden)]
    pub fn connect_raw(
        path: &Path,
        config: &ClientConfig,
    ) -> io::Result<(Endpoint, StdUnixStream)> {
        Client::connect_lane(path, config, None)
    }

    /// The handshake for a lane whose carrier is pinned to (or at home on)
    /// `cpu`.
    fn connect_lane(
        path: &Path,
        config: &ClientConfig,
        cpu: Option<usize>,
    ) -> io::Result<(Endpoint, StdUnixStream)> {
        use std::io::Write;
        let sock: StdUnixStream = connect_socket(path)?.into();
        config.credentials.verify(&sock)?;
        // Eight bytes into a new connection's empty buffer: never blocks.
        (&sock).write_all(&hello(cpu))?;
        // The server sends the region and its arena right after accepting;
        // wait for them without blocking the carrier.
        let (fds, payload) = handshake_wait(
            &sock,
            config.handshake_timeout,
            "ipc server sent no region",
            || recv_fds(&sock, 2),
        )?;
        if payload != PROTOCOL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ipc server speaks an unknown protocol",
            ));
        }
        let [region_fd, arena_fd]: [OwnedFd; 2] = fds
            .try_into()
            .unwrap_or_else(|_| unreachable!("recv_fds returned 2 fds"));
        // Everything this lane maps: the region and both arenas (the
        // client's is made here, at the size the server asks for).
        let too_big = |what: &str, size: u64| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "ipc server offered {what} of {size} bytes, above the limit of {}",
                    config.max_region
                ),
            )
        };
        let size = u64::try_from(rustix::fs::fstat(&region_fd)?.st_size).unwrap_or(u64::MAX);
        if size > config.max_region {
            return Err(too_big("a region", size));
        }
        let region = Region::attach(region_fd)?;
        let h = *region.header();
        let total = h
            .size
            .saturating_add(h.client_arena_len)
            .saturating_add(h.server_arena_len);
        if total > config.max_region {
            return Err(too_big("a region and arenas", total));
        }
        let peer = PeerArena::attach(arena_fd, ARENA_NAMES[1], h.server_arena_len)?;
        let own = OwnArena::create(h.client_arena_len)?;
        send_fds(&sock, &[own.fd()], PROTOCOL)?;
        let ep = region.into_client(own, peer)?;
        super::recv_ready(&sock, config.handshake_timeout)?;
        Ok((ep, sock))
    }

    fn lane_from_endpoint(
        ep: Endpoint,
        sock: crate::os::unix::net::UnixStream,
        config: ClientConfig,
    ) -> io::Result<Arc<Inner>> {
        let Endpoint {
            tx,
            rx,
            arena,
            peer_arena,
            ..
        } = ep;
        let waker = rx.sleep_waker();
        let watch_sock = sock.try_clone()?;
        let inner = Arc::new(Inner {
            mem: arena.mem().clone(),
            state: Padded(Mutex::new(State {
                tx,
                arena: Blocks::new(arena),
                pending: Slab::new(),
                seq: 0,
                releases: Vec::new(),
                closed: None,
                space_waiters: VecDeque::new(),
                next_ticket: 0,
                sending: 0,
            })),
            rx_peek: rx.peek(),
            rx: Padded(Mutex::new(rx)),
            pollers: Padded(AtomicUsize::new(0)),
            spinners: Padded(SpinClaims::default()),
            reader: OnceLock::new(),
            peer_mem: peer_arena,
            dead: AtomicBool::new(false),
            sock,
            wake_reader: Box::new(move || {
                let _ = waker.wake();
            }),
            config,
        });
        let r = inner.clone();
        let reader = crate::thread::Builder::new()
            .name("ipc-client-reader".into())
            .spawn(move || {
                let mut idle = Idle::new();
                let dead = || r.dead.load(Ordering::SeqCst);
                let stop = || dead() || r.pollers.load(Ordering::SeqCst) > 0;
                while !dead() {
                    if r.pollers.load(Ordering::SeqCst) > 0 {
                        // Callers pop the ring themselves; the last to stop
                        // unparks us if calls still wait. The timeout is a
                        // backstop only.
                        crate::thread::park_timeout(super::IDLE_TIMEOUT);
                        continue;
                    }
                    if r.poll_ring() {
                        idle.reset();
                    } else if let Err(e) = idle.wait(&r.rx, &stop) {
                        r.close(io::ErrorKind::InvalidData, format!("response ring: {e}"));
                    }
                }
            })?;
        let _ = inner.reader.set(reader.thread().clone());
        let w = inner.clone();
        crate::thread::Builder::new()
            .name("ipc-client-watcher".into())
            .spawn(move || {
                let e = watch(&watch_sock);
                // Answers the server pushed before it closed are its last
                // word: deliver them before failing what is left.
                w.drain_ring();
                w.close(
                    io::ErrorKind::ConnectionReset,
                    format!("ipc server gone: {e}"),
                );
            })?;
        Ok(inner)
    }

    /// Sends `request` and waits for the response. Only the calling green
    /// thread waits (or the OS thread, off the runtime).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::ConnectionReset`] if the server died while the call
    /// was pending, or shut down before a handler took it (then it never
    /// ran, see [`ShutdownHandle`](super::ShutdownHandle));
    /// [`io::ErrorKind::BrokenPipe`] once the connection is closed;
    /// [`io::ErrorKind::OutOfMemory`] when the arena has no room
    /// (see [`ArenaFullPolicy`]); the handler's error kind if it failed.
    pub fn call(&self, request: &[u8]) -> io::Result<Response> {
        self.call_until(request, None)
    }

    /// As [`call`](Self::call), giving up after `timeout`: waiting for
    /// room (in the arena or on the ring) and for the response together
    /// take at most about that long.
    ///
    /// A call that timed out is abandoned, not recalled: if it was sent,
    /// the server may still run it, and its response is released when it
    /// comes. Its request body stays in the client arena until then (the
    /// server may still be reading it); a server that never answers keeps
    /// it until the connection closes. The connection itself stays open.
    /// (A [`CallFuture`] is abandoned the same way when dropped, so an
    /// async call is bounded with [`crate::time::timeout`].)
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] when `timeout` passes first; otherwise
    /// as [`call`](Self::call).
    pub fn call_timeout(&self, request: &[u8], timeout: Duration) -> io::Result<Response> {
        // A timeout too long to add to now (`Duration::MAX`) is none.
        self.call_until(request, Instant::now().checked_add(timeout))
    }

    fn call_until(&self, request: &[u8], deadline: Option<Instant>) -> io::Result<Response> {
        let lane = self.lane();
        match Out::inline(request) {
            Some(out) => lane.call(Src::Placed(out, false), deadline),
            None => lane.call(Src::Copy(request), deadline),
        }
    }

    /// Reserves `len` bytes for a request in the arena, to be written in
    /// place ([`RequestBuilder::as_mut_bytes`] or
    /// [`write_at`](RequestBuilder::write_at)) and sent with
    /// [`RequestBuilder::call`]: no intermediate copy for large requests.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// let client = green::ipc::Client::connect("/tmp/echo.sock")?;
    /// let mut req = client.request_builder(1 << 20)?;
    /// req.as_mut_bytes().fill(7); // straight into shared memory
    /// let reply = req.call()?;
    /// # Ok(()) }
    /// ```
    ///
    /// While the arena has no room it waits as [`call`](Self::call) does,
    /// blocking the calling thread (a green thread, or an OS thread off
    /// the runtime): an async task uses
    /// [`request_builder_async`](Self::request_builder_async) instead.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call)'s allocation.
    pub fn request_builder(&self, len: usize) -> io::Result<RequestBuilder<'_>> {
        let lane = self.lane();
        let body = if len <= INLINE_MAX {
            Out::Inline([0; INLINE_MAX], len as u8)
        } else {
            Out::Arena(lane.alloc(len as u64, false, None)?)
        };
        Ok(RequestBuilder {
            lane,
            body: Some(body),
            len,
        })
    }

    /// [`request_builder`](Self::request_builder) as a future: it waits for
    /// arena space (under the [`ArenaFullPolicy`], as
    /// [`call_async`](Self::call_async) does) without blocking a thread,
    /// so an async task can build a large request in place and send it
    /// with [`RequestBuilder::call_async`].
    ///
    /// ```no_run
    /// # async fn f(client: &green::ipc::Client) -> std::io::Result<()> {
    /// let mut req = client.request_builder_async(1 << 20).await?;
    /// req.as_mut_bytes().fill(7); // straight into shared memory
    /// let reply = req.call_async().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Dropping the future before it is ready gives up its place in the
    /// wait for space.
    pub fn request_builder_async(&self, len: usize) -> BuilderFuture<'_> {
        BuilderFuture {
            lane: self.lane(),
            len,
            space: AsyncSpace::default(),
        }
    }

    /// [`call`](Self::call) as a future, on the same rings: the request is
    /// copied into the arena at the first poll (or, if it must wait for
    /// space, at the poll that finds it; the future borrows `request`
    /// until then); the response is awaited without blocking a thread.
    pub fn call_async<'a>(&self, request: &'a [u8]) -> CallFuture<'a> {
        let lane = self.lane();
        let state = match Out::inline(request) {
            Some(out) => FutState::Push(out, false),
            None => FutState::Fresh(request),
        };
        CallFuture {
            inner: lane.clone(),
            state,
        }
    }

    /// Whether the connection is closed (the server is gone, or broke the
    /// protocol).
    pub fn is_closed(&self) -> bool {
        self.lanes.iter().any(|l| l.dead.load(Ordering::SeqCst))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for lane in self.lanes.iter() {
            lane.close(io::ErrorKind::BrokenPipe, "the client was dropped".into());
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("lanes", &self.lanes.len())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A request being built in place (in the client arena, or inside its
/// descriptor when it is at most [`INLINE_MAX`] bytes); see
/// [`Client::request_builder`].
pub struct RequestBuilder<'a> {
    /// The lane whose arena holds the body; the call goes over it.
    lane: &'a Arc<Inner>,
    /// `None` once sent.
    body: Option<Out>,
    len: usize,
}

impl RequestBuilder<'_> {
    /// The request's length.
    pub fn len(&self) -> usize {
        self.len
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
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write outside the request",
            ));
        }
        match &mut self.body {
            Some(Out::Inline(b, _)) => {
                b[offset..offset + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            Some(Out::Arena(a)) => Ok(self
                .lane
                .mem
                .copy_to_owned(a.offset + offset as u64, bytes)?),
            None => Ok(()),
        }
    }

    /// The request's bytes, to write in place: in the client arena for a
    /// body of more than [`INLINE_MAX`] bytes, so that no copy follows.
    /// They hold what was there before (zeros, or an earlier request of
    /// this lane): write all of them.
    ///
    /// A plain `&mut [u8]` is sound here: the client arena is a memfd
    /// sealed so that only this process's mapping can write it (the
    /// server maps it read-only, see [`OwnArena`]), and the block is this
    /// request's alone until it is sent.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        match &mut self.body {
            Some(Out::Inline(b, n)) => &mut b[..usize::from(*n)],
            // SAFETY: the allocation is this builder's alone until `call`
            // (which consumes it) publishes it, and the slice borrows the
            // builder mutably, so no other access to those bytes exists
            // in this process; the server cannot write them: the arena is
            // an OwnArena, sealed against every writer but our mapping.
            Some(Out::Arena(a)) => unsafe { self.lane.mem.slice_mut(a.offset, a.len) }
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
    pub fn call(self) -> io::Result<Response> {
        self.call_until(None)
    }

    /// As [`call`](Self::call), giving up after `timeout`, as
    /// [`Client::call_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Client::call_timeout`].
    pub fn call_timeout(self, timeout: Duration) -> io::Result<Response> {
        // A timeout too long to add to now (`Duration::MAX`) is none.
        self.call_until(Instant::now().checked_add(timeout))
    }

    /// Sends the request as [`Client::call_async`] does: the response is
    /// awaited without blocking a thread. The future owns the request:
    /// dropped before it is sent, it frees the request's space; dropped
    /// after, it abandons the call as [`CallFuture`] does.
    pub fn call_async(mut self) -> CallFuture<'static> {
        CallFuture {
            inner: self.lane.clone(),
            state: FutState::Push(self.take_body(), true),
        }
    }

    fn call_until(mut self, deadline: Option<Instant>) -> io::Result<Response> {
        let body = self.take_body();
        self.lane.call(Src::Placed(body, true), deadline)
    }

    /// The body, out of a builder that a call consumes (`body` is an
    /// `Option` only so that `Drop` can tell a sent builder).
    fn take_body(&mut self) -> Out {
        self.body
            .take()
            .expect("a RequestBuilder holds its body until a call consumes it")
    }
}

impl Drop for RequestBuilder<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.body.take().and_then(Out::arena_block) {
            self.lane.free_body(b, false);
        }
    }
}

/// The future of [`Client::request_builder_async`]: a [`RequestBuilder`]
/// once the client arena has room for the request. While it waits it
/// holds a place in the same first-come-first-served line as blocking
/// calls and [`CallFuture`]s, and sleeps until its turn (or the
/// [`ArenaFullPolicy`] deadline).
pub struct BuilderFuture<'a> {
    lane: &'a Arc<Inner>,
    len: usize,
    space: AsyncSpace,
}

impl<'a> Future for BuilderFuture<'a> {
    type Output = io::Result<RequestBuilder<'a>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (lane, len) = (this.lane, this.len);
        let built = |body| RequestBuilder {
            lane,
            body: Some(body),
            len,
        };
        if len <= INLINE_MAX {
            return Poll::Ready(Ok(built(Out::Inline([0; INLINE_MAX], len as u8))));
        }
        this.space
            .poll(lane, len as u64, false, cx)
            .map_ok(|a| built(Out::Arena(a)))
    }
}

impl Drop for BuilderFuture<'_> {
    fn drop(&mut self) {
        // Still in line, or its turn came and it never took it: the turn
        // passes to the next.
        self.lane.leave(&mut self.space.wait);
    }
}

impl std::fmt::Debug for BuilderFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuilderFuture")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A response body in the server's arena. Dropping it hands the space
/// back to the server.
///
/// The bytes are read through copies ([`to_vec`](Self::to_vec),
/// [`read_into`](Self::read_into)): the server could still write them,
/// and safe code never holds a `&[u8]` that another process may change.
pub struct Response {
    body: Body<LaneMem>,
}

/// A response body's way to the server arena: the lane's own handle on
/// it, through the lane, which the response holds anyway to hand the
/// body back (one reference count per response, not two).
struct LaneMem(Arc<Inner>);

impl std::borrow::Borrow<PeerMem> for LaneMem {
    fn borrow(&self) -> &PeerMem {
        &self.0.peer_mem
    }
}

impl Response {
    body_accessors!(
        "Sound only against a trusted, well-behaved server that leaves the \
         bytes alone until this response is dropped (a peer writing them \
         while the slice lives is undefined behaviour)."
    );
}

impl Drop for Response {
    fn drop(&mut self) {
        if let (Body::Shared { mem, .. }, Some(range)) = (&self.body, self.body.shared_range()) {
            mem.0.release(range);
        }
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("len", &self.len())
            .finish()
    }
}

enum FutState<'a> {
    /// Not polled yet: the request, to copy in (with the push, under one
    /// lock, if nothing stands in the way; see [`Inner::try_push_copy`]).
    Fresh(&'a [u8]),
    /// Waiting for space in the arena: the request, the call's place in
    /// the wait, and the timer for the policy's deadline once there is one.
    Start(&'a [u8], AsyncSpace),
    /// Written (inline or in the arena), not yet pushed; `built`: built
    /// in place (see [`Inner::try_push`]).
    Push(Out, bool),
    /// On the ring, waiting for the response; while `spin` is set (with
    /// the carrier's spinner bit it claimed), the future polls the ring
    /// itself (as a blocking caller does) for up to [`CALLER_SPIN`].
    Waiting {
        key: usize,
        spin: Option<(Spin, u64)>,
    },
    Done,
}

/// The future of [`Client::call_async`] and [`RequestBuilder::call_async`].
/// While it waits for arena space
/// it sleeps until its turn (or the [`ArenaFullPolicy`] deadline); while
/// the request ring is full it re-polls itself (a busy retry through the
/// executor); once the call is on the ring it sleeps until the reader
/// wakes it. Dropping it early abandons the call: the response is
/// released when it arrives.
pub struct CallFuture<'a> {
    inner: Arc<Inner>,
    state: FutState<'a>,
}

impl Future for CallFuture<'_> {
    type Output = io::Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let inner = this.inner.clone();
        loop {
            match std::mem::replace(&mut this.state, FutState::Done) {
                FutState::Fresh(bytes) => {
                    let mut w = Some(Waiter::Waker(Some(cx.waker().clone())));
                    // A poller from before the push, as in `Push` below.
                    inner.pollers.fetch_add(1, Ordering::SeqCst);
                    match inner.try_push_copy(bytes, &mut w) {
                        Ok(Fast::Pushed(key)) => {
                            this.state = inner.waiting(key);
                        }
                        Ok(Fast::Placed(body)) => {
                            inner.stop_polling(true);
                            this.state = FutState::Push(body, false);
                        }
                        Ok(Fast::Fallback) => {
                            inner.stop_polling(true);
                            this.state = FutState::Start(bytes, AsyncSpace::default());
                        }
                        Err(e) => {
                            inner.stop_polling(true);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                FutState::Start(bytes, mut space) => {
                    match space.poll(&inner, bytes.len() as u64, true, cx) {
                        Poll::Ready(Ok(a)) => {
                            if let Err(e) = inner.mem.copy_to_owned(a.offset, bytes) {
                                inner.free_body(a, true);
                                return Poll::Ready(Err(e.into()));
                            }
                            this.state = FutState::Push(Out::Arena(a), false);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            this.state = FutState::Start(bytes, space);
                            return Poll::Pending;
                        }
                    }
                }
                FutState::Push(body, built) => {
                    let mut w = Some(Waiter::Waker(Some(cx.waker().clone())));
                    // A poller from before the push: the reader stands
                    // aside only while someone polls the ring.
                    inner.pollers.fetch_add(1, Ordering::SeqCst);
                    let pushed = inner.try_push(body, built, &mut w);
                    if !matches!(pushed, Ok(Some(_))) {
                        inner.stop_polling(true);
                    }
                    match pushed {
                        Ok(Some(key)) => this.state = inner.waiting(key),
                        Ok(None) => {
                            this.state = FutState::Push(body, built);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                FutState::Waiting { key, mut spin } => {
                    if spin.is_some() {
                        inner.poll_ring();
                    }
                    let mut st = inner.state.lock();
                    if let Some(r) = st.pending[key].result.take() {
                        st.pending.remove(key);
                        drop(st);
                        if let Some((_, bit)) = spin {
                            inner.spinners.unclaim(bit);
                            inner.stop_polling(true);
                        }
                        return Poll::Ready(inner.finish(r));
                    }
                    st.pending[key].waiter = Waiter::Waker(Some(cx.waker().clone()));
                    drop(st);
                    if let Some((s, bit)) = &mut spin {
                        if s.round(CALLER_SPIN) {
                            cx.waker().wake_by_ref();
                        } else {
                            inner.spinners.unclaim(*bit);
                            spin = None;
                            inner.stop_polling(false);
                        }
                    }
                    this.state = FutState::Waiting { key, spin };
                    return Poll::Pending;
                }
                FutState::Done => panic!("CallFuture polled after completion"),
            }
        }
    }
}

impl Drop for CallFuture<'_> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, FutState::Done) {
            FutState::Push(Out::Arena(a), built) => self.inner.free_body(a, !built),
            FutState::Start(_, mut space) => self.inner.leave(&mut space.wait),
            FutState::Waiting { key, spin, .. } => {
                if let Some((_, bit)) = spin {
                    self.inner.spinners.unclaim(bit);
                    self.inner.stop_polling(false);
                }
                let mut st = self.inner.state.lock();
                match st.pending[key].result.take() {
                    Some(r) => {
                        st.pending.remove(key);
                        if let Some(rel) = r.ok().as_ref().and_then(needs_release) {
                            if st.closed.is_none() {
                                st.releases.push(rel);
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

impl std::fmt::Debug for CallFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: u64) -> Desc {
        Desc {
            id,
            opcode: REPLY,
            ..Desc::default()
        }
    }

    #[test]
    fn one_spin_claim_per_thread_until_given_back() {
        let claims = Arc::new(SpinClaims::default());
        let mine = claims.claim().expect("the first claim on a thread");
        assert!(claims.claim().is_none(), "a second caller on this thread");
        let other = {
            let c = claims.clone();
            std::thread::spawn(move || c.claim()).join().unwrap()
        };
        let other = other.expect("another thread claims its own bit");
        assert_ne!(mine, other);
        claims.unclaim(mine);
        let again = claims.claim().expect("claimable once given back");
        assert_eq!(again, mine);
        // Given back from another thread (a future polled elsewhere).
        let c = claims.clone();
        std::thread::spawn(move || c.unclaim(again)).join().unwrap();
        assert_eq!(claims.claim(), Some(mine));
    }

    #[test]
    fn a_slot_gets_its_result_whether_the_caller_polls_or_parks() {
        // Delivered while the caller polls.
        let slot = CallSlot::new();
        SlotRef(NonNull::from(&slot)).deliver(Ok(desc(1)));
        assert!(slot.is_done());
        // Already DONE: returns at once.
        assert!(slot.park_until(None));
        // SAFETY: the slot is DONE.
        assert_eq!(unsafe { slot.take_result() }.unwrap().unwrap().id, 1);

        // Delivered from another thread, before or after the caller parks.
        for delay_ms in [0, 20] {
            let slot = CallSlot::new();
            let r = SlotRef(NonNull::from(&slot));
            std::thread::scope(|s| {
                s.spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                    r.deliver(Ok(desc(2)));
                });
                assert!(slot.park_until(None));
                assert!(slot.is_done());
            });
            // SAFETY: done.
            assert_eq!(unsafe { slot.take_result() }.unwrap().unwrap().id, 2);
        }
    }

    #[test]
    fn a_timed_wait_on_a_slot_ends_at_its_deadline_or_its_result() {
        use std::time::Duration;
        // Nobody delivers: the wait ends at the deadline, not DONE.
        let slot = CallSlot::new();
        assert!(!slot.park_until(Some(Instant::now() + Duration::from_millis(10))));
        assert!(!slot.is_done());

        // Delivered while waiting, or after the deadline passed (the
        // caller could not take its `SlotRef` back and waits for DONE).
        for (deliver_ms, deadline_ms) in [(0, 10_000), (20, 10_000), (30, 1)] {
            let slot = CallSlot::new();
            let r = SlotRef(NonNull::from(&slot));
            std::thread::scope(|s| {
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(deliver_ms));
                    r.deliver(Ok(desc(3)));
                });
                let deadline = Instant::now() + Duration::from_millis(deadline_ms);
                if !slot.park_until(Some(deadline)) {
                    assert!(slot.wait_parked(None));
                }
            });
            // SAFETY: done.
            assert_eq!(unsafe { slot.take_result() }.unwrap().unwrap().id, 3);
        }
    }
}
