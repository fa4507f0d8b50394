//! [`FileExport`]: a regular file or a block device, through the runtime's io_uring file
//! operations.
//!
//! Reads and writes go to the file with `READ_FIXED`/`WRITE_FIXED` on the request's pool
//! buffers. The file is opened a second time with `O_DIRECT` where the file system allows it;
//! requests whose offset and length are multiples of 4 KiB (pool buffers are page-aligned) go
//! through that descriptor and bypass the page cache, the others through the plain one, so an
//! unaligned request (the kernel client ignores block sizes) still works. FLUSH is `fsync`,
//! FUA `fdatasync` before the reply, TRIM a punched hole, WRITE_ZEROES a punched hole or a
//! zeroed range, CACHE `POSIX_FADV_WILLNEED`; block status comes from `SEEK_DATA`/`SEEK_HOLE`.
//!
//! A file on a file system that lives in memory (tmpfs, ramfs) is the exception: those have no
//! nonblocking read or write path, so io_uring would hand every READ_FIXED and WRITE_FIXED to
//! one of its worker threads (and run the writes to one file there one at a time). Such a
//! read or write is a plain `pread`/`pwrite` on the worker instead: a copy from or into the
//! page cache that never waits for a device, and costs one system call rather than a thread
//! hand-off. Everything else (flush, trim, zeroing, block status) stays as it is.

use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use regio_pool::Message;
use regio_runtime::fs::File;

use crate::proto::{BlockStatusFlags, Errno, Extent};

/// The alignment `O_DIRECT` needs of offsets, lengths and buffers (4 KiB covers every logical
/// block size in use).
const DIRECT_ALIGN: u64 = 4096;
/// The most extents one block status answer collects (the client asks again for the rest).
const MAX_EXTENTS: usize = 4096;

/// An export backed by a file or a block device.
#[derive(Debug)]
pub(crate) struct FileExport {
    file: File,
    direct: Option<File>,
    /// The file again, for reads and writes done with `pread`/`pwrite` on the worker: set when
    /// the file lives in memory (see the module docs).
    in_memory: Option<std::fs::File>,
    size: u64,
}

/// `statfs` magic numbers of the file systems that keep files in memory and have no
/// nonblocking I/O path: tmpfs (and /dev/shm) and ramfs (32-bit values, whatever width `f_type` has).
const IN_MEMORY_FS: [u32; 2] = [0x0102_1994, 0x8584_58f6];

/// Whether `file` lives on a file system of [`IN_MEMORY_FS`].
fn lives_in_memory(file: &std::fs::File) -> io::Result<bool> {
    let stat = rustix::fs::fstatfs(file)?;
    Ok(IN_MEMORY_FS.contains(&(stat.f_type as u32)))
}

/// How a `fallocate` that the file system lacks fails.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL | libc::ENODEV)
    )
}

impl FileExport {
    /// Opens `path` (read-only, or for reading and writing), with an `O_DIRECT` twin where the
    /// file system has it.
    pub(crate) fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let open = |extra: i32| {
            OpenOptions::new()
                .read(true)
                .write(!read_only)
                .custom_flags(extra)
                .open(path)
        };
        let mut plain = open(0)?;
        let kind = plain.metadata()?.file_type();
        if !kind.is_file() && !kind.is_block_device() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an export is a regular file or a block device",
            ));
        }
        let size = plain.seek(SeekFrom::End(0))?;
        let in_memory = if kind.is_file() && lives_in_memory(&plain)? {
            Some(plain.try_clone()?)
        } else {
            None
        };
        let direct = match in_memory {
            // O_DIRECT on tmpfs is buffered I/O under another name.
            Some(_) => None,
            None => open(libc::O_DIRECT).ok().map(File::from_std),
        };
        Ok(Self {
            file: File::from_std(plain),
            direct,
            in_memory,
            size,
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Whether the export reads and writes with `O_DIRECT` where it can.
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether reads and writes are `pread`/`pwrite` on the worker (a file in memory).
    pub(crate) fn is_in_memory(&self) -> bool {
        self.in_memory.is_some()
    }

    /// The descriptor for `len` bytes at `offset`.
    fn for_io(&self, offset: u64, len: usize) -> &File {
        match &self.direct {
            Some(direct) if offset % DIRECT_ALIGN == 0 && len as u64 % DIRECT_ALIGN == 0 => direct,
            _ => &self.file,
        }
    }

    /// Fills the bytes `buf`'s descriptor names from `offset`.
    pub(crate) async fn read(&self, offset: u64, buf: Message) -> (Result<(), Errno>, Message) {
        self.transfer(offset, buf, false).await
    }

    /// Writes the bytes `buf`'s descriptor names at `offset`.
    pub(crate) async fn write(&self, offset: u64, buf: Message) -> (Result<(), Errno>, Message) {
        self.transfer(offset, buf, true).await
    }

    /// A read or a write of the whole descriptor, resubmitting the rest after a short one.
    async fn transfer(
        &self,
        offset: u64,
        mut buf: Message,
        write: bool,
    ) -> (Result<(), Errno>, Message) {
        let whole = buf.descriptor().slices()[0];
        if let Some(file) = &self.in_memory {
            return (copy_in_place(file, offset, &mut buf, whole, write), buf);
        }
        let len = whole.len as usize;
        let file = self.for_io(offset, len);
        let mut done = 0;
        while done < len {
            let (result, back) = if write {
                file.write_at(buf, offset + done as u64).await
            } else {
                file.read_at(buf, offset + done as u64).await
            };
            buf = back;
            match result {
                Ok(0) => {
                    // The file shrank under the export (a read past its end, or a device that
                    // takes no more).
                    return (
                        Err(if write { Errno::ENOSPC } else { Errno::EIO }),
                        restore(buf, whole),
                    );
                }
                Ok(n) => done += n,
                Err(e) => return (Err(Errno::from(&e)), restore(buf, whole)),
            }
            if done < len {
                let mut rest = whole;
                rest.offset += done as u32;
                rest.len -= done as u32;
                buf.descriptor_mut().set_slices(&[rest]).expect("one slice");
            }
        }
        (Ok(()), restore(buf, whole))
    }

    /// `fsync`: everything written so far is durable.
    pub(crate) async fn flush(&self) -> Result<(), Errno> {
        self.file.sync_all().await.map_err(|e| Errno::from(&e))
    }

    /// `fdatasync`, for FUA.
    pub(crate) async fn sync_data(&self) -> Result<(), Errno> {
        self.file.sync_data().await.map_err(|e| Errno::from(&e))
    }

    /// Deallocates the range where the file system can (a trim is advice: where it cannot,
    /// nothing happens and the trim succeeds).
    pub(crate) async fn trim(&self, offset: u64, len: u64) -> Result<(), Errno> {
        match self.punch(offset, len).await {
            Err(e) if !unsupported(&e) => Err(Errno::from(&e)),
            _ => Ok(()),
        }
    }

    async fn punch(&self, offset: u64, len: u64) -> io::Result<()> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        self.file.fallocate(mode, offset, len).await
    }

    /// Makes the range read as zeroes without writing them: a punched hole (unless `no_hole`),
    /// else a zeroed range, else a hole punched and allocated again. `Ok(false)` if the file
    /// system can do none of these (the caller writes zeroes, or fails a FAST_ZERO request).
    pub(crate) async fn zero_fast(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
    ) -> Result<bool, Errno> {
        if !no_hole {
            match self.punch(offset, len).await {
                Ok(()) => return Ok(true),
                Err(e) if !unsupported(&e) => return Err(Errno::from(&e)),
                Err(_) => {}
            }
        }
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        match self
            .file
            .fallocate(libc::FALLOC_FL_ZERO_RANGE | keep, offset, len)
            .await
        {
            Ok(()) => return Ok(true),
            Err(e) if !unsupported(&e) => return Err(Errno::from(&e)),
            Err(_) => {}
        }
        match self.punch(offset, len).await {
            Ok(()) => {}
            Err(e) if !unsupported(&e) => return Err(Errno::from(&e)),
            Err(_) => return Ok(false),
        }
        match self.file.fallocate(keep, offset, len).await {
            Ok(()) => Ok(true),
            // The hole reads as zeroes; only its allocation failed.
            Err(e) => Err(Errno::from(&e)),
        }
    }

    /// Starts reading the range into the page cache.
    pub(crate) async fn cache(&self, offset: u64, len: u32) -> Result<(), Errno> {
        self.file
            .fadvise(libc::POSIX_FADV_WILLNEED, offset, len)
            .await
            .map_err(|e| Errno::from(&e))
    }

    /// `lseek(2)` on the export's descriptor: the offset found, or the error.
    fn seek(&self, whence: libc::c_int, at: u64) -> io::Result<u64> {
        // SAFETY: lseek on a descriptor this export owns; only the descriptor's file position
        // changes, which no operation of the export uses (all I/O is positioned).
        let found = unsafe { libc::lseek(self.file.as_raw_fd(), at as libc::off_t, whence) };
        if found < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(found as u64)
        }
    }

    /// Whether the `len` bytes from `offset` are all a hole: one `SEEK_DATA`, which finds the
    /// next data at or past the range's end. (`SEEK_HOLE` is not needed, and costs a walk of
    /// the whole file on tmpfs.) A file that cannot tell has no holes.
    pub(crate) fn is_hole(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        if len == 0 || end > self.size {
            return false;
        }
        match self.seek(libc::SEEK_DATA, offset) {
            Ok(next) => next >= end,
            Err(e) => e.raw_os_error() == Some(libc::ENXIO),
        }
    }

    /// The allocation from `offset` on, for up to `len` bytes, from `SEEK_DATA`/`SEEK_HOLE`.
    /// A file (or device) that cannot tell is all data.
    pub(crate) fn extents(&self, offset: u64, len: u64) -> Vec<Extent> {
        let end = offset.saturating_add(len).min(self.size);
        let seek = |whence, at: u64| self.seek(whence, at);
        let data = |length| Extent {
            length,
            flags: BlockStatusFlags::empty(),
        };
        let hole = |length| Extent {
            length,
            flags: BlockStatusFlags::HOLE | BlockStatusFlags::ZERO,
        };
        let mut extents = Vec::new();
        let mut at = offset;
        while at < end && extents.len() < MAX_EXTENTS {
            match seek(libc::SEEK_DATA, at) {
                Ok(next) if next > at => {
                    let stop = next.min(end);
                    extents.push(hole(stop - at));
                    at = stop;
                }
                Ok(_) => {
                    let stop = seek(libc::SEEK_HOLE, at)
                        .map_or(end, |h| h.min(end))
                        .max(at + 1);
                    extents.push(data(stop - at));
                    at = stop;
                }
                // No data after `at`: a hole to the end.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    extents.push(hole(end - at));
                    at = end;
                }
                Err(_) => {
                    extents.push(data(end - at));
                    at = end;
                }
            }
        }
        extents
    }
}

/// A read or a write of the bytes `chunk` names in `buf`, at `offset` of a file in memory,
/// with `pread`/`pwrite` until all of it is done.
fn copy_in_place(
    file: &std::fs::File,
    offset: u64,
    buf: &mut Message,
    chunk: regio_pool::BufKey,
    write: bool,
) -> Result<(), Errno> {
    let start = (chunk.offset - buf.key().offset) as usize;
    let bytes = &mut buf.as_mut_slice()[start..start + chunk.len as usize];
    let done = if write {
        file.write_all_at(bytes, offset)
    } else {
        file.read_exact_at(bytes, offset)
    };
    done.map_err(|e| match e.kind() {
        // The file shrank under the export: a read past its end, or a write that got no room.
        io::ErrorKind::UnexpectedEof => Errno::EIO,
        io::ErrorKind::WriteZero => Errno::ENOSPC,
        _ => Errno::from(&e),
    })
}

/// `buf` with its descriptor naming `whole` again.
fn restore(mut buf: Message, whole: regio_pool::BufKey) -> Message {
    buf.descriptor_mut()
        .set_slices(&[whole])
        .expect("one slice");
    buf
}
