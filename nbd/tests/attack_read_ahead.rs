//! Attacks on the reader's read-ahead (a run of small WRITEs received into a borrowed buffer of
//! the pool's largest class): WRITEs split at every byte and in odd pieces, refused WRITEs
//! whose payloads are skipped in the middle of a run, a protocol violation or a DISC right
//! after small WRITEs, clients that stop in the middle of a request while the reader holds the
//! read-ahead buffer, and many connections competing for the read-ahead buffers while large
//! requests need the largest class. Every WRITE lands exactly, and every buffer comes back.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{memory, pattern, start, Client, Harness};
use regio_nbd::proto::{Command, CommandFlags, Cookie, Request, REQUEST_HEADER_LEN};
use regio_nbd::target::Export;
use regio_testkit::TempFile;

const MIB: u64 = 1 << 20;
const NONE: CommandFlags = CommandFlags::empty();

/// A request's header bytes.
fn header(command: Command, cookie: u64, offset: u64, length: u32) -> [u8; REQUEST_HEADER_LEN] {
    let mut head = [0; REQUEST_HEADER_LEN];
    Request {
        flags: NONE,
        command,
        cookie: Cookie(cookie),
        offset,
        length,
    }
    .encode(&mut head);
    head
}

/// Writes `bytes` to `to` in pieces whose sizes cycle through `pieces`, each piece a write of
/// its own (a segment of its own on a TCP connection without Nagle's delay, as far as the
/// kernel keeps them apart).
fn send_in_pieces<W: Write>(to: &mut W, bytes: &[u8], pieces: &[usize]) {
    let mut at = 0;
    for &piece in pieces.iter().cycle() {
        if at == bytes.len() {
            return;
        }
        let end = (at + piece).min(bytes.len());
        to.write_all(&bytes[at..end]).unwrap();
        at = end;
    }
}

/// One WRITE of a run: its offset and payload, and whether the server must refuse it.
struct Write1 {
    offset: u64,
    data: Vec<u8>,
    refused: bool,
}

/// A run of WRITEs into the `MIB` from `base` of an export of `size` bytes whose maximum
/// payload is `max`: small ones of every awkward size (zero, one byte, a header's length and
/// around it, around the control buffer and the read-ahead limit), one large one, and refused
/// ones among them (past the export's end, small and large; over the maximum payload) whose
/// payloads the server must skip.
fn run_of_writes(base: u64, size: u64, max: u32, seed: u8) -> Vec<Write1> {
    let sizes = [
        0, 1, 27, 28, 29, 100, 511, 512, 513, 4096, 4097, 5000, 16383, 16384, 16385, 20000, 3,
    ];
    let mut run = Vec::new();
    let mut at = base;
    for (i, &len) in sizes.iter().enumerate() {
        let seed = seed.wrapping_add(i as u8);
        run.push(Write1 {
            offset: at,
            data: pattern(len, seed),
            refused: false,
        });
        at += len as u64 + 3;
        match i {
            4 => run.push(Write1 {
                offset: size - 10,
                data: pattern(4096, seed ^ 0x55),
                refused: true,
            }),
            9 => run.push(Write1 {
                offset: size - 1000,
                data: pattern(70_000, seed ^ 0x55),
                refused: true,
            }),
            12 => run.push(Write1 {
                offset: base,
                data: pattern(max as usize + 1, seed ^ 0x55),
                refused: true,
            }),
            14 => {
                run.push(Write1 {
                    offset: at,
                    data: pattern(100_000.min(max as usize), seed ^ 0x33),
                    refused: false,
                });
                at += 100_000 + 3;
            }
            _ => {}
        }
    }
    assert!(at < base + MIB, "the run fits its MiB");
    run
}

/// The bytes of `run`'s requests, back to back (cookies from `first`).
fn bytes_of(run: &[Write1], first: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, w) in run.iter().enumerate() {
        let head = header(
            Command::Write,
            first + i as u64,
            w.offset,
            w.data.len() as u32,
        );
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(&w.data);
    }
    bytes
}

/// Reads `run`'s replies (cookies from `first`), checks each, then reads each landed WRITE back.
fn check_run<S: std::io::Read + Write>(c: &mut Client<S>, run: &[Write1], first: u64) {
    let mut answered = vec![false; run.len()];
    for _ in 0..run.len() {
        let reply = c.reply();
        let i = (reply.cookie - first) as usize;
        assert!(!answered[i], "cookie {} answered twice", reply.cookie);
        answered[i] = true;
        assert_eq!(
            reply.error.is_some(),
            run[i].refused,
            "WRITE {i} of {} bytes at {}: {:?}",
            run[i].data.len(),
            run[i].offset,
            reply.error
        );
    }
    for (i, w) in run.iter().enumerate() {
        if w.refused || w.data.is_empty() {
            continue;
        }
        let back = c.call(Command::Read, NONE, w.offset, w.data.len() as u32, &[]);
        assert!(
            back.error.is_none() && back.data == w.data,
            "WRITE {i} of {} bytes at {} did not land whole",
            w.data.len(),
            w.offset
        );
    }
}

/// The ways a run is cut before it is sent: at once, a byte at a time, and in pieces of odd
/// sizes (so that the header and payload of each WRITE arrive split at many places).
const CUTS: [&[usize]; 4] = [
    &[usize::MAX],
    &[1],
    &[1, 27, 28, 29, 2, 511, 4097, 3, 16385, 5, 300],
    &[13, 4096, 7, 100, 16384, 1, 28],
];

/// Sends `run_of_writes` cut every way of [`CUTS`] on `c`, each run into its own MiB, then
/// checks every reply and reads each WRITE back.
fn every_cut<S: std::io::Read + Write>(c: &mut Client<S>, h: &Harness, base: u64, seed: u8) {
    let size = c.size;
    let max = h.server.max_payload();
    for (n, pieces) in CUTS.iter().enumerate() {
        let run = run_of_writes(base + n as u64 * MIB, size, max, seed.wrapping_add(n as u8));
        let first = 1000 * n as u64;
        send_in_pieces(&mut c.stream, &bytes_of(&run, first), pieces);
        check_run(c, &run, first);
    }
}

/// Runs of small WRITEs (with large and refused ones among them) sent at once, a byte at a
/// time and in odd pieces, over TCP without Nagle's delay, with simple and structured replies,
/// and over a Unix socket: every WRITE lands exactly, every refused one gets its error while
/// its payload is skipped, and every buffer comes back.
#[test]
fn writes_split_at_every_byte_and_in_odd_pieces_land_whole() {
    let Some(mut h) = start(vec![memory("", 16 * MIB)], 8) else {
        return;
    };
    let path = std::env::temp_dir().join(format!("regio-nbd-ahead-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.listen_unix(&path);
    for structured in [false, true] {
        let mut c = h.open("", structured);
        c.stream.set_nodelay(true).unwrap();
        every_cut(&mut c, &h, 0, u8::from(structured));
    }
    let mut c = Client::<UnixStream>::connect_unix(&path);
    c.go("", true);
    every_cut(&mut c, &h, 8 * MIB, 77);
    drop(c);
    h.wait_for_stats("the connections ended", |s| s.connections == 0);
    h.assert_pool_full();
    h.stop();
    std::fs::remove_file(&path).unwrap();
}

/// A read-only export refuses every WRITE of a run sent at once and a byte at a time (their
/// payloads skipped, small and large, over the maximum payload too), and the READs among them
/// are answered.
#[test]
fn a_read_only_export_skips_the_payloads_of_a_run_of_writes() {
    let image = pattern(2 * MIB as usize, 9);
    let file = TempFile::new("nbd-ahead-ro");
    std::fs::write(file.path(), &image).unwrap();
    let export = Export::file("", file.path(), true).unwrap();
    let Some(h) = start(vec![export], 8) else {
        return;
    };
    let max = h.server.max_payload();
    for pieces in [&[usize::MAX][..], &[1], &[29, 4097, 1]] {
        let mut c = h.open("", true);
        c.stream.set_nodelay(true).unwrap();
        let mut run = run_of_writes(0, 2 * MIB, max, 1);
        for w in &mut run {
            w.refused = true;
        }
        let mut bytes = Vec::new();
        for (i, w) in run.iter().enumerate() {
            bytes.extend_from_slice(&header(
                Command::Write,
                i as u64,
                w.offset.min(MIB),
                w.data.len() as u32,
            ));
            bytes.extend_from_slice(&w.data);
            bytes.extend_from_slice(&header(Command::Read, 500 + i as u64, i as u64 * 7, 5000));
        }
        send_in_pieces(&mut c.stream, &bytes, pieces);
        for _ in 0..2 * run.len() {
            let reply = c.reply();
            if reply.cookie >= 500 {
                let at = (reply.cookie - 500) as usize * 7;
                assert!(reply.error.is_none() && reply.data == image[at..at + 5000]);
            } else {
                assert!(reply.error.is_some(), "WRITE {} refused", reply.cookie);
            }
        }
    }
    h.wait_for_stats("the connections ended", |s| s.connections == 0);
    h.assert_pool_full();
    h.stop();
}

/// Small WRITEs followed at once, in the same send, by bytes that are no request (a bad magic),
/// by a WRITE too large to skip (over 32 MiB), or by part of a header and the end of the
/// stream: the WRITEs before are answered and land, then the connection closes; every buffer
/// comes back (the read-ahead buffer the violation was found in included).
#[test]
fn a_protocol_violation_right_after_small_writes() {
    let Some(h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    let oversized = header(Command::Write, 77, 0, 64 << 20).to_vec();
    let tails = [
        vec![0xee; 1],
        vec![0xee; 27],
        vec![0xee; 28],
        vec![0xee; 29],
        vec![0xee; 5000],
        oversized,
    ];
    for (n, tail) in tails.iter().enumerate() {
        let mut c = h.open("", n % 2 == 0);
        let run: Vec<Write1> = (0..6)
            .map(|i| Write1 {
                offset: i * 5000,
                data: pattern(4096 + i as usize, n as u8 ^ i as u8),
                refused: false,
            })
            .collect();
        let mut bytes = bytes_of(&run, 0);
        bytes.extend_from_slice(tail);
        c.stream.write_all(&bytes).unwrap();
        if tail.len() < REQUEST_HEADER_LEN {
            // Not a whole header yet: the end of the stream in the middle of it.
            c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        for _ in 0..run.len() {
            assert_eq!(c.reply().error, None);
        }
        assert!(closed_by_the_server(&mut c.stream), "the connection closes");
        let mut check = h.open("", false);
        for w in &run {
            let back = check.call(Command::Read, NONE, w.offset, w.data.len() as u32, &[]);
            assert!(
                back.data == w.data,
                "{} bytes at {}",
                w.data.len(),
                w.offset
            );
        }
    }
    h.wait_for_stats("the connections ended", |s| s.connections == 0);
    h.assert_pool_full();
    h.stop();
}

/// Small WRITEs pipelined and a DISC right behind them, in one send, over TCP and a Unix
/// socket: every WRITE is answered and lands before the connection closes.
#[test]
fn a_disc_right_after_pipelined_small_writes() {
    let Some(mut h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    let path = std::env::temp_dir().join(format!("regio-nbd-disc-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.listen_unix(&path);
    let run: Vec<Write1> = (0..40)
        .map(|i| Write1 {
            offset: i * 5000,
            data: pattern(4096 + 3 * i as usize, i as u8),
            refused: false,
        })
        .collect();
    let mut bytes = bytes_of(&run, 0);
    bytes.extend_from_slice(&header(Command::Disc, 999, 0, 0));
    fn disc<S: std::io::Read + Write>(c: &mut Client<S>, bytes: &[u8], count: usize) {
        c.stream.write_all(bytes).unwrap();
        for _ in 0..count {
            assert_eq!(c.reply().error, None);
        }
        assert!(
            closed_by_the_server(&mut c.stream),
            "DISC closes the connection"
        );
    }
    for structured in [false, true] {
        let mut c = h.open("", structured);
        disc(&mut c, &bytes, run.len());
        let mut check = h.open("", false);
        for w in &run {
            let back = check.call(Command::Read, NONE, w.offset, w.data.len() as u32, &[]);
            assert!(back.data == w.data);
            // Wiped for the next round.
            let zeroes = vec![0; w.data.len()];
            let wiped = check.call(Command::Write, NONE, w.offset, zeroes.len() as u32, &zeroes);
            assert_eq!(wiped.error, None);
        }
    }
    let mut c = Client::<UnixStream>::connect_unix(&path);
    c.go("", true);
    disc(&mut c, &bytes, run.len());
    let mut check = h.open("", false);
    for w in &run {
        let back = check.call(Command::Read, NONE, w.offset, w.data.len() as u32, &[]);
        assert!(back.data == w.data);
    }
    drop(check);
    h.wait_for_stats("the connections ended", |s| s.connections == 0);
    h.assert_pool_full();
    h.stop();
    std::fs::remove_file(&path).unwrap();
}

/// Whether the server closed (or reset) `stream`: a read sees the end, not the client's read
/// timeout.
fn closed_by_the_server<S: std::io::Read>(stream: &mut S) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// The free buffers of the pool's largest class.
fn largest_free(h: &Harness) -> usize {
    let pool = h.rt.pool();
    let largest = (0..pool.classes())
        .max_by_key(|&c| pool.buf_size(c))
        .unwrap();
    pool.available(largest)
}

/// How a client that stopped in the middle of a request is made to let go.
#[derive(Clone, Copy, Debug)]
enum End {
    /// It closes its connection.
    Close,
    /// The server shuts down, and cuts it at the end of a short grace.
    Shutdown,
    /// It sends the rest after all, and its WRITE lands.
    Resume,
}

/// A client that sends a small WRITE's header and part of its payload, or a whole small WRITE
/// and part of the next header, and then stops. In the middle of a payload the reader reads the
/// rest ahead in a buffer of the largest class, and holds it while it waits; in the middle of a
/// header it holds none (the few bytes buffered go back to the control buffer): a connection
/// paused between requests keeps no read-ahead buffer from the others. Whatever it holds comes
/// back when the client closes, when a shutdown cuts it (at once between requests, at the end
/// of the grace in the middle of a payload), or, resumed, once its WRITE is done.
fn stopped_mid_request(mid_header: bool, end: End) {
    let Some(h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    let free = largest_free(&h);
    let mut c = h.open("", false);
    let first = pattern(4096, 1);
    let mut bytes = header(Command::Write, 1, 0, 4096).to_vec();
    let second = pattern(3000, 2);
    let next = header(Command::Write, 2, 8192, 3000);
    if mid_header {
        bytes.extend_from_slice(&first);
        bytes.extend_from_slice(&next[..10]);
    } else {
        bytes.extend_from_slice(&first[..100]);
    }
    c.stream.write_all(&bytes).unwrap();
    if mid_header {
        assert_eq!(c.reply().error, None);
        // The control pair, and no read-ahead buffer.
        h.wait_for_stats("a connection paused mid-header", |s| s.pool_in_use == 2);
        assert_eq!(largest_free(&h), free);
    } else {
        wait_until_held(&h, free - 1);
    }
    match end {
        End::Close => drop(c),
        End::Shutdown => {
            h.server.shutdown();
            let finished =
                h.rt.block_on(h.server.finish_within(Duration::from_millis(200)));
            assert_eq!(finished, Ok(()));
            assert!(closed_by_the_server(&mut c.stream));
            h.assert_pool_full();
            return;
        }
        End::Resume => {
            let mut rest = Vec::new();
            if mid_header {
                rest.extend_from_slice(&next[10..]);
                rest.extend_from_slice(&second);
            } else {
                rest.extend_from_slice(&first[100..]);
            }
            c.stream.write_all(&rest).unwrap();
            assert_eq!(c.reply().error, None);
            let (at, data) = if mid_header {
                (8192, &second)
            } else {
                (0, &first)
            };
            let back = c.call(Command::Read, NONE, at, data.len() as u32, &[]);
            assert!(back.data == *data);
            // Idle again: the control pair is all it holds.
            h.wait_for_stats("an idle connection", |s| s.pool_in_use == 2);
            assert_eq!(largest_free(&h), free);
            drop(c);
        }
    }
    h.wait_for_stats("the connection ended", |s| s.connections == 0);
    h.assert_pool_full();
    h.stop();
}

/// Clients that stop in the middle of a WRITE's payload and stay connected: a small WRITE (its
/// rest read ahead in a buffer of the largest class), a large one (received in place into its
/// own buffers), and a refused one (its payload skipped through a data buffer). Each holds
/// buffers that requests of the others may need, so once the stall timeout passes with nothing
/// received the server takes the client for gone and closes its connection: every buffer comes
/// back. A client idle between requests is not cut, and is served afterwards.
#[test]
fn clients_stopped_mid_payload_are_cut_after_the_stall_timeout() {
    let Some(h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    h.server.set_stall_timeout(Duration::from_secs(1));
    let max = h.server.max_payload();
    let mut idle = h.open("", false);
    let stopped: Vec<(u32, u64, usize)> = vec![
        // A small WRITE, a large one, one past the end of the export.
        (4096, 0, 100),
        (max, MIB, 1000),
        (4096, 4 * MIB, 100),
    ];
    let mut clients = Vec::new();
    for (length, offset, sent) in stopped {
        let mut c = h.open("", false);
        let mut bytes = header(Command::Write, 1, offset, length).to_vec();
        bytes.extend_from_slice(&pattern(sent, 3));
        c.stream.write_all(&bytes).unwrap();
        clients.push(c);
    }
    h.wait_for_stats("the stopped clients were not cut", |s| s.connections == 1);
    for mut c in clients {
        assert!(closed_by_the_server(&mut c.stream));
    }
    assert_eq!(idle.call(Command::Read, NONE, 0, 512, &[]).error, None);
    drop(idle);
    h.assert_pool_full();
    h.stop();
}

/// Waits until the largest class has `free` buffers free (the read-ahead buffer taken).
fn wait_until_held(h: &Harness, free: usize) {
    common::wait_for(
        || format!("{} largest buffers free, not {free}", largest_free(h)),
        || largest_free(h) == free,
    );
}

#[test]
fn a_client_stopped_mid_payload_in_read_ahead_closes() {
    stopped_mid_request(false, End::Close);
}

#[test]
fn a_client_stopped_mid_payload_in_read_ahead_is_cut_by_a_shutdown() {
    stopped_mid_request(false, End::Shutdown);
}

#[test]
fn a_client_stopped_mid_payload_in_read_ahead_resumes() {
    stopped_mid_request(false, End::Resume);
}

#[test]
fn a_client_stopped_mid_header_after_a_small_write_closes() {
    stopped_mid_request(true, End::Close);
}

#[test]
fn a_client_stopped_mid_header_after_a_small_write_is_cut_by_a_shutdown() {
    stopped_mid_request(true, End::Shutdown);
}

#[test]
fn a_client_stopped_mid_header_after_a_small_write_resumes() {
    stopped_mid_request(true, End::Resume);
}

/// On a pool of four buffers of the largest class (one read-ahead buffer, requests of two at
/// most), five clients, each sending on one thread and reading on another, mix runs of small
/// WRITEs (competing for the read-ahead buffer) with WRITEs and READs of the maximum payload
/// (on a file export: READs take pool buffers too) and refused WRITEs whose payloads are
/// skipped through a buffer of the largest class; then again while a sixth client holds the
/// read-ahead buffer, stopped in the middle of a small WRITE. Nobody waits for good: every
/// request is answered, every WRITE lands, and every buffer comes back.
#[test]
fn connections_competing_for_read_ahead_beside_the_largest_requests() {
    let file = TempFile::filled("nbd-ahead-compete", 0, 8 * MIB as usize);
    let export = Export::file("", file.path(), false).unwrap();
    let Some(h) = start(vec![export], 12) else {
        return;
    };
    let max = h.server.max_payload();
    assert_eq!(max, 128 * 1024, "a pool of four 64 KiB buffers");
    let free = largest_free(&h);
    for hold in [false, true] {
        let holder = hold.then(|| {
            let mut holder = h.open("", false);
            let mut bytes = header(Command::Write, 1, 7 * MIB, 4096).to_vec();
            bytes.extend_from_slice(&[1; 100]);
            holder.stream.write_all(&bytes).unwrap();
            wait_until_held(&h, free - 1);
            holder
        });
        std::thread::scope(|scope| {
            for n in 0..5_u64 {
                let h = &h;
                scope.spawn(move || compete(h, n, max));
            }
        });
        drop(holder);
        h.wait_for_stats("the connections ended", |s| s.connections == 0);
        h.assert_pool_full();
    }
    h.stop();
}

/// One of the competing clients: rounds of eight small WRITEs, a WRITE and a READ of `max`
/// bytes and a refused WRITE, sent on one thread while another reads the replies; then each
/// range read back.
fn compete(h: &Harness, n: u64, max: u32) {
    let mut sender = h.open("", true);
    let mut receiver = sender.other_half();
    let base = n * MIB;
    let small: Vec<(u64, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                base + i * 5000,
                pattern(4096 + i as usize * 100, (n + i) as u8),
            )
        })
        .collect();
    let large = (base + 65536, pattern(max as usize, 100 + n as u8));
    let rounds = 6_u64;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for _ in 0..rounds * 11 {
                let reply = receiver.reply();
                let refused = reply.cookie % 100 == 70;
                assert_eq!(
                    reply.error.is_some(),
                    refused,
                    "client {n}, cookie {}",
                    reply.cookie
                );
            }
        });
        for round in 0..rounds {
            let mut bytes = Vec::new();
            for (i, (at, data)) in small.iter().chain([&large]).enumerate() {
                bytes.extend_from_slice(&header(
                    Command::Write,
                    round * 100 + i as u64,
                    *at,
                    data.len() as u32,
                ));
                bytes.extend_from_slice(data);
            }
            bytes.extend_from_slice(&header(Command::Read, round * 100 + 60, large.0, max));
            // Past the end of the export: refused, its payload skipped through a buffer of
            // the largest class.
            bytes.extend_from_slice(&header(
                Command::Write,
                round * 100 + 70,
                8 * MIB - 1000,
                70_000,
            ));
            bytes.extend_from_slice(&pattern(70_000, 9));
            sender.stream.write_all(&bytes).unwrap();
        }
    });
    for (at, data) in small.iter().chain([&large]) {
        let back = sender.call(Command::Read, NONE, *at, data.len() as u32, &[]);
        assert!(
            back.error.is_none() && back.data == *data,
            "client {n} at {at}"
        );
    }
}

/// On a pool of four buffers of the largest class, one client stops in the middle of a WRITE of
/// the maximum payload (its two buffers held) and another in the middle of a small WRITE (the
/// read-ahead buffer held): a third client's READ of the maximum payload waits for a buffer
/// (see the `Buffers` docs) and is answered, with the right data, as soon as the one holding
/// the read-ahead buffer leaves; the server shuts down with the other still stopped.
#[test]
fn a_largest_request_waiting_behind_stopped_writers_goes_once_one_leaves() {
    let image = pattern(4 * MIB as usize, 3);
    let file = TempFile::new("nbd-ahead-behind");
    std::fs::write(file.path(), &image).unwrap();
    let export = Export::file("", file.path(), false).unwrap();
    let Some(h) = start(vec![export], 12) else {
        return;
    };
    let max = h.server.max_payload();
    let free = largest_free(&h);
    let mut large = h.open("", false);
    let mut bytes = header(Command::Write, 1, 0, max).to_vec();
    bytes.extend_from_slice(&[5; 1000]);
    large.stream.write_all(&bytes).unwrap();
    wait_until_held(&h, free - 2);
    let mut small = h.open("", false);
    let mut bytes = header(Command::Write, 1, MIB, 4096).to_vec();
    bytes.extend_from_slice(&[6; 100]);
    small.stream.write_all(&bytes).unwrap();
    wait_until_held(&h, free - 3);
    let mut reader = h.open("", true);
    reader.request(Command::Read, NONE, 9, 2 * MIB, max, &[]);
    drop(small);
    let got = reader.reply();
    assert_eq!(got.cookie, 9);
    assert!(got.error.is_none() && got.data == image[2 * MIB as usize..][..max as usize]);
    h.server.shutdown();
    let finished =
        h.rt.block_on(h.server.finish_within(Duration::from_millis(200)));
    assert_eq!(finished, Ok(()));
    assert!(closed_by_the_server(&mut large.stream));
    h.assert_pool_full();
}
