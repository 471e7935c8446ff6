//! Request quotas: the shared per-region cryptographic-operation quota as a token
//! bucket, and the exponential-backoff-with-jitter retry that ebsim's own callers
//! (the CLI, and later the volume service) use when they are throttled.
//!
//! The bucket lives in the [`super::Kms`] instance, so it limits one process; each
//! CLI command is its own process and makes a single call. docs/KMS.md says so.

use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Quota settings in the data root's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// `current` (AWS's 2025–26 defaults) or `aws-2023` (the 2023 developer guide's).
    pub preset: String,
    /// Overrides the preset's symmetric cryptographic quota (requests per second);
    /// 0 turns throttling off.
    pub symmetric_rps: Option<u32>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            preset: "current".into(),
            symmetric_rps: None,
        }
    }
}

/// Regions in AWS's highest tier (2023 docs: 50,000 rps).
const TOP_TIER: &[&str] = &["us-east-1", "us-west-2", "eu-west-1"];
/// Regions the current docs list at 20,000 rps.
const TIER_20K: &[&str] = &[
    "us-east-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "eu-central-1",
    "eu-west-2",
];
/// Regions the 2023 docs list at 10,000 rps.
const TIER_10K_2023: &[&str] = &[
    "us-east-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "eu-central-1",
    "eu-west-2",
];

impl QuotaConfig {
    /// The shared symmetric cryptographic quota for `region`, in requests per second
    /// (None: unlimited).
    pub fn symmetric_rps(&self, region: &str) -> Result<Option<u32>> {
        if let Some(n) = self.symmetric_rps {
            return Ok((n > 0).then_some(n));
        }
        let n = match self.preset.as_str() {
            // The current page's top tier could not be read in any copy; the 2023
            // figure stands for it (shared/reference/kms-ebs.md §1.13).
            "current" if TOP_TIER.contains(&region) => 50_000,
            "current" if TIER_20K.contains(&region) => 20_000,
            "current" => 10_000,
            "aws-2023" if TOP_TIER.contains(&region) => 50_000,
            "aws-2023" if TIER_10K_2023.contains(&region) => 10_000,
            "aws-2023" => 5_500,
            other => {
                return Err(Error::environment(format!(
                    "unknown KMS quota preset '{other}' in config.json (use current or aws-2023)"
                )));
            }
        };
        Ok(Some(n))
    }
}

/// A token bucket holding at most one second of requests.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_second: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate_per_second),
            tokens: f64::from(rate_per_second),
            last: Instant::now(),
        }
    }

    /// Takes one token, or says ThrottlingException with AWS's message.
    pub fn take(&mut self) -> Result<()> {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> Result<()> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Throttling,
                "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.",
            ))
        }
    }
}

/// Retry policy: exponential backoff with full jitter, the AWS SDKs' "standard" mode.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        // The SDKs' standard mode: 3 attempts, 1 s base… ebsim's callers are local,
        // so the base is shorter; the shape (full jitter, capped) is the same.
        Backoff {
            max_attempts: 3,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based): uniform in [0, min(cap, base·2^attempt)).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let ceiling = exp.min(self.cap);
        let mut r = [0u8; 8];
        crate::crypto::random_fill(&mut r);
        let unit = (u64::from_le_bytes(r) >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(unit)
    }

    /// Runs `op`, retrying retryable errors (throttling) with backoff.
    pub fn run<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            match op() {
                Err(e) if e.kind().is_retryable() && attempt < self.max_attempts => {
                    std::thread::sleep(self.delay(attempt));
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

    #[test]
    fn bucket_allows_a_second_of_burst_then_throttles_then_refills() {
        let mut b = TokenBucket::new(10);
        let t0 = b.last;
        for _ in 0..10 {
            b.take_at(t0).unwrap();
        }
        let e = b.take_at(t0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Throttling);
        assert!(e.message().contains("exceeded the rate"));
        b.take_at(t0 + Duration::from_millis(100)).unwrap();
        assert!(b.take_at(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn presets_and_overrides() {
        let mut q = QuotaConfig::default();
        assert_eq!(q.symmetric_rps("us-east-2").unwrap(), Some(20_000));
        assert_eq!(q.symmetric_rps("sa-east-1").unwrap(), Some(10_000));
        q.preset = "aws-2023".into();
        assert_eq!(q.symmetric_rps("sa-east-1").unwrap(), Some(5_500));
        q.symmetric_rps = Some(0);
        assert_eq!(q.symmetric_rps("sa-east-1").unwrap(), None);
        q.symmetric_rps = None;
        q.preset = "bogus".into();
        assert!(q.symmetric_rps("us-east-1").is_err());
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let b = Backoff {
            max_attempts: 5,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
        };
        for attempt in 1..10 {
            assert!(b.delay(attempt) < Duration::from_millis(40));
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| b.delay(3)).collect();
        assert!(distinct.len() > 1, "jitter must vary the delay");
    }

    #[test]
    fn retry_gives_up_after_max_attempts_and_passes_other_errors_through() {
        let b = Backoff {
            max_attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let mut calls = 0;
        let r: Result<()> = b.run(|| {
            calls += 1;
            Err(Error::new(ErrorKind::Throttling, "slow down"))
        });
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Throttling);
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<()> = b.run(|| {
            calls += 1;
            Err(Error::new(ErrorKind::Disabled, "no"))
        });
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Disabled);
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = b.run(|| {
            calls += 1;
            if calls < 3 {
                Err(Error::new(ErrorKind::Throttling, "x"))
            } else {
                Ok(7)
            }
        });
        assert_eq!(r.unwrap(), 7);
    }
}
