//! The std-type wrappers' shared trait plumbing.
//!
//! Every blocking front-end type (`fs::File`, `net::TcpStream`, ...) wraps
//! the std type it mirrors in a field named `inner`. This module owns the
//! conversions and fd traits they all have in the same form, so each type
//! states only how it is built from its std value.

/// Implements `Debug` (as the std type's), `From` both ways with the std
/// type and with `OwnedFd`, and `AsFd`/`AsRawFd`/`FromRawFd`/`IntoRawFd`
/// for a wrapper `$ty` holding a `$std` in `inner`. `|$inner| $build`
/// makes a `$ty` from a `$std` value.
macro_rules! std_wrapper {
    ($ty:ty, $std:ty, |$inner:ident| $build:expr) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(&self.inner, f)
            }
        }

        impl ::std::convert::From<$std> for $ty {
            fn from($inner: $std) -> $ty {
                $build
            }
        }

        impl ::std::convert::From<$ty> for $std {
            fn from(w: $ty) -> $std {
                w.inner
            }
        }

        impl ::std::convert::From<::std::os::fd::OwnedFd> for $ty {
            fn from(fd: ::std::os::fd::OwnedFd) -> $ty {
                <$ty>::from(<$std>::from(fd))
            }
        }

        impl ::std::convert::From<$ty> for ::std::os::fd::OwnedFd {
            fn from(w: $ty) -> ::std::os::fd::OwnedFd {
                w.inner.into()
            }
        }

        impl ::std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> ::std::os::fd::BorrowedFd<'_> {
                ::std::os::fd::AsFd::as_fd(&self.inner)
            }
        }

        impl ::std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> ::std::os::fd::RawFd {
                ::std::os::fd::AsRawFd::as_raw_fd(&self.inner)
            }
        }

        impl ::std::os::fd::FromRawFd for $ty {
            unsafe fn from_raw_fd(fd: ::std::os::fd::RawFd) -> $ty {
                // SAFETY: forwarded from the caller, who owns `fd` and
                // guarantees it is open and of the right kind.
                <$ty>::from(unsafe { <$std as ::std::os::fd::FromRawFd>::from_raw_fd(fd) })
            }
        }

        impl ::std::os::fd::IntoRawFd for $ty {
            fn into_raw_fd(self) -> ::std::os::fd::RawFd {
                ::std::os::fd::IntoRawFd::into_raw_fd(self.inner)
            }
        }
    };
}

pub(crate) use std_wrapper;
