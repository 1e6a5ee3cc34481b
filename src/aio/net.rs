//! Sockets as futures (owned buffers), on the carrier's kernel ring.
