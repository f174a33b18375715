//! LDAP address books for mxrack (issue 4): an LDAPv3 server with the seed's
//! tree and access rules, on `ldap3_proto` and tokio.
//!
//! - `codec`: the wire (ldap3_proto's `LdapCodec` behind a size-limited
//!   framing step).
//! - `server`: the connection loop: read a message, hand it to the handler,
//!   write the replies; StartTLS and LDAPS; idle and shutdown.
//! - `handler`: `handle(service, session, message) -> replies`, no network
//!   I/O, dispatching to one module per operation: `bind` (and Who am I),
//!   `search`, `add`, `modify`, `delete`, `modrdn`, `compare`, `password`.
//! - `access`: a bound identity resolved to the books it may read and write.
//! - `tree`: where a DN falls in the tree; the cache of decoded books.
//! - `dn`, `filter`, `schema`, `entry`: pure DN handling, filter evaluation
//!   with limits, the schema and discovery entries, entries and their checks.

pub mod access;
mod add;
mod bind;
pub mod codec;
mod compare;
mod delete;
pub mod dn;
pub mod entry;
pub mod filter;
pub mod handler;
mod modify;
mod modrdn;
mod password;
pub mod schema;
mod search;
pub mod server;
pub mod tree;
pub mod verifier;

use mxrack_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

pub use handler::{Outcome, Session, Then, handle, handle_streaming};
pub use ldap3_proto::proto::LdapResultCode;
pub use server::{Mode, SEARCH_ENTRIES_IN_FLIGHT, run_connection, serve};

/// Books kept decoded in memory at once (see [`tree::BookCache`]).
const CACHED_BOOKS_MAX: usize = 1024;

/// What every LDAP connection shares.
pub struct LdapService {
    pub limits: mxrack_config::Ldap,
    /// `dc=example,dc=net` for the primary domain example.net.
    pub base: dn::Dn,
    pub store: Arc<Store>,
    /// `None` only in tests: then StartTLS is refused.
    pub tls: Option<TlsAcceptor>,
    /// The appliance's one authentication service (limiter and Argon2 pool).
    pub auth: Arc<mxrack_auth::AuthService>,
    pub books: tree::BookCache,
    /// Argon2 checks of binds (on the one pool) and the bind cache.
    pub verifier: verifier::BindVerifier,
}

impl LdapService {
    pub fn new(
        limits: mxrack_config::Ldap,
        primary_domain: &str,
        store: Arc<Store>,
        tls: Option<TlsAcceptor>,
        auth: Arc<mxrack_auth::AuthService>,
    ) -> LdapService {
        LdapService {
            verifier: verifier::BindVerifier::new(
                store.clone(),
                Duration::from_secs(limits.bind_cache_secs),
            ),
            base: dn::Dn::from_domain(&primary_domain.to_ascii_lowercase()),
            limits,
            store,
            tls,
            auth,
            books: tree::BookCache::new(CACHED_BOOKS_MAX),
        }
    }

    /// The base DN as text.
    pub fn base_dn(&self) -> String {
        self.base.to_string()
    }

    /// The bounds of every book (its owner's quota is the store's to check).
    pub fn book_limits(&self) -> mxrack_store::BookLimits {
        mxrack_store::BookLimits {
            max_entries: self.limits.max_entries_per_book,
            max_bytes: self.limits.max_book_bytes,
        }
    }

    pub fn filter_limits(&self) -> filter::FilterLimits {
        filter::FilterLimits {
            depth_max: self.limits.max_filter_depth,
            terms_max: self.limits.max_filter_terms,
        }
    }
}
