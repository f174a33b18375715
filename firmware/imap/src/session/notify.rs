//! NOTIFY (RFC 5465): the client names events and mailboxes, and the
//! server pushes them as they happen, between commands and during IDLE,
//! not only when the client asks.
//!
//! How changes are found: the store sends one change notice per account on
//! every committed change (`Store::subscribe_changes`, the notices that
//! already wake IDLE). A notice for this session's account makes it read
//! the account's folder list (one read transaction) and compare it with
//! what it last reported (`Known`, per folder id): a new id is a created
//! folder, a vanished one a deleted folder, a new name a rename, a flipped
//! `subscribed` a subscription change, a moved HIGHESTMODSEQ or UIDNEXT a
//! change of messages (then that folder's messages are counted). Because
//! the session diffs state rather than queueing notices, a lagged notice
//! channel loses nothing: the next diff reports everything.
//!
//! Bounds: the names in one NOTIFY (`NOTIFY_MAILBOXES_MAX`, parser), the
//! folders followed (an account's, at most the store's
//! `FOLDERS_PER_MAILBOX_MAX`), and the responses one change round may
//! push (`NOTIFY_PENDING_EVENTS_MAX`): more, and the session
//! sends `* OK [NOTIFICATIONOVERFLOW]` and stops notifying, as after
//! NOTIFY NONE (RFC 5465 5.8); the client resynchronises itself.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mxrack_net::{Conn, Deadlines, ShutdownSignal};
use mxrack_store::{Folder, MessageMeta, StoreError};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{FetchMode, Session, blocking, invalid_mailbox_name};
use crate::parser::{Event, EventGroup, FetchAtt, Filter, Notify as NotifyCommand};
use crate::sequence::{Bound, SequenceSet};

/// Most untagged responses one round of changes may push (folders'
/// STATUS and LIST responses, FETCH of new messages in the selected
/// mailbox). More is a NOTIFICATIONOVERFLOW (RFC 5465 5.8).
pub const NOTIFY_PENDING_EVENTS_MAX: usize = 256;

/// The events this server can report (RFC 5465 5): the BADEVENT list.
const SUPPORTED_EVENTS: &str =
    "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange";

#[derive(Debug, Clone, Default)]
struct Events {
    /// MessageNew and MessageExpunge (they always come together).
    messages: bool,
    flags: bool,
    names: bool,
    subscriptions: bool,
    /// MessageNew's fetch attributes (selected mailbox only).
    fetch: Vec<FetchAtt>,
}

impl Events {
    fn from(events: &[Event]) -> Events {
        let mut e = Events::default();
        for ev in events {
            match ev {
                Event::MessageNew(atts) => {
                    e.messages = true;
                    e.fetch = atts.clone();
                }
                Event::MessageExpunge => e.messages = true,
                Event::FlagChange => e.flags = true,
                Event::MailboxName => e.names = true,
                Event::SubscriptionChange => e.subscriptions = true,
                Event::Other(_) => {}
            }
        }
        e
    }
}

/// RFC 5465 6: the filters other than the selected mailbox, most specific
/// last in `rank` order.
#[derive(Debug, Clone)]
enum Scope {
    Personal,
    Inboxes,
    Subscribed,
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

impl Scope {
    /// A mailbox in several filters gets the events of the most specific
    /// one (RFC 5465 6: a `mailboxes` group can turn off events that
    /// `personal` turns on).
    fn rank(&self) -> u8 {
        match self {
            Scope::Personal => 1,
            Scope::Inboxes => 2,
            Scope::Subscribed => 3,
            Scope::Subtree(_) => 4,
            Scope::Mailboxes(_) => 5,
        }
    }

    fn covers(&self, name: &str, subscribed: bool) -> bool {
        match self {
            Scope::Personal => true,
            // Mail is delivered to INBOX only (filing rules move it later).
            Scope::Inboxes => name == "INBOX",
            Scope::Subscribed => subscribed,
            Scope::Subtree(roots) => roots.iter().any(|r| {
                name == r
                    || name
                        .strip_prefix(r.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }),
            Scope::Mailboxes(names) => names.iter().any(|n| n == name),
        }
    }
}

/// What the session last reported of one folder.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    subscribed: bool,
    uidnext: u32,
    modseq: u64,
    /// Message and unseen counts, when this folder's messages are followed.
    counts: Option<(usize, usize)>,
}

/// A session's NOTIFY SET.
pub(super) struct Notify {
    /// The `selected` (or `selected-delayed`, the bool) group's events.
    selected: Option<(Events, bool)>,
    groups: Vec<(Scope, Events)>,
    known: HashMap<u64, Known>,
    /// The selected folder and its highest UID whose MessageNew was sent.
    reported_new: Option<(String, u32)>,
}

impl Notify {
    fn events_for(&self, name: &str, subscribed: bool) -> Option<&Events> {
        self.groups
            .iter()
            .filter(|(s, _)| s.covers(name, subscribed))
            .max_by_key(|(s, _)| s.rank())
            .map(|(_, e)| e)
    }

    fn follows_messages(&self, name: &str, subscribed: bool) -> bool {
        self.events_for(name, subscribed)
            .is_some_and(|e| e.messages || e.flags)
    }
}

fn counts(messages: &[MessageMeta]) -> (usize, usize) {
    let unseen = messages
        .iter()
        .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
        .count();
    (messages.len(), unseen)
}

/// What `notify_wait` saw first.
pub(super) enum Waited {
    /// Client input is buffered (or NOTIFY went off): read a command.
    Ready,
    /// The idle time passed with no command.
    Idle,
    Shutdown,
    Gone,
}

impl Session {
    /// NOTIFY SET / NOTIFY NONE.
    pub(super) async fn notify_command(
        &mut self,
        tag: &str,
        cmd: NotifyCommand,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let (status, groups) = match cmd {
            NotifyCommand::None => {
                self.notify = None;
                return Ok(format!("{tag} OK NOTIFY completed\r\n"));
            }
            NotifyCommand::Set { status, groups } => (status, groups),
        };
        // RFC 5465 3.1: an event the server cannot report is refused with
        // BADEVENT listing those it can; NOTIFY stays as it was.
        if groups
            .iter()
            .flat_map(|g| &g.events)
            .any(|e| matches!(e, Event::Other(_)))
        {
            return Ok(format!(
                "{tag} NO [BADEVENT ({SUPPORTED_EVENTS})] Unsupported event\r\n"
            ));
        }
        let mut selected = None;
        let mut scopes = Vec::new();
        for EventGroup { filter, events } in groups {
            let ev = Events::from(&events);
            let scope = match filter {
                Filter::Selected => {
                    selected = Some((ev, false));
                    continue;
                }
                Filter::SelectedDelayed => {
                    selected = Some((ev, true));
                    continue;
                }
                Filter::Personal => Scope::Personal,
                Filter::Inboxes => Scope::Inboxes,
                Filter::Subscribed => Scope::Subscribed,
                Filter::Subtree(names) => match self.notify_names(&names) {
                    Some(n) => Scope::Subtree(n),
                    None => return Ok(invalid_mailbox_name(tag)),
                },
                Filter::Mailboxes(names) => match self.notify_names(&names) {
                    Some(n) => Scope::Mailboxes(n),
                    None => return Ok(invalid_mailbox_name(tag)),
                },
            };
            scopes.push((scope, ev));
        }
        let mut n = Notify {
            selected,
            groups: scopes,
            known: HashMap::new(),
            reported_new: self.selected_max_uid(),
        };
        let user = self.user.clone().unwrap_or_default();
        let folders = blocking(&self.svc.store, move |s| followed_folders(s, &user)).await?;
        let selected_name = self.selected.as_ref().map(|s| s.name.clone());
        let counted: Vec<String> = folders
            .iter()
            .filter(|f| n.follows_messages(&f.name, f.subscribed))
            .map(|f| f.name.clone())
            .collect();
        let counts = self.count_folders(counted).await;
        let mut out = Vec::new();
        for f in &folders {
            let c = counts.get(&f.name).copied();
            // RFC 5465 3.1 (STATUS): the current state of every mailbox
            // the events are about, but never of the selected one.
            if status
                && let Some((messages, _)) = c
                && selected_name.as_deref() != Some(f.name.as_str())
            {
                let flags = n.events_for(&f.name, f.subscribed).is_some_and(|e| e.flags);
                out.extend_from_slice(b"* STATUS ");
                out.extend_from_slice(&self.quoted_name(&f.name));
                out.extend_from_slice(
                    format!(
                        " (MESSAGES {messages} UIDNEXT {} UIDVALIDITY {}",
                        f.uidnext, f.uidvalidity
                    )
                    .as_bytes(),
                );
                if flags {
                    out.extend_from_slice(format!(" HIGHESTMODSEQ {}", f.highestmodseq).as_bytes());
                }
                out.extend_from_slice(b")\r\n");
            }
            n.known.insert(f.id, known(f, c));
        }
        conn.write(&out);
        self.notify = Some(n);
        Ok(format!("{tag} OK NOTIFY completed\r\n"))
    }

    /// The names of a `subtree`/`mailboxes` filter, decoded as any
    /// mailbox name; INBOX in any case is INBOX.
    fn notify_names(&self, names: &[Vec<u8>]) -> Option<Vec<String>> {
        names
            .iter()
            .map(|n| {
                let name = self.decode_name(n)?;
                Some(if name.eq_ignore_ascii_case("INBOX") {
                    "INBOX".to_string()
                } else {
                    name.trim_end_matches('/').to_string()
                })
            })
            .collect()
    }

    fn selected_max_uid(&self) -> Option<(String, u32)> {
        self.selected.as_ref().map(|s| {
            (
                s.name.clone(),
                s.messages.last().map(|m| m.uid).unwrap_or(0),
            )
        })
    }

    /// Message and unseen counts of the named folders (one blocking task);
    /// a folder gone meanwhile is left out.
    async fn count_folders(&self, names: Vec<String>) -> HashMap<String, (usize, usize)> {
        if names.is_empty() {
            return HashMap::new();
        }
        let user = self.user.clone().unwrap_or_default();
        blocking(&self.svc.store, move |s| {
            let mut out = HashMap::new();
            for name in names {
                if let Ok(snap) = s.folder_snapshot(&user, &name) {
                    out.insert(name, counts(&snap.messages));
                }
            }
            Ok(out)
        })
        .await
        .unwrap_or_default()
    }

    /// One round of NOTIFY: everything that changed since the last round,
    /// as STATUS and LIST responses for the other mailboxes and, when
    /// `sync_selected` (no command is running), EXISTS/EXPUNGE/FETCH for
    /// the selected one; then FETCH of the new messages' MessageNew
    /// attributes.
    pub(super) async fn notify_push(&mut self, conn: &mut Conn, sync_selected: bool) {
        let Some(mut n) = self.notify.take() else {
            return;
        };
        let mut out: Vec<u8> = Vec::new();
        let mut responses = 0usize;
        let user = self.user.clone().unwrap_or_default();
        let folders = match blocking(&self.svc.store, move |s| followed_folders(s, &user)).await {
            Ok(f) => f,
            Err(_) => {
                // The store failed for now: try again on the next change.
                self.notify = Some(n);
                return;
            }
        };
        let selected_name = self.selected.as_ref().map(|s| s.name.clone());
        let is_selected = |name: &str| selected_name.as_deref() == Some(name);
        // Folders whose messages changed and are followed: count them.
        let to_count: Vec<String> = folders
            .iter()
            .filter(|f| !is_selected(&f.name) && n.follows_messages(&f.name, f.subscribed))
            .filter(|f| {
                n.known.get(&f.id).is_none_or(|k| {
                    k.counts.is_none() || k.modseq != f.highestmodseq || k.uidnext != f.uidnext
                })
            })
            .map(|f| f.name.clone())
            .collect();
        let counted = self.count_folders(to_count).await;
        let present: HashSet<u64> = folders.iter().map(|f| f.id).collect();
        // Deleted folders (RFC 5465 5.4: LIST with \NonExistent).
        let mut gone: Vec<u64> = n
            .known
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        gone.sort_unstable();
        for id in gone {
            let Some(k) = n.known.remove(&id) else {
                continue;
            };
            if n.events_for(&k.name, k.subscribed).is_some_and(|e| e.names) {
                out.extend_from_slice(b"* LIST (\\NonExistent) \"/\" ");
                out.extend_from_slice(&self.quoted_name(&k.name));
                out.extend_from_slice(b"\r\n");
                responses += 1;
            }
        }
        for f in &folders {
            let ev = n.events_for(&f.name, f.subscribed).cloned();
            let c = counted.get(&f.name).copied();
            let before = n.known.get(&f.id).cloned();
            let names = ev.as_ref().is_some_and(|e| e.names);
            match &before {
                // Created (RFC 5465 5.4: a LIST response for the name).
                None if names => {
                    out.extend_from_slice(b"* LIST () \"/\" ");
                    out.extend_from_slice(&self.quoted_name(&f.name));
                    out.extend_from_slice(b"\r\n");
                    responses += 1;
                }
                // Renamed: LIST with the OLDNAME extended item (RFC 5465 5.4).
                Some(k)
                    if k.name != f.name
                        && (names
                            || n.events_for(&k.name, k.subscribed).is_some_and(|e| e.names)) =>
                {
                    out.extend_from_slice(b"* LIST () \"/\" ");
                    out.extend_from_slice(&self.quoted_name(&f.name));
                    out.extend_from_slice(b" (\"OLDNAME\" (");
                    out.extend_from_slice(&self.quoted_name(&k.name));
                    out.extend_from_slice(b"))\r\n");
                    responses += 1;
                }
                _ => {}
            }
            if let Some(k) = &before
                && k.subscribed != f.subscribed
                && ev.as_ref().is_some_and(|e| e.subscriptions)
            {
                // RFC 5465 5.5: LIST with or without \Subscribed.
                let attr = if f.subscribed { "\\Subscribed" } else { "" };
                out.extend_from_slice(format!("* LIST ({attr}) \"/\" ").as_bytes());
                out.extend_from_slice(&self.quoted_name(&f.name));
                out.extend_from_slice(b"\r\n");
                responses += 1;
            }
            // Messages of a folder other than the selected one: a STATUS
            // (RFC 5465 5.2, 5.3) against the baseline: what was counted at
            // NOTIFY SET, the last round, or when the session left the
            // folder (`notify_left`); a folder created since the last round
            // started empty (UIDNEXT 1, RFC 3501 2.3.1.1), so mail that came
            // with its creation is reported too.
            let base = before.clone().unwrap_or_else(|| Known {
                name: f.name.clone(),
                subscribed: f.subscribed,
                uidnext: 1,
                modseq: f.highestmodseq,
                counts: Some((0, 0)),
            });
            if let (Some(ev), Some((messages, unseen))) = (&ev, c)
                && let Some((old_messages, old_unseen)) = base.counts
            {
                let k = &base;
                let added = f.uidnext.saturating_sub(k.uidnext) as usize;
                let new = added > 0;
                let expunged = messages < old_messages + added;
                let flags =
                    !new && !expunged && (unseen != old_unseen || k.modseq != f.highestmodseq);
                if (ev.messages && (new || expunged)) || (ev.flags && flags) {
                    out.extend_from_slice(b"* STATUS ");
                    out.extend_from_slice(&self.quoted_name(&f.name));
                    out.extend_from_slice(
                        format!(
                            " (MESSAGES {messages} UIDNEXT {} UIDVALIDITY {} UNSEEN {unseen}",
                            f.uidnext, f.uidvalidity
                        )
                        .as_bytes(),
                    );
                    if ev.flags {
                        out.extend_from_slice(
                            format!(" HIGHESTMODSEQ {}", f.highestmodseq).as_bytes(),
                        );
                    }
                    out.extend_from_slice(b")\r\n");
                    responses += 1;
                }
            }
            let counts = if is_selected(&f.name) {
                None
            } else {
                c.or(before.and_then(|k| k.counts))
            };
            n.known.insert(f.id, known(f, counts));
        }
        if responses > NOTIFY_PENDING_EVENTS_MAX {
            self.notify_overflow(conn);
            return;
        }
        conn.write(&out);
        // The selected mailbox: its own responses (RFC 5465 5.1, 5.2, 5.3).
        let selected_events = n.selected.clone();
        self.notify = Some(n);
        let Some((ev, delayed)) = selected_events else {
            return;
        };
        if sync_selected && (ev.messages || ev.flags) && self.selected.is_some() {
            // selected-delayed keeps EXPUNGE for a command that allows it.
            self.sync(conn, !delayed).await;
        }
        self.notify_new_messages(&ev, conn).await;
    }

    /// The session leaves the selected folder `name` (SELECT of another,
    /// CLOSE, UNSELECT): while it was selected its changes went out as
    /// EXISTS/EXPUNGE/FETCH and NOTIFY kept no counts for it, so the
    /// baseline of its STATUS events is taken now; otherwise its first
    /// change after this would only be counted, not reported.
    pub(super) async fn notify_left(&mut self, name: String) {
        if self.notify.is_none() {
            return;
        }
        let user = self.user.clone().unwrap_or_default();
        let snap = blocking(&self.svc.store, move |s| s.folder_snapshot(&user, &name)).await;
        let (Ok(snap), Some(n)) = (snap, self.notify.as_mut()) else {
            return;
        };
        if let Some(k) = n.known.get_mut(&snap.folder.id) {
            k.uidnext = snap.folder.uidnext;
            k.modseq = snap.folder.highestmodseq;
            k.counts = Some(counts(&snap.messages));
        }
    }

    /// MessageNew with fetch attributes: a FETCH of each message that
    /// came into the selected mailbox since the last round.
    async fn notify_new_messages(&mut self, ev: &Events, conn: &mut Conn) {
        let now = self.selected_max_uid();
        let before = match self.notify.as_mut() {
            Some(n) => std::mem::replace(&mut n.reported_new, now.clone()),
            None => return,
        };
        let (Some((name, max)), Some((old_name, old_max))) = (now, before) else {
            return;
        };
        if ev.fetch.is_empty() || name != old_name || max <= old_max {
            return;
        }
        let new = self
            .selected
            .as_ref()
            .map_or(0, |s| s.messages.iter().filter(|m| m.uid > old_max).count());
        if new > NOTIFY_PENDING_EVENTS_MAX {
            self.notify_overflow(conn);
            return;
        }
        let set = SequenceSet(vec![(Bound::Num(old_max + 1), Bound::Num(max))]);
        // The tagged text is not for the client: no command asked. No
        // attribute sets \Seen: the client did not read the message, the
        // server announced it (RFC 5465 5.2: as if with BODY.PEEK).
        let _ = self
            .fetch_as(
                "*",
                true,
                &set,
                ev.fetch.clone(),
                None,
                FetchMode::Peek,
                conn,
            )
            .await;
    }

    fn notify_overflow(&mut self, conn: &mut Conn) {
        // RFC 5465 5.8: the server stops notifying, as after NOTIFY NONE.
        self.notify = None;
        conn.write(b"* OK [NOTIFICATIONOVERFLOW] Too many events; NOTIFY is off\r\n");
    }

    /// Waits for the client's next command while NOTIFY is on, pushing
    /// each change of this account as it is committed (RFC 5465 1: "the
    /// server sends notifications ... while the client is idle"). The idle
    /// time runs from the start of the wait, not from the last push.
    pub(super) async fn notify_wait(
        &mut self,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
    ) -> Waited {
        let end = Instant::now() + Duration::from_secs(self.svc.limits.idle_timeout_secs);
        loop {
            if conn.flush().await.is_err() {
                return Waited::Gone;
            }
            if self.notify.is_none() {
                return Waited::Ready;
            }
            let user = self.user.clone().unwrap_or_default();
            let Some(rx) = self.changes.as_mut() else {
                return Waited::Ready;
            };
            let d = Deadlines {
                idle: end.saturating_duration_since(Instant::now()),
                command: Duration::from_secs(self.svc.limits.command_timeout_secs),
                phase_end: None,
            };
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Waited::Shutdown,
                r = conn.await_command(&d) => {
                    return match r {
                        Ok(Some(_)) => Waited::Ready,
                        Ok(None) => Waited::Idle,
                        Err(_) => Waited::Gone,
                    };
                }
                notice = rx.recv() => match notice {
                    Ok(m) if *m != *user => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => self.notify_push(conn, true).await,
                    // No more notices (the store is closing): plain reads.
                    Err(RecvError::Closed) => return Waited::Ready,
                },
            }
        }
    }
}

/// A folder and whether its name is subscribed (subscriptions are kept
/// apart from folders, so a deleted folder's subscription outlives it).
struct Followed {
    folder: Folder,
    subscribed: bool,
}

impl std::ops::Deref for Followed {
    type Target = Folder;
    fn deref(&self) -> &Folder {
        &self.folder
    }
}

/// The user's folders with their subscription state, read together.
fn followed_folders(store: &mxrack_store::Store, user: &str) -> Result<Vec<Followed>, StoreError> {
    let subscribed: HashSet<String> = store.subscriptions(user)?.into_iter().collect();
    Ok(store
        .folder_list(user)?
        .into_iter()
        .map(|folder| Followed {
            subscribed: subscribed.contains(&folder.name),
            folder,
        })
        .collect())
}

fn known(f: &Followed, counts: Option<(usize, usize)>) -> Known {
    Known {
        name: f.name.clone(),
        subscribed: f.subscribed,
        uidnext: f.uidnext,
        modseq: f.highestmodseq,
        counts,
    }
}
