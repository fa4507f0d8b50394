//! A tour of regio-pool: build a pool, attach a registrar the way an adapter does, acquire in
//! both modes, fill a descriptor and validate it, translate an address, hand out fixed-file
//! slots, and lend buffers to a provided-buffer ring.
//!
//! Run: `cargo run -p regio-pool --example tour`

use std::future::Future;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use regio_pool::{
    BufFeed, BufRingSink, FileSlots, MessagePool, Opcode, PoolBuilder, PoolRegion, Registrar,
};

/// Stands in for an adapter: prints what it would register with `IORING_REGISTER_BUFFERS_UPDATE`.
struct PrintRegistrar;

impl Registrar for PrintRegistrar {
    unsafe fn register(&self, region: PoolRegion) -> io::Result<()> {
        let PoolRegion {
            pool,
            id,
            base,
            len,
        } = region;
        println!("register region {id} of pool {pool}: {len} bytes at {base:p}");
        Ok(())
    }
}

/// Stands in for a provided-buffer ring of 4 slots.
struct PrintRing;

// SAFETY: no kernel reads this "ring", so no buffer is ever written behind the feed's back.
unsafe impl BufRingSink for PrintRing {
    fn entries(&self) -> u16 {
        4
    }

    unsafe fn push(&self, addr: NonNull<u8>, len: u32, bid: u16) {
        println!("ring <- bid {bid}: {len} bytes at {addr:p}");
    }

    fn retire(self: Box<Self>) -> bool {
        println!("ring unregistered");
        true
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = PoolBuilder::new()
        .class(4096, 64)
        .class(64 * 1024, 8)
        .low_watermark(0, 8, |ev| println!("low watermark: {ev:?}"))
        .build()?;
    pool.attach(Arc::new(PrintRegistrar))?;

    // Synchronous mode: fill a message and describe a write of it.
    let mut msg = pool.try_acquire()?;
    msg.as_mut_slice()[..12].copy_from_slice(b"hello, regio");
    {
        let desc = msg.descriptor_mut();
        desc.opcode = Opcode::WriteFixed;
        desc.offset = 0;
        desc.cookie = 7;
        desc.truncate(12);
    }
    pool.validate(msg.descriptor())?;
    println!("descriptor ready for an SQE: {:?}", msg.descriptor());

    // The key table knows any address inside the pool.
    // SAFETY: offset 6 lies inside the message's 4 KiB buffer.
    let inside = unsafe { msg.as_ptr().add(6) };
    println!(
        "{inside:p} is {:?}",
        pool.key_table().translate_guarded(inside, 6)?
    );

    // A large message is a scatter list of the largest class.
    let big = pool.try_acquire_len(150 * 1024)?;
    println!(
        "150 KiB as {} buffers: {:?}",
        big.buf_count(),
        big.descriptor().slices()
    );
    drop(big);

    // Asynchronous mode: a waiter is served as soon as a message comes back.
    let held: Vec<_> = (0..63)
        .map(|_| pool.try_acquire())
        .collect::<Result<_, _>>()?;
    let mut waiting = pool.acquire();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(std::pin::Pin::new(&mut waiting).poll(&mut cx).is_pending());
    drop(msg);
    let Poll::Ready(served) = std::pin::Pin::new(&mut waiting).poll(&mut cx) else {
        unreachable!("the released message went to the waiter");
    };
    println!("the waiter got {:?}", served.key());
    let timeout = pool.acquire_blocking(Duration::from_millis(5)).unwrap_err();
    println!("blocking acquire on an empty class: {timeout}");
    drop((held, served));

    // Fixed-file slots and a provided-buffer ring.
    let slots = FileSlots::new(16)?;
    let slot = slots.alloc()?;
    println!(
        "fixed-file slot {:?}; {} left",
        slot.slot(),
        slots.available()
    );
    drop(slot); // back to the table

    let feed = BufFeed::new(&pool, 0, 4, PrintRing)?;
    // SAFETY: this example plays the kernel, whose completion said: bid 2, 5 bytes.
    let received = unsafe { feed.take(2, 5) }?;
    println!(
        "received {} bytes in bid {}",
        received.data().len(),
        received.bid()
    );
    drop(received); // back into the ring
    drop(feed);

    report(&pool);
    Ok(())
}

fn report(pool: &MessagePool) {
    for class in 0..pool.classes() {
        println!(
            "class {class}: {} of {} free, {} bytes each",
            pool.available(class),
            pool.capacity(class),
            pool.buf_size(class)
        );
    }
}
