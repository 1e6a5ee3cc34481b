//! Reader-writer locks: [`RwLock`] and its guards.
//!
//! One word of state plus a [`WaitQueue`] whose waiters are tagged reader or
//! writer:
//!
//! ```text
//!   state: usize   bit 0       WRITER   a writer holds the lock
//!                  bit 1       PARKED   the queue may hold waiters
//!                  bits 2..    readers  number of readers holding it
//! ```
//!
//! Uncontended, a read lock or unlock is one CAS on the count and a write
//! lock or unlock one CAS on WRITER. Once anyone waits (PARKED), newcomers
//! queue too, readers included, so a stream of readers cannot starve a
//! writer. The last holder out hands the lock over under the queue lock: to
//! the oldest waiter if it is a writer, else to the whole run of readers at
//! the front of the queue, in FIFO phases. Hence, while PARKED is set the
//! lock is always held, and the handover never races with a newcomer.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LockResult, TryLockError, TryLockResult};

use super::mutex::spin;
use super::poison;
use super::wait_queue::{Park, WaitQueue, Wakes};

const WRITER: usize = 1;
const PARKED: usize = 2;
const ONE_READER: usize = 4;

/// Waiter tags.
const READ: usize = 0;
const WRITE: usize = 1;

/// Token of a wake-up that hands the lock over.
const HANDOFF: usize = 1;

const SPIN_ROUNDS: u32 = 4;

struct RawRwLock {
    state: AtomicUsize,
    queue: WaitQueue,
}

fn add_reader(s: usize) -> usize {
    s.checked_add(ONE_READER)
        .expect("too many concurrent read locks on an RwLock")
}

impl RawRwLock {
    const fn new() -> RawRwLock {
        RawRwLock {
            state: AtomicUsize::new(0),
            queue: WaitQueue::new(),
        }
    }

    fn read(&self) {
        // Relaxed load: a hint for the CAS. Acquire CAS: pairs with the
        // Release of the last write unlock.
        let s = self.state.load(Ordering::Relaxed);
        if s & (WRITER | PARKED) != 0
            || self
                .state
                .compare_exchange_weak(s, add_reader(s), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            self.read_slow();
        }
    }

    fn try_read(&self) -> bool {
        // Relaxed load: a hint for the CAS, which does the Acquire.
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (WRITER | PARKED) != 0 {
                return false;
            }
            // Acquire: as in `read`.
            match self.state.compare_exchange_weak(
                s,
                add_reader(s),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    fn write(&self) {
        // Acquire: pairs with the Release of the previous unlock (read or
        // write), so those sections are visible (and finished) before ours.
        if self
            .state
            .compare_exchange_weak(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.write_slow();
        }
    }

    fn try_write(&self) -> bool {
        // Acquire: as in `write`.
        self.state
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// # Safety
    ///
    /// The caller holds a read lock.
    unsafe fn read_unlock(&self) {
        // Relaxed load: a hint for the CAS.
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s == ONE_READER | PARKED {
                // Last reader out with waiters: hand over.
                self.release_slow();
                return;
            }
            // Release: our reads happen before a later writer's writes.
            match self.state.compare_exchange_weak(
                s,
                s - ONE_READER,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }

    /// # Safety
    ///
    /// The caller holds the write lock.
    unsafe fn write_unlock(&self) {
        // Release: publishes our writes to the next locker.
        if self
            .state
            .compare_exchange(WRITER, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.release_slow();
        }
    }

    #[cold]
    fn read_slow(&self) {
        // A reader may enter while no writer holds the lock and none waits.
        self.lock_slow(READ, |s| s & (WRITER | PARKED) == 0, add_reader);
    }

    #[cold]
    fn write_slow(&self) {
        // A writer needs the lock entirely free.
        self.lock_slow(WRITE, |s| s & !PARKED == 0, |s| s | WRITER);
    }

    /// Spins, then parks as a `kind` waiter, until `free(state)` holds and
    /// the state can be moved to `take(state)`.
    fn lock_slow(&self, kind: usize, free: impl Fn(usize) -> bool, take: impl Fn(usize) -> usize) {
        let mut round = 0;
        // Relaxed loads: hints for the CASes (see `lock_slow` in mutex.rs).
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if free(s) {
                // Acquire: as in `read` / `write`.
                match self.state.compare_exchange_weak(
                    s,
                    take(s),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(now) => s = now,
                }
                continue;
            }
            if s & PARKED == 0 && round < SPIN_ROUNDS {
                spin(round);
                round += 1;
                s = self.state.load(Ordering::Relaxed);
                continue;
            }
            if !self.park(s, kind) {
                return;
            }
            round = 0;
            s = self.state.load(Ordering::Relaxed);
        }
    }

    /// Sets PARKED and parks as `tag`. Returns false if the lock was handed
    /// to us (we hold it now), true to retry.
    fn park(&self, s: usize, tag: usize) -> bool {
        if s & PARKED == 0
            && self
                .state
                .compare_exchange(s, s | PARKED, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return true;
        }
        // Under the queue lock: still held with PARKED set, so the last
        // holder's release will come through the queue and find us.
        let validate = || {
            let s = self.state.load(Ordering::Relaxed);
            s & PARKED != 0 && s != PARKED
        };
        // A handoff's ordering comes from the queue's Release/Acquire.
        !matches!(
            self.queue.park(tag, validate, || {}, None),
            Park::Unparked(HANDOFF)
        )
    }

    /// Releases the last hold (the write lock, or the only read lock) while
    /// PARKED is set, handing the lock to the front of the queue.
    #[cold]
    fn release_slow(&self) {
        // Under the queue lock the state is frozen: we are the only holder,
        // newcomers see PARKED and queue (which needs this lock), and nobody
        // else clears PARKED. So plain stores are enough.
        self.queue.unpark_with(|list| {
            let (wakes, held) = match list.front_tag() {
                None => (Wakes::none(), 0),
                Some(WRITE) => (list.take_front(1, |_| true), WRITER),
                Some(_) => {
                    let readers = list.take_front(usize::MAX, |tag| tag == READ);
                    let held = readers.len() * ONE_READER;
                    (readers, held)
                }
            };
            let parked = if list.is_empty() { 0 } else { PARKED };
            // Release: publishes our section to later holders (the woken
            // ones also get it through the queue's Release/Acquire).
            self.state.store(held | parked, Ordering::Release);
            wakes.with_token(HANDOFF)
        });
    }
}

/// A reader-writer lock with std's API whose waiting blocks only the
/// calling green thread.
///
/// Any number of readers or one writer hold it at a time. Once a writer
/// waits, new readers queue behind it. Only a writer that panics poisons
/// the lock, as with std.
///
/// ```
/// use green::sync::RwLock;
///
/// let lock = RwLock::new(5);
/// {
///     let (r1, r2) = (lock.read().unwrap(), lock.read().unwrap());
///     assert_eq!(*r1 + *r2, 10);
/// }
/// *lock.write().unwrap() += 1;
/// assert_eq!(*lock.read().unwrap(), 6);
/// ```
pub struct RwLock<T: ?Sized> {
    raw: RawRwLock,
    poison: poison::Flag,
    data: UnsafeCell<T>,
}

// SAFETY: the lock owns a T; moving it moves the T.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: shared access hands out `&T` to many threads at once (T: Sync)
// and `&mut T` to one at a time (T: Send), as with std's RwLock.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T: ?Sized> UnwindSafe for RwLock<T> {}
impl<T: ?Sized> RefUnwindSafe for RwLock<T> {}

/// Shared access to a read-locked [`RwLock`]; unlocks when dropped.
#[must_use = "if unused the RwLock will immediately unlock"]
#[clippy::has_significant_drop]
pub struct RwLockReadGuard<'a, T: ?Sized + 'a> {
    lock: &'a RwLock<T>,
    /// std's guard is !Send; so is ours.
    _not_send: PhantomData<*const ()>,
}

// SAFETY: the guard only gives `&T`; sharing it needs T: Sync.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

/// Exclusive access to a write-locked [`RwLock`]; unlocks when dropped.
#[must_use = "if unused the RwLock will immediately unlock"]
#[clippy::has_significant_drop]
pub struct RwLockWriteGuard<'a, T: ?Sized + 'a> {
    lock: &'a RwLock<T>,
    poison: poison::Guard,
    /// std's guard is !Send; so is ours.
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a `&RwLockWriteGuard` only gives `&T`; sharing it needs T: Sync.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T> RwLock<T> {
    /// Creates an unlocked lock.
    pub const fn new(t: T) -> RwLock<T> {
        RwLock {
            raw: RawRwLock::new(),
            poison: poison::Flag::new(),
            data: UnsafeCell::new(t),
        }
    }

    /// Consumes the lock and returns its data (`Err` if poisoned, with the
    /// data inside).
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.poison.get();
        let data = self.data.into_inner();
        poison::result(poisoned, data)
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, blocking (only the green thread, on a green
    /// thread) while a writer holds or waits for the lock.
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        self.raw.read();
        // SAFETY: we hold a read lock.
        unsafe { RwLockReadGuard::new(self) }
    }

    /// Locks for reading if no writer holds or waits for the lock.
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        if self.raw.try_read() {
            // SAFETY: we hold a read lock.
            Ok(unsafe { RwLockReadGuard::new(self) }?)
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    /// Locks for writing, blocking until no one else holds the lock.
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        self.raw.write();
        // SAFETY: we hold the write lock.
        unsafe { RwLockWriteGuard::new(self) }
    }

    /// Locks for writing if the lock is free.
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        if self.raw.try_write() {
            // SAFETY: we hold the write lock.
            Ok(unsafe { RwLockWriteGuard::new(self) }?)
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    /// Whether a writer panicked while holding the lock.
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

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(t: T) -> RwLock<T> {
        RwLock::new(t)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Ok(guard) => d.field("data", &&*guard),
            Err(TryLockError::Poisoned(err)) => d.field("data", &&**err.get_ref()),
            Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
        };
        d.field("poisoned", &self.poison.get());
        d.finish_non_exhaustive()
    }
}

impl<'a, T: ?Sized> RwLockReadGuard<'a, T> {
    /// # Safety
    ///
    /// The caller holds a read lock on `lock.raw`.
    unsafe fn new(lock: &'a RwLock<T>) -> LockResult<RwLockReadGuard<'a, T>> {
        let guard = RwLockReadGuard {
            lock,
            _not_send: PhantomData,
        };
        poison::result(lock.poison.get(), guard)
    }
}

impl<'a, T: ?Sized> RwLockWriteGuard<'a, T> {
    /// # Safety
    ///
    /// The caller holds the write lock on `lock.raw`.
    unsafe fn new(lock: &'a RwLock<T>) -> LockResult<RwLockWriteGuard<'a, T>> {
        poison::map_result(lock.poison.guard(), |poison| RwLockWriteGuard {
            lock,
            poison,
            _not_send: PhantomData,
        })
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: a read lock is held: only shared access exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: no other access exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the write lock is held, and `&mut self` makes this the
        // only access through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard holds a read lock.
        unsafe { self.lock.raw.read_unlock() };
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.poison.done(&self.poison);
        // SAFETY: the guard holds the write lock.
        unsafe { self.lock.raw.write_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
