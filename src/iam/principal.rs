//! Principals as ARNs: the account root, IAM users, roles (which act as
//! assumed-role sessions), assumed-role sessions, and AWS service principals.

use crate::error::{Error, ErrorKind, Result};
use crate::policy::RequestPrincipal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Root {
        account: String,
        arn: String,
    },
    User {
        account: String,
        name: String,
        arn: String,
    },
    /// A role session. `role_arn` is the role's IAM ARN, which policies may name.
    AssumedRole {
        account: String,
        role: String,
        session: String,
        arn: String,
        role_arn: String,
    },
    /// `ec2.amazonaws.com` acting on its own.
    Service {
        name: String,
        account: String,
    },
}

fn bad(arn: &str) -> Error {
    Error::new(
        ErrorKind::UnrecognizedClient,
        format!(
            "'{arn}' is not a principal ebsim knows how to act as (arn:aws:iam::ACCOUNT:root, \
             arn:aws:iam::ACCOUNT:user/NAME, arn:aws:iam::ACCOUNT:role/NAME, \
             arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION)"
        ),
    )
}

impl Principal {
    pub fn root(account: &str) -> Self {
        Principal::Root {
            account: account.into(),
            arn: format!("arn:aws:iam::{account}:root"),
        }
    }

    /// Parses a principal ARN. A role ARN becomes a session of that role named
    /// `ebsim` (roles act through sessions in AWS).
    pub fn parse(arn: &str) -> Result<Self> {
        let (service, rest) = if let Some(r) = arn.strip_prefix("arn:aws:iam::") {
            ("iam", r)
        } else if let Some(r) = arn.strip_prefix("arn:aws:sts::") {
            ("sts", r)
        } else {
            return Err(bad(arn));
        };
        let (account, resource) = rest.split_once(':').ok_or_else(|| bad(arn))?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(arn));
        }
        let account = account.to_string();
        let last = |r: &str| r.rsplit('/').next().unwrap_or_default().to_string();
        match service {
            "iam" if resource == "root" => Ok(Principal::root(&account)),
            "iam" if resource.starts_with("user/") && !last(resource).is_empty() => {
                Ok(Principal::User {
                    name: last(resource),
                    arn: arn.to_string(),
                    account,
                })
            }
            "iam" if resource.starts_with("role/") && !last(resource).is_empty() => {
                let role = last(resource);
                Ok(Principal::AssumedRole {
                    arn: format!("arn:aws:sts::{account}:assumed-role/{role}/ebsim"),
                    role_arn: arn.to_string(),
                    session: "ebsim".into(),
                    role,
                    account,
                })
            }
            "sts" => {
                let parts: Vec<&str> = resource.split('/').collect();
                match parts.as_slice() {
                    ["assumed-role", role, session] if !role.is_empty() && !session.is_empty() => {
                        Ok(Principal::AssumedRole {
                            arn: arn.to_string(),
                            role_arn: format!("arn:aws:iam::{account}:role/{role}"),
                            role: role.to_string(),
                            session: session.to_string(),
                            account,
                        })
                    }
                    _ => Err(bad(arn)),
                }
            }
            _ => Err(bad(arn)),
        }
    }

    pub fn account(&self) -> &str {
        match self {
            Principal::Root { account, .. }
            | Principal::User { account, .. }
            | Principal::AssumedRole { account, .. }
            | Principal::Service { account, .. } => account,
        }
    }

    pub fn arn(&self) -> &str {
        match self {
            Principal::Root { arn, .. }
            | Principal::User { arn, .. }
            | Principal::AssumedRole { arn, .. } => arn,
            Principal::Service { name, .. } => name,
        }
    }

    /// CloudTrail's `userIdentity.type`.
    pub fn identity_type(&self) -> &'static str {
        match self {
            Principal::Root { .. } => "Root",
            Principal::User { .. } => "IAMUser",
            Principal::AssumedRole { .. } => "AssumedRole",
            Principal::Service { .. } => "AWSService",
        }
    }

    /// The value `aws:PrincipalArn` has: the role ARN for a session.
    pub fn principal_arn(&self) -> &str {
        match self {
            Principal::AssumedRole { role_arn, .. } => role_arn,
            other => other.arn(),
        }
    }

    pub fn as_request(&self) -> RequestPrincipal<'_> {
        RequestPrincipal {
            arn: self.arn(),
            account_id: self.account(),
            role_arn: match self {
                Principal::AssumedRole { role_arn, .. } => Some(role_arn),
                _ => None,
            },
            is_root: matches!(self, Principal::Root { .. }),
            is_service: matches!(self, Principal::Service { .. }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_principal_form() {
        assert_eq!(
            Principal::parse("arn:aws:iam::111122223333:root").unwrap(),
            Principal::root("111122223333")
        );
        let u = Principal::parse("arn:aws:iam::111122223333:user/ops/alice").unwrap();
        assert!(matches!(&u, Principal::User { name, .. } if name == "alice"));
        assert_eq!(u.identity_type(), "IAMUser");
        let r = Principal::parse("arn:aws:iam::111122223333:role/App").unwrap();
        assert_eq!(r.arn(), "arn:aws:sts::111122223333:assumed-role/App/ebsim");
        assert_eq!(r.principal_arn(), "arn:aws:iam::111122223333:role/App");
        let s = Principal::parse("arn:aws:sts::111122223333:assumed-role/App/job-7").unwrap();
        assert!(matches!(&s, Principal::AssumedRole { session, .. } if session == "job-7"));
        assert_eq!(
            s.as_request().role_arn,
            Some("arn:aws:iam::111122223333:role/App")
        );
        for bad in [
            "alice",
            "arn:aws:iam::12:root",
            "arn:aws:iam::111122223333:group/x",
            "arn:aws:sts::111122223333:assumed-role/App",
            "arn:aws:iam::111122223333:user/",
        ] {
            assert_eq!(
                Principal::parse(bad).unwrap_err().kind(),
                ErrorKind::UnrecognizedClient,
                "{bad}"
            );
        }
    }
}
