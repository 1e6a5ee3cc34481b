//! [`Desc`]: the fixed-size entry both rings of a region carry.

use crate::ring::Pod;

/// One message on a region's ring: a request (client to server) or a
/// response (server to client). Small and fixed-size; any body travels in
/// an arena and the descriptor carries its place.
///
/// Everything in a received `Desc` is peer data: check `offset` and `len`
/// against the sender's arena (the receiver: [`ArenaMem`] bounds; the
/// owner, when a descriptor comes back: [`Arena::lookup`]) and `opcode`
/// against the known ones before use.
///
/// [`ArenaMem`]: super::ArenaMem
/// [`Arena::lookup`]: super::Arena::lookup
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Desc {
    /// Matches a response to its request: chosen by the client, copied
    /// into the response by the server. Opaque to this layer.
    pub id: u64,
    /// What to do (requests) or the outcome (responses); defined by the
    /// IPC layer. Opaque to this layer.
    pub opcode: u32,
    /// Per-message flags (for example "has a body", "last fragment");
    /// defined by the IPC layer. Opaque to this layer.
    pub flags: u32,
    /// Start of the body, relative to the start of the sender's arena
    /// (client arena for requests, server arena for responses).
    pub offset: u64,
    /// Body length in bytes; 0 means no body (then `offset` is
    /// meaningless).
    pub len: u64,
}

// SAFETY: repr(C), integer fields only (8 + 4 + 4 + 8 + 8 bytes, every
// field at a multiple of its size: no padding), any bit pattern is a valid
// value, and it holds offsets, never pointers.
unsafe impl Pod for Desc {}

const _: () = assert!(std::mem::size_of::<Desc>() == 32);
