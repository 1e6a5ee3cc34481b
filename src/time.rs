//! Time: sleeping on green threads and in async tasks, on the carrier's
//! timers.
//!
//! [`sleep`] blocks (only the green thread, when called on one); [`sleep_async`]
//! is the same wait as a future, for async tasks on the same carriers.
//! [`timeout`] bounds any future by such a wait.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::runtime::carrier::{with_carrier, CarrierShared};
use crate::runtime::timer::{Target, TimerKey};

pub use crate::thread::{sleep, sleep_until};

/// A future that completes at a deadline; see [`sleep_async`].
///
/// It must be polled on a carrier (in an async task, or in [`crate::block_on`]
/// on a green thread).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    /// The timer armed by the last poll, and the carrier that holds it.
    armed: Option<(TimerKey, *const CarrierShared)>,
}

// SAFETY: the raw pointer is used only as an identity to compare against the
// current carrier (never dereferenced), so moving a Sleep between threads
// cannot cause a data race.
unsafe impl Send for Sleep {}
// SAFETY: as for Send: &Sleep gives no access through the pointer.
unsafe impl Sync for Sleep {}

/// Waits for `dur` without blocking the carrier.
pub fn sleep_async(dur: Duration) -> Sleep {
    let deadline = Instant::now()
        .checked_add(dur)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 30));
    sleep_until_async(deadline)
}

/// Waits until `deadline` without blocking the carrier.
pub fn sleep_until_async(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        armed: None,
    }
}

impl Sleep {
    /// The instant this future completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn disarm(&mut self) {
        if let Some((key, carrier)) = self.armed.take() {
            // A timer armed on another carrier cannot be removed from here;
            // when it fires it wakes a stale waker, which is harmless.
            with_carrier(|c| {
                if let Some(c) = c {
                    if std::ptr::eq(&*c.shared, carrier) {
                        c.timers.borrow_mut().remove(key);
                    }
                }
            });
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            this.disarm();
            return Poll::Ready(());
        }
        this.disarm();
        let armed = with_carrier(|c| {
            let c = c.expect("green::time::Sleep must be polled on a green runtime carrier (use green::spawn_async or green::block_on)");
            let key = c
                .timers
                .borrow_mut()
                .insert(this.deadline, Target::Waker(cx.waker().clone()));
            (key, &*c.shared as *const CarrierShared)
        });
        this.armed = Some(armed);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Runs `fut` for at most `dur`: its output, or [`Elapsed`] if `dur`
/// passes first (the future is then dropped when the `Timeout` is). A
/// `dur` too long to count (`Duration::MAX`) waits as long as it takes.
///
/// Like [`Sleep`], it must be polled on a carrier.
///
/// ```no_run
/// # async fn f(client: &green::ipc::Client) -> std::io::Result<()> {
/// use std::time::Duration;
/// // An abandoned call: its response is released when it comes.
/// let reply = green::time::timeout(Duration::from_millis(100), client.call_async(b"ping")).await??;
/// # Ok(()) }
/// ```
pub fn timeout<F: Future>(dur: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep_async(dur),
    }
}

/// Runs `fut` until `deadline` at most; see [`timeout`].
pub fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep_until_async(deadline),
    }
}

/// A future bounded in time; see [`timeout`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Timeout<F> {
    fut: F,
    sleep: Sleep,
}

impl<F> Timeout<F> {
    /// The wrapped future.
    pub fn into_inner(self) -> F {
        self.fut
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of
        // a pinned `Timeout` (`into_inner` takes the `Timeout` by value,
        // which needs it unpinned or `F: Unpin`), `Timeout` has no `Drop`
        // impl, and it is `Unpin` only when `F` is (`Sleep` is `Unpin`).
        // `sleep` is not pinned: it is only ever borrowed through `Pin::new`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.fut` stays where it is.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(out) = fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The error of a [`Timeout`] whose time ran out. Converts to an
/// [`io::Error`] of kind [`io::ErrorKind::TimedOut`] (so `?` works in
/// functions returning `io::Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(e: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}
