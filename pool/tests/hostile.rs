//! Hostile arguments to the public API: errors, never a panic or an abort.

use std::time::Duration;

use regio_pool::{Error, PoolBuilder, Region, RegionOptions, MAX_SG};

#[test]
fn a_class_the_pool_lacks_is_an_error() {
    let pool = PoolBuilder::new().class(64, 1).build().unwrap();
    let err = pool.try_acquire_class(7).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoSuchClass {
                class: 7,
                classes: 1
            }
        ),
        "{err}"
    );
    assert!(matches!(
        pool.acquire_class_blocking(usize::MAX, Duration::ZERO),
        Err(Error::NoSuchClass { .. })
    ));
    assert!(!pool.arm_low_watermark(7));
    assert!(matches!(pool.grow(7, 1), Err(Error::Config(_))));
    assert_eq!(pool.available(0), 1, "nothing was taken");
}

#[test]
fn a_timeout_too_long_for_the_clock_waits_until_served() {
    let pool = PoolBuilder::new().class(64, 1).build().unwrap();
    let held = pool.try_acquire().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        let msg = pool.acquire_blocking(Duration::MAX).unwrap();
        assert_eq!(msg.buf_count(), 1);
    });
}

#[test]
fn huge_builder_arguments_are_configuration_errors() {
    let huge_threads = PoolBuilder::new()
        .class(64, 1)
        .max_threads(usize::MAX)
        .build();
    assert!(matches!(huge_threads, Err(Error::Config(_))));
    let huge_waiters = PoolBuilder::new()
        .class(64, 1)
        .max_waiters(usize::MAX)
        .build();
    assert!(matches!(huge_waiters, Err(Error::Config(_))));
    assert!(matches!(
        PoolBuilder::new().class(0, 1).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        PoolBuilder::new().class(u32::MAX, 2).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        PoolBuilder::new().class(64, u32::MAX).build(),
        Err(Error::Config(_))
    ));
}

#[test]
fn huge_lengths_are_errors() {
    let err = Region::map(usize::MAX, RegionOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Map { .. }), "{err}");
    let pool = PoolBuilder::new().class(64, 4).build().unwrap();
    assert!(matches!(
        pool.try_acquire_len(usize::MAX),
        Err(Error::TooManySlices { max: MAX_SG })
    ));
    let msg = pool.try_acquire().unwrap();
    assert!(matches!(
        pool.key_table().translate_guarded(msg.as_ptr(), usize::MAX),
        Err(Error::Unmapped { .. })
    ));
    assert!(pool
        .key_table()
        .translate_guarded(std::ptr::null(), 1)
        .is_err());
}
