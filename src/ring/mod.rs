//! Single-producer single-consumer rings of fixed-size [`Pod`] entries in
//! caller-provided memory, io_uring-style: a heap allocation for
//! in-process use, or a shared mapping between two processes.
//!
//! This module owns the ring's memory format and its protocol: who writes
//! which word, which values are legal, how a sleeping consumer is woken.
//! It must never spawn threads, know about runtimes, processes or file
//! descriptors, trust a value read from shared memory without checking it,
//! or panic because of what a peer wrote.
//!
//! ```
//! use std::time::Duration;
//! use green::ring::{self, WaitOutcome};
//!
//! let (mut tx, mut rx) = ring::channel::<u64>(64)?;
//! let producer = std::thread::spawn(move || {
//!     for i in 0..1000u64 {
//!         while tx.push(i).is_err() {
//!             std::hint::spin_loop();
//!         }
//!         tx.notify().unwrap(); // wakes `rx` only if it is asleep
//!     }
//! });
//! let mut next = 0;
//! while next < 1000 {
//!     match rx.wait(Duration::from_micros(20), Some(Duration::from_secs(10)))? {
//!         WaitOutcome::Ready => {
//!             while let Some(v) = rx.pop()? {
//!                 assert_eq!(v, next);
//!                 next += 1;
//!             }
//!         }
//!         WaitOutcome::TimedOut => panic!("lost wake-up"),
//!     }
//! }
//! producer.join().unwrap();
//! # Ok::<(), ring::RingError>(())
//! ```
//!
//! # Layout
//!
//! One ring is one direction. The memory is [`RingLayout::ALIGN`] (128)
//! byte aligned; [`Header`] is `#[repr(C)]`, every field a `u32` (native
//! endian: both sides share a machine):
//!
//! ```text
//!  offset
//!       0 +-------+---------+------------+----------+------------------+
//!         | magic | version | entry_size | capacity | (zero)           |  config: init writes,
//!     128 +-------+---------+------------+----------+------------------+  attach reads once
//!         | tail                                    | (zero)           |  producer's line
//!     256 +-----------------------------------------+------------------+
//!         | head                                    | (zero)           |  consumer's line
//!     384 +-------------+-------+-------------------+------------------+
//!         | need_wakeup | futex |                     (zero)           |  wake line
//!     512 +-------------+-------+--------------------------------------+
//!         | slot 0 | slot 1 | ...                    | slot capacity-1  |  capacity * slot_size
//!         +--------+--------+------------------------+------------------+
//!
//!  slot   +-------------------------+-------+---------+
//!         | entry (entry_size)      | stamp | (zero)  |  slot_size: entry and stamp, padded
//!         +-------------------------+-------+---------+
//!         0                         ^ entry_size rounded up to 4
//! ```
//!
//! Each of `tail`, `head` and the wake words has a 128-byte line to itself:
//! no false sharing, including the adjacent-line prefetcher's pairs of
//! 64-byte lines. A slot ([`RingLayout::slot_size`]) is padded to a power
//! of two up to 64 bytes (so none straddles a 64-byte line: a 32-byte
//! entry takes a 64-byte slot), else to a multiple of 128.
//!
//! Each slot's `stamp` says whether its entry is published: the producer
//! stores `index + 1` there after writing the entry of wrapping index
//! `index`. A waiting consumer watches the stamp of the slot at its
//! `head`, so a new entry costs it one cache-line transfer, the line that
//! holds both the entry and its stamp, instead of two in a row (first the
//! line of `tail`, then the entry's). With two processes one call is two
//! such hand-offs; when the host puts the two CPUs some 200 ns apart, that
//! is most of a round trip. `tail` stays, for [`Consumer::len`], for
//! attaching to a ring in use, and as a check on the producer.
//!
//! Field ranges:
//! - `magic` is [`MAGIC`], `version` is [`VERSION`], `entry_size` is
//!   `size_of::<T>()` in `1..=u32::MAX`;
//! - `capacity` is a power of two in `1..=2^31` ([`MAX_CAPACITY`]);
//! - `head` and `tail` are in `0..2^32`, wrapping; `tail - head` (wrapping)
//!   is in `0..=capacity`; index `i` lives in slot `i & (capacity - 1)`;
//!   slots `head..tail` hold published entries and belong to the consumer,
//!   slots `tail..head + capacity` are free and belong to the producer;
//! - the stamp of the slot holding index `i` is `i + 1` once entry `i` is
//!   published, and stays so until the producer publishes `i + capacity`
//!   there; [`RawRing::init`] sets every stamp to the starting index, which
//!   no index of the first lap expects.
//! - `need_wakeup` is 0 or 1; `futex` is any value and wraps.
//!
//! `tail`, the stamps and `futex` are written by the producer only; `head`
//! and `need_wakeup` by the consumer only. The producer stores `tail`
//! before the stamps of the entries it covers, both `Release`.
//!
//! # Trust
//!
//! The peer may be another process that writes anything anywhere in the
//! region at any time. So each side:
//! - keeps its own index in a local and never re-reads it;
//! - copies the configuration once, at [`RawRing::attach`], after checking
//!   it (sizes in `u64` arithmetic);
//! - takes an entry only if its slot's stamp is exactly `index + 1` (read
//!   once): a hostile stamp can publish a garbage entry or hide one, never
//!   make a read leave the slot array;
//! - reads the peer's index once per operation and checks it moved forward
//!   by no more than the protocol allows (the consumer: `tail` within
//!   `last tail ..= head + capacity`, where "last tail" is at least the
//!   entries the stamps published; the producer: `head` within
//!   `last head ..= tail`), else fails with [`RingError::Corrupt`],
//!   sticky. The consumer reads `tail` in [`Consumer::len`] and each time
//!   it goes to sleep, so a corrupt `tail` closes the ring at the latest
//!   when it goes idle;
//! - copies entries out exactly once (volatile or `memcpy` reads into the
//!   caller's memory); a scribbled entry is garbage, never UB, because
//!   every bit pattern of a [`Pod`] is valid and slots never hold pointers.
//!
//! # Wake-up protocol
//!
//! The consumer spins for a bounded time, then sleeps on `futex`; the
//! producer makes a syscall only when `need_wakeup` says someone sleeps.
//!
//! ```text
//! consumer (wait)                          producer (push ... notify)
//! v = futex.load()                         tail.store(t, Release)
//! need_wakeup.store(1, SeqCst)       (C1)  stamp[t-1].store(t, Release)
//! if stamp[head].load(SeqCst)        (C2)  fence(SeqCst)                (P1)
//!    == head + 1: done                     if need_wakeup.load(SeqCst) == 1:  (P2)
//! FUTEX_WAIT(futex, v, timeout)                futex.fetch_add(1)
//! need_wakeup.store(0, SeqCst)                 FUTEX_WAKE(futex, 1)
//! re-check, loop
//! ```
//!
//! Why no wake-up is lost: C1/C2 and the stamp store/P1/P2 form a Dekker
//! pair under SeqCst, so either C2 sees the new stamp (the consumer does
//! not sleep) or P2 sees `need_wakeup == 1` (the producer wakes). In the
//! second case P2 synchronizes with C1, so the consumer's read of `v`
//! happened before the producer's `fetch_add`: `FUTEX_WAIT` either finds
//! the word changed and returns at once, or is already queued and gets the
//! `FUTEX_WAKE`. If P2 reads the 0 stored after an earlier sleep instead,
//! that store precedes the next C1 in the SeqCst order, so that round's C2
//! sees the new stamp. The futex is shared (not `FUTEX_PRIVATE`), because
//! the word may be in memory mapped by two processes. A misbehaving peer
//! can only cause extra wake-ups or sleeps up to the timeout.
//!
//! This layer is single-producer: several producers (say, one per carrier)
//! each get their own ring.

mod consumer;
mod error;
mod futex;
mod heap;
mod layout;
mod pod;
mod producer;
mod raw;

pub use self::consumer::{Consumer, Peek, SleepWaker};
pub use self::error::{PushError, RingError, WaitOutcome};
pub use self::heap::{channel, channel_with_start};
pub use self::layout::{Header, RingLayout, CACHE_PAD, HEADER_SIZE, MAGIC, MAX_CAPACITY, VERSION};
pub use self::pod::Pod;
pub use self::producer::Producer;
pub use self::raw::RawRing;
