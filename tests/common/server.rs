//! `ebsim serve` for the tests that drive it with AWS's own clients: a server on
//! a free loopback port over a sandbox's data root, stopped by SIGTERM (`stop`)
//! or killed when dropped, and the environment a client needs to reach it.

use super::sandbox::Sandbox;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ebsim serve`.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `ebsim serve --listen 127.0.0.1:0 EXTRA…` on the sandbox's data
    /// root and waits for its listening line.
    pub fn start(s: &Sandbox, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ebsim"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("EBSIM_HOME", s.home())
            .env_remove("EBSIM_NOW")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: Option<u16> = line
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ebsim serve did not start: {line:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        };
        Server { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then the exit status and stderr.
    pub fn stop(mut self) -> (i32, String) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.as_mut() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (st.code().unwrap_or(-1), err);
            }
            assert!(Instant::now() < deadline, "ebsim serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root access key for the sandbox: (id, secret).
pub fn root_key(s: &Sandbox) -> (String, String) {
    key_of(&s.ok(&["iam", "create-access-key"]))
}

/// The (id, secret) of a CreateAccessKey response.
pub fn key_of(json: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    (
        v["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string(),
        v["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// `program` with a client's environment: the server's endpoint
/// (`EBSIM_ENDPOINT`), the key, the region, and no profile or config files.
pub fn client(program: &str, srv: &Server, key: &(String, String)) -> Command {
    let mut c = Command::new(program);
    c.env("EBSIM_ENDPOINT", srv.endpoint())
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    c
}

/// Runs `c`, which must succeed; its stdout.
pub fn run(mut c: Command) -> String {
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{c:?} failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Whether `python3` can import `module` (boto3, botocore, awscli).
pub fn have_python_module(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
