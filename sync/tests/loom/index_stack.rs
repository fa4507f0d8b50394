//! The index stack ([`regio_sync::IndexStack`]): bulk and single pushes and pops from two threads
//! lose no index and hand none to two threads.

use loom::sync::atomic::AtomicU32;
use loom::sync::Arc;
use loom::thread;
use regio_sync::{IndexStack, NIL};

fn links(n: u32) -> Arc<Box<[AtomicU32]>> {
    Arc::new((0..n).map(|_| AtomicU32::new(NIL)).collect())
}

/// Bulk and single pushes and pops on the shared store, from two threads: every index comes out
/// exactly once, and no element is handed to two threads at once.
#[test]
fn store_push_pop() {
    loom::model(|| {
        let links = links(3);
        let stack = Arc::new(IndexStack::new());
        stack.push_slice(&**links, &[0, 1, 2]);

        let other = {
            let (links, stack) = (links.clone(), stack.clone());
            thread::spawn(move || {
                let got = stack.pop(&**links);
                if let Some(i) = got {
                    stack.push(&**links, i);
                }
                got
            })
        };
        let mut two = [NIL; 2];
        let n = stack.pop_into(&**links, &mut two);
        assert!(
            n >= 1,
            "three elements, at most one taken by the other thread"
        );
        stack.push_slice(&**links, &two[..n]);
        other.join().unwrap();

        let mut all = Vec::new();
        while let Some(i) = stack.pop(&**links) {
            all.push(i);
        }
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2]);
    });
}
