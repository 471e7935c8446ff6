//! CreateTags, DeleteTags and DescribeTags on volumes and snapshots.
//!
//! Each is authorized like EC2 (`ec2:CreateTags` / `ec2:DeleteTags` on every
//! resource named, with its `ec2:ResourceTag/…` and the request's
//! `aws:RequestTag/…` and `aws:TagKeys`; `ec2:DescribeTags` on `*`), honours
//! DryRun, and is recorded in CloudTrail. Tag rules are EC2's: keys of 1-128
//! characters not starting with `aws:`, values up to 256, at most 50 tags a
//! resource (`TagLimitExceeded`). A resource id of another kind than `vol-` or
//! `snap-` is `InvalidID`.

use super::authz::Target;
use super::model::*;
use super::{Ec2, dry_run, err, trail};
use crate::error::{ErrorKind, Result};
use crate::kms::access::Caller;
use serde_json::{Value, json};

/// Most tags one resource may carry.
pub const MAX_TAGS: usize = 50;

/// A resource CreateTags and DeleteTags may name.
enum Resource {
    Volume(VolumeRecord),
    Snapshot(SnapshotRecord),
}

impl Resource {
    fn tags(&self) -> &[Tag] {
        match self {
            Resource::Volume(v) => &v.tags,
            Resource::Snapshot(s) => &s.tags,
        }
    }
}

fn check_tags(tags: &[TagRef], creating: bool) -> Result<()> {
    if tags.is_empty() && creating {
        return Err(err(
            ErrorKind::MissingParameter,
            "The request must contain the parameter Tag",
        ));
    }
    for t in tags {
        let chars = t.key.chars().count();
        if chars == 0 || chars > 128 {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "Tag key '{}' must be 1 to 128 characters long (it has {chars}).",
                    t.key
                ),
            ));
        }
        if creating && t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "Tag key '{}': keys starting with 'aws:' are reserved for AWS use.",
                    t.key
                ),
            ));
        }
        if let Some(v) = &t.value
            && v.chars().count() > 256
        {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "The value of tag '{}' is longer than 256 characters.",
                    t.key
                ),
            ));
        }
    }
    Ok(())
}

/// The tags a request names, as policies see them (`aws:RequestTag/…`).
fn as_tags(tags: &[TagRef]) -> Vec<Tag> {
    tags.iter()
        .map(|t| Tag {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        })
        .collect()
}

fn tag_request(resources: &[String], tags: &[TagRef]) -> Value {
    json!({
        "resourcesSet": { "items": resources.iter().map(|r| json!({ "resourceId": r })).collect::<Vec<_>>() },
        "tagSet": { "items": tags.iter().map(|t| json!({ "key": t.key, "value": t.value })).collect::<Vec<_>>() },
    })
}

const FILTERS: &[&str] = &["key", "value", "resource-id", "resource-type"];

impl Ec2 {
    fn resource(&self, id: &str) -> Result<Resource> {
        if id.starts_with("vol-") {
            self.record(id).map(Resource::Volume)
        } else if id.starts_with("snap-") {
            self.snapshot_record(id).map(Resource::Snapshot)
        } else {
            Err(err(
                ErrorKind::InvalidId,
                format!("The ID '{id}' is not valid (ebsim tags volumes and snapshots)"),
            ))
        }
    }

    fn resource_arn(&self, r: &Resource) -> String {
        match r {
            Resource::Volume(v) => self.volume_arn(&v.volume_id),
            Resource::Snapshot(s) => super::authz::snapshot_arn(self.region(), &s.snapshot_id),
        }
    }

    fn resource_target(&self, r: &Resource) -> Target {
        match r {
            Resource::Volume(v) => self.volume_target(v),
            Resource::Snapshot(s) => self.snapshot_target(self.region(), s),
        }
    }

    /// Resolves and authorizes `resources` for `action` with the request's tags.
    fn tag_targets(
        &self,
        caller: &Caller,
        action: &str,
        resources: &[String],
        tags: &[TagRef],
        t: &mut trail::Trail,
    ) -> Result<Vec<Resource>> {
        if resources.is_empty() {
            return Err(err(
                ErrorKind::MissingParameter,
                "The request must contain the parameter ResourceId",
            ));
        }
        let found = resources
            .iter()
            .map(|id| self.resource(id))
            .collect::<Result<Vec<_>>>()?;
        t.resources
            .extend(found.iter().map(|r| self.resource_arn(r)));
        let request_tags = as_tags(tags);
        let targets: Vec<Target> = found
            .iter()
            .map(|r| self.resource_target(r).request_tags(&request_tags))
            .collect();
        self.authorize(caller, action, &targets)?;
        Ok(found)
    }

    /// Applies `change` to the tags of every resource in one transaction.
    fn retag(
        &self,
        found: &[Resource],
        change: impl Fn(&mut Vec<Tag>) -> Result<()>,
    ) -> Result<()> {
        self.write(|tx| {
            let mut snapshots = None;
            for r in found {
                match r {
                    Resource::Volume(v) => {
                        let mut cur = tx
                            .volume(&v.volume_id)?
                            .ok_or_else(|| super::not_found(&v.volume_id))?;
                        change(&mut cur.tags)?;
                        tx.put_volume(&cur)?;
                    }
                    Resource::Snapshot(s) => {
                        if snapshots.is_none() {
                            snapshots = Some(tx.snapshots()?);
                        }
                        let cur = snapshots
                            .as_mut()
                            .expect("read above")
                            .iter_mut()
                            .find(|c| c.snapshot_id == s.snapshot_id)
                            .ok_or_else(|| super::snapshots::snapshot_not_found(&s.snapshot_id))?;
                        change(&mut cur.tags)?;
                        tx.put_snapshot(cur)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// CreateTags: adds or overwrites tags on volumes and snapshots.
    pub fn create_tags(
        &self,
        caller: &Caller,
        resources: &[String],
        tags: &[TagRef],
        dry: bool,
    ) -> Result<()> {
        self.call(
            caller,
            "CreateTags",
            tag_request(resources, tags),
            |t| {
                check_tags(tags, true)?;
                let found = self.tag_targets(caller, "ec2:CreateTags", resources, tags, t)?;
                for r in &found {
                    let mut after: Vec<&str> = r.tags().iter().map(|t| t.key.as_str()).collect();
                    after.extend(tags.iter().map(|t| t.key.as_str()));
                    after.sort_unstable();
                    after.dedup();
                    if after.len() > MAX_TAGS {
                        return Err(err(
                            ErrorKind::TagLimitExceeded,
                            format!(
                                "The maximum number of tags per resource, {MAX_TAGS}, would be exceeded on {}.",
                                self.resource_arn(r)
                            ),
                        ));
                    }
                }
                dry_run(dry)?;
                self.retag(&found, |have| {
                    for t in tags {
                        let value = t.value.clone().unwrap_or_default();
                        match have.iter_mut().find(|h| h.key == t.key) {
                            Some(h) => h.value = value,
                            None => have.push(Tag {
                                key: t.key.clone(),
                                value,
                            }),
                        }
                    }
                    if have.len() > MAX_TAGS {
                        return Err(err(
                            ErrorKind::TagLimitExceeded,
                            format!("The maximum number of tags per resource, {MAX_TAGS}, would be exceeded."),
                        ));
                    }
                    Ok(())
                })
            },
            |_| json!({ "_return": true }),
        )
    }

    /// DeleteTags: removes tags (by key, or by key and value when one is given;
    /// no tags named: every tag) from volumes and snapshots.
    pub fn delete_tags(
        &self,
        caller: &Caller,
        resources: &[String],
        tags: &[TagRef],
        dry: bool,
    ) -> Result<()> {
        self.call(
            caller,
            "DeleteTags",
            tag_request(resources, tags),
            |t| {
                check_tags(tags, false)?;
                let found = self.tag_targets(caller, "ec2:DeleteTags", resources, tags, t)?;
                dry_run(dry)?;
                self.retag(&found, |have| {
                    have.retain(|h| {
                        !tags.is_empty()
                            && !tags.iter().any(|t| {
                                t.key == h.key && t.value.as_ref().is_none_or(|v| *v == h.value)
                            })
                    });
                    Ok(())
                })
            },
            |_| json!({ "_return": true }),
        )
    }

    /// DescribeTags: every tag of the region's volumes and snapshots, filtered,
    /// ordered by resource id then key, a page at a time when MaxResults is given.
    pub fn describe_tags(
        &self,
        caller: &Caller,
        req: DescribeTagsRequest,
    ) -> Result<DescribeTagsResponse> {
        let request = json!({
            "filterSet": trail::filter_set(&req.filters),
            "maxResults": req.max_results,
            "nextToken": req.next_token,
        });
        self.call(
            caller,
            "DescribeTags",
            request,
            |_| {
                self.authorize(caller, "ec2:DescribeTags", &[Target::any()])?;
                for f in &req.filters {
                    if !FILTERS.contains(&f.name.as_str()) {
                        return Err(err(
                            ErrorKind::InvalidParameterValue,
                            format!("The filter '{}' is invalid", f.name),
                        ));
                    }
                }
                super::check_max_results(req.max_results)?;
                let start = req
                    .next_token
                    .as_deref()
                    .map(|t| super::decode_token("tags", t))
                    .transpose()?;
                dry_run(req.dry_run)?;
                self.describe_tags_op(&req, start.as_deref())
            },
            |_| Value::Null,
        )
    }

    fn describe_tags_op(
        &self,
        req: &DescribeTagsRequest,
        start: Option<&str>,
    ) -> Result<DescribeTagsResponse> {
        let (volumes, snapshots) = {
            let store = self.store.lock().expect("ec2 store");
            (store.volumes()?, store.snapshots()?)
        };
        let mut all: Vec<TagDescription> = volumes
            .iter()
            .flat_map(|v| v.tags.iter().map(|t| (v.volume_id.as_str(), "volume", t)))
            .chain(snapshots.iter().flat_map(|s| {
                s.tags
                    .iter()
                    .map(|t| (s.snapshot_id.as_str(), "snapshot", t))
            }))
            .map(|(id, kind, t)| TagDescription {
                key: t.key.clone(),
                resource_id: id.to_string(),
                resource_type: kind.to_string(),
                value: t.value.clone(),
            })
            .collect();
        all.sort_by(|a, b| (&a.resource_id, &a.key).cmp(&(&b.resource_id, &b.key)));
        // The token names the last tag of the previous page: `<resource id> <key>`
        // (ids have no spaces).
        let position = |t: &TagDescription| format!("{} {}", t.resource_id, t.key);
        let matches = |t: &TagDescription, f: &Filter| {
            let have = match f.name.as_str() {
                "key" => &t.key,
                "value" => &t.value,
                "resource-id" => &t.resource_id,
                _ => &t.resource_type,
            };
            f.values.iter().any(|w| super::glob(w, have))
        };
        let mut out = Vec::new();
        let mut next_token = None;
        for t in all {
            if start.is_some_and(|s| {
                (t.resource_id.as_str(), t.key.as_str()) <= s.split_once(' ').unwrap_or((s, ""))
            }) {
                continue;
            }
            if !req.filters.iter().all(|f| matches(&t, f)) {
                continue;
            }
            if let Some(m) = req.max_results
                && out.len() == m as usize
            {
                next_token = out
                    .last()
                    .map(|l| super::encode_token("tags", &position(l)));
                break;
            }
            out.push(t);
        }
        Ok(DescribeTagsResponse {
            tags: out,
            next_token,
        })
    }
}
