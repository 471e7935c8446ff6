//! CloudTrail's operation table: LookupEvents over a region's audit log (the
//! KMS's and EC2's records, src/kms/audit.rs). Requests in AWS's member names;
//! timestamps as the JSON protocol sends them (epoch seconds).

use super::{serialization_error, unknown_operation};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::kms::audit::{LookupAttribute, LookupQuery, lookup};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::path::Path;

/// LookupEvents' request (`LookupAttributes`, `StartTime`, `EndTime`,
/// `MaxResults`, `NextToken`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LookupEventsRequest {
    #[serde(default)]
    pub lookup_attributes: Vec<LookupAttribute>,
    #[serde(default, deserialize_with = "epoch_seconds")]
    pub start_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "epoch_seconds")]
    pub end_time: Option<Timestamp>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

fn epoch_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let Some(secs) = Option::<f64>::deserialize(d)? else {
        return Ok(None);
    };
    // Whole milliseconds are what CloudTrail keeps; anything outside chrono's
    // range is not a time.
    let ms = (secs * 1000.0).round();
    if !ms.is_finite() || ms.abs() > 8.2e15 {
        return Err(serde::de::Error::custom(format!(
            "{secs} is not a timestamp"
        )));
    }
    #[allow(clippy::cast_possible_truncation)] // checked finite and in range above
    let ms = ms as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{secs} is not a timestamp")))
}

/// One CloudTrail request.
#[derive(Debug, Clone)]
pub enum CloudTrailRequest {
    LookupEvents(LookupEventsRequest),
}

/// Every CloudTrail operation ebsim serves.
pub const OPERATIONS: &[&str] = &["LookupEvents"];

impl CloudTrailRequest {
    pub fn name(&self) -> &'static str {
        match self {
            CloudTrailRequest::LookupEvents(_) => "LookupEvents",
        }
    }

    /// Reads a request as AWS's JSON protocol carries it
    /// (`com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Name>`).
    pub fn from_json(name: &str, body: Value) -> Result<Self> {
        match name {
            "LookupEvents" => serde_json::from_value(body)
                .map(CloudTrailRequest::LookupEvents)
                .map_err(|e| serialization_error(name, e)),
            _ => Err(unknown_operation("CloudTrail", name)),
        }
    }

    /// Runs it over the region's audit log at `log`.
    pub(super) fn run(self, log: &Path) -> Result<Value> {
        match self {
            CloudTrailRequest::LookupEvents(r) => lookup(
                log,
                &LookupQuery {
                    attributes: r.lookup_attributes,
                    start_time: r.start_time,
                    end_time: r.end_time,
                    max_results: r.max_results,
                    next_token: r.next_token,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_events_reads_members_and_epoch_seconds() {
        let r = CloudTrailRequest::from_json(
            "LookupEvents",
            serde_json::json!({
                "LookupAttributes": [{"AttributeKey": "EventSource", "AttributeValue": "ec2.amazonaws.com"}],
                "StartTime": 1_700_000_000.5,
                "MaxResults": 5
            }),
        )
        .unwrap();
        let CloudTrailRequest::LookupEvents(q) = r;
        assert_eq!(q.lookup_attributes[0].attribute_key, "EventSource");
        assert_eq!(q.start_time.unwrap().timestamp_millis(), 1_700_000_000_500);
        assert_eq!((q.end_time, q.max_results), (None, Some(5)));
        let e =
            CloudTrailRequest::from_json("LookupEvents", serde_json::json!({"StartTime": 1e300}))
                .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Serialization);
        let e =
            CloudTrailRequest::from_json("PutEventSelectors", serde_json::json!({})).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::UnknownOperation);
    }
}
