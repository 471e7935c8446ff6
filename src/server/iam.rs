//! IAM over the Query protocol: `Action=CreateUser&Version=2010-05-08&UserName=…`
//! in, XML in `https://iam.amazonaws.com/doc/2010-05-08/` out, for the operations
//! of the service layer's IAM table (users, roles, inline policies, access keys).
//!
//! IAM's XML carries policy documents as URL-encoded JSON text (the SDKs decode
//! them); the service layer gives them as JSON, so they are encoded here.

use super::sigv4::uri_encode;
use super::sts::query_members;
use crate::error::Error;
use crate::service::iam::IamRequest;
use crate::service::{RequestContext, Services};
use serde_json::Value;

pub const NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
pub const VERSION: &str = "2010-05-08";

/// Members whose value is a policy document.
const DOCUMENTS: &[&str] = &["PolicyDocument", "AssumeRolePolicyDocument"];

/// Rewrites policy documents (JSON values) as IAM's wire has them: the JSON text,
/// URL-encoded.
fn encode_documents(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if DOCUMENTS.contains(&k.as_str()) {
                    let text = match &*v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    *v = Value::String(uri_encode(&text, false));
                } else {
                    encode_documents(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(encode_documents),
        _ => {}
    }
}

/// Runs one IAM request; its operation name and result members (`null` for an
/// empty result).
pub fn call(
    services: &Services,
    ctx: &RequestContext,
    params: &[(String, String)],
) -> Result<(String, Value), Error> {
    let (action, body) = query_members(params, VERSION, &[])?;
    let req = IamRequest::from_json(&action, body)?;
    let op = req.name().to_string();
    let mut out = services.iam(ctx, req)?;
    encode_documents(&mut out);
    // IAM's lists say whether they are complete.
    if let Value::Object(m) = &mut out
        && op.starts_with("List")
        && !m.contains_key("IsTruncated")
    {
        m.insert("IsTruncated".into(), Value::Bool(false));
    }
    Ok((op, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_go_url_encoded() {
        let mut v = serde_json::json!({"Role": {"RoleName": "R", "AssumeRolePolicyDocument": {"Version": "2012-10-17"}}, "PolicyDocument": "{\"a\": 1}"});
        encode_documents(&mut v);
        assert_eq!(
            v["Role"]["AssumeRolePolicyDocument"],
            "%7B%22Version%22%3A%222012-10-17%22%7D"
        );
        assert_eq!(v["PolicyDocument"], "%7B%22a%22%3A%201%7D");
        assert_eq!(v["Role"]["RoleName"], "R");
    }
}
