//! `[memory]`: the one budget for client data in flight, shared by every
//! service (issue 10). Each connection holds a small fixed amount (its line
//! buffers, see ARCHITECTURE.md); everything a client can make larger than
//! that (a message read whole for IMAP FETCH, POP3 RETR/TOP or the relay, the
//! prefix an SMTP DATA keeps for the scorer, an APPEND's buffers) is leased
//! from this budget first. When it is spent, new work waits a little, then
//! gets the protocol's temporary error; nothing aborts.

use crate::validate::{ConfigError, invalid};
use serde::{Deserialize, Serialize};

/// The embedded default: 256 MiB.
pub const MEMORY_CLIENT_DATA_BYTES: u64 = 256 * 1024 * 1024;
/// How long work waits for room in the budget before its temporary error.
pub const MEMORY_WAIT_SECS: u64 = 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Memory {
    /// Bytes of client data in flight at once, all services together (above
    /// each connection's fixed buffers). Must hold at least two of the
    /// largest messages (`smtp.max_message_bytes`, `imap.max_literal_bytes`).
    pub client_data_bytes: u64,
    /// Seconds a request waits for room before it is refused with a
    /// temporary error (SMTP 451 4.3.2, IMAP NO [UNAVAILABLE], POP3
    /// -ERR [SYS/TEMP]; the relay tries the message later).
    pub wait_secs: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            client_data_bytes: MEMORY_CLIENT_DATA_BYTES,
            wait_secs: MEMORY_WAIT_SECS,
        }
    }
}

impl Memory {
    /// `largest_message`: the largest message any service accepts.
    pub(crate) fn validate(&self, largest_message: u64) -> Result<(), ConfigError> {
        let least = largest_message.saturating_mul(2);
        if self.client_data_bytes < least || self.client_data_bytes > 1 << 40 {
            return Err(invalid(
                "memory.client_data_bytes",
                format!(
                    "{} must be between {least} (twice the largest message) and 1 TiB",
                    self.client_data_bytes
                ),
            ));
        }
        if !(1..=600).contains(&self.wait_secs) {
            return Err(invalid(
                "memory.wait_secs",
                format!("{} must be 1..=600", self.wait_secs),
            ));
        }
        Ok(())
    }
}
