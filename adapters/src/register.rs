//! `io_uring_register(2)` calls made on a ring's fd, without owning the ring.
//!
//! Registration changes (buffers, files, provided-buffer rings) are system calls on the ring's
//! file; the kernel serialises them with submission under its own lock. Making them through the
//! fd, rather than through the io-uring crate's `Submitter` (which lives inside the state a
//! ring's owner holds), means a registration never waits for a ring's owner: a thread that owns
//! a ring (it is reaping, or holds a [`Batch`](crate::Batch)) may grow a pool, or drop the last
//! message of one, without waiting for itself. Callers serialise registrations with the tables'
//! write lock, which nobody holds while waiting for a ring.
//!
//! The argument structs repeat the kernel's (include/uapi/linux/io_uring.h); their sizes are
//! checked below against the kernel ABI.

use std::io;
use std::os::fd::RawFd;

/// `IORING_REGISTER_FILES_UPDATE`.
const FILES_UPDATE: u32 = 6;
/// `IORING_REGISTER_BUFFERS_UPDATE`.
const BUFFERS_UPDATE: u32 = 16;
/// `IORING_REGISTER_PBUF_RING`.
const PBUF_RING: u32 = 22;
/// `IORING_UNREGISTER_PBUF_RING`.
const UNREGISTER_PBUF_RING: u32 = 23;
/// `IORING_REGISTER_CLONE_BUFFERS`.
const CLONE_BUFFERS: u32 = 30;
/// `IORING_REGISTER_DST_REPLACE`: a clone replaces the destination's buffers in its range.
const CLONE_DST_REPLACE: u32 = 1 << 1;

/// `struct io_uring_rsrc_update2`.
#[repr(C)]
struct RsrcUpdate2 {
    offset: u32,
    resv: u32,
    data: u64,
    tags: u64,
    nr: u32,
    resv2: u32,
}

/// `struct io_uring_files_update`.
#[repr(C)]
struct FilesUpdate {
    offset: u32,
    resv: u32,
    fds: u64,
}

/// `struct io_uring_clone_buffers`.
#[repr(C)]
struct CloneBuffers {
    src_fd: u32,
    flags: u32,
    src_off: u32,
    dst_off: u32,
    nr: u32,
    pad: [u32; 3],
}

/// `struct io_uring_buf_reg`.
#[repr(C)]
struct BufReg {
    ring_addr: u64,
    ring_entries: u32,
    bgid: u16,
    flags: u16,
    resv: [u64; 3],
}

const _: () = assert!(std::mem::size_of::<RsrcUpdate2>() == 32);
const _: () = assert!(std::mem::size_of::<FilesUpdate>() == 16);
const _: () = assert!(std::mem::size_of::<CloneBuffers>() == 32);
const _: () = assert!(std::mem::size_of::<BufReg>() == 40);

/// One `io_uring_register` call; retried on `EINTR`.
///
/// # Safety
///
/// `arg` must be what `opcode` expects with `nr` (the kernel reads, and for some opcodes keeps
/// using, the memory it points at).
unsafe fn register(fd: RawFd, opcode: u32, arg: *const libc::c_void, nr: u32) -> io::Result<i32> {
    loop {
        // SAFETY: the caller's promise about `arg` and `nr`; `fd` is only a number to the kernel.
        let rc = unsafe { libc::syscall(libc::SYS_io_uring_register, fd, opcode, arg, nr) };
        if rc >= 0 {
            return Ok(rc as i32);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Installs `iov` as fixed buffer `index` of the ring `fd` (an empty `iov` removes it).
///
/// # Safety
///
/// The memory `iov` describes must stay valid until the buffer is replaced or removed, or the
/// ring is closed.
pub(crate) unsafe fn buffers_update(fd: RawFd, index: u32, iov: &libc::iovec) -> io::Result<()> {
    let up = RsrcUpdate2 {
        offset: index,
        resv: 0,
        data: iov as *const libc::iovec as u64,
        tags: 0,
        nr: 1,
        resv2: 0,
    };
    // SAFETY: `up` names one iovec, which outlives the call; the memory it describes is the
    // caller's promise. The size of `up` is the argument count this opcode takes.
    unsafe {
        register(
            fd,
            BUFFERS_UPDATE,
            (&up as *const RsrcUpdate2).cast(),
            std::mem::size_of::<RsrcUpdate2>() as u32,
        )
    }
    .map(drop)
}

/// Removes fixed buffer `index` of the ring `fd`.
pub(crate) fn buffers_remove(fd: RawFd, index: u32) -> io::Result<()> {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    // SAFETY: an empty iovec hands the kernel no memory.
    unsafe { buffers_update(fd, index, &empty) }
}

/// Copies fixed buffer `index` of ring `src` into the same index of ring `dst`, replacing what
/// is there (Linux 6.12).
pub(crate) fn clone_buffer(dst: RawFd, src: RawFd, index: u32) -> io::Result<()> {
    let arg = CloneBuffers {
        src_fd: src as u32,
        flags: CLONE_DST_REPLACE,
        src_off: index,
        dst_off: index,
        nr: 1,
        pad: [0; 3],
    };
    // SAFETY: the kernel only reads `arg`; the memory it clones is already registered on `src`,
    // whose registration keeps it valid.
    unsafe { register(dst, CLONE_BUFFERS, (&arg as *const CloneBuffers).cast(), 1) }.map(drop)
}

/// Installs `file` (-1: empty) in fixed-file slot `slot` of the ring `fd`.
pub(crate) fn files_update(fd: RawFd, slot: u32, file: RawFd) -> io::Result<()> {
    let fds = [file];
    let up = FilesUpdate {
        offset: slot,
        resv: 0,
        fds: fds.as_ptr() as u64,
    };
    // SAFETY: `up` names one fd, read during the call; the kernel takes its own reference.
    unsafe { register(fd, FILES_UPDATE, (&up as *const FilesUpdate).cast(), 1) }.map(drop)
}

/// Registers `entries` provided-buffer ring entries at `addr` as buffer group `bgid` of the
/// ring `fd`.
///
/// # Safety
///
/// The `entries * 16` bytes at `addr` must stay valid until the group is unregistered or the
/// ring is closed.
pub(crate) unsafe fn pbuf_register(
    fd: RawFd,
    addr: u64,
    entries: u16,
    bgid: u16,
) -> io::Result<()> {
    let arg = BufReg {
        ring_addr: addr,
        ring_entries: u32::from(entries),
        bgid,
        flags: 0,
        resv: [0; 3],
    };
    // SAFETY: the caller's promise about the ring memory; `arg` is read during the call.
    unsafe { register(fd, PBUF_RING, (&arg as *const BufReg).cast(), 1) }.map(drop)
}

/// Unregisters buffer group `bgid` of the ring `fd`.
pub(crate) fn pbuf_unregister(fd: RawFd, bgid: u16) -> io::Result<()> {
    let arg = BufReg {
        ring_addr: 0,
        ring_entries: 0,
        bgid,
        flags: 0,
        resv: [0; 3],
    };
    // SAFETY: `arg` is read during the call and hands the kernel no memory.
    unsafe { register(fd, UNREGISTER_PBUF_RING, (&arg as *const BufReg).cast(), 1) }.map(drop)
}
