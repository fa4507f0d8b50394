//! A reap's `max` is a bound, not a size: every reap entry point takes `usize::MAX` and
//! `1 << 40` and reserves room only for the completions there are (a reservation of `max` would
//! panic with a capacity overflow, or abort the process when the allocation fails).

mod common;

use std::time::{Duration, Instant};

use common::{config, ReapRig, Region, TestBuf};
use regio_adapters::{Completion, Op};

/// An operation whose descriptor is rejected: it completes in user space, not in the CQ.
fn rejected(region: &std::sync::Arc<Region>, cookie: u64) -> Op<TestBuf> {
    Op::read_fixed(region.forged_past_the_end(), 0, cookie)
}

/// Posts a NOP (a CQE) and a rejection (a local completion) on `rig`'s work queue.
fn post_two(rig: &ReapRig) {
    rig.wq.post(Op::nop(1)).unwrap();
    rig.wq.post(rejected(&rig.region, 2)).unwrap();
}

/// Calls `reap` until it has handed over both completions of [`post_two`], for at most 5 s.
fn reap_both(what: &str, max: usize, mut reap: impl FnMut(&mut Vec<u64>) -> usize) {
    let mut cookies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cookies.len() < 2 && Instant::now() < deadline {
        let before = cookies.len();
        let n = reap(&mut cookies);
        assert_eq!(n, cookies.len() - before, "{what} with max {max:#x}");
        std::thread::yield_now();
    }
    cookies.sort();
    assert_eq!(cookies, [1, 2], "{what} with max {max:#x}");
}

fn cookies_of(out: Vec<Completion<TestBuf>>, into: &mut Vec<u64>) {
    into.extend(out.iter().map(|c| c.cookie));
}

/// Reaps a NOP and a rejection through every entry point with `max`, with and without SQPOLL.
fn every_entry_point(max: usize) {
    for sqpoll in [false, true] {
        let Some(rig) = ReapRig::new(config(1, sqpoll)) else {
            return;
        };
        post_two(&rig);
        reap_both("Ring::reap", max, |c| {
            let mut out = Vec::new();
            let n = rig.cq.reap(&mut out, max).unwrap();
            cookies_of(out, c);
            n
        });
        post_two(&rig);
        reap_both("Ring::reap_each", max, |c| {
            rig.cq.reap_each(max, |x| c.push(x.cookie)).unwrap()
        });
        post_two(&rig);
        reap_both("Ring::wait", max, |c| {
            let mut out = Vec::new();
            let n = rig
                .cq
                .wait(&mut out, max, Some(Duration::from_millis(100)))
                .unwrap();
            cookies_of(out, c);
            n
        });
        post_two(&rig);
        reap_both("CqSet::reap", max, |c| {
            let mut out = Vec::new();
            let n = rig.set.reap(&mut out, max).unwrap();
            cookies_of(out, c);
            n
        });
        post_two(&rig);
        reap_both("CqSet::wait", max, |c| {
            let mut out = Vec::new();
            let n = rig
                .set
                .wait(&mut out, max, Some(Duration::from_millis(100)))
                .unwrap();
            cookies_of(out, c);
            n
        });
        {
            let mut batch = rig.cq.batch().expect("nobody else owns the ring");
            batch.post(&rig.wq, Op::nop(1)).unwrap();
            batch.post(&rig.wq, rejected(&rig.region, 2)).unwrap();
            batch.commit().unwrap();
            reap_both("Batch::reap", max, |c| {
                let mut out = Vec::new();
                let n = batch.reap(&mut out, max).unwrap();
                cookies_of(out, c);
                n
            });
            batch.post(&rig.wq, Op::nop(1)).unwrap();
            batch.post(&rig.wq, rejected(&rig.region, 2)).unwrap();
            batch.commit().unwrap();
            reap_both("Batch::reap_each", max, |c| {
                batch.reap_each(max, |x| c.push(x.cookie)).unwrap()
            });
        }
        assert_eq!(rig.wq.credits(), (8, 8));
    }
}

/// Reserving `usize::MAX` completions panicked with a capacity overflow.
#[test]
fn every_reap_entry_point_takes_usize_max() {
    every_entry_point(usize::MAX);
}

/// Reserving `1 << 40` completions (64 TiB of them here) aborted the process: the allocation
/// fails.
#[test]
fn every_reap_entry_point_takes_two_to_the_40() {
    every_entry_point(1 << 40);
}
