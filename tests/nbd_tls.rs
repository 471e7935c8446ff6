//! TLS on the NBD server, in process, driven by the spec-written client
//! (tests/common/nbd_client.rs) with OpenSSL as its TLS layer: FORCEDTLS refuses
//! every option but STARTTLS and ABORT, EXPORT_NAME before TLS ends the session,
//! and after STARTTLS negotiation and I/O run inside TLS, with pre-shared keys
//! (TLS 1.3 and 1.2) and with x509 certificates (rustls on the server, so this is
//! OpenSSL against rustls), with and without client certificates.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::nbd_client::*;
use common::pki::{self, Pki};
use ebsim::crypto::secret::SecretBytes;
use ebsim::nbd::proto::*;
use ebsim::nbd::{Bound, Export, Listen, Server, Tls};
use ebsim::volume::header::{Cipher, Header, ZERO_UNIT_IS_HOLE};
use ebsim::volume::image::{self, Image};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const VOL: &str = "vol-0123456789abcdef0";

struct Fixture {
    dir: tempfile::TempDir,
    sock: PathBuf,
    server: Option<Server>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(10));
        }
    }
}

/// An encrypted 1 MiB volume served on a unix socket with the TLS `make` returns
/// (given the fixture's directory).
fn serve(make: impl FnOnce(&std::path::Path) -> Option<Tls>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.img");
    let h = Header {
        sequence: 1,
        incompat_features: ZERO_UNIT_IS_HOLE,
        compat_features: 0,
        size: 1 << 20,
        cipher: Cipher::AesXtsPlain64,
        created_ms: 0,
        volume_id: VOL.into(),
        region: "us-east-1".into(),
        kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
        encryption_context: Header::volume_context(VOL),
        source_snapshot_id: String::new(),
        wrapped_key: vec![1; 100],
        rekey: None,
    };
    let key = SecretBytes::random(64);
    image::create_file(&path, &h, Some(&key)).unwrap();
    let img = Image::open(&path, VOL, &mut |_h: &Header| Ok(key.duplicate())).unwrap();
    let tls = make(dir.path());
    let sock = dir.path().join("nbd.sock");
    let bound = Bound::bind(&Listen::Unix(sock.clone()), tls).unwrap();
    let server = Server::start(
        Export {
            name: VOL.into(),
            description: "test volume".into(),
            image: Arc::new(img),
            read_only: false,
        },
        bound,
    )
    .unwrap();
    Fixture {
        dir,
        sock,
        server: Some(server),
    }
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn serve_psk() -> Fixture {
    serve(|dir| {
        let f = dir.join("keys.psk");
        pki::psk_file(&f, &[("alice", KEY), ("bob", &pki::psk_hex())]);
        Some(Tls::psk(&f).unwrap())
    })
}

fn greet(f: &Fixture) -> Client {
    Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
}

/// Writes and reads back through `c`, then disconnects.
fn io_works(mut c: Client) {
    let data = b"over TLS".repeat(512);
    assert_eq!(c.write(8192, &data, CMD_FLAG_FUA).error, 0);
    assert_eq!(c.read(8192, data.len() as u32).data, data);
    c.send(CMD_DISC, 0, 9, 0, 0, &[]);
}

/// True if a client whose TLS handshake seemed to succeed gets no answer to LIST:
/// the server closed the session.
fn refused(mut c: Client) -> bool {
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_LIST.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    let _ = c.s.write_all(&b);
    c.closed()
}

#[test]
fn forcedtls_refuses_every_option_before_starttls_but_abort() {
    let f = serve_psk();
    let mut c = greet(&f);
    let go = Client::go_payload(VOL, &[INFO_BLOCK_SIZE]);
    let meta = Client::meta_payload("", &[META_BASE_ALLOCATION]);
    for (option, data) in [
        (OPT_LIST, &[][..]),
        (OPT_INFO, &go[..]),
        (OPT_GO, &go[..]),
        (OPT_STRUCTURED_REPLY, &[][..]),
        (OPT_LIST_META_CONTEXT, &meta[..]),
        (99, &b"12345"[..]),
    ] {
        let r = c.option(option, data);
        assert_eq!(r.len(), 1, "option {option}: {r:?}");
        assert_eq!(r[0].kind, REP_ERR_TLS_REQD, "option {option}");
        assert!(String::from_utf8_lossy(&r[0].data).contains("STARTTLS"));
    }
    // STARTTLS carries no data.
    assert_eq!(c.option(OPT_STARTTLS, b"x")[0].kind, REP_ERR_INVALID);
    // ABORT is still answered.
    assert_eq!(c.option(OPT_ABORT, &[])[0].kind, REP_ACK);
    assert!(c.closed());
}

#[test]
fn export_name_before_starttls_ends_the_session_and_no_data_flows() {
    let f = serve_psk();
    let mut c = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE);
    c.send_option(OPT_EXPORT_NAME, VOL.as_bytes());
    assert!(c.closed(), "EXPORT_NAME without TLS must disconnect");
    // Nor after a refused option.
    let mut c = greet(&f);
    assert_eq!(c.option(OPT_LIST, &[])[0].kind, REP_ERR_TLS_REQD);
    c.send_option(OPT_EXPORT_NAME, b"");
    assert!(c.closed());
    // A client without fixed newstyle can only send EXPORT_NAME: dropped too.
    let mut c = Client::greet(&f.sock, 0);
    c.send_option(OPT_EXPORT_NAME, b"");
    assert!(c.closed());
}

#[test]
fn psk_starttls_then_go_works_over_tls_1_3_and_1_2() {
    let f = serve_psk();
    for tls12 in [false, true] {
        let connector = pki::psk_connector("alice", KEY, tls12);
        let mut c = greet(&f)
            .starttls(|s| pki::tls(&connector, s))
            .unwrap_or_else(|e| panic!("handshake (tls12: {tls12}): {e}"));
        // A second STARTTLS is invalid; everything else is now served.
        assert_eq!(c.option(OPT_STARTTLS, &[])[0].kind, REP_ERR_INVALID);
        let list = c.option(OPT_LIST, &[]);
        assert_eq!(list[0].kind, REP_SERVER);
        io_works(c.negotiate());
    }
    // And EXPORT_NAME inside TLS is fine.
    let connector = pki::psk_connector("alice", KEY, false);
    let mut c = greet(&f).starttls(|s| pki::tls(&connector, s)).unwrap();
    c.send_option(OPT_EXPORT_NAME, VOL.as_bytes());
    let mut b = [0u8; 10];
    std::io::Read::read_exact(&mut c.s, &mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), 1 << 20);
    assert_eq!(c.read(8192, 8).error, 0);
}

#[test]
fn a_wrong_psk_or_an_unknown_identity_gets_no_session() {
    let f = serve_psk();
    for (who, key) in [("alice", pki::psk_hex()), ("mallory", KEY.to_string())] {
        for tls12 in [false, true] {
            let connector = pki::psk_connector(who, &key, tls12);
            match greet(&f).starttls(|s| pki::tls(&connector, s)) {
                Err(_) => {}
                // The handshake may look done to the client; the server refuses.
                Ok(c) => assert!(refused(c), "{who} (tls12: {tls12}) got a session"),
            }
        }
    }
    // The server is still fine for the right key.
    let connector = pki::psk_connector("alice", KEY, false);
    io_works(
        greet(&f)
            .starttls(|s| pki::tls(&connector, s))
            .unwrap()
            .negotiate(),
    );
}

#[test]
fn bytes_sent_behind_starttls_before_its_reply_close_the_connection() {
    let f = serve_psk();
    let mut c = greet(&f);
    // STARTTLS and LIST in one write: the LIST would be plaintext inside TLS.
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_STARTTLS.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&OPT_LIST.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    c.s.write_all(&b).unwrap();
    assert_eq!(c.option_reply().kind, REP_ACK);
    assert!(c.closed());
}

#[test]
fn x509_starttls_with_and_without_client_certificates() {
    let f = serve(|dir| {
        let p = Pki::new(&dir.join("pki"));
        Some(Tls::x509(&p.server, false).unwrap())
    });
    let p = |who: &str| f.dir.path().join("pki").join(who);
    // Without --tls-verify-peer a client needs no certificate; the server's is
    // checked against the CA and the name localhost.
    for who in ["anonymous", "client"] {
        let connector = pki::x509_connector(&p(who));
        let c = greet(&f)
            .starttls(|s| pki::tls_verified(&connector, s))
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        io_works(c.negotiate());
    }
    // A client that trusts another CA refuses the server.
    let other = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other.path());
    let connector = pki::x509_connector(&stranger.anonymous);
    assert!(
        greet(&f)
            .starttls(|s| pki::tls_verified(&connector, s))
            .is_err()
    );
}

#[test]
fn x509_verify_peer_requires_a_certificate_from_the_ca() {
    let f = serve(|dir| {
        let p = Pki::new(&dir.join("pki"));
        Some(Tls::x509(&p.server, true).unwrap())
    });
    let p = |who: &str| f.dir.path().join("pki").join(who);
    let connector = pki::x509_connector(&p("client"));
    io_works(
        greet(&f)
            .starttls(|s| pki::tls_verified(&connector, s))
            .unwrap()
            .negotiate(),
    );
    for who in ["anonymous", "stranger"] {
        let connector = pki::x509_connector(&p(who));
        match greet(&f).starttls(|s| pki::tls_verified(&connector, s)) {
            Err(_) => {}
            // TLS 1.3: the client finishes before the server has checked its
            // certificate; the refusal arrives as an alert and a close.
            Ok(c) => assert!(refused(c), "{who} got a session"),
        }
    }
}

#[test]
fn uris_name_the_tls_scheme() {
    let f = serve_psk();
    let uri = f.server.as_ref().unwrap().uri().to_string();
    assert_eq!(
        uri,
        format!("nbds+unix:///{VOL}?socket={}", f.sock.display())
    );
    let keys = f.dir.path().join("keys.psk");
    let tcp = Bound::bind(
        &Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        Some(Tls::psk(&keys).unwrap()),
    )
    .unwrap();
    assert!(
        tcp.uri(VOL).starts_with("nbds://127.0.0.1:"),
        "{}",
        tcp.uri(VOL)
    );
    let plain = Bound::bind(&Listen::Tcp("127.0.0.1:0".parse().unwrap()), None).unwrap();
    assert!(plain.uri(VOL).starts_with("nbd://127.0.0.1:"));
}
