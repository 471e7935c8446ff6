//! Validation and state checks, with AWS's exact messages.

use super::*;

pub(super) fn invalid_state(k: &KeyRecord, what: &str) -> Error {
    Error::new(ErrorKind::KmsInvalidState, format!("{} {what}", k.arn)).with(Field::KeyArn, &k.arn)
}

pub(super) fn invalid_ciphertext() -> Error {
    // AWS returns this exception with an empty message.
    Error::new(ErrorKind::InvalidCiphertext, "")
}

pub(super) fn external_unsupported(k: &KeyRecord) -> Error {
    Error::new(
        ErrorKind::UnsupportedOperation,
        format!(
            "{} origin is EXTERNAL which is not valid for this operation.",
            k.arn
        ),
    )
}

/// Key-state gate of the cryptographic operations.
pub(super) fn check_usable(k: &KeyRecord) -> Result<()> {
    match k.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(Error::new(
            ErrorKind::Disabled,
            format!("{} is disabled.", k.arn),
        )
        .with(Field::KeyArn, &k.arn)),
        KeyState::PendingDeletion => Err(invalid_state(k, "is pending deletion.")),
        KeyState::PendingImport => Err(invalid_state(k, "is pending import.")),
    }
}

pub(super) fn check_not_pending_deletion(k: &KeyRecord) -> Result<()> {
    if k.state == KeyState::PendingDeletion {
        Err(invalid_state(k, "is pending deletion."))
    } else {
        Ok(())
    }
}

/// EnableKey / DisableKey: not while pending deletion or import.
pub(super) fn check_manageable(k: &KeyRecord) -> Result<()> {
    check_not_pending_deletion(k)?;
    if k.state == KeyState::PendingImport {
        return Err(invalid_state(k, "is pending import."));
    }
    Ok(())
}

/// Rotation operations: an enabled or disabled AWS_KMS key (state table note [7]).
pub(super) fn check_rotatable(k: &KeyRecord) -> Result<()> {
    if k.origin == Origin::External {
        return Err(external_unsupported(k));
    }
    // Rotation makes a new symmetric backing key; AWS rotates only symmetric
    // encryption keys.
    if k.key_spec != KeySpec::SymmetricDefault {
        return Err(Error::new(
            ErrorKind::UnsupportedOperation,
            format!(
                "{} key spec is {} which is not valid for this operation.",
                k.arn, k.key_spec
            ),
        ));
    }
    match k.state {
        KeyState::Disabled => Err(Error::new(
            ErrorKind::Disabled,
            format!("{} is disabled.", k.arn),
        )
        .with(Field::KeyArn, &k.arn)),
        KeyState::PendingDeletion => Err(invalid_state(k, "is pending deletion.")),
        _ => Ok(()),
    }
}

pub(super) fn dry_run(dry: bool) -> Result<()> {
    if dry {
        Err(Error::new(
            ErrorKind::DryRunOperation,
            "The request would have succeeded, but the DryRun option is set.",
        ))
    } else {
        Ok(())
    }
}

pub(super) fn enum_error(value: &str, member: &str, set: &[&str]) -> Error {
    Error::validation(
        value,
        member,
        &format!("Member must satisfy enum value set: [{}]", set.join(", ")),
    )
}

pub(super) fn check_enum(value: &str, member: &str, set: &[&str]) -> Result<()> {
    if set.contains(&value) {
        Ok(())
    } else {
        Err(enum_error(value, member, set))
    }
}

/// An `EncryptionAlgorithm` member: one of AWS's values, and (every key ebsim
/// serves being SYMMETRIC_DEFAULT) the symmetric one.
pub(super) fn check_algorithm(alg: Option<&str>) -> Result<()> {
    let names = spec::EncryptionAlgorithm::NAMES;
    match alg.map(|a| (a, spec::EncryptionAlgorithm::parse(a))) {
        None | Some((_, Some(spec::EncryptionAlgorithm::SymmetricDefault))) => Ok(()),
        Some((a, Some(_))) => Err(Error::new(
            ErrorKind::InvalidKeyUsage,
            format!("The encryption algorithm {a} is not valid for a SYMMETRIC_DEFAULT key."),
        )),
        Some((a, None)) => Err(enum_error(a, "encryptionAlgorithm", names)),
    }
}

/// Key-usage gate of an operation: `operation` (`Encrypt`) needs a key of `usage`.
pub(super) fn check_key_usage(k: &KeyRecord, usage: KeyUsage, operation: &str) -> Result<()> {
    if k.key_usage == usage {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidKeyUsage,
        format!(
            "{} key usage is {} which is not valid for {operation}.",
            k.arn, k.key_usage
        ),
    ))
}

pub(super) fn check_range(v: u32, member: &str, min: u32, max: u32) -> Result<()> {
    if v < min {
        Err(Error::validation(
            v,
            member,
            &format!("Member must have value greater than or equal to {min}"),
        ))
    } else if v > max {
        Err(Error::validation(
            v,
            member,
            &format!("Member must have value less than or equal to {max}"),
        ))
    } else {
        Ok(())
    }
}

/// Length check for a sensitive member: AWS leaves the value out of the message.
pub(super) fn check_len(len: usize, member: &str, min: usize, max: usize) -> Result<()> {
    let c = if len < min {
        format!("Member must have length greater than or equal to {min}")
    } else if len > max {
        format!("Member must have length less than or equal to {max}")
    } else {
        return Ok(());
    };
    Err(Error::new(
        ErrorKind::Validation,
        format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: {c}"
        ),
    ))
}

pub(super) fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > 8192 {
        return Err(Error::new(
            ErrorKind::Validation,
            "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192",
        ));
    }
    Ok(())
}

pub(super) fn check_grant_tokens(tokens: &[String]) -> Result<()> {
    if tokens.len() > 10 {
        return Err(Error::new(
            ErrorKind::Validation,
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10",
        ));
    }
    if tokens.iter().any(|t| t.is_empty() || t.len() > 8192) {
        return Err(Error::new(
            ErrorKind::InvalidGrantToken,
            "Invalid grant token.",
        ));
    }
    Ok(())
}

pub(super) fn check_tags(new: &[Tag], existing: &[Tag]) -> Result<()> {
    for t in new {
        if t.tag_key.is_empty() || t.tag_key.chars().count() > 128 {
            return Err(Error::new(
                ErrorKind::Tag,
                format!("Tag key '{}' must be 1 to 128 characters.", t.tag_key),
            ));
        }
        if t.tag_value.chars().count() > 256 {
            return Err(Error::new(
                ErrorKind::Tag,
                format!(
                    "Tag value for '{}' must be at most 256 characters.",
                    t.tag_key
                ),
            ));
        }
        if t.tag_key.starts_with("aws:") {
            return Err(Error::new(
                ErrorKind::Tag,
                format!("Tags beginning with aws: are reserved: {}", t.tag_key),
            ));
        }
    }
    let mut keys: Vec<&str> = existing
        .iter()
        .chain(new)
        .map(|t| t.tag_key.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.len() > TAGS_PER_KEY {
        return Err(Error::new(
            ErrorKind::Tag,
            format!("A key can have at most {TAGS_PER_KEY} tags."),
        ));
    }
    Ok(())
}

/// Pages `items` with AWS's `Limit`/`Marker`/`NextMarker`/`Truncated`. The marker
/// is opaque to callers (base64 of the next offset).
pub(super) fn paginate<T>(
    items: Vec<T>,
    limit: Option<u32>,
    max: u32,
    default: u32,
    marker: Option<&str>,
) -> Result<(Vec<T>, Option<String>, bool)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let limit = limit.unwrap_or(default);
    check_range(limit, "limit", 1, max)?;
    let start = match marker {
        None => 0,
        Some(m) => b64
            .decode(m)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("ebsim:")?.parse::<usize>().ok())
            .filter(|&n| n <= items.len())
            .ok_or_else(|| Error::new(ErrorKind::InvalidMarker, "Invalid marker"))?,
    };
    let end = (start + limit as usize).min(items.len());
    let truncated = end < items.len();
    let next = truncated.then(|| b64.encode(format!("ebsim:{end}")));
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next, truncated))
}
