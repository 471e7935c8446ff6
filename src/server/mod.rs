//! The network edge: `ebsim serve`, an HTTP/1.1 server speaking AWS's own wire
//! protocols, so the AWS CLI, boto3 and the SDKs work with only `--endpoint-url`
//! changed (docs/SERVER.md).
//!
//! - `http`: the listener, limits, graceful shutdown, and the routing of a
//!   request to its protocol and service.
//! - `sigv4`: Signature Version 4 verification (header and presigned query).
//! - `json`: AWS JSON 1.1 (KMS, CloudTrail).
//! - `sts`: STS over the Query protocol (form in, XML out); `iam`: IAM over it.
//! - `status`: the HTTP status of each kind of error; the core knows none.
//! - `poll`: a worker's busy-polling window and coalesced answers (what a
//!   request saves by not sleeping).
//!
//! The server holds no engine: it calls the data root's [`Services`], one per
//! server, shared by every connection.

pub mod ebs;
pub mod ec2;
pub mod http;
pub mod iam;
pub mod json;
pub mod poll;
pub mod query;
pub mod rds;
pub mod sigv4;
pub mod status;
pub mod sts;

use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use crate::service::Services;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4599";

/// The server's limits (docs/SERVER.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (KMS's largest request, a 4 KiB plaintext with its
    /// context and grant tokens, is far smaller).
    pub max_body: usize,
    /// Largest request head (hyper's read buffer; at least 8 KiB).
    pub max_header_bytes: usize,
    /// Most header lines.
    pub max_headers: usize,
    /// Time to send the request head.
    pub header_timeout: Duration,
    /// Time to send the body.
    pub body_timeout: Duration,
    /// Requests running at once.
    pub max_in_flight: usize,
    /// How long a request waits for a slot before ThrottlingException.
    pub queue_wait: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_in_flight: 64,
            queue_wait: Duration::from_secs(10),
            max_connections: 1024,
            drain: Duration::from_secs(30),
        }
    }
}

/// How a server runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Serve a non-loopback address.
    pub allow_remote: bool,
    /// Any parseable signature acts as the account root (no secret checked).
    pub accept_any_credentials: bool,
    /// The account the server's data root belongs to.
    pub account_id: String,
    /// The region of requests whose credential scope names none ebsim knows
    /// (`aws-global`).
    pub region: String,
    pub limits: Limits,
    /// How long a worker keeps polling its sockets after an answer before it
    /// sleeps (`--busy-poll-us`; zero: it sleeps at once). poll.rs.
    pub busy_poll: Duration,
}

/// The default busy-polling window: longer than a client's turnaround between
/// an answer and its next request on loopback (docs/BENCHMARKS.md).
pub const DEFAULT_BUSY_POLL_US: u64 = 200;

impl Config {
    /// Refuses a non-loopback address unless `allow_remote`.
    pub fn check(&self) -> Result<()> {
        if !self.listen.ip().is_loopback() && !self.allow_remote {
            return Err(Error::usage(format!(
                "refusing to listen on {}: not a loopback address. ebsim serve speaks plain HTTP and \
                 holds real keys; pass --allow-remote to serve other machines anyway",
                self.listen
            )));
        }
        Ok(())
    }
}

/// The data root's server lock: `<root>/serve.pid` (0600), flock'd while a
/// server runs and holding its process id. A second server on the same data root
/// is refused; the lock goes with the process, however it ends. The file stays
/// (removing it would let a server that opened it just before lock a file no
/// longer in the data root).
pub struct ServeLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
}

impl ServeLock {
    pub fn acquire(root: &DataRoot) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = root.path().join("serve.pid");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io_file(&path, e))?;
        let mut lock = match nix::fcntl::Flock::lock(
            file,
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        ) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "another ebsim serve (pid {}) is serving the data root {} ({} is locked); stop it first",
                        pid.trim(),
                        root.path().display(),
                        path.display()
                    ),
                ));
            }
        };
        let write = |f: &mut std::fs::File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write(&mut lock).map_err(|e| Error::io_file(&path, e))?;
        Ok(ServeLock { _lock: lock, path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(target: "ebsim::server", "cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(target: "ebsim::server", "SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!(target: "ebsim::server", "SIGINT: shutting down"),
    }
}

/// Runs a server until SIGTERM or SIGINT: binds `config.listen`, calls `ready`
/// with the bound address, serves, drains.
///
/// One single-threaded tokio runtime per CPU the process may use (its affinity
/// mask): this thread's accepts and serves; the others only serve. A connection
/// stays on the thread it was given, so a request is read, run (KMS's short
/// operations in place, the rest in the runtime's blocking pool) and answered
/// without crossing threads — on one CPU a work-stealing runtime's hand-offs cost
/// more than the calls (docs/BENCHMARKS.md).
pub fn run(services: Services, config: Config, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    config.check()?;
    // A worker writes the audit records it holds before it sleeps (poll.rs).
    let single = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("ebsim-serve")
            .on_thread_park(poll::before_answering)
            .build()
            .map_err(|e| Error::io("cannot start the server's runtime", e))
    };
    let runtime = single()?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = vec![runtime.handle().clone()];
    let mut threads = Vec::new();
    for i in 1..cpus {
        let rt = single()?;
        workers.push(rt.handle().clone());
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ebsim-serve-{i}"))
            .spawn(move || {
                poll::worker_started();
                rt.block_on(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
                drop(rt);
                poll::worker_stopped();
            })
            .map_err(|e| Error::io("cannot start the server's threads", e))?;
        threads.push(thread);
    }
    if !config.busy_poll.is_zero() {
        for w in &workers {
            w.spawn(poll::spin(config.busy_poll));
        }
    }
    poll::worker_started();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))?;
        if config.accept_any_credentials {
            tracing::warn!(target: "ebsim::server", "--accept-any-credentials: every signed request acts as the account root of {}; signatures are not checked", config.account_id);
        }
        ready(addr);
        http::serve_on(
            listener,
            Arc::new(services),
            Arc::new(config),
            stop_signal(),
            &workers,
        )
        .await;
        Ok(())
    });
    drop(runtime);
    poll::worker_stopped();
    let _ = stop.send(true);
    for t in threads {
        let _ = t.join();
    }
    served
}
