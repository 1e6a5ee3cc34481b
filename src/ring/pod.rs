//! [`Pod`]: the types a ring may carry.

/// Plain old data: a type a ring can carry to a peer and read back from a
/// peer that may have written anything.
///
/// # Safety
///
/// Implement only for types where
/// - every bit pattern of `size_of::<Self>()` bytes is a valid value (no
///   `bool`, `char`, enums, `NonZero*`, references), because the consumer
///   reads whatever bytes the peer left in a slot;
/// - there are no pointers or references: the peer may be another process
///   with another address space, and must never be able to make this side
///   dereference an address it chose. Use offsets into a shared region
///   instead;
/// - the layout is fixed (`#[repr(C)]` or `#[repr(transparent)]`), so both
///   sides agree on it.
///
/// Prefer types without padding bytes (use explicit reserved fields):
/// padding carries whatever was in the producer's memory to the peer.
///
/// ```
/// use green::ring::Pod;
///
/// #[derive(Clone, Copy)]
/// #[repr(C)]
/// struct Submission {
///     user_data: u64,
///     opcode: u32,
///     len: u32,
///     offset: u64,
/// }
///
/// // SAFETY: repr(C), only integer fields, no padding, no pointers.
/// unsafe impl Pod for Submission {}
/// ```
pub unsafe trait Pod: Copy + Send + 'static {}

macro_rules! impl_pod {
    ($($t:ty),*) => {
        $(
            // SAFETY: a primitive integer or float: every bit pattern is a
            // valid value and it holds no pointer.
            unsafe impl Pod for $t {}
        )*
    };
}

impl_pod!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

// SAFETY: an array of `Pod` has no padding between elements and is valid
// for every bit pattern that is valid for each element.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
