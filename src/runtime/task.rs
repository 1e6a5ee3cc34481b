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
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
const JOIN_ABANDONED: u8 = 4;

/// Who waits for a task to finish.
pub(crate) enum Waiter {
    Thread(Thread),
    Waker(Waker),
    /// A green thread on the same carrier as the task it joins, suspended
    /// until the completion resumes it directly (its park token is left
    /// alone). No reference count is needed: the task completes on that
    /// carrier's thread, so the joiner cannot run (let alone finish and be
    /// freed) between the completion and being queued; see `complete_join`.
    Local(NonNull<Task>),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Waker(w) => w.wake(),
            // The joiner is alive, suspended in its join on this very
            // thread's carrier (see the variant's doc).
            Waiter::Local(t) => carrier::resume_local(t),
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

/// A green thread or async task. Lives in a `TaskCell` behind `TaskRef`s.
///
/// `repr(C)` with the fields a wake-up touches first: waking a parked
/// task swaps `state`, reads `carrier`, links `next` and drops a `refs`
/// count, all in the first cache line (the type is line-aligned), which is
/// usually cold by the time another thread wakes the task.
#[repr(C, align(64))]
pub(crate) struct Task {
    /// Park token. Wakers swap in NOTIFIED; the one that sees PARKED
    /// schedules the task, so a task is queued at most once.
    pub(crate) state: AtomicU8,
    join: AtomicU8,
    /// References held by `TaskRef`s.
    refs: AtomicUsize,
    /// Link of the carrier's intrusive run queue (a task is queued at most
    /// once: see `state`).
    next: UnsafeCell<*const Task>,
    pub(crate) carrier: Arc<CarrierShared>,
    // Carrier-thread-only fields, each in its own cell so that a reference
    // to one (the body, held across a coroutine switch) never overlaps a
    // write to another (the yielder, written by the coroutine itself).
    yielder: UnsafeCell<*const GreenYielder>,
    key: UnsafeCell<usize>,
    /// Frees the `TaskCell<T>` this task lives in.
    dealloc: unsafe fn(NonNull<Task>),
    body: UnsafeCell<Body>,
    join_waiter: UnsafeCell<Option<Waiter>>,
    /// Thread id, assigned on first use (0 until then), so spawning does
    /// not touch a process-wide counter.
    id: AtomicU64,
    pub(crate) name: Option<Box<str>>,
    /// Guard page `[lo, hi)` and usable size of a green thread's stack, for
    /// the stack overflow report (zero for async tasks).
    pub(crate) guard: (usize, usize),
    pub(crate) stack_size: usize,
}

// What a wake-up touches stays in the task's first cache line (see the
// type's docs), whatever fields are added later.
const _: () = {
    assert!(std::mem::align_of::<Task>() == 64);
    assert!(std::mem::offset_of!(Task, carrier) + std::mem::size_of::<usize>() <= 64);
    assert!(std::mem::offset_of!(Task, refs) < 64 && std::mem::offset_of!(Task, next) < 64);
};

// SAFETY: `body`, `yielder`, `key` and `next` are only accessed on the owning
// carrier's thread (see the accessors' contracts); `join_waiter` is guarded
// by the JOIN_WAITER protocol in `register_join` / `complete_join`;
// everything else is atomic or immutable after construction. The coroutine
// and future in `body` are Send (futures are required to be; a coroutine
// never moves off its carrier).
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
    /// A new task; `stack` is the guard page and usable size of a green
    /// thread's stack.
    #[inline]
    pub(crate) fn new(
        carrier: Arc<CarrierShared>,
        name: Option<Box<str>>,
        stack: ((usize, usize), usize),
        body: Body,
    ) -> Self {
        Task {
            guard: stack.0,
            stack_size: stack.1,
            state: AtomicU8::new(EMPTY),
            join: AtomicU8::new(0),
            join_waiter: UnsafeCell::new(None),
            carrier,
            id: AtomicU64::new(0),
            name,
            body: UnsafeCell::new(body),
            yielder: UnsafeCell::new(std::ptr::null()),
            key: UnsafeCell::new(usize::MAX),
            next: UnsafeCell::new(std::ptr::null()),
            refs: AtomicUsize::new(1),
            dealloc: dealloc::<()>,
        }
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
    #[inline]
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

    /// The next task in the carrier's run queue.
    ///
    /// # Safety
    ///
    /// On the owning carrier's thread.
    #[inline]
    pub(crate) unsafe fn next(&self) -> *const Task {
        // SAFETY: carrier-thread-only field; a plain read.
        unsafe { *self.next.get() }
    }

    /// # Safety
    ///
    /// On the owning carrier's thread.
    #[inline]
    pub(crate) unsafe fn set_next(&self, next: *const Task) {
        // SAFETY: carrier-thread-only field; a plain write.
        unsafe { *self.next.get() = next };
    }

    /// # Safety
    ///
    /// On the owning carrier's thread.
    pub(crate) unsafe fn set_key(&self, key: usize) {
        // SAFETY: carrier-thread-only field; a plain write.
        unsafe { *self.key.get() = key };
    }

    /// The task's thread id.
    pub(crate) fn id(&self) -> u64 {
        // Relaxed: the id is a value on its own; no other memory hangs on it.
        let id = self.id.load(Ordering::Relaxed);
        if id != 0 {
            return id;
        }
        match self
            .id
            .compare_exchange(0, next_id(), Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => self.id.load(Ordering::Relaxed),
            Err(existing) => existing,
        }
    }

    /// The id if one was assigned, else 0; for the signal handler, which
    /// must not take one.
    pub(crate) fn id_if_assigned(&self) -> u64 {
        // Relaxed: see id().
        self.id.load(Ordering::Relaxed)
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
    ///
    /// Only the task's one `JoinHandle` registers, one call at a time (join
    /// consumes the handle; poll takes `&mut`), which is what makes the slot
    /// protocol below sound: the slot belongs to the registrant while
    /// JOIN_WAITER is clear and to `complete_join` once it is set.
    pub(crate) fn register_join(&self, waiter: Waiter) -> JoinState {
        // Acquire: a DONE seen here makes the result visible.
        let mut s = self.join.load(Ordering::Acquire);
        if s & JOIN_WAITER != 0 {
            // Take the slot back to replace the waiter. Failure means the
            // task completed meanwhile and complete_join owns the slot.
            match self.join.compare_exchange(
                s,
                s & !JOIN_WAITER,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => s &= !JOIN_WAITER,
                Err(now) => return Self::settled(now),
            }
        }
        if s & (JOIN_DONE | JOIN_ABANDONED) != 0 {
            return Self::settled(s);
        }
        // SAFETY: JOIN_WAITER is clear, so complete_join does not touch the
        // slot, and we are the only registrant.
        unsafe { *self.join_waiter.get() = Some(waiter) };
        // Release: publishes the slot write to complete_join's Acquire.
        match self
            .join
            .compare_exchange(s, s | JOIN_WAITER, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => JoinState::Pending,
            Err(now) => {
                // Completed meanwhile; JOIN_WAITER is still clear, so the
                // slot is still ours.
                // SAFETY: as above.
                drop(unsafe { (*self.join_waiter.get()).take() });
                Self::settled(now)
            }
        }
    }

    fn settled(s: u8) -> JoinState {
        if s & JOIN_ABANDONED != 0 {
            JoinState::Abandoned
        } else if s & JOIN_DONE != 0 {
            JoinState::Done
        } else {
            JoinState::Pending
        }
    }

    /// Whether the task has finished (or was abandoned).
    pub(crate) fn join_state(&self) -> JoinState {
        // Acquire: pairs with complete_join's Release (the result).
        Self::settled(self.join.load(Ordering::Acquire))
    }

    /// Marks the task finished (or abandoned) and wakes its joiner.
    ///
    /// Runs on the task's carrier thread and does not suspend, which is what
    /// `Waiter::Local` relies on.
    pub(crate) fn complete_join(&self, abandoned: bool) {
        let bit = if abandoned { JOIN_ABANDONED } else { JOIN_DONE };
        // AcqRel: Release publishes the result written before this call to
        // the joiner; Acquire makes a registered waiter's slot write visible.
        let prev = self.join.fetch_or(bit, Ordering::AcqRel);
        if prev & JOIN_WAITER != 0 {
            // SAFETY: JOIN_WAITER set means the registrant published the
            // slot and handed it to us; from now on its CAS fails (DONE is
            // set) and it never touches the slot again.
            if let Some(w) = unsafe { (*self.join_waiter.get()).take() } {
                w.wake();
            }
        }
    }
}

/// An owning, reference-counted pointer to a task: a thin `Arc` whose
/// allocation (a [`TaskCell<T>`]) also holds the task's typed result, so a
/// spawn costs one allocation and a join moves no extra reference counts.
pub(crate) struct TaskRef(NonNull<Task>);

// SAFETY: a TaskRef is a shared reference-counted handle to a Task, which
// is Send + Sync; the count is atomic.
unsafe impl Send for TaskRef {}
// SAFETY: as above.
unsafe impl Sync for TaskRef {}

/// The allocation behind a [`TaskRef`]: the task, then its result slot.
/// `repr(C)` puts `task` at offset 0, so a `*const Task` to it is also a
/// `*const TaskCell<T>`.
#[repr(C)]
struct TaskCell<T> {
    task: Task,
    result: UnsafeCell<Option<std::thread::Result<T>>>,
}

/// Frees a `TaskCell<T>` given its task pointer.
///
/// # Safety
///
/// `task` came from `TaskRef::new::<T>` and its count has reached zero.
unsafe fn dealloc<T>(task: NonNull<Task>) {
    // SAFETY: per the contract the pointer is a Box<TaskCell<T>> that nobody
    // references any more.
    drop(unsafe { Box::from_raw(task.as_ptr() as *mut TaskCell<T>) });
}

impl TaskRef {
    /// Allocates `task` with a result slot for `T`.
    pub(crate) fn new<T>(mut task: Task) -> TaskRef {
        task.dealloc = dealloc::<T>;
        let cell = Box::new(TaskCell::<T> {
            task,
            result: UnsafeCell::new(None),
        });
        TaskRef(NonNull::from(Box::leak(cell)).cast())
    }

    pub(crate) fn as_ptr(&self) -> NonNull<Task> {
        self.0
    }

    /// A new reference to the task at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is a live task (some reference keeps it alive during the call).
    pub(crate) unsafe fn clone_from_ptr(ptr: NonNull<Task>) -> TaskRef {
        // SAFETY: the task is alive per the contract.
        unsafe { ptr.as_ref() }.retain();
        TaskRef(ptr)
    }

    /// Gives up ownership without releasing the reference.
    pub(crate) fn into_raw(self) -> NonNull<Task> {
        let p = self.0;
        std::mem::forget(self);
        p
    }

    /// Takes back a reference given up by `into_raw`.
    ///
    /// # Safety
    ///
    /// `ptr` came from `into_raw` and is used once.
    pub(crate) unsafe fn from_raw(ptr: NonNull<Task>) -> TaskRef {
        TaskRef(ptr)
    }

    /// Stores the task's result.
    ///
    /// # Safety
    ///
    /// `task` was created by `TaskRef::new::<T>`; called once, by the task
    /// itself, before `complete_join`.
    pub(crate) unsafe fn set_result<T>(task: NonNull<Task>, r: std::thread::Result<T>) {
        let cell = task.as_ptr() as *const TaskCell<T>;
        // SAFETY: per the contract the allocation is a TaskCell<T> and nobody
        // else touches the slot before complete_join publishes it.
        unsafe { *(*cell).result.get() = Some(r) };
    }

    /// Takes the task's result.
    ///
    /// # Safety
    ///
    /// The task was created by `TaskRef::new::<T>`, its join state was
    /// observed `Done` (with Acquire), and this is the only taker.
    pub(crate) unsafe fn take_result<T>(&self) -> Option<std::thread::Result<T>> {
        let cell = self.0.as_ptr() as *const TaskCell<T>;
        // SAFETY: the task wrote the slot before publishing DONE, which the
        // caller observed; the task never touches it again.
        unsafe { (*(*cell).result.get()).take() }
    }

    /// The waker that schedules this task.
    pub(crate) fn waker(&self) -> Waker {
        let ptr = self.clone().into_raw().as_ptr() as *const ();
        // SAFETY: the vtable functions below treat the data pointer as a
        // TaskRef given up by `into_raw`, which it is.
        unsafe { Waker::from_raw(RawWaker::new(ptr, &VTABLE)) }
    }
}

impl std::ops::Deref for TaskRef {
    type Target = Task;

    fn deref(&self) -> &Task {
        // SAFETY: a TaskRef keeps its task alive.
        unsafe { self.0.as_ref() }
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> TaskRef {
        self.retain();
        TaskRef(self.0)
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // Release: our uses of the task happen before its destruction;
        // the last owner's Acquire fence below pairs with every Release.
        if self.refs.fetch_sub(1, Ordering::Release) == 1 {
            std::sync::atomic::fence(Ordering::Acquire);
            let dealloc = self.dealloc;
            // SAFETY: the count reached zero, so this was the last reference
            // to an allocation made by TaskRef::new with this dealloc.
            unsafe { dealloc(self.0) };
        }
    }
}

impl Task {
    fn retain(&self) {
        // Relaxed: a new reference can only be made from an existing one, so
        // the task is alive; ordering comes from how the handle is passed.
        if self.refs.fetch_add(1, Ordering::Relaxed) > isize::MAX as usize {
            std::process::abort();
        }
    }
}

/// The waker vtable of tasks, for wakers borrowed from the slab's TaskRef.
pub(crate) fn vtable() -> &'static RawWakerVTable {
    &VTABLE
}

static VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake_waker, wake_by_ref, drop_waker);

unsafe fn clone_waker(ptr: *const ()) -> RawWaker {
    // SAFETY: the waker owns a reference, so the task is alive.
    let task = unsafe { TaskRef::clone_from_ptr(NonNull::new_unchecked(ptr as *mut Task)) };
    RawWaker::new(task.into_raw().as_ptr() as *const (), &VTABLE)
}

unsafe fn wake_waker(ptr: *const ()) {
    // SAFETY: consumes the reference this waker owned.
    let task = unsafe { TaskRef::from_raw(NonNull::new_unchecked(ptr as *mut Task)) };
    task.wake();
}

unsafe fn wake_by_ref(ptr: *const ()) {
    // SAFETY: the waker owns a reference, so the task is alive.
    unsafe { &*(ptr as *const Task) }.wake();
}

unsafe fn drop_waker(ptr: *const ()) {
    // SAFETY: releases the reference this waker owned.
    drop(unsafe { TaskRef::from_raw(NonNull::new_unchecked(ptr as *mut Task)) });
}

/// Payload of a join on a task the runtime abandoned at shutdown.
pub(crate) fn abandoned_payload() -> Box<dyn Any + Send> {
    Box::new("green runtime shut down before this green thread finished")
}
