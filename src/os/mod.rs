//! OS-specific extensions, mirroring `std::os`.
pub mod unix;
