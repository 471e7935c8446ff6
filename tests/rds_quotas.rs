//! RDS's account quotas and the engine's own checks, in process (no host
//! work: the provisioning closure makes nothing): StorageQuotaExceeded past
//! 100,000 GiB, InstanceQuotaExceeded past 40 instances, and a create whose
//! host work fails leaves no record.

use ebsim::clock::Clock;
use ebsim::error::ErrorKind;
use ebsim::home::DataRoot;
use ebsim::kms::Kms;
use ebsim::kms::access::Caller;
use ebsim::rds::Rds;
use ebsim::rds::model::CreateDbInstanceRequest;

fn rds() -> (tempfile::TempDir, Rds) {
    let dir = tempfile::tempdir().unwrap();
    let root = DataRoot::open(dir.path().join("home")).unwrap();
    let kms = Kms::open(&root, "us-east-1", Clock::system(chrono::TimeDelta::zero())).unwrap();
    let rds = Rds::open(&root, kms).unwrap();
    (dir, rds)
}

fn req(id: &str, gib: i64, port: i64) -> CreateDbInstanceRequest {
    CreateDbInstanceRequest {
        db_instance_identifier: id.into(),
        db_instance_class: "db.t3.micro".into(),
        engine: "postgres".into(),
        allocated_storage: Some(gib),
        master_username: Some("dbadmin".into()),
        master_user_password: Some(zeroize::Zeroizing::new("Quota-pw-123".into())),
        port: Some(port),
        ..Default::default()
    }
}

#[test]
fn quotas_are_rds_s_and_a_failed_create_leaves_no_record() {
    let (_d, rds) = rds();
    let root = Caller::account_root("111122223333");
    let made = |r: &CreateDbInstanceRequest| rds.create_db_instance(&root, r, "15.18", |_| Ok(()));
    made(&req("big1", 65_536, 5001)).unwrap();
    let e = made(&req("big2", 65_536, 5002)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageQuotaExceeded, "{e}");
    assert_eq!(e.code(), "StorageQuotaExceeded");
    // The host work fails: the record goes with it.
    let e = rds
        .create_db_instance(&root, &req("broken", 20, 7001), "15.18", |_| {
            Err(ebsim::Error::new(ErrorKind::Internal, "mkfs failed"))
        })
        .unwrap_err();
    assert!(e.to_string().contains("mkfs failed"), "{e}");
    assert!(rds.instance("broken").is_err());
    for i in 0..39 {
        made(&req(&format!("db{i}"), 20, 6000 + i)).unwrap();
    }
    assert_eq!(rds.instances().unwrap().len(), 40);
    let e = made(&req("one-too-many", 20, 7000)).unwrap_err();
    assert_eq!(e.code(), "InstanceQuotaExceeded", "{e}");
}
