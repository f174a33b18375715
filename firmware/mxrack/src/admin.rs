//! Administration requests. The CLI sends them to the running server over
//! `DATA/admin.sock` (the server holds the store; invariant 7: only the store
//! opens redb, and redb allows one process), or, when no server runs, opens
//! the store itself. Both paths run the same `execute`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mxrack_net::ShutdownSignal;
use mxrack_store::{Store, id_hex};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// Largest request line the admin socket reads.
const ADMIN_REQUEST_BYTES_MAX: u64 = 64 * 1024;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    AccountAdd {
        name: String,
    },
    AccountList,
    AccountRemove {
        name: String,
    },
    DomainAdd {
        domain: String,
        account: String,
    },
    DomainList,
    DomainRemove {
        domain: String,
    },
    MailboxAdd {
        address: String,
        password: String,
        full_management: bool,
    },
    MailboxList {
        domain: Option<String>,
    },
    MailboxRemove {
        address: String,
    },
    MailboxPasswd {
        address: String,
        password: String,
    },
    MailboxFullManagement {
        address: String,
        on: bool,
    },
    /// Sets (`Some`) or lifts (`None`) a storage quota; always reports usage.
    MailboxQuota {
        address: String,
        set: Option<Option<u64>>,
    },
    AliasAdd {
        address: String,
        targets: Vec<String>,
    },
    AliasList,
    AliasRemove {
        address: String,
    },
    QueueList,
    QueueShow {
        id: String,
    },
    /// Every entry due now (or one entry), and the runner woken.
    QueueFlush {
        id: Option<String>,
    },
    QueueHold {
        id: String,
        hold: bool,
    },
    QueueDelete {
        id: String,
    },
    ForwardSet {
        address: String,
        targets: Vec<String>,
        keep_copy: bool,
    },
    ForwardShow,
    /// Forwarded copies the spam gate held, for one mailbox or all.
    ForwardHeld {
        mailbox: Option<String>,
    },
    /// Sends a copy the spam gate held for `mailbox`'s own forwarding rule
    /// (the Manager's release button); any other entry is "not found".
    ForwardRelease {
        id: String,
        mailbox: String,
    },
    ForwardRemove {
        address: String,
    },
    BlockAdd {
        domain: String,
        account: Option<String>,
    },
    BlockList,
    BlockRemove {
        domain: String,
        account: Option<String>,
    },
    MessageList {
        address: String,
        folder: String,
    },
    MessageCat {
        address: String,
        folder: String,
        uid: u32,
    },
    /// A consistent online copy of the store into `dir` (issue 12).
    Backup {
        dir: std::path::PathBuf,
    },
    /// Every record against its file; changes nothing.
    Verify,
    /// The LDAP password of a mailbox (NAME with @) or an account.
    LdapPasswd {
        name: String,
        password: String,
    },
    /// The provider administrator's password (the Manager's `admin`).
    AdminPasswd {
        password: String,
    },
    /// Checks a password against the admin password (the console login).
    AdminVerify {
        password: String,
    },
    /// The contacts of an address book (a mailbox's personal book, or an
    /// account's book), as LDAP serves them.
    ContactList {
        book: String,
    },
    /// Adds a contact (inetOrgPerson, RDN `cn=NAME`) with LDAP's own checks,
    /// within the book's limits (`ldap.max_entries_per_book`,
    /// `ldap.max_book_bytes`, the mailbox quota).
    ContactAdd {
        book: String,
        cn: String,
        mail: Option<String>,
        phone: Option<String>,
        max_entries: usize,
        max_bytes: u64,
    },
    /// Removes a contact by its key (as `contact list` prints it).
    ContactRemove {
        book: String,
        key: String,
    },
    /// The status page in a terminal (health_cli.rs answers the five
    /// health requests below).
    Status,
    /// An operator's maintenance note, or (`to`) an update to an entry.
    StatusNote {
        title: String,
        text: Option<String>,
        to: Option<u64>,
    },
    Disks,
    DiskReplace {
        serial: String,
        /// The new disk md copies onto (default: the array's hot spare).
        #[serde(default)]
        with: Option<String>,
    },
    DiskAdd {
        serial: String,
        /// Add a disk failed out for I/O errors before anyway.
        #[serde(default)]
        force: bool,
    },
    DiskLocate {
        serial: String,
        #[serde(default)]
        off: bool,
        #[serde(default)]
        secs: Option<u64>,
    },
    /// Learn message files as spam or ham (filter_cli.rs answers the six
    /// spam and forward-gate requests below). Absolute paths, read by
    /// whoever executes the request.
    SpamTrain {
        spam: bool,
        files: Vec<PathBuf>,
    },
    /// The classifier's totals.
    SpamStats,
    /// Score one message file with the rules `[spam]` names.
    SpamScore {
        file: PathBuf,
        envelope_from: String,
        spam: mxrack_config::Spam,
        /// The hand-over to state, as the MX session knows it.
        hop: Option<ScoreHop>,
    },
    /// Per destination forwards, discards, complaints and thresholds;
    /// `forward` is the CLI's `[forward]` section, `day` defaults to today.
    ForwardStats {
        forward: mxrack_config::Forward,
        day: Option<i64>,
    },
    /// The newest complaint samples.
    ForwardSamples {
        limit: usize,
    },
    /// Runs the adaptive threshold policy for a day (default today).
    ForwardEvaluate {
        forward: mxrack_config::Forward,
        day: Option<i64>,
    },
}

/// `mxrack spam score --client`: the client that handed the message over,
/// as an MX session would record it (the newest relay of SpamAssassin's
/// rules).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreHop {
    pub client: std::net::IpAddr,
    pub helo: String,
    /// Its confirmed reverse DNS name; `Some("")`: it has none; `None`:
    /// not known (the lookup failed).
    pub rdns: Option<String>,
    /// This appliance's host name.
    pub by: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct AdminResponse {
    ok: bool,
    /// Base64 of the bytes to print (messages need not be UTF-8).
    output: String,
    error: String,
}

/// Wakes the running queue runner after an operator made entries due. Set
/// once by the supervisor; absent when the CLI runs without a server.
pub static QUEUE_WAKE: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>> =
    std::sync::OnceLock::new();

/// Logs the release of a copy the spam gate held, by `by`, and the answer
/// the caller shows: `ID released (was REASON)`.
fn gate_copy_released(old: &mxrack_store::QueueEntry, by: &str) -> String {
    tracing::info!(
        queue_id = %id_hex(old.id),
        to = %old.recipients.join(","),
        reason = old.hold_reason.as_deref().unwrap_or(""),
        by,
        "copy held by the spam gate released"
    );
    format!(
        "{} released (was {})\n",
        id_hex(old.id),
        old.hold_reason.as_deref().unwrap_or("held")
    )
}

fn wake_queue() {
    if let Some(wake) = QUEUE_WAKE.get() {
        wake();
    }
}

fn parse_queue_id(text: &str) -> Result<mxrack_store::Id, String> {
    mxrack_store::parse_id_hex(text)
        .ok_or_else(|| format!("{text:?} is not a queue id (16 hex digits)"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix seconds as `2025-03-01T12:00:00Z` (UTC).
fn utc_text(t: i64) -> String {
    let secs = t.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        mxrack_filter::format_day(t.div_euclid(86_400)),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The extra columns of a held entry in `queue list`: why and until when.
fn hold_text(q: &mxrack_store::QueueEntry) -> String {
    let mut s = String::new();
    if let Some(r) = &q.hold_reason {
        s.push_str(&format!("\treason={r}"));
    }
    if let Some(t) = q.expires {
        s.push_str(&format!("\texpires={}", utc_text(t)));
    }
    if let Some(m) = q.origin_mailbox.as_deref().filter(|_| q.held) {
        s.push_str(&format!("\tmailbox={m}"));
    }
    s
}

fn scope_text(account: Option<&str>) -> String {
    match account {
        Some(a) => format!("for account {a}"),
        None => "for every account".into(),
    }
}

/// Runs one request against the store and returns what to print.
pub fn execute(store: &Store, request: &AdminRequest) -> Result<Vec<u8>, String> {
    use AdminRequest::*;
    let e = |e: mxrack_store::StoreError| e.to_string();
    let mut out = String::new();
    match request {
        AccountAdd { name } => {
            store.account_add(name).map_err(e)?;
            out = format!("account {name} added\n");
        }
        AccountList => {
            for a in store.account_list().map_err(e)? {
                out.push_str(&format!("{}\n", a.name));
            }
        }
        AccountRemove { name } => {
            store.account_remove(name).map_err(e)?;
            out = format!("account {name} removed\n");
        }
        DomainAdd { domain, account } => {
            store.domain_add(domain, account).map_err(e)?;
            out = format!("domain {domain} added to account {account}\n");
        }
        DomainList => {
            for d in store.domain_list().map_err(e)? {
                out.push_str(&format!("{}\taccount={}\n", d.name, d.account));
            }
        }
        DomainRemove { domain } => {
            store.domain_remove(domain).map_err(e)?;
            out = format!("domain {domain} removed\n");
        }
        MailboxAdd {
            address,
            password,
            full_management,
        } => {
            store
                .mailbox_add(address, password, *full_management)
                .map_err(e)?;
            out = format!("mailbox {address} added\n");
        }
        MailboxList { domain } => {
            for m in store.mailbox_list(domain.as_deref()).map_err(e)? {
                out.push_str(&format!(
                    "{}\taccount={}\tfull_management={}\n",
                    m.address,
                    m.account,
                    if m.full_management { "on" } else { "off" }
                ));
            }
        }
        MailboxRemove { address } => {
            store.mailbox_remove(address).map_err(e)?;
            out = format!("mailbox {address} removed\n");
        }
        MailboxPasswd { address, password } => {
            store.mailbox_set_password(address, password).map_err(e)?;
            out = format!("password of {address} changed\n");
        }
        MailboxFullManagement { address, on } => {
            store.mailbox_set_full_management(address, *on).map_err(e)?;
            out = format!(
                "full management access of {address}: {}\n",
                if *on { "on" } else { "off" }
            );
        }
        MailboxQuota { address, set } => {
            if let Some(quota) = set {
                store.mailbox_set_quota(address, *quota).map_err(e)?;
            }
            let quota = store.mailbox_get(address).map_err(e)?.quota_bytes;
            // The quota covers mail and the address book together.
            let used = store.mailbox_usage_parts(address).map_err(e)?;
            out = format!(
                "{address}\tused={}\tmail={}\tcontacts={}\tquota={}\n",
                used.total(),
                used.mail,
                used.contacts,
                quota
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "none".into())
            );
        }
        AliasAdd { address, targets } => {
            store.alias_add(address, targets).map_err(e)?;
            out = format!("alias {address} -> {}\n", targets.join(", "));
        }
        AliasList => {
            for a in store.alias_list().map_err(e)? {
                out.push_str(&format!("{}\t{}\n", a.address, a.targets.join(",")));
            }
        }
        AliasRemove { address } => {
            store.alias_remove(address).map_err(e)?;
            out = format!("alias {address} removed\n");
        }
        LdapPasswd { name, password } => {
            store.ldap_set_password(name, password).map_err(e)?;
            out = format!("LDAP password of {name} set\n");
        }
        ContactList { book } => {
            for (key, entry) in store.ldap_book_load(book).map_err(e)?.entries {
                let first = |name: &str| {
                    entry
                        .attributes
                        .iter()
                        .find(|a| a.name.eq_ignore_ascii_case(name))
                        .and_then(|a| a.values.first())
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                        .unwrap_or_default()
                };
                out.push_str(&format!(
                    "{key}\t{}\t{}\t{}\n",
                    first("cn"),
                    first("mail"),
                    first("telephoneNumber")
                ));
            }
        }
        ContactAdd {
            book,
            cn,
            mail,
            phone,
            max_entries,
            max_bytes,
        } => {
            let refusal = |r: mxrack_ldap::entry::Refusal| r.message;
            let rdn = mxrack_ldap::dn::Rdn::single("cn", cn.trim());
            let mut pairs: Vec<(&str, Vec<Vec<u8>>)> = vec![(
                "objectClass",
                ["top", "person", "organizationalPerson", "inetOrgPerson"]
                    .iter()
                    .map(|c| c.as_bytes().to_vec())
                    .collect(),
            )];
            if let Some(m) = mail.as_deref().filter(|m| !m.trim().is_empty()) {
                pairs.push(("mail", vec![m.trim().as_bytes().to_vec()]));
            }
            if let Some(p) = phone.as_deref().filter(|p| !p.trim().is_empty()) {
                pairs.push(("telephoneNumber", vec![p.trim().as_bytes().to_vec()]));
            }
            let mut contact = mxrack_ldap::entry::Contact::from_client(
                pairs.iter().map(|(n, v)| (*n, v.as_slice())),
            )
            .map_err(refusal)?;
            contact.finish(&rdn).map_err(refusal)?;
            let entry = contact.into_stored(&rdn, 0);
            let limits = mxrack_store::BookLimits {
                max_entries: *max_entries,
                max_bytes: *max_bytes,
            };
            store
                .ldap_entry_add(book, &mxrack_ldap::entry::entry_key(&rdn), &entry, &limits)
                .map_err(e)?;
            out = format!("contact {} added to the book of {book}\n", entry.rdn);
        }
        ContactRemove { book, key } => {
            store.ldap_entry_delete(book, key).map_err(e)?;
            out = format!("contact {key} removed from the book of {book}\n");
        }
        AdminVerify { password } => {
            if !store.admin_verify_password(password).map_err(e)? {
                return Err("wrong password".into());
            }
            out = "ok\n".to_string();
        }
        AdminPasswd { password } => {
            store.admin_set_password(password).map_err(e)?;
            // Sessions opened with the old password end.
            store.web_sessions_end_for("admin").map_err(e)?;
            out = "admin password set\n".to_string();
        }
        Status
        | StatusNote { .. }
        | Disks
        | DiskReplace { .. }
        | DiskAdd { .. }
        | DiskLocate { .. } => {
            return crate::health_cli::execute(store, request);
        }
        SpamTrain { .. }
        | SpamStats
        | SpamScore { .. }
        | ForwardStats { .. }
        | ForwardSamples { .. }
        | ForwardEvaluate { .. } => {
            return crate::filter_cli::execute(store, request);
        }
        QueueList => {
            for q in store.queue_list().map_err(e)? {
                out.push_str(&format!(
                    "{}\t{}\tfrom=<{}>\tto={}\ttransport={}\tattempts={}\t{}{}\n",
                    id_hex(q.id),
                    q.size,
                    q.mail_from,
                    q.recipients.join(","),
                    q.transport,
                    q.attempts,
                    if q.held { "held" } else { "waiting" },
                    hold_text(&q)
                        + &q.last_error
                            .as_deref()
                            .map(|e| format!("\t{e}"))
                            .unwrap_or_default()
                ));
            }
        }
        QueueShow { id } => {
            let q = store.queue_get(parse_queue_id(id)?).map_err(e)?;
            out = format!(
                "id: {}\nfrom: <{}>\nto: {}\ntransport: {}\nsize: {}\ncreated: {}\nattempts: {}\nnext attempt: {}\nlast error: {}\nheld: {}\nhold reason: {}\nexpires: {}\nmailbox: {}\n",
                id_hex(q.id),
                q.mail_from,
                q.recipients.join(", "),
                q.transport,
                q.size,
                q.created,
                q.attempts,
                q.next_attempt,
                q.last_error.as_deref().unwrap_or("-"),
                q.held,
                q.hold_reason.as_deref().unwrap_or("-"),
                q.expires.map(utc_text).unwrap_or_else(|| "-".into()),
                q.origin_mailbox.as_deref().unwrap_or("-"),
            );
        }
        QueueFlush { id } => {
            let wanted = id.as_deref().map(parse_queue_id).transpose()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let n = store.queue_make_due(wanted, now).map_err(e)?;
            wake_queue();
            out = format!("{n} queue entries due now\n");
        }
        QueueHold { id, hold: true } => {
            let mut q = store.queue_get(parse_queue_id(id)?).map_err(e)?;
            q.held = true;
            // An operator's hold: kept until the operator releases it (no
            // expiry), and no longer a gate-held copy its user may release.
            q.expires = None;
            store.queue_update(&q).map_err(e)?;
            out = format!("{} held\n", id_hex(q.id));
        }
        QueueHold { id, hold: false } => {
            // Clears the hold, its reason and its expiry: the entry is due
            // now and the relay sends it like any other.
            let old = store
                .queue_release(parse_queue_id(id)?, unix_now())
                .map_err(e)?;
            wake_queue();
            out = if old.gate_held() {
                gate_copy_released(&old, "the operator")
            } else {
                format!("{} released\n", id_hex(old.id))
            };
        }
        QueueDelete { id } => {
            let id = parse_queue_id(id)?;
            store.queue_remove(id).map_err(e)?;
            out = format!("{} deleted\n", id_hex(id));
        }
        ForwardSet {
            address,
            targets,
            keep_copy,
        } => {
            store.forward_set(address, targets, *keep_copy).map_err(e)?;
            out = format!(
                "{address} forwards to {} ({})\n",
                targets.join(", "),
                if *keep_copy {
                    "local copy kept"
                } else {
                    "no local copy"
                }
            );
        }
        ForwardShow => {
            for f in store.forward_list().map_err(e)? {
                out.push_str(&format!(
                    "{}\t{}\tkeep_copy={}\n",
                    f.mailbox,
                    f.targets.join(","),
                    if f.keep_copy { "yes" } else { "no" }
                ));
            }
        }
        ForwardHeld { mailbox } => {
            let wanted = mailbox.as_deref().map(str::to_ascii_lowercase);
            let held: Vec<_> = store
                .queue_list()
                .map_err(e)?
                .into_iter()
                .filter(|q| q.gate_held())
                .filter(|q| wanted.is_none() || q.origin_mailbox == wanted)
                .collect();
            for q in &held {
                out.push_str(&format!(
                    "{}\tmailbox={}\tto={}\tsize={}\texpires={}\t{}\n",
                    id_hex(q.id),
                    q.origin_mailbox.as_deref().unwrap_or("(alias)"),
                    q.recipients.join(","),
                    q.size,
                    q.expires.map(utc_text).unwrap_or_default(),
                    q.hold_reason.as_deref().unwrap_or("")
                ));
            }
            if held.is_empty() {
                out = "no forwarded copies held by the spam gate\n".into();
            } else {
                out.push_str("send one with: mxrack queue release ID\n");
            }
        }
        ForwardRelease { id, mailbox } => {
            let old = store
                .queue_release_held_copy(parse_queue_id(id)?, mailbox, unix_now())
                .map_err(e)?;
            wake_queue();
            out = gate_copy_released(&old, &format!("the user of {mailbox}"));
        }
        ForwardRemove { address } => {
            store.forward_remove(address).map_err(e)?;
            out = format!("forwarding of {address} removed\n");
        }
        BlockAdd { domain, account } => {
            store.block_add(domain, account.as_deref()).map_err(e)?;
            out = format!("{domain} blocked {}\n", scope_text(account.as_deref()));
        }
        BlockList => {
            for b in store.block_list().map_err(e)? {
                out.push_str(&format!(
                    "{}\t{}\n",
                    b.domain,
                    b.account.as_deref().unwrap_or("(global)")
                ));
            }
        }
        BlockRemove { domain, account } => {
            store.block_remove(domain, account.as_deref()).map_err(e)?;
            out = format!("{domain} unblocked {}\n", scope_text(account.as_deref()))
        }
        MessageList { address, folder } => {
            for m in store.messages(address, folder).map_err(e)? {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    m.uid,
                    m.size,
                    m.internal_date,
                    m.flags.join(" ")
                ));
            }
        }
        Backup { dir } => {
            let r = store.backup(dir, &mut |_, _, _| {}).map_err(e)?;
            out = format!(
                "backup in {}: {} message files ({} copied or linked now, {} no longer needed removed), {:.1} s\n",
                dir.display(),
                r.files,
                r.files_copied,
                r.files_dropped,
                r.seconds
            );
        }
        Verify => {
            let r = store.verify(&mut |_, _, _| {}).map_err(e)?;
            out = verify_text(&r);
            if r.problem_count > 0 {
                return Err(out);
            }
        }
        MessageCat {
            address,
            folder,
            uid,
        } => {
            let meta = store
                .messages(address, folder)
                .map_err(e)?
                .into_iter()
                .find(|m| m.uid == *uid)
                .ok_or_else(|| format!("no message with UID {uid} in {address} {folder}"))?;
            return store.read_blob(meta.blob).map_err(e);
        }
    }
    Ok(out.into_bytes())
}

/// Sends the request to the running server, or runs it on the store
/// directly when no server listens.
/// The report of `mxrack verify`, as printed.
pub fn verify_text(r: &mxrack_store::VerifyReport) -> String {
    let mut out = format!(
        "verified {} mailboxes, {} folders, {} messages, {} queue entries; {} message files ({} MB hashed), {} not referenced; journal {}; {:.1} s\n",
        r.mailboxes,
        r.folders,
        r.messages,
        r.queue_entries,
        r.files,
        r.bytes_hashed / 1_000_000,
        r.unreferenced_files,
        if r.journal_agrees {
            "agrees with the database"
        } else {
            "DISAGREES with the database"
        },
        r.seconds
    );
    if r.problem_count == 0 {
        out.push_str("no problems found\n");
    } else {
        out.push_str(&format!("{} problems:\n", r.problem_count));
        for p in &r.problems {
            out.push_str(&format!("  {p}\n"));
        }
        if r.problem_count > r.problems.len() {
            out.push_str(&format!(
                "  ... and {} more\n",
                r.problem_count - r.problems.len()
            ));
        }
    }
    out
}

/// True when a running mxrack answers on the data folder's admin socket.
pub fn server_running(data_dir: &Path) -> bool {
    UnixStream::connect(socket_path(data_dir)).is_ok()
}

pub fn submit(data_dir: &Path, request: &AdminRequest) -> Result<Vec<u8>, String> {
    match UnixStream::connect(socket_path(data_dir)) {
        Ok(stream) => submit_to_socket(stream, request),
        Err(_) => {
            let store = Store::open(data_dir).map_err(|e| {
                format!(
                    "cannot open the store in {} ({e}); is another mxrack using it?",
                    data_dir.display()
                )
            })?;
            let result = execute(&store, request);
            store.shutdown();
            result
        }
    }
}

fn submit_to_socket(mut stream: UnixStream, request: &AdminRequest) -> Result<Vec<u8>, String> {
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("admin socket: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|e| format!("admin socket: {e}"))?;
    let response: AdminResponse =
        serde_json::from_str(&answer).map_err(|e| format!("admin socket: bad answer: {e}"))?;
    if !response.ok {
        return Err(response.error);
    }
    STANDARD
        .decode(response.output)
        .map_err(|e| format!("admin socket: bad answer: {e}"))
}

/// Serves the admin socket until shutdown. The socket is created with mode
/// 0600: only the appliance's own user administers it.
pub fn bind(data_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// SO_PEERCRED policy of the admin socket: root, or the user the service
/// runs as. A peer whose credentials cannot be read is refused.
pub fn peer_allowed(peer_uid: Option<u32>, own_uid: u32) -> bool {
    matches!(peer_uid, Some(uid) if uid == 0 || uid == own_uid)
}

/// Serves an admin socket bound by [`bind`] until shutdown.
pub async fn serve(
    listener: tokio::net::UnixListener,
    store: Arc<Store>,
    mut shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    let path = socket_path(store.data_dir());
    loop {
        let (stream, _) = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        // The socket's mode (0600) already keeps other users out; the peer's
        // credentials are checked as well, so a changed mode or an inherited
        // descriptor cannot hand the store to another local user.
        let peer_uid = stream.peer_cred().map(|c| c.uid()).ok();
        let allowed = peer_allowed(peer_uid, nix::unistd::geteuid().as_raw());
        if !allowed {
            warn!(
                ?peer_uid,
                "admin socket: peer refused (only root or the service's own user)"
            );
        }
        let store = store.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(
                read,
                ADMIN_REQUEST_BYTES_MAX,
            ));
            let mut line = String::new();
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            // The request is read (bounded) before a refusal, so the client
            // gets the answer instead of a broken pipe.
            let response = match serde_json::from_str::<AdminRequest>(&line) {
                _ if !allowed => {
                    Err("admin socket: only root or the service's own user may administer".into())
                }
                Err(e) => Err(format!("bad request: {e}")),
                Ok(request) => {
                    let op = serde_json::to_value(&request)
                        .ok()
                        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
                        .unwrap_or_default();
                    info!(%op, "admin request");
                    mxrack_store::spawn_blocking(move || execute(&store, &request))
                        .await
                        .unwrap_or_else(|_| Err("admin request failed".into()))
                }
            };
            let response = match response {
                Ok(bytes) => AdminResponse {
                    ok: true,
                    output: STANDARD.encode(bytes),
                    error: String::new(),
                },
                Err(error) => AdminResponse {
                    ok: false,
                    output: String::new(),
                    error,
                },
            };
            if let Ok(mut bytes) = serde_json::to_vec(&response) {
                bytes.push(b'\n');
                let _ = write.write_all(&bytes).await;
            }
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_service_user_administer() {
        let own = 1000;
        for (peer, allowed) in [
            (Some(0), true),
            (Some(own), true),
            (Some(65534), false),
            (Some(1001), false),
            (None, false),
        ] {
            assert_eq!(peer_allowed(peer, own), allowed, "{peer:?}");
        }
    }

    /// A real connection over the socket: the server reads our own uid
    /// with SO_PEERCRED and answers.
    #[tokio::test]
    async fn the_socket_serves_its_own_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        let store = mxrack_store::spawn_blocking(move || Store::open(&data).expect("store"))
            .await
            .expect("open");
        let listener = bind(dir.path()).expect("bind");
        let shutdown = mxrack_net::Shutdown::new();
        let server = tokio::spawn(serve(listener, store.clone(), shutdown.signal()));
        let data_dir = dir.path().to_path_buf();
        let answer = mxrack_store::spawn_blocking(move || {
            let stream = UnixStream::connect(socket_path(&data_dir)).expect("connect");
            submit_to_socket(stream, &AdminRequest::DomainList)
        })
        .await
        .expect("join");
        assert!(answer.is_ok(), "{answer:?}");
        shutdown.trigger();
        let _ = server.await;
        store.shutdown();
    }
}
