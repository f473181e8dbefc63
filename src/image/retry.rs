//! Retrying transient registry failures: exponential backoff with jitter,
//! a bounded number of tries, so a pull never hangs on a dead registry for
//! longer than the sum of the delays (plus the client's own timeouts).

use super::registry::RegistryError;
use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub tries: u32,
    /// Delay before the second attempt; doubled each time.
    pub base: Duration,
    /// No single delay is longer than this.
    pub max_delay: Duration,
    /// An attempt that receives no byte for this long fails (and is
    /// retried): a stalled connection must not hold a pull.
    pub stall: Duration,
}

impl Default for Retry {
    /// 5 tries over 0.5 + 1 + 2 + 4 s (each up to 50 % longer with jitter):
    /// long enough for a registry restart, short enough for a boot. 30 s
    /// without a byte is a stall, not a slow link.
    fn default() -> Retry {
        Retry {
            tries: 5,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            stall: Duration::from_secs(30),
        }
    }
}

impl Retry {
    /// The delay after failed attempt `attempt` (1-based); `jitter` in
    /// [0, 1) adds up to half again, so clients that failed together do not
    /// come back together.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        let plain = self.base.saturating_mul(factor).min(self.max_delay);
        plain.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// Whether attempt `attempt` may be followed by another after `err`.
    pub fn again(&self, attempt: u32, err: &RegistryError) -> bool {
        err.is_transient() && attempt < self.tries
    }

    /// Sleeps before the next attempt, saying why on the progress stream.
    pub async fn pause(&self, attempt: u32, what: &str, err: &RegistryError) {
        let delay = self.delay(attempt, rand::random::<f64>());
        eprintln!(
            "{what}: {err}; retrying in {:.1} s (attempt {}/{})",
            delay.as_secs_f64(),
            attempt + 1,
            self.tries
        );
        tokio::time::sleep(delay).await;
    }

    /// Runs `op` until it succeeds, fails for good, or the tries run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(err) if self.again(attempt, &err) => {
                    self.pause(attempt, what, &err).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attempt: u32, jitter: f64, expected_ms: u64) {
        let got = Retry::default().delay(attempt, jitter);
        assert_eq!(got, Duration::from_millis(expected_ms), "attempt {attempt} jitter {jitter}");
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        check(1, 0.0, 500);
        check(2, 0.0, 1000);
        check(3, 0.0, 2000);
        check(4, 0.0, 4000);
        check(5, 0.0, 8000);
        check(9, 0.0, 8000);
        check(40, 0.0, 8000);
        check(1, 0.5, 625);
        check(1, 7.0, 750);
        check(1, -1.0, 500);
        check(0, 0.0, 500);
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let r = Retry::default();
        let unreachable = RegistryError::Unreachable {
            registry: "r".into(),
            reason: "connection refused".into(),
        };
        let http = |code| RegistryError::Http {
            code,
            message: String::new(),
        };
        assert!(r.again(1, &unreachable));
        assert!(!r.again(5, &unreachable));
        assert!(r.again(1, &http(503)));
        assert!(r.again(1, &http(429)));
        assert!(!r.again(1, &http(404)));
        assert!(!r.again(1, &RegistryError::Response("unauthorized".into())));
    }

    #[tokio::test]
    async fn run_stops_after_the_last_try() {
        let r = Retry {
            base: Duration::from_millis(1),
            ..Retry::default()
        };
        let mut calls = 0;
        let result: Result<(), _> = r
            .run("test", || {
                calls += 1;
                async { Err(RegistryError::Http { code: 502, message: String::new() }) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 5);
    }
}
