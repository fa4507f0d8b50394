//! Asymmetric fences: the two halves of a Dekker pair when one side runs far more often than the
//! other.
//!
//! A reader that comes online must order its announcement (a store) before its next pointer load,
//! and the writer must order its publication before its look at the announcements: a store-load
//! pair on each side, which takes a full fence on each side. Readers come online on every guard,
//! writers start a grace period rarely, so the cost is moved to the writer, as liburcu's "memb"
//! flavour and Folly's `asymmetricHeavyBarrier` do:
//!
//! - [`light`], the frequent side, is only a compiler fence;
//! - [`heavy`], the rare side, is a SeqCst fence followed by `membarrier(2)` with
//!   `MEMBARRIER_CMD_PRIVATE_EXPEDITED`, which returns only after every CPU running a thread of
//!   this process has executed a full memory barrier (a thread that is not running passes one
//!   when it is switched back in).
//!
//! Why that suffices: take any thread that ran [`light`] between a store and a load. The barrier
//! that `membarrier` puts on its CPU lands somewhere in its instruction stream. If after the
//! store, the store is visible to the caller of [`heavy`] once `membarrier` returns; if before,
//! the load comes after a full barrier that follows the caller's own fence, so it sees whatever
//! the caller stored before [`heavy`]. Either way, one side sees the other's store, as with two
//! SeqCst fences.
//!
//! The process registers for the command once ([`init`], from every `Domain`'s creation). If the
//! kernel refuses (too old, or a seccomp filter), both halves fall back to SeqCst fences. The
//! choice is made once, before any domain exists, and never changes, so both sides of every pair
//! agree on it: they only run on a domain, which was created after the choice.
//!
//! Under loom both halves are SeqCst fences: loom cannot model `membarrier`, and a SeqCst fence on
//! the reader's side is exactly what the heavy half puts there. [`expedited`] is true under loom,
//! so that the models take the paths an expedited process takes.

#[cfg(loom)]
mod imp {
    use regio_loom_shim::sync::atomic::{fence, Ordering};

    pub(crate) fn init() {}

    /// Under loom the heavy half is taken to reach every reader, as `membarrier` does.
    pub(crate) fn expedited() -> bool {
        true
    }

    pub(crate) fn light() {
        // SeqCst: stands for the barrier that `heavy` puts on the reader's CPU (module docs).
        fence(Ordering::SeqCst);
    }

    pub(crate) fn light_expedited() {
        // SeqCst: as in `light`.
        fence(Ordering::SeqCst);
    }

    pub(crate) fn heavy() {
        // SeqCst: the writer half of the pair.
        fence(Ordering::SeqCst);
    }
}

#[cfg(not(loom))]
mod imp {
    use std::sync::atomic::{compiler_fence, fence, AtomicBool, Ordering};
    use std::sync::Once;

    /// Whether the process is registered for `MEMBARRIER_CMD_PRIVATE_EXPEDITED`.
    static EXPEDITED: AtomicBool = AtomicBool::new(false);
    static REGISTER: Once = Once::new();

    /// `membarrier(cmd, 0, 0)`.
    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: `membarrier` takes two integer arguments besides the command and touches no
        // memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        }
    }

    /// Registers the process for expedited private membarriers, once.
    pub(crate) fn init() {
        REGISTER.call_once(|| {
            let supported = membarrier(libc::MEMBARRIER_CMD_QUERY);
            let wanted = libc::c_long::from(
                libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED
                    | libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            );
            let ok = supported >= 0
                && supported & wanted == wanted
                && membarrier(libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
            // Relaxed: `call_once` orders this store before every later `init` returns, and
            // every reader and writer runs on a domain whose creation called `init`.
            EXPEDITED.store(ok, Ordering::Relaxed);
        });
    }

    /// Whether the heavy half uses `membarrier` (else both halves are SeqCst fences).
    #[inline(always)]
    pub(crate) fn expedited() -> bool {
        // Relaxed: set once, before any domain exists (see `init`).
        EXPEDITED.load(Ordering::Relaxed)
    }

    /// The reader half.
    #[inline(always)]
    pub(crate) fn light() {
        if expedited() {
            light_expedited();
        } else {
            // SeqCst: the reader half of a plain Dekker pair.
            fence(Ordering::SeqCst);
        }
    }

    /// The reader half for a caller that has seen [`expedited`] return true (it never changes
    /// back): no look at the flag.
    #[inline(always)]
    pub(crate) fn light_expedited() {
        // SeqCst: keeps the compiler from moving the caller's store after its next load; the
        // processor's reordering is the heavy half's business.
        compiler_fence(Ordering::SeqCst);
    }

    /// The writer half.
    pub(crate) fn heavy() {
        // SeqCst: orders the caller's earlier stores before the `membarrier` call and its later
        // loads after it (and is the whole writer half when not expedited).
        fence(Ordering::SeqCst);
        if expedited() {
            let ret = membarrier(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED);
            // The process is registered, so the kernel cannot refuse; if it did, readers would
            // be unprotected, so stop here.
            assert_eq!(
                ret, 0,
                "membarrier(PRIVATE_EXPEDITED) failed after registering"
            );
            // SeqCst: keeps the compiler from moving the caller's later loads before the call.
            compiler_fence(Ordering::SeqCst);
        }
    }
}

pub(crate) use imp::{expedited, heavy, init, light, light_expedited};
