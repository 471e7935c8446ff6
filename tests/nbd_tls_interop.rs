//! `ebsim ec2 attach-volume --nbd … --tls-psk FILE | --tls-creds DIR` checked with
//! independent GnuTLS clients: libnbd's nbdinfo and nbdcopy (`nbds://` URIs with
//! `tls-psk-file` / `tls-certificates`), and qemu-img with `tls-creds-psk` and
//! `tls-creds-x509` objects, over TLS 1.3 and (by qemu's `priority`) TLS 1.2. A wrong
//! key, an unknown identity, a missing or foreign client certificate and a client
//! without TLS get nothing. Plus the attach errors of the TLS flags. scripts/test.sh
//! installs the clients (libnbd-bin, qemu-utils); a test that cannot run says why
//! and is counted as skipped (common::skip).

#[macro_use]
mod common;

use common::pki::{self, Pki};
use common::sandbox::Sandbox;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn exec(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = exec(cmd, args);
    assert!(o.status.success(), "{cmd} {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn fails(cmd: &str, args: &[&str]) -> String {
    let o = exec(cmd, args);
    assert!(
        !o.status.success(),
        "{cmd} {args:?} succeeded: {}",
        text(&o)
    );
    text(&o)
}

/// Attaches `vol` on loopback TCP with `tls` flags; returns the NbdUri and the port.
fn attach_tcp(s: &Sandbox, vol: &str, tls: &[&str]) -> (String, u16) {
    let mut args = vec![
        "ec2",
        "attach-volume",
        "--volume-id",
        vol,
        "--nbd",
        "tcp:127.0.0.1:0",
    ];
    args.extend_from_slice(tls);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&args)).unwrap();
    let uri = v["NbdUri"].as_str().unwrap().to_string();
    let prefix = "nbds://127.0.0.1:";
    assert!(uri.starts_with(prefix), "{uri}");
    assert!(uri.ends_with(&format!("/{vol}")), "{uri}");
    assert_eq!(v["Device"], uri.as_str());
    let port = uri[prefix.len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (uri, port)
}

/// The attachment process's log.
fn log(s: &Sandbox, vol: &str) -> String {
    std::fs::read_to_string(
        s.home()
            .join(format!("regions/us-east-1/attachments/{vol}.log")),
    )
    .unwrap_or_default()
}

fn random_file(path: &Path, bytes: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut data = vec![0u8; bytes];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    std::fs::write(path, data).unwrap();
}

/// A libnbd URI for `identity` with the keys in `psk`.
fn psk_uri(port: u16, vol: &str, identity: &str, psk: &Path) -> String {
    format!(
        "nbds://{identity}@127.0.0.1:{port}/{vol}?tls-psk-file={}",
        psk.display()
    )
}

#[test]
fn nbdinfo_and_nbdcopy_with_a_psk_and_nothing_for_a_wrong_key_or_identity() {
    require!("nbdinfo", "nbdcopy");
    let s = Sandbox::new();
    let vol = s.volume(true, 16 << 20);
    let keys = s.path("keys");
    let key = pki::psk_hex();
    // The server's file, as psktool writes it (0600).
    let server_psk = keys.join("server.psk");
    pki::psk_file(&server_psk, &[("alice", &key), ("bob", &pki::psk_hex())]);
    let (_, port) = attach_tcp(&s, &vol, &["--tls-psk", server_psk.to_str().unwrap()]);
    // A client's file with only its own line.
    let alice = keys.join("alice.psk");
    pki::psk_file(&alice, &[("alice", &key)]);
    let uri = psk_uri(port, &vol, "alice", &alice);
    assert_eq!(run("nbdinfo", &["--size", &uri]).trim(), "16777216");
    run("nbdinfo", &["--is", "tls", &uri]);
    // Four TLS connections each way.
    let img = s.path("img");
    let src = img.join("src.raw");
    random_file(&src, 16 << 20, 7);
    run(
        "nbdcopy",
        &["-C", "4", "--flush", src.to_str().unwrap(), &uri],
    );
    let out = img.join("out.raw");
    run("nbdcopy", &["-C", "4", &uri, out.to_str().unwrap()]);
    assert!(std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap());
    // The session was TLS 1.3 with a SHA-256 suite (the PSK's hash), as alice.
    let l = log(&s, &vol);
    assert!(
        l.contains("TLSv1.3 TLS_AES_128_GCM_SHA256, PSK identity \"alice\"")
            || l.contains("TLSv1.3 TLS_CHACHA20_POLY1305_SHA256, PSK identity \"alice\""),
        "{l}"
    );
    // A wrong key, an unknown identity (with alice's key), no TLS at all: no
    // connection, and not a byte read.
    let wrong = keys.join("wrong.psk");
    pki::psk_file(&wrong, &[("alice", &pki::psk_hex())]);
    let mallory = keys.join("mallory.psk");
    pki::psk_file(&mallory, &[("mallory", &key)]);
    for (uri, why) in [
        (psk_uri(port, &vol, "alice", &wrong), "wrong key"),
        (psk_uri(port, &vol, "mallory", &mallory), "unknown identity"),
        (format!("nbd://127.0.0.1:{port}/{vol}"), "no TLS"),
    ] {
        fails("nbdinfo", &["--size", &uri]);
        let stolen = img.join("stolen.raw");
        let e = fails("nbdcopy", &[&uri, stolen.to_str().unwrap()]);
        assert!(
            std::fs::metadata(&stolen).map(|m| m.len()).unwrap_or(0) == 0,
            "{why}: nbdcopy wrote data: {e}"
        );
        if why == "no TLS" {
            assert!(e.contains("TLS"), "{e}");
        }
    }
    let l = log(&s, &vol);
    assert!(
        l.contains("TLS-PSK identity \"mallory\" is not in")
            && l.contains("binder does not verify"),
        "{l}"
    );
    // No key material in the log.
    assert!(!l.contains(&key[..16]));
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

/// qemu's json: filename for the export at `port` with credentials object `tls0`.
fn qemu_json(port: u16, vol: &str) -> String {
    format!(
        r#"json:{{"file":{{"driver":"nbd","host":"127.0.0.1","port":"{port}","export":"{vol}","tls-creds":"tls0"}}}}"#
    )
}

/// convert in, compare, convert out again, compare: qemu-img with `object`.
fn qemu_round_trip(s: &Sandbox, object: &str, target: &str, seed: u64) {
    let img = s.path("img");
    let src = img.join(format!("src{seed}.raw"));
    random_file(&src, 8 << 20, seed);
    let src = src.to_str().unwrap();
    run(
        "qemu-img",
        &[
            "convert", "-n", "--object", object, "-f", "raw", "-O", "raw", src, target,
        ],
    );
    let cmp = run(
        "qemu-img",
        &[
            "compare", "--object", object, "-f", "raw", "-F", "raw", src, target,
        ],
    );
    assert!(cmp.contains("identical"), "{cmp}");
    let back = img.join(format!("back{seed}.raw"));
    run(
        "qemu-img",
        &[
            "convert",
            "--object",
            object,
            "-f",
            "raw",
            "-O",
            "raw",
            target,
            back.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(src).unwrap() == std::fs::read(&back).unwrap());
}

#[test]
fn qemu_img_with_tls_creds_psk_over_tls_1_3_and_1_2() {
    require!("qemu-img");
    let s = Sandbox::new();
    let vol = s.volume(true, 8 << 20);
    let key = pki::psk_hex();
    let server_psk = s.path("keys").join("server.psk");
    pki::psk_file(&server_psk, &[("alice", &key)]);
    let (_, port) = attach_tcp(&s, &vol, &["--tls-psk", server_psk.to_str().unwrap()]);
    // qemu reads DIR/keys.psk.
    let qdir = |name: &str, line: (&str, &str)| -> PathBuf {
        let d = s.path(name);
        pki::psk_file(&d.join("keys.psk"), &[line]);
        d
    };
    let good = qdir("q-good", ("alice", &key));
    let target = qemu_json(port, &vol);
    let object = |dir: &Path, user: &str, priority: &str| {
        format!(
            "tls-creds-psk,id=tls0,endpoint=client,dir={},username={user}{priority}",
            dir.display()
        )
    };
    qemu_round_trip(&s, &object(&good, "alice", ""), &target, 1);
    // GnuTLS at TLS 1.2 gets an ECDHE-PSK suite.
    let tls12 = object(&good, "alice", ",priority=NORMAL:-VERS-TLS1.3");
    qemu_round_trip(&s, &tls12, &target, 2);
    let l = log(&s, &vol);
    assert!(l.contains("TLSv1.2 ECDHE-PSK-"), "{l}");
    // A wrong key and an unknown identity open nothing.
    let wrong = qdir("q-wrong", ("alice", &pki::psk_hex()));
    let mallory = qdir("q-mallory", ("mallory", &key));
    for obj in [object(&wrong, "alice", ""), object(&mallory, "mallory", "")] {
        let e = fails("qemu-img", &["info", "--object", &obj, &target]);
        assert!(e.contains("TLS"), "{e}");
    }
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn qemu_img_and_nbdinfo_with_x509_and_client_certificates() {
    require!("qemu-img", "nbdinfo");
    let s = Sandbox::new();
    let vol = s.volume(true, 8 << 20);
    let p = Pki::new(&s.path("pki"));
    let (uri, port) = attach_tcp(
        &s,
        &vol,
        &[
            "--tls-creds",
            p.server.to_str().unwrap(),
            "--tls-verify-peer",
        ],
    );
    let target = qemu_json(port, &vol);
    let object = |dir: &Path, priority: &str| {
        format!(
            "tls-creds-x509,id=tls0,endpoint=client,dir={}{priority}",
            dir.display()
        )
    };
    qemu_round_trip(&s, &object(&p.client, ""), &target, 3);
    qemu_round_trip(
        &s,
        &object(&p.client, ",priority=NORMAL:-VERS-TLS1.3"),
        &target,
        4,
    );
    let l = log(&s, &vol);
    assert!(
        l.contains("TLSv1.3 TLS13_")
            && l.contains("TLSv1.2 TLS_ECDHE_")
            && l.contains("client certificate verified"),
        "{l}"
    );
    // libnbd checks the server's certificate against the CA and 127.0.0.1.
    let with = format!("{uri}?tls-certificates={}", p.client.display());
    assert_eq!(run("nbdinfo", &["--size", &with]).trim(), "8388608");
    // No client certificate, one from another CA, or no TLS: refused.
    for dir in [&p.anonymous, &p.stranger] {
        fails("qemu-img", &["info", "--object", &object(dir, ""), &target]);
        let u = format!("{uri}?tls-certificates={}", dir.display());
        fails("nbdinfo", &["--size", &u]);
    }
    fails(
        "nbdinfo",
        &["--size", &format!("nbd://127.0.0.1:{port}/{vol}")],
    );
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn a_unix_socket_export_may_require_tls_too() {
    require!("nbdinfo");
    let s = Sandbox::new();
    let vol = s.volume(false, 4 << 20);
    let p = Pki::new(&s.path("pki"));
    let sock = s.path("sock").join("v.sock");
    let out = s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--nbd",
        &format!("unix:{}", sock.display()),
        "--tls-creds",
        p.server.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let uri = v["NbdUri"].as_str().unwrap();
    assert_eq!(uri, format!("nbds+unix:///{vol}?socket={}", sock.display()));
    let with = format!("{uri}&tls-certificates={}", p.anonymous.display());
    assert_eq!(run("nbdinfo", &["--size", &with]).trim(), "4194304");
    let plain = format!("nbd+unix:///{vol}?socket={}", sock.display());
    fails("nbdinfo", &["--size", &plain]);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn tls_flag_and_file_errors_are_clear_and_leave_nothing_attached() {
    let s = Sandbox::new();
    let vol = s.volume(true, 4 << 20);
    let keys = s.path("keys");
    let psk = keys.join("keys.psk");
    pki::psk_file(&psk, &[("alice", &pki::psk_hex())]);
    let psk_s = psk.to_str().unwrap().to_string();
    let p = Pki::new(&s.path("pki"));
    let creds = p.server.to_str().unwrap().to_string();
    let attach = |extra: &[&str]| {
        let mut args = vec!["ec2", "attach-volume", "--volume-id", &vol];
        args.extend_from_slice(extra);
        s.ebsim(&args)
    };
    let cases: Vec<(Vec<&str>, &str, &[&str])> = vec![
        (
            vec!["--nbd", "tcp:127.0.0.1:0"],
            "InvalidParameterCombination",
            &["needs TLS", "--tls-psk", "--tls-creds", "--nbd-no-tls"],
        ),
        // Non-loopback with --nbd-allow-remote still needs TLS.
        (
            vec!["--nbd", "tcp:0.0.0.0:0", "--nbd-allow-remote"],
            "InvalidParameterCombination",
            &["needs TLS"],
        ),
        (
            vec!["--nbd", "tcp:0.0.0.0:0", "--tls-psk", &psk_s],
            "InvalidParameterValue",
            &["--nbd-allow-remote"],
        ),
        (
            vec![
                "--nbd",
                "tcp:127.0.0.1:0",
                "--tls-psk",
                &psk_s,
                "--tls-creds",
                &creds,
            ],
            "InvalidParameterCombination",
            &["not both"],
        ),
        (
            vec![
                "--nbd",
                "tcp:127.0.0.1:0",
                "--tls-psk",
                &psk_s,
                "--nbd-no-tls",
            ],
            "InvalidParameterCombination",
            &["--nbd-no-tls"],
        ),
        (
            vec!["--nbd", "tcp:127.0.0.1:0", "--tls-verify-peer"],
            "InvalidParameterCombination",
            &["--tls-creds"],
        ),
        (
            vec!["--fuse", "/nonexistent", "--tls-psk", &psk_s],
            "InvalidParameterCombination",
            &["give --nbd"],
        ),
    ];
    for (args, code, needles) in &cases {
        let o = attach(args);
        assert_eq!(o.code, 254, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(code), "{args:?}: {}", o.stderr);
        for n in *needles {
            assert!(o.stderr.contains(n), "{args:?}: no {n:?} in {}", o.stderr);
        }
    }
    // Files: each error names the file and what is wrong with it.
    let open = keys.join("open.psk");
    std::fs::write(&open, format!("alice:{}\n", pki::psk_hex())).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let short = keys.join("short.psk");
    pki::psk_file(&short, &[("alice", &pki::psk_hex())]);
    std::fs::write(&short, "alice:0011\n").unwrap();
    let secret = pki::psk_hex();
    let garbled = keys.join("garbled.psk");
    pki::psk_file(&garbled, &[("alice", &secret)]);
    std::fs::write(&garbled, format!("alice:{secret}\nbob {secret}\n")).unwrap();
    let empty_dir = s.path("empty-creds");
    let files: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["--tls-psk".into(), open.display().to_string()],
            vec![
                open.display().to_string(),
                "chmod 600".into(),
                "0644".into(),
            ],
        ),
        (
            vec!["--tls-psk".into(), short.display().to_string()],
            vec![
                short.display().to_string(),
                "line 1".into(),
                "2 bytes".into(),
            ],
        ),
        (
            vec!["--tls-psk".into(), garbled.display().to_string()],
            vec![garbled.display().to_string(), "line 2".into()],
        ),
        (
            vec![
                "--tls-psk".into(),
                keys.join("none.psk").display().to_string(),
            ],
            vec!["none.psk".into(), "No such file".into()],
        ),
        (
            vec!["--tls-creds".into(), empty_dir.display().to_string()],
            vec!["server-cert.pem".into(), "missing".into()],
        ),
        (
            vec![
                "--tls-creds".into(),
                keys.join("nodir").display().to_string(),
            ],
            vec!["nodir".into(), "not a directory".into()],
        ),
        (
            vec![
                "--tls-creds".into(),
                p.client.display().to_string(),
                "--tls-verify-peer".into(),
            ],
            vec!["server-cert.pem".into()],
        ),
    ];
    for (flags, needles) in &files {
        let mut args = vec!["--nbd", "tcp:127.0.0.1:0"];
        args.extend(flags.iter().map(String::as_str));
        let o = attach(&args);
        assert_eq!(o.code, 254, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains("InvalidParameterValue"),
            "{args:?}: {}",
            o.stderr
        );
        for n in needles {
            assert!(
                o.stderr.contains(n.as_str()),
                "{args:?}: no {n:?} in {}",
                o.stderr
            );
        }
        assert!(
            !o.stderr.contains(&secret[..16]),
            "a key leaked: {}",
            o.stderr
        );
    }
    assert_eq!(s.state(&vol), "available");
}
