//! A buffered, line-oriented connection with explicit limits.
//!
//! Reads never grow a buffer past the caller's limit: an over-long line is
//! consumed and discarded up to its end and reported as `LineError::TooLong`,
//! so the protocol can answer with its own error and go on.

use crate::BoxStream;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const READ_CHUNK_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line was longer than the limit; it has been consumed and dropped.
    #[error("line too long")]
    TooLong,
    /// The peer closed the connection (possibly mid-line).
    #[error("connection closed")]
    Eof,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// The deadlines a protocol reads a command under.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Longest wait for the first byte of the next command.
    pub idle: Duration,
    /// Longest a whole command (line, and literals for IMAP) may take to
    /// arrive, from its first byte.
    pub command: Duration,
    /// End of the session's current phase (SMTP before AUTH, POP3
    /// AUTHORIZATION, IMAP not authenticated, ...), if it has one.
    pub phase_end: Option<Instant>,
}

impl Deadlines {
    /// `at`, or the phase's end if that is sooner.
    pub fn clamp(&self, at: Instant) -> Instant {
        match self.phase_end {
            Some(end) if end < at => end,
            _ => at,
        }
    }
}

pub struct Conn {
    stream: BoxStream,
    read_buf: Vec<u8>,
    /// Start of unconsumed bytes in `read_buf`.
    read_pos: usize,
    write_buf: Vec<u8>,
    /// Dropping the rest of an over-long line; kept here, not in a local,
    /// so `read_line` stays cancel-safe.
    discarding: bool,
}

impl Conn {
    pub fn new(stream: BoxStream) -> Conn {
        Conn {
            stream,
            read_buf: Vec::with_capacity(READ_CHUNK_BYTES),
            read_pos: 0,
            write_buf: Vec::with_capacity(1024),
            discarding: false,
        }
    }

    /// Reads one line, returning it with its terminating `\n` (and `\r` if
    /// any). `max_bytes` counts the terminator.
    pub async fn read_line(&mut self, max_bytes: usize) -> Result<Vec<u8>, LineError> {
        loop {
            let pending = &self.read_buf[self.read_pos..];
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let end = self.read_pos + i + 1;
                let line = self.read_buf[self.read_pos..end].to_vec();
                self.read_pos = end;
                if std::mem::take(&mut self.discarding) || line.len() > max_bytes {
                    return Err(LineError::TooLong);
                }
                return Ok(line);
            }
            if pending.len() >= max_bytes {
                // Too long already: drop what we have and keep reading to the end of the line.
                self.discarding = true;
                self.read_pos = self.read_buf.len();
            }
            self.fill().await?;
        }
    }

    /// Waits for the first byte of the next command (at most `d.idle`, and
    /// never past the phase's end), then says by when the whole command must
    /// be in: `d.command` from now, or the phase's end if that is sooner.
    /// `Ok(None)` when a deadline passed first. Cancel-safe.
    ///
    /// So a client trickling one byte every 20 s is cut `d.command` after
    /// its first byte, and one sending short whole lines slowly is cut at the
    /// end of the phase: no deadline restarts with each byte or line.
    pub async fn await_command(&mut self, d: &Deadlines) -> Result<Option<Instant>, LineError> {
        let now = Instant::now();
        let wait_end = d.clamp(now + d.idle);
        if !self.has_buffered_input() {
            match tokio::time::timeout_at(wait_end, self.fill()).await {
                Err(_) => return Ok(None),
                Ok(r) => r?,
            }
        }
        let now = Instant::now();
        if d.phase_end.is_some_and(|end| end <= now) {
            return Ok(None);
        }
        Ok(Some(d.clamp(now + d.command)))
    }

    /// One command line under `d` (see `await_command`): `Ok(None)` when a
    /// deadline passed before the whole line was in.
    pub async fn read_command_line(
        &mut self,
        max_bytes: usize,
        d: &Deadlines,
    ) -> Result<Option<Vec<u8>>, LineError> {
        let Some(end) = self.await_command(d).await? else {
            return Ok(None);
        };
        match tokio::time::timeout_at(end, self.read_line(max_bytes)).await {
            Err(_) => Ok(None),
            Ok(line) => line.map(Some),
        }
    }

    /// Reads one line in pieces of at most `max_bytes`: `(piece, true)` is
    /// the (rest of the) line with its terminating `\n`, `(piece, false)` a
    /// piece of a longer line without it. A piece never ends with a `\r`
    /// whose `\n` would come in the next one (unless `max_bytes` is 1).
    /// Cancel-safe like `read_line`; memory stays within `max_bytes`.
    pub async fn read_line_piece(
        &mut self,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, bool), LineError> {
        let max_bytes = max_bytes.max(1);
        loop {
            let pending = &self.read_buf[self.read_pos..];
            let window = &pending[..pending.len().min(max_bytes)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                let end = self.read_pos + i + 1;
                let line = self.read_buf[self.read_pos..end].to_vec();
                self.read_pos = end;
                return Ok((line, true));
            }
            if pending.len() >= max_bytes {
                let mut take = max_bytes;
                // Keep a CR with the LF that may follow it.
                if window.last() == Some(&b'\r') && take > 1 {
                    take -= 1;
                }
                let end = self.read_pos + take;
                let piece = self.read_buf[self.read_pos..end].to_vec();
                self.read_pos = end;
                return Ok((piece, false));
            }
            self.fill().await?;
        }
    }

    /// Reads exactly `n` bytes (an IMAP literal, for instance).
    pub async fn read_exact_bytes(&mut self, n: usize) -> Result<Vec<u8>, LineError> {
        let mut out = Vec::with_capacity(n.min(1 << 20));
        while out.len() < n {
            if self.read_pos == self.read_buf.len() {
                self.fill().await?;
            }
            let take = (n - out.len()).min(self.read_buf.len() - self.read_pos);
            out.extend_from_slice(&self.read_buf[self.read_pos..self.read_pos + take]);
            self.read_pos += take;
        }
        Ok(out)
    }

    /// Reads more input. Cancel-safe (tokio's `read_buf` appends only what
    /// was read), so a session may race a read against other events, as
    /// IMAP IDLE does, without losing or corrupting input.
    async fn fill(&mut self) -> Result<(), LineError> {
        if self.read_pos == self.read_buf.len() {
            self.read_buf.clear();
            self.read_pos = 0;
        } else if self.read_pos > READ_CHUNK_BYTES {
            self.read_buf.drain(..self.read_pos);
            self.read_pos = 0;
        }
        self.read_buf.reserve(READ_CHUNK_BYTES);
        let n = self.stream.read_buf(&mut self.read_buf).await?;
        if n == 0 {
            return Err(LineError::Eof);
        }
        Ok(())
    }

    /// True when a whole line is already buffered: the client pipelined, so
    /// replies can wait and go out together (RFC 2920 section 3.2).
    pub fn has_buffered_line(&self) -> bool {
        self.read_buf[self.read_pos..].contains(&b'\n')
    }

    /// True when any unread byte is buffered.
    pub fn has_buffered_input(&self) -> bool {
        self.read_pos < self.read_buf.len()
    }

    /// Bytes queued for the peer and not yet flushed: a long response is
    /// flushed in pieces so one FETCH 1:* does not buffer a whole mailbox.
    pub fn buffered_output(&self) -> usize {
        self.write_buf.len()
    }

    /// Queues bytes for the peer; nothing is sent before `flush`.
    pub fn write(&mut self, bytes: &[u8]) {
        self.write_buf.extend_from_slice(bytes);
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf).await?;
            self.write_buf.clear();
        }
        self.stream.flush().await
    }

    /// Hands the stream over for a TLS upgrade. Buffered input is dropped on
    /// purpose: plaintext pipelined after STARTTLS must never be read as if it
    /// came inside TLS (the CVE-2011-0411 command injection).
    pub fn into_stream(self) -> BoxStream {
        self.stream
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn conn_with(input: &'static [u8]) -> Conn {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            // Written in small pieces so lines straddle reads.
            for chunk in input.chunks(7) {
                if client.write_all(chunk).await.is_err() {
                    return;
                }
            }
        });
        Conn::new(Box::new(server))
    }

    #[tokio::test]
    async fn lines_come_whole_across_reads() {
        let mut c = conn_with(b"EHLO a.example\r\nMAIL FROM:<x@y>\r\n").await;
        assert_eq!(c.read_line(100).await.unwrap(), b"EHLO a.example\r\n");
        assert_eq!(c.read_line(100).await.unwrap(), b"MAIL FROM:<x@y>\r\n");
        assert!(matches!(c.read_line(100).await, Err(LineError::Eof)));
    }

    #[tokio::test]
    async fn a_long_line_is_dropped_and_the_next_one_read() {
        let mut c = conn_with(b"0123456789012345678901234567890123456789\r\nNOOP\r\n").await;
        assert!(matches!(c.read_line(16).await, Err(LineError::TooLong)));
        assert_eq!(c.read_line(16).await.unwrap(), b"NOOP\r\n");
    }

    #[tokio::test]
    async fn long_lines_come_in_pieces_and_keep_their_crlf_together() {
        // "0123456789" + CRLF with pieces of 11 bytes: the CR would end the
        // first piece; it waits for its LF instead.
        let mut c = conn_with(b"0123456789\r\nabcdefghijklmnopqrstuvwxyz\r\nok\r\n").await;
        assert_eq!(
            c.read_line_piece(12).await.unwrap(),
            (b"0123456789\r\n".to_vec(), true)
        );
        let mut pieces = Vec::new();
        loop {
            let (p, done) = c.read_line_piece(10).await.unwrap();
            assert!(p.len() <= 10);
            pieces.push(p);
            if done {
                break;
            }
        }
        assert_eq!(pieces.concat(), b"abcdefghijklmnopqrstuvwxyz\r\n");
        assert_eq!(pieces.len(), 3);
        assert_eq!(
            c.read_line_piece(10).await.unwrap(),
            (b"ok\r\n".to_vec(), true)
        );
        assert!(matches!(c.read_line_piece(10).await, Err(LineError::Eof)));
        let mut c = conn_with(b"0123456789\r\n").await;
        assert_eq!(
            c.read_line_piece(11).await.unwrap(),
            (b"0123456789".to_vec(), false)
        );
        assert_eq!(
            c.read_line_piece(11).await.unwrap(),
            (b"\r\n".to_vec(), true)
        );
    }

    /// A client that writes `chunks` with `pause` between them.
    fn trickle(chunks: &'static [&'static [u8]], pause: Duration) -> Conn {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            for chunk in chunks {
                if client.write_all(chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(pause).await;
            }
            // Held open, silent.
            tokio::time::sleep(Duration::from_secs(100_000)).await;
        });
        Conn::new(Box::new(server))
    }

    fn deadlines(phase_end: Option<Instant>) -> Deadlines {
        Deadlines {
            idle: Duration::from_secs(300),
            command: Duration::from_secs(60),
            phase_end,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_trickled_a_byte_every_20_s_is_cut_60_s_after_its_first_byte() {
        let mut c = trickle(
            &[b"N", b"O", b"O", b"P", b"\r", b"\n"],
            Duration::from_secs(20),
        );
        let start = Instant::now();
        assert!(
            c.read_command_line(512, &deadlines(None))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn whole_lines_sent_slowly_are_cut_at_the_end_of_the_phase() {
        const NOOP: &[u8] = b"NOOP\r\n";
        let mut c = trickle(&[NOOP; 100], Duration::from_secs(50));
        let start = Instant::now();
        let d = deadlines(Some(start + Duration::from_secs(120)));
        let mut lines = 0;
        while let Some(line) = c.read_command_line(512, &d).await.unwrap() {
            assert_eq!(line, b"NOOP\r\n");
            lines += 1;
        }
        assert_eq!(lines, 3, "at 0, 50 and 100 s");
        assert_eq!(start.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_wait_is_separate_from_the_command_deadline() {
        // 250 s of silence, then a whole line: within `idle` (300 s).
        let (mut client, server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(250)).await;
            let _ = client.write_all(b"QUIT\r\n").await;
            tokio::time::sleep(Duration::from_secs(100_000)).await;
        });
        let mut c = Conn::new(Box::new(server));
        let line = c.read_command_line(512, &deadlines(None)).await.unwrap();
        assert_eq!(line.as_deref(), Some(&b"QUIT\r\n"[..]));
        let start = Instant::now();
        assert!(
            c.read_command_line(512, &deadlines(None))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(start.elapsed(), Duration::from_secs(300), "idle");
    }

    #[tokio::test]
    async fn exact_reads_take_bytes_then_lines_continue() {
        let mut c = conn_with(b"abc\r\nhello worldX\r\n").await;
        assert_eq!(c.read_line(10).await.unwrap(), b"abc\r\n");
        assert_eq!(c.read_exact_bytes(11).await.unwrap(), b"hello world");
        assert_eq!(c.read_line(10).await.unwrap(), b"X\r\n");
    }
}
