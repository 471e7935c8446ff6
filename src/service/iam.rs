//! IAM's operation table: users, roles and their inline identity policies, with
//! IAM's member names (requests) and response shapes.

use super::{serialization_error, unknown_operation};
use crate::clock::{Timestamp, iso8601};
use crate::error::Result;
use crate::iam::access_keys::{AccessKey, KeyStatus};
use crate::iam::{Entity, EntityKind, Iam, NewEntity};
use crate::kms::access::Caller;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserRequest {
    pub user_name: String,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RoleRequest {
    pub role_name: String,
    pub path: Option<String>,
    pub assume_role_policy_document: String,
    pub description: Option<String>,
}

/// An inline policy of a user (`UserName`) or a role (`RoleName`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicyRequest {
    pub user_name: String,
    pub role_name: String,
    pub policy_name: String,
    pub policy_document: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListRequest {}

/// The access-key operations' members: `UserName` (absent: the caller's own
/// keys, the root's for the root), `AccessKeyId`, `Status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AccessKeyRequest {
    pub user_name: Option<String>,
    pub access_key_id: String,
    pub status: String,
}

macro_rules! operations {
    ($( $variant:ident => $name:literal ($req:ty); )*) => {
        /// One IAM request, in IAM's member names.
        #[derive(Debug, Clone)]
        pub enum IamRequest {
            $( $variant($req), )*
        }

        /// Every IAM operation ebsim serves.
        pub const OPERATIONS: &[&str] = &[$( $name, )*];

        impl IamRequest {
            pub fn name(&self) -> &'static str {
                match self {
                    $( IamRequest::$variant(_) => $name, )*
                }
            }

            /// Reads a request from its operation name and a body in IAM's member names.
            pub fn from_json(name: &str, body: Value) -> Result<Self> {
                match name {
                    $( $name => serde_json::from_value(body)
                        .map(IamRequest::$variant)
                        .map_err(|e| serialization_error(name, e)), )*
                    _ => Err(unknown_operation("IAM", name)),
                }
            }
        }
    };
}

operations! {
    CreateUser => "CreateUser" (UserRequest);
    GetUser => "GetUser" (UserRequest);
    DeleteUser => "DeleteUser" (UserRequest);
    ListUsers => "ListUsers" (ListRequest);
    CreateRole => "CreateRole" (RoleRequest);
    GetRole => "GetRole" (RoleRequest);
    DeleteRole => "DeleteRole" (RoleRequest);
    ListRoles => "ListRoles" (ListRequest);
    PutUserPolicy => "PutUserPolicy" (PolicyRequest);
    GetUserPolicy => "GetUserPolicy" (PolicyRequest);
    DeleteUserPolicy => "DeleteUserPolicy" (PolicyRequest);
    ListUserPolicies => "ListUserPolicies" (PolicyRequest);
    PutRolePolicy => "PutRolePolicy" (PolicyRequest);
    GetRolePolicy => "GetRolePolicy" (PolicyRequest);
    DeleteRolePolicy => "DeleteRolePolicy" (PolicyRequest);
    ListRolePolicies => "ListRolePolicies" (PolicyRequest);
    CreateAccessKey => "CreateAccessKey" (AccessKeyRequest);
    ListAccessKeys => "ListAccessKeys" (AccessKeyRequest);
    UpdateAccessKey => "UpdateAccessKey" (AccessKeyRequest);
    DeleteAccessKey => "DeleteAccessKey" (AccessKeyRequest);
    GetAccessKeyLastUsed => "GetAccessKeyLastUsed" (AccessKeyRequest);
}

/// IAM's `AccessKeyMetadata` (a root key has no `UserName`).
fn key_metadata(k: &AccessKey) -> Value {
    let mut v = json!({"AccessKeyId": k.access_key_id, "Status": k.status.as_str(), "CreateDate": iso8601(&k.created)});
    if let Some(u) = &k.user_name {
        v["UserName"] = json!(u);
    }
    v
}

/// IAM's shape for a user or role.
fn entity(kind: EntityKind, e: &Entity) -> Value {
    let mut v = match kind {
        EntityKind::User => {
            json!({"Path": e.path, "UserName": e.name, "UserId": e.id, "Arn": e.arn, "CreateDate": iso8601(&e.created)})
        }
        EntityKind::Role => {
            json!({"Path": e.path, "RoleName": e.name, "RoleId": e.id, "Arn": e.arn, "CreateDate": iso8601(&e.created)})
        }
    };
    if let Some(doc) = &e.assume_role_policy {
        v["AssumeRolePolicyDocument"] =
            serde_json::from_str(doc).unwrap_or(Value::String(doc.clone()));
    }
    if let Some(d) = &e.description {
        v["Description"] = json!(d);
    }
    v
}

/// A policy document as IAM returns it (parsed JSON; the text if it is not JSON).
fn document(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl IamRequest {
    /// Runs it: the one place every front end's IAM calls go through.
    pub(super) fn run(self, iam: &Iam, caller: &Caller, now: Timestamp) -> Result<Value> {
        use EntityKind::{Role, User};
        let who = &caller.principal;
        Ok(match self {
            IamRequest::CreateUser(r) => {
                let new = NewEntity {
                    path: r.path.as_deref(),
                    ..NewEntity::user(&r.user_name)
                };
                json!({"User": entity(User, &iam.create(who, &new, now)?)})
            }
            IamRequest::GetUser(r) => {
                json!({"User": entity(User, &iam.get_entity(who, User, &r.user_name)?)})
            }
            IamRequest::DeleteUser(r) => {
                iam.delete(who, User, &r.user_name)?;
                Value::Null
            }
            IamRequest::ListUsers(_) => {
                let all: Vec<Value> = iam
                    .list_entities(who, User)?
                    .iter()
                    .map(|e| entity(User, e))
                    .collect();
                json!({"Users": all})
            }
            IamRequest::CreateRole(r) => {
                let new = NewEntity {
                    path: r.path.as_deref(),
                    description: r.description.as_deref(),
                    ..NewEntity::role(&r.role_name, &r.assume_role_policy_document)
                };
                json!({"Role": entity(Role, &iam.create(who, &new, now)?)})
            }
            IamRequest::GetRole(r) => {
                json!({"Role": entity(Role, &iam.get_entity(who, Role, &r.role_name)?)})
            }
            IamRequest::DeleteRole(r) => {
                iam.delete(who, Role, &r.role_name)?;
                Value::Null
            }
            IamRequest::ListRoles(_) => {
                let all: Vec<Value> = iam
                    .list_entities(who, Role)?
                    .iter()
                    .map(|e| entity(Role, e))
                    .collect();
                json!({"Roles": all})
            }
            IamRequest::PutUserPolicy(r) => {
                iam.put_policy(who, User, &r.user_name, &r.policy_name, &r.policy_document)?;
                Value::Null
            }
            IamRequest::GetUserPolicy(r) => {
                let doc = iam.get_policy(who, User, &r.user_name, &r.policy_name)?;
                json!({"UserName": r.user_name, "PolicyName": r.policy_name, "PolicyDocument": document(&doc)})
            }
            IamRequest::DeleteUserPolicy(r) => {
                iam.delete_policy(who, User, &r.user_name, &r.policy_name)?;
                Value::Null
            }
            IamRequest::ListUserPolicies(r) => {
                json!({"PolicyNames": iam.list_policies(who, User, &r.user_name)?})
            }
            IamRequest::PutRolePolicy(r) => {
                iam.put_policy(who, Role, &r.role_name, &r.policy_name, &r.policy_document)?;
                Value::Null
            }
            IamRequest::GetRolePolicy(r) => {
                let doc = iam.get_policy(who, Role, &r.role_name, &r.policy_name)?;
                json!({"RoleName": r.role_name, "PolicyName": r.policy_name, "PolicyDocument": document(&doc)})
            }
            IamRequest::DeleteRolePolicy(r) => {
                iam.delete_policy(who, Role, &r.role_name, &r.policy_name)?;
                Value::Null
            }
            IamRequest::ListRolePolicies(r) => {
                json!({"PolicyNames": iam.list_policies(who, Role, &r.role_name)?})
            }
            IamRequest::CreateAccessKey(r) => {
                let k = iam.create_access_key(who, r.user_name.as_deref(), now)?;
                let mut v = key_metadata(&k.key);
                let secret = std::str::from_utf8(k.secret.expose()).expect("secrets are ASCII");
                v["SecretAccessKey"] = json!(secret);
                json!({"AccessKey": v})
            }
            IamRequest::ListAccessKeys(r) => {
                let keys = iam.list_access_keys(who, r.user_name.as_deref())?;
                let all: Vec<Value> = keys.iter().map(key_metadata).collect();
                let mut v = json!({"AccessKeyMetadata": all, "IsTruncated": false});
                if let Some(u) = r.user_name.filter(|u| !u.is_empty()) {
                    v["UserName"] = json!(u);
                }
                v
            }
            IamRequest::UpdateAccessKey(r) => {
                let status = KeyStatus::parse(&r.status)?;
                iam.update_access_key(who, r.user_name.as_deref(), &r.access_key_id, status)?;
                Value::Null
            }
            IamRequest::DeleteAccessKey(r) => {
                iam.delete_access_key(who, r.user_name.as_deref(), &r.access_key_id)?;
                Value::Null
            }
            IamRequest::GetAccessKeyLastUsed(r) => {
                let k = iam.access_key_last_used(who, &r.access_key_id)?;
                // AWS's answer for a key never used: no date, "N/A" for the rest.
                let used = match &k.last_used {
                    Some(u) => {
                        json!({"LastUsedDate": iso8601(&u.date), "ServiceName": u.service, "Region": u.region})
                    }
                    None => json!({"ServiceName": "N/A", "Region": "N/A"}),
                };
                let mut v = json!({"AccessKeyLastUsed": used});
                if let Some(u) = &k.user_name {
                    v["UserName"] = json!(u);
                }
                v
            }
        })
    }
}
