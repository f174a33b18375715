//! Outbound mail: the queue runner, the SMTP client, routing (routes,
//! smarthost, MX, MTA-STS), delivery status notifications and SRS.

pub mod client;
pub mod dane;
pub mod dnssec;
pub mod dsn;
pub mod mta_sts;
pub mod route;
pub mod runner;
pub mod sign;
pub mod srs;

pub use client::{
    ClientConfig, Credentials, RcptOutcome, Session, opportunistic_tls, verified_tls,
    webpki_verifier,
};
pub use mta_sts::StsResolver;
pub use route::Router;
pub use runner::{Relay, RelayStats, RunnerConfig};
pub use sign::{Outgoing, SignHook};
pub use srs::Srs;
