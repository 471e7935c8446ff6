//! A data root of its own and the `ebsim` binary run against it, for tests that
//! drive the command line (attach daemons, mounts, NBD exports).

use std::path::PathBuf;
use std::process::Command;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        let p = self.dir.path().join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn ebsim(&self, args: &[&str]) -> Out {
        let o = Command::new(env!("CARGO_BIN_EXE_ebsim"))
            .args(args)
            .env("EBSIM_HOME", self.home())
            .env_remove("EBSIM_NOW")
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ebsim(args);
        assert_eq!(o.code, 0, "ebsim {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout.trim().to_string()
    }

    pub fn volume(&self, encrypted: bool, bytes: u64) -> String {
        let size = bytes.to_string();
        let mut args = vec![
            "ec2",
            "create-volume",
            "--size-bytes",
            &size,
            "--query",
            "VolumeId",
            "--output",
            "text",
        ];
        if encrypted {
            args.push("--encrypted");
        }
        self.ok(&args)
    }

    pub fn state(&self, vol: &str) -> String {
        self.ok(&[
            "ec2",
            "describe-volumes",
            "--volume-ids",
            vol,
            "--query",
            "Volumes[0].State",
            "--output",
            "text",
        ])
    }

    pub fn image(&self, vol: &str) -> PathBuf {
        self.home()
            .join(format!("regions/us-east-1/volumes/{vol}.img"))
    }

    /// Nothing of this sandbox is mounted or backs a loop device.
    pub fn assert_no_leftovers(&self) {
        let root = self
            .dir
            .path()
            .canonicalize()
            .unwrap()
            .display()
            .to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&root),
            "a mount under {root} was left behind:\n{mounts}"
        );
        let loops = Command::new("losetup").arg("-a").output().unwrap();
        let loops = String::from_utf8_lossy(&loops.stdout);
        assert!(
            !loops.contains(&root),
            "a loop device was left behind: {loops}"
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Best-effort cleanup when a test failed half-way: attachment daemons
        // stopped, mounts and loop devices undone.
        let attached = self.ebsim(&[
            "ec2",
            "describe-volumes",
            "--query",
            "Volumes[?State=='in-use'].VolumeId",
            "--output",
            "text",
        ]);
        for vol in attached.stdout.split_whitespace() {
            let _ = self.ebsim(&["ec2", "detach-volume", "--volume-id", vol, "--force"]);
        }
        let root = self
            .dir
            .path()
            .canonicalize()
            .unwrap_or_default()
            .display()
            .to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", &p]).status();
        }
        let loops = Command::new("losetup")
            .arg("-a")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        for l in String::from_utf8_lossy(&loops)
            .lines()
            .filter(|l| l.contains(&root))
        {
            if let Some(dev) = l.split(':').next() {
                let _ = Command::new("losetup").args(["-d", dev]).status();
            }
        }
    }
}
