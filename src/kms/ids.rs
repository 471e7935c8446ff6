//! Key identifiers as callers write them: key id, key ARN, alias name, alias ARN.

use crate::error::{Error, ErrorKind, Field, Result};

/// A parsed `KeyId` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key id (UUID, or `mrk-…` for a multi-Region key), lower case, with the region and account of the ARN it came from, if any.
    Key {
        id: String,
        region: Option<String>,
        account: Option<String>,
    },
    /// An alias name (`alias/…`), with the region and account of its ARN, if any.
    Alias {
        name: String,
        region: Option<String>,
        account: Option<String>,
    },
}

pub fn key_arn(region: &str, account: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{key_id}")
}

pub fn alias_arn(region: &str, account: &str, alias: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:{alias}")
}

/// The prefix of a multi-Region key's id.
pub const MULTI_REGION_PREFIX: &str = "mrk-";

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

/// `mrk-` and 32 hex digits: the id every key of one multi-Region key shares.
pub fn is_multi_region_key_id(s: &str) -> bool {
    s.strip_prefix(MULTI_REGION_PREFIX)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A key id as KMS writes it: a UUID (single-Region key) or `mrk-` and 32 hex
/// digits (multi-Region key), lower case.
pub fn is_key_id(s: &str) -> bool {
    is_uuid(s) || is_multi_region_key_id(s)
}

/// A new key id: a random UUID, or for a multi-Region key `mrk-` and 32 random
/// hex digits.
pub fn new_key_id(multi_region: bool) -> String {
    let u = uuid::Uuid::new_v4();
    if multi_region {
        format!("{MULTI_REGION_PREFIX}{}", u.simple())
    } else {
        u.to_string()
    }
}

/// The 16 bytes a key id stands for: the UUID's, or the 32 hex digits after `mrk-`.
pub fn key_id_bytes(s: &str) -> Option<[u8; 16]> {
    if is_uuid(s) {
        return uuid::Uuid::parse_str(s).ok().map(|u| *u.as_bytes());
    }
    let hex = s.strip_prefix(MULTI_REGION_PREFIX)?;
    if !is_multi_region_key_id(s) {
        return None;
    }
    uuid::Uuid::try_parse(hex).ok().map(|u| *u.as_bytes())
}

/// Parses a `KeyId` the way KMS reads it. Unrecognisable ids are NotFoundException
/// (`Invalid keyId …`), malformed ARNs InvalidArnException, as AWS answers.
pub fn parse_key_ref(input: &str) -> Result<KeyRef> {
    if input.is_empty() || input.len() > 2048 {
        return Err(Error::validation(
            input,
            "keyId",
            "Member must have length between 1 and 2048",
        ));
    }
    if let Some(rest) = input.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let bad_arn = || Error::new(ErrorKind::InvalidArn, format!("Invalid arn {input}"));
        if parts.len() != 5 || !parts[0].starts_with("aws") || parts[1] != "kms" {
            return Err(bad_arn());
        }
        let (region, account, resource) = (parts[2], parts[3], parts[4]);
        if crate::home::validate_region(region).is_err()
            || account.len() != 12
            || !account.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad_arn());
        }
        let (region, account) = (Some(region.to_string()), Some(account.to_string()));
        if let Some(id) = resource.strip_prefix("key/") {
            if !is_key_id(id) {
                return Err(
                    Error::new(ErrorKind::NotFound, format!("Invalid keyId {input}"))
                        .with(Field::KeyArn, input),
                );
            }
            return Ok(KeyRef::Key {
                id: id.to_ascii_lowercase(),
                region,
                account,
            });
        }
        if resource.starts_with("alias/") {
            return Ok(KeyRef::Alias {
                name: resource.to_string(),
                region,
                account,
            });
        }
        return Err(bad_arn());
    }
    if input.starts_with("alias/") {
        return Ok(KeyRef::Alias {
            name: input.to_string(),
            region: None,
            account: None,
        });
    }
    if is_key_id(input) {
        return Ok(KeyRef::Key {
            id: input.to_ascii_lowercase(),
            region: None,
            account: None,
        });
    }
    Err(
        Error::new(ErrorKind::NotFound, format!("Invalid keyId {input}"))
            .with(Field::KeyArn, input),
    )
}

/// Checks an alias name: `alias/` then 1–250 of `[A-Za-z0-9/_-]`, not `alias/aws/…`.
pub fn validate_alias_name(name: &str, allow_reserved: bool) -> Result<()> {
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(Error::new(
            ErrorKind::InvalidAliasName,
            format!(
                "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html ({name})"
            ),
        ));
    };
    if name.len() > 256 {
        return Err(Error::validation(
            name,
            "aliasName",
            "Member must have length less than or equal to 256",
        ));
    }
    if rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_' || b == b'-')
    {
        return Err(Error::validation(
            name,
            "aliasName",
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
        ));
    }
    if !allow_reserved && (rest.starts_with("aws/") || rest == "aws") {
        return Err(Error::new(
            ErrorKind::InvalidAliasName,
            format!("Cannot create alias with prefix 'alias/aws/': {name}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn the_four_forms() {
        assert!(
            matches!(parse_key_ref(ID).unwrap(), KeyRef::Key { id, region: None, .. } if id == ID)
        );
        let arn = key_arn("us-west-2", "111122223333", ID);
        assert!(
            matches!(parse_key_ref(&arn).unwrap(), KeyRef::Key { region: Some(r), .. } if r == "us-west-2")
        );
        assert!(
            matches!(parse_key_ref("alias/x").unwrap(), KeyRef::Alias { name, .. } if name == "alias/x")
        );
        let aarn = alias_arn("eu-west-1", "111122223333", "alias/x");
        assert!(
            matches!(parse_key_ref(&aarn).unwrap(), KeyRef::Alias { name, region: Some(_), .. } if name == "alias/x")
        );
    }

    #[test]
    fn bad_ids_get_aws_errors() {
        assert_eq!(
            parse_key_ref("nope").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            parse_key_ref("arn:aws:s3:::bucket").unwrap_err().kind(),
            ErrorKind::InvalidArn
        );
        assert_eq!(
            parse_key_ref("arn:aws:kms:us-east-1:12:key/x")
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArn
        );
        assert_eq!(parse_key_ref("").unwrap_err().kind(), ErrorKind::Validation);
        // The key the caller named travels with the error as structured context.
        assert_eq!(
            parse_key_ref("nope").unwrap_err().field(Field::KeyArn),
            Some("nope")
        );
    }

    const MRK: &str = "mrk-1234abcd12ab34cd56ef1234567890ab";

    /// Multi-Region key ids (`mrk-` and 32 hex digits) parse as key ids, bare or in
    /// an ARN, and are lower-cased like UUIDs; near misses are AWS's NotFound, never
    /// a panic.
    #[test]
    fn multi_region_key_ids() {
        assert!(is_multi_region_key_id(MRK));
        assert!(is_key_id(MRK) && is_key_id(ID));
        assert!(!is_multi_region_key_id(ID));
        assert!(
            matches!(parse_key_ref(MRK).unwrap(), KeyRef::Key { id, region: None, .. } if id == MRK)
        );
        let upper = format!("mrk-{}", MRK[4..].to_ascii_uppercase());
        assert!(matches!(parse_key_ref(&upper).unwrap(), KeyRef::Key { id, .. } if id == MRK));
        let arn = key_arn("ap-northeast-1", "111122223333", MRK);
        assert!(matches!(
            parse_key_ref(&arn).unwrap(),
            KeyRef::Key { id, region: Some(r), account: Some(a) }
                if id == MRK && r == "ap-northeast-1" && a == "111122223333"
        ));
        for bad in [
            "mrk-",
            "mrk-1234",
            "mrk-1234abcd12ab34cd56ef1234567890a",
            "mrk-1234abcd12ab34cd56ef1234567890abc",
            "mrk-1234abcd12ab34cd56ef1234567890ag",
            "mrk-1234abcd-12ab-34cd-56ef-1234567890ab",
            "MRK-1234abcd12ab34cd56ef1234567890ab",
            "mrk-\u{e9}234abcd12ab34cd56ef1234567890a",
        ] {
            assert!(!is_key_id(bad), "{bad}");
            assert_eq!(
                parse_key_ref(bad).unwrap_err().kind(),
                ErrorKind::NotFound,
                "{bad}"
            );
            let arn = key_arn("us-east-1", "111122223333", bad);
            assert_eq!(
                parse_key_ref(&arn).unwrap_err().kind(),
                ErrorKind::NotFound,
                "{arn}"
            );
            assert_eq!(key_id_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn new_ids_and_their_bytes() {
        let single = new_key_id(false);
        let multi = new_key_id(true);
        assert!(is_uuid(&single) && !is_multi_region_key_id(&single));
        assert!(is_multi_region_key_id(&multi), "{multi}");
        assert_eq!(multi, multi.to_ascii_lowercase());
        assert_eq!(
            key_id_bytes(ID).unwrap(),
            key_id_bytes(MRK).unwrap(),
            "the same 16 bytes in either spelling"
        );
        assert_eq!(key_id_bytes(ID).unwrap()[..2], [0x12, 0x34]);
    }

    #[test]
    fn alias_names() {
        validate_alias_name("alias/my-key_1/x", false).unwrap();
        assert_eq!(
            validate_alias_name("my-key", false).unwrap_err().kind(),
            ErrorKind::InvalidAliasName
        );
        assert_eq!(
            validate_alias_name("alias/aws/ebs", false)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidAliasName
        );
        validate_alias_name("alias/aws/ebs", true).unwrap();
        assert_eq!(
            validate_alias_name("alias/", false).unwrap_err().kind(),
            ErrorKind::Validation
        );
        assert_eq!(
            validate_alias_name("alias/a b", false).unwrap_err().kind(),
            ErrorKind::Validation
        );
    }
}
