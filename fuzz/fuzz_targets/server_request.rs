//! What `ebsim serve` reads from the network before any service runs: the SigV4
//! `Authorization` header and presigned query string, the canonical request over
//! arbitrary headers, query and body, Query-protocol members, and JSON bodies'
//! timestamps. Typed value or typed error, never a panic.
#![no_main]
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ebsim::server::sigv4::{self, Received};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Three parts, split at the first two NULs: header lines, query, body.
    let mut parts = data.splitn(3, |b| *b == 0);
    let head = parts.next().unwrap_or_default();
    let query = std::str::from_utf8(parts.next().unwrap_or_default()).ok();
    let body = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) {
            headers.append(n, v);
        }
    }
    let req = Received {
        method: "POST",
        path: "/",
        query,
        headers: &headers,
        body,
    };
    if let Ok(claim) = sigv4::parse(&req) {
        let _ = sigv4::verify(&req, &claim, b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let _ = sigv4::check_time(&claim, chrono::Utc::now());
    }
    if let Some(q) = query {
        let pairs = sigv4::query_pairs(q);
        let _ = ebsim::server::sts::members(&pairs);
        let _ = ebsim::server::sts::query_members(&pairs, "2010-05-08", &["MaxItems"]);
    }
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) {
        ebsim::server::json::wire_timestamps(&mut v);
    }
});
