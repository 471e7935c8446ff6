//! Policy JSON → [`PolicyDocument`], or MalformedPolicyDocumentException naming
//! the statement and member at fault.

use super::*;
use crate::error::{Error, ErrorKind, Result};
use serde_json::{Map, Value};

/// Key policies (resource-based: every statement names a Principal) or identity
/// policies (attached to a user or role: no Principal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Key,
    Identity,
}

/// The largest policy document AWS accepts for a key policy.
pub const MAX_KEY_POLICY_BYTES: usize = 32 * 1024;

fn malformed(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::MalformedPolicyDocument, msg)
}

/// Parses a policy document.
pub fn parse(text: &str, kind: PolicyKind) -> Result<PolicyDocument> {
    if kind == PolicyKind::Key && text.len() > MAX_KEY_POLICY_BYTES {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "The key policy is {} bytes; the limit is {MAX_KEY_POLICY_BYTES}.",
                text.len()
            ),
        ));
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| malformed(format!("The policy is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("The policy must be a JSON object."))?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
            return Err(malformed(format!(
                "The policy has an unknown top-level element '{k}'."
            )));
        }
    }
    let version = opt_string(obj, "Version", "the policy")?;
    if let Some(ver) = &version
        && ver != "2012-10-17"
        && ver != "2008-10-17"
    {
        return Err(malformed(format!(
            "The policy Version '{ver}' is not valid; use 2012-10-17."
        )));
    }
    let id = opt_string(obj, "Id", "the policy")?;
    let statements = match obj.get("Statement") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| statement(s, i + 1, kind))
            .collect::<Result<Vec<_>>>()?,
        Some(s @ Value::Object(_)) => vec![statement(s, 1, kind)?],
        Some(_) => {
            return Err(malformed(
                "Statement must be an object or a list of objects.",
            ));
        }
        None => return Err(malformed("The policy has no Statement.")),
    };
    Ok(PolicyDocument {
        version,
        id,
        statements,
    })
}

fn opt_string(obj: &Map<String, Value>, key: &str, what: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format!("{key} in {what} must be a string."))),
    }
}

/// A string or a non-empty list of strings.
fn strings(v: &Value, what: &str) -> Result<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| malformed(format!("{what} must contain only strings.")))
            })
            .collect(),
        _ => Err(malformed(format!(
            "{what} must be a string or a non-empty list of strings."
        ))),
    }
}

/// Condition values: strings, numbers and booleans (as their text), or lists of them.
fn condition_values(v: &Value, what: &str) -> Result<Vec<String>> {
    let one = |x: &Value| match x {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(malformed(format!(
            "{what} must be a string, number or boolean, or a list of them."
        ))),
    };
    match v {
        Value::Array(a) if !a.is_empty() => a.iter().map(one).collect(),
        Value::Array(_) => Err(malformed(format!("{what} is an empty list."))),
        x => Ok(vec![one(x)?]),
    }
}

fn statement(v: &Value, n: usize, kind: PolicyKind) -> Result<Statement> {
    let obj = v
        .as_object()
        .ok_or_else(|| malformed(format!("Statement {n} must be a JSON object.")))?;
    let sid = opt_string(obj, "Sid", &format!("statement {n}"))?;
    let at = match &sid {
        Some(s) => format!("statement {n} (Sid \"{s}\")"),
        None => format!("statement {n}"),
    };
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "NotPrincipal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return Err(malformed(format!(
                "The policy {at} has an unknown element '{k}'."
            )));
        }
    }
    let effect = match obj.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(other) => {
            return Err(malformed(format!(
                "The policy {at} has Effect {other}; it must be \"Allow\" or \"Deny\"."
            )));
        }
        None => return Err(malformed(format!("The policy {at} has no Effect."))),
    };
    let principal = match (obj.get("Principal"), obj.get("NotPrincipal")) {
        (Some(_), Some(_)) => {
            return Err(malformed(format!(
                "The policy {at} has both Principal and NotPrincipal."
            )));
        }
        (Some(p), None) => Some((false, principals(p, &at)?)),
        (None, Some(p)) => Some((true, principals(p, &at)?)),
        (None, None) => None,
    };
    match (kind, &principal) {
        (PolicyKind::Key, None) => {
            return Err(malformed(format!(
                "The key policy {at} has no Principal; key policies must name one."
            )));
        }
        (PolicyKind::Identity, Some(_)) => {
            return Err(malformed(format!(
                "The identity policy {at} has a Principal; identity policies apply to the user or role they are attached to."
            )));
        }
        _ => {}
    }
    let action = patterns(obj, "Action", "NotAction", &at)?
        .ok_or_else(|| malformed(format!("The policy {at} has no Action or NotAction.")))?;
    for a in &action.values {
        if a != "*" && !a.contains(':') {
            return Err(malformed(format!(
                "The policy {at} has Action '{a}', which is not service:action (kms:Encrypt)."
            )));
        }
    }
    let resource = patterns(obj, "Resource", "NotResource", &at)?;
    if kind == PolicyKind::Identity && resource.is_none() {
        return Err(malformed(format!(
            "The identity policy {at} has no Resource or NotResource."
        )));
    }
    let conditions = match obj.get("Condition") {
        None => Vec::new(),
        Some(c) => conditions(c, &at)?,
    };
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

fn patterns(obj: &Map<String, Value>, yes: &str, no: &str, at: &str) -> Result<Option<Patterns>> {
    match (obj.get(yes), obj.get(no)) {
        (Some(_), Some(_)) => Err(malformed(format!(
            "The policy {at} has both {yes} and {no}."
        ))),
        (Some(v), None) => Ok(Some(Patterns {
            not: false,
            values: strings(v, &format!("{yes} in {at}"))?,
        })),
        (None, Some(v)) => Ok(Some(Patterns {
            not: true,
            values: strings(v, &format!("{no} in {at}"))?,
        })),
        (None, None) => Ok(None),
    }
}

fn principals(v: &Value, at: &str) -> Result<Principals> {
    let map = match v {
        Value::String(s) if s == "*" => return Ok(Principals::Any),
        Value::Object(m) => m,
        _ => {
            return Err(malformed(format!(
                "Principal in {at} must be \"*\" or an object such as {{\"AWS\": \"arn:aws:iam::111122223333:root\"}}."
            )));
        }
    };
    let mut aws = Vec::new();
    let mut service = Vec::new();
    for (k, v) in map {
        let list = strings(v, &format!("Principal {k} in {at}"))?;
        match k.as_str() {
            "AWS" => {
                for p in &list {
                    check_aws_principal(p, at)?;
                }
                if list.iter().any(|p| p == "*") {
                    return Ok(Principals::Any);
                }
                aws.extend(list);
            }
            "Service" => {
                for s in &list {
                    if !s.ends_with(".amazonaws.com") || s.contains('*') {
                        return Err(malformed(format!(
                            "Principal Service '{s}' in {at} is not a service principal (ec2.amazonaws.com)."
                        )));
                    }
                }
                service.extend(list);
            }
            "Federated" | "CanonicalUser" => {
                return Err(malformed(format!(
                    "Principal type {k} in {at} is not supported by ebsim."
                )));
            }
            other => {
                return Err(malformed(format!(
                    "Principal type '{other}' in {at} is not valid (AWS, Service)."
                )));
            }
        }
    }
    if aws.is_empty() && service.is_empty() {
        return Err(malformed(format!("Principal in {at} names no principal.")));
    }
    Ok(Principals::Some { aws, service })
}

/// `*`, a 12-digit account id, or an IAM/STS ARN of an account root, user, role or
/// assumed-role session. Wildcards are not allowed inside principals.
fn check_aws_principal(p: &str, at: &str) -> Result<()> {
    if p == "*"
        || account_of_root(p)
            .is_some_and(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(());
    }
    let bad = || {
        malformed(format!(
            "Policy contains a statement with one or more invalid principals: '{p}' in {at}."
        ))
    };
    if p.contains('*') {
        return Err(bad());
    }
    let (svc, rest) = if let Some(r) = p.strip_prefix("arn:aws:iam::") {
        ("iam", r)
    } else if let Some(r) = p.strip_prefix("arn:aws:sts::") {
        ("sts", r)
    } else {
        return Err(bad());
    };
    let (account, resource) = rest.split_once(':').ok_or_else(bad)?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ok = match svc {
        "iam" => resource.starts_with("user/") || resource.starts_with("role/"),
        _ => resource.starts_with("assumed-role/") && resource.split('/').count() == 3,
    };
    if ok { Ok(()) } else { Err(bad()) }
}

fn conditions(v: &Value, at: &str) -> Result<Vec<Condition>> {
    let ops = v
        .as_object()
        .ok_or_else(|| malformed(format!("Condition in {at} must be an object.")))?;
    let mut out = Vec::new();
    for (op_name, keys) in ops {
        let (qualifier, rest) = if let Some(r) = op_name.strip_prefix("ForAllValues:") {
            (Some(Qualifier::ForAllValues), r)
        } else if let Some(r) = op_name.strip_prefix("ForAnyValue:") {
            (Some(Qualifier::ForAnyValue), r)
        } else {
            (None, op_name.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) if b != "Null" => (b, true),
            _ => (rest, false),
        };
        let op = Op::parse(base).ok_or_else(|| {
            malformed(format!(
                "Condition operator '{op_name}' in {at} is not valid."
            ))
        })?;
        let keys = keys.as_object().ok_or_else(|| {
            malformed(format!(
                "Condition {op_name} in {at} must map keys to values."
            ))
        })?;
        for (key, vals) in keys {
            let values = condition_values(vals, &format!("Condition {op_name} {key} in {at}"))?;
            for w in &values {
                if !op.accepts(w) {
                    return Err(malformed(format!(
                        "Condition {op_name} {key} in {at}: '{w}' is not a valid value for {base}."
                    )));
                }
            }
            let lower = key.to_ascii_lowercase();
            if qualifier == Some(Qualifier::ForAllValues)
                && lower.starts_with("kms:encryptioncontext:")
            {
                // KMS refuses this combination: it would allow requests with no context.
                return Err(malformed(format!(
                    "OverlyPermissiveCondition: ForAllValues with the single-valued key {key} in {at} allows requests without it; use kms:EncryptionContextKeys or a plain operator."
                )));
            }
            out.push(Condition {
                op,
                qualifier,
                if_exists,
                key: lower,
                values,
            });
        }
    }
    Ok(out)
}
