//! Run ordinary blocking Rust code on stackful green threads.
//!
//! `green::spawn` runs a closure on a green thread: a coroutine on a pooled
//! stack, scheduled by a carrier (one OS thread per core). A blocking call
//! made through this crate's API (`thread::sleep`, `park`, `join`, the
//! `sync` primitives) suspends only the green thread; the carrier runs other
//! green threads meanwhile. Outside a green thread every call behaves
//! exactly as std's.
//!
//! ```
//! use std::time::Duration;
//!
//! // Ten thousand "threads" that each block for 10 ms, on a couple of
//! // OS threads.
//! let handles: Vec<_> = (0..10_000u64)
//!     .map(|i| {
//!         green::spawn(move || {
//!             green::thread::sleep(Duration::from_millis(10));
//!             i * 2
//!         })
//!     })
//!     .collect();
//! let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//! assert_eq!(sum, 10_000 * 9_999);
//! ```
//!
//! Async code runs on the same carriers and timers: [`spawn_async`] and
//! [`block_on`] take futures, and a [`thread::JoinHandle`] is itself a
//! future.
//!
//! A raw blocking syscall (one that does not go through this crate) made on
//! a green thread blocks its whole carrier, and with it every green thread
//! pinned there, until it returns.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod aio;
pub(crate) mod driver;
pub mod fs;
pub mod ipc;
pub mod net;
pub mod os;
pub mod ring;
pub mod runtime;
pub mod shm;
pub mod sync;
pub(crate) mod sys;
pub mod thread;
pub mod time;
mod wrap;

use std::future::Future;

pub use runtime::{Builder, IoBackend, Runtime};
pub use thread::{spawn, JoinHandle};

/// Spawns an async task on the current carrier (from a green thread or an
/// async task) or on the default runtime's least loaded carrier.
///
/// # Panics
///
/// If the runtime has shut down.
pub fn spawn_async<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime::spawn_async_on(None, fut).unwrap_or_else(|e| panic!("failed to spawn async task: {e}"))
}

/// Runs a future to completion and returns its output.
///
/// On a green thread the future is polled right there, and the green thread
/// parks while it waits. From a plain OS thread the future runs as an async
/// task on the default runtime (so it can use the runtime's timers) while
/// the OS thread blocks. A panic in the future resumes on the caller.
///
/// # Panics
///
/// When called inside an async task (use `.await` there): blocking would
/// stall the carrier that must run the future.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if thread::is_green() {
        thread::block_on_here(fut)
    } else if runtime::carrier::polling_task().is_some() {
        panic!("green::block_on called inside an async task; use .await there instead");
    } else {
        match spawn_async(fut).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
