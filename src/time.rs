//! Time: sleeping on green threads and in async tasks, on the carrier's
//! timers.
//!
//! [`sleep`] blocks (only the green thread, when called on one); [`sleep_async`]
//! is the same wait as a future, for async tasks on the same carriers.

use std::future::Future;
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
