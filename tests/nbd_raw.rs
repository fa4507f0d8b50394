//! The server under test (`regio serve` unless `REGIO_NBD_SERVER` names nbdkit or qemu-nbd)
//! against a raw client that sends what real clients never would: malformed input over TCP
//! (only that connection closes), unknown options and commands, oversized requests, cookies
//! answered out of order, a crash after acknowledged writes, and clients that vanish in the
//! middle of a request.

mod common;

use std::collections::HashMap;
use std::io::Write;

use common::data::{zeroed_file, Noise};
use common::raw::{request_header, Closing, Pending, RawClient, Stream};
use common::server::{Backing, Implementation, Server, Spec};
use common::TempDir;
use regio_nbd::proto::consts::*;
use regio_nbd::proto::ClientFlags;

const MIB: u64 = 1 << 20;

/// Serves a zeroed sparse file of `len` bytes from `dir` over loopback TCP.
fn tcp_export(dir: &TempDir, len: u64) -> Option<Server> {
    let path = dir.join("export.img");
    zeroed_file(&path, len);
    common::start(Spec::new(Implementation::under_test(), Backing::File(path)).tcp())
}

/// A write then a read of the same bytes on `client`; fails the test unless both work.
fn round_trip(client: &mut RawClient, offset: u64, seed: u64) {
    let data = Noise::new(seed).bytes(4096);
    assert_eq!(client.write(0, offset, &data), 0, "WRITE");
    assert!(
        client.read(offset, 4096) == data,
        "read back what was written"
    );
}

/// Fails the test unless the server still runs and serves a new connection.
fn assert_serves(server: &mut Server) {
    assert!(
        server.is_running(),
        "the server died:\n{}",
        server.log_tail()
    );
    let serve = std::panic::AssertUnwindSafe(|| {
        let (mut client, _) = RawClient::open(server.address(), server.export_name());
        round_trip(&mut client, 3 * MIB, 99);
        client.disconnect();
    });
    if std::panic::catch_unwind(serve).is_err() {
        panic!(
            "the server (now {}) did not serve a new connection; its log:\n{}",
            if server.is_running() {
                "running"
            } else {
                "dead"
            },
            server.log_tail()
        );
    }
}

/// What a malformed client sends, from a fresh connection.
type Malformation = fn(&mut RawClient);

fn after_handshake(client: &mut RawClient) {
    client.send_client_flags((ClientFlags::C_FIXED_NEWSTYLE | ClientFlags::C_NO_ZEROES).bits());
    client.send_option(NBD_OPT_GO, &[0, 0, 0, 0, 0, 0]);
    loop {
        let reply = client.option_reply();
        if reply.kind == NBD_REP_ACK {
            break;
        }
        assert!(
            reply.kind & NBD_REP_FLAG_ERROR == 0,
            "NBD_OPT_GO failed: {reply:?}"
        );
    }
}

const MALFORMED: &[(&str, bool, Malformation)] = &[
    ("a request with the wrong magic", true, |c| {
        let mut header = request_header(0, NBD_CMD_READ, 1, 0, 512);
        header[..4].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
        c.send_lossy(&header);
    }),
    ("a truncated request header", true, |c| {
        c.send_lossy(&request_header(0, NBD_CMD_READ, 1, 0, 512)[..12]);
        c.stream.shutdown_write();
    }),
    ("garbage instead of requests", true, |c| {
        c.send_lossy(&Noise::new(7).bytes(4096));
    }),
    ("garbage instead of the client flags", false, |c| {
        c.send_lossy(&Noise::new(8).bytes(4096));
    }),
    ("an unknown client flag", false, |c| {
        c.send_lossy(&(1u32 << 31 | 3).to_be_bytes());
    }),
    ("an option with the wrong magic", false, |c| {
        c.send_client_flags(3);
        let mut option = IHAVEOPT.to_be_bytes().to_vec();
        option[0] ^= 0xff;
        option.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
        option.extend_from_slice(&0u32.to_be_bytes());
        c.send_lossy(&option);
    }),
    ("a truncated option", false, |c| {
        c.send_client_flags(3);
        c.send_lossy(&IHAVEOPT.to_be_bytes()[..6]);
        c.stream.shutdown_write();
    }),
];

#[test]
fn malformed_input_closes_only_its_own_connection() {
    let dir = TempDir::new("malformed");
    let Some(mut server) = tcp_export(&dir, 64 * MIB) else {
        return;
    };
    let (mut bystander, _) = RawClient::open(server.address(), server.export_name());
    for (i, (what, in_transmission, send)) in MALFORMED.iter().enumerate() {
        let (mut bad, _) = RawClient::connect(server.address());
        if *in_transmission {
            after_handshake(&mut bad);
        }
        send(&mut bad);
        assert_eq!(
            bad.wait_closed(),
            Closing::Closed,
            "the server kept a connection open after {what}"
        );
        round_trip(&mut bystander, i as u64 * MIB, i as u64);
        assert_serves(&mut server);
    }
    bystander.disconnect();
}

#[test]
fn unknown_options_get_err_unsup_and_the_handshake_goes_on() {
    let dir = TempDir::new("unknown-option");
    let Some(server) = tcp_export(&dir, 16 * MIB) else {
        return;
    };
    let (mut client, _) = RawClient::connect(server.address());
    client.send_client_flags((ClientFlags::C_FIXED_NEWSTYLE | ClientFlags::C_NO_ZEROES).bits());
    // Unknown options, and TLS, which this server is not asked to support yet.
    let options = [
        (0x4242u32, &b"a payload to drain"[..]),
        (0x7fff_ffff, &[][..]),
        (NBD_OPT_STARTTLS, &[][..]),
    ];
    for (option, payload) in options {
        client.send_option(option, payload);
        let reply = client.option_reply();
        assert_eq!(reply.option, option, "the reply names its option");
        // Without TLS configured, NBD_OPT_STARTTLS may also meet a policy refusal.
        let refusals: &[u32] = if option == NBD_OPT_STARTTLS {
            &[NBD_REP_ERR_UNSUP, NBD_REP_ERR_POLICY]
        } else {
            &[NBD_REP_ERR_UNSUP]
        };
        assert!(
            refusals.contains(&reply.kind),
            "option {option:#x} got reply {:#x}",
            reply.kind
        );
    }
    let export = client.go(server.export_name()).expect("NBD_OPT_GO");
    assert_eq!(export.size, 16 * MIB);
    round_trip(&mut client, 0, 1);
    client.disconnect();

    // Extended headers, which recent qemu and libnbd ask for first: a server without them must
    // refuse with ERR_UNSUP (any other error breaks those clients); one with them says ACK.
    let (mut client, _) = RawClient::connect(server.address());
    client.send_client_flags((ClientFlags::C_FIXED_NEWSTYLE | ClientFlags::C_NO_ZEROES).bits());
    client.send_option(NBD_OPT_EXTENDED_HEADERS, &[]);
    let reply = client.option_reply();
    assert_eq!(reply.option, NBD_OPT_EXTENDED_HEADERS);
    assert!(
        [NBD_REP_ERR_UNSUP, NBD_REP_ACK].contains(&reply.kind),
        "NBD_OPT_EXTENDED_HEADERS got reply {:#x}",
        reply.kind
    );
}

#[test]
fn an_endless_handshake_is_cut_off() {
    let dir = TempDir::new("endless-handshake");
    let Some(mut server) = tcp_export(&dir, 16 * MIB) else {
        return;
    };
    let (mut client, _) = RawClient::connect(server.address());
    client.send_client_flags((ClientFlags::C_FIXED_NEWSTYLE | ClientFlags::C_NO_ZEROES).bits());
    let limit = 10_000;
    let mut answered = 0;
    for _ in 0..limit {
        let mut option = IHAVEOPT.to_be_bytes().to_vec();
        option.extend_from_slice(&0x4242u32.to_be_bytes());
        option.extend_from_slice(&0u32.to_be_bytes());
        client.send_lossy(&option);
        let mut head = [0; 20];
        if std::io::Read::read_exact(&mut client.stream, &mut head).is_err() {
            break;
        }
        answered += 1;
    }
    assert!(
        answered < limit,
        "the server answered {limit} options in one handshake"
    );
    assert_serves(&mut server);
}

#[test]
fn fua_is_accepted_on_every_command() {
    let dir = TempDir::new("fua");
    let Some(server) = tcp_export(&dir, 16 * MIB) else {
        return;
    };
    let (mut c, _) = RawClient::open(server.address(), server.export_name());
    let fua = 1;
    assert_eq!(c.write(fua, 0, &[7; 4096]), 0, "WRITE with FUA");
    for (command, name) in [
        (NBD_CMD_READ, "READ"),
        (NBD_CMD_FLUSH, "FLUSH"),
        (NBD_CMD_TRIM, "TRIM"),
        (NBD_CMD_WRITE_ZEROES, "WRITE_ZEROES"),
        (NBD_CMD_CACHE, "CACHE"),
    ] {
        let len = if command == NBD_CMD_FLUSH { 0 } else { 4096 };
        let (error, _) = c.call(fua, command, MIB, len);
        assert_eq!(error, 0, "{name} with FUA");
    }
    round_trip(&mut c, 0, 16);
    c.disconnect();
}

#[test]
fn many_connections_with_requests_in_flight_meet_backpressure() {
    let dir = TempDir::new("many-connections");
    let Some(mut server) = tcp_export(&dir, 64 * MIB) else {
        return;
    };
    // Each connection holds a descriptor here and at least one in the server: stay well under
    // this process's limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit(RLIMIT_NOFILE)");
    let count = (limit.rlim_cur / 4).min(2000) as usize;
    // Each client sends its handshake and 16 reads of 64 KiB at once, and reads nothing: the
    // server may hold them back (backpressure) but must neither crash nor run out of memory.
    let mut hello = Vec::new();
    hello.extend_from_slice(
        &(ClientFlags::C_FIXED_NEWSTYLE | ClientFlags::C_NO_ZEROES)
            .bits()
            .to_be_bytes(),
    );
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    hello.extend_from_slice(&6u32.to_be_bytes());
    hello.extend_from_slice(&[0; 6]);
    for i in 0..16u64 {
        hello.extend(request_header(0, NBD_CMD_READ, i, i * 65536, 65536));
    }
    let clients: Vec<Stream> = (0..count)
        .map(|_| {
            let mut stream = Stream::connect(server.address());
            stream
                .write_all(&hello)
                .expect("send a handshake and requests");
            stream
        })
        .collect();
    // One full handshake and request past them all shows the server alive once they are gone:
    // every buffer they held came back.
    assert!(
        server.is_running(),
        "the server died:\n{}",
        server.log_tail()
    );
    drop(clients);
    assert_serves(&mut server);
}

#[test]
fn export_name_option_with_and_without_no_zeroes() {
    let dir = TempDir::new("export-name");
    let Some(server) = tcp_export(&dir, 16 * MIB) else {
        return;
    };
    for no_zeroes in [true, false] {
        let (mut client, greeting) = RawClient::connect(server.address());
        let mut flags = ClientFlags::C_FIXED_NEWSTYLE;
        if no_zeroes {
            assert!(greeting & 2 != 0, "the greeting lacks NO_ZEROES");
            flags |= ClientFlags::C_NO_ZEROES;
        }
        client.send_client_flags(flags.bits());
        client.send_option(NBD_OPT_EXPORT_NAME, server.export_name().as_bytes());
        let info = client.read_exact(10);
        assert_eq!(u64::from_be_bytes(info[..8].try_into().unwrap()), 16 * MIB);
        assert!(info[9] & 1 != 0, "transmission flags lack HAS_FLAGS");
        if !no_zeroes {
            assert_eq!(client.read_exact(EXPORT_NAME_REPLY_ZEROES), [0; 124]);
        }
        round_trip(&mut client, MIB, 2);
        client.disconnect();
    }
}

#[test]
fn error_replies_keep_the_connection_with_and_without_structured_replies() {
    let dir = TempDir::new("error-replies");
    let size = 256 * MIB;
    let Some(server) = tcp_export(&dir, size) else {
        return;
    };
    for structured in [false, true] {
        let (mut c, export) =
            RawClient::open_with(server.address(), server.export_name(), structured);
        let mode = if structured { "structured" } else { "simple" };

        let (error, _) = c.call(0, 0x00ff, 0, 512);
        assert_eq!(error, NBD_EINVAL, "unknown command ({mode})");
        round_trip(&mut c, 0, 3);

        let (error, _) = c.call(1 << 15, NBD_CMD_READ, 0, 512);
        assert_eq!(error, NBD_EINVAL, "unknown command flag ({mode})");
        round_trip(&mut c, 0, 4);

        let (error, _) = c.call(0, NBD_CMD_READ, size - 512, 4096);
        assert_eq!(error, NBD_EINVAL, "READ past the end ({mode})");
        assert_eq!(
            c.write(0, size - 512, &[1; 4096]),
            NBD_ENOSPC,
            "WRITE past the end ({mode})"
        );
        round_trip(&mut c, 0, 5);

        match export.max_payload {
            Some(max) => oversized_requests_fail(&mut c, max, size, mode),
            None => {
                // Without INFO_BLOCK_SIZE a server may take more than the spec's default
                // maximum, so there is no length it must refuse. regio advertises its sizes.
                assert_ne!(
                    Implementation::under_test(),
                    Implementation::Regio,
                    "regio sent no NBD_INFO_BLOCK_SIZE"
                );
                println!(
                    "NOTE: the server advertises no maximum payload: oversized requests not tested"
                );
            }
        }
        c.disconnect();
    }
}

/// A READ and a WRITE (with its payload) one block over the advertised maximum `max` both fail,
/// and the connection goes on.
fn oversized_requests_fail(c: &mut RawClient, max: u32, size: u64, mode: &str) {
    let too_long = max + 4096;
    assert!(
        u64::from(too_long) < size,
        "the export is smaller than the maximum request"
    );
    let (error, _) = c.call(0, NBD_CMD_READ, 0, too_long);
    assert!(
        [NBD_EINVAL, NBD_ENOMEM, NBD_EOVERFLOW].contains(&error),
        "READ of {too_long} bytes over the maximum {max}: error {error} ({mode})"
    );
    round_trip(c, 0, 6);
    // The payload of a refused WRITE is read and thrown away: the next request is parsed where
    // it starts.
    let error = c.write(0, 0, &Noise::new(9).bytes(too_long as usize));
    assert!(
        [NBD_EINVAL, NBD_ENOMEM, NBD_EOVERFLOW].contains(&error),
        "WRITE of {too_long} bytes over the maximum {max}: error {error} ({mode})"
    );
    round_trip(c, MIB, 7);
}

#[test]
fn block_sizes_follow_the_spec() {
    let dir = TempDir::new("block-sizes");
    let Some(server) = tcp_export(&dir, 16 * MIB) else {
        return;
    };
    let (mut c, export) = RawClient::open(server.address(), server.export_name());
    match export.block_sizes {
        Some((min, preferred, max)) => {
            assert!(min.is_power_of_two() && min <= 65536, "minimum {min}");
            assert!(
                preferred.is_power_of_two() && preferred >= 512,
                "preferred {preferred}"
            );
            assert!(
                preferred >= min && max >= preferred,
                "{min} <= {preferred} <= {max}"
            );
            assert!(
                max == u32::MAX || max % min == 0,
                "maximum {max} a multiple of {min}"
            );
        }
        None => {
            assert_ne!(
                Implementation::under_test(),
                Implementation::Regio,
                "regio sent no NBD_INFO_BLOCK_SIZE"
            );
            println!("NOTE: the server sent no NBD_INFO_BLOCK_SIZE");
        }
    }
    // The kernel client ignores block sizes: unaligned requests still work.
    let data = Noise::new(14).bytes(1000);
    assert_eq!(c.write(0, 4093, &data), 0, "an unaligned WRITE");
    assert!(c.read(4093, 1000) == data, "an unaligned READ");
    c.disconnect();
}

#[test]
fn disc_finishes_the_replies_in_flight_then_closes() {
    let dir = TempDir::new("disc");
    let Some(server) = tcp_export(&dir, 16 * MIB) else {
        return;
    };
    for structured in [false, true] {
        let (mut c, _) = RawClient::open_with(server.address(), server.export_name(), structured);
        let image = Noise::new(15).bytes(MIB as usize);
        assert_eq!(c.write(0, 0, &image), 0);
        let mut burst = Vec::new();
        let mut pending = HashMap::new();
        for i in 0..16u64 {
            let (offset, len) = (i * 65536, 65536);
            burst.extend(request_header(0, NBD_CMD_READ, 100 + i, offset, len));
            pending.insert(
                100 + i,
                Pending {
                    command: NBD_CMD_READ,
                    offset,
                    len,
                },
            );
        }
        burst.extend(request_header(0, NBD_CMD_DISC, 999, 0, 0));
        c.send(&burst);
        while !pending.is_empty() {
            let reply = c.next_reply(|cookie| {
                *pending
                    .get(&cookie)
                    .unwrap_or_else(|| panic!("a reply to cookie {cookie}, not in flight"))
            });
            let request = pending.remove(&reply.cookie).expect("in flight");
            assert_eq!(reply.error, 0);
            let start = request.offset as usize;
            assert!(
                reply.data == image[start..start + 65536],
                "the data of {request:?}"
            );
        }
        let (after, closing) = c.read_until_closed();
        assert_eq!(closing, Closing::Closed, "DISC closes the connection");
        assert!(after.is_empty(), "DISC got a reply: {after:?}");
    }
}

#[test]
fn replies_echo_every_cookie_in_any_order() {
    let dir = TempDir::new("cookies");
    let Some(server) = tcp_export(&dir, 64 * MIB) else {
        return;
    };
    for structured in [false, true] {
        let (mut c, _) = RawClient::open_with(server.address(), server.export_name(), structured);
        let chunk = 64 * 1024u32;
        let count = 64u64;
        let image = Noise::new(10).bytes((count * u64::from(chunk)) as usize);
        for i in 0..count {
            let start = (i * u64::from(chunk)) as usize;
            let slice = &image[start..start + chunk as usize];
            assert_eq!(c.write(0, i * u64::from(chunk), slice), 0);
        }
        let mut cookies = Noise::new(11 + structured as u64);
        let mut pending = HashMap::new();
        for i in 0..count {
            let mut cookie = [0; 8];
            cookies.fill(&mut cookie);
            let cookie = u64::from_ne_bytes(cookie);
            let offset = i * u64::from(chunk);
            c.send_request(0, NBD_CMD_READ, cookie, offset, chunk);
            let request = Pending {
                command: NBD_CMD_READ,
                offset,
                len: chunk,
            };
            assert!(
                pending.insert(cookie, request).is_none(),
                "distinct cookies"
            );
        }
        while !pending.is_empty() {
            let reply = c.next_reply(|cookie| {
                *pending
                    .get(&cookie)
                    .unwrap_or_else(|| panic!("a reply to cookie {cookie:#x}, not in flight"))
            });
            let request = pending.remove(&reply.cookie).expect("in flight");
            assert_eq!(reply.error, 0);
            let start = request.offset as usize;
            assert!(
                reply.data == image[start..start + chunk as usize],
                "the data of {request:?}"
            );
        }
        c.disconnect();
    }
}

#[test]
fn acknowledged_flushed_writes_survive_kill_9() {
    let dir = TempDir::new("durability");
    let path = dir.join("export.img");
    zeroed_file(&path, 64 * MIB);
    let spec = Spec::new(Implementation::under_test(), Backing::File(path.clone()));
    let Some(mut server) = common::start(spec) else {
        return;
    };
    let data = Noise::new(12).bytes(MIB as usize);
    let fua = Noise::new(13).bytes(4096);
    let (mut client, _) = RawClient::open(server.address(), server.export_name());
    assert_eq!(client.write(0, 5 * MIB, &data), 0);
    assert_eq!(client.write(1, 40 * MIB, &fua), 0, "WRITE with FUA");
    let (error, _) = client.call(0, NBD_CMD_FLUSH, 0, 0);
    assert_eq!(error, 0, "FLUSH");
    server.kill9();
    drop(client);

    let on_disk = std::fs::read(&path).expect("read the export file");
    assert!(
        on_disk[5 * MIB as usize..6 * MIB as usize] == data[..],
        "the file lacks the write"
    );
    assert!(
        on_disk[40 * MIB as usize..40 * MIB as usize + 4096] == fua[..],
        "the file lacks the FUA write"
    );

    if let Err(e) = server.restart() {
        panic!("the server did not start again on the same file: {e}");
    }
    let (mut client, _) = RawClient::open(server.address(), server.export_name());
    assert!(
        client.read(5 * MIB, MIB as u32) == data,
        "the write is gone after the restart"
    );
    assert!(
        client.read(40 * MIB, 4096) == fua,
        "the FUA write is gone after the restart"
    );
    client.disconnect();
}

#[test]
fn clients_vanishing_mid_request_leave_the_server_serving() {
    let dir = TempDir::new("vanishing");
    let Some(mut server) = tcp_export(&dir, 64 * MIB) else {
        return;
    };
    let (mut bystander, _) = RawClient::open(server.address(), server.export_name());
    let rounds = 200u64;
    for round in 0..rounds {
        let vanish = std::panic::AssertUnwindSafe(|| {
            // Half of a 1 MiB WRITE payload, then gone.
            let (mut c, _) = RawClient::open(server.address(), server.export_name());
            let mut msg = request_header(0, NBD_CMD_WRITE, round, 8 * MIB, MIB as u32);
            msg.extend_from_slice(&vec![0x5a; (MIB / 2) as usize]);
            c.send_lossy(&msg);
            drop(c);

            // 32 READs of 64 KiB in flight, then gone without reading a reply.
            let (mut c, _) = RawClient::open(server.address(), server.export_name());
            let mut burst = Vec::new();
            for i in 0..32u64 {
                burst.extend(request_header(0, NBD_CMD_READ, i, i * 65536, 65536));
            }
            c.send_lossy(&burst);
            drop(c);

            // Connected and gone during the handshake (as fio's size probe does).
            drop(RawClient::connect(server.address()));

            if round % 50 == 0 {
                round_trip(&mut bystander, 16 * MIB, round);
            }
        });
        if std::panic::catch_unwind(vanish).is_err() {
            panic!(
                "round {round} failed; the server is {}; its log:\n{}",
                if server.is_running() {
                    "running"
                } else {
                    "dead"
                },
                server.log_tail()
            );
        }
    }
    round_trip(&mut bystander, 16 * MIB, rounds);
    bystander.disconnect();
    assert_serves(&mut server);
}
