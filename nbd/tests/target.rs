//! The NBD server in process, driven by a small client over the codec: the handshake's edge
//! cases, every command with and without structured replies, every error reply, malformed
//! input, disconnects, many requests in flight, and a pool that runs dry.

mod common;

use std::io::Write;

use common::{memory, pattern, start, Client};
use regio_nbd::proto::{
    ClientOption, Command, CommandFlags, Errno, ExportRequest, TransmissionFlags,
};
use regio_nbd::target::Export;

const MIB: u64 = 1 << 20;

#[test]
fn the_handshake_lists_describes_refuses_and_aborts() {
    let Some(h) = start(vec![memory("disk", 8 * MIB), memory("other", MIB)], 8) else {
        return;
    };
    let mut client = h.connect();
    let listed = client.ask(&ClientOption::List);
    assert_eq!(listed.len(), 3, "two SERVER replies and the ACK");
    let unknown = client.ask(&ClientOption::Info(ExportRequest {
        name: "nope".into(),
        info_requests: vec![],
    }));
    assert_eq!(unknown[0].0, (1 << 31) | 6, "NBD_REP_ERR_UNKNOWN");
    let unsupported = client.ask(&ClientOption::Unknown(4242));
    assert_eq!(unsupported[0].0, (1 << 31) | 1, "NBD_REP_ERR_UNSUP");
    let unsupported = client.ask(&ClientOption::ExtendedHeaders);
    assert_eq!(
        unsupported[0].0,
        (1 << 31) | 1,
        "extended headers are refused with UNSUP"
    );
    let aborted = client.ask(&ClientOption::Abort);
    assert_eq!(aborted, [(1, vec![])]);
    assert!(client.is_closed());

    // NBD_OPT_EXPORT_NAME, with and without the 124 zeroes.
    for (flags, reply_len) in [(1_u32, 134), (3, 10)] {
        let mut client = Client::connect(h.addr, flags);
        client.send_option(&ClientOption::ExportName("other".into()));
        let mut reply = vec![0; reply_len];
        std::io::Read::read_exact(&mut client.stream, &mut reply).unwrap();
        assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), MIB);
        client.size = MIB;
        let read = client.call(Command::Read, CommandFlags::empty(), 0, 512, &[]);
        assert_eq!((read.error, read.data.len()), (None, 512));
    }
    // An unknown client flag closes at once.
    let mut client = Client::connect(h.addr, 1 << 7);
    assert!(client.is_closed());
    // GO on the default export tells its block sizes and flags.
    let client = h.open("", false);
    let sizes = client.block_sizes.expect("block sizes were asked for");
    assert_eq!((sizes.minimum(), sizes.preferred()), (1, 4096));
    assert_eq!(sizes.maximum(), h.server.max_payload());
    assert!(client.flags.contains(
        TransmissionFlags::CAN_MULTI_CONN
            | TransmissionFlags::SEND_FLUSH
            | TransmissionFlags::SEND_FUA
            | TransmissionFlags::SEND_TRIM
            | TransmissionFlags::SEND_WRITE_ZEROES
            | TransmissionFlags::SEND_FAST_ZERO
            | TransmissionFlags::SEND_CACHE
    ));
    drop(client);
    h.assert_pool_full();
    h.stop();
}

/// Every command on a connection with or without structured replies.
fn every_command(structured: bool, export: Export) {
    let Some(h) = start(vec![export], 8) else {
        return;
    };
    let mut c = h.open("", structured);
    let none = CommandFlags::empty();
    let data = pattern(100_000, 7);
    let write = c.call(
        Command::Write,
        CommandFlags::FUA,
        4096,
        data.len() as u32,
        &data,
    );
    assert_eq!(write.error, None);
    let read = c.call(Command::Read, none, 4096, data.len() as u32, &[]);
    assert_eq!((read.error, read.data == data), (None, true));
    if structured {
        assert_eq!(
            (read.chunks, read.holes),
            (1, 0),
            "one data chunk (DF holds always)"
        );
        // Never written: a hole, sent as one OFFSET_HOLE chunk.
        let hole = c.call(Command::Read, CommandFlags::DF, 2 * MIB, 65536, &[]);
        assert_eq!((hole.error, hole.chunks, hole.holes), (None, 1, 1));
        assert!(hole.data.len() == 65536 && hole.data.iter().all(|&b| b == 0));
        let df = c.call(Command::Read, CommandFlags::DF, 4096, 10, &[]);
        assert_eq!(df.data, data[..10]);
    }
    assert_eq!(c.call(Command::Flush, none, 0, 0, &[]).error, None);
    assert_eq!(c.call(Command::Cache, none, 0, 65536, &[]).error, None);
    // Zeroes punched, then kept; both read back as zeroes.
    assert_eq!(
        c.call(Command::WriteZeroes, none, 8192, 8192, &[]).error,
        None
    );
    assert_eq!(
        c.call(Command::WriteZeroes, CommandFlags::NO_HOLE, 20000, 100, &[])
            .error,
        None
    );
    let read = c.call(Command::Read, none, 4096, data.len() as u32, &[]);
    let mut expected = data.clone();
    expected[4096..12288].fill(0);
    expected[20000 - 4096..20100 - 4096].fill(0);
    assert!(read.data == expected, "zeroed ranges read back as zeroes");
    assert_eq!(c.call(Command::Trim, none, 0, 4096, &[]).error, None);
    // Zero lengths.
    let empty = c.call(Command::Read, none, 0, 0, &[]);
    assert_eq!((empty.error, empty.data.len()), (None, 0));
    for command in [
        Command::Write,
        Command::Trim,
        Command::WriteZeroes,
        Command::Cache,
    ] {
        assert_eq!(
            c.call(command, none, 4096, 0, &[]).error,
            None,
            "{command:?}"
        );
    }
    assert_eq!(c.call(Command::Read, none, 4096, 8, &[]).data, data[..8]);
    if structured {
        let status = c.call(Command::BlockStatus, none, 0, 1 << 20, &[]);
        assert_eq!(status.error, None);
        assert!(!status.extents.is_empty());
        assert!(status.extents.iter().all(|&(len, _)| len > 0));
        let one = c.call(Command::BlockStatus, CommandFlags::REQ_ONE, 4096, 4096, &[]);
        assert_eq!(one.extents.len(), 1);
        assert!(one.extents[0].0 <= 4096);
        assert_eq!(one.extents[0].1, 0, "written data is allocated");
        // Past the end of the export: a structured error.
        let past = c.call(Command::BlockStatus, none, c.size, 1, &[]);
        assert_eq!(past.error, Some(Errno::EINVAL));
    } else {
        // No meta context: block status is refused.
        let refused = c.call(Command::BlockStatus, none, 0, 4096, &[]);
        assert_eq!(refused.error, Some(Errno::EINVAL));
    }
    // DISC: no reply, the connection closes.
    c.request(Command::Disc, none, 9, 0, 0, &[]);
    assert!(c.is_closed());
    h.assert_pool_full();
    h.stop();
}

#[test]
fn every_command_with_simple_replies() {
    every_command(false, memory("", 4 * MIB));
}

#[test]
fn every_command_with_structured_replies() {
    every_command(true, memory("", 4 * MIB));
}

#[test]
fn every_command_on_a_file_export() {
    let path = std::env::temp_dir().join(format!("regio-nbd-target-{}", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    every_command(true, Export::file("", &path, false).unwrap());
    every_command(false, Export::file("", &path, false).unwrap());
    std::fs::remove_file(&path).unwrap();
}

/// A file on tmpfs is read and written with `pread`/`pwrite` on the worker rather than through
/// io_uring (which would hand each of those to a kernel worker thread): every command works,
/// reading a hole leaves it a hole, and a read past the end of a file that shrank under the
/// export gets EIO while the connection goes on.
#[test]
fn every_command_on_a_file_in_memory() {
    use std::os::unix::fs::MetadataExt;
    let path = std::path::Path::new("/dev/shm")
        .join(format!("regio-nbd-target-{}-in-memory", std::process::id()));
    let file = match std::fs::File::create(&path) {
        Ok(file) => file,
        Err(e) => return regio_testkit::skip(&format!("no /dev/shm: {e}")),
    };
    file.set_len(4 * MIB).unwrap();
    let export = Export::file("", &path, false).unwrap();
    if !export.description().contains("in memory") {
        std::fs::remove_file(&path).unwrap();
        return regio_testkit::skip("/dev/shm is not a tmpfs here");
    }
    every_command(true, export);
    every_command(false, Export::file("", &path, false).unwrap());

    let Some(h) = start(vec![Export::file("", &path, false).unwrap()], 8) else {
        return;
    };
    let mut c = h.open("", false);
    let none = CommandFlags::empty();
    let allocated = |path: &std::path::Path| std::fs::metadata(path).unwrap().blocks() * 512;
    let before = allocated(&path);
    let hole = c.call(Command::Read, none, 3 * MIB, 65536, &[]);
    assert_eq!(hole.error, None);
    assert!(hole.data.len() == 65536 && hole.data.iter().all(|&b| b == 0));
    assert_eq!(allocated(&path), before, "reading a hole allocated it");

    file.set_len(MIB).unwrap();
    let past = c.call(Command::Read, none, 2 * MIB, 4096, &[]);
    assert_eq!(past.error, Some(Errno::EIO), "a read past the shrunk end");
    let data = pattern(5000, 3);
    let write = c.call(Command::Write, none, 1000, data.len() as u32, &data);
    assert_eq!(write.error, None);
    let read = c.call(Command::Read, none, 1000, data.len() as u32, &[]);
    assert_eq!((read.error, read.data == data), (None, true));
    h.stop();
    std::fs::remove_file(&path).unwrap();
}

/// Attacks on a file in memory (read and written with `pread`/`pwrite` on the worker): read
/// only, it refuses WRITE, TRIM and WRITE_ZEROES (FUA or not) and answers FLUSH and CACHE; a
/// file that grows under the export is served at the size it had, and one replaced by a
/// rename is still the file the export opened; connections reading the largest requests side
/// by side with one reading small ones all get their data, and every buffer comes back.
#[test]
fn a_file_in_memory_read_only_grown_replaced_and_shared() {
    let path = std::path::Path::new("/dev/shm").join(format!(
        "regio-nbd-target-{}-in-memory-attack",
        std::process::id()
    ));
    let data = pattern(4 * MIB as usize, 5);
    if let Err(e) = std::fs::write(&path, &data) {
        return regio_testkit::skip(&format!("no /dev/shm: {e}"));
    }
    let export = Export::file("", &path, true).unwrap();
    if !export.description().contains("in memory") {
        std::fs::remove_file(&path).unwrap();
        return regio_testkit::skip("/dev/shm is not a tmpfs here");
    }
    let Some(h) = start(vec![export], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let mut c = h.open("", true);
    let zero_page = [0; 4096];
    for flags in [none, CommandFlags::FUA] {
        for (command, payload) in [
            (Command::Write, &zero_page[..]),
            (Command::Trim, &[][..]),
            (Command::WriteZeroes, &[][..]),
        ] {
            let refused = c.call(command, flags, 4096, 4096, payload);
            assert_eq!(refused.error, Some(Errno::EPERM), "{command:?} {flags:?}");
        }
    }
    assert_eq!(c.call(Command::Flush, none, 0, 0, &[]).error, None);
    assert_eq!(c.call(Command::Cache, none, 0, 65536, &[]).error, None);

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let past = c.call(Command::Read, none, 4 * MIB, 4096, &[]);
    assert!(past.error.is_some(), "a read past the size the export had");
    let fresh = path.with_extension("fresh");
    std::fs::write(&fresh, pattern(4 * MIB as usize, 99)).unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    let read = c.call(Command::Read, none, 1000, 100_000, &[]);
    assert!(read.error.is_none() && read.data == data[1000..101_000]);

    let max = h.server.max_payload();
    let addr = h.addr;
    std::thread::scope(|scope| {
        for reader in 0..3_u64 {
            let data = &data;
            scope.spawn(move || {
                let mut c = Client::connect(addr, 3);
                c.go("", reader == 1);
                for i in 0..40_u64 {
                    let len = if reader == 2 { 512 } else { max };
                    let at = (i * 77_777 + reader * 4096) % (4 * MIB - u64::from(len));
                    let got = c.call(Command::Read, none, at, len, &[]);
                    let want = &data[at as usize..at as usize + len as usize];
                    assert!(
                        got.error.is_none() && got.data == want,
                        "{reader}: {at}+{len}"
                    );
                }
            });
        }
    });
    drop(c);
    h.assert_pool_full();
    h.stop();
    std::fs::remove_file(&path).unwrap();
}

/// A tmpfs of 1 MiB mounted on a new directory in a mount namespace of the calling thread's
/// own (private: nothing is seen outside it); `None` (skipped) where that cannot be done.
fn small_tmpfs() -> Option<std::path::PathBuf> {
    let skip = |what: &str| {
        let e = std::io::Error::last_os_error();
        regio_testkit::skip(&format!("{what}: {e}"));
        None
    };
    // SAFETY: unshare takes no pointers; it moves the calling thread alone.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return skip("cannot make a mount namespace");
    }
    let root = c"/";
    // SAFETY: valid C strings and null pointers where mount(2) takes none: every mount of the
    // new namespace becomes private, so the mount below is seen nowhere else.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        return skip("cannot make the mounts private");
    }
    let dir = std::env::temp_dir().join(format!("regio-nbd-small-tmpfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings; mount(2) reads them only.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1m".as_ptr().cast(),
        )
    };
    if mounted != 0 {
        return skip("cannot mount a tmpfs");
    }
    Some(dir)
}

/// A sparse file of 4 MiB on a tmpfs of 1 MiB, served as a file in memory (`pwrite` on the
/// worker): WRITEs past the room the tmpfs has get ENOSPC, one at a time, while the
/// connection goes on (the data written before reads back, and a WRITE over it works).
#[test]
fn a_file_in_memory_that_runs_out_of_room_gets_enospc_and_goes_on() {
    // In a thread of its own: the mount namespace stays with the thread.
    let dir = std::thread::spawn(|| {
        let dir = small_tmpfs()?;
        let path = dir.join("export");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(4 * MIB)
            .unwrap();
        let export = Export::file("", &path, false).unwrap();
        assert!(export.description().contains("in memory"));
        let h = start(vec![export], 8)?;
        let none = CommandFlags::empty();
        let mut c = h.open("", false);
        let piece = pattern(128 * 1024, 9);
        let mut full = None;
        for at in (0..4 * MIB).step_by(piece.len()) {
            for flags in [none, CommandFlags::FUA] {
                let write = c.call(Command::Write, flags, at, piece.len() as u32, &piece);
                match write.error {
                    None => assert!(full.is_none(), "a write at {at} after the tmpfs filled"),
                    Some(Errno::ENOSPC) => full = full.or(Some(at)),
                    Some(other) => panic!("a write at {at}: {other:?}"),
                }
            }
        }
        let full = full.expect("a 1 MiB tmpfs took 4 MiB");
        assert!(full > 0 && full <= MIB, "full at {full}");
        let read = c.call(Command::Read, none, 0, piece.len() as u32, &[]);
        assert!(read.error.is_none() && read.data == piece);
        let again = c.call(Command::Write, none, 0, piece.len() as u32, &piece);
        assert_eq!(again.error, None);
        drop(c);
        h.assert_pool_full();
        h.stop();
        Some(dir)
    })
    .join()
    .unwrap();
    // Out here the directory is an empty one: the tmpfs went with the namespace.
    if let Some(dir) = dir {
        std::fs::remove_dir(&dir).unwrap();
    }
}

#[test]
fn bad_requests_get_errors_and_the_connection_goes_on() {
    let Some(h) = start(
        vec![
            memory("rw", 4 * MIB),
            Export::memory("ro", MIB, true).unwrap(),
        ],
        8,
    ) else {
        return;
    };
    for structured in [false, true] {
        let mut c = h.open("rw", structured);
        let none = CommandFlags::empty();
        let size = c.size;
        let cases: Vec<(Command, CommandFlags, u64, u32, Vec<u8>, Errno)> = vec![
            (Command::Read, none, size - 10, 20, vec![], Errno::EINVAL),
            (
                Command::Write,
                none,
                size - 10,
                20,
                vec![1; 20],
                Errno::ENOSPC,
            ),
            (Command::Trim, none, size, 1, vec![], Errno::EINVAL),
            (
                Command::WriteZeroes,
                none,
                u64::MAX,
                1,
                vec![],
                Errno::ENOSPC,
            ),
            (Command::Unknown(42), none, 0, 0, vec![], Errno::EINVAL),
            (
                Command::Read,
                CommandFlags::from_bits_retain(1 << 12),
                0,
                1,
                vec![],
                Errno::EINVAL,
            ),
            (
                Command::WriteZeroes,
                CommandFlags::NO_HOLE | CommandFlags::FAST_ZERO,
                0,
                4096,
                vec![],
                Errno::ENOTSUP,
            ),
        ];
        for (command, flags, offset, length, payload, errno) in cases {
            let reply = c.call(command, flags, offset, length, &payload);
            assert_eq!(
                reply.error,
                Some(errno),
                "{command:?} {flags:?} at {offset}"
            );
        }
        // A write over the maximum payload is read through, refused, and the connection goes on.
        let max = h.server.max_payload();
        let big = vec![3; max as usize + 1];
        let refused = c.call(Command::Write, none, 0, big.len() as u32, &big);
        assert_eq!(refused.error, Some(Errno::EINVAL));
        let read = c.call(Command::Read, none, 0, max + 1, &[]);
        let overflow = if structured {
            Errno::EOVERFLOW
        } else {
            Errno::EINVAL
        };
        assert_eq!(read.error, Some(overflow));
        // Still serving.
        let ok = c.call(Command::Write, none, 0, 3, b"abc");
        assert_eq!(ok.error, None);
        assert_eq!(c.call(Command::Read, none, 0, 3, &[]).data, b"abc");

        let mut ro = h.open("ro", structured);
        assert!(ro.flags.contains(TransmissionFlags::READ_ONLY));
        for (command, payload) in [(Command::Write, vec![0; 512]), (Command::Trim, vec![])] {
            let reply = ro.call(command, none, 0, 512, &payload);
            assert_eq!(reply.error, Some(Errno::EPERM), "{command:?}");
        }
        assert_eq!(ro.call(Command::Read, none, 0, 512, &[]).error, None);
    }
    h.assert_pool_full();
    h.stop();
}

#[test]
fn malformed_bytes_close_only_that_connection() {
    let Some(h) = start(vec![memory("", MIB)], 8) else {
        return;
    };
    let mut good = h.open("", true);
    // A wrong request magic.
    let mut bad = h.open("", true);
    bad.stream.write_all(&[0xde; 28]).unwrap();
    assert!(bad.is_closed());
    // A truncated header, then the client leaves.
    let mut cut = h.open("", false);
    cut.stream.write_all(&[0x25, 0x60, 0x95]).unwrap();
    drop(cut);
    // Garbage in the handshake.
    let mut garbage = Client::connect(h.addr, 3);
    garbage
        .stream
        .write_all(b"this is not an NBD option at all")
        .unwrap();
    assert!(garbage.is_closed());
    // The first connection never noticed.
    let reply = good.call(Command::Write, CommandFlags::empty(), 0, 4, b"fine");
    assert_eq!(reply.error, None);
    assert_eq!(
        good.call(Command::Read, CommandFlags::empty(), 0, 4, &[])
            .data,
        b"fine"
    );
    drop(good);
    h.assert_pool_full();
    h.stop();
}

#[test]
fn many_requests_in_flight_are_answered_by_cookie() {
    let Some(h) = start(vec![memory("", 16 * MIB)], 4) else {
        return;
    };
    let mut c = h.open("", true);
    let none = CommandFlags::empty();
    let blocks = 200_u64;
    for i in 0..blocks {
        let data = pattern(4096, i as u8);
        c.request(Command::Write, none, 1000 + i, i * 4096, 4096, &data);
    }
    let mut cookies: Vec<u64> = (0..blocks)
        .map(|_| c.reply())
        .map(|r| {
            assert_eq!(r.error, None);
            r.cookie
        })
        .collect();
    cookies.sort_unstable();
    assert_eq!(cookies, (1000..1000 + blocks).collect::<Vec<_>>());
    // Reads of different sizes, all sent before any reply is read.
    for i in 0..blocks {
        c.request(Command::Read, none, 5000 + i, i * 4096, 4096, &[]);
    }
    let whole = (blocks * 4096).min(u64::from(h.server.max_payload()));
    c.request(Command::Read, none, 9999, 0, whole as u32, &[]);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..=blocks {
        let r = c.reply();
        assert_eq!(r.error, None);
        if r.cookie == 9999 {
            for i in 0..whole / 4096 {
                let at = (i * 4096) as usize;
                assert_eq!(r.data[at..at + 4096], pattern(4096, i as u8));
            }
        } else {
            let i = r.cookie - 5000;
            assert_eq!(r.data, pattern(4096, i as u8), "cookie {}", r.cookie);
        }
        assert!(seen.insert(r.cookie), "cookie {} answered twice", r.cookie);
    }
    drop(c);
    h.assert_pool_full();
    h.stop();
}

#[test]
fn flushed_writes_are_seen_by_every_connection() {
    let path = std::env::temp_dir().join(format!("regio-nbd-multi-{}", std::process::id()));
    std::fs::File::create(&path).unwrap().set_len(MIB).unwrap();
    let Some(h) = start(vec![Export::file("", &path, false).unwrap()], 8) else {
        return;
    };
    let (mut a, mut b, mut c) = (h.open("", true), h.open("", false), h.open("", true));
    assert!(a.flags.contains(TransmissionFlags::CAN_MULTI_CONN));
    let none = CommandFlags::empty();
    assert_eq!(a.call(Command::Write, none, 12345, 5, b"multi").error, None);
    assert_eq!(b.call(Command::Flush, none, 0, 0, &[]).error, None);
    assert_eq!(c.call(Command::Read, none, 12345, 5, &[]).data, b"multi");
    drop((a, b, c));
    h.stop();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[12345..12350], b"multi");
    std::fs::remove_file(&path).unwrap();
}

/// WRITEs of every size, sent back to back before any reply is read, so that the server
/// receives many of them at once: small payloads are read ahead through a borrowed buffer and
/// copied out of it, large ones received in place after the part that came with the bytes
/// before them, and a refused WRITE's payload among them is skipped. Two clients do it at once
/// on a pool with room for one read-ahead buffer, so one of them often receives without. Every
/// byte lands where its WRITE said, and the read-ahead buffer goes back to the pool when the
/// clients pause.
#[test]
fn back_to_back_writes_of_every_size_land_whole() {
    let Some(h) = start(vec![memory("", 16 * MIB)], 8) else {
        return;
    };
    let mut clients = [h.open("", true), h.open("", false)];
    std::thread::scope(|s| {
        for (n, c) in clients.iter_mut().enumerate() {
            let max = h.server.max_payload();
            s.spawn(move || write_back_to_back(c, max, n as u64 * 8 * MIB, n as u8));
        }
    });
    // The idle connections hold their two control buffers each, and no read-ahead buffer.
    h.wait_for_stats("a buffer besides the control pairs", |s| s.pool_in_use == 4);
    drop(clients);
    h.assert_pool_full();
    h.stop();
}

/// Sends WRITEs of every size up to `max` (and one refused, past the export's 16 MiB end) into
/// the 8 MiB from `base`, all before reading a reply; checks every reply, then reads each range
/// back.
fn write_back_to_back(c: &mut Client, max: u32, base: u64, seed: u8) {
    let none = CommandFlags::empty();
    let sizes = [
        1, 511, 4096, 512, 4096, 5000, 16384, 16385, 4096, 65536, max, 3, 4096, 65537, 100,
    ];
    let mut writes = Vec::new();
    let mut at = base;
    for round in 0..4u8 {
        for (i, &len) in sizes.iter().enumerate() {
            let seed = seed
                .wrapping_add(round.wrapping_mul(31))
                .wrapping_add(i as u8);
            writes.push((at, pattern(len as usize, seed)));
            at += u64::from(len) + 7;
        }
    }
    assert!(
        at < base + 8 * MIB,
        "the writes fit their half of the export"
    );
    for (cookie, (offset, data)) in writes.iter().enumerate() {
        let cookie = cookie as u64;
        c.request(
            Command::Write,
            none,
            cookie,
            *offset,
            data.len() as u32,
            data,
        );
        if cookie == 20 {
            c.request(Command::Write, none, 999, 16 * MIB - 10, 4096, &[9; 4096]);
        }
    }
    let mut answered = std::collections::HashSet::new();
    for _ in 0..=writes.len() {
        let r = c.reply();
        if r.cookie == 999 {
            assert!(r.error.is_some(), "a WRITE past the end is refused");
        } else {
            assert_eq!(r.error, None, "cookie {}", r.cookie);
        }
        assert!(
            answered.insert(r.cookie),
            "cookie {} answered twice",
            r.cookie
        );
    }
    for (offset, data) in &writes {
        let back = c.call(Command::Read, none, *offset, data.len() as u32, &[]);
        assert!(back.data == *data, "{} bytes at {offset}", data.len());
    }
}

#[test]
fn a_client_that_leaves_mid_request_gives_every_buffer_back() {
    let Some(h) = start(vec![memory("", 8 * MIB)], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    // Half a write payload, then gone.
    let mut c = h.open("", false);
    c.request(Command::Write, none, 1, 0, 200_000, &[7; 100_000]);
    drop(c);
    // Many large reads (of data, not holes) whose replies are never read.
    let data = pattern(h.server.max_payload() as usize, 1);
    drop(h.stalled_client(&data));
    h.assert_pool_full();
    // The server still serves.
    let mut c = h.open("", true);
    assert_eq!(c.call(Command::Read, none, 0, 10, &[]).data, data[..10]);
    drop(c);
    h.assert_pool_full();
    h.stop();
}

#[test]
fn a_pool_run_dry_makes_requests_wait_not_fail() {
    // An eighth of the default pool, shared by four connections pipelining large requests.
    let Some(h) = start(vec![memory("", 32 * MIB)], 8) else {
        return;
    };
    let max = h.server.max_payload();
    let none = CommandFlags::empty();
    let per_client = 16_u64;
    std::thread::scope(|scope| {
        for n in 0..4_u8 {
            let mut sender = h.open("", true);
            let mut receiver = sender.other_half();
            scope.spawn(move || {
                let data = pattern(max as usize, n);
                for i in 0..per_client {
                    let offset = (u64::from(n) * per_client + i) % 16 * u64::from(max);
                    sender.request(Command::Write, none, i, offset, max, &data);
                    sender.request(Command::Read, none, 100 + i, offset, max, &[]);
                }
            });
            scope.spawn(move || {
                for _ in 0..2 * per_client {
                    let reply = receiver.reply();
                    assert_eq!(reply.error, None, "cookie {}", reply.cookie);
                }
            });
        }
    });
    h.assert_pool_full();
    h.stop();
}

#[test]
fn shutdown_closes_idle_connections_and_finishes() {
    let Some(h) = start(vec![memory("", MIB)], 8) else {
        return;
    };
    let mut idle = h.open("", false);
    let mut greeted = h.connect();
    let stats = h.server.stats();
    assert_eq!(stats.connections, 2);
    h.stop();
    assert!(idle.is_closed());
    assert!(greeted.is_closed());
}

#[test]
fn a_unix_socket_serves_large_reads_without_zero_copy() {
    let Some(mut h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    let path = std::env::temp_dir().join(format!("regio-nbd-unix-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.listen_unix(&path);
    let mut c = Client::connect_unix(&path);
    c.go("", true);
    let data = pattern(100_000, 3);
    let none = CommandFlags::empty();
    assert_eq!(
        c.call(Command::Write, none, 0, data.len() as u32, &data)
            .error,
        None
    );
    // 64 KiB chunks: large enough for SEND_ZC, which a Unix socket refuses.
    for _ in 0..2 {
        let read = c.call(Command::Read, none, 0, data.len() as u32, &[]);
        assert_eq!((read.error, read.data == data), (None, true));
    }
    drop(c);
    h.assert_pool_full();
    h.stop();
    std::fs::remove_file(&path).unwrap();
}

/// More connections than control pairs: each one past the pool's pairs closes the oldest
/// connection still waiting for its client in the handshake (after its greeting), or waits for
/// a pair; every one is greeted.
#[test]
fn connections_beyond_the_pool_are_all_greeted() {
    // A sixteenth of the pool: 128 control buffers, a pair per connection; 72 connections.
    let Some(h) = start(vec![memory("", MIB)], 16) else {
        return;
    };
    let mut waiting: Vec<_> = (0..72)
        .map(|_| {
            let stream = std::net::TcpStream::connect(h.addr).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    // Each greeted connection is dropped here at once, which gives its pair back. A generous
    // bound on the rounds, not a timing: every connection is greeted in the end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !waiting.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections never greeted",
            waiting.len()
        );
        waiting.retain(|stream| {
            let mut greeting = [0; 18];
            match stream.peek(&mut greeting) {
                Ok(18) => {
                    assert_eq!(&greeting[..8], b"NBDMAGIC");
                    false
                }
                Ok(n) => {
                    assert_ne!(n, 0, "a waiting connection was closed");
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                Err(e) => panic!("{e}"),
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    h.assert_pool_full();
    h.stop();
}

#[test]
fn a_client_that_stops_reading_holds_only_its_share_of_the_pool() {
    let Some(h) = start(vec![memory("", 8 * MIB)], 8) else {
        return;
    };
    let max = h.server.max_payload();
    let data = pattern(max as usize, 9);
    let stalled = h.stalled_client(&data);
    // Another client still reads and writes large requests.
    let mut other = h.open("", true);
    common::large_writes_read_back(&mut other, &data);
    drop((stalled, other));
    h.assert_pool_full();
    h.stop();
}

#[test]
fn oversized_and_too_many_options() {
    use regio_nbd::proto::{OptionHeader, MAX_OPTION_LEN, OPTION_HEADER_LEN};

    let Some(h) = start(vec![memory("", MIB)], 8) else {
        return;
    };
    // An option too large is read through and refused; the handshake goes on.
    let mut client = h.connect();
    let mut header = [0; OPTION_HEADER_LEN];
    OptionHeader {
        option: 7,
        length: MAX_OPTION_LEN + 10,
    }
    .encode(&mut header);
    client.stream.write_all(&header).unwrap();
    client
        .stream
        .write_all(&vec![0; MAX_OPTION_LEN as usize + 10])
        .unwrap();
    let (option, reply_type, _) = client.option_reply();
    assert_eq!(
        (option, reply_type),
        (7, (1 << 31) | 9),
        "NBD_REP_ERR_TOO_BIG"
    );
    client.go("", true);
    assert_eq!(
        client
            .call(Command::Read, CommandFlags::empty(), 0, 4, &[])
            .data,
        [0; 4]
    );
    // Past the option limit (64) the connection closes.
    let mut chatty = h.connect();
    let mut bytes = Vec::new();
    for _ in 0..100 {
        ClientOption::List.encode(&mut bytes);
    }
    // The server may close before it has taken them all.
    let _ = chatty.stream.write_all(&bytes);
    let mut replies = Vec::new();
    let end = std::io::Read::read_to_end(&mut chatty.stream, &mut replies);
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server closes a handshake with too many options: {end:?}"
    );
    drop((client, chatty));
    h.assert_pool_full();
    h.stop();
}

/// Clients that connect and then say nothing hold a control pair each until their handshake
/// timeout. With more of them than the pool has pairs, a new client used to wait for that
/// timeout (30 s); now it closes the oldest of them and is served at once.
#[test]
fn clients_idle_in_their_handshake_do_not_hold_up_a_new_one() {
    // A sixteenth of the pool: 128 control buffers, 64 pairs.
    let Some(h) = start(vec![memory("", MIB)], 16) else {
        return;
    };
    // Clients that answered the greeting, then went quiet before any option.
    let quiet: Vec<_> = (0..16).map(|_| h.connect()).collect();
    // And more than the pairs left: connected, never reading the greeting nor answering it.
    let idle: Vec<_> = (0..80)
        .map(|_| std::net::TcpStream::connect(h.addr).unwrap())
        .collect();
    // Its reads wait 20 s at most: less than the handshake timeout (30 s), after which the
    // idle clients' pairs would come back anyway, and far more than serving it takes.
    let stream = std::net::TcpStream::connect(h.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut client = Client::greeted(stream, 3);
    client.go("", false);
    let none = CommandFlags::empty();
    let data = pattern(4096, 9);
    assert_eq!(
        client.call(Command::Write, none, 4096, 4096, &data).error,
        None
    );
    let reply = client.call(Command::Read, none, 4096, 4096, &[]);
    assert_eq!((reply.error, reply.data), (None, data));
    drop((idle, quiet, client));
    h.assert_pool_full();
    h.stop();
}

/// A flood of silent connections must not close a client in the middle of its handshake: only
/// a handshake that has stalled for a while may be closed to make room.
#[test]
fn a_flood_of_silent_connections_does_not_evict_a_client_negotiating() {
    // A sixteenth of the pool: 64 control pairs.
    let Some(h) = start(vec![memory("", MIB)], 16) else {
        return;
    };
    let stream = std::net::TcpStream::connect(h.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut client = Client::greeted(stream, 3);
    // More silent connections than there are pairs, while the client is negotiating.
    let flood: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(h.addr).unwrap())
        .collect();
    // The server holds all 101 connections (the flood's looked for pairs) before the client
    // goes on. An eviction would close the oldest handshakes, the client's first, and the
    // count would never get there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.server.stats().connections < 101 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server closed connections in their handshake: {} of 101 open",
            h.server.stats().connections
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    client.go("", false);
    let reply = client.call(Command::Read, CommandFlags::empty(), 0, 4096, &[]);
    assert_eq!((reply.error, reply.data.len()), (None, 4096));
    drop((flood, client));
    h.assert_pool_full();
    h.stop();
}
