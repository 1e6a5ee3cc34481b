//! Mutual exclusion: [`Mutex`], its guard, and the raw lock under both the
//! mutex and [`Condvar`](super::Condvar).
//!
//! The raw lock is one byte plus a [`WaitQueue`]:
//!
//! ```text
//!   state: u8   bit 0 LOCKED   someone holds the lock
//!               bit 1 PARKED   the queue may hold waiters (set and cleared
//!                              only with the queue lock held, except that a
//!                              would-be waiter sets it just before queueing)
//! ```
//!
//! Uncontended, `lock` is one CAS (0 -> LOCKED) and `unlock` one CAS
//! (LOCKED -> 0): no allocation, no queue lock. Contended, a locker spins a
//! few rounds, then sets PARKED and parks its green thread (or OS thread) on
//! the queue; an unlocker that finds PARKED wakes the oldest waiter. Woken
//! waiters compete with newcomers (throughput), except that at least every
//! 0.5 ms an unlock hands the lock straight to the oldest waiter, so no
//! waiter starves. It never blocks a carrier while waiting.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{LockResult, TryLockError, TryLockResult};

use super::poison;
use super::wait_queue::{Park, WaitQueue};

const LOCKED: u8 = 1;
const PARKED: u8 = 2;

/// Token of a wake-up that hands the lock over: the waiter owns it.
const HANDOFF: usize = 1;

/// Spin rounds before parking; round `r` spins `2 << r` times.
const SPIN_ROUNDS: u32 = 4;

pub(crate) fn spin(round: u32) {
    for _ in 0..(2u32 << round) {
        std::hint::spin_loop();
    }
}

/// The lock without data or poisoning.
pub(crate) struct RawMutex {
    state: AtomicU8,
    queue: WaitQueue,
}

impl RawMutex {
    pub(crate) const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU8::new(0),
            queue: WaitQueue::new(),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) {
        // Acquire: pairs with the Release of the previous unlock, so its
        // critical section is visible to ours.
        if self
            .state
            .compare_exchange_weak(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        // Relaxed loads: only a hint for the CAS, which does the Acquire.
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & LOCKED != 0 {
                return false;
            }
            // Acquire: as in `lock`.
            match self.state.compare_exchange_weak(
                s,
                s | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    ///
    /// The caller holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // Release: publishes our critical section to the next locker's
        // Acquire.
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    #[cold]
    fn lock_slow(&self) {
        let mut round = 0;
        // Relaxed loads throughout: they pick the next CAS; the CAS that
        // takes the lock is Acquire, and the PARKED protocol is ordered by
        // the queue lock.
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & LOCKED == 0 {
                // Acquire: as in `lock`.
                match self.state.compare_exchange_weak(
                    s,
                    s | LOCKED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(now) => s = now,
                }
                continue;
            }
            // Nobody queued yet: the holder may be about to leave.
            if s & PARKED == 0 && round < SPIN_ROUNDS {
                spin(round);
                round += 1;
                s = self.state.load(Ordering::Relaxed);
                continue;
            }
            if s & PARKED == 0 {
                if let Err(now) = self.state.compare_exchange_weak(
                    s,
                    s | PARKED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    s = now;
                    continue;
                }
            }
            // Under the queue lock: still held with PARKED set, so the
            // holder's unlock will come through the queue and find us.
            let validate = || self.state.load(Ordering::Relaxed) == LOCKED | PARKED;
            if let Park::Unparked(HANDOFF) = self.queue.park(0, validate, || {}, None) {
                // The unlocker left LOCKED set for us; its Release store to
                // the waiter flag (Acquire in the queue) ordered its section
                // before ours.
                return;
            }
            round = 0;
            s = self.state.load(Ordering::Relaxed);
        }
    }

    #[cold]
    fn unlock_slow(&self) {
        // State is LOCKED | PARKED and only we may clear LOCKED; others only
        // CAS when LOCKED is clear, and PARKED changes under the queue lock,
        // which the callback holds. So plain stores are safe here.
        self.queue.unpark_one(|r| {
            if r.unparked && r.be_fair {
                if !r.have_more {
                    // Relaxed: the waiter learns of the handoff through the
                    // queue's Release/Acquire, not through this word.
                    self.state.store(LOCKED, Ordering::Relaxed);
                }
                return HANDOFF;
            }
            let new = if r.have_more { PARKED } else { 0 };
            // Release: publishes our critical section to the next locker.
            self.state.store(new, Ordering::Release);
            0
        });
    }
}

/// A mutual exclusion lock with std's API whose waiting blocks only the
/// calling green thread.
///
/// Works between green threads on any carriers and plain OS threads in any
/// mix. Poisoning is as in std: a guard dropped while its thread panics
/// marks the mutex, and later `lock`s return `Err` with the guard inside.
///
/// ```
/// use green::sync::{Arc, Mutex};
///
/// let counter = Arc::new(Mutex::new(0));
/// let handles: Vec<_> = (0..100)
///     .map(|_| {
///         let counter = counter.clone();
///         green::spawn(move || *counter.lock().unwrap() += 1)
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(*counter.lock().unwrap(), 100);
/// ```
pub struct Mutex<T: ?Sized> {
    pub(super) raw: RawMutex,
    pub(super) poison: poison::Flag,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex owns a T and hands it to one thread at a time, so moving
// it or sharing it across threads needs exactly T: Send, as for std's Mutex.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above: `&Mutex<T>` only ever gives exclusive access to T.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T: ?Sized> UnwindSafe for Mutex<T> {}
impl<T: ?Sized> RefUnwindSafe for Mutex<T> {}

/// Access to a locked [`Mutex`]'s data; unlocks when dropped.
///
/// Like std's, it cannot move to another thread:
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: T) {}
/// let m = green::sync::Mutex::new(0);
/// assert_send(m.lock().unwrap());
/// ```
#[must_use = "if unused the Mutex will immediately unlock"]
#[clippy::has_significant_drop]
pub struct MutexGuard<'a, T: ?Sized + 'a> {
    pub(super) lock: &'a Mutex<T>,
    poison: poison::Guard,
    /// std's guard is !Send; so is ours (it must unlock where it locked).
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a `&MutexGuard` only gives `&T`, so sharing the guard needs T: Sync.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// Creates an unlocked mutex.
    pub const fn new(t: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            poison: poison::Flag::new(),
            data: UnsafeCell::new(t),
        }
    }

    /// Consumes the mutex and returns its data (`Err` if poisoned, with the
    /// data inside).
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.poison.get();
        let data = self.data.into_inner();
        poison::result(poisoned, data)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, blocking the calling thread (only the green thread,
    /// on a green thread) until it is free.
    ///
    /// Returns `Err` with the guard inside if the mutex is poisoned.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.raw.lock();
        // SAFETY: we just locked it.
        unsafe { MutexGuard::new(self) }
    }

    /// Locks the mutex if it is free.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        if self.raw.try_lock() {
            // SAFETY: we just locked it.
            Ok(unsafe { MutexGuard::new(self) }?)
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    /// Whether a holder panicked.
    pub fn is_poisoned(&self) -> bool {
        self.poison.get()
    }

    /// Clears the poison mark.
    pub fn clear_poison(&self) {
        self.poison.clear();
    }

    /// The data, through `&mut` (no locking needed). `Err` if poisoned.
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        let poisoned = self.poison.get();
        let data = self.data.get_mut();
        poison::result(poisoned, data)
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(t: T) -> Mutex<T> {
        Mutex::new(t)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Ok(guard) => d.field("data", &&*guard),
            Err(TryLockError::Poisoned(err)) => d.field("data", &&**err.get_ref()),
            Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
        };
        d.field("poisoned", &self.poison.get());
        d.finish_non_exhaustive()
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// # Safety
    ///
    /// The caller holds `lock.raw`.
    unsafe fn new(lock: &'a Mutex<T>) -> LockResult<MutexGuard<'a, T>> {
        poison::map_result(lock.poison.guard(), |poison| MutexGuard {
            lock,
            poison,
            _not_send: PhantomData,
        })
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no one else touches the data.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.poison.done(&self.poison);
        // SAFETY: the guard holds the lock.
        unsafe { self.lock.raw.unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
