//! A carrier's timers: deadlines that wake a parked green thread or a waker.
//!
//! Owned by one carrier and touched only on its thread. Entries are removed
//! exactly (a green thread woken early removes its own entry), so a
//! cancelled timeout costs nothing later.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::task::Waker;
use std::time::Instant;

use super::task::Task;

pub(crate) enum Target {
    /// A green thread parked with a timeout: fired through its park token.
    /// The task removes the entry before it returns from the park, so the
    /// pointer outlives the entry.
    Park(NonNull<Task>),
    /// A sleeping green thread: put straight back on the run queue. Only
    /// this timer can resume it, so the pointer outlives the entry.
    Resume(NonNull<Task>),
    /// A future's waker.
    Waker(Waker),
}

/// Identifies a timer for removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey(Instant, u64);

#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<TimerKey, Target>,
    seq: u64,
}

impl Timers {
    pub(crate) fn insert(&mut self, deadline: Instant, target: Target) -> TimerKey {
        self.seq += 1;
        let key = TimerKey(deadline, self.seq);
        self.map.insert(key, target);
        key
    }

    pub(crate) fn remove(&mut self, key: TimerKey) {
        self.map.remove(&key);
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes and returns the first timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Target> {
        match self.map.first_key_value() {
            Some((k, _)) if k.0 <= now => self.map.pop_first().map(|(_, t)| t),
            _ => None,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}
