//! \Recent (RFC 3501 2.3.2), as Dovecot implements it: a message is
//! \Recent in exactly one session, the first that SELECTs its mailbox (not
//! EXAMINE, which shows the unclaimed ones as recent without taking them)
//! after it arrived, or the selected session that notices it
//! arriving (new mail, or its own COPY/MOVE/APPEND into the mailbox). The
//! store keeps each folder's recent high-water UID and hands a message out
//! once (`Store::claim_recent`); the session keeps the UIDs it was given.
//! Stored flags never hold \Recent: it is added to what is shown (FETCH
//! FLAGS, SEARCH RECENT/NEW/OLD) here.

use std::collections::HashSet;

use mxrack_store::{Folder, MessageMeta};
use tracing::warn;

use super::{Selected, Session, blocking, flag_list};

/// The flags of a message as this session shows them: \Recent first when
/// it is recent here.
pub(super) fn shown_flags(flags: &[String], recent: bool) -> String {
    if !recent {
        return flag_list(flags);
    }
    let mut all = Vec::with_capacity(flags.len() + 1);
    all.push("\\Recent".to_string());
    all.extend(flags.iter().cloned());
    flag_list(&all)
}

/// A copy of `m` whose flags carry \Recent when it is recent here, for code
/// that reads flags from the record (FETCH rendering, SEARCH).
pub(super) fn with_recent(m: &MessageMeta, recent: &HashSet<u32>) -> MessageMeta {
    let mut m = m.clone();
    if recent.contains(&m.uid) {
        m.flags.insert(0, "\\Recent".to_string());
    }
    m
}

/// What a read-only session (EXAMINE) shows as \Recent without taking it:
/// the messages no session has claimed yet (as Dovecot, and imaptest's
/// select script, expect).
pub(super) fn unclaimed(folder: &Folder, view: &[MessageMeta]) -> HashSet<u32> {
    view.iter()
        .map(|m| m.uid)
        .filter(|&u| u >= folder.first_recent_uid)
        .collect()
}

/// How many messages of the session's view are \Recent here (expunged
/// ones no longer count).
pub(super) fn count(sel: &Selected) -> usize {
    sel.messages
        .iter()
        .filter(|m| sel.recent.contains(&m.uid))
        .count()
}

impl Session {
    /// Claims for this session the messages of `view` (the selected
    /// folder's, as the session sees them) that no session has claimed,
    /// up to UIDNEXT `up_to`. A store failure leaves them unclaimed (not
    /// recent here, recent for a later session): \Recent is advisory.
    pub(super) async fn claim_recent(
        &self,
        folder: &str,
        view: &[MessageMeta],
        up_to: u32,
    ) -> HashSet<u32> {
        let (user, name) = (self.user.clone().unwrap_or_default(), folder.to_string());
        match blocking(&self.svc.store, move |s| {
            s.claim_recent(&user, &name, up_to)
        })
        .await
        {
            Ok((from, to)) => view
                .iter()
                .map(|m| m.uid)
                .filter(|u| (from..to).contains(u))
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot claim recent messages");
                HashSet::new()
            }
        }
    }
}
