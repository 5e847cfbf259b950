//! Panics turned into errors at the actors' boundaries.
//!
//! actix's `Supervisor` restarts an actor that *stops*; a panic in a handler
//! instead kills the actor's task for good (or its arbiter thread). So work
//! that might panic runs inside [`catch`] / [`catch_async`], and the actor
//! turns the error into a stop, which its supervisor answers with a restart.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt as _;

/// Runs `f`; a panic comes back as `Err` with its message.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(describe)
}

/// Polls `f` to completion; a panic comes back as `Err` with its message.
pub async fn catch_async<F: Future>(f: F) -> Result<F::Output, String> {
    AssertUnwindSafe(f).catch_unwind().await.map_err(describe)
}

/// The message of a panic payload.
pub fn describe(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors_with_their_message() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> u8 { panic!("boom {}", 1) }),
            Err("panicked: boom 1".into())
        );
        let fut = catch_async(async { panic!("late") });
        let got = futures_util::FutureExt::now_or_never(fut);
        assert_eq!(got, Some(Err::<(), _>("panicked: late".into())));
    }
}
