//! Filling in an [`Sqe`] (the SQE view defined with the rest of the io_uring ABI in
//! `crate::uring_abi`) at post time.
//!
//! Operations are built with the io-uring crate's opcode builders when they are made, then
//! viewed as this plain struct so that posting only copies the SQE and writes the few fields
//! that depend on the work queue and the buffer (the file, the address, the length, the buffer
//! index and `user_data`), with no per-opcode dispatch.

use crate::uring_abi::{
    Sqe, IOSQE_FIXED_FILE as FIXED_FILE, SPLICE_F_FD_IN_FIXED as SPLICE_FD_IN_FIXED,
};

impl Sqe {
    /// Copies the SQE into `place` eight bytes at a time, with `user_data` in place of its own
    /// (word 4 is `user_data`: `uring_abi` asserts the offset), so that the slot is written
    /// once.
    ///
    /// An operation's SQE is usually read here right after its constructor wrote it, with
    /// stores of one to eight bytes. A copy in 16-byte vector loads (what a plain copy of 64
    /// bytes compiles to) would straddle those stores, and a load that straddles stores still
    /// in the store buffer stalls until they retire (no store-to-load forwarding): that stall
    /// was the largest single cost of a post. Volatile *writes* keep the compiler from merging
    /// the copy back into vector moves; the reads stay plain, so that when the constructor is
    /// inlined they fold into the constants it stored (eight stores of immediates, and no image
    /// of the SQE on the stack to read back).
    #[inline(always)]
    pub fn copy_to(&self, place: &mut Sqe, user_data: u64) {
        const USER_DATA_WORD: usize = std::mem::offset_of!(Sqe, user_data) / 8;
        let src = (self as *const Sqe).cast::<u64>();
        let dst = (place as *mut Sqe).cast::<u64>();
        for i in 0..8 {
            let word = if i == USER_DATA_WORD {
                user_data
            } else {
                // SAFETY: both are 64-byte, 8-aligned `Sqe`s of plain integers with no padding,
                // so word `i < 8` is in bounds, aligned and initialised in `self`.
                unsafe { src.add(i).read() }
            };
            // SAFETY: as above, and writing any value to a word of `place` (borrowed mutably,
            // so unaliased) leaves a valid `Sqe`.
            unsafe { dst.add(i).write_volatile(word) };
        }
    }

    /// Points the SQE's file at `target`.
    #[inline(always)]
    fn set_file(&mut self, target: super::Target) {
        match target {
            super::Target::Fd(fd) => {
                self.fd = fd;
                self.flags &= !FIXED_FILE;
            }
            super::Target::Fixed(slot) => {
                self.fd = slot.0 as i32;
                self.flags |= FIXED_FILE;
            }
        }
    }

    /// Fills in what posting knows: the work queue's file, where `file` says, and the resolved
    /// buffer, as `how` says.
    #[inline(always)]
    pub fn fill(
        &mut self,
        file: super::FileUse,
        target: super::Target,
        resolved: Option<super::Resolved>,
        how: super::BufUse,
    ) {
        match file {
            super::FileUse::Fd => self.set_file(target),
            super::FileUse::None => {}
            super::FileUse::SpliceIn => self.set_splice_in(target),
            super::FileUse::Close => self.set_close(target),
        }
        if let Some(r) = resolved {
            self.set_buf(r, how);
        }
    }

    /// Points the SQE at the resolved buffer: its address and length, and for a fixed-buffer
    /// operation its registration index. An operation that carries its buffer without naming
    /// it in the SQE (`BufUse::None`: a nop's message, a sendmsg whose iovec points at it)
    /// keeps its `addr` and `len`, which mean something else there.
    #[inline(always)]
    fn set_buf(&mut self, r: super::Resolved, how: super::BufUse) {
        if how == super::BufUse::None {
            return;
        }
        self.addr = r.addr as u64;
        self.len = r.len;
        if how == super::BufUse::Fixed {
            self.buf_index = r.index;
        }
    }

    /// Points a splice's input at `target`.
    fn set_splice_in(&mut self, target: super::Target) {
        match target {
            super::Target::Fd(fd) => {
                self.fd_in = fd;
                self.op_flags &= !SPLICE_FD_IN_FIXED;
            }
            super::Target::Fixed(slot) => {
                self.fd_in = slot.0 as i32;
                self.op_flags |= SPLICE_FD_IN_FIXED;
            }
        }
    }

    /// Points a close at `target`: a plain fd in `fd`, or a fixed slot as `file_index` (slot
    /// plus one) with `fd` zero.
    fn set_close(&mut self, target: super::Target) {
        match target {
            super::Target::Fd(fd) => {
                self.fd = fd;
                self.fd_in = 0;
            }
            super::Target::Fixed(slot) => {
                self.fd = 0;
                self.fd_in = slot.0 as i32 + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BufUse, FileUse, Resolved, Target};
    use super::Sqe;

    #[test]
    fn a_buffer_the_sqe_does_not_name_leaves_addr_and_len_alone() {
        let hdr = 0x5000 as *const libc::msghdr;
        let e = io_uring::opcode::SendMsg::new(io_uring::types::Fd(-1), hdr).build();
        let mut s = Sqe::from_entry(e);
        let before = (s.addr, s.len, s.buf_index);
        let r = Resolved {
            addr: 0x7000_1234 as *mut u8,
            len: 300,
            index: 9,
        };
        s.fill(FileUse::Fd, Target::Fd(3), Some(r), BufUse::None);
        assert_eq!((s.addr, s.len, s.buf_index), before);
        assert_eq!((s.addr, s.fd), (0x5000, 3));
    }
}
