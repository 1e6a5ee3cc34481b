//! Write-once cells: [`OnceLock`], a value slot guarded by a [`Once`].
//!
//! The value is written only inside the `Once`'s closure and read only once
//! the `Once` reports completion (Acquire), so the `Once` is the whole
//! synchronisation story. Racing initialisers run one closure; the others
//! park (only their green threads) until it finishes. A panicking closure
//! leaves the cell empty and the next caller tries again.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{RefUnwindSafe, UnwindSafe};

use super::once::Once;

/// A cell written at most once, with std's API; waiting for a running
/// initialiser blocks only the calling green thread.
///
/// ```
/// use green::sync::OnceLock;
///
/// static CONFIG: OnceLock<String> = OnceLock::new();
/// let h = green::spawn(|| CONFIG.get_or_init(|| "from a green thread".to_owned()).len());
/// assert_eq!(h.join().unwrap(), 19);
/// assert_eq!(CONFIG.get().map(String::as_str), Some("from a green thread"));
/// ```
pub struct OnceLock<T> {
    once: Once,
    value: UnsafeCell<MaybeUninit<T>>,
    /// Owns a T (for drop check), as std's does.
    _marker: PhantomData<T>,
}

// SAFETY: `&OnceLock<T>` hands out `&T` (T: Sync) and lets one thread
// store a T that another thread may drop or take later (T: Send).
unsafe impl<T: Sync + Send> Sync for OnceLock<T> {}
// SAFETY: moving the cell moves the T.
unsafe impl<T: Send> Send for OnceLock<T> {}

impl<T: RefUnwindSafe + UnwindSafe> RefUnwindSafe for OnceLock<T> {}
impl<T: UnwindSafe> UnwindSafe for OnceLock<T> {}

impl<T> OnceLock<T> {
    /// An empty cell.
    #[must_use]
    pub const fn new() -> OnceLock<T> {
        OnceLock {
            once: Once::new(),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            _marker: PhantomData,
        }
    }

    /// The value, if the cell is initialised. Never blocks.
    pub fn get(&self) -> Option<&T> {
        if self.once.is_completed() {
            // SAFETY: completed (observed with Acquire) means initialised.
            Some(unsafe { self.get_unchecked() })
        } else {
            None
        }
    }

    /// The value through `&mut`, if initialised.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if self.once.is_completed() {
            // SAFETY: completed means initialised; `&mut self` is exclusive.
            Some(unsafe { (*self.value.get()).assume_init_mut() })
        } else {
            None
        }
    }

    /// Blocks until the cell is initialised, then returns the value.
    pub fn wait(&self) -> &T {
        self.once.wait_force();
        // SAFETY: `wait_force` returns once the Once completed.
        unsafe { self.get_unchecked() }
    }

    /// Stores `value` if the cell is empty; otherwise gives it back. Waits
    /// if another thread is initialising the cell.
    pub fn set(&self, value: T) -> Result<(), T> {
        let mut value = Some(value);
        self.get_or_init(|| value.take().expect("initialiser runs at most once"));
        match value {
            None => Ok(()),
            Some(value) => Err(value),
        }
    }

    /// The value, initialising it with `f` if the cell is empty. If several
    /// threads race, one `f` runs and the others wait for it. If `f` panics
    /// the panic propagates and the cell stays empty.
    pub fn get_or_init<F: FnOnce() -> T>(&self, f: F) -> &T {
        if let Some(value) = self.get() {
            return value;
        }
        let slot = &self.value;
        self.once.call_once_force(|_| {
            let value = f();
            // SAFETY: the Once runs this closure alone and at most once to
            // completion; no reader looks at the slot before completion.
            unsafe { (*slot.get()).write(value) };
        });
        // SAFETY: `call_once_force` returns only once the Once completed.
        unsafe { self.get_unchecked() }
    }

    /// The value, if initialised, leaving nothing behind.
    pub fn into_inner(mut self) -> Option<T> {
        self.take()
    }

    /// Takes the value out, leaving the cell empty.
    pub fn take(&mut self) -> Option<T> {
        if self.once.is_completed() {
            self.once = Once::new();
            // SAFETY: the Once had completed, so the slot holds a value; the
            // fresh Once makes sure nothing reads or drops it again.
            Some(unsafe { (*self.value.get()).assume_init_read() })
        } else {
            None
        }
    }

    /// # Safety
    ///
    /// The Once has completed (observed with Acquire).
    unsafe fn get_unchecked(&self) -> &T {
        // SAFETY: per the contract the slot was written, and it is never
        // written again while `&self` lives.
        unsafe { (*self.value.get()).assume_init_ref() }
    }
}

impl<T> Default for OnceLock<T> {
    fn default() -> OnceLock<T> {
        OnceLock::new()
    }
}

impl<T> From<T> for OnceLock<T> {
    fn from(value: T) -> OnceLock<T> {
        let cell = OnceLock::new();
        if cell.set(value).is_err() {
            unreachable!("a new OnceLock is empty");
        }
        cell
    }
}

impl<T: Clone> Clone for OnceLock<T> {
    fn clone(&self) -> OnceLock<T> {
        let cell = OnceLock::new();
        if let Some(value) = self.get() {
            if cell.set(value.clone()).is_err() {
                unreachable!("a new OnceLock is empty");
            }
        }
        cell
    }
}

impl<T: PartialEq> PartialEq for OnceLock<T> {
    fn eq(&self, other: &OnceLock<T>) -> bool {
        self.get() == other.get()
    }
}

impl<T: Eq> Eq for OnceLock<T> {}

impl<T: fmt::Debug> fmt::Debug for OnceLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("OnceLock");
        match self.get() {
            Some(v) => d.field(v),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}

impl<T> Drop for OnceLock<T> {
    fn drop(&mut self) {
        if self.once.is_completed() {
            // SAFETY: completed means initialised, and this is the last use.
            unsafe { (*self.value.get()).assume_init_drop() };
        }
    }
}
