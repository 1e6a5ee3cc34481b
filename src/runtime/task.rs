//! Tasks: a green thread or an async task, and how a wake-up reaches one.
//!
//! Owns the per-task state machine that every waiter in the crate goes
//! through: the park token (`EMPTY`/`NOTIFIED`/`PARKED`, with std's
//! park/unpark meaning) and the join slot that hands the result to whoever
//! joins. It knows nothing of what a task waits for.
//!
//! A task is pinned to one carrier for life (principle 4). Its `local` part
//! is touched only on that carrier's thread; everything else is atomic.

use std::any::Any;
use std::cell::UnsafeCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{RawWaker, RawWakerVTable, Waker};

use corosensei::{Coroutine, Yielder};

use super::carrier::{self, CarrierShared};
use super::stack::PooledStack;
use crate::thread::Thread;

/// Why a green thread handed control back to its carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Suspend {
    /// Still runnable: put it at the back of the run queue.
    Yield,
    /// Parked: a wake-up will put it back on the run queue.
    Park,
}

pub(crate) type GreenCoroutine = Coroutine<(), Suspend, (), PooledStack>;
pub(crate) type GreenYielder = Yielder<(), Suspend>;

/// What a task runs.
pub(crate) enum Body {
    /// A green thread: a coroutine on a pooled stack.
    Green(GreenCoroutine),
    /// An async task: a future polled by the carrier itself.
    Future(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Finished (or abandoned at shutdown).
    Done,
}

// Park token values. They mirror std's futex parker.
pub(crate) const EMPTY: u8 = 0;
pub(crate) const NOTIFIED: u8 = 1;
pub(crate) const PARKED: u8 = 2;

// Join slot bits.
const JOIN_DONE: u8 = 1;
const JOIN_WAITER: u8 = 2;
const JOIN_LOCK: u8 = 4;
const JOIN_ABANDONED: u8 = 8;

/// Who waits for a task to finish.
pub(crate) enum Waiter {
    Thread(Thread),
    Waker(Waker),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Waker(w) => w.wake(),
        }
    }
}

/// Result of registering a join waiter.
pub(crate) enum JoinState {
    /// Registered; a wake-up will follow completion.
    Pending,
    /// The task finished; its result is ready.
    Done,
    /// The runtime shut down before the task finished.
    Abandoned,
}

pub(crate) struct Task {
    /// Park token. Wakers swap in NOTIFIED; the one that sees PARKED
    /// schedules the task, so a task is queued at most once.
    pub(crate) state: AtomicU8,
    join: AtomicU8,
    join_waiter: UnsafeCell<Option<Waiter>>,
    pub(crate) carrier: Arc<CarrierShared>,
    pub(crate) id: u64,
    pub(crate) name: Option<Box<str>>,
    /// Guard page `[lo, hi)` and usable size of a green thread's stack, for
    /// the stack overflow report (zero for async tasks).
    pub(crate) guard: (usize, usize),
    pub(crate) stack_size: usize,
    // Carrier-thread-only fields, each in its own cell so that a reference
    // to one (the body, held across a coroutine switch) never overlaps a
    // write to another (the yielder, written by the coroutine itself).
    body: UnsafeCell<Body>,
    yielder: UnsafeCell<*const GreenYielder>,
    key: UnsafeCell<usize>,
}

// SAFETY: `body`, `yielder` and `key` are only accessed on the owning
// carrier's thread (see the accessors' contracts); `join_waiter` is guarded by the JOIN_LOCK /
// JOIN_WAITER protocol in `register_join` / `complete_join`; everything else
// is atomic or immutable after construction. The coroutine and future inside
// `local` are Send (futures are required to be; a coroutine never moves off
// its carrier).
unsafe impl Send for Task {}
// SAFETY: as for Send: shared access from other threads touches only the
// atomics, immutable fields and the join slot guarded by its protocol.
unsafe impl Sync for Task {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh thread id, shared between green threads and OS threads.
pub(crate) fn next_id() -> u64 {
    // Relaxed: ids need uniqueness only, not ordering with other memory.
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl Task {
    pub(crate) fn new(carrier: Arc<CarrierShared>, name: Option<Box<str>>, body: Body) -> Self {
        Task {
            guard: (0, 0),
            stack_size: 0,
            state: AtomicU8::new(EMPTY),
            join: AtomicU8::new(0),
            join_waiter: UnsafeCell::new(None),
            carrier,
            id: next_id(),
            name,
            body: UnsafeCell::new(body),
            yielder: UnsafeCell::new(std::ptr::null()),
            key: UnsafeCell::new(usize::MAX),
        }
    }

    /// What an unshared task runs (while it is being built).
    pub(crate) fn body_mut(&mut self) -> &mut Body {
        self.body.get_mut()
    }

    /// What the task runs.
    ///
    /// # Safety
    ///
    /// Must be called on the thread of the carrier that owns this task, and
    /// the returned reference must not overlap another one from this method.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn body(&self) -> &mut Body {
        // SAFETY: the caller guarantees carrier-thread, non-overlapping access.
        unsafe { &mut *self.body.get() }
    }

    /// The running green thread's yielder.
    ///
    /// # Safety
    ///
    /// On the owning carrier's thread.
    pub(crate) unsafe fn yielder(&self) -> *const GreenYielder {
        // SAFETY: carrier-thread-only field; a plain read, no reference kept.
        unsafe { *self.yielder.get() }
    }

    /// Records the green thread's yielder when its coroutine starts.
    ///
    /// # Safety
    ///
    /// On the owning carrier's thread.
    pub(crate) unsafe fn set_yielder(&self, y: *const GreenYielder) {
        // SAFETY: carrier-thread-only field; a plain write, no reference kept.
        unsafe { *self.yielder.get() = y };
    }

    /// The task's key in its carrier's slab.
    ///
    /// # Safety
    ///
    /// On the owning carrier's thread.
    pub(crate) unsafe fn key(&self) -> usize {
        // SAFETY: carrier-thread-only field; a plain read.
        unsafe { *self.key.get() }
    }

    /// # Safety
    ///
    /// On the owning carrier's thread.
    pub(crate) unsafe fn set_key(&self, key: usize) {
        // SAFETY: carrier-thread-only field; a plain write.
        unsafe { *self.key.get() = key };
    }

    /// Unparks the task: std's `Thread::unpark` semantics.
    pub(crate) fn wake(&self) {
        // AcqRel: Release publishes what the waker did before waking (the
        // value a parked thread waits for); Acquire pairs with the Release in
        // park so the waker sees the task fully parked before queueing it.
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == PARKED {
            carrier::schedule(NonNull::from(self));
        }
    }

    /// Registers `waiter` to be woken when the task finishes.
    pub(crate) fn register_join(&self, waiter: Waiter) -> JoinState {
        let mut s = self.join.load(Ordering::Acquire);
        loop {
            if s & JOIN_ABANDONED != 0 {
                return JoinState::Abandoned;
            }
            if s & JOIN_DONE != 0 {
                return JoinState::Done;
            }
            // Acquire the slot: Acquire pairs with the Release below so a
            // previous registration's write is visible before we replace it.
            match self.join.compare_exchange_weak(
                s,
                s | JOIN_LOCK,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        // SAFETY: JOIN_LOCK is ours: nobody else reads or writes the slot
        // until we clear it (complete_join skips the slot while it is set).
        unsafe { *self.join_waiter.get() = Some(waiter) };
        let locked = s | JOIN_LOCK;
        // Release: publishes the slot write to complete_join.
        match self.join.compare_exchange(
            locked,
            (s | JOIN_WAITER) & !JOIN_LOCK,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => JoinState::Pending,
            Err(now) => {
                // The task completed (or was abandoned) while we held the
                // lock, and left the slot to us.
                // SAFETY: complete_join saw JOIN_LOCK and did not touch it.
                drop(unsafe { (*self.join_waiter.get()).take() });
                self.join.fetch_and(!JOIN_LOCK, Ordering::AcqRel);
                if now & JOIN_ABANDONED != 0 {
                    JoinState::Abandoned
                } else {
                    JoinState::Done
                }
            }
        }
    }

    /// Whether the task has finished (or was abandoned).
    pub(crate) fn join_state(&self) -> JoinState {
        let s = self.join.load(Ordering::Acquire);
        if s & JOIN_ABANDONED != 0 {
            JoinState::Abandoned
        } else if s & JOIN_DONE != 0 {
            JoinState::Done
        } else {
            JoinState::Pending
        }
    }

    /// Marks the task finished (or abandoned) and wakes its joiner.
    pub(crate) fn complete_join(&self, abandoned: bool) {
        let bit = if abandoned { JOIN_ABANDONED } else { JOIN_DONE };
        // AcqRel: Release publishes the result written before this call to
        // the joiner; Acquire makes a registered waiter's slot write visible.
        let prev = self.join.fetch_or(bit, Ordering::AcqRel);
        if prev & JOIN_WAITER != 0 && prev & JOIN_LOCK == 0 {
            // SAFETY: WAITER set and LOCK clear means the slot holds a
            // published waiter and no registration is in progress; later
            // registrations see DONE and never touch the slot.
            if let Some(w) = unsafe { (*self.join_waiter.get()).take() } {
                w.wake();
            }
        }
    }

    /// The waker that schedules this task.
    pub(crate) fn waker(self: &Arc<Self>) -> Waker {
        let ptr = Arc::into_raw(self.clone()) as *const ();
        // SAFETY: the vtable functions below treat the data pointer as an
        // `Arc<Task>` obtained from `Arc::into_raw`, which it is.
        unsafe { Waker::from_raw(RawWaker::new(ptr, &VTABLE)) }
    }
}

/// The waker vtable of tasks, for wakers borrowed from the slab's Arc.
pub(crate) fn vtable() -> &'static RawWakerVTable {
    &VTABLE
}

static VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake_waker, wake_by_ref, drop_waker);

unsafe fn clone_waker(ptr: *const ()) -> RawWaker {
    // SAFETY: `ptr` came from Arc::into_raw of an Arc<Task> that the waker
    // still owns; incrementing its count creates the clone's reference.
    unsafe { Arc::increment_strong_count(ptr as *const Task) };
    RawWaker::new(ptr, &VTABLE)
}

unsafe fn wake_waker(ptr: *const ()) {
    // SAFETY: consumes the reference this waker owned.
    let task = unsafe { Arc::from_raw(ptr as *const Task) };
    task.wake();
}

unsafe fn wake_by_ref(ptr: *const ()) {
    // SAFETY: the waker owns a reference, so the task is alive.
    unsafe { &*(ptr as *const Task) }.wake();
}

unsafe fn drop_waker(ptr: *const ()) {
    // SAFETY: releases the reference this waker owned.
    drop(unsafe { Arc::from_raw(ptr as *const Task) });
}

/// A green thread's or async task's result, handed to its JoinHandle.
pub(crate) struct Packet<T> {
    result: UnsafeCell<Option<std::thread::Result<T>>>,
}

// SAFETY: the result is written once by the task before `complete_join`
// (Release) and read once by the joiner after observing JOIN_DONE (Acquire);
// the two never overlap. T crosses threads, hence T: Send.
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    pub(crate) fn new() -> Self {
        Packet {
            result: UnsafeCell::new(None),
        }
    }

    /// Stores the result.
    ///
    /// # Safety
    ///
    /// Called once, by the task, before `complete_join`.
    pub(crate) unsafe fn set(&self, r: std::thread::Result<T>) {
        // SAFETY: per the contract nobody else touches the slot yet.
        unsafe { *self.result.get() = Some(r) };
    }

    /// Takes the result.
    ///
    /// # Safety
    ///
    /// Called after the task's join state was observed `Done`, at most once.
    pub(crate) unsafe fn take(&self) -> Option<std::thread::Result<T>> {
        // SAFETY: the task wrote the slot before publishing DONE, which the
        // caller observed with Acquire; the task never touches it again.
        unsafe { (*self.result.get()).take() }
    }
}

/// Payload of a join on a task the runtime abandoned at shutdown.
pub(crate) fn abandoned_payload() -> Box<dyn Any + Send> {
    Box::new("green runtime shut down before this green thread finished")
}
