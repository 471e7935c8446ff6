//! The NBD server for one attachment: a tokio runtime of its own, a listener on a
//! unix socket or a loopback TCP port, and per connection a fixed-newstyle
//! handshake, then transmission with replies that may go out of order.
//!
//! Per connection one task reads requests. Small reads and writes run right there
//! (a 4 KiB XTS unit takes about a microsecond; a hop to another thread costs more
//! than the work); large ones, FUA writes, flushes, trims and zeroing go to the
//! blocking pool so several run at once. Whoever finishes a request writes its reply
//! under the connection's writer lock. Requests in flight are bounded per
//! connection (count) and per server (payload bytes), so memory stays bounded
//! whatever the clients send.
//!
//! Every connection shares the one [`Image`] (one file, one page cache): a reply
//! goes out only after the data reached the kernel, and FLUSH is an fdatasync of
//! that file, so CAN_MULTI_CONN is true.
//!
//! With TLS configured ([`Tls`]) the handshake runs in the spec's FORCEDTLS mode:
//! before `NBD_OPT_STARTTLS` only ABORT is served (other options get
//! `NBD_REP_ERR_TLS_REQD`, `NBD_OPT_EXPORT_NAME` closes the connection); after it,
//! negotiation starts afresh inside TLS and transmission stays there.

use super::proto::*;
use super::tls::Tls;
use crate::error::{Error, ErrorKind, Result};
use crate::volume::Image;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Mutex, Semaphore, watch};

/// Requests in flight on one connection.
pub const MAX_IN_FLIGHT: usize = 64;
const MAX_IN_FLIGHT_U32: u32 = 64;
const _: () = assert!(MAX_IN_FLIGHT_U32 as usize == MAX_IN_FLIGHT);
/// Payload bytes in flight across the server (reads and writes), in 4 KiB units:
/// 256 MiB, eight maximum-size requests.
const BUDGET_UNITS: usize = (256 << 20) / 4096;
/// Reads and writes up to this size run on the connection's own task.
const INLINE_MAX: u32 = 256 << 10;
/// Replies of one burst are gathered up to this size before they are sent...
const REPLY_BUFFER: usize = 64 << 10;
/// ...and at most this many, so that no reply waits for more than this many
/// requests served after it.
const REPLY_BATCH: usize = 16;
/// The preferred block size: one XTS data unit.
const PREFERRED_BLOCK: u32 = 4096;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Listen {
    /// Parses `unix:PATH` or `tcp:HOST:PORT`. TCP addresses must be loopback unless
    /// `allow_remote`: the export is the volume's plaintext (and a TCP export needs
    /// TLS or an explicit `--nbd-no-tls` on top of this: [`super::TlsFlags::resolve`]).
    pub fn parse(s: &str, allow_remote: bool) -> Result<Listen> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::InvalidParameterValue,
                format!("--nbd {s:?}: {why}"),
            )
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("give a socket path, as in unix:/run/vol.sock".into()));
            }
            let path = std::path::absolute(path).map_err(|e| bad(e.to_string()))?;
            return Ok(Listen::Unix(path));
        }
        let Some(addr) = s.strip_prefix("tcp:") else {
            return Err(bad(
                "expected unix:PATH or tcp:HOST:PORT (for example tcp:127.0.0.1:10809)".into(),
            ));
        };
        use std::net::ToSocketAddrs;
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| bad(format!("not an address and port: {e}")))?
            .next()
            .ok_or_else(|| bad("the host name has no address".into()))?;
        if !addr.ip().is_loopback() && !allow_remote {
            return Err(bad(format!(
                "{} is not a loopback address; the export is the volume's plaintext, so ebsim \
                 serves it on loopback or a unix socket unless --nbd-allow-remote is given \
                 (and then with --tls-psk or --tls-creds, or --nbd-no-tls)",
                addr.ip()
            )));
        }
        Ok(Listen::Tcp(addr))
    }
}

/// A bound listener, not yet serving.
pub struct Bound {
    listener: StdListener,
    socket: Option<PathBuf>,
    tls: Option<Tls>,
}

enum StdListener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

impl Bound {
    /// Binds `listen`; connections will need `tls` when it is given (FORCEDTLS). A
    /// unix socket file left by a server that is gone is replaced; one a live server
    /// answers on is refused, as is any other file.
    pub fn bind(listen: &Listen, tls: Option<Tls>) -> Result<Bound> {
        match listen {
            Listen::Unix(path) => {
                remove_stale_socket(path)?;
                let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
                    Error::io(
                        format!("cannot listen on the unix socket {}", path.display()),
                        e,
                    )
                })?;
                // Only the owner may connect (connections are also checked by peer
                // credentials, which covers the instant before this chmod).
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| Error::io(format!("cannot chmod {}", path.display()), e))?;
                }
                l.set_nonblocking(true)
                    .map_err(|e| Error::io("cannot configure the NBD socket", e))?;
                Ok(Bound {
                    listener: StdListener::Unix(l),
                    socket: Some(path.clone()),
                    tls,
                })
            }
            Listen::Tcp(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
                l.set_nonblocking(true)
                    .map_err(|e| Error::io("cannot configure the NBD socket", e))?;
                Ok(Bound {
                    listener: StdListener::Tcp(l),
                    socket: None,
                    tls,
                })
            }
        }
    }

    /// The NBD URI (as libnbd and qemu spell it) of export `name` on this listener:
    /// `nbds://` and `nbds+unix://` when TLS is required. Where the client's keys or
    /// certificates are is the client's business (libnbd: `?tls-psk-file=`,
    /// `?tls-certificates=`), so the URI does not say.
    pub fn uri(&self, name: &str) -> String {
        let s = if self.tls.is_some() { "s" } else { "" };
        match &self.listener {
            StdListener::Unix(_) => format!(
                "nbd{s}+unix:///{name}?socket={}",
                self.socket.as_ref().expect("unix").display()
            ),
            StdListener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("nbd{s}://{a}/{name}"),
                Err(_) => format!("nbd{s}://127.0.0.1/{name}"),
            },
        }
    }

    /// The TLS connections need, if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The unix socket file, if any.
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }
}

/// Removes a unix socket file nobody answers on; refuses a live one or a non-socket.
pub fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!(
                "{} exists and is not a socket; choose another path for --nbd",
                path.display()
            ),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!(
                "a server is already listening on {}; choose another path for --nbd",
                path.display()
            ),
        ));
    }
    std::fs::remove_file(path).map_err(|e| {
        Error::io(
            format!("cannot remove the stale socket {}", path.display()),
            e,
        )
    })
}

/// What one server exports: one volume.
pub struct Export {
    /// The export name clients ask for (the volume id); "" also selects it.
    pub name: String,
    pub description: String,
    pub image: Arc<Image>,
    pub read_only: bool,
}

impl Export {
    fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    fn flags(&self, structured: bool) -> u16 {
        let mut f = TF_HAS_FLAGS | TF_CAN_MULTI_CONN | TF_SEND_FLUSH | TF_SEND_CACHE;
        if self.read_only {
            f |= TF_READ_ONLY;
        } else {
            f |= TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_SEND_FAST_ZERO;
        }
        if structured {
            f |= TF_SEND_DF;
        }
        f
    }
}

/// Counters the daemon reports (`detach-volume` refuses while clients are on).
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub accepted: AtomicU64,
    pub requests: AtomicU64,
}

/// Buffers for read replies and write payloads, reused. A fresh buffer of a few
/// hundred KiB costs a memset or a page fault per 4 KiB on every request (a fifth of
/// the server's time in `nbdcopy` runs); a pooled one costs neither. Buffers come in
/// power-of-two classes from 8 KiB; at most `POOL_BYTES` are kept. Their contents
/// are unspecified when taken: every user overwrites the part it uses.
pub struct Pool {
    classes: Vec<std::sync::Mutex<Vec<Vec<u8>>>>,
    kept: AtomicUsize,
}

/// Bytes the pool keeps at most (beyond that, returned buffers are freed).
const POOL_BYTES: usize = 128 << 20;
const POOL_MIN: usize = 8 << 10;

/// A buffer of `len` bytes, maybe from the pool.
pub struct Buf {
    v: Vec<u8>,
    len: usize,
}

impl Buf {
    pub fn as_slice(&self) -> &[u8] {
        &self.v[..self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.v[..self.len]
    }
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        let len = v.len();
        Buf { v, len }
    }
}

impl Default for Pool {
    fn default() -> Self {
        let classes = (POOL_MIN.trailing_zeros()..=(2 * MAX_PAYLOAD as usize).trailing_zeros())
            .map(|_| std::sync::Mutex::new(Vec::new()))
            .collect();
        Pool {
            classes,
            kept: AtomicUsize::new(0),
        }
    }
}

impl Pool {
    fn class(size: usize) -> usize {
        (size.trailing_zeros() - POOL_MIN.trailing_zeros()) as usize
    }

    /// A buffer of `len` bytes (contents unspecified).
    pub fn take(&self, len: usize) -> Buf {
        let size = len.next_power_of_two().max(POOL_MIN);
        if let Some(class) = self.classes.get(Self::class(size))
            && let Some(v) = class.lock().expect("pool").pop()
        {
            self.kept.fetch_sub(v.len(), Ordering::Relaxed);
            return Buf { v, len };
        }
        Buf {
            v: vec![0u8; size],
            len,
        }
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, b: Buf) {
        let size = b.v.len();
        if !size.is_power_of_two() || size < POOL_MIN {
            return;
        }
        if self.kept.fetch_add(size, Ordering::Relaxed) + size > POOL_BYTES {
            self.kept.fetch_sub(size, Ordering::Relaxed);
            return;
        }
        match self.classes.get(Self::class(size)) {
            Some(class) => class.lock().expect("pool").push(b.v),
            None => {
                self.kept.fetch_sub(size, Ordering::Relaxed);
            }
        }
    }
}

/// What every connection of one server shares.
pub struct Shared {
    export: Export,
    budget: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
    uid: u32,
    pool: Pool,
    /// Some: FORCEDTLS with this configuration; None: NOTLS.
    tls: Option<Tls>,
    /// The stop sender of state made by [`Shared::new`] (no [`Server`] holds it):
    /// kept so `stop` never reads as closed.
    _stop_tx: Option<watch::Sender<bool>>,
}

/// A running server.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    stats: Arc<Stats>,
    uri: String,
    socket: Option<PathBuf>,
}

impl Server {
    /// Starts serving `export` on `bound`, on a runtime with one worker per CPU.
    pub fn start(export: Export, bound: Bound) -> Result<Server> {
        let uri = bound.uri(&export.name);
        let socket = bound.socket.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            )
            .max_blocking_threads(32)
            .thread_name("ebsim-nbd")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the NBD runtime", e))?;
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            export,
            budget: Arc::new(Semaphore::new(BUDGET_UNITS)),
            stop: stop_rx,
            stats: stats.clone(),
            uid: nix::unistd::geteuid().as_raw(),
            pool: Pool::default(),
            tls: bound.tls,
            _stop_tx: None,
        });
        let accept = {
            let _guard = runtime.enter();
            match bound.listener {
                StdListener::Unix(l) => tokio::net::UnixListener::from_std(l).map(Either::Unix),
                StdListener::Tcp(l) => tokio::net::TcpListener::from_std(l).map(Either::Tcp),
            }
            .map_err(|e| Error::io("cannot register the NBD socket", e))?
        };
        runtime.spawn(accept_loop(accept, shared));
        Ok(Server {
            runtime,
            stop,
            stats,
            uri,
            socket,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, lets every connection finish the requests it has read
    /// (their replies are sent), closes them, and removes the socket file.
    pub fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let start = Instant::now();
        while self.stats.connections.load(Ordering::SeqCst) > 0 && start.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.runtime.shutdown_timeout(grace);
        if let Some(s) = &self.socket {
            let _ = std::fs::remove_file(s);
        }
    }
}

enum Either {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

async fn accept_loop(listener: Either, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    loop {
        let accepted = tokio::select! {
            a = accept(&listener, &shared) => a,
            _ = stop.changed() => return,
        };
        let Some((r, w, peer)) = accepted else {
            continue;
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        shared.stats.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection_from(r, w, &shared, &peer).await {
                tracing::warn!("nbd: connection from {peer} closed: {e}");
            }
            shared.stats.connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// Accepts one connection; None if it failed or the peer is not allowed.
async fn accept(listener: &Either, shared: &Shared) -> Option<(BoxRead, BoxWrite, String)> {
    match listener {
        Either::Unix(l) => {
            let (s, _) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("nbd: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return None;
                }
            };
            let cred = s.peer_cred().ok()?;
            if cred.uid() != shared.uid && cred.uid() != 0 {
                tracing::warn!(
                    "nbd: refused a connection from uid {} (only uid {} and root may connect)",
                    cred.uid(),
                    shared.uid
                );
                return None;
            }
            let peer = format!("pid {}", cred.pid().unwrap_or(0));
            let (r, w) = s.into_split();
            Some((Box::new(r), Box::new(w), peer))
        }
        Either::Tcp(l) => {
            let (s, addr) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("nbd: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return None;
                }
            };
            // blockdev.md §1.1: Nagle would delay small replies.
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            Some((Box::new(r), Box::new(w), addr.to_string()))
        }
    }
}

/// What the handshake settled.
#[derive(Debug, Clone, Copy, Default)]
struct Negotiated {
    structured: bool,
    allocation: bool,
}

/// The read buffer of a connection.
const READ_BUFFER: usize = 128 << 10;

/// One connection from the first byte to the last. Errors are I/O errors of the
/// connection or protocol violations; either way only this connection ends.
pub async fn connection<R, W>(r: R, w: W, shared: &Arc<Shared>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    connection_from(r, w, shared, "client").await
}

/// [`connection`], with the peer named in log lines.
async fn connection_from<R, W>(
    r: R,
    mut w: W,
    shared: &Arc<Shared>,
    peer: &str,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let client = greet(&mut r, &mut w).await?;
    let phase = match shared.tls {
        Some(_) => Phase::TlsRequired,
        None => Phase::NoTls,
    };
    match options(&mut r, &mut w, shared, client, phase).await? {
        Outcome::End => Ok(()),
        Outcome::Transmission(neg) => transmission(r, w, shared, neg).await,
        Outcome::StartTls => {
            // The client waits for the ACK before it starts TLS; bytes already
            // here would be plaintext the TLS session must not see.
            if !r.buffer().is_empty() {
                return Err(protocol("data after NBD_OPT_STARTTLS before its reply"));
            }
            let tls = shared
                .tls
                .as_ref()
                .expect("STARTTLS is accepted only with TLS");
            let stream = tls.accept(tokio::io::join(r.into_inner(), w), peer).await?;
            let (r, mut w) = tokio::io::split(stream);
            let mut r = BufReader::with_capacity(READ_BUFFER, r);
            match options(&mut r, &mut w, shared, client, Phase::TlsOn).await? {
                Outcome::Transmission(neg) => transmission(r, w, shared, neg).await,
                Outcome::End | Outcome::StartTls => {
                    // Close the TLS session properly (close_notify).
                    let _ = w.shutdown().await;
                    Ok(())
                }
            }
        }
    }
}

/// Where the option haggling stands on TLS (the spec's server modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// NOTLS: STARTTLS is refused with `ERR_POLICY`.
    NoTls,
    /// FORCEDTLS before STARTTLS: every option but STARTTLS and ABORT is refused.
    TlsRequired,
    /// FORCEDTLS after STARTTLS: everything is served; STARTTLS again is invalid.
    TlsOn,
}

/// How the option haggling ended.
enum Outcome {
    /// GO or EXPORT_NAME: transmission starts.
    Transmission(Negotiated),
    /// STARTTLS was acknowledged: the TLS handshake comes next.
    StartTls,
    /// ABORT, or nothing more to do.
    End,
}

/// The client's flags from the greeting.
#[derive(Debug, Clone, Copy)]
struct ClientFlags {
    fixed: bool,
    no_zeroes: bool,
}

impl Shared {
    /// State for serving `export` outside [`Server`] (tests, fuzzing).
    pub fn new(export: Export) -> Arc<Shared> {
        let (tx, rx) = watch::channel(false);
        Arc::new(Shared {
            export,
            budget: Arc::new(Semaphore::new(BUDGET_UNITS)),
            stop: rx,
            stats: Arc::new(Stats::default()),
            uid: nix::unistd::geteuid().as_raw(),
            pool: Pool::default(),
            tls: None,
            _stop_tx: Some(tx),
        })
    }

    /// [`Shared::new`] with TLS required (FORCEDTLS).
    pub fn with_tls(export: Export, tls: Tls) -> Arc<Shared> {
        let mut s = Self::new(export);
        Arc::get_mut(&mut s).expect("just made").tls = Some(tls);
        s
    }
}

fn protocol(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// The fixed-newstyle greeting: the server's magic and flags, the client's flags.
async fn greet<R, W>(r: &mut R, w: &mut W) -> std::io::Result<ClientFlags>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&hello).await?;
    w.flush().await?;
    let client = r.read_u32().await?;
    if client & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(protocol(format!("unknown client flags {client:#x}")));
    }
    Ok(ClientFlags {
        fixed: client & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: client & FLAG_C_NO_ZEROES != 0,
    })
}

/// The option haggling, in `phase`, until the client enters transmission, asks
/// for TLS, ends it (ABORT) or must be dropped (an error).
async fn options<R, W>(
    r: &mut R,
    w: &mut W,
    shared: &Shared,
    client: ClientFlags,
    phase: Phase,
) -> std::io::Result<Outcome>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let export = &shared.export;
    let ClientFlags { fixed, no_zeroes } = client;
    let mut neg = Negotiated::default();
    loop {
        if r.read_u64().await? != IHAVEOPT {
            return Err(protocol("bad option magic"));
        }
        let option = r.read_u32().await?;
        let len = r.read_u32().await?;
        if len > MAX_OPTION {
            return Err(protocol(format!(
                "option {option} carries {len} bytes (the limit is {MAX_OPTION})"
            )));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await?;
        if !fixed && option != OPT_EXPORT_NAME {
            // Without fixed newstyle there is no way to answer an error.
            return Err(protocol(format!(
                "option {option} from a client without fixed newstyle"
            )));
        }
        let mut out: Vec<u8> = Vec::new();
        let mut reply = |kind: u32, payload: &[u8]| {
            out.extend_from_slice(&option_reply(option, kind, payload));
        };
        let shutting_down = *shared.stop.borrow();
        if phase == Phase::TlsRequired {
            match option {
                OPT_STARTTLS if !data.is_empty() => {
                    reply(REP_ERR_INVALID, b"STARTTLS takes no data");
                }
                OPT_STARTTLS => {
                    reply(REP_ACK, &[]);
                    w.write_all(&out).await?;
                    w.flush().await?;
                    return Ok(Outcome::StartTls);
                }
                OPT_ABORT => {
                    reply(REP_ACK, &[]);
                    w.write_all(&out).await?;
                    w.flush().await?;
                    return Ok(Outcome::End);
                }
                // It has no error reply: the spec says to end the session.
                OPT_EXPORT_NAME => {
                    return Err(protocol(
                        "NBD_OPT_EXPORT_NAME before STARTTLS; this export requires TLS",
                    ));
                }
                _ => reply(
                    REP_ERR_TLS_REQD,
                    b"this export requires TLS: send NBD_OPT_STARTTLS first",
                ),
            }
            w.write_all(&out).await?;
            w.flush().await?;
            continue;
        }
        match option {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data);
                if !export.matches(&name) || shutting_down {
                    // EXPORT_NAME has no error reply: the spec says to disconnect.
                    return Err(protocol(format!("no export named {name:?}")));
                }
                let mut b = export.image.size().to_be_bytes().to_vec();
                b.extend_from_slice(&export.flags(neg.structured).to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                w.write_all(&b).await?;
                w.flush().await?;
                return Ok(Outcome::Transmission(neg));
            }
            OPT_ABORT => {
                reply(REP_ACK, &[]);
                w.write_all(&out).await?;
                w.flush().await?;
                return Ok(Outcome::End);
            }
            OPT_LIST if !data.is_empty() => {
                reply(REP_ERR_INVALID, b"LIST takes no data");
            }
            OPT_LIST => {
                // Export names are at most 4096 bytes (checked when the export is made).
                let name_len = u32::try_from(export.name.len()).expect("export names are short");
                let mut s = name_len.to_be_bytes().to_vec();
                s.extend_from_slice(export.name.as_bytes());
                s.extend_from_slice(export.description.as_bytes());
                reply(REP_SERVER, &s);
                reply(REP_ACK, &[]);
            }
            OPT_INFO | OPT_GO => match parse_info(&data) {
                None => reply(REP_ERR_INVALID, b"malformed INFO/GO request"),
                Some(_) if shutting_down => reply(REP_ERR_SHUTDOWN, b"the server is stopping"),
                Some(req) if !export.matches(&req.name) => reply(
                    REP_ERR_UNKNOWN,
                    format!(
                        "no export named {:?}; this server exports {:?}",
                        req.name, export.name
                    )
                    .as_bytes(),
                ),
                Some(req) => {
                    reply(
                        REP_INFO,
                        &info_export(export.image.size(), export.flags(neg.structured)),
                    );
                    // Sent whether or not it was asked for: the constraints are the
                    // defaults' (any alignment works), so it only informs.
                    reply(REP_INFO, &info_block_size(1, PREFERRED_BLOCK, MAX_PAYLOAD));
                    if req.infos.contains(&INFO_NAME) {
                        reply(REP_INFO, &info_text(INFO_NAME, &export.name));
                    }
                    if req.infos.contains(&INFO_DESCRIPTION) {
                        reply(REP_INFO, &info_text(INFO_DESCRIPTION, &export.description));
                    }
                    reply(REP_ACK, &[]);
                    if option == OPT_GO {
                        w.write_all(&out).await?;
                        w.flush().await?;
                        return Ok(Outcome::Transmission(neg));
                    }
                }
            },
            OPT_STRUCTURED_REPLY if !data.is_empty() => {
                reply(REP_ERR_INVALID, b"STRUCTURED_REPLY takes no data");
            }
            OPT_STRUCTURED_REPLY => {
                neg.structured = true;
                reply(REP_ACK, &[]);
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = option == OPT_SET_META_CONTEXT;
                match parse_meta(&data) {
                    _ if set && !neg.structured => reply(
                        REP_ERR_INVALID,
                        b"SET_META_CONTEXT needs structured replies first",
                    ),
                    None => reply(REP_ERR_INVALID, b"malformed meta context request"),
                    Some(m) if !export.matches(&m.name) => reply(
                        REP_ERR_UNKNOWN,
                        format!("no export named {:?}", m.name).as_bytes(),
                    ),
                    Some(m) => {
                        let chosen = if set {
                            m.queries.iter().any(|q| q == META_BASE_ALLOCATION)
                        } else {
                            m.queries.is_empty() || m.queries.iter().any(|q| list_matches(q))
                        };
                        if set {
                            neg.allocation = chosen;
                        }
                        if chosen {
                            let mut c = META_ID_BASE_ALLOCATION.to_be_bytes().to_vec();
                            c.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
                            reply(REP_META_CONTEXT, &c);
                        }
                        reply(REP_ACK, &[]);
                    }
                }
            }
            OPT_STARTTLS if phase == Phase::TlsOn => {
                reply(REP_ERR_INVALID, b"TLS is already on")
            }
            OPT_STARTTLS => reply(
                REP_ERR_POLICY,
                b"TLS is not offered on this export (attach-volume without --tls-psk or --tls-creds)",
            ),
            _ => reply(
                REP_ERR_UNSUP,
                format!("option {option} is not supported").as_bytes(),
            ),
        }
        w.write_all(&out).await?;
        w.flush().await?;
    }
}

/// Payload units (4 KiB) a request holds from the server's budget while in flight.
fn cost(req: &Request) -> u32 {
    match req.kind {
        CMD_READ | CMD_WRITE => req.length.min(MAX_PAYLOAD).div_ceil(4096).max(1),
        _ => 1,
    }
}

/// Sends `reply` now (with anything the reader left buffered before it).
async fn send<W: AsyncWrite + Unpin>(w: &Mutex<BufWriter<W>>, reply: &[u8]) {
    let mut w = w.lock().await;
    // A client that went away is noticed by the reader.
    let _ = w.write_all(reply).await;
    let _ = w.flush().await;
}

/// Queues `reply` behind the other replies of this burst of requests: the reader
/// flushes before it next waits for the client, so a client with many requests in
/// flight gets their replies in one send and one wake-up rather than one each.
async fn queue<W: AsyncWrite + Unpin>(w: &Mutex<BufWriter<W>>, reply: &[u8]) {
    let _ = w.lock().await.write_all(reply).await;
}

/// Sends the queued replies. The reader calls it before reading on may wait for
/// the client (what it needs is not all in the read buffer yet): the client may be
/// waiting for those replies before it sends more.
async fn flush<W: AsyncWrite + Unpin>(w: &Mutex<BufWriter<W>>) {
    let _ = w.lock().await.flush().await;
}

/// Flushes the `queued` replies if the reader is about to wait: it needs `need`
/// bytes and has only `buffered`.
async fn flush_before_waiting<W: AsyncWrite + Unpin>(
    w: &Mutex<BufWriter<W>>,
    queued: &mut usize,
    buffered: usize,
    need: usize,
) {
    if *queued > 0 && buffered < need {
        flush(w).await;
        *queued = 0;
    }
}

async fn transmission<R, W>(
    mut r: BufReader<R>,
    w: W,
    shared_arc: &Arc<Shared>,
    neg: Negotiated,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let shared: &Shared = shared_arc;
    let pool = &shared.pool;
    let image = shared.export.image.clone();
    let session = Session {
        size: image.size(),
        read_only: shared.export.read_only,
        structured: neg.structured,
        allocation: neg.allocation,
    };
    let writer = Arc::new(Mutex::new(BufWriter::with_capacity(REPLY_BUFFER, w)));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut stop = shared.stop.clone();
    // Replies queued since the last send (see `queue`).
    let mut queued = 0;
    let result = loop {
        let mut hdr = [0u8; REQUEST_LEN];
        flush_before_waiting(&writer, &mut queued, r.buffer().len(), REQUEST_LEN).await;
        let read = tokio::select! {
            r = r.read_exact(&mut hdr) => r,
            _ = stop.changed() => break Ok(()),
        };
        match read {
            Ok(_) => {}
            // The client closed without DISC: nothing more to do.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let Some(req) = Request::parse(&hdr) else {
            break Err(protocol("bad request magic"));
        };
        if !req.payload_ok() {
            break Err(protocol(format!(
                "a write of {} bytes exceeds the maximum payload {MAX_PAYLOAD}",
                req.length
            )));
        }
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        let count = in_flight.clone().acquire_owned().await.expect("open");
        let bytes = shared
            .budget
            .clone()
            .acquire_many_owned(cost(&req))
            .await
            .expect("open");
        let cmd = match req.check(&session) {
            Ok(c) => c,
            Err(refusal) => {
                if req.kind == CMD_WRITE {
                    flush_before_waiting(
                        &writer,
                        &mut queued,
                        r.buffer().len(),
                        req.length as usize,
                    )
                    .await;
                    // Keep the framing: skip the payload of the refused write.
                    let mut skip = (&mut r).take(u64::from(req.length));
                    match tokio::io::copy(&mut skip, &mut tokio::io::sink()).await {
                        Ok(n) if n == u64::from(req.length) => {}
                        Ok(_) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
                let reply = refusal_reply(req.cookie, &session, &refusal);
                send(&writer, &reply).await;
                continue;
            }
        };
        if cmd == Command::Disconnect {
            break Ok(());
        }
        let payload = match cmd {
            Command::Write { len, .. } => {
                let mut b = pool.take(len as usize);
                flush_before_waiting(&writer, &mut queued, r.buffer().len(), len as usize).await;
                // A client gone in the middle of a payload: the write is not done.
                if let Err(e) = r.read_exact(b.as_mut_slice()).await {
                    break match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => Ok(()),
                        _ => Err(e),
                    };
                }
                b
            }
            _ => Buf::from(Vec::new()),
        };
        if runs_inline(&cmd) {
            let reply = execute(&image, pool, req.cookie, cmd, payload.as_slice(), &session);
            queued += 1;
            if queued >= REPLY_BATCH {
                send(&writer, reply.as_slice()).await;
                queued = 0;
            } else {
                queue(&writer, reply.as_slice()).await;
            }
            pool.give(reply);
            pool.give(payload);
        } else {
            let image = image.clone();
            let writer = writer.clone();
            let shared = shared_arc.clone();
            tokio::spawn(async move {
                let cookie = req.cookie;
                let pool_shared = shared.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let reply = execute(
                        &image,
                        &pool_shared.pool,
                        cookie,
                        cmd,
                        payload.as_slice(),
                        &session,
                    );
                    (reply, payload)
                })
                .await;
                match done {
                    Ok((reply, payload)) => {
                        send(&writer, reply.as_slice()).await;
                        shared.pool.give(reply);
                        shared.pool.give(payload);
                    }
                    Err(_) => {
                        let reply = refusal_reply(
                            cookie,
                            &session,
                            &Refusal {
                                errno: Errno::Io,
                                message: "internal error".into(),
                            },
                        );
                        send(&writer, &reply).await;
                    }
                }
                drop((count, bytes));
            });
        }
    };
    // Requests already read are finished and answered before the connection closes
    // (DISC: "the server MUST complete outstanding requests").
    let _all = in_flight.acquire_many(MAX_IN_FLIGHT_U32).await;
    let mut w = writer.lock().await;
    let _ = w.flush().await;
    let _ = w.shutdown().await;
    result
}

fn runs_inline(cmd: &Command) -> bool {
    match *cmd {
        Command::Read { len, .. } => len <= INLINE_MAX,
        Command::Write { len, fua, .. } => len <= INLINE_MAX && !fua,
        Command::Cache { .. } => true,
        _ => false,
    }
}

/// An error reply: a structured error chunk (with the message) when structured
/// replies were negotiated, else a simple reply.
fn refusal_reply(cookie: u64, s: &Session, r: &Refusal) -> Vec<u8> {
    if s.structured {
        error_chunk(cookie, r.errno, &r.message)
    } else {
        simple_reply(cookie, r.errno as u32).to_vec()
    }
}

/// The NBD error for a failed image operation.
fn errno_of(e: &Error) -> Errno {
    use std::error::Error as _;
    if e.kind() == ErrorKind::OutOfRange {
        return Errno::Inval;
    }
    let os = e
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(|io| io.raw_os_error());
    match os {
        Some(libc_enospc) if libc_enospc == nix::errno::Errno::ENOSPC as i32 => Errno::NoSpc,
        Some(x)
            if x == nix::errno::Errno::EDQUOT as i32 || x == nix::errno::Errno::EFBIG as i32 =>
        {
            Errno::NoSpc
        }
        _ => Errno::Io,
    }
}

/// Carries out one checked command and returns its complete reply.
fn execute(
    image: &Image,
    pool: &Pool,
    cookie: u64,
    cmd: Command,
    payload: &[u8],
    s: &Session,
) -> Buf {
    Buf::from(match cmd {
        Command::Read { offset, len, .. } => {
            return read_reply(image, pool, cookie, offset, len, s);
        }
        _ => execute_other(image, cookie, cmd, payload, s),
    })
}

/// [`execute`] for everything but reads (whose replies come from the pool).
fn execute_other(image: &Image, cookie: u64, cmd: Command, payload: &[u8], s: &Session) -> Vec<u8> {
    let status = |r: Result<()>| match r {
        Ok(()) => simple_reply(cookie, 0).to_vec(),
        Err(e) => {
            tracing::warn!("nbd: {e}");
            refusal_reply(
                cookie,
                s,
                &Refusal {
                    errno: errno_of(&e),
                    message: e.to_string(),
                },
            )
        }
    };
    let with_fua =
        |r: Result<()>, fua: bool| r.and_then(|()| if fua { image.flush() } else { Ok(()) });
    match cmd {
        Command::Read { .. } => unreachable!("reads go to read_reply"),
        Command::Write { offset, fua, .. } => status(image.write(offset, payload, fua)),
        Command::Flush => status(image.flush()),
        Command::Trim { offset, len, fua } => {
            status(with_fua(image.trim(offset, u64::from(len)), fua))
        }
        Command::Cache { offset, len } => {
            image.prefetch(offset, u64::from(len));
            simple_reply(cookie, 0).to_vec()
        }
        Command::WriteZeroes {
            offset,
            len,
            fua,
            no_hole,
            fast,
        } => {
            if fast {
                // Fast means punching holes; NO_HOLE forbids that, and a filesystem
                // without hole punching would need a full write.
                let done = if no_hole {
                    Ok(false)
                } else {
                    image.write_zeroes_fast(offset, u64::from(len))
                };
                match done {
                    Ok(true) => status(with_fua(Ok(()), fua)),
                    Ok(false) => refusal_reply(
                        cookie,
                        s,
                        &Refusal {
                            errno: Errno::NotSup,
                            message: "zeroing here is not faster than writing zeros".into(),
                        },
                    ),
                    Err(e) => status(Err(e)),
                }
            } else {
                status(with_fua(
                    image.write_zeroes(offset, u64::from(len), !no_hole),
                    fua,
                ))
            }
        }
        Command::BlockStatus {
            offset,
            len,
            req_one,
        } => block_status_reply(image, cookie, offset, len, req_one, s),
        Command::Disconnect => Vec::new(),
    }
}

fn read_reply(image: &Image, pool: &Pool, cookie: u64, offset: u64, len: u32, s: &Session) -> Buf {
    let failed = |e: Error| {
        tracing::warn!("nbd: {e}");
        Buf::from(refusal_reply(
            cookie,
            s,
            &Refusal {
                errno: errno_of(&e),
                message: e.to_string(),
            },
        ))
    };
    if !s.structured {
        let mut b = pool.take(SIMPLE_REPLY_LEN + len as usize);
        let out = b.as_mut_slice();
        if let Err(e) = image.read(offset, &mut out[SIMPLE_REPLY_LEN..]) {
            pool.give(b);
            return failed(e);
        }
        out[..SIMPLE_REPLY_LEN].copy_from_slice(&simple_reply(cookie, 0));
        return b;
    }
    if len == 0 {
        return Buf::from(chunk_header(CHUNK_FLAG_DONE, CHUNK_NONE, cookie, 0).to_vec());
    }
    // One OFFSET_DATA chunk, so DF is always honoured.
    let head = CHUNK_HEADER_LEN + 8;
    let mut b = pool.take(head + len as usize);
    let out = b.as_mut_slice();
    if let Err(e) = image.read(offset, &mut out[head..]) {
        pool.give(b);
        return failed(e);
    }
    out[..CHUNK_HEADER_LEN].copy_from_slice(&chunk_header(
        CHUNK_FLAG_DONE,
        CHUNK_OFFSET_DATA,
        cookie,
        8 + len,
    ));
    out[CHUNK_HEADER_LEN..head].copy_from_slice(&offset.to_be_bytes());
    b
}

fn block_status_reply(
    image: &Image,
    cookie: u64,
    offset: u64,
    len: u32,
    req_one: bool,
    s: &Session,
) -> Vec<u8> {
    let extents = match image.allocation(offset, u64::from(len)) {
        Ok(x) => x,
        Err(e) => {
            return refusal_reply(
                cookie,
                s,
                &Refusal {
                    errno: errno_of(&e),
                    message: e.to_string(),
                },
            );
        }
    };
    let keep = if req_one { 1 } else { MAX_EXTENTS };
    let mut body = META_ID_BASE_ALLOCATION.to_be_bytes().to_vec();
    for x in extents.iter().take(keep) {
        // Extents come from one request (a u32 length), so each fits a u32.
        let length = u32::try_from(x.length).expect("an extent within one request");
        body.extend_from_slice(&length.to_be_bytes());
        let state = if x.allocated {
            0
        } else {
            // A hole reads as zeros (FORMAT.md §4).
            STATE_HOLE | STATE_ZERO
        };
        body.extend_from_slice(&state.to_be_bytes());
    }
    let mut b = chunk_header(
        CHUNK_FLAG_DONE,
        CHUNK_BLOCK_STATUS,
        cookie,
        // At most MAX_EXTENTS descriptors of 8 bytes, plus the context id.
        u32::try_from(body.len()).expect("a bounded extent list"),
    )
    .to_vec();
    b.extend_from_slice(&body);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_by_class_and_keeps_a_bounded_amount() {
        let pool = Pool::default();
        let mut a = pool.take(5000);
        assert_eq!(a.as_slice().len(), 5000);
        a.as_mut_slice()[0] = 7;
        let ptr = a.as_slice().as_ptr();
        pool.give(a);
        // Same class (8 KiB): the same buffer comes back, with any length in it.
        let b = pool.take(8192);
        assert_eq!(b.as_slice().as_ptr(), ptr);
        assert_eq!(b.as_slice().len(), 8192);
        // Another class: a new buffer.
        let c = pool.take(9000);
        assert_ne!(c.as_slice().as_ptr(), ptr);
        assert_eq!(c.v.len(), 16384);
        // Small replies are not pooled; the total kept stays under POOL_BYTES.
        pool.give(Buf::from(vec![0u8; 16]));
        for _ in 0..8 {
            pool.give(pool.take(MAX_PAYLOAD as usize + 28));
            pool.give(Buf::from(vec![0u8; 32 << 20]));
        }
        assert!(pool.kept.load(Ordering::Relaxed) <= POOL_BYTES);
        // The largest request still gets a buffer.
        assert_eq!(
            pool.take(MAX_PAYLOAD as usize + 28).as_slice().len(),
            MAX_PAYLOAD as usize + 28
        );
    }
}
