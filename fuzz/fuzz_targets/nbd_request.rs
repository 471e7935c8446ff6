//! The NBD parsers a client's bytes reach (src/nbd/proto.rs): the request header
//! and its checks against any session, and the INFO/GO and meta-context option
//! payloads. None may panic; a request that passes its checks must lie inside the
//! export and respect the payload limit.
#![no_main]
use ebsim::nbd::proto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= REQUEST_LEN + 9 {
        let (head, rest) = data.split_at(REQUEST_LEN);
        if let Some(req) = Request::parse(head) {
            assert_eq!(Request::parse(&req.encode()), Some(req));
            let s = Session {
                size: u64::from_be_bytes(rest[..8].try_into().unwrap()),
                read_only: rest[8] & 1 != 0,
                structured: rest[8] & 2 != 0,
                allocation: rest[8] & 4 != 0,
            };
            match req.check(&s) {
                Ok(Command::Read { offset, len, .. }) => {
                    assert!(len <= MAX_PAYLOAD);
                    assert!(offset + u64::from(len) <= s.size);
                }
                Ok(Command::Write { offset, len, .. })
                | Ok(Command::Trim { offset, len, .. })
                | Ok(Command::WriteZeroes { offset, len, .. }) => {
                    assert!(!s.read_only);
                    assert!(offset + u64::from(len) <= s.size);
                }
                Ok(Command::BlockStatus { offset, len, .. }) => {
                    assert!(s.structured && s.allocation && len > 0);
                    assert!(offset + u64::from(len) <= s.size);
                }
                Ok(_) => {}
                Err(r) => assert!(!r.message.is_empty()),
            }
        }
    }
    if let Some(i) = parse_info(data) {
        assert!(i.name.len() <= MAX_STRING);
    }
    if let Some(m) = parse_meta(data) {
        assert!(m.queries.iter().all(|q| q.len() <= MAX_STRING));
    }
});
