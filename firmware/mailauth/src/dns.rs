//! The one DNS resolver of the appliance (hickory, the version mail-auth
//! is built on: one version in the binary), configured by `[dns]`: the
//! relay's MX lookups and every SPF, DKIM and DMARC lookup share it and
//! its cache.

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::name_server::TokioConnectionProvider;
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use std::time::Duration;

/// Answers kept in the resolver's cache.
pub const DNS_CACHE_ENTRIES: usize = 4096;

/// The resolver `[dns]` describes: its servers (UDP, then TCP for
/// truncated answers), else the system's (/etc/resolv.conf).
pub fn resolver(cfg: &mxrack_config::Dns) -> Result<TokioResolver, String> {
    let (config, opts) = resolver_parts(cfg)?;
    Ok(
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build(),
    )
}

/// The servers and options `[dns]` describes, for [`resolver`] and for
/// the relay's DNSSEC-validating resolver (DANE), which asks the same
/// servers.
pub fn resolver_parts(cfg: &mxrack_config::Dns) -> Result<(ResolverConfig, ResolverOpts), String> {
    let (config, mut opts) = if cfg.servers.is_empty() {
        read_system_conf().map_err(|e| format!("cannot read the system's DNS settings: {e}"))?
    } else {
        let mut config =
            ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::with_capacity(0));
        for addr in &cfg.servers {
            for protocol in [ProtocolConfig::Udp, ProtocolConfig::Tcp] {
                let mut ns = NameServerConfig::new(*addr, protocol);
                ns.trust_negative_responses = true;
                config.add_name_server(ns);
            }
        }
        (config, Default::default())
    };
    opts.timeout = Duration::from_millis(cfg.timeout_ms);
    opts.attempts = cfg.attempts;
    opts.cache_size = DNS_CACHE_ENTRIES;
    Ok((config, opts))
}
