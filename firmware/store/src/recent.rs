//! \Recent as Dovecot keeps it (RFC 3501 2.3.2): each folder has a recent
//! high-water UID (`Folder::first_recent_uid`); messages at or above it are
//! \Recent for the first session that claims them (SELECT, not EXAMINE, or
//! a selected session noticing new mail), and for no other session.

use redb::ReadableTable;

use crate::mailstore::canonical_folder;
use crate::names::normalize_address;
use crate::schema::{self, FOLDERS, Folder};
use crate::{Store, StoreError};

impl Store {
    /// Claims the recent messages of a folder below `up_to` (the UIDs a
    /// session has seen): moves the high-water UID up to `up_to` (never
    /// past UIDNEXT, never down) and returns the claimed range
    /// `[from, to)`; empty when another session claimed them first. One
    /// journaled write when there is something to claim, none otherwise.
    pub fn claim_recent(
        &self,
        mailbox: &str,
        folder: &str,
        up_to: u32,
    ) -> Result<(u32, u32), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let name = canonical_folder(folder)?;
        let wanted = |f: &Folder| up_to.min(f.uidnext);
        {
            let txn = self.read_txn()?;
            let f: Folder = match txn
                .open_table(FOLDERS)?
                .get((mailbox.as_str(), name.as_str()))?
            {
                Some(g) => schema::decode(g.value(), "folder")?,
                None => return Ok((0, 0)),
            };
            if f.first_recent_uid >= wanted(&f) {
                return Ok((0, 0));
            }
        }
        let txn = self.jtxn()?;
        let range;
        {
            let mut folders = txn.open_table(FOLDERS)?;
            let mut f: Folder = match folders.get((mailbox.as_str(), name.as_str()))? {
                Some(g) => schema::decode(g.value(), "folder")?,
                None => return Ok((0, 0)),
            };
            let to = wanted(&f);
            if f.first_recent_uid >= to {
                return Ok((0, 0));
            }
            range = (f.first_recent_uid, to);
            f.first_recent_uid = to;
            folders.insert(
                (mailbox.as_str(), name.as_str()),
                schema::encode(&f)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(range)
    }
}
