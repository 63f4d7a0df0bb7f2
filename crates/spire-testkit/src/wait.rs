//! Bounded polling.

use std::time::{Duration, Instant};

/// A condition did not become true within its time bound.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what} (bound {timeout:?})")]
pub struct WaitTimeout {
    /// What was waited for, as the caller described it.
    pub what: String,
    /// The bound that was exceeded.
    pub timeout: Duration,
    /// How long the wait actually took.
    pub waited: Duration,
}

/// The schedule of one bounded wait, shared by [`wait_until`] and [`wait_until_sync`].
struct Polls<'a> {
    what: &'a str,
    timeout: Duration,
    start: Instant,
    interval: Duration,
}

impl<'a> Polls<'a> {
    fn new(timeout: Duration, what: &'a str) -> Self {
        Polls {
            what,
            timeout,
            start: Instant::now(),
            interval: Duration::from_millis(10),
        }
    }

    /// After a poll that found the condition false: how long to sleep before the next poll
    /// (backing off, never past the deadline), or the timeout once the deadline has passed.
    fn after_miss(&mut self) -> Result<Duration, WaitTimeout> {
        let elapsed = self.start.elapsed();
        if elapsed >= self.timeout {
            return Err(WaitTimeout {
                what: self.what.to_owned(),
                timeout: self.timeout,
                waited: elapsed,
            });
        }
        let sleep = self.interval.min(self.timeout - elapsed);
        self.interval = (self.interval * 2).min(Duration::from_millis(200));
        Ok(sleep)
    }
}

/// Polls `cond` until it returns true or `timeout` passes. The first check is
/// immediate; later checks back off from 10 ms to 200 ms. The condition is
/// always checked once more at the deadline, so a slow first poll cannot make
/// a true condition time out.
///
/// ```no_run
/// # async fn f(sock: std::path::PathBuf) -> Result<(), spire_testkit::WaitTimeout> {
/// use std::time::Duration;
/// spire_testkit::wait_until(Duration::from_secs(30), "agent socket", async || sock.exists()).await
/// # }
/// ```
pub async fn wait_until<F>(timeout: Duration, what: &str, mut cond: F) -> Result<(), WaitTimeout>
where
    F: AsyncFnMut() -> bool,
{
    let mut polls = Polls::new(timeout, what);
    while !cond().await {
        tokio::time::sleep(polls.after_miss()?).await;
    }
    Ok(())
}

/// Blocking form of [`wait_until`] for synchronous tests and closures.
pub fn wait_until_sync<F>(timeout: Duration, what: &str, mut cond: F) -> Result<(), WaitTimeout>
where
    F: FnMut() -> bool,
{
    let mut polls = Polls::new(timeout, what);
    while !cond() {
        std::thread::sleep(polls.after_miss()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn async_wait_sees_condition_become_true() {
        let mut n = 0;
        wait_until(Duration::from_secs(10), "third poll", async || {
            n += 1;
            n >= 3
        })
        .await
        .unwrap();
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn async_wait_times_out_with_description() {
        let err = wait_until(Duration::from_millis(30), "never", async || false)
            .await
            .unwrap_err();
        assert_eq!(err.what, "never");
        assert!(err.waited >= Duration::from_millis(30));
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }

    #[test]
    fn sync_wait_polls_and_times_out() {
        let mut n = 0;
        wait_until_sync(Duration::from_secs(10), "second poll", || {
            n += 1;
            n >= 2
        })
        .unwrap();
        assert_eq!(n, 2);
        let err = wait_until_sync(Duration::from_millis(20), "never", || false).unwrap_err();
        assert!(err.to_string().contains("never"));
    }
}
