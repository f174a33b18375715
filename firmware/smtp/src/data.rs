//! The DATA phase, line by line: dot-unstuffing (RFC 5321 4.5.2), the end
//! marker, bare CR/LF detection (RFC 5321 2.3.8), the size limit. Pure: the
//! session feeds it raw lines as read from the wire and gets back, in a
//! buffer it owns and empties, the message bytes each line adds, which it
//! streams to the message file; nothing here holds the message. A line
//! longer than `smtp.max_data_line_bytes` arrives in pieces (`feed_piece`,
//! then `feed` for its end) and is stored as it is, as Postfix accepts it:
//! only the message size limit applies, checked as the bytes arrive.

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
}

pub struct DataReader {
    max_bytes: u64,
    /// Bytes of the message so far (what was handed out, plus `initial`).
    size: u64,
    refusal: Option<DataRefusal>,
    bare_newline: bool,
    /// Inside a long line: the next bytes do not start a line.
    mid_line: bool,
}

impl DataReader {
    /// `initial` bytes (the trace headers) are already part of the message
    /// and count against `max_bytes`.
    pub fn new(max_bytes: u64, initial: u64) -> DataReader {
        DataReader {
            max_bytes,
            size: initial,
            refusal: None,
            bare_newline: false,
            mid_line: false,
        }
    }

    /// Feeds one raw line, including its line terminator; the message bytes
    /// it adds (unstuffed, CRLF) are appended to `out`.
    pub fn feed(&mut self, line: &[u8], out: &mut Vec<u8>) -> DataEvent {
        let crlf = line.ends_with(b"\r\n");
        let content = if crlf {
            &line[..line.len() - 2]
        } else {
            line.strip_suffix(b"\n").unwrap_or(line)
        };
        let line_start = !std::mem::take(&mut self.mid_line);
        if !crlf || content.contains(&b'\r') || content.contains(&b'\n') {
            self.bare_newline = true;
            // A bare-LF "." never ends DATA: only CRLF.CRLF does.
            return DataEvent::More;
        }
        if line_start && content == b"." {
            return DataEvent::End;
        }
        self.store(content, line_start, true, out);
        DataEvent::More
    }

    /// Feeds a piece of a line longer than the read limit, without its
    /// terminator; the line's last piece comes through `feed`.
    pub fn feed_piece(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let line_start = !self.mid_line;
        self.mid_line = true;
        if piece.contains(&b'\r') || piece.contains(&b'\n') {
            self.bare_newline = true;
            return;
        }
        self.store(piece, line_start, false, out);
    }

    fn store(&mut self, content: &[u8], line_start: bool, line_end: bool, out: &mut Vec<u8>) {
        if self.refusal.is_some() || self.bare_newline {
            return;
        }
        let unstuffed = content
            .strip_prefix(b".")
            .filter(|_| line_start && content.starts_with(b".."))
            .unwrap_or(content);
        let crlf = if line_end { 2 } else { 0 };
        let size = self.size + unstuffed.len() as u64 + crlf;
        if size > self.max_bytes {
            self.refusal = Some(DataRefusal::TooBig);
            return;
        }
        self.size = size;
        out.extend_from_slice(unstuffed);
        if line_end {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// True once a bare LF or CR has been seen: the session must refuse the
    /// message and close, since the end of DATA cannot be trusted.
    pub fn saw_bare_newline(&self) -> bool {
        self.bare_newline
    }

    /// True once the message is refused (or a bare newline seen): nothing
    /// more comes out, the session only reads to the end of DATA.
    pub fn discarding(&self) -> bool {
        self.refusal.is_some() || self.bare_newline
    }

    /// The message's size (initial bytes included), or why it was refused.
    pub fn finish(self) -> Result<u64, DataRefusal> {
        match self.refusal {
            Some(r) => Err(r),
            None => Ok(self.size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds lines; the message as streamed out, or the refusal.
    fn run(lines: &[&[u8]], max: u64) -> (Result<Vec<u8>, DataRefusal>, bool) {
        let mut r = DataReader::new(max, 0);
        let mut body = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let ev = r.feed(line, &mut body);
            assert_eq!(ev == DataEvent::End, i + 1 == lines.len(), "line {i}");
        }
        let bare = r.saw_bare_newline();
        let finished = r.finish().map(|size| {
            assert_eq!(size, body.len() as u64);
            body
        });
        (finished, bare)
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
        let mut r = DataReader::new(1000, 0);
        let mut out = Vec::new();
        assert_eq!(r.feed(b"a\n", &mut out), DataEvent::More);
        assert_eq!(
            r.feed(b".\n", &mut out),
            DataEvent::More,
            "bare LF dot must not end DATA"
        );
        assert_eq!(r.feed(b".\r\n", &mut out), DataEvent::End);
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
        // Checked as the bytes arrive: once over, nothing more comes out,
        // and the initial bytes (trace headers) count.
        let mut r = DataReader::new(20, 5);
        let mut out = Vec::new();
        r.feed(b"0123456789\r\n", &mut out);
        assert!(!r.discarding());
        r.feed(b"0123456789\r\n", &mut out);
        assert!(r.discarding());
        r.feed(b"more\r\n", &mut out);
        assert_eq!(out, b"0123456789\r\n");
        assert_eq!(r.feed(b".\r\n", &mut out), DataEvent::End);
        assert_eq!(r.finish(), Err(DataRefusal::TooBig));
    }

    #[test]
    fn long_lines_are_stored_as_they_are() {
        let mut r = DataReader::new(100_000, 0);
        let mut out = Vec::new();
        r.feed(b"Subject: long\r\n", &mut out);
        r.feed(b"\r\n", &mut out);
        // A line of 20,000 bytes in pieces; it starts with ".." (unstuffed
        // once, at the line's start only) and holds ".." later.
        let long: Vec<u8> = [
            b"..".as_slice(),
            &b"x".repeat(9_998),
            b"..",
            &b"y".repeat(9_998),
        ]
        .concat();
        for piece in long.chunks(8192) {
            r.feed_piece(piece, &mut out);
        }
        assert_eq!(r.feed(b"\r\n", &mut out), DataEvent::More);
        // "." in the middle of a long line is not the end marker.
        r.feed_piece(b"abc", &mut out);
        assert_eq!(r.feed(b".\r\n", &mut out), DataEvent::More);
        assert_eq!(r.feed(b".\r\n", &mut out), DataEvent::End);
        assert!(!r.saw_bare_newline());
        let size = r.finish().expect("stored");
        assert_eq!(size, out.len() as u64);
        let body = out;
        let want = [
            b"Subject: long\r\n\r\n".as_slice(),
            &long[1..],
            b"\r\nabc.\r\n",
        ]
        .concat();
        assert_eq!(body, want);
    }

    #[test]
    fn long_lines_count_against_the_size_and_bare_cr_in_a_piece() {
        let mut r = DataReader::new(10_000, 0);
        let mut out = Vec::new();
        for _ in 0..3 {
            r.feed_piece(&[b'z'; 4096], &mut out);
        }
        r.feed(b"\r\n", &mut out);
        assert_eq!(r.feed(b".\r\n", &mut out), DataEvent::End);
        assert_eq!(r.finish(), Err(DataRefusal::TooBig));
        let mut r = DataReader::new(10_000, 0);
        let mut out = Vec::new();
        r.feed_piece(b"a\rb", &mut out);
        r.feed(b"\r\n", &mut out);
        assert!(r.saw_bare_newline());
    }
}
