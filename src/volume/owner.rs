//! Whose volumes these are: the AWS service that owns a volume and speaks to KMS
//! for it. The service decides what a data key is bound to (the encryption-context
//! key), which AWS managed key it falls back to, and the `kms:ViaService` its
//! calls carry. EC2 is the owner today; RDS (`alias/aws/rds`,
//! `rds.<region>.amazonaws.com`) is the next one.
//!
//! Nothing here calls KMS: the owner is a description the service layer reads
//! when it wraps, unwraps or picks keys.

use std::collections::BTreeMap;

/// The service a volume belongs to, and what it puts into KMS calls.
#[derive(Debug, PartialEq, Eq)]
pub struct VolumeOwner {
    /// The service's endpoint prefix (`ec2`): its `kms:ViaService` is
    /// `<service>.<region>.amazonaws.com`, its infrastructure principals
    /// `ACCOUNT:aws:<service>-infrastructure:…`.
    pub service: &'static str,
    /// The encryption-context key that binds a data key to its volume (or
    /// snapshot): `{"<context_key>": "<id>"}`.
    pub context_key: &'static str,
    /// The AWS managed key's alias, used while no default key was chosen.
    pub default_alias: &'static str,
    /// Where the owner's volumes, snapshots and records live under the
    /// region's directory (`""`: the region's directory itself).
    pub dir: &'static str,
}

impl VolumeOwner {
    /// EBS volumes and snapshots, owned by EC2.
    pub const EC2: VolumeOwner = VolumeOwner {
        service: "ec2",
        context_key: "aws:ebs:id",
        default_alias: "alias/aws/ebs",
        dir: "",
    };

    /// The storage volumes (and their snapshots) of RDS's DB instances. EBS acts
    /// for RDS: a data key is bound to its volume (`aws:ebs:id`) and every KMS
    /// call carries `kms:ViaService` `rds.<region>.amazonaws.com`.
    pub const RDS: VolumeOwner = VolumeOwner {
        service: "rds",
        context_key: "aws:ebs:id",
        default_alias: "alias/aws/rds",
        dir: "rds",
    };

    /// True for EC2's own volumes (those EC2's API shows, authorizes and records).
    pub fn is_ec2(&self) -> bool {
        self.service == VolumeOwner::EC2.service
    }

    /// The owner's directory under `region_dir`.
    pub fn base_dir(&self, region_dir: &std::path::Path) -> std::path::PathBuf {
        if self.dir.is_empty() {
            region_dir.to_path_buf()
        } else {
            region_dir.join(self.dir)
        }
    }

    /// `kms:ViaService` of this owner's calls in `region`.
    pub fn via_service(&self, region: &str) -> String {
        format!("{}.{region}.amazonaws.com", self.service)
    }

    /// The encryption context a data key of resource `id` is bound to.
    pub fn context(&self, id: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(self.context_key.to_string(), id.to_string())])
    }

    /// The same context as a header stores it: canonical JSON (one key).
    pub fn header_context(&self, id: &str) -> String {
        let mut m = serde_json::Map::new();
        m.insert(self.context_key.into(), id.into());
        serde_json::Value::Object(m).to_string()
    }

    /// The name KMS gives the AWS managed key behind [`VolumeOwner::default_alias`]
    /// (`ebs` for `alias/aws/ebs`).
    pub fn managed_key(&self) -> &'static str {
        self.default_alias
            .strip_prefix("alias/aws/")
            .expect("an AWS managed key's alias")
    }

    /// True for the default alias by name or as an alias ARN (`arn:…:alias/aws/ebs`).
    pub fn is_default_alias(&self, key_id: &str) -> bool {
        key_id == self.default_alias
            || key_id
                .strip_suffix(self.default_alias)
                .is_some_and(|head| head.ends_with(':'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_binds_keys_to_aws_ebs_id_through_ec2() {
        let o = &VolumeOwner::EC2;
        assert_eq!(o.via_service("us-east-1"), "ec2.us-east-1.amazonaws.com");
        assert_eq!(
            o.header_context("vol-0123456789abcdef0"),
            r#"{"aws:ebs:id":"vol-0123456789abcdef0"}"#
        );
        assert_eq!(
            o.context("snap-1"),
            BTreeMap::from([("aws:ebs:id".to_string(), "snap-1".to_string())])
        );
        assert_eq!(o.managed_key(), "ebs");
        assert!(o.is_default_alias("alias/aws/ebs"));
        assert!(o.is_default_alias("arn:aws:kms:us-east-1:111122223333:alias/aws/ebs"));
        assert!(!o.is_default_alias("alias/aws/ebs2"));
        assert!(!o.is_default_alias("xalias/aws/ebs"));
        assert!(o.is_ec2());
        assert_eq!(
            o.base_dir(std::path::Path::new("/r")),
            std::path::Path::new("/r")
        );
    }

    #[test]
    fn rds_calls_through_rds_with_its_managed_key_in_a_directory_of_its_own() {
        let o = &VolumeOwner::RDS;
        assert_eq!(o.via_service("eu-west-1"), "rds.eu-west-1.amazonaws.com");
        assert_eq!(o.managed_key(), "rds");
        assert!(o.is_default_alias("alias/aws/rds"));
        assert!(!o.is_default_alias("alias/aws/ebs"));
        assert!(!o.is_ec2());
        assert_eq!(
            o.base_dir(std::path::Path::new("/r")),
            std::path::Path::new("/r/rds")
        );
    }
}
