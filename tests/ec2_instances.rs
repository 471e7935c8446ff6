//! Simulated instances (src/ec2/instances.rs, docs/EBS.md §8): RunInstances,
//! DescribeInstances, TerminateInstances, and AttachVolume to one of them through
//! the operation table, its device an NBD socket in the instance's directory.

mod common;

use common::sandbox::Sandbox;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn run_one(s: &Sandbox, extra: &[&str]) -> String {
    let mut args = vec![
        "ec2",
        "run-instances",
        "--image-id",
        "ami-0123456789abcdef0",
    ];
    args.extend_from_slice(extra);
    let r = json(&s.ok(&args));
    r["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn instance(s: &Sandbox, id: &str) -> Value {
    let d = json(&s.ok(&["ec2", "describe-instances", "--instance-ids", id]));
    d["Reservations"][0]["Instances"][0].clone()
}

fn error_line(s: &Sandbox, args: &[&str]) -> String {
    let o = s.ebsim(args);
    assert_eq!(o.code, 254, "{args:?}: {}{}", o.stdout, o.stderr);
    o.stderr.trim().to_string()
}

#[test]
fn run_describe_and_terminate_instances_as_ec2_does() {
    let s = Sandbox::new();
    let r = json(&s.ok(&[
        "ec2",
        "run-instances",
        "--image-id",
        "ami-12345678",
        "--count",
        "2",
        "--instance-type",
        "t3.micro",
        "--placement",
        "AvailabilityZone=us-east-1b",
        "--tag-specifications",
        "ResourceType=instance,Tags=[{Key=Name,Value=web}]",
    ]));
    let rid = r["ReservationId"].as_str().unwrap();
    assert!(rid.starts_with("r-"), "{r}");
    assert_eq!(r["OwnerId"], "111122223333");
    let instances = r["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    // RunInstances answers before the instances have booted.
    assert_eq!(instances[0]["State"]["Name"], "pending");
    assert_eq!(instances[1]["AmiLaunchIndex"], 1);
    let a = instances[0]["InstanceId"].as_str().unwrap().to_string();
    let b = instances[1]["InstanceId"].as_str().unwrap().to_string();
    assert!(a.starts_with("i-") && a.len() == 19, "{a}");

    let i = instance(&s, &a);
    assert_eq!(
        i["State"],
        serde_json::json!({"Code": 16, "Name": "running"})
    );
    assert_eq!(i["InstanceType"], "t3.micro");
    assert_eq!(i["Placement"]["AvailabilityZone"], "us-east-1b");
    assert_eq!(i["Tags"][0]["Value"], "web");

    // Filters, as DescribeInstances reads them.
    let by_tag = json(&s.ok(&[
        "ec2",
        "describe-instances",
        "--filters",
        "Name=tag:Name,Values=w*",
        "--query",
        "Reservations[].Instances[].InstanceId",
    ]));
    assert_eq!(by_tag.as_array().unwrap().len(), 2);
    let none = json(&s.ok(&[
        "ec2",
        "describe-instances",
        "--filters",
        "Name=instance-type,Values=m5.large",
    ]));
    assert_eq!(none["Reservations"], serde_json::json!([]));

    let t = json(&s.ok(&["ec2", "terminate-instances", "--instance-ids", &a]));
    let change = &t["TerminatingInstances"][0];
    assert_eq!(change["InstanceId"], a.as_str());
    assert_eq!(change["PreviousState"]["Name"], "running");
    assert_eq!(change["CurrentState"]["Code"], 48);
    // A terminated instance stays visible; terminating it again changes nothing.
    assert_eq!(instance(&s, &a)["State"]["Name"], "terminated");
    let again = json(&s.ok(&["ec2", "terminate-instances", "--instance-ids", &a]));
    assert_eq!(
        again["TerminatingInstances"][0]["PreviousState"]["Name"],
        "terminated"
    );
    let running = json(&s.ok(&[
        "ec2",
        "describe-instances",
        "--filters",
        "Name=instance-state-name,Values=running",
        "--query",
        "Reservations[].Instances[].InstanceId",
    ]));
    assert_eq!(running, serde_json::json!([b]));
}

#[test]
fn bad_instance_requests_get_ec2s_errors() {
    let s = Sandbox::new();
    let e = error_line(
        &s,
        &[
            "ec2",
            "describe-instances",
            "--instance-ids",
            "i-0123456789abcdef0",
        ],
    );
    assert!(
        e.contains("(InvalidInstanceID.NotFound) when calling the DescribeInstances operation: The instance ID 'i-0123456789abcdef0' does not exist"),
        "{e}"
    );
    let e = error_line(
        &s,
        &["ec2", "terminate-instances", "--instance-ids", "i-xyz"],
    );
    assert!(e.contains("(InvalidInstanceID.Malformed)"), "{e}");
    let e = error_line(&s, &["ec2", "run-instances", "--image-id", "ami-1"]);
    assert!(e.contains("(InvalidAMIID.Malformed)"), "{e}");
    let e = error_line(
        &s,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            "ami-12345678",
            "--count",
            "3:2",
        ],
    );
    assert!(e.contains("(InvalidParameterValue)"), "{e}");
    let e = error_line(
        &s,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            "ami-12345678",
            "--placement",
            "AvailabilityZone=eu-west-1a",
        ],
    );
    assert!(e.contains("(InvalidZone.NotFound)"), "{e}");
    let e = error_line(
        &s,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            "ami-12345678",
            "--dry-run",
        ],
    );
    assert!(e.contains("(DryRunOperation)"), "{e}");
    let d = json(&s.ok(&["ec2", "describe-instances"]));
    assert_eq!(
        d["Reservations"],
        serde_json::json!([]),
        "a dry run made nothing"
    );
}

#[test]
fn a_volume_attached_to_an_instance_is_its_nbd_device_until_terminated() {
    if !common::have("nbdcopy") {
        return common::skip("nbdcopy is not installed (scripts/test.sh installs it)");
    }
    let s = Sandbox::new();
    let i = run_one(&s, &[]);
    let vol = s.volume(true, 4 * MIB);
    let a = json(&s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--instance-id",
        &i,
        "--device",
        "/dev/sdf",
    ]));
    assert_eq!(a["InstanceId"], i.as_str());
    assert_eq!(a["Device"], "/dev/sdf");
    let sock = s
        .home()
        .join(format!("regions/us-east-1/instances/{i}/sdf.sock"));
    assert!(
        a["NbdUri"]
            .as_str()
            .unwrap()
            .contains(sock.to_str().unwrap()),
        "{a}"
    );
    let mapping = &instance(&s, &i)["BlockDeviceMappings"][0];
    assert_eq!(mapping["DeviceName"], "/dev/sdf");
    assert_eq!(mapping["Ebs"]["VolumeId"], vol.as_str());
    assert_eq!(s.state(&vol), "in-use");

    // The device holds what is written to it, through the instance's socket.
    let data: Vec<u8> = (0..4 * MIB).map(|n| (n * 7 % 251) as u8).collect();
    let input = s.path("io").join("in");
    let output = s.path("io").join("out");
    std::fs::write(&input, &data).unwrap();
    let uri = format!("nbd+unix:///{vol}?socket={}", sock.display());
    let copy = |from: &str, to: &str| {
        let o = std::process::Command::new("nbdcopy")
            .args([from, to])
            .output()
            .unwrap();
        assert!(o.status.success(), "nbdcopy {from} {to}: {o:?}");
    };
    copy(input.to_str().unwrap(), &uri);
    copy(&uri, output.to_str().unwrap());
    assert!(std::fs::read(&output).unwrap() == data);

    // One device name, one volume.
    let other = s.volume(false, MIB);
    let e = error_line(
        &s,
        &[
            "ec2",
            "attach-volume",
            "--volume-id",
            &other,
            "--instance-id",
            &i,
            "--device",
            "/dev/sdf",
        ],
    );
    assert!(
        e.contains("Attachment point /dev/sdf is already in use"),
        "{e}"
    );

    // Termination detaches it (EBS volumes outlive their instance here) and
    // leaves no socket, process or directory behind.
    s.ok(&["ec2", "terminate-instances", "--instance-ids", &i]);
    assert_eq!(s.state(&vol), "available");
    assert!(!sock.exists());
    assert!(
        !s.home()
            .join(format!("regions/us-east-1/instances/{i}"))
            .exists()
    );
    let e = error_line(
        &s,
        &[
            "ec2",
            "attach-volume",
            "--volume-id",
            &vol,
            "--instance-id",
            &i,
            "--device",
            "/dev/sdg",
        ],
    );
    assert!(e.contains("(IncorrectInstanceState)"), "{e}");
    // The data is still the volume's.
    let j = run_one(&s, &[]);
    s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--instance-id",
        &j,
        "--device",
        "/dev/xvdh",
    ]);
    let sock = s
        .home()
        .join(format!("regions/us-east-1/instances/{j}/xvdh.sock"));
    let uri = format!("nbd+unix:///{vol}?socket={}", sock.display());
    std::fs::remove_file(&output).unwrap();
    copy(&uri, output.to_str().unwrap());
    assert!(std::fs::read(&output).unwrap() == data);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_eq!(s.state(&vol), "available");
    s.ok(&["ec2", "terminate-instances", "--instance-ids", &j]);
    s.assert_no_leftovers();
}

#[test]
fn attaching_checks_the_zone_the_device_name_and_the_caller() {
    let s = Sandbox::new();
    let i = run_one(&s, &["--placement", "AvailabilityZone=us-east-1c"]);
    let vol = s.volume(false, MIB);
    let attach = |who: Option<&str>, device: &str| {
        let mut args = Vec::new();
        if let Some(w) = who {
            args.extend(["--principal", w]);
        }
        args.extend([
            "ec2",
            "attach-volume",
            "--volume-id",
            &vol,
            "--instance-id",
            &i,
            "--device",
            device,
        ]);
        s.ebsim(&args)
    };
    let o = attach(None, "/dev/sdf");
    assert!(
        o.stderr.contains("(InvalidVolume.ZoneMismatch)")
            && o.stderr.contains(&format!(
                "is not in the same availability zone as instance '{i}'"
            )),
        "{}",
        o.stderr
    );
    let vol_c = json(&s.ok(&[
        "ec2",
        "create-volume",
        "--size-bytes",
        "1048576",
        "--availability-zone",
        "us-east-1c",
    ]))["VolumeId"]
        .as_str()
        .unwrap()
        .to_string();
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol_c,
        "--instance-id",
        &i,
        "--device",
        "/dev/nvme0",
    ]);
    assert!(
        o.stderr.contains("is not a valid EBS device name"),
        "{}",
        o.stderr
    );
    // A user needs ec2:RunInstances to launch, ec2:AttachVolume to attach.
    s.ok(&["iam", "create-user", "--user-name", "dev"]);
    let dev = "arn:aws:iam::111122223333:user/dev";
    let o = s.ebsim(&[
        "--principal",
        dev,
        "ec2",
        "run-instances",
        "--image-id",
        "ami-12345678",
    ]);
    assert!(
        o.stderr.contains("(UnauthorizedOperation) when calling the RunInstances operation: You are not authorized to perform this operation. User: arn:aws:iam::111122223333:user/dev is not authorized to perform: ec2:RunInstances on resource: arn:aws:ec2:us-east-1:111122223333:instance/*"),
        "{}",
        o.stderr
    );
    let o = s.ebsim(&[
        "--principal",
        dev,
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol_c,
        "--instance-id",
        &i,
        "--device",
        "/dev/sdf",
    ]);
    assert!(
        o.stderr
            .contains("(UnauthorizedOperation) when calling the AttachVolume operation"),
        "{}",
        o.stderr
    );
    assert_eq!(s.state(&vol_c), "available");
    // Both calls, refused, are in the audit log as EC2 events.
    let events = json(&s.ok(&[
        "cloudtrail",
        "lookup-events",
        "--lookup-attributes",
        "AttributeKey=EventName,AttributeValue=RunInstances",
    ]));
    let recs: Vec<Value> = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json(e["CloudTrailEvent"].as_str().unwrap()))
        .collect();
    assert!(
        recs.iter()
            .any(|r| r["errorCode"] == "Client.UnauthorizedOperation"
                && r["eventSource"] == "ec2.amazonaws.com"),
        "{recs:?}"
    );
    assert!(recs.iter().any(|r| r["errorCode"].is_null()), "{recs:?}");
}
