//! The EBS direct APIs over REST-JSON (botocore's `ebs` model, signing name
//! `ebs`): the operation from the method and path, its members from the path,
//! the query string, headers and body as the model places them; the answer's
//! members likewise (GetSnapshotBlock's block as the body, its length and
//! checksum as headers), timestamps as epoch seconds; an error is the status the
//! model gives its shape, `x-amzn-ErrorType: <Code>` and `{"message", "Reason"}`.
//!
//! | method | path                                 | operation          |
//! |--------|--------------------------------------|--------------------|
//! | GET    | /snapshots/{id}/blocks               | ListSnapshotBlocks |
//! | GET    | /snapshots/{id}/blocks/{index}       | GetSnapshotBlock   |
//! | PUT    | /snapshots/{id}/blocks/{index}       | PutSnapshotBlock   |
//! | GET    | /snapshots/{second}/changedblocks    | ListChangedBlocks  |
//! | POST   | /snapshots                           | StartSnapshot      |
//! | POST   | /snapshots/completion/{id}           | CompleteSnapshot   |

use super::sigv4;
use crate::error::{Error, ErrorKind, Field};
use crate::service::ebs::{
    CompleteSnapshotRequest, EbsOutput, EbsRequest, GetSnapshotBlockRequest,
    ListChangedBlocksRequest, ListSnapshotBlocksRequest, PutSnapshotBlockRequest,
    StartSnapshotRequest,
};
use crate::service::{RequestContext, Services};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

/// A response with `status`, `content_type`, `body` and `headers`.
fn reply(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
    request_id: &str,
) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_str(content_type).expect("static content types"),
    );
    for (name, value) in headers.iter().chain(std::iter::once(&(
        "x-amzn-requestid",
        request_id.to_string(),
    ))) {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    r
}

/// The status the ebs model gives each error shape.
fn status_of(code: &str) -> u16 {
    match code {
        "AccessDeniedException" => 403,
        "ResourceNotFoundException" => 404,
        "ConflictException" => 409,
        "ServiceQuotaExceededException" => 402,
        "InternalServerException" => 500,
        "MissingAuthenticationTokenException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "ExpiredTokenException" => 403,
        "UnknownOperationException" => 404,
        _ => 400,
    }
}

/// An error in REST-JSON's shape: `code` in `x-amzn-ErrorType`, the message and
/// (when the model has one) the reason in the body.
pub fn error_reply(code: &str, message: &str, reason: Option<&str>, request_id: &str) -> Response {
    let mut body = serde_json::json!({ "message": message });
    if let Some(r) = reason {
        body["Reason"] = Value::String(r.to_string());
    }
    reply(
        status_of(code),
        "application/json",
        body.to_string().into_bytes(),
        &[("x-amzn-errortype", code.to_string())],
        request_id,
    )
}

/// A service-layer error: its EBS code (ebsim's own failures are
/// InternalServerException) and reason.
fn service_error(e: &Error, request_id: &str) -> Response {
    let (code, reason) = match e.kind() {
        // A body that does not read as the request: the model has no
        // SerializationException; REST-JSON services call it a validation error.
        ErrorKind::Serialization | ErrorKind::Usage => {
            ("ValidationException", Some("INVALID_PARAMETER_VALUE"))
        }
        k if k.is_service_error() => (e.code(), e.field(Field::Reason)),
        _ => ("InternalServerException", None),
    };
    error_reply(code, e.message(), reason, request_id)
}

fn validation(member: &str, value: &str, constraint: &str) -> Error {
    Error::new(
        ErrorKind::Validation,
        format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ),
    )
    .with(Field::Reason, "INVALID_PARAMETER_VALUE")
}

fn integer(member: &str, value: Option<&str>) -> Result<Option<u64>, Error> {
    value
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| validation(member, v, "Member must be a non-negative integer"))
        })
        .transpose()
}

fn required(member: &str, value: Option<String>) -> Result<String, Error> {
    value.ok_or_else(|| {
        Error::new(
            ErrorKind::Validation,
            format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ),
        )
        .with(Field::Reason, "INVALID_PARAMETER_VALUE")
    })
}

/// Reads the operation and its request from the method, path, query, headers
/// and body.
pub fn parse(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<EbsRequest, Error> {
    let query = uri.query().map(sigv4::query_pairs).unwrap_or_default();
    // Tokens are base64: a `+` a client left unencoded reads as a space.
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.replace(' ', "+"))
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let segments: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| sigv4::percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let index = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| validation("blockIndex", v, "Member must be a non-negative integer"))
    };
    let page = || -> Result<_, Error> {
        Ok((
            q("pageToken"),
            integer("maxResults", q("maxResults").as_deref())?,
            integer("startingBlockIndex", q("startingBlockIndex").as_deref())?,
        ))
    };
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["snapshots", id, "blocks"]) => {
            let (next_token, max_results, starting_block_index) = page()?;
            Ok(EbsRequest::ListSnapshotBlocks(ListSnapshotBlocksRequest {
                snapshot_id: id.to_string(),
                next_token,
                max_results,
                starting_block_index,
            }))
        }
        ("GET", ["snapshots", second, "changedblocks"]) => {
            let (next_token, max_results, starting_block_index) = page()?;
            Ok(EbsRequest::ListChangedBlocks(ListChangedBlocksRequest {
                first_snapshot_id: q("firstSnapshotId"),
                second_snapshot_id: second.to_string(),
                next_token,
                max_results,
                starting_block_index,
            }))
        }
        ("GET", ["snapshots", id, "blocks", i]) => {
            Ok(EbsRequest::GetSnapshotBlock(GetSnapshotBlockRequest {
                snapshot_id: id.to_string(),
                block_index: index(i)?,
                block_token: required("blockToken", q("blockToken"))?,
            }))
        }
        ("PUT", ["snapshots", id, "blocks", i]) => {
            let length = required("DataLength", header("x-amz-data-length"))?;
            Ok(EbsRequest::PutSnapshotBlock(PutSnapshotBlockRequest {
                snapshot_id: id.to_string(),
                block_index: index(i)?,
                block_data: zeroize::Zeroizing::new(body.to_vec()),
                data_length: integer("DataLength", Some(&length))?.unwrap_or(0),
                progress: integer("Progress", header("x-amz-progress").as_deref())?
                    .map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
                checksum: required("Checksum", header("x-amz-checksum"))?,
                checksum_algorithm: required(
                    "ChecksumAlgorithm",
                    header("x-amz-checksum-algorithm"),
                )?,
            }))
        }
        ("POST", ["snapshots"]) => {
            let v: Value = if body.is_empty() {
                Value::Object(Default::default())
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    Error::new(
                        ErrorKind::Serialization,
                        format!("StartSnapshot: the body is not JSON: {e}"),
                    )
                })?
            };
            if v.get("VolumeSize").is_none() {
                required("VolumeSize", None)?;
            }
            let r: StartSnapshotRequest = serde_json::from_value(v).map_err(|e| {
                Error::new(
                    ErrorKind::Serialization,
                    format!("StartSnapshot: the body cannot be read: {e}"),
                )
            })?;
            Ok(EbsRequest::StartSnapshot(r))
        }
        ("POST", ["snapshots", "completion", id]) => {
            let count = required("ChangedBlocksCount", header("x-amz-changedblockscount"))?;
            Ok(EbsRequest::CompleteSnapshot(CompleteSnapshotRequest {
                snapshot_id: id.to_string(),
                changed_blocks_count: integer("ChangedBlocksCount", Some(&count))?.unwrap_or(0),
                checksum: header("x-amz-checksum"),
                checksum_algorithm: header("x-amz-checksum-algorithm"),
                checksum_aggregation_method: header("x-amz-checksum-aggregation-method"),
            }))
        }
        _ => Err(Error::new(
            ErrorKind::UnknownOperation,
            format!(
                "The EBS direct APIs have no operation at {} {}",
                method,
                uri.path()
            ),
        )),
    }
}

/// ISO 8601 timestamp members as epoch seconds.
fn wire_timestamps(v: &mut Value) {
    if let Value::Object(m) = v {
        for k in ["ExpiryTime", "StartTime"] {
            if let Some(Value::String(s)) = m.get(k)
                && let Ok(t) = crate::clock::parse_time(s)
            {
                let secs = crate::clock::epoch_seconds(&t);
                m.insert(
                    k.to_string(),
                    serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number),
                );
            }
        }
    }
}

/// Runs one EBS direct API request; the response and the operation's name for
/// the log.
pub fn call(
    services: &Services,
    ctx: &RequestContext,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, String) {
    let request_id = ctx.request_id.as_str();
    let req = match parse(method, uri, headers, body) {
        Ok(r) => r,
        Err(e) => {
            return (
                service_error(&e, request_id),
                format!("ebs {method} {}", uri.path()),
            );
        }
    };
    let name = req.name();
    let what = format!("ebs.{name}");
    let out = match services.ebs(ctx, req) {
        Ok(o) => o,
        Err(e) => return (service_error(&e, request_id), what),
    };
    let response = match out {
        EbsOutput::Block(b) => reply(
            200,
            "application/octet-stream",
            b.data.to_vec(),
            &[
                ("x-amz-data-length", b.data.len().to_string()),
                ("x-amz-checksum", b.checksum),
                ("x-amz-checksum-algorithm", "SHA256".into()),
            ],
            request_id,
        ),
        EbsOutput::Json(mut v) => {
            wire_timestamps(&mut v);
            match name {
                "PutSnapshotBlock" => {
                    let h = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                    reply(
                        201,
                        "application/json",
                        b"{}".to_vec(),
                        &[
                            ("x-amz-checksum", h("Checksum")),
                            ("x-amz-checksum-algorithm", h("ChecksumAlgorithm")),
                        ],
                        request_id,
                    )
                }
                _ => {
                    let status = match name {
                        "StartSnapshot" => 201,
                        "CompleteSnapshot" => 202,
                        _ => 200,
                    };
                    reply(
                        status,
                        "application/json",
                        v.to_string().into_bytes(),
                        &[],
                        request_id,
                    )
                }
            }
        }
    };
    (response, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        method: Method,
        uri: &str,
        headers: &[(&'static str, &str)],
        body: &[u8],
    ) -> Result<EbsRequest, Error> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        parse(&method, &uri.parse().unwrap(), &h, body)
    }

    #[test]
    fn requests_are_read_where_the_model_puts_their_members() {
        match req(
            Method::GET,
            "/snapshots/snap-1/blocks?maxResults=100&startingBlockIndex=3",
            &[],
            b"",
        )
        .unwrap()
        {
            EbsRequest::ListSnapshotBlocks(r) => {
                assert_eq!(r.snapshot_id, "snap-1");
                assert_eq!(r.max_results, Some(100));
                assert_eq!(r.starting_block_index, Some(3));
            }
            other => panic!("{other:?}"),
        }
        match req(
            Method::GET,
            "/snapshots/snap-2/changedblocks?firstSnapshotId=snap-1",
            &[],
            b"",
        )
        .unwrap()
        {
            EbsRequest::ListChangedBlocks(r) => {
                assert_eq!(r.first_snapshot_id.as_deref(), Some("snap-1"));
                assert_eq!(r.second_snapshot_id, "snap-2");
            }
            other => panic!("{other:?}"),
        }
        match req(
            Method::GET,
            "/snapshots/snap-1/blocks/7?blockToken=AB%2Bc%3D",
            &[],
            b"",
        )
        .unwrap()
        {
            EbsRequest::GetSnapshotBlock(r) => {
                assert_eq!(r.block_index, 7);
                assert_eq!(r.block_token, "AB+c=");
            }
            other => panic!("{other:?}"),
        }
        let put = req(
            Method::PUT,
            "/snapshots/snap-1/blocks/2",
            &[
                ("x-amz-data-length", "3"),
                ("x-amz-checksum", "c"),
                ("x-amz-checksum-algorithm", "SHA256"),
                ("x-amz-progress", "50"),
            ],
            b"abc",
        )
        .unwrap();
        match put {
            EbsRequest::PutSnapshotBlock(r) => {
                assert_eq!((r.block_index, r.data_length, r.progress), (2, 3, Some(50)));
                assert_eq!(&r.block_data[..], b"abc");
            }
            other => panic!("{other:?}"),
        }
        let e = req(
            Method::PUT,
            "/snapshots/snap-1/blocks/2",
            &[("x-amz-data-length", "3")],
            b"abc",
        )
        .unwrap_err();
        assert!(e.message().contains("'Checksum'"), "{e}");
        match req(
            Method::POST,
            "/snapshots/completion/snap-1",
            &[("x-amz-changedblockscount", "4")],
            b"",
        )
        .unwrap()
        {
            EbsRequest::CompleteSnapshot(r) => assert_eq!(r.changed_blocks_count, 4),
            other => panic!("{other:?}"),
        }
        match req(
            Method::POST,
            "/snapshots",
            &[],
            br#"{"VolumeSize": 1, "Encrypted": true}"#,
        )
        .unwrap()
        {
            EbsRequest::StartSnapshot(r) => {
                assert_eq!((r.volume_size, r.encrypted), (1, Some(true)))
            }
            other => panic!("{other:?}"),
        }
        assert!(req(Method::POST, "/snapshots", &[], b"{}").is_err());
        let e = req(Method::DELETE, "/snapshots/snap-1", &[], b"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownOperation);
        let e = req(
            Method::GET,
            "/snapshots/snap-1/blocks/x?blockToken=a",
            &[],
            b"",
        )
        .unwrap_err();
        assert_eq!(e.field(Field::Reason), Some("INVALID_PARAMETER_VALUE"));
    }

    #[test]
    fn errors_carry_their_code_in_a_header_and_the_reason_in_the_body() {
        let r = error_reply(
            "ResourceNotFoundException",
            "gone",
            Some("SNAPSHOT_NOT_FOUND"),
            "rid",
        );
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["x-amzn-errortype"], "ResourceNotFoundException");
        assert_eq!(r.headers()["x-amzn-requestid"], "rid");
        assert_eq!(status_of("AccessDeniedException"), 403);
        let bad_body =
            req(Method::POST, "/snapshots", &[], b"{\"VolumeSize\": \"x\"}").unwrap_err();
        let r = service_error(&bad_body, "rid");
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["x-amzn-errortype"], "ValidationException");
        let r = service_error(&Error::new(ErrorKind::Internal, "disk"), "rid");
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()["x-amzn-errortype"], "InternalServerException");
        assert_eq!(status_of("ValidationException"), 400);
    }
}
