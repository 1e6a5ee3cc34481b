//! Files with std::fs's API; on a green thread each blocking call goes
//! over the carrier's kernel ring.
