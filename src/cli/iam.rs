//! `ebsim iam …`: users, roles, inline identity policies and access keys, with the AWS CLI's
//! parameter names and IAM's response shapes. IAM is global: `--region` is ignored.

use super::{Ctx, input};
use crate::error::Result;
use crate::service::iam::{AccessKeyRequest, IamRequest, PolicyRequest, RoleRequest, UserRequest};
use clap::Subcommand;

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
    /// Creates an access key (AKIA…) and its secret, shown only now, for a user;
    /// without --user-name, for the caller itself (the account root's own key
    /// when the root calls)
    CreateAccessKey {
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Lists a user's access keys (without --user-name: the caller's own)
    ListAccessKeys {
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Makes an access key Active or Inactive (an inactive key signs nothing)
    UpdateAccessKey {
        #[arg(long)]
        access_key_id: String,
        /// Active or Inactive
        #[arg(long)]
        status: String,
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Deletes an access key
    DeleteAccessKey {
        #[arg(long)]
        access_key_id: String,
        #[arg(long)]
        user_name: Option<String>,
    },
    /// When, for which service and in which region an access key was last used
    GetAccessKeyLastUsed {
        #[arg(long)]
        access_key_id: String,
    },
}

pub fn run(ctx: &Ctx, cmd: IamCommand) -> Result<()> {
    use IamCommand as C;
    use IamRequest as R;
    let user = |user_name: String| UserRequest {
        user_name,
        path: None,
    };
    let role = |role_name: String| RoleRequest {
        role_name,
        ..Default::default()
    };
    let user_policy = |user_name: String, policy_name: String| PolicyRequest {
        user_name,
        policy_name,
        ..Default::default()
    };
    let role_policy = |role_name: String, policy_name: String| PolicyRequest {
        role_name,
        policy_name,
        ..Default::default()
    };
    let req = match cmd {
        C::CreateUser { user_name, path } => R::CreateUser(UserRequest { user_name, path }),
        C::GetUser { user_name } => R::GetUser(user(user_name)),
        C::DeleteUser { user_name } => R::DeleteUser(user(user_name)),
        C::ListUsers => R::ListUsers(Default::default()),
        C::CreateRole {
            role_name,
            assume_role_policy_document,
            description,
            path,
        } => R::CreateRole(RoleRequest {
            role_name,
            path,
            assume_role_policy_document: input::text(
                "assume-role-policy-document",
                &assume_role_policy_document,
            )?,
            description,
        }),
        C::GetRole { role_name } => R::GetRole(role(role_name)),
        C::DeleteRole { role_name } => R::DeleteRole(role(role_name)),
        C::ListRoles => R::ListRoles(Default::default()),
        C::PutUserPolicy {
            user_name,
            policy_name,
            policy_document,
        } => R::PutUserPolicy(PolicyRequest {
            policy_document: input::text("policy-document", &policy_document)?,
            ..user_policy(user_name, policy_name)
        }),
        C::GetUserPolicy {
            user_name,
            policy_name,
        } => R::GetUserPolicy(user_policy(user_name, policy_name)),
        C::DeleteUserPolicy {
            user_name,
            policy_name,
        } => R::DeleteUserPolicy(user_policy(user_name, policy_name)),
        C::ListUserPolicies { user_name } => {
            R::ListUserPolicies(user_policy(user_name, String::new()))
        }
        C::PutRolePolicy {
            role_name,
            policy_name,
            policy_document,
        } => R::PutRolePolicy(PolicyRequest {
            policy_document: input::text("policy-document", &policy_document)?,
            ..role_policy(role_name, policy_name)
        }),
        C::GetRolePolicy {
            role_name,
            policy_name,
        } => R::GetRolePolicy(role_policy(role_name, policy_name)),
        C::DeleteRolePolicy {
            role_name,
            policy_name,
        } => R::DeleteRolePolicy(role_policy(role_name, policy_name)),
        C::ListRolePolicies { role_name } => {
            R::ListRolePolicies(role_policy(role_name, String::new()))
        }
        C::CreateAccessKey { user_name } => R::CreateAccessKey(AccessKeyRequest {
            user_name,
            ..Default::default()
        }),
        C::ListAccessKeys { user_name } => R::ListAccessKeys(AccessKeyRequest {
            user_name,
            ..Default::default()
        }),
        C::UpdateAccessKey {
            access_key_id,
            status,
            user_name,
        } => R::UpdateAccessKey(AccessKeyRequest {
            user_name,
            access_key_id,
            status,
        }),
        C::DeleteAccessKey {
            access_key_id,
            user_name,
        } => R::DeleteAccessKey(AccessKeyRequest {
            user_name,
            access_key_id,
            ..Default::default()
        }),
        C::GetAccessKeyLastUsed { access_key_id } => R::GetAccessKeyLastUsed(AccessKeyRequest {
            access_key_id,
            ..Default::default()
        }),
    };
    let op = req.name();
    let out = ctx.services.iam(&ctx.request_context(), req)?;
    ctx.print(op, &out)
}
