//! The HTTP/1.1 server: one endpoint, every service behind it, told apart the way
//! AWS's SDKs address them — `X-Amz-Target` for the JSON protocol (KMS,
//! CloudTrail), otherwise the Query protocol (STS, IAM) or, for the signing name
//! `ebs`, REST-JSON (the EBS direct APIs, ebs.rs), with the service and region
//! taken from the SigV4 credential scope.
//!
//! Per request: read the body (limited in size and time), wait for one of the
//! in-flight slots, check the signature (sigv4.rs) and find the caller, then run
//! the operation on the shared [`Services`] — KMS's short operations in place,
//! the rest in a blocking task (the engines use std mutexes and blocking I/O,
//! and may fsync) — and answer in the protocol's shape with `x-amzn-RequestId`.
//!
//! Limits (docs/SERVER.md): request headers 64 KiB and 100 lines, read within
//! 30 s; bodies 1 MiB (413 past it), read within 30 s (408); 64 requests in
//! flight — the 65th waits up to 10 s for a slot, then gets ThrottlingException
//! (which SDKs retry with backoff); 1024 open connections (more are closed at
//! once). On SIGTERM or Ctrl-C the listener closes, requests in flight finish
//! (up to 30 s), idle connections close.

use super::sigv4::{self, AuthError, Protocol, Received};
use super::{Config, ebs, ec2, iam, json, query, status, sts};
use crate::error::{Error, ErrorKind};
use crate::service::{Caller, RequestContext, Services, Source};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What every request handler shares.
struct Shared {
    services: Arc<Services>,
    config: Arc<Config>,
    in_flight: Arc<Semaphore>,
    /// Held shared by every request, exclusively by a reset (which must not run
    /// beside another call on the same services).
    gate: Arc<std::sync::RwLock<()>>,
}

/// An error as the wire carries it.
struct WireError {
    code: String,
    status: u16,
    message: String,
}

impl WireError {
    fn new(code: &str, status: u16, message: impl Into<String>) -> Self {
        WireError {
            code: code.to_string(),
            status,
            message: message.into(),
        }
    }

    fn auth(e: &AuthError, protocol: Protocol) -> Self {
        let (code, status, message) = e.code(protocol);
        WireError::new(code, status, message)
    }

    /// A service-layer error: its AWS code and the status `status.rs` gives it.
    /// ebsim's local kinds have no AWS code: a client's fault reads as a
    /// validation error, ours as InternalFailure.
    fn service(e: &Error, protocol: Protocol) -> Self {
        let kind = e.kind();
        let status = status::status(kind);
        let code = if kind.is_service_error() {
            e.code()
        } else if status >= 500 {
            "InternalFailure"
        } else if matches!(protocol, Protocol::Json | Protocol::RestJson) {
            "ValidationException"
        } else {
            "ValidationError"
        };
        WireError::new(code, status, e.message())
    }
}

fn respond(status: u16, content_type: &str, body: String, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_str(content_type).expect("static content types"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// An error in `protocol`'s shape; `service` (a signing name) picks the Query
/// protocol's XML namespace.
fn error_response(protocol: Protocol, service: &str, e: &WireError, request_id: &str) -> Response {
    match protocol {
        Protocol::Json => respond(
            e.status,
            "application/x-amz-json-1.1",
            serde_json::json!({"__type": e.code, "message": e.message}).to_string(),
            request_id,
        ),
        Protocol::IamQuery => {
            let namespace = match service {
                "iam" => iam::NAMESPACE,
                "rds" => super::rds::NAMESPACE,
                _ => sts::NAMESPACE,
            };
            respond(
                e.status,
                "text/xml",
                sts::error_xml(namespace, &e.code, &e.message, request_id, e.status < 500),
                request_id,
            )
        }
        // REST-JSON (the EBS direct APIs): the code in a header.
        Protocol::RestJson => ebs::error_reply(&e.code, &e.message, None, request_id),
        // EC2's own error document.
        Protocol::Ec2Query => respond(
            e.status,
            "text/xml;charset=UTF-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
                sts::escape(&e.code),
                sts::escape(&e.message),
                sts::escape(request_id)
            ),
            request_id,
        ),
    }
}

/// The protocol a request speaks, by its headers alone (before its signature
/// says which service it is for).
fn protocol_of(headers: &HeaderMap) -> Protocol {
    if headers.contains_key("x-amz-target") {
        Protocol::Json
    } else {
        Protocol::IamQuery
    }
}

/// Every request, whatever its path and method: hyper's request taken apart
/// as it is (no router: the protocol, not the path, picks the service, and a
/// router's extractors would copy the headers).
async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response {
    let (parts, body) = req.into_parts();
    let axum::http::request::Parts {
        method,
        uri,
        headers,
        ..
    } = parts;
    let body = Body::new(body);
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let protocol = protocol_of(&headers);
    let limits = shared.config.limits;
    let fail = |e: WireError| error_response(protocol, "", &e, &request_id);

    // The body: refused at once when it says it is too big, else read within
    // the time and size limits.
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        WireError::new(
            if protocol == Protocol::Json {
                "RequestEntityTooLargeException"
            } else {
                "RequestEntityTooLarge"
            },
            413,
            format!(
                "The request body is larger than the server's limit of {} bytes",
                limits.max_body
            ),
        )
    };
    // Past the limit, up to this much more is read and dropped, so the client,
    // which sends its whole body before reading, gets the 413 rather than a
    // reset; bigger bodies get the reset.
    let drain_cap = limits.max_body.saturating_mul(16) as u64;
    if declared.is_some_and(|n| n > drain_cap) {
        return fail(too_large());
    }
    let mut body = body;
    // The body may hold plaintext (Encrypt's): kept in a zeroize-on-drop buffer
    // sized up front, so growing it leaves no copies behind (hyper's own read
    // buffer is not ours to wipe).
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0).min(limits.max_body));
    let read = async {
        let mut kept = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > drain_cap {
                break;
            }
            if total <= limits.max_body as u64 {
                kept.extend_from_slice(&data);
            }
        }
        Ok::<_, axum::Error>((kept, total))
    };
    let body = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok((_, total))) if total > limits.max_body as u64 => return fail(too_large()),
        Ok(Ok((kept, _))) => kept,
        Ok(Err(e)) => {
            return fail(WireError::new(
                "IncompleteBody",
                400,
                format!("The request body could not be read: {e}"),
            ));
        }
        Err(_) => {
            return fail(WireError::new(
                "RequestTimeout",
                408,
                format!(
                    "The request body was not received within {} s",
                    limits.body_timeout.as_secs()
                ),
            ));
        }
    };

    // A slot among the requests in flight.
    let permit =
        match tokio::time::timeout(limits.queue_wait, shared.in_flight.clone().acquire_owned())
            .await
        {
            Ok(Ok(p)) => p,
            _ => {
                let code = if protocol == Protocol::Json {
                    "ThrottlingException"
                } else {
                    "Throttling"
                };
                return fail(WireError::new(
                    code,
                    400,
                    format!(
                        "Rate exceeded: {} requests are in flight (the server's limit)",
                        limits.max_in_flight
                    ),
                ));
            }
        };

    // KMS's data plane runs here, on the connection's thread: it takes tens of
    // microseconds of CPU and never waits on the disk, and handing it to the
    // blocking pool and back cost more than the call (two thread wake-ups and
    // the pool's own lock; docs/BENCHMARKS.md). Everything else may commit
    // (fsync) or read files, so it runs in the blocking pool.
    let short = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(json::is_short);
    let ran = if short {
        let run = std::panic::AssertUnwindSafe(|| {
            let _permit = permit;
            process(&shared, peer, &method, &uri, &headers, &body, &request_id)
        });
        std::panic::catch_unwind(run).map_err(|_| String::from("the operation panicked"))
    } else {
        let rid = request_id.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            process(&shared, peer, &method, &uri, &headers, &body, &rid)
        })
        .await
        .map_err(|e| e.to_string())
    };
    let (response, summary) = match ran {
        Ok(r) => r,
        Err(e) => (
            fail(WireError::new(
                "InternalFailure",
                500,
                format!("the request's task failed: {e}"),
            )),
            String::from("task failed"),
        ),
    };
    tracing::info!(
        target: "ebsim::server",
        request_id = %request_id,
        peer = %peer,
        status = response.status().as_u16(),
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "{summary}"
    );
    response
}

/// Authenticates and runs one request (in a blocking task); the response and a
/// line for the log.
fn process(
    shared: &Shared,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> (Response, String) {
    let mut protocol = protocol_of(headers);
    let received = Received {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers,
        body,
    };
    let fail = |protocol: Protocol, service: &str, e: WireError, what: String| {
        let line = format!("{what}: {} {}", e.code, e.message);
        (error_response(protocol, service, &e, request_id), line)
    };
    if let Some(answer) = harness(shared, method, uri, &received, request_id) {
        return answer;
    }
    let _gate = shared.gate.read().unwrap_or_else(|p| p.into_inner());
    let claim = match sigv4::parse(&received) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                protocol,
                "",
                WireError::auth(&e, protocol),
                "unsigned".into(),
            );
        }
    };
    if protocol != Protocol::Json && claim.service == "ec2" {
        protocol = Protocol::Ec2Query;
    }
    if protocol != Protocol::Json && claim.service == "ebs" {
        protocol = Protocol::RestJson;
    }
    // JSON: the operation, and the service it belongs to, from X-Amz-Target.
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json_op = match &target {
        Some(t) => {
            let (prefix, op) = t.rsplit_once('.').unwrap_or(("", t.as_str()));
            let Some(service) = json::service_of(prefix) else {
                return fail(
                    protocol,
                    &claim.service,
                    WireError::new(
                        "UnknownOperationException",
                        400,
                        format!(
                            "ebsim serves no operation {t} (JSON targets: {}.*, {}.*)",
                            json::KMS_PREFIX,
                            json::CLOUDTRAIL_PREFIX
                        ),
                    ),
                    t.clone(),
                );
            };
            if service != claim.service {
                let e = AuthError::BadSignature(String::new());
                let (code, status, _) = e.code(protocol);
                return fail(
                    protocol,
                    &claim.service,
                    WireError::new(
                        code,
                        status,
                        format!("Credential should be scoped to correct service: '{service}'. "),
                    ),
                    t.clone(),
                );
            }
            Some(op.to_string())
        }
        None => None,
    };
    let what = json_op
        .clone()
        .map(|op| format!("{}.{op}", claim.service))
        .unwrap_or_else(|| format!("{} (query)", claim.service));

    let caller = match authenticate(shared, &received, &claim) {
        Ok(c) => c,
        Err(Ok(e)) => {
            // The log names the key the wire answer does not.
            let what = format!("{what} signed with {}", claim.access_key_id);
            return fail(
                protocol,
                &claim.service,
                WireError::auth(&e, protocol),
                what,
            );
        }
        Err(Err(e)) => {
            return fail(
                protocol,
                &claim.service,
                WireError::service(&e, protocol),
                what,
            );
        }
    };
    let mut caller = caller;
    caller.source_ip = peer.ip().to_string();
    if let Some(ua) = headers.get("user-agent").and_then(|v| v.to_str().ok()) {
        caller.user_agent = ua.to_string();
    }
    let region = if crate::home::validate_region(&claim.region).is_ok() {
        claim.region.clone()
    } else {
        shared.config.region.clone()
    };
    let mut ctx = RequestContext::new(caller, &region, Source::Network(peer.to_string()));
    ctx.set_request_id(request_id);
    let who = ctx.caller.arn().to_string();
    let services = &shared.services;

    match (json_op, claim.service.as_str()) {
        (Some(op), service) => {
            let what = format!("{what} by {who}");
            match json::call(services, &ctx, service, &op, body) {
                Ok(v) => (
                    respond(200, "application/x-amz-json-1.1", v.to_string(), request_id),
                    what,
                ),
                Err(e) => fail(protocol, service, WireError::service(&e, protocol), what),
            }
        }
        // The EBS direct APIs: REST-JSON, the operation from the method and path.
        (None, "ebs") => {
            let (response, what) = ebs::call(services, &ctx, method, uri, headers, body);
            (response, format!("{what} by {who}"))
        }
        (None, service @ ("sts" | "iam")) => {
            let mut params = received.query.map(sigv4::query_pairs).unwrap_or_default();
            if method == Method::POST {
                params.extend(sigv4::query_pairs(&String::from_utf8_lossy(body)));
            }
            let (namespace, result) = if service == "sts" {
                (sts::NAMESPACE, sts::call(services, &ctx, &params))
            } else {
                (iam::NAMESPACE, iam::call(services, &ctx, &params))
            };
            match result {
                Ok((op, v)) => (
                    respond(
                        200,
                        "text/xml",
                        sts::response_xml(namespace, &op, &v, request_id),
                        request_id,
                    ),
                    format!("{service}.{op} by {who}"),
                ),
                // The Query protocol's name for an action a service lacks.
                Err(e) if e.kind() == ErrorKind::UnknownOperation => fail(
                    protocol,
                    service,
                    WireError::new("InvalidAction", 400, e.message()),
                    format!("{what} by {who}"),
                ),
                Err(e) => fail(
                    protocol,
                    service,
                    WireError::service(&e, protocol),
                    format!("{what} by {who}"),
                ),
            }
        }
        (None, "ec2") => {
            // EC2's Query: the query string's parameters and, for a POST, the
            // form body's (src/server/ec2.rs decodes, runs and answers).
            let mut params = match query::parse_form(received.query.unwrap_or("").as_bytes()) {
                Ok(p) => p,
                Err(e) => {
                    let r = ec2::error_response(&e, request_id);
                    return (
                        respond(r.status, "text/xml;charset=UTF-8", r.xml, request_id),
                        format!("{what} by {who}: {}", e.code()),
                    );
                }
            };
            if method == Method::POST {
                match query::parse_form(body) {
                    Ok(p) => params.extend(p),
                    Err(e) => {
                        let r = ec2::error_response(&e, request_id);
                        return (
                            respond(r.status, "text/xml;charset=UTF-8", r.xml, request_id),
                            format!("{what} by {who}: {}", e.code()),
                        );
                    }
                }
            }
            let action = params
                .iter()
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if action == "CopySnapshot"
                && let Some((_, url)) = params.iter().find(|(k, _)| k == "PresignedUrl")
                && let Err(e) = check_presigned_copy(shared, &ctx, url, &params)
            {
                let r = ec2::error_response(&e, request_id);
                return (
                    respond(r.status, "text/xml;charset=UTF-8", r.xml, request_id),
                    format!("ec2.CopySnapshot by {who}: {}", e.code()),
                );
            }
            let r = ec2::handle(services, &ctx, &params);
            (
                respond(r.status, "text/xml;charset=UTF-8", r.xml, request_id),
                format!("ec2.{action} by {who}: {}", r.status),
            )
        }
        (None, "rds") => {
            // RDS's Query (src/server/rds.rs): the query string's and the form
            // body's parameters, decoded by the operation's schema.
            let mut params = match query::parse_form(received.query.unwrap_or("").as_bytes()) {
                Ok(p) => p,
                Err(e) => return fail(protocol, "rds", WireError::service(&e, protocol), what),
            };
            if method == Method::POST {
                match query::parse_form(body) {
                    Ok(p) => params.extend(p),
                    Err(e) => return fail(protocol, "rds", WireError::service(&e, protocol), what),
                }
            }
            match super::rds::call(services, &ctx, &params, request_id) {
                Ok((op, xml)) => (
                    respond(200, "text/xml", xml, request_id),
                    format!("rds.{op} by {who}"),
                ),
                Err(e) => fail(
                    protocol,
                    "rds",
                    WireError::service(&e, protocol),
                    format!("{what} by {who}"),
                ),
            }
        }
        (None, service) => fail(
            protocol,
            service,
            WireError::new(
                "InvalidAction",
                400,
                format!(
                    "ebsim serve does not serve {service} over the Query protocol (it serves kms and cloudtrail over JSON 1.1, sts, iam, ec2 and rds over Query, ebs over REST-JSON)"
                ),
            ),
            what,
        ),
    }
}

/// The caller a request's signature proves; `Err(Ok(_))` for a refused
/// signature, `Err(Err(_))` for a failure to look the key up.
/// The test-harness endpoints (docs/SERVER.md): `GET /_ebsim/health` (also
/// `/_localstack/health`), unauthenticated, and `POST /_ebsim/reset` (also
/// moto's `POST /moto-api/reset`), which must be signed by the account root
/// unless the server runs with `--accept-any-credentials`. `?force=true` (or a
/// JSON body `{"Force": true}`) detaches attached volumes first. None for every
/// other request.
fn harness(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    received: &Received<'_>,
    request_id: &str,
) -> Option<(Response, String)> {
    let json_error = |status: u16, code: &str, message: String| {
        let line = format!("{}: {code} {message}", uri.path());
        let body = serde_json::json!({"__type": code, "message": message}).to_string();
        (respond(status, "application/json", body, request_id), line)
    };
    match (method.as_str(), uri.path()) {
        ("GET" | "HEAD", "/_ebsim/health" | "/_localstack/health" | "/health") => {
            let _gate = shared.gate.read().unwrap_or_else(|p| p.into_inner());
            let health = shared.services.health();
            let status = if health["status"] == "running" {
                200
            } else {
                503
            };
            Some((
                respond(status, "application/json", health.to_string(), request_id),
                format!("{}: {}", uri.path(), health["status"]),
            ))
        }
        ("POST", "/_ebsim/reset" | "/moto-api/reset") => {
            if !shared.config.accept_any_credentials {
                let caller = sigv4::parse(received)
                    .map_err(|_| ())
                    .and_then(|claim| authenticate(shared, received, &claim).map_err(|_| ()));
                match caller {
                    Ok(c) if c.is_root() && c.account_id() == shared.config.account_id => {}
                    Ok(c) => {
                        return Some(json_error(
                            403,
                            "AccessDeniedException",
                            format!(
                                "only the account root may reset the data root, not {}",
                                c.arn()
                            ),
                        ));
                    }
                    Err(()) => {
                        return Some(json_error(
                            403,
                            "AccessDeniedException",
                            "a reset must be SigV4-signed by the account root (or the server run with --accept-any-credentials)".into(),
                        ));
                    }
                }
            }
            let force = received
                .query
                .map(sigv4::query_pairs)
                .unwrap_or_default()
                .iter()
                .any(|(k, v)| k == "force" && v == "true")
                || serde_json::from_slice::<serde_json::Value>(received.body)
                    .is_ok_and(|b| b["Force"] == true);
            let _gate = shared.gate.write().unwrap_or_else(|p| p.into_inner());
            match shared.services.reset(force) {
                Ok(report) => {
                    let body = if uri.path() == "/moto-api/reset" {
                        serde_json::json!({"status": "ok"})
                    } else {
                        serde_json::json!({
                            "Reset": true,
                            "Regions": report.regions,
                            "Detached": report.detached,
                        })
                    };
                    Some((
                        respond(200, "application/json", body.to_string(), request_id),
                        format!("{}: reset ({} detached)", uri.path(), report.detached.len()),
                    ))
                }
                // Attached volumes: a conflict with the data root's state.
                Err(e) => Some(json_error(
                    if e.kind() == crate::error::ErrorKind::VolumeInUse {
                        409
                    } else {
                        super::status::status(e.kind())
                    },
                    e.code(),
                    e.message().to_string(),
                )),
            }
        }
        _ => None,
    }
}

/// CopySnapshot's `PresignedUrl` (what SDKs add for a copy from another
/// region): a presigned `CopySnapshot` for the source region, which must verify
/// as any presigned request does (SigV4 query string, the key's secret, its
/// time), be signed by the same principal as the request that carries it, and
/// name the same source snapshot and source region.
fn check_presigned_copy(
    shared: &Shared,
    ctx: &RequestContext,
    url: &str,
    params: &[(String, String)],
) -> Result<(), Error> {
    let invalid = |why: &str| {
        Error::new(
            ErrorKind::InvalidParameterValue,
            format!("The PresignedUrl is invalid: {why}"),
        )
    };
    let uri: Uri = url.parse().map_err(|_| invalid("it is not a URL"))?;
    let host = uri.authority().ok_or_else(|| invalid("it names no host"))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::HOST,
        host.as_str()
            .parse()
            .map_err(|_| invalid("its host is not a header value"))?,
    );
    let received = Received {
        method: "GET",
        path: uri.path(),
        query: uri.query(),
        headers: &headers,
        body: b"",
    };
    let claim = sigv4::parse(&received).map_err(|_| invalid("it is not a presigned request"))?;
    if claim.service != "ec2" {
        return Err(invalid("it is not signed for ec2"));
    }
    let signer = authenticate(shared, &received, &claim)
        .map_err(|_| invalid("its signature does not verify (or it expired)"))?;
    if signer.arn() != ctx.caller.arn() {
        return Err(invalid("it is signed by another principal"));
    }
    let inner = query::parse_form(uri.query().unwrap_or("").as_bytes())?;
    let get = |set: &[(String, String)], k: &str| {
        set.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    for k in ["SourceSnapshotId", "SourceRegion"] {
        if get(&inner, k) != get(params, k) {
            return Err(invalid(&format!("its {k} is not the request's")));
        }
    }
    if get(&inner, "Action").as_deref() != Some("CopySnapshot") {
        return Err(invalid("it is not a CopySnapshot request"));
    }
    Ok(())
}

fn authenticate(
    shared: &Shared,
    received: &Received<'_>,
    claim: &sigv4::Claim,
) -> Result<Caller, Result<AuthError, Error>> {
    let now = chrono::Utc::now();
    if shared.config.accept_any_credentials {
        return Ok(Caller::account_root(&shared.config.account_id));
    }
    sigv4::check_time(claim, now).map_err(Ok)?;
    let creds = shared
        .services
        .credentials(&claim.access_key_id)
        .map_err(Err)?
        .ok_or(Ok(AuthError::UnknownKey))?;
    {
        // The signing key of this scope, derived once per access key, day,
        // region and service rather than with four HMACs per request.
        let scope = claim.scope();
        let mut slot = creds.signing_key.lock().unwrap_or_else(|p| p.into_inner());
        let key = match &mut *slot {
            Some((s, key)) if *s == scope => key,
            slot => {
                let key = sigv4::signing_key(creds.secret.expose(), claim);
                &mut slot.insert((scope, key)).1
            }
        };
        sigv4::verify_with_key(received, claim, key.expose()).map_err(Ok)?;
    }
    match &creds.session {
        Some(check) => {
            use crate::iam::sessions::TokenProblem;
            match check.check(
                claim.security_token.as_deref(),
                shared.services.clock().now(),
            ) {
                Ok(()) => {}
                Err(TokenProblem::Invalid) => return Err(Ok(AuthError::UnknownKey)),
                Err(TokenProblem::Expired) => return Err(Ok(AuthError::TokenExpired)),
            }
        }
        None => {
            if let Err(e) =
                shared
                    .services
                    .record_key_use(&claim.access_key_id, &claim.service, &claim.region)
            {
                tracing::warn!(target: "ebsim::server", "cannot record the use of {}: {e}", claim.access_key_id);
            }
        }
    }
    Ok(creds.caller.clone())
}

/// Serves on `listener` until `shutdown` completes, then drains: requests in
/// flight finish (up to `limits.drain`), idle connections close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    services: Arc<Services>,
    config: Arc<Config>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let here = vec![tokio::runtime::Handle::current()];
    serve_on(listener, services, config, shutdown, &here).await;
}

/// [`serve`], with each connection handed, in turn, to one of `workers`: a
/// connection then lives on that runtime's thread, which reads its requests,
/// runs KMS's short operations and writes the answers, with no hand-off between
/// threads (mod.rs gives one single-threaded runtime per CPU).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    services: Arc<Services>,
    config: Arc<Config>,
    shutdown: impl std::future::Future<Output = ()>,
    workers: &[tokio::runtime::Handle],
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    assert!(!workers.is_empty(), "a server needs a runtime to serve on");
    let mut next_worker = 0usize;
    let limits = config.limits;
    let shared = Shared {
        services,
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
        config,
        gate: Arc::new(std::sync::RwLock::new(())),
    };
    let shared = Arc::new(shared);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, then go on.
                    tracing::warn!(target: "ebsim::server", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!(target: "ebsim::server", "refusing {peer}: {} connections are open", limits.max_connections);
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move {
                let response = handle(shared, peer, req).await;
                // Every answer, early refusals too, opens the worker's
                // busy-polling window (poll.rs).
                super::poll::answered();
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        // The socket moves to its worker's reactor: registered there, its
        // readiness wakes that thread and no other.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "ebsim::server", "dropping {peer}: {e}");
                continue;
            }
        };
        let watcher = graceful.watcher();
        let worker = &workers[next_worker % workers.len()];
        next_worker = next_worker.wrapping_add(1);
        worker.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(target: "ebsim::server", "dropping {peer}: {e}");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_header_size(limits.max_header_bytes)
                .max_headers(limits.max_headers)
                .serve_connection(TokioIo::new(super::poll::Coalesced::new(stream)), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(target: "ebsim::server", "connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(target: "ebsim::server", "shutting down: {} connections open", graceful.count());
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain) => {
            tracing::warn!(target: "ebsim::server", "requests still running after {} s; stopping anyway", limits.drain.as_secs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Limits;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server in this process with `limits`; its address, a stop switch and
    /// its task.
    async fn start(
        limits: Limits,
    ) -> (
        tempfile::TempDir,
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::home::DataRoot::open(dir.path()).unwrap();
        let services = Services::new(root, crate::clock::Clock::system(chrono::TimeDelta::zero()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            listen: addr,
            allow_remote: false,
            accept_any_credentials: true,
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            limits,
            busy_poll: Duration::ZERO,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            Arc::new(services),
            Arc::new(config),
            async {
                let _ = rx.await;
            },
        ));
        (dir, addr, tx, task)
    }

    async fn exchange(addr: SocketAddr, parts: &[&[u8]], pause: Duration) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        for p in parts {
            c.write_all(p).await.unwrap();
            tokio::time::sleep(pause).await;
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    const SIGNED_HEAD: &str = "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Amz-Target: TrentService.ListKeys\r\nX-Amz-Date: 20260101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAANY/20260101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_clients_and_a_full_server_get_their_answers() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            queue_wait: Duration::from_millis(100),
            ..Limits::default()
        };
        let (_dir, addr, stop, task) = start(limits).await;
        // Any credentials: a well-formed request runs.
        let ok = exchange(
            addr,
            &[format!("{SIGNED_HEAD}Content-Length: 2\r\n\r\n{{}}").as_bytes()],
            Duration::ZERO,
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("\"Keys\":[]"), "{ok}");
        // A body that does not arrive in time.
        let slow_body = format!("{SIGNED_HEAD}Content-Length: 10\r\n\r\n{{}}");
        let out = exchange(addr, &[slow_body.as_bytes()], Duration::ZERO).await;
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("\"__type\":\"RequestTimeout\""), "{out}");
        // A head that does not arrive in time: the connection is closed.
        let started = Instant::now();
        let out = exchange(
            addr,
            &[b"POST / HTTP/1.1\r\nHost: x\r\n"],
            Duration::from_millis(800),
        )
        .await;
        assert!(!out.contains("200 OK"), "{out}");
        // Closed by the server (the client would wait 10 s for its answer).
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = stop.send(());
        task.await.unwrap();

        // Shutdown waits for a request in flight: stopped while its body is on
        // the way, the server still answers it, then ends.
        let (_dir, addr, stop, task) = start(Limits::default()).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("{SIGNED_HEAD}Content-Length: 2\r\n\r\n{{").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !task.is_finished(),
            "the server left with a request in flight"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still listening"
        );
        c.write_all(b"}").await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the server ends once its requests are answered")
            .unwrap();

        // No slot free for the whole wait: ThrottlingException.
        let (_dir, addr, stop, task) = start(Limits {
            max_in_flight: 0,
            queue_wait: Duration::from_millis(100),
            ..Limits::default()
        })
        .await;
        let out = exchange(
            addr,
            &[format!("{SIGNED_HEAD}Content-Length: 2\r\n\r\n{{}}").as_bytes()],
            Duration::ZERO,
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("\"__type\":\"ThrottlingException\""), "{out}");
        let _ = stop.send(());
        task.await.unwrap();
    }
}
