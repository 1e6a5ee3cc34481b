//! One-time initialisation: [`Once`] and [`OnceState`].
//!
//! A state byte plus a [`WaitQueue`]. The first caller moves the state from
//! INCOMPLETE (or POISONED) to RUNNING and runs the closure; everyone else
//! parks on the queue, so a closure that blocks (sleeps, locks, does I/O on
//! a green thread) lets its carrier run the other green threads, those
//! waiting on this `Once` included. That is why std's `Once`, which blocks
//! the OS thread, cannot be used on green threads.
//!
//! ```text
//!   INCOMPLETE --call--> RUNNING --returns--> COMPLETE
//!       ^                   |
//!       |                panics
//!       |                   v
//!       +---- (force) -- POISONED
//! ```
//!
//! The final store and the waiters' check are both SeqCst and the waiters
//! count themselves in the queue (SeqCst) before checking, so the finisher
//! either sees a waiter and wakes the queue, or the waiter sees the final
//! state and does not sleep.

use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};

use super::wait_queue::WaitQueue;

const INCOMPLETE: u8 = 0;
const POISONED: u8 = 1;
const RUNNING: u8 = 2;
const COMPLETE: u8 = 3;

/// What a `Once` is doing, as seen through `&mut` (no one else can act).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExclusiveState {
    Incomplete,
    Poisoned,
    Complete,
}

/// Runs a closure exactly once, with std's API; waiting for the running
/// closure blocks only the calling green thread.
///
/// ```
/// use green::sync::Once;
///
/// static INIT: Once = Once::new();
/// let handles: Vec<_> = (0..10)
///     .map(|_| {
///         green::spawn(|| {
///             INIT.call_once(|| green::thread::sleep(std::time::Duration::from_millis(5)));
///             assert!(INIT.is_completed());
///         })
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// ```
pub struct Once {
    state: AtomicU8,
    queue: WaitQueue,
}

/// Passed to the closure of [`Once::call_once_force`].
pub struct OnceState {
    poisoned: bool,
}

impl OnceState {
    /// Whether an earlier closure on this `Once` panicked.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl Once {
    /// A `Once` that has not run.
    #[must_use]
    #[allow(clippy::new_without_default)] // std's Once has no Default either
    pub const fn new() -> Once {
        Once {
            state: AtomicU8::new(INCOMPLETE),
            queue: WaitQueue::new(),
        }
    }

    /// Runs `f` if no call has completed yet; waits if one is running.
    /// When this returns, some closure has run to completion.
    ///
    /// # Panics
    ///
    /// If an earlier closure panicked (the `Once` is poisoned); the panic of
    /// `f` itself propagates and poisons the `Once`.
    pub fn call_once<F: FnOnce()>(&self, f: F) {
        if self.is_completed() {
            return;
        }
        let mut f = Some(f);
        self.call(false, &mut |_| (f.take().expect("called once"))());
    }

    /// Like [`call_once`](Once::call_once), but also runs on a poisoned
    /// `Once`, telling `f` through [`OnceState::is_poisoned`].
    pub fn call_once_force<F: FnOnce(&OnceState)>(&self, f: F) {
        if self.is_completed() {
            return;
        }
        let mut f = Some(f);
        self.call(true, &mut |state| (f.take().expect("called once"))(state));
    }

    /// Whether a closure has run to completion.
    pub fn is_completed(&self) -> bool {
        // Acquire: pairs with the SeqCst (hence Release) store of COMPLETE,
        // so what the closure initialised is visible.
        self.state.load(Ordering::Acquire) == COMPLETE
    }

    /// Blocks until a closure has completed.
    ///
    /// # Panics
    ///
    /// If the `Once` is or becomes poisoned.
    pub fn wait(&self) {
        if !self.is_completed() {
            self.wait_slow(false);
        }
    }

    /// Blocks until a closure has completed, ignoring poisoning: on a
    /// poisoned `Once` it waits for a `call_once_force` to succeed.
    pub fn wait_force(&self) {
        if !self.is_completed() {
            self.wait_slow(true);
        }
    }

    pub(crate) fn exclusive_state(&mut self) -> ExclusiveState {
        match *self.state.get_mut() {
            INCOMPLETE => ExclusiveState::Incomplete,
            POISONED => ExclusiveState::Poisoned,
            COMPLETE => ExclusiveState::Complete,
            _ => unreachable!("a Once is never left RUNNING"),
        }
    }

    #[cold]
    fn call(&self, ignore_poison: bool, f: &mut dyn FnMut(&OnceState)) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            match s {
                COMPLETE => return,
                POISONED if !ignore_poison => poisoned(),
                INCOMPLETE | POISONED => {
                    // Acquire: a previous (poisoned) run's writes are seen.
                    if let Err(now) = self.state.compare_exchange_weak(
                        s,
                        RUNNING,
                        Ordering::Acquire,
                        Ordering::Acquire,
                    ) {
                        s = now;
                        continue;
                    }
                    let finish = Finish { once: self };
                    f(&OnceState {
                        poisoned: s == POISONED,
                    });
                    finish.done(COMPLETE);
                    return;
                }
                _ => {
                    let validate = || self.state.load(Ordering::SeqCst) == RUNNING;
                    self.queue.park(0, validate, || {}, None);
                    // Acquire: as in `is_completed`.
                    s = self.state.load(Ordering::Acquire);
                }
            }
        }
    }

    #[cold]
    fn wait_slow(&self, ignore_poison: bool) {
        loop {
            // Acquire: as in `is_completed`.
            match self.state.load(Ordering::Acquire) {
                COMPLETE => return,
                POISONED if !ignore_poison => poisoned(),
                _ => {}
            }
            let validate = || match self.state.load(Ordering::SeqCst) {
                COMPLETE => false,
                POISONED => ignore_poison,
                _ => true,
            };
            self.queue.park(0, validate, || {}, None);
        }
    }
}

#[cold]
fn poisoned() -> ! {
    panic!("Once instance has previously been poisoned");
}

/// Ends a run: COMPLETE when `done` is called, POISONED if the closure
/// unwinds. Either way the waiters are woken.
struct Finish<'a> {
    once: &'a Once,
}

impl Finish<'_> {
    fn done(self, state: u8) {
        self.finish(state);
        std::mem::forget(self);
    }

    fn finish(&self, state: u8) {
        // SeqCst: see the module docs (and it releases the closure's writes
        // to `is_completed`'s Acquire).
        self.once.state.store(state, Ordering::SeqCst);
        if self.once.queue.has_waiters() {
            self.once.queue.unpark_all(0);
        }
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.finish(POISONED);
    }
}

impl UnwindSafe for Once {}
impl RefUnwindSafe for Once {}

impl fmt::Debug for Once {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Once").finish_non_exhaustive()
    }
}

impl fmt::Debug for OnceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnceState")
            .field("poisoned", &self.poisoned)
            .finish()
    }
}
