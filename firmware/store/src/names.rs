//! Validation and normalisation of addresses, domains and account names.
//!
//! Everything is stored ASCII-lowercased, the local part too (as most mail
//! appliances do), so `Bob@Example.COM` and `bob@example.com` are one mailbox.
//! The rules are deliberately plain: they keep garbage, header-breaking
//! characters and oversize names out of the database, not enforce RFC 5321
//! in full.

use crate::StoreError;

/// Longest address accepted, in bytes.
pub(crate) const MAX_ADDRESS_LEN: usize = 255;
/// Longest local part accepted, in bytes (RFC 5321).
pub(crate) const MAX_LOCAL_LEN: usize = 64;
/// Longest domain accepted, in bytes (RFC 1035, without the root dot).
pub(crate) const MAX_DOMAIN_LEN: usize = 253;
/// Longest account name accepted, in bytes.
pub(crate) const MAX_ACCOUNT_LEN: usize = 64;

fn invalid(what: &'static str, why: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        what,
        why: why.into(),
    }
}

/// Lower-cases and checks a domain name: dot-separated labels of
/// `[a-z0-9-]`, each 1..=63 bytes and not starting or ending with `-`.
/// International domains must be given in their `xn--` form.
pub fn normalize_domain(input: &str) -> Result<String, StoreError> {
    let d = input.to_ascii_lowercase();
    if d.is_empty() {
        return Err(invalid("domain", "empty"));
    }
    if d.len() > MAX_DOMAIN_LEN {
        return Err(invalid(
            "domain",
            format!("longer than {MAX_DOMAIN_LEN} bytes"),
        ));
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Err(invalid("domain", format!("{d:?} has an empty label")));
        }
        if label.len() > 63 {
            return Err(invalid(
                "domain",
                format!("{d:?} has a label over 63 bytes"),
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "domain",
                format!("{d:?}: only letters, digits, '-' and '.' are allowed"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(
                "domain",
                format!("{d:?}: a label starts or ends with '-'"),
            ));
        }
    }
    Ok(d)
}

/// Characters refused in a local part: whitespace and controls (checked
/// separately) and those that would need quoting or could break a header
/// or a protocol line.
const LOCAL_SPECIALS: &[char] = &['@', '<', '>', '(', ')', '[', ']', '\\', ',', ';', ':', '"'];

/// Lower-cases and checks `local@domain`. The local part is 1..=64 bytes
/// without whitespace, control characters or `@<>()[]\,;:"`; the domain
/// follows [`normalize_domain`]; the whole at most 255 bytes.
pub fn normalize_address(input: &str) -> Result<String, StoreError> {
    let a = input.to_ascii_lowercase();
    if a.is_empty() {
        return Err(invalid("address", "empty"));
    }
    if a.len() > MAX_ADDRESS_LEN {
        return Err(invalid(
            "address",
            format!("longer than {MAX_ADDRESS_LEN} bytes"),
        ));
    }
    let Some((local, domain)) = a.rsplit_once('@') else {
        return Err(invalid("address", format!("{a:?} has no '@'")));
    };
    if local.is_empty() {
        return Err(invalid("address", format!("{a:?} has an empty local part")));
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err(invalid(
            "address",
            format!("{a:?}: local part longer than {MAX_LOCAL_LEN} bytes"),
        ));
    }
    if let Some(c) = local
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || LOCAL_SPECIALS.contains(c))
    {
        return Err(invalid(
            "address",
            format!("{a:?}: character {c:?} not allowed in the local part"),
        ));
    }
    normalize_domain(domain).map_err(|e| match e {
        StoreError::Invalid { why, .. } => invalid("address", why),
        other => other,
    })?;
    Ok(a)
}

/// Lower-cases and checks an account name: 1..=64 bytes of `[a-z0-9._-]`.
pub(crate) fn normalize_account(input: &str) -> Result<String, StoreError> {
    let n = input.to_ascii_lowercase();
    if n.is_empty() || n.len() > MAX_ACCOUNT_LEN {
        return Err(invalid(
            "account name",
            format!("must be 1 to {MAX_ACCOUNT_LEN} bytes"),
        ));
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "account name",
            format!("{n:?}: only a-z, 0-9, '.', '_' and '-' are allowed"),
        ));
    }
    Ok(n)
}

/// The domain of an address already normalised (everything after the last `@`).
pub(crate) fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            normalize_address("Bob.Smith+x@Example.COM").ok().as_deref(),
            Some("bob.smith+x@example.com")
        );
        for bad in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "bob@@example.com",
            "b ob@example.com",
            "bob@exa mple.com",
            "bob\r\n@example.com",
            "<bob>@example.com",
            "bob@-example.com",
            "bob@example..com",
            "bob@example.com.",
            "bob@exa_mple.com",
        ] {
            assert!(
                matches!(
                    normalize_address(bad),
                    Err(StoreError::Invalid {
                        what: "address",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(normalize_address(&long_local).is_err());
        let ok_local = format!("{}@example.com", "a".repeat(64));
        assert!(normalize_address(&ok_local).is_ok());
        let long = format!("a@{}.com", "b.".repeat(130));
        assert!(normalize_address(&long).is_err());
    }

    #[test]
    fn domains_and_accounts() {
        assert_eq!(
            normalize_domain("Mail.Example.ORG").ok().as_deref(),
            Some("mail.example.org")
        );
        assert!(normalize_domain("localhost").is_ok());
        assert!(normalize_domain("xn--bcher-kva.example").is_ok());
        assert!(normalize_domain("bücher.example").is_err());
        assert!(normalize_domain(&"a".repeat(64)).is_err());
        assert_eq!(
            normalize_account("Acme-Hosting_1.x").ok().as_deref(),
            Some("acme-hosting_1.x")
        );
        assert!(normalize_account("").is_err());
        assert!(normalize_account("a b").is_err());
        assert!(normalize_account("a/b").is_err());
        assert!(normalize_account(&"a".repeat(65)).is_err());
        assert_eq!(domain_of("a@b.example"), "b.example");
    }
}
