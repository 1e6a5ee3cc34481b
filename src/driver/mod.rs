//! The driver: operations in flight on a carrier's kernel ring.
//!
//! Owns the carrier's [`Uring`] and a slab of in-flight operations, keyed
//! by the `user_data` of their submission entries. An operation is
//! submitted by a waiter (a green thread or a future), and its completion
//! wakes exactly that waiter. It knows nothing of what an operation means:
//! front ends (`fs`, `net`, `time`, `aio`) build the entries and read the
//! results.
//!
//! ```text
//!   state of an op (slab entry)
//!   Waiting(green thread | waker) --CQE--> Done(res, flags) --taken--> (removed)
//!        |  owner dropped (future)
//!        v
//!   Orphaned(kept buffers) --CQE--> (removed, buffers freed)
//! ```
//!
//! Principle 2 (an op owns its buffers until its completion): a green
//! thread that submitted an op stays suspended until the op's completion
//! arrives, so buffers on its stack stay valid; a future that is dropped
//! early submits a cancel and parks its buffers in `Orphaned` until the
//! completion arrives.
//!
//! Submissions are batched: entries are only written to the SQ here, and
//! the carrier calls [`Driver::turn`] (or [`Driver::park`]) once per
//! scheduler turn, which makes one `io_uring_enter` for all of them.

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::task::Waker;
use std::time::Duration;

use slab::Slab;

use crate::runtime::task::Task;
use crate::sys::uring::{op, Cqe, Sqe, Uring, IOSQE_IO_LINK};

/// `user_data` of the carrier's wake-up read on its eventfd.
const WAKE_TOKEN: u64 = u64::MAX;
/// `user_data` of entries whose completion nobody waits for (linked
/// timeouts, cancels).
const IGNORE_TOKEN: u64 = u64::MAX - 1;

/// Which I/O backend carriers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IoBackend {
    /// The kernel's io_uring, one ring per carrier (the default).
    #[default]
    IoUring,
    /// Plain blocking syscalls made on the carrier thread: while one runs,
    /// every green thread on that carrier waits. For machines where
    /// io_uring is unavailable.
    Blocking,
}

impl IoBackend {
    /// The backend named by `GREEN_IO_BACKEND` (`io_uring` or `blocking`),
    /// if set.
    pub fn from_env() -> io::Result<Option<IoBackend>> {
        match std::env::var("GREEN_IO_BACKEND") {
            Err(_) => Ok(None),
            Ok(v) => match v.as_str() {
                "io_uring" | "uring" => Ok(Some(IoBackend::IoUring)),
                "blocking" => Ok(Some(IoBackend::Blocking)),
                other => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("GREEN_IO_BACKEND={other:?}: expected \"io_uring\" or \"blocking\""),
                )),
            },
        }
    }
}

/// Who waits for an op.
pub(crate) enum OpWaiter {
    /// A suspended green thread, resumed directly by the completion.
    Green(NonNull<Task>),
    /// A future's waker (None until first registered).
    Waker(Option<Waker>),
}

enum OpState {
    Waiting(OpWaiter),
    Done(i32, u32),
    /// The owner is gone; keep these alive until the completion arrives.
    Orphaned(#[allow(dead_code)] Box<dyn Any>),
}

/// A woken waiter, handed back to the carrier to schedule.
pub(crate) enum Woken {
    Green(NonNull<Task>),
    Waker(Waker),
}

/// The per-carrier driver.
pub(crate) struct Driver {
    ring: Uring,
    ops: Slab<OpState>,
    /// Ops (including their cancels) whose completion has not arrived.
    in_flight: usize,
    /// Entries that did not fit the SQ, submitted at the next turn.
    overflow: std::collections::VecDeque<Sqe>,
    wake_fd: std::sync::Arc<OwnedFd>,
    /// Target of the eventfd read; boxed so its address is stable.
    wake_buf: Box<u64>,
    wake_armed: bool,
}

impl Driver {
    /// Sets up the ring (on the carrier thread: with SINGLE_ISSUER the
    /// creating thread is the only one that may submit), letting up to
    /// `io_workers` of its operations block in kernel workers at once.
    pub(crate) fn new(
        entries: u32,
        io_workers: u32,
        wake_fd: std::sync::Arc<OwnedFd>,
    ) -> io::Result<Driver> {
        let ring = Uring::new(entries)?;
        // A kernel without the setting keeps its own cap: slower when many
        // file operations block at once, never wrong.
        let _ = ring.set_max_workers(io_workers);
        Ok(Driver {
            ring,
            ops: Slab::with_capacity(entries as usize),
            in_flight: 0,
            overflow: std::collections::VecDeque::new(),
            wake_fd,
            wake_buf: Box::new(0),
            wake_armed: false,
        })
    }

    /// Whether the kernel supports `opcode`, as an error naming it if not.
    pub(crate) fn require(&self, opcode: u8, name: &str) -> io::Result<()> {
        if self.ring.supports(opcode) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("this kernel's io_uring does not support {name} (opcode {opcode})"),
            ))
        }
    }

    /// Whether a turn has anything to submit or reap.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight > 0 || self.ring.unsubmitted() > 0 || !self.overflow.is_empty()
    }

    /// Queues one entry; it reaches the kernel at the next turn.
    fn push(&mut self, sqe: Sqe) {
        if self.overflow.is_empty() {
            if let Some(slot) = self.ring.next_sqe() {
                *slot = sqe;
                return;
            }
        }
        // The SQ is full: keep the entry in order behind the others. Its op
        // waits for room; nothing is lost.
        self.overflow.push_back(sqe);
    }

    /// Queues `sqe` (and, with `timeout`, a linked timeout that cancels it)
    /// as a new op waited for by `waiter`. Returns the op's id.
    ///
    /// The entry's pointers, and `timeout`, must stay valid until the op's
    /// completion has been reaped (the caller's contract; see the module
    /// docs).
    pub(crate) fn submit(
        &mut self,
        mut sqe: Sqe,
        timeout: Option<&rustix::io_uring::Timespec>,
        waiter: OpWaiter,
    ) -> usize {
        let id = self.ops.insert(OpState::Waiting(waiter));
        sqe.user_data = id as u64;
        self.in_flight += 1;
        match timeout {
            None => self.push(sqe),
            Some(ts) => {
                sqe.flags |= IOSQE_IO_LINK;
                let link = Sqe {
                    opcode: op::LINK_TIMEOUT,
                    addr: ts as *const _ as u64,
                    len: 1,
                    user_data: IGNORE_TOKEN,
                    fd: -1,
                    ..Sqe::default()
                };
                // A link must reach the kernel in one submission: both
                // entries go to the SQ together, or both wait in the
                // overflow (which `flush` never splits).
                if self.overflow.is_empty() && self.ring.free_sqes() >= 2 {
                    self.push(sqe);
                    self.push(link);
                } else {
                    self.overflow.push_back(sqe);
                    self.overflow.push_back(link);
                }
                // The timeout always completes too: -ETIME when it fired,
                // -ECANCELED when the op finished first.
                self.in_flight += 1;
            }
        }
        id
    }

    /// Replaces the waker of a waiting op. Returns the result if it is done.
    pub(crate) fn poll_op(&mut self, id: usize, waker: &Waker) -> Option<(i32, u32)> {
        match self.ops.get_mut(id) {
            Some(OpState::Done(res, flags)) => {
                let r = (*res, *flags);
                self.ops.remove(id);
                Some(r)
            }
            Some(OpState::Waiting(OpWaiter::Waker(w))) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *w = Some(waker.clone());
                }
                None
            }
            _ => None,
        }
    }

    /// Takes the result of a completed op.
    pub(crate) fn take(&mut self, id: usize) -> Option<(i32, u32)> {
        match self.ops.get(id) {
            Some(OpState::Done(res, flags)) => {
                let r = (*res, *flags);
                self.ops.remove(id);
                Some(r)
            }
            _ => None,
        }
    }

    /// Abandons an op whose owner goes away before its completion: cancels
    /// it and keeps `keep` (its buffers) alive until the completion.
    pub(crate) fn orphan(&mut self, id: usize, keep: Box<dyn Any>) {
        match self.ops.get_mut(id) {
            Some(OpState::Done(..)) => {
                self.ops.remove(id);
            }
            Some(state) => {
                *state = OpState::Orphaned(keep);
                self.cancel(id);
            }
            None => {}
        }
    }

    /// Asks the kernel to cancel op `id`; its completion still arrives.
    pub(crate) fn cancel(&mut self, id: usize) {
        self.in_flight += 1;
        self.push(Sqe {
            opcode: op::ASYNC_CANCEL,
            addr: id as u64,
            user_data: IGNORE_TOKEN,
            fd: -1,
            ..Sqe::default()
        });
    }

    /// Moves entries waiting behind a full SQ into it, submitting as the
    /// SQ fills, until the overflow is empty or the kernel takes no more
    /// (its completions are backed up: reap first).
    fn flush(&mut self) {
        while let Some(sqe) = self.overflow.front() {
            // An op with a linked timeout moves with its timeout: a link
            // cut at the end of a submission loses the timeout.
            let need = if sqe.flags & IOSQE_IO_LINK != 0 { 2 } else { 1 };
            if self.ring.free_sqes() < need {
                if !matches!(self.ring.enter(false, None), Ok(n) if n > 0) {
                    return;
                }
                continue;
            }
            for _ in 0..need {
                let sqe = self.overflow.pop_front().expect("a link is queued whole");
                *self.ring.next_sqe().expect("room was checked") = sqe;
            }
        }
    }

    /// One scheduler turn: submit what is queued, then collect completions
    /// without waiting. One `io_uring_enter` at most (more only while the
    /// SQ overflows).
    pub(crate) fn turn(&mut self, woken: &mut Vec<Woken>) {
        self.flush();
        // With nothing to submit, enter only to collect completions the
        // kernel holds for us: an operation that stays in flight (a socket
        // read waiting for a peer that says nothing) would otherwise cost
        // a system call per turn, about one per IPC call when a carrier
        // spins on a shared-memory ring.
        if self.ring.unsubmitted() > 0 || (self.in_flight > 0 && self.ring.kernel_has_completions())
        {
            let _ = self.ring.enter(false, None);
        }
        self.reap(woken);
    }

    /// Sleeps in the kernel until a completion, a wake-up on the carrier's
    /// eventfd, or the timeout; then collects completions.
    pub(crate) fn park(&mut self, timeout: Option<Duration>, woken: &mut Vec<Woken>) {
        if !self.wake_armed {
            let buf: *mut u64 = &mut *self.wake_buf;
            let sqe = Sqe {
                opcode: op::READ,
                fd: self.wake_fd.as_raw_fd(),
                addr: buf as u64,
                len: 8,
                user_data: WAKE_TOKEN,
                ..Sqe::default()
            };
            self.push(sqe);
            self.wake_armed = true;
        }
        self.flush();
        let _ = self.ring.enter(true, timeout);
        self.reap(woken);
    }

    fn reap(&mut self, woken: &mut Vec<Woken>) {
        let ops = &mut self.ops;
        let in_flight = &mut self.in_flight;
        let wake_armed = &mut self.wake_armed;
        self.ring.reap(|cqe: Cqe| match cqe.user_data {
            WAKE_TOKEN => *wake_armed = false,
            IGNORE_TOKEN => *in_flight -= 1,
            id => {
                let id = id as usize;
                *in_flight -= 1;
                match ops.get_mut(id) {
                    Some(state @ OpState::Waiting(_)) => {
                        if let OpState::Waiting(w) =
                            std::mem::replace(state, OpState::Done(cqe.res, cqe.flags))
                        {
                            match w {
                                OpWaiter::Green(t) => woken.push(Woken::Green(t)),
                                OpWaiter::Waker(Some(w)) => woken.push(Woken::Waker(w)),
                                OpWaiter::Waker(None) => {}
                            }
                        }
                    }
                    Some(OpState::Orphaned(_)) => {
                        ops.remove(id);
                    }
                    _ => {}
                }
            }
        });
    }
}

impl Drop for Driver {
    /// Cancels everything in flight and waits (boundedly) for the
    /// completions, so the kernel never writes into buffers freed after
    /// this. What is still in flight after that is leaked, not freed.
    fn drop(&mut self) {
        if self.in_flight > 0 || self.wake_armed {
            self.in_flight += 1;
            self.push(Sqe {
                opcode: op::ASYNC_CANCEL,
                op_flags: op::CANCEL_ANY,
                user_data: IGNORE_TOKEN,
                fd: -1,
                ..Sqe::default()
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            let mut woken = Vec::new();
            while (self.in_flight > 0 || self.wake_armed) && std::time::Instant::now() < deadline {
                self.flush();
                let _ = self.ring.enter(true, Some(Duration::from_millis(10)));
                self.reap(&mut woken);
            }
            // Waiters of abandoned ops are never resumed.
            std::mem::forget(woken);
        }
        if self.in_flight > 0 || self.wake_armed {
            std::mem::forget(std::mem::take(&mut self.ops));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        }
    }
}

/// The kernel's `struct __kernel_timespec` for a duration.
pub(crate) fn timespec(d: Duration) -> rustix::io_uring::Timespec {
    rustix::io_uring::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Turns a CQE result into std's result: `-errno` is the `io::Error` std
/// would return for the same syscall. A linked timeout that fired shows as
/// `-ECANCELED` on its op; std reports an expired socket timeout as EAGAIN
/// (`WouldBlock`), so that is what it becomes.
fn to_result(res: i32, had_timeout: bool) -> io::Result<u32> {
    if res >= 0 {
        Ok(res as u32)
    } else if had_timeout && res == -libc::ECANCELED {
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    } else {
        Err(io::Error::from_raw_os_error(-res))
    }
}

/// Runs one operation for the calling green thread on its carrier's ring,
/// suspending only that green thread until the completion arrives.
///
/// Returns `None` when the caller is not a green thread on an io_uring
/// carrier: the caller then makes the plain blocking syscall instead.
///
/// # Safety
///
/// Every pointer in `sqe` must stay valid until this returns (it returns
/// only after the completion, so memory owned by the caller's frame
/// qualifies).
pub(crate) unsafe fn green_op(
    sqe: Sqe,
    timeout: Option<Duration>,
    name: &str,
) -> Option<io::Result<u32>> {
    use crate::runtime::carrier::{current_task, suspend, with_carrier};
    use crate::runtime::task::Suspend;

    let task = current_task()?;
    let ts = timeout.map(timespec);
    let id = with_carrier(|c| {
        let c = c?;
        let mut driver = c.driver.borrow_mut();
        let d = driver.as_mut()?;
        if let Err(e) = d.require(sqe.opcode, name) {
            return Some(Err(e));
        }
        Some(Ok(d.submit(sqe, ts.as_ref(), OpWaiter::Green(task))))
    })?;
    let id = match id {
        Ok(id) => id,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: `task` is the running green thread. Only this op's completion
    // resumes it (see OpWaiter::Green), so `ts` and the caller's buffers
    // outlive the kernel's use of them.
    unsafe { suspend(task, Suspend::Park) };
    let (res, _flags) = with_carrier(|c| {
        c.expect("a green thread resumes on its carrier")
            .driver
            .borrow_mut()
            .as_mut()
            .expect("the driver outlives its green threads")
            .take(id)
            .expect("a green thread waiting on an op is resumed by its completion")
    });
    Some(to_result(res, timeout.is_some()))
}

/// Whether the calling thread's carrier ring supports `opcode` (false when
/// not on a ring). Front ends use it to fall back to the plain syscall on
/// kernels that lack an opcode.
pub(crate) fn ring_supports(opcode: u8) -> bool {
    use crate::runtime::carrier::with_carrier;
    with_carrier(|c| {
        c.is_some_and(|c| {
            c.driver
                .borrow()
                .as_ref()
                .is_some_and(|d| d.ring.supports(opcode))
        })
    })
}

/// Whether the calling thread is a green thread whose carrier has a kernel
/// ring (where [`green_op`] applies).
pub(crate) fn on_ring() -> bool {
    use crate::runtime::carrier::{current_task, with_carrier};
    current_task().is_some() && with_carrier(|c| c.is_some_and(|c| c.driver.borrow().is_some()))
}

/// One operation as a future, on the ring of the carrier that polls it.
///
/// It owns `keep` (the buffers the entry points into, heap-allocated so
/// their addresses survive moves of the future) until the completion. If
/// the future is dropped first, the op is cancelled and `keep` is handed to
/// the driver, which frees it only when the completion arrives.
pub(crate) struct OpFuture<K: 'static> {
    sqe: Sqe,
    name: &'static str,
    keep: Option<K>,
    timeout: Option<Box<rustix::io_uring::Timespec>>,
    /// Op id and the carrier whose driver holds it.
    submitted: Option<(usize, *const crate::runtime::carrier::CarrierShared)>,
}

// SAFETY: the raw carrier pointer is only compared, never dereferenced, and
// the entry's pointers point into `keep`, which moves with the future.
unsafe impl<K: Send + 'static> Send for OpFuture<K> {}

impl<K: 'static> OpFuture<K> {
    /// An op future for `sqe`, whose pointers point into `keep`'s heap
    /// memory.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must point into memory owned by `keep` that
    /// does not move when `keep` moves (a Vec's or Box's heap buffer).
    pub(crate) unsafe fn new(
        sqe: Sqe,
        keep: K,
        timeout: Option<Duration>,
        name: &'static str,
    ) -> Self {
        OpFuture {
            sqe,
            name,
            keep: Some(keep),
            timeout: timeout.map(|d| Box::new(timespec(d))),
            submitted: None,
        }
    }
}

impl<K: 'static> std::future::Future for OpFuture<K> {
    type Output = (io::Result<u32>, K);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use crate::runtime::carrier::with_carrier;
        use std::task::Poll;
        // SAFETY: nothing in an OpFuture is structurally pinned: the kernel
        // sees only heap memory owned by `keep`, which may move with it.
        let this = unsafe { self.get_unchecked_mut() };
        let had_timeout = this.timeout.is_some();
        with_carrier(|c| {
            let c = c.expect("green I/O futures must be polled on a green runtime carrier (green::spawn_async or green::block_on)");
            let mut driver = c.driver.borrow_mut();
            let Some(d) = driver.as_mut() else {
                return Poll::Ready((
                    Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "green async I/O needs the io_uring backend",
                    )),
                    this.keep.take().expect("polled after completion"),
                ));
            };
            let me = &*c.shared as *const _;
            match this.submitted {
                None => {
                    if let Err(e) = d.require(this.sqe.opcode, this.name) {
                        return Poll::Ready((
                            Err(e),
                            this.keep.take().expect("polled after completion"),
                        ));
                    }
                    let id = d.submit(
                        this.sqe,
                        this.timeout.as_deref(),
                        OpWaiter::Waker(Some(cx.waker().clone())),
                    );
                    this.submitted = Some((id, me));
                    Poll::Pending
                }
                Some((id, carrier)) => {
                    assert!(
                        std::ptr::eq(carrier, me),
                        "a green I/O future must stay on the carrier that first polled it"
                    );
                    match d.poll_op(id, cx.waker()) {
                        Some((res, _)) => {
                            this.submitted = None;
                            Poll::Ready((
                                to_result(res, had_timeout),
                                this.keep.take().expect("polled after completion"),
                            ))
                        }
                        None => Poll::Pending,
                    }
                }
            }
        })
    }
}

impl<K: 'static> Drop for OpFuture<K> {
    fn drop(&mut self) {
        let Some((id, carrier)) = self.submitted.take() else {
            return;
        };
        let keep = (self.keep.take(), self.timeout.take());
        let handed = crate::runtime::carrier::with_carrier(|c| match c {
            Some(c) if std::ptr::eq(&*c.shared, carrier) => match c.driver.borrow_mut().as_mut() {
                Some(d) => {
                    d.orphan(id, Box::new(keep));
                    None
                }
                None => Some(keep),
            },
            _ => Some(keep),
        });
        // Dropped away from its carrier: the driver cannot be reached from
        // here, so the buffers are leaked rather than freed under the kernel.
        if let Some(keep) = handed {
            std::mem::forget(keep);
        }
    }
}
