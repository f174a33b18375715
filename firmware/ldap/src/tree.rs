//! The directory tree and where a DN falls in it, plus the cache of decoded
//! books.
//!
//! ```text
//! ""                                  root DSE (anyone, base scope)
//! cn=Subschema                        the schema (anyone, base scope)
//! BASE                                dc=example,dc=net, from the primary domain
//! ├── ou=auth,BASE                    not served: only its bind DNs are used
//! │   └── cn=NAME,ou=auth,BASE        bind DN of a mailbox or an account
//! └── ou=ab,BASE                      the address books
//!     └── ou=NAME,ou=ab,BASE          one book per mailbox and per account
//!         └── RDN,ou=NAME,ou=ab,BASE  the entries (a book is flat)
//! ```

use crate::dn::{Dn, Rdn};
use crate::entry::{Served, book_dn, entry_key};
use mxrack_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Where a DN falls in the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    RootDse,
    Subschema,
    Base,
    AuthContainer,
    /// `cn=NAME,ou=auth,BASE`: NAME as written.
    Bind(String),
    AbContainer,
    /// `ou=NAME,ou=ab,BASE`: NAME as written.
    Book(String),
    /// `RDN,ou=NAME,ou=ab,BASE`.
    Entry {
        book: String,
        rdn: Rdn,
    },
    /// Below an entry: address books are flat.
    BelowEntry {
        book: String,
    },
    /// Under BASE but nowhere above.
    UnderBase,
    /// Not under BASE at all.
    Outside,
}

/// Classifies `dn` against the base DN.
pub fn place(dn: &Dn, base: &Dn) -> Place {
    if dn.is_root() {
        return Place::RootDse;
    }
    if dn.rdns.len() == 1 && dn.rdns[0].normalized() == "cn=subschema" {
        return Place::Subschema;
    }
    let Some(rel) = dn.relative_to(base) else {
        return Place::Outside;
    };
    // rel is leaf first; walk it from the top.
    let top = |i: usize| &rel[rel.len() - 1 - i];
    let single = |rdn: &Rdn, attr: &str| -> Option<String> {
        (rdn.avas.len() == 1)
            .then(|| rdn.value_of(attr).map(str::to_string))
            .flatten()
    };
    match rel.len() {
        0 => Place::Base,
        _ => match single(top(0), "ou").map(|v| v.to_ascii_lowercase()) {
            Some(ou) if ou == "auth" => match rel.len() {
                1 => Place::AuthContainer,
                2 => match single(top(1), "cn") {
                    Some(name) => Place::Bind(name),
                    None => Place::UnderBase,
                },
                _ => Place::UnderBase,
            },
            Some(ou) if ou == "ab" => {
                if rel.len() == 1 {
                    return Place::AbContainer;
                }
                let Some(book) = single(top(1), "ou") else {
                    return Place::UnderBase;
                };
                match rel.len() {
                    2 => Place::Book(book),
                    3 => Place::Entry {
                        book,
                        rdn: top(2).clone(),
                    },
                    _ => Place::BelowEntry { book },
                }
            }
            _ => Place::UnderBase,
        },
    }
}

/// The bind DN of a mailbox or account.
pub fn bind_dn(name: &str, base: &Dn) -> String {
    format!("cn={},ou=auth,{base}", crate::dn::escape_value(name))
}

/// A book decoded and ready to search.
pub struct CachedBook {
    pub generation: u64,
    /// In key order.
    pub entries: Vec<Arc<Served>>,
    index: HashMap<String, usize>,
}

impl CachedBook {
    pub fn get(&self, rdn: &Rdn) -> Option<&Arc<Served>> {
        self.index.get(&entry_key(rdn)).map(|&i| &self.entries[i])
    }
}

/// Books kept decoded between searches. A book is reloaded when its
/// generation in the store moved (any write, by any connection or by the
/// CLI removing its owner); checking costs one small read.
pub struct BookCache {
    books: Mutex<HashMap<String, Arc<CachedBook>>>,
    books_max: usize,
}

impl BookCache {
    pub fn new(books_max: usize) -> BookCache {
        BookCache {
            books: Mutex::new(HashMap::new()),
            books_max,
        }
    }

    /// The current content of `book` (a canonical name).
    pub fn get(&self, store: &Store, book: &str, base: &Dn) -> Result<Arc<CachedBook>, StoreError> {
        let generation = store.ldap_book_generation(book)?;
        if let Some(cached) = self
            .books
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(book)
            && cached.generation == generation
        {
            return Ok(cached.clone());
        }
        let snapshot = store.ldap_book_load(book)?;
        let dn = book_dn(book, base);
        let mut index = HashMap::with_capacity(snapshot.entries.len());
        let mut entries = Vec::with_capacity(snapshot.entries.len());
        for (i, (key, entry)) in snapshot.entries.into_iter().enumerate() {
            index.insert(key, i);
            entries.push(Arc::new(Served::from_stored(&entry, &dn)));
        }
        let cached = Arc::new(CachedBook {
            generation: snapshot.generation,
            entries,
            index,
        });
        let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        if books.len() >= self.books_max && !books.contains_key(book) {
            // Bounded memory: start over rather than track recency.
            books.clear();
        }
        books.insert(book.to_string(), cached.clone());
        Ok(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dn::parse;

    #[test]
    fn places_in_the_tree() {
        let base = Dn::from_domain("example.net");
        let p = |s: &str| place(&parse(s).expect(s), &base);
        assert_eq!(p(""), Place::RootDse);
        assert_eq!(p("CN=SubSchema"), Place::Subschema);
        assert_eq!(p("dc=example,dc=net"), Place::Base);
        assert_eq!(p("ou=auth,dc=example,dc=net"), Place::AuthContainer);
        assert_eq!(
            p("cn=Jo@Acme.Example,ou=auth,dc=example,dc=net"),
            Place::Bind("Jo@Acme.Example".into())
        );
        assert_eq!(p("OU=AB,dc=example,dc=net"), Place::AbContainer);
        assert_eq!(
            p("ou=acme,ou=ab,dc=example,dc=net"),
            Place::Book("acme".into())
        );
        assert_eq!(
            p("cn=Al,ou=acme,ou=ab,dc=example,dc=net"),
            Place::Entry {
                book: "acme".into(),
                rdn: Rdn::single("cn", "Al")
            }
        );
        assert_eq!(
            p("cn=x,cn=Al,ou=acme,ou=ab,dc=example,dc=net"),
            Place::BelowEntry {
                book: "acme".into()
            }
        );
        assert_eq!(p("ou=people,dc=example,dc=net"), Place::UnderBase);
        assert_eq!(p("uid=x,ou=auth,dc=example,dc=net"), Place::UnderBase);
        assert_eq!(p("dc=example,dc=org"), Place::Outside);
        assert_eq!(p("cn=subschema,dc=example,dc=net"), Place::UnderBase);
    }

    #[test]
    fn names_in_dns_are_escaped() {
        let base = Dn::from_domain("example.net");
        assert_eq!(
            bind_dn("jo@acme.example", &base),
            "cn=jo@acme.example,ou=auth,dc=example,dc=net"
        );
        assert_eq!(book_dn("acme", &base), "ou=acme,ou=ab,dc=example,dc=net");
    }
}
