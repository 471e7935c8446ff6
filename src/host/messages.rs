//! The messages between the supervisor (the command that starts or asks an
//! attachment process) and the attachment process, and their framing.
//!
//! Framing: one JSON document per line (`\n`-terminated, no newline inside:
//! serde_json never writes one in compact form). Two channels carry them:
//!
//! - the attachment process's stdout, a pipe to the command that started it:
//!   exactly one [`Event`] (`Ready` or `Failed`), then the pipe is closed;
//! - the control socket `regions/<region>/attachments/<vol>.sock`: one
//!   [`Request`] in, one [`Event`] out per connection. A client that closes its
//!   writing half while waiting withdraws the request (the snapshot in progress
//!   stops and is undone; its `Failed { Interrupted }` still comes back).
//!   `Detach` is answered last, once the volume is detached.
//!
//! Errors cross as [`WireError`]: the [`ErrorKind`] by its stable code and the
//! message, so the CLI prints the same AWS error line and exit code as it would
//! have in process.

use crate::ec2::model::{AttachmentRecord, Snapshot, Tag};
use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// What a client asks an attachment process over its control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request")]
pub enum Request {
    /// CreateSnapshot of the attached volume, cut while the process holds its
    /// writes (the caller authorized and records the call).
    CreateSnapshot {
        description: String,
        #[serde(default)]
        tags: Vec<Tag>,
    },
    /// What is connected right now.
    Status,
    /// Stop serving and detach. Answered once the volume is detached (flushed,
    /// grant retired, record cleared, key zeroized), just before the process ends.
    Detach,
}

/// What an attachment process reports: on its start pipe, or in answer to a
/// [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Event {
    /// Every front end is live: the attachment as recorded (FUSE directory, NBD
    /// URI and socket, process id).
    Ready { attachment: AttachmentRecord },
    /// The attach, or the request, failed.
    Failed { error: WireError },
    /// The snapshot a [`Request::CreateSnapshot`] made.
    Snapshot { snapshot: Snapshot },
    /// The answer to [`Request::Status`].
    Status { nbd_connections: u64 },
    /// The answer to [`Request::Detach`]: the volume is detached.
    Detached,
}

/// An [`Error`] on the wire: its kind (as its AWS code) and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    #[serde(with = "kind_code")]
    pub kind: ErrorKind,
    pub message: String,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        WireError {
            kind: e.kind(),
            message: e.message().to_string(),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::new(e.kind, e.message)
    }
}

/// [`ErrorKind`] as its code (`VolumeInUse`, `DisabledException`…); a code this
/// build does not know is refused rather than guessed.
mod kind_code {
    use crate::error::ErrorKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &ErrorKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.code())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
        let code = String::deserialize(d)?;
        ErrorKind::from_code(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {code}")))
    }
}

impl Event {
    /// The event for a failed operation.
    pub fn failed(e: &Error) -> Self {
        Event::Failed { error: e.into() }
    }
}

/// Writes one message as one line.
pub fn write_frame<T: Serialize>(mut w: impl Write, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Parses one line read from the peer. An empty line means the peer closed the
/// channel without a message.
pub fn parse_frame<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T> {
    let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(bad("the channel closed without a message"));
    }
    serde_json::from_str(text.trim_end()).map_err(|e| bad(&e.to_string()))
}

/// Reads one message (blocking until a whole line or end of file).
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl BufRead) -> Result<T> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| Error::io("cannot read from the attachment process", e))?;
    parse_frame(&line)
}

fn bad(what: &str) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("bad message from the attachment process: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_crosses_the_wire() {
        for &kind in ErrorKind::ALL {
            let e = Error::new(kind, format!("message of {}", kind.code()));
            let mut buf = Vec::new();
            write_frame(&mut buf, &Event::failed(&e)).unwrap();
            assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
            let back: Event = read_frame(&mut &buf[..]).unwrap();
            let Event::Failed { error } = back else {
                panic!("{back:?}")
            };
            let back = Error::from(error);
            assert_eq!(back.kind(), kind);
            assert_eq!(back.message(), e.message());
        }
    }

    #[test]
    fn requests_round_trip() {
        for req in [
            Request::Status,
            Request::Detach,
            Request::CreateSnapshot {
                description: "line\nbreak \"quoted\"".into(),
                tags: vec![],
            },
        ] {
            let mut buf = Vec::new();
            write_frame(&mut buf, &req).unwrap();
            assert_eq!(read_frame::<Request>(&mut &buf[..]).unwrap(), req);
        }
    }

    #[test]
    fn unknown_codes_and_closed_channels_are_refused() {
        let line = br#"{"event":"Failed","error":{"kind":"NoSuchCode","message":"m"}}"#;
        assert!(parse_frame::<Event>(line).is_err());
        assert!(read_frame::<Event>(&mut &b""[..]).is_err());
        assert!(parse_frame::<Request>(br#"{"request":"Reboot"}"#).is_err());
    }
}
