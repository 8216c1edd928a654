//! When to try again: what an answer means for its batch, the exponential backoff between
//! attempts, and the server's `Retry-After`.

use std::time::{Duration, SystemTime};

/// The first wait after a failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait the backoff doubles up to.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The longest `Retry-After` honoured: a server asking for more gets retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// What becomes of a batch after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (2xx).
    Sent,
    /// Worth another attempt (429, 5xx, or no answer at all): the batch goes back in the queue.
    Retry,
    /// Refused for good (any other status, 4xx above all: the same body would be refused
    /// again): counted failed, not retried.
    Fail,
}

/// What an HTTP status means for the batch it answered.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Sent,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// Exponential backoff: `initial` after the first failure, doubling after each further one up
/// to `max`, back to `initial` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The wait before the next attempt, given what the server asked (`Retry-After`): the
    /// backoff's, or the server's when longer (capped at [`MAX_RETRY_AFTER`]). Each call
    /// doubles the backoff's.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        match retry_after {
            Some(asked) => asked.min(MAX_RETRY_AFTER).max(delay),
            None => delay,
        }
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 30 s.
    fn default() -> Self {
        Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)
    }
}

/// A `Retry-After` header's wait: delay-seconds, or an HTTP-date relative to `now` (zero when
/// already past); `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(verdict(200), Verdict::Sent);
        assert_eq!(verdict(204), Verdict::Sent);
        assert_eq!(verdict(429), Verdict::Retry);
        assert_eq!(verdict(500), Verdict::Retry);
        assert_eq!(verdict(503), Verdict::Retry);
        for status in [301, 400, 401, 404, 413] {
            assert_eq!(verdict(status), Verdict::Fail, "{status}");
        }
    }

    #[test]
    fn schedule_doubles_from_100ms_to_30s_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u128> = (0..12)
            .map(|_| backoff.next_delay(None).as_millis())
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000, 30_000]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(None), Duration::from_millis(100));
    }

    #[test]
    fn retry_after_lengthens_the_wait_within_a_cap() {
        let mut backoff = Backoff::default();
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        // Shorter than the backoff: the backoff's (200 ms now).
        assert_eq!(
            backoff.next_delay(Some(Duration::ZERO)),
            Duration::from_millis(200)
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_values() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
