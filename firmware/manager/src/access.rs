//! Who may do what in the Manager: the only place the rules live. Roles are
//! resolved from the store at every request, so revoking full management
//! access or removing a mailbox takes effect at the next click, even for a
//! session opened before.
//!
//! - The provider administrator (`admin`, the appliance's own credential)
//!   does everything: accounts, domains, every account's mailboxes and
//!   aliases, the queue, the audit trail, the configuration (read only).
//! - An account administrator (a mailbox with full management access)
//!   manages its own account: mailboxes (add, remove, password, quota, full
//!   management flag, LDAP password), aliases, the account's LDAP password;
//!   it sees its domains but adds and removes none. And its own mailbox.
//! - A mailbox user manages its own mailbox: password, LDAP password,
//!   forwarding.
//!
//! A mailbox or alias named in a form must belong to the account of the
//! page (checked against the store, not the URL alone): an account
//! administrator cannot reach another account's mailbox by typing its
//! address.

use mxrack_store::{Store, StoreError};

use crate::ADMIN_USER;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Provider,
    AccountAdmin { address: String, account: String },
    Mailbox { address: String, account: String },
}

/// The role of a session's `who` now; `None` when it no longer exists.
pub fn resolve(store: &Store, who: &str) -> Result<Option<Role>, StoreError> {
    if who == ADMIN_USER {
        return Ok(Some(Role::Provider));
    }
    match store.mailbox_get(who) {
        Ok(m) if m.full_management => Ok(Some(Role::AccountAdmin {
            address: m.address,
            account: m.account,
        })),
        Ok(m) => Ok(Some(Role::Mailbox {
            address: m.address,
            account: m.account,
        })),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Role {
    pub fn is_provider(&self) -> bool {
        matches!(self, Role::Provider)
    }

    /// Whether this role manages `account`'s mailboxes and aliases.
    pub fn manages(&self, account: &str) -> bool {
        match self {
            Role::Provider => true,
            Role::AccountAdmin { account: a, .. } => a.eq_ignore_ascii_case(account),
            Role::Mailbox { .. } => false,
        }
    }

    /// The role's own mailbox (none for the provider).
    pub fn mailbox(&self) -> Option<&str> {
        match self {
            Role::Provider => None,
            Role::AccountAdmin { address, .. } | Role::Mailbox { address, .. } => Some(address),
        }
    }

    /// The account an account administrator manages.
    pub fn managed_account(&self) -> Option<&str> {
        match self {
            Role::AccountAdmin { account, .. } => Some(account),
            _ => None,
        }
    }

    /// How the page header names who is logged in.
    pub fn label(&self) -> String {
        match self {
            Role::Provider => format!("{ADMIN_USER} (provider)"),
            Role::AccountAdmin { address, account } => format!("{address} (account {account})"),
            Role::Mailbox { address, .. } => address.clone(),
        }
    }
}

/// The domain part of an address, lower-cased.
pub fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// Whether `address` is in one of `account`'s domains.
pub fn address_in_account(store: &Store, address: &str, account: &str) -> Result<bool, StoreError> {
    let Some(domain) = domain_of(address) else {
        return Ok(false);
    };
    Ok(store
        .domain_list()?
        .iter()
        .any(|d| d.name.eq_ignore_ascii_case(&domain) && d.account.eq_ignore_ascii_case(account)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roles_matrix() {
        let provider = Role::Provider;
        let boss = Role::AccountAdmin {
            address: "boss@acme.example".into(),
            account: "acme".into(),
        };
        let jo = Role::Mailbox {
            address: "jo@acme.example".into(),
            account: "acme".into(),
        };
        let table: [(&Role, &str, bool); 6] = [
            (&provider, "acme", true),
            (&provider, "other", true),
            (&boss, "acme", true),
            (&boss, "ACME", true),
            (&boss, "other", false),
            (&jo, "acme", false),
        ];
        for (role, account, manages) in table {
            assert_eq!(role.manages(account), manages, "{role:?} manages {account}");
        }
        assert!(provider.is_provider() && !boss.is_provider() && !jo.is_provider());
        assert_eq!(provider.mailbox(), None);
        assert_eq!(jo.mailbox(), Some("jo@acme.example"));
        assert_eq!(boss.label(), "boss@acme.example (account acme)");
        assert_eq!(domain_of("Jo@Acme.Example"), Some("acme.example".into()));
        assert_eq!(domain_of("nodomain"), None);
    }
}
