//! Wait queues: where a blocked thread waits, and how a wake-up reaches it.
//!
//! Every primitive in [`crate::sync`] blocks here and nowhere else. A waiter
//! is a node on the waiting thread's own stack: the [`Thread`] to unpark, a
//! `notified` flag and a token from the waker. A [`WaitList`] links those
//! nodes in FIFO order. It has no lock of its own: it lives inside the lock
//! of the primitive that owns it (a channel's state, a barrier's count), or
//! inside a [`WaitQueue`], which pairs one list with one lock for the
//! primitives whose state is a lone atomic word (mutex, rwlock, condvar,
//! once).
//!
//! ```text
//!   WaitList { head, tail, len, epoch }          (under the owner's lock)
//!      |                              \
//!      v                               v
//!   +--------+  next  +--------+  next  +--------+
//!   | Waiter | -----> | Waiter | -----> | Waiter |   each on the stack of
//!   |        | <----- |        | <----- |        |   the thread it stands
//!   +--------+  prev  +--------+  prev  +--------+   for
//! ```
//!
//! Blocking goes through [`crate::thread::park`] only, so on a green thread
//! only that green thread sleeps and its carrier runs the others. This module
//! never holds a lock across a park.
//!
//! The protocol, for one waiter:
//!
//! 1. Under the owner's lock it links itself at the tail; the lock is then
//!    released.
//! 2. It parks until `notified` is set or its deadline passes (spurious
//!    unparks just loop).
//! 3. A waker, under the lock, unlinks it ([`WaitList::take_front`],
//!    [`WaitList::take_all`]) and later, usually after releasing the lock,
//!    takes its `Thread`, writes the token, sets `notified` and unparks it.
//!    From that store on the waker never touches the node: the waiter may
//!    already have returned and its frame may be gone.
//! 4. A waiter whose deadline passed relocks and unlinks itself if it is
//!    still linked. If a waker has already taken it, the notification is in
//!    flight: the waiter waits for it and reports a wake-up, so a timeout
//!    never swallows a notification that was handed to it.
//!
//! A node's frame may end only once the node was unlinked by its owner or
//! notified; [`wait`] guarantees it on every path, unwinding included.

use std::cell::Cell;
use std::marker::{PhantomData, PhantomPinned};
use std::mem;
use std::pin::pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::thread::{self, Thread};

/// One waiting thread. Lives on that thread's stack, pinned, for as long as
/// it may be linked (see [`wait`]).
struct Waiter {
    /// Who to unpark; taken by the waker that notifies this node.
    thread: Cell<Option<Thread>>,
    /// Set (once) by the waker; after that the node belongs to the waiter.
    notified: AtomicBool,
    /// The waker's word to the waiter (e.g. "the lock is yours now").
    token: Cell<usize>,
    /// What the waiter waits for, for wakers that choose (readers/writers).
    tag: usize,
    // Links: read and written only under the lock that guards the list,
    // or by the one waker that has taken the node out of it.
    prev: Cell<*const Waiter>,
    next: Cell<*const Waiter>,
    /// Set by `push_back`, cleared by `take_front` and `remove`. `take_all`
    /// leaves it set and bumps the list's epoch instead, so a node is in
    /// its list exactly when `linked && epoch == list.epoch`.
    linked: Cell<bool>,
    epoch: Cell<u64>,
    _pinned: PhantomPinned,
}

impl Waiter {
    fn new(tag: usize) -> Waiter {
        Waiter {
            thread: Cell::new(Some(thread::current())),
            notified: AtomicBool::new(false),
            token: Cell::new(0),
            tag,
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            linked: Cell::new(false),
            epoch: Cell::new(0),
            _pinned: PhantomPinned,
        }
    }

    /// Parks until notified (true) or until `deadline` passes (false).
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            // Acquire: pairs with the Release store in `Wakes::drop`, so the
            // token and whatever the waker did before (a handed-off lock, a
            // message) are visible once the flag is.
            if self.notified.load(Ordering::Acquire) {
                return true;
            }
            match deadline {
                None => thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    thread::park_timeout(d - now);
                }
            }
        }
    }
}

/// A FIFO of waiters, guarded by its owner's lock.
pub(crate) struct WaitList {
    head: *const Waiter,
    tail: *const Waiter,
    len: usize,
    /// Bumped by `take_all`; see `Waiter::linked`.
    epoch: u64,
}

// SAFETY: the pointers name waiters that stay alive while linked (`wait`
// ensures it). Their plain fields are touched only by whoever holds the lock
// around this list, or by the one waker that took them out of it; the
// `Thread` inside a waiter is Send.
unsafe impl Send for WaitList {}

impl WaitList {
    /// An empty list.
    pub(crate) const fn new() -> WaitList {
        WaitList {
            head: ptr::null(),
            tail: ptr::null(),
            len: 0,
            epoch: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tag of the oldest waiter.
    pub(crate) fn front_tag(&self) -> Option<usize> {
        // SAFETY: a linked waiter is alive, and we hold the list.
        (!self.head.is_null()).then(|| unsafe { (*self.head).tag })
    }

    /// Links `w` at the tail.
    ///
    /// # Safety
    ///
    /// `w` is in no list, and stays alive and unmoved until it is unlinked
    /// by [`WaitList::remove`] or notified through [`Wakes`].
    unsafe fn push_back(&mut self, w: &Waiter) {
        w.prev.set(self.tail);
        w.next.set(ptr::null());
        w.linked.set(true);
        w.epoch.set(self.epoch);
        if self.tail.is_null() {
            self.head = w;
        } else {
            // SAFETY: the tail is linked, hence alive; we hold the list.
            unsafe { (*self.tail).next.set(w) };
        }
        self.tail = w;
        self.len += 1;
    }

    /// Unlinks `w` if it is still in this list; false if a waker has taken
    /// it (its notification is then on its way).
    fn remove(&mut self, w: &Waiter) -> bool {
        if !w.linked.get() || w.epoch.get() != self.epoch {
            return false;
        }
        let (prev, next) = (w.prev.get(), w.next.get());
        // SAFETY: the neighbours of a linked waiter are linked, hence alive;
        // we hold the list.
        unsafe {
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next.set(next);
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).prev.set(prev);
            }
        }
        w.linked.set(false);
        self.len -= 1;
        true
    }

    /// Unlinks up to `max` waiters from the front, stopping at the first
    /// whose tag fails `pred`. They are notified when the result is dropped.
    pub(crate) fn take_front(&mut self, max: usize, mut pred: impl FnMut(usize) -> bool) -> Wakes {
        let head = self.head;
        let mut last: *const Waiter = ptr::null();
        let mut cur = self.head;
        let mut n = 0;
        while n < max && !cur.is_null() {
            // SAFETY: a linked waiter is alive; we hold the list.
            let w = unsafe { &*cur };
            if !pred(w.tag) {
                break;
            }
            w.linked.set(false);
            last = cur;
            cur = w.next.get();
            n += 1;
        }
        if n == 0 {
            return Wakes::none();
        }
        // SAFETY: `last` and `cur` (when not null) are alive: `last` was
        // linked until just now and its waiter cannot return before it is
        // notified; `cur` is still linked. We hold the list.
        unsafe {
            (*last).next.set(ptr::null());
            if !cur.is_null() {
                (*cur).prev.set(ptr::null());
            }
        }
        self.head = cur;
        if cur.is_null() {
            self.tail = ptr::null();
        }
        self.len -= n;
        Wakes {
            head,
            tail: last,
            len: n,
            token: 0,
            _not_send: PhantomData,
        }
    }

    /// Unlinks every waiter in O(1): the chain is cut off whole and the
    /// epoch bump tells its members they are no longer in the list.
    pub(crate) fn take_all(&mut self) -> Wakes {
        let wakes = Wakes {
            head: self.head,
            tail: self.tail,
            len: self.len,
            token: 0,
            _not_send: PhantomData,
        };
        self.head = ptr::null();
        self.tail = ptr::null();
        self.len = 0;
        self.epoch += 1;
        wakes
    }
}

/// Waiters taken out of a list, not yet notified. Dropping this notifies
/// them all (with the token set by [`Wakes::with_token`], else 0); do it
/// after releasing the list's lock where possible.
#[must_use = "dropping `Wakes` notifies the waiters; bind it and drop it after unlocking"]
pub(crate) struct Wakes {
    head: *const Waiter,
    tail: *const Waiter,
    len: usize,
    token: usize,
    /// Notifying must happen before the waker's frame ends; keep it local.
    _not_send: PhantomData<*const ()>,
}

impl Wakes {
    /// No waiters.
    pub(crate) const fn none() -> Wakes {
        Wakes {
            head: ptr::null(),
            tail: ptr::null(),
            len: 0,
            token: 0,
            _not_send: PhantomData,
        }
    }

    /// Number of waiters taken.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Sets the token every waiter will receive.
    pub(crate) fn with_token(mut self, token: usize) -> Wakes {
        self.token = token;
        self
    }

    /// Adds `other`'s waiters (notified with this token).
    pub(crate) fn append(&mut self, mut other: Wakes) {
        if other.head.is_null() {
            return;
        }
        if self.head.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: our tail was taken out of its list by us and is not
            // notified yet, so it is alive and its links are ours.
            unsafe { (*self.tail).next.set(other.head) };
        }
        self.tail = other.tail;
        self.len += other.len;
        other.head = ptr::null();
        other.len = 0;
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: `cur` was taken out of its list by whoever built this
            // Wakes and is not notified yet, so its waiter is still blocked
            // in `wait` and the node alive; nobody else touches its links,
            // thread or token now.
            let (next, thread) = unsafe { ((*cur).next.get(), (*cur).thread.take()) };
            // SAFETY: as above.
            unsafe { (*cur).token.set(self.token) };
            // Release: publishes the token and everything this waker did
            // before (a handed-off lock, a message) to the waiter's Acquire
            // load in `wait_until`. From here on the node may be freed:
            // nothing below touches it.
            // SAFETY: as above, up to and including this store.
            unsafe { (*cur).notified.store(true, Ordering::Release) };
            if let Some(t) = thread {
                t.unpark();
            }
            cur = next;
        }
    }
}

/// How [`wait`] ended.
pub(crate) enum Wait<G> {
    /// A waker notified us, with this token.
    Notified(usize),
    /// The deadline passed first; we are unlinked and hold the lock again.
    TimedOut(G),
}

/// Links the caller into the list that `list` projects out of `guard`,
/// releases the lock, runs `before_sleep` and parks until notified or until
/// `deadline`. `relock` takes the same lock again (on timeout). Nothing here
/// runs with the lock held except the linking and unlinking.
pub(crate) fn wait<G, L, R, B>(
    mut guard: G,
    list: L,
    relock: R,
    tag: usize,
    deadline: Option<Instant>,
    before_sleep: B,
) -> Wait<G>
where
    L: Fn(&mut G) -> &mut WaitList,
    R: Fn() -> G,
    B: FnOnce(),
{
    let waiter = pin!(Waiter::new(tag));
    let waiter: &Waiter = &waiter;
    // SAFETY: the waiter is new (in no list) and pinned in this frame; the
    // `Linked` guard below keeps the frame from ending, by return or by
    // unwinding, before the waiter is unlinked by us or notified.
    unsafe { list(&mut guard).push_back(waiter) };
    drop(guard);
    let linked = Linked {
        waiter,
        list: &list,
        relock: &relock,
        _guard: PhantomData,
    };
    before_sleep();
    let out = if waiter.wait_until(deadline) {
        Wait::Notified(waiter.token.get())
    } else {
        let mut g = relock();
        if list(&mut g).remove(waiter) {
            Wait::TimedOut(g)
        } else {
            // Taken by a waker: its notification is on the way.
            drop(g);
            waiter.wait_until(None);
            Wait::Notified(waiter.token.get())
        }
    };
    mem::forget(linked);
    out
}

/// Unlinks (or waits out) a linked waiter if `wait` unwinds.
struct Linked<'a, G, L: Fn(&mut G) -> &mut WaitList, R: Fn() -> G> {
    waiter: &'a Waiter,
    list: &'a L,
    relock: &'a R,
    _guard: PhantomData<fn() -> G>,
}

impl<G, L: Fn(&mut G) -> &mut WaitList, R: Fn() -> G> Drop for Linked<'_, G, L, R> {
    fn drop(&mut self) {
        let mut g = (self.relock)();
        if !(self.list)(&mut g).remove(self.waiter) {
            drop(g);
            self.waiter.wait_until(None);
        }
    }
}

/// How [`WaitQueue::park`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Park {
    /// Notified, with the waker's token.
    Unparked(usize),
    /// `validate` said not to wait.
    Invalid,
    /// The deadline passed.
    TimedOut,
}

/// What [`WaitQueue::unpark_one`] tells its callback.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unpark {
    /// A waiter was taken and will be notified.
    pub(crate) unparked: bool,
    /// Waiters remain after it.
    pub(crate) have_more: bool,
    /// Time to hand off directly instead of letting others barge
    /// (eventual fairness: at most every [`FAIR_INTERVAL`]).
    pub(crate) be_fair: bool,
}

/// How long a lock may let newcomers barge past its oldest waiter before an
/// unlock hands off to that waiter.
const FAIR_INTERVAL: Duration = Duration::from_micros(500);

struct Inner {
    list: WaitList,
    /// When the next unpark should be fair; None until the first unpark.
    fair_at: Option<Instant>,
}

/// A wait list with its own lock, for primitives whose state is an atomic
/// word: the shape of `parking_lot_core`'s park/unpark, one queue per
/// primitive.
pub(crate) struct WaitQueue {
    inner: Mutex<Inner>,
    /// Threads inside `park`: counted (SeqCst) under the lock before
    /// `validate` runs, until `park` returns.
    waiting: AtomicUsize,
}

impl WaitQueue {
    pub(crate) const fn new() -> WaitQueue {
        WaitQueue {
            inner: Mutex::new(Inner {
                list: WaitList::new(),
                fair_at: None,
            }),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Whether a thread may be parked (or about to park) here.
    ///
    /// SeqCst, like the count in `park`: a waker that stores its condition
    /// with SeqCst and then sees false here knows that every waiter counted
    /// later will see the condition in its `validate`.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) != 0
    }

    /// Parks the caller on this queue unless `validate`, run under the
    /// queue lock, returns false. `before_sleep` runs once the caller is
    /// queued and the lock released (a condvar unlocks its mutex there).
    pub(crate) fn park(
        &self,
        tag: usize,
        validate: impl FnOnce() -> bool,
        before_sleep: impl FnOnce(),
        deadline: Option<Instant>,
    ) -> Park {
        let inner = self.inner.lock();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _count = Uncount(&self.waiting);
        if !validate() {
            return Park::Invalid;
        }
        match wait(
            inner,
            |g| &mut g.list,
            || self.inner.lock(),
            tag,
            deadline,
            before_sleep,
        ) {
            Wait::Notified(token) => Park::Unparked(token),
            Wait::TimedOut(_) => Park::TimedOut,
        }
    }

    /// Takes the oldest waiter; `callback` runs under the queue lock (to
    /// update the primitive's state word) and returns the token to give it.
    /// Returns whether a waiter was woken.
    pub(crate) fn unpark_one(&self, callback: impl FnOnce(Unpark) -> usize) -> bool {
        let mut inner = self.inner.lock();
        let wakes = inner.list.take_front(1, |_| true);
        let unparked = wakes.len() != 0;
        let be_fair = unparked && inner.fair_due();
        let token = callback(Unpark {
            unparked,
            have_more: !inner.list.is_empty(),
            be_fair,
        });
        drop(inner);
        drop(wakes.with_token(token));
        unparked
    }

    /// Wakes every waiter with `token`; returns how many.
    pub(crate) fn unpark_all(&self, token: usize) -> usize {
        let wakes = self.inner.lock().list.take_all();
        let n = wakes.len();
        drop(wakes.with_token(token));
        n
    }

    /// Lets `choose` pick waiters (and update the primitive's state) under
    /// the queue lock; they are notified after it is released.
    pub(crate) fn unpark_with(&self, choose: impl FnOnce(&mut WaitList) -> Wakes) {
        let wakes = choose(&mut self.inner.lock().list);
        drop(wakes);
    }
}

impl Inner {
    fn fair_due(&mut self) -> bool {
        let now = Instant::now();
        match self.fair_at {
            Some(t) if now < t => false,
            due => {
                self.fair_at = Some(now + FAIR_INTERVAL);
                due.is_some()
            }
        }
    }
}

/// Takes a thread back out of `WaitQueue::waiting` when `park` returns.
struct Uncount<'a>(&'a AtomicUsize);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn timed_out_waiter_unlinks_itself() {
        let q = WaitQueue::new();
        let deadline = Instant::now() + Duration::from_millis(5);
        assert_eq!(q.park(0, || true, || {}, Some(deadline)), Park::TimedOut);
        assert!(!q.has_waiters());
        assert!(q.inner.lock().list.is_empty());
    }

    #[test]
    fn take_front_stops_at_tag() {
        let q = Arc::new(WaitQueue::new());
        let mut waiters = Vec::new();
        for (i, tag) in [0usize, 0, 1, 0].into_iter().enumerate() {
            let q2 = q.clone();
            waiters.push(std::thread::spawn(move || {
                q2.park(tag, || true, || {}, None)
            }));
            // Queue them in this order.
            while q.inner.lock().list.len < i + 1 {
                std::thread::yield_now();
            }
        }
        q.unpark_with(|l| l.take_front(usize::MAX, |t| t == 0).with_token(7));
        assert_eq!(q.inner.lock().list.front_tag(), Some(1));
        q.unpark_with(|l| l.take_front(1, |_| true).with_token(8));
        assert_eq!(q.unpark_all(9), 1);
        let got: Vec<_> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            got,
            [
                Park::Unparked(7),
                Park::Unparked(7),
                Park::Unparked(8),
                Park::Unparked(9)
            ]
        );
    }
}
