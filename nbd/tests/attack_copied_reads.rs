//! Attacks on READ data of 16 KiB or more that does not go zero-copy (loopback clients by
//! default, Unix sockets, a threshold above the size): it is sent, copied by the kernel, from
//! the pool buffers a file export's read filled, or from a memory export's registered region.
//! Replies of every size many in flight (gathered small ones between direct large ones, reads
//! completing out of order), writes racing the copied sends of the same pages, and clients
//! that stop reading in the middle of a large reply.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{memory, pattern, start_unset, Client, Harness};
use regio_nbd::proto::{Command, CommandFlags};
use regio_nbd::target::Export;
use regio_testkit::TempFile;

const MIB: u64 = 1 << 20;
const NONE: CommandFlags = CommandFlags::empty();

/// The two kinds of export: sent from the export's region, or from the buffers a read filled.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    File,
}

/// A server of one 4 MiB export of `kind`, the zero-copy threshold left unset (loopback
/// clients get copies) or set above every request (`above`), also on a Unix socket at the
/// path returned; its first 3 MiB hold `pattern(3 MiB, 13)` (the last MiB is a hole).
fn serve(kind: Kind, above: bool) -> Option<Served> {
    serve_shrunk(kind, above, 8)
}

/// A server, its file (if any), its Unix socket's path, and the image its export holds.
type Served = (Harness, Option<TempFile>, std::path::PathBuf, Vec<u8>);

/// [`serve`] on a pool whose classes are `shrink` times smaller than the default.
fn serve_shrunk(kind: Kind, above: bool, shrink: u32) -> Option<Served> {
    let (export, file) = match kind {
        Kind::Memory => (memory("", 4 * MIB), None),
        Kind::File => {
            let file = TempFile::filled("nbd-copied-reads", 0, 4 * MIB as usize);
            (Export::file("", file.path(), false).unwrap(), Some(file))
        }
    };
    let mut h = start_unset(vec![export], shrink)?;
    if above {
        h.server
            .set_zero_copy_min(h.server.max_payload() as usize + 1);
    }
    static SERVED: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: a unique number is all it gives.
    let n = SERVED.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("regio-nbd-copied-{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.listen_unix(&path);
    let data = pattern(3 * MIB as usize, 13);
    let mut c = h.open("", false);
    let max = h.server.max_payload() as usize;
    for at in (0..data.len()).step_by(max) {
        let piece = &data[at..(at + max).min(data.len())];
        let done = c.call(Command::Write, NONE, at as u64, piece.len() as u32, piece);
        assert_eq!(done.error, None);
    }
    Some((h, file, path, data))
}

/// READs of every size around the gather limit (small gathered ones between large direct
/// ones, one of the maximum payload, one of a hole), all in flight at once, twice over, then
/// each reply checked against the image by its cookie.
fn every_size_in_flight<S: Read + Write>(c: &mut Client<S>, image: &[u8], max: u32) {
    let sizes = [
        1, 100, 16383, 16384, 16385, 512, max, 4096, 65536, 7, 70_001, 16384, 3, 131_072, 1000,
    ];
    let mut reads = Vec::new();
    for round in 0..2_u64 {
        for (i, &len) in sizes.iter().enumerate().filter(|&(_, &len)| len <= max) {
            let at = (round * 1_000_003 + i as u64 * 77_777) % (3 * MIB - u64::from(max));
            reads.push((at, len));
        }
    }
    // A hole (the last MiB), read whole (an OFFSET_HOLE chunk with structured replies).
    reads.push((3 * MIB + 4096, max.min(100_000)));
    for (cookie, &(at, len)) in reads.iter().enumerate() {
        c.request(Command::Read, NONE, cookie as u64, at, len, &[]);
    }
    let mut answered = vec![false; reads.len()];
    for _ in 0..reads.len() {
        let reply = c.reply();
        let i = reply.cookie as usize;
        assert!(!answered[i], "cookie {i} answered twice");
        answered[i] = true;
        let (at, len) = reads[i];
        assert_eq!(reply.error, None, "{at}+{len}");
        let at = at as usize;
        let want: Vec<u8> = (at..at + len as usize)
            .map(|k| image.get(k).copied().unwrap_or(0))
            .collect();
        assert!(reply.data == want, "cookie {i}: {len} bytes at {at}");
    }
}

/// Every kind of export, with the threshold unset and above every request, over TCP (simple
/// and structured replies) and a Unix socket: READs of every size in flight at once are each
/// answered with their own data, and every buffer comes back.
#[test]
fn reads_of_every_size_in_flight_get_their_own_data() {
    for kind in [Kind::Memory, Kind::File] {
        for above in [false, true] {
            let Some((h, _file, path, image)) = serve(kind, above) else {
                return;
            };
            let max = h.server.max_payload();
            for structured in [false, true] {
                let mut c = h.open("", structured);
                every_size_in_flight(&mut c, &image, max);
            }
            let mut c = Client::<UnixStream>::connect_unix(&path);
            c.go("", true);
            every_size_in_flight(&mut c, &image, max);
            drop(c);
            h.wait_for_stats("the connections ended", |s| s.connections == 0);
            h.assert_pool_full();
            let stats = h.server.stats();
            assert_eq!(
                stats.zero_copy_sends, 0,
                "{kind:?}: nothing zero-copy: {stats}"
            );
            assert_eq!(stats.export_zero_copy_sends, 0, "{kind:?}: {stats}");
            h.stop();
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// On a pool of two buffers of the largest class (a staging buffer to gather small replies in
/// is often not free: they are gathered in the control buffer then), four clients at once,
/// over TCP and a Unix socket, with every kind of export, read every size in flight at once:
/// each gets its own data, and every buffer comes back.
#[test]
fn reads_of_every_size_in_flight_on_a_pool_run_dry() {
    for kind in [Kind::Memory, Kind::File] {
        let Some((h, _file, path, image)) = serve_shrunk(kind, false, 24) else {
            return;
        };
        let max = h.server.max_payload();
        assert_eq!(max, 64 * 1024, "two buffers of 64 KiB");
        std::thread::scope(|scope| {
            for n in 0..4 {
                let (h, path, image) = (&h, &path, &image);
                scope.spawn(move || {
                    for _ in 0..3 {
                        if n == 3 {
                            let mut c = Client::<UnixStream>::connect_unix(path);
                            c.go("", true);
                            every_size_in_flight(&mut c, image, max);
                        } else {
                            let mut c = h.open("", n == 1);
                            every_size_in_flight(&mut c, image, max);
                        }
                    }
                });
            }
        });
        h.wait_for_stats("the connections ended", |s| s.connections == 0);
        h.assert_pool_full();
        h.stop();
        std::fs::remove_file(&path).unwrap();
    }
}

/// Two clients write two patterns over the same 1 MiB of a memory export (and zero it) while
/// two others, over TCP and a Unix socket, read it in large pieces (sent from the export's
/// region with a copy the kernel makes) and small ones (gathered): every byte read is one of
/// the patterns', the image's before them or zero, never another memory's, nothing fails, and every buffer comes back.
#[test]
fn writes_racing_copied_reads_of_the_same_pages_of_a_memory_export() {
    let Some((h, _file, path, image)) = serve(Kind::Memory, false) else {
        return;
    };
    let (a, b) = (pattern(MIB as usize, 11), pattern(MIB as usize, 200));
    let max = h.server.max_payload();
    let piece = 64 * 1024;
    std::thread::scope(|scope| {
        for (writer, data) in [&a, &b].into_iter().enumerate() {
            let h = &h;
            scope.spawn(move || {
                let mut c = h.open("", writer == 1);
                for round in 0..16_u32 {
                    for at in (0..MIB).step_by(piece as usize) {
                        let bytes = &data[at as usize..(at + u64::from(piece)) as usize];
                        let done = match (round + writer as u32) % 2 {
                            0 => c.call(Command::Write, NONE, at, piece, bytes),
                            _ => c.call(Command::WriteZeroes, NONE, at + 100, piece - 200, &[]),
                        };
                        assert_eq!(done.error, None, "writer {writer} round {round} at {at}");
                    }
                }
            });
        }
        let check = |got: &common::Reply, at: u64, len: u32| {
            assert_eq!(got.error, None, "{at}+{len}");
            assert_eq!(got.data.len(), len as usize);
            for (i, &byte) in got.data.iter().enumerate() {
                let k = at as usize + i;
                assert!(
                    byte == 0 || byte == a[k] || byte == b[k] || byte == image[k],
                    "byte {k} is {byte}"
                );
            }
        };
        let reads = [(0, max), (MIB - 150_000, 150_000), (77, 16384), (5, 5000)];
        let h = &h;
        scope.spawn(move || {
            let mut c = h.open("", true);
            for _ in 0..24 {
                for &(at, len) in &reads {
                    check(&c.call(Command::Read, NONE, at, len, &[]), at, len);
                }
            }
        });
        let path = &path;
        scope.spawn(move || {
            let mut c = Client::<UnixStream>::connect_unix(path);
            c.go("", false);
            for _ in 0..24 {
                for &(at, len) in &reads {
                    check(&c.call(Command::Read, NONE, at, len, &[]), at, len);
                }
            }
        });
    });
    h.wait_for_stats("the connections ended", |s| s.connections == 0);
    h.assert_pool_full();
    h.stop();
    std::fs::remove_file(&path).unwrap();
}

/// A client that asks for many READs of the maximum payload and stops reading in the middle of
/// the first reply (it read a few bytes of it): the copied sends stall, the stall timeout cuts
/// the connection, every buffer comes back and the server goes on serving; over TCP and a Unix
/// socket, from a memory export's region and from a file export's buffers.
#[test]
fn a_client_that_stops_reading_mid_large_copied_reply_is_cut() {
    for kind in [Kind::Memory, Kind::File] {
        let Some((h, _file, path, image)) = serve(kind, false) else {
            return;
        };
        h.server.set_stall_timeout(Duration::from_millis(300));
        let max = h.server.max_payload();
        let mut tcp = h.open("", false);
        common::set_receive_buffer(&tcp.stream, 4096);
        let mut unix = Client::<UnixStream>::connect_unix(&path);
        unix.go("", false);
        for i in 0..32 {
            tcp.request(Command::Read, NONE, i, 0, max, &[]);
            unix.request(Command::Read, NONE, i, 0, max, &[]);
        }
        let mut start = [0; 100];
        tcp.stream.read_exact(&mut start).unwrap();
        unix.stream.read_exact(&mut start).unwrap();
        h.wait_for_stats("the stalled connections were cut", |s| s.connections == 0);
        h.assert_pool_full();
        let mut c = h.open("", true);
        let got = c.call(Command::Read, NONE, 1000, max, &[]);
        assert!(got.data == image[1000..1000 + max as usize], "{kind:?}");
        drop((c, tcp, unix));
        h.wait_for_stats("the connections ended", |s| s.connections == 0);
        h.assert_pool_full();
        h.stop();
        std::fs::remove_file(&path).unwrap();
    }
}
