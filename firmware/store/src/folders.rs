//! Reading a mailbox: its folders and the messages in them.

use crate::names::normalize_address;
use crate::schema::{self, FOLDERS, Folder, MAILBOXES, MESSAGES, MessageMeta};
use crate::{Store, StoreError};

impl Store {
    /// The folders of a mailbox, in creation order (INBOX first).
    pub fn folder_list(&self, mailbox: &str) -> Result<Vec<Folder>, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let txn = self.read_txn()?;
        if txn.open_table(MAILBOXES)?.get(mailbox.as_str())?.is_none() {
            return Err(StoreError::NotFound {
                kind: "mailbox",
                name: mailbox,
            });
        }
        let mut out: Vec<Folder> = Vec::new();
        for item in txn.open_table(FOLDERS)?.range((mailbox.as_str(), "")..)? {
            let (k, v) = item?;
            if k.value().0 != mailbox {
                break;
            }
            out.push(schema::decode(v.value(), "folder")?);
        }
        out.sort_by_key(|f| f.id);
        Ok(out)
    }

    /// The messages of one folder of a mailbox, by ascending UID.
    pub fn messages(&self, mailbox: &str, folder: &str) -> Result<Vec<MessageMeta>, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let txn = self.read_txn()?;
        let folder_id = {
            let folders = txn.open_table(FOLDERS)?;
            let record = folders.get((mailbox.as_str(), folder))?;
            match record {
                Some(g) => schema::decode::<Folder>(g.value(), "folder")?.id,
                None if txn.open_table(MAILBOXES)?.get(mailbox.as_str())?.is_none() => {
                    return Err(StoreError::NotFound {
                        kind: "mailbox",
                        name: mailbox,
                    });
                }
                None => {
                    return Err(StoreError::NotFound {
                        kind: "folder",
                        name: format!("{mailbox}/{folder}"),
                    });
                }
            }
        };
        let mut out = Vec::new();
        for item in txn
            .open_table(MESSAGES)?
            .range((folder_id, 0u32)..=(folder_id, u32::MAX))?
        {
            let (_, v) = item?;
            out.push(schema::decode(v.value(), "message")?);
        }
        Ok(out)
    }
}
