//! Barriers: [`Barrier`], where a fixed number of threads meet.
//!
//! The count and the waiters share one short lock; the last arrival of a
//! generation (its leader) resets the count and wakes the whole generation
//! at once, so the barrier is ready for reuse the moment the leader leaves.

use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};

use parking_lot::Mutex;

use super::wait_queue::{wait, Wait, WaitList};

/// A point where `n` threads (green or OS, in any mix) wait for each other.
///
/// ```
/// use green::sync::{Arc, Barrier};
///
/// let barrier = Arc::new(Barrier::new(10));
/// let handles: Vec<_> = (0..10)
///     .map(|_| {
///         let barrier = barrier.clone();
///         green::spawn(move || barrier.wait().is_leader())
///     })
///     .collect();
/// let leaders = handles
///     .into_iter()
///     .map(|h| h.join().unwrap())
///     .filter(|&leader| leader)
///     .count();
/// assert_eq!(leaders, 1);
/// ```
pub struct Barrier {
    state: Mutex<State>,
    n: usize,
}

struct State {
    /// Arrivals in the current generation: `0 .. n`.
    count: usize,
    /// Waiters of the current generation.
    waiters: WaitList,
}

/// What [`Barrier::wait`] returns: whether the caller led its generation.
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// True for exactly one thread of each generation: the last to arrive.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl Barrier {
    /// A barrier for `n` threads (0 behaves like 1).
    #[must_use]
    pub const fn new(n: usize) -> Barrier {
        Barrier {
            state: Mutex::new(State {
                count: 0,
                waiters: WaitList::new(),
            }),
            n,
        }
    }

    /// Blocks (only the green thread, on a green thread) until `n` threads
    /// have called `wait` in this generation.
    pub fn wait(&self) -> BarrierWaitResult {
        let mut state = self.state.lock();
        state.count += 1;
        if state.count < self.n {
            // Only the leader notifies, and it takes the whole generation:
            // a notification means our generation is complete.
            match wait(
                state,
                |s| &mut s.waiters,
                || self.state.lock(),
                0,
                None,
                || {},
            ) {
                Wait::Notified(_) => BarrierWaitResult(false),
                Wait::TimedOut(_) => unreachable!("a barrier waits without a deadline"),
            }
        } else {
            state.count = 0;
            let wakes = state.waiters.take_all();
            drop(state);
            drop(wakes);
            BarrierWaitResult(true)
        }
    }
}

impl UnwindSafe for Barrier {}
impl RefUnwindSafe for Barrier {}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier").finish_non_exhaustive()
    }
}

impl fmt::Debug for BarrierWaitResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierWaitResult")
            .field("is_leader", &self.is_leader())
            .finish()
    }
}
