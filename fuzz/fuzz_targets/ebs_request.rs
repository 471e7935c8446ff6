//! The EBS direct APIs' REST-JSON requests as `ebsim serve` reads them: method,
//! path (snapshot ids, block indexes), query string (tokens, page sizes, block
//! indexes), headers (data length, checksum, changed-block count) and body.
//! Typed request or typed error, never a panic.
#![no_main]
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the method; then, split at NULs: the path and query
    // (one URI), header lines, body.
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = [Method::GET, Method::PUT, Method::POST, Method::DELETE][usize::from(m % 4)].clone();
    let mut parts = rest.splitn(3, |b| *b == 0);
    let Ok(target) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in parts.next().unwrap_or_default().split(|b| *b == b'\n') {
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
    let body = parts.next().unwrap_or_default();
    let _ = ebsim::server::ebs::parse(&method, &uri, &headers, body);
});
