//! Rotation: Enable/DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand,
//! ListKeyRotations. Automatic rotations themselves happen in `Kms::apply_due`.

use super::*;

impl Kms {
    pub fn enable_key_rotation(
        &self,
        caller: &Caller,
        req: EnableKeyRotationRequest,
    ) -> Result<()> {
        self.call(
            caller,
            "EnableKeyRotation",
            CallKind::Mutation,
            &req,
            |audit| {
                let days = req.rotation_period_in_days.unwrap_or(365);
                check_range(days, "rotationPeriodInDays", 90, 2560)?;
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:EnableKeyRotation",
                    Authz {
                        conditions: vec![("kms:RotationPeriodInDays", vec![days.to_string()])],
                        ..Default::default()
                    },
                    |k, now| {
                        check_rotatable(k)?;
                        let anchor = if k.rotation.enabled {
                            // Changing the period keeps the schedule's anchor: the last
                            // rotation (or when rotation was turned on).
                            k.rotation
                                .next
                                .map(|n| n - TimeDelta::days(i64::from(k.rotation.period_days)))
                        } else {
                            None
                        };
                        let next = anchor.unwrap_or(now) + TimeDelta::days(i64::from(days));
                        k.rotation = Rotation {
                            enabled: true,
                            period_days: days,
                            next: Some(next.max(now)),
                        };
                        Ok(())
                    },
                )
            },
        )
    }

    pub fn disable_key_rotation(&self, caller: &Caller, req: KeyIdRequest) -> Result<()> {
        self.call(
            caller,
            "DisableKeyRotation",
            CallKind::Mutation,
            &req,
            |audit| {
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:DisableKeyRotation",
                    Authz::default(),
                    |k, _| {
                        check_rotatable(k)?;
                        k.rotation.enabled = false;
                        k.rotation.next = None;
                        Ok(())
                    },
                )
            },
        )
    }

    pub fn get_key_rotation_status(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Result<GetKeyRotationStatusResponse> {
        self.call(
            caller,
            "GetKeyRotationStatus",
            CallKind::Read,
            &req,
            |audit| {
                let key = self.resolve_fresh(caller, &req.key_id, false)?;
                audit.resources.push(key.arn.clone());
                self.authorize(
                    caller,
                    "kms:GetKeyRotationStatus",
                    &key,
                    &[],
                    &Authz::default(),
                )?;
                if key.origin == Origin::External {
                    return Err(external_unsupported(&key));
                }
                let r = &key.rotation;
                Ok(GetKeyRotationStatusResponse {
                    key_rotation_enabled: r.enabled,
                    key_id: key.arn.clone(),
                    rotation_period_in_days: r.enabled.then_some(r.period_days),
                    next_rotation_date: r.next.filter(|_| r.enabled).map(Time),
                    on_demand_rotation_start_date: None,
                })
            },
        )
    }

    pub fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Result<KeyIdResponse> {
        self.call(caller, "RotateKeyOnDemand", CallKind::Mutation, &req, |audit| {
            self.update_key(caller, audit, &req.key_id, "kms:RotateKeyOnDemand", Authz::default(), |k, now| {
                check_rotatable(k)?;
                if k.on_demand_rotations >= ON_DEMAND_ROTATION_LIMIT {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("The on-demand rotations limit has been reached for the given key. Limit: {ON_DEMAND_ROTATION_LIMIT}"),
                    ));
                }
                if k.rotation.enabled
                    && k.rotation.next.is_some_and(|n| n - now < TimeDelta::minutes(20))
                {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("{} has an automatic rotation scheduled within 20 minutes.", k.arn),
                    ));
                }
                k.materials.push(new_material(now, Some(RotationType::OnDemand)));
                k.on_demand_rotations += 1;
                Ok(KeyIdResponse {
                    key_id: k.arn.clone(),
                })
            })
        })
    }

    pub fn list_key_rotations(
        &self,
        caller: &Caller,
        req: ListKeyRotationsRequest,
    ) -> Result<ListKeyRotationsResponse> {
        self.call(caller, "ListKeyRotations", CallKind::Read, &req, |audit| {
            let all = match req.include_key_material.as_deref() {
                None | Some("ROTATIONS_ONLY") => false,
                Some("ALL_KEY_MATERIAL") => true,
                Some(other) => {
                    return Err(enum_error(
                        other,
                        "includeKeyMaterial",
                        &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"],
                    ));
                }
            };
            let key = self.resolve_fresh(caller, &req.key_id, false)?;
            audit.resources.push(key.arn.clone());
            self.authorize(caller, "kms:ListKeyRotations", &key, &[], &Authz::default())?;
            if key.origin == Origin::External {
                return Err(external_unsupported(&key));
            }
            let current = key.materials.len().saturating_sub(1);
            let entries: Vec<RotationsListEntry> = key
                .materials
                .iter()
                .enumerate()
                .filter(|(_, m)| all || m.rotation.is_some())
                .map(|(i, m)| RotationsListEntry {
                    key_id: key.arn.clone(),
                    key_material_id: m.id.clone(),
                    key_material_state: if i == current {
                        "CURRENT"
                    } else {
                        "NON_CURRENT"
                    }
                    .into(),
                    rotation_date: m.rotation.map(|_| Time(m.created)),
                    rotation_type: m.rotation.map(|r| {
                        match r {
                            RotationType::Automatic => "AUTOMATIC",
                            RotationType::OnDemand => "ON_DEMAND",
                        }
                        .to_string()
                    }),
                })
                .collect();
            let (rotations, next_marker, truncated) =
                paginate(entries, req.limit, 1000, 100, req.marker.as_deref())?;
            Ok(ListKeyRotationsResponse {
                rotations,
                next_marker,
                truncated,
            })
        })
    }
}
