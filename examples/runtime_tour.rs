//! A tour of the runtime: spawn and join, a task that panics, sleep, timeout, a file, and the
//! workers' counters. Runs in well under a second.
//!
//! Run: `cargo run --release --example runtime_tour`

use std::time::{Duration, Instant};

use regio::runtime::{self, fs::File, time};

#[regio::main(worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();

    // Spawn and join: each task runs on one worker, and its NOPs go through that worker's ring.
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            runtime::spawn(async move {
                for _ in 0..100 {
                    runtime::nop().await?;
                }
                Ok::<_, std::io::Error>(i)
            })
        })
        .collect();
    let mut sum = 0;
    for task in tasks {
        sum += task.await??;
    }
    println!("8 tasks, 800 NOP round trips, sum of ids {sum}");

    // A task that panics gives a JoinError; its worker carries on. (The panic hook prints the
    // panic's message first, as for any thread.)
    let err = runtime::spawn(async { panic!("on purpose") })
        .await
        .unwrap_err();
    println!("a panicking task: {err}");

    // Timers live on each worker's timer map; a timeout drops (and cancels) what it wraps.
    time::sleep(Duration::from_millis(20)).await;
    let late = time::timeout(
        Duration::from_millis(10),
        time::sleep(Duration::from_secs(5)),
    )
    .await;
    println!("sleep(20ms) done; timeout(10ms, sleep(5s)) gave {late:?}");

    // A file written and read back through the ring, with buffers of the runtime's pool.
    let path = std::env::temp_dir().join(format!("regio-tour-{}", std::process::id()));
    let read_back = runtime::spawn({
        let path = path.clone();
        async move {
            let pool = runtime::pool();
            let file = File::create(&path)?;
            let mut msg = pool.acquire().await;
            msg.as_mut_slice()[..12].copy_from_slice(b"hello, regio");
            msg.descriptor_mut().truncate(12);
            let (written, msg) = file.write_at(msg, 0).await;
            written?;
            drop(msg);
            file.sync_data().await?;
            let (read, msg) = file.read_at(pool.acquire().await, 0).await;
            let n = read?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&msg.as_slice()[..n]).into_owned())
        }
    })
    .await??;
    std::fs::remove_file(&path)?;
    println!("read back from the file: {read_back:?}");
    println!("tour done in {:?}", start.elapsed());
    Ok(())
}
