//! The NBD server, in process, driven by a client written from the spec
//! (tests/common/nbd_client.rs): negotiation, request checks, errors, out-of-order
//! replies, malformed input, and a 64-connection load test with every byte checked.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::nbd_client::*;
use ebsim::crypto::secret::SecretBytes;
use ebsim::nbd::proto::*;
use ebsim::nbd::{Bound, Export, Listen, Server};
use ebsim::volume::header::{Cipher, Header, ZERO_UNIT_IS_HOLE};
use ebsim::volume::image::{self, Image};
use rand::{Rng, RngCore, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VOL: &str = "vol-0123456789abcdef0";

struct Fixture {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    image_path: PathBuf,
    server: Option<Server>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(10));
        }
    }
}

fn serve(encrypted: bool, size: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.img");
    let h = Header {
        sequence: 1,
        incompat_features: ZERO_UNIT_IS_HOLE,
        compat_features: 0,
        size,
        cipher: if encrypted {
            Cipher::AesXtsPlain64
        } else {
            Cipher::None
        },
        created_ms: 0,
        volume_id: VOL.into(),
        region: "us-east-1".into(),
        kms_key_arn: if encrypted {
            "arn:aws:kms:us-east-1:111122223333:key/k".into()
        } else {
            String::new()
        },
        encryption_context: if encrypted {
            Header::volume_context(VOL)
        } else {
            String::new()
        },
        source_snapshot_id: String::new(),
        wrapped_key: if encrypted { vec![1; 100] } else { vec![] },
        rekey: None,
    };
    let key = SecretBytes::random(64);
    image::create_file(&path, &h, encrypted.then_some(&key)).unwrap();
    let img = Image::open(&path, VOL, &mut |_h: &Header| Ok(key.duplicate())).unwrap();
    let sock = dir.path().join("nbd.sock");
    let bound = Bound::bind(&Listen::Unix(sock.clone()), None).unwrap();
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
        _dir: dir,
        sock,
        image_path: path,
        server: Some(server),
    }
}

const EINVAL: u32 = Errno::Inval as u32;
const ENOSPC: u32 = Errno::NoSpc as u32;
const ENOTSUP: u32 = Errno::NotSup as u32;

#[test]
fn options_are_answered_and_framing_survives_unknown_ones() {
    let f = serve(true, 1 << 20);
    let mut c = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    // An unknown option with data, EXTENDED_HEADERS (not offered), STARTTLS.
    assert_eq!(c.option(99, b"12345")[0].kind, REP_ERR_UNSUP);
    assert_eq!(c.option(11, &[])[0].kind, REP_ERR_UNSUP);
    assert_eq!(c.option(OPT_STARTTLS, &[])[0].kind, REP_ERR_POLICY);
    // SET_META_CONTEXT needs structured replies first.
    let meta = Client::meta_payload("", &[META_BASE_ALLOCATION]);
    assert_eq!(
        c.option(OPT_SET_META_CONTEXT, &meta)[0].kind,
        REP_ERR_INVALID
    );
    // LIST: one export, then ACK; data is invalid.
    let list = c.option(OPT_LIST, &[]);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].kind, REP_SERVER);
    let n = be32(&list[0].data) as usize;
    assert_eq!(&list[0].data[4..4 + n], VOL.as_bytes());
    assert_eq!(&list[0].data[4 + n..], b"test volume");
    assert_eq!(c.option(OPT_LIST, b"x")[0].kind, REP_ERR_INVALID);
    // INFO for an export that is not there, then a malformed one.
    let unknown = c.option(OPT_INFO, &Client::go_payload("vol-nope", &[]));
    assert_eq!(unknown[0].kind, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&unknown[0].data).contains(VOL));
    assert_eq!(c.option(OPT_INFO, &[0, 0, 0, 9])[0].kind, REP_ERR_INVALID);
    // INFO with name and description.
    let info = c.option(
        OPT_INFO,
        &Client::go_payload(VOL, &[INFO_NAME, INFO_DESCRIPTION]),
    );
    let kinds: Vec<u16> = info
        .iter()
        .filter(|r| r.kind == REP_INFO)
        .map(|r| u16::from_be_bytes([r.data[0], r.data[1]]))
        .collect();
    assert_eq!(
        kinds,
        [INFO_EXPORT, INFO_BLOCK_SIZE, INFO_NAME, INFO_DESCRIPTION]
    );
    let block = info
        .iter()
        .find(|r| r.kind == REP_INFO && r.data[..2] == INFO_BLOCK_SIZE.to_be_bytes())
        .unwrap();
    assert_eq!(be32(&block.data[2..]), 1);
    assert_eq!(be32(&block.data[6..]), 4096);
    assert_eq!(be32(&block.data[10..]), MAX_PAYLOAD);
    // LIST_META_CONTEXT with no query lists base:allocation; another namespace none.
    let all = c.option(OPT_LIST_META_CONTEXT, &Client::meta_payload("", &[]));
    assert_eq!(all[0].kind, REP_META_CONTEXT);
    assert_eq!(&all[0].data[4..], META_BASE_ALLOCATION.as_bytes());
    let other = c.option(
        OPT_LIST_META_CONTEXT,
        &Client::meta_payload("", &["qemu:dirty-bitmap:x"]),
    );
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].kind, REP_ACK);
    // Still in sync: GO works and data flows (no structured replies here).
    c.go(VOL);
    assert_eq!(c.size, 1 << 20);
    assert_eq!(c.flags & TF_SEND_DF, 0, "DF needs structured replies");
    for f in [
        TF_HAS_FLAGS,
        TF_SEND_FLUSH,
        TF_SEND_FUA,
        TF_SEND_TRIM,
        TF_SEND_WRITE_ZEROES,
        TF_SEND_FAST_ZERO,
        TF_CAN_MULTI_CONN,
        TF_SEND_CACHE,
    ] {
        assert_ne!(c.flags & f, 0, "flag {f:#x}");
    }
    assert_eq!(c.write(4096, &[7u8; 4096], 0).error, 0);
    assert_eq!(c.read(4096, 4096).data, vec![7u8; 4096]);
}

#[test]
fn export_name_fallback_pads_unless_no_zeroes_and_bad_greetings_are_dropped() {
    let f = serve(false, 1 << 20);
    let mut c = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE);
    c.send_option(OPT_EXPORT_NAME, VOL.as_bytes());
    let mut b = [0u8; 134];
    std::io::Read::read_exact(&mut c.s, &mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), 1 << 20);
    assert!(b[10..].iter().all(|&x| x == 0));
    assert_eq!(c.write(0, b"hello", 0).error, 0);
    assert_eq!(c.read(0, 5).data, b"hello");

    let mut c = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    c.send_option(OPT_EXPORT_NAME, b"");
    let mut b = [0u8; 10];
    std::io::Read::read_exact(&mut c.s, &mut b).unwrap();
    assert_eq!(c.read(0, 5).data, b"hello", "no padding after NO_ZEROES");

    // EXPORT_NAME cannot report an error: an unknown name closes the connection.
    let mut c = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE);
    c.send_option(OPT_EXPORT_NAME, b"vol-nope");
    assert!(c.closed());
    // Unknown client flags, and a bad option magic.
    let mut c = Client::greet(&f.sock, 1 << 5);
    assert!(c.closed());
    let mut c = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE);
    c.s.write_all(&[0u8; 16]).unwrap();
    assert!(c.closed());
    // ABORT is acknowledged, then the server closes.
    let mut c = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE);
    assert_eq!(c.option(OPT_ABORT, &[])[0].kind, REP_ACK);
    assert!(c.closed());
}

#[test]
fn requests_are_checked_with_the_specs_errors_and_a_message() {
    let f = serve(true, 1 << 20);
    let mut c = Client::connect(&f.sock);
    assert_ne!(c.flags & TF_SEND_DF, 0);
    let r = c.read((1 << 20) - 10, 20);
    assert_eq!(r.error, EINVAL);
    assert!(r.message.contains("1048566"), "{}", r.message);
    // A write past the end: ENOSPC, and its payload is skipped (framing kept).
    let r = c.write((1 << 20) - 10, &[9u8; 20], 0);
    assert_eq!(r.error, ENOSPC);
    assert_eq!(c.read(0, 4).data, [0u8; 4]);
    assert_eq!(c.simple(42, 0, 0, 0).error, EINVAL);
    assert_eq!(c.simple(CMD_READ, CMD_FLAG_FUA, 0, 1).error, EINVAL);
    assert_eq!(c.simple(CMD_FLUSH, 0, 8, 0).error, EINVAL);
    assert_eq!(c.simple(CMD_BLOCK_STATUS, 0, 0, 0).error, EINVAL);
    assert_eq!(c.simple(CMD_TRIM, 0, 1 << 20, 1).error, EINVAL);
    assert_eq!(c.simple(CMD_WRITE_ZEROES, 0, 1 << 20, 1).error, ENOSPC);
    assert_eq!(c.simple(CMD_CACHE, 0, 0, 1 << 20).error, 0);
    assert_eq!(c.simple(CMD_FLUSH, 0, 0, 0).error, 0);
    // A read of length 0 is answered (with no data).
    let r = c.read(0, 0);
    assert_eq!((r.error, r.data.len()), (0, 0));

    // Without structured replies: BLOCK_STATUS and DF are refused (simple replies).
    let mut plain = Client::greet(&f.sock, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    plain.go("");
    assert_eq!(plain.simple(CMD_BLOCK_STATUS, 0, 0, 4096).error, EINVAL);
    assert_eq!(plain.simple(CMD_READ, CMD_FLAG_DF, 0, 1).error, EINVAL);
    assert_eq!(plain.read((1 << 20) - 1, 2).error, EINVAL);
}

#[test]
fn data_zeroes_trim_and_block_status_follow_the_volume() {
    let f = serve(true, 1 << 20);
    let mut c = Client::connect(&f.sock);
    let status = |c: &mut Client, off: u64, len: u32, flags: u16| {
        c.send(CMD_BLOCK_STATUS, flags, 5, off, len, &[]);
        c.reply(0).extents
    };
    assert_eq!(
        status(&mut c, 0, 1 << 20, 0),
        vec![(1 << 20, STATE_HOLE | STATE_ZERO)]
    );
    // An unaligned FUA write, read back.
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(c.write(1000, &data, CMD_FLAG_FUA).error, 0);
    assert_eq!(c.read(1000, 5000).data, data);
    assert_eq!(c.read(0, 1000).data, vec![0u8; 1000]);
    assert_eq!(
        status(&mut c, 0, 1 << 20, 0),
        vec![(8192, 0), ((1 << 20) - 8192, STATE_HOLE | STATE_ZERO)]
    );
    assert_eq!(
        status(&mut c, 0, 1 << 20, CMD_FLAG_REQ_ONE),
        vec![(8192, 0)]
    );
    // WRITE_ZEROES with NO_HOLE: zeros that stay allocated.
    assert_eq!(
        c.simple(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 8192).error,
        0
    );
    assert_eq!(c.read(0, 8192).data, vec![0u8; 8192]);
    assert_eq!(status(&mut c, 0, 8192, 0), vec![(8192, 0)]);
    // FAST_ZERO with NO_HOLE cannot be fast: ENOTSUP and nothing changed.
    assert_eq!(c.write(0, &[5u8; 8192], 0).error, 0);
    assert_eq!(
        c.simple(
            CMD_WRITE_ZEROES,
            CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
            0,
            8192
        )
        .error,
        ENOTSUP
    );
    assert_eq!(c.read(0, 8192).data, vec![5u8; 8192]);
    // FAST_ZERO alone punches: a hole again, and partial edges are zeroed.
    assert_eq!(
        c.simple(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 100, 8000)
            .error,
        0
    );
    let back = c.read(0, 8192).data;
    assert_eq!(&back[..100], &[5u8; 100]);
    assert!(back[100..8100].iter().all(|&b| b == 0));
    assert_eq!(&back[8100..], &[5u8; 92]);
    assert_eq!(
        status(&mut c, 4096, 4096, 0),
        vec![(4096, 0)],
        "the unit holding the tail edge stays allocated"
    );
    // TRIM of whole units makes holes that read as zeros.
    assert_eq!(c.write(65536, &[1u8; 65536], 0).error, 0);
    assert_eq!(c.simple(CMD_TRIM, CMD_FLAG_FUA, 65536, 65536).error, 0);
    assert_eq!(
        status(&mut c, 65536, 65536, 0),
        vec![(65536, STATE_HOLE | STATE_ZERO)]
    );
    assert_eq!(c.read(65536, 65536).data, vec![0u8; 65536]);
    // Nothing of the plaintext is in the image.
    let raw = std::fs::read(&f.image_path).unwrap();
    let needle: Vec<u8> = (1000..1064u32).map(|i| (i * 7) as u8).collect();
    assert!(!raw.windows(needle.len()).any(|w| w == needle.as_slice()));
}

#[test]
fn replies_come_back_out_of_order_and_match_their_cookies() {
    let f = serve(true, 64 << 20);
    let mut c = Client::connect(&f.sock);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model = vec![0u8; 64 << 20];
    rng.fill_bytes(&mut model[..32 << 20]);
    // Fill with large writes (these run on the blocking pool).
    for chunk in 0..8u64 {
        let at = (chunk * (4 << 20)) as usize;
        assert_eq!(c.write(at as u64, &model[at..at + (4 << 20)], 0).error, 0);
    }
    // 60 reads in flight at once, big and small mixed.
    let mut want = std::collections::HashMap::new();
    for cookie in 0..60u64 {
        let len: u32 = if cookie % 3 == 0 { 8 << 20 } else { 4096 };
        let off = rng.random_range(0..(64u64 << 20) - u64::from(len));
        c.send(CMD_READ, 0, 1000 + cookie, off, len, &[]);
        want.insert(1000 + cookie, (off, len));
    }
    let mut order = Vec::new();
    while !want.is_empty() {
        let r = c.reply(0);
        let (off, len) = want.remove(&r.cookie).expect("a cookie that was sent");
        assert_eq!(r.error, 0);
        assert_eq!(r.data.len(), len as usize);
        assert!(r.data == model[off as usize..(off + u64::from(len)) as usize]);
        order.push(r.cookie);
    }
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "every reply came in order; small reads should overtake large ones"
    );
}

/// Replies to a burst of small requests are gathered and sent together; none is
/// held back once the server has to wait for the client, even in the middle of a
/// request (a write whose payload the client sends only after reading the replies
/// it already asked for).
#[test]
fn a_burst_of_small_requests_is_answered_in_full_and_never_held_back() {
    let f = serve(true, 16 << 20);
    let mut c = Client::connect(&f.sock);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut model = vec![0u8; 1 << 20];
    rng.fill_bytes(&mut model);
    assert_eq!(c.write(0, &model, 0).error, 0);
    // 40 writes, a flush (served off the connection's task) and 40 reads, in one send.
    let mut burst = Vec::new();
    let mut want = std::collections::HashMap::new();
    for i in 0..40u64 {
        let data = vec![i as u8 + 1; 4096];
        let off = (2 << 20) + i * 8192;
        let r = Request {
            flags: 0,
            kind: CMD_WRITE,
            cookie: i,
            offset: off,
            length: 4096,
        };
        burst.extend_from_slice(&r.encode());
        burst.extend_from_slice(&data);
        want.insert(i, None);
    }
    let r = Request {
        flags: 0,
        kind: CMD_FLUSH,
        cookie: 40,
        offset: 0,
        length: 0,
    };
    burst.extend_from_slice(&r.encode());
    want.insert(40, None);
    for i in 0..40u64 {
        let off = rng.random_range(0..(1u64 << 20) - 4096) & !511;
        let r = Request {
            flags: 0,
            kind: CMD_READ,
            cookie: 100 + i,
            offset: off,
            length: 4096,
        };
        burst.extend_from_slice(&r.encode());
        want.insert(100 + i, Some(off));
    }
    c.s.write_all(&burst).unwrap();
    while !want.is_empty() {
        let r = c.reply(0);
        assert_eq!(r.error, 0, "cookie {}", r.cookie);
        match want.remove(&r.cookie).expect("a cookie that was sent") {
            Some(off) => assert!(r.data == model[off as usize..off as usize + 4096]),
            None => assert!(r.data.is_empty()),
        }
    }
    for i in 0..40u64 {
        let got = c.read((2 << 20) + i * 8192, 4096).data;
        assert!(got.iter().all(|&b| b == i as u8 + 1), "write {i}");
    }
    // Five reads and the header of a write; its payload follows only once the
    // five replies are in (each would time out after 30 s if one were held back).
    let mut part = Vec::new();
    for i in 0..5u64 {
        let r = Request {
            flags: 0,
            kind: CMD_READ,
            cookie: 200 + i,
            offset: i * 4096,
            length: 4096,
        };
        part.extend_from_slice(&r.encode());
    }
    let w = Request {
        flags: 0,
        kind: CMD_WRITE,
        cookie: 300,
        offset: 0,
        length: 4096,
    };
    part.extend_from_slice(&w.encode());
    c.s.write_all(&part).unwrap();
    let mut cookies: Vec<u64> = (0..5).map(|_| c.reply(0).cookie).collect();
    cookies.sort();
    assert_eq!(cookies, (200..205).collect::<Vec<_>>());
    c.s.write_all(&[0xeeu8; 4096]).unwrap();
    let r = c.reply(0);
    assert_eq!((r.cookie, r.error), (300, 0));
    assert!(c.read(0, 4096).data.iter().all(|&b| b == 0xee));
}

#[test]
fn a_malformed_request_closes_only_its_own_connection() {
    let f = serve(false, 1 << 20);
    let mut good = Client::connect(&f.sock);
    assert_eq!(good.write(0, b"still here", 0).error, 0);
    let mut bad = Client::connect(&f.sock);
    bad.s.write_all(&[0xffu8; 28]).unwrap();
    assert!(bad.closed());
    // A write whose payload exceeds the maximum cannot be skipped cheaply: closed.
    let mut big = Client::connect(&f.sock);
    big.send(CMD_WRITE, 0, 1, 0, MAX_PAYLOAD + 1, &[]);
    assert!(big.closed());
    assert_eq!(good.read(0, 10).data, b"still here");
}

#[test]
fn disconnect_finishes_what_was_sent_first() {
    let f = serve(true, 16 << 20);
    let data = vec![0x5au8; 8 << 20];
    let mut c = Client::connect(&f.sock);
    c.send(CMD_WRITE, 0, 1, 4 << 20, data.len() as u32, &data);
    c.send(CMD_DISC, 0, 2, 0, 0, &[]);
    // The write is answered, then the server closes.
    assert_eq!(c.reply(0).error, 0);
    assert!(c.closed());
    let mut d = Client::connect(&f.sock);
    assert!(d.read(4 << 20, 8 << 20).data == data);
}

/// 64 connections at once, each writing random sizes at random offsets of its own
/// region with several requests in flight, flushing now and then, then reading its
/// region back: every byte must match the model. Bounded in time: it fails rather
/// than hangs.
#[test]
fn load_64_connections_every_byte_verified() {
    const CONNS: usize = 64;
    const REGION: u64 = 1 << 20;
    let f = serve(true, CONNS as u64 * REGION);
    let deadline = Instant::now() + Duration::from_secs(300);
    let sock = f.sock.clone();
    let threads: Vec<_> = (0..CONNS)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let base = i as u64 * REGION;
                let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                let mut model = vec![0u8; REGION as usize];
                let mut c = Client::connect(&sock);
                for round in 0..12 {
                    assert!(Instant::now() < deadline, "load test over time");
                    // Eight writes in flight; their ranges do not overlap, so the
                    // result does not depend on the order they are done in.
                    let mut used: Vec<(u64, u64)> = Vec::new();
                    let mut sent = 0;
                    while sent < 8 {
                        let len = rng.random_range(1..=65536u64);
                        let off = rng.random_range(0..REGION - len);
                        if used.iter().any(|&(a, b)| off < b && a < off + len) {
                            continue;
                        }
                        used.push((off, off + len));
                        let mut data = vec![0u8; len as usize];
                        rng.fill_bytes(&mut data);
                        model[off as usize..(off + len) as usize].copy_from_slice(&data);
                        let fua = if sent == 0 { CMD_FLAG_FUA } else { 0 };
                        c.send(CMD_WRITE, fua, sent, base + off, len as u32, &data);
                        sent += 1;
                    }
                    for _ in 0..8 {
                        assert_eq!(c.reply(0).error, 0);
                    }
                    if round % 4 == 3 {
                        assert_eq!(c.simple(CMD_FLUSH, 0, 0, 0).error, 0);
                    }
                }
                let back = c.read(base, REGION as u32);
                assert_eq!(back.error, 0);
                let bad = back.data.iter().zip(&model).position(|(a, b)| a != b);
                assert!(bad.is_none(), "connection {i}: byte {bad:?} differs");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a connection failed");
    }
    let server = f.server.as_ref().unwrap();
    assert_eq!(
        server
            .stats()
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        CONNS as u64
    );
}
