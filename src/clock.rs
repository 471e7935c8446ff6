//! The one clock every time-dependent rule reads: rotation schedules, deletion
//! windows, audit timestamps. It can be moved, so "a year passes" is a test.
//!
//! - [`Clock::system`] is wall-clock time plus a fixed offset. The CLI reads the
//!   offset from the data root's config (`ebsim clock advance`), so time moves for
//!   every later command on that data root.
//! - `EBSIM_NOW` (RFC 3339 or Unix seconds) pins the CLI's clock to one instant.
//! - [`Clock::manual`] is a clock that only moves when told, for tests.

use crate::error::{Error, Result};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Arc, Mutex};

pub type Timestamp = DateTime<Utc>;

#[derive(Clone, Debug)]
pub struct Clock {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    System { offset: TimeDelta },
    Manual(Arc<Mutex<Timestamp>>),
}

impl Clock {
    /// Wall-clock time moved by `offset`.
    pub fn system(offset: TimeDelta) -> Self {
        Clock {
            inner: Inner::System { offset },
        }
    }

    /// A clock standing at `start` that moves only through [`Clock::advance`] or [`Clock::set`].
    pub fn manual(start: Timestamp) -> Self {
        Clock {
            inner: Inner::Manual(Arc::new(Mutex::new(start))),
        }
    }

    pub fn now(&self) -> Timestamp {
        match &self.inner {
            Inner::System { offset } => Utc::now() + *offset,
            Inner::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves a manual clock forward (or a system clock's offset).
    pub fn advance(&mut self, by: TimeDelta) {
        match &mut self.inner {
            Inner::System { offset } => *offset += by,
            Inner::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()) += by,
        }
    }

    /// Sets a manual clock to `at`; for a system clock, sets the offset so that now is `at`.
    pub fn set(&mut self, at: Timestamp) {
        match &mut self.inner {
            Inner::System { offset } => *offset = at - Utc::now(),
            Inner::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()) = at,
        }
    }
}

/// Parses a time the way the AWS CLI accepts timestamps: RFC 3339 / ISO 8601
/// (`2026-01-01T00:00:00Z`, `2026-01-01`), or Unix seconds.
pub fn parse_time(s: &str) -> Result<Timestamp> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        let whole = secs.floor();
        let out_of_range = || Error::usage(format!("time out of range: {s}"));
        // chrono's range is far inside ±2⁶³ seconds; outside ±2⁶², or NaN, no time.
        if !(-4.6e18..4.6e18).contains(&whole) {
            return Err(out_of_range());
        }
        // In range (checked above) and a fraction of a second below 10⁹ ns.
        #[allow(clippy::cast_possible_truncation)]
        let (whole, nanos) = (whole as i64, ((secs - whole) * 1e9) as u32);
        return DateTime::from_timestamp(whole, nanos).ok_or_else(out_of_range);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(Error::usage(format!(
        "Invalid timestamp value: {s} (expected ISO 8601 such as 2026-01-31T12:00:00Z, or Unix seconds)"
    )))
}

/// AWS's epoch-seconds number for a timestamp (what the JSON wire protocol sends).
pub fn epoch_seconds(t: &Timestamp) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0
}

/// The AWS CLI v2's timestamp rendering: ISO 8601 with microseconds and `+00:00`.
pub fn iso8601(t: &Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// CloudTrail's `eventTime` rendering: `2026-01-31T12:00:00Z`.
pub fn cloudtrail_time(t: &Timestamp) -> String {
    // `%Y-%m-%dT%H:%M:%SZ`, through chrono's RFC 3339 writer rather than a
    // strftime string parsed on every call (every audit record has one).
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = parse_time("2026-01-01T00:00:00Z").unwrap();
        let mut c = Clock::manual(start);
        assert_eq!(c.now(), start);
        c.advance(TimeDelta::days(365));
        assert_eq!(c.now(), parse_time("2027-01-01").unwrap());
    }

    #[test]
    fn parses_the_forms_the_aws_cli_accepts() {
        let want = parse_time("2026-03-04T05:06:07Z").unwrap();
        assert_eq!(parse_time("2026-03-04T05:06:07").unwrap(), want);
        assert_eq!(parse_time(&want.timestamp().to_string()).unwrap(), want);
        assert_eq!(parse_time("2026-03-04").unwrap().timestamp() % 86400, 0);
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn renders_like_the_aws_cli_and_cloudtrail() {
        let t = parse_time("2026-03-04T05:06:07.5Z").unwrap();
        assert_eq!(iso8601(&t), "2026-03-04T05:06:07.500000+00:00");
        assert_eq!(cloudtrail_time(&t), "2026-03-04T05:06:07Z");
        assert_eq!(epoch_seconds(&t), t.timestamp() as f64 + 0.5);
    }
}
