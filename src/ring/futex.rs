//! The two futex calls the wake-up protocol needs, in one place.
//!
//! Shared futexes (no `FUTEX_PRIVATE_FLAG`): the word may live in a memfd
//! mapped by two processes, and the kernel must key the wait on the
//! underlying page, not on this process's address space.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex::{self, Flags, Timespec};

use super::error::RingError;

/// Sleeps while `*word == expected`, for at most `timeout` (`None`:
/// forever). Returns early, with `Ok`, on a wake-up, a changed value
/// (`EAGAIN`), a signal (`EINTR`) or the timeout: callers re-check their
/// condition either way.
pub(crate) fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<(), RingError> {
    let timeout = timeout.map(|d| Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    match futex::wait(word, Flags::empty(), expected, timeout.as_ref()) {
        Ok(()) | Err(Errno::AGAIN | Errno::INTR | Errno::TIMEDOUT) => Ok(()),
        Err(e) => Err(RingError::Futex {
            errno: e.raw_os_error(),
        }),
    }
}

/// Wakes the (at most one) thread sleeping on `word`.
pub(crate) fn wake_one(word: &AtomicU32) -> Result<(), RingError> {
    match futex::wake(word, Flags::empty(), 1) {
        Ok(_) => Ok(()),
        Err(e) => Err(RingError::Futex {
            errno: e.raw_os_error(),
        }),
    }
}
