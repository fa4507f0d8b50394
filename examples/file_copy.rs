//! A file copy on registered buffers: `fs::File` reads and writes (`READ_FIXED` /
//! `WRITE_FIXED` on pool messages), with several chunks in flight at once.
//!
//! `DEPTH` tasks share the file: each takes the next 64 KiB chunk, reads it into its message
//! and writes the same message out at the same offset, so `DEPTH` reads or writes are in
//! flight at any time and no byte is copied in user space.
//!
//! Run: `cargo run --release --example file_copy -- SOURCE DESTINATION`. Without arguments it
//! copies a 32 MiB file it makes in the temporary directory, checks the copy and removes both.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use regio::pool::Message;
use regio::runtime::fs::File;

/// Chunks in flight.
const DEPTH: usize = 8;
/// The size class of the default pool that the chunks use: 64 KiB buffers.
const CHUNK_CLASS: usize = 1;

/// Copies the chunk of `len` bytes at `offset`, through `msg`: reads until it is all in (a read
/// may come back short), then writes until it is all out.
async fn copy_chunk(
    src: &File,
    dst: &File,
    msg: Message,
    offset: u64,
    len: usize,
) -> io::Result<Message> {
    let (read, msg) = src.read_full_at(msg, len, offset).await;
    if read? < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the source shrank during the copy",
        ));
    }
    let (written, msg) = dst.write_all_at(msg, len, offset).await;
    written.map(|()| msg)
}

/// Copies `source` to `destination` with `DEPTH` chunks in flight; returns the bytes copied.
async fn copy(source: &Path, destination: &Path) -> io::Result<u64> {
    let src = Arc::new(File::open(source)?);
    let dst = Arc::new(File::create(destination)?);
    let size = src.as_std().metadata()?.len();
    let chunk = regio::runtime::pool().buf_size(CHUNK_CLASS) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let copiers: Vec<_> = (0..DEPTH)
        .map(|_| {
            let (src, dst, next) = (Arc::clone(&src), Arc::clone(&dst), Arc::clone(&next));
            regio::runtime::spawn(async move {
                let mut msg = regio::runtime::pool().acquire_class(CHUNK_CLASS).await;
                loop {
                    // Relaxed: the counter only hands out chunk numbers; each is taken once.
                    let offset = next.fetch_add(1, Ordering::Relaxed) * chunk;
                    if offset >= size {
                        return Ok::<_, io::Error>(());
                    }
                    let len = chunk.min(size - offset) as usize;
                    msg = copy_chunk(&src, &dst, msg, offset, len).await?;
                }
            })
        })
        .collect();
    for copier in copiers {
        copier.await.map_err(io::Error::other)??;
    }
    dst.sync_all().await?;
    Ok(size)
}

/// A 32 MiB file of a non-repeating pattern in the temporary directory.
fn sample_file() -> io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("regio-file-copy-{}.src", std::process::id()));
    let data: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, data)?;
    Ok(path)
}

#[regio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (source, destination, demo) = match args.as_slice() {
        [source, destination] => (PathBuf::from(source), PathBuf::from(destination), false),
        [] => {
            let source = sample_file()?;
            let destination = source.with_extension("copy");
            (source, destination, true)
        }
        _ => return Err("usage: file_copy [SOURCE DESTINATION]".into()),
    };
    let start = Instant::now();
    let bytes = copy(&source, &destination).await?;
    let took = start.elapsed();
    println!(
        "copied {bytes} bytes in {took:.2?} ({:.0} MiB/s), {DEPTH} chunks in flight",
        bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    if demo {
        let same = std::fs::read(&source)? == std::fs::read(&destination)?;
        std::fs::remove_file(&source)?;
        std::fs::remove_file(&destination)?;
        if !same {
            return Err("the copy differs from its source".into());
        }
        println!("the copy matches its source");
    }
    Ok(())
}
