//! The async API: the same operations as the blocking front ends, as
//! futures on the same carriers and rings. It exists so the blocking API
//! can be measured against an async one on equal terms.
pub mod fs;
pub mod net;
