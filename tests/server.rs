//! `ebsim serve` driven by AWS's own clients: the AWS CLI v1 (`python3 -m
//! awscli`) and v2 (`/usr/bin/aws`), boto3 (tests/server_clients.py). Each test
//! starts a server on a free loopback port over a data root of its own and stops
//! it with SIGTERM. scripts/test.sh installs the clients; a test whose client is
//! missing says so and is counted as skipped (common::skip).

#[macro_use]
mod common;

use common::sandbox::Sandbox;
use common::server::{Server, have_python_module, key_of, root_key, run};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ACCOUNT: &str = "111122223333";

/// A command with the client environment (common::server::client) and what
/// tests/server_clients.py checks against: the account and KMS's operations.
fn client(program: &str, srv: &Server, key: &(String, String)) -> Command {
    let mut c = common::server::client(program, srv, key);
    c.env("EBSIM_ACCOUNT", ACCOUNT).env(
        "EBSIM_KMS_OPERATIONS",
        ebsim::service::kms::OPERATIONS.join(","),
    );
    c
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/server_clients.py")
        .display()
        .to_string()
}

/// boto3's mode `mode` of tests/server_clients.py; its last line.
fn boto3(srv: &Server, key: &(String, String), mode: &str, env: &[(&str, &str)]) -> String {
    let mut c = client("python3", srv, key);
    c.arg(script()).arg(mode);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run(c);
    out.lines().last().unwrap_or_default().to_string()
}

/// The seed notes' lines (encrypt a file, decrypt it back through base64) with an
/// AWS CLI, given as the shell words that start it.
fn seed_lines(srv: &Server, key: &(String, String), aws: &str, dir: &Path) {
    let sh = format!(
        "set -euo pipefail; cd '{dir}'; aws() {{ {aws} --endpoint-url \"$EBSIM_ENDPOINT\" \"$@\"; }}
         printf 'attack at dawn\\n' > f
         aws kms encrypt --key-id alias/x --plaintext fileb://f --output text --query CiphertextBlob | base64 -d > ct
         aws kms decrypt --ciphertext-blob fileb://ct --output text --query Plaintext | base64 -d > back
         cmp f back
         aws kms describe-key --key-id alias/x --query KeyMetadata.KeyState --output text
         aws sts get-caller-identity --query Arn --output text
         if aws kms describe-key --key-id alias/missing 2> err; then exit 9; fi
         grep -q 'An error occurred (NotFoundException) when calling the DescribeKey operation' err",
        dir = dir.display()
    );
    let mut c = client("bash", srv, key);
    c.args(["-c", &sh]);
    let out = run(c);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["Enabled", &format!("arn:aws:iam::{ACCOUNT}:root")],
        "{aws}"
    );
}

#[test]
fn aws_cli_v1_and_v2_run_the_seed_lines() {
    let s = Sandbox::new();
    let key = root_key(&s);
    let k = s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.KeyId",
        "--output",
        "text",
    ]);
    s.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/x",
        "--target-key-id",
        k.trim(),
    ]);
    let srv = Server::start(&s, &[]);
    let mut ran = 0;
    if have_python_module("awscli") {
        seed_lines(&srv, &key, "python3 -m awscli", &s.path("v1"));
        ran += 1;
    } else {
        common::skip("the AWS CLI v1 (pip awscli) is not installed");
    }
    let v2 = Command::new("/usr/bin/aws")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| String::from_utf8_lossy(&o.stdout).starts_with("aws-cli/2"));
    if v2.is_some() {
        seed_lines(&srv, &key, "/usr/bin/aws", &s.path("v2"));
        ran += 1;
    } else {
        common::skip("the AWS CLI v2 (/usr/bin/aws, apt awscli) is not installed");
    }
    let (code, err) = srv.stop();
    assert_eq!(code, 0, "{err}");
    if ran > 0 {
        // What the clients did is in the data root: the CLI reads its audit log.
        let trail = s.ok(&[
            "cloudtrail",
            "lookup-events",
            "--lookup-attributes",
            "AttributeKey=EventName,AttributeValue=Decrypt",
        ]);
        assert!(trail.contains("127.0.0.1"), "{trail}");
    }
}

#[test]
fn boto3_calls_every_kms_operation_and_cloudtrail() {
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let s = Sandbox::new();
    let key = root_key(&s);
    let srv = Server::start(&s, &[]);
    let last = boto3(&srv, &key, "kms-all", &[]);
    assert_eq!(
        last,
        format!(
            "ok kms-all {} operations",
            ebsim::service::kms::OPERATIONS.len()
        )
    );
    srv.stop();
}

#[test]
fn every_answer_s_audit_record_is_in_the_log_before_the_answer_arrives() {
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let s = Sandbox::new();
    let key = root_key(&s);
    let srv = Server::start(&s, &[]);
    let trail = s.home().join("regions/us-east-1/cloudtrail.jsonl");
    let trail = trail.display().to_string();
    assert_eq!(
        boto3(
            &srv,
            &key,
            "audit-before-answer",
            &[("EBSIM_TRAIL", &trail)]
        ),
        "ok audit-before-answer 640 answers"
    );
    srv.stop();
}

#[test]
fn boto3_manages_iam_users_roles_policies_and_access_keys_over_query() {
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let s = Sandbox::new();
    let key = root_key(&s);
    let srv = Server::start(&s, &[]);
    assert_eq!(boto3(&srv, &key, "iam", &[]), "ok iam");
    srv.stop();
}

#[test]
fn sigv4_failures_are_refused_with_each_protocols_codes() {
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let s = Sandbox::new();
    let key = root_key(&s);
    let srv = Server::start(&s, &[]);
    assert_eq!(
        boto3(&srv, &key, "sigv4-failures", &[]),
        "ok sigv4-failures"
    );
    assert_eq!(boto3(&srv, &key, "raw-errors", &[]), "ok raw-errors");
    // An inactive key is refused; made active again, it works.
    s.ok(&[
        "iam",
        "update-access-key",
        "--access-key-id",
        &key.0,
        "--status",
        "Inactive",
    ]);
    let mut c = client("python3", &srv, &key);
    c.arg(script()).arg("caller");
    let o = c.output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("InvalidClientTokenId"));
    s.ok(&[
        "iam",
        "update-access-key",
        "--access-key-id",
        &key.0,
        "--status",
        "Active",
    ]);
    assert!(boto3(&srv, &key, "caller", &[]).contains(&format!("arn:aws:iam::{ACCOUNT}:root")));
    // Its last use is recorded.
    let used = s.ok(&["iam", "get-access-key-last-used", "--access-key-id", &key.0]);
    assert!(
        used.contains("\"ServiceName\": \"sts\"") && used.contains("us-east-1"),
        "{used}"
    );
    srv.stop();
}

#[test]
fn users_sign_as_themselves_and_sessions_expire() {
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let s = Sandbox::new();
    s.ok(&["iam", "create-user", "--user-name", "alice"]);
    let alice = key_of(&s.ok(&["iam", "create-access-key", "--user-name", "alice"]));
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/alice"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    s.ok(&[
        "iam",
        "create-role",
        "--role-name",
        "Deployer",
        "--assume-role-policy-document",
        &trust,
    ]);
    let nobody = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/bob"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    s.ok(&[
        "iam",
        "create-role",
        "--role-name",
        "Nobody",
        "--assume-role-policy-document",
        &nobody,
    ]);
    let srv = Server::start(&s, &[]);
    let who = boto3(&srv, &alice, "caller", &[]);
    let v: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(v["Arn"], format!("arn:aws:iam::{ACCOUNT}:user/alice"));
    assert!(v["UserId"].as_str().unwrap().starts_with("AIDA"), "{who}");
    let session = s.dir.path().join("session.json");
    let session = session.to_str().unwrap();
    assert_eq!(
        boto3(&srv, &alice, "assume", &[("EBSIM_SESSION_FILE", session)]),
        "ok assume"
    );
    srv.stop();
    // An hour later in ebsim's clock, the 15-minute session has expired.
    s.ok(&["clock", "advance", "--hours", "1"]);
    let srv = Server::start(&s, &[]);
    assert_eq!(
        boto3(&srv, &alice, "expired", &[("EBSIM_SESSION_FILE", session)]),
        "ok expired"
    );
    srv.stop();
}

#[test]
fn the_cli_shares_the_data_root_and_one_server_runs_per_root() {
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let s = Sandbox::new();
    let key = root_key(&s);
    let srv = Server::start(&s, &[]);
    // The CLI works on the data root while the server runs, and each sees the
    // other's keys.
    let k = s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.KeyId",
        "--output",
        "text",
    ]);
    let k = k.trim();
    let script = format!(
        "import boto3,os\nkms=boto3.client('kms',endpoint_url=os.environ['EBSIM_ENDPOINT'])\n\
         ids=[x['KeyId'] for x in kms.list_keys()['Keys']]\nassert '{k}' in ids, ids\n\
         kms.create_alias(AliasName='alias/from-boto3',TargetKeyId='{k}')\nprint('ok')"
    );
    let mut c = client("python3", &srv, &key);
    c.args(["-c", &script]);
    assert_eq!(run(c).trim(), "ok");
    let aliases = s.ok(&[
        "kms",
        "list-aliases",
        "--key-id",
        k,
        "--query",
        "Aliases[].AliasName",
        "--output",
        "text",
    ]);
    assert_eq!(aliases.trim(), "alias/from-boto3");
    // A key the CLI deactivates stops working on the running server at once
    // (the server keeps credentials it has read only while iam.db is unchanged),
    // and works again once reactivated.
    let caller = "import boto3,os\nfrom botocore.exceptions import ClientError\n\
                  sts=boto3.client('sts',endpoint_url=os.environ['EBSIM_ENDPOINT'])\n\
                  try:\n    print(sts.get_caller_identity()['Arn'])\n\
                  except ClientError as e:\n    print(e.response['Error']['Code'])";
    let identity = || {
        let mut c = client("python3", &srv, &key);
        c.args(["-c", caller]);
        run(c).trim().to_string()
    };
    assert_eq!(identity(), format!("arn:aws:iam::{ACCOUNT}:root"));
    let status = |st: &str| {
        s.ok(&[
            "iam",
            "update-access-key",
            "--access-key-id",
            &key.0,
            "--status",
            st,
        ])
    };
    status("Inactive");
    assert_eq!(identity(), "InvalidClientTokenId");
    status("Active");
    assert_eq!(identity(), format!("arn:aws:iam::{ACCOUNT}:root"));
    // A second server on the same data root is refused, naming the first.
    let second = s.ebsim(&["serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(second.code, 0);
    assert!(
        second.stderr.contains("another ebsim serve (pid"),
        "{}",
        second.stderr
    );
    // SIGTERM: a clean stop, and the port is closed.
    let port = srv.port;
    let (code, err) = srv.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ebsim serve: stopped"), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // Now another may start.
    Server::start(&s, &[]).stop();
}

#[test]
fn remote_addresses_need_allow_remote_and_any_credentials_act_as_root() {
    let s = Sandbox::new();
    let o = s.ebsim(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(o.code, 252, "{}", o.stderr);
    assert!(o.stderr.contains("--allow-remote"), "{}", o.stderr);
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let srv = Server::start(
        &s,
        &["--accept-any-credentials", "--account-id", "444455556666"],
    );
    let made_up = ("AKIAMADEUPMADEUPMADE".to_string(), "x".repeat(40));
    let mut c = client("python3", &srv, &made_up);
    c.env("EBSIM_ACCOUNT", "444455556666")
        .arg(script())
        .arg("caller");
    let who = run(c);
    assert!(who.contains("arn:aws:iam::444455556666:root"), "{who}");
    let (code, err) = srv.stop();
    assert_eq!(code, 0);
    assert!(err.contains("WARNING: --accept-any-credentials"), "{err}");
    // The data root is now account 444455556666's: another account is refused.
    let o = s.ebsim(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--account-id",
        "777788889999",
    ]);
    assert_eq!(o.code, 252, "{}", o.stderr);
    assert!(
        o.stderr.contains("belongs to account 444455556666"),
        "{}",
        o.stderr
    );
}

/// Sends `request` on a new connection; the status line of the answer.
fn status_line(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(request).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn heads_past_the_limits_are_refused_and_every_answer_has_a_request_id() {
    let s = Sandbox::new();
    let srv = Server::start(&s, &[]);
    let big = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_eq!(
        status_line(srv.port, big.as_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let many: String = (0..120).map(|i| format!("X-{i}: a\r\n")).collect();
    let many = format!("POST / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(
        status_line(srv.port, many.as_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Unsigned requests: each protocol's error, with a request id.
    use std::io::{Read, Write};
    for (req, code) in [
        (
            "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: TrentService.ListKeys\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            "MissingAuthenticationTokenException",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 24\r\nConnection: close\r\n\r\nAction=GetCallerIdentity",
            "<Code>MissingAuthenticationToken</Code>",
        ),
    ] {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.contains(code), "{out}");
        assert!(out.contains("x-amzn-requestid: "), "{out}");
    }
    srv.stop();
}

/// The test-harness endpoints: health, reset (root only, refused while a volume
/// is attached unless forced, the root's key kept), and moto's unsigned
/// `/moto-api/reset` under `--accept-any-credentials`.
#[test]
fn health_and_reset_for_test_harnesses() {
    if !have_python_module("boto3") {
        return common::skip("boto3 is not installed (scripts/test.sh installs it)");
    }
    let s = Sandbox::new();
    let key = root_key(&s);
    s.ok(&["kms", "create-key"]);
    s.ok(&["iam", "create-user", "--user-name", "temp"]);
    let user = key_of(&s.ok(&["iam", "create-access-key", "--user-name", "temp"]));
    let run: serde_json::Value =
        serde_json::from_str(&s.ok(&["ec2", "run-instances", "--image-id", "ami-12345678"]))
            .unwrap();
    let instance = run["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = s.volume(true, 1 << 20);
    s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--instance-id",
        &instance,
        "--device",
        "/dev/sdf",
    ]);
    let srv = Server::start(&s, &[]);
    let last = boto3(
        &srv,
        &key,
        "harness",
        &[
            ("EBSIM_ATTACHED", &vol),
            ("EBSIM_USER_KEY", &format!("{}:{}", user.0, user.1)),
        ],
    );
    assert_eq!(last, "ok harness");
    // Nothing of the region is left but what the client made afterwards.
    let vols: serde_json::Value =
        serde_json::from_str(&s.ok(&["ec2", "describe-volumes"])).unwrap();
    assert_eq!(vols["Volumes"], serde_json::json!([]));
    let inst: serde_json::Value =
        serde_json::from_str(&s.ok(&["ec2", "describe-instances"])).unwrap();
    assert_eq!(inst["Reservations"], serde_json::json!([]));
    let region = s.home().join("regions/us-east-1");
    assert!(!region.join(format!("volumes/{vol}.img")).exists());
    assert!(!region.join(format!("instances/{instance}")).exists());
    // What makes the data root itself stays: its root key, and its stores.
    assert!(s.home().join("root.key").exists());
    assert!(region.join("kms.db").exists() && region.join("ec2.db").exists());
    let (code, _) = srv.stop();
    assert_eq!(code, 0);

    // moto's reset, unsigned, on a server that accepts any credentials.
    let srv = Server::start(&s, &["--accept-any-credentials"]);
    s.ok(&["kms", "create-key"]);
    let answer = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c.write_all(b"POST /moto-api/reset HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    let keys: serde_json::Value = serde_json::from_str(&s.ok(&["kms", "list-keys"])).unwrap();
    assert_eq!(keys["Keys"], serde_json::json!([]));
}
