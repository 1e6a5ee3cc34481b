//! Raw kernel interfaces: io_uring (setup, mapped rings, enter).
//!
//! Owns nothing above the syscall boundary and knows nothing of green
//! threads; everything here is used by the driver.

pub(crate) mod uring;
