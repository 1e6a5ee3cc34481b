//! Poisoning, as std does it: a lock whose guard is dropped while its thread
//! panics is marked, and later lockers get a [`PoisonError`] that still
//! carries the guard.
//!
//! Owns only the flag and the rule for setting it; the locks decide when to
//! consult it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LockResult, PoisonError};
use std::thread;

/// The poison mark of one lock.
pub(crate) struct Flag {
    failed: AtomicBool,
}

// All accesses are Relaxed: the flag is advice about the data, not a way to
// reach it. The data itself is published by the lock's own Release/Acquire,
// and the flag is only written and read while that lock is held (or through
// `&mut`/by value), so the lock orders it too.
impl Flag {
    pub(crate) const fn new() -> Flag {
        Flag {
            failed: AtomicBool::new(false),
        }
    }

    /// Records whether the new holder is already panicking, and reports the
    /// current mark.
    pub(crate) fn guard(&self) -> LockResult<Guard> {
        let guard = Guard {
            panicking: thread::panicking(),
        };
        result(self.get(), guard)
    }

    /// Marks the lock if its holder started panicking while holding it.
    pub(crate) fn done(&self, guard: &Guard) {
        if !guard.panicking && thread::panicking() {
            self.failed.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        self.failed.store(false, Ordering::Relaxed);
    }
}

/// Whether a lock's holder was already panicking when it took the lock (a
/// guard taken during unwinding does not poison).
pub(crate) struct Guard {
    panicking: bool,
}

/// Maps the value inside a `LockResult`, keeping its poison.
/// `value` as std reports it: `Err(PoisonError)` around it when
/// `poisoned`, else `Ok`.
pub(crate) fn result<T>(poisoned: bool, value: T) -> LockResult<T> {
    if poisoned {
        Err(PoisonError::new(value))
    } else {
        Ok(value)
    }
}

pub(crate) fn map_result<T, U>(result: LockResult<T>, f: impl FnOnce(T) -> U) -> LockResult<U> {
    match result {
        Ok(t) => Ok(f(t)),
        Err(e) => Err(PoisonError::new(f(e.into_inner()))),
    }
}
