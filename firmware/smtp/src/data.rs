//! The DATA phase, line by line: dot-unstuffing (RFC 5321 4.5.2), the end
//! marker, bare CR/LF detection (RFC 5321 2.3.8), the size limit. Pure: the
//! session feeds it raw lines as read from the wire.

#[derive(Debug, PartialEq, Eq)]
pub enum DataEvent {
    /// The line was taken (or dropped because the message is already refused).
    More,
    /// The `.` line: the message is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRefusal {
    /// The message grew past the size limit.
    TooBig,
    /// A line longer than the DATA line limit.
    LineTooLong,
}

pub struct DataReader {
    max_bytes: u64,
    body: Vec<u8>,
    refusal: Option<DataRefusal>,
    bare_newline: bool,
}

impl DataReader {
    pub fn new(max_bytes: u64, initial: Vec<u8>) -> DataReader {
        DataReader {
            max_bytes,
            body: initial,
            refusal: None,
            bare_newline: false,
        }
    }

    /// Feeds one raw line, including its line terminator.
    pub fn feed(&mut self, line: &[u8]) -> DataEvent {
        let crlf = line.ends_with(b"\r\n");
        let content = if crlf {
            &line[..line.len() - 2]
        } else {
            line.strip_suffix(b"\n").unwrap_or(line)
        };
        if !crlf || content.contains(&b'\r') || content.contains(&b'\n') {
            self.bare_newline = true;
            // A bare-LF "." never ends DATA: only CRLF.CRLF does.
            return DataEvent::More;
        }
        if content == b"." {
            return DataEvent::End;
        }
        if self.refusal.is_some() {
            return DataEvent::More;
        }
        let unstuffed = content
            .strip_prefix(b".")
            .filter(|_| content.starts_with(b".."))
            .unwrap_or(content);
        if self.body.len() as u64 + unstuffed.len() as u64 + 2 > self.max_bytes {
            self.refusal = Some(DataRefusal::TooBig);
            self.body = Vec::new();
            return DataEvent::More;
        }
        self.body.extend_from_slice(unstuffed);
        self.body.extend_from_slice(b"\r\n");
        DataEvent::More
    }

    /// A line over the limit was dropped by the reader.
    pub fn line_too_long(&mut self) {
        if self.refusal.is_none() {
            self.refusal = Some(DataRefusal::LineTooLong);
            self.body = Vec::new();
        }
    }

    /// True once a bare LF or CR has been seen: the session must refuse the
    /// message and close, since the end of DATA cannot be trusted.
    pub fn saw_bare_newline(&self) -> bool {
        self.bare_newline
    }

    pub fn finish(self) -> Result<Vec<u8>, DataRefusal> {
        match self.refusal {
            Some(r) => Err(r),
            None => Ok(self.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&[u8]], max: u64) -> (Result<Vec<u8>, DataRefusal>, bool) {
        let mut r = DataReader::new(max, Vec::new());
        for (i, line) in lines.iter().enumerate() {
            let ev = r.feed(line);
            assert_eq!(ev == DataEvent::End, i + 1 == lines.len(), "line {i}");
        }
        let bare = r.saw_bare_newline();
        (r.finish(), bare)
    }

    #[test]
    fn dots_are_unstuffed_and_the_end_marker_is_not_stored() {
        let (body, bare) = run(
            &[b"Subject: x\r\n", b"\r\n", b"..leading dot\r\n", b".\r\n"],
            1000,
        );
        assert!(!bare);
        assert_eq!(body.unwrap(), b"Subject: x\r\n\r\n.leading dot\r\n");
    }

    #[test]
    fn a_bare_lf_is_flagged_and_does_not_end_data() {
        let mut r = DataReader::new(1000, Vec::new());
        assert_eq!(r.feed(b"a\n"), DataEvent::More);
        assert_eq!(
            r.feed(b".\n"),
            DataEvent::More,
            "bare LF dot must not end DATA"
        );
        assert_eq!(r.feed(b".\r\n"), DataEvent::End);
        assert!(r.saw_bare_newline());
    }

    #[test]
    fn a_bare_cr_inside_a_line_is_flagged() {
        let (_, bare) = run(&[b"a\rb\r\n", b".\r\n"], 1000);
        assert!(bare);
    }

    #[test]
    fn the_size_limit_refuses_but_data_is_read_to_the_end() {
        let (body, _) = run(&[b"0123456789\r\n", b"0123456789\r\n", b".\r\n"], 20);
        assert_eq!(body, Err(DataRefusal::TooBig));
    }
}
