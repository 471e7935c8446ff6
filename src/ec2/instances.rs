//! Simulated instances: RunInstances, DescribeInstances, TerminateInstances.
//!
//! AttachVolume needs an instance to attach to. No VM runs behind an ebsim
//! instance: it is a record in `ec2.db` (its id, image, type, zone, tags, state)
//! whose devices are what ebsim serves for the volumes attached to it, under a
//! directory of its own on this host (the service layer's `attach` module, through
//! the host, makes and removes it). docs/EBS.md §8 describes the choice.
//!
//! - RunInstances makes `MinCount`..`MaxCount` (ebsim makes `MaxCount`) running
//!   instances in one reservation. Any well-formed `ami-` id is accepted: there
//!   are no images to check it against.
//! - DescribeInstances shows them, terminated ones too, with the volumes attached
//!   to each as its block device mappings.
//! - TerminateInstances ends them: the volumes attached to one are detached first
//!   (the service layer stops their attachment processes; ebsim's volumes are
//!   never deleted on termination) and it stays visible as `terminated`.
//!
//! Each call is authorized with EC2's actions (`ec2:RunInstances` on
//! `instance/*` and the image, `ec2:DescribeInstances`, `ec2:TerminateInstances`
//! on each instance) and recorded as CloudTrail records EC2's.

use super::authz::{Target, instance_arn};
use super::model::*;
use super::trail;
use super::{
    Ec2, check_filter_name, check_max_results, check_resource_id, decode_token, dry_run,
    encode_token, err, new_id, tag_filter_values,
};
use crate::error::{ErrorKind, Result};
use crate::kms::access::Caller;
use serde_json::{Value, json};

/// The most instances one RunInstances call makes.
const MAX_PER_CALL: u32 = 20;

/// `i-` and 8 or 17 hex digits, as EC2 accepts.
pub fn check_instance_id(id: &str) -> Result<()> {
    check_resource_id(id, "i", ErrorKind::InvalidInstanceIdMalformed)
}

fn instance_not_found(ids: &[&str]) -> crate::Error {
    let what = if ids.len() == 1 {
        format!("The instance ID '{}' does not exist", ids[0])
    } else {
        format!("The instance IDs '{}' do not exist", ids.join(", "))
    };
    err(ErrorKind::InvalidInstanceIdNotFound, what)
}

fn check_image_id(id: &str) -> Result<()> {
    check_resource_id(id, "ami", ErrorKind::InvalidAmiIdMalformed)
}

/// The filters DescribeInstances understands (besides `tag:KEY`).
const FILTERS: &[&str] = &[
    "tag-key",
    "availability-zone",
    "block-device-mapping.device-name",
    "block-device-mapping.volume-id",
    "image-id",
    "instance-id",
    "instance-state-code",
    "instance-state-name",
    "instance-type",
    "reservation-id",
];

impl Ec2 {
    /// An instance as policies see it: its ARN, id, type, zone and tags.
    pub(super) fn instance_record_target(&self, i: &InstanceRecord) -> Target {
        Target::new(instance_arn(
            self.region(),
            self.kms.account_id(),
            &i.instance_id,
        ))
        .key("ec2:InstanceID", &i.instance_id)
        .key("ec2:InstanceType", &i.instance_type)
        .key("ec2:AvailabilityZone", &i.availability_zone)
        .key(
            "ec2:ImageID",
            format!("arn:aws:ec2:{}::image/{}", self.region(), i.image_id),
        )
        .resource_tags(&i.tags)
    }

    /// Every simulated instance of the region, terminated ones included.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>> {
        self.store.lock().expect("ec2 store").instances()
    }

    /// The simulated instance `id` (InvalidInstanceID.NotFound if there is none).
    pub fn instance(&self, id: &str) -> Result<InstanceRecord> {
        check_instance_id(id)?;
        self.instances()?
            .into_iter()
            .find(|i| i.instance_id == id)
            .ok_or_else(|| instance_not_found(&[id]))
    }

    /// The simulated instance `id`, which must be running (a volume can be attached
    /// to it): IncorrectInstanceState otherwise.
    pub fn running_instance(&self, id: &str) -> Result<InstanceRecord> {
        let i = self.instance(id)?;
        if i.state != "running" {
            return Err(err(
                ErrorKind::IncorrectInstanceState,
                format!("The instance '{id}' is not in the 'running' state."),
            ));
        }
        Ok(i)
    }

    /// The instance's response shape, its attached volumes as block devices.
    fn instance_shape(&self, i: &InstanceRecord, volumes: &[VolumeRecord]) -> Instance {
        let block_device_mappings = volumes
            .iter()
            .filter_map(|v| {
                let a = v.attachment.as_ref()?;
                (a.instance_id == i.instance_id).then(|| InstanceBlockDeviceMapping {
                    device_name: a.device.clone(),
                    ebs: EbsInstanceBlockDevice {
                        attach_time: crate::kms::api::Time(a.attach_time),
                        delete_on_termination: false,
                        status: "attached".into(),
                        volume_id: v.volume_id.clone(),
                    },
                })
            })
            .collect();
        Instance {
            ami_launch_index: i.launch_index,
            image_id: i.image_id.clone(),
            instance_id: i.instance_id.clone(),
            instance_type: i.instance_type.clone(),
            launch_time: crate::kms::api::Time(i.launch_time),
            placement: InstancePlacement {
                availability_zone: i.availability_zone.clone(),
                tenancy: "default".into(),
            },
            state: InstanceState::of(&i.state),
            state_transition_reason: i.state_transition_reason.clone(),
            architecture: "x86_64".into(),
            block_device_mappings,
            client_token: i.client_token.clone(),
            hypervisor: "xen".into(),
            tags: i.tags.clone(),
            virtualization_type: "hvm".into(),
        }
    }

    // ---- RunInstances -------------------------------------------------------

    pub fn run_instances(&self, caller: &Caller, req: RunInstancesRequest) -> Result<Reservation> {
        let request = json!({
            "instancesSet": { "items": [{
                "imageId": req.image_id,
                "minCount": req.min_count,
                "maxCount": req.max_count,
            }]},
            "instanceType": req.instance_type,
            "availabilityZone": req.placement.as_ref().and_then(|p| p.availability_zone.clone()),
            "clientToken": req.client_token,
            "tagSpecificationSet": trail::tag_specifications(
                "instance",
                &req.tag_specifications.iter().flat_map(|s| s.tags.clone()).collect::<Vec<_>>(),
            ),
            "dryRun": req.dry_run.then_some(true),
        });
        self.call(
            caller,
            "RunInstances",
            request,
            |t| self.run_instances_op(caller, req, t),
            reservation_response,
        )
    }

    fn run_instances_op(
        &self,
        caller: &Caller,
        req: RunInstancesRequest,
        trail: &mut trail::Trail,
    ) -> Result<Reservation> {
        let image_id = req.image_id.clone().unwrap_or_default();
        if image_id.is_empty() {
            return Err(err(
                ErrorKind::MissingParameter,
                "The request must contain the parameter ImageId",
            ));
        }
        check_image_id(&image_id)?;
        let (min, max) = match (req.min_count, req.max_count) {
            (Some(min), Some(max)) => (min, max),
            (None, _) => {
                return Err(err(
                    ErrorKind::MissingParameter,
                    "The request must contain the parameter MinCount",
                ));
            }
            (_, None) => {
                return Err(err(
                    ErrorKind::MissingParameter,
                    "The request must contain the parameter MaxCount",
                ));
            }
        };
        if min == 0 || max == 0 {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                "Value (0) for parameter MinCount/MaxCount is invalid. Expecting a value greater than 0.",
            ));
        }
        if min > max {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!("MinCount ({min}) must be less than or equal to MaxCount ({max})."),
            ));
        }
        if min > MAX_PER_CALL {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "ebsim makes at most {MAX_PER_CALL} instances per RunInstances call; MinCount is {min}."
                ),
            ));
        }
        let count = max.min(MAX_PER_CALL);
        let instance_type = req
            .instance_type
            .clone()
            .unwrap_or_else(|| "m1.small".to_string());
        let zone = req
            .placement
            .as_ref()
            .and_then(|p| p.availability_zone.clone())
            .unwrap_or_else(|| format!("{}a", self.region()));
        self.check_zone(&zone)?;
        let mut tags = Vec::new();
        for spec in &req.tag_specifications {
            if spec.resource_type != "instance" {
                return Err(err(
                    ErrorKind::InvalidParameterValue,
                    format!(
                        "'{}' is not a valid taggable resource type for this operation.",
                        spec.resource_type
                    ),
                ));
            }
            tags.extend(spec.tags.iter().cloned());
        }
        let new = Target::new(instance_arn(self.region(), self.kms.account_id(), "*"))
            .key("ec2:InstanceType", &instance_type)
            .key("ec2:AvailabilityZone", &zone)
            .request_tags(&tags);
        let image = Target::new(format!("arn:aws:ec2:{}::image/{image_id}", self.region()));
        self.authorize(caller, "ec2:RunInstances", &[new.clone(), image])?;
        self.authorize_tags(caller, "RunInstances", &new, &tags)?;
        dry_run(req.dry_run)?;
        let mut store = self.store.lock().expect("ec2 store");
        // A retried call with the same client token answers with what it made.
        if let Some(token) = &req.client_token {
            let made: Vec<InstanceRecord> = store
                .instances()?
                .into_iter()
                .filter(|i| i.client_token.as_deref() == Some(token.as_str()))
                .collect();
            if let Some(first) = made.first() {
                let volumes = store.volumes()?;
                let reservation_id = first.reservation_id.clone();
                return Ok(Reservation {
                    reservation_id,
                    owner_id: self.kms.account_id().to_string(),
                    groups: Vec::new(),
                    instances: made
                        .iter()
                        .map(|i| self.instance_shape(i, &volumes))
                        .collect(),
                });
            }
        }
        let now = self.kms.clock().now();
        let reservation_id = new_id("r");
        let records: Vec<InstanceRecord> = (0..count)
            .map(|n| InstanceRecord {
                instance_id: new_id("i"),
                reservation_id: reservation_id.clone(),
                image_id: image_id.clone(),
                instance_type: instance_type.clone(),
                availability_zone: zone.clone(),
                launch_time: now,
                launch_index: n,
                state: "running".into(),
                state_transition_reason: String::new(),
                tags: tags.clone(),
                client_token: req.client_token.clone(),
            })
            .collect();
        store.write(|tx| {
            for r in &records {
                tx.put_instance(r)?;
            }
            Ok(())
        })?;
        drop(store);
        let mut instances = Vec::new();
        for r in &records {
            trail.resources.push(instance_arn(
                self.region(),
                self.kms.account_id(),
                &r.instance_id,
            ));
            let mut shape = self.instance_shape(r, &[]);
            // RunInstances answers before the instance has booted, as EC2 does.
            shape.state = InstanceState::of("pending");
            instances.push(shape);
        }
        Ok(Reservation {
            reservation_id,
            owner_id: self.kms.account_id().to_string(),
            groups: Vec::new(),
            instances,
        })
    }

    // ---- DescribeInstances --------------------------------------------------

    pub fn describe_instances(
        &self,
        caller: &Caller,
        req: DescribeInstancesRequest,
    ) -> Result<DescribeInstancesResponse> {
        let request = json!({
            "instancesSet": trail::id_set("instanceId", &req.instance_ids),
            "filterSet": trail::filter_set(&req.filters),
            "maxResults": req.max_results,
            "nextToken": req.next_token,
        });
        self.call(
            caller,
            "DescribeInstances",
            request,
            |_| {
                self.authorize(caller, "ec2:DescribeInstances", &[Target::any()])?;
                dry_run(req.dry_run)?;
                self.describe_instances_op(req)
            },
            |_| Value::Null,
        )
    }

    fn describe_instances_op(
        &self,
        req: DescribeInstancesRequest,
    ) -> Result<DescribeInstancesResponse> {
        for id in &req.instance_ids {
            check_instance_id(id)?;
        }
        if req.max_results.is_some() && !req.instance_ids.is_empty() {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                "The parameter instancesSet cannot be used with the parameter maxResults",
            ));
        }
        check_max_results(req.max_results)?;
        for f in &req.filters {
            check_filter_name(&f.name, FILTERS)?;
        }
        let (all, volumes) = {
            let store = self.store.lock().expect("ec2 store");
            (store.instances()?, store.volumes()?)
        };
        let missing: Vec<&str> = req
            .instance_ids
            .iter()
            .filter(|id| !all.iter().any(|i| &i.instance_id == *id))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(instance_not_found(&missing));
        }
        let start = match &req.next_token {
            Some(t) => Some(decode_token("instances", t)?),
            None => None,
        };
        let mut chosen: Vec<Instance> = Vec::new();
        let mut next_token = None;
        // A token names the last instance of the page before.
        let resume_after = match &start {
            Some(s) => all.iter().position(|i| &i.instance_id == s),
            None => None,
        };
        for (n, i) in all.iter().enumerate() {
            if resume_after.is_some_and(|p| n <= p) {
                continue;
            }
            if !req.instance_ids.is_empty() && !req.instance_ids.contains(&i.instance_id) {
                continue;
            }
            let shape = self.instance_shape(i, &volumes);
            if !req.filters.iter().all(|f| instance_matches(&shape, i, f)) {
                continue;
            }
            if let Some(m) = req.max_results
                && chosen.len() == crate::num::usize_of(u64::from(m))
            {
                next_token = chosen
                    .last()
                    .map(|l| encode_token("instances", &l.instance_id));
                break;
            }
            chosen.push(shape);
        }
        // One reservation per RunInstances call, in launch order.
        let mut reservations: Vec<Reservation> = Vec::new();
        for shape in chosen {
            let rid = all
                .iter()
                .find(|i| i.instance_id == shape.instance_id)
                .map(|i| i.reservation_id.clone())
                .unwrap_or_default();
            match reservations.iter_mut().find(|r| r.reservation_id == rid) {
                Some(r) => r.instances.push(shape),
                None => reservations.push(Reservation {
                    reservation_id: rid,
                    owner_id: self.kms.account_id().to_string(),
                    groups: Vec::new(),
                    instances: vec![shape],
                }),
            }
        }
        Ok(DescribeInstancesResponse {
            reservations,
            next_token,
        })
    }

    // ---- TerminateInstances -------------------------------------------------

    /// TerminateInstances: authorized on every instance first; then, for each one
    /// still running, `release` detaches what is attached to it (the service layer
    /// stops the attachment processes) before it is marked `terminated`. An
    /// instance already terminated stays so.
    pub fn terminate_instances(
        &self,
        caller: &Caller,
        req: TerminateInstancesRequest,
        mut release: impl FnMut(&InstanceRecord) -> Result<()>,
    ) -> Result<TerminateInstancesResponse> {
        let request = json!({
            "instancesSet": trail::id_set("instanceId", &req.instance_ids),
            "dryRun": req.dry_run.then_some(true),
        });
        self.call(
            caller,
            "TerminateInstances",
            request,
            |t| {
                if req.instance_ids.is_empty() {
                    return Err(err(
                        ErrorKind::MissingParameter,
                        "The request must contain the parameter InstanceId",
                    ));
                }
                for id in &req.instance_ids {
                    check_instance_id(id)?;
                }
                let all = self.instances()?;
                let missing: Vec<&str> = req
                    .instance_ids
                    .iter()
                    .filter(|id| !all.iter().any(|i| &i.instance_id == *id))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(instance_not_found(&missing));
                }
                let chosen: Vec<&InstanceRecord> = req
                    .instance_ids
                    .iter()
                    .filter_map(|id| all.iter().find(|i| &i.instance_id == id))
                    .collect();
                let targets: Vec<Target> = chosen
                    .iter()
                    .map(|i| self.instance_record_target(i))
                    .collect();
                for i in &chosen {
                    t.resources.push(instance_arn(
                        self.region(),
                        self.kms.account_id(),
                        &i.instance_id,
                    ));
                }
                self.authorize(caller, "ec2:TerminateInstances", &targets)?;
                dry_run(req.dry_run)?;
                let mut changes = Vec::new();
                for i in chosen {
                    let previous = InstanceState::of(&i.state);
                    if i.state != "terminated" {
                        release(i)?;
                        let mut done = i.clone();
                        done.state = "terminated".into();
                        done.state_transition_reason = format!(
                            "User initiated ({})",
                            self.kms.clock().now().format("%Y-%m-%d %H:%M:%S GMT")
                        );
                        self.store
                            .lock()
                            .expect("ec2 store")
                            .write(|tx| tx.put_instance(&done))?;
                    }
                    changes.push(InstanceStateChange {
                        current_state: InstanceState::of("terminated"),
                        instance_id: i.instance_id.clone(),
                        previous_state: previous,
                    });
                }
                Ok(TerminateInstancesResponse {
                    terminating_instances: changes,
                })
            },
            |r| {
                json!({ "instancesSet": { "items": r.terminating_instances.iter().map(|c| json!({
                    "instanceId": c.instance_id,
                    "currentState": { "code": c.current_state.code, "name": c.current_state.name },
                    "previousState": { "code": c.previous_state.code, "name": c.previous_state.name },
                })).collect::<Vec<_>>() } })
            },
        )
    }
}

fn instance_matches(shape: &Instance, i: &InstanceRecord, f: &Filter) -> bool {
    let values: Vec<String> = match f.name.as_str() {
        "availability-zone" => vec![i.availability_zone.clone()],
        "block-device-mapping.device-name" => shape
            .block_device_mappings
            .iter()
            .map(|b| b.device_name.clone())
            .collect(),
        "block-device-mapping.volume-id" => shape
            .block_device_mappings
            .iter()
            .map(|b| b.ebs.volume_id.clone())
            .collect(),
        "image-id" => vec![i.image_id.clone()],
        "instance-id" => vec![i.instance_id.clone()],
        "instance-state-code" => vec![shape.state.code.to_string()],
        "instance-state-name" => vec![i.state.clone()],
        "instance-type" => vec![i.instance_type.clone()],
        "reservation-id" => vec![i.reservation_id.clone()],
        name => tag_filter_values(&i.tags, name).unwrap_or_default(),
    };
    values
        .iter()
        .any(|v| f.values.iter().any(|p| super::glob(p, v)))
}

/// RunInstances's response elements.
fn reservation_response(r: &Reservation) -> Value {
    json!({
        "reservationId": r.reservation_id,
        "ownerId": r.owner_id,
        "instancesSet": { "items": r.instances.iter().map(|i| json!({
            "instanceId": i.instance_id,
            "imageId": i.image_id,
            "instanceState": { "code": i.state.code, "name": i.state.name },
            "instanceType": i.instance_type,
            "launchTime": trail::millis(&i.launch_time.0),
            "placement": { "availabilityZone": i.placement.availability_zone, "tenancy": "default" },
            "amiLaunchIndex": i.ami_launch_index,
        })).collect::<Vec<_>>() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_checked_as_ec2_checks_them() {
        assert!(check_instance_id("i-0123456789abcdef0").is_ok());
        assert!(check_instance_id("i-01234567").is_ok());
        for bad in ["i-xyz", "vol-0123456789abcdef0", "i-0123456789abcdef", ""] {
            assert_eq!(
                check_instance_id(bad).unwrap_err().kind(),
                ErrorKind::InvalidInstanceIdMalformed,
                "{bad}"
            );
        }
        assert_eq!(
            check_image_id("ami-12").unwrap_err().kind(),
            ErrorKind::InvalidAmiIdMalformed
        );
        assert_eq!(InstanceState::of("running").code, 16);
        assert_eq!(InstanceState::of("terminated").code, 48);
    }
}
