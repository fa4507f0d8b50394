//! The registrations regio uses, each tried for real on small, short-lived rings.

use std::os::fd::AsRawFd;

use io_uring::IoUring;
use regio_pool::{Region, RegionOptions};
use serde::Serialize;

use super::outcome::{describe, Outcome};
use super::RING_ENTRIES;

/// Bytes in the probe's buffer (a [`Region`], so at least one page).
const BUF_LEN: usize = 4096;
/// Entries in the probe's provided-buffer ring (each 16 bytes, so the ring fits in `BUF_LEN`).
const PBUF_ENTRIES: u16 = 8;
/// The buffer group id of the probe's provided-buffer ring.
const PBUF_GROUP: u16 = 0;
/// Slots in the probe's sparse fixed-file table.
const SPARSE_FILES: u32 = 16;

/// The registrations regio relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registrations {
    /// `IORING_REGISTER_BUFFERS` of one page: the basis of `pool::Region`.
    pub fixed_buffers: Outcome,
    /// `IORING_REGISTER_CLONE_BUFFERS` (Linux 6.12): a second ring takes the first ring's
    /// registered buffers without pinning them again.
    pub clone_buffers: Outcome,
    /// `IORING_REGISTER_PBUF_RING` (Linux 5.19) with a ring in this process's memory.
    pub pbuf_ring: Outcome,
    /// `IORING_REGISTER_FILES2` with `IORING_RSRC_REGISTER_SPARSE` (Linux 5.19): an empty
    /// fixed-file table that `ACCEPT` and `FILES_UPDATE` fill.
    pub sparse_files: Outcome,
}

impl Registrations {
    /// Tries each registration on fresh rings.
    pub(super) fn try_all() -> Self {
        let page = match Region::map(BUF_LEN, RegionOptions::default()) {
            Ok(page) => page,
            Err(e) => {
                let reason = format!("mmap of one page failed: {e}");
                return Registrations {
                    sparse_files: try_sparse_files(),
                    ..Registrations::not_tried(&reason)
                };
            }
        };
        let (fixed_buffers, clone_buffers) = try_buffers(&page);
        Registrations {
            fixed_buffers,
            clone_buffers,
            pbuf_ring: try_pbuf_ring(&page),
            sparse_files: try_sparse_files(),
        }
    }

    /// Every registration, none tried, for `reason`.
    pub(super) fn not_tried(reason: &str) -> Self {
        Registrations {
            fixed_buffers: Outcome::not_tried(reason),
            clone_buffers: Outcome::not_tried(reason),
            pbuf_ring: Outcome::not_tried(reason),
            sparse_files: Outcome::not_tried(reason),
        }
    }
}

/// Registers `page` as a fixed buffer on one ring, then clones that ring's buffers into another.
fn try_buffers(page: &Region) -> (Outcome, Outcome) {
    let rings = IoUring::new(RING_ENTRIES).and_then(|src| Ok((src, IoUring::new(RING_ENTRIES)?)));
    let (src, dst) = match rings {
        Ok(rings) => rings,
        Err(e) => {
            let reason = format!("io_uring_setup failed: {}", describe(&e));
            return (Outcome::not_tried(&reason), Outcome::not_tried(reason));
        }
    };
    let iov = [libc::iovec {
        iov_base: page.base().as_ptr().cast(),
        iov_len: page.len(),
    }];
    // SAFETY: the iovec covers exactly the mapping `page` owns, and `page` outlives both rings:
    // it is borrowed for this whole function, and `src` and `dst` are dropped at its end.
    let registered = unsafe { src.submitter().register_buffers(&iov) };
    if let Err(e) = registered {
        let reason = "there is no registered buffer to clone";
        return (Outcome::rejected(&e), Outcome::not_tried(reason));
    }
    let cloned = dst.submitter().register_buffers_clone(src.as_raw_fd());
    (Outcome::Supported, Outcome::of(cloned))
}

/// Registers a provided-buffer ring that lives in `page`, then unregisters it.
fn try_pbuf_ring(page: &Region) -> Outcome {
    let ring = match IoUring::new(RING_ENTRIES) {
        Ok(ring) => ring,
        Err(e) => return Outcome::not_tried(format!("io_uring_setup failed: {}", describe(&e))),
    };
    let submitter = ring.submitter();
    // SAFETY: the ring of `PBUF_ENTRIES` 16-byte entries fits in the page-aligned page, which
    // outlives the registration: it is unregistered below, and `ring` is dropped before `page`.
    let registered = unsafe {
        submitter.register_buf_ring_with_flags(
            page.base().as_ptr() as u64,
            PBUF_ENTRIES,
            PBUF_GROUP,
            0,
        )
    };
    match registered {
        Ok(()) => match submitter.unregister_buf_ring(PBUF_GROUP) {
            Ok(()) => Outcome::Supported,
            Err(e) => Outcome::rejected(&e),
        },
        Err(e) => Outcome::rejected(&e),
    }
}

/// Registers an empty fixed-file table.
fn try_sparse_files() -> Outcome {
    match IoUring::new(RING_ENTRIES) {
        Ok(ring) => Outcome::of(ring.submitter().register_files_sparse(SPARSE_FILES)),
        Err(e) => Outcome::not_tried(format!("io_uring_setup failed: {}", describe(&e))),
    }
}
