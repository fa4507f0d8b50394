//! Helpers shared by the pool's integration tests: a one-poll helper and a recording registrar
//! (those of every crate are in regio-testkit).

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use regio_pool::{MessagePool, PoolBuilder, PoolRegion, RegionId, Registrar};

/// Polls `fut` once with a waker that does nothing.
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx)
}

/// A registrar that records what it was given, and can be told to refuse, from a given region
/// id on.
pub struct Recorder {
    pub registered: Mutex<Vec<(RegionId, usize, usize)>>,
    pub unregistered: Mutex<Vec<RegionId>>,
    pub refuse: std::sync::atomic::AtomicBool,
    pub refuse_from: u16,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::refusing_from(0)
    }
}

impl Recorder {
    /// A recorder that, once `refuse` is set, refuses regions `from` and later.
    pub fn refusing_from(from: u16) -> Self {
        Self {
            registered: Mutex::default(),
            unregistered: Mutex::default(),
            refuse: std::sync::atomic::AtomicBool::new(false),
            refuse_from: from,
        }
    }
}

impl Registrar for Recorder {
    unsafe fn register(&self, region: PoolRegion) -> io::Result<()> {
        let PoolRegion { id, base, len, .. } = region;
        // Relaxed: the test sets the flag on this same thread before the call it affects.
        if self.refuse.load(std::sync::atomic::Ordering::Relaxed) && id.0 >= self.refuse_from {
            return Err(io::Error::from_raw_os_error(libc_enomem()));
        }
        self.registered
            .lock()
            .unwrap()
            .push((id, base.as_ptr() as usize, len));
        Ok(())
    }

    fn unregister(&self, _pool: u32, id: RegionId) {
        self.unregistered.lock().unwrap().push(id);
    }
}

fn libc_enomem() -> i32 {
    12
}

/// The pool `builder` builds, with a [`Recorder`] attached.
pub fn recorded(builder: PoolBuilder) -> (MessagePool, Arc<Recorder>) {
    let pool = builder.build().unwrap();
    let rec = Arc::new(Recorder::default());
    pool.attach(rec.clone()).unwrap();
    (pool, rec)
}
