//! TLS for the NBD export: what `attach-volume --tls-psk FILE` and `--tls-creds DIR`
//! load, and the server half of the handshake that follows `NBD_OPT_STARTTLS`.
//!
//! A server with TLS runs in the spec's FORCEDTLS mode (server.rs enforces it): every
//! option before STARTTLS but ABORT is answered `NBD_REP_ERR_TLS_REQD`, and
//! `NBD_OPT_EXPORT_NAME` before it closes the connection. TLS 1.2 is the minimum.
//!
//! # Two TLS libraries, and why
//! - **x509 certificates: rustls.** The handshake and the parsing of certificates a
//!   client presents (`--tls-verify-peer`) run in memory-safe code, as everywhere else
//!   in ebsim.
//! - **Pre-shared keys: OpenSSL** (the `openssl` crate's safe API over the system
//!   library). rustls has no external-PSK support (rustls issue #174 is open; the PR
//!   that would add it is not merged), and PSK is what qemu-nbd, nbdkit and libnbd
//!   offer for hosts without a PKI. OpenSSL's server PSK callback serves TLS 1.2 and,
//!   since 1.1.1, TLS 1.3, and interoperates with GnuTLS, which every NBD client
//!   (qemu, libnbd) uses (tests/nbd_tls_interop.rs).
//!
//! Running one library for both would mean OpenSSL for x509 too: C code parsing client
//! certificates. Each deployment picks one mode, so an x509 export never runs OpenSSL on
//! what a client sends, and a PSK export never parses a certificate at all.
//!
//! # Secrets
//! PSK file contents are read into a zeroizing buffer; each key is decoded from hex
//! straight into a [`SecretBytes`] (locked, zeroized on drop) and copied only into the
//! buffer OpenSSL hands the callback (OpenSSL cleanses it). Keys are never printed;
//! identities are (they are names, not secrets). A PSK file or server key that its
//! group or others may read or write is refused, as ssh refuses such private keys
//! (qemu and nbdkit do not check): a key anyone on the host can read does not keep
//! anyone on the host out. The x509 server key is read into a zeroizing buffer, but
//! rustls and ring keep their parsed copy in ordinary memory.
#![forbid(unsafe_code)]

use crate::crypto::SecretBytes;
use crate::error::{Error, ErrorKind, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

/// The longest PSK OpenSSL accepts (`PSK_MAX_PSK_LEN`).
const PSK_MAX: usize = 512;
/// The shortest PSK ebsim accepts: 128 bits. psktool makes 32 bytes.
const PSK_MIN: usize = 16;
/// The longest identity OpenSSL passes (`PSK_MAX_IDENTITY_LEN`).
const IDENTITY_MAX: usize = 256;
/// A PSK file larger than this is not a PSK file.
const PSK_FILE_MAX: u64 = 1 << 20;

/// TLS 1.3 suites for PSK. OpenSSL binds a PSK from the server callback to SHA-256
/// (it makes the session with TLS_AES_128_GCM_SHA256), and so do GnuTLS clients; a
/// SHA-384 suite would not match the PSK and the handshake would fail, so only the
/// SHA-256 suites are offered (measured: docs/NBD.md §5).
const PSK_TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
/// TLS 1.2 PSK suites: forward secret (ECDHE) with an AEAD or a SHA-2 MAC (OpenSSL
/// has no ECDHE-PSK GCM suite; GnuTLS clients pick CHACHA20-POLY1305).
const PSK_TLS12_CIPHERS: &str =
    "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256";

/// The files `--tls-creds DIR` reads, as qemu's `tls-creds-x509` and nbdkit's
/// `--tls-certificates` name them.
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_CRL: &str = "ca-crl.pem";
pub const SERVER_CERT: &str = "server-cert.pem";
pub const SERVER_KEY: &str = "server-key.pem";

/// The TLS flags of `attach-volume`, as given.
#[derive(Debug, Clone, Default)]
pub struct TlsFlags {
    /// `--tls-psk FILE`
    pub psk: Option<PathBuf>,
    /// `--tls-creds DIR`
    pub creds: Option<PathBuf>,
    /// `--tls-verify-peer`
    pub verify_peer: bool,
    /// `--nbd-no-tls`
    pub no_tls: bool,
}

impl TlsFlags {
    /// The TLS an export at `listen` gets, with the files loaded. A TCP export needs
    /// TLS or an explicit `--nbd-no-tls`: without TLS any local user (any host, with
    /// `--nbd-allow-remote`) can read and write the volume's plaintext. On a unix
    /// socket TLS is optional (the socket is the owner's only).
    pub fn resolve(&self, listen: Option<&super::Listen>) -> Result<Option<Tls>> {
        let combo = |m: &str| Error::new(ErrorKind::InvalidParameterCombination, m);
        let any_tls = self.psk.is_some() || self.creds.is_some();
        if listen.is_none() && (any_tls || self.verify_peer || self.no_tls) {
            return Err(combo(
                "--tls-psk, --tls-creds, --tls-verify-peer and --nbd-no-tls apply to an NBD export: give --nbd too",
            ));
        }
        if self.psk.is_some() && self.creds.is_some() {
            return Err(combo(
                "give one of --tls-psk FILE (pre-shared keys) and --tls-creds DIR (x509 certificates), not both",
            ));
        }
        if self.no_tls && any_tls {
            return Err(combo(
                "--nbd-no-tls contradicts --tls-psk/--tls-creds: choose TLS or none",
            ));
        }
        if self.verify_peer && self.creds.is_none() {
            return Err(combo(
                "--tls-verify-peer asks clients for x509 certificates: it needs --tls-creds DIR",
            ));
        }
        if let Some(file) = &self.psk {
            return Tls::psk(file).map(Some);
        }
        if let Some(dir) = &self.creds {
            return Tls::x509(dir, self.verify_peer).map(Some);
        }
        if let Some(super::Listen::Tcp(addr)) = listen
            && !self.no_tls
        {
            return Err(combo(&format!(
                "--nbd tcp:{addr} needs TLS: give --tls-psk FILE or --tls-creds DIR, or --nbd-no-tls \
                 to serve it unauthenticated and unencrypted (then any local user can read and write \
                 the volume; a unix: socket is the owner's only)"
            )));
        }
        Ok(None)
    }
}

/// A loaded TLS server configuration, shared by every connection of one export.
#[derive(Clone)]
pub struct Tls(Arc<Mode>);

enum Mode {
    Psk {
        ctx: openssl::ssl::SslContext,
        /// Where the callback leaves the identity it accepted: OpenSSL's
        /// `SSL_get_psk_identity` has none under TLS 1.3.
        identity: openssl::ex_data::Index<openssl::ssl::Ssl, String>,
        file: PathBuf,
        users: usize,
    },
    X509 {
        config: Arc<rustls::ServerConfig>,
        dir: PathBuf,
        verify_peer: bool,
    },
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A TLS session: the connection once STARTTLS succeeded.
pub trait Stream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Stream for T {}

fn bad(what: impl fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidParameterValue, what.to_string())
}

/// Refuses a secret file that is not a regular file or that group or others may use.
fn check_private(path: &Path, flag: &str) -> Result<std::fs::Metadata> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| bad(format!("{flag} {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(bad(format!(
            "{flag} {}: not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "{flag} {}: it holds secret keys but its group or others may access it (mode {mode:04o}); \
             run chmod 600 on it",
            path.display()
        )));
    }
    Ok(meta)
}

/// Reads a secret file into memory that is zeroized when dropped.
fn read_private(path: &Path, flag: &str) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let meta = check_private(path, flag)?;
    if meta.len() > PSK_FILE_MAX {
        return Err(bad(format!(
            "{flag} {}: {} bytes is too large for a key file",
            path.display(),
            meta.len()
        )));
    }
    // Room for the whole file up front, so no reallocation leaves a copy behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(crate::num::usize_of(meta.len()) + 1));
    std::fs::File::open(path)
        .and_then(|f| f.take(PSK_FILE_MAX).read_to_end(&mut buf))
        .map_err(|e| bad(format!("{flag} {}: {e}", path.display())))?;
    Ok(buf)
}

/// One line of a PSK file: an identity and its key.
pub struct PskEntry {
    pub identity: String,
    pub key: SecretBytes,
}

impl fmt::Debug for PskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PskEntry({:?}, {} key bytes)",
            self.identity,
            self.key.len()
        )
    }
}

/// Parses a PSK file in GnuTLS psktool's format, the one qemu (`keys.psk`), nbdkit
/// (`--tls-psk`) and libnbd (`tls-psk-file`) read: one `identity:hexkey` per line.
/// Blank lines are skipped. Identities are non-empty, printable, without `:`, and
/// unique; keys are hex, 16 to 512 bytes. The error names the line, never the key.
pub fn parse_psk_file(text: &[u8]) -> std::result::Result<Vec<PskEntry>, String> {
    let mut out: Vec<PskEntry> = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!("line {n}: expected identity:hexkey"));
        };
        let (name, hex) = (&line[..colon], &line[colon + 1..]);
        let identity = match std::str::from_utf8(name) {
            Ok(s)
                if !s.is_empty() && s.len() <= IDENTITY_MAX && !s.chars().any(char::is_control) =>
            {
                s.to_string()
            }
            _ => {
                return Err(format!(
                    "line {n}: the identity must be 1 to {IDENTITY_MAX} bytes of printable UTF-8"
                ));
            }
        };
        if out.iter().any(|e| e.identity == identity) {
            return Err(format!("line {n}: identity {identity:?} appears twice"));
        }
        if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "line {n}: the key of {identity:?} is not an even number of hex digits"
            ));
        }
        let len = hex.len() / 2;
        if !(PSK_MIN..=PSK_MAX).contains(&len) {
            return Err(format!(
                "line {n}: the key of {identity:?} has {len} bytes; keys have {PSK_MIN} to {PSK_MAX} \
                 (psktool -s 32 makes 32)"
            ));
        }
        let mut key = SecretBytes::zeroed(len);
        for (k, pair) in key.expose_mut().iter_mut().zip(hex.chunks(2)) {
            *k = (nibble(pair[0]) << 4) | nibble(pair[1]);
        }
        out.push(PskEntry { identity, key });
    }
    if out.is_empty() {
        return Err("no identity:hexkey line".into());
    }
    Ok(out)
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// An identity as it goes into a log line: control characters escaped.
fn printable(identity: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(identity))
}

impl Tls {
    /// TLS with pre-shared keys from `file` (psktool's format; see [`parse_psk_file`]).
    pub fn psk(file: &Path) -> Result<Tls> {
        use openssl::ssl::{SslContext, SslMethod, SslOptions, SslVersion};
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let text = read_private(&file, "--tls-psk")?;
        let entries = parse_psk_file(&text)
            .map_err(|why| bad(format!("--tls-psk {}: {why}", file.display())))?;
        drop(text);
        let users = entries.len();
        let ossl = |e: openssl::error::ErrorStack| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot set up OpenSSL for TLS-PSK: {e}"),
            )
        };
        let mut b = SslContext::builder(SslMethod::tls_server()).map_err(ossl)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(ossl)?;
        b.set_options(
            SslOptions::NO_COMPRESSION
                | SslOptions::NO_RENEGOTIATION
                | SslOptions::NO_TICKET
                | SslOptions::CIPHER_SERVER_PREFERENCE,
        );
        // No resumption: every connection proves it holds a key from the file.
        b.set_num_tickets(0).map_err(ossl)?;
        b.set_ciphersuites(PSK_TLS13_SUITES).map_err(ossl)?;
        b.set_cipher_list(PSK_TLS12_CIPHERS).map_err(ossl)?;
        let shown = file.display().to_string();
        let index = openssl::ssl::Ssl::new_ex_index::<String>().map_err(ossl)?;
        b.set_psk_server_callback(move |ssl, identity, out| {
            let identity = identity.unwrap_or_default();
            match entries.iter().find(|e| e.identity.as_bytes() == identity) {
                Some(e) if e.key.len() <= out.len() => {
                    out[..e.key.len()].copy_from_slice(e.key.expose());
                    ssl.set_ex_data(index, e.identity.clone());
                    Ok(e.key.len())
                }
                _ => {
                    tracing::warn!(
                        "nbd: TLS-PSK identity {} is not in {shown}; handshake refused",
                        printable(identity)
                    );
                    // 0: no key, and OpenSSL fails the handshake.
                    Ok(0)
                }
            }
        });
        Ok(Tls(Arc::new(Mode::Psk {
            ctx: b.build(),
            identity: index,
            file,
            users,
        })))
    }

    /// TLS with x509 certificates from `dir`: `server-cert.pem` (the chain, leaf
    /// first), `server-key.pem`, and with `verify_peer` `ca-cert.pem` (the CAs client
    /// certificates must chain to) and optionally `ca-crl.pem`. qemu's
    /// `tls-creds-x509,endpoint=server` and nbdkit's `--tls-certificates` use this
    /// layout.
    pub fn x509(dir: &Path, verify_peer: bool) -> Result<Tls> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        if !dir.is_dir() {
            return Err(bad(format!(
                "--tls-creds {}: not a directory (it holds {SERVER_CERT}, {SERVER_KEY} and, for \
                 --tls-verify-peer, {CA_CERT})",
                dir.display()
            )));
        }
        let file = |name: &str| dir.join(name);
        let pem_err = |name: &str, e: rustls::pki_types::pem::Error| {
            bad(format!("--tls-creds: {}: {e}", file(name).display()))
        };
        let certs = |name: &str| -> Result<Vec<CertificateDer<'static>>> {
            let path = file(name);
            if !path.is_file() {
                return Err(bad(format!("--tls-creds: {} is missing", path.display())));
            }
            let v = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| pem_err(name, e))?;
            if v.is_empty() {
                return Err(bad(format!(
                    "--tls-creds: {} holds no CERTIFICATE",
                    path.display()
                )));
            }
            Ok(v)
        };
        let chain = certs(SERVER_CERT)?;
        let key_pem = read_private(&file(SERVER_KEY), "--tls-creds")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(SERVER_KEY, e))?;
        drop(key_pem);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_err = |what: &str, e: &dyn fmt::Display| {
            bad(format!("--tls-creds {}: {what}: {e}", dir.display()))
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| tls_err("TLS versions", &e))?;
        let builder = if verify_peer {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(CA_CERT)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err(&format!("{CA_CERT} is not a usable CA"), &e))?;
            }
            let crls = if file(CA_CRL).is_file() {
                CertificateRevocationListDer::pem_file_iter(file(CA_CRL))
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| pem_err(CA_CRL, e))?
            } else {
                Vec::new()
            };
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .with_crls(crls)
            .build()
            .map_err(|e| tls_err("client verification", &e))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| tls_err(&format!("{SERVER_CERT} with {SERVER_KEY}"), &e))?;
        // No resumption: every connection authenticates afresh.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Tls(Arc::new(Mode::X509 {
            config: Arc::new(config),
            dir,
            verify_peer,
        })))
    }

    /// What this configuration is, for logs and errors (no secrets).
    pub fn describe(&self) -> String {
        match &*self.0 {
            Mode::Psk { file, users, .. } => format!(
                "TLS-PSK ({users} identit{} from {})",
                if *users == 1 { "y" } else { "ies" },
                file.display()
            ),
            Mode::X509 {
                dir, verify_peer, ..
            } => format!(
                "TLS x509 ({}{})",
                dir.display(),
                if *verify_peer {
                    ", client certificates required"
                } else {
                    ""
                }
            ),
        }
    }

    /// The server side of the TLS handshake on `io`, right after the ACK to
    /// STARTTLS. Logs what was negotiated; a failed handshake is an error of this
    /// connection only.
    pub async fn accept<S>(&self, io: S, peer: &str) -> std::io::Result<Pin<Box<dyn Stream>>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |e: &dyn fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("TLS handshake failed: {e}"),
            )
        };
        match &*self.0 {
            Mode::Psk { ctx, identity, .. } => {
                let ssl = openssl::ssl::Ssl::new(ctx).map_err(|e| failed(&e))?;
                let mut s = tokio_openssl::SslStream::new(ssl, io).map_err(|e| failed(&e))?;
                Pin::new(&mut s).accept().await.map_err(|e| failed(&e))?;
                let ssl = s.ssl();
                tracing::info!(
                    "nbd: {peer}: {} {}, PSK identity {}",
                    ssl.version_str(),
                    ssl.current_cipher().map(|c| c.name()).unwrap_or("?"),
                    printable(
                        ssl.ex_data(*identity)
                            .map(String::as_bytes)
                            .unwrap_or_default()
                    )
                );
                Ok(Box::pin(s))
            }
            Mode::X509 { config, .. } => {
                let s = tokio_rustls::TlsAcceptor::from(config.clone())
                    .accept(io)
                    .await
                    .map_err(|e| failed(&e))?;
                let (_, conn) = s.get_ref();
                tracing::info!(
                    "nbd: {peer}: {} {}, {}",
                    match conn.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                        v => format!("{v:?}"),
                    },
                    conn.negotiated_cipher_suite()
                        .map(|c| format!("{:?}", c.suite()))
                        .unwrap_or_default(),
                    if conn.peer_certificates().is_some() {
                        "client certificate verified"
                    } else {
                        "no client certificate"
                    }
                );
                Ok(Box::pin(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_file_lines_parse_into_identities_and_keys() {
        let k32 = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let text = format!("alice:{k32}\r\n\n  \nbob:{}\n", &k32[..32]);
        let v = parse_psk_file(text.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].identity, "alice");
        assert_eq!(v[0].key.len(), 32);
        assert_eq!(v[0].key.expose()[..2], [0x00, 0x11]);
        assert_eq!(v[0].key.expose()[31], 0xff);
        assert_eq!(v[1].identity, "bob");
        assert_eq!(v[1].key.len(), 16);
        // Debug never shows a key.
        assert!(!format!("{v:?}").contains("0011"));
    }

    #[test]
    fn bad_psk_files_are_refused_naming_the_line_and_never_the_key() {
        let key = "aa".repeat(32);
        for (text, why) in [
            (String::new(), "no identity"),
            ("alice".to_string(), "line 1: expected identity:hexkey"),
            (format!(":{key}"), "line 1: the identity"),
            (
                format!("alice:{key}\nalice:{key}"),
                "line 2: identity \"alice\" appears twice",
            ),
            (format!("alice:{key}x"), "not an even number of hex digits"),
            (format!("alice:{key}zz"), "not an even number of hex digits"),
            ("alice:00112233".to_string(), "has 4 bytes"),
            (format!("alice:{}", "ab".repeat(513)), "has 513 bytes"),
            (format!("al\u{7}ice:{key}"), "printable"),
        ] {
            let e = parse_psk_file(text.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains(&key[..16]), "the key leaked into {e}");
        }
    }

    #[test]
    fn tcp_without_tls_needs_the_explicit_flag_and_flags_must_agree() {
        let tcp = super::super::Listen::Tcp("127.0.0.1:0".parse().unwrap());
        let unix = super::super::Listen::Unix("/tmp/x.sock".into());
        let e = TlsFlags::default().resolve(Some(&tcp)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameterCombination);
        assert!(e.message().contains("--nbd-no-tls"), "{e}");
        let no_tls = TlsFlags {
            no_tls: true,
            ..Default::default()
        };
        assert!(no_tls.resolve(Some(&tcp)).unwrap().is_none());
        assert!(TlsFlags::default().resolve(Some(&unix)).unwrap().is_none());
        assert!(no_tls.resolve(None).is_err());
        let both = TlsFlags {
            psk: Some("a".into()),
            creds: Some("b".into()),
            ..Default::default()
        };
        assert!(
            both.resolve(Some(&tcp))
                .unwrap_err()
                .message()
                .contains("not both")
        );
        let verify = TlsFlags {
            verify_peer: true,
            ..Default::default()
        };
        assert!(
            verify
                .resolve(Some(&unix))
                .unwrap_err()
                .message()
                .contains("--tls-creds")
        );
    }

    #[test]
    fn a_psk_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys.psk");
        std::fs::write(&f, format!("alice:{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Tls::psk(&f).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameterValue);
        assert!(
            e.message().contains("chmod 600") && e.message().contains("keys.psk"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = Tls::psk(&f).unwrap();
        assert!(t.describe().contains("1 identity"), "{t:?}");
        let e = Tls::psk(&dir.path().join("missing.psk")).unwrap_err();
        assert!(e.message().contains("missing.psk"), "{e}");
    }
}
