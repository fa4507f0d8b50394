//! The parts of the io_uring ABI this crate reads and writes itself, beside the io-uring crate,
//! and every assumption it makes about that crate's types. One module, so that a new io-uring
//! version or a new kernel header is checked in one place.
//!
//! - [`Sqe`]: the kernel's `struct io_uring_sqe` with its unions named. Operations are built
//!   with the io-uring crate's builders and then viewed as an `Sqe` ([`Sqe::from_entry`]), and
//!   staged `Sqe`s are pushed as the crate's entries ([`Sqe::as_entries`]): `squeue::Entry` is
//!   `#[repr(C)]` around the kernel struct.
//! - [`Params`]: the kernel's `struct io_uring_params` as it was filled in at setup, read through
//!   the io-uring crate's [`Parameters`] ([`params`]), which is `#[repr(transparent)]` around
//!   it; the SQ offsets in it locate the head and tail for the second mapping of a ring's SQ
//!   ([`OFF_SQ_RING`], [`OFF_SQES`], used by `ring::sq`), and the CQ offsets the head, tail
//!   and CQE array for the second mapping of its CQ ([`OFF_CQ_RING`], used by `ring::cq_map`).
//!
//! The io-uring crate keeps its bindgen module (`io_uring::sys`) private, so the layouts are
//! checked against the kernel's UAPI header (include/uapi/linux/io_uring.h) with `offset_of!`
//! and against the crate's public types by size and alignment, at compile time; a unit test
//! compares the `Params` view with the crate's own accessors on a live ring. The workspace pins
//! io-uring to the version these checks were verified with (`=0.7.15`).

use std::mem::{align_of, offset_of, size_of};

use io_uring::squeue::Entry;
use io_uring::{IoUring, Parameters};

/// `IOSQE_FIXED_FILE`: `fd` is a slot of the fixed-file table.
pub(crate) const IOSQE_FIXED_FILE: u8 = 1 << 0;
/// `SPLICE_F_FD_IN_FIXED`: `splice_fd_in` is a slot of the fixed-file table.
pub(crate) const SPLICE_F_FD_IN_FIXED: u32 = 1 << 31;

/// `IORING_SQ_CQ_OVERFLOW`: the SQ ring's flag that the kernel holds CQEs in its overflow list.
pub(crate) const SQ_CQ_OVERFLOW: u32 = 1 << 1;

/// `IORING_OFF_SQ_RING`: where the SQ ring (head, tail, flags, array) is mapped from a ring's fd.
pub(crate) const OFF_SQ_RING: libc::off_t = 0;
/// `IORING_OFF_CQ_RING`: where the CQ ring (head, tail, CQE array) is mapped from a ring's fd
/// (the same memory as the SQ ring's mapping on kernels with `IORING_FEAT_SINGLE_MMAP`).
pub(crate) const OFF_CQ_RING: libc::off_t = 0x800_0000;
/// `IORING_OFF_SQES`: where the SQE array is mapped from a ring's fd.
pub(crate) const OFF_SQES: libc::off_t = 0x1000_0000;

/// The kernel's `struct io_uring_sqe`, with the unions named by the member this crate uses.
#[repr(C, align(8))]
#[derive(Default)]
pub(crate) struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub ioprio: u16,
    pub fd: i32,
    pub off: u64,
    pub addr: u64,
    pub len: u32,
    /// `rw_flags`, `msg_flags`, `splice_flags`, ...: the opcode's own flags.
    pub op_flags: u32,
    pub user_data: u64,
    pub buf_index: u16,
    pub personality: u16,
    /// `splice_fd_in`, `file_index`, ...
    pub fd_in: i32,
    pub addr3: u64,
    pub pad: u64,
}

// The kernel's offsets (include/uapi/linux/io_uring.h).
const _: () = {
    assert!(offset_of!(Sqe, opcode) == 0);
    assert!(offset_of!(Sqe, flags) == 1);
    assert!(offset_of!(Sqe, ioprio) == 2);
    assert!(offset_of!(Sqe, fd) == 4);
    assert!(offset_of!(Sqe, off) == 8);
    assert!(offset_of!(Sqe, addr) == 16);
    assert!(offset_of!(Sqe, len) == 24);
    assert!(offset_of!(Sqe, op_flags) == 28);
    assert!(offset_of!(Sqe, user_data) == 32);
    assert!(offset_of!(Sqe, buf_index) == 40);
    assert!(offset_of!(Sqe, personality) == 42);
    assert!(offset_of!(Sqe, fd_in) == 44);
    assert!(offset_of!(Sqe, addr3) == 48);
    assert!(offset_of!(Sqe, pad) == 56);
    assert!(size_of::<Sqe>() == 64);
    // The io-uring crate's entry is the same 64 bytes.
    assert!(size_of::<Entry>() == size_of::<Sqe>());
    assert!(align_of::<Entry>() == align_of::<Sqe>());
};

impl Sqe {
    /// Views an SQE built by the io-uring crate.
    #[inline(always)]
    pub fn from_entry(entry: Entry) -> Self {
        // SAFETY: `Entry` is `#[repr(C)]` around the bindgen `io_uring_sqe`, itself `#[repr(C)]`
        // with the kernel's layout, which `Sqe` repeats field for field (the offsets, size and
        // alignment are checked above). Every byte of a built entry is initialised (the
        // builders start from a zeroed SQE), and every bit pattern is a valid `Sqe`.
        unsafe { std::mem::transmute::<Entry, Sqe>(entry) }
    }

    /// Views staged SQEs as the io-uring crate's entries, to push them into the SQ.
    #[inline]
    pub fn as_entries(sqes: &[Sqe]) -> &[Entry] {
        // SAFETY: `Sqe` and `Entry` have the same size, alignment and field layout (see
        // `from_entry`), so a slice of one is a valid slice of the other, of the same length.
        unsafe { std::slice::from_raw_parts(sqes.as_ptr().cast::<Entry>(), sqes.len()) }
    }
}

/// The kernel's `struct io_sqring_offsets`. It repeats the layout whole; only some fields are
/// read.
#[repr(C)]
#[allow(dead_code)]
pub(crate) struct SqOffsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub flags: u32,
    pub dropped: u32,
    pub array: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

/// The kernel's `struct io_uring_params`, as it was filled in at setup. It repeats the layout
/// whole; only some fields are read.
#[repr(C)]
#[allow(dead_code)]
pub(crate) struct Params {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub flags: u32,
    pub sq_thread_cpu: u32,
    pub sq_thread_idle: u32,
    pub features: u32,
    pub wq_fd: u32,
    pub resv: [u32; 3],
    pub sq_off: SqOffsets,
    pub cq_off: CqOffsets,
}

/// The kernel's `struct io_cqring_offsets`: where the CQ ring's fields lie in its mapping.
#[repr(C)]
#[allow(dead_code)]
pub(crate) struct CqOffsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub overflow: u32,
    pub cqes: u32,
    pub flags: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

// The kernel's offsets (include/uapi/linux/io_uring.h).
const _: () = {
    assert!(offset_of!(SqOffsets, head) == 0);
    assert!(offset_of!(SqOffsets, tail) == 4);
    assert!(offset_of!(SqOffsets, flags) == 16);
    assert!(offset_of!(SqOffsets, array) == 24);
    assert!(offset_of!(SqOffsets, user_addr) == 32);
    assert!(size_of::<SqOffsets>() == 40);
    assert!(offset_of!(Params, sq_entries) == 0);
    assert!(offset_of!(Params, cq_entries) == 4);
    assert!(offset_of!(Params, features) == 20);
    assert!(offset_of!(Params, sq_off) == 40);
    assert!(offset_of!(Params, cq_off) == 80);
    assert!(offset_of!(CqOffsets, head) == 0);
    assert!(offset_of!(CqOffsets, tail) == 4);
    assert!(offset_of!(CqOffsets, ring_mask) == 8);
    assert!(offset_of!(CqOffsets, cqes) == 20);
    assert!(size_of::<CqOffsets>() == 40);
    // The io-uring crate's CQE is `#[repr(C)]` around the kernel's 16-byte `io_uring_cqe`
    // (no ring here is set up with `IORING_SETUP_CQE32`).
    assert!(size_of::<io_uring::cqueue::Entry>() == 16);
    assert!(align_of::<io_uring::cqueue::Entry>() == 8);
    assert!(size_of::<Params>() == 120);
    // The io-uring crate's `Parameters` wraps exactly this struct.
    assert!(size_of::<Parameters>() == size_of::<Params>());
    assert!(align_of::<Parameters>() <= align_of::<Params>());
};

/// The setup parameters of `uring`, as the kernel filled them in.
pub(crate) fn params(uring: &IoUring) -> &Params {
    // SAFETY: `Parameters` is `#[repr(transparent)]` around the kernel's `io_uring_params`
    // (io-uring 0.7, pinned), which `Params` repeats field for field (offsets and size checked
    // above; its alignment is no stricter than that of the value it views), and the kernel
    // filled it in at setup. The reference lives as long as the borrow of `uring`.
    unsafe { &*(uring.params() as *const Parameters).cast::<Params>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_params_view_agrees_with_the_crates_accessors() {
        let uring = match IoUring::new(8) {
            Ok(uring) => uring,
            Err(e) => return regio_testkit::skip(&format!("io_uring_setup: {e}")),
        };
        let (ours, theirs) = (params(&uring), uring.params());
        assert_eq!(ours.sq_entries, theirs.sq_entries());
        assert_eq!(ours.cq_entries, theirs.cq_entries());
        assert_eq!(ours.sq_off.tail.max(ours.sq_off.head) % 4, 0);
        assert!(ours.sq_off.array > ours.sq_off.tail);
    }

    #[test]
    fn an_entry_viewed_as_an_sqe_keeps_its_fields() {
        let entry = io_uring::opcode::Nop::new().build().user_data(0xfeed);
        let sqe = Sqe::from_entry(entry);
        assert_eq!(
            (sqe.opcode, sqe.user_data),
            (io_uring::opcode::Nop::CODE, 0xfeed)
        );
        assert_eq!(
            Sqe::as_entries(std::slice::from_ref(&sqe))[0].get_user_data(),
            0xfeed
        );
    }
}
