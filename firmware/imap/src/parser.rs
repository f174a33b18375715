//! The IMAP command parser: pure, no I/O (RFC 3501 section 9, with the
//! RFC 9051 / extension forms clients send today).
//!
//! The session hands it one whole command as it came off the wire, literals
//! included (`{n}\r\n` followed by n bytes), so parsing never waits for
//! input; `literal_announced` tells the session, line by line, when a
//! literal follows and how large it is, before any of it is read.

use crate::sequence::SequenceSet;
use crate::sort::SortCriterion;
use crate::thread::Algorithm;

mod sort;
pub use sort::ReturnOpts;

mod append;
pub use append::{Announced, AppendLexer, AppendToken, parse_section};

mod notify;
pub use notify::{
    Event, EventGroup, Filter, NOTIFY_FETCH_ATTS_MAX, NOTIFY_GROUPS_MAX, NOTIFY_MAILBOXES_MAX,
    Notify,
};

/// Deepest nesting of parenthesised lists and search keys.
pub const NESTING_DEPTH_MAX: usize = 32;
/// Most items in one list (fetch attributes, flags, search keys, ...).
pub const LIST_ITEMS_MAX: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub tag: String,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    StartTls,
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Login {
        user: Vec<u8>,
        password: Vec<u8>,
    },
    Id,
    Enable(Vec<String>),
    Namespace,
    Select {
        mailbox: Vec<u8>,
        condstore: bool,
    },
    Examine {
        mailbox: Vec<u8>,
        condstore: bool,
    },
    Create(Vec<u8>),
    Delete(Vec<u8>),
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
    List(ListArgs),
    Lsub {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Status {
        mailbox: Vec<u8>,
        items: Vec<StatusItem>,
    },
    Append {
        mailbox: Vec<u8>,
        flags: Vec<String>,
        date: Option<i64>,
        message: Vec<u8>,
    },
    Check,
    Close,
    Unselect,
    Expunge,
    UidExpunge(SequenceSet),
    Search {
        uid: bool,
        criteria: SearchKey,
        esearch: Option<ReturnOpts>,
    },
    /// RFC 5256 SORT, with RFC 5267 RETURN options.
    Sort {
        uid: bool,
        program: Vec<SortCriterion>,
        criteria: SearchKey,
        ret: Option<ReturnOpts>,
    },
    Thread {
        uid: bool,
        algorithm: Algorithm,
        criteria: SearchKey,
    },
    CancelUpdate(Vec<String>),
    Fetch {
        uid: bool,
        set: SequenceSet,
        items: Vec<FetchAtt>,
        changed_since: Option<u64>,
        /// The VANISHED modifier (RFC 7162 3.2.6).
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SequenceSet,
        op: StoreOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: Vec<u8>,
    },
    Move {
        uid: bool,
        set: SequenceSet,
        mailbox: Vec<u8>,
    },
    Idle,
    /// SELECT/EXAMINE with the QRESYNC parameter (RFC 7162 3.2.5).
    SelectQresync {
        mailbox: Vec<u8>,
        read_only: bool,
        qresync: QresyncArgs,
    },
    GetQuota(Vec<u8>),
    GetQuotaRoot(Vec<u8>),
    /// RFC 5465 (`parser/notify.rs`).
    Notify(Notify),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListArgs {
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    /// LIST-EXTENDED selection options (RFC 5258): SUBSCRIBED, SPECIAL-USE...
    pub select_subscribed: bool,
    pub select_special_use: bool,
    /// RECURSIVEMATCH: a name not selected itself but with a selected
    /// descendant is answered with CHILDINFO (RFC 5258 3.5).
    pub select_recursivematch: bool,
    /// RETURN options.
    pub return_subscribed: bool,
    pub return_children: bool,
    pub return_special_use: bool,
    /// LIST-STATUS (RFC 5819).
    pub return_status: Option<Vec<StatusItem>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Size,
    HighestModSeq,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAtt {
    Flags,
    InternalDate,
    Rfc822Size,
    Envelope,
    /// BODY without a section: the non-extensible BODYSTRUCTURE.
    Body,
    BodyStructure,
    Uid,
    ModSeq,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Section {
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
    /// BINARY[part]<partial> and BINARY.PEEK (RFC 3516 4.1).
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u32, u32)>,
    },
    /// BINARY.SIZE[part] (RFC 3516 4.1).
    BinarySize {
        part: Vec<u32>,
    },
}

/// `QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]])` (RFC 7162
/// 3.2.5). The sequence-match data is parsed and not needed: VANISHED
/// (EARLIER) is computed exactly from the UIDs that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QresyncArgs {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<SequenceSet>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// Part numbers, `1.2.3`; empty for the whole message.
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields { not: bool, fields: Vec<String> },
    Text,
    Mime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    And(Vec<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    Not(Box<SearchKey>),
    Sequence(SequenceSet),
    Uid(SequenceSet),
    /// A flag that must be set (or, with `Unflag`, not set).
    Flag(String),
    Unflag(String),
    New,
    Old,
    Recent,
    Header(String, String),
    Body(String),
    Text(String),
    /// Internal date comparisons, in days since the epoch.
    Before(i64),
    On(i64),
    Since(i64),
    /// Date: header comparisons, in days since the epoch.
    SentBefore(i64),
    SentOn(i64),
    SentSince(i64),
    Larger(u64),
    Smaller(u64),
    ModSeq(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No usable tag: the reply is an untagged BAD.
    NoTag,
    /// Tagged BAD with this text.
    Bad { tag: String, text: String },
    /// Tagged NO: well-formed but refused (RFC 3501 6.4.4: an unsupported
    /// SEARCH charset is NO [BADCHARSET], not BAD).
    No { tag: String, text: String },
}

/// If `line` (CRLF-terminated, as read) ends with a literal announcement,
/// returns `(size, synchronizing)`. `{n}` waits for "+ " (RFC 3501 7.5);
/// `{n+}` does not (LITERAL+, RFC 7888).
pub fn literal_announced(line: &[u8]) -> Option<(u64, bool)> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..];
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

/// An APPEND read up to the end of its mailbox name: the rest (messages,
/// CATENATE parts, MULTIAPPEND, RFC 3502 / 4469) is lexed by
/// [`AppendLexer`] line by line while the session streams the literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendHead {
    pub tag: String,
    pub mailbox: Vec<u8>,
    /// The rest of the last line read, from the space after the mailbox.
    pub rest: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendArgs {
    pub mailbox: Vec<u8>,
    pub flags: Vec<String>,
    pub date: Option<i64>,
}

/// `Some` when `input` (a command as read so far, ending with a line) is
/// `tag APPEND mailbox SP ...` with the mailbox complete. `None` for
/// anything else, including an APPEND whose announced literal is the
/// mailbox name: that literal is read like any other, then this is asked
/// again with it inline.
pub fn parse_append_head(input: &[u8]) -> Option<AppendHead> {
    let mut c = Cursor {
        buf: input,
        pos: 0,
        depth: 0,
    };
    let tag = c.tag()?;
    if !(c.eat(b' ') && c.keyword("APPEND") && c.eat(b' ')) {
        return None;
    }
    let mailbox = c.astring().ok()?;
    if c.peek() != Some(b' ') {
        return None;
    }
    Some(AppendHead {
        tag,
        mailbox,
        rest: input[c.pos..].to_vec(),
    })
}

/// `$`, the saved search result (RFC 5182 2.1, part of RFC 9051): a set
/// no client can write otherwise (0 is never a sequence number or UID);
/// the session puts the saved numbers in its place (`session/searchres.rs`).
pub fn saved_result() -> SequenceSet {
    SequenceSet(vec![(
        crate::sequence::Bound::Num(0),
        crate::sequence::Bound::Num(0),
    )])
}

pub fn parse_request(input: &[u8]) -> Result<Request, ParseError> {
    let mut c = Cursor {
        buf: input,
        pos: 0,
        depth: 0,
    };
    let tag = c.tag().ok_or(ParseError::NoTag)?;
    let bad = |text: String| {
        if text.starts_with("[BADCHARSET") {
            ParseError::No {
                tag: tag.clone(),
                text,
            }
        } else {
            ParseError::Bad {
                tag: tag.clone(),
                text,
            }
        }
    };
    if !c.eat(b' ') {
        return Err(bad("missing command".into()));
    }
    let command = c.command().map_err(bad)?;
    c.eat(b'\r');
    if !c.eat(b'\n') || c.pos != c.buf.len() {
        return Err(bad("unexpected characters at end of command".into()));
    }
    Ok(Request { tag, command })
}

type R<T> = Result<T, String>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

fn is_atom_char(b: u8) -> bool {
    b > 0x20
        && b < 0x7f
        && !matches!(
            b,
            b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']'
        )
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_list_char(b: u8) -> bool {
    is_atom_char(b) || matches!(b, b'%' | b'*' | b']') || b >= 0x80
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn sp(&mut self) -> R<()> {
        if self.eat(b' ') {
            Ok(())
        } else {
            Err("expected a space".into())
        }
    }

    fn tag(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| is_astring_char(b) && b != b'+') {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        Some(String::from_utf8_lossy(&self.buf[start..self.pos]).into_owned())
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    fn atom(&mut self) -> R<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("expected an atom".into());
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    fn keyword(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        if end <= self.buf.len()
            && self.buf[self.pos..end].eq_ignore_ascii_case(word.as_bytes())
            && self
                .buf
                .get(end)
                .is_none_or(|&b| !is_atom_char(b) || b == b'[' || b == b'.')
        {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn number(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return Err("expected a number".into());
        }
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "bad number".into())
    }

    fn number32(&mut self) -> R<u32> {
        u32::try_from(self.number()?).map_err(|_| "number too large".into())
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        if !self.eat(b'"') {
            return Err("expected a quoted string".into());
        }
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b @ (b'"' | b'\\')) => out.push(b),
                        _ => return Err("bad escape in quoted string".into()),
                    }
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> R<Vec<u8>> {
        if !self.eat(b'{') {
            return Err("expected a literal".into());
        }
        // literal8 (RFC 3516 "~{") is not accepted: no BINARY here.
        let n = self.number()?;
        self.eat(b'+');
        if !(self.eat(b'}') && {
            self.eat(b'\r');
            self.eat(b'\n')
        }) {
            return Err("bad literal".into());
        }
        let n = usize::try_from(n).map_err(|_| "literal too large")?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("literal shorter than announced")?;
        let out = self.buf[self.pos..end].to_vec();
        self.pos = end;
        Ok(out)
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            _ => Err("expected a string".into()),
        }
    }

    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string(),
            _ => {
                let a = self.take_while(|b| is_astring_char(b) || b >= 0x80);
                if a.is_empty() {
                    return Err("expected a string or atom".into());
                }
                Ok(a.to_vec())
            }
        }
    }

    fn astring_text(&mut self) -> R<String> {
        String::from_utf8(self.astring()?).map_err(|_| "string is not UTF-8".into())
    }

    fn list_mailbox(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    return Err("expected a mailbox pattern".into());
                }
                Ok(a.to_vec())
            }
        }
    }

    fn open(&mut self) -> R<()> {
        if !self.eat(b'(') {
            return Err("expected (".into());
        }
        self.depth += 1;
        if self.depth > NESTING_DEPTH_MAX {
            return Err("nested too deeply".into());
        }
        Ok(())
    }

    fn close(&mut self) -> R<()> {
        if !self.eat(b')') {
            return Err("expected )".into());
        }
        self.depth -= 1;
        Ok(())
    }

    fn flag(&mut self) -> R<String> {
        if self.eat(b'\\') {
            if self.eat(b'*') {
                return Ok("\\*".into());
            }
            let a = self.atom()?;
            return Ok(format!("\\{a}"));
        }
        self.atom()
    }

    fn flag_list(&mut self) -> R<Vec<String>> {
        let mut out = Vec::new();
        if self.peek() != Some(b'(') {
            // STORE allows flags without parentheses.
            loop {
                out.push(self.flag()?);
                if !self.eat(b' ') {
                    return Ok(out);
                }
            }
        }
        self.open()?;
        if !self.eat(b')') {
            loop {
                out.push(self.flag()?);
                if out.len() > LIST_ITEMS_MAX {
                    return Err("too many flags".into());
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        self.depth -= 1;
        Ok(out)
    }

    fn sequence_set(&mut self) -> R<SequenceSet> {
        let text =
            self.take_while(|b| b.is_ascii_digit() || matches!(b, b':' | b',' | b'*' | b'$'));
        if text == b"$" {
            return Ok(saved_result());
        }
        SequenceSet::parse(text).ok_or_else(|| "bad sequence set".into())
    }

    /// date = day "-" month "-" year, optionally quoted.
    fn date(&mut self) -> R<i64> {
        let quoted = self.eat(b'"');
        let text = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-');
        if quoted && !self.eat(b'"') {
            return Err("bad date".into());
        }
        parse_date(text).ok_or_else(|| "bad date".into())
    }

    fn command(&mut self) -> R<Command> {
        let word = self.atom()?.to_ascii_uppercase();
        let cmd = match word.as_str() {
            "CAPABILITY" => Command::Capability,
            "NOOP" => Command::Noop,
            "LOGOUT" => Command::Logout,
            "STARTTLS" => Command::StartTls,
            "CHECK" => Command::Check,
            "CLOSE" => Command::Close,
            "UNSELECT" => Command::Unselect,
            "EXPUNGE" => Command::Expunge,
            "IDLE" => Command::Idle,
            "NAMESPACE" => Command::Namespace,
            "AUTHENTICATE" => {
                self.sp()?;
                let mechanism = self.atom()?.to_ascii_uppercase();
                let initial = if self.eat(b' ') {
                    let v = self.take_while(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
                    });
                    Some(String::from_utf8_lossy(v).into_owned())
                } else {
                    None
                };
                Command::Authenticate { mechanism, initial }
            }
            "LOGIN" => {
                self.sp()?;
                let user = self.astring()?;
                self.sp()?;
                let password = self.astring()?;
                Command::Login { user, password }
            }
            "ID" => {
                // RFC 2971: the client's fields are accepted and ignored.
                self.sp()?;
                if self.peek() == Some(b'(') {
                    self.open()?;
                    let mut n = 0;
                    while !self.eat(b')') {
                        if n > 60 {
                            return Err("too many ID fields".into());
                        }
                        if self.keyword("NIL") {
                        } else {
                            self.string()?;
                        }
                        self.eat(b' ');
                        n += 1;
                    }
                    self.depth -= 1;
                } else if !self.keyword("NIL") {
                    return Err("ID takes a list or NIL".into());
                }
                Command::Id
            }
            "ENABLE" => {
                let mut caps = Vec::new();
                while self.eat(b' ') {
                    caps.push(self.atom()?.to_ascii_uppercase());
                    if caps.len() > LIST_ITEMS_MAX {
                        return Err("too many capabilities".into());
                    }
                }
                if caps.is_empty() {
                    return Err("ENABLE needs a capability".into());
                }
                Command::Enable(caps)
            }
            "SELECT" | "EXAMINE" => {
                self.sp()?;
                let mailbox = self.astring()?;
                let mut condstore = false;
                let mut qresync = None;
                if self.eat(b' ') {
                    self.open()?;
                    loop {
                        let p = self.atom()?.to_ascii_uppercase();
                        if p == "CONDSTORE" {
                            condstore = true;
                        } else if p == "QRESYNC" {
                            self.sp()?;
                            qresync = Some(self.qresync_args()?);
                        } else {
                            return Err(format!("unknown SELECT parameter {p}"));
                        }
                        if self.eat(b')') {
                            break;
                        }
                        self.sp()?;
                    }
                    self.depth -= 1;
                }
                if let Some(qresync) = qresync {
                    Command::SelectQresync {
                        mailbox,
                        read_only: word == "EXAMINE",
                        qresync,
                    }
                } else if word == "SELECT" {
                    Command::Select { mailbox, condstore }
                } else {
                    Command::Examine { mailbox, condstore }
                }
            }
            "CREATE" => {
                self.sp()?;
                Command::Create(self.astring()?)
            }
            "DELETE" => {
                self.sp()?;
                Command::Delete(self.astring()?)
            }
            "RENAME" => {
                self.sp()?;
                let from = self.astring()?;
                self.sp()?;
                let to = self.astring()?;
                Command::Rename { from, to }
            }
            "SUBSCRIBE" => {
                self.sp()?;
                Command::Subscribe(self.astring()?)
            }
            "UNSUBSCRIBE" => {
                self.sp()?;
                Command::Unsubscribe(self.astring()?)
            }
            "LIST" => self.list()?,
            "LSUB" => {
                self.sp()?;
                let reference = self.astring()?;
                self.sp()?;
                let pattern = self.list_mailbox()?;
                Command::Lsub { reference, pattern }
            }
            "STATUS" => {
                self.sp()?;
                let mailbox = self.astring()?;
                self.sp()?;
                Command::Status {
                    mailbox,
                    items: self.status_items()?,
                }
            }
            "APPEND" => self.append()?,
            "SEARCH" => self.search(false)?,
            "SORT" => self.sort(false)?,
            "THREAD" => self.thread(false)?,
            "CANCELUPDATE" => self.cancel_update()?,
            "FETCH" => self.fetch(false)?,
            "STORE" => self.store(false)?,
            "COPY" | "MOVE" => self.copy(false, word == "MOVE")?,
            "UID" => {
                self.sp()?;
                let sub = self.atom()?.to_ascii_uppercase();
                match sub.as_str() {
                    "SEARCH" => self.search(true)?,
                    "SORT" => self.sort(true)?,
                    "THREAD" => self.thread(true)?,
                    "FETCH" => self.fetch(true)?,
                    "STORE" => self.store(true)?,
                    "COPY" => self.copy(true, false)?,
                    "MOVE" => self.copy(true, true)?,
                    "EXPUNGE" => {
                        self.sp()?;
                        Command::UidExpunge(self.sequence_set()?)
                    }
                    _ => return Err(format!("unknown UID command {sub}")),
                }
            }
            "GETQUOTA" => {
                self.sp()?;
                Command::GetQuota(self.astring()?)
            }
            "GETQUOTAROOT" => {
                self.sp()?;
                Command::GetQuotaRoot(self.astring()?)
            }
            "NOTIFY" => Command::Notify(self.notify()?),
            _ => return Err(format!("unknown command {word}")),
        };
        Ok(cmd)
    }

    fn status_items(&mut self) -> R<Vec<StatusItem>> {
        self.open()?;
        let mut items = Vec::new();
        loop {
            let a = self.atom()?.to_ascii_uppercase();
            items.push(match a.as_str() {
                "MESSAGES" => StatusItem::Messages,
                "RECENT" => StatusItem::Recent,
                "UIDNEXT" => StatusItem::UidNext,
                "UIDVALIDITY" => StatusItem::UidValidity,
                "UNSEEN" => StatusItem::Unseen,
                "SIZE" => StatusItem::Size,
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                "DELETED" => StatusItem::Deleted,
                _ => return Err(format!("unknown status item {a}")),
            });
            if items.len() > 16 {
                return Err("too many status items".into());
            }
            if self.eat(b')') {
                break;
            }
            self.sp()?;
        }
        self.depth -= 1;
        Ok(items)
    }

    fn list(&mut self) -> R<Command> {
        let mut args = ListArgs::default();
        self.sp()?;
        if self.peek() == Some(b'(') {
            self.open()?;
            while !self.eat(b')') {
                let o = self.atom()?.to_ascii_uppercase();
                match o.as_str() {
                    "SUBSCRIBED" => args.select_subscribed = true,
                    "SPECIAL-USE" => args.select_special_use = true,
                    "RECURSIVEMATCH" => args.select_recursivematch = true,
                    // No remote mailboxes here: REMOTE selects nothing more.
                    "REMOTE" => {}
                    _ => return Err(format!("unknown LIST selection option {o}")),
                }
                self.eat(b' ');
            }
            self.depth -= 1;
            // RFC 5258 3.1: RECURSIVEMATCH alone (or with REMOTE only) is BAD.
            if args.select_recursivematch && !args.select_subscribed && !args.select_special_use {
                return Err("RECURSIVEMATCH needs another selection option".into());
            }
            self.sp()?;
        }
        args.reference = self.astring()?;
        self.sp()?;
        if self.peek() == Some(b'(') {
            self.open()?;
            loop {
                args.patterns.push(self.list_mailbox()?);
                if args.patterns.len() > 64 {
                    return Err("too many patterns".into());
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
            self.depth -= 1;
        } else {
            args.patterns.push(self.list_mailbox()?);
        }
        if self.eat(b' ') {
            if !self.keyword("RETURN") {
                return Err("expected RETURN".into());
            }
            self.sp()?;
            self.open()?;
            while !self.eat(b')') {
                let o = self.atom()?.to_ascii_uppercase();
                match o.as_str() {
                    "SUBSCRIBED" => args.return_subscribed = true,
                    "CHILDREN" => args.return_children = true,
                    "SPECIAL-USE" => args.return_special_use = true,
                    "STATUS" => {
                        self.sp()?;
                        args.return_status = Some(self.status_items()?);
                    }
                    _ => return Err(format!("unknown LIST return option {o}")),
                }
                self.eat(b' ');
            }
            self.depth -= 1;
        }
        Ok(Command::List(args))
    }

    fn append(&mut self) -> R<Command> {
        let AppendArgs {
            mailbox,
            flags,
            date,
        } = self.append_args()?;
        let message = self.literal()?;
        Ok(Command::Append {
            mailbox,
            flags,
            date,
            message,
        })
    }

    /// ` mailbox [flags] [date] ` of APPEND, up to its message literal.
    fn append_args(&mut self) -> R<AppendArgs> {
        self.sp()?;
        let mailbox = self.astring()?;
        self.sp()?;
        let mut flags = Vec::new();
        if self.peek() == Some(b'(') {
            flags = self.flag_list()?;
            self.sp()?;
        }
        let mut date = None;
        if self.peek() == Some(b'"') {
            let d = self.quoted()?;
            date = Some(parse_date_time(&d).ok_or("bad APPEND date-time")?);
            self.sp()?;
        }
        Ok(AppendArgs {
            mailbox,
            flags,
            date,
        })
    }

    fn search(&mut self, uid: bool) -> R<Command> {
        self.sp()?;
        let esearch = self.return_opts()?;
        let criteria = self.charset_criteria(false)?;
        Ok(Command::Search {
            uid,
            criteria,
            esearch,
        })
    }

    fn search_key(&mut self) -> R<SearchKey> {
        if self.peek() == Some(b'(') {
            self.open()?;
            let mut keys = Vec::new();
            loop {
                keys.push(self.search_key()?);
                if keys.len() > LIST_ITEMS_MAX {
                    return Err("too many search keys".into());
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
            self.depth -= 1;
            return Ok(SearchKey::And(keys));
        }
        if self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || b == b'*' || b == b'$')
        {
            return Ok(SearchKey::Sequence(self.sequence_set()?));
        }
        let word = self.atom()?.to_ascii_uppercase();
        let flag = |f: &str| Ok(SearchKey::Flag(f.into()));
        let unflag = |f: &str| Ok(SearchKey::Unflag(f.into()));
        match word.as_str() {
            "ALL" => Ok(SearchKey::All),
            "ANSWERED" => flag("\\Answered"),
            "DELETED" => flag("\\Deleted"),
            "DRAFT" => flag("\\Draft"),
            "FLAGGED" => flag("\\Flagged"),
            "SEEN" => flag("\\Seen"),
            "UNANSWERED" => unflag("\\Answered"),
            "UNDELETED" => unflag("\\Deleted"),
            "UNDRAFT" => unflag("\\Draft"),
            "UNFLAGGED" => unflag("\\Flagged"),
            "UNSEEN" => unflag("\\Seen"),
            "NEW" => Ok(SearchKey::New),
            "OLD" => Ok(SearchKey::Old),
            "RECENT" => Ok(SearchKey::Recent),
            "KEYWORD" | "UNKEYWORD" => {
                self.sp()?;
                let k = self.atom()?;
                Ok(if word == "KEYWORD" {
                    SearchKey::Flag(k)
                } else {
                    SearchKey::Unflag(k)
                })
            }
            "BCC" | "CC" | "FROM" | "SUBJECT" | "TO" => {
                self.sp()?;
                let v = self.astring_text()?;
                let name = match word.as_str() {
                    "BCC" => "Bcc",
                    "CC" => "Cc",
                    "FROM" => "From",
                    "SUBJECT" => "Subject",
                    _ => "To",
                };
                Ok(SearchKey::Header(name.into(), v))
            }
            "HEADER" => {
                self.sp()?;
                let name = self.astring_text()?;
                self.sp()?;
                let v = self.astring_text()?;
                Ok(SearchKey::Header(name, v))
            }
            "BODY" => {
                self.sp()?;
                Ok(SearchKey::Body(self.astring_text()?))
            }
            "TEXT" => {
                self.sp()?;
                Ok(SearchKey::Text(self.astring_text()?))
            }
            "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
                self.sp()?;
                let d = self.date()?;
                Ok(match word.as_str() {
                    "BEFORE" => SearchKey::Before(d),
                    "ON" => SearchKey::On(d),
                    "SINCE" => SearchKey::Since(d),
                    "SENTBEFORE" => SearchKey::SentBefore(d),
                    "SENTON" => SearchKey::SentOn(d),
                    _ => SearchKey::SentSince(d),
                })
            }
            "LARGER" | "SMALLER" => {
                self.sp()?;
                let n = self.number()?;
                Ok(if word == "LARGER" {
                    SearchKey::Larger(n)
                } else {
                    SearchKey::Smaller(n)
                })
            }
            "UID" => {
                self.sp()?;
                Ok(SearchKey::Uid(self.sequence_set()?))
            }
            "NOT" => {
                self.sp()?;
                self.depth += 1;
                if self.depth > NESTING_DEPTH_MAX {
                    return Err("nested too deeply".into());
                }
                let k = self.search_key()?;
                self.depth -= 1;
                Ok(SearchKey::Not(Box::new(k)))
            }
            "OR" => {
                self.sp()?;
                self.depth += 1;
                if self.depth > NESTING_DEPTH_MAX {
                    return Err("nested too deeply".into());
                }
                let a = self.search_key()?;
                self.sp()?;
                let b = self.search_key()?;
                self.depth -= 1;
                Ok(SearchKey::Or(Box::new(a), Box::new(b)))
            }
            "MODSEQ" => {
                self.sp()?;
                // RFC 7162 3.1.5: an optional entry name ("/flags/\\Seen")
                // and type (priv, shared or all); one mod-sequence is kept
                // per message here, so the entry narrows nothing.
                if self.peek() == Some(b'"') {
                    self.quoted()?;
                    self.sp()?;
                    let t = self.atom()?.to_ascii_lowercase();
                    if !matches!(t.as_str(), "priv" | "shared" | "all") {
                        return Err(format!("bad MODSEQ entry type {t}"));
                    }
                    self.sp()?;
                }
                Ok(SearchKey::ModSeq(self.number()?))
            }
            _ => Err(format!("unknown search key {word}")),
        }
    }

    fn fetch(&mut self, uid: bool) -> R<Command> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut items = Vec::new();
        if self.peek() == Some(b'(') {
            self.open()?;
            loop {
                items.push(self.fetch_att()?);
                if items.len() > 64 {
                    return Err("too many fetch items".into());
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
            self.depth -= 1;
        } else if self.keyword("ALL") {
            items = vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Rfc822Size,
                FetchAtt::Envelope,
            ];
        } else if self.keyword("FAST") {
            items = vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Rfc822Size,
            ];
        } else if self.keyword("FULL") {
            items = vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Rfc822Size,
                FetchAtt::Envelope,
                FetchAtt::Body,
            ];
        } else {
            items.push(self.fetch_att()?);
        }
        let mut changed_since = None;
        let mut vanished = false;
        if self.eat(b' ') {
            self.open()?;
            loop {
                if self.keyword("CHANGEDSINCE") {
                    self.sp()?;
                    changed_since = Some(self.number()?);
                } else if self.keyword("VANISHED") {
                    vanished = true;
                } else {
                    return Err("unknown FETCH modifier".into());
                }
                if !self.eat(b' ') {
                    break;
                }
            }
            self.close()?;
        }
        // RFC 7162 3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
        if vanished && !(uid && changed_since.is_some()) {
            return Err("VANISHED needs UID FETCH with CHANGEDSINCE".into());
        }
        Ok(Command::Fetch {
            uid,
            set,
            items,
            changed_since,
            vanished,
        })
    }

    fn fetch_att(&mut self) -> R<FetchAtt> {
        let word = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.');
        let word = String::from_utf8_lossy(word).to_ascii_uppercase();
        Ok(match word.as_str() {
            "FLAGS" => FetchAtt::Flags,
            "INTERNALDATE" => FetchAtt::InternalDate,
            "RFC822.SIZE" => FetchAtt::Rfc822Size,
            "ENVELOPE" => FetchAtt::Envelope,
            "BODYSTRUCTURE" => FetchAtt::BodyStructure,
            "UID" => FetchAtt::Uid,
            "MODSEQ" => FetchAtt::ModSeq,
            "RFC822" => FetchAtt::Rfc822,
            "RFC822.HEADER" => FetchAtt::Rfc822Header,
            "RFC822.TEXT" => FetchAtt::Rfc822Text,
            "BINARY" | "BINARY.PEEK" | "BINARY.SIZE" => self.binary_att(&word)?,
            "BODY" | "BODY.PEEK" => {
                if self.peek() != Some(b'[') {
                    if word == "BODY" {
                        return Ok(FetchAtt::Body);
                    }
                    return Err("BODY.PEEK needs a section".into());
                }
                self.pos += 1;
                let section = self.section()?;
                let partial = if self.eat(b'<') {
                    let start = self.number32()?;
                    if !self.eat(b'.') {
                        return Err("bad partial".into());
                    }
                    let len = self.number32()?;
                    if !self.eat(b'>') || len == 0 {
                        return Err("bad partial".into());
                    }
                    Some((start, len))
                } else {
                    None
                };
                FetchAtt::Section {
                    peek: word == "BODY.PEEK",
                    section,
                    partial,
                }
            }
            _ => return Err(format!("unknown fetch item {word}")),
        })
    }

    /// `[part]<partial>` after BINARY, BINARY.PEEK, BINARY.SIZE (RFC 3516
    /// 4.1: `section-binary = "[" [section-part] "]"`; no partial on SIZE).
    fn binary_att(&mut self, word: &str) -> R<FetchAtt> {
        if !self.eat(b'[') {
            return Err(format!("{word} needs a section"));
        }
        let mut part = Vec::new();
        if !self.eat(b']') {
            loop {
                let n = self.number32()?;
                if n == 0 || part.len() >= NESTING_DEPTH_MAX {
                    return Err("bad section part".into());
                }
                part.push(n);
                if !self.eat(b'.') {
                    break;
                }
            }
            if !self.eat(b']') {
                return Err("BINARY takes part numbers only".into());
            }
        }
        if word == "BINARY.SIZE" {
            return Ok(FetchAtt::BinarySize { part });
        }
        let partial = if self.eat(b'<') {
            let start = self.number32()?;
            if !self.eat(b'.') {
                return Err("bad partial".into());
            }
            let len = self.number32()?;
            if !self.eat(b'>') || len == 0 {
                return Err("bad partial".into());
            }
            Some((start, len))
        } else {
            None
        };
        Ok(FetchAtt::Binary {
            peek: word == "BINARY.PEEK",
            part,
            partial,
        })
    }

    /// `(uidvalidity modseq [known-uids [(seq-set uid-set)]])` of QRESYNC.
    fn qresync_args(&mut self) -> R<QresyncArgs> {
        self.open()?;
        let uidvalidity = self.number32()?;
        if uidvalidity == 0 {
            return Err("bad UIDVALIDITY".into());
        }
        self.sp()?;
        let modseq = self.number()?;
        let mut known_uids = None;
        if self.eat(b' ') {
            if self.peek() != Some(b'(') {
                known_uids = Some(self.sequence_set()?);
                if !self.eat(b' ') {
                    self.close()?;
                    return Ok(QresyncArgs {
                        uidvalidity,
                        modseq,
                        known_uids,
                    });
                }
            }
            self.open()?;
            self.sequence_set()?;
            self.sp()?;
            self.sequence_set()?;
            self.close()?;
        }
        self.close()?;
        Ok(QresyncArgs {
            uidvalidity,
            modseq,
            known_uids,
        })
    }

    /// After "[": `1.2.HEADER.FIELDS (A B)]`.
    fn section(&mut self) -> R<Section> {
        let mut s = Section::default();
        if self.eat(b']') {
            return Ok(s);
        }
        loop {
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                let n = self.number32()?;
                if n == 0 || s.part.len() >= NESTING_DEPTH_MAX {
                    return Err("bad section part".into());
                }
                s.part.push(n);
                if self.eat(b'.') {
                    continue;
                }
                break;
            }
            let word =
                String::from_utf8_lossy(self.take_while(|b| b.is_ascii_alphabetic() || b == b'.'))
                    .to_ascii_uppercase();
            s.text = Some(match word.as_str() {
                "HEADER" => SectionText::Header,
                "TEXT" => SectionText::Text,
                "MIME" if !s.part.is_empty() => SectionText::Mime,
                "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                    self.sp()?;
                    self.open()?;
                    let mut fields = Vec::new();
                    loop {
                        fields.push(self.astring_text()?);
                        if fields.len() > 256 {
                            return Err("too many header fields".into());
                        }
                        if self.eat(b')') {
                            break;
                        }
                        self.sp()?;
                    }
                    self.depth -= 1;
                    SectionText::HeaderFields {
                        not: word.ends_with(".NOT"),
                        fields,
                    }
                }
                _ => return Err(format!("bad section {word}")),
            });
            break;
        }
        if !self.eat(b']') {
            return Err("expected ]".into());
        }
        Ok(s)
    }

    fn store(&mut self, uid: bool) -> R<Command> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.peek() == Some(b'(') {
            self.open()?;
            if !self.keyword("UNCHANGEDSINCE") {
                return Err("unknown STORE modifier".into());
            }
            self.sp()?;
            unchanged_since = Some(self.number()?);
            self.close()?;
            self.sp()?;
        }
        let op = if self.eat(b'+') {
            StoreOp::Add
        } else if self.eat(b'-') {
            StoreOp::Remove
        } else {
            StoreOp::Replace
        };
        let item = self.take_while(|b| b.is_ascii_alphabetic() || b == b'.');
        let item = String::from_utf8_lossy(item).to_ascii_uppercase();
        let silent = match item.as_str() {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("STORE takes FLAGS or FLAGS.SILENT".into()),
        };
        self.sp()?;
        let flags = self.flag_list()?;
        Ok(Command::Store {
            uid,
            set,
            op,
            silent,
            flags,
            unchanged_since,
        })
    }

    fn copy(&mut self, uid: bool, is_move: bool) -> R<Command> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mailbox = self.astring()?;
        Ok(if is_move {
            Command::Move { uid, set, mailbox }
        } else {
            Command::Copy { uid, set, mailbox }
        })
    }
}

/// `1-Feb-1994` (also `01-Feb-1994`), to days since the epoch.
pub fn parse_date(text: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(text).ok()?;
    let mut it = s.split('-');
    let (d, m, y) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let d: i64 = d.trim().parse().ok()?;
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(m))? as i64 + 1;
    let y: i64 = y.parse().ok()?;
    if !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `17-Jul-1996 02:44:25 -0700` to Unix seconds.
pub fn parse_date_time(text: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(text).ok()?.trim();
    let mut parts = s.split(' ').filter(|p| !p.is_empty());
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    let days = parse_date(date.as_bytes())?;
    let mut t = time.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let z: i64 = zone[1..].parse().ok()?;
    if zone.len() != 5 {
        return None;
    }
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests;
