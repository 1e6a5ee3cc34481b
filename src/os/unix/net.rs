//! Unix domain sockets with std::os::unix::net's API; on a green thread
//! each blocking call goes over the carrier's kernel ring.
