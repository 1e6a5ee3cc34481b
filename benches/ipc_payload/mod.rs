//! The ipc bench's messages: an `i32` header and a body whose every byte
//! is a function of the header, written and checked in full on both
//! sides. Used by `benches/ipc.rs` and `examples/ipc_floor.rs`.

/// The value of every body byte of a message whose header is `hdr`.
pub fn body_byte(hdr: i32) -> u8 {
    ((hdr as u32).wrapping_mul(0x9e37_79b1) >> 24) as u8
}

/// Writes header `hdr` and its body into `msg` (4 + buf_size bytes).
pub fn fill(msg: &mut [u8], hdr: i32) {
    msg[..4].copy_from_slice(&hdr.to_le_bytes());
    msg[4..].fill(body_byte(hdr));
}

/// The header of `msg` if every body byte matches it.
pub fn check(msg: &[u8]) -> Result<i32, String> {
    if msg.len() < 4 {
        return Err(format!("message of {} bytes", msg.len()));
    }
    let hdr = i32::from_le_bytes(msg[..4].try_into().unwrap());
    let b = body_byte(hdr);
    // An OR of differences (no early exit) vectorises.
    if msg[4..].iter().fold(0u8, |acc, &x| acc | (x ^ b)) != 0 {
        return Err(format!("body of header {hdr} corrupt"));
    }
    Ok(hdr)
}

/// Checks a message of `len` bytes whose header should be `want`, read
/// piece by piece through `chunk` by `read_at(pos, buf)` (which fills
/// `buf` from byte `pos` and returns how many bytes it gave), as a reader
/// does that may not hold a slice of the message.
pub fn check_in_pieces(
    len: usize,
    want: i32,
    chunk: &mut [u8],
    mut read_at: impl FnMut(usize, &mut [u8]) -> usize,
) -> Result<(), String> {
    let mut h = [0u8; 4];
    if len < 4 || read_at(0, &mut h) != 4 {
        return Err(format!("message of {len} bytes"));
    }
    let hdr = i32::from_le_bytes(h);
    if hdr != want {
        return Err(format!("header {hdr}, expected {want}"));
    }
    let b = body_byte(want);
    let mut pos = 4;
    while pos < len {
        let k = read_at(pos, chunk);
        if k == 0 {
            return Err(format!("message ends at {pos} of {len} bytes"));
        }
        if chunk[..k].iter().fold(0u8, |acc, &x| acc | (x ^ b)) != 0 {
            return Err(format!("body of header {hdr} corrupt"));
        }
        pos += k;
    }
    Ok(())
}
