//! A whole NBD connection (src/nbd/server.rs) fed arbitrary client bytes: the
//! handshake, then transmission against a small encrypted volume. The server must
//! neither panic nor hang; it answers or closes. Inputs starting with 0 go to the
//! server as they are; with 0xff, to a server that requires TLS (FORCEDTLS: the
//! plaintext option haggling, and after STARTTLS OpenSSL's side of a handshake);
//! with any other byte they get a valid negotiation (structured replies,
//! base:allocation, GO) put in front, so the fuzzer spends its time on requests.
#![no_main]
use ebsim::crypto::secret::SecretBytes;
use ebsim::nbd::Tls;
use ebsim::nbd::proto::*;
use ebsim::nbd::server::{Export, Shared, connection};
use ebsim::volume::header::{Cipher, Header, ZERO_UNIT_IS_HOLE};
use ebsim::volume::image::{self, Image};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VOL: &str = "vol-0123456789abcdef0";

/// A small encrypted volume in a fresh directory.
fn export() -> (tempfile::TempDir, Export) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.img");
    let h = Header {
        sequence: 1,
        incompat_features: ZERO_UNIT_IS_HOLE,
        compat_features: 0,
        size: 256 << 10,
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
    let export = Export {
        name: VOL.into(),
        description: "fuzz".into(),
        image: Arc::new(img),
        read_only: false,
    };
    (dir, export)
}

fn shared() -> Arc<Shared> {
    static S: OnceLock<(tempfile::TempDir, Arc<Shared>)> = OnceLock::new();
    S.get_or_init(|| {
        let (dir, export) = export();
        (dir, Shared::new(export))
    })
    .1
    .clone()
}

/// A server that requires TLS with a pre-shared key.
fn shared_tls() -> Arc<Shared> {
    static S: OnceLock<(tempfile::TempDir, Arc<Shared>)> = OnceLock::new();
    S.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let (dir, export) = export();
        let keys = dir.path().join("keys.psk");
        std::fs::write(&keys, format!("fuzz:{}\n", "5a".repeat(32))).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tls = Tls::psk(&keys).unwrap();
        (dir, Shared::with_tls(export, tls))
    })
    .1
    .clone()
}

fn option(b: &mut Vec<u8>, opt: u32, data: &[u8]) {
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
}

fn negotiation() -> Vec<u8> {
    let mut b = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes().to_vec();
    option(&mut b, OPT_STRUCTURED_REPLY, &[]);
    let mut meta = 0u32.to_be_bytes().to_vec();
    meta.extend_from_slice(&1u32.to_be_bytes());
    meta.extend_from_slice(&(META_BASE_ALLOCATION.len() as u32).to_be_bytes());
    meta.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
    option(&mut b, OPT_SET_META_CONTEXT, &meta);
    let mut go = 0u32.to_be_bytes().to_vec();
    go.extend_from_slice(&0u16.to_be_bytes());
    option(&mut b, OPT_GO, &go);
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = if mode != 0 && mode != 0xff {
        negotiation()
    } else {
        Vec::new()
    };
    input.extend_from_slice(rest);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let (r, w) = tokio::io::split(server);
        let shared = if mode == 0xff { shared_tls() } else { shared() };
        let task = tokio::spawn(async move { connection(r, w, &shared).await });
        let (mut cr, mut cw) = tokio::io::split(&mut client);
        let writer = async {
            let _ = cw.write_all(&input).await;
            let _ = cw.shutdown().await;
        };
        let reader = async {
            let mut sink = Vec::new();
            let _ = cr.read_to_end(&mut sink).await;
        };
        let done = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            tokio::join!(writer, reader);
            task.await
        })
        .await;
        assert!(done.is_ok(), "the server did not finish the connection");
        assert!(done.unwrap().is_ok(), "the connection task panicked");
    });
});
