//! File operations: read and write on fixed buffers, fsync, fdatasync, fallocate, fadvise,
//! splice, close.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use io_uring::{opcode, types};

use super::{BufUse, FileUse, Op, PostAction, Retained, Side, Target};

/// The file placeholder of an SQE built before its work queue is known.
pub(super) const UNSET: types::Fd = types::Fd(-1);

impl<B> Op<B> {
    /// Reads into `buf` (a registered slice) from `offset` of the work queue's file.
    pub fn read_fixed(buf: B, offset: u64, cookie: u64) -> Self {
        let e = opcode::ReadFixed::new(UNSET, std::ptr::null_mut(), 0, 0)
            .offset(offset)
            .build();
        Self::new(e, &"read_fixed", Side::Recv, cookie)
            .on(FileUse::Fd)
            .with_buf(buf, BufUse::Fixed)
    }

    /// Writes `buf` (a registered slice) at `offset` of the work queue's file.
    pub fn write_fixed(buf: B, offset: u64, cookie: u64) -> Self {
        let e = opcode::WriteFixed::new(UNSET, std::ptr::null(), 0, 0)
            .offset(offset)
            .build();
        Self::new(e, &"write_fixed", Side::Send, cookie)
            .on(FileUse::Fd)
            .with_buf(buf, BufUse::Fixed)
    }

    /// Flushes the work queue's file, data and metadata.
    pub fn fsync(cookie: u64) -> Self {
        let e = opcode::Fsync::new(UNSET).build();
        Self::new(e, &"fsync", Side::Send, cookie).on(FileUse::Fd)
    }

    /// Flushes the work queue's file data (and the metadata needed to read it back).
    pub fn fdatasync(cookie: u64) -> Self {
        let e = opcode::Fsync::new(UNSET)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        Self::new(e, &"fdatasync", Side::Send, cookie).on(FileUse::Fd)
    }

    /// `fallocate(2)` on the work queue's file.
    pub fn fallocate(mode: i32, offset: u64, len: u64, cookie: u64) -> Self {
        let e = opcode::Fallocate::new(UNSET, len)
            .offset(offset)
            .mode(mode)
            .build();
        Self::new(e, &"fallocate", Side::Send, cookie).on(FileUse::Fd)
    }

    /// `posix_fadvise(2)` on `len` bytes from `offset` of the work queue's file (`len` 0: to
    /// the end), with `advice` (`POSIX_FADV_WILLNEED` starts readahead).
    pub fn fadvise(advice: i32, offset: u64, len: u32, cookie: u64) -> Self {
        let e = opcode::Fadvise::new(UNSET, len as libc::off_t, advice)
            .offset(offset)
            .build();
        Self::new(e, &"fadvise", Side::Send, cookie).on(FileUse::Fd)
    }

    /// Moves up to `len` bytes from the work queue's file to `out` without a user-space copy.
    /// An offset of -1 means the current position (required for a pipe).
    pub fn splice(off_in: i64, out: Target, off_out: i64, len: u32, cookie: u64) -> Self {
        let e = match out {
            Target::Fd(o) => opcode::Splice::new(UNSET, off_in, types::Fd(o), off_out, len),
            Target::Fixed(slot) => {
                opcode::Splice::new(UNSET, off_in, types::Fixed(slot.0), off_out, len)
            }
        }
        .build();
        Self::new(e, &"splice", Side::Send, cookie)
            .on(FileUse::SpliceIn)
            .on_post(PostAction::SpliceOut(out))
    }

    /// [`splice`](Self::splice) into `out`, which the operation holds until its final
    /// completion: dropping the caller's handle while the kernel still has the splice cannot
    /// let the number name another file (the kernel may resolve it late, on an async worker).
    pub fn splice_into(
        off_in: i64,
        out: Arc<dyn AsRawFd + Send + Sync>,
        off_out: i64,
        len: u32,
        cookie: u64,
    ) -> Self {
        let keep = Box::new(Retained::Fd(out));
        let Retained::Fd(out) = &*keep else {
            unreachable!("made just above")
        };
        let fd = out.as_raw_fd();
        Self::splice(off_in, Target::Fd(fd), off_out, len, cookie).retaining(keep)
    }

    /// Closes the work queue's fixed-file slot. On a work queue of a plain fd it is rejected
    /// ([`DescriptorError::WrongQueue`](crate::DescriptorError::WrongQueue)): that fd is the
    /// queue's own duplicate, closed when the queue is removed.
    pub fn close(cookie: u64) -> Self {
        let e = opcode::Close::new(UNSET).build();
        Self::new(e, &"close", Side::Send, cookie)
            .on(FileUse::Close)
            .on_post(PostAction::Close)
    }
}
