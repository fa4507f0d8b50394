//! The loom/std switch of the regio crates.
//!
//! Code that must be checked by loom imports its atomics, cells, `Arc`, `Mutex` and threads from
//! here, never from `std` directly. Under `RUSTFLAGS="--cfg loom"` these names are loom's
//! instrumented types; otherwise they are the std types, and [`cell::UnsafeCell`] is given loom's
//! closure-based `with`/`with_mut` API so that one body of code compiles both ways.

#[cfg(loom)]
pub use loom::{hint, thread};
#[cfg(not(loom))]
pub use std::{hint, thread};

/// Atomics and the shared-ownership types.
pub mod sync {
    #[cfg(loom)]
    pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
    #[cfg(not(loom))]
    pub use std::sync::{Arc, Condvar, Mutex, MutexGuard};

    /// Atomic integers, pointers and fences.
    pub mod atomic {
        #[cfg(loom)]
        pub use loom::sync::atomic::{
            fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
        };
        #[cfg(not(loom))]
        pub use std::sync::atomic::{
            fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
        };
    }
}

/// Interior mutability with loom's access-tracking API.
pub mod cell {
    #[cfg(loom)]
    pub use loom::cell::UnsafeCell;

    /// `std::cell::UnsafeCell` with the closure API of `loom::cell::UnsafeCell`.
    ///
    /// Under loom every access is tracked and a racy pair of accesses fails the model; with std
    /// the closures compile to plain pointer accesses.
    #[cfg(not(loom))]
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        /// Wraps `value`.
        #[inline]
        pub const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Unwraps the value.
        #[inline]
        pub fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }

    #[cfg(not(loom))]
    impl<T: ?Sized> UnsafeCell<T> {
        /// Runs `f` with a shared raw pointer to the value.
        #[inline]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a mutable raw pointer to the value.
        #[inline]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}
