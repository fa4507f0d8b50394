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
