//! `Op::send_zc_region`: a zero-copy send of a slice of a region registered by hand, carried
//! beside the adapter's buffer type. The bytes arrive, what the slice keeps is dropped only
//! with the final (`F_NOTIF`) completion, and a stale, unknown or out-of-bounds slice is
//! rejected before it reaches the kernel.

mod common;

use std::any::Any;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use common::{config, Region, TestBuf};
use regio_adapters::{BufKey, Completion, DescriptorError, Op, RegionId, RegionSlice, Target};

/// A slice of `region` kept by `keep`.
fn slice(region: &Region, offset: u32, len: u32, keep: &Arc<()>) -> RegionSlice {
    slice_of(region.id, region.generation, offset, len, keep)
}

fn slice_of(id: RegionId, generation: u32, offset: u32, len: u32, keep: &Arc<()>) -> RegionSlice {
    let keep: Arc<dyn Any + Send + Sync> = keep.clone();
    let key = BufKey {
        region: id,
        offset,
        len,
    };
    // SAFETY: the test's `Region` stays registered and mapped until the end of the test, after
    // every completion was reaped.
    unsafe { RegionSlice::new(key, generation, keep) }
}

#[test]
fn a_region_slice_is_sent_and_kept_until_the_notification() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, false)) else {
        return;
    };
    let region = Region::new(&adapter, 1 << 16);
    region.write(1000, b"from the region");
    if !adapter.supports(&Op::send_zc(region.buf(0, 1), 0, 0)) {
        return regio_testkit::skip("the kernel lacks send_zc (Linux 6.0)");
    }
    let (mut client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(server.as_raw_fd()), 8, 8)
        .unwrap();
    let cq = wq.ring();
    let keep = Arc::new(());
    wq.post(Op::send_zc_region(slice(&region, 1000, 15, &keep), 0, 7))
        .unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|c: &Completion<TestBuf>| c.is_final()) {
        assert_eq!(Arc::strong_count(&keep), 2, "kept until the notification");
        cq.wait(&mut seen, 8, Some(Duration::from_secs(10)))
            .unwrap();
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].result, 15);
    assert!(seen[1].is_notification() && seen[1].buf.is_none());
    assert_eq!(
        Arc::strong_count(&keep),
        1,
        "released with the final completion"
    );
    let mut got = [0; 15];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from the region");
}

#[test]
fn stale_unknown_and_out_of_bounds_slices_are_rejected() {
    let Some(adapter) = common::adapter_or_skip::<TestBuf>(config(1, false)) else {
        return;
    };
    let region = Region::new(&adapter, 1 << 16);
    let (_client, server) = regio_testkit::loopback();
    let wq = adapter
        .work_queue(0, Target::Fd(server.as_raw_fd()), 8, 8)
        .unwrap();
    let cq = wq.ring();
    let keep = Arc::new(());
    let bad = [
        slice_of(region.id, region.generation + 1, 0, 10, &keep),
        slice_of(RegionId(region.id.0 + 1), region.generation, 0, 10, &keep),
        slice(&region, (1 << 16) - 5, 10, &keep),
        slice(&region, 0, 0, &keep),
    ];
    for (cookie, s) in bad.into_iter().enumerate() {
        wq.post(Op::send_zc_region(s, 0, cookie as u64)).unwrap();
        let done = common::wait_one(&cq);
        let why = done.rejected().expect("rejected before the kernel");
        match cookie {
            0 => assert!(
                matches!(why, DescriptorError::StaleGeneration { .. }),
                "{why:?}"
            ),
            1 => assert!(matches!(why, DescriptorError::UnknownRegion(_)), "{why:?}"),
            _ => assert!(
                matches!(why, DescriptorError::OutOfBounds { .. }),
                "{why:?}"
            ),
        }
    }
    assert_eq!(
        Arc::strong_count(&keep),
        1,
        "every rejected slice was dropped"
    );
}
