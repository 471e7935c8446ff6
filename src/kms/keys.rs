//! Key management: CreateKey, DescribeKey, ListKeys, Enable/DisableKey,
//! ScheduleKeyDeletion, CancelKeyDeletion, UpdateKeyDescription, and tags.

use super::*;

impl Kms {
    pub fn create_key(
        &self,
        caller: &Caller,
        req: CreateKeyRequest,
    ) -> Result<KeyMetadataResponse> {
        self.call(caller, "CreateKey", CallKind::Mutation, &req, |audit| {
            let description = req.description.clone().unwrap_or_default();
            check_description(&description)?;
            let shape = check_key_shape(&req)?;
            let parsed = req.policy.as_deref().map(|p| crate::policy::parse(p, crate::policy::PolicyKind::Key)).transpose()?;
            check_tags(&req.tags, &[])?;
            self.authorize_account_action(caller, "kms:CreateKey", "*")?;
            let now = self.clock.now();
            let k = self.mutate(|cache, tx| {
                let customer = cache
                    .keys
                    .values()
                    .filter(|k| k.manager == KeyManager::Customer)
                    .count();
                if customer >= KEYS_PER_REGION {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("The request would exceed the limit of {KEYS_PER_REGION} customer managed keys in {}.", self.region),
                    ));
                }
                let mut key = self.new_key_record(now, description.clone(), shape.origin);
                key.key_spec = shape.spec;
                key.key_usage = shape.usage;
                if let (Some(text), Some(doc)) = (&req.policy, &parsed) {
                    self.check_new_key_policy(caller, doc, &key, req.bypass_policy_lockout_safety_check)?;
                    key.policy = text.clone();
                }
                key.tags = req.tags.clone();
                cache.put_key(tx, key)
            })?;
            audit.resources.push(k.arn.clone());
            Ok(KeyMetadataResponse {
                key_metadata: metadata(&k),
            })
        })
    }

    pub fn describe_key(
        &self,
        caller: &Caller,
        req: DescribeKeyRequest,
    ) -> Result<KeyMetadataResponse> {
        self.call(caller, "DescribeKey", CallKind::Read, &req, |audit| {
            check_grant_tokens(&req.grant_tokens)?;
            let key = match self.resolve_fresh(caller, &req.key_id, true) {
                Err(e)
                    if e.kind() == ErrorKind::NotFound
                        && PREDEFINED_AWS_ALIASES.contains(&req.key_id.as_str()) =>
                {
                    // DescribeKey on a predefined AWS alias creates the AWS managed key.
                    let service = req.key_id.trim_start_matches("alias/aws/");
                    self.aws_managed_key(service)?;
                    self.resolve_fresh(caller, &req.key_id, true)?
                }
                other => other?,
            };
            audit.resources.push(key.arn.clone());
            let empty = EncryptionContext::new();
            self.authorize(
                caller,
                "kms:DescribeKey",
                &key,
                &self.key_grants(&key.key_id)?,
                &Authz::with_context(&empty, &req.grant_tokens),
            )?;
            Ok(KeyMetadataResponse {
                key_metadata: metadata(&key),
            })
        })
    }

    pub fn list_keys(&self, caller: &Caller, req: ListRequest) -> Result<ListKeysResponse> {
        self.call(caller, "ListKeys", CallKind::Read, &req, |_| {
            self.authorize_account_action(caller, "kms:ListKeys", "*")?;
            let inner = self.fresh()?;
            let mut keys: Vec<KeyListEntry> = inner
                .cache
                .keys
                .values()
                .filter(|k| !k.aws_owned)
                .map(|k| KeyListEntry {
                    key_id: k.key_id.clone(),
                    key_arn: k.arn.clone(),
                })
                .collect();
            drop(inner);
            keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            let (keys, next_marker, truncated) =
                paginate(keys, req.limit, 1000, 100, req.marker.as_deref())?;
            Ok(ListKeysResponse {
                keys,
                next_marker,
                truncated,
            })
        })
    }

    pub fn enable_key(&self, caller: &Caller, req: KeyIdRequest) -> Result<()> {
        self.call(caller, "EnableKey", CallKind::Mutation, &req, |audit| {
            self.update_key(
                caller,
                audit,
                &req.key_id,
                "kms:EnableKey",
                Authz::default(),
                |k, now| {
                    check_manageable(k)?;
                    if k.state == KeyState::Disabled {
                        k.state = KeyState::Enabled;
                        // A key that missed its rotation while disabled rotates now.
                        if k.rotation.enabled && k.rotation.next.is_some_and(|n| n <= now) {
                            k.materials
                                .push(new_material(now, Some(RotationType::Automatic)));
                            k.rotation.next =
                                Some(now + TimeDelta::days(i64::from(k.rotation.period_days)));
                        }
                    }
                    Ok(())
                },
            )
        })
    }

    pub fn disable_key(&self, caller: &Caller, req: KeyIdRequest) -> Result<()> {
        self.call(caller, "DisableKey", CallKind::Mutation, &req, |audit| {
            self.update_key(
                caller,
                audit,
                &req.key_id,
                "kms:DisableKey",
                Authz::default(),
                |k, _| {
                    check_manageable(k)?;
                    k.state = KeyState::Disabled;
                    Ok(())
                },
            )
        })
    }

    pub fn schedule_key_deletion(
        &self,
        caller: &Caller,
        req: ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse> {
        self.call(
            caller,
            "ScheduleKeyDeletion",
            CallKind::Mutation,
            &req,
            |audit| {
                let days = req.pending_window_in_days.unwrap_or(30);
                check_range(days, "pendingWindowInDays", 7, 30)?;
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:ScheduleKeyDeletion",
                    Authz {
                        conditions: vec![(
                            "kms:ScheduleKeyDeletionPendingWindowInDays",
                            vec![days.to_string()],
                        )],
                        ..Default::default()
                    },
                    |k, now| {
                        if k.state == KeyState::PendingDeletion {
                            return Err(invalid_state(k, "is pending deletion."));
                        }
                        let when = now + TimeDelta::days(i64::from(days));
                        k.state = KeyState::PendingDeletion;
                        k.deletion_date = Some(when);
                        k.pending_window_days = Some(days);
                        Ok(ScheduleKeyDeletionResponse {
                            key_id: k.arn.clone(),
                            deletion_date: Time(when),
                            key_state: KeyState::PendingDeletion.as_str().into(),
                            pending_window_in_days: days,
                        })
                    },
                )
            },
        )
    }

    pub fn cancel_key_deletion(&self, caller: &Caller, req: KeyIdRequest) -> Result<KeyIdResponse> {
        self.call(
            caller,
            "CancelKeyDeletion",
            CallKind::Mutation,
            &req,
            |audit| {
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:CancelKeyDeletion",
                    Authz::default(),
                    |k, _| {
                        if k.state != KeyState::PendingDeletion {
                            return Err(invalid_state(k, "is not pending deletion."));
                        }
                        // AWS puts a key whose deletion is cancelled in Disabled, not Enabled.
                        k.state = KeyState::Disabled;
                        k.deletion_date = None;
                        k.pending_window_days = None;
                        Ok(KeyIdResponse {
                            key_id: k.arn.clone(),
                        })
                    },
                )
            },
        )
    }

    pub fn update_key_description(
        &self,
        caller: &Caller,
        req: UpdateKeyDescriptionRequest,
    ) -> Result<()> {
        self.call(
            caller,
            "UpdateKeyDescription",
            CallKind::Mutation,
            &req,
            |audit| {
                check_description(&req.description)?;
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:UpdateKeyDescription",
                    Authz::default(),
                    |k, _| {
                        check_not_pending_deletion(k)?;
                        k.description = req.description.clone();
                        Ok(())
                    },
                )
            },
        )
    }

    pub fn tag_resource(&self, caller: &Caller, req: TagResourceRequest) -> Result<()> {
        self.call(caller, "TagResource", CallKind::Mutation, &req, |audit| {
            self.update_key(
                caller,
                audit,
                &req.key_id,
                "kms:TagResource",
                Authz::default(),
                |k, _| {
                    check_not_pending_deletion(k)?;
                    check_tags(&req.tags, &k.tags)?;
                    for t in &req.tags {
                        match k.tags.iter_mut().find(|x| x.tag_key == t.tag_key) {
                            Some(x) => x.tag_value = t.tag_value.clone(),
                            None => k.tags.push(t.clone()),
                        }
                    }
                    Ok(())
                },
            )
        })
    }

    pub fn untag_resource(&self, caller: &Caller, req: UntagResourceRequest) -> Result<()> {
        self.call(caller, "UntagResource", CallKind::Mutation, &req, |audit| {
            self.update_key(
                caller,
                audit,
                &req.key_id,
                "kms:UntagResource",
                Authz::default(),
                |k, _| {
                    check_not_pending_deletion(k)?;
                    k.tags.retain(|t| !req.tag_keys.contains(&t.tag_key));
                    Ok(())
                },
            )
        })
    }

    pub fn list_resource_tags(
        &self,
        caller: &Caller,
        req: ListResourceTagsRequest,
    ) -> Result<ListResourceTagsResponse> {
        self.call(caller, "ListResourceTags", CallKind::Read, &req, |audit| {
            let key = self.resolve_fresh(caller, &req.key_id, false)?;
            audit.resources.push(key.arn.clone());
            self.authorize(caller, "kms:ListResourceTags", &key, &[], &Authz::default())?;
            let (tags, next_marker, truncated) =
                paginate(key.tags.clone(), req.limit, 50, 50, req.marker.as_deref())?;
            Ok(ListResourceTagsResponse {
                tags,
                next_marker,
                truncated,
            })
        })
    }

    /// A new key policy must name only principals that exist and, unless the caller
    /// bypasses the check, must still let the caller change the policy later.
    fn check_new_key_policy(
        &self,
        caller: &Caller,
        doc: &crate::policy::PolicyDocument,
        key: &KeyRecord,
        bypass: bool,
    ) -> Result<()> {
        for p in doc.named_principals() {
            if let Ok(principal) = crate::iam::Principal::parse(p)
                && !self.principal_exists(&principal)?
            {
                return Err(Error::new(
                    ErrorKind::MalformedPolicyDocument,
                    format!(
                        "Policy contains a statement with one or more invalid principals: {p} does not exist."
                    ),
                ));
            }
        }
        if bypass {
            return Ok(());
        }
        let ctx = self.condition_context(caller, "kms:PutKeyPolicy", key, &Authz::default());
        let req = crate::policy::Request {
            principal: caller.principal.as_request(),
            action: "kms:PutKeyPolicy",
            resource: &key.arn,
            context: &ctx,
        };
        if access::decide(doc, &self.identity_policies(caller)?, &req).is_err() {
            return Err(Error::new(
                ErrorKind::MalformedPolicyDocument,
                "The new key policy will not allow you to update the key policy in the future.",
            ));
        }
        Ok(())
    }

    pub fn put_key_policy(&self, caller: &Caller, req: PutKeyPolicyRequest) -> Result<()> {
        self.call(caller, "PutKeyPolicy", CallKind::Mutation, &req, |audit| {
            check_policy_name(req.policy_name.as_deref())?;
            let doc = crate::policy::parse(&req.policy, crate::policy::PolicyKind::Key)?;
            self.update_key(
                caller,
                audit,
                &req.key_id,
                "kms:PutKeyPolicy",
                Authz::default(),
                |k, _| {
                    self.check_new_key_policy(
                        caller,
                        &doc,
                        k,
                        req.bypass_policy_lockout_safety_check,
                    )?;
                    k.policy = req.policy.clone();
                    Ok(())
                },
            )
        })
    }

    pub fn get_key_policy(
        &self,
        caller: &Caller,
        req: GetKeyPolicyRequest,
    ) -> Result<GetKeyPolicyResponse> {
        self.call(caller, "GetKeyPolicy", CallKind::Read, &req, |audit| {
            check_policy_name(req.policy_name.as_deref())?;
            let key = self.resolve_fresh(caller, &req.key_id, false)?;
            audit.resources.push(key.arn.clone());
            self.authorize(caller, "kms:GetKeyPolicy", &key, &[], &Authz::default())?;
            Ok(GetKeyPolicyResponse {
                policy: key.policy.clone(),
                policy_name: "default".into(),
            })
        })
    }

    pub fn list_key_policies(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Result<ListKeyPoliciesResponse> {
        self.call(caller, "ListKeyPolicies", CallKind::Read, &req, |audit| {
            let key = self.resolve_fresh(caller, &req.key_id, false)?;
            audit.resources.push(key.arn.clone());
            self.authorize(caller, "kms:ListKeyPolicies", &key, &[], &Authz::default())?;
            Ok(ListKeyPoliciesResponse {
                policy_names: vec!["default".into()],
                truncated: false,
            })
        })
    }
}

/// What CreateKey makes: spec, usage and origin.
struct KeyShape {
    spec: KeySpec,
    usage: KeyUsage,
    origin: Origin,
}

/// CreateKey's KeySpec, KeyUsage, Origin and MultiRegion, checked in AWS's order:
/// each value against its enum (ValidationException with the enum's values), then
/// the pair KeySpec/KeyUsage (ValidationException), then what ebsim does not
/// implement yet (UnsupportedOperationException naming what it does).
fn check_key_shape(req: &CreateKeyRequest) -> Result<KeyShape> {
    let usage = req
        .key_usage
        .as_deref()
        .map(|u| KeyUsage::parse(u).ok_or_else(|| enum_error(u, "keyUsage", KeyUsage::NAMES)))
        .transpose()?;
    let spec = match (
        req.key_spec.as_deref(),
        req.customer_master_key_spec.as_deref(),
    ) {
        (Some(_), Some(_)) => {
            return Err(Error::new(
                ErrorKind::Validation,
                "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.",
            ));
        }
        (Some(s), None) => {
            KeySpec::parse(s).ok_or_else(|| enum_error(s, "keySpec", KeySpec::NAMES))?
        }
        // The deprecated member's enum lacks the newer specs.
        (None, Some(s)) => KeySpec::parse(s)
            .filter(|k| k.is_customer_master_key_spec())
            .ok_or_else(|| {
                enum_error(
                    s,
                    "customerMasterKeySpec",
                    &KeySpec::customer_master_key_spec_names(),
                )
            })?,
        (None, None) => KeySpec::SymmetricDefault,
    };
    let origin = match req.origin.as_deref() {
        None => Origin::AwsKms,
        Some(o) => Origin::parse(o).ok_or_else(|| enum_error(o, "origin", Origin::NAMES))?,
    };
    let usage = match usage.or(spec.default_usage()) {
        Some(u) => u,
        None => {
            return Err(Error::new(
                ErrorKind::Validation,
                format!("You must specify a KeyUsage value when KeySpec is {spec}"),
            ));
        }
    };
    if spec.algorithms(usage).is_none() {
        return Err(Error::new(
            ErrorKind::Validation,
            format!("KeyUsage {usage} is not compatible with KeySpec {spec}"),
        ));
    }
    if !spec.is_served() {
        return Err(Error::new(
            ErrorKind::UnsupportedOperation,
            format!(
                "KeySpec {spec} is not supported: ebsim implements {} only.",
                spec::SERVED_KEY_SPECS_IN_WORDS
            ),
        ));
    }
    if origin.is_custom_key_store() {
        return Err(Error::new(
            ErrorKind::UnsupportedOperation,
            format!("Origin {origin} needs a custom key store, which ebsim does not implement."),
        ));
    }
    if req.multi_region == Some(true) {
        return Err(Error::new(
            ErrorKind::UnsupportedOperation,
            "Multi-Region keys are not implemented by ebsim.",
        ));
    }
    Ok(KeyShape {
        spec,
        usage,
        origin,
    })
}

/// A key has exactly one policy, named `default`.
fn check_policy_name(name: Option<&str>) -> Result<()> {
    match name {
        None | Some("default") => Ok(()),
        Some(other) => Err(Error::new(
            ErrorKind::NotFound,
            format!("No such policy exists: {other} (a key's only policy is named default)"),
        )),
    }
}
