//! The data root: where everything ebsim keeps lives.
//!
//! ```text
//! <root>/config.json            account id, clock offset, KMS quota settings (0600)
//! <root>/root.key               the simulated HSM's root key (0600); see docs/KMS.md
//! <root>/regions/<region>/      one isolated subtree per region
//!     kms.db                    the region's KMS store (SQLite, every row sealed)
//!     cloudtrail.jsonl          the region's audit log
//! ```
//!
//! The root is `--home DIR`, else `EBSIM_HOME`, else the `volumes/` folder of the
//! checkout the binary was built from ([`DEFAULT_ROOT`]).

pub mod stores;

use crate::error::{Error, Result};
use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The default data root: the project's own `volumes/` folder, fixed at build time.
pub const DEFAULT_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/volumes");

/// The account id of a fresh data root (AWS's documentation example account).
pub const DEFAULT_ACCOUNT_ID: &str = "111122223333";

/// The region used when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Settings kept in `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The simulated AWS account id (12 digits).
    pub account_id: String,
    /// Seconds added to the wall clock for every command on this data root.
    pub clock_offset_seconds: i64,
    /// KMS request quotas (see docs/KMS.md).
    pub kms_quota: crate::kms::quota::QuotaConfig,
    /// Seconds before a new grant takes effect for callers without its grant token.
    pub kms_grant_propagation_seconds: u32,
    /// Named identities for `--profile` (`ebsim configure set principal ARN --profile NAME`).
    pub profiles: std::collections::BTreeMap<String, Profile>,
}

/// One named profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// The principal ARN commands run as.
    pub principal: Option<String>,
    /// The region commands use unless `--region` says otherwise.
    pub region: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            account_id: DEFAULT_ACCOUNT_ID.to_string(),
            clock_offset_seconds: 0,
            kms_quota: Default::default(),
            kms_grant_propagation_seconds: 0,
            profiles: Default::default(),
        }
    }
}

/// An opened data root.
#[derive(Debug, Clone)]
pub struct DataRoot {
    path: PathBuf,
}

impl DataRoot {
    /// Opens (creating with mode 0700 if needed) the data root at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let path = if path.is_relative() {
            std::env::current_dir()
                .map_err(|e| Error::io("cannot read the current directory", e))?
                .join(path)
        } else {
            path
        };
        fsutil::ensure_private_dir(&path)?;
        Ok(DataRoot { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }

    /// Reads `config.json` (defaults when it does not exist yet).
    pub fn config(&self) -> Result<Config> {
        let p = self.config_path();
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::environment(format!("the config file {} is not valid: {e}", p.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::io(format!("cannot read {}", p.display()), e)),
        }
    }

    /// Writes `config.json` atomically.
    pub fn save_config(&self, config: &Config) -> Result<()> {
        validate_account_id(&config.account_id)?;
        let mut bytes = serde_json::to_vec_pretty(config).expect("config serializes");
        bytes.push(b'\n');
        fsutil::write_atomic(&self.config_path(), &bytes)
    }

    /// The directory of one region, created on first use.
    pub fn region_dir(&self, region: &str) -> Result<PathBuf> {
        validate_region(region)?;
        let dir = self.path.join("regions").join(region);
        fsutil::ensure_private_dir(&dir)?;
        Ok(dir)
    }

    /// Regions that already have state under this root.
    pub fn existing_regions(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.path.join("regions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|r| validate_region(r).is_ok())
            .collect();
        out.sort();
        out
    }
}

/// Region names look like AWS's: `us-east-1`, `eu-central-2`, `us-gov-west-1`.
pub fn validate_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1]
            .parse::<u8>()
            .is_ok_and(|n| n > 0 && !parts[parts.len() - 1].starts_with('0'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "Provided region_name '{region}' doesn't match a supported format."
        )))
    }
}

/// Account ids are 12 decimal digits.
pub fn validate_account_id(id: &str) -> Result<()> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::environment(format!(
            "account id '{id}' is not 12 decimal digits"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-4",
        ] {
            validate_region(ok).unwrap();
        }
        for bad in [
            "",
            "us-east",
            "US-east-1",
            "us-east-01",
            "us--1",
            "../etc",
            "us-east-1/x",
        ] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_round_trips_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path().join("home")).unwrap();
        assert_eq!(root.config().unwrap(), Config::default());
        let mut c = Config {
            clock_offset_seconds: 86400,
            ..Default::default()
        };
        root.save_config(&c).unwrap();
        assert_eq!(root.config().unwrap(), c);
        c.account_id = "12".into();
        assert!(root.save_config(&c).is_err());
    }

    #[test]
    fn regions_are_separate_subtrees() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let a = root.region_dir("us-east-1").unwrap();
        let b = root.region_dir("us-west-2").unwrap();
        assert_ne!(a, b);
        assert_eq!(root.existing_regions(), vec!["us-east-1", "us-west-2"]);
    }
}
