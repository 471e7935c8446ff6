//! A small synchronous NBD client written from the spec for the protocol tests: it
//! can send what real clients never would (bad magic, unknown options, flags), and
//! pipeline requests to see replies come back out of order.

use ebsim::nbd::proto::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// What a client talks over: a socket, or a TLS session on one.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

pub struct Client {
    pub s: Box<dyn Conn>,
    pub size: u64,
    pub flags: u16,
    pub structured: bool,
}

/// One option reply.
#[derive(Debug)]
pub struct OptReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A complete reply to one request.
#[derive(Debug, Default)]
pub struct Reply {
    pub cookie: u64,
    /// 0 on success, else the NBD errno.
    pub error: u32,
    pub message: String,
    pub data: Vec<u8>,
    /// BLOCK_STATUS extents: (length, flags).
    pub extents: Vec<(u32, u32)>,
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

impl Client {
    /// Connects and reads the server's greeting; sends `client_flags`.
    pub fn greet(path: &Path, client_flags: u32) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        Client::greet_on(Box::new(s), client_flags)
    }

    /// [`Client::greet`] on a connected stream.
    pub fn greet_on(mut s: Box<dyn Conn>, client_flags: u32) -> Client {
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(&hello[8..16], &IHAVEOPT.to_be_bytes());
        assert_eq!(
            u16::from_be_bytes([hello[16], hello[17]]),
            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
        );
        s.write_all(&client_flags.to_be_bytes()).unwrap();
        Client {
            s,
            size: 0,
            flags: 0,
            structured: false,
        }
    }

    pub fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }

    pub fn option_reply(&mut self) -> OptReply {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..8], &OPT_REPLY_MAGIC.to_be_bytes());
        let len = be32(&h[16..]) as usize;
        let mut data = vec![0u8; len];
        self.s.read_exact(&mut data).unwrap();
        OptReply {
            option: be32(&h[8..]),
            kind: be32(&h[12..]),
            data,
        }
    }

    /// Replies to one option up to and including the final one (ACK or an error).
    pub fn option(&mut self, option: u32, data: &[u8]) -> Vec<OptReply> {
        self.send_option(option, data);
        let mut out = Vec::new();
        loop {
            let r = self.option_reply();
            assert_eq!(r.option, option);
            let last = r.kind == REP_ACK || r.kind & (1 << 31) != 0;
            out.push(r);
            if last {
                return out;
            }
        }
    }

    pub fn go_payload(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            b.extend_from_slice(&i.to_be_bytes());
        }
        b
    }

    pub fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            b.extend_from_slice(&(q.len() as u32).to_be_bytes());
            b.extend_from_slice(q.as_bytes());
        }
        b
    }

    /// GO; panics unless it succeeds. Records size and flags.
    pub fn go(&mut self, name: &str) {
        let replies = self.option(OPT_GO, &Self::go_payload(name, &[INFO_BLOCK_SIZE]));
        let last = replies.last().unwrap();
        assert_eq!(last.kind, REP_ACK, "GO failed: {replies:?}");
        for r in &replies {
            if r.kind == REP_INFO && r.data[..2] == INFO_EXPORT.to_be_bytes() {
                self.size = u64::from_be_bytes(r.data[2..10].try_into().unwrap());
                self.flags = u16::from_be_bytes([r.data[10], r.data[11]]);
            }
        }
    }

    /// STARTTLS, acknowledged; then `tls` wraps the connection (the TLS handshake),
    /// or says why it could not.
    pub fn starttls(
        mut self,
        tls: impl FnOnce(Box<dyn Conn>) -> Result<Box<dyn Conn>, String>,
    ) -> Result<Client, String> {
        let r = self.option(OPT_STARTTLS, &[]);
        assert_eq!(r[0].kind, REP_ACK, "STARTTLS refused: {r:?}");
        self.s = tls(self.s)?;
        Ok(self)
    }

    /// A client as libnbd would be: structured replies, base:allocation, GO.
    pub fn connect(path: &Path) -> Client {
        let c = Client::greet(path, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        c.negotiate()
    }

    /// The negotiation of [`Client::connect`] on a greeted client.
    pub fn negotiate(self) -> Client {
        let mut c = self;
        assert_eq!(c.option(OPT_STRUCTURED_REPLY, &[])[0].kind, REP_ACK);
        c.structured = true;
        let meta = c.option(
            OPT_SET_META_CONTEXT,
            &Self::meta_payload("", &[META_BASE_ALLOCATION]),
        );
        assert_eq!(meta[0].kind, REP_META_CONTEXT);
        c.go("");
        c
    }

    pub fn send(
        &mut self,
        kind: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let r = Request {
            flags,
            kind,
            cookie,
            offset,
            length: len,
        };
        let mut b = r.encode().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
    }

    /// Reads one complete reply. `read_len` tells how much data a simple reply to a
    /// successful read carries (the simple protocol does not say).
    pub fn reply(&mut self, read_len: usize) -> Reply {
        let mut m = [0u8; 4];
        self.s.read_exact(&mut m).unwrap();
        let magic = be32(&m);
        if magic == SIMPLE_REPLY_MAGIC {
            let mut h = [0u8; 12];
            self.s.read_exact(&mut h).unwrap();
            let error = be32(&h);
            let cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
            let mut data = Vec::new();
            if error == 0 && read_len > 0 {
                data = vec![0u8; read_len];
                self.s.read_exact(&mut data).unwrap();
            }
            return Reply {
                cookie,
                error,
                data,
                ..Default::default()
            };
        }
        assert_eq!(magic, STRUCTURED_REPLY_MAGIC, "bad reply magic {magic:#x}");
        let mut out = Reply::default();
        let mut first = true;
        loop {
            if !first {
                self.s.read_exact(&mut m).unwrap();
                assert_eq!(be32(&m), STRUCTURED_REPLY_MAGIC);
            }
            first = false;
            let mut h = [0u8; 16];
            self.s.read_exact(&mut h).unwrap();
            let flags = u16::from_be_bytes([h[0], h[1]]);
            let kind = u16::from_be_bytes([h[2], h[3]]);
            out.cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
            let len = be32(&h[12..]) as usize;
            let mut body = vec![0u8; len];
            self.s.read_exact(&mut body).unwrap();
            match kind {
                CHUNK_OFFSET_DATA => out.data.extend_from_slice(&body[8..]),
                CHUNK_BLOCK_STATUS => {
                    assert_eq!(be32(&body), META_ID_BASE_ALLOCATION);
                    out.extents = body[4..]
                        .chunks(8)
                        .map(|c| (be32(c), be32(&c[4..])))
                        .collect();
                }
                CHUNK_ERROR | CHUNK_ERROR_OFFSET => {
                    out.error = be32(&body);
                    let n = u16::from_be_bytes([body[4], body[5]]) as usize;
                    out.message = String::from_utf8_lossy(&body[6..6 + n]).into_owned();
                }
                CHUNK_NONE => {}
                other => panic!("unexpected chunk type {other}"),
            }
            if flags & CHUNK_FLAG_DONE != 0 {
                return out;
            }
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8], flags: u16) -> Reply {
        self.send(CMD_WRITE, flags, 1, offset, data.len() as u32, data);
        self.reply(0)
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Reply {
        self.send(CMD_READ, 0, 2, offset, len, &[]);
        self.reply(len as usize)
    }

    pub fn simple(&mut self, kind: u16, flags: u16, offset: u64, len: u32) -> Reply {
        self.send(kind, flags, 3, offset, len, &[]);
        self.reply(0)
    }

    /// True if the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}
