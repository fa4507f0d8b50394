//! An mlock that RLIMIT_MEMLOCK forbids gives an error naming the limit and its value.
//!
//! This binary holds one test because it lowers a process-wide limit. Root (or any holder of
//! CAP_IPC_LOCK) ignores RLIMIT_MEMLOCK, so the test first drops CAP_IPC_LOCK from the
//! capability sets of the one thread that tries the mlock: capabilities are per thread on Linux.

use regio_pool::{Error, PoolBuilder, Region, RegionOptions};

fn set_memlock(lim: libc::rlimit) {
    // SAFETY: setrlimit reads one `rlimit` through a valid pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) }, 0);
}

#[test]
fn mlock_beyond_rlimit_memlock_names_the_limit() {
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut saved) };
    assert_eq!(rc, 0);
    const LIMIT: u64 = 64 * 1024;
    set_memlock(libc::rlimit {
        rlim_cur: LIMIT,
        rlim_max: saved.rlim_max,
    });
    let (region, built) = std::thread::spawn(|| {
        regio_testkit::drop_ipc_lock().expect("dropping our own capability is always allowed");
        let region = Region::map(
            1 << 20,
            RegionOptions {
                huge_pages: false,
                mlock: true,
            },
        );
        let built = PoolBuilder::new().class(4096, 256).mlock(true).build();
        (region, built.map(drop))
    })
    .join()
    .unwrap();
    set_memlock(saved);

    for result in [region.map(drop), built] {
        let err = result.expect_err("mlock of 1 MiB under a 64 KiB limit without CAP_IPC_LOCK");
        let text = err.to_string();
        assert!(matches!(err, Error::Lock { .. }), "{text}");
        assert!(
            text.contains("RLIMIT_MEMLOCK is 65536 bytes"),
            "the message names the limit and its value: {text}"
        );
    }
}
