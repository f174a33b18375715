//! The relay's one signing hook: header fields put above a message when it
//! is sent (DKIM-Signature, and an ARC set on forwarded copies). The relay
//! knows nothing of keys; `mxrack-mailauth` implements it.

use std::future::Future;
use std::pin::Pin;

/// What the hook sees of the copy being sent.
pub struct Outgoing<'a> {
    /// "outbound", "forward" or "bounce".
    pub transport: &'a str,
    pub mail_from: &'a str,
    /// The message as it goes out, without the entry's own prepended
    /// header (which is not signed) and without Return-Path.
    pub message: &'a [u8],
}

pub trait SignHook: Send + Sync {
    /// CRLF-terminated header lines to send above the message; empty when
    /// there is nothing to sign with. Never fails the delivery.
    fn headers<'a>(
        &'a self,
        out: Outgoing<'a>,
    ) -> Pin<Box<dyn Future<Output = String> + Send + 'a>>;
}
