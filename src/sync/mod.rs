//! Green-aware synchronisation primitives with std's API.
//!
//! [`Mutex`], [`RwLock`], [`Condvar`], [`Barrier`], [`Once`], [`OnceLock`],
//! [`LazyLock`] and the [`mpsc`] channels have std's signatures, poisoning
//! and error types (std's own, re-exported), so code moves over by changing
//! `std::sync` to `green::sync`. The difference is what waiting blocks: on a
//! green thread only that green thread, while its carrier runs the others;
//! on a plain OS thread, the OS thread, exactly as std. The primitives work
//! between green threads on any carriers and OS threads in any mix.
//!
//! This module owns the waiting: every primitive blocks through one wait
//! queue (`wait_queue.rs`), built on [`crate::thread::park`] and
//! [`crate::thread::Thread::unpark`] and nothing else. It must never hold an
//! OS-level lock (its own short internal ones included) across a park: a
//! green thread suspended with one held would block every thread that needs
//! it, its own carrier included. Uncontended lock and unlock paths are a
//! single atomic operation and never allocate.
//!
//! std's `Arc`, `Weak` and `atomic` are re-exported too, so that a
//! `use std::sync::{...}` line can switch wholesale.
//!
//! ```
//! use green::sync::{Arc, Condvar, Mutex};
//!
//! // 1,000 green threads wait on one condvar; their carriers stay free.
//! let state = Arc::new((Mutex::new(false), Condvar::new()));
//! let waiters: Vec<_> = (0..1000)
//!     .map(|_| {
//!         let state = state.clone();
//!         green::spawn(move || {
//!             let (go, cvar) = &*state;
//!             drop(cvar.wait_while(go.lock().unwrap(), |go| !*go).unwrap());
//!         })
//!     })
//!     .collect();
//! *state.0.lock().unwrap() = true;
//! state.1.notify_all();
//! for w in waiters {
//!     w.join().unwrap();
//! }
//! ```

mod barrier;
mod condvar;
mod lazy_lock;
pub mod mpsc;
mod mutex;
mod once;
mod once_lock;
mod poison;
mod rwlock;
mod wait_queue;

pub use self::barrier::{Barrier, BarrierWaitResult};
pub use self::condvar::{Condvar, WaitTimeoutResult};
pub use self::lazy_lock::LazyLock;
pub use self::mutex::{Mutex, MutexGuard};
pub use self::once::{Once, OnceState};
pub use self::once_lock::OnceLock;
pub use self::rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use std::sync::{atomic, Arc, Weak};
pub use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
