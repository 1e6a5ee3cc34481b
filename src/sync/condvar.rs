//! Condition variables: [`Condvar`], used with [`Mutex`](super::Mutex).
//!
//! A condvar is a [`WaitQueue`] and nothing else. `wait` queues the caller
//! *before* it unlocks the mutex (in the queue's `before_sleep`), so a
//! notify made by anyone who took the mutex after us finds us queued: no
//! wake-up is lost. Notifying with nobody waiting costs one atomic load.
//! A waiter whose timeout races with a `notify_one` either took that
//! notification (and reports it as such) or was unlinked before the
//! notifier looked, so the notification goes to someone else.

use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::time::{Duration, Instant};

use std::sync::LockResult;

use super::poison;

use super::mutex::MutexGuard;
use super::wait_queue::{Park, WaitQueue};

/// Whether a timed wait on a [`Condvar`] timed out.
#[derive(Debug, PartialEq, Eq, Copy, Clone)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the time ran out.
    #[must_use]
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

/// A condition variable with std's API whose waiting blocks only the calling
/// green thread.
///
/// ```
/// use green::sync::{Arc, Condvar, Mutex};
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let pair2 = pair.clone();
/// green::spawn(move || {
///     *pair2.0.lock().unwrap() = true;
///     pair2.1.notify_one();
/// });
/// let (lock, cvar) = &*pair;
/// let ready = cvar.wait_while(lock.lock().unwrap(), |ready| !*ready).unwrap();
/// assert!(*ready);
/// ```
pub struct Condvar {
    queue: WaitQueue,
}

impl Condvar {
    /// Creates a condition variable with no waiters.
    #[must_use]
    pub const fn new() -> Condvar {
        Condvar {
            queue: WaitQueue::new(),
        }
    }

    /// Unlocks the guard's mutex, waits for a notification and locks the
    /// mutex again. Spurious wake-ups are possible, as with std.
    ///
    /// Returns `Err` (with the guard) if the mutex is poisoned on return.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let (guard, _) = self.wait_until(guard, None);
        let poisoned = guard.lock.poison.get();
        poison::result(poisoned, guard)
    }

    /// Waits while `condition` holds for the data, re-checking after every
    /// wake-up.
    pub fn wait_while<'a, T, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
    ) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Like [`wait`](Condvar::wait), giving up after about `dur`.
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        // A deadline past the end of time means no deadline.
        let deadline = Instant::now().checked_add(dur);
        let (guard, timed_out) = self.wait_until(guard, deadline);
        let poisoned = guard.lock.poison.get();
        let result = (guard, WaitTimeoutResult(timed_out));
        poison::result(poisoned, result)
    }

    /// Waits while `condition` holds, for at most about `dur` in total.
    pub fn wait_timeout_while<'a, T, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        dur: Duration,
        mut condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        let start = Instant::now();
        loop {
            if !condition(&mut *guard) {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            let timeout = match dur.checked_sub(start.elapsed()) {
                Some(timeout) => timeout,
                None => return Ok((guard, WaitTimeoutResult(true))),
            };
            guard = self.wait_timeout(guard, timeout)?.0;
        }
    }

    /// Wakes one waiter, if any.
    pub fn notify_one(&self) {
        if self.queue.has_waiters() {
            self.queue.unpark_one(|_| 0);
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        if self.queue.has_waiters() {
            self.queue.unpark_all(0);
        }
    }

    /// The wait itself: returns the relocked guard and whether it timed out.
    fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        let raw = &guard.lock.raw;
        let unlock = || {
            // SAFETY: the guard holds `raw`; we relock it below before the
            // guard is used or dropped again.
            unsafe { raw.unlock() }
        };
        let timed_out = match self.queue.park(0, || true, unlock, deadline) {
            Park::Unparked(_) => false,
            Park::TimedOut => true,
            Park::Invalid => unreachable!("a condvar waiter always queues"),
        };
        raw.lock();
        (guard, timed_out)
    }
}

impl UnwindSafe for Condvar {}
impl RefUnwindSafe for Condvar {}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
