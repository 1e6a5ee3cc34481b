//! [`Consumer`]: the reading half of a ring, and the sleeping side of the
//! wake-up protocol.

use std::hint;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::error::{RingError, WaitOutcome};
use super::raw::Shared;
use super::{futex, Pod};

/// The reading half of a ring: the only writer of `head` and
/// `need_wakeup`. The [`Producer`](super::Producer) may be in another
/// thread or another process, and is not trusted: the consumer takes an
/// entry only when its slot's stamp is exactly the one that index
/// expects, and checks the producer's `tail` whenever it reads it.
pub struct Consumer<T: Pod> {
    ring: Shared<T>,
    /// Our own index, authoritative: never re-read from shared memory.
    head: u32,
    /// How far the producer is known to have published: the last `tail`
    /// read and validated, or `head` once stamps took us past it. `tail -
    /// head` is in `0..=capacity`, and the real tail is at or after it.
    tail: u32,
    /// Set once the producer is seen breaking the protocol; sticky.
    failed: Option<RingError>,
}

// SAFETY: the consumer is the only writer of `head` and `need_wakeup` and
// the only reader of published slots (RawRing's contract); it accesses
// shared memory only through atomics and slots it owns, from whichever
// single thread holds it (`&mut self`). The memory stays valid wherever it
// moves (RawRing's contract / `owner`), and `T: Pod` values are `Send`.
unsafe impl<T: Pod> Send for Consumer<T> {}

/// Spin iterations between clock reads in [`Consumer::wait`].
const SPINS_PER_CLOCK_READ: u32 = 64;

impl<T: Pod> Consumer<T> {
    pub(crate) fn new(ring: Shared<T>, head: u32, tail: u32) -> Self {
        Consumer {
            ring,
            head,
            tail,
            failed: None,
        }
    }

    /// Number of entries the ring holds.
    pub fn capacity(&self) -> u32 {
        self.ring.capacity
    }

    /// The protocol violation this consumer saw, if any. Once set, every
    /// operation fails with it.
    pub fn error(&self) -> Option<&RingError> {
        self.failed.as_ref()
    }

    /// Entries published according to the last tail seen (no
    /// shared-memory read).
    fn cached_len(&self) -> u32 {
        self.tail.wrapping_sub(self.head)
    }

    /// Whether the entry at `index` is published: its slot's stamp is
    /// `index + 1`, read once with `order`. No other value means yes,
    /// whatever a peer wrote: stamps from earlier laps are `index + 1 -
    /// k * capacity`, and init stores values no index of the first lap
    /// expects. A hostile producer can publish garbage this way, never
    /// make us read out of bounds.
    fn stamped(&self, index: u32, order: Ordering) -> bool {
        self.ring.stamp(index).load(order) == index.wrapping_add(1)
    }

    /// Moves `head` past `n <= capacity` entries just read, and publishes
    /// it.
    fn advance(&mut self, n: u32) {
        // In `0..=capacity`, like `n`.
        let known = self.cached_len();
        self.head = self.head.wrapping_add(n);
        // The entries were published, so the producer's tail is at least
        // `head` now, and every later read of it shows that (it stored
        // `tail` before the stamps we acquired).
        if n > known {
            self.tail = self.head;
        }
        // Release: our reads of the slots happen before the producer's
        // Acquire load of `head` that lets it reuse them.
        self.ring.head().store(self.head, Ordering::Release);
    }

    /// Reads the producer's `tail` once with `order`, validates it, and
    /// returns the number of entries available.
    fn refresh_tail(&mut self, order: Ordering) -> Result<u32, RingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let tail = self.ring.tail().load(order);
        // The producer may only move tail forward, and at most to
        // `head + capacity`: the entries it added since we last looked are
        // at most the free slots there were.
        let max = self.head.wrapping_add(self.ring.capacity);
        if tail.wrapping_sub(self.tail) > max.wrapping_sub(self.tail) {
            let e = RingError::Corrupt {
                index: "tail",
                found: tail,
                min: self.tail,
                max,
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.tail = tail;
        Ok(self.cached_len())
    }

    /// Entries published now according to the producer's `tail`, which
    /// this reads once and checks. The producer stores `tail` just before
    /// the entries' stamps, so [`pop`](Self::pop) may still find the last
    /// of them not ready for a moment.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer's `tail` is out of range.
    pub fn len(&mut self) -> Result<u32, RingError> {
        // Acquire: pairs with the producer's Release store of `tail`.
        self.refresh_tail(Ordering::Acquire)
    }

    /// Whether the next entry is not ready: reads its slot's stamp, not
    /// `tail`, so asking costs no extra cache line when an entry is there.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer broke the protocol earlier.
    pub fn is_empty(&mut self) -> Result<bool, RingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Acquire: pairs with the producer's Release store of the stamp.
        Ok(!self.stamped(self.head, Ordering::Acquire))
    }

    /// Removes the oldest entry, or returns `None` if the ring is empty.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer broke the protocol (now or
    /// earlier).
    pub fn pop(&mut self) -> Result<Option<T>, RingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Acquire: pairs with the producer's Release store of the stamp, so
        // the entry it published is visible.
        if !self.stamped(self.head, Ordering::Acquire) {
            return Ok(None);
        }
        // SAFETY: `slot` is in bounds and published (its stamp read with
        // Acquire), and the slot memory is initialized (zeroed at init,
        // then written by the producer). A peer scribbling on it can only
        // change the bits, and every bit pattern is a valid `T: Pod`; the
        // volatile read copies it out once, so the value we return is never
        // re-read from shared memory.
        let value = unsafe { ptr::read_volatile(self.ring.slot(self.head)) };
        self.advance(1);
        Ok(Some(value))
    }

    /// Removes up to `out.len()` entries into `out`, in order, with one
    /// `head` store; returns how many (0 if the ring is empty).
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer broke the protocol (now or
    /// earlier); nothing is removed then.
    pub fn pop_into(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // At most a ringful: the stamps of a second lap would be checked
        // against slots we have not freed.
        let max = out.len().min(self.ring.capacity as usize);
        let mut n = 0;
        for slot in &mut out[..max] {
            let index = self.head.wrapping_add(n as u32);
            // Acquire: pairs with the producer's Release store of the stamp.
            if !self.stamped(index, Ordering::Acquire) {
                break;
            }
            // SAFETY: as in `pop`: in bounds, published (stamp read with
            // Acquire), initialized; copied once into the caller's slot,
            // never re-read; any bits are a valid `T: Pod`.
            *slot = unsafe { ptr::read_volatile(self.ring.slot(index)) };
            n += 1;
        }
        if n > 0 {
            // n <= capacity <= 2^31.
            self.advance(n as u32);
        }
        Ok(n)
    }

    /// Waits until the ring has an entry or `timeout` (`None`: no limit)
    /// passes: spins for up to `spin` first, then sleeps on the futex word
    /// with `need_wakeup` set, so the producer's
    /// [`notify`](super::Producer::notify) wakes it. See the
    /// [wake-up protocol](super#wake-up-protocol).
    ///
    /// Returns [`WaitOutcome::Ready`] at once if an entry is available. A
    /// zero `timeout` makes no syscall.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer broke the protocol;
    /// [`RingError::Futex`] if `FUTEX_WAIT` fails unexpectedly.
    pub fn wait(
        &mut self,
        spin: Duration,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome, RingError> {
        if !self.is_empty()? {
            return Ok(WaitOutcome::Ready);
        }
        let start = Instant::now();
        // An unrepresentable deadline is as good as none.
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let spin = timeout.map_or(spin, |t| spin.min(t));
        if !spin.is_zero() {
            let mut spins = 0u32;
            loop {
                hint::spin_loop();
                if !self.is_empty()? {
                    return Ok(WaitOutcome::Ready);
                }
                spins = spins.wrapping_add(1);
                if spins % SPINS_PER_CLOCK_READ == 0 && start.elapsed() >= spin {
                    break;
                }
            }
        }
        loop {
            // Read the futex word before announcing the sleep: any bump the
            // producer makes after seeing `need_wakeup` set is then newer
            // than `seen`, and FUTEX_WAIT returns at once.
            let seen = self.ring.futex().load(Ordering::SeqCst);
            // The consumer's half of the Dekker pair: SeqCst store of
            // `need_wakeup`, then SeqCst load of the stamp.
            self.ring.need_wakeup().store(1, Ordering::SeqCst);
            match self.recheck() {
                Ok(false) => {}
                other => {
                    self.ring.need_wakeup().store(0, Ordering::SeqCst);
                    return other.map(|_| WaitOutcome::Ready);
                }
            }
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => {
                        self.ring.need_wakeup().store(0, Ordering::SeqCst);
                        return Ok(WaitOutcome::TimedOut);
                    }
                },
            };
            let slept = futex::wait(self.ring.futex(), seen, remaining);
            // SeqCst: a producer that reads this 0 skips the wake, which is
            // only safe because our next round's SeqCst store of 1 follows
            // it (see the protocol notes).
            self.ring.need_wakeup().store(0, Ordering::SeqCst);
            slept?;
            if !self.is_empty()? {
                return Ok(WaitOutcome::Ready);
            }
        }
    }

    /// The "announce, re-check" half of a sleep, for callers that wait on
    /// the futex word themselves (for example with an io_uring
    /// `FUTEX_WAIT`, so only one green thread waits, not its carrier).
    ///
    /// Reads the futex word, sets `need_wakeup` and re-checks `tail`, as
    /// [`wait`](Self::wait) does before its `FUTEX_WAIT` (see the
    /// [wake-up protocol](super#wake-up-protocol)). Returns `None` if an
    /// entry is available (then `need_wakeup` is cleared again), else the
    /// word to wait on and the value to expect. After the wait, whatever
    /// its outcome, call [`finish_sleep`](Self::finish_sleep).
    ///
    /// The word must be waited on as a shared futex (not `FUTEX_PRIVATE`):
    /// the producer may be in another process.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the producer broke the protocol.
    pub fn prepare_sleep(&mut self) -> Result<Option<(&AtomicU32, u32)>, RingError> {
        if !self.is_empty()? {
            return Ok(None);
        }
        // As in `wait`: the word is read before announcing the sleep, and
        // the announcement and the re-check are SeqCst (the consumer's half
        // of the Dekker pair).
        let seen = self.ring.futex().load(Ordering::SeqCst);
        self.ring.need_wakeup().store(1, Ordering::SeqCst);
        match self.recheck() {
            Ok(false) => Ok(Some((self.ring.futex(), seen))),
            other => {
                self.ring.need_wakeup().store(0, Ordering::SeqCst);
                other.map(|_| None)
            }
        }
    }

    /// The re-check after announcing a sleep: whether the next entry is
    /// ready (its stamp, SeqCst: the consumer's half of the Dekker pair).
    /// Checks the producer's `tail` too, so a producer that corrupts it
    /// is caught at the latest when the consumer goes idle; readiness
    /// itself goes by the stamp alone, so a `tail` that runs ahead of
    /// published entries cannot keep the consumer awake.
    fn recheck(&mut self) -> Result<bool, RingError> {
        self.refresh_tail(Ordering::SeqCst)?;
        Ok(self.stamped(self.head, Ordering::SeqCst))
    }

    /// Ends a sleep begun with [`prepare_sleep`](Self::prepare_sleep):
    /// clears `need_wakeup`.
    pub fn finish_sleep(&mut self) {
        // SeqCst: see `wait`; our next `prepare_sleep` stores 1 after it.
        self.ring.need_wakeup().store(0, Ordering::SeqCst);
    }

    /// A handle that wakes this consumer's sleep (in [`wait`](Self::wait)
    /// or a caller's own wait after [`prepare_sleep`](Self::prepare_sleep))
    /// from any thread of this process: for shutdown, when there is no
    /// entry to push.
    pub fn sleep_waker(&self) -> SleepWaker<T> {
        SleepWaker {
            ring: self.ring.clone(),
        }
    }

    /// A handle that tells, from any thread of this process and without
    /// this consumer (or the lock it sits behind), whether the ring seems
    /// to hold entries: for pollers that should take that lock only when
    /// there is something to pop.
    pub fn peek(&self) -> Peek<T> {
        Peek {
            ring: self.ring.clone(),
        }
    }
}

/// A lock-free look at whether a [`Consumer`]'s ring holds entries; see
/// [`Consumer::peek`]. Keeps the ring memory alive.
pub struct Peek<T: Pod> {
    ring: Shared<T>,
}

// SAFETY: a Peek only loads the ring's `head` word and a stamp, atomically;
// the memory stays valid as long as it lives (Shared's contract, `owner`).
unsafe impl<T: Pod> Send for Peek<T> {}
// SAFETY: as above; `&self` methods do only atomic loads.
unsafe impl<T: Pod> Sync for Peek<T> {}

impl<T: Pod> Peek<T> {
    /// Whether the slot at the ring's `head` carries the stamp of a
    /// published entry: an entry seems to be waiting. A hint only, never
    /// a promise: the words are read without ordering and the producer
    /// (perhaps another process) may write at any time, so the answer can
    /// be stale or, from a hostile producer, wrong; the consumer validates
    /// what it pops. Both loads usually hit cache lines nobody wrote since
    /// the last look, which is what makes asking cheaper than taking the
    /// consumer's lock; when an entry did arrive, its line is the one the
    /// pop reads next.
    pub fn has_entries(&self) -> bool {
        // Relaxed: a hint; the pop that follows a `true` does the Acquire.
        let head = self.ring.head().load(Ordering::Relaxed);
        self.ring.stamp(head).load(Ordering::Relaxed) == head.wrapping_add(1)
    }
}

/// Wakes a [`Consumer`]'s sleep without pushing an entry; see
/// [`Consumer::sleep_waker`]. Keeps the ring memory alive.
pub struct SleepWaker<T: Pod> {
    ring: Shared<T>,
}

// SAFETY: a SleepWaker touches only the ring's futex word, atomically; the
// memory stays valid as long as it lives (Shared's contract, `owner`).
unsafe impl<T: Pod> Send for SleepWaker<T> {}
// SAFETY: as above; `wake` takes `&self` and does only atomic operations
// and a syscall.
unsafe impl<T: Pod> Sync for SleepWaker<T> {}

impl<T: Pod> SleepWaker<T> {
    /// Bumps the futex word and wakes the sleeper, if any. The sleeper
    /// returns as from a spurious wake-up and re-checks its condition.
    ///
    /// # Errors
    ///
    /// [`RingError::Futex`] if `FUTEX_WAKE` fails (it should not).
    pub fn wake(&self) -> Result<(), RingError> {
        // SeqCst like the producer's bump: a sleeper that read the old
        // value gets EAGAIN or the wake.
        self.ring.futex().fetch_add(1, Ordering::SeqCst);
        futex::wake_one(self.ring.futex())
    }
}
