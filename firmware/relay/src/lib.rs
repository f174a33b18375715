//! Outbound mail: the queue runner, the SMTP client, routing (routes,
//! smarthost, MX), delivery status notifications and SRS.

pub mod client;
pub mod dsn;
pub mod route;
pub mod runner;
pub mod sign;
pub mod srs;

pub use client::{ClientConfig, Credentials, RcptOutcome, Session, opportunistic_tls};
pub use route::Router;
pub use runner::{Relay, RelayStats, RunnerConfig};
pub use sign::{Outgoing, SignHook};
pub use srs::Srs;
