//! Multi-producer, single-consumer channels with std's API, whose blocking
//! calls block only the calling green thread.
//!
//! [`channel`] is unbounded; [`sync_channel`]`(n)` holds at most `n`
//! messages and blocks senders when full; `sync_channel(0)` is a rendezvous:
//! `send` returns only once the receiver has taken the message. The error
//! types are std's own, so code moves over by changing a path.
//!
//! Every flavour is one short lock around this state:
//!
//! ```text
//!   buf           messages in order; at most `cap` (1 for a rendezvous,
//!                 unbounded for `channel`)
//!   senders       live Sender/SyncSender handles; 0 = disconnected
//!   receiver      whether the Receiver lives
//!   recv_waiters  the receiver, waiting for a message (0 or 1)
//!   send_waiters  senders waiting for room
//!   ack_waiters   a rendezvous sender waiting for its message to be taken
//!   pushed, taken messages in / out so far: a rendezvous sender's message
//!                 is taken once `taken >= its ticket`
//! ```
//!
//! Waiting uses the crate's wait lists: the waiter links itself under the
//! lock and parks after releasing it. Values are never dropped under the
//! lock (a message's destructor may use channels itself).
//!
//! ```
//! use green::sync::mpsc;
//!
//! let (tx, rx) = mpsc::channel();
//! for i in 0..10 {
//!     let tx = tx.clone();
//!     green::spawn(move || tx.send(i).unwrap());
//! }
//! drop(tx);
//! assert_eq!(rx.iter().sum::<i32>(), 45);
//! ```

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use super::wait_queue::{wait, Wait, WaitList, Wakes};

pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

/// How many messages the buffer may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cap {
    Unbounded,
    Bounded(usize),
    /// `sync_channel(0)`: one slot, and the sender waits until it is taken.
    Rendezvous,
}

struct State<T> {
    buf: VecDeque<T>,
    senders: usize,
    receiver: bool,
    recv_waiters: WaitList,
    send_waiters: WaitList,
    ack_waiters: WaitList,
    pushed: u64,
    taken: u64,
}

struct Channel<T> {
    state: Mutex<State<T>>,
    cap: Cap,
}

impl<T> Channel<T> {
    fn new(cap: Cap) -> Arc<Channel<T>> {
        Arc::new(Channel {
            state: Mutex::new(State {
                buf: VecDeque::new(),
                senders: 1,
                receiver: true,
                recv_waiters: WaitList::new(),
                send_waiters: WaitList::new(),
                ack_waiters: WaitList::new(),
                pushed: 0,
                taken: 0,
            }),
            cap,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock()
    }

    fn has_room(&self, s: &State<T>) -> bool {
        match self.cap {
            Cap::Unbounded => true,
            Cap::Bounded(n) => s.buf.len() < n,
            Cap::Rendezvous => s.buf.is_empty(),
        }
    }

    /// Sends `t`; with `block` false, fails instead of waiting.
    fn send(&self, t: T, block: bool) -> Result<(), TrySendError<T>> {
        let mut s = self.lock();
        loop {
            if !s.receiver {
                return Err(TrySendError::Disconnected(t));
            }
            if self.has_room(&s) {
                // A rendezvous `try_send` succeeds only into a waiting
                // receiver's hands.
                if self.cap == Cap::Rendezvous && !block && s.recv_waiters.is_empty() {
                    return Err(TrySendError::Full(t));
                }
                s.buf.push_back(t);
                s.pushed += 1;
                let wakes = s.recv_waiters.take_front(1, |_| true);
                if self.cap == Cap::Rendezvous && block {
                    let ticket = s.pushed;
                    return self.await_ack(s, ticket, wakes);
                }
                drop(s);
                drop(wakes);
                return Ok(());
            }
            if !block {
                return Err(TrySendError::Full(t));
            }
            match wait(s, |s| &mut s.send_waiters, || self.lock(), 0, None, || {}) {
                Wait::Notified(_) => s = self.lock(),
                Wait::TimedOut(_) => unreachable!("senders wait without a deadline"),
            }
        }
    }

    /// A rendezvous sender, whose message is in the slot: waits until the
    /// receiver has taken it, or takes it back if the receiver is gone.
    fn await_ack<'a>(
        &'a self,
        mut s: MutexGuard<'a, State<T>>,
        ticket: u64,
        wakes: Wakes,
    ) -> Result<(), TrySendError<T>> {
        let mut wakes = Some(wakes);
        loop {
            if s.taken >= ticket {
                drop(s);
                drop(wakes);
                return Ok(());
            }
            if !s.receiver {
                // The slot holds one message at a time and ours is not
                // taken: it is still there.
                let t = s
                    .buf
                    .pop_front()
                    .expect("an untaken message is in the slot");
                drop(s);
                drop(wakes);
                return Err(TrySendError::Disconnected(t));
            }
            let wake_receiver = wakes.take();
            let before_sleep = move || drop(wake_receiver);
            match wait(
                s,
                |s| &mut s.ack_waiters,
                || self.lock(),
                0,
                None,
                before_sleep,
            ) {
                Wait::Notified(_) => s = self.lock(),
                Wait::TimedOut(_) => unreachable!("senders wait without a deadline"),
            }
        }
    }

    /// Takes the front message and picks whom that frees.
    fn take(&self, s: &mut State<T>) -> Option<(T, Wakes)> {
        let t = s.buf.pop_front()?;
        s.taken += 1;
        let wakes = match self.cap {
            Cap::Unbounded => Wakes::none(),
            Cap::Bounded(_) => s.send_waiters.take_front(1, |_| true),
            Cap::Rendezvous => {
                let mut wakes = s.ack_waiters.take_all();
                wakes.append(s.send_waiters.take_front(1, |_| true));
                wakes
            }
        };
        Some((t, wakes))
    }

    fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut s = self.lock();
        match self.take(&mut s) {
            Some((t, wakes)) => {
                drop(s);
                drop(wakes);
                Ok(t)
            }
            None if s.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    fn recv(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let mut s = self.lock();
        loop {
            if let Some((t, wakes)) = self.take(&mut s) {
                drop(s);
                drop(wakes);
                return Ok(t);
            }
            if s.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            match wait(
                s,
                |s| &mut s.recv_waiters,
                || self.lock(),
                0,
                deadline,
                || {},
            ) {
                Wait::Notified(_) => s = self.lock(),
                Wait::TimedOut(mut g) => {
                    return match self.take(&mut g) {
                        Some((t, wakes)) => {
                            drop(g);
                            drop(wakes);
                            Ok(t)
                        }
                        None if g.senders == 0 => Err(RecvTimeoutError::Disconnected),
                        None => Err(RecvTimeoutError::Timeout),
                    };
                }
            }
        }
    }

    fn add_sender(&self) {
        self.lock().senders += 1;
    }

    fn drop_sender(&self) {
        let mut s = self.lock();
        s.senders -= 1;
        if s.senders == 0 {
            let wakes = s.recv_waiters.take_all();
            drop(s);
            drop(wakes);
        }
    }

    fn drop_receiver(&self) {
        let mut s = self.lock();
        s.receiver = false;
        // A rendezvous slot's message goes back to its blocked sender.
        let dropped = if self.cap == Cap::Rendezvous {
            VecDeque::new()
        } else {
            mem::take(&mut s.buf)
        };
        let mut wakes = s.send_waiters.take_all();
        wakes.append(s.ack_waiters.take_all());
        drop(s);
        drop(wakes);
        drop(dropped);
    }
}

/// Creates an unbounded channel: `send` never blocks.
#[must_use]
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Channel::new(Cap::Unbounded);
    (Sender { chan: chan.clone() }, Receiver::new(chan))
}

/// Creates a channel holding at most `bound` messages: `send` blocks while
/// it is full. With `bound` 0, `send` blocks until the receiver takes the
/// message (a rendezvous).
#[must_use]
pub fn sync_channel<T>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
    let cap = match bound {
        0 => Cap::Rendezvous,
        n => Cap::Bounded(n),
    };
    let chan = Channel::new(cap);
    (SyncSender { chan: chan.clone() }, Receiver::new(chan))
}

/// The sending half of a [`channel`]. Clone it for more producers.
pub struct Sender<T> {
    chan: Arc<Channel<T>>,
}

impl<T> Sender<T> {
    /// Sends `t` without blocking. Fails, giving `t` back, if the receiver
    /// is gone.
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        self.chan.send(t, true).map_err(|e| match e {
            TrySendError::Disconnected(t) | TrySendError::Full(t) => SendError(t),
        })
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.chan.add_sender();
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The sending half of a [`sync_channel`]. Clone it for more producers.
pub struct SyncSender<T> {
    chan: Arc<Channel<T>>,
}

impl<T> SyncSender<T> {
    /// Sends `t`, blocking (only the green thread, on a green thread) while
    /// the channel is full, or for a rendezvous channel until the receiver
    /// takes it. Fails, giving `t` back, if the receiver is gone.
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        self.chan.send(t, true).map_err(|e| match e {
            TrySendError::Disconnected(t) | TrySendError::Full(t) => SendError(t),
        })
    }

    /// Sends `t` if there is room now (for a rendezvous channel: if the
    /// receiver is waiting); otherwise gives it back.
    pub fn try_send(&self, t: T) -> Result<(), TrySendError<T>> {
        self.chan.send(t, false)
    }
}

impl<T> Clone for SyncSender<T> {
    fn clone(&self) -> SyncSender<T> {
        self.chan.add_sender();
        SyncSender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for SyncSender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for SyncSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncSender").finish_non_exhaustive()
    }
}

/// The receiving half of a channel. There is one; it may move between
/// threads but not be shared (as with std):
///
/// ```compile_fail
/// fn assert_sync<T: Sync>(_: &T) {}
/// let (_tx, rx) = green::sync::mpsc::channel::<u8>();
/// assert_sync(&rx);
/// ```
pub struct Receiver<T> {
    chan: Arc<Channel<T>>,
    /// std's Receiver is !Sync; so is ours.
    _not_sync: PhantomData<Cell<()>>,
}

impl<T> Receiver<T> {
    fn new(chan: Arc<Channel<T>>) -> Receiver<T> {
        Receiver {
            chan,
            _not_sync: PhantomData,
        }
    }

    /// Takes a message if one is ready.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.try_recv()
    }

    /// Blocks (only the green thread, on a green thread) until a message
    /// arrives; fails once every sender is gone and the buffer is empty.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan.recv(None).map_err(|_| RecvError)
    }

    /// Like [`recv`](Receiver::recv), giving up after about `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        // A deadline past the end of time means no deadline.
        self.chan.recv(Instant::now().checked_add(timeout))
    }

    /// Iterates over messages, blocking for each, until disconnection.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// Iterates over the messages ready now, without blocking.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_receiver();
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// Blocking iterator over a [`Receiver`]'s messages; see [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T: 'a> {
    rx: &'a Receiver<T>,
}

/// Non-blocking iterator over a [`Receiver`]'s ready messages; see
/// [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T: 'a> {
    rx: &'a Receiver<T>,
}

/// Owning blocking iterator over a [`Receiver`]'s messages.
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
