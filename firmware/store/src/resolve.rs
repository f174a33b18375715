//! Recipient resolution: what becomes of mail for an address.
//!
//! Aliases expand recursively, up to [`MAX_ALIAS_DEPTH`] levels; a target
//! seen before (a loop, or the same address reached twice) is skipped, so
//! each mailbox gets one copy. A target in a hosted domain that is neither a
//! mailbox nor an alias is dropped with a warning (a stale alias must not
//! make mail for its other targets bounce).

use std::collections::HashSet;

use redb::ReadOnlyTable;

use crate::names::{domain_of, normalize_address};
use crate::schema::{self, ALIASES, Alias, DOMAINS, MAILBOXES};
use crate::{Store, StoreError};

/// Most alias levels followed from the address given.
pub(crate) const MAX_ALIAS_DEPTH: usize = 8;

/// Where mail for one address goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Mailbox addresses (deduplicated), for [`crate::Delivery::local`].
    pub local: Vec<String>,
    /// External addresses (deduplicated), for [`crate::Delivery::remote`].
    pub remote: Vec<String>,
}

/// The answer of [`Store::resolve_recipient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A mailbox, or an alias leading to at least one mailbox or external
    /// address.
    Deliver(Resolved),
    /// The domain is hosted but nothing there takes this address.
    UnknownUser,
    /// The domain is not hosted here (relaying needs authentication).
    NotHosted,
}

struct Lookup {
    domains: ReadOnlyTable<&'static str, &'static [u8]>,
    mailboxes: ReadOnlyTable<&'static str, &'static [u8]>,
    aliases: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Lookup {
    fn hosted(&self, address: &str) -> Result<bool, StoreError> {
        Ok(self.domains.get(domain_of(address))?.is_some())
    }

    fn is_mailbox(&self, address: &str) -> Result<bool, StoreError> {
        Ok(self.mailboxes.get(address)?.is_some())
    }

    fn alias(&self, address: &str) -> Result<Option<Alias>, StoreError> {
        match self.aliases.get(address)? {
            Some(g) => Ok(Some(schema::decode(g.value(), "alias")?)),
            None => Ok(None),
        }
    }

    /// Adds the destinations of `alias` (at nesting level `depth`, 1 for the
    /// address asked about) to `out`.
    fn expand(
        &self,
        alias: &Alias,
        depth: usize,
        seen: &mut HashSet<String>,
        out: &mut Resolved,
    ) -> Result<(), StoreError> {
        for target in &alias.targets {
            if !seen.insert(target.clone()) {
                continue; // a loop, or reached already by another path
            }
            if !self.hosted(target)? {
                out.remote.push(target.clone());
            } else if self.is_mailbox(target)? {
                out.local.push(target.clone());
            } else if let Some(next) = self.alias(target)? {
                if depth >= MAX_ALIAS_DEPTH {
                    tracing::warn!(alias = %alias.address, target = %target, "alias nesting too deep; target ignored");
                } else {
                    self.expand(&next, depth + 1, seen, out)?;
                }
            } else {
                tracing::warn!(alias = %alias.address, target = %target, "alias target does not exist; ignored");
            }
        }
        Ok(())
    }
}

impl Store {
    /// Resolves an envelope recipient. A malformed address is
    /// [`StoreError::Invalid`] (a permanent error).
    pub fn resolve_recipient(&self, address: &str) -> Result<Resolution, StoreError> {
        let address = normalize_address(address)?;
        let txn = self.read_txn()?;
        let lookup = Lookup {
            domains: txn.open_table(DOMAINS)?,
            mailboxes: txn.open_table(MAILBOXES)?,
            aliases: txn.open_table(ALIASES)?,
        };
        if !lookup.hosted(&address)? {
            return Ok(Resolution::NotHosted);
        }
        if lookup.is_mailbox(&address)? {
            return Ok(Resolution::Deliver(Resolved {
                local: vec![address],
                remote: Vec::new(),
            }));
        }
        let Some(alias) = lookup.alias(&address)? else {
            return Ok(Resolution::UnknownUser);
        };
        let mut seen = HashSet::from([address]);
        let mut out = Resolved::default();
        lookup.expand(&alias, 1, &mut seen, &mut out)?;
        if out.local.is_empty() && out.remote.is_empty() {
            Ok(Resolution::UnknownUser)
        } else {
            Ok(Resolution::Deliver(out))
        }
    }
}
