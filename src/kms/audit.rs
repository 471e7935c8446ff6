//! The audit log: one CloudTrail-shaped JSON record per KMS call, success or
//! failure, appended to `<region>/cloudtrail.jsonl`; and `LookupEvents` over it.
//!
//! Records carry the request parameters as CloudTrail does (encryption context in
//! the clear, never plaintext or key material: [`super::api::Audited`] sees to
//! that). Each record is written with one `write` on an `O_APPEND` file, so
//! concurrent processes interleave whole lines. The log is not fsynced per record;
//! CloudTrail itself delivers events minutes late.

use super::access::Caller;
use crate::clock::{Timestamp, cloudtrail_time, iso8601, parse_time};
use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// What one call contributes to its record.
pub struct Event<'a> {
    pub time: Timestamp,
    pub region: &'a str,
    pub caller: &'a Caller,
    pub event_name: &'a str,
    pub read_only: bool,
    pub request: Value,
    pub response: Value,
    pub resources: &'a [String],
    pub error: Option<&'a Error>,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open the audit log {}", path.display()), e))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self, ev: &Event<'_>) -> Result<()> {
        let c = ev.caller;
        let invoked_by = c.via_service.as_deref().map(|via| {
            let service = via.split('.').next().unwrap_or(via);
            format!("{service}.amazonaws.com")
        });
        let rec = Record {
            event_version: "1.08",
            user_identity: Identity {
                kind: c.identity_type(),
                principal_id: c.principal_id.as_deref().unwrap_or(c.account_id()),
                arn: c.arn(),
                account_id: c.account_id(),
                user_name: matches!(c.principal, crate::iam::Principal::User { .. })
                    .then(|| c.user_name()),
                invoked_by: invoked_by.as_deref(),
            },
            event_time: cloudtrail_time(&ev.time),
            event_source: "kms.amazonaws.com",
            event_name: ev.event_name,
            aws_region: ev.region,
            source_ip_address: &c.source_ip,
            user_agent: &c.user_agent,
            error_code: ev.error.map(|e| e.code()),
            error_message: ev.error.map(|e| e.message()),
            request_parameters: &ev.request,
            response_elements: &ev.response,
            request_id: uuid::Uuid::new_v4(),
            event_id: uuid::Uuid::new_v4(),
            read_only: ev.read_only,
            resources: ev
                .resources
                .iter()
                .map(|arn| Resource {
                    account_id: arn.split(':').nth(4).unwrap_or_default(),
                    kind: "AWS::KMS::Key",
                    arn,
                })
                .collect(),
            event_type: "AwsApiCall",
            management_event: true,
            recipient_account_id: c.account_id(),
            event_category: "Management",
        };
        let mut line = Vec::with_capacity(1024);
        serde_json::to_writer(&mut line, &rec).expect("records serialize");
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line).map_err(|e| {
            Error::io(
                format!("cannot append to the audit log {}", self.path.display()),
                e,
            )
        })
    }
}

/// One CloudTrail record, field for field (serialized in this order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    event_version: &'static str,
    user_identity: Identity<'a>,
    event_time: String,
    event_source: &'static str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'a str,
    user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    request_parameters: &'a Value,
    response_elements: &'a Value,
    #[serde(rename = "requestID")]
    request_id: uuid::Uuid,
    #[serde(rename = "eventID")]
    event_id: uuid::Uuid,
    read_only: bool,
    resources: Vec<Resource<'a>>,
    event_type: &'static str,
    management_event: bool,
    recipient_account_id: &'a str,
    event_category: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    principal_id: &'a str,
    arn: &'a str,
    account_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoked_by: Option<&'a str>,
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "accountId")]
    account_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ARN")]
    arn: &'a str,
}

/// `LookupAttribute` of CloudTrail's LookupEvents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LookupAttribute {
    pub attribute_key: String,
    pub attribute_value: String,
}

pub const LOOKUP_KEYS: &[&str] = &[
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
];

#[derive(Debug, Clone, Default)]
pub struct LookupQuery {
    pub attributes: Vec<LookupAttribute>,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

fn matches(rec: &Value, attr: &LookupAttribute) -> bool {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let want = attr.attribute_value.as_str();
    match attr.attribute_key.as_str() {
        "EventId" => s(&rec["eventID"]).as_deref() == Some(want),
        "EventName" => s(&rec["eventName"]).as_deref() == Some(want),
        "ReadOnly" => rec["readOnly"].as_bool().map(|b| b.to_string()).as_deref() == Some(want),
        "Username" => username(rec) == want,
        "EventSource" => s(&rec["eventSource"]).as_deref() == Some(want),
        "AccessKeyId" => s(&rec["userIdentity"]["accessKeyId"]).as_deref() == Some(want),
        "ResourceType" => rec["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["type"] == want)),
        "ResourceName" => rec["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["ARN"] == want)),
        _ => false,
    }
}

fn username(rec: &Value) -> String {
    let id = &rec["userIdentity"];
    if id["type"] == "Root" {
        "root".into()
    } else if let Some(u) = id["userName"].as_str() {
        u.to_string()
    } else {
        id["arn"]
            .as_str()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or_default()
            .to_string()
    }
}

/// CloudTrail `LookupEvents` over one region's log: newest first, at most one
/// attribute, a time range, `MaxResults` 1–50 (default 50) and a `NextToken`.
pub fn lookup(path: &Path, q: &LookupQuery) -> Result<Value> {
    if q.attributes.len() > 1 {
        return Err(Error::new(
            ErrorKind::Validation,
            "LookupAttributes: only one lookup attribute may be specified.",
        )
        .with_cloudtrail("InvalidLookupAttributesException"));
    }
    if let Some(a) = q.attributes.first()
        && !LOOKUP_KEYS.contains(&a.attribute_key.as_str())
    {
        return Err(Error::new(
            ErrorKind::Validation,
            format!(
                "1 validation error detected: Value '{}' at 'lookupAttributes.1.member.attributeKey' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                a.attribute_key,
                LOOKUP_KEYS.join(", ")
            ),
        ));
    }
    if let (Some(s), Some(e)) = (q.start_time, q.end_time)
        && s > e
    {
        return Err(Error::new(
            ErrorKind::Validation,
            "Start time must be earlier than end time.",
        )
        .with_cloudtrail("InvalidTimeRangeException"));
    }
    let max = q.max_results.unwrap_or(50);
    if !(1..=50).contains(&max) {
        return Err(Error::validation(
            max,
            "maxResults",
            "Member must have value between 1 and 50",
        ));
    }
    let skip = match &q.next_token {
        None => 0,
        Some(t) => t.parse::<usize>().map_err(|_| {
            Error::new(ErrorKind::Validation, "Invalid NextToken.")
                .with_cloudtrail("InvalidNextTokenException")
        })?,
    };
    let mut records = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            for line in std::io::BufReader::new(f).lines() {
                let line =
                    line.map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                // A torn last line (a crash mid-append) is skipped, not fatal.
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    records.push(v);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
    // Newest first by event time; records with the same time, latest written first.
    // (The clock can be moved, so file order alone is not time order.)
    let mut selected: Vec<(Option<Timestamp>, Value)> = records
        .into_iter()
        .rev()
        .map(|r| (r["eventTime"].as_str().and_then(|t| parse_time(t).ok()), r))
        .filter(|(t, r)| {
            q.start_time.is_none_or(|s| t.is_some_and(|t| t >= s))
                && q.end_time.is_none_or(|e| t.is_some_and(|t| t <= e))
                && q.attributes.iter().all(|a| matches(r, a))
        })
        .collect();
    selected.sort_by_key(|r| std::cmp::Reverse(r.0));
    let selected: Vec<Value> = selected.into_iter().map(|(_, r)| r).collect();
    let page: Vec<Value> = selected
        .iter()
        .skip(skip)
        .take(max as usize)
        .map(|r| {
            let t = r["eventTime"].as_str().and_then(|t| parse_time(t).ok());
            json!({
                "EventId": r["eventID"],
                "EventName": r["eventName"],
                "ReadOnly": r["readOnly"].as_bool().unwrap_or(false).to_string(),
                "EventTime": t.map(|t| iso8601(&t)),
                "EventSource": r["eventSource"],
                "Username": username(r),
                "Resources": r["resources"].as_array().map(|rs| rs.iter().map(|x| json!({
                    "ResourceType": x["type"], "ResourceName": x["ARN"]
                })).collect::<Vec<_>>()).unwrap_or_default(),
                "CloudTrailEvent": r.to_string(),
            })
        })
        .collect();
    let mut out = json!({ "Events": page });
    if skip + (max as usize) < selected.len() {
        out["NextToken"] = json!((skip + max as usize).to_string());
    }
    Ok(out)
}

trait CloudTrailCode {
    fn with_cloudtrail(self, code: &'static str) -> Self;
}

impl CloudTrailCode for Error {
    /// CloudTrail names its validation errors; ebsim keeps the common kind and
    /// puts CloudTrail's name in the message.
    fn with_cloudtrail(self, code: &'static str) -> Self {
        Error::new(self.kind(), format!("{} ({code})", self.message()))
    }
}
