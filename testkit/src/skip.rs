//! Skipping a test that cannot run on this machine.

/// Whether `REGIO_REQUIRE_ALL=1`: every test must run, and a skip is a failure.
pub fn require_all() -> bool {
    std::env::var("REGIO_REQUIRE_ALL").as_deref() == Ok("1")
}

/// Prints `SKIP: <reason>` and returns, so the caller can return too; under
/// `REGIO_REQUIRE_ALL=1` fails the test instead.
///
/// # Panics
///
/// Under `REGIO_REQUIRE_ALL=1`.
pub fn skip(reason: &str) {
    if require_all() {
        panic!("required test skipped: {reason}");
    }
    println!("SKIP: {reason}");
}
