//! The runtime: carriers (one OS thread per core), green threads on pooled
//! stacks, async tasks, timers, and where a spawn lands.
//!
//! Owns the carriers' lifetimes and spawn placement. It knows nothing of what
//! an operation does: blocking front ends park and wake tasks through
//! [`crate::thread`].

pub(crate) mod carrier;
pub(crate) mod overflow;
mod spread;
pub(crate) mod stack;
pub(crate) mod task;
pub(crate) mod timer;

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use corosensei::Coroutine;
use parking_lot::Mutex;

pub(crate) use self::carrier::{carrier_cpu, carrier_index};
use self::carrier::{with_carrier, CarrierLocal, CarrierShared, Remote};
use self::stack::{class_of, PooledStack};
use self::task::{Body, Task, TaskRef};
use crate::thread::JoinHandle;

pub use self::stack::{DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE};
use crate::driver::Driver;
pub use crate::driver::IoBackend;

/// Bytes of address space mapped for green thread stacks so far, over all
/// runtimes. The pool reuses stacks and never unmaps, so this grows only
/// with the peak number of green threads alive at once.
pub fn mapped_stack_bytes() -> usize {
    stack::mapped_bytes()
}

/// State shared by a runtime's handles and carriers.
pub(crate) struct RuntimeShared {
    pub(crate) carriers: Vec<Arc<CarrierShared>>,
    pub(crate) stack_size: usize,
    pub(crate) backend: IoBackend,
    /// The CPU each carrier is pinned to, by carrier index; `None` if the
    /// carriers float.
    pub(crate) cpus: Option<Box<[usize]>>,
    /// Where floating carriers run, to keep them apart (see
    /// [`spread`]); `None` when pinned or when it cannot help.
    pub(crate) spread: Option<spread::Spread>,
}

impl RuntimeShared {
    /// Each carrier's CPU, by index: the one it is pinned to, or its home
    /// (see [`spread`]); `None` if carriers have neither.
    pub(crate) fn placed_cpus(&self) -> Option<&[usize]> {
        self.cpus
            .as_deref()
            .or_else(|| self.spread.as_ref().and_then(spread::Spread::homes))
    }

    /// The least loaded carrier.
    fn pick(&self) -> &Arc<CarrierShared> {
        self.carriers
            .iter()
            .min_by_key(|c| c.load())
            .expect("a runtime has at least one carrier")
    }
}

/// Configures and starts a [`Runtime`].
///
/// ```
/// let rt = green::Runtime::builder().carriers(2).stack_size(32 * 1024).build().unwrap();
/// assert_eq!(rt.block_on(|| 6 * 7), 42);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    carriers: Option<usize>,
    stack_size: usize,
    name: String,
    io_backend: Option<IoBackend>,
    ring_entries: u32,
    io_workers: u32,
    pin: Option<bool>,
}

/// Default submission ring size per carrier (the completion ring is twice
/// as large).
pub const DEFAULT_RING_ENTRIES: u32 = 256;

/// Default cap on the kernel workers per carrier that run operations which
/// block in the kernel (see [`Builder::io_workers`]).
pub const DEFAULT_IO_WORKERS: u32 = 64;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            carriers: None,
            stack_size: DEFAULT_STACK_SIZE,
            name: "green-carrier".into(),
            io_backend: None,
            ring_entries: DEFAULT_RING_ENTRIES,
            io_workers: DEFAULT_IO_WORKERS,
            pin: None,
        }
    }
}

impl Builder {
    /// Number of carriers (OS threads). Default: one per available core.
    pub fn carriers(mut self, n: usize) -> Self {
        self.carriers = Some(n);
        self
    }

    /// Default usable stack size of green threads spawned without an
    /// explicit size. Default [`DEFAULT_STACK_SIZE`] (64 KiB); rounded up to
    /// a power of two, at least [`MIN_STACK_SIZE`].
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// The I/O backend. Default: `GREEN_IO_BACKEND` if set, else
    /// [`IoBackend::IoUring`]. With io_uring, [`Builder::build`] fails with
    /// an error naming the cause when the kernel refuses it.
    pub fn io_backend(mut self, backend: IoBackend) -> Self {
        self.io_backend = Some(backend);
        self
    }

    /// Submission ring entries per carrier (rounded up to a power of two by
    /// the kernel; the completion ring is twice as large). More operations
    /// than this may be in flight: the surplus waits for room. Default
    /// [`DEFAULT_RING_ENTRIES`].
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// Most kernel worker threads (io_uring's io-wq) per carrier that run
    /// operations which block inside the kernel: opens that create or
    /// truncate a file, buffered writes, and others the kernel cannot
    /// complete without sleeping. It bounds how many such blocking waits
    /// (for the disk, a journal, a lock) overlap; workers start only while
    /// operations queue behind blocked ones. The kernel's own default is
    /// `min(ring entries, 4 x CPUs)`, which on small machines serialises
    /// file work that a thread pool would overlap. Default
    /// [`DEFAULT_IO_WORKERS`]; kernels before 5.15 ignore it.
    pub fn io_workers(mut self, n: u32) -> Self {
        self.io_workers = n;
        self
    }

    /// Pins carrier `i` to the `i`-th CPU the building thread may run on
    /// (round robin if there are more carriers than CPUs). Default:
    /// `GREEN_PIN_CARRIERS` (`1` or `0`) if set, else not pinned.
    ///
    /// A pinned carrier keeps its caches and its place: green threads never
    /// move between carriers, so their data stays on one core. The IPC
    /// layer uses it to put both ends of a connection on the same CPU
    /// when both processes pin (see [`crate::ipc`]). Pin when the process
    /// owns its CPUs; leave the carriers floating when other busy threads
    /// or processes share them, since the kernel then cannot move a
    /// pinned carrier to an idle CPU.
    ///
    /// Floating carriers (no more of them than CPUs) still keep apart: one
    /// that finds another carrier of its runtime on its CPU moves itself
    /// to a CPU where none runs, and stays free to move. Two busy
    /// carriers of one process sharing a CPU while another CPU runs none
    /// of them give that process half its time; the kernel balances
    /// threads by count and lets that happen when other processes' threads
    /// fill the other CPU (an IPC server and its client, say).
    ///
    /// With exactly one floating carrier per CPU each has a home, the CPU
    /// it would be pinned to: one found elsewhere moves back there, unless
    /// the kernel keeps putting it back (moves are spaced out, up to a
    /// second apart). IPC lanes use homes as they use pinned CPUs.
    pub fn pin_carriers(mut self, pin: bool) -> Self {
        self.pin = Some(pin);
        self
    }

    /// Name prefix of the carrier threads (`{prefix}-{index}`).
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// Starts the carriers.
    pub fn build(self) -> io::Result<Runtime> {
        let n = match self.carriers {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a green runtime needs at least one carrier",
                ))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        };
        class_of(self.stack_size)?;
        if self.ring_entries == 0 || self.ring_entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring_entries must be in 1..=32768, got {}",
                    self.ring_entries
                ),
            ));
        }
        if self.io_workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_workers must be at least 1",
            ));
        }
        let backend = match self.io_backend {
            Some(b) => b,
            None => IoBackend::from_env()?.unwrap_or_default(),
        };
        let pin = match self.pin {
            Some(p) => p,
            None => pin_from_env()?,
        };
        let (cpus, spread) = if pin {
            let allowed = allowed_cpus()?;
            let cpus = (0..n).map(|i| allowed[i % allowed.len()]).collect();
            (Some(cpus), None)
        } else {
            // Keeping floating carriers apart is a help, not a need: a
            // mask that cannot be read leaves them to the kernel.
            let spread = allowed_cpus()
                .ok()
                .and_then(|allowed| spread::Spread::new(n, &allowed));
            (None, spread)
        };
        overflow::install_handler();
        let mut carriers = Vec::with_capacity(n);
        for _ in 0..n {
            let wake_fd = match backend {
                IoBackend::IoUring => Some(Arc::new(rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
                )?)),
                IoBackend::Blocking => None,
            };
            carriers.push(Arc::new(CarrierShared::new(wake_fd)));
        }
        let shared = Arc::new(RuntimeShared {
            carriers,
            stack_size: self.stack_size,
            backend,
            cpus,
            spread,
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Mutex::new(Vec::with_capacity(n)),
        };
        // Each carrier sets up its own ring (SINGLE_ISSUER binds a ring to
        // the thread that creates it) and reports back before we return.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let entries = self.ring_entries;
        let io_workers = self.io_workers;
        for i in 0..n {
            let rt_shared = shared.clone();
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || {
                    overflow::ensure_altstack();
                    if let Some(cpus) = &rt_shared.cpus {
                        if let Err(e) = pin_to(cpus[i]) {
                            let _ = ready.send(Err(io::Error::new(
                                e.kind(),
                                format!("green runtime: pinning carrier {i} to CPU {}: {e}", cpus[i]),
                            )));
                            return;
                        }
                    }
                    let carrier = rt_shared.carriers[i].clone();
                    let driver = match &carrier.wake_fd {
                        Some(fd) => match Driver::new(entries, io_workers, fd.clone()) {
                            Ok(d) => Some(d),
                            Err(e) => {
                                let _ = ready.send(Err(io::Error::new(
                                    e.kind(),
                                    format!("green runtime: io_uring unavailable: {e}. Set GREEN_IO_BACKEND=blocking or Builder::io_backend(IoBackend::Blocking) to run without it"),
                                )));
                                return;
                            }
                        },
                        None => None,
                    };
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    let local = CarrierLocal::new(i, carrier, rt_shared, driver);
                    local.run();
                });
            match spawned {
                Ok(t) => rt.threads.get_mut().push(t),
                Err(e) => return Err(e),
            }
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other(
                        "a green carrier thread exited during start-up",
                    ))
                }
            }
        }
        Ok(rt)
    }
}

/// `GREEN_PIN_CARRIERS`: `1` pins, `0` does not, unset means not.
fn pin_from_env() -> io::Result<bool> {
    parse_pin(std::env::var("GREEN_PIN_CARRIERS").ok().as_deref())
}

fn parse_pin(value: Option<&str>) -> io::Result<bool> {
    match value {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("GREEN_PIN_CARRIERS={other:?}: expected \"1\" or \"0\""),
        )),
    }
}

/// The CPUs the calling thread may run on, in ascending order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect();
    if cpus.is_empty() {
        return Err(io::Error::other("the thread's CPU affinity mask is empty"));
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// A set of carriers that run green threads and async tasks.
///
/// Most programs never build one: [`crate::spawn`] from a plain OS thread
/// starts a default runtime with one carrier per core on first use.
///
/// # Shutdown
///
/// Dropping a `Runtime` stops its carriers at their next scheduling point
/// and waits for them. Green threads that have not finished are abandoned:
/// they are never resumed, their stacks are never freed or reused (the kernel
/// or a peer may still write to them), and the destructors of what they own
/// do not run. Joining one returns `Err` with a payload saying the runtime
/// shut down. Unfinished async tasks are dropped. Spawning onto a runtime
/// that has shut down fails with an error.
pub struct Runtime {
    shared: Arc<RuntimeShared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("carriers", &self.shared.carriers.len())
            .field("stack_size", &self.shared.stack_size)
            .field("io_backend", &self.shared.backend)
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts a runtime with the defaults.
    pub fn new() -> io::Result<Runtime> {
        Builder::default().build()
    }

    /// Number of carriers.
    pub fn carriers(&self) -> usize {
        self.shared.carriers.len()
    }

    /// The CPU each carrier is pinned to, by carrier index, or `None` if
    /// the carriers are not pinned ([`Builder::pin_carriers`]).
    pub fn pinned_cpus(&self) -> Option<&[usize]> {
        self.shared.cpus.as_deref()
    }

    /// The I/O backend the carriers use.
    pub fn io_backend(&self) -> IoBackend {
        self.shared.backend
    }

    /// Runs `f` as a green thread on this runtime and returns its value,
    /// blocking the caller (an OS thread, or a green thread of another
    /// runtime) until it finishes. A panic in `f` resumes on the caller.
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Spawns a green thread on this runtime's least loaded carrier.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_on(Some(&self.shared), None, None, f)
            .unwrap_or_else(|e| panic!("failed to spawn green thread: {e}"))
    }

    /// Spawns an async task on this runtime's least loaded carrier.
    pub fn spawn_async<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_async_on(Some(&self.shared), fut)
            .unwrap_or_else(|e| panic!("failed to spawn async task: {e}"))
    }

    pub(crate) fn shared(&self) -> &Arc<RuntimeShared> {
        &self.shared
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for c in &self.shared.carriers {
            // SeqCst: pairs with the check in the carrier's park.
            c.shutdown.store(true, Ordering::SeqCst);
            c.notify();
        }
        let me = std::thread::current().id();
        for t in self.threads.lock().drain(..) {
            // A runtime dropped on one of its own carriers cannot wait for
            // that carrier; it exits on its own at its next turn.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// The carriers of the runtime this thread belongs to (the default
/// runtime's off a carrier).
pub(crate) fn carriers_here() -> usize {
    carrier_index().map_or_else(|| default_runtime().carriers(), |(_, n)| n)
}

/// The runtime started on first use by spawns from plain OS threads.
pub(crate) fn default_runtime() -> &'static Runtime {
    static DEFAULT: OnceLock<Runtime> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        Builder::default()
            .name("green")
            .build()
            .unwrap_or_else(|e| panic!("failed to start the default green runtime: {e}"))
    })
}

fn shutdown_error() -> io::Error {
    io::Error::other("the green runtime has shut down")
}

/// Creates the coroutine of a green thread running `f`.
fn green_body<F, T>(stack: PooledStack, f: F) -> Body
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Body::Green(Coroutine::with_stack(stack, move |yielder, ()| {
        let task = carrier::current_task().expect("a green thread starts on its carrier");
        // SAFETY: we are the running task on its carrier; the yielder lives
        // on this coroutine's stack for as long as the coroutine runs.
        unsafe { task.as_ref().set_yielder(yielder) };
        let result = catch_unwind(AssertUnwindSafe(f));
        // SAFETY: this task was made by TaskRef::new::<T> (new_green); this
        // is the one write of the result, before complete_join.
        unsafe { TaskRef::set_result(task, result) };
        // SAFETY: the task is alive: its carrier's slab owns it until this
        // coroutine returns.
        unsafe { task.as_ref() }.complete_join(false);
    }))
}

/// Spawns a green thread: on the current carrier when called on one of
/// `rt`'s carriers (or `rt` is None and we are on any carrier), else on
/// `rt`'s (or the default runtime's) least loaded carrier.
pub(crate) fn spawn_on<F, T>(
    rt: Option<&Arc<RuntimeShared>>,
    name: Option<String>,
    stack_size: Option<usize>,
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let local = local_carrier(rt);
    let class = |rt: &RuntimeShared| class_of(stack_size.unwrap_or(rt.stack_size));
    let name = name.map(String::into_boxed_str);
    match local {
        Some(c) => {
            // SAFETY: with_carrier returned this thread's live carrier; we
            // are still on it, inside one of its green threads.
            let c = unsafe { &*c };
            let stack = c.stacks.borrow_mut().alloc(class(&c.runtime)?)?;
            let task = new_green(c.shared.clone(), name, stack, f);
            let handle = JoinHandle::new(task.clone());
            c.adopt(task);
            Ok(handle)
        }
        None => {
            let rt = rt.unwrap_or_else(|| default_runtime().shared());
            spawn_remote(rt.pick().clone(), name, class(rt)?, f)
        }
    }
}

/// Spawns a green thread on `carrier` from a thread that is not it: the
/// task goes through the carrier's remote queue.
fn spawn_remote<F, T>(
    carrier: Arc<CarrierShared>,
    name: Option<Box<str>>,
    class: usize,
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let stack = stack::alloc_global(class)?;
    let task = new_green(carrier.clone(), name, stack, f);
    let handle = JoinHandle::new(task.clone());
    carrier
        .push_remote(Remote::Spawn(task))
        .map_err(|_| shutdown_error())?;
    Ok(handle)
}

/// Spawns a green thread on the least loaded carrier of this thread's
/// runtime (the default runtime off a carrier), not necessarily this one:
/// for independent work, such as a server's connections, that should
/// spread over the carriers.
pub(crate) fn spawn_balanced<F, T>(f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime_here();
    let carrier = rt.pick().clone();
    spawn_to(&rt, carrier, f)
}

/// This thread's runtime; off a carrier, the default runtime.
fn runtime_here() -> Arc<RuntimeShared> {
    with_carrier(|c| c.map(|c| c.runtime.clone()))
        .unwrap_or_else(|| default_runtime().shared().clone())
}

/// Spawns on `carrier` of `rt`: locally if it is this thread's carrier,
/// else through its remote queue.
fn spawn_to<F, T>(
    rt: &Arc<RuntimeShared>,
    carrier: Arc<CarrierShared>,
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let here = with_carrier(|c| c.is_some_and(|c| Arc::ptr_eq(&c.shared, &carrier)));
    if here {
        return spawn_on(Some(rt), None, None, f);
    }
    spawn_remote(carrier, None, class_of(rt.stack_size)?, f)
}

/// The CPUs the carriers of this thread's runtime (the default runtime
/// off a carrier) are pinned to or have as their home, by carrier index
/// (see [`RuntimeShared::placed_cpus`]); `None` if they have neither.
pub(crate) fn placed_cpus_here() -> Option<Box<[usize]>> {
    runtime_here().placed_cpus().map(Into::into)
}

/// Spawns a green thread on a carrier of this thread's runtime (the
/// default runtime off a carrier) pinned to `cpu` or at home there, the
/// least loaded one if several are. `Err(f)` if no carrier is (the
/// caller runs `f` some other way).
pub(crate) fn spawn_on_cpu<F, T>(cpu: usize, f: F) -> Result<io::Result<JoinHandle<T>>, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime_here();
    let carrier = rt.placed_cpus().and_then(|cpus| {
        rt.carriers
            .iter()
            .zip(cpus.iter())
            .filter(|&(_, &c)| c == cpu)
            .map(|(carrier, _)| carrier)
            .min_by_key(|c| c.load())
            .cloned()
    });
    match carrier {
        Some(carrier) => Ok(spawn_to(&rt, carrier, f)),
        None => Err(f),
    }
}

fn new_green<F, T>(
    carrier: Arc<CarrierShared>,
    name: Option<Box<str>>,
    stack: PooledStack,
    f: F,
) -> TaskRef
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let info = (stack.guard(), stack.usable());
    TaskRef::new::<T>(Task::new(carrier, name, info, green_body(stack, f)))
}

/// The future an async task runs: the user's future plus result delivery.
struct AsyncBody<F: Future> {
    fut: F,
}

impl<F: Future> Future for AsyncBody<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of the
        // pinned AsyncBody.
        let fut = unsafe { self.map_unchecked_mut(|b| &mut b.fut) };
        let result = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(v)) => Ok(v),
            Err(p) => Err(p),
        };
        let task = carrier::polling_task().expect("an async task is polled by its carrier");
        // SAFETY: this task was made by TaskRef::new::<F::Output>
        // (spawn_async_on); a future is not polled after Ready, so this is
        // the one write of the result, before complete_join.
        unsafe { TaskRef::set_result(task, result) };
        // SAFETY: the carrier's slab keeps the running task alive.
        unsafe { task.as_ref() }.complete_join(false);
        Poll::Ready(())
    }
}

pub(crate) fn spawn_async_on<F>(
    rt: Option<&Arc<RuntimeShared>>,
    fut: F,
) -> io::Result<JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let body = Body::Future(Box::pin(AsyncBody { fut }));
    match local_carrier(rt) {
        Some(c) => {
            // SAFETY: as in spawn_on.
            let c = unsafe { &*c };
            let task =
                TaskRef::new::<F::Output>(Task::new(c.shared.clone(), None, ((0, 0), 0), body));
            let handle = JoinHandle::new(task.clone());
            c.adopt(task);
            Ok(handle)
        }
        None => {
            let rt = rt.unwrap_or_else(|| default_runtime().shared());
            let carrier = rt.pick().clone();
            let task =
                TaskRef::new::<F::Output>(Task::new(carrier.clone(), None, ((0, 0), 0), body));
            let handle = JoinHandle::new(task.clone());
            carrier
                .push_remote(Remote::Spawn(task))
                .map_err(|_| shutdown_error())?;
            Ok(handle)
        }
    }
}

/// This thread's carrier if a spawn onto `rt` (None: any runtime) should
/// land on it.
fn local_carrier(rt: Option<&Arc<RuntimeShared>>) -> Option<*const CarrierLocal> {
    with_carrier(|c| match (c, rt) {
        (Some(c), None) => Some(c as *const CarrierLocal),
        (Some(c), Some(rt)) if Arc::ptr_eq(&c.runtime, rt) => Some(c as *const CarrierLocal),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_spawns_go_to_the_idle_carrier_and_know_their_index() {
        let rt = Runtime::builder().carriers(2).name("bal").build().unwrap();
        let (here, there) = rt
            .spawn(|| {
                let here = carrier_index().expect("on a carrier");
                // This carrier runs us; the other has nothing.
                let there = spawn_balanced(|| carrier_index().expect("on a carrier"))
                    .unwrap()
                    .join()
                    .unwrap();
                (here, there)
            })
            .join()
            .unwrap();
        assert_eq!(here.1, 2);
        assert_eq!(there.1, 2);
        assert_ne!(here.0, there.0);
        assert!(carrier_index().is_none(), "a plain thread is no carrier");
    }

    #[test]
    fn pinned_carriers_run_on_their_cpu_and_are_found_by_it() {
        let allowed = allowed_cpus().unwrap();
        let rt = Runtime::builder()
            .carriers(3)
            .pin_carriers(true)
            .name("pin")
            .build()
            .unwrap();
        let want: Vec<usize> = (0..3).map(|i| allowed[i % allowed.len()]).collect();
        assert_eq!(rt.pinned_cpus(), Some(&want[..]));
        for &cpu in &want {
            let (on, mask, now) = rt.block_on(move || {
                let probe = || {
                    let set = rustix::thread::sched_getaffinity(None).unwrap();
                    let mask: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
                        .filter(|&c| set.is_set(c))
                        .collect();
                    (carrier_cpu(), mask, rustix::thread::sched_getcpu())
                };
                match spawn_on_cpu(cpu, probe) {
                    Ok(h) => h.unwrap().join().unwrap(),
                    Err(_) => panic!("no carrier found on CPU {cpu}"),
                }
            });
            assert_eq!(on, Some(cpu));
            assert_eq!(mask, vec![cpu]);
            assert_eq!(now, cpu);
        }
        // No carrier on a CPU the machine lacks: the work comes back.
        let back = rt.block_on(|| spawn_on_cpu(usize::MAX, || ()).is_err());
        assert!(back);
        // Floating carriers: none is pinned anywhere.
        let float = Runtime::builder()
            .carriers(1)
            .pin_carriers(false)
            .build()
            .unwrap();
        assert_eq!(float.pinned_cpus(), None);
        let cpu = want[0];
        assert!(
            float.block_on(move || carrier_cpu().is_none() && spawn_on_cpu(cpu, || ()).is_err())
        );
    }

    #[test]
    fn a_carrier_that_keeps_running_offers_its_cpu() {
        let rt = Runtime::builder().carriers(1).build().unwrap();
        let shared = rt.shared().clone();
        // Green threads that never sleep: the carrier runs on and on, and
        // offers its CPU every OFFER_AFTER of it.
        let offered = rt.block_on(move || {
            let start = std::time::Instant::now();
            while shared.carriers[0].offers.load(Ordering::Relaxed) < 3
                && start.elapsed() < std::time::Duration::from_secs(30)
            {
                crate::thread::yield_now();
            }
            shared.carriers[0].offers.load(Ordering::Relaxed)
        });
        assert!(offered >= 3, "offered {offered} times in 30 s of running");
    }

    #[test]
    fn pinning_is_read_from_green_pin_carriers() {
        assert!(!parse_pin(None).unwrap());
        assert!(!parse_pin(Some("0")).unwrap());
        assert!(parse_pin(Some("1")).unwrap());
        let e = parse_pin(Some("yes")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("GREEN_PIN_CARRIERS"), "{e}");
    }
}
