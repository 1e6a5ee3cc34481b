//! [`Producer`]: the writing half of a ring.

use std::ptr;
use std::sync::atomic::{fence, Ordering};

use super::error::{PushError, RingError};
use super::raw::Shared;
use super::{futex, Pod};

/// The writing half of a ring: the only writer of `tail` and of the free
/// slots. The [`Consumer`](super::Consumer) may be in another thread or
/// another process.
///
/// Pushes publish entries at once (a `Release` store of `tail` per push or
/// [`push_slice`](Self::push_slice), then one of each slot's stamp) but
/// never make a syscall; call
/// [`notify`](Self::notify) after a batch to wake a consumer sleeping in
/// [`wait`](super::Consumer::wait).
pub struct Producer<T: Pod> {
    ring: Shared<T>,
    /// Our own index, authoritative: never re-read from shared memory.
    tail: u32,
    /// The consumer's `head` as last read and validated: `tail - head` is
    /// in `0..=capacity`, and the real head is at or after it.
    head: u32,
    /// Set once the consumer is seen breaking the protocol; sticky.
    failed: Option<RingError>,
}

// SAFETY: the producer is the only writer of `tail` and of the free slots
// (RawRing's contract); it accesses shared memory only through atomics and
// slots it owns, from whichever single thread holds it (`&mut self`). The
// memory stays valid wherever it moves (RawRing's contract / `owner`), and
// it holds `T: Pod` values only, which are `Send`.
unsafe impl<T: Pod> Send for Producer<T> {}

impl<T: Pod> Producer<T> {
    pub(crate) fn new(ring: Shared<T>, head: u32, tail: u32) -> Self {
        Producer {
            ring,
            tail,
            head,
            failed: None,
        }
    }

    /// Number of entries the ring holds.
    pub fn capacity(&self) -> u32 {
        self.ring.capacity
    }

    /// The protocol violation this producer saw, if any. Once set, every
    /// push fails with it.
    pub fn error(&self) -> Option<&RingError> {
        self.failed.as_ref()
    }

    /// Free slots according to the last head seen (no shared-memory read).
    fn cached_free(&self) -> u32 {
        self.ring.capacity - self.tail.wrapping_sub(self.head)
    }

    /// Reads the consumer's `head` once, validates it, and returns the
    /// number of free slots.
    fn refresh_head(&mut self) -> Result<u32, RingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Acquire: pairs with the consumer's Release store of `head`, so
        // its reads of the slots it freed happen before we overwrite them.
        let head = self.ring.head().load(Ordering::Acquire);
        // The consumer may only move head forward, and not past our tail:
        // the entries it consumed since we last looked are at most the
        // entries that were in flight.
        if head.wrapping_sub(self.head) > self.tail.wrapping_sub(self.head) {
            let e = RingError::Corrupt {
                index: "head",
                found: head,
                min: self.head,
                max: self.tail,
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.head = head;
        Ok(self.cached_free())
    }

    /// Free slots now: reads the consumer's `head` once.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the consumer's `head` is out of range.
    pub fn free_slots(&mut self) -> Result<u32, RingError> {
        self.refresh_head()
    }

    /// Appends `value`, or hands it back if the ring is full.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] when no slot is free; [`PushError::Corrupt`] if
    /// the consumer broke the protocol (now or earlier).
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        if let Some(e) = &self.failed {
            return Err(PushError::Corrupt(value, e.clone()));
        }
        if self.cached_free() == 0 {
            match self.refresh_head() {
                Ok(0) => return Err(PushError::Full(value)),
                Ok(_) => {}
                Err(e) => return Err(PushError::Corrupt(value, e)),
            }
        }
        // SAFETY: `slot` is in bounds; it is free (`tail - head < capacity`
        // with `head` read with Acquire), so the consumer no longer reads it
        // and, until our `tail` store below, will not; we are the only
        // writer of free slots.
        unsafe { ptr::write(self.ring.slot(self.tail), value) };
        let index = self.tail;
        self.tail = self.tail.wrapping_add(1);
        self.publish(index, 1);
        Ok(())
    }

    /// Publishes the `n` entries written at `first ..`: stores `tail`,
    /// then each slot's stamp.
    ///
    /// `tail` goes first, so a consumer that has seen a stamp never reads
    /// an older `tail` afterwards (the stamp's Release orders the `tail`
    /// store before it): its check that `tail` never falls behind what it
    /// consumed stays exact. Both are Release stores, so either publishes
    /// the entries written before them.
    fn publish(&self, first: u32, n: u32) {
        // Release: publishes the entries to the consumer's Acquire load of
        // `tail` (which `len` and the sleep path use).
        self.ring.tail().store(self.tail, Ordering::Release);
        for k in 0..n {
            let index = first.wrapping_add(k);
            // Release: publishes the entry (and the `tail` store) to the
            // consumer's Acquire load of this stamp.
            self.ring
                .stamp(index)
                .store(index.wrapping_add(1), Ordering::Release);
        }
    }

    /// Appends as many of `values` as fit, in order, with one `tail` store;
    /// returns how many were pushed (0 if the ring is full).
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the consumer broke the protocol (now or
    /// earlier); nothing is pushed then.
    pub fn push_slice(&mut self, values: &[T]) -> Result<usize, RingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut free = self.cached_free();
        if (free as usize) < values.len() {
            free = self.refresh_head()?;
        }
        let n = values.len().min(free as usize);
        if n == 0 {
            return Ok(0);
        }
        let first = self.tail;
        for (k, value) in values[..n].iter().enumerate() {
            // SAFETY: slots `tail .. tail + n` are free (n <= free slots,
            // head read with Acquire) and only we write free slots; `slot`
            // is in bounds for any index. The source is a caller's slice,
            // which cannot overlap ring slots.
            unsafe { ptr::write(self.ring.slot(first.wrapping_add(k as u32)), *value) };
        }
        // n <= capacity <= 2^31.
        self.tail = self.tail.wrapping_add(n as u32);
        self.publish(first, n as u32);
        Ok(n)
    }

    /// Wakes the consumer if it is asleep (or about to sleep) in
    /// [`wait`](super::Consumer::wait). Returns whether a wake-up syscall
    /// was made: only when the consumer set `need_wakeup`.
    ///
    /// Call it after publishing a batch; entries pushed after the last
    /// `notify` may sit unseen by a sleeping consumer until its timeout. See
    /// the [wake-up protocol](super#wake-up-protocol) for why no wake-up is
    /// lost.
    ///
    /// # Errors
    ///
    /// [`RingError::Futex`] if `FUTEX_WAKE` fails (it should not).
    pub fn notify(&self) -> Result<bool, RingError> {
        // SeqCst fence between our earlier stamp and `tail` stores and the
        // `need_wakeup` load: the producer's half of the Dekker pair (the
        // consumer stores `need_wakeup` then loads the stamp, both SeqCst).
        fence(Ordering::SeqCst);
        if self.ring.need_wakeup().load(Ordering::SeqCst) == 0 {
            return Ok(false);
        }
        // Bump before waking, so a consumer between reading the futex word
        // and FUTEX_WAIT gets EAGAIN instead of sleeping.
        self.ring.futex().fetch_add(1, Ordering::SeqCst);
        futex::wake_one(self.ring.futex())?;
        Ok(true)
    }
}
