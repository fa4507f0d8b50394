//! Temporary files.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file in the temporary directory, open for reading and writing, removed when dropped.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    path: PathBuf,
}

impl TempFile {
    /// A new empty file whose name starts with `regio-<tag>-` and is unique in this process.
    ///
    /// # Panics
    ///
    /// If the file cannot be created.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Relaxed: only uniqueness matters, which the read-modify-write gives at any ordering.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("regio-{tag}-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { file, path }
    }

    /// A new file of `len` bytes of a known pattern: byte `i` is `i % 251`.
    pub fn pattern(tag: &str, len: usize) -> Self {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        Self::new(tag).with_contents(&data)
    }

    /// A new file of `len` bytes that all are `byte`.
    pub fn filled(tag: &str, byte: u8, len: usize) -> Self {
        Self::new(tag).with_contents(&vec![byte; len])
    }

    fn with_contents(self, data: &[u8]) -> Self {
        std::fs::write(&self.path, data)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.path.display()));
        self
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives up the removal on drop: the file stays until the caller removes the path.
    pub fn keep(self) -> (File, PathBuf) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped or used again, so each field is moved out once.
        unsafe { (std::ptr::read(&this.file), std::ptr::read(&this.path)) }
    }

    /// The file's whole contents, read by path.
    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("reading {}: {e}", self.path.display()))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
