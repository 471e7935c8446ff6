//! STS over the Query protocol: a form-encoded `POST /` (or a GET's query string)
//! with `Action=<Operation>&Version=2011-06-15&…`; the answer is XML in the
//! `https://sts.amazonaws.com/doc/2011-06-15/` namespace:
//! `<OpResponse><OpResult>…</OpResult><ResponseMetadata><RequestId>…` and, for an
//! error, `<ErrorResponse><Error><Type>Sender</Type><Code>…</Code><Message>…`.
//!
//! A small decoder and writer of its own, for the flat members STS and IAM have
//! (iam.rs uses them too); the EC2 Query codec lives beside it (query.rs) and may
//! take this over.

use crate::error::{Error, ErrorKind};
use crate::service::sts::StsRequest;
use crate::service::{RequestContext, Services};
use serde_json::{Map, Value};

pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
pub const VERSION: &str = "2011-06-15";

/// Escapes text for XML content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Writes a JSON object as XML elements (members in order; nested objects as
/// nested elements; arrays as `<member>` lists).
fn write_members(out: &mut String, v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push_str(&format!("<{k}>"));
                write_members(out, v);
                out.push_str(&format!("</{k}>"));
            }
        }
        Value::Array(a) => {
            for v in a {
                out.push_str("<member>");
                write_members(out, v);
                out.push_str("</member>");
            }
        }
        Value::String(s) => out.push_str(&escape(s)),
        Value::Null => {}
        other => out.push_str(&escape(&other.to_string())),
    }
}

/// A successful answer in the Query protocol's XML, in `namespace` (an empty
/// result, as IAM's Delete… operations have, has no `<…Result>` element).
pub fn response_xml(namespace: &str, operation: &str, result: &Value, request_id: &str) -> String {
    let mut out = format!("<{operation}Response xmlns=\"{namespace}\">\n");
    if !result.is_null() {
        out.push_str(&format!("  <{operation}Result>"));
        write_members(&mut out, result);
        out.push_str(&format!("</{operation}Result>\n"));
    }
    out.push_str(&format!(
        "  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</{operation}Response>\n",
        escape(request_id)
    ));
    out
}

/// An error answer in `namespace` (`Sender` faults for client errors, `Receiver`
/// for ours).
pub fn error_xml(
    namespace: &str,
    code: &str,
    message: &str,
    request_id: &str,
    sender: bool,
) -> String {
    format!(
        "<ErrorResponse xmlns=\"{namespace}\">\n  <Error>\n    <Type>{}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
        if sender { "Sender" } else { "Receiver" },
        escape(code),
        escape(message),
        escape(request_id)
    )
}

/// The members of a Query request, as STS's JSON shapes (numbers where STS has
/// integers); `Action` and `Version` apart.
pub fn members(params: &[(String, String)]) -> Result<(String, Value), Error> {
    query_members(params, VERSION, &["DurationSeconds"])
}

/// The members of a Query request to the API of `version`: strings, but numbers
/// for the `numbers` members; `Action` and `Version` apart.
pub fn query_members(
    params: &[(String, String)],
    version: &str,
    numbers: &[&str],
) -> Result<(String, Value), Error> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let action = get("Action").ok_or_else(|| {
        Error::new(
            ErrorKind::MissingParameter,
            "The request must contain the parameter Action",
        )
    })?;
    if let Some(v) = get("Version")
        && v != version
    {
        return Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!("Unsupported Version '{v}' (this API's is {version})"),
        ));
    }
    let mut m = Map::new();
    for (k, v) in params {
        if k == "Action" || k == "Version" || k.starts_with("X-Amz-") {
            continue;
        }
        let value = if numbers.contains(&k.as_str()) {
            v.parse::<i64>().map(Value::from).map_err(|_| {
                let mut c = k.chars();
                let first = c.next().map(|f| f.to_ascii_lowercase()).unwrap_or_default();
                Error::new(
                    ErrorKind::IamValidation,
                    format!(
                        "1 validation error detected: Value '{v}' at '{first}{}' failed to satisfy constraint: Member must be a number",
                        c.as_str()
                    ),
                )
            })?
        } else {
            Value::String(v.clone())
        };
        m.insert(k.clone(), value);
    }
    Ok((action.to_string(), Value::Object(m)))
}

/// Runs one STS request; its operation name and result members.
pub fn call(
    services: &Services,
    ctx: &RequestContext,
    params: &[(String, String)],
) -> Result<(String, Value), Error> {
    let (action, body) = members(params)?;
    let req = StsRequest::from_json(&action, body).map_err(|e| {
        if e.kind() == ErrorKind::UnknownOperation {
            Error::new(
                ErrorKind::UnknownOperation,
                format!("Could not find operation {action} for version {VERSION}"),
            )
        } else {
            e
        }
    })?;
    let op = req.name().to_string();
    Ok((op, services.sts(ctx, req)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sts_xml() {
        let v = serde_json::json!({"UserId": "AIDA1", "Account": "111122223333", "Arn": "arn:aws:iam::111122223333:user/a&b"});
        let x = response_xml(NAMESPACE, "GetCallerIdentity", &v, "rid");
        assert!(x.starts_with(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        ));
        assert!(x.contains("<UserId>AIDA1</UserId><Account>111122223333</Account><Arn>arn:aws:iam::111122223333:user/a&amp;b</Arn>"));
        assert!(x.contains("<RequestId>rid</RequestId>"));
        let e = error_xml(
            NAMESPACE,
            "InvalidClientTokenId",
            "bad <token>",
            "rid",
            true,
        );
        assert!(response_xml(NAMESPACE, "DeleteUser", &Value::Null, "rid").starts_with(
            "<DeleteUserResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <ResponseMetadata>"
        ));
        assert!(e.contains("<Code>InvalidClientTokenId</Code>") && e.contains("bad &lt;token&gt;"));
    }

    #[test]
    fn reads_query_members() {
        let p = crate::server::sigv4::query_pairs(
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2FR&DurationSeconds=900",
        );
        let (a, m) = members(&p).unwrap();
        assert_eq!(a, "AssumeRole");
        assert_eq!(m["RoleArn"], "arn:aws:iam::111122223333:role/R");
        assert_eq!(m["DurationSeconds"], 900);
        assert!(members(&[]).is_err());
    }
}
