//! What test harnesses ask of a running server besides AWS's APIs: its health
//! (which services answer, per region) and a reset that empties the data root's
//! state (LocalStack's `/_localstack/health`, moto's `POST /moto-api/reset`;
//! docs/SERVER.md, "Test harness endpoints").
//!
//! A reset empties every region (volumes and their images, snapshots and their
//! blocks, simulated instances, EBS settings, KMS keys, aliases and grants, the
//! audit log) and IAM (users, roles, policies, sessions, users' access keys). It
//! keeps what makes the data root itself: `config.json` (the account), the root
//! key, every store file (emptied, still registered: a reset is not a fresh
//! start), and the account root's access keys, so the client that asked can go
//! on. It refuses while volumes are attached, unless forced: then they are
//! detached first, as `detach-volume --force` would.
//!
//! The caller must make sure no other call runs on the same [`Services`] during a
//! reset (the server holds its request gate exclusively). Other processes on the
//! data root (a CLI command, an attachment process) are not stopped: a reset is
//! not atomic for them.

use super::Services;
use super::attach::stop_attachment;
use crate::error::{Error, ErrorKind, Result};
use serde_json::{Value, json};

/// What a reset did.
#[derive(Debug, Clone, Default)]
pub struct ResetReport {
    /// The regions emptied.
    pub regions: Vec<String>,
    /// The volumes that were attached and were detached first (`force`).
    pub detached: Vec<String>,
}

impl Services {
    /// Empties the data root's state (module doc). `force`: detach attached
    /// volumes first; without it, attached volumes make it refuse (VolumeInUse)
    /// before anything changes.
    pub fn reset(&self, force: bool) -> Result<ResetReport> {
        let regions = self.root().existing_regions();
        let mut attached = Vec::new();
        for region in &regions {
            let ec2 = self.ec2_engine(region)?;
            for (volume_id, a) in ec2.attachments()? {
                attached.push((region.clone(), volume_id, a));
            }
        }
        if !force && !attached.is_empty() {
            let names: Vec<String> = attached
                .iter()
                .map(|(r, v, a)| format!("{v} ({r}, attached to {})", a.instance_id))
                .collect();
            return Err(Error::new(
                ErrorKind::VolumeInUse,
                format!(
                    "nothing was reset: {} volume(s) are attached: {}; detach them, or reset with force",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        let mut report = ResetReport {
            regions: regions.clone(),
            detached: Vec::new(),
        };
        for (region, volume_id, a) in &attached {
            let ec2 = self.ec2_engine(region)?;
            let host = self.host(region)?;
            stop_attachment(&ec2, &host, volume_id, a, true)?;
            report.detached.push(volume_id.clone());
        }
        for region in &regions {
            let ec2 = self.ec2_engine(region)?;
            let host = self.host(region)?;
            for i in ec2.instances()? {
                host.remove_instance_dir(&i.instance_id)?;
            }
            ec2.reset()?;
            // Last: its audit log holds the EC2 calls the reset made.
            self.kms_engine(region)?.reset()?;
        }
        self.iam_engine()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset()?;
        self.forget_engines();
        tracing::warn!(
            "the data root {} was reset: {} region(s) emptied, {} volume(s) detached first",
            self.root().path().display(),
            report.regions.len(),
            report.detached.len()
        );
        Ok(report)
    }

    /// Which services answer, per region: `running` when the region's stores
    /// open, or the error that stops them. IAM and STS are global.
    pub fn health(&self) -> Value {
        let state = |r: Result<()>| match r {
            Ok(()) => json!("running"),
            Err(e) => json!(format!("error: {}", e.message())),
        };
        let iam = state(self.iam_engine().map(|_| ()));
        let mut regions = serde_json::Map::new();
        let (mut kms_ok, mut ec2_ok) = (true, true);
        for region in self.root().existing_regions() {
            let kms = state(self.kms_engine(&region).map(|_| ()));
            let ec2 = state(self.ec2_engine(&region).map(|_| ()));
            kms_ok &= kms == "running";
            ec2_ok &= ec2 == "running";
            regions.insert(region, json!({ "kms": kms, "ec2": ec2 }));
        }
        let word = |ok: bool| if ok { "running" } else { "error" };
        let all_ok = kms_ok && ec2_ok && iam == "running";
        json!({
            "status": word(all_ok),
            "version": env!("CARGO_PKG_VERSION"),
            "services": {
                "kms": word(kms_ok),
                "cloudtrail": word(kms_ok),
                "ec2": word(ec2_ok),
                "ebs": word(ec2_ok),
                "iam": iam,
                "sts": iam,
            },
            "regions": regions,
        })
    }
}
