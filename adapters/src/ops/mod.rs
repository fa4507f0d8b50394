//! The operations a work queue can post: one small constructor per opcode.
//!
//! An [`Op`] names no file: it acts on its work queue's socket or file, as a Registered I/O
//! request does on its request queue's socket. Buffers are owned [`IoBuf`](crate::IoBuf)s; the
//! operation holds them until its final completion and hands them back then. Each operation
//! carries a caller-chosen `cookie` that comes back in its completions.
//!
//! Constructors live by area: [`file`](mod@file) (read/write fixed, fsync, fdatasync, fallocate, splice,
//! close), [`net`] (send, recv, send_zc, accept, connect) and [`control`] (nop, timeout, cancel,
//! msg_ring, share_file). A pool message's descriptor becomes an operation with
//! [`Op::from_message`].

pub mod control;
pub mod file;
mod message;
pub mod net;

use std::any::Any;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue::Entry, types};

use crate::error::DescriptorError;

pub use regio_pool::FileSlot;

/// What a work queue, or the output of a splice, acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A plain file descriptor, owned by the caller, which must keep it open while the work
    /// queue exists.
    Fd(RawFd),
    /// A slot in the adapter's fixed-file table.
    Fixed(FileSlot),
}

/// Which depth credit an operation consumes: Registered I/O's send and receive queue depths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Writes, sends, connects, syncs and control operations.
    Send,
    /// Reads, receives and accepts.
    Recv,
}

/// One operation, ready to post on a [`WorkQueue`](crate::WorkQueue).
pub struct Op<B> {
    pub(crate) kind: Kind<B>,
    pub(crate) cookie: u64,
}

impl<B> std::fmt::Debug for Op<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("op", &self.name())
            .field("cookie", &self.cookie)
            .finish()
    }
}

pub(crate) enum Kind<B> {
    Nop,
    ReadFixed {
        buf: B,
        offset: u64,
    },
    WriteFixed {
        buf: B,
        offset: u64,
    },
    Send {
        buf: B,
        flags: i32,
    },
    Recv {
        buf: B,
        flags: i32,
    },
    SendZc {
        buf: B,
        flags: i32,
    },
    Accept {
        slot: FileSlot,
    },
    AcceptMulti,
    RecvMulti {
        group: u16,
    },
    Connect {
        addr: Box<net::SockAddr>,
    },
    Splice {
        out: Target,
        off_in: i64,
        off_out: i64,
        len: u32,
    },
    Fsync {
        datasync: bool,
    },
    Fallocate {
        mode: i32,
        offset: u64,
        len: u64,
    },
    Close,
    Timeout {
        ts: Box<types::Timespec>,
    },
    Cancel {
        target: u64,
    },
    MsgRing {
        keep: control::RingRef,
        cookie: u64,
        result: i32,
    },
    ShareFile {
        keep: control::RingRef,
        slot: FileSlot,
        dest: FileSlot,
    },
}

/// What the SQE needs from the adapter's tables: a resolved buffer.
pub(crate) struct Resolved {
    pub addr: *mut u8,
    pub len: u32,
    pub index: u16,
}

/// What an operation keeps alive until its final completion, besides its buffer.
pub(crate) type Keep = Option<Box<dyn Any + Send>>;

impl<B> Op<B> {
    pub(crate) fn new(kind: Kind<B>, cookie: u64) -> Self {
        Self { kind, cookie }
    }

    /// The caller's cookie.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// The opcode's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match &self.kind {
            Kind::Nop => "nop",
            Kind::ReadFixed { .. } => "read_fixed",
            Kind::WriteFixed { .. } => "write_fixed",
            Kind::Send { .. } => "send",
            Kind::Recv { .. } => "recv",
            Kind::SendZc { .. } => "send_zc",
            Kind::Accept { .. } => "accept_direct",
            Kind::AcceptMulti => "accept_multishot",
            Kind::RecvMulti { .. } => "recv_multishot",
            Kind::Connect { .. } => "connect",
            Kind::Splice { .. } => "splice",
            Kind::Fsync { datasync: false } => "fsync",
            Kind::Fsync { datasync: true } => "fdatasync",
            Kind::Fallocate { .. } => "fallocate",
            Kind::Close => "close",
            Kind::Timeout { .. } => "timeout",
            Kind::Cancel { .. } => "async_cancel",
            Kind::MsgRing { .. } => "msg_ring",
            Kind::ShareFile { .. } => "share_file",
        }
    }

    /// The depth credit this operation consumes.
    pub fn side(&self) -> Side {
        match &self.kind {
            Kind::ReadFixed { .. }
            | Kind::Recv { .. }
            | Kind::RecvMulti { .. }
            | Kind::Accept { .. }
            | Kind::AcceptMulti => Side::Recv,
            _ => Side::Send,
        }
    }

    /// The io_uring opcode, for the kernel-support probe.
    pub(crate) fn opcode(&self) -> u8 {
        match &self.kind {
            Kind::Nop => opcode::Nop::CODE,
            Kind::ReadFixed { .. } => opcode::ReadFixed::CODE,
            Kind::WriteFixed { .. } => opcode::WriteFixed::CODE,
            Kind::Send { .. } => opcode::Send::CODE,
            Kind::Recv { .. } | Kind::RecvMulti { .. } => opcode::Recv::CODE,
            Kind::SendZc { .. } => opcode::SendZc::CODE,
            Kind::Accept { .. } | Kind::AcceptMulti => opcode::Accept::CODE,
            Kind::Connect { .. } => opcode::Connect::CODE,
            Kind::Splice { .. } => opcode::Splice::CODE,
            Kind::Fsync { .. } => opcode::Fsync::CODE,
            Kind::Fallocate { .. } => opcode::Fallocate::CODE,
            Kind::Close => opcode::Close::CODE,
            Kind::Timeout { .. } => opcode::Timeout::CODE,
            Kind::Cancel { .. } => opcode::AsyncCancel::CODE,
            Kind::MsgRing { .. } => opcode::MsgRingData::CODE,
            Kind::ShareFile { .. } => opcode::MsgRingSendFd::CODE,
        }
    }

    /// Takes the buffer out, dropping the rest.
    pub(crate) fn into_buf(self) -> Option<B> {
        match self.kind {
            Kind::ReadFixed { buf, .. }
            | Kind::WriteFixed { buf, .. }
            | Kind::Send { buf, .. }
            | Kind::Recv { buf, .. }
            | Kind::SendZc { buf, .. } => Some(buf),
            _ => None,
        }
    }

    /// The buffer this operation carries, if any.
    pub(crate) fn buf(&self) -> Option<&B> {
        match &self.kind {
            Kind::ReadFixed { buf, .. }
            | Kind::WriteFixed { buf, .. }
            | Kind::Send { buf, .. }
            | Kind::Recv { buf, .. }
            | Kind::SendZc { buf, .. } => Some(buf),
            _ => None,
        }
    }

    /// Builds the SQE (without `user_data`) and splits off what must live until the final CQE.
    ///
    /// `fd` is the work queue's target; `buf` is the resolved buffer when the op has one.
    /// Cancel is built by the ring, which knows the target's `user_data`.
    #[inline]
    pub(crate) fn prepare(
        self,
        fd: Target,
        buf: Option<Resolved>,
    ) -> Result<(Entry, Option<B>, Keep), DescriptorError> {
        let need = || {
            buf.as_ref()
                .ok_or(DescriptorError::WrongQueue("missing buffer"))
        };
        macro_rules! on {
            ($build:expr) => {
                match fd {
                    Target::Fd(fd) => {
                        let f = types::Fd(fd);
                        $build(f)
                    }
                    Target::Fixed(FileSlot(slot)) => {
                        let f = types::Fixed(slot);
                        $build(f)
                    }
                }
            };
        }
        Ok(match self.kind {
            Kind::Nop => (opcode::Nop::new().build(), None, None),
            Kind::ReadFixed { buf: b, offset } => {
                let r = need()?;
                let e = on!(|f| opcode::ReadFixed::new(f, r.addr, r.len, r.index)
                    .offset(offset)
                    .build());
                (e, Some(b), None)
            }
            Kind::WriteFixed { buf: b, offset } => {
                let r = need()?;
                let e = on!(|f| opcode::WriteFixed::new(f, r.addr, r.len, r.index)
                    .offset(offset)
                    .build());
                (e, Some(b), None)
            }
            Kind::Send { buf: b, flags } => {
                let r = need()?;
                let e = on!(|f| opcode::Send::new(f, r.addr, r.len).flags(flags).build());
                (e, Some(b), None)
            }
            Kind::Recv { buf: b, flags } => {
                let r = need()?;
                let e = on!(|f| opcode::Recv::new(f, r.addr, r.len).flags(flags).build());
                (e, Some(b), None)
            }
            Kind::SendZc { buf: b, flags } => {
                let r = need()?;
                let e = on!(|f| opcode::SendZc::new(f, r.addr, r.len)
                    .buf_index(Some(r.index))
                    .flags(flags)
                    .build());
                (e, Some(b), None)
            }
            Kind::Accept { slot } => {
                let dest = types::DestinationSlot::try_from_slot_target(slot.0)
                    .map_err(|_| DescriptorError::BadFileSlot(slot.0))?;
                let e = on!(
                    |f| opcode::Accept::new(f, std::ptr::null_mut(), std::ptr::null_mut())
                        .file_index(Some(dest))
                        .build()
                );
                (e, None, None)
            }
            Kind::AcceptMulti => {
                let e = on!(|f| opcode::AcceptMulti::new(f)
                    .allocate_file_index(true)
                    .build());
                (e, None, None)
            }
            Kind::RecvMulti { group } => (
                on!(|f| opcode::RecvMulti::new(f, group).build()),
                None,
                None,
            ),
            Kind::Connect { addr } => {
                let (ptr, len) = addr.raw();
                let e = on!(|f| opcode::Connect::new(f, ptr, len).build());
                (e, None, Some(addr as Box<dyn Any + Send>))
            }
            Kind::Splice {
                out,
                off_in,
                off_out,
                len,
            } => {
                let e = on!(|f| match out {
                    Target::Fd(o) => opcode::Splice::new(f, off_in, types::Fd(o), off_out, len),
                    Target::Fixed(FileSlot(o)) => {
                        opcode::Splice::new(f, off_in, types::Fixed(o), off_out, len)
                    }
                }
                .build());
                (e, None, None)
            }
            Kind::Fsync { datasync } => {
                let flags = if datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                (
                    on!(|f| opcode::Fsync::new(f).flags(flags).build()),
                    None,
                    None,
                )
            }
            Kind::Fallocate { mode, offset, len } => {
                let e = on!(|f| opcode::Fallocate::new(f, len)
                    .offset(offset)
                    .mode(mode)
                    .build());
                (e, None, None)
            }
            Kind::Close => (on!(|f| opcode::Close::new(f).build()), None, None),
            Kind::Timeout { ts } => {
                let e = opcode::Timeout::new(&*ts as *const types::Timespec).build();
                (e, None, Some(ts as Box<dyn Any + Send>))
            }
            Kind::Cancel { .. } => return Err(DescriptorError::WrongQueue("cancel")),
            Kind::MsgRing {
                keep,
                cookie,
                result,
            } => {
                let e = opcode::MsgRingData::new(
                    types::Fd(keep.fd()),
                    result,
                    cookie | crate::ring::MESSAGE_BIT,
                    None,
                )
                .build();
                (e, None, Some(Box::new(keep) as Box<dyn Any + Send>))
            }
            Kind::ShareFile { keep, slot, dest } => {
                let to = types::DestinationSlot::try_from_slot_target(dest.0)
                    .map_err(|_| DescriptorError::BadFileSlot(dest.0))?;
                // No CQE on the target: the file is the message, and the outcome is this
                // operation's own completion.
                let e =
                    opcode::MsgRingSendFd::new(types::Fd(keep.fd()), types::Fixed(slot.0), to, 0)
                        .opcode_flags(control::MSG_RING_CQE_SKIP)
                        .build();
                (e, None, Some(Box::new(keep) as Box<dyn Any + Send>))
            }
        })
    }
}
