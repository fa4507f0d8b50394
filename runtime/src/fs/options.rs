//! [`OpenOptions`]: how a [`File`] is opened, `O_DIRECT` included.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::File;

/// Options to open a [`File`] with, as [`std::fs::OpenOptions`] has them, plus
/// [`direct`](Self::direct) for `O_DIRECT`. The file is opened with `open(2)` on the calling
/// thread; its reads and writes then go through the workers' rings.
///
/// ```
/// use regio_runtime::fs::OpenOptions;
///
/// let path = std::env::temp_dir().join(format!("regio-options-doc-{}", std::process::id()));
/// let file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
/// drop(file);
/// # std::fs::remove_file(path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # `O_DIRECT`
///
/// With [`direct(true)`](Self::direct) reads and writes bypass the page cache and go to the
/// device by DMA into the buffer. The kernel then requires the buffer's address, the file
/// offset and the length all to be multiples of the file's logical block size (512 bytes or
/// 4 KiB on most devices; `statx` with `STATX_DIOALIGN` tells it), and fails anything else with
/// `EINVAL`. Pool buffers are page aligned, so a whole pool message, or a descriptor truncated
/// to a multiple of the block size, always meets the address rule: only the offset and the
/// length are the caller's to choose. A short read at the end of the file is the one
/// unaligned count the kernel returns. Some file systems (tmpfs before Linux 6.6, for one)
/// refuse `O_DIRECT` at open time with `EINVAL`.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    std: std::fs::OpenOptions,
    flags: i32,
    direct: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenOptions {
    /// No access at all, as for [`std::fs::OpenOptions::new`]: set `read` or `write`.
    pub fn new() -> Self {
        Self {
            std: std::fs::OpenOptions::new(),
            flags: 0,
            direct: false,
        }
    }

    /// Opens for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.std.read(on);
        self
    }

    /// Opens for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.std.write(on);
        self
    }

    /// Opens for appending (`O_APPEND`). A positioned write on such a file still goes to the
    /// end: Linux ignores the offset of `pwrite(2)` there.
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.std.append(on);
        self
    }

    /// Truncates the file to 0 bytes when it is opened for writing.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.std.truncate(on);
        self
    }

    /// Creates the file if it does not exist.
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.std.create(on);
        self
    }

    /// Creates the file, failing if it exists (`O_CREAT | O_EXCL`).
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.std.create_new(on);
        self
    }

    /// The permission bits of a file this creates (default `0o666`, less the umask).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.std.mode(mode);
        self
    }

    /// More `open(2)` flags (`libc::O_NOATIME`, `libc::O_DSYNC`, ...), added to those the
    /// other options set. The access mode bits are ignored, as std does.
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.flags = flags;
        self
    }

    /// Opens with `O_DIRECT`: see [the alignment rules](Self#o_direct).
    pub fn direct(&mut self, on: bool) -> &mut Self {
        self.direct = on;
        self
    }

    /// Opens `path` with these options.
    ///
    /// # Errors
    ///
    /// As for [`std::fs::OpenOptions::open`]; with `direct(true)`, `EINVAL` from a file
    /// system that refuses `O_DIRECT`.
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let direct = if self.direct { libc::O_DIRECT } else { 0 };
        let mut std = self.std.clone();
        std.custom_flags(self.flags | direct);
        std.open(path).map(File::from_std)
    }
}
