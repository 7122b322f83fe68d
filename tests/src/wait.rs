//! Waiting for conditions by polling with a deadline.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// Pause between two checks of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// An error that makes [`await_condition`] give up at once (e.g. the process it waits for died).
#[derive(Debug)]
pub struct Fatal(pub String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// An error that stops [`await_condition`] immediately instead of retrying.
pub fn fatal(message: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Fatal(message.to_string()))
}

fn is_fatal(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Fatal>())
}

/// Poll `check` until it returns `Ok`, at most for `timeout`.
///
/// `check` returns `Err(observation)` while the condition does not hold; the last observation
/// is part of the timeout error, together with `what` was awaited. An error built with
/// [`fatal`] ends the wait at once. A check that hangs is cut off at the deadline.
pub async fn await_condition<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut checks = 0u32;
    loop {
        checks += 1;
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let observation = match tokio::time::timeout(remaining, check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) if is_fatal(&err) => {
                return Err(anyhow!("gave up waiting for {what} after {:.2?}: {err:#}", start.elapsed()))
            }
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => format!("the check itself did not finish within {remaining:.2?}"),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(anyhow!(
                "timed out after {:.2?} ({checks} checks) waiting for {what}; last observation: {observation}",
                start.elapsed()
            ));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}
