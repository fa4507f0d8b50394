//! Hostile and broken clients against the in-process server: each test is an attack that once
//! broke it (its doc comment says how), kept as a regression test.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{memory, pattern, start, Harness};
use regio_nbd::proto::{Command, CommandFlags};
use regio_nbd::target::Export;

const MIB: u64 = 1 << 20;

/// Shuts `h` down, giving connections a second before they are cut, and waits (a generous
/// bound, not a timing) for the end; panics if it does not come.
fn shut_down(h: &Harness) {
    h.server.shutdown();
    let finished = h.rt.block_on(regio_runtime::time::timeout(
        Duration::from_secs(120),
        h.server.finish_within(Duration::from_secs(1)),
    ));
    assert!(
        matches!(finished, Ok(Ok(()))),
        "finish did not end: {finished:?} ({})",
        h.server.stats()
    );
}

/// Reads `stream` to its end and asserts, failing with `what`, that the server ended it (a
/// close or a reset); returns the bytes read.
fn read_until_cut(stream: &mut impl std::io::Read, what: &str) -> Vec<u8> {
    let mut rest = Vec::new();
    let end = std::io::Read::read_to_end(stream, &mut rest);
    assert!(
        end.is_ok() || end.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{what}"
    );
    rest
}

/// A client that stops reading its replies must not hold a graceful shutdown forever: its
/// writer is stuck in a send the client never drains. Before the fix `finish` never returned
/// (the CLI gave up after its grace period and exited without flushing the exports).
#[test]
fn shutdown_ends_with_a_client_that_stopped_reading() {
    let Some(h) = start(vec![memory("", 8 * MIB)], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let max = h.server.max_payload();
    let mut stalled = h.stalled_client(&pattern(max as usize, 1));
    // Some of those replies are stuck in a send: the server has read every request.
    let mut other = h.open("", false);
    assert_eq!(other.call(Command::Flush, none, 0, 0, &[]).error, None);
    shut_down(&h);
    assert!(other.is_closed());
    // The server closed the connection: what it had sent, then the end.
    read_until_cut(&mut stalled.stream, "the cut connection ends");
    drop(stalled);
    h.assert_pool_full();
}

/// A client that sends a WRITE's header and half its payload, then neither sends nor closes,
/// must not hold a graceful shutdown forever: the reader waits for the rest of the payload.
/// Before the fix `finish` never returned.
#[test]
fn shutdown_ends_with_a_write_payload_cut_off() {
    let Some(h) = start(vec![memory("", 8 * MIB)], 8) else {
        return;
    };
    let max = h.server.max_payload();
    let mut cut = h.open("", false);
    cut.request(
        Command::Write,
        CommandFlags::empty(),
        1,
        0,
        max,
        &vec![5; max as usize / 2],
    );
    cut.stream.flush().unwrap();
    // The server is serving (and has taken the half payload, or will).
    let mut other = h.open("", false);
    assert_eq!(
        other
            .call(Command::Flush, CommandFlags::empty(), 0, 0, &[])
            .error,
        None
    );
    shut_down(&h);
    assert!(cut.is_closed());
    h.assert_pool_full();
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random WRITEs, READs, TRIMs and WRITE_ZEROES (aligned or not, so a file export mixes its
/// `O_DIRECT` and buffered descriptors on the same pages; with FUA or not), each connection on
/// its own region, several connections at once, every READ checked against a model of the
/// region (a trimmed byte may read as anything).
fn random_operations_match_a_model(export: Export) {
    const REGION: u64 = 256 * 1024;
    const CONNECTIONS: u64 = 4;
    let Some(h) = start(vec![export], 8) else {
        return;
    };
    let max = u64::from(h.server.max_payload()).min(REGION);
    std::thread::scope(|scope| {
        for n in 0..CONNECTIONS {
            let mut c = h.open("", n % 2 == 0);
            scope.spawn(move || {
                let base = n * REGION;
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n + 1));
                let mut model = vec![0_u8; REGION as usize];
                let mut known = vec![true; REGION as usize];
                for step in 0..300_u32 {
                    let aligned = rng.below(2) == 0;
                    let (at, len) = if aligned {
                        let at = rng.below(REGION / 4096) * 4096;
                        (at, 4096 * (1 + rng.below((REGION - at).min(max) / 4096)))
                    } else {
                        let at = rng.below(REGION - 1);
                        (at, 1 + rng.below((REGION - at).min(max) - 1))
                    };
                    let range = at as usize..(at + len) as usize;
                    let fua = if rng.below(4) == 0 {
                        CommandFlags::FUA
                    } else {
                        CommandFlags::empty()
                    };
                    let len32 = len as u32;
                    match rng.below(5) {
                        0 | 1 => {
                            let data = pattern(len as usize, step as u8);
                            let r = c.call(Command::Write, fua, base + at, len32, &data);
                            assert_eq!(r.error, None, "write {at}+{len}");
                            model[range.clone()].copy_from_slice(&data);
                            known[range].fill(true);
                        }
                        2 => {
                            let r = c.call(Command::Trim, fua, base + at, len32, &[]);
                            assert_eq!(r.error, None, "trim {at}+{len}");
                            known[range].fill(false);
                        }
                        3 => {
                            let flags = if rng.below(2) == 0 {
                                fua | CommandFlags::NO_HOLE
                            } else {
                                fua
                            };
                            let r = c.call(Command::WriteZeroes, flags, base + at, len32, &[]);
                            assert_eq!(r.error, None, "zeroes {at}+{len}");
                            model[range.clone()].fill(0);
                            known[range].fill(true);
                        }
                        _ => {
                            let r =
                                c.call(Command::Read, CommandFlags::empty(), base + at, len32, &[]);
                            assert_eq!(r.error, None, "read {at}+{len}");
                            assert_eq!(r.data.len(), len as usize);
                            for (i, byte) in r.data.iter().enumerate() {
                                let j = at as usize + i;
                                assert!(
                                    !known[j] || model[j] == *byte,
                                    "connection {n} step {step}: byte {j} reads {byte}, \
                                     the model says {}",
                                    model[j]
                                );
                            }
                        }
                    }
                }
            });
        }
    });
    h.assert_pool_full();
    h.stop();
}

#[test]
fn random_operations_on_memory_match_a_model() {
    random_operations_match_a_model(memory("", CONNECTIONS_REGION));
}

#[test]
fn random_operations_on_a_file_match_a_model() {
    let path = std::env::temp_dir().join(format!("regio-nbd-attack-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(CONNECTIONS_REGION)
        .unwrap();
    let export = Export::file("", &path, false).unwrap();
    random_operations_match_a_model(export);
    std::fs::remove_file(&path).unwrap();
}

/// What [`random_operations_match_a_model`] needs: four regions of 256 KiB.
const CONNECTIONS_REGION: u64 = 4 * 256 * 1024;

/// Descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Thousands of connections, in every state (in transmission with requests in flight, just
/// connected, greeted, in the middle of an option), all dropped at once: every buffer and every
/// descriptor comes back, and the server still serves. (The clients in transmission connect
/// first: connections past the pool's control pairs close the oldest ones still in their
/// handshake, and connections in transmission are never closed that way.)
#[test]
fn thousands_of_connections_in_every_state_leave_nothing_behind() {
    let Some(h) = start(vec![memory("", 8 * MIB)], 16) else {
        return;
    };
    // The baseline once the server has served a connection (the runtime opens what it needs
    // on first use).
    let mut warm = h.open("", false);
    assert_eq!(
        warm.call(Command::Flush, CommandFlags::empty(), 0, 0, &[])
            .error,
        None
    );
    drop(warm);
    while h.server.stats().connections > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = open_fds();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let mut c = h.open("", true);
            for cookie in 0..16 {
                c.request(Command::Read, CommandFlags::empty(), cookie, 0, 65536, &[]);
            }
            c
        })
        .collect();
    let streams: Vec<_> = (0..2000)
        .map(|i| {
            let mut stream = std::net::TcpStream::connect(h.addr).unwrap();
            match i % 3 {
                0 => {}
                1 => stream.write_all(&3_u32.to_be_bytes()).unwrap(),
                // Half an option header.
                _ => stream
                    .write_all(&[0, 0, 0, 3, 0x49, 0x48, 0x41, 0x56, 0x45])
                    .unwrap(),
            }
            stream
        })
        .collect();
    drop((streams, clients));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while open_fds() > before || h.server.stats().connections > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} descriptors open, {} before ({})",
            open_fds(),
            before,
            h.server.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    h.assert_pool_full();
    let mut c = h.open("", false);
    assert_eq!(
        c.call(Command::Read, CommandFlags::empty(), 0, 4, &[]).data,
        [0; 4]
    );
    drop(c);
    h.stop();
}

/// Two clients that stop reading their replies to large READs must not stall a third
/// client's large requests. Before the fix each held its share of the data buffers (one
/// request of the maximum payload: half the largest class) for as long as it stayed
/// connected, two held them all, and the third client's READ never got an answer; now a
/// reply that waits longer than the stall timeout cuts its connection. (On a file export: a
/// registered memory export's READs are sent from the export and hold no pool buffers, and on
/// loopback the kernel queues all of these replies without a stall.)
#[test]
fn two_stalled_clients_leave_large_requests_to_the_others() {
    let file = regio_testkit::TempFile::filled("nbd-stalled", 0, 8 * MIB as usize);
    let Some(h) = start(vec![Export::file("", file.path(), false).unwrap()], 8) else {
        return;
    };
    h.server.set_stall_timeout(Duration::from_secs(1));
    let max = h.server.max_payload();
    let data = pattern(max as usize, 9);
    let stalled = [h.stalled_client(&data), h.stalled_client(&data)];
    let mut other = h.open("", true);
    common::large_writes_read_back(&mut other, &data);
    // The stalled connections were cut: what the server had sent, then the end.
    for mut c in stalled {
        read_until_cut(&mut c.stream, "a stalled connection is cut");
    }
    drop(other);
    h.assert_pool_full();
    h.stop();
}

/// A client that reads one zero-copy READ's reply, then asks for a few more and neither reads
/// their replies nor asks for more: the replies fit in the server's socket, so no send stalls
/// (zero-copy sends resolve once the socket took the bytes), but the bytes the client's tiny
/// window leaves unsent keep their pool buffers in that socket. The writer, with nothing left
/// to send, sees them unacknowledged for the stall timeout and cuts the connection, which
/// gives the buffers back.
#[test]
fn a_client_that_stops_reading_short_replies_is_cut_and_frees_the_buffers() {
    let file = regio_testkit::TempFile::filled("nbd-unread", 0, 4 * MIB as usize);
    let Some(h) = start(vec![Export::file("", file.path(), false).unwrap()], 8) else {
        return;
    };
    h.server.set_stall_timeout(Duration::from_secs(1));
    let len = h.server.max_payload();
    let mut c = unread_zero_copy_reads(&h, len);
    // The client reads nothing until the server has closed the connection.
    h.wait_for_stats("the connection was not cut", |s| s.connections == 0);
    h.assert_pool_full();
    let got = read_until_cut(&mut c.stream, "the connection is cut");
    assert!(got.len() < 4 * len as usize, "every reply got through");
    h.stop();
}

/// A client that leaves zero-copy replies unacknowledged, then resets its connection (it
/// closes with replies unread). The reset socket dropped what it queued, though `SIOCOUTQ`
/// still counts those bytes: the connection ends at once rather than waiting out the stall
/// timeout for an acknowledgement that cannot come, and every buffer is back.
#[test]
fn a_client_that_resets_with_replies_unacknowledged_ends_at_once() {
    let file = regio_testkit::TempFile::filled("nbd-reset", 0, 4 * MIB as usize);
    let Some(h) = start(vec![Export::file("", file.path(), false).unwrap()], 8) else {
        return;
    };
    // Far longer than the bounded waits below.
    h.server.set_stall_timeout(Duration::from_secs(600));
    // Replies the server's socket holds whole: no send stalls.
    let c = unread_zero_copy_reads(&h, 16 * 1024);
    // Every reply is in the server's socket, most of it unacknowledged.
    h.wait_for_stats("replies unsent", |s| s.in_flight == 0 && s.requests == 5);
    // Closing with replies unread resets the connection.
    drop(c);
    h.wait_for_stats(
        "the connection waits for an acknowledgement after a reset",
        |s| s.connections == 0,
    );
    h.assert_pool_full();
    h.stop();
}

/// A client of `h` (whose zero-copy threshold this sets to 0) that reads one `len`-byte
/// READ's reply (a connection's first zero-copy send waits for its buffer back, see the
/// writer), shrinks its receive buffer to 4 KiB, and asks for four more it does not read.
fn unread_zero_copy_reads(h: &Harness, len: u32) -> common::Client {
    h.server.set_zero_copy_min(0);
    let mut c = h.open("", false);
    let first = c.call(Command::Read, CommandFlags::empty(), 0, len, &[]);
    assert_eq!(first.error, None);
    common::set_receive_buffer(&c.stream, 4096);
    for i in 0..4 {
        let at = u64::from(i * len);
        c.request(Command::Read, CommandFlags::empty(), i.into(), at, len, &[]);
    }
    c
}

/// Sends option `code` with `data` as it is (malformed on purpose).
fn raw_option(c: &mut common::Client, code: u32, data: &[u8]) {
    let mut bytes = b"IHAVEOPT".to_vec();
    bytes.extend_from_slice(&code.to_be_bytes());
    bytes.extend_from_slice(&(data.len() as u32).to_be_bytes());
    bytes.extend_from_slice(data);
    c.stream.write_all(&bytes).unwrap();
}

/// Whether an option reply type is final (an ACK or an error).
fn is_final(reply_type: u32) -> bool {
    reply_type == 1 || reply_type & (1 << 31) != 0
}

/// Option haggling a broken client does: STRUCTURED_REPLY twice, SET_META_CONTEXT before it,
/// meta context requests with absurd lengths, more options after a failed GO, EXPORT_NAME of
/// an unknown export. Each gets an answer (or, for EXPORT_NAME, the close the spec asks for)
/// and the handshake goes on.
#[test]
fn option_haggling_gets_answers_and_the_handshake_goes_on() {
    use regio_nbd::proto::{ClientOption, ExportRequest, MetaContextRequest};

    let Some(h) = start(vec![memory("", MIB)], 8) else {
        return;
    };
    let mut c = h.connect();
    // SET_META_CONTEXT before structured replies: refused, no context.
    let set = c.ask(&ClientOption::SetMetaContext(MetaContextRequest {
        export: String::new(),
        queries: vec!["base:allocation".into()],
    }));
    assert!(set.len() == 1 && set[0].0 & (1 << 31) != 0, "{set:?}");
    // Structured replies twice: each answered.
    for _ in 0..2 {
        let replies = c.ask(&ClientOption::StructuredReply);
        assert_eq!(replies.len(), 1, "{replies:?}");
    }
    // Absurd lengths inside a meta context request: an export name and a query longer than
    // the option, and a query count of four billion.
    for data in [
        [&u32::MAX.to_be_bytes()[..], &[0; 8]].concat(),
        [
            &0_u32.to_be_bytes()[..],
            &1_u32.to_be_bytes(),
            &u32::MAX.to_be_bytes(),
        ]
        .concat(),
        [&0_u32.to_be_bytes()[..], &u32::MAX.to_be_bytes()].concat(),
        vec![0; 3],
    ] {
        for code in [9, 10] {
            raw_option(&mut c, code, &data);
            loop {
                let (option, reply_type, _) = c.option_reply();
                assert_eq!(option, code);
                if is_final(reply_type) {
                    assert_ne!(reply_type, 1, "a malformed request is refused: {data:?}");
                    break;
                }
            }
        }
    }
    // GO of an unknown export fails; the client goes on haggling, then GO succeeds.
    let failed = c.ask(&ClientOption::Go(ExportRequest {
        name: "no-such-export".into(),
        info_requests: vec![],
    }));
    assert_eq!(
        failed.last().unwrap().0,
        (1 << 31) | 6,
        "NBD_REP_ERR_UNKNOWN"
    );
    // Structured replies are on already: the context, then GO.
    let set = c.ask(&ClientOption::SetMetaContext(MetaContextRequest {
        export: String::new(),
        queries: vec!["base:allocation".into()],
    }));
    assert_eq!(set.len(), 2, "one context and the ACK: {set:?}");
    c.go("", false);
    c.structured = true;
    let r = c.call(Command::BlockStatus, CommandFlags::empty(), 0, 4096, &[]);
    assert_eq!((r.error, r.extents.len()), (None, 1));
    drop(c);
    // EXPORT_NAME of an unknown export: the server closes the connection.
    let mut unknown = h.connect();
    unknown.send_option(&ClientOption::ExportName("no-such-export".into()));
    assert!(unknown.is_closed());
    drop(unknown);
    h.assert_pool_full();
    h.stop();
}

/// Requests at the edges: ranges straddling the end or overflowing u64, lengths of 0, of the
/// maximum and of the maximum plus one, flags the command does not take, and commands after
/// NBD_CMD_DISC (which the server must not answer).
#[test]
fn requests_at_the_edges_get_errors_and_disc_ends_the_connection() {
    use regio_nbd::proto::Errno;

    let Some(h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let max = h.server.max_payload();
    for structured in [false, true] {
        let mut c = h.open("", structured);
        let size = c.size;
        let cases: [(Command, CommandFlags, u64, u32, Option<Errno>); 10] = [
            (Command::Read, none, size - 10, 20, Some(Errno::EINVAL)),
            (Command::Read, none, u64::MAX - 5, 10, Some(Errno::EINVAL)),
            (Command::Trim, none, u64::MAX, 1, Some(Errno::EINVAL)),
            (Command::WriteZeroes, none, size, 1, Some(Errno::ENOSPC)),
            (Command::Read, none, size, 0, None),
            (Command::Read, none, 0, 0, None),
            (Command::Read, none, 0, max, None),
            (Command::Cache, none, size - 1, 1, None),
            (
                Command::Read,
                CommandFlags::REQ_ONE,
                0,
                4,
                Some(Errno::EINVAL),
            ),
            (
                Command::Flush,
                CommandFlags::NO_HOLE,
                0,
                0,
                Some(Errno::EINVAL),
            ),
        ];
        for (command, flags, offset, length, error) in cases {
            let r = c.call(command, flags, offset, length, &[]);
            assert_eq!(r.error, error, "{command:?} {flags:?} {offset}+{length}");
            if error.is_none() && command == Command::Read {
                assert_eq!(r.data.len(), length as usize);
            }
        }
        let over = c.call(Command::Read, none, 0, max + 1, &[]);
        assert!(over.error.is_some());
        // A WRITE over the maximum is read through and refused; the connection goes on.
        let payload = vec![1; max as usize + 1];
        let over = c.call(Command::Write, none, 0, max + 1, &payload);
        assert_eq!(over.error, Some(Errno::EINVAL));
        let fast = c.call(Command::Write, CommandFlags::FAST_ZERO, 0, 1, &[1]);
        assert_eq!(fast.error, Some(Errno::EINVAL));
        let data = pattern(max as usize, 4);
        assert_eq!(c.call(Command::Write, none, 0, max, &data).error, None);
        assert!(c.call(Command::Read, none, 0, max, &[]).data == data);
        // Requests in flight, DISC, then more requests: the first are answered, the rest not.
        for cookie in 1..=4 {
            c.request(Command::Read, none, cookie, 0, 4096, &[]);
        }
        // DISC and the requests after it in one send: the server may close before a second.
        let mut after = Vec::new();
        for (command, cookie) in [(Command::Disc, 99)]
            .into_iter()
            .chain((100..104).map(|c| (Command::Read, c)))
        {
            let mut head = [0; regio_nbd::proto::REQUEST_HEADER_LEN];
            regio_nbd::proto::Request {
                flags: none,
                command,
                cookie: regio_nbd::proto::Cookie(cookie),
                offset: 0,
                length: if command == Command::Read { 4096 } else { 0 },
            }
            .encode(&mut head);
            after.extend_from_slice(&head);
        }
        c.stream.write_all(&after).unwrap();
        let mut answered: Vec<u64> = (0..4).map(|_| c.reply().cookie).collect();
        answered.sort_unstable();
        assert_eq!(answered, [1, 2, 3, 4]);
        assert!(c.is_closed());
    }
    h.assert_pool_full();
    h.stop();
}

/// A TLS client that sends its ClientHello where the client flags belong, and one that asks
/// NBD_OPT_STARTTLS: the first is closed, the second refused, and the server serves on.
#[test]
fn a_client_speaking_tls_is_refused() {
    use regio_nbd::proto::ClientOption;

    let Some(h) = start(vec![memory("", MIB)], 8) else {
        return;
    };
    let mut hello = std::net::TcpStream::connect(h.addr).unwrap();
    let mut greeting = [0; 18];
    std::io::Read::read_exact(&mut hello, &mut greeting).unwrap();
    // The start of a TLS 1.2 record carrying a ClientHello.
    let _ = hello.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03]);
    read_until_cut(
        &mut hello,
        "a ClientHello as client flags closes the connection",
    );
    let mut starttls = h.connect();
    let refused = starttls.ask(&ClientOption::StartTls);
    assert!(
        refused.len() == 1 && refused[0].0 & (1 << 31) != 0,
        "{refused:?}"
    );
    starttls.go("", false);
    assert_eq!(
        starttls
            .call(Command::Read, CommandFlags::empty(), 0, 4, &[])
            .data,
        [0; 4]
    );
    drop(starttls);
    h.assert_pool_full();
    h.stop();
}

/// A graceful shutdown with WRITEs in flight on a file export: every WRITE the server
/// acknowledged is in the file afterwards, and every other reply is an error or missing (the
/// connection ends).
#[test]
fn shutdown_with_writes_in_flight_keeps_every_acknowledged_write() {
    const BLOCK: u64 = 64 * 1024;
    let path = std::env::temp_dir().join(format!("regio-nbd-shutdown-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(128 * BLOCK)
        .unwrap();
    let Some(h) = start(vec![Export::file("", &path, false).unwrap()], 8) else {
        std::fs::remove_file(&path).unwrap();
        return;
    };
    let mut sender = h.open("", false);
    let mut receiver = sender.other_half();
    let (first_ack, acked) = std::sync::mpsc::channel();
    let acknowledged = std::thread::scope(|scope| {
        let reading = scope.spawn(move || {
            let mut acknowledged = Vec::new();
            let mut byte = [0; 1];
            // Replies until the server closes the connection.
            while matches!(receiver.stream.peek(&mut byte), Ok(1)) {
                let reply = receiver.reply();
                if reply.error.is_none() {
                    acknowledged.push(reply.cookie);
                    let _ = first_ack.send(());
                }
            }
            acknowledged
        });
        for block in 0..128_u64 {
            let data = vec![block as u8 + 1; BLOCK as usize];
            // The server may close before it has read them all.
            let mut head = [0; regio_nbd::proto::REQUEST_HEADER_LEN];
            regio_nbd::proto::Request {
                flags: CommandFlags::empty(),
                command: Command::Write,
                cookie: regio_nbd::proto::Cookie(block),
                offset: block * BLOCK,
                length: BLOCK as u32,
            }
            .encode(&mut head);
            if sender.stream.write_all(&head).is_err() || sender.stream.write_all(&data).is_err() {
                break;
            }
            if block == 32 {
                // Some writes are done, others in flight or still to come.
                acked.recv_timeout(Duration::from_secs(60)).unwrap();
                h.server.shutdown();
            }
        }
        let finished = h.rt.block_on(regio_runtime::time::timeout(
            Duration::from_secs(120),
            h.server.finish_within(Duration::from_secs(30)),
        ));
        assert!(matches!(finished, Ok(Ok(()))), "{finished:?}");
        reading.join().unwrap()
    });
    assert!(!acknowledged.is_empty());
    let on_disk = std::fs::read(&path).unwrap();
    for block in acknowledged {
        let at = (block * BLOCK) as usize;
        assert!(
            on_disk[at..at + BLOCK as usize]
                .iter()
                .all(|&b| b == block as u8 + 1),
            "acknowledged write {block} is in the file"
        );
    }
    drop(sender);
    std::fs::remove_file(&path).unwrap();
}

/// `nbdinfo --map` of a huge sparse memory export: BLOCK_STATUS over 32 TiB, 4 GiB at a time.
/// Before the fix each request walked its million pages one by one, holding the page map (and
/// with it every write) meanwhile: the map of a 40 TiB export took minutes and `nbdinfo --map`
/// gave up; now a run of pages in the same state is skipped a word (64 pages) at a time.
#[test]
fn block_status_over_a_huge_sparse_memory_export() {
    const SIZE: u64 = 32 << 40;
    let export = match Export::memory("", SIZE, false) {
        Ok(export) => export,
        Err(e) => return regio_testkit::skip(&format!("cannot reserve 32 TiB: {e}")),
    };
    let Some(h) = start(vec![export], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let mut c = h.open("", true);
    let islands = [0, 5 << 40, SIZE - 4096];
    for at in islands {
        assert_eq!(
            c.call(Command::Write, none, at, 4096, &[1; 4096]).error,
            None
        );
    }
    let step = u64::from(u32::MAX) & !4095;
    let (mut at, mut data) = (0, Vec::new());
    while at < SIZE {
        let len = step.min(SIZE - at) as u32;
        let r = c.call(Command::BlockStatus, none, at, len, &[]);
        assert_eq!(r.error, None, "block status at {at}");
        for (length, flags) in r.extents {
            if flags == 0 {
                data.push((at, length));
            }
            at += u64::from(length);
        }
    }
    assert_eq!(data, islands.map(|at| (at, 4096)));
    drop(c);
    h.stop();
}
