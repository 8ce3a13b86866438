//! Limits under abuse. The hub is reachable by every member, and a member can be compromised:
//! one member must not be able to starve the others. Each limit has a default that an honest
//! region never meets, and each is answered with `RESOURCE_EXHAUSTED` and a reason; a limit that
//! passes with time also carries `retry-after` metadata (seconds), so nodes wait and try again
//! instead of giving up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The metadata key that marks a refusal as "try again later".
pub const RETRY_AFTER: &str = "retry-after";

/// The metadata key that names the limit a refusal comes from (`mailbox_full`,
/// `rate_limited`, `too_many_subscriptions`), for programs.
pub const LIMIT: &str = "overstap-limit";

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
pub struct Limits {
    /// Calls per second one member may make, on average; a burst of twice as many is allowed.
    pub requests_per_second: u32,
    /// Open mailbox subscriptions per member.
    pub subscriptions_per_member: u32,
    /// Envelopes that may wait in one recipient's mailbox; beyond it, senders are asked to wait.
    pub mailbox_quota: u64,
    /// Concurrent HTTP/2 streams on one connection.
    pub streams_per_connection: u32,
    /// A call that has not been answered in this many seconds ends with `DEADLINE_EXCEEDED`.
    pub request_timeout_secs: u64,
    /// A connection whose peer answers no keep-alive ping for this many seconds is closed.
    pub idle_timeout_secs: u64,
    /// A client must finish its TLS handshake and send its first bytes within this many seconds
    /// of connecting (keep-alive pings only begin once HTTP/2 has).
    pub greeting_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_second: 1_000,
            subscriptions_per_member: 4,
            mailbox_quota: 100_000,
            streams_per_connection: 128,
            request_timeout_secs: 30,
            idle_timeout_secs: 60,
            greeting_timeout_secs: 10,
        }
    }
}

/// A token bucket per member.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes one token from `org`'s bucket, or says how long until one is there.
    pub fn take(&self, org: &str, per_second: u32) -> Result<(), f64> {
        let rate = f64::from(per_second.max(1));
        let burst = 2.0 * rate;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(org.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / rate)
        }
    }
}

/// Counts something per member (open subscriptions, waiting envelopes) against a cap.
#[derive(Debug, Default)]
pub struct Counter {
    counts: Mutex<HashMap<String, u64>>,
}

impl Counter {
    /// Adds one for `org` unless it is at `cap` already; returns the count before.
    pub fn try_add(&self, org: &str, cap: u64) -> Result<u64, u64> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(org.to_string()).or_insert(0);
        if *n >= cap {
            return Err(*n);
        }
        *n += 1;
        Ok(*n - 1)
    }

    /// Like [`Counter::try_add`], but the one added is taken back when the returned guard is
    /// dropped, unless [`Reserved::keep`] was called: a call cancelled half-way (a client that
    /// hangs up, a deadline) leaves the count as it was.
    pub fn reserve(&self, org: &str, cap: u64) -> Result<Reserved<'_>, u64> {
        self.try_add(org, cap)?;
        Ok(Reserved {
            counter: self,
            org: org.to_string(),
            kept: false,
        })
    }

    pub fn sub(&self, org: &str, by: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(org) {
            *n = n.saturating_sub(by);
        }
    }

    /// Replaces every count at once (members not named go to zero).
    pub fn reset(&self, counts: HashMap<String, u64>) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    pub fn set(&self, org: &str, to: u64) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(org.to_string(), to);
    }
}

/// One counted unit that goes back unless kept.
#[derive(Debug)]
pub struct Reserved<'a> {
    counter: &'a Counter,
    org: String,
    kept: bool,
}

impl Reserved<'_> {
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.counter.sub(&self.org, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        for _ in 0..20 {
            assert!(limiter.take("GM0193", 10).is_ok());
        }
        let wait = limiter.take("GM0193", 10).unwrap_err();
        assert!(wait > 0.0 && wait <= 0.1, "{wait}");
        assert!(
            limiter.take("25LP", 10).is_ok(),
            "each member has its own bucket"
        );
    }

    #[test]
    fn a_counter_stops_at_its_cap() {
        let c = Counter::default();
        assert_eq!(c.try_add("30RT", 2), Ok(0));
        assert_eq!(c.try_add("30RT", 2), Ok(1));
        assert_eq!(c.try_add("30RT", 2), Err(2));
        c.sub("30RT", 1);
        assert_eq!(c.try_add("30RT", 2), Ok(1));
        // A reservation that is dropped (a cancelled call) gives its place back.
        c.sub("30RT", 1);
        drop(c.reserve("30RT", 2).unwrap());
        assert_eq!(c.try_add("30RT", 2), Ok(1));
        c.reserve("30RT", 3).unwrap().keep();
        assert_eq!(c.try_add("30RT", 3), Err(3));
    }
}
