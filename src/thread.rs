//! Green threads with std::thread's API.
//!
//! Every function here works on any thread. On a green thread, blocking
//! (`park`, `sleep`, `join`) suspends only that green thread; on a plain OS
//! thread it is exactly std's behaviour. A [`Thread`] handle names either
//! kind, so a primitive that parks and unparks through it works between
//! green threads, OS threads and any mix of the two.
//!
//! ```
//! let h = green::thread::Builder::new()
//!     .name("worker".into())
//!     .stack_size(32 * 1024)
//!     .spawn(|| green::thread::current().name().map(str::to_owned))
//!     .unwrap();
//! assert_eq!(h.join().unwrap().as_deref(), Some("worker"));
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::runtime::carrier::{current_task, suspend, with_carrier};
use crate::runtime::task::{
    self, JoinState, Suspend, Task, TaskRef, Waiter, EMPTY, NOTIFIED, PARKED,
};
use crate::runtime::timer::Target;
use crate::runtime::{self, Runtime};

pub use std::thread::{available_parallelism, Result};

/// A unique identifier of a green or OS thread.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ThreadId(NonZeroU64);

impl ThreadId {
    /// The id as a number, unique for the life of the process.
    pub fn as_u64(&self) -> NonZeroU64 {
        self.0
    }
}

fn thread_id(raw: u64) -> ThreadId {
    ThreadId(NonZeroU64::new(raw).expect("thread ids start at 1"))
}

/// A handle to a green thread or an OS thread.
#[derive(Clone)]
pub struct Thread {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Green(TaskRef),
    Os(std::thread::Thread, ThreadId),
}

impl Thread {
    /// Wakes the thread if it is parked, or makes its next `park` return at
    /// once (std's token semantics).
    pub fn unpark(&self) {
        match &self.inner {
            Inner::Green(t) => t.wake(),
            Inner::Os(t, _) => t.unpark(),
        }
    }

    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        match &self.inner {
            Inner::Green(t) => thread_id(t.id()),
            Inner::Os(_, id) => *id,
        }
    }

    /// The thread's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        match &self.inner {
            Inner::Green(t) => t.name.as_deref(),
            Inner::Os(t, _) => t.name(),
        }
    }

    /// Whether this is a green thread.
    pub fn is_green(&self) -> bool {
        matches!(self.inner, Inner::Green(_))
    }

    pub(crate) fn from_task(task: TaskRef) -> Thread {
        Thread {
            inner: Inner::Green(task),
        }
    }
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("green", &self.is_green())
            .finish()
    }
}

/// A handle to the thread that calls it: the running green thread, or the
/// OS thread when called outside one.
pub fn current() -> Thread {
    match current_task() {
        Some(t) => {
            // SAFETY: the running task is alive (its carrier's slab owns it).
            Thread::from_task(unsafe { TaskRef::clone_from_ptr(t) })
        }
        None => {
            thread_local! {
                static OS_ID: u64 = task::next_id();
            }
            Thread {
                inner: Inner::Os(std::thread::current(), thread_id(OS_ID.with(|id| *id))),
            }
        }
    }
}

/// Whether the caller runs on a green thread.
pub fn is_green() -> bool {
    current_task().is_some()
}

/// Blocks until unparked (std's `park`, with its spurious wake-ups).
#[inline]
pub fn park() {
    match current_task() {
        Some(t) => park_green(t, None),
        None => std::thread::park(),
    }
}

/// Blocks until unparked or `dur` has passed.
pub fn park_timeout(dur: Duration) {
    match current_task() {
        Some(t) => park_green(t, Some(dur)),
        None => std::thread::park_timeout(dur),
    }
}

#[inline(always)]
fn park_green(t: NonNull<Task>, timeout: Option<Duration>) {
    // SAFETY: the running task is alive (its carrier's slab owns it).
    let task = unsafe { t.as_ref() };
    // Acquire: a consumed token must show what its unparker wrote. The load
    // first keeps the common case (no token) free of a locked instruction.
    if task.state.load(Ordering::Relaxed) == NOTIFIED
        && task
            .state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        return;
    }
    let timer = timeout.map(|d| {
        let deadline = Instant::now().checked_add(d).unwrap_or_else(far_future);
        with_carrier(|c| {
            c.expect("a green thread runs on a carrier")
                .timers
                .borrow_mut()
                .insert(deadline, Target::Park(t))
        })
    });
    // Release: a waker that sees PARKED (with Acquire) may queue us; nothing
    // is written after this that it needs. Failure: a token arrived.
    if task
        .state
        .compare_exchange(EMPTY, PARKED, Ordering::Release, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: `t` is the running green thread on this carrier.
        unsafe { suspend(t, Suspend::Park) };
    }
    if let Some(key) = timer {
        with_carrier(|c| {
            c.expect("a green thread runs on a carrier")
                .timers
                .borrow_mut()
                .remove(key)
        });
    }
    // Acquire: pairs with the waker's Release swap.
    task.state.swap(EMPTY, Ordering::Acquire);
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// Lets other green threads on this carrier run (or, on an OS thread,
/// std's `yield_now`).
// Inlined so the context switch lands in the caller's frame: every call
// frame between the caller and the switch costs a mispredicted return on
// each switch (the return stack buffer cannot follow a stack change).
#[inline]
pub fn yield_now() {
    match current_task() {
        // SAFETY: `t` is the running green thread on this carrier.
        Some(t) => unsafe { suspend(t, Suspend::Yield) },
        None => std::thread::yield_now(),
    }
}

/// Sleeps for at least `dur`. On a green thread only that green thread
/// waits; the park token is left alone, as with std.
pub fn sleep(dur: Duration) {
    match current_task() {
        Some(t) => {
            let deadline = Instant::now().checked_add(dur).unwrap_or_else(far_future);
            sleep_until_green(t, deadline);
        }
        None => std::thread::sleep(dur),
    }
}

/// Sleeps until `deadline`.
pub fn sleep_until(deadline: Instant) {
    match current_task() {
        Some(t) => sleep_until_green(t, deadline),
        None => {
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
        }
    }
}

fn sleep_until_green(t: NonNull<Task>, deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        // std's sleep(0) still yields; so do we.
        yield_now();
        return;
    }
    // On an io_uring carrier the wait is a TIMEOUT op on the ring: the
    // kernel's timer completes it like any other operation.
    if crate::driver::ring_supports(crate::sys::uring::op::TIMEOUT) {
        let ts = crate::driver::timespec(deadline - now);
        let sqe = crate::sys::uring::Sqe {
            opcode: crate::sys::uring::op::TIMEOUT,
            fd: -1,
            addr: &ts as *const _ as u64,
            len: 1,
            ..Default::default()
        };
        // SAFETY: `ts` lives in this frame, which stays suspended until the
        // op's completion. The result is -ETIME on expiry, or -ECANCELED
        // when the runtime shuts down; either way the sleep is over.
        if unsafe { crate::driver::green_op(sqe, None, "TIMEOUT") }.is_some() {
            return;
        }
    }
    // The blocking backend: the carrier's timers.
    with_carrier(|c| {
        c.expect("a green thread runs on a carrier")
            .timers
            .borrow_mut()
            .insert(deadline, Target::Resume(t))
    });
    // SAFETY: `t` is the running green thread; only the timer resumes it.
    unsafe { suspend(t, Suspend::Park) };
}

/// Configures a green thread before spawning it, like std's `Builder`.
#[derive(Debug, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with no name and the runtime's default stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the green thread (shown in panics and stack overflow reports).
    pub fn name(mut self, name: String) -> Builder {
        self.name = Some(name);
        self
    }

    /// Usable stack size in bytes, rounded up to a power of two of at least
    /// 16 KiB.
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = Some(size);
        self
    }

    /// Spawns the green thread: on the current carrier when called on a
    /// green thread, else on the default runtime's least loaded carrier.
    /// Fails if no stack can be allocated or the size is out of range.
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        runtime::spawn_on(None, self.name, self.stack_size, f)
    }

    /// Spawns the green thread on `rt`.
    pub fn spawn_on<F, T>(self, rt: &Runtime, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        runtime::spawn_on(Some(rt.shared()), self.name, self.stack_size, f)
    }
}

/// Spawns a green thread running `f`; see [`Builder::spawn`].
///
/// # Panics
///
/// If no stack can be allocated, with the error's message, as
/// `std::thread::spawn` does when the OS refuses a thread.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new()
        .spawn(f)
        .unwrap_or_else(|e| panic!("failed to spawn green thread: {e}"))
}

/// An owned permission to join a green thread or async task.
///
/// Dropping it detaches the task, as in std. It is also a future: awaiting
/// it gives the same result as `join`.
pub struct JoinHandle<T> {
    thread: Thread,
    /// The task's allocation holds a `T` result slot (see `TaskRef`); the
    /// handle never holds a T itself, hence `fn() -> T` (always Unpin).
    result: PhantomData<fn() -> T>,
}

// SAFETY: a JoinHandle only moves the right to take the task's result; T is
// Send (spawn requires it), so taking it on another thread is sound.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: &JoinHandle gives no access to the result (join and poll need
// ownership or &mut).
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("thread", &self.thread)
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// The handle of a task created by `TaskRef::new::<T>`. Callers pass
    /// only such tasks (`spawn_on`, `spawn_async_on`), which is what makes
    /// `finish`'s typed read sound.
    pub(crate) fn new(task: TaskRef) -> Self {
        JoinHandle {
            thread: Thread::from_task(task),
            result: PhantomData,
        }
    }

    fn task(&self) -> &TaskRef {
        match &self.thread.inner {
            Inner::Green(t) => t,
            Inner::Os(..) => unreachable!("a JoinHandle always names a task"),
        }
    }

    /// The green thread's handle.
    pub fn thread(&self) -> &Thread {
        &self.thread
    }

    /// Whether the task has finished (or was abandoned by a shutdown).
    pub fn is_finished(&self) -> bool {
        !matches!(self.task().join_state(), JoinState::Pending)
    }

    /// Waits for the task and returns its result; a panic comes back as
    /// `Err` with its payload.
    pub fn join(self) -> Result<T> {
        let mut state = self.task().join_state();
        if let JoinState::Pending = state {
            match current_task() {
                // SAFETY: the running task is alive.
                Some(me) if Arc::ptr_eq(&unsafe { me.as_ref() }.carrier, &self.task().carrier) => {
                    // Same carrier: suspend until the completion queues us
                    // (Waiter::Local), without the park token's atomics.
                    state = self.task().register_join(Waiter::Local(me));
                    while let JoinState::Pending = state {
                        // SAFETY: `me` is the running green thread; only the
                        // task's completion (or abandonment) resumes it.
                        unsafe { crate::runtime::carrier::suspend(me, Suspend::Park) };
                        state = self.task().join_state();
                    }
                }
                _ => {
                    state = self.task().register_join(Waiter::Thread(current()));
                    while let JoinState::Pending = state {
                        park();
                        state = self.task().join_state();
                    }
                }
            }
        }
        self.finish(state)
    }

    fn finish(&self, state: JoinState) -> Result<T> {
        match state {
            // SAFETY: Done was observed with Acquire; only one join or poll
            // consumes the handle's result.
            // and `new` guarantees the task's result slot holds a T.
            JoinState::Done => unsafe { self.task().take_result::<T>() }
                .unwrap_or_else(|| Err(task::abandoned_payload())),
            _ => Err(task::abandoned_payload()),
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        let mut state = this.task().join_state();
        if let JoinState::Pending = state {
            state = this.task().register_join(Waiter::Waker(cx.waker().clone()));
            if let JoinState::Pending = state {
                return Poll::Pending;
            }
        }
        Poll::Ready(this.finish(state))
    }
}

/// A waker that unparks an OS thread.
struct OsWaker(std::thread::Thread);

impl Wake for OsWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the calling thread (green or OS).
pub(crate) fn current_waker() -> Waker {
    match current().inner {
        Inner::Green(t) => t.waker(),
        Inner::Os(t, _) => Waker::from(Arc::new(OsWaker(t))),
    }
}

/// Runs a future to completion on the calling thread, parking it (a green
/// thread or an OS thread) while the future waits.
pub(crate) fn block_on_here<F: Future>(fut: F) -> F::Output {
    let waker = current_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        park();
    }
}
