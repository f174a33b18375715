//! The one error type of the store, and how foreign errors map into it.
//!
//! Callers mostly need one decision from an error: is it the client's fault
//! (permanent, SMTP 5xx) or ours and possibly passing (temporary, SMTP 4xx)?
//! [`StoreError::is_temporary`] answers it.

use std::io;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is already taken (by a record of `kind`).
    #[error("{kind} {name:?} already exists")]
    Duplicate { kind: &'static str, name: String },
    /// No record of `kind` has this name.
    #[error("no {kind} named {name:?}")]
    NotFound { kind: &'static str, name: String },
    /// The record cannot be removed while something refers to it.
    #[error("{kind} {name:?} is still used by {by}")]
    InUse {
        kind: &'static str,
        name: String,
        by: String,
    },
    /// A caller-supplied value is malformed.
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    /// The mailbox's quota would be exceeded. `larger_than_quota`: the
    /// message alone is larger than the whole quota (SMTP 552, not 452).
    #[error("mailbox {mailbox} is over its quota")]
    OverQuota {
        mailbox: String,
        larger_than_quota: bool,
    },
    /// An address-book write would take its book past a limit: `limit` names
    /// it ("mailbox quota": the owner mailbox's quota, counting its mail and
    /// its contacts; or `ldap.max_book_bytes`). Figures in bytes: `mail` and
    /// `contacts` are in use (mail 0 for a limit on the book alone), `adds`
    /// is what the change would add. LDAP answers adminLimitExceeded with
    /// this text as the diagnostic message (RFC 4511 4.1.9).
    #[error("{}", over_limit_message(.limit, .owner, *.allowed, *.mail, *.contacts, *.adds))]
    AddressBookOverLimit {
        limit: &'static str,
        owner: String,
        allowed: u64,
        mail: u64,
        contacts: u64,
        adds: u64,
    },
    /// ENOSPC or EDQUOT on the data file system.
    #[error("no space left on the data file system")]
    NoSpace,
    /// Any other I/O error on the data folder.
    #[error("store I/O error: {0}")]
    Io(#[from] io::Error),
    /// An error from redb, or a record that does not decode.
    #[error("database error: {0}")]
    Db(String),
    /// The data folder was written by a newer binary.
    #[error("store schema version {found} is newer than this binary's {supported}")]
    Schema { found: u32, supported: u32 },
    /// The metadata cannot be trusted as it is (missing `meta.redb` beside
    /// mail, or a database that does not belong to the recovery journal):
    /// `mxrack reconstruct` rebuilds it. The server refuses to start.
    #[error("{0}; run `mxrack reconstruct` (nothing was changed)")]
    NeedsReconstruct(String),
    /// [`crate::Store::shutdown`] was called (or the commit thread is gone).
    #[error("the store is shutting down")]
    Closed,
}

fn over_limit_message(
    limit: &str,
    owner: &str,
    allowed: u64,
    mail: u64,
    contacts: u64,
    adds: u64,
) -> String {
    let used = mail.saturating_add(contacts);
    if limit == "mailbox quota" {
        format!(
            "mailbox quota of {owner} exceeded: {allowed} bytes allowed, {used} in use \
             ({mail} mail, {contacts} contacts), the change adds {adds}"
        )
    } else {
        format!(
            "{limit} of the address book of {owner} exceeded: {allowed} bytes allowed, \
             {used} in use, the change adds {adds}"
        )
    }
}

impl StoreError {
    /// True when the failure is on our side and may pass (disk full, I/O,
    /// database, shutdown): SMTP answers 4xx so the sender retries later.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StoreError::NoSpace | StoreError::Io(_) | StoreError::Db(_) | StoreError::Closed
        )
    }

    /// Maps an I/O error, recognising a full disk or an exhausted quota as
    /// [`StoreError::NoSpace`] so that callers can answer "452" precisely.
    pub(crate) fn from_io(err: io::Error) -> StoreError {
        if is_no_space(&err) {
            StoreError::NoSpace
        } else {
            StoreError::Io(err)
        }
    }

    /// A copy of this error for another waiter of the same failed batch
    /// (the error type is not `Clone` because `io::Error` is not).
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Duplicate { kind, name } => StoreError::Duplicate {
                kind,
                name: name.clone(),
            },
            StoreError::NotFound { kind, name } => StoreError::NotFound {
                kind,
                name: name.clone(),
            },
            StoreError::OverQuota {
                mailbox,
                larger_than_quota,
            } => StoreError::OverQuota {
                mailbox: mailbox.clone(),
                larger_than_quota: *larger_than_quota,
            },
            StoreError::InUse { kind, name, by } => StoreError::InUse {
                kind,
                name: name.clone(),
                by: by.clone(),
            },
            StoreError::Invalid { what, why } => StoreError::Invalid {
                what,
                why: why.clone(),
            },
            StoreError::AddressBookOverLimit {
                limit,
                owner,
                allowed,
                mail,
                contacts,
                adds,
            } => StoreError::AddressBookOverLimit {
                limit,
                owner: owner.clone(),
                allowed: *allowed,
                mail: *mail,
                contacts: *contacts,
                adds: *adds,
            },
            StoreError::NoSpace => StoreError::NoSpace,
            StoreError::Io(e) => StoreError::Io(io::Error::new(e.kind(), e.to_string())),
            StoreError::Db(s) => StoreError::Db(s.clone()),
            StoreError::Schema { found, supported } => StoreError::Schema {
                found: *found,
                supported: *supported,
            },
            StoreError::Closed => StoreError::Closed,
            StoreError::NeedsReconstruct(why) => StoreError::NeedsReconstruct(why.clone()),
        }
    }
}

/// ENOSPC or EDQUOT: the data file system cannot take more.
pub(crate) fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || err.kind() == io::ErrorKind::StorageFull
        || err.kind() == io::ErrorKind::QuotaExceeded
}

impl From<redb::Error> for StoreError {
    fn from(err: redb::Error) -> StoreError {
        match err {
            // redb writes into the same file system as the blobs: a full disk
            // during a commit must read as NoSpace, not as a database fault.
            redb::Error::Io(e) if is_no_space(&e) => StoreError::NoSpace,
            other => StoreError::Db(other.to_string()),
        }
    }
}

/// Every redb error type converts into `redb::Error`; route them all through
/// the mapping above so `?` works on any redb call.
macro_rules! from_redb {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for StoreError {
            fn from(err: $t) -> StoreError {
                StoreError::from(redb::Error::from(err))
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_classification() {
        assert!(StoreError::NoSpace.is_temporary());
        assert!(StoreError::Closed.is_temporary());
        assert!(StoreError::Db("x".into()).is_temporary());
        assert!(StoreError::Io(io::Error::other("x")).is_temporary());
        assert!(
            !StoreError::NotFound {
                kind: "mailbox",
                name: "a@b".into()
            }
            .is_temporary()
        );
        assert!(
            !StoreError::Invalid {
                what: "address",
                why: "x".into()
            }
            .is_temporary()
        );
    }

    #[test]
    fn enospc_maps_to_no_space() {
        let e = StoreError::from_io(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, StoreError::NoSpace), "{e:?}");
        let e = StoreError::from_io(io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(matches!(e, StoreError::NoSpace), "{e:?}");
        let e = StoreError::from_io(io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, StoreError::Io(_)), "{e:?}");
        let redb_full = redb::Error::Io(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(StoreError::from(redb_full), StoreError::NoSpace));
    }

    #[test]
    fn messages_read_well() {
        let e = StoreError::InUse {
            kind: "domain",
            name: "example.com".into(),
            by: "2 mailboxes".into(),
        };
        assert_eq!(
            e.to_string(),
            "domain \"example.com\" is still used by 2 mailboxes"
        );
        assert_eq!(
            StoreError::Schema {
                found: 2,
                supported: 1
            }
            .to_string(),
            "store schema version 2 is newer than this binary's 1"
        );
    }
}
