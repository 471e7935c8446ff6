//! EC2's own calls in the region's audit log (`cloudtrail.jsonl`, shared with the
//! KMS: src/kms/audit.rs): one record per call, success or failure, with
//! `eventSource: ec2.amazonaws.com` (the EBS direct APIs: `ebs.amazonaws.com`,
//! ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock and PutSnapshotBlock as
//! data events, StartSnapshot and CompleteSnapshot as management events), and the request parameters and response
//! elements in EC2's CloudTrail shape: the Query API's lowerCamelCase members
//! (`volumeId`, `size`, `zone`, `tagSpecificationSet: {items: […]}`), times in
//! epoch milliseconds, the record's `requestID` repeated as `requestId` in the
//! response elements; reads (`Describe*`, `Get*`, `List*`) are `readOnly` with
//! null response elements; errors carry EC2's `Client.` prefix
//! (`Client.UnauthorizedOperation`, `Client.DryRunOperation`).
//!
//! The KMS calls an operation makes are recorded by the KMS (through EC2:
//! `invokedBy: ec2.amazonaws.com`), before the operation's own record.

use super::Ec2;
use super::model::*;
use crate::error::{Error, Result};
use crate::kms::access::Caller;
use crate::kms::audit::{self, Event, Source};
use serde_json::{Value, json};

/// What an operation tells its record while it runs.
#[derive(Default)]
pub(super) struct Trail {
    /// ARNs of the resources the call touched, as they become known.
    pub resources: Vec<String>,
}

fn read_only(name: &str) -> bool {
    ["Describe", "Get", "List"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// How EC2's records name an error: `Client.` for the caller's faults, `Server.`
/// for ebsim's own (I/O, a damaged data root).
fn error_code(e: &Error) -> String {
    let side = if e.kind().is_service_error() {
        "Client"
    } else {
        "Server"
    };
    format!("{side}.{}", e.code())
}

impl Ec2 {
    /// Runs one EC2 API call `name` for `caller` and appends its record:
    /// `request` is its `requestParameters`; `response` makes its
    /// `responseElements` from a success (without `requestId`, added here).
    pub(super) fn call<T>(
        &self,
        caller: &Caller,
        name: &'static str,
        request: Value,
        op: impl FnOnce(&mut Trail) -> Result<T>,
        response: impl FnOnce(&T) -> Value,
    ) -> Result<T> {
        let source = match name {
            "ListChangedBlocks" | "ListSnapshotBlocks" | "GetSnapshotBlock"
            | "PutSnapshotBlock" => audit::EBS_DATA,
            "StartSnapshot" | "CompleteSnapshot" => audit::EBS,
            _ => audit::EC2,
        };
        self.call_as(caller, name, source, request, op, response)
    }

    fn call_as<T>(
        &self,
        caller: &Caller,
        name: &'static str,
        source: Source,
        request: Value,
        op: impl FnOnce(&mut Trail) -> Result<T>,
        response: impl FnOnce(&T) -> Value,
    ) -> Result<T> {
        let mut trail = Trail::default();
        let result = op(&mut trail);
        let request_id = caller.request_id.unwrap_or_else(uuid::Uuid::new_v4);
        tracing::debug!(
            "ec2 {name} by {} in {}: {} (request {request_id})",
            caller.arn(),
            self.region(),
            match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            }
        );
        if !self.owner.is_ec2() {
            // RDS's storage: its API's records are RDS's (src/rds/), not EC2's.
            return result;
        }
        let reads = read_only(name);
        let elements = match &result {
            Ok(r) if !reads => with_request_id(response(r), &request_id.to_string()),
            _ => Value::Null,
        };
        // EC2's records prefix the side (`Client.`); the EBS direct APIs' do not.
        let code = result.as_ref().err().map(|e| {
            if source.event_source == audit::EBS.event_source {
                e.code().to_string()
            } else {
                error_code(e)
            }
        });
        let recorded = self.trail.record_service(
            source,
            request_id,
            code.as_deref(),
            &Event {
                time: self.kms.clock().now(),
                region: self.region(),
                caller,
                event_name: name,
                read_only: reads,
                request: drop_nulls(request),
                response: elements,
                resources: &trail.resources,
                error: result.as_ref().err(),
            },
        );
        if let Err(e) = recorded {
            // The call's outcome stands; say loudly that its record is missing.
            tracing::warn!("{e}");
        }
        result
    }
}

/// EC2's response elements name the request: `requestId` first, or, for the
/// APIs whose records wrap their members (`{"ModifyVolumeResponse": {…}}`),
/// first inside the wrapper with the API's XML namespace.
fn with_request_id(elements: Value, request_id: &str) -> Value {
    let Value::Object(m) = elements else {
        return json!({ "requestId": request_id });
    };
    if m.len() == 1
        && let Some((name, Value::Object(inner))) = m.iter().next()
        && name.ends_with("Response")
    {
        let mut out = serde_json::Map::new();
        out.insert("xmlns".into(), json!(XMLNS));
        out.insert("requestId".into(), json!(request_id));
        out.extend(inner.clone());
        return json!({ name.clone(): out });
    }
    let mut out = serde_json::Map::new();
    out.insert("requestId".into(), json!(request_id));
    out.extend(m);
    Value::Object(out)
}

/// The EC2 API version's XML namespace, which wrapped response elements carry.
const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// The request parameters of the APIs whose records wrap their members in
/// `{"<Api>Request": {…}}` with the API's PascalCase names (ModifyVolume and the
/// account's EBS settings); an empty request is `""`.
pub(super) fn wrapped_request(api: &str, members: Value) -> Value {
    let members = drop_nulls(members);
    let empty = members.as_object().is_none_or(|m| m.is_empty());
    json!({ format!("{api}Request"): if empty { json!("") } else { members } })
}

/// Request parameters list only what the request gave.
fn drop_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, drop_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Epoch milliseconds, as EC2's records give times.
pub(super) fn millis(t: &crate::clock::Timestamp) -> i64 {
    t.timestamp_millis()
}

/// `tagSpecificationSet` of a request.
pub(super) fn tag_specifications(resource_type: &str, tags: &[Tag]) -> Value {
    if tags.is_empty() {
        return Value::Null;
    }
    json!({ "items": [{ "resourceType": resource_type, "tags": tag_list(tags) }] })
}

fn tag_list(tags: &[Tag]) -> Vec<Value> {
    tags.iter()
        .map(|t| json!({ "key": t.key, "value": t.value }))
        .collect()
}

/// `tagSet` of a response.
fn tag_set(tags: &[Tag]) -> Value {
    if tags.is_empty() {
        Value::Null
    } else {
        json!({ "items": tag_list(tags) })
    }
}

/// `filterSet` of a Describe request.
pub(super) fn filter_set(filters: &[Filter]) -> Value {
    if filters.is_empty() {
        return Value::Null;
    }
    json!({ "items": filters.iter().map(|f| json!({
        "name": f.name,
        "valueSet": { "items": f.values.iter().map(|v| json!({ "value": v })).collect::<Vec<_>>() },
    })).collect::<Vec<_>>() })
}

/// An id list of a Describe request (`volumeSet`, `snapshotSet`).
pub(super) fn id_set(member: &str, ids: &[String]) -> Value {
    if ids.is_empty() {
        return Value::Null;
    }
    json!({ "items": ids.iter().map(|id| json!({ member: id })).collect::<Vec<_>>() })
}

pub(super) fn create_volume_request(req: &CreateVolumeRequest, zone: &str) -> Value {
    json!({
        "size": req.size,
        "sizeBytes": req.size_bytes,
        "zone": zone,
        "volumeType": req.volume_type,
        "iops": req.iops,
        "throughput": req.throughput,
        "encrypted": req.encrypted,
        "kmsKeyId": req.kms_key_id,
        "snapshotId": req.snapshot_id,
        "tagSpecificationSet": tag_specifications(
            "volume",
            &req.tag_specifications.iter().flat_map(|s| s.tags.clone()).collect::<Vec<_>>(),
        ),
        "dryRun": req.dry_run.then_some(true),
    })
}

/// CreateVolume's response elements.
pub(super) fn volume_response(v: &Volume) -> Value {
    drop_nulls(json!({
        "volumeId": v.volume_id,
        "size": v.size.to_string(),
        "zone": v.availability_zone,
        "status": v.state,
        "createTime": millis(&v.create_time.0),
        "volumeType": v.volume_type,
        "iops": v.iops,
        "throughput": v.throughput,
        "encrypted": v.encrypted,
        "masterEncryptionKeyId": v.kms_key_id,
        "snapshotId": (!v.snapshot_id.is_empty()).then_some(&v.snapshot_id),
        "tagSet": tag_set(&v.tags),
        "multiAttachEnabled": v.multi_attach_enabled,
    }))
}

/// CreateSnapshot's response elements (CopySnapshot answers with the id only).
pub(super) fn snapshot_response(s: &Snapshot) -> Value {
    drop_nulls(json!({
        "snapshotId": s.snapshot_id,
        "volumeId": s.volume_id,
        "status": s.state,
        "startTime": millis(&s.start_time.0),
        "progress": s.progress,
        "ownerId": s.owner_id,
        "volumeSize": s.volume_size.to_string(),
        "description": s.description,
        "encrypted": s.encrypted,
        "kmsKeyId": s.kms_key_id,
        "tagSet": tag_set(&s.tags),
    }))
}

/// AttachVolume's and DetachVolume's response elements.
pub(super) fn attachment_response(volume_id: &str, a: &AttachmentRecord, status: &str) -> Value {
    json!({
        "volumeId": volume_id,
        "instanceId": a.instance_id,
        "device": a.device,
        "status": status,
        "attachTime": millis(&a.attach_time),
        "deleteOnTermination": false,
    })
}

/// ModifyVolume's response elements (a wrapped API).
pub(super) fn modification_response(m: &VolumeModification) -> Value {
    drop_nulls(json!({ "ModifyVolumeResponse": {
        "volumeModification": {
            "volumeId": m.volume_id,
            "modificationState": m.modification_state,
            "targetSize": m.target_size,
            "targetIops": m.target_iops,
            "targetVolumeType": m.target_volume_type,
            "targetThroughput": m.target_throughput,
            "originalSize": m.original_size,
            "originalIops": m.original_iops,
            "originalVolumeType": m.original_volume_type,
            "originalThroughput": m.original_throughput,
            "progress": m.progress,
            "startTime": millis(&m.start_time.0),
        }
    }}))
}
