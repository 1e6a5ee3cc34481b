//! TCP and UDP sockets with std::net's API; on a green thread each blocking
//! call goes over the carrier's kernel ring.
