//! TLS material for the NBD TLS tests, made fresh in a temporary directory: a CA, a
//! server certificate for 127.0.0.1 and localhost, client certificates (one from
//! another CA too), and psktool-format PSK files. Made with the openssl crate, so no
//! tool is needed.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder};
use std::path::{Path, PathBuf};

pub fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

#[derive(Clone, Copy, PartialEq)]
pub enum Role {
    Ca,
    Server,
    Client,
}

/// A certificate for `key` named `cn`, signed by `issuer` (self-signed if None).
pub fn cert(
    cn: &str,
    key: &PKey<Private>,
    role: Role,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand::random::<u32>() >> 1).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map(|(c, _)| c.subject_name()).unwrap_or(&name))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    if role == Role::Ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
    } else {
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        // qemu insists on keyEncipherment in the key usage, whatever the key type.
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut eku = ExtendedKeyUsage::new();
        if role == Role::Server {
            eku.server_auth();
        } else {
            eku.client_auth();
        }
        b.append_extension(eku.build().unwrap()).unwrap();
    }
    if role == Role::Server {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    if let Some((c, _)) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(c), None))
            .unwrap();
        b.append_extension(aki).unwrap();
    }
    b.sign(
        issuer.map(|(_, k)| k).unwrap_or(key),
        MessageDigest::sha256(),
    )
    .unwrap();
    b.build()
}

/// Writes a secret file with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Directories in qemu's tls-creds-x509 layout (which libnbd's tls-certificates and
/// nbdkit's --tls-certificates share).
pub struct Pki {
    /// For the server: ca-cert.pem, server-cert.pem, server-key.pem.
    pub server: PathBuf,
    /// For a client: ca-cert.pem, client-cert.pem, client-key.pem.
    pub client: PathBuf,
    /// For a client without a certificate: ca-cert.pem only.
    pub anonymous: PathBuf,
    /// For a client whose certificate another CA signed (and who trusts the real CA).
    pub stranger: PathBuf,
}

impl Pki {
    pub fn new(root: &Path) -> Pki {
        let ca_key = key();
        let ca = cert("ebsim test CA", &ca_key, Role::Ca, None);
        let other_key = key();
        let other = cert("some other CA", &other_key, Role::Ca, None);
        let dirs = Pki {
            server: root.join("server"),
            client: root.join("client"),
            anonymous: root.join("anonymous"),
            stranger: root.join("stranger"),
        };
        let pem = |c: &X509| c.to_pem().unwrap();
        let key_pem = |k: &PKey<Private>| k.private_key_to_pem_pkcs8().unwrap();
        for d in [&dirs.server, &dirs.client, &dirs.anonymous, &dirs.stranger] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("ca-cert.pem"), pem(&ca)).unwrap();
        }
        let k = key();
        let c = cert("localhost", &k, Role::Server, Some((&ca, &ca_key)));
        std::fs::write(dirs.server.join("server-cert.pem"), pem(&c)).unwrap();
        write_private(&dirs.server.join("server-key.pem"), &key_pem(&k));
        for (dir, issuer) in [
            (&dirs.client, (&ca, &ca_key)),
            (&dirs.stranger, (&other, &other_key)),
        ] {
            let k = key();
            let c = cert("ebsim test client", &k, Role::Client, Some(issuer));
            std::fs::write(dir.join("client-cert.pem"), pem(&c)).unwrap();
            write_private(&dir.join("client-key.pem"), &key_pem(&k));
        }
        dirs
    }
}

/// A random PSK of 32 bytes, as hex.
pub fn psk_hex() -> String {
    let mut k = [0u8; 32];
    openssl::rand::rand_bytes(&mut k).unwrap();
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a psktool-format file (`identity:hexkey` lines), mode 0600.
pub fn psk_file(path: &Path, entries: &[(&str, &str)]) {
    let text: String = entries.iter().map(|(u, k)| format!("{u}:{k}\n")).collect();
    write_private(path, text.as_bytes());
}

use super::nbd_client::Conn;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVersion};

fn why(e: openssl::ssl::HandshakeError<Box<dyn Conn>>) -> String {
    use openssl::ssl::HandshakeError as H;
    match e {
        H::SetupFailure(e) => e.to_string(),
        H::Failure(m) | H::WouldBlock(m) => m.error().to_string(),
    }
}

/// TLS on `s` with `connector`, not checking the server's name (PSK has none).
pub fn tls(connector: &SslConnector, s: Box<dyn Conn>) -> Result<Box<dyn Conn>, String> {
    let ssl = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .use_server_name_indication(false)
        .into_ssl("")
        .unwrap();
    match ssl.connect(s) {
        Ok(t) => Ok(Box::new(t)),
        Err(e) => Err(why(e)),
    }
}

/// An OpenSSL client with a pre-shared key; `tls12` caps it at TLS 1.2.
pub fn psk_connector(identity: &str, key_hex: &str, tls12: bool) -> SslConnector {
    let key: Vec<u8> = (0..key_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
        .collect();
    let identity = identity.as_bytes().to_vec();
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    if tls12 {
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        b.set_cipher_list("ECDHE-PSK-CHACHA20-POLY1305:PSK")
            .unwrap();
    }
    b.set_psk_client_callback(move |_ssl, _hint, id_out, key_out| {
        id_out[..identity.len()].copy_from_slice(&identity);
        id_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    b.build()
}

/// An OpenSSL client that trusts `dir/ca-cert.pem` and, if `dir` has them, presents
/// `client-cert.pem` and `client-key.pem`.
pub fn x509_connector(dir: &Path) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dir.join("ca-cert.pem")).unwrap();
    if dir.join("client-cert.pem").exists() {
        b.set_certificate_file(dir.join("client-cert.pem"), SslFiletype::PEM)
            .unwrap();
        b.set_private_key_file(dir.join("client-key.pem"), SslFiletype::PEM)
            .unwrap();
    }
    b.build()
}

/// TLS on `s` checking that the server's certificate names `localhost`.
pub fn tls_verified(connector: &SslConnector, s: Box<dyn Conn>) -> Result<Box<dyn Conn>, String> {
    match connector.connect("localhost", s) {
        Ok(t) => Ok(Box::new(t)),
        Err(e) => Err(why(e)),
    }
}
