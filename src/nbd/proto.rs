//! The NBD wire format (NetworkBlockDevice `doc/proto.md`; shared/reference/blockdev.md
//! §1): constants, bounds-checked parsers for what a client sends, and encoders for
//! what the server sends. No I/O here, so every parser can be fuzzed on its own
//! (`fuzz/fuzz_targets/nbd_request.rs`).
//!
//! Written by hand: the Rust NBD crates are synchronous, GPL-licensed, or lack
//! structured replies (blockdev.md §2.1), and the protocol is small.

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

// Info types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
pub const TF_READ_ONLY: u16 = 1 << 1;
pub const TF_SEND_FLUSH: u16 = 1 << 2;
pub const TF_SEND_FUA: u16 = 1 << 3;
pub const TF_SEND_TRIM: u16 = 1 << 5;
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TF_SEND_DF: u16 = 1 << 7;
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TF_SEND_CACHE: u16 = 1 << 10;
pub const TF_SEND_FAST_ZERO: u16 = 1 << 11;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Structured reply chunk types and flags.
pub const CHUNK_FLAG_DONE: u16 = 1 << 0;
pub const CHUNK_NONE: u16 = 0;
pub const CHUNK_OFFSET_DATA: u16 = 1;
pub const CHUNK_BLOCK_STATUS: u16 = 5;
pub const CHUNK_ERROR: u16 = (1 << 15) + 1;
pub const CHUNK_ERROR_OFFSET: u16 = (1 << 15) + 2;

// base:allocation states.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

pub const META_BASE_ALLOCATION: &str = "base:allocation";
/// The context id ebsim gives `base:allocation` (ids are per negotiation).
pub const META_ID_BASE_ALLOCATION: u32 = 1;

/// The largest READ or WRITE payload (the spec's default, blockdev.md §1.7).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// The largest option payload the server reads; beyond it the client is dropped.
pub const MAX_OPTION: u32 = 64 << 10;
/// Names and queries longer than this are refused (the spec's MUST limit).
pub const MAX_STRING: usize = 4096;
/// At most this many extents in one BLOCK_STATUS chunk (the spec's limit).
pub const MAX_EXTENTS: usize = 1 << 20;

/// NBD error values (sent in replies; not the host's errno numbering by accident,
/// the spec fixes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Errno {
    Perm = 1,
    Io = 5,
    NoMem = 12,
    Inval = 22,
    NoSpc = 28,
    Overflow = 75,
    NotSup = 95,
    Shutdown = 108,
}

/// A request header as it came off the wire (28 bytes, compact form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

pub const REQUEST_LEN: usize = 28;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Request {
    /// Parses a request header; None on a wrong magic or short input (the caller
    /// drops the connection: framing is lost).
    pub fn parse(b: &[u8]) -> Option<Request> {
        if be32(b, 0)? != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: be16(b, 4)?,
            kind: be16(b, 6)?,
            cookie: be64(b, 8)?,
            offset: be64(b, 16)?,
            length: be32(b, 24)?,
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Bytes of payload that follow this header on the wire.
    pub fn payload_len(&self) -> u32 {
        if self.kind == CMD_WRITE {
            self.length
        } else {
            0
        }
    }
}

/// What the connection negotiated, as far as request checks need it.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub size: u64,
    pub read_only: bool,
    pub structured: bool,
    /// `base:allocation` selected by SET_META_CONTEXT.
    pub allocation: bool,
}

/// A request that passed every check: a command the server carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        len: u32,
        df: bool,
    },
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Disconnect,
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Cache {
        offset: u64,
        len: u32,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        fua: bool,
        no_hole: bool,
        fast: bool,
    },
    BlockStatus {
        offset: u64,
        len: u32,
        req_one: bool,
    },
}

/// Why a request is refused: the NBD error to reply and a message for the log and
/// the structured error chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub errno: Errno,
    pub message: String,
}

fn refuse(errno: Errno, message: String) -> Refusal {
    Refusal { errno, message }
}

/// Which command flags each command accepts.
fn allowed_flags(kind: u16, s: &Session) -> u16 {
    match kind {
        CMD_READ if s.structured => CMD_FLAG_DF,
        CMD_WRITE | CMD_TRIM => CMD_FLAG_FUA,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
        CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
        _ => 0,
    }
}

impl Request {
    /// Checks a request against the session: a known command, flags it accepts, a
    /// range inside the export, a payload within the limit. The errors are the
    /// spec's: EINVAL for bad commands, flags and reads past the end, ENOSPC for
    /// writes past the end, EPERM for writes to a read-only export, EOVERFLOW for a
    /// read larger than the maximum payload.
    pub fn check(&self, s: &Session) -> Result<Command, Refusal> {
        let name = command_name(self.kind);
        let unknown = self.flags & !allowed_flags(self.kind, s);
        if self.kind > CMD_BLOCK_STATUS {
            return Err(refuse(
                Errno::Inval,
                format!("unknown command {}", self.kind),
            ));
        }
        if unknown != 0 {
            return Err(refuse(
                Errno::Inval,
                format!("{name}: flags {unknown:#x} are not valid for this command"),
            ));
        }
        let (offset, len) = (self.offset, self.length);
        let end = offset.checked_add(u64::from(len));
        let inside = end.is_some_and(|e| e <= s.size);
        let past_end = |errno| {
            refuse(
                errno,
                format!(
                    "{name}: {len} bytes at offset {offset} end past the export's {} bytes",
                    s.size
                ),
            )
        };
        let writes = matches!(self.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
        if writes && s.read_only {
            return Err(refuse(
                Errno::Perm,
                format!("{name}: the export is read-only"),
            ));
        }
        let fua = self.flags & CMD_FLAG_FUA != 0;
        match self.kind {
            CMD_READ => {
                if len > MAX_PAYLOAD {
                    return Err(refuse(
                        Errno::Overflow,
                        format!("read: {len} bytes exceed the maximum payload {MAX_PAYLOAD}"),
                    ));
                }
                if !inside {
                    return Err(past_end(Errno::Inval));
                }
                Ok(Command::Read {
                    offset,
                    len,
                    df: self.flags & CMD_FLAG_DF != 0,
                })
            }
            CMD_WRITE => {
                // A payload over the limit never gets here: the caller drops the
                // connection before reading it (see `payload_ok`).
                if !inside {
                    return Err(past_end(Errno::NoSpc));
                }
                Ok(Command::Write { offset, len, fua })
            }
            CMD_DISC => Ok(Command::Disconnect),
            CMD_FLUSH => {
                if offset != 0 || len != 0 {
                    return Err(refuse(
                        Errno::Inval,
                        format!("flush: offset {offset} and length {len} must be zero"),
                    ));
                }
                Ok(Command::Flush)
            }
            CMD_TRIM => {
                if !inside {
                    return Err(past_end(Errno::Inval));
                }
                Ok(Command::Trim { offset, len, fua })
            }
            CMD_CACHE => {
                if !inside {
                    return Err(past_end(Errno::Inval));
                }
                Ok(Command::Cache { offset, len })
            }
            CMD_WRITE_ZEROES => {
                if !inside {
                    return Err(past_end(Errno::NoSpc));
                }
                Ok(Command::WriteZeroes {
                    offset,
                    len,
                    fua,
                    no_hole: self.flags & CMD_FLAG_NO_HOLE != 0,
                    fast: self.flags & CMD_FLAG_FAST_ZERO != 0,
                })
            }
            _ => {
                if !s.structured || !s.allocation {
                    return Err(refuse(
                        Errno::Inval,
                        "block status: negotiate structured replies and base:allocation first"
                            .into(),
                    ));
                }
                if len == 0 {
                    return Err(refuse(Errno::Inval, "block status: length 0".into()));
                }
                if !inside {
                    return Err(past_end(Errno::Inval));
                }
                Ok(Command::BlockStatus {
                    offset,
                    len,
                    req_one: self.flags & CMD_FLAG_REQ_ONE != 0,
                })
            }
        }
    }

    /// False if the request carries a payload the server will not read (a write
    /// larger than the maximum): framing cannot be kept cheaply, so the connection
    /// is dropped.
    pub fn payload_ok(&self) -> bool {
        self.payload_len() <= MAX_PAYLOAD
    }
}

pub fn command_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_DISC => "disconnect",
        CMD_FLUSH => "flush",
        CMD_TRIM => "trim",
        CMD_CACHE => "cache",
        CMD_WRITE_ZEROES => "write zeroes",
        CMD_BLOCK_STATUS => "block status",
        _ => "unknown command",
    }
}

// ---- option payloads --------------------------------------------------------

/// A bounds-checked reader over an option's payload.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn u16(&mut self) -> Option<u16> {
        let v = be16(self.b, self.at)?;
        self.at += 2;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let v = be32(self.b, self.at)?;
        self.at += 4;
        Some(v)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(v)
    }
    /// A u32-length-prefixed UTF-8 string of at most MAX_STRING bytes.
    fn string(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return None;
        }
        std::str::from_utf8(self.bytes(n)?).ok()
    }
    fn done(&self) -> bool {
        self.at == self.b.len()
    }
}

/// NBD_OPT_INFO / NBD_OPT_GO: the export name and the info types asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

/// Parses an INFO/GO payload; None if it is malformed (the reply is ERR_INVALID).
pub fn parse_info(b: &[u8]) -> Option<InfoRequest> {
    let mut c = Cursor { b, at: 0 };
    let name = c.string()?.to_string();
    let n = c.u16()?;
    let mut infos = Vec::with_capacity(usize::from(n).min(16));
    for _ in 0..n {
        infos.push(c.u16()?);
    }
    c.done().then_some(InfoRequest { name, infos })
}

/// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub name: String,
    pub queries: Vec<String>,
}

/// Parses a meta-context payload; None if it is malformed.
pub fn parse_meta(b: &[u8]) -> Option<MetaRequest> {
    let mut c = Cursor { b, at: 0 };
    let name = c.string()?.to_string();
    let n = c.u32()?;
    let mut queries = Vec::new();
    for _ in 0..n {
        queries.push(c.string()?.to_string());
    }
    c.done().then_some(MetaRequest { name, queries })
}

/// Which of ebsim's contexts a LIST query names (`base:` lists all of base).
pub fn list_matches(query: &str) -> bool {
    query == "base:" || query == META_BASE_ALLOCATION
}

// ---- what the server sends ----------------------------------------------------

/// An option reply: header and payload.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    // Option replies carry names and descriptions the server bounds far below 4 GiB.
    let len = u32::try_from(data.len()).expect("option reply data fits u32");
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(data);
    b
}

pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = INFO_EXPORT.to_be_bytes().to_vec();
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut b = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    b.extend_from_slice(&min.to_be_bytes());
    b.extend_from_slice(&preferred.to_be_bytes());
    b.extend_from_slice(&max.to_be_bytes());
    b
}

pub fn info_text(kind: u16, text: &str) -> Vec<u8> {
    let mut b = kind.to_be_bytes().to_vec();
    b.extend_from_slice(text.as_bytes());
    b
}

pub const SIMPLE_REPLY_LEN: usize = 16;
pub const CHUNK_HEADER_LEN: usize = 20;

/// A simple reply header.
pub fn simple_reply(cookie: u64, error: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk header.
pub fn chunk_header(flags: u16, kind: u16, cookie: u64, len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// A complete structured error chunk (the last of its reply).
pub fn error_chunk(cookie: u64, errno: Errno, message: &str) -> Vec<u8> {
    // The message is for humans; the spec caps a chunk's text at what fits a u16.
    let msg = &message.as_bytes()[..message.len().min(4096)];
    let msg_len = u16::try_from(msg.len()).expect("cut to 4096 bytes above");
    let mut b = chunk_header(CHUNK_FLAG_DONE, CHUNK_ERROR, cookie, 6 + u32::from(msg_len)).to_vec();
    b.extend_from_slice(&(errno as u32).to_be_bytes());
    b.extend_from_slice(&msg_len.to_be_bytes());
    b.extend_from_slice(msg);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            size: 1 << 20,
            read_only: false,
            structured: true,
            allocation: true,
        }
    }

    fn req(kind: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            kind,
            cookie: 7,
            offset,
            length,
        }
    }

    #[test]
    fn request_round_trips_and_bad_magic_is_refused() {
        let r = req(CMD_WRITE, CMD_FLAG_FUA, 4096, 512);
        assert_eq!(Request::parse(&r.encode()), Some(r));
        let mut b = r.encode();
        b[0] ^= 1;
        assert_eq!(Request::parse(&b), None);
        assert_eq!(Request::parse(&r.encode()[..27]), None);
    }

    #[test]
    fn checks_follow_the_spec() {
        let s = session();
        let e = |r: Request| r.check(&s).unwrap_err().errno;
        assert_eq!(e(req(CMD_READ, 0, (1 << 20) - 1, 2)), Errno::Inval);
        assert_eq!(e(req(CMD_WRITE, 0, (1 << 20) - 1, 2)), Errno::NoSpc);
        assert_eq!(e(req(CMD_WRITE_ZEROES, 0, 1 << 20, 1)), Errno::NoSpc);
        assert_eq!(e(req(CMD_TRIM, 0, u64::MAX, 1)), Errno::Inval);
        assert_eq!(e(req(CMD_READ, CMD_FLAG_FUA, 0, 1)), Errno::Inval);
        assert_eq!(e(req(CMD_FLUSH, 0, 1, 0)), Errno::Inval);
        assert_eq!(e(req(9, 0, 0, 0)), Errno::Inval);
        assert_eq!(e(req(CMD_READ, 0, 0, MAX_PAYLOAD + 1)), Errno::Overflow);
        assert_eq!(e(req(CMD_BLOCK_STATUS, 0, 0, 0)), Errno::Inval);
        let plain = Session {
            structured: false,
            ..s
        };
        assert_eq!(
            req(CMD_READ, CMD_FLAG_DF, 0, 1)
                .check(&plain)
                .unwrap_err()
                .errno,
            Errno::Inval
        );
        assert_eq!(
            req(CMD_BLOCK_STATUS, 0, 0, 1)
                .check(&plain)
                .unwrap_err()
                .errno,
            Errno::Inval
        );
        let ro = Session {
            read_only: true,
            ..s
        };
        assert_eq!(
            req(CMD_WRITE, 0, 0, 1).check(&ro).unwrap_err().errno,
            Errno::Perm
        );
        assert_eq!(
            req(
                CMD_WRITE_ZEROES,
                CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
                0,
                4096
            )
            .check(&s),
            Ok(Command::WriteZeroes {
                offset: 0,
                len: 4096,
                fua: false,
                no_hole: true,
                fast: true
            })
        );
        assert_eq!(
            req(CMD_READ, 0, (1 << 20) - 1, 1).check(&s),
            Ok(Command::Read {
                offset: (1 << 20) - 1,
                len: 1,
                df: false
            })
        );
        assert!(!req(CMD_WRITE, 0, 0, MAX_PAYLOAD + 1).payload_ok());
        assert!(req(CMD_TRIM, 0, 0, u32::MAX).payload_ok());
    }

    #[test]
    fn option_payloads_parse_within_bounds() {
        let mut go = Vec::new();
        go.extend_from_slice(&3u32.to_be_bytes());
        go.extend_from_slice(b"vol");
        go.extend_from_slice(&2u16.to_be_bytes());
        go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        go.extend_from_slice(&INFO_NAME.to_be_bytes());
        assert_eq!(
            parse_info(&go),
            Some(InfoRequest {
                name: "vol".into(),
                infos: vec![INFO_BLOCK_SIZE, INFO_NAME]
            })
        );
        for cut in 0..go.len() {
            assert_eq!(parse_info(&go[..cut]), None, "cut at {cut}");
        }
        let mut trailing = go.clone();
        trailing.push(0);
        assert_eq!(parse_info(&trailing), None);
        // A name length that runs past the payload.
        assert_eq!(parse_info(&u32::MAX.to_be_bytes()), None);

        let mut meta = Vec::new();
        meta.extend_from_slice(&0u32.to_be_bytes());
        meta.extend_from_slice(&1u32.to_be_bytes());
        meta.extend_from_slice(&15u32.to_be_bytes());
        meta.extend_from_slice(b"base:allocation");
        assert_eq!(
            parse_meta(&meta),
            Some(MetaRequest {
                name: String::new(),
                queries: vec!["base:allocation".into()]
            })
        );
        // A query count far beyond the data must not allocate or loop long.
        let mut many = 0u32.to_be_bytes().to_vec();
        many.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_meta(&many), None);
    }
}
