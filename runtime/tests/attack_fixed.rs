//! Attacks on fixed-file slots and the multishot accept from safe code: handles that outlive
//! their runtime, slots freed and taken again at once, halves dropped apart, hostile sockets.
//!
//! The tests count descriptors and slots, so they run one at a time (`common::serial`).

mod common;

use std::time::Duration;

use regio_runtime::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(60);

/// An `Incoming` taken out of its task keeps its multishot accept armed on a worker's ring,
/// with connections accepted that no one took yet. Shutting the runtime down must cancel that
/// accept (no task can take its connections any more) rather than wait for it forever, and
/// close the connections it accepted rather than drop their descriptors on the floor.
#[test]
fn an_incoming_that_outlives_its_runtime_neither_stalls_shutdown_nor_leaks_connections() {
    let _serial = common::serial();
    const LATE: usize = 8;
    regio_testkit::within(LIMIT, "the test", || {
        let fds = common::open_fds();
        let Some(rt) = common::runtime(1) else { return };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let first = std::net::TcpStream::connect(addr).unwrap();
        let incoming = rt
            .block_on(rt.spawn(async move {
                let mut incoming = listener.incoming();
                drop(incoming.accept().await.unwrap());
                incoming
            }))
            .unwrap();
        drop(first);
        let before = common::open_fds();
        let late: Vec<std::net::TcpStream> = (0..LATE)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        common::eventually("the late connections are accepted", || {
            common::open_fds() == before + 2 * LATE
        });
        // Before the fix: the worker waited for the armed accept, which never ends.
        rt.shutdown(Duration::MAX);
        for mut client in late {
            // A bound on a read that must end at once (before the fix it never did: the
            // accepted descriptor was lost, open).
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut rest = Vec::new();
            let read = std::io::Read::read_to_end(&mut client, &mut rest);
            assert!(
                matches!(&read, Ok(0))
                    || read.as_ref().is_err_and(|e| !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )),
                "a late client's connection ends: {read:?}"
            );
        }
        drop(incoming);
        common::eventually("every descriptor is closed", || common::open_fds() == fds);
    });
}
