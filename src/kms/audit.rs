//! The audit log: one CloudTrail-shaped JSON record per API call, success or
//! failure, appended to `<region>/cloudtrail.jsonl`; and `LookupEvents` over it.
//!
//! The KMS writes its records here ([`AuditLog::record`]); so does the volume
//! service for EC2's own calls (`ec2.amazonaws.com`) and the EBS direct API
//! (`ebs.amazonaws.com`, data events) through [`AuditLog::record_service`]: one
//! file, one record format, the event source telling them apart.
//!
//! Records carry the request parameters as CloudTrail does (encryption context in
//! the clear, never plaintext or key material: [`super::api::Audited`] sees to
//! that). Each record is written with one `write` on an `O_APPEND` file, so
//! concurrent processes interleave whole lines. The log is not fsynced per record;
//! CloudTrail itself delivers events minutes late.
//!
//! A thread may hold its records to write them together ([`hold_on_this_thread`],
//! [`write_held`]): `ebsim serve`'s workers do, and write what they hold before
//! any answer leaves, so a record is in the file before its caller can see the
//! answer, and a turn's records cost one `write` per file instead of one each.

use super::access::Caller;
use crate::clock::{Timestamp, cloudtrail_time, iso8601, parse_time};
use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct AuditLog {
    log: Arc<Log>,
}

/// The open file, shared with the records a thread holds for it, and its
/// generation: [`AuditLog::clear`] (a reset) starts a new one, and records held
/// from before it are dropped rather than written into the emptied log.
struct Log {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// Moved only under `file`'s lock; read without it where a record is made
    /// (a reset never runs beside a call: the server's gate).
    generation: AtomicU64,
}

impl Log {
    /// Appends whole lines with one `write` (O_APPEND: never interleaved
    /// with another writer's lines), unless they were made in an earlier
    /// generation of the log (before a reset emptied it).
    fn append(&self, generation: Option<u64>, lines: &[u8]) -> Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if generation.is_some_and(|g| g != self.generation.load(Ordering::Acquire)) {
            return Ok(());
        }
        f.write_all(lines).map_err(|e| {
            Error::io(
                format!("cannot append to the audit log {}", self.path.display()),
                e,
            )
        })
    }
}

/// The records a thread holds, per file; `None`: it writes each at once.
/// Whatever is still held when the thread ends is written then.
struct Held(RefCell<Option<Vec<Lines>>>);

/// Records held for one log and generation: whole lines, in the order they
/// were made.
struct Lines {
    log: Arc<Log>,
    generation: u64,
    lines: Vec<u8>,
}

fn write_all_held(held: Vec<Lines>) {
    for l in held {
        if let Err(e) = l.log.append(Some(l.generation), &l.lines) {
            tracing::warn!("{e}");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        write_all_held(self.0.get_mut().take().unwrap_or_default());
    }
}

thread_local! {
    static HELD: Held = const { Held(RefCell::new(None)) };
}

/// From now on this thread holds its records until [`write_held`].
pub fn hold_on_this_thread() {
    HELD.with(|h| {
        let mut h = h.0.borrow_mut();
        if h.is_none() {
            *h = Some(Vec::new());
        }
    });
}

/// Writes the records this thread holds, one `write` per file. A failure is
/// logged, as for a record written at once (the calls' outcomes stand).
pub fn write_held() {
    let held = HELD
        .try_with(|h| h.0.borrow_mut().as_mut().map(std::mem::take))
        .ok()
        .flatten();
    write_all_held(held.unwrap_or_default());
}

/// Writes what this thread holds and from now on writes each record at once.
pub fn stop_holding_on_this_thread() {
    let held = HELD.try_with(|h| h.0.borrow_mut().take()).ok().flatten();
    write_all_held(held.unwrap_or_default());
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
    /// ARNs of the resources the call touched (KMS keys, EC2 volumes, snapshots,
    /// instances); each record's `type` follows from its ARN.
    pub resources: &'a [String],
    pub error: Option<&'a Error>,
}

/// The service a record comes from, and CloudTrail's category for its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// `eventSource`: `kms.amazonaws.com`, `ec2.amazonaws.com`, `ebs.amazonaws.com`.
    pub event_source: &'static str,
    /// Management events are what LookupEvents (CloudTrail's Event history) shows;
    /// data events (the EBS direct API's block calls) are only in the log.
    pub management: bool,
}

pub const KMS: Source = Source {
    event_source: "kms.amazonaws.com",
    management: true,
};
pub const EC2: Source = Source {
    event_source: "ec2.amazonaws.com",
    management: true,
};
/// RDS's API calls (src/rds/).
pub const RDS: Source = Source {
    event_source: "rds.amazonaws.com",
    management: true,
};
/// The EBS direct APIs' StartSnapshot and CompleteSnapshot are management events.
pub const EBS: Source = Source {
    event_source: "ebs.amazonaws.com",
    management: true,
};
/// The EBS direct API's ListChangedBlocks, ListSnapshotBlocks, GetSnapshotBlock
/// and PutSnapshotBlock are data events.
pub const EBS_DATA: Source = Source {
    event_source: "ebs.amazonaws.com",
    management: false,
};

impl AuditLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open the audit log {}", path.display()), e))?;
        Ok(AuditLog {
            log: Arc::new(Log {
                path: path.to_path_buf(),
                file: Mutex::new(file),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// Empties the log (its writers append with O_APPEND, so they go on at the
    /// new end).
    pub fn clear(&self) -> Result<()> {
        let file = self.log.file.lock().unwrap_or_else(|p| p.into_inner());
        // Records a thread still holds are from before the reset: dropped.
        self.log.generation.fetch_add(1, Ordering::AcqRel);
        file.set_len(0)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io_file(&self.log.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.log.path
    }

    /// Appends a KMS call's record.
    pub fn record(&self, ev: &Event<'_>) -> Result<()> {
        let id = ev.caller.request_id.unwrap_or_else(uuid::Uuid::new_v4);
        self.record_service(KMS, id, None, ev)
    }

    /// Appends the record of a call to `source`. `request_id` is the record's
    /// `requestID` (EC2 repeats it in its response elements); `error_code`, when
    /// given, is how this service's records name the error (EC2 writes
    /// `Client.UnauthorizedOperation` where its API says `UnauthorizedOperation`).
    pub fn record_service(
        &self,
        source: Source,
        request_id: uuid::Uuid,
        error_code: Option<&str>,
        ev: &Event<'_>,
    ) -> Result<()> {
        let c = ev.caller;
        let event_time = cloudtrail_time(&ev.time);
        let rec = Record {
            event_version: "1.08",
            user_identity: identity(c, &event_time),
            event_time: event_time.clone(),
            event_source: source.event_source,
            event_name: ev.event_name,
            aws_region: ev.region,
            source_ip_address: &c.source_ip,
            user_agent: &c.user_agent,
            error_code: ev.error.map(|e| error_code.unwrap_or(e.code())),
            error_message: ev.error.map(|e| e.message()),
            request_parameters: &ev.request,
            response_elements: &ev.response,
            request_id,
            event_id: uuid::Uuid::new_v4(),
            read_only: ev.read_only,
            resources: ev
                .resources
                .iter()
                .map(|arn| Resource {
                    // Snapshot ARNs name no account: a snapshot is the caller's.
                    account_id: match arn.split(':').nth(4) {
                        Some(a) if !a.is_empty() => a,
                        _ => c.account_id(),
                    },
                    kind: resource_type(arn),
                    arn,
                })
                .collect(),
            event_type: "AwsApiCall",
            management_event: source.management,
            recipient_account_id: c.account_id(),
            event_category: if source.management {
                "Management"
            } else {
                "Data"
            },
        };
        let mut line = Vec::with_capacity(1024);
        serde_json::to_writer(&mut line, &rec).expect("records serialize");
        line.push(b'\n');
        // Held by this thread (module docs), or written now (also while the
        // thread is ending and its holdings are gone).
        let mut line = Some(line);
        let _ = HELD.try_with(|h| {
            if let Some(held) = h.0.borrow_mut().as_mut()
                && let Some(line) = line.take()
            {
                let generation = self.log.generation.load(Ordering::Acquire);
                match held
                    .iter_mut()
                    .find(|l| Arc::ptr_eq(&l.log, &self.log) && l.generation == generation)
                {
                    Some(l) => l.lines.extend_from_slice(&line),
                    None => held.push(Lines {
                        log: self.log.clone(),
                        generation,
                        lines: line,
                    }),
                }
            }
        });
        let Some(line) = line else {
            return Ok(());
        };
        self.log.append(None, &line)
    }
}

/// CloudTrail's `resources[].type` for an ARN.
fn resource_type(arn: &str) -> &'static str {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    match (arn.split(':').nth(2), resource.split(['/', ':']).next()) {
        (Some("ec2"), Some("volume")) => "AWS::EC2::Volume",
        (Some("rds"), Some("db")) => "AWS::RDS::DBInstance",
        (Some("rds"), Some("snapshot")) => "AWS::RDS::DBSnapshot",
        (Some("ec2"), Some("snapshot")) => "AWS::EC2::Snapshot",
        (Some("ec2"), Some("instance")) => "AWS::EC2::Instance",
        _ => "AWS::KMS::Key",
    }
}

/// `userIdentity` for a caller. EC2's infrastructure acting for an instance
/// (`ACCOUNT:aws:ec2-infrastructure:i-…`, the grantee of an attachment's grant)
/// appears as CloudTrail shows it: an `AssumedRole` session of the role
/// `aws:ec2-infrastructure` named after the instance
/// (`arn:aws:sts::ACCOUNT:assumed-role/aws:ec2-infrastructure/i-…`), with its
/// session issuer; the grantee principal is its `principalId`.
fn identity<'a>(c: &'a Caller, event_time: &str) -> Identity<'a> {
    if let crate::iam::Principal::Service { name, account } = &c.principal
        && let [acct, "aws", role, session] = name.split(':').collect::<Vec<_>>()[..]
        && acct == account
        && role.ends_with("-infrastructure")
    {
        return Identity {
            kind: "AssumedRole".into(),
            principal_id: name.into(),
            arn: format!("arn:aws:sts::{account}:assumed-role/aws:{role}/{session}").into(),
            account_id: account.into(),
            user_name: None,
            session_context: Some(json!({
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": format!("{account}:aws:{role}"),
                    "arn": format!("arn:aws:iam::{account}:role/aws:{role}"),
                    "accountId": account,
                    "userName": format!("aws:{role}"),
                },
                "attributes": {
                    "creationDate": event_time,
                    "mfaAuthenticated": "false",
                },
            })),
            invoked_by: None,
        };
    }
    Identity {
        kind: c.identity_type().into(),
        principal_id: c
            .principal_id
            .as_deref()
            .unwrap_or_else(|| c.account_id())
            .into(),
        arn: c.arn().into(),
        account_id: c.account_id().into(),
        user_name: matches!(c.principal, crate::iam::Principal::User { .. }).then(|| c.user_name()),
        session_context: None,
        invoked_by: c.via_service.as_deref().map(|via| {
            let service = via.split('.').next().unwrap_or(via);
            format!("{service}.amazonaws.com")
        }),
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
    kind: Cow<'a, str>,
    principal_id: Cow<'a, str>,
    arn: Cow<'a, str>,
    account_id: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_context: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoked_by: Option<String>,
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
        "ResourceName" => rec["resources"].as_array().is_some_and(|r| {
            r.iter()
                .any(|x| x["ARN"] == want || resource_name(x) == want)
        }),
        _ => false,
    }
}

/// LookupEvents' `ResourceName` of a record's resource: the ARN of a KMS key, the
/// id of an EC2 resource (`vol-…`, `snap-…`, `i-…`), as CloudTrail lists them.
/// A lookup by ResourceName matches either.
fn resource_name(x: &Value) -> String {
    let arn = x["ARN"].as_str().unwrap_or_default();
    if x["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("AWS::EC2::"))
    {
        arn.rsplit('/').next().unwrap_or(arn).to_string()
    } else {
        arn.to_string()
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

/// CloudTrail `LookupEvents` over one region's log: management events (data
/// events are not in CloudTrail's Event history), newest first, at most one
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
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["eventCategory"] != "Data"
                {
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
                    "ResourceType": x["type"], "ResourceName": resource_name(x)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(caller: &'a Caller, name: &'a str) -> Event<'a> {
        Event {
            time: crate::clock::parse_time("2026-03-04T05:06:07Z").unwrap(),
            region: "us-east-1",
            caller,
            event_name: name,
            read_only: true,
            request: json!({"keyId": "alias/x"}),
            response: Value::Null,
            resources: &[],
            error: None,
        }
    }

    fn names(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("whole JSON lines");
                v["eventName"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn a_holding_thread_writes_its_records_together_and_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloudtrail.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let caller = Caller::account_root("111122223333");

        // A thread that does not hold writes each record at once.
        log.record(&event(&caller, "Encrypt")).unwrap();
        assert_eq!(names(&path), ["Encrypt"]);

        // A holding thread: nothing reaches the file until write_held, then
        // every record does, in order, as whole lines.
        let held = log.clone();
        std::thread::spawn(move || {
            hold_on_this_thread();
            let caller = Caller::account_root("111122223333");
            held.record(&event(&caller, "Decrypt")).unwrap();
            held.record(&event(&caller, "GenerateDataKey")).unwrap();
            assert_eq!(names(held.path()), ["Encrypt"], "held records were written");
            write_held();
            assert_eq!(
                names(held.path()),
                ["Encrypt", "Decrypt", "GenerateDataKey"]
            );
            // Held again, and the thread ends before writing: its records are
            // written as it ends.
            held.record(&event(&caller, "ReEncrypt")).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(
            names(&path),
            ["Encrypt", "Decrypt", "GenerateDataKey", "ReEncrypt"]
        );

        // This thread still writes at once.
        log.record(&event(&caller, "DescribeKey")).unwrap();
        assert_eq!(names(&path).len(), 5);
    }

    #[test]
    fn records_held_across_a_reset_are_dropped_and_later_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloudtrail.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let held = log.clone();
        std::thread::spawn(move || {
            hold_on_this_thread();
            let caller = Caller::account_root("111122223333");
            held.record(&event(&caller, "Encrypt")).unwrap();
            // A reset empties the log while the record is held.
            held.clear().unwrap();
            held.record(&event(&caller, "Decrypt")).unwrap();
            write_held();
            assert_eq!(
                names(held.path()),
                ["Decrypt"],
                "a record from before the reset"
            );
            // Stopped holding: written at once, and nothing is held any more.
            held.record(&event(&caller, "Encrypt")).unwrap();
            stop_holding_on_this_thread();
            held.record(&event(&caller, "DescribeKey")).unwrap();
            assert_eq!(names(held.path()), ["Decrypt", "Encrypt", "DescribeKey"]);
        })
        .join()
        .unwrap();
    }
}
