//! Forwarding rules per mailbox and sender-domain block lists (global and
//! per account): what the SMTP intake consults at RCPT and DATA.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::names::{normalize_address, normalize_domain};
use crate::schema::{self, ACCOUNTS, MAILBOXES};
use crate::{Store, StoreError};

/// `forwards`: mailbox address -> [`ForwardRule`].
pub(crate) const FORWARDS: TableDefinition<&str, &[u8]> = TableDefinition::new("forwards");
/// `blocked_senders`: (scope, sender domain) -> unix time added. The scope is
/// "" for the global list, else an account name.
pub(crate) const BLOCKED_SENDERS: TableDefinition<(&str, &str), i64> =
    TableDefinition::new("blocked_senders");

/// Most forward targets per mailbox, and blocked domains per scope.
pub const FORWARD_TARGETS_MAX: usize = 32;
pub const BLOCKED_DOMAINS_PER_SCOPE_MAX: usize = 100_000;

/// A mailbox's forwarding: where copies go, and whether a local copy stays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardRule {
    pub mailbox: String,
    pub targets: Vec<String>,
    pub keep_copy: bool,
}

/// One entry of a block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedSender {
    /// `None`: the global list; else the account whose list it is.
    pub account: Option<String>,
    pub domain: String,
    pub added: i64,
}

fn scope_of(account: Option<&str>) -> &str {
    account.unwrap_or("")
}

impl Store {
    pub(crate) fn create_relay_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(FORWARDS)?;
        txn.open_table(BLOCKED_SENDERS)?;
        Ok(())
    }

    /// Sets a mailbox's forwarding rule (replacing any).
    pub fn forward_set(
        &self,
        mailbox: &str,
        targets: &[String],
        keep_copy: bool,
    ) -> Result<(), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        if targets.is_empty() || targets.len() > FORWARD_TARGETS_MAX {
            return Err(StoreError::Invalid {
                what: "forward targets",
                why: format!("between 1 and {FORWARD_TARGETS_MAX} addresses"),
            });
        }
        let mut clean = Vec::new();
        for t in targets {
            let t = normalize_address(t)?;
            if t == mailbox {
                return Err(StoreError::Invalid {
                    what: "forward target",
                    why: "a mailbox cannot forward to itself".into(),
                });
            }
            if !clean.contains(&t) {
                clean.push(t);
            }
        }
        let txn = self.jtxn()?;
        {
            if txn.open_table(MAILBOXES)?.get(mailbox.as_str())?.is_none() {
                return Err(StoreError::NotFound {
                    kind: "mailbox",
                    name: mailbox,
                });
            }
            let rule = ForwardRule {
                mailbox: mailbox.clone(),
                targets: clean,
                keep_copy,
            };
            txn.open_table(FORWARDS)?
                .insert(mailbox.as_str(), schema::encode(&rule)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn forward_remove(&self, mailbox: &str) -> Result<(), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let txn = self.jtxn()?;
        if txn
            .open_table(FORWARDS)?
            .remove(mailbox.as_str())?
            .is_none()
        {
            return Err(StoreError::NotFound {
                kind: "forward rule",
                name: mailbox,
            });
        }
        txn.commit()?;
        Ok(())
    }

    /// The rule of one mailbox, if any.
    pub fn forward_get(&self, mailbox: &str) -> Result<Option<ForwardRule>, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let txn = self.read_txn()?;
        let table = txn.open_table(FORWARDS)?;
        let record = table.get(mailbox.as_str())?;
        record
            .map(|g| schema::decode(g.value(), "forward rule"))
            .transpose()
    }

    pub fn forward_list(&self) -> Result<Vec<ForwardRule>, StoreError> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for item in txn.open_table(FORWARDS)?.iter()? {
            let (_, v) = item?;
            out.push(schema::decode(v.value(), "forward rule")?);
        }
        Ok(out)
    }

    /// Blocks a sender domain globally (`account` None) or for one account.
    pub fn block_add(&self, domain: &str, account: Option<&str>) -> Result<(), StoreError> {
        let domain = normalize_domain(domain)?;
        let txn = self.jtxn()?;
        {
            if let Some(a) = account
                && txn.open_table(ACCOUNTS)?.get(a)?.is_none()
            {
                return Err(StoreError::NotFound {
                    kind: "account",
                    name: a.to_string(),
                });
            }
            let scope = scope_of(account);
            let mut table = txn.open_table(BLOCKED_SENDERS)?;
            if table.get((scope, domain.as_str()))?.is_some() {
                return Err(StoreError::Duplicate {
                    kind: "blocked domain",
                    name: domain,
                });
            }
            let count = table
                .range((scope, "")..)?
                .take_while(|i| {
                    i.as_ref()
                        .map(|(k, _)| k.value().0 == scope)
                        .unwrap_or(false)
                })
                .count();
            if count >= BLOCKED_DOMAINS_PER_SCOPE_MAX {
                return Err(StoreError::Invalid {
                    what: "block list",
                    why: format!("at most {BLOCKED_DOMAINS_PER_SCOPE_MAX} domains per list"),
                });
            }
            table.insert((scope, domain.as_str()), crate::ids::now_secs())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn block_remove(&self, domain: &str, account: Option<&str>) -> Result<(), StoreError> {
        let domain = normalize_domain(domain)?;
        let txn = self.jtxn()?;
        if txn
            .open_table(BLOCKED_SENDERS)?
            .remove((scope_of(account), domain.as_str()))?
            .is_none()
        {
            return Err(StoreError::NotFound {
                kind: "blocked domain",
                name: domain,
            });
        }
        txn.commit()?;
        Ok(())
    }

    pub fn block_list(&self) -> Result<Vec<BlockedSender>, StoreError> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for item in txn.open_table(BLOCKED_SENDERS)?.iter()? {
            let (k, v) = item?;
            let (scope, domain) = k.value();
            out.push(BlockedSender {
                account: (!scope.is_empty()).then(|| scope.to_string()),
                domain: domain.to_string(),
                added: v.value(),
            });
        }
        Ok(out)
    }

    /// Which list blocks `sender_domain` for mail to a mailbox of `account`:
    /// `Some(None)` the global list, `Some(Some(account))` the account's,
    /// `None` neither. A listed domain also blocks its subdomains.
    pub fn sender_blocked(
        &self,
        sender_domain: &str,
        account: Option<&str>,
    ) -> Result<Option<Option<String>>, StoreError> {
        let domain = sender_domain.to_ascii_lowercase();
        let txn = self.read_txn()?;
        let table = txn.open_table(BLOCKED_SENDERS)?;
        // The domain itself and every parent: a.b.example -> b.example -> example.
        let mut candidates = vec![domain.as_str()];
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            candidates.push(parent);
            rest = parent;
        }
        for d in &candidates {
            if table.get(("", *d))?.is_some() {
                return Ok(Some(None));
            }
            if let Some(a) = account
                && table.get((a, *d))?.is_some()
            {
                return Ok(Some(Some(a.to_string())));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_rules_and_block_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        s.account_add("acme").expect("account");
        s.domain_add("example.net", "acme").expect("domain");
        s.mailbox_add("jo@example.net", "pw", false)
            .expect("mailbox");
        s.forward_set(
            "jo@example.net",
            &["Jo@Hotmail.com".into(), "jo@hotmail.com".into()],
            true,
        )
        .expect("set");
        let r = s.forward_get("jo@example.net").expect("get").expect("rule");
        assert_eq!(r.targets, vec!["jo@hotmail.com".to_string()]);
        assert!(matches!(
            s.forward_set("jo@example.net", &["jo@example.net".into()], true),
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            s.forward_set("nobody@example.net", &["x@y.example".into()], true),
            Err(StoreError::NotFound { .. })
        ));

        s.block_add("spam.example", None).expect("global");
        s.block_add("news.example", Some("acme")).expect("account");
        assert!(matches!(
            s.block_add("spam.example", None),
            Err(StoreError::Duplicate { .. })
        ));
        assert!(matches!(
            s.block_add("x.example", Some("nope")),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(
            s.sender_blocked("mail.spam.example", None).expect("q"),
            Some(None)
        );
        assert_eq!(
            s.sender_blocked("news.example", Some("acme")).expect("q"),
            Some(Some("acme".into()))
        );
        assert_eq!(s.sender_blocked("news.example", None).expect("q"), None);
        assert_eq!(
            s.sender_blocked("ok.example", Some("acme")).expect("q"),
            None
        );
        s.block_remove("spam.example", None).expect("remove");
        assert_eq!(s.sender_blocked("spam.example", None).expect("q"), None);
        assert_eq!(s.block_list().expect("list").len(), 1);
    }
}
