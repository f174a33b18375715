//! The wire: ldap3_proto's `LdapCodec`, behind a framing step of our own.
//!
//! The framing step reads the BER header of the next LDAPMessage (a SEQUENCE
//! with a definite length), refuses a message longer than the configured
//! limit before buffering it, and hands `LdapCodec` exactly one whole
//! message. When `LdapCodec` cannot decode that message (a filter choice it
//! does not know, a malformed control...), the frame is already consumed, so
//! the connection can answer that one request with protocolError and go on,
//! instead of ending as a bare decoder error would.

use bytes::{Buf, BytesMut};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::LdapMsg;
use std::io;
use tokio_util::codec::{Decoder, Encoder};

/// Deepest BER nesting accepted. Above the filter depth limit, so that a
/// too-deep filter is answered with adminLimitExceeded by the filter check
/// rather than refused as undecodable.
const BER_DEPTH_MAX: usize = 96;

/// One message from the client.
#[derive(Debug)]
pub enum Frame {
    Msg(Box<LdapMsg>),
    /// A whole message that does not decode: its id and the tag byte of
    /// its operation, when they could be read.
    Malformed {
        msgid: i32,
        op_tag: Option<u8>,
    },
}

#[derive(Debug)]
pub enum CodecError {
    /// The message is longer than the limit (bytes announced).
    TooLarge(usize),
    /// Not an LDAP message at all (bad header).
    NotLdap(&'static str),
    Io(io::Error),
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> CodecError {
        CodecError::Io(e)
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::TooLarge(n) => write!(f, "message of {n} bytes is over the limit"),
            CodecError::NotLdap(why) => write!(f, "not an LDAP message: {why}"),
            CodecError::Io(e) => write!(f, "{e}"),
        }
    }
}

pub struct MxCodec {
    inner: LdapCodec,
    max_message_bytes: usize,
}

impl MxCodec {
    pub fn new(max_message_bytes: usize) -> MxCodec {
        MxCodec {
            inner: LdapCodec::new(Some(max_message_bytes), Some(BER_DEPTH_MAX)),
            max_message_bytes,
        }
    }
}

/// Reads a BER definite length at `buf[at..]`: (length, bytes of the
/// length field), `Ok(None)` when more bytes are needed.
fn ber_length(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, CodecError> {
    let Some(&first) = buf.get(at) else {
        return Ok(None);
    };
    if first < 0x80 {
        return Ok(Some((usize::from(first), 1)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 {
        return Err(CodecError::NotLdap("indefinite length"));
    }
    if n > 4 {
        return Err(CodecError::NotLdap("length field too long"));
    }
    if buf.len() < at + 1 + n {
        return Ok(None);
    }
    let mut len = 0usize;
    for &b in &buf[at + 1..at + 1 + n] {
        len = (len << 8) | usize::from(b);
    }
    Ok(Some((len, 1 + n)))
}

/// The size of the message at the start of `buf`, once its header is in.
pub fn frame_size(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    if tag != 0x30 {
        return Err(CodecError::NotLdap("does not start with a SEQUENCE"));
    }
    let Some((len, len_bytes)) = ber_length(buf, 1)? else {
        return Ok(None);
    };
    let total = 1 + len_bytes + len;
    if total > max {
        return Err(CodecError::TooLarge(total));
    }
    Ok(Some(total))
}

/// The message id and operation tag of a whole message, read directly.
fn peek_id_and_op(frame: &[u8]) -> (i32, Option<u8>) {
    let header = match ber_length(frame, 1) {
        Ok(Some((_, n))) => 1 + n,
        _ => return (0, None),
    };
    if frame.get(header) != Some(&0x02) {
        return (0, None);
    }
    let Ok(Some((len, n))) = ber_length(frame, header + 1) else {
        return (0, None);
    };
    let start = header + 1 + n;
    let Some(bytes) = frame.get(start..start + len) else {
        return (0, None);
    };
    if bytes.is_empty() || bytes.len() > 4 {
        return (0, None);
    }
    let mut id: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in bytes {
        id = (id << 8) | i64::from(b);
    }
    let id = i32::try_from(id).unwrap_or(0);
    (id, frame.get(start + len).copied())
}

impl Decoder for MxCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(size) = frame_size(buf, self.max_message_bytes)? else {
            return Ok(None);
        };
        if buf.len() < size {
            buf.reserve(size - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(size);
        let (msgid, op_tag) = peek_id_and_op(&frame);
        match self.inner.decode(&mut frame) {
            Ok(Some(msg)) => Ok(Some(Frame::Msg(Box::new(msg)))),
            Ok(None) | Err(_) => {
                frame.advance(frame.len());
                Ok(Some(Frame::Malformed { msgid, op_tag }))
            }
        }
    }
}

impl Encoder<LdapMsg> for MxCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: LdapMsg, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.inner.encode(msg, buf).map_err(CodecError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3_proto::proto::{LdapBindCred, LdapBindRequest, LdapOp};

    fn encoded(msg: LdapMsg) -> BytesMut {
        let mut buf = BytesMut::new();
        MxCodec::new(1 << 20).encode(msg, &mut buf).expect("encode");
        buf
    }

    fn bind(msgid: i32) -> LdapMsg {
        LdapMsg {
            msgid,
            op: LdapOp::BindRequest(LdapBindRequest {
                version: 3,
                dn: "cn=x".into(),
                cred: LdapBindCred::Simple("pw".into()),
            }),
            ctrl: vec![],
        }
    }

    #[test]
    fn messages_come_whole_from_pieces() {
        let mut all = encoded(bind(7));
        all.extend_from_slice(&encoded(bind(300)));
        let mut codec = MxCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in all.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(Frame::Msg(m)) = codec.decode(&mut buf).expect("decode") {
                got.push(m.msgid);
            }
        }
        assert_eq!(got, [7, 300]);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_header() {
        let mut codec = MxCodec::new(100);
        let mut buf = BytesMut::from(&[0x30u8, 0x82, 0x10, 0x00][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge(4100))
        ));
        let mut buf = BytesMut::from(&[0x04u8, 0x00][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::NotLdap(_))
        ));
    }

    #[test]
    fn an_undecodable_message_keeps_its_id_and_the_stream_goes_on() {
        // msgid 5, application tag 0x63 (search) with garbage inside.
        let mut buf =
            BytesMut::from(&[0x30u8, 0x08, 0x02, 0x01, 0x05, 0x63, 0x03, 0x01, 0x01, 0xff][..]);
        buf.extend_from_slice(&encoded(bind(6)));
        let mut codec = MxCodec::new(1 << 20);
        match codec.decode(&mut buf).expect("decode") {
            Some(Frame::Malformed { msgid, op_tag }) => {
                assert_eq!((msgid, op_tag), (5, Some(0x63)));
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        match codec.decode(&mut buf).expect("decode") {
            Some(Frame::Msg(m)) => assert_eq!(m.msgid, 6),
            other => panic!("expected the bind, got {other:?}"),
        }
    }
}
