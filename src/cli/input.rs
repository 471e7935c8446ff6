//! Parameter values as the AWS CLI v2 reads them.
//!
//! - `file://PATH`: the file's text is the value; `fileb://PATH`: its bytes (blobs).
//! - Blob parameters given inline (or through `file://`) are base64, unless
//!   `--cli-binary-format raw-in-base64-out`, which takes them as raw text.
//! - Maps: shorthand `k1=v1,k2=v2` or JSON `{"k1":"v1"}`.
//! - Lists of structures: shorthand `TagKey=a,TagValue=b` per item, or a JSON list.

use crate::error::{Error, Result};
use crate::kms::api::EncryptionContext;
use base64::Engine;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// `--cli-binary-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum BinaryFormat {
    #[default]
    #[value(name = "base64")]
    Base64,
    #[value(name = "raw-in-base64-out")]
    RawInBase64Out,
}

fn param_error(param: &str, why: impl std::fmt::Display) -> Error {
    Error::usage(format!("Error parsing parameter '--{param}': {why}"))
}

fn load(param: &str, prefix: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        param_error(
            param,
            format!("Unable to load paramfile {prefix}{path}: {e}"),
        )
    })
}

/// A text parameter (`file://` allowed).
pub fn text(param: &str, value: &str) -> Result<String> {
    if let Some(p) = value.strip_prefix("file://") {
        let bytes = load(param, "file://", p)?;
        return String::from_utf8(bytes)
            .map_err(|_| param_error(param, format!("file://{p} is not UTF-8 text")));
    }
    if let Some(p) = value.strip_prefix("fileb://") {
        let bytes = load(param, "fileb://", p)?;
        return String::from_utf8(bytes)
            .map_err(|_| param_error(param, format!("fileb://{p} is not UTF-8 text")));
    }
    Ok(value.to_string())
}

/// A blob parameter.
pub fn blob(param: &str, value: &str, format: BinaryFormat) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(p) = value.strip_prefix("fileb://") {
        return load(param, "fileb://", p).map(Zeroizing::new);
    }
    let text = Zeroizing::new(text(param, value)?);
    match format {
        BinaryFormat::RawInBase64Out => Ok(Zeroizing::new(text.as_bytes().to_vec())),
        BinaryFormat::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim().as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| {
                param_error(
                    param,
                    "Invalid base64 (blob parameters given inline are base64 in AWS CLI v2; \
                     use fileb://FILE for raw bytes or --cli-binary-format raw-in-base64-out)",
                )
            }),
    }
}

/// A string-to-string map (encryption contexts).
pub fn map(param: &str, value: &str) -> Result<EncryptionContext> {
    let text = text(param, value)?;
    let t = text.trim();
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| param_error(param, format!("Invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| param_error(param, "expected a JSON object"))?;
        return obj
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(param_error(
                    param,
                    format!("Invalid type for parameter {k}, value: {other}, type: <class 'int'>, valid types: <class 'str'>"),
                )),
            })
            .collect();
    }
    let mut out = EncryptionContext::new();
    for pair in split_shorthand(t) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            param_error(
                param,
                format!("Expected: '=', received: EOF for input: {t}"),
            )
        })?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Grant constraints: JSON, or the AWS CLI shorthand
/// `EncryptionContextSubset={k=v,k2=v2},EncryptionContextEquals={k=v}`.
pub fn constraints(param: &str, value: &str) -> Result<crate::kms::api::GrantConstraints> {
    let t = text(param, value)?;
    let t = t.trim();
    if t.starts_with('{') {
        return serde_json::from_str(t)
            .map_err(|e| param_error(param, format!("Invalid JSON: {e}")));
    }
    let mut out = crate::kms::api::GrantConstraints::default();
    let mut rest = t;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("={")
            .ok_or_else(|| param_error(param, format!("Expected: '={{', received: {rest}")))?;
        let (inner, tail) = after
            .split_once('}')
            .ok_or_else(|| param_error(param, "Expected: '}', received: EOF"))?;
        let m = if inner.trim().is_empty() {
            EncryptionContext::new()
        } else {
            map(param, inner)?
        };
        match name.trim() {
            "EncryptionContextSubset" => out.encryption_context_subset = Some(m),
            "EncryptionContextEquals" => out.encryption_context_equals = Some(m),
            other => {
                return Err(param_error(
                    param,
                    format!(
                        "Unknown key '{other}', valid choices are: EncryptionContextSubset, EncryptionContextEquals"
                    ),
                ));
            }
        }
        rest = tail.trim_start_matches(',').trim();
    }
    Ok(out)
}

/// EC2 filters: each value is shorthand `Name=status,Values=available,in-use` (every
/// comma-separated item after `Values=` is a value), or the one value is a JSON list.
pub fn filters(param: &str, values: &[String]) -> Result<Vec<crate::ec2::model::Filter>> {
    if values.len() == 1 && text(param, &values[0])?.trim_start().starts_with('[') {
        return structs(param, values);
    }
    values
        .iter()
        .map(|v| {
            let t = text(param, v)?;
            let mut f = crate::ec2::model::Filter::default();
            let mut in_values = false;
            for item in split_shorthand(&t) {
                match item.split_once('=') {
                    Some(("Name", n)) => {
                        f.name = n.to_string();
                        in_values = false;
                    }
                    Some(("Values", v)) => {
                        f.values.push(v.to_string());
                        in_values = true;
                    }
                    _ if in_values => f.values.push(item.clone()),
                    _ => {
                        return Err(param_error(
                            param,
                            format!("Expected: 'Name=...,Values=...', received: {t}"),
                        ));
                    }
                }
            }
            if f.name.is_empty() {
                return Err(param_error(param, format!("Missing Name in: {t}")));
            }
            Ok(f)
        })
        .collect()
}

/// EC2 tag specifications: JSON, or shorthand
/// `ResourceType=volume,Tags=[{Key=k,Value=v},{Key=k2,Value=v2}]`.
pub fn tag_specifications(
    param: &str,
    values: &[String],
) -> Result<Vec<crate::ec2::model::TagSpecification>> {
    use crate::ec2::model::{Tag, TagSpecification};
    if values.len() == 1 && text(param, &values[0])?.trim_start().starts_with('[') {
        return structs(param, values);
    }
    values
        .iter()
        .map(|v| {
            let t = text(param, v)?;
            let bad = || {
                param_error(
                    param,
                    format!(
                        "Expected: 'ResourceType=...,Tags=[{{Key=...,Value=...}}]', received: {t}"
                    ),
                )
            };
            let (head, tags) = match t.split_once("Tags=[") {
                Some((h, rest)) => (h, rest.strip_suffix(']').ok_or_else(bad)?),
                None => (t.as_str(), ""),
            };
            let mut spec = TagSpecification::default();
            for item in head.split(',').filter(|i| !i.trim().is_empty()) {
                match item.trim().split_once('=') {
                    Some(("ResourceType", r)) => spec.resource_type = r.to_string(),
                    _ => return Err(bad()),
                }
            }
            for tag in tags.split('}').map(|x| x.trim_start_matches(',').trim()) {
                if tag.is_empty() {
                    continue;
                }
                let inner = tag.strip_prefix('{').ok_or_else(bad)?;
                let m = map(param, inner)?;
                spec.tags.push(Tag {
                    key: m.get("Key").cloned().ok_or_else(bad)?,
                    value: m.get("Value").cloned().unwrap_or_default(),
                });
            }
            Ok(spec)
        })
        .collect()
}

/// Splits `a=1,b=2` on commas outside quotes.
fn split_shorthand(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            (',', None) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A list of structures: each value is shorthand `Member=v,Member2=v2`, or the one
/// value is a JSON list.
pub fn structs<T: DeserializeOwned>(param: &str, values: &[String]) -> Result<Vec<T>> {
    if values.len() == 1 {
        let t = text(param, &values[0])?;
        if t.trim_start().starts_with('[') {
            return serde_json::from_str(&t)
                .map_err(|e| param_error(param, format!("Invalid JSON: {e}")));
        }
    }
    values
        .iter()
        .map(|v| {
            let fields = map(param, v)?;
            serde_json::from_value(serde_json::to_value(fields).expect("map serializes"))
                .map_err(|e| param_error(param, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_follow_cli_binary_format() {
        assert_eq!(&blob("p", "aGk=", BinaryFormat::Base64).unwrap()[..], b"hi");
        assert!(blob("p", "hi there", BinaryFormat::Base64).is_err());
        assert_eq!(
            &blob("p", "hi there", BinaryFormat::RawInBase64Out).unwrap()[..],
            b"hi there"
        );
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("b");
        std::fs::write(&f, [0u8, 255, 1]).unwrap();
        let v = blob(
            "p",
            &format!("fileb://{}", f.display()),
            BinaryFormat::Base64,
        )
        .unwrap();
        assert_eq!(&v[..], &[0, 255, 1]);
        let e = blob("plaintext", "fileb:///nonexistent/x", BinaryFormat::Base64).unwrap_err();
        assert!(e.message().starts_with(
            "Error parsing parameter '--plaintext': Unable to load paramfile fileb:///nonexistent/x"
        ));
    }

    #[test]
    fn maps_in_shorthand_and_json() {
        let m = map("c", "Department=IT,Project=\"a,b\"").unwrap();
        assert_eq!(m["Department"], "IT");
        assert_eq!(m["Project"], "a,b");
        let j = map("c", r#"{"aws:ebs:id": "vol-1"}"#).unwrap();
        assert_eq!(j["aws:ebs:id"], "vol-1");
        assert!(map("c", "novalue").is_err());
        assert!(map("c", r#"{"a": 1}"#).is_err());
    }

    #[test]
    fn grant_constraints_in_shorthand_and_json() {
        let c = constraints(
            "c",
            "EncryptionContextSubset={aws:ebs:id=vol-1,x=y},EncryptionContextEquals={a=b}",
        )
        .unwrap();
        assert_eq!(c.encryption_context_subset.unwrap()["aws:ebs:id"], "vol-1");
        assert_eq!(c.encryption_context_equals.unwrap()["a"], "b");
        let j = constraints("c", r#"{"EncryptionContextSubset": {"k": "v"}}"#).unwrap();
        assert_eq!(j.encryption_context_subset.unwrap()["k"], "v");
        assert!(constraints("c", "Bogus={a=b}").is_err());
        assert!(constraints("c", "EncryptionContextSubset={a=b").is_err());
    }

    #[test]
    fn ec2_filters_and_tag_specifications() {
        let f = filters(
            "filters",
            &[
                "Name=status,Values=available,in-use".into(),
                "Name=tag:Name,Values=db*".into(),
            ],
        )
        .unwrap();
        assert_eq!(f[0].name, "status");
        assert_eq!(f[0].values, vec!["available", "in-use"]);
        assert_eq!(f[1].values, vec!["db*"]);
        let j = filters(
            "filters",
            &[r#"[{"Name":"encrypted","Values":["true"]}]"#.into()],
        )
        .unwrap();
        assert_eq!(j[0].values, vec!["true"]);
        assert!(filters("filters", &["Values=x".into()]).is_err());
        let t = tag_specifications(
            "tag-specifications",
            &["ResourceType=volume,Tags=[{Key=Name,Value=data},{Key=env,Value=\"a,b\"}]".into()],
        )
        .unwrap();
        assert_eq!(t[0].resource_type, "volume");
        assert_eq!(t[0].tags.len(), 2);
        assert_eq!(t[0].tags[1].value, "a,b");
        assert!(tag_specifications("t", &["ResourceType=volume,Tags=[{Key=a".into()]).is_err());
    }

    #[test]
    fn tag_lists() {
        use crate::kms::api::Tag;
        let t: Vec<Tag> = structs(
            "tags",
            &["TagKey=a,TagValue=1".into(), "TagKey=b,TagValue=2".into()],
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].tag_value, "2");
        let j: Vec<Tag> = structs("tags", &[r#"[{"TagKey":"x","TagValue":""}]"#.into()]).unwrap();
        assert_eq!(j[0].tag_key, "x");
    }
}
