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

/// `result`'s value, or `None` after a [`skip`] when `unsupported` says that its error means
/// this host lacks what the test needs (io_uring disabled, say).
///
/// # Panics
///
/// On any other error, and on a skip under `REGIO_REQUIRE_ALL=1`.
pub fn ok_or_skip<T, E: std::fmt::Display>(
    result: Result<T, E>,
    unsupported: impl FnOnce(&E) -> bool,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) if unsupported(&e) => {
            skip(&e.to_string());
            None
        }
        Err(e) => panic!("test setup failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_passes_through() {
        assert_eq!(ok_or_skip(Ok::<_, String>(7), |_| true), Some(7));
    }

    #[test]
    fn an_unsupported_error_skips_or_fails_when_every_test_must_run() {
        let outcome =
            std::panic::catch_unwind(|| ok_or_skip(Err::<u8, _>("no io_uring here"), |_| true));
        if require_all() {
            assert!(outcome.is_err(), "a required skip did not fail");
        } else {
            assert_eq!(outcome.unwrap(), None);
        }
    }

    #[test]
    #[should_panic(expected = "test setup failed: out of memory")]
    fn another_error_fails_the_test() {
        ok_or_skip(Err::<u8, _>("out of memory"), |_| false);
    }
}
