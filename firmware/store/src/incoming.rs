//! A message written to its file as it arrives (SMTP DATA, IMAP APPEND),
//! so that a connection holds a bounded buffer, never the whole message.
//!
//! [`Store::begin_message`] creates the blob file (`DATA/msg/<id>`, the
//! same [`BlobWriter`] and file format as every blob: message bytes first,
//! the recovery record last). [`IncomingMessage::write`] gathers bytes in a
//! buffer of [`INCOMING_CHUNK_BYTES`] and hands each full buffer to a
//! blocking thread, which writes it and hashes it: file writes never run on
//! an async worker thread. [`Store::deliver_incoming`] and
//! [`Store::append_incoming`] then finish the file (record, `fdatasync`) and
//! commit it exactly as [`Store::deliver`] and [`Store::append`] do.
//!
//! An `IncomingMessage` dropped unfinished (the client went away, the
//! message was refused, a write failed) removes its file, on a blocking
//! thread: nothing was acknowledged, so nothing is left in `msg/` nor, at
//! the next open, in `lost+found/`.

use std::path::PathBuf;

use crate::blobs::{BlobHeader, BlobWriter, blob_path, remove_blob_file};
use crate::{Id, Store, StoreError};

/// Bytes an [`IncomingMessage`] keeps in memory before writing them.
pub const INCOMING_CHUNK_BYTES: usize = 64 * 1024;

/// A message file being written; see the module documentation.
pub struct IncomingMessage {
    id: Id,
    path: PathBuf,
    /// `None` while a write runs on the blocking thread, and after a failure.
    writer: Option<BlobWriter>,
    buf: Vec<u8>,
    size: u64,
}

impl Store {
    /// Creates the file of a new message `id` (from [`Store::next_id`]) to
    /// be written as it arrives. Errors: [`StoreError::Closed`] after
    /// shutdown, [`StoreError::NoSpace`], or an I/O error (an existing file
    /// of that id is never overwritten).
    pub async fn begin_message(&self, id: Id) -> Result<IncomingMessage, StoreError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let path = blob_path(self.msg_dir(), id);
        let create_path = path.clone();
        let writer = crate::offload::spawn_blocking(move || BlobWriter::create(&create_path))
            .await
            .map_err(|e| {
                StoreError::Io(std::io::Error::other(format!("blob task failed: {e}")))
            })??;
        Ok(IncomingMessage {
            id,
            path,
            writer: Some(writer),
            buf: Vec::with_capacity(INCOMING_CHUNK_BYTES),
            size: 0,
        })
    }
}

impl std::fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("open", &self.writer.is_some())
            .finish()
    }
}

impl IncomingMessage {
    /// The message id given to [`Store::begin_message`].
    pub fn id(&self) -> Id {
        self.id
    }

    /// Bytes taken so far (written or buffered).
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Appends bytes to the message. At most [`INCOMING_CHUNK_BYTES`] stay
    /// in memory; a full buffer is written on a blocking thread before this
    /// returns. After an error the message is gone (its file removed) and
    /// every later call fails.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        if self.writer.is_none() {
            return Err(StoreError::Closed);
        }
        while !bytes.is_empty() {
            let room = INCOMING_CHUNK_BYTES - self.buf.len();
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            self.size += take as u64;
            bytes = &bytes[take..];
            if self.buf.len() == INCOMING_CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Appends a whole owned buffer in one blocking write (the `Vec` forms
    /// of delivery and append).
    pub(crate) async fn write_owned(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.flush().await?;
        self.size += bytes.len() as u64;
        let buf = std::mem::replace(&mut self.buf, bytes);
        self.flush().await?;
        self.buf = buf;
        Ok(())
    }

    /// Writes the buffer on a blocking thread.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(StoreError::Closed);
        };
        if self.buf.is_empty() {
            self.writer = Some(writer);
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        // On error the writer is dropped there, on the blocking thread,
        // which removes the file.
        let (writer, mut buf) = crate::offload::spawn_blocking(move || {
            writer.write(&buf)?;
            Ok::<_, StoreError>((writer, buf))
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(format!("blob task failed: {e}"))))??;
        buf.clear();
        self.buf = buf;
        self.writer = Some(writer);
        Ok(())
    }

    /// Gives the message up: its file is removed (on a blocking thread)
    /// before this returns. Dropping it does the same, without waiting.
    pub async fn discard(mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = crate::offload::spawn_blocking(move || drop(writer)).await;
        }
    }

    /// Writes what is buffered, appends the file's recovery record (`header`
    /// with the size and hash of what was written) and flushes the file to
    /// stable storage, on a blocking thread. Returns the message's size.
    /// On error the file is removed.
    pub(crate) async fn finish(mut self, header: BlobHeader) -> Result<u64, StoreError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(StoreError::Closed);
        };
        let buf = std::mem::take(&mut self.buf);
        let path = self.path.clone();
        let size = self.size;
        crate::offload::spawn_blocking(move || {
            writer.write(&buf)?;
            // BlobWriter::finish consumes the writer; a failed finish leaves
            // a file that was never acknowledged.
            writer
                .finish(&header)
                .inspect_err(|_| remove_blob_file(&path))
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(format!("blob task failed: {e}"))))??;
        Ok(size)
    }
}

impl Drop for IncomingMessage {
    /// An unfinished message leaves nothing behind; the file is removed on
    /// a blocking thread when a runtime is there, else here.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    crate::offload::spawn_blocking_on(&rt, move || drop(writer));
                }
                Err(_) => drop(writer),
            }
        }
    }
}
