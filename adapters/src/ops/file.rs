//! File operations: read and write on fixed buffers, fsync, fdatasync, fallocate, splice, close.

use super::{Kind, Op, Target};

impl<B> Op<B> {
    /// Reads into `buf` (a registered slice) from `offset` of the work queue's file.
    pub fn read_fixed(buf: B, offset: u64, cookie: u64) -> Self {
        Self::new(Kind::ReadFixed { buf, offset }, cookie)
    }

    /// Writes `buf` (a registered slice) at `offset` of the work queue's file.
    pub fn write_fixed(buf: B, offset: u64, cookie: u64) -> Self {
        Self::new(Kind::WriteFixed { buf, offset }, cookie)
    }

    /// Flushes the work queue's file, data and metadata.
    pub fn fsync(cookie: u64) -> Self {
        Self::new(Kind::Fsync { datasync: false }, cookie)
    }

    /// Flushes the work queue's file data (and the metadata needed to read it back).
    pub fn fdatasync(cookie: u64) -> Self {
        Self::new(Kind::Fsync { datasync: true }, cookie)
    }

    /// `fallocate(2)` on the work queue's file.
    pub fn fallocate(mode: i32, offset: u64, len: u64, cookie: u64) -> Self {
        Self::new(Kind::Fallocate { mode, offset, len }, cookie)
    }

    /// Moves up to `len` bytes from the work queue's file to `out` without a user-space copy.
    /// An offset of -1 means the current position (required for a pipe).
    pub fn splice(off_in: i64, out: Target, off_out: i64, len: u32, cookie: u64) -> Self {
        Self::new(
            Kind::Splice {
                out,
                off_in,
                off_out,
                len,
            },
            cookie,
        )
    }

    /// Closes the work queue's file: the fd, or the fixed-file slot.
    pub fn close(cookie: u64) -> Self {
        Self::new(Kind::Close, cookie)
    }
}
