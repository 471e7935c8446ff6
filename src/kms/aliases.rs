//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases (with the
//! predefined AWS aliases).

use super::*;

impl Kms {
    /// Resolves an alias target (key id or key ARN only) inside a transaction.
    fn alias_target(&self, cache: &Cache, caller: &Caller, target: &str) -> Result<Arc<KeyRecord>> {
        if target.is_empty() {
            return Err(Error::validation(
                "null",
                "targetKeyId",
                "Member must not be null",
            ));
        }
        if matches!(parse_key_ref(target)?, KeyRef::Alias { .. }) {
            return Err(Error::new(
                ErrorKind::Validation,
                format!("Aliases must refer to keys. Not aliases: {target}"),
            ));
        }
        let key = self.resolve(cache, caller, target, false)?;
        check_not_pending_deletion(&key)?;
        Ok(key)
    }

    pub fn create_alias(&self, caller: &Caller, req: AliasRequest) -> Result<()> {
        self.call(caller, "CreateAlias", CallKind::Mutation, &req, |audit| {
            validate_alias_name(&req.alias_name, false)?;
            let now = self.clock.now();
            self.mutate(|cache, tx| {
                let key = self.alias_target(cache, caller, &req.target_key_id)?;
                audit.resources.push(key.arn.clone());
                self.authorize(caller, "kms:CreateAlias", &key, &[], &Authz::default())?;
                self.authorize_account_action(
                    caller,
                    "kms:CreateAlias",
                    &alias_arn(&self.region, &self.account_id, &req.alias_name),
                )?;
                if cache.aliases.contains_key(&req.alias_name) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "An alias with the name {} already exists",
                            alias_arn(&self.region, &self.account_id, &req.alias_name)
                        ),
                    ));
                }
                if cache.aliases_of(&key.key_id).count() >= ALIASES_PER_KEY {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("The key {} already has {ALIASES_PER_KEY} aliases.", key.arn),
                    ));
                }
                let rec = AliasRecord {
                    name: req.alias_name.clone(),
                    target_key_id: key.key_id.clone(),
                    creation_date: now,
                    last_updated_date: now,
                };
                tx.put(Kind::Alias, &rec.name, &rec)?;
                cache.aliases.insert(rec.name.clone(), rec);
                Ok(())
            })
        })
    }

    pub fn update_alias(&self, caller: &Caller, req: AliasRequest) -> Result<()> {
        self.call(caller, "UpdateAlias", CallKind::Mutation, &req, |audit| {
            validate_alias_name(&req.alias_name, false)?;
            let now = self.clock.now();
            self.mutate(|cache, tx| {
                let mut rec = cache
                    .aliases
                    .get(&req.alias_name)
                    .cloned()
                    .ok_or_else(|| self.not_found_alias(&req.alias_name))?;
                let key = self.alias_target(cache, caller, &req.target_key_id)?;
                audit.resources.push(key.arn.clone());
                self.authorize(caller, "kms:UpdateAlias", &key, &[], &Authz::default())?;
                self.authorize_account_action(
                    caller,
                    "kms:UpdateAlias",
                    &alias_arn(&self.region, &self.account_id, &req.alias_name),
                )?;
                if let Some(old) = cache.keys.get(&rec.target_key_id) {
                    self.authorize(caller, "kms:UpdateAlias", old, &[], &Authz::default())?;
                }
                rec.target_key_id = key.key_id.clone();
                rec.last_updated_date = now;
                tx.put(Kind::Alias, &rec.name, &rec)?;
                cache.aliases.insert(rec.name.clone(), rec);
                Ok(())
            })
        })
    }

    pub fn delete_alias(&self, caller: &Caller, req: AliasRequest) -> Result<()> {
        self.call(caller, "DeleteAlias", CallKind::Mutation, &req, |audit| {
            validate_alias_name(&req.alias_name, false)?;
            self.mutate(|cache, tx| {
                let rec = cache
                    .aliases
                    .get(&req.alias_name)
                    .cloned()
                    .ok_or_else(|| self.not_found_alias(&req.alias_name))?;
                if let Some(key) = cache.keys.get(&rec.target_key_id) {
                    audit.resources.push(key.arn.clone());
                    self.authorize(caller, "kms:DeleteAlias", key, &[], &Authz::default())?;
                    self.authorize_account_action(
                        caller,
                        "kms:DeleteAlias",
                        &alias_arn(&self.region, &self.account_id, &req.alias_name),
                    )?;
                }
                tx.delete(Kind::Alias, &rec.name)?;
                cache.aliases.remove(&rec.name);
                Ok(())
            })
        })
    }

    pub fn list_aliases(
        &self,
        caller: &Caller,
        req: ListAliasesRequest,
    ) -> Result<ListAliasesResponse> {
        self.call(caller, "ListAliases", CallKind::Read, &req, |audit| {
            self.authorize_account_action(caller, "kms:ListAliases", "*")?;
            let inner = self.fresh()?;
            let filter = match &req.key_id {
                Some(id) => {
                    let k = self.resolve(&inner.cache, caller, id, false)?;
                    audit.resources.push(k.arn.clone());
                    Some(k.key_id.clone())
                }
                None => None,
            };
            let entry = |name: &str, rec: Option<&AliasRecord>| AliasListEntry {
                alias_name: name.to_string(),
                alias_arn: alias_arn(&self.region, &self.account_id, name),
                target_key_id: rec.map(|r| r.target_key_id.clone()),
                creation_date: rec.map(|r| Time(r.creation_date)),
                last_updated_date: rec.map(|r| Time(r.last_updated_date)),
            };
            let mut all: Vec<AliasListEntry> = inner
                .cache
                .aliases
                .values()
                .filter(|a| filter.as_ref().is_none_or(|k| &a.target_key_id == k))
                .map(|a| entry(&a.name, Some(a)))
                .collect();
            if filter.is_none() {
                // AWS lists the predefined AWS aliases even before their keys exist.
                for name in PREDEFINED_AWS_ALIASES {
                    if !inner.cache.aliases.contains_key(*name) {
                        all.push(entry(name, None));
                    }
                }
            }
            drop(inner);
            all.sort_by(|a, b| a.alias_name.cmp(&b.alias_name));
            let (aliases, next_marker, truncated) =
                paginate(all, req.limit, 100, 50, req.marker.as_deref())?;
            Ok(ListAliasesResponse {
                aliases,
                next_marker,
                truncated,
            })
        })
    }
}
