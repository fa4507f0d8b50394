//! The `Rcu` API's contracts outside loom: what a misuse does, and what each writer path returns.
#![cfg(not(loom))]

use regio_sync::{Domain, Rcu};

#[test]
#[should_panic(expected = "reader of another domain")]
fn reading_through_a_reader_of_another_domain_panics() {
    let cell = Rcu::new(&Domain::new(), 1u32);
    let stranger = Domain::new().register();
    let _ = cell.read(&stranger);
}

#[test]
fn synchronize_hands_back_the_replaced_version() {
    let domain = Domain::new();
    let cell = Rcu::new(&domain, String::from("v1"));
    let mut reader = domain.register();
    assert_eq!(cell.read(&reader), "v1");
    let old = cell.replace(String::from("v2"));
    assert_eq!(cell.read(&reader), "v2");
    // A registered thread waits offline, so that it does not wait for itself.
    assert_eq!(reader.offline_while(|| old.synchronize()), "v1");
    reader.synchronize();
}

#[test]
fn deferred_versions_wait_for_an_online_reader() {
    let domain = Domain::new();
    let cell = Rcu::new(&domain, 0u64);
    let mut reader = domain.register();
    for n in 1..=10 {
        cell.replace(n).defer();
    }
    // The reader has announced nothing since: a reclaim frees none of them.
    assert_eq!(domain.reclaim(), 0);
    assert_eq!(domain.pending(), 10);
    reader.quiescent();
    assert_eq!(domain.reclaim(), 10);
    assert_eq!(domain.pending(), 0);
}

#[test]
fn update_builds_on_the_current_version() {
    let domain = Domain::new();
    let cell = Rcu::new(&domain, vec![1]);
    for n in 2..=5 {
        cell.update(|v| {
            let mut next = v.clone();
            next.push(n);
            next
        })
        .defer();
    }
    domain.barrier();
    assert_eq!(*cell.read(&domain.guard()), vec![1, 2, 3, 4, 5]);
    assert_eq!(domain.pending(), 0);
}

#[test]
fn nested_guards_keep_the_thread_online_until_the_outermost_drops() {
    let domain = Domain::new();
    let cell = Rcu::new(&domain, 1u32);
    let outer = domain.guard();
    let old = cell.read(&outer);
    let inner = domain.guard();
    assert_eq!(*cell.read(&inner), 1);
    cell.replace(2).defer();
    drop(inner);
    // The outer guard still holds version 1: its grace period cannot end.
    assert_eq!(domain.reclaim(), 0);
    assert_eq!(*old, 1);
    drop(outer);
    assert_eq!(domain.reclaim(), 1);
    assert_eq!(*cell.read(&domain.guard()), 2);
}

/// A thread's slot counts 65 535 nested guards; deeper ones take slots of their own, and every
/// one of them still holds the writer off until it drops.
#[test]
fn guards_nested_deeper_than_a_slot_counts_still_protect() {
    let domain = Domain::new();
    let cell = Rcu::new(&domain, 1u32);
    let mut guards: Vec<_> = (0..70_000).map(|_| domain.guard()).collect();
    let deepest = guards.pop().expect("guards were taken");
    let old = cell.read(&deepest);
    cell.replace(2).defer();
    assert_eq!(domain.reclaim(), 0);
    // Ending all but the deepest (a guard with a slot of its own) leaves the version held.
    guards.clear();
    assert_eq!(domain.reclaim(), 0);
    assert_eq!(*old, 1);
    drop(deepest);
    assert_eq!(domain.reclaim(), 1);
    // The cached slot is back at depth 0: a fresh guard comes online and sees the new version.
    assert_eq!(*cell.read(&domain.guard()), 2);
}

#[test]
fn a_forgotten_guard_goes_offline_when_its_thread_exits() {
    let domain = Domain::new();
    let cell = Rcu::new(&domain, 1u32);
    let reader = domain.clone();
    // `join` (not a scope) waits for the thread's thread-local destructors too.
    std::thread::spawn(move || std::mem::forget(reader.guard()))
        .join()
        .unwrap();
    cell.replace(2).defer();
    // The thread's slot went offline as the thread exited, so the writer does not wait for it.
    assert_eq!(domain.reclaim(), 1);
}

#[test]
fn a_thread_may_outlive_the_domains_it_read() {
    let (to_main, from_thread) = std::sync::mpsc::channel();
    let (to_thread, from_main) = std::sync::mpsc::channel::<()>();
    let domain = Domain::new();
    let reader = {
        let domain = domain.clone();
        std::thread::spawn(move || {
            let cell = Rcu::new(&domain, 1u32);
            assert_eq!(*cell.read(&domain.guard()), 1);
            drop((cell, domain));
            to_main.send(()).unwrap();
            from_main.recv().unwrap();
            // The first domain is gone; this thread still lists its slot there.
            let other = Domain::new();
            let cell = Rcu::new(&other, 2u32);
            assert_eq!(*cell.read(&other.guard()), 2);
        })
    };
    from_thread.recv().unwrap();
    drop(domain);
    to_thread.send(()).unwrap();
    reader.join().unwrap();
}
