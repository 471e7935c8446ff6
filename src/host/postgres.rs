//! A PostgreSQL server on this host, the way ebsim's RDS instances run one
//! (issue 17; docs/RDS.md will describe the instances built on it): Debian's
//! PostgreSQL 15 binaries, `initdb` and `pg_ctl`, a data directory the caller
//! chooses (for an RDS instance, on the ext4 of an `ebsim mount` of its
//! encrypted volume), the server log inside that data directory (so it is on
//! the same volume), a unix socket in a directory of its own and one loopback
//! TCP port.
//!
//! As root, every server command runs as the `postgres` user (`runuser -u
//! postgres --`; PostgreSQL refuses to run as root) and the data directory is
//! theirs, mode 0700. Otherwise they run as the caller.
//!
//! The master user is the cluster's bootstrap superuser, with a SCRAM-SHA-256
//! password and every connection (socket or TCP) authenticated by it. The
//! password reaches `initdb` through a 0600 file beside the data directory (on
//! the same volume), removed as soon as `initdb` has read it.

use crate::error::{Error, ErrorKind, Result};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where Debian puts PostgreSQL 15's server programs.
pub const DEBIAN_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The user PostgreSQL's server runs as when ebsim runs as root.
pub const SERVER_USER: &str = "postgres";

/// How long `pg_ctl` may take to start or stop a server.
pub const PG_CTL_TIMEOUT: Duration = Duration::from_secs(120);

/// How a server is stopped (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Waits for clients to disconnect.
    Smart,
    /// Disconnects clients, checkpoints, stops (a clean shutdown).
    Fast,
    /// Stops at once; the next start replays the WAL (a crash, to the data).
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// One PostgreSQL cluster: its data directory, socket directory and port.
#[derive(Debug, Clone)]
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
}

/// The directory of the server programs: `EBSIM_PG_BIN` if set, else Debian's
/// PostgreSQL 15. An error names what is missing and how to install it.
pub fn server_binaries() -> Result<PathBuf> {
    let bin = std::env::var_os("EBSIM_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_BIN));
    for program in ["initdb", "pg_ctl", "postgres"] {
        if !bin.join(program).is_file() {
            return Err(Error::new(
                ErrorKind::Environment,
                format!(
                    "PostgreSQL's {program} is not in {} (install Debian's postgresql-15, or set EBSIM_PG_BIN to the directory of initdb and pg_ctl)",
                    bin.display()
                ),
            ));
        }
    }
    Ok(bin)
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), with
/// SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, 4096) (RFC 7677).
/// The password is not normalized (SASLprep): RDS's passwords are printable
/// ASCII, which SASLprep leaves as it is.
fn scram_verifier(password: &str) -> zeroize::Zeroizing<String> {
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt[..]);
    scram_verifier_with(password, &salt)
}

fn scram_verifier_with(password: &str, salt: &[u8; 16]) -> zeroize::Zeroizing<String> {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    use sha2::Digest;
    const ITERATIONS: u32 = 4096;
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, ITERATIONS, &mut salted[..]);
    let hmac = |key: &[u8], msg: &[u8]| -> Vec<u8> {
        let mut m =
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    };
    let client_key = zeroize::Zeroizing::new(hmac(&salted[..], b"Client Key"));
    let stored_key = sha2::Sha256::digest(&client_key[..]);
    let server_key = hmac(&salted[..], b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    zeroize::Zeroizing::new(format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    ))
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The user the server runs as when ebsim runs as root; `None` otherwise (it
/// runs as the caller).
fn server_user() -> Result<Option<nix::unistd::User>> {
    if !running_as_root() {
        return Ok(None);
    }
    nix::unistd::User::from_name(SERVER_USER)
        .map_err(|e| Error::io(format!("cannot look up the user {SERVER_USER}"), e.into()))?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Environment,
                format!(
                    "there is no user {SERVER_USER} to run PostgreSQL as (Debian's postgresql-15 package makes it)"
                ),
            )
        })
        .map(Some)
}

/// A path as a postgresql.conf string: quoted, its quotes and backslashes
/// doubled. A path holding a control character or a comma (which would split
/// `unix_socket_directories`) is refused.
fn conf_string(path: &Path) -> Result<String> {
    let s = path
        .to_str()
        .filter(|s| !s.chars().any(|c| c.is_control() || c == ','));
    let Some(s) = s else {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{} cannot be PostgreSQL's socket directory: it is not UTF-8 or holds a comma or a control character",
                path.display()
            ),
        ));
    };
    Ok(format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")))
}

impl Postgres {
    /// A cluster in `data`, listening on `socket_dir` and 127.0.0.1:`port`,
    /// run with the programs in `bin` ([`server_binaries`]).
    pub fn new(bin: &Path, data: &Path, socket_dir: &Path, port: u16) -> Self {
        Postgres {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            socket_dir: socket_dir.to_path_buf(),
            port,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log's directory (PostgreSQL's `log_directory`), inside the
    /// data directory.
    pub fn log_dir(&self) -> PathBuf {
        self.data.join("log")
    }

    /// A server program's command line, as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", SERVER_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Runs `c`; its failure names `what` and ends with the program's own
    /// last lines.
    fn run(&self, what: &str, mut c: Command) -> Result<std::process::Output> {
        let out = c.output().map_err(|e| {
            Error::new(
                ErrorKind::Environment,
                format!("cannot run {what} for {}: {e}", self.data.display()),
            )
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "{what} failed for the PostgreSQL data directory {} ({}): {}",
                    self.data.display(),
                    out.status,
                    tail.join(" / ")
                ),
            ));
        }
        Ok(out)
    }

    /// Gives `path`, which this code just made, to the server's user (as
    /// root), with `mode`.
    fn own(&self, path: &Path, mode: u32) -> Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io_file(path, e))?;
        if let Some(user) = server_user()? {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| Error::io_file(path, e.into()))?;
        }
        Ok(())
    }

    /// As root: every existing directory above `path` must let the server's
    /// user pass (the search bit of its owner, group or others, whichever
    /// applies to that user), or the server could not reach its files; the
    /// error names the directory that stops it. Directories still to be made
    /// are made passable.
    fn check_reachable(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Some(user) = server_user()? else {
            return Ok(());
        };
        for dir in path.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || !dir.exists() {
                continue;
            }
            let m = std::fs::metadata(dir).map_err(|e| Error::io_file(dir, e))?;
            let bit = if m.uid() == user.uid.as_raw() {
                0o100
            } else if m.gid() == user.gid.as_raw() {
                0o010
            } else {
                0o001
            };
            if m.mode() & bit == 0 {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!(
                        "PostgreSQL's user {SERVER_USER} cannot reach {}: {} is mode {:04o} (it needs search permission for that user, such as 0711)",
                        path.display(),
                        dir.display(),
                        m.mode() & 0o7777
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Makes a new cluster in the data directory, which must be absent or
    /// empty: `master_user` is its superuser, with `password`; UTF-8; every
    /// connection authenticated with SCRAM-SHA-256; the socket directory, the
    /// port and the log directory configured.
    pub fn init(&self, master_user: &str, password: &str) -> Result<()> {
        if master_user.is_empty()
            || !master_user.starts_with(|c: char| c.is_ascii_alphabetic())
            || !master_user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                format!(
                    "the master user name {master_user:?} must start with a letter and hold only letters, digits and underscores"
                ),
            ));
        }
        // initdb reads the first line of its password file: a line break
        // would cut the password, and an empty one would leave no way in.
        if password.is_empty() || password.chars().any(char::is_control) {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                "the master password must not be empty or hold control characters (line breaks)",
            ));
        }
        let socket_conf = conf_string(&self.socket_dir)?;
        self.check_reachable(&self.data)?;
        self.check_reachable(&self.socket_dir)?;
        if self.data.exists() {
            let mut entries =
                std::fs::read_dir(&self.data).map_err(|e| Error::io_file(&self.data, e))?;
            if entries.next().is_some() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "the PostgreSQL data directory {} is not empty; a new cluster needs an empty one",
                        self.data.display()
                    ),
                ));
            }
        } else {
            std::fs::create_dir(&self.data).map_err(|e| Error::io_file(&self.data, e))?;
        }
        self.own(&self.data, 0o700)?;
        self.ensure_socket_dir()?;

        // The password file: ebsim's own name beside the data directory; one
        // left by a crash in an earlier initdb is removed first. Owned through
        // its handle (no path to swap for a link in between), never synced:
        // it lives for one initdb.
        let pwfile = self.data.with_extension("pwfile");
        match std::fs::symlink_metadata(&pwfile) {
            Ok(m) if m.is_file() => {
                std::fs::remove_file(&pwfile).map_err(|e| Error::io_file(&pwfile, e))?
            }
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!(
                        "{} is in the way of initdb's password file and is not a file ebsim left",
                        pwfile.display()
                    ),
                ));
            }
            Err(_) => {}
        }
        let user = server_user()?;
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)?;
            if let Some(u) = &user {
                std::os::unix::fs::fchown(&f, Some(u.uid.as_raw()), Some(u.gid.as_raw()))?;
            }
            writeln!(f, "{password}")
        })();
        let result = written
            .map_err(|e| Error::io_file(&pwfile, e))
            .and_then(|()| {
                let mut c = self.command("initdb");
                c.arg("-D")
                    .arg(&self.data)
                    .args(["-U", master_user, "--auth=scram-sha-256", "-E", "UTF8"])
                    .args(["--locale=C.UTF-8", "--no-instructions"])
                    .arg(format!("--pwfile={}", pwfile.display()));
                self.run("initdb", c).map(|_| ())
            });
        // The password is gone from the disk whatever initdb did.
        let _ = std::fs::remove_file(&pwfile);
        result?;

        let conf = format!(
            "\n# ebsim (src/host/postgres.rs)\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = {}\npassword_encryption = 'scram-sha-256'\nlogging_collector = on\nlog_directory = 'log'\nlog_filename = 'postgresql-%Y-%m-%d_%H%M%S.log'\n",
            self.port, socket_conf
        );
        let conf_path = self.data.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(|e| Error::io_file(&conf_path, e))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())
            .map_err(|e| Error::io_file(&conf_path, e))?;
        f.sync_all().map_err(|e| Error::io_file(&conf_path, e))?;
        Ok(())
    }

    /// The socket directory, made if absent (the server's to write, anyone's
    /// to reach: the socket itself needs the password); an existing one is
    /// left as it is.
    fn ensure_socket_dir(&self) -> Result<()> {
        if self.socket_dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.socket_dir)
            .map_err(|e| Error::io_file(&self.socket_dir, e))?;
        self.own(&self.socket_dir, 0o755)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        self.check_reachable(&self.data)?;
        self.check_reachable(&self.socket_dir)?;
        self.ensure_socket_dir()?;
        self.remove_stale_pid_file()?;
        // pg_ctl writes the startup log itself, as the server's user.
        let log_dir = self.log_dir();
        if !log_dir.is_dir() {
            std::fs::create_dir(&log_dir).map_err(|e| Error::io_file(&log_dir, e))?;
            self.own(&log_dir, 0o700)?;
        }
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(log_dir.join("startup.log"))
            .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string()])
            // The port and the socket directory are in postgresql.conf (no
            // `-o`: pg_ctl hands that to a shell).
            .arg("start");
        self.run("pg_ctl start", c).map(|_| ()).map_err(|e| {
            // The server's own words are in its startup log, on the volume
            // (which the caller may unmount next): they go into the error.
            let log = std::fs::read_to_string(log_dir.join("startup.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(4).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            if tail.is_empty() {
                e
            } else {
                Error::new(
                    e.kind(),
                    format!("{}; the server said: {}", e.message(), tail.join(" / ")),
                )
            }
        })
    }

    /// Removes `postmaster.pid` when the process it names is gone, a zombie, or
    /// not this cluster's server:
    /// a server that crashed (or stopped when its storage went away) leaves
    /// it, and where nothing reaps orphans (a container's PID 1) its
    /// postmaster stays a zombie, which the next server's check (`kill(pid,
    /// 0)`) takes for a live one and refuses to start beside.
    fn remove_stale_pid_file(&self) -> Result<()> {
        let path = self.data.join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return Ok(());
        };
        // Alive: a postgres process, not a zombie, working in this data
        // directory (a pid taken by another program since, or the server of
        // another cluster — the one a restored snapshot was taken of — is not
        // this cluster's).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let postgres = stat.as_deref().is_some_and(|s| {
            s.split_once(" (")
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .is_some_and(|(comm, rest)| {
                    comm == "postgres" && !rest.trim_start().starts_with('Z')
                })
        });
        let here = std::fs::canonicalize(&self.data).unwrap_or_else(|_| self.data.clone());
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let alive = postgres && cwd.as_deref() == Some(here.as_path());
        if alive {
            return Ok(());
        }
        tracing::info!(
            "{}: removing the pid file of server process {pid}, which is gone",
            self.data.display()
        );
        std::fs::remove_file(&path).map_err(|e| Error::io_file(&path, e))
    }

    /// Stops the server (`mode`) and waits until none of its processes is
    /// left in the data directory: `pg_ctl stop -w` returns once the
    /// postmaster removed its pid file, while the postmaster and its log
    /// collector may still be exiting there, and the filesystem beneath them
    /// could not be unmounted yet.
    pub fn stop(&self, mode: StopMode) -> Result<()> {
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string()])
            .args(["-m", mode.as_str(), "stop"]);
        self.run("pg_ctl stop", c)?;
        let data = std::fs::canonicalize(&self.data).unwrap_or_else(|_| self.data.clone());
        let uid = match server_user()? {
            Some(u) => u.uid.as_raw(),
            None => nix::unistd::geteuid().as_raw(),
        };
        let deadline = std::time::Instant::now() + PG_CTL_TIMEOUT;
        loop {
            let left = processes_in(&data, uid);
            if left.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "the PostgreSQL server of {} stopped, but processes {left:?} are still in its data directory after {} s",
                        self.data.display(),
                        PG_CTL_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Gives `master_user` a new password, with no plaintext anywhere but
    /// this process's memory: the SCRAM-SHA-256 verifier is made here
    /// (RFC 5802/7677 as PostgreSQL stores it: 4096 iterations, a random
    /// 16-byte salt) and set with `ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'`,
    /// which PostgreSQL stores as given. The statement goes to psql's stdin
    /// over the unix socket, as the server's OS user (peer authentication for
    /// the `postgres` database, mapped to the master user: the line
    /// [`Postgres::allow_local_replication`] writes, for `postgres` too).
    pub fn set_password(&self, master_user: &str, password: &str) -> Result<()> {
        use std::io::Write;
        if password.is_empty() || password.chars().any(char::is_control) {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                "the master password must not be empty or hold control characters (line breaks)",
            ));
        }
        self.allow_local_peer(master_user, "postgres")?;
        let verifier = scram_verifier(password);
        let mut c = self.command("psql");
        c.arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                master_user,
                "-d",
                "postgres",
            ])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().map_err(|e| {
            Error::environment(format!("cannot run psql for {}: {e}", self.data.display()))
        })?;
        let sql = format!(
            "ALTER ROLE \"{master_user}\" PASSWORD '{}';\n",
            verifier.as_str()
        );
        let wrote = child.stdin.take().expect("piped").write_all(sql.as_bytes());
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("psql for {}", self.data.display()), e))?;
        if wrote.is_err() || !out.status.success() {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the new master password could not be set on {}: {}",
                    self.data.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    /// Lets the server's own OS user open replication connections over the
    /// unix socket as `master_user` without a password (peer authentication,
    /// mapped in pg_ident.conf): what a read replica's `pg_basebackup` and its
    /// streaming use on this host, so that no password is kept anywhere. The
    /// line goes first in pg_hba.conf (the first matching line decides);
    /// nothing changes when it is there already. A running server is told to
    /// reload.
    pub fn allow_local_replication(&self, master_user: &str) -> Result<()> {
        self.allow_local_peer(master_user, "replication")
    }

    /// The peer line of [`Postgres::allow_local_replication`] for `database`
    /// (`replication`, or `postgres` for ebsim's own administration).
    fn allow_local_peer(&self, master_user: &str, database: &str) -> Result<()> {
        const MAP: &str = "ebsim_replication";
        let hba_path = self.data.join("pg_hba.conf");
        let hba = self.read_config(&hba_path)?;
        let line = format!("local {database} {master_user} peer map={MAP}");
        let mut changed = false;
        if !hba.lines().any(|l| l.trim() == line) {
            let text = format!(
                "# ebsim: read replicas on this host (src/host/postgres.rs)\n{line}\n{hba}"
            );
            self.rewrite(&hba_path, &text)?;
            changed = true;
        }
        let ident_path = self.data.join("pg_ident.conf");
        let ident = self.read_config(&ident_path)?;
        let entry = format!("{MAP} {SERVER_USER} {master_user}");
        let os_user = if running_as_root() {
            SERVER_USER.to_string()
        } else {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_default()
        };
        let entry = entry.replacen(SERVER_USER, &os_user, 1);
        if !ident.lines().any(|l| l.trim() == entry) {
            self.rewrite(&ident_path, &format!("{ident}\n{entry}\n"))?;
            changed = true;
        }
        if changed && self.is_running()? {
            let mut c = self.command("pg_ctl");
            c.arg("-D").arg(&self.data).arg("reload");
            self.run("pg_ctl reload", c)?;
        }
        Ok(())
    }

    /// Replaces a configuration file of the cluster atomically, the server's
    /// user's, mode 0600. The data directory is the server's user's (and so,
    /// through SQL, its superuser's): nothing in it is followed as a link —
    /// a temporary name already there is removed (a link goes, not its
    /// target) and the new file made with `O_EXCL | O_NOFOLLOW`.
    fn rewrite(&self, path: &Path, text: &str) -> Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("ebsim-tmp");
        if std::fs::symlink_metadata(&tmp).is_ok() {
            std::fs::remove_file(&tmp).map_err(|e| Error::io_file(&tmp, e))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io_file(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io_file(&tmp, e))?;
        if let Some(u) = server_user()? {
            std::os::unix::fs::fchown(&f, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .map_err(|e| Error::io_file(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io_file(path, e))
    }

    /// Opens a configuration file of the cluster (reading, or appending),
    /// refusing a link or anything but a regular file (see [`Postgres::rewrite`]).
    fn open_config(&self, path: &Path, append: bool) -> Result<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .read(!append)
            .append(append)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io_file(path, e))?;
        let m = f.metadata().map_err(|e| Error::io_file(path, e))?;
        if !m.is_file() {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "{} is not a regular file; ebsim leaves it alone",
                    path.display()
                ),
            ));
        }
        Ok(f)
    }

    fn read_config(&self, path: &Path) -> Result<String> {
        use std::io::Read;
        let mut text = String::new();
        self.open_config(path, false)?
            .read_to_string(&mut text)
            .map_err(|e| Error::io_file(path, e))?;
        Ok(text)
    }

    /// A cluster restored from a snapshot of a read replica is a primary of
    /// its own: its standby signal and the connection to the old source go.
    pub fn make_standalone(&self) -> Result<()> {
        for signal in ["standby.signal", "recovery.signal"] {
            let p = self.data.join(signal);
            if std::fs::symlink_metadata(&p).is_ok() {
                std::fs::remove_file(&p).map_err(|e| Error::io_file(&p, e))?;
            }
        }
        let auto = self.data.join("postgresql.auto.conf");
        if std::fs::symlink_metadata(&auto).is_ok() {
            let text = self.read_config(&auto)?;
            if text
                .lines()
                .any(|l| l.trim_start().starts_with("primary_conninfo"))
            {
                let kept: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("primary_conninfo"))
                    .collect();
                self.rewrite(&auto, &(kept.join("\n") + "\n"))?;
            }
        }
        Ok(())
    }

    /// Makes this cluster a streaming standby of `source` (running on this
    /// host): `pg_basebackup -R` into the (absent or empty) data directory,
    /// over the source's unix socket as `master_user` (peer authentication,
    /// [`Postgres::allow_local_replication`]), the WAL streamed alongside;
    /// then this cluster's port and socket directory set.
    pub fn base_backup_from(&self, source: &Postgres, master_user: &str) -> Result<()> {
        self.check_reachable(&self.data)?;
        if self.data.exists() {
            let empty = std::fs::read_dir(&self.data)
                .map_err(|e| Error::io_file(&self.data, e))?
                .next()
                .is_none();
            if !empty {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "the PostgreSQL data directory {} is not empty; a base backup needs an empty one",
                        self.data.display()
                    ),
                ));
            }
        } else {
            std::fs::create_dir(&self.data).map_err(|e| Error::io_file(&self.data, e))?;
        }
        self.own(&self.data, 0o700)?;
        self.ensure_socket_dir()?;
        let mut c = self.command("pg_basebackup");
        c.arg("-D")
            .arg(&self.data)
            .arg("-h")
            .arg(&source.socket_dir)
            .args(["-p", &source.port.to_string(), "-U", master_user])
            .args(["-R", "-X", "stream", "-c", "fast", "-w"]);
        self.run("pg_basebackup", c)?;
        self.reconfigure()
    }

    /// Ends recovery on a standby: it becomes a primary of its own
    /// (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) -> Result<()> {
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string()])
            .arg("promote");
        self.run("pg_ctl promote", c).map(|_| ())
    }

    /// Points an existing cluster (restored from a snapshot of another
    /// instance's) at this port and socket directory: the lines go after the
    /// ones initdb's caller wrote, and PostgreSQL takes a setting's last one.
    pub fn reconfigure(&self) -> Result<()> {
        use std::io::Write;
        let socket_conf = conf_string(&self.socket_dir)?;
        let conf_path = self.data.join("postgresql.conf");
        let mut f = self.open_config(&conf_path, true)?;
        write!(
            f,
            "\n# ebsim: this cluster serves another instance now\nport = {}\nunix_socket_directories = {}\n",
            self.port, socket_conf
        )
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io_file(&conf_path, e))
    }

    /// Ends every server process in the data directory, whatever state the
    /// directory is in (a server on storage that went away cannot be asked
    /// through its pid file): SIGQUIT (PostgreSQL's immediate shutdown), then,
    /// after five seconds, SIGKILL. Returns once none is left.
    pub fn force_stop(&self) -> Result<()> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let data = std::fs::canonicalize(&self.data).unwrap_or_else(|_| self.data.clone());
        let uid = match server_user()? {
            Some(u) => u.uid.as_raw(),
            None => nix::unistd::geteuid().as_raw(),
        };
        let start = std::time::Instant::now();
        let mut sig = Signal::SIGQUIT;
        loop {
            let left = processes_in(&data, uid);
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(5) {
                sig = Signal::SIGKILL;
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "processes {left:?} of the PostgreSQL server of {} outlived SIGKILL for 25 s",
                        self.data.display()
                    ),
                ));
            }
            for pid in left {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(p), sig);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a server runs on the data directory (`pg_ctl status`: 0 running,
    /// 3 not running; anything else, such as a missing data directory, is an
    /// error).
    pub fn is_running(&self) -> Result<bool> {
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(&self.data).arg("status");
        let out = c.output().map_err(|e| {
            Error::new(
                ErrorKind::Environment,
                format!("cannot run pg_ctl status for {}: {e}", self.data.display()),
            )
        })?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "pg_ctl status for the PostgreSQL data directory {} failed ({}): {}",
                    self.data.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )),
        }
    }
}

/// The live processes (not zombies) of user `uid` whose working directory is
/// `dir` (canonical) or below it: a PostgreSQL server's processes all work in
/// its data directory.
fn processes_in(dir: &Path, uid: u32) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else {
            continue;
        };
        if !cwd.starts_with(dir) || e.metadata().map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        // A zombie holds no directory; its parent may never reap it.
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        if !zombie {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn scram_verifiers_match_an_independent_computation() {
        // Python's hashlib.pbkdf2_hmac and hmac, salt bytes 0..16.
        let salt: [u8; 16] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        assert_eq!(
            scram_verifier_with("Changed-pw-0042", &salt).as_str(),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$fbAkYDJd14acN41G24JSMSjZ6q7itpMf2QIUAraaLb8=:PaKyQgxg3V396UeOAQkaG66snG99I3AIzsjIUDXOOyA="
        );
        assert_ne!(scram_verifier("a").as_str(), scram_verifier("a").as_str());
    }

    use super::*;

    #[test]
    fn socket_paths_are_quoted_for_postgresql_conf_or_refused() {
        assert_eq!(conf_string(Path::new("/tmp/s")).unwrap(), "'/tmp/s'");
        assert_eq!(
            conf_string(Path::new("/tmp/o'brien\\x")).unwrap(),
            "'/tmp/o''brien\\\\x'"
        );
        for bad in ["/tmp/a,b", "/tmp/a\nlisten_addresses = '*'"] {
            let e = conf_string(Path::new(bad)).unwrap_err();
            assert!(
                e.to_string()
                    .contains("cannot be PostgreSQL's socket directory"),
                "{e}"
            );
        }
    }

    #[test]
    fn init_refuses_a_master_user_or_password_initdb_would_mangle_before_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pg = Postgres::new(
            Path::new("/nonexistent"),
            &data,
            &dir.path().join("s"),
            5432,
        );
        for (user, password) in [
            ("dbadmin", ""),
            ("dbadmin", "two\nlines"),
            ("", "password1"),
            ("1admin", "password1"),
            ("db-admin", "password1"),
        ] {
            let e = pg.init(user, password).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidParameterValue,
                "{user:?} {password:?}: {e}"
            );
        }
        assert!(!data.exists());
        assert!(!dir.path().join("s").exists());
    }
}
