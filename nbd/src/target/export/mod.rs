//! [`Export`]: what a server serves, in memory ([`Export::memory`]) or in a file or block
//! device ([`Export::file`]), and the storage operations the commands run on it.

mod file;
mod memory;

use std::path::Path;

use regio_pool::Message;
use regio_runtime::region::Region;

use self::file::FileExport;
use self::memory::MemoryExport;
use super::buffers::Buffers;
use super::ServeError;
use crate::proto::{BlockStatusFlags, Errno, Extent, TransmissionFlags};

/// The smallest read of a file export that asks the file system whether it is a hole.
const HOLE_CHECK_MIN: usize = 64 * 1024;

/// One export: a name, a size, and its storage.
///
/// ```
/// use regio_nbd::target::Export;
///
/// let disk = Export::memory("scratch", 64 << 20, false)?;
/// assert_eq!(disk.name(), "scratch");
/// assert_eq!(disk.size(), 64 << 20);
/// assert!(!disk.is_read_only());
/// # Ok::<(), regio_nbd::target::ServeError>(())
/// ```
#[derive(Debug)]
pub struct Export {
    name: String,
    description: String,
    read_only: bool,
    storage: Storage,
}

#[derive(Debug)]
enum Storage {
    Memory(MemoryExport),
    File(FileExport),
}

impl Export {
    /// A memory export of `size` bytes, all zeroes; memory is taken as pages are written.
    ///
    /// When a server starts serving it ([`Server::serve`](super::Server::serve)), an export of
    /// up to 16 GiB (and half the machine's memory) is registered with the runtime's rings, so
    /// that READ replies are sent from it without a copy (`SEND_ZC`). Registering pins it: every
    /// page is allocated then and stays resident until the export is dropped. Where the kernel
    /// refuses (`RLIMIT_MEMLOCK` for a user without `CAP_IPC_LOCK`), reads are copied through
    /// pool buffers instead, with a warning in the log; [`is_zero_copy`](Self::is_zero_copy)
    /// says which.
    ///
    /// # Errors
    ///
    /// [`ServeError::Empty`] for a size of zero, [`ServeError::Map`] if the address space
    /// cannot be reserved.
    pub fn memory(name: &str, size: u64, read_only: bool) -> Result<Self, ServeError> {
        if size == 0 {
            return Err(ServeError::Empty { name: name.into() });
        }
        let memory = MemoryExport::new(size).map_err(|source| ServeError::Map { size, source })?;
        Ok(Self {
            name: name.into(),
            description: format!("{size} bytes of memory"),
            read_only,
            storage: Storage::Memory(memory),
        })
    }

    /// An export of the file or block device at `path`, of its current size.
    ///
    /// # Errors
    ///
    /// [`ServeError::Open`] if it cannot be opened (for writing too unless `read_only`) or is
    /// neither a regular file nor a block device; [`ServeError::Empty`] if it has no bytes.
    pub fn file(name: &str, path: &Path, read_only: bool) -> Result<Self, ServeError> {
        let file = FileExport::open(path, read_only).map_err(|source| ServeError::Open {
            path: path.into(),
            source,
        })?;
        if file.size() == 0 {
            return Err(ServeError::Empty { name: name.into() });
        }
        Ok(Self {
            name: name.into(),
            description: format!(
                "{}{}",
                path.display(),
                if file.is_in_memory() {
                    " (in memory: pread/pwrite)"
                } else if file.is_direct() {
                    " (O_DIRECT)"
                } else {
                    ""
                }
            ),
            read_only,
            storage: Storage::File(file),
        })
    }

    /// The export's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What `NBD_OPT_LIST` and `NBD_INFO_DESCRIPTION` say about it.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        match &self.storage {
            Storage::Memory(m) => m.size(),
            Storage::File(f) => f.size(),
        }
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether READ replies are sent from the export itself without a copy: a memory export
    /// that a server registered ([`Export::memory`]).
    pub fn is_zero_copy(&self) -> bool {
        self.region().is_some()
    }

    /// Registers a memory export with the current runtime's rings, once (see
    /// [`Export::memory`]); a file export has nothing to register.
    pub(crate) fn register(&self) {
        if let Storage::Memory(m) = &self.storage {
            m.register();
        }
    }

    /// The region READ replies are sent from, for a registered memory export.
    pub(crate) fn region(&self) -> Option<&Region> {
        match &self.storage {
            Storage::Memory(m) => m.region(),
            Storage::File(_) => None,
        }
    }

    /// Copies the bytes at `offset` into `out`, from a memory export (a file export is read
    /// with [`read`](Self::read)).
    pub(crate) fn copy_out(&self, offset: u64, out: &mut [u8]) -> Result<(), Errno> {
        match &self.storage {
            Storage::Memory(m) => m.read(offset, out),
            Storage::File(_) => Err(Errno::EINVAL),
        }
    }

    /// The transmission flags it is advertised with. Every connection shares the same storage
    /// and a FLUSH syncs the whole file, so `CAN_MULTI_CONN` holds.
    pub(crate) fn flags(&self) -> TransmissionFlags {
        let common = TransmissionFlags::HAS_FLAGS
            | TransmissionFlags::SEND_FLUSH
            | TransmissionFlags::SEND_FUA
            | TransmissionFlags::SEND_DF
            | TransmissionFlags::CAN_MULTI_CONN
            | TransmissionFlags::SEND_CACHE;
        if self.read_only {
            common | TransmissionFlags::READ_ONLY
        } else {
            common
                | TransmissionFlags::SEND_TRIM
                | TransmissionFlags::SEND_WRITE_ZEROES
                | TransmissionFlags::SEND_FAST_ZERO
        }
    }

    /// Fills the bytes `buf`'s descriptor names from `offset`.
    pub(crate) async fn read(&self, offset: u64, mut buf: Message) -> (Result<(), Errno>, Message) {
        match &self.storage {
            Storage::Memory(m) => {
                let len = buf.descriptor().len();
                let result = m.read(offset, &mut buf.as_mut_slice()[..len]);
                (result, buf)
            }
            Storage::File(f) => f.read(offset, buf).await,
        }
    }

    /// Writes the bytes `buf`'s descriptor names at `offset`.
    pub(crate) async fn write(&self, offset: u64, buf: Message) -> (Result<(), Errno>, Message) {
        match &self.storage {
            Storage::Memory(m) => {
                let len = buf.descriptor().len();
                (m.write(offset, &buf.as_slice()[..len]), buf)
            }
            Storage::File(f) => f.write(offset, buf).await,
        }
    }

    /// Makes every write completed so far durable (FLUSH).
    pub(crate) async fn flush(&self) -> Result<(), Errno> {
        match &self.storage {
            Storage::Memory(_) => Ok(()),
            Storage::File(f) => f.flush().await,
        }
    }

    /// Makes a write just completed durable (FUA).
    pub(crate) async fn sync_data(&self) -> Result<(), Errno> {
        match &self.storage {
            Storage::Memory(_) => Ok(()),
            Storage::File(f) => f.sync_data().await,
        }
    }

    /// TRIM: deallocates what it can of the range.
    pub(crate) async fn trim(&self, offset: u64, len: u32) -> Result<(), Errno> {
        match &self.storage {
            Storage::Memory(m) => m.punch(offset, len as usize, false),
            Storage::File(f) => f.trim(offset, u64::from(len)).await,
        }
    }

    /// WRITE_ZEROES: the range reads as zeroes after it. `no_hole` keeps it allocated; `fast`
    /// fails with `ENOTSUP` rather than write zeroes one by one.
    pub(crate) async fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        no_hole: bool,
        fast: bool,
        buffers: &Buffers,
    ) -> Result<(), Errno> {
        match &self.storage {
            // Zeroes that must stay allocated are written byte by byte in memory: not fast.
            Storage::Memory(_) if no_hole && fast => Err(Errno::ENOTSUP),
            Storage::Memory(m) if no_hole => m.fill_zeroes(offset, len as usize),
            Storage::Memory(m) => m.punch(offset, len as usize, true),
            Storage::File(f) => {
                if f.zero_fast(offset, u64::from(len), no_hole).await? {
                    Ok(())
                } else if fast {
                    Err(Errno::ENOTSUP)
                } else {
                    self.write_zero_bytes(offset, len, buffers).await
                }
            }
        }
    }

    /// Writes zeroes over the range, one data buffer at a time.
    async fn write_zero_bytes(
        &self,
        offset: u64,
        len: u32,
        buffers: &Buffers,
    ) -> Result<(), Errno> {
        let len = len as usize;
        let chunk = buffers.chunk_size(len);
        let mut buf = buffers.one(chunk).await;
        buf.as_mut_slice().fill(0);
        let whole = buf.descriptor().slices()[0];
        let mut done = 0;
        while done < len {
            let step = chunk.min(len - done);
            let mut key = whole;
            key.len = step as u32;
            buf.descriptor_mut().set_slices(&[key]).expect("one slice");
            let (result, back) = self.write(offset + done as u64, buf).await;
            result?;
            buf = back;
            done += step;
        }
        Ok(())
    }

    /// CACHE: starts reading the range into memory (a memory export has it already).
    pub(crate) async fn cache(&self, offset: u64, len: u32) -> Result<(), Errno> {
        match &self.storage {
            Storage::Memory(_) => Ok(()),
            Storage::File(f) => f.cache(offset, len).await,
        }
    }

    /// Whether the `len` bytes from `offset` (`len` nonzero) are all a hole, where that is
    /// cheap to know: a memory export's page map always; a file's `SEEK_DATA` (a system call)
    /// only for reads of [`HOLE_CHECK_MIN`] bytes or more, where skipping the read pays for it.
    pub(crate) fn is_hole(&self, offset: u64, len: usize) -> bool {
        match &self.storage {
            Storage::Memory(m) => {
                len > 0
                    && m.extents(offset, len as u64).first().is_some_and(|first| {
                        first.length >= len as u64
                            && first
                                .flags
                                .contains(BlockStatusFlags::HOLE | BlockStatusFlags::ZERO)
                    })
            }
            Storage::File(f) => len >= HOLE_CHECK_MIN && f.is_hole(offset, len as u64),
        }
    }

    /// The `base:allocation` extents from `offset`, for up to `len` bytes.
    pub(crate) fn extents(&self, offset: u64, len: u64) -> Vec<Extent> {
        match &self.storage {
            Storage::Memory(m) => m.extents(offset, len),
            Storage::File(f) => f.extents(offset, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regio_runtime::{BuildError, Runtime};
    use std::sync::Arc;

    /// A one-worker runtime with an eighth of the server's pool, or `None` (skipped) where
    /// io_uring is disabled.
    fn runtime() -> Option<Runtime> {
        let builder = crate::target::pool_classes()
            .iter()
            .fold(Runtime::builder().worker_threads(1), |b, &(size, count)| {
                b.pool_class(size, count / 8)
            })
            .pool_cache(0);
        regio_testkit::ok_or_skip(builder.build(), BuildError::is_io_uring_disabled)
    }

    async fn put(export: &Export, buffers: &Buffers, offset: u64, bytes: &[u8]) {
        let mut buf = buffers.one(bytes.len()).await;
        buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
        let (result, _) = export.write(offset, buf).await;
        result.unwrap();
    }

    async fn get(export: &Export, buffers: &Buffers, offset: u64, len: usize) -> Vec<u8> {
        let buf = buffers.one(len).await;
        let (result, buf) = export.read(offset, buf).await;
        result.unwrap();
        buf.as_slice()[..len].to_vec()
    }

    /// Writes, reads, zeroes (each way), trims, flushes and maps `export` (64 KiB or more).
    async fn exercise(export: &Export, buffers: &Buffers) {
        put(export, buffers, 4096 + 10, b"hello").await;
        assert_eq!(&get(export, buffers, 4096 + 8, 9).await, b"\0\0hello\0\0");
        // An aligned page, and its map.
        put(export, buffers, 32768, &[7; 4096]).await;
        let map = export.extents(32768, 4096);
        assert_eq!(map[0].flags, BlockStatusFlags::empty(), "{map:?}");
        export.sync_data().await.unwrap();
        export.flush().await.unwrap();
        export.cache(0, 65536).await.unwrap();
        // Zeroes, punched and not.
        export
            .write_zeroes(4096, 4096, false, false, buffers)
            .await
            .unwrap();
        assert!(get(export, buffers, 4096, 4096)
            .await
            .iter()
            .all(|&b| b == 0));
        put(export, buffers, 8192, &[9; 100]).await;
        export
            .write_zeroes(8192, 50, true, false, buffers)
            .await
            .unwrap();
        let got = get(export, buffers, 8192, 100).await;
        assert!(got[..50].iter().all(|&b| b == 0) && got[50..].iter().all(|&b| b == 9));
        export.trim(32768, 4096).await.unwrap();
    }

    #[test]
    fn a_memory_export_serves_every_storage_operation() {
        let Some(rt) = runtime() else { return };
        let buffers = Buffers::new(rt.pool().clone()).unwrap();
        let export = Arc::new(Export::memory("m", 1 << 20, false).unwrap());
        rt.block_on(rt.spawn({
            let export = Arc::clone(&export);
            async move {
                exercise(&export, &buffers).await;
                // A trimmed page is a hole again; NO_HOLE and FAST_ZERO cannot both hold.
                let map = export.extents(32768, 4096);
                assert_eq!(
                    map[0].flags,
                    BlockStatusFlags::HOLE | BlockStatusFlags::ZERO
                );
                assert_eq!(
                    export.write_zeroes(0, 4096, true, true, &buffers).await,
                    Err(Errno::ENOTSUP)
                );
                export
                    .write_zeroes(0, 4096, false, true, &buffers)
                    .await
                    .unwrap();
            }
        }))
        .unwrap();
        assert!(export.flags().contains(TransmissionFlags::CAN_MULTI_CONN));
    }

    #[test]
    fn a_file_export_serves_every_storage_operation_and_maps_its_holes() {
        let Some(rt) = runtime() else { return };
        let path = std::env::temp_dir().join(format!("regio-nbd-export-{}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let export = Arc::new(Export::file("f", &path, false).unwrap());
        assert_eq!(export.size(), 1 << 20);
        let buffers = Buffers::new(rt.pool().clone()).unwrap();
        rt.block_on(rt.spawn({
            let export = Arc::clone(&export);
            async move { exercise(&export, &buffers).await }
        }))
        .unwrap();
        // The file system here tells holes: the end of a fresh sparse file is one.
        let map = export.extents(512 << 10, 512 << 10);
        assert_eq!(
            map,
            [Extent {
                length: 512 << 10,
                flags: BlockStatusFlags::HOLE | BlockStatusFlags::ZERO
            }]
        );
        // A read's hole check: one SEEK_DATA, which must find data anywhere in the range.
        assert!(export.is_hole(512 << 10, 256 << 10));
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
            &[1; 4096],
            768 << 10,
        )
        .unwrap();
        assert!(export.is_hole(512 << 10, 256 << 10), "data only after it");
        assert!(
            !export.is_hole(512 << 10, 512 << 10),
            "data at its three quarters"
        );
        assert!(
            !export.is_hole(768 << 10, HOLE_CHECK_MIN),
            "data at its start"
        );
        assert!(!export.is_hole(1 << 20, HOLE_CHECK_MIN), "past the end");
        drop(export);
        let read_only = Export::file("r", &path, true).unwrap();
        assert!(read_only.flags().contains(TransmissionFlags::READ_ONLY));
        assert!(!read_only.flags().contains(TransmissionFlags::SEND_TRIM));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            Export::file("gone", &path, false),
            Err(ServeError::Open { .. })
        ));
        assert!(matches!(
            Export::memory("none", 0, false),
            Err(ServeError::Empty { .. })
        ));
    }
}
