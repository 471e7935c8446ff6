//! DescribeAvailabilityZones and DescribeRegions.
//!
//! - Regions: ebsim serves every well-formed region name, each in its own
//!   subtree of the data root. DescribeRegions lists the regions the data root
//!   has state for, and the caller's; `RegionNames` may name any well-formed
//!   region (a malformed one is InvalidParameterValue). Each region's endpoint is
//!   AWS's (`ec2.<region>.amazonaws.com`).
//! - Zones: a region has three, `<region>a`, `b` and `c`, all `available`,
//!   their ids AWS-shaped (`use1-az1`).
//!
//! Both are authorized (`ec2:DescribeAvailabilityZones`, `ec2:DescribeRegions`
//! on `*`), honour DryRun and are recorded in CloudTrail.

use super::authz::Target;
use super::model::*;
use super::{Ec2, dry_run, err, trail};
use crate::error::{ErrorKind, Result};
use crate::kms::access::Caller;
use serde_json::{Value, json};

/// The zone letters of every region.
pub const ZONE_LETTERS: &[char] = &['a', 'b', 'c'];

const OPTED_IN: &str = "opt-in-not-required";

/// `us-east-1` → `use1`: the first part, the initials of the middle ones, the
/// number (the shape of AWS's zone ids).
fn region_code(region: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    let mut out = parts.first().copied().unwrap_or_default().to_string();
    if parts.len() > 2 {
        for p in &parts[1..parts.len() - 1] {
            out.extend(p.chars().next());
        }
    }
    out.push_str(parts.last().copied().unwrap_or_default());
    out
}

/// The zones of `region`.
pub fn zones_of(region: &str) -> Vec<AvailabilityZone> {
    ZONE_LETTERS
        .iter()
        .enumerate()
        .map(|(i, l)| AvailabilityZone {
            opt_in_status: OPTED_IN.into(),
            region_name: region.into(),
            zone_name: format!("{region}{l}"),
            zone_id: format!("{}-az{}", region_code(region), i + 1),
            group_name: region.into(),
            network_border_group: region.into(),
            zone_type: "availability-zone".into(),
            state: "available".into(),
        })
        .collect()
}

fn check_filters(filters: &[Filter], names: &[&str]) -> Result<()> {
    for f in filters {
        if !names.contains(&f.name.as_str()) {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!("The filter '{}' is invalid", f.name),
            ));
        }
    }
    Ok(())
}

fn matches(filters: &[Filter], value: impl Fn(&str) -> String) -> bool {
    filters.iter().all(|f| {
        let have = value(&f.name);
        f.values.iter().any(|w| super::glob(w, &have))
    })
}

fn name_list(member: &str, names: &[String]) -> Value {
    if names.is_empty() {
        return Value::Null;
    }
    json!({ "items": names.iter().map(|n| json!({ member: n })).collect::<Vec<_>>() })
}

impl Ec2 {
    pub fn describe_availability_zones(
        &self,
        caller: &Caller,
        req: DescribeAvailabilityZonesRequest,
    ) -> Result<DescribeAvailabilityZonesResponse> {
        let request = json!({
            "availabilityZoneSet": name_list("zoneName", &req.zone_names),
            "availabilityZoneIdSet": name_list("zoneId", &req.zone_ids),
            "allAvailabilityZones": req.all_availability_zones,
            "filterSet": trail::filter_set(&req.filters),
        });
        self.call(
            caller,
            "DescribeAvailabilityZones",
            request,
            |_| {
                self.authorize(caller, "ec2:DescribeAvailabilityZones", &[Target::any()])?;
                check_filters(
                    &req.filters,
                    &[
                        "zone-name",
                        "zone-id",
                        "region-name",
                        "state",
                        "zone-type",
                        "group-name",
                        "opt-in-status",
                    ],
                )?;
                let zones = zones_of(self.region());
                for name in &req.zone_names {
                    if !zones.iter().any(|z| &z.zone_name == name) {
                        return Err(err(
                            ErrorKind::InvalidParameterValue,
                            format!("Invalid availability zone: [{name}]"),
                        ));
                    }
                }
                for id in &req.zone_ids {
                    if !zones.iter().any(|z| &z.zone_id == id) {
                        return Err(err(
                            ErrorKind::InvalidParameterValue,
                            format!("Invalid availability zone id: [{id}]"),
                        ));
                    }
                }
                dry_run(req.dry_run)?;
                let availability_zones = zones
                    .into_iter()
                    .filter(|z| {
                        (req.zone_names.is_empty() && req.zone_ids.is_empty())
                            || req.zone_names.contains(&z.zone_name)
                            || req.zone_ids.contains(&z.zone_id)
                    })
                    .filter(|z| {
                        matches(&req.filters, |name| match name {
                            "zone-name" => z.zone_name.clone(),
                            "zone-id" => z.zone_id.clone(),
                            "region-name" => z.region_name.clone(),
                            "state" => z.state.clone(),
                            "zone-type" => z.zone_type.clone(),
                            "group-name" => z.group_name.clone(),
                            _ => z.opt_in_status.clone(),
                        })
                    })
                    .collect();
                Ok(DescribeAvailabilityZonesResponse { availability_zones })
            },
            |_| Value::Null,
        )
    }

    pub fn describe_regions(
        &self,
        caller: &Caller,
        req: DescribeRegionsRequest,
    ) -> Result<DescribeRegionsResponse> {
        let request = json!({
            "regionSet": name_list("regionName", &req.region_names),
            "allRegions": req.all_regions,
            "filterSet": trail::filter_set(&req.filters),
        });
        self.call(
            caller,
            "DescribeRegions",
            request,
            |_| {
                self.authorize(caller, "ec2:DescribeRegions", &[Target::any()])?;
                check_filters(&req.filters, &["region-name", "endpoint", "opt-in-status"])?;
                for name in &req.region_names {
                    if crate::home::validate_region(name).is_err() {
                        return Err(err(
                            ErrorKind::InvalidParameterValue,
                            format!("Invalid region names: [{name}]"),
                        ));
                    }
                }
                dry_run(req.dry_run)?;
                let mut names = if req.region_names.is_empty() {
                    let mut n = self.root.existing_regions();
                    n.push(self.region().to_string());
                    n
                } else {
                    req.region_names.clone()
                };
                names.sort();
                names.dedup();
                let regions = names
                    .into_iter()
                    .map(|r| Region {
                        endpoint: format!("ec2.{r}.amazonaws.com"),
                        region_name: r,
                        opt_in_status: OPTED_IN.into(),
                    })
                    .filter(|r| {
                        matches(&req.filters, |name| match name {
                            "region-name" => r.region_name.clone(),
                            "endpoint" => r.endpoint.clone(),
                            _ => r.opt_in_status.clone(),
                        })
                    })
                    .collect();
                Ok(DescribeRegionsResponse { regions })
            },
            |_| Value::Null,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_a_b_c_with_aws_shaped_ids() {
        let z = zones_of("us-east-1");
        let names: Vec<_> = z.iter().map(|z| z.zone_name.as_str()).collect();
        assert_eq!(names, ["us-east-1a", "us-east-1b", "us-east-1c"]);
        assert_eq!(z[1].zone_id, "use1-az2");
        assert_eq!(region_code("eu-central-2"), "euc2");
        assert_eq!(region_code("us-gov-west-1"), "usgw1");
    }
}
