//! AWS JSON 1.1, the protocol of KMS and CloudTrail: `POST /` with
//! `X-Amz-Target: <prefix>.<Operation>` and a JSON body in the model's member
//! names; the answer is the output shape as JSON (`application/x-amz-json-1.1`),
//! blobs base64, timestamps epoch seconds; an error is
//! `{"__type": "<Code>", "message": "…"}`.
//!
//! What this file adds to the service layer's tables: the target prefixes, the
//! members each operation requires (botocore's models, as a table here), and the
//! timestamp members, which the service layer renders as the CLI prints them
//! (ISO 8601) and the wire sends as numbers.

use crate::error::{Error, ErrorKind};
use crate::service::cloudtrail::CloudTrailRequest;
use crate::service::kms::KmsRequest;
use crate::service::{RequestContext, Services};
use serde_json::Value;

/// KMS's target prefix.
pub const KMS_PREFIX: &str = "TrentService";
/// CloudTrail's target prefix.
pub const CLOUDTRAIL_PREFIX: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101";

/// The signing name of the service a target prefix belongs to.
pub fn service_of(prefix: &str) -> Option<&'static str> {
    match prefix {
        KMS_PREFIX => Some("kms"),
        CLOUDTRAIL_PREFIX => Some("cloudtrail"),
        _ => None,
    }
}

/// KMS operations that read the key cache and answer without writing a store or
/// waiting on the disk: the data plane and the key's description. The server
/// runs them on the connection's own thread (http.rs); the rest, which commit
/// transactions (fsync) or read files, go to the blocking pool.
const KMS_SHORT: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateRandom",
    "DescribeKey",
];

/// Whether `target` (an `X-Amz-Target` value) names one of [`KMS_SHORT`].
pub fn is_short(target: &str) -> bool {
    target
        .strip_prefix(KMS_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|op| KMS_SHORT.contains(&op))
}

/// The members each KMS operation requires (the KMS model's `required` lists).
const KMS_REQUIRED: &[(&str, &[&str])] = &[
    ("DescribeKey", &["KeyId"]),
    ("EnableKey", &["KeyId"]),
    ("DisableKey", &["KeyId"]),
    ("ScheduleKeyDeletion", &["KeyId"]),
    ("CancelKeyDeletion", &["KeyId"]),
    ("UpdateKeyDescription", &["KeyId", "Description"]),
    ("CreateAlias", &["AliasName", "TargetKeyId"]),
    ("UpdateAlias", &["AliasName", "TargetKeyId"]),
    ("DeleteAlias", &["AliasName"]),
    ("TagResource", &["KeyId", "Tags"]),
    ("UntagResource", &["KeyId", "TagKeys"]),
    ("ListResourceTags", &["KeyId"]),
    ("EnableKeyRotation", &["KeyId"]),
    ("DisableKeyRotation", &["KeyId"]),
    ("GetKeyRotationStatus", &["KeyId"]),
    ("RotateKeyOnDemand", &["KeyId"]),
    ("ListKeyRotations", &["KeyId"]),
    ("PutKeyPolicy", &["KeyId", "Policy"]),
    ("GetKeyPolicy", &["KeyId"]),
    ("ListKeyPolicies", &["KeyId"]),
    ("CreateGrant", &["KeyId", "GranteePrincipal", "Operations"]),
    ("ListGrants", &["KeyId"]),
    ("ListRetirableGrants", &["RetiringPrincipal"]),
    ("RevokeGrant", &["KeyId", "GrantId"]),
    ("Encrypt", &["KeyId", "Plaintext"]),
    ("ReEncrypt", &["DestinationKeyId"]),
    ("GenerateDataKey", &["KeyId"]),
    ("GenerateDataKeyWithoutPlaintext", &["KeyId"]),
];

/// Output members whose type is `timestamp` in the KMS and CloudTrail models.
const TIMESTAMP_MEMBERS: &[&str] = &[
    "CreationDate",
    "DeletionDate",
    "KeyCreationDate",
    "LastUpdatedDate",
    "NextRotationDate",
    "OnDemandRotationStartDate",
    "ParametersValidTo",
    "RotationDate",
    "ValidTo",
    "EventTime",
    "StartTime",
    "EndTime",
];

/// AWS's message for missing members: `1 validation error detected: Value null at
/// 'keyId' failed to satisfy constraint: Member must not be null` (member names
/// in lower camel case; several joined with `; `).
fn check_required(op: &str, body: &Value) -> Result<(), Error> {
    let Some((_, required)) = KMS_REQUIRED.iter().find(|(o, _)| *o == op) else {
        return Ok(());
    };
    let missing: Vec<String> = required
        .iter()
        .filter(|m| body.get(**m).is_none_or(Value::is_null))
        .map(|m| {
            let mut c = m.chars();
            let first = c.next().map(|f| f.to_ascii_lowercase()).unwrap_or_default();
            format!(
                "Value null at '{first}{}' failed to satisfy constraint: Member must not be null",
                c.as_str()
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let n = missing.len();
    Err(Error::new(
        ErrorKind::Validation,
        format!(
            "{n} validation error{} detected: {}",
            if n == 1 { "" } else { "s" },
            missing.join("; ")
        ),
    ))
}

/// Rewrites timestamp members (ISO 8601 strings from the service layer) as epoch
/// seconds, at any depth.
pub fn wire_timestamps(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if TIMESTAMP_MEMBERS.contains(&k.as_str())
                    && let Value::String(s) = v
                    && let Ok(t) = crate::clock::parse_time(s)
                {
                    let secs = crate::clock::epoch_seconds(&t);
                    *v = serde_json::Number::from_f64(secs)
                        .map(Value::Number)
                        .unwrap_or(Value::Null);
                } else {
                    wire_timestamps(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(wire_timestamps),
        _ => {}
    }
}

/// Reads the body: empty is `{}`; anything but a JSON object is a
/// SerializationException.
fn body_json(body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Error::new(
            ErrorKind::Serialization,
            "Start of structure or map found where not expected: the body must be a JSON object",
        )),
        Err(e) => Err(Error::new(
            ErrorKind::Serialization,
            format!("The request body is not valid JSON: {e}"),
        )),
    }
}

/// Runs one JSON 1.1 request for `service` (`kms`, `cloudtrail`); the response
/// body in the wire's shape.
pub fn call(
    services: &Services,
    ctx: &RequestContext,
    service: &str,
    operation: &str,
    body: &[u8],
) -> Result<Value, Error> {
    let body = body_json(body)?;
    let mut out = match service {
        "kms" => {
            // The name first: an unknown operation is that, whatever its body.
            if !crate::service::kms::OPERATIONS.contains(&operation) {
                return Err(Error::new(
                    ErrorKind::UnknownOperation,
                    format!(
                        "KMS has no operation {operation} (ebsim serves: {})",
                        crate::service::kms::OPERATIONS.join(", ")
                    ),
                ));
            }
            check_required(operation, &body)?;
            services.kms(ctx, KmsRequest::from_json(operation, body)?)?
        }
        "cloudtrail" => services.cloudtrail(ctx, CloudTrailRequest::from_json(operation, body)?)?,
        other => {
            return Err(Error::new(
                ErrorKind::UnknownOperation,
                format!("ebsim serves no JSON operations of {other}"),
            ));
        }
    };
    if out.is_null() {
        out = Value::Object(Default::default());
    }
    wire_timestamps(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kms_reads_run_in_place() {
        assert!(is_short("TrentService.Encrypt"));
        assert!(is_short("TrentService.DescribeKey"));
        // Changes commit a transaction; other services and near-misses are not KMS's reads.
        assert!(!is_short("TrentService.CreateKey"));
        assert!(!is_short("TrentService.ScheduleKeyDeletion"));
        assert!(!is_short(&format!("{CLOUDTRAIL_PREFIX}.LookupEvents")));
        assert!(!is_short("TrentServiceEncrypt"));
        assert!(!is_short("Other.Encrypt"));
        assert!(!is_short("TrentService.Encrypt2"));
    }

    #[test]
    fn missing_members_read_as_aws_writes_them() {
        let e = check_required("Encrypt", &serde_json::json!({"KeyId": "k"})).unwrap_err();
        assert_eq!(
            e.message(),
            "1 validation error detected: Value null at 'plaintext' failed to satisfy constraint: Member must not be null"
        );
        let e = check_required("CreateAlias", &serde_json::json!({})).unwrap_err();
        assert!(
            e.message()
                .starts_with("2 validation errors detected: Value null at 'aliasName'")
        );
        check_required("ListKeys", &serde_json::json!({})).unwrap();
    }

    #[test]
    fn timestamps_become_epoch_seconds() {
        let mut v = serde_json::json!({"KeyMetadata": {"CreationDate": "2026-01-31T12:00:00.500000+00:00", "Description": "2026-01-31T12:00:00Z"}, "Events": [{"EventTime": "2026-01-31T12:00:00Z"}]});
        wire_timestamps(&mut v);
        assert_eq!(
            v["KeyMetadata"]["CreationDate"],
            serde_json::json!(1_769_860_800.5)
        );
        assert_eq!(v["KeyMetadata"]["Description"], "2026-01-31T12:00:00Z");
        assert_eq!(
            v["Events"][0]["EventTime"],
            serde_json::json!(1_769_860_800.0)
        );
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert_eq!(body_json(b"").unwrap(), serde_json::json!({}));
        assert_eq!(
            body_json(b"[1]").unwrap_err().kind(),
            ErrorKind::Serialization
        );
        assert_eq!(
            body_json(b"{").unwrap_err().kind(),
            ErrorKind::Serialization
        );
    }
}
