//! `ebsim iam …`: users, roles and inline identity policies, with the AWS CLI's
//! parameter names and IAM's response shapes. IAM is global: `--region` is ignored.

use super::{Ctx, input};
use crate::clock::iso8601;
use crate::error::Result;
use crate::iam::{Entity, EntityKind, Iam, NewEntity};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub enum IamCommand {
    /// Creates an IAM user
    CreateUser {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        path: Option<String>,
    },
    /// Describes an IAM user
    GetUser {
        #[arg(long)]
        user_name: String,
    },
    /// Deletes an IAM user (its inline policies must be deleted first)
    DeleteUser {
        #[arg(long)]
        user_name: String,
    },
    /// Lists the account's IAM users
    ListUsers,
    /// Creates an IAM role
    CreateRole {
        #[arg(long)]
        role_name: String,
        /// The trust policy (JSON, or file://FILE)
        #[arg(long)]
        assume_role_policy_document: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        path: Option<String>,
    },
    /// Describes an IAM role
    GetRole {
        #[arg(long)]
        role_name: String,
    },
    /// Deletes an IAM role (its inline policies must be deleted first)
    DeleteRole {
        #[arg(long)]
        role_name: String,
    },
    /// Lists the account's IAM roles
    ListRoles,
    /// Adds or replaces an inline identity policy on a user
    PutUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
        /// JSON, or file://FILE
        #[arg(long)]
        policy_document: String,
    },
    /// Shows one inline policy of a user
    GetUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
    },
    /// Deletes one inline policy of a user
    DeleteUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
    },
    /// Lists a user's inline policy names
    ListUserPolicies {
        #[arg(long)]
        user_name: String,
    },
    /// Adds or replaces an inline identity policy on a role
    PutRolePolicy {
        #[arg(long)]
        role_name: String,
        #[arg(long)]
        policy_name: String,
        /// JSON, or file://FILE
        #[arg(long)]
        policy_document: String,
    },
    /// Shows one inline policy of a role
    GetRolePolicy {
        #[arg(long)]
        role_name: String,
        #[arg(long)]
        policy_name: String,
    },
    /// Deletes one inline policy of a role
    DeleteRolePolicy {
        #[arg(long)]
        role_name: String,
        #[arg(long)]
        policy_name: String,
    },
    /// Lists a role's inline policy names
    ListRolePolicies {
        #[arg(long)]
        role_name: String,
    },
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

fn document(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

pub fn run(ctx: &Ctx, cmd: IamCommand) -> Result<()> {
    use EntityKind::{Role, User};
    use IamCommand as C;
    let iam = Iam::open(&ctx.root)?;
    let who = &ctx.caller.principal;
    let now = ctx.clock.now();
    let (op, out) = match cmd {
        C::CreateUser { user_name, path } => {
            let e = iam.create(
                who,
                &NewEntity {
                    path: path.as_deref(),
                    ..NewEntity::user(&user_name)
                },
                now,
            )?;
            ("CreateUser", json!({"User": entity(User, &e)}))
        }
        C::GetUser { user_name } => (
            "GetUser",
            json!({"User": entity(User, &iam.get_entity(who, User, &user_name)?)}),
        ),
        C::DeleteUser { user_name } => {
            iam.delete(who, User, &user_name)?;
            ("DeleteUser", Value::Null)
        }
        C::ListUsers => {
            let users: Vec<Value> = iam
                .list_entities(who, User)?
                .iter()
                .map(|e| entity(User, e))
                .collect();
            ("ListUsers", json!({"Users": users}))
        }
        C::CreateRole {
            role_name,
            assume_role_policy_document,
            description,
            path,
        } => {
            let trust = input::text("assume-role-policy-document", &assume_role_policy_document)?;
            let new = NewEntity {
                path: path.as_deref(),
                description: description.as_deref(),
                ..NewEntity::role(&role_name, &trust)
            };
            (
                "CreateRole",
                json!({"Role": entity(Role, &iam.create(who, &new, now)?)}),
            )
        }
        C::GetRole { role_name } => (
            "GetRole",
            json!({"Role": entity(Role, &iam.get_entity(who, Role, &role_name)?)}),
        ),
        C::DeleteRole { role_name } => {
            iam.delete(who, Role, &role_name)?;
            ("DeleteRole", Value::Null)
        }
        C::ListRoles => {
            let roles: Vec<Value> = iam
                .list_entities(who, Role)?
                .iter()
                .map(|e| entity(Role, e))
                .collect();
            ("ListRoles", json!({"Roles": roles}))
        }
        C::PutUserPolicy {
            user_name,
            policy_name,
            policy_document,
        } => {
            let doc = input::text("policy-document", &policy_document)?;
            iam.put_policy(who, User, &user_name, &policy_name, &doc)?;
            ("PutUserPolicy", Value::Null)
        }
        C::GetUserPolicy {
            user_name,
            policy_name,
        } => {
            let doc = iam.get_policy(who, User, &user_name, &policy_name)?;
            (
                "GetUserPolicy",
                json!({"UserName": user_name, "PolicyName": policy_name, "PolicyDocument": document(&doc)}),
            )
        }
        C::DeleteUserPolicy {
            user_name,
            policy_name,
        } => {
            iam.delete_policy(who, User, &user_name, &policy_name)?;
            ("DeleteUserPolicy", Value::Null)
        }
        C::ListUserPolicies { user_name } => (
            "ListUserPolicies",
            json!({"PolicyNames": iam.list_policies(who, User, &user_name)?}),
        ),
        C::PutRolePolicy {
            role_name,
            policy_name,
            policy_document,
        } => {
            let doc = input::text("policy-document", &policy_document)?;
            iam.put_policy(who, Role, &role_name, &policy_name, &doc)?;
            ("PutRolePolicy", Value::Null)
        }
        C::GetRolePolicy {
            role_name,
            policy_name,
        } => {
            let doc = iam.get_policy(who, Role, &role_name, &policy_name)?;
            (
                "GetRolePolicy",
                json!({"RoleName": role_name, "PolicyName": policy_name, "PolicyDocument": document(&doc)}),
            )
        }
        C::DeleteRolePolicy {
            role_name,
            policy_name,
        } => {
            iam.delete_policy(who, Role, &role_name, &policy_name)?;
            ("DeleteRolePolicy", Value::Null)
        }
        C::ListRolePolicies { role_name } => (
            "ListRolePolicies",
            json!({"PolicyNames": iam.list_policies(who, Role, &role_name)?}),
        ),
    };
    ctx.print(op, &out)
}
