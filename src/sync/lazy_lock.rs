//! Lazily initialised values: [`LazyLock`], a [`Once`] over a slot that
//! holds the initialiser until it runs and the value after.
//!
//! ```text
//!   Once state   slot holds
//!   INCOMPLETE   f            (the initialiser, not yet run)
//!   COMPLETE     value
//!   POISONED     nothing      (f was taken out and panicked)
//! ```

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{RefUnwindSafe, UnwindSafe};

use super::once::{ExclusiveState, Once};

union Data<T, F> {
    value: ManuallyDrop<T>,
    f: ManuallyDrop<F>,
}

/// A value initialised on first access, with std's API; waiting for a
/// running initialiser blocks only the calling green thread.
///
/// ```
/// use green::sync::LazyLock;
///
/// static SQUARES: LazyLock<Vec<u64>> = LazyLock::new(|| (0..10).map(|i| i * i).collect());
/// let h = green::spawn(|| SQUARES[3]);
/// assert_eq!(h.join().unwrap(), 9);
/// ```
pub struct LazyLock<T, F = fn() -> T> {
    once: Once,
    data: UnsafeCell<Data<T, F>>,
}

// SAFETY: shared access may run F on any one thread (F: Send) and hands out
// `&T` to all (T: Sync), and the T made on one thread may be dropped on
// another (T: Send), as with std's LazyLock.
unsafe impl<T: Sync + Send, F: Send> Sync for LazyLock<T, F> {}

impl<T: RefUnwindSafe + UnwindSafe, F: UnwindSafe> RefUnwindSafe for LazyLock<T, F> {}

impl<T, F: FnOnce() -> T> LazyLock<T, F> {
    /// A lazy value that `f` will compute on first access.
    pub const fn new(f: F) -> LazyLock<T, F> {
        LazyLock {
            once: Once::new(),
            data: UnsafeCell::new(Data {
                f: ManuallyDrop::new(f),
            }),
        }
    }

    /// Forces evaluation and returns the value.
    ///
    /// # Panics
    ///
    /// If the initialiser panics (now or on an earlier access).
    pub fn force(this: &LazyLock<T, F>) -> &T {
        this.once.call_once(|| {
            // SAFETY: the Once runs this closure alone and at most once; the
            // slot still holds `f` (a run that took it either completed or
            // poisoned the Once, and call_once runs on neither).
            let data = unsafe { &mut *this.data.get() };
            // SAFETY: as above, `f` is the live field.
            let f = unsafe { ManuallyDrop::take(&mut data.f) };
            let value = f();
            data.value = ManuallyDrop::new(value);
        });
        // SAFETY: call_once returned, so the Once completed and `value` is
        // the live field, never written again while `this` lives.
        unsafe { &(*this.data.get()).value }
    }
}

impl<T, F> Drop for LazyLock<T, F> {
    fn drop(&mut self) {
        match self.once.exclusive_state() {
            // SAFETY: INCOMPLETE: the slot holds `f`, dropped only here.
            ExclusiveState::Incomplete => unsafe { ManuallyDrop::drop(&mut self.data.get_mut().f) },
            // SAFETY: COMPLETE: the slot holds the value, dropped only here.
            ExclusiveState::Complete => unsafe {
                ManuallyDrop::drop(&mut self.data.get_mut().value)
            },
            ExclusiveState::Poisoned => {}
        }
    }
}

impl<T, F: FnOnce() -> T> Deref for LazyLock<T, F> {
    type Target = T;

    fn deref(&self) -> &T {
        LazyLock::force(self)
    }
}

impl<T: Default> Default for LazyLock<T> {
    fn default() -> LazyLock<T> {
        LazyLock::new(T::default)
    }
}

impl<T: fmt::Debug, F> fmt::Debug for LazyLock<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("LazyLock");
        if self.once.is_completed() {
            // SAFETY: completed (Acquire) means `value` is the live field.
            d.field(unsafe { &*(*self.data.get()).value });
        } else {
            d.field(&format_args!("<uninit>"));
        }
        d.finish()
    }
}
