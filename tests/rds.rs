//! RDS DB instances on real PostgreSQL 15 servers (docs/RDS.md), through the
//! `ebsim rds` command line: an encrypted instance serves psql with the master
//! credentials while its storage image holds none of its rows or its
//! password; stop, start and reboot keep every committed row; a killed
//! attachment process under a running instance shows `failed`, and reboot
//! brings it back with its rows; delete leaves nothing (no mount, no loop
//! device, no grant, no image). Every error case in RDS's codes. Needs root,
//! /dev/fuse, losetup, mkfs.ext4, PostgreSQL 15 and psql (scripts/test.sh
//! installs them; CI runs as root).

mod common;

use common::postgres::{free_port, skipped};
use common::sandbox::Sandbox;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const MASTER: &str = "dbadmin";
const PASSWORD: &str = "Ebsim-rds-pw-5e2a";
const MARKER: &str = "ebsim-rds-row-marker";

/// A sandbox whose DB instances are deleted when the test ends, however it ends.
struct Rds {
    s: Sandbox,
}

impl Drop for Rds {
    fn drop(&mut self) {
        for region in ["us-east-1", "us-west-2"] {
            let o = self.s.ebsim(&[
                "--region",
                region,
                "rds",
                "describe-db-instances",
                "--query",
                "DBInstances[].DBInstanceIdentifier",
                "--output",
                "text",
            ]);
            for id in o.stdout.split_whitespace() {
                let _ = self.s.ebsim(&[
                    "--region",
                    region,
                    "rds",
                    "modify-db-instance",
                    "--db-instance-identifier",
                    id,
                    "--no-deletion-protection",
                ]);
                let _ = self.s.ebsim(&[
                    "--region",
                    region,
                    "rds",
                    "delete-db-instance",
                    "--db-instance-identifier",
                    id,
                    "--skip-final-snapshot",
                ]);
            }
        }
    }
}

impl Rds {
    fn new() -> Self {
        Rds { s: Sandbox::new() }
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.s.ok(args)).unwrap()
    }

    /// The error code and message of a command that must fail with exit 254.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.s.ebsim(args);
        assert_eq!(o.code, 254, "{args:?}: {}{}", o.stdout, o.stderr);
        o.stderr.trim().to_string()
    }

    fn create(&self, id: &str, port: u16, extra: &[&str]) -> Value {
        let port = port.to_string();
        let mut args = vec![
            "rds",
            "create-db-instance",
            "--db-instance-identifier",
            id,
            "--db-instance-class",
            "db.t3.micro",
            "--engine",
            "postgres",
            "--allocated-storage",
            "20",
            "--master-username",
            MASTER,
            "--master-user-password",
            PASSWORD,
            "--port",
            &port,
        ];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    fn describe(&self, id: &str) -> Value {
        let v = self.json(&[
            "rds",
            "describe-db-instances",
            "--db-instance-identifier",
            id,
        ]);
        v["DBInstances"][0].clone()
    }

    fn status(&self, id: &str) -> String {
        self.describe(id)["DBInstanceStatus"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Where instance `id`'s storage is mounted (in this sandbox's run
    /// directory: /run/ebsim/rds/<data root hash>/us-east-1/<id>/storage).
    fn data_mount(&self, id: &str) -> PathBuf {
        let suffix = format!("/us-east-1/{id}/storage");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let found: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|p| p.ends_with(&suffix) && p.starts_with("/run/ebsim/rds/"))
            .collect();
        let here = ebsim::host::database::DatabaseHost::new(
            &ebsim::home::DataRoot::open(self.s.home()).unwrap(),
            "us-east-1",
            id,
        )
        .unwrap()
        .mount_point();
        assert!(
            found.iter().any(|p| Path::new(p) == here),
            "{id} is not mounted at {}",
            here.display()
        );
        here
    }

    /// The storage images of RDS's volumes in us-east-1.
    fn images(&self) -> Vec<PathBuf> {
        self.images_in("us-east-1")
    }

    fn images_in(&self, region: &str) -> Vec<PathBuf> {
        let dir = self.s.home().join(format!("regions/{region}/rds/volumes"));
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "img"))
            .collect()
    }
}

/// psql over loopback TCP as the master user; its stdout, or the failure.
fn psql(port: u16, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", MASTER])
        .args(["-d", "postgres", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Whether `needle` is anywhere in the allocated parts of the (sparse) file
/// at `path`: its data segments (SEEK_DATA / SEEK_HOLE), read in chunks that
/// overlap by the needle's length.
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    use nix::unistd::{Whence, lseek};
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    let len = i64::try_from(f.metadata().unwrap().len()).unwrap();
    let mut pos = 0i64;
    while pos < len {
        let Ok(start) = lseek(&f, pos, Whence::SeekData) else {
            break;
        };
        let end = lseek(&f, start, Whence::SeekHole).unwrap();
        f.seek(SeekFrom::Start(u64::try_from(start).unwrap()))
            .unwrap();
        let mut left = u64::try_from(end - start).unwrap();
        let mut carry: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 8 << 20];
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap();
            f.read_exact(&mut buf[..n]).unwrap();
            carry.extend_from_slice(&buf[..n]);
            if carry.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            let keep = carry.len().saturating_sub(needle.len());
            carry.drain(..keep);
            left -= n as u64;
        }
        pos = end;
    }
    false
}

fn mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(path)
}

#[test]
fn an_encrypted_instance_serves_psql_survives_stop_start_reboot_and_a_killed_storage_process() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let port = free_port();
    let created = t.create("Orders-DB", port, &["--storage-encrypted"]);
    let c = &created["DBInstance"];
    // RDS answers with the instance as accepted.
    assert_eq!(c["DBInstanceIdentifier"], "orders-db");
    assert_eq!(c["DBInstanceStatus"], "creating");
    assert!(c.get("Endpoint").is_none(), "{c}");

    let d = t.describe("orders-db");
    assert_eq!(d["DBInstanceStatus"], "available", "{d}");
    assert_eq!(d["Endpoint"]["Address"], "127.0.0.1");
    assert_eq!(d["Endpoint"]["Port"], port);
    assert_eq!(d["Engine"], "postgres");
    assert!(d["EngineVersion"].as_str().unwrap().starts_with("15."));
    assert_eq!(d["StorageEncrypted"], true);
    assert_eq!(d["StorageEncryptionType"], "sse-kms");
    assert_eq!(d["MasterUsername"], MASTER);
    assert_eq!(d["AllocatedStorage"], 20);
    assert_eq!(
        d["DBInstanceArn"],
        "arn:aws:rds:us-east-1:111122223333:db:orders-db"
    );
    let dbi = d["DbiResourceId"].as_str().unwrap().to_string();
    assert!(dbi.starts_with("db-") && dbi.len() == 29, "{dbi}");
    // Without --kms-key-id: the AWS managed key alias/aws/rds, made on first use.
    let rds_key = t.s.ok(&[
        "kms",
        "describe-key",
        "--key-id",
        "alias/aws/rds",
        "--query",
        "KeyMetadata.[Arn,KeyManager]",
        "--output",
        "text",
    ]);
    let (key_arn, manager) = rds_key.split_once('\t').unwrap();
    assert_eq!(manager, "AWS");
    assert_eq!(d["KmsKeyId"], key_arn);

    // A real client with the master credentials; nobody without them.
    psql(
        port,
        PASSWORD,
        &format!(
            "create table orders(id int primary key, body text); \
             insert into orders select g, '{MARKER} ' || g from generate_series(1, 3000) g; \
             checkpoint;"
        ),
    )
    .unwrap();
    let refused = psql(port, "not-the-password", "select 1").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    let data_dir = psql(port, PASSWORD, "show data_directory").unwrap();

    // The storage image holds neither the rows nor the password.
    let images = t.images();
    assert_eq!(images.len(), 1, "{images:?}");
    for needle in [MARKER.as_bytes(), PASSWORD.as_bytes()] {
        assert!(
            !file_contains(&images[0], needle),
            "{} is in {} in the clear",
            String::from_utf8_lossy(needle),
            images[0].display()
        );
    }

    // The KMS calls went through RDS: the data key bound to its volume, the
    // grant to the instance's RDS infrastructure principal.
    let log =
        std::fs::read_to_string(t.s.home().join("regions/us-east-1/cloudtrail.jsonl")).unwrap();
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |name: &str| {
        records
            .iter()
            .find(|r| r["eventName"] == name)
            .unwrap_or_else(|| panic!("no {name} record"))
    };
    let gdk = find("GenerateDataKeyWithoutPlaintext");
    assert_eq!(gdk["userIdentity"]["invokedBy"], "rds.amazonaws.com");
    assert!(
        gdk["requestParameters"]["encryptionContext"]["aws:ebs:id"]
            .as_str()
            .unwrap()
            .starts_with("vol-")
    );
    let grant = find("CreateGrant");
    assert_eq!(
        grant["requestParameters"]["granteePrincipal"],
        format!("111122223333:aws:rds-infrastructure:{dbi}")
    );
    let create = find("CreateDBInstance");
    assert_eq!(create["eventSource"], "rds.amazonaws.com");
    assert_eq!(
        create["requestParameters"]["dBInstanceIdentifier"],
        "Orders-DB"
    );
    assert!(!log.contains(PASSWORD), "the password is in the audit log");
    // RDS's storage is not EC2's: no volume in describe-volumes.
    assert_eq!(
        t.s.ok(&["ec2", "describe-volumes", "--query", "length(Volumes)"]),
        "0"
    );

    // Stop: the server and its storage go; start: every row is back.
    let stop = t.json(&[
        "rds",
        "stop-db-instance",
        "--db-instance-identifier",
        "orders-db",
    ]);
    assert_eq!(stop["DBInstance"]["DBInstanceStatus"], "stopping");
    assert_eq!(t.status("orders-db"), "stopped");
    assert!(psql(port, PASSWORD, "select 1").is_err());
    assert!(!mounted(&data_dir.replace("/pgdata", "")));
    let again = t.fails(&[
        "rds",
        "stop-db-instance",
        "--db-instance-identifier",
        "orders-db",
    ]);
    assert!(
        again.contains("(InvalidDBInstanceState) when calling the StopDBInstance operation"),
        "{again}"
    );
    let start = t.json(&[
        "rds",
        "start-db-instance",
        "--db-instance-identifier",
        "orders-db",
    ]);
    assert_eq!(start["DBInstance"]["DBInstanceStatus"], "starting");
    assert_eq!(t.status("orders-db"), "available");
    assert_eq!(
        psql(port, PASSWORD, "select count(*) from orders").unwrap(),
        "3000"
    );

    // A committed row, then the storage's attachment process killed under the
    // running server: the instance shows failed and why.
    psql(
        port,
        PASSWORD,
        &format!("insert into orders values (3001, '{MARKER} last')"),
    )
    .unwrap();
    let pids = Command::new("pgrep")
        .args(["-f", &format!("serve-storage.*{}", t.s.home().display())])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pids.stdout).trim().to_string();
    assert!(
        !pid.is_empty() && !pid.contains('\n'),
        "attachment process: {pid:?}"
    );
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let d = t.describe("orders-db");
    assert_eq!(d["DBInstanceStatus"], "failed", "{d}");
    assert!(
        d["StatusMessage"]
            .as_str()
            .unwrap()
            .contains("attachment process"),
        "{d}"
    );
    // Reboot brings it back, with the committed row.
    let reboot = t.json(&[
        "rds",
        "reboot-db-instance",
        "--db-instance-identifier",
        "orders-db",
    ]);
    assert_eq!(reboot["DBInstance"]["DBInstanceStatus"], "rebooting");
    assert_eq!(t.status("orders-db"), "available");
    assert_eq!(
        psql(port, PASSWORD, "select body from orders where id = 3001").unwrap(),
        format!("{MARKER} last")
    );
    assert_eq!(
        psql(port, PASSWORD, "select count(*) from orders").unwrap(),
        "3001"
    );

    // Delete: nothing is left, and the key has no grant left.
    let e = t.fails(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "orders-db",
    ]);
    assert!(
        e.contains("(InvalidParameterCombination)")
            && e.contains("FinalDBSnapshotIdentifier is required unless SkipFinalSnapshot"),
        "{e}"
    );
    let del = t.json(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "orders-db",
        "--skip-final-snapshot",
    ]);
    assert_eq!(del["DBInstance"]["DBInstanceStatus"], "deleting");
    let gone = t.fails(&[
        "rds",
        "describe-db-instances",
        "--db-instance-identifier",
        "orders-db",
    ]);
    assert!(
        gone.contains("(DBInstanceNotFound)") && gone.contains("DBInstance orders-db not found."),
        "{gone}"
    );
    assert!(t.images().is_empty(), "{:?}", t.images());
    assert!(!mounted(&data_dir.replace("/pgdata", "")));
    assert!(!Path::new(&data_dir).exists());
    assert_eq!(
        t.s.ok(&[
            "kms",
            "list-grants",
            "--key-id",
            key_arn,
            "--query",
            "length(Grants)"
        ]),
        "0"
    );
    t.s.assert_no_leftovers();
}

#[test]
fn rds_errors_use_rds_s_codes_and_an_unencrypted_instance_is_in_the_clear() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let base = [
        "rds",
        "create-db-instance",
        "--db-instance-class",
        "db.t3.micro",
        "--master-username",
        MASTER,
    ];
    let create_err = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        if !extra.contains(&"--allocated-storage") {
            a.extend_from_slice(&["--allocated-storage", "20"]);
        }
        if !extra.contains(&"--master-user-password") {
            a.extend_from_slice(&["--master-user-password", PASSWORD]);
        }
        t.fails(&a)
    };
    let bad = [
        (
            vec!["--db-instance-identifier", "1db", "--engine", "postgres"],
            "(InvalidParameterValue)",
            "is not a valid identifier",
        ),
        (
            vec!["--db-instance-identifier", "db", "--engine", "mysql"],
            "(InvalidParameterValue)",
            "Invalid DB engine: mysql",
        ),
        (
            vec![
                "--db-instance-identifier",
                "db",
                "--engine",
                "postgres",
                "--allocated-storage",
                "5",
            ],
            "(InvalidParameterValue)",
            "Invalid storage size for engine name postgres and storage type gp2: 5",
        ),
        (
            vec![
                "--db-instance-identifier",
                "db",
                "--engine",
                "postgres",
                "--master-user-password",
                "short",
            ],
            "(InvalidParameterValue)",
            "shorter than 8 characters",
        ),
        (
            vec![
                "--db-instance-identifier",
                "db",
                "--engine",
                "postgres",
                "--no-storage-encrypted",
                "--kms-key-id",
                "alias/aws/rds",
            ],
            "(InvalidParameterCombination)",
            "KmsKeyId can only be specified for an encrypted DB instance",
        ),
        (
            vec![
                "--db-instance-identifier",
                "db",
                "--engine",
                "postgres",
                "--storage-encrypted",
                "--kms-key-id",
                "alias/nothing-here",
            ],
            "(KMSKeyNotAccessibleFault)",
            "does not exist, is not enabled or you do not have permissions to access it",
        ),
    ];
    for (extra, code, text) in bad {
        let e = create_err(&extra);
        assert!(
            e.contains(&format!(
                "{code} when calling the CreateDBInstance operation"
            )) && e.contains(text),
            "{extra:?}: {e}"
        );
    }
    // A disabled key cannot encrypt a new instance.
    let key = t.s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.Arn",
        "--output",
        "text",
    ]);
    t.s.ok(&["kms", "disable-key", "--key-id", &key]);
    let e = create_err(&[
        "--db-instance-identifier",
        "db",
        "--engine",
        "postgres",
        "--kms-key-id",
        &key,
    ]);
    assert!(
        e.contains("(KMSKeyNotAccessibleFault)") && e.contains("is Disabled"),
        "{e}"
    );
    // Nothing was made by any of these.
    assert_eq!(
        t.s.ok(&[
            "rds",
            "describe-db-instances",
            "--query",
            "length(DBInstances)"
        ]),
        "0"
    );
    assert!(t.images().is_empty());

    // An unencrypted instance (the default): its rows are in its image in the
    // clear, which is what the encrypted test shows cannot be.
    let port = free_port();
    let c = t.create(
        "plain",
        port,
        &["--deletion-protection", "--db-name", "shop"],
    );
    assert_eq!(c["DBInstance"]["StorageEncrypted"], false);
    assert_eq!(c["DBInstance"]["StorageEncryptionType"], "none");
    assert!(c["DBInstance"].get("KmsKeyId").is_none());
    assert_eq!(c["DBInstance"]["DBName"], "shop");
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", MASTER, "-d", "shop"])
        .args(["-X", "-A", "-t", "-c"])
        .arg(format!(
            "create table t(x text); insert into t select '{MARKER} ' || g from generate_series(1, 2000) g; checkpoint;"
        ))
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(file_contains(&t.images()[0], MARKER.as_bytes()));

    let dup = t.fails(&[
        "rds",
        "create-db-instance",
        "--db-instance-identifier",
        "PLAIN",
        "--db-instance-class",
        "db.t3.micro",
        "--engine",
        "postgres",
        "--allocated-storage",
        "20",
        "--master-username",
        MASTER,
        "--master-user-password",
        PASSWORD,
    ]);
    assert!(
        dup.contains("(DBInstanceAlreadyExists)")
            && dup.contains("DB instance already exists: plain"),
        "{dup}"
    );
    // Every instance listens on 127.0.0.1: a port is one instance's.
    let taken = port.to_string();
    let e = create_err(&[
        "--db-instance-identifier",
        "other",
        "--engine",
        "postgres",
        "--port",
        &taken,
    ]);
    assert!(
        e.contains("(InvalidParameterCombination)") && e.contains("taken by DB instance plain"),
        "{e}"
    );
    let e = t.fails(&[
        "rds",
        "start-db-instance",
        "--db-instance-identifier",
        "plain",
    ]);
    assert!(
        e.contains("(InvalidDBInstanceState)") && e.contains("its status is available"),
        "{e}"
    );
    let e = t.fails(&[
        "rds",
        "stop-db-instance",
        "--db-instance-identifier",
        "nope",
    ]);
    assert!(
        e.contains("(DBInstanceNotFound)") && e.contains("DBInstance nope not found."),
        "{e}"
    );
    let e = t.fails(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "plain",
        "--skip-final-snapshot",
    ]);
    assert!(
        e.contains("(InvalidParameterCombination)") && e.contains("disable deletion protection"),
        "{e}"
    );
    assert_eq!(t.status("plain"), "available");
    // Encryption is chosen at creation only: ModifyDBInstance has no member for it.
    let o = t.s.ebsim(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "plain",
        "--storage-encrypted",
    ]);
    assert_eq!(o.code, 252, "{}", o.stderr);
    let m = t.json(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "plain",
        "--no-deletion-protection",
        "--backup-retention-period",
        "7",
        "--apply-immediately",
    ]);
    assert_eq!(m["DBInstance"]["DeletionProtection"], false);
    assert_eq!(m["DBInstance"]["BackupRetentionPeriod"], 7);
    // Larger storage: at least 10% more, never less; the filesystem grows with it.
    let e = t.fails(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "plain",
        "--allocated-storage",
        "21",
    ]);
    assert!(
        e.contains("(InvalidParameterCombination)") && e.contains("at least 10% greater"),
        "{e}"
    );
    let e = t.fails(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "plain",
        "--allocated-storage",
        "10",
    ]);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("cannot be decreased"),
        "{e}"
    );
    let grown = t.json(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "plain",
        "--allocated-storage",
        "30",
    ]);
    assert_eq!(grown["DBInstance"]["AllocatedStorage"], 30);
    assert_eq!(t.status("plain"), "available");
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            MASTER,
            "-d",
            "shop",
            "-Atc",
            "select count(*) from t",
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
    let df = Command::new("df")
        .args(["--output=size", "-B1G"])
        .arg(t.data_mount("plain"))
        .output()
        .unwrap();
    let size: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(size >= 28, "the filesystem is {size} GiB");
    // A new master password, from a file: the old one no longer lets anyone in.
    let pw_file = t.s.dir.path().join("new-password");
    std::fs::write(&pw_file, "Changed-pw-0042").unwrap();
    t.s.ok(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "plain",
        "--master-user-password",
        &format!("file://{}", pw_file.display()),
    ]);
    let old = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            MASTER,
            "-d",
            "shop",
            "-Atc",
            "select 1",
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!old.status.success());
    let new = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            MASTER,
            "-d",
            "shop",
            "-Atc",
            "select count(*) from t",
        ])
        .env("PGPASSWORD", "Changed-pw-0042")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&new.stdout).trim(), "2000");
    let log =
        std::fs::read_to_string(t.s.home().join("regions/us-east-1/cloudtrail.jsonl")).unwrap();
    assert!(
        !log.contains("Changed-pw-0042"),
        "the new password is in the audit log"
    );
    // An IAM user without RDS permissions is refused.
    t.s.ok(&["iam", "create-user", "--user-name", "dev"]);
    let o = t.s.ebsim(&[
        "--principal",
        "arn:aws:iam::111122223333:user/dev",
        "rds",
        "describe-db-instances",
    ]);
    assert_eq!(o.code, 254, "{}", o.stderr);
    assert!(
        o.stderr.contains("(AccessDenied)")
            && o.stderr
                .contains("is not authorized to perform: rds:DescribeDBInstances"),
        "{}",
        o.stderr
    );
}

#[test]
fn snapshots_copy_across_keys_and_regions_restore_with_their_key_and_encrypt_a_plain_database() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let port = free_port();
    t.create("src", port, &["--storage-encrypted"]);
    psql(
        port,
        PASSWORD,
        &format!(
            "create table ledger(id int primary key, body text); \
             insert into ledger select g, '{MARKER} ' || g from generate_series(1, 2000) g;"
        ),
    )
    .unwrap();
    // A snapshot of the running instance: a write cut, no stop.
    let s = t.json(&[
        "rds",
        "create-db-snapshot",
        "--db-snapshot-identifier",
        "snap1",
        "--db-instance-identifier",
        "src",
    ]);
    assert_eq!(s["DBSnapshot"]["Status"], "creating");
    // Rows written after the cut are not in it.
    psql(
        port,
        PASSWORD,
        "insert into ledger values (2001, 'after the cut')",
    )
    .unwrap();
    let d = t.json(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        "snap1",
    ]);
    let d = &d["DBSnapshots"][0];
    assert_eq!(d["Status"], "available", "{d}");
    assert_eq!(d["PercentProgress"], 100);
    assert_eq!(d["SnapshotType"], "manual");
    assert_eq!(d["Encrypted"], true);
    let src_key = t.describe("src")["KmsKeyId"].as_str().unwrap().to_string();
    assert_eq!(d["KmsKeyId"], src_key.as_str());
    assert_eq!(t.status("src"), "available");
    let dup = t.fails(&[
        "rds",
        "create-db-snapshot",
        "--db-snapshot-identifier",
        "SNAP1",
        "--db-instance-identifier",
        "src",
    ]);
    assert!(dup.contains("(DBSnapshotAlreadyExists)"), "{dup}");

    // Same region, no key: the same key.
    let same = t.json(&[
        "rds",
        "copy-db-snapshot",
        "--source-db-snapshot-identifier",
        "snap1",
        "--target-db-snapshot-identifier",
        "snap1-copy",
    ]);
    assert_eq!(same["DBSnapshot"]["KmsKeyId"], src_key.as_str());

    // Another region: a key of that region is required, then used.
    let arn = "arn:aws:rds:us-east-1:111122223333:snapshot:snap1";
    let west = |args: &[&str]| {
        let mut a = vec!["--region", "us-west-2"];
        a.extend_from_slice(args);
        a.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let no_key = west(&[
        "rds",
        "copy-db-snapshot",
        "--source-db-snapshot-identifier",
        arn,
        "--target-db-snapshot-identifier",
        "west1",
    ]);
    let e = t.fails(&no_key.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("(InvalidParameterCombination)") && e.contains("KmsKeyId is required"),
        "{e}"
    );
    let west_key = t.s.ok(&[
        "--region",
        "us-west-2",
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.Arn",
        "--output",
        "text",
    ]);
    let copy = west(&[
        "rds",
        "copy-db-snapshot",
        "--source-db-snapshot-identifier",
        arn,
        "--target-db-snapshot-identifier",
        "west1",
        "--kms-key-id",
        &west_key,
    ]);
    let c: Value =
        serde_json::from_str(&t.s.ok(&copy.iter().map(String::as_str).collect::<Vec<_>>()))
            .unwrap();
    assert_eq!(c["DBSnapshot"]["KmsKeyId"], west_key.as_str());
    assert_eq!(c["DBSnapshot"]["SourceRegion"], "us-east-1");
    assert_eq!(c["DBSnapshot"]["SourceDBSnapshotIdentifier"], arn);

    // Restored there: the same rows, under the west key, its image unreadable.
    let west_port = free_port();
    let wp = west_port.to_string();
    let restore = west(&[
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--db-instance-identifier",
        "west-db",
        "--db-snapshot-identifier",
        "west1",
        "--port",
        &wp,
    ]);
    let r: Value =
        serde_json::from_str(&t.s.ok(&restore.iter().map(String::as_str).collect::<Vec<_>>()))
            .unwrap();
    assert_eq!(r["DBInstance"]["StorageEncrypted"], true);
    assert_eq!(r["DBInstance"]["KmsKeyId"], west_key.as_str());
    assert_eq!(
        psql(west_port, PASSWORD, "select count(*) from ledger").unwrap(),
        "2000"
    );
    assert_eq!(
        psql(
            west_port,
            PASSWORD,
            "select count(*) from ledger where id = 2001"
        )
        .unwrap(),
        "0"
    );
    let west_images = t.images_in("us-west-2");
    assert_eq!(west_images.len(), 1);
    assert!(!file_contains(&west_images[0], MARKER.as_bytes()));

    // An unencrypted database becomes encrypted through a snapshot copy.
    let plain_port = free_port();
    t.create("plain", plain_port, &[]);
    psql(
        plain_port,
        PASSWORD,
        &format!("create table t(x text); insert into t values ('{MARKER} plain')"),
    )
    .unwrap();
    t.s.ok(&[
        "rds",
        "create-db-snapshot",
        "--db-snapshot-identifier",
        "plain1",
        "--db-instance-identifier",
        "plain",
    ]);
    let enc = t.json(&[
        "rds",
        "copy-db-snapshot",
        "--source-db-snapshot-identifier",
        "plain1",
        "--target-db-snapshot-identifier",
        "plain1-enc",
        "--kms-key-id",
        "alias/aws/rds",
    ]);
    assert_eq!(enc["DBSnapshot"]["Encrypted"], true);
    let enc_port = free_port();
    let ep = enc_port.to_string();
    let r = t.json(&[
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--db-instance-identifier",
        "now-encrypted",
        "--db-snapshot-identifier",
        "plain1-enc",
        "--port",
        &ep,
    ]);
    assert_eq!(r["DBInstance"]["StorageEncrypted"], true);
    assert_eq!(
        psql(enc_port, PASSWORD, "select x from t").unwrap(),
        format!("{MARKER} plain")
    );

    // A restore under a key RDS cannot use is refused, and makes nothing.
    t.s.ok(&[
        "--region",
        "us-west-2",
        "kms",
        "disable-key",
        "--key-id",
        &west_key,
    ]);
    let again = west(&[
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--db-instance-identifier",
        "west-db2",
        "--db-snapshot-identifier",
        "west1",
    ]);
    let e = t.fails(&again.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("(KMSKeyNotAccessibleFault)"), "{e}");
    assert_eq!(t.images_in("us-west-2").len(), 1);

    // Deleting a snapshot; a missing one.
    let del = t.json(&[
        "rds",
        "delete-db-snapshot",
        "--db-snapshot-identifier",
        "snap1-copy",
    ]);
    assert_eq!(del["DBSnapshot"]["Status"], "deleted");
    let e = t.fails(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        "snap1-copy",
    ]);
    assert!(
        e.contains("(DBSnapshotNotFound)") && e.contains("DBSnapshot snap1-copy not found."),
        "{e}"
    );
}

#[test]
fn a_disabled_key_takes_the_instance_down_recoverably_and_seven_days_make_it_terminal() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let key = t.s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.Arn",
        "--output",
        "text",
    ]);
    let port = free_port();
    t.create("keyed", port, &["--kms-key-id", &key]);
    psql(
        port,
        PASSWORD,
        &format!("create table t(x text); insert into t values ('{MARKER} kept')"),
    )
    .unwrap();
    let data_dir = psql(port, PASSWORD, "show data_directory").unwrap();
    t.s.ok(&[
        "rds",
        "create-db-snapshot",
        "--db-snapshot-identifier",
        "before",
        "--db-instance-identifier",
        "keyed",
    ]);

    // The key disabled: the next RDS call takes the instance down.
    t.s.ok(&["kms", "disable-key", "--key-id", &key]);
    let d = t.describe("keyed");
    assert_eq!(
        d["DBInstanceStatus"], "inaccessible-encryption-credentials-recoverable",
        "{d}"
    );
    assert!(psql(port, PASSWORD, "select 1").is_err());
    assert!(!mounted(&data_dir.replace("/pgdata", "")));
    // Starting needs the key back.
    let e = t.fails(&[
        "rds",
        "start-db-instance",
        "--db-instance-identifier",
        "keyed",
    ]);
    assert!(
        e.contains("(KMSKeyNotAccessibleFault)") && e.contains("is Disabled"),
        "{e}"
    );
    assert_eq!(
        t.status("keyed"),
        "inaccessible-encryption-credentials-recoverable"
    );
    t.s.ok(&["kms", "enable-key", "--key-id", &key]);
    assert_eq!(
        t.status("keyed"),
        "inaccessible-encryption-credentials-recoverable"
    );
    t.s.ok(&[
        "rds",
        "start-db-instance",
        "--db-instance-identifier",
        "keyed",
    ]);
    assert_eq!(t.status("keyed"), "available");
    assert_eq!(
        psql(port, PASSWORD, "select x from t").unwrap(),
        format!("{MARKER} kept")
    );

    // Pending deletion counts as unusable too; seven days later it is terminal.
    t.s.ok(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &key,
        "--pending-window-in-days",
        "30",
    ]);
    assert_eq!(
        t.status("keyed"),
        "inaccessible-encryption-credentials-recoverable"
    );
    t.s.ok(&["clock", "advance", "--days", "8"]);
    assert_eq!(t.status("keyed"), "inaccessible-encryption-credentials");
    let e = t.fails(&[
        "rds",
        "start-db-instance",
        "--db-instance-identifier",
        "keyed",
    ]);
    assert!(
        e.contains("(InvalidDBInstanceState)")
            && e.contains("Restore a DB snapshot under a usable key"),
        "{e}"
    );
    // The way back: the snapshot copied under a usable key, restored.
    t.s.ok(&["kms", "cancel-key-deletion", "--key-id", &key]);
    t.s.ok(&["kms", "enable-key", "--key-id", &key]);
    t.s.ok(&[
        "rds",
        "copy-db-snapshot",
        "--source-db-snapshot-identifier",
        "before",
        "--target-db-snapshot-identifier",
        "before-rds-key",
        "--kms-key-id",
        "alias/aws/rds",
    ]);
    let p2 = free_port();
    let p2s = p2.to_string();
    t.s.ok(&[
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--db-instance-identifier",
        "rescued",
        "--db-snapshot-identifier",
        "before-rds-key",
        "--port",
        &p2s,
    ]);
    assert_eq!(
        psql(p2, PASSWORD, "select x from t").unwrap(),
        format!("{MARKER} kept")
    );
    // A terminal instance can still be deleted.
    t.s.ok(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "keyed",
        "--skip-final-snapshot",
    ]);
}

#[test]
fn read_replicas_stream_new_rows_follow_the_key_rules_and_promote() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let port = free_port();
    t.create("primary", port, &["--storage-encrypted"]);
    psql(
        port,
        PASSWORD,
        "create table feed(id int primary key, body text); insert into feed values (1, 'first')",
    )
    .unwrap();
    let key = t.describe("primary")["KmsKeyId"]
        .as_str()
        .unwrap()
        .to_string();

    // In the source's region: the source's key, and naming one is refused.
    let e = t.fails(&[
        "rds",
        "create-db-instance-read-replica",
        "--db-instance-identifier",
        "rep",
        "--source-db-instance-identifier",
        "primary",
        "--kms-key-id",
        "alias/aws/rds",
    ]);
    assert!(
        e.contains("(InvalidParameterCombination)")
            && e.contains("Your request does not require the KMS key parameter"),
        "{e}"
    );
    let rport = free_port();
    let rp = rport.to_string();
    let r = t.json(&[
        "rds",
        "create-db-instance-read-replica",
        "--db-instance-identifier",
        "rep",
        "--source-db-instance-identifier",
        "primary",
        "--port",
        &rp,
    ]);
    assert_eq!(
        r["DBInstance"]["ReadReplicaSourceDBInstanceIdentifier"],
        "primary"
    );
    assert_eq!(r["DBInstance"]["KmsKeyId"], key.as_str());
    assert_eq!(t.status("rep"), "available");
    assert_eq!(
        t.describe("primary")["ReadReplicaDBInstanceIdentifiers"],
        serde_json::json!(["rep"])
    );
    // New rows on the source reach the replica, which refuses writes.
    psql(port, PASSWORD, "insert into feed values (2, 'second')").unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        seen = psql(rport, PASSWORD, "select count(*) from feed").unwrap();
        if seen == "2" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(seen, "2");
    let e = psql(rport, PASSWORD, "insert into feed values (3, 'x')").unwrap_err();
    assert!(e.contains("read-only transaction"), "{e}");
    // Its storage is encrypted: the image holds no row.
    for img in t.images() {
        assert!(!file_contains(&img, b"second"), "{}", img.display());
    }

    // Another region: an encrypted source needs a key there.
    let arn = "arn:aws:rds:us-east-1:111122223333:db:primary";
    let o = t.s.ebsim(&[
        "--region",
        "us-west-2",
        "rds",
        "create-db-instance-read-replica",
        "--db-instance-identifier",
        "west-rep",
        "--source-db-instance-identifier",
        arn,
    ]);
    assert_eq!(o.code, 254, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "Cannot create a cross region unencrypted read replica from encrypted source."
        ),
        "{}",
        o.stderr
    );
    // The source cannot stop while it has replicas, nor drop its backups.
    let e = t.fails(&[
        "rds",
        "stop-db-instance",
        "--db-instance-identifier",
        "primary",
    ]);
    assert!(
        e.contains("(InvalidDBInstanceState)") && e.contains("has read replicas"),
        "{e}"
    );
    let e = t.fails(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "primary",
        "--backup-retention-period",
        "0",
    ]);
    assert!(e.contains("(InvalidParameterCombination)"), "{e}");

    // A snapshot of the replica restores as a primary of its own.
    t.s.ok(&[
        "rds",
        "create-db-snapshot",
        "--db-snapshot-identifier",
        "of-rep",
        "--db-instance-identifier",
        "rep",
    ]);
    let fport = free_port();
    let fp = fport.to_string();
    t.s.ok(&[
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--db-instance-identifier",
        "from-rep",
        "--db-snapshot-identifier",
        "of-rep",
        "--port",
        &fp,
    ]);
    psql(fport, PASSWORD, "insert into feed values (10, 'writable')").unwrap();
    assert_eq!(
        psql(fport, PASSWORD, "select pg_is_in_recovery()").unwrap(),
        "f"
    );

    // Promotion: the replica takes writes and keeps every row; the source
    // lists it no more.
    let p = t.json(&[
        "rds",
        "promote-read-replica",
        "--db-instance-identifier",
        "rep",
    ]);
    assert_eq!(p["DBInstance"]["DBInstanceStatus"], "modifying");
    let d = t.describe("rep");
    assert_eq!(d["DBInstanceStatus"], "available");
    assert!(
        d.get("ReadReplicaSourceDBInstanceIdentifier").is_none(),
        "{d}"
    );
    assert_eq!(d["BackupRetentionPeriod"], 1);
    psql(
        rport,
        PASSWORD,
        "insert into feed values (3, 'on the promoted replica')",
    )
    .unwrap();
    assert_eq!(
        psql(rport, PASSWORD, "select count(*) from feed").unwrap(),
        "3"
    );
    assert_eq!(
        t.describe("primary")["ReadReplicaDBInstanceIdentifiers"],
        serde_json::json!([])
    );
    let e = t.fails(&[
        "rds",
        "promote-read-replica",
        "--db-instance-identifier",
        "rep",
    ]);
    assert!(e.contains("is not a read replica"), "{e}");

    // Deleting a source makes its replicas standalone first.
    let r2port = free_port();
    let r2p = r2port.to_string();
    t.s.ok(&[
        "rds",
        "create-db-instance-read-replica",
        "--db-instance-identifier",
        "rep2",
        "--source-db-instance-identifier",
        "primary",
        "--port",
        &r2p,
    ]);
    // A delete that is refused (the final snapshot's name is taken) promotes nothing.
    let e = t.fails(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "primary",
        "--final-db-snapshot-identifier",
        "of-rep",
    ]);
    assert!(e.contains("(DBSnapshotAlreadyExists)"), "{e}");
    assert_eq!(
        t.describe("rep2")["ReadReplicaSourceDBInstanceIdentifier"],
        "primary"
    );
    t.s.ok(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "primary",
        "--skip-final-snapshot",
    ]);
    let d = t.describe("rep2");
    assert!(
        d.get("ReadReplicaSourceDBInstanceIdentifier").is_none(),
        "{d}"
    );
    psql(
        r2port,
        PASSWORD,
        "insert into feed values (20, 'rep2 on its own')",
    )
    .unwrap();

    // An unencrypted source cannot have an encrypted replica, and needs backups.
    let plain_port = free_port();
    t.create("plain", plain_port, &["--backup-retention-period", "0"]);
    let e = t.fails(&[
        "rds",
        "create-db-instance-read-replica",
        "--db-instance-identifier",
        "plain-rep",
        "--source-db-instance-identifier",
        "plain",
    ]);
    assert!(e.contains("Automated backups are not enabled"), "{e}");
    t.s.ok(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "plain",
        "--backup-retention-period",
        "1",
    ]);
    let west_key = t.s.ok(&[
        "--region",
        "us-west-2",
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.Arn",
        "--output",
        "text",
    ]);
    let o = t.s.ebsim(&[
        "--region",
        "us-west-2",
        "rds",
        "create-db-instance-read-replica",
        "--db-instance-identifier",
        "plain-west",
        "--source-db-instance-identifier",
        "arn:aws:rds:us-east-1:111122223333:db:plain",
        "--kms-key-id",
        &west_key,
    ]);
    assert_eq!(o.code, 254, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("Cannot create an encrypted read replica from an unencrypted source"),
        "{}",
        o.stderr
    );
}

#[test]
fn automated_backups_follow_the_retention_period_on_ebsim_s_clock() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let port = free_port();
    t.create(
        "daily",
        port,
        &["--storage-encrypted", "--backup-retention-period", "2"],
    );
    psql(
        port,
        PASSWORD,
        "create table t(x text); insert into t values ('kept by a backup')",
    )
    .unwrap();
    let automated = |t: &Rds| -> Vec<String> {
        let v = t.json(&[
            "rds",
            "describe-db-snapshots",
            "--db-instance-identifier",
            "daily",
            "--snapshot-type",
            "automated",
        ]);
        v["DBSnapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["DBSnapshotIdentifier"].as_str().unwrap().to_string())
            .collect()
    };
    // The first one right after creation (at the next call).
    let first = automated(&t);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("rds:daily-"), "{first:?}");
    // One a day, each kept for the retention period (2 days): after four days,
    // the last two days' (the one of two days ago is older than two days by
    // the seconds the calls took).
    for _ in 0..4 {
        t.s.ok(&["clock", "advance", "--days", "1"]);
        t.s.ok(&["rds", "describe-db-instances"]);
    }
    let later = automated(&t);
    assert_eq!(later.len(), 2, "{later:?}");
    assert!(!later.contains(&first[0]), "{later:?}");
    // An automated snapshot is RDS's to delete, and restores like any other.
    let e = t.fails(&[
        "rds",
        "delete-db-snapshot",
        "--db-snapshot-identifier",
        &later[0],
    ]);
    assert!(
        e.contains("(InvalidDBSnapshotState)") && e.contains("automated"),
        "{e}"
    );
    let d = t.json(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        &later[0],
    ]);
    assert_eq!(d["DBSnapshots"][0]["SnapshotType"], "automated");
    assert_eq!(d["DBSnapshots"][0]["Encrypted"], true);
    let p2 = free_port();
    let p2s = p2.to_string();
    t.s.ok(&[
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--db-instance-identifier",
        "from-backup",
        "--db-snapshot-identifier",
        &later[1],
        "--port",
        &p2s,
        "--backup-retention-period",
        "0",
    ]);
    assert_eq!(
        psql(p2, PASSWORD, "select x from t").unwrap(),
        "kept by a backup"
    );
    // `rds:` names are RDS's own.
    let e = t.fails(&[
        "rds",
        "create-db-snapshot",
        "--db-snapshot-identifier",
        "rds:daily-mine",
        "--db-instance-identifier",
        "daily",
    ]);
    assert!(e.contains("(InvalidParameterValue)"), "{e}");
    // A retention period of 0 ends them.
    t.s.ok(&[
        "rds",
        "modify-db-instance",
        "--db-instance-identifier",
        "daily",
        "--backup-retention-period",
        "0",
    ]);
    assert!(automated(&t).is_empty());
}

#[test]
fn a_stop_and_a_delete_can_leave_a_snapshot_that_restores_every_row() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let port = free_port();
    t.create(
        "leaving",
        port,
        &["--storage-encrypted", "--backup-retention-period", "0"],
    );
    psql(
        port,
        PASSWORD,
        "create table t(x text); insert into t values ('before the stop')",
    )
    .unwrap();
    t.s.ok(&[
        "rds",
        "stop-db-instance",
        "--db-instance-identifier",
        "leaving",
        "--db-snapshot-identifier",
        "at-stop",
    ]);
    let s = t.json(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        "at-stop",
    ]);
    assert_eq!(s["DBSnapshots"][0]["Status"], "available");
    t.s.ok(&[
        "rds",
        "start-db-instance",
        "--db-instance-identifier",
        "leaving",
    ]);
    psql(port, PASSWORD, "insert into t values ('before the delete')").unwrap();
    // A final snapshot whose name is taken: nothing is deleted.
    let e = t.fails(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "leaving",
        "--final-db-snapshot-identifier",
        "at-stop",
    ]);
    assert!(e.contains("(DBSnapshotAlreadyExists)"), "{e}");
    assert_eq!(t.status("leaving"), "available");
    let del = t.json(&[
        "rds",
        "delete-db-instance",
        "--db-instance-identifier",
        "leaving",
        "--final-db-snapshot-identifier",
        "final",
    ]);
    assert_eq!(del["DBInstance"]["DBInstanceStatus"], "deleting");
    let f = t.json(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        "final",
    ]);
    assert_eq!(f["DBSnapshots"][0]["Encrypted"], true);
    assert_eq!(f["DBSnapshots"][0]["DBInstanceIdentifier"], "leaving");
    let p2 = free_port();
    let p2s = p2.to_string();
    t.s.ok(&[
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--db-instance-identifier",
        "back",
        "--db-snapshot-identifier",
        "final",
        "--port",
        &p2s,
    ]);
    assert_eq!(psql(p2, PASSWORD, "select count(*) from t").unwrap(), "2");
}

#[test]
fn a_snapshot_killed_half_way_leaves_a_failed_record_that_delete_removes() {
    if skipped() {
        return;
    }
    let t = Rds::new();
    let port = free_port();
    t.create(
        "crashy",
        port,
        &["--storage-encrypted", "--backup-retention-period", "0"],
    );
    psql(
        port,
        PASSWORD,
        "create table t(x text); insert into t values ('survives')",
    )
    .unwrap();
    t.s.ok(&[
        "rds",
        "stop-db-instance",
        "--db-instance-identifier",
        "crashy",
    ]);
    // The snapshot of a stopped instance runs in this command: killed (as
    // kill -9 would) after its blocks are stored, before its manifest.
    let o = Command::new(env!("CARGO_BIN_EXE_ebsim"))
        .args([
            "rds",
            "create-db-snapshot",
            "--db-snapshot-identifier",
            "half",
            "--db-instance-identifier",
            "crashy",
        ])
        .env("EBSIM_HOME", t.s.home())
        .env("EBSIM_FAULT", "snapshot:after-blocks")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        None,
        "not killed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The next call settles what it left: the instance failed (its operation
    // died), the snapshot failed, and delete removes it.
    let d = t.describe("crashy");
    assert_eq!(d["DBInstanceStatus"], "failed", "{d}");
    assert!(
        d["StatusMessage"].as_str().unwrap().contains("backing-up"),
        "{d}"
    );
    let s = t.json(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        "half",
    ]);
    assert_eq!(s["DBSnapshots"][0]["Status"], "failed", "{s}");
    t.s.ok(&[
        "rds",
        "delete-db-snapshot",
        "--db-snapshot-identifier",
        "half",
    ]);
    let e = t.fails(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        "half",
    ]);
    assert!(e.contains("(DBSnapshotNotFound)"), "{e}");
    // Reboot brings the instance back with its rows; a new snapshot works.
    t.s.ok(&[
        "rds",
        "reboot-db-instance",
        "--db-instance-identifier",
        "crashy",
    ]);
    assert_eq!(psql(port, PASSWORD, "select x from t").unwrap(), "survives");
    t.s.ok(&[
        "rds",
        "create-db-snapshot",
        "--db-snapshot-identifier",
        "whole",
        "--db-instance-identifier",
        "crashy",
    ]);
    let s = t.json(&[
        "rds",
        "describe-db-snapshots",
        "--db-snapshot-identifier",
        "whole",
    ]);
    assert_eq!(s["DBSnapshots"][0]["Status"], "available");
}
