//! Access control as a layer: a bound identity resolves to the set of books
//! it may read and the subset it may write; every operation asks this set
//! and nothing else. The rules are the seed's (2006-05-06 entry):
//!
//! - a mailbox reads and writes its own personal book;
//! - it reads its account's book, and writes it only with full management
//!   access;
//! - the account's own bind reads and writes the account book;
//! - nothing else is visible (another book answers noSuchObject, as if it did
//!   not exist), and nothing is visible before a bind.
//!
//! Rights are resolved from the store at every operation, so revoking full
//! management access or removing a mailbox takes effect at once, even on a
//! connection bound before the change.

use mxrack_store::{LdapPrincipal, Store, StoreError};

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    Bound {
        /// The mailbox address or account name (normalised).
        name: String,
        /// The bind DN, as Who am I reports it.
        dn: String,
    },
}

/// One book an identity may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookRight {
    /// The book's name: a mailbox address or an account name.
    pub book: String,
    pub write: bool,
    pub kind: BookKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookKind {
    Personal,
    Account,
}

/// The books an identity may read, the writable ones marked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    pub books: Vec<BookRight>,
}

impl Rights {
    /// The rights of a principal (pure: the rules above).
    pub fn of(principal: &LdapPrincipal) -> Rights {
        match principal {
            LdapPrincipal::Mailbox {
                address,
                account,
                full_management,
            } => Rights {
                books: vec![
                    BookRight {
                        book: address.clone(),
                        write: true,
                        kind: BookKind::Personal,
                    },
                    BookRight {
                        book: account.clone(),
                        write: *full_management,
                        kind: BookKind::Account,
                    },
                ],
            },
            LdapPrincipal::Account { name } => Rights {
                books: vec![BookRight {
                    book: name.clone(),
                    write: true,
                    kind: BookKind::Account,
                }],
            },
        }
    }

    /// The rights of a connection's identity now (none before a bind, or
    /// when the mailbox or account has gone since).
    pub fn resolve(store: &Store, identity: &Identity) -> Result<Rights, StoreError> {
        match identity {
            Identity::Anonymous => Ok(Rights::default()),
            Identity::Bound { name, .. } => Ok(store
                .ldap_principal(name)?
                .map(|p| Rights::of(&p))
                .unwrap_or_default()),
        }
    }

    /// The right on the book named `name` as a DN value gives it (any case).
    pub fn book(&self, name: &str) -> Option<&BookRight> {
        self.books
            .iter()
            .find(|b| b.book.eq_ignore_ascii_case(name.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(full: bool) -> LdapPrincipal {
        LdapPrincipal::Mailbox {
            address: "jo@acme.example".into(),
            account: "acme".into(),
            full_management: full,
        }
    }

    /// (principal, book, readable, writable): the matrix of the issue.
    #[test]
    fn the_rights_matrix() {
        let account = LdapPrincipal::Account {
            name: "acme".into(),
        };
        let table: [(&LdapPrincipal, &str, bool, bool); 12] = [
            (&mailbox(false), "jo@acme.example", true, true),
            (&mailbox(false), "JO@Acme.Example", true, true),
            (&mailbox(false), "acme", true, false),
            (&mailbox(false), "al@acme.example", false, false),
            (&mailbox(false), "other", false, false),
            (&mailbox(true), "jo@acme.example", true, true),
            (&mailbox(true), "acme", true, true),
            (&mailbox(true), "al@acme.example", false, false),
            (&account, "acme", true, true),
            (&account, "jo@acme.example", false, false),
            (&account, "other", false, false),
            (&account, "", false, false),
        ];
        for (principal, book, read, write) in table {
            let rights = Rights::of(principal);
            let right = rights.book(book);
            assert_eq!(right.is_some(), read, "{principal:?} reads {book}");
            assert_eq!(
                right.is_some_and(|r| r.write),
                write,
                "{principal:?} writes {book}"
            );
        }
        assert!(Rights::default().books.is_empty(), "anonymous sees nothing");
    }
}
