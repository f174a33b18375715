//! The NOTIFY command (RFC 5465 8, formal syntax): which events the
//! client wants pushed, for which mailboxes. Pure, like the rest of the
//! parser; the checks that need the session (unsupported events, names)
//! are made by `session/notify.rs`.

use super::{Cursor, FetchAtt, LIST_ITEMS_MAX, R};

/// Most mailbox names in one NOTIFY command, over all its `subtree` and
/// `mailboxes` filters: each is matched against every folder on every
/// change, so the work per change stays bounded.
pub const NOTIFY_MAILBOXES_MAX: usize = 100;
/// Most event groups in one NOTIFY SET (there are seven kinds of filter;
/// a client may repeat `subtree`/`mailboxes`).
pub const NOTIFY_GROUPS_MAX: usize = 16;
/// Most fetch attributes after `MessageNew`.
pub const NOTIFY_FETCH_ATTS_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// NOTIFY NONE: no more notifications (RFC 5465 3.2).
    None,
    /// NOTIFY SET [STATUS] event-groups (RFC 5465 3.1).
    Set {
        status: bool,
        groups: Vec<EventGroup>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventGroup {
    pub filter: Filter,
    /// Empty for `NONE`: the filter's mailboxes get no notifications.
    pub events: Vec<Event>,
}

/// RFC 5465 6: which mailboxes a group is about. Names are as sent
/// (modified UTF-7 or UTF-8); the session decodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Selected,
    SelectedDelayed,
    Inboxes,
    Personal,
    Subscribed,
    Subtree(Vec<Vec<u8>>),
    Mailboxes(Vec<Vec<u8>>),
}

/// RFC 5465 5: the events; `Other` is any event this server does not
/// know (`event-ext`), answered with BADEVENT by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    MessageNew(Vec<FetchAtt>),
    MessageExpunge,
    FlagChange,
    MailboxName,
    SubscriptionChange,
    Other(String),
}

impl Event {
    pub fn name(&self) -> &str {
        match self {
            Event::MessageNew(_) => "MessageNew",
            Event::MessageExpunge => "MessageExpunge",
            Event::FlagChange => "FlagChange",
            Event::MailboxName => "MailboxName",
            Event::SubscriptionChange => "SubscriptionChange",
            Event::Other(n) => n,
        }
    }
}

impl Cursor<'_> {
    /// After "NOTIFY".
    pub(super) fn notify(&mut self) -> R<Notify> {
        self.sp()?;
        if self.keyword("NONE") {
            return Ok(Notify::None);
        }
        if !self.keyword("SET") {
            return Err("NOTIFY takes SET or NONE".into());
        }
        self.sp()?;
        let status = self.keyword("STATUS");
        if status {
            self.sp()?;
        }
        let mut groups = Vec::new();
        let mut names = 0;
        loop {
            let group = self.event_group()?;
            if let Filter::Subtree(n) | Filter::Mailboxes(n) = &group.filter {
                names += n.len();
                if names > NOTIFY_MAILBOXES_MAX {
                    return Err(format!(
                        "[LIMIT] at most {NOTIFY_MAILBOXES_MAX} mailbox names in NOTIFY"
                    ));
                }
            }
            groups.push(group);
            if groups.len() > NOTIFY_GROUPS_MAX {
                return Err(format!(
                    "[LIMIT] at most {NOTIFY_GROUPS_MAX} event groups in NOTIFY"
                ));
            }
            if !self.eat(b' ') {
                return Ok(Notify::Set { status, groups });
            }
        }
    }

    /// event-group = "(" filter-mailboxes SP events ")"
    fn event_group(&mut self) -> R<EventGroup> {
        self.open()?;
        let word = self.atom()?.to_ascii_uppercase();
        let filter = match word.as_str() {
            "SELECTED" => Filter::Selected,
            "SELECTED-DELAYED" => Filter::SelectedDelayed,
            "INBOXES" => Filter::Inboxes,
            "PERSONAL" => Filter::Personal,
            "SUBSCRIBED" => Filter::Subscribed,
            "SUBTREE" | "MAILBOXES" => {
                self.sp()?;
                let names = self.one_or_more_mailbox()?;
                if word == "SUBTREE" {
                    Filter::Subtree(names)
                } else {
                    Filter::Mailboxes(names)
                }
            }
            _ => return Err(format!("unknown NOTIFY filter {word}")),
        };
        self.sp()?;
        let selected = matches!(filter, Filter::Selected | Filter::SelectedDelayed);
        let events = if self.keyword("NONE") {
            Vec::new()
        } else {
            self.events(selected)?
        };
        self.close()?;
        Ok(EventGroup { filter, events })
    }

    /// one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")"
    fn one_or_more_mailbox(&mut self) -> R<Vec<Vec<u8>>> {
        if self.peek() != Some(b'(') {
            return Ok(vec![self.astring()?]);
        }
        self.open()?;
        let mut names = Vec::new();
        loop {
            names.push(self.astring()?);
            if names.len() > NOTIFY_MAILBOXES_MAX {
                return Err(format!(
                    "[LIMIT] at most {NOTIFY_MAILBOXES_MAX} mailbox names in NOTIFY"
                ));
            }
            if self.eat(b')') {
                break;
            }
            self.sp()?;
        }
        self.depth -= 1;
        Ok(names)
    }

    /// events = "(" event *(SP event) ")", with the rules of RFC 5465 5:
    /// MessageNew and MessageExpunge come together, FlagChange only with
    /// them, and fetch attributes only for the selected mailbox.
    fn events(&mut self, selected: bool) -> R<Vec<Event>> {
        self.open()?;
        let mut events = Vec::new();
        loop {
            let word = self.atom()?;
            let event = match word.to_ascii_uppercase().as_str() {
                "MESSAGENEW" => {
                    let mut atts = Vec::new();
                    if self.peek() == Some(b' ') && self.buf.get(self.pos + 1) == Some(&b'(') {
                        if !selected {
                            return Err(
                                "MessageNew fetch attributes are only for the selected mailbox"
                                    .into(),
                            );
                        }
                        self.pos += 1;
                        self.open()?;
                        loop {
                            atts.push(self.fetch_att()?);
                            if atts.len() > NOTIFY_FETCH_ATTS_MAX {
                                return Err("too many fetch attributes".into());
                            }
                            if self.eat(b')') {
                                break;
                            }
                            self.sp()?;
                        }
                        self.depth -= 1;
                    }
                    Event::MessageNew(atts)
                }
                "MESSAGEEXPUNGE" => Event::MessageExpunge,
                "FLAGCHANGE" => Event::FlagChange,
                "MAILBOXNAME" => Event::MailboxName,
                "SUBSCRIPTIONCHANGE" => Event::SubscriptionChange,
                _ => Event::Other(word),
            };
            events.push(event);
            if events.len() > LIST_ITEMS_MAX {
                return Err("too many events".into());
            }
            if self.eat(b')') {
                break;
            }
            self.sp()?;
        }
        self.depth -= 1;
        let has = |f: fn(&Event) -> bool| events.iter().any(f);
        let new = has(|e| matches!(e, Event::MessageNew(_)));
        let expunge = has(|e| matches!(e, Event::MessageExpunge));
        if new != expunge {
            return Err("MessageNew and MessageExpunge go together (RFC 5465 5)".into());
        }
        if has(|e| matches!(e, Event::FlagChange)) && !new {
            return Err("FlagChange needs MessageNew and MessageExpunge (RFC 5465 5)".into());
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, ParseError, parse_request};
    use super::*;

    fn notify(line: &str) -> Result<Notify, String> {
        match parse_request(format!("t {line}\r\n").as_bytes()) {
            Ok(r) => match r.command {
                Command::Notify(n) => Ok(n),
                other => panic!("{other:?}"),
            },
            Err(ParseError::Bad { text, .. }) => Err(text),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn notify_commands() {
        let new = || Event::MessageNew(vec![]);
        let table: Vec<(&str, Result<Notify, &str>)> = vec![
            ("NOTIFY NONE", Ok(Notify::None)),
            (
                "notify set status (selected (MessageNew (uid flags) MessageExpunge FlagChange)) (inboxes NONE)",
                Ok(Notify::Set {
                    status: true,
                    groups: vec![
                        EventGroup {
                            filter: Filter::Selected,
                            events: vec![
                                Event::MessageNew(vec![FetchAtt::Uid, FetchAtt::Flags]),
                                Event::MessageExpunge,
                                Event::FlagChange,
                            ],
                        },
                        EventGroup {
                            filter: Filter::Inboxes,
                            events: vec![],
                        },
                    ],
                }),
            ),
            (
                "NOTIFY SET (subtree (Lists \"A b\") (MessageNew MessageExpunge)) (mailboxes misc (MailboxName SubscriptionChange XEvent))",
                Ok(Notify::Set {
                    status: false,
                    groups: vec![
                        EventGroup {
                            filter: Filter::Subtree(vec![b"Lists".to_vec(), b"A b".to_vec()]),
                            events: vec![new(), Event::MessageExpunge],
                        },
                        EventGroup {
                            filter: Filter::Mailboxes(vec![b"misc".to_vec()]),
                            events: vec![
                                Event::MailboxName,
                                Event::SubscriptionChange,
                                Event::Other("XEvent".into()),
                            ],
                        },
                    ],
                }),
            ),
            ("NOTIFY", Err("expected a space")),
            ("NOTIFY SET", Err("expected a space")),
            ("NOTIFY SET ()", Err("expected an atom")),
            ("NOTIFY SET (personal)", Err("expected a space")),
            ("NOTIFY SET (personal ())", Err("expected an atom")),
            (
                "NOTIFY SET (personal (MessageExpunge))",
                Err("MessageNew and MessageExpunge go together (RFC 5465 5)"),
            ),
            (
                "NOTIFY SET (selected-delayed (FlagChange))",
                Err("FlagChange needs MessageNew and MessageExpunge (RFC 5465 5)"),
            ),
            (
                "NOTIFY SET (inboxes (MessageNew (UID) MessageExpunge))",
                Err("MessageNew fetch attributes are only for the selected mailbox"),
            ),
            (
                "NOTIFY SET (mailboxes (MessageNew MessageExpunge))",
                Err("expected a space"),
            ),
            ("NOTIFY MAYBE", Err("NOTIFY takes SET or NONE")),
        ];
        for (line, want) in table {
            assert_eq!(notify(line), want.map_err(String::from), "{line}");
        }
        let many = (0..=NOTIFY_GROUPS_MAX)
            .map(|_| "(personal NONE)")
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            notify(&format!("NOTIFY SET {many}")),
            Err(format!(
                "[LIMIT] at most {NOTIFY_GROUPS_MAX} event groups in NOTIFY"
            ))
        );
    }
}
