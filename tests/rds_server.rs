//! RDS over `ebsim serve`'s Query protocol with AWS's own clients: boto3
//! (tests/rds_server.py: create, waiters, describe, snapshots, a cross-region
//! copy that botocore presigns, restore, errors, stop/start, paginators) and the
//! AWS CLI v2, each request SigV4-signed with a root access key. Needs what
//! tests/rds.rs needs, plus boto3 (scripts/test.sh installs it).

mod common;

use common::postgres::free_port;
use common::sandbox::Sandbox;
use common::server::{Server, client, have_python_module, root_key, run};
use std::path::Path;

/// Deletes the sandbox's DB instances (both regions) when the test ends,
/// however it ends, before the sandbox's directory goes.
struct Instances<'a>(&'a Sandbox);

impl Drop for Instances<'_> {
    fn drop(&mut self) {
        for region in ["us-east-1", "us-west-2"] {
            let o = self.0.ebsim(&[
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
                let _ = self.0.ebsim(&[
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

#[test]
fn boto3_and_the_aws_cli_run_rds_over_the_wire() {
    let missing = common::postgres::missing()
        .or_else(|| (!have_python_module("boto3")).then(|| "boto3 is not installed".to_string()));
    if let Some(why) = missing {
        common::skip(&format!(
            "{why} (scripts/test.sh installs it; CI runs as root)"
        ));
        return;
    }
    let s = Sandbox::new();
    let _instances = Instances(&s);
    let key = root_key(&s);
    let srv = Server::start(&s, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rds_server.py");
    let mut c = client("python3", &srv, &key);
    c.arg(&script)
        .env("EBSIM_PASSWORD", "Wire-pw-7731")
        .env("EBSIM_PORT", free_port().to_string())
        .env("EBSIM_WEST_PORT", free_port().to_string())
        .env("EBSIM_REPLICA_PORT", free_port().to_string());
    let out = run(c);
    assert_eq!(out.lines().last(), Some("ok"), "{out}");

    // The AWS CLI v2 reads RDS's XML too (and its error line).
    if Path::new("/usr/bin/aws").exists() {
        let mut c = client("/usr/bin/aws", &srv, &key);
        c.args([
            "--endpoint-url",
            &srv.endpoint(),
            "rds",
            "describe-db-snapshots",
        ])
        .args([
            "--query",
            "DBSnapshots[].[DBSnapshotIdentifier,Encrypted]",
            "--output",
            "text",
        ]);
        let out = run(c);
        assert_eq!(out.trim(), "", "{out}");
        let mut c = client("/usr/bin/aws", &srv, &key);
        c.args([
            "--endpoint-url",
            &srv.endpoint(),
            "rds",
            "describe-db-instances",
        ])
        .args(["--db-instance-identifier", "missing-db"]);
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(254), "{err}");
        assert!(
            err.contains("An error occurred (DBInstanceNotFound) when calling the DescribeDBInstances operation: DBInstance missing-db not found."),
            "{err}"
        );
    } else {
        common::skip("the AWS CLI v2 (/usr/bin/aws) is not installed");
    }
    let (code, _) = srv.stop();
    assert_eq!(code, 0);
    s.assert_no_leftovers();
}
