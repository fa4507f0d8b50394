//! The attribute macros, used as a program would.

use std::time::Duration;

#[regio_runtime::test]
async fn the_test_macro_runs_the_body_on_a_runtime() {
    regio_runtime::nop().await.unwrap();
    let on_worker = regio_runtime::spawn(async {
        regio_runtime::time::sleep(Duration::from_millis(1)).await;
        regio_runtime::nop().await.is_ok()
    });
    assert!(on_worker.await.unwrap());
}

#[regio_runtime::test(worker_threads = 2)]
async fn worker_threads_sets_the_worker_count() {
    let handles: Vec<_> = (0..4)
        .map(|i| regio_runtime::spawn(async move { i }))
        .collect();
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    assert_eq!(sum, 6);
}

#[regio_runtime::test]
async fn a_test_may_return_a_result() -> Result<(), std::io::Error> {
    regio_runtime::nop().await
}

#[regio_runtime::test]
#[should_panic(expected = "inside the body")]
async fn a_panic_in_the_body_fails_the_test() {
    panic!("inside the body");
}
