//! Carriers: one OS thread each, running the scheduler loop.
//!
//! A carrier owns its run queue, timers, stack cache and the tasks pinned to
//! it. Other threads reach it only through [`CarrierShared`]: the remote
//! queue (spawns and wake-ups from other threads) and the wake word the
//! carrier sleeps on. The loop never blocks while a task is runnable, and
//! checks the remote queue and the clock at bounded intervals so neither
//! starves behind a busy run queue.

use std::cell::{Cell, RefCell};
use std::mem::{self, ManuallyDrop};
use std::os::fd::OwnedFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, Waker};
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;
use parking_lot::Mutex;
use slab::Slab;

use super::stack::StackCache;
use super::task::{Body, Suspend, Task, TaskRef, EMPTY, PARKED};
use super::timer::{Target, Timers};
use super::RuntimeShared;
use crate::driver::{Driver, Woken};

/// A task pointer that crosses threads through the remote queue.
pub(crate) struct TaskPtr(pub(crate) NonNull<Task>);
// SAFETY: a TaskPtr is only created for a task that its carrier's slab keeps
// alive until the task finishes, and a task is only queued while unfinished;
// the pointee is Sync.
unsafe impl Send for TaskPtr {}

pub(crate) enum Remote {
    /// A task spawned from another thread; the carrier takes ownership.
    Spawn(TaskRef),
    /// A wake-up of a parked task of this carrier.
    Wake(TaskPtr),
}

struct RemoteQueue {
    items: Vec<Remote>,
    /// Set when the carrier has exited; later pushes are refused.
    closed: bool,
}

const AWAKE: u32 = 0;
const SLEEPING: u32 = 1;

/// A carrier that has run this long without sleeping offers its CPU to
/// other threads waiting for it (one `sched_yield`, which returns at once
/// when none waits), instead of holding it for the kernel's whole time
/// slice (about 3-4 ms).
///
/// A busy carrier may share its CPU with a thread it does not wait for
/// but that others wait for: an ipc server's carrier serving another
/// lane, say. With the client's carriers on CPUs 0 and 1 and the
/// server's that serve their lanes placed the other way round
/// (`taskset`), each client carrier ran its slice out while the server
/// carrier beside it held the other lane's calls: 0.73-1.09M calls/s at
/// 4 KiB with a p99 of 4 ms. Offering the CPU every 100 µs gave
/// 1.10-1.42M and a p99 of 0.35-0.50 ms; with the lanes on their
/// callers' CPUs, 1.50M against 1.54M without, and the 200-caller bench
/// at 4 KiB 0.99x the time (medians of 6 and 16 alternating runs).
const OFFER_AFTER: Duration = Duration::from_micros(100);

/// The part of a carrier other threads may touch.
pub(crate) struct CarrierShared {
    remote: Mutex<RemoteQueue>,
    has_remote: AtomicBool,
    /// Futex word: SLEEPING while the carrier waits for work.
    wake_word: AtomicU32,
    /// Tasks placed on this carrier and not yet finished, including remote
    /// spawns it has not taken yet: one counter, so a spawner never sees a
    /// task counted twice or not at all while it moves between queues.
    load: AtomicUsize,
    pub(crate) shutdown: AtomicBool,
    /// How often the carrier offered its CPU (see [`OFFER_AFTER`]).
    pub(crate) offers: AtomicU64,
    /// With the io_uring backend, the carrier sleeps in io_uring_enter with
    /// a read pending on this eventfd; writing it wakes the carrier.
    pub(crate) wake_fd: Option<Arc<OwnedFd>>,
}

impl CarrierShared {
    pub(crate) fn new(wake_fd: Option<Arc<OwnedFd>>) -> Self {
        CarrierShared {
            wake_fd,
            remote: Mutex::new(RemoteQueue {
                items: Vec::new(),
                closed: false,
            }),
            has_remote: AtomicBool::new(false),
            wake_word: AtomicU32::new(AWAKE),
            load: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            offers: AtomicU64::new(0),
        }
    }

    /// Tasks on this carrier, for least-loaded placement.
    pub(crate) fn load(&self) -> usize {
        // Relaxed: placement is a heuristic; a stale count only skews it.
        self.load.load(Ordering::Relaxed)
    }

    /// Pushes work from another thread. Gives the item back if the carrier
    /// has exited.
    pub(crate) fn push_remote(&self, item: Remote) -> Result<(), Remote> {
        {
            let mut q = self.remote.lock();
            if q.closed {
                return Err(item);
            }
            if matches!(item, Remote::Spawn(_)) {
                // Relaxed: a placement hint, see load().
                self.load.fetch_add(1, Ordering::Relaxed);
            }
            q.items.push(item);
        }
        // SeqCst (with the carrier's SLEEPING store and has_remote load in
        // park): either the carrier sees has_remote before sleeping, or we
        // see SLEEPING here and wake it.
        self.has_remote.store(true, Ordering::SeqCst);
        self.notify();
        Ok(())
    }

    /// Wakes the carrier if it sleeps.
    pub(crate) fn notify(&self) {
        if self.wake_word.load(Ordering::SeqCst) == SLEEPING
            && self.wake_word.swap(AWAKE, Ordering::SeqCst) == SLEEPING
        {
            match &self.wake_fd {
                Some(fd) => {
                    // A full counter (EAGAIN) already means "wake up".
                    let _ = rustix::io::write(&**fd, &1u64.to_ne_bytes());
                }
                None => {
                    let _ = rustix::thread::futex::wake(
                        &self.wake_word,
                        rustix::thread::futex::Flags::PRIVATE,
                        1,
                    );
                }
            }
        }
    }
}

/// The carrier-thread-only state.
pub(crate) struct CarrierLocal {
    /// This carrier's place among its runtime's carriers.
    pub(crate) index: usize,
    pub(crate) shared: Arc<CarrierShared>,
    pub(crate) runtime: Arc<RuntimeShared>,
    run_queue: RunQueue,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) stacks: RefCell<StackCache>,
    tasks: RefCell<Slab<TaskRef>>,
    /// The kernel ring, with the io_uring backend.
    pub(crate) driver: RefCell<Option<Driver>>,
    /// Scratch list of waiters woken by completions.
    woken: RefCell<Vec<Woken>>,
    /// The green thread being run, if any.
    pub(crate) current: Cell<Option<NonNull<Task>>>,
    /// The async task being polled, if any. Kept apart from `current`: code
    /// inside a poll is not on a green thread and must not suspend.
    pub(crate) polling: Cell<Option<NonNull<Task>>>,
    tick: Cell<u32>,
    /// Since when this carrier has run without sleeping or offering its
    /// CPU (see [`OFFER_AFTER`]).
    ran_since: Cell<Instant>,
    /// This carrier's part in keeping floating carriers apart.
    spread: super::spread::SpreadLocal,
}

thread_local! {
    static CARRIER: Cell<*const CarrierLocal> = const { Cell::new(ptr::null()) };
    /// The green thread running on this thread: one load for the hot paths
    /// (`yield_now`, `park`), where going through CARRIER costs two.
    static CURRENT: Cell<*const Task> = const { Cell::new(ptr::null()) };
}

/// A FIFO of tasks linked through their `next` field. Carrier-thread only;
/// a task is in it at most once (its park state guarantees a single
/// scheduling), so one link per task suffices and push/pop never allocate.
struct RunQueue {
    head: Cell<*const Task>,
    tail: Cell<*const Task>,
}

impl RunQueue {
    fn new() -> Self {
        RunQueue {
            head: Cell::new(ptr::null()),
            tail: Cell::new(ptr::null()),
        }
    }

    #[inline]
    fn push_back(&self, task: NonNull<Task>) {
        let t = task.as_ptr() as *const Task;
        // SAFETY: queued tasks are alive (their carrier's slab owns them) and
        // belong to this carrier, whose thread is the only one running this.
        unsafe {
            (*t).set_next(ptr::null());
            match NonNull::new(self.tail.get() as *mut Task) {
                Some(tail) => tail.as_ref().set_next(t),
                None => self.head.set(t),
            }
        }
        self.tail.set(t);
    }

    #[inline]
    fn pop_front(&self) -> Option<NonNull<Task>> {
        let head = NonNull::new(self.head.get() as *mut Task)?;
        // SAFETY: as in push_back.
        let next = unsafe { head.as_ref().next() };
        self.head.set(next);
        if next.is_null() {
            self.tail.set(ptr::null());
        }
        Some(head)
    }

    fn clear(&self) {
        self.head.set(ptr::null());
        self.tail.set(ptr::null());
    }
}

/// The carrier running on this thread, if any.
#[inline]
pub(crate) fn with_carrier<R>(f: impl FnOnce(Option<&CarrierLocal>) -> R) -> R {
    let p = CARRIER.with(|c| c.get());
    // SAFETY: CARRIER is set by `CarrierLocal::run` to a value that lives on
    // that function's stack frame and is reset before the frame ends; it is
    // only read on this thread.
    f(unsafe { p.as_ref() })
}

/// The green thread running on this thread, if any.
#[inline]
pub(crate) fn current_task() -> Option<NonNull<Task>> {
    NonNull::new(CURRENT.with(|c| c.get()) as *mut Task)
}

/// The async task this carrier is polling, if any.
pub(crate) fn polling_task() -> Option<NonNull<Task>> {
    with_carrier(|c| c.and_then(|c| c.polling.get()))
}

/// This thread's carrier as (its index, its runtime's carrier count), or
/// `None` off a carrier.
pub(crate) fn carrier_index() -> Option<(usize, usize)> {
    with_carrier(|c| c.map(|c| (c.index, c.runtime.carriers.len())))
}

/// The CPU this thread's carrier is pinned to or has as its home (see
/// [`RuntimeShared::placed_cpus`](super::RuntimeShared::placed_cpus));
/// `None` off a carrier or if it has neither.
pub(crate) fn carrier_cpu() -> Option<usize> {
    with_carrier(|c| c.and_then(|c| c.runtime.placed_cpus().map(|cpus| cpus[c.index])))
}

/// Raw pointer to this thread's carrier, for the signal handler.
#[inline]
pub(crate) fn carrier_ptr() -> *const CarrierLocal {
    CARRIER.with(|c| c.get())
}

/// Puts a woken task on its carrier's run queue.
pub(crate) fn schedule(task: NonNull<Task>) {
    // SAFETY: callers hold a reference that keeps the task alive (a Thread
    // handle, a waker, a timer entry of a parked task).
    let t = unsafe { task.as_ref() };
    let local = with_carrier(|c| match c {
        Some(c) if Arc::ptr_eq(&c.shared, &t.carrier) => {
            c.run_queue.push_back(task);
            true
        }
        _ => false,
    });
    if !local {
        // A wake-up for a carrier that has exited is dropped: its tasks
        // were abandoned.
        let _ = t.carrier.push_remote(Remote::Wake(TaskPtr(task)));
    }
}

/// Queues a suspended green thread of this thread's carrier whose only
/// resumer is the caller (a completion it waits for).
pub(crate) fn resume_local(task: NonNull<Task>) {
    with_carrier(|c| {
        c.expect("resume_local runs on the task's carrier")
            .run_queue
            .push_back(task)
    });
}

/// Suspends the running green thread.
///
/// Inlined into its callers: a call frame between a green thread's code and
/// the switch costs a mispredicted return on every switch.
///
/// # Safety
///
/// `task` must be the green thread running on this thread's carrier.
#[inline(always)]
pub(crate) unsafe fn suspend(task: NonNull<Task>, why: Suspend) {
    // SAFETY: per the contract we are on the task's carrier, inside its
    // coroutine, so its yielder is set and valid for the coroutine's life.
    unsafe {
        let yielder = task.as_ref().yielder();
        (*yielder).suspend(why);
    }
}

impl CarrierLocal {
    pub(crate) fn new(
        index: usize,
        shared: Arc<CarrierShared>,
        runtime: Arc<RuntimeShared>,
        driver: Option<Driver>,
    ) -> Self {
        CarrierLocal {
            index,
            driver: RefCell::new(driver),
            woken: RefCell::new(Vec::new()),
            shared,
            runtime,
            run_queue: RunQueue::new(),
            timers: RefCell::new(Timers::default()),
            stacks: RefCell::new(StackCache::new()),
            tasks: RefCell::new(Slab::new()),
            current: Cell::new(None),
            polling: Cell::new(None),
            tick: Cell::new(0),
            ran_since: Cell::new(Instant::now()),
            spread: super::spread::SpreadLocal::new(),
        }
    }

    /// Offers the CPU to other threads waiting for it (`sched_yield`) once
    /// this carrier has run [`OFFER_AFTER`] without sleeping.
    fn offer_cpu(&self) {
        let now = Instant::now();
        if now.duration_since(self.ran_since.get()) >= OFFER_AFTER {
            std::thread::yield_now();
            // Relaxed: a count for tests.
            self.shared.offers.fetch_add(1, Ordering::Relaxed);
            self.ran_since.set(Instant::now());
        }
    }

    /// Registers a task spawned on this carrier and makes it runnable.
    pub(crate) fn adopt(&self, task: TaskRef) {
        // Relaxed: see CarrierShared::load.
        self.shared.load.fetch_add(1, Ordering::Relaxed);
        self.register(task);
    }

    /// Registers a task already counted in the load (a remote spawn) and
    /// makes it runnable.
    fn register(&self, task: TaskRef) {
        let ptr = task.as_ptr();
        let key = self.tasks.borrow_mut().insert(task);
        // SAFETY: we are on the carrier that now owns the task.
        unsafe { ptr.as_ref().set_key(key) };
        self.run_queue.push_back(ptr);
    }

    /// Runs the scheduler until the runtime shuts down.
    pub(crate) fn run(&self) {
        CARRIER.with(|c| c.set(self));
        loop {
            let tick = self.tick.get().wrapping_add(1);
            self.tick.set(tick);
            // Other threads' work is looked at every 16 tasks (and whenever
            // the run queue empties, below), not on every switch.
            // Acquire: pairs with push_remote's store so the items are seen.
            if tick % 16 == 0 && self.shared.has_remote.load(Ordering::Acquire) {
                self.drain_remote();
            }
            if tick % 64 == 0 {
                // Relaxed: shutdown is a request; reacting a turn late is fine.
                if self.shared.shutdown.load(Ordering::Relaxed) {
                    break;
                }
                self.fire_timers();
                self.poll_driver();
                self.offer_cpu();
                if tick % 1024 == 0 {
                    if let Some(s) = &self.runtime.spread {
                        self.spread.check(s, self.index);
                    }
                }
            }
            let next = self.run_queue.pop_front();
            match next {
                Some(task) => self.run_task(task),
                None => {
                    if self.shared.has_remote.load(Ordering::Acquire) {
                        self.drain_remote();
                        continue;
                    }
                    if self.fire_timers() {
                        continue;
                    }
                    if self.shared.shutdown.load(Ordering::Relaxed) {
                        break;
                    }
                    self.park();
                    self.ran_since.set(Instant::now());
                }
            }
        }
        self.abandon_all();
        CARRIER.with(|c| c.set(ptr::null()));
    }

    fn drain_remote(&self) {
        // Relaxed store: the Acquire lock below orders the reads.
        self.shared.has_remote.store(false, Ordering::Relaxed);
        let items = mem::take(&mut self.shared.remote.lock().items);
        for item in items {
            match item {
                Remote::Spawn(task) => self.register(task),
                Remote::Wake(TaskPtr(task)) => self.run_queue.push_back(task),
            }
        }
    }

    /// Fires due timers; returns whether any fired.
    fn fire_timers(&self) -> bool {
        if self.timers.borrow().is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut fired = false;
        loop {
            // The borrow ends before the target runs: a waker may re-arm.
            let due = self.timers.borrow_mut().pop_due(now);
            match due {
                Some(Target::Park(task)) => {
                    // SAFETY: a parked task's timer entry outlives nothing:
                    // the task removes it before returning from the park.
                    unsafe { task.as_ref() }.wake();
                }
                Some(Target::Resume(task)) => self.run_queue.push_back(task),
                Some(Target::Waker(w)) => w.wake(),
                None => break,
            }
            fired = true;
        }
        fired
    }

    /// One driver turn: submit queued entries, collect completions.
    fn poll_driver(&self) {
        let mut driver = self.driver.borrow_mut();
        match driver.as_mut() {
            Some(d) if d.busy() => {
                let mut woken = mem::take(&mut *self.woken.borrow_mut());
                d.turn(&mut woken);
                drop(driver);
                self.schedule_woken(woken);
            }
            _ => {}
        }
    }

    /// Schedules waiters woken by completions (outside the driver borrow:
    /// a waker may run arbitrary code).
    fn schedule_woken(&self, mut woken: Vec<Woken>) {
        for w in woken.drain(..) {
            match w {
                Woken::Green(t) => self.run_queue.push_back(t),
                Woken::Waker(w) => w.wake(),
            }
        }
        // Keep the allocation for the next turn.
        *self.woken.borrow_mut() = woken;
    }

    /// Sleeps until remote work arrives or the next timer is due.
    fn park(&self) {
        // Spin briefly first: a wake-up from another carrier often follows
        // within microseconds, and a futex round trip costs more.
        for _ in 0..64 {
            if self.shared.has_remote.load(Ordering::Acquire) {
                return;
            }
            std::hint::spin_loop();
        }
        let deadline = self.timers.borrow().next_deadline();
        let timeout = match deadline {
            Some(d) => {
                let now = Instant::now();
                if d <= now {
                    return;
                }
                let left = d - now;
                Some(rustix::time::Timespec {
                    tv_sec: left.as_secs() as _,
                    tv_nsec: left.subsec_nanos() as _,
                })
            }
            None => None,
        };
        if let Some(s) = &self.runtime.spread {
            self.spread.sleep(s, self.index);
        }
        // SeqCst: see push_remote.
        self.shared.wake_word.store(SLEEPING, Ordering::SeqCst);
        if self.shared.has_remote.load(Ordering::SeqCst)
            || self.shared.shutdown.load(Ordering::SeqCst)
        {
            self.shared.wake_word.store(AWAKE, Ordering::Relaxed);
            return;
        }
        let mut driver = self.driver.borrow_mut();
        if let Some(d) = driver.as_mut() {
            let mut woken = mem::take(&mut *self.woken.borrow_mut());
            let timeout = timeout.map(|t| Duration::new(t.tv_sec as u64, t.tv_nsec as u32));
            d.park(timeout, &mut woken);
            drop(driver);
            self.shared.wake_word.store(AWAKE, Ordering::Relaxed);
            self.schedule_woken(woken);
            return;
        }
        drop(driver);
        // EAGAIN (already woken), EINTR and ETIMEDOUT all just mean "look
        // again".
        let _ = rustix::thread::futex::wait(
            &self.shared.wake_word,
            rustix::thread::futex::Flags::PRIVATE,
            SLEEPING,
            timeout.as_ref(),
        );
        self.shared.wake_word.store(AWAKE, Ordering::Relaxed);
    }

    #[inline(always)]
    fn resume_green(
        &self,
        ptr: NonNull<Task>,
        co: &mut super::task::GreenCoroutine,
    ) -> CoroutineResult<Suspend, ()> {
        self.current.set(Some(ptr));
        CURRENT.with(|c| c.set(ptr.as_ptr()));
        let r = co.resume(());
        CURRENT.with(|c| c.set(ptr::null()));
        self.current.set(None);
        r
    }

    // Inlined into the loop for the same reason as `suspend`.
    #[inline(always)]
    fn run_task(&self, ptr: NonNull<Task>) {
        // SAFETY: a queued task is alive (the slab owns it until it finishes)
        // and belongs to this carrier.
        let task = unsafe { ptr.as_ref() };
        // SAFETY: we are on the owning carrier, and nothing else takes a
        // reference to the body while this one lives (the coroutine touches
        // only its yielder cell).
        let body = unsafe { task.body() };
        let finished = match body {
            Body::Green(co) => match self.resume_green(ptr, co) {
                CoroutineResult::Yield(Suspend::Yield) => {
                    self.run_queue.push_back(ptr);
                    false
                }
                CoroutineResult::Yield(Suspend::Park) => false,
                CoroutineResult::Return(()) => {
                    if let Body::Green(co) = mem::replace(body, Body::Done) {
                        self.stacks.borrow_mut().free(co.into_stack());
                    }
                    true
                }
            },
            Body::Future(fut) => {
                self.polling.set(Some(ptr));
                // Consume the notification that queued us. Acquire: pairs
                // with the waker's Release so its writes are seen by poll.
                task.state.swap(EMPTY, Ordering::Acquire);
                let raw = RawWaker::new(ptr.as_ptr() as *const (), super::task::vtable());
                // SAFETY: the vtable treats the pointer as a TaskRef; the
                // slab's TaskRef keeps it alive for the poll, and ManuallyDrop
                // keeps this borrowed waker from releasing that reference
                // (clones take their own).
                let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
                let mut cx = Context::from_waker(&waker);
                let polled = fut.as_mut().poll(&mut cx);
                self.polling.set(None);
                match polled {
                    Poll::Ready(()) => {
                        *body = Body::Done;
                        true
                    }
                    Poll::Pending => {
                        // AcqRel: Release so a waker that sees PARKED sees a
                        // fully stopped poll; failure means a wake-up came
                        // during the poll, so poll again.
                        if task
                            .state
                            .compare_exchange(EMPTY, PARKED, Ordering::AcqRel, Ordering::Acquire)
                            .is_err()
                        {
                            self.run_queue.push_back(ptr);
                        }
                        false
                    }
                }
            }
            Body::Done => false,
        };
        if finished {
            // SAFETY: on the owning carrier.
            let key = unsafe { task.key() };
            let task = self.tasks.borrow_mut().remove(key);
            // Relaxed: see CarrierShared::load.
            self.shared.load.fetch_sub(1, Ordering::Relaxed);
            drop(task);
        }
    }

    /// At shutdown: abandons every unfinished task.
    ///
    /// A suspended green thread is never resumed and its stack is never
    /// freed (something may still write to it); its JoinHandle reports the
    /// shutdown. An unfinished future is dropped.
    fn abandon_all(&self) {
        let pending = {
            let mut q = self.shared.remote.lock();
            q.closed = true;
            mem::take(&mut q.items)
        };
        for item in pending {
            if let Remote::Spawn(task) = item {
                self.register(task);
            }
        }
        self.run_queue.clear();
        self.timers.borrow_mut().clear();
        let tasks = mem::take(&mut *self.tasks.borrow_mut());
        self.shared.load.store(0, Ordering::Relaxed);
        // Report every abandonment before any task is freed: a joiner on
        // this carrier is woken through a plain pointer (Waiter::Local).
        for (_, task) in tasks.iter() {
            task.complete_join(true);
        }
        for (_, task) in tasks {
            // SAFETY: on the owning carrier, and nothing else runs.
            let body = unsafe { task.body() };
            match mem::replace(body, Body::Done) {
                Body::Green(co) => {
                    if co.started() {
                        // Its stack may hold buffers something still writes
                        // to, and unwinding it would run its code: leak it.
                        mem::forget(co);
                    } else {
                        drop(co);
                    }
                }
                Body::Future(f) => drop(f),
                Body::Done => {}
            }
        }
        // Wake-ups issued above queued tasks that will never run.
        self.run_queue.clear();
        // Cancels what is in flight and waits for the kernel to let go of
        // the buffers (abandoned green threads' stacks are leaked anyway).
        drop(self.driver.borrow_mut().take());
    }
}
