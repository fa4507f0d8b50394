//! Test data: deterministic pseudo-random bytes, images with holes, file comparison.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Deterministic pseudo-random bytes (xorshift64*), different for each `seed`.
pub struct Noise(u64);

impl Noise {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// The next `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.fill(&mut buf);
        buf
    }
}

/// Writes `len` pseudo-random bytes of `seed` to a new file at `path`.
pub fn random_file(path: &Path, len: u64, seed: u64) {
    let mut file = File::create(path).expect("create the image");
    let mut noise = Noise::new(seed);
    let mut buf = vec![0; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        noise.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).expect("write the image");
        left -= n as u64;
    }
}

/// Creates a zeroed file of `len` bytes, all hole.
pub fn zeroed_file(path: &Path, len: u64) {
    sparse_file(path, len, &[]);
}

/// Creates a sparse file of `len` bytes holding pseudo-random data only in `extents` (offset,
/// length); the rest are holes.
pub fn sparse_file(path: &Path, len: u64, extents: &[(u64, usize)]) {
    let file = File::create(path).expect("create the image");
    file.set_len(len).expect("size the image");
    for (i, &(offset, n)) in extents.iter().enumerate() {
        file.write_all_at(&Noise::new(i as u64 + 1).bytes(n), offset)
            .expect("write an extent");
    }
    file.sync_all().expect("sync the image");
}

/// The offset of the first byte where `a` and `b` differ, or where one ends, if any.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let open = |p: &Path| File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let (mut ba, mut bb) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if let Some(i) = ba[..na.min(nb)]
            .iter()
            .zip(&bb[..na.min(nb)])
            .position(|(x, y)| x != y)
        {
            return Some(offset + i as u64);
        }
        if na != nb {
            return Some(offset + na.min(nb) as u64);
        }
        if na == 0 {
            return None;
        }
        offset += na as u64;
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).expect("read an image") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Fails the test unless the files `a` and `b` hold the same bytes.
pub fn assert_same_file(a: &Path, b: &Path) {
    if let Some(offset) = first_difference(a, b) {
        panic!(
            "{} and {} differ at byte {offset}",
            a.display(),
            b.display()
        );
    }
}
