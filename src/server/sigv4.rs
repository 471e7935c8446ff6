//! AWS Signature Version 4, verified: the `Authorization` header
//! (`AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
//! SignedHeaders=…, Signature=…`) or a presigned query string (`X-Amz-Algorithm`,
//! `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`,
//! `X-Amz-Signature`).
//!
//! The signature is recomputed over the request as received (canonical request,
//! string to sign, the derived signing key) and compared in constant time. The
//! payload hash in it is always the received body's SHA-256: a client's
//! `x-amz-content-sha256` is not taken on trust (and `UNSIGNED-PAYLOAD`, an S3
//! form, does not verify) — with one exception, the EBS direct APIs'
//! PutSnapshotBlock (its model's `authtype: v4-unsigned-body`), whose block is
//! bound to the signature by the signed `x-amz-checksum` header instead, which
//! the service checks against the data ([`unsigned_body_allowed`]). This
//! is written on hmac + sha2 rather than the aws-sigv4 crate: aws-sigv4 signs a
//! request it is given, choosing the headers to sign itself, while a verifier must
//! sign exactly the headers the client listed in `SignedHeaders`, with the values
//! and the query string as they arrived; it also pulls in the SDK's runtime
//! crates for what is ~150 lines here.
//!
//! The time rules: a request's `X-Amz-Date` must be within 15 minutes of the
//! server's wall clock (the client signs with its own real clock, so ebsim's
//! movable clock is not used here); a presigned URL is good from its date for
//! `X-Amz-Expires` seconds (at most 7 days).

use crate::crypto::SecretBytes;
use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's date may be from the server's clock.
pub const MAX_SKEW_MINUTES: i64 = 15;
/// The longest a presigned URL may be valid.
pub const MAX_PRESIGN_SECONDS: i64 = 604_800;

/// Why a request's signature was not accepted; each protocol names it its own way
/// ([`AuthError::code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header and no presigned query.
    Missing,
    /// The header or query is there but cannot be read.
    Incomplete(String),
    /// No such access key (or an inactive one).
    UnknownKey,
    /// The signature does not match.
    BadSignature(String),
    /// The request's date is too far from now, or a presigned URL has expired.
    Expired(String),
    /// A session token that has expired.
    TokenExpired,
}

/// The wire protocols, which name the same failures differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AWS JSON 1.1 (KMS, CloudTrail).
    Json,
    /// The Query protocol of STS and IAM.
    IamQuery,
    /// EC2's Query protocol.
    Ec2Query,
    /// REST-JSON (the EBS direct APIs): JSON's codes, in the `x-amzn-ErrorType`
    /// header, refused with 403.
    RestJson,
}

impl AuthError {
    /// The error code, HTTP status and message `protocol` sends.
    pub fn code(&self, protocol: Protocol) -> (&'static str, u16, String) {
        if protocol == Protocol::RestJson {
            let (code, _, message) = self.code(Protocol::Json);
            return (code, 403, message);
        }
        use AuthError::*;
        use Protocol::*;
        const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
        const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
        match (self, protocol) {
            (Missing, Json) => (
                "MissingAuthenticationTokenException",
                400,
                "Missing Authentication Token".into(),
            ),
            (Missing, IamQuery) => (
                "MissingAuthenticationToken",
                403,
                "Request is missing Authentication Token".into(),
            ),
            (Missing, Ec2Query) => (
                "MissingAuthenticationToken",
                401,
                "Request is missing Authentication Token".into(),
            ),
            (Incomplete(m), Json) => ("IncompleteSignatureException", 400, m.clone()),
            (Incomplete(m), _) => ("IncompleteSignature", 400, m.clone()),
            (UnknownKey, Json) => ("UnrecognizedClientException", 400, INVALID_TOKEN.into()),
            (UnknownKey, IamQuery) => ("InvalidClientTokenId", 403, INVALID_TOKEN.into()),
            (UnknownKey, Ec2Query) => (
                "AuthFailure",
                401,
                "AWS was not able to validate the provided access credentials".into(),
            ),
            (BadSignature(m), Json) => ("InvalidSignatureException", 400, format!("{MISMATCH}{m}")),
            (BadSignature(m), IamQuery) => ("SignatureDoesNotMatch", 403, format!("{MISMATCH}{m}")),
            (BadSignature(_), Ec2Query) => (
                "AuthFailure",
                401,
                "AWS was not able to validate the provided access credentials".into(),
            ),
            (Expired(m), Json) => ("InvalidSignatureException", 400, m.clone()),
            (Expired(m), IamQuery) => ("SignatureDoesNotMatch", 403, m.clone()),
            (Expired(m), Ec2Query) => ("RequestExpired", 400, m.clone()),
            (TokenExpired, Json) => (
                "ExpiredTokenException",
                400,
                "The security token included in the request is expired".into(),
            ),
            (TokenExpired, IamQuery) => (
                "ExpiredToken",
                403,
                "The security token included in the request is expired".into(),
            ),
            (TokenExpired, Ec2Query) => (
                "RequestExpired",
                400,
                "The security token included in the request is expired".into(),
            ),
            (_, RestJson) => unreachable!("answered with JSON's codes above"),
        }
    }
}

/// What a request's signature claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// Lower-case header names, as listed.
    pub signed_headers: Vec<String>,
    /// Lower-case hex.
    pub signature: String,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    pub time: DateTime<Utc>,
    /// `X-Amz-Security-Token` (session credentials).
    pub security_token: Option<String>,
    /// Presigned: `X-Amz-Expires` seconds.
    pub expires: Option<i64>,
}

impl Claim {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }
    pub fn presigned(&self) -> bool {
        self.expires.is_some()
    }
}

/// A request as received.
pub struct Received<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn incomplete(m: impl Into<String>) -> AuthError {
    AuthError::Incomplete(m.into())
}

/// `application/x-www-form-urlencoded` / query pairs, percent-decoded.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Percent-decodes `s`; `plus_is_space` for form bodies and query strings.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// SigV4's URI encoding: everything but `A-Za-z0-9-_.~` (and `/` when asked).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    uri_encode_into(&mut out, s, keep_slash);
    out
}

/// [`uri_encode`], appended to `out`.
fn uri_encode_into(out: &mut String, s: &str, keep_slash: bool) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
}

fn parse_amz_date(s: &str) -> Result<DateTime<Utc>, AuthError> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .map(|t| t.and_utc())
        .map_err(|_| {
            incomplete(format!(
                "Invalid X-Amz-Date '{s}': expected the ISO 8601 basic format YYYYMMDD'T'HHMMSS'Z'"
            ))
        })
}

fn parse_credential(cred: &str) -> Result<(String, String, String, String), AuthError> {
    let parts: Vec<&str> = cred.split('/').collect();
    match parts.as_slice() {
        [akid, date, region, service, "aws4_request"]
            if !akid.is_empty() && date.len() == 8 && !region.is_empty() && !service.is_empty() =>
        {
            Ok((
                akid.to_string(),
                date.to_string(),
                region.to_string(),
                service.to_string(),
            ))
        }
        _ => Err(incomplete(format!(
            "Credential should be scoped to a valid region and service, as AKID/YYYYMMDD/REGION/SERVICE/aws4_request, not '{cred}'."
        ))),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Reads what a request's signature claims (header or presigned query).
pub fn parse(req: &Received<'_>) -> Result<Claim, AuthError> {
    if let Some(auth) = header(req.headers, "authorization") {
        return parse_header(auth, req);
    }
    let pairs = req.query.map(query_pairs).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("X-Amz-Algorithm").is_none() && get("X-Amz-Signature").is_none() {
        return Err(AuthError::Missing);
    }
    let need = |k: &str| {
        get(k).ok_or_else(|| {
            incomplete(format!(
                "AWS query-string parameters must include '{k}'. Re-examine the query-string parameters."
            ))
        })
    };
    let algorithm = need("X-Amz-Algorithm")?;
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM})"
        )));
    }
    let (access_key_id, scope_date, region, service) =
        parse_credential(&need("X-Amz-Credential")?)?;
    let amz_date = need("X-Amz-Date")?;
    let expires: i64 = need("X-Amz-Expires")?
        .parse()
        .map_err(|_| incomplete("X-Amz-Expires must be a number of seconds"))?;
    if !(0..=MAX_PRESIGN_SECONDS).contains(&expires) {
        return Err(incomplete(format!(
            "X-Amz-Expires must be between 0 and {MAX_PRESIGN_SECONDS} seconds, not {expires}"
        )));
    }
    let signed_headers = need("X-Amz-SignedHeaders")?
        .split(';')
        .map(|s| s.to_ascii_lowercase())
        .collect();
    Ok(Claim {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature: need("X-Amz-Signature")?.to_ascii_lowercase(),
        time: parse_amz_date(&amz_date)?,
        amz_date,
        security_token: get("X-Amz-Security-Token"),
        expires: Some(expires),
    })
}

fn parse_header(auth: &str, req: &Received<'_>) -> Result<Claim, AuthError> {
    let rest = auth.strip_prefix(ALGORITHM).ok_or_else(|| {
        incomplete(format!(
            "Authorization header requires the {ALGORITHM} algorithm: '{}'",
            auth.split_whitespace().next().unwrap_or("")
        ))
    })?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| {
        incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={auth_start}",
            auth_start = ALGORITHM
        ))
    };
    let (access_key_id, scope_date, region, service) =
        parse_credential(credential.ok_or_else(|| missing("Credential"))?)?;
    let signed_headers: Vec<String> = signed
        .ok_or_else(|| missing("SignedHeaders"))?
        .split(';')
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let amz_date = header(req.headers, "x-amz-date")
        .ok_or_else(|| {
            incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        })?
        .to_string();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("'Host' must be a signed header."));
    }
    Ok(Claim {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature: signature.to_ascii_lowercase(),
        time: parse_amz_date(&amz_date)?,
        amz_date,
        security_token: header(req.headers, "x-amz-security-token").map(String::from),
        expires: None,
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Lower-case hex of `bytes`, appended to `out`. Every request hashes and signs
/// through here: a table, not a format! per byte.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The canonical request for `claim` over `req`, built in one buffer (every
/// authenticated request makes one).
pub fn canonical_request(req: &Received<'_>, claim: &Claim) -> String {
    let mut out = String::with_capacity(256 + req.path.len() + req.query.map_or(0, str::len));
    out.push_str(req.method);
    out.push('\n');
    // The path: each segment URI-encoded again (what every service but S3 signs).
    let path = if req.path.is_empty() { "/" } else { req.path };
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode_into(&mut out, seg, false);
    }
    out.push('\n');
    if let Some(q) = req.query {
        let mut pairs: Vec<(String, String)> = query_pairs(q)
            .into_iter()
            .filter(|(k, _)| !(claim.presigned() && k == "X-Amz-Signature"))
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        pairs.sort();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
    out.push('\n');
    // Each signed header: its values, trimmed, inner runs of white space folded
    // to one space, joined with commas.
    for name in &claim.signed_headers {
        out.push_str(name);
        out.push(':');
        for (i, v) in req.headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = String::from_utf8_lossy(v.as_bytes());
            for (j, word) in v.split_whitespace().enumerate() {
                if j > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        out.push('\n');
    }
    out.push('\n');
    for (i, name) in claim.signed_headers.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
    }
    out.push('\n');
    // Always the body's own hash: a signed `x-amz-content-sha256` that differs
    // (or says UNSIGNED-PAYLOAD, which only S3 accepts) makes the signature
    // fail rather than leave the body unsigned. PutSnapshotBlock aside.
    if unsigned_body_allowed(req, claim) {
        out.push_str(UNSIGNED_PAYLOAD);
    } else {
        push_hex(&mut out, &Sha256::digest(req.body));
    }
    out
}

const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The one request whose body is signed as `UNSIGNED-PAYLOAD`: the EBS direct
/// APIs' PutSnapshotBlock (`PUT` to `ebs`; botocore's model gives it
/// `authtype: v4-unsigned-body`). Its block still cannot be swapped: its
/// SHA-256 is the `x-amz-checksum` header, which must be among the signed
/// headers, and the service refuses data that does not match it.
pub fn unsigned_body_allowed(req: &Received<'_>, claim: &Claim) -> bool {
    let signed = |h: &str| claim.signed_headers.iter().any(|s| s == h);
    claim.service == "ebs"
        && req.method == "PUT"
        && req
            .headers
            .get("x-amz-content-sha256")
            .is_some_and(|v| v.as_bytes() == UNSIGNED_PAYLOAD.as_bytes())
        && signed("x-amz-content-sha256")
        && signed("x-amz-checksum")
}

/// The string to sign for a canonical request.
pub fn string_to_sign(claim: &Claim, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        claim.amz_date,
        claim.scope(),
        hex(&Sha256::digest(canonical.as_bytes()))
    )
}

/// The signature of `string_to_sign` with `secret` over `claim`'s scope.
pub fn signature(secret: &[u8], claim: &Claim, string_to_sign: &str) -> String {
    sign(signing_key(secret, claim).expose(), string_to_sign)
}

/// SigV4's signing key for `claim`'s credential scope: four HMACs from the
/// secret, in locked memory. It depends only on the secret, the date, the
/// region and the service, so a caller may keep it for them (the SDKs do, and
/// so does the server: http.rs).
pub fn signing_key(secret: &[u8], claim: &Claim) -> SecretBytes {
    let mut k = b"AWS4".to_vec();
    k.extend_from_slice(secret);
    let k = zeroize::Zeroizing::new(k);
    let k_date = zeroize::Zeroizing::new(hmac(&k, claim.scope_date.as_bytes()));
    let k_region = zeroize::Zeroizing::new(hmac(&k_date, claim.region.as_bytes()));
    let k_service = zeroize::Zeroizing::new(hmac(&k_region, claim.service.as_bytes()));
    let k_signing = zeroize::Zeroizing::new(hmac(&k_service, b"aws4_request"));
    SecretBytes::from_slice(&k_signing)
}

fn sign(signing_key: &[u8], string_to_sign: &str) -> String {
    hex(&hmac(signing_key, string_to_sign.as_bytes()))
}

/// Checks the request's signature with `secret`, in constant time.
pub fn verify(req: &Received<'_>, claim: &Claim, secret: &[u8]) -> Result<(), AuthError> {
    verify_with_key(req, claim, signing_key(secret, claim).expose())
}

/// Checks the request's signature with the signing key of its scope
/// ([`signing_key`]), in constant time.
pub fn verify_with_key(
    req: &Received<'_>,
    claim: &Claim,
    signing_key: &[u8],
) -> Result<(), AuthError> {
    if !claim.amz_date.starts_with(&claim.scope_date) {
        return Err(AuthError::BadSignature(format!(
            " Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            claim.scope_date,
            &claim.amz_date[..8.min(claim.amz_date.len())]
        )));
    }
    let canonical = canonical_request(req, claim);
    let sts = string_to_sign(claim, &canonical);
    let expected = sign(signing_key, &sts);
    if bool::from(expected.as_bytes().ct_eq(claim.signature.as_bytes())) {
        Ok(())
    } else {
        tracing::debug!(canonical = %canonical, string_to_sign = %sts, "signature mismatch");
        Err(AuthError::BadSignature(String::new()))
    }
}

fn basic(t: &DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Checks the request's time against `now` (the wall clock).
pub fn check_time(claim: &Claim, now: DateTime<Utc>) -> Result<(), AuthError> {
    match claim.expires {
        Some(expires) => {
            let until = claim.time + TimeDelta::seconds(expires);
            if now > until {
                return Err(AuthError::Expired(format!(
                    "Signature expired: {} is now earlier than {} ({} + {expires} sec.)",
                    basic(&until),
                    basic(&now),
                    claim.amz_date
                )));
            }
            if claim.time - now > TimeDelta::minutes(MAX_SKEW_MINUTES) {
                return Err(AuthError::Expired(format!(
                    "Signature not yet current: {} is still later than {} ({} + 15 min.)",
                    claim.amz_date,
                    basic(&(now + TimeDelta::minutes(MAX_SKEW_MINUTES))),
                    basic(&now)
                )));
            }
            Ok(())
        }
        None => {
            let skew = TimeDelta::minutes(MAX_SKEW_MINUTES);
            if claim.time < now - skew {
                return Err(AuthError::Expired(format!(
                    "Signature expired: {} is now earlier than {} ({} - 15 min.)",
                    claim.amz_date,
                    basic(&(now - skew)),
                    basic(&now)
                )));
            }
            if claim.time > now + skew {
                return Err(AuthError::Expired(format!(
                    "Signature not yet current: {} is still later than {} ({} + 15 min.)",
                    claim.amz_date,
                    basic(&(now + skew)),
                    basic(&now)
                )));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's published SigV4 example (the IAM ListUsers GET request of the
    // "Signature Version 4 signing process" guide): its canonical request's hash
    // and its signature.
    #[test]
    fn matches_the_published_example() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        h.insert("host", "iam.amazonaws.com".parse().unwrap());
        h.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                .parse()
                .unwrap(),
        );
        let req = Received {
            method: "GET",
            path: "/",
            query: Some("Action=ListUsers&Version=2010-05-08"),
            headers: &h,
            body: b"",
        };
        let claim = parse(&req).unwrap();
        assert_eq!(claim.scope(), "20150830/us-east-1/iam/aws4_request");
        let canonical = canonical_request(&req, &claim);
        assert_eq!(
            hex(&Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let secret = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        verify(&req, &claim, secret).unwrap();
        assert_eq!(
            verify(&req, &claim, b"wrong").unwrap_err(),
            AuthError::BadSignature(String::new())
        );
        let now = claim.time + TimeDelta::minutes(10);
        check_time(&claim, now).unwrap();
        let late = claim.time + TimeDelta::minutes(16);
        let e = check_time(&claim, late).unwrap_err();
        assert_eq!(e.code(Protocol::Json).0, "InvalidSignatureException");
        assert_eq!(e.code(Protocol::Ec2Query).0, "RequestExpired");
        assert!(
            matches!(e, AuthError::Expired(m) if m.starts_with("Signature expired: 20150830T123600Z"))
        );
    }

    #[test]
    fn refuses_unreadable_authorization() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let req = |h: &HeaderMap| {
            parse(&Received {
                method: "POST",
                path: "/",
                query: None,
                headers: h,
                body: b"",
            })
        };
        assert_eq!(req(&h).unwrap_err(), AuthError::Missing);
        for bad in [
            "AWS4-HMAC-SHA256 Credential=AK/2015/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date, Signature=00",
            "AWS Something",
        ] {
            h.insert("authorization", bad.parse().unwrap());
            let e = req(&h).unwrap_err();
            assert!(matches!(e, AuthError::Incomplete(_)), "{bad}: {e:?}");
            assert_eq!(e.code(Protocol::Json).0, "IncompleteSignatureException");
        }
    }

    #[test]
    fn the_body_is_always_signed() {
        let mut h = HeaderMap::new();
        h.insert("host", "kms".parse().unwrap());
        h.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        h.insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
        let claim = Claim {
            access_key_id: "AK".into(),
            scope_date: "20150830".into(),
            region: "us-east-1".into(),
            service: "kms".into(),
            signed_headers: vec![
                "host".into(),
                "x-amz-content-sha256".into(),
                "x-amz-date".into(),
            ],
            signature: String::new(),
            amz_date: "20150830T123600Z".into(),
            time: parse_amz_date("20150830T123600Z").unwrap(),
            security_token: None,
            expires: None,
        };
        let req = |body: &'static [u8]| Received {
            method: "POST",
            path: "/",
            query: None,
            headers: &h,
            body,
        };
        // Signed as the client would with UNSIGNED-PAYLOAD; a verifier that took
        // the header's word would accept any body.
        let canonical = canonical_request(&req(b"{}"), &claim);
        assert!(
            canonical.ends_with(&hex(&Sha256::digest(b"{}"))),
            "{canonical}"
        );
        let unsigned = canonical.replace(&hex(&Sha256::digest(b"{}")), "UNSIGNED-PAYLOAD");
        let claim = Claim {
            signature: signature(b"secret", &claim, &string_to_sign(&claim, &unsigned)),
            ..claim
        };
        assert!(verify(&req(b"{}"), &claim, b"secret").is_err());

        // PutSnapshotBlock to ebs with a signed x-amz-checksum: UNSIGNED-PAYLOAD
        // is how botocore signs it; anything else, or without the checksum
        // signed, is not.
        let mut h = h.clone();
        h.insert("x-amz-checksum", "c2hh".parse().unwrap());
        let mut claim = Claim {
            service: "ebs".into(),
            ..claim
        };
        fn put(h: &HeaderMap) -> Received<'_> {
            Received {
                method: "PUT",
                path: "/snapshots/snap-1/blocks/0",
                query: None,
                headers: h,
                body: b"data",
            }
        }
        assert!(
            !unsigned_body_allowed(&put(&h), &claim),
            "x-amz-checksum unsigned"
        );
        claim.signed_headers.insert(0, "x-amz-checksum".into());
        assert!(unsigned_body_allowed(&put(&h), &claim));
        let canonical = canonical_request(&put(&h), &claim);
        assert!(canonical.ends_with("\nUNSIGNED-PAYLOAD"), "{canonical}");
        assert!(!unsigned_body_allowed(
            &Received {
                method: "POST",
                ..put(&h)
            },
            &claim
        ));
        let kms = Claim {
            service: "kms".into(),
            ..claim.clone()
        };
        assert!(!unsigned_body_allowed(&put(&h), &kms));
    }

    #[test]
    fn encodes_like_sigv4() {
        assert_eq!(uri_encode("a b/c~", false), "a%20b%2Fc~");
        assert_eq!(percent_decode("a%20b+c%2", true), "a b c%2");
        assert_eq!(
            query_pairs("Action=X&Tag.1=a%3Db&Empty"),
            vec![
                ("Action".into(), "X".into()),
                ("Tag.1".into(), "a=b".into()),
                ("Empty".into(), "".into())
            ]
        );
    }
}
