//! What a registered memory export pins, seen in the process's `VmPin`: the whole export while
//! it is served; once the server is gone, the export is unregistered even though a client left
//! in the middle of zero-copy READs (each send leases the export's region until its final
//! completion); once the runtime is gone too, nothing. Alone in its test binary: `VmPin` counts
//! the whole process.

mod common;

use std::time::{Duration, Instant};

use common::{memory, pattern, pinned_kib, start};
use regio_nbd::proto::{Command, CommandFlags};

const MIB: u64 = 1 << 20;

#[test]
fn a_client_gone_mid_read_leaves_the_export_to_be_unpinned_at_shutdown() {
    let base = pinned_kib();
    let Some(h) = start(vec![memory("", 16 * MIB)], 8) else {
        return;
    };
    // Registered once the server serves: by the time a client is in transmission.
    drop(h.open("", false));
    assert!(h.server.exports().next().unwrap().is_zero_copy());
    assert!(
        pinned_kib() >= base + 16 * 1024,
        "the export is pinned: {} KiB, {base} KiB before",
        pinned_kib()
    );
    // Many large zero-copy reads whose replies are never read, then gone.
    let data = pattern(h.server.max_payload() as usize, 4);
    drop(h.stalled_client(&data));
    h.assert_pool_full();
    // The server still serves.
    let none = CommandFlags::empty();
    let mut c = h.open("", false);
    let got = c.call(Command::Read, none, 0, h.server.max_payload(), &[]);
    assert!(got.error.is_none() && got.data == data);
    drop(c);
    let serving = pinned_kib();
    // The server and its exports are gone, the runtime is not: the export was unregistered
    // (no send still held it).
    let rt = h.stop_keeping_runtime();
    wait_until_pinned_at_most(serving - 16 * 1024);
    // And once the runtime is gone too, nothing stays pinned.
    drop(rt);
    wait_until_pinned_at_most(base);
}

/// Waits until at most `kib` are pinned (the kernel may release a closed ring's pages in the
/// background: a bounded wait, nothing timed).
fn wait_until_pinned_at_most(kib: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pinned_kib() > kib {
        assert!(
            Instant::now() < deadline,
            "{} KiB still pinned, at most {kib} KiB expected",
            pinned_kib()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
