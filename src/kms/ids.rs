//! Key identifiers as callers write them: key id, key ARN, alias name, alias ARN.

use crate::error::{Error, ErrorKind, Result};

/// A parsed `KeyId` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key id (UUID), with the region and account of the ARN it came from, if any.
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

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
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
            if !is_uuid(id) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("Invalid keyId {input}"),
                ));
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
    if is_uuid(input) {
        return Ok(KeyRef::Key {
            id: input.to_ascii_lowercase(),
            region: None,
            account: None,
        });
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!("Invalid keyId {input}"),
    ))
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
