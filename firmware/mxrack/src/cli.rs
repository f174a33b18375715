//! The command line (clap). Each subcommand either runs the appliance or
//! becomes an `AdminRequest`.

use crate::admin::{self, AdminRequest};
use clap::{Parser, Subcommand};
use mxrack_config::Config;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Where the embedded default keeps its data, relative to the working folder.
pub const EMBEDDED_DATA_DIR: &str = "mxrack-data";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] mxrack_config::ConfigError),
    #[error("{0}")]
    Admin(String),
    #[error("{0}")]
    Run(String),
    /// The password was checked and is not the one (exit 3): the console
    /// tells this apart from a check that could not run.
    #[error("wrong password")]
    WrongPassword,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 78, // EX_CONFIG
            CliError::Admin(_) => 1,
            CliError::Run(_) => 70, // EX_SOFTWARE
            CliError::WrongPassword => 3,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "mxrack", version, about = "The mxrack mail appliance")]
pub struct Cli {
    /// Configuration file (TOML). Without it, the embedded default is used.
    #[arg(long, global = true, env = "MXRACK_CONFIG")]
    config: Option<PathBuf>,
    /// Data folder; overrides the configuration's appliance.data_dir.
    #[arg(long, global = true, env = "MXRACK_DATA")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in the foreground until SIGTERM.
    Run,
    /// Validate or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Customer accounts: an account owns domains and mailboxes.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Hosted mail domains.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Mailboxes (users who log in and receive mail).
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Aliases: addresses that deliver to other addresses.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// The outbound queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Forwarding rules per mailbox.
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// The spam scorer: train its classifier, score a message.
    #[command(subcommand)]
    Spam(SpamCommand),
    /// DKIM keys per domain: create one, show the DNS record to publish.
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// Sender-domain block lists.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Messages in a mailbox.
    #[command(subcommand)]
    Message(MessageCommand),
    /// LDAP address books.
    #[command(subcommand)]
    Ldap(LdapCommand),
    /// The appliance's own administrator (the provider's login to the web
    /// Manager, user name `admin`).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The status page in a terminal; `status note` adds a maintenance note.
    Status {
        #[command(subcommand)]
        command: Option<StatusCommand>,
    },
    /// Every disk: serial, WWN, model, bay, state, array membership.
    Disks,
    /// A technician's disk swap, by serial number (or WWN).
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Self-check: every configured service answers on its port from the
    /// outside address, certificate, data folder, clock. Exit 1 on a failure.
    Doctor,
    /// The health monitor's own tools.
    #[command(subcommand)]
    Health(HealthCommand),
    /// Rebuild the mail metadata (meta.redb) from the recovery journal, the
    /// message files' own records and whatever of the old database reads.
    /// The server must be stopped. The old database is kept aside.
    Reconstruct {
        /// Rebuild only this mailbox's folders and messages; keep the rest
        /// of the database (which must read).
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// A consistent copy of the store into DIR while it runs (incremental:
    /// message files already in DIR are kept, hard-linked when on the same
    /// file system).
    Backup { dir: PathBuf },
    /// Put a backup back (the server must be stopped); mail newer than the
    /// backup comes back from its message files.
    Restore { dir: PathBuf },
    /// Check every record against its message file (size, hash), reference
    /// counts, usage, and the recovery journal against the database. Changes
    /// nothing; exit 1 when something is wrong.
    Verify,
    /// The replica pair (DRBD under /data): status, promote, demote.
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// The persistent log on the data array (mxrack, start-up scripts,
    /// kernel): the last lines, of one boot, one source, matching a text.
    #[command(args_conflicts_with_subcommands = true)]
    Logs {
        #[command(subcommand)]
        command: Option<LogsCommand>,
        /// How many lines (the last ones).
        #[arg(short = 'n', long, default_value_t = 200)]
        lines: usize,
        /// all, current, previous (the boot before this one) or a boot id.
        #[arg(long, default_value = "all")]
        boot: crate::logs_cli::BootFilter,
        /// mxrack, boot or kernel.
        #[arg(long)]
        source: Option<String>,
        /// Only lines containing this text.
        #[arg(long)]
        grep: Option<String>,
    },
    /// A/B firmware updates: `mxrack update BUNDLE` installs a signed image
    /// as the next one to boot; it must reach ready within [update]
    /// trial_secs or the appliance returns to the running one.
    #[command(args_conflicts_with_subcommands = true)]
    Update {
        #[command(subcommand)]
        command: Option<UpdateCommand>,
        /// The bundle (`-`: standard input).
        bundle: Option<PathBuf>,
        /// Trial boots before the boot manager gives up on it (default
        /// [update] tries).
        #[arg(long)]
        tries: Option<u32>,
        /// Restart into the new image at once.
        #[arg(long)]
        reboot: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LogsCommand {
    /// The appliance's log collector (the supervisor starts it): standard
    /// input (mxrack's output), the start-up log and the kernel's messages
    /// into <data_dir>/log/, rotated ([log] keep_files x file_max_bytes).
    Collect {
        #[arg(long, default_value = crate::logs_cli::BOOT_LOG)]
        boot_log: PathBuf,
        #[arg(long, default_value = crate::logs_cli::KMSG)]
        kmsg: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum UpdateCommand {
    /// The running image, whether it is on trial, the images on the boot
    /// partition, updates that rolled back, the trusted keys.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle's signature and image hash; install nothing.
    Verify {
        bundle: PathBuf,
        /// A folder of trusted *.pub keys instead of [update] keys_dir.
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// Make a signing key: PREFIX.key (secret) and PREFIX.pub (for the
    /// image's keyring).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key (PREFIX.pub text) of a signing key.
    Pubkey { key: PathBuf },
    /// Make a signed bundle of a unified kernel image (image/build runs
    /// this); its version and board come from the image's .osrel.
    Bundle {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        revision: Option<String>,
        uki: PathBuf,
    },
    /// The boot-time trial check (started by the boot script).
    #[command(hide = true)]
    Trial,
}

#[derive(Debug, Subcommand)]
enum ReplicaCommand {
    /// Role, peer connection, sync state and lag, last promotion.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Make this node the active one: DRBD primary, mount /data, start
    /// every service, take the service address. Refused while the peer is
    /// active or this node's copy is not up to date.
    Promote,
    /// Make this node the standby: stop the services, unmount /data, DRBD
    /// secondary, give up the service address.
    Demote,
    /// Shell assignments for the board scripts.
    #[command(hide = true)]
    Env {
        #[arg(long)]
        node: Option<String>,
    },
    /// The DRBD resource file for backing device DISK.
    #[command(hide = true)]
    DrbdConf { disk: String },
}

#[derive(Debug, Subcommand)]
enum StatusCommand {
    /// Add an operator's maintenance note to the status page (or, with
    /// --to ID, an update to entry ID).
    Note {
        title: String,
        text: Option<String>,
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum DiskCommand {
    /// Replace a disk. A healthy member of an array with a hot spare (or
    /// --with NEW) is hot-replaced: md copies it onto the new disk and the
    /// array stays redundant until the copy is in sync; it can be pulled
    /// once `mxrack disks` shows it "ready to remove". A failing or faulty
    /// disk is taken out at once. Prints the bay to pull it from.
    Replace {
        serial: String,
        /// The new disk (serial or WWN) to copy onto instead of the spare.
        #[arg(long)]
        with: Option<String>,
    },
    /// Make a new disk the rebuild target of a degraded array, or a spare.
    /// A disk failed out for I/O errors before is refused unless --force.
    Add {
        serial: String,
        #[arg(long)]
        force: bool,
    },
    /// Show which bay holds a disk: the enclosure's locate LED, or (no
    /// enclosure) its activity LED blinking in a 1 s on / 1 s off rhythm
    /// of reads for --seconds. --off stops it.
    Locate {
        serial: String,
        #[arg(long)]
        off: bool,
        /// How long to blink (at most 600).
        #[arg(long)]
        seconds: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum HealthCommand {
    /// The monitor's own cost (CPU per minute, peak RSS) over a fixture tree.
    Bench {
        /// A fixture tree to read; by default one is generated.
        #[arg(long)]
        sys_root: Option<PathBuf>,
        #[arg(long, default_value_t = 24)]
        disks: usize,
        #[arg(long, default_value_t = 4)]
        arrays: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        interval_secs: u64,
    },
}

/// `mxrack spam train`: the files in batches (each one admin request, so a
/// large corpus stays under the request size limit), one summary per batch.
fn spam_train(cli: &Cli, spam: bool, files: &[PathBuf]) -> Result<(), CliError> {
    let config = cli.effective_config()?;
    let files = crate::filter_cli::expand_files(files).map_err(CliError::Admin)?;
    if files.is_empty() {
        return Err(CliError::Admin("no message files found".into()));
    }
    use std::io::Write;
    let mut stdout = std::io::stdout();
    for batch in files.chunks(crate::filter_cli::TRAIN_FILES_PER_REQUEST) {
        let request = AdminRequest::SpamTrain {
            spam,
            files: batch.to_vec(),
        };
        let output =
            admin::submit(&config.appliance.data_dir, &request).map_err(CliError::Admin)?;
        stdout
            .write_all(&output)
            .and_then(|_| stdout.flush())
            .map_err(|e| CliError::Admin(format!("cannot write output: {e}")))?;
    }
    Ok(())
}

/// Runs a health request (running appliance or data folder) and prints it.
fn health_request(cli: &Cli, request: &AdminRequest) -> Result<(), CliError> {
    let config = cli.effective_config()?;
    let output = crate::health_cli::submit(&config, request).map_err(CliError::Admin)?;
    use std::io::Write;
    let mut stdout = std::io::stdout();
    stdout
        .write_all(&output)
        .and_then(|_| stdout.flush())
        .map_err(|e| CliError::Admin(format!("cannot write output: {e}")))
}

#[derive(Debug, Subcommand)]
enum ContactCommand {
    /// The contacts of BOOK (a mailbox address or an account name).
    List { book: String },
    /// Add a contact named NAME (cn) to BOOK.
    Add {
        book: String,
        name: String,
        #[arg(long)]
        mail: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Remove the contact KEY (as `contact list` prints it) from BOOK.
    Remove { book: String, key: String },
}

#[derive(Debug, Subcommand)]
enum LdapCommand {
    /// Set the LDAP password of a mailbox (NAME with @) or of an account,
    /// used to bind as cn=NAME,ou=auth,BASE. It is separate from the mail
    /// password. Read from --password or the first line of standard input.
    Passwd {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// The contacts of an address book (what LDAP and CardDAV serve).
    #[command(subcommand)]
    Contact(ContactCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Set the admin password (the Manager's `admin` login). Read from
    /// --password or the first line of standard input.
    Passwd {
        #[arg(long)]
        password: Option<String>,
    },
    /// Check a password (first line of standard input) against the admin
    /// password; exit 1 when it does not match. The console login uses it.
    Verify {
        /// Check `[appliance] console_password_hash` instead (no store:
        /// the data volume is not mounted).
        #[arg(long)]
        console_hash: bool,
    },
    /// Print the Argon2id hash of a password (first line of standard
    /// input), for `[appliance] console_password_hash`.
    Hash,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and validate FILE; print what is wrong, naming the key.
    Check { file: PathBuf },
    /// Print the effective configuration with every default filled in.
    Show,
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    Add { name: String },
    List,
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
    Add {
        domain: String,
        #[arg(long)]
        account: String,
    },
    List,
    Remove {
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
enum MailboxCommand {
    /// Add a mailbox; its domain must be hosted. The password is read from
    /// --password or, when absent, from the first line of standard input.
    Add {
        address: String,
        #[arg(long)]
        password: Option<String>,
        /// Full management access (writes the account's address book).
        #[arg(long)]
        full_management: bool,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    Remove {
        address: String,
    },
    /// Set a mailbox's mail password.
    Passwd {
        address: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Turn full management access on or off.
    SetFullManagement {
        address: String,
        #[arg(value_parser = ["on", "off"])]
        value: String,
    },
    /// Show a mailbox's storage use and quota, or set the quota: a size in
    /// bytes with an optional K, M or G suffix (powers of 1024), or `none`.
    Quota {
        address: String,
        #[arg(value_parser = parse_quota)]
        size: Option<QuotaArg>,
    },
}

/// A quota given on the command line: a size, or `none` to lift it.
#[derive(Debug, Clone, Copy)]
pub struct QuotaArg(Option<u64>);

fn parse_quota(text: &str) -> Result<QuotaArg, String> {
    mxrack_config::parse_quota(text).map(QuotaArg)
}

#[derive(Debug, Subcommand)]
enum AliasCommand {
    Add {
        address: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    List,
    Remove {
        address: String,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Messages waiting for outbound delivery.
    List,
    /// One entry in full: recipients, transport, attempts, last error.
    Show { id: String },
    /// Make every entry (or one) due now and wake the relay.
    Flush { id: Option<String> },
    /// Keep an entry from being delivered until released.
    Hold { id: String },
    /// Send a held entry (an operator's hold, or a forwarded copy the spam
    /// gate held): clears the hold, its reason and its expiry.
    Release { id: String },
    /// Drop an entry without delivering or bouncing it.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum ForwardCommand {
    /// Forward a mailbox's mail to one or more external addresses.
    Set {
        address: String,
        #[arg(required = true)]
        targets: Vec<String>,
        /// Do not keep a copy in the mailbox.
        #[arg(long)]
        no_local_copy: bool,
    },
    /// Every forwarding rule.
    List,
    Remove {
        address: String,
    },
    /// Forwarded copies the spam gate discarded, kept held in the queue
    /// for `forward.discard_keep_days` (all, or one mailbox's): reason,
    /// expiry; `mxrack queue release ID` sends one.
    Held {
        mailbox: Option<String>,
    },
    /// Per destination: forwards, discards, complaints (window and total),
    /// the current discard threshold, its bounds and recent changes.
    Stats {
        /// The day the window ends (YYYY-MM-DD, UTC); default today.
        #[arg(long, value_parser = crate::filter_cli::parse_day_arg)]
        day: Option<i64>,
    },
    /// The newest complaint reports received at the feedback address.
    Samples {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run the adaptive threshold policy for a day (default yesterday, the
    /// last complete day, as the server's daily run); each destination is
    /// evaluated at most once per day.
    Evaluate {
        #[arg(long, value_parser = crate::filter_cli::parse_day_arg)]
        day: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum SpamCommand {
    /// Learn messages (files, or folders of files, one message each) as
    /// spam or as ham. A message learned before as the other class is
    /// relearned.
    Train {
        #[arg(long, required_unless_present = "ham", conflicts_with = "ham")]
        spam: bool,
        #[arg(long)]
        ham: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// How much the classifier has learned.
    Stats,
    /// Score one message file and print its X-Spam-Score header.
    Score {
        file: PathBuf,
        /// The envelope sender (MAIL FROM) to judge the From header against.
        #[arg(long, default_value = "")]
        envelope_from: String,
        /// The client that handed the message over, as the MX session
        /// records it: SpamAssassin's rules see it as the newest relay.
        /// Without it, the file's own Received headers are all there is.
        #[arg(long)]
        client: Option<std::net::IpAddr>,
        /// The client's HELO name (with --client).
        #[arg(long, requires = "client", default_value = "")]
        helo: String,
        /// The client's confirmed reverse DNS name (with --client; "" for
        /// none; left out: not known, as when the lookup failed).
        #[arg(long, requires = "client")]
        rdns: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BlockCommand {
    /// Refuse mail from a sender domain (and its subdomains), for every
    /// account or, with --account, for that account's mailboxes.
    Add {
        domain: String,
        #[arg(long)]
        account: Option<String>,
    },
    List,
    Remove {
        domain: String,
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MessageCommand {
    /// UID, size and date of each message in a folder.
    List {
        address: String,
        #[arg(long, default_value = "INBOX")]
        folder: String,
    },
    /// Print one message exactly as stored.
    Cat {
        address: String,
        uid: u32,
        #[arg(long, default_value = "INBOX")]
        folder: String,
    },
}

#[derive(Debug, Subcommand)]
enum DkimCommand {
    /// Make a key pair for DOMAIN under DATA/dkim/ and print its DNS record.
    /// Mail from DOMAIN (and copies it forwards) is signed from then on.
    Create {
        domain: String,
        #[arg(long, default_value = mxrack_mailauth::keys::DEFAULT_SELECTOR)]
        selector: String,
        /// rsa (2048 bits, rsa-sha256: what Microsoft checks) or ed25519.
        #[arg(long, default_value = "rsa")]
        algorithm: String,
    },
    /// Print the TXT records to publish for DOMAIN's keys.
    Show { domain: String },
    /// Every key: domain, selector, algorithm, created.
    List,
}

fn dkim(config: &Config, command: &DkimCommand) -> Result<(), CliError> {
    use mxrack_mailauth::{Algorithm, KeyStore};
    let keys = KeyStore::new(&config.appliance.data_dir);
    let err = |e: mxrack_mailauth::MailAuthError| CliError::Admin(e.to_string());
    let print = |k: &mxrack_mailauth::DkimKey| {
        println!("{}", k.zone_line());
    };
    match command {
        DkimCommand::Create {
            domain,
            selector,
            algorithm,
        } => {
            let algorithm = Algorithm::parse(algorithm).ok_or_else(|| {
                CliError::Admin(format!("{algorithm:?}: the algorithm is rsa or ed25519"))
            })?;
            let key = keys
                .create(domain, selector, algorithm, mxrack_mailauth::now_secs())
                .map_err(err)?;
            println!(
                "created {} key {} for {}; publish:",
                key.algorithm.k_tag(),
                key.selector,
                key.domain
            );
            print(&key);
        }
        DkimCommand::Show { domain } => {
            let list = keys.for_domain(domain).map_err(err)?;
            if list.is_empty() {
                return Err(CliError::Admin(format!(
                    "{domain} has no DKIM key (mxrack dkim create {domain})"
                )));
            }
            list.iter().for_each(print);
        }
        DkimCommand::List => {
            for k in keys.list().map_err(err)? {
                println!(
                    "{}\t{}\t{}\tcreated {}",
                    k.domain,
                    k.selector,
                    k.algorithm.k_tag(),
                    rfc3339_day(k.created)
                );
            }
        }
    }
    Ok(())
}

/// `2026-06-01` from Unix seconds (days since the epoch, civil calendar).
fn rfc3339_day(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Cli {
    /// The effective configuration: the file given, or the embedded default.
    fn effective_config(&self) -> Result<Config, CliError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::embedded_default(PathBuf::from(EMBEDDED_DATA_DIR)),
        };
        if let Some(data) = &self.data {
            config.appliance.data_dir = data.clone();
        }
        Ok(config)
    }
}

fn password_from(arg: Option<String>) -> Result<String, CliError> {
    if let Some(p) = arg {
        return Ok(p);
    }
    // At most one password's worth (and its line end) is read.
    use std::io::{BufRead, Read};
    let max = mxrack_auth::argon::PASSWORD_BYTES_MAX;
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .take(max as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| {
            CliError::Admin(format!("cannot read the password from standard input: {e}"))
        })?;
    let line =
        String::from_utf8(line).map_err(|_| CliError::Admin("the password is not UTF-8".into()))?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.len() > max {
        return Err(CliError::Admin(format!(
            "the password is longer than {max} bytes"
        )));
    }
    if p.is_empty() {
        return Err(CliError::Admin(
            "no password given (use --password or standard input)".into(),
        ));
    }
    Ok(p)
}

/// A progress line on a terminal (standard error), nothing otherwise.
fn progress_bar() -> impl FnMut(&str, u64, u64) {
    let tty = std::io::stderr().is_terminal();
    let mut last = std::time::Instant::now() - std::time::Duration::from_secs(1);
    move |phase: &str, done: u64, total: u64| {
        if !tty || last.elapsed() < std::time::Duration::from_millis(100) {
            return;
        }
        last = std::time::Instant::now();
        let width = 30usize;
        let filled = if total == 0 {
            0
        } else {
            (done.min(total) as usize * width) / total as usize
        };
        eprint!(
            "\r\x1b[K[{}{}] {done}/{total} {phase}",
            "#".repeat(filled),
            " ".repeat(width - filled)
        );
    }
}

/// The summary `mxrack reconstruct` and `mxrack restore` print.
fn reconstruct_text(r: &mxrack_store::ReconstructReport) -> String {
    let mut out = format!(
        "reconstructed from {}: {} mailboxes, {} folders, {} messages, {} queue entries in {:.1} s\n",
        r.source, r.mailboxes, r.folders, r.messages, r.queue_entries, r.seconds
    );
    let counted: [(u64, &str); 5] = [
        (
            r.from_files as u64,
            "messages put back from their files' own records (where they were delivered)",
        ),
        (
            r.queue_from_files as u64,
            "queue entries put back from files, held: check `mxrack queue list`, then `mxrack queue release ID`",
        ),
        (
            r.lost_found as u64,
            "message files no mailbox claims moved to lost+found/",
        ),
        (
            r.missing_files as u64,
            "records left out: their message file is missing",
        ),
        (
            r.journal_damaged_bytes,
            "bytes at the end of the journal could not be read",
        ),
    ];
    for (n, what) in counted.iter().filter(|(n, _)| *n > 0) {
        out.push_str(&format!("  {n} {what}\n"));
    }
    for t in &r.tables_lost {
        out.push_str(&format!("  table {t} could not be read: rebuilt empty\n"));
    }
    if let Some(old) = &r.old_database {
        out.push_str(&format!("  the old database is kept as {old}\n"));
    }
    out
}

fn replica(cli: &Cli, c: &ReplicaCommand) -> Result<(), CliError> {
    use crate::replica_cli as r;
    match c {
        ReplicaCommand::Promote => return r::run_script("promote", false),
        ReplicaCommand::Demote => return r::run_script("demote", false),
        _ => {}
    }
    let config = cli.effective_config()?;
    let out = match c {
        ReplicaCommand::Status { json } => r::status(&config, *json)?,
        ReplicaCommand::Env { node } => r::env(&config, node.as_deref())?,
        ReplicaCommand::DrbdConf { disk } => r::drbd_conf(&config, disk)?,
        _ => unreachable!("handled above"),
    };
    print!("{out}");
    Ok(())
}

fn update(
    cli: &Cli,
    c: Option<&UpdateCommand>,
    bundle: Option<&std::path::Path>,
    tries: Option<u32>,
    reboot: bool,
) -> Result<(), CliError> {
    use crate::update_cli as u;
    // [update] (the keyring, the trial's rules) is the image's, never the
    // operator's /data configuration: the trust anchor travels with the
    // image. Off the appliance (no image configuration), the one given.
    let config = || -> Result<Config, CliError> {
        let image = std::path::Path::new(u::IMAGE_CONFIG);
        if !image.exists() {
            return cli.effective_config();
        }
        // An image whose configuration does not load is still checked by
        // the trial (with [update]'s defaults): it must not stay on trial.
        Ok(Config::load(image).unwrap_or_else(|e| {
            eprintln!("mxrack: {}: {e}; [update] defaults apply", image.display());
            Config::embedded_default(PathBuf::from(EMBEDDED_DATA_DIR))
        }))
    };
    let out = match c {
        Some(UpdateCommand::Keygen { out }) => u::keygen(out)?,
        Some(UpdateCommand::Pubkey { key }) => u::pubkey(key)?,
        Some(UpdateCommand::Bundle {
            key,
            out,
            revision,
            uki,
        }) => u::make_bundle(key, uki, out, revision.as_deref())?,
        Some(UpdateCommand::Status { json }) => u::status(&config()?, *json)?,
        Some(UpdateCommand::Verify { bundle, keys }) => {
            u::verify(&config()?, bundle, keys.as_deref())?
        }
        Some(UpdateCommand::Trial) => u::trial(&config()?)?,
        None => match bundle {
            Some(b) => u::install(&config()?, b, tries, reboot)?,
            None => {
                return Err(CliError::Admin(
                    "mxrack update BUNDLE, or one of: status, verify, keygen, pubkey, bundle"
                        .into(),
                ));
            }
        },
    };
    print!("{out}");
    Ok(())
}

pub fn dispatch(cli: Cli) -> Result<(), CliError> {
    let request = match &cli.command {
        Command::Run => {
            let config = cli.effective_config()?;
            return crate::supervisor::run(config).map_err(CliError::Run);
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = Config::load(file)?;
            println!("{}: valid", file.display());
            let listeners =
                config.smtp.mx.len() + config.smtp.submission.len() + config.smtp.submissions.len();
            println!(
                "  {listeners} SMTP listener(s), data in {}",
                config.appliance.data_dir.display()
            );
            // The spam rules are read as the server reads them at start.
            let spam_rules =
                |e: mxrack_filter::FilterError| CliError::Run(format!("[spam] rules: {e}"));
            // mxrack's own rules (a rules file, else the built-in ones).
            let own = mxrack_config::Spam {
                spamassassin_rules: None,
                ..config.spam.clone()
            };
            let own = mxrack_filter::rules_from_config(&own).map_err(spam_rules)?;
            if let Some(dir) = &config.spam.spamassassin_rules {
                let sa = mxrack_filter::sa::load_dir(dir).map_err(spam_rules)?;
                println!("  spam rules: {}", sa.summary());
                if config.spam.join() == mxrack_config::SpamJoin::Mean {
                    println!(
                        "  joined with {} mxrack rules: the score is the mean of both (spamassassin_join = \"mean\")",
                        own.len()
                    );
                }
            } else {
                println!("  spam rules: {} mxrack rules", own.len());
            }
            if !config.spam.trusted_networks.is_empty() {
                println!(
                    "  spam trusted_networks: {} (with loopback; trust is not inferred)",
                    config.spam.trusted_networks.join(", ")
                );
            }
            return Ok(());
        }
        Command::Dkim(c) => return dkim(&cli.effective_config()?, c),
        Command::Replica(c) => return replica(&cli, c),
        Command::Logs {
            command,
            lines,
            boot,
            source,
            grep,
        } => {
            let config = cli.effective_config()?;
            let out = match command {
                Some(LogsCommand::Collect { boot_log, kmsg }) => {
                    crate::logs_cli::collect(&config, boot_log, kmsg)?
                }
                None => crate::logs_cli::show(
                    &config,
                    *lines,
                    boot,
                    source.as_deref(),
                    grep.as_deref(),
                )?,
            };
            print!("{out}");
            return Ok(());
        }
        Command::Update {
            command,
            bundle,
            tries,
            reboot,
        } => return update(&cli, command.as_ref(), bundle.as_deref(), *tries, *reboot),
        Command::Config(ConfigCommand::Show) => {
            print!("{}", cli.effective_config()?.to_toml());
            return Ok(());
        }
        Command::Status { command } => {
            let request = match command {
                None => AdminRequest::Status,
                Some(StatusCommand::Note { title, text, to }) => AdminRequest::StatusNote {
                    title: title.clone(),
                    text: text.clone(),
                    to: *to,
                },
            };
            return health_request(&cli, &request);
        }
        Command::Disks => return health_request(&cli, &AdminRequest::Disks),
        Command::Disk(c) => {
            let request = match c {
                DiskCommand::Replace { serial, with } => AdminRequest::DiskReplace {
                    serial: serial.clone(),
                    with: with.clone(),
                },
                DiskCommand::Add { serial, force } => AdminRequest::DiskAdd {
                    serial: serial.clone(),
                    force: *force,
                },
                DiskCommand::Locate {
                    serial,
                    off,
                    seconds,
                } => AdminRequest::DiskLocate {
                    serial: serial.clone(),
                    off: *off,
                    secs: *seconds,
                },
            };
            return health_request(&cli, &request);
        }
        Command::Reconstruct { .. } | Command::Restore { .. } => {
            let config = cli.effective_config()?;
            let data_dir = &config.appliance.data_dir;
            if crate::admin::server_running(data_dir) {
                return Err(CliError::Admin(format!(
                    "mxrack is running on {} (its admin socket answers): stop it first",
                    data_dir.display()
                )));
            }
            // redb panics on some damaged pages; reconstruct catches that and
            // goes on without the page: one line, not a backtrace.
            std::panic::set_hook(Box::new(|info| {
                let what = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                eprintln!("note: a damaged part of the old database could not be read ({what})");
            }));
            let mut bar = progress_bar();
            let report = match &cli.command {
                Command::Restore { dir } => {
                    mxrack_store::recovery::restore(dir, data_dir, &mut bar)
                }
                Command::Reconstruct { mailbox } => {
                    mxrack_store::recovery::reconstruct(data_dir, mailbox.as_deref(), &mut bar)
                }
                _ => unreachable!("matched above"),
            }
            .map_err(|e| CliError::Admin(e.to_string()))?;
            eprint!(
                "{}",
                if std::io::stderr().is_terminal() {
                    "\r\x1b[K"
                } else {
                    ""
                }
            );
            print!("{}", reconstruct_text(&report));
            return Ok(());
        }
        Command::Doctor => {
            let config = cli.effective_config()?;
            return if crate::health_cli::doctor(&config).map_err(CliError::Run)? {
                Ok(())
            } else {
                Err(CliError::Admin("a self-check failed".into()))
            };
        }
        Command::Health(HealthCommand::Bench {
            sys_root,
            disks,
            arrays,
            seconds,
            interval_secs,
        }) => {
            let config = cli.effective_config()?;
            let report = crate::health_cli::bench(
                &config,
                sys_root.as_deref(),
                *disks,
                *arrays,
                *seconds,
                (*interval_secs).max(1),
            )
            .map_err(CliError::Run)?;
            print!("{report}");
            return Ok(());
        }
        Command::Account(c) => match c {
            AccountCommand::Add { name } => AdminRequest::AccountAdd { name: name.clone() },
            AccountCommand::List => AdminRequest::AccountList,
            AccountCommand::Remove { name } => AdminRequest::AccountRemove { name: name.clone() },
        },
        Command::Domain(c) => match c {
            DomainCommand::Add { domain, account } => AdminRequest::DomainAdd {
                domain: domain.clone(),
                account: account.clone(),
            },
            DomainCommand::List => AdminRequest::DomainList,
            DomainCommand::Remove { domain } => AdminRequest::DomainRemove {
                domain: domain.clone(),
            },
        },
        Command::Mailbox(c) => match c {
            MailboxCommand::Add {
                address,
                password,
                full_management,
            } => AdminRequest::MailboxAdd {
                address: address.clone(),
                password: password_from(password.clone())?,
                full_management: *full_management,
            },
            MailboxCommand::List { domain } => AdminRequest::MailboxList {
                domain: domain.clone(),
            },
            MailboxCommand::Remove { address } => AdminRequest::MailboxRemove {
                address: address.clone(),
            },
            MailboxCommand::Passwd { address, password } => AdminRequest::MailboxPasswd {
                address: address.clone(),
                password: password_from(password.clone())?,
            },
            MailboxCommand::Quota { address, size } => AdminRequest::MailboxQuota {
                address: address.clone(),
                set: size.map(|q| q.0),
            },
            MailboxCommand::SetFullManagement { address, value } => {
                AdminRequest::MailboxFullManagement {
                    address: address.clone(),
                    on: value == "on",
                }
            }
        },
        Command::Alias(c) => match c {
            AliasCommand::Add { address, targets } => AdminRequest::AliasAdd {
                address: address.clone(),
                targets: targets.clone(),
            },
            AliasCommand::List => AdminRequest::AliasList,
            AliasCommand::Remove { address } => AdminRequest::AliasRemove {
                address: address.clone(),
            },
        },
        Command::Queue(c) => match c {
            QueueCommand::List => AdminRequest::QueueList,
            QueueCommand::Show { id } => AdminRequest::QueueShow { id: id.clone() },
            QueueCommand::Flush { id } => AdminRequest::QueueFlush { id: id.clone() },
            QueueCommand::Hold { id } => AdminRequest::QueueHold {
                id: id.clone(),
                hold: true,
            },
            QueueCommand::Release { id } => AdminRequest::QueueHold {
                id: id.clone(),
                hold: false,
            },
            QueueCommand::Delete { id } => AdminRequest::QueueDelete { id: id.clone() },
        },
        Command::Forward(c) => match c {
            ForwardCommand::Set {
                address,
                targets,
                no_local_copy,
            } => AdminRequest::ForwardSet {
                address: address.clone(),
                targets: targets.clone(),
                keep_copy: !no_local_copy,
            },
            ForwardCommand::List => AdminRequest::ForwardShow,
            ForwardCommand::Held { mailbox } => AdminRequest::ForwardHeld {
                mailbox: mailbox.clone(),
            },
            ForwardCommand::Remove { address } => AdminRequest::ForwardRemove {
                address: address.clone(),
            },
            ForwardCommand::Stats { day } => AdminRequest::ForwardStats {
                forward: cli.effective_config()?.forward,
                day: *day,
            },
            ForwardCommand::Samples { limit } => AdminRequest::ForwardSamples { limit: *limit },
            ForwardCommand::Evaluate { day } => AdminRequest::ForwardEvaluate {
                forward: cli.effective_config()?.forward,
                day: *day,
            },
        },
        Command::Spam(SpamCommand::Train { spam, files, .. }) => {
            return spam_train(&cli, *spam, files);
        }
        Command::Spam(SpamCommand::Stats) => AdminRequest::SpamStats,
        Command::Spam(SpamCommand::Score {
            file,
            envelope_from,
            client,
            helo,
            rdns,
        }) => {
            let config = cli.effective_config()?;
            AdminRequest::SpamScore {
                file: std::fs::canonicalize(file)
                    .map_err(|e| CliError::Admin(format!("{}: {e}", file.display())))?,
                envelope_from: envelope_from.clone(),
                hop: client.map(|client| crate::admin::ScoreHop {
                    client,
                    helo: helo.clone(),
                    rdns: rdns.clone(),
                    by: config.appliance.hostname.clone(),
                }),
                spam: config.spam,
            }
        }
        Command::Block(c) => match c {
            BlockCommand::Add { domain, account } => AdminRequest::BlockAdd {
                domain: domain.clone(),
                account: account.clone(),
            },
            BlockCommand::List => AdminRequest::BlockList,
            BlockCommand::Remove { domain, account } => AdminRequest::BlockRemove {
                domain: domain.clone(),
                account: account.clone(),
            },
        },
        Command::Ldap(LdapCommand::Passwd { name, password }) => AdminRequest::LdapPasswd {
            name: name.clone(),
            password: password_from(password.clone())?,
        },
        Command::Ldap(LdapCommand::Contact(c)) => match c {
            ContactCommand::List { book } => AdminRequest::ContactList { book: book.clone() },
            ContactCommand::Add {
                book,
                name,
                mail,
                phone,
            } => {
                let ldap = &cli.effective_config()?.ldap;
                AdminRequest::ContactAdd {
                    book: book.clone(),
                    cn: name.clone(),
                    mail: mail.clone(),
                    phone: phone.clone(),
                    max_entries: ldap.max_entries_per_book,
                    max_bytes: ldap.max_book_bytes,
                }
            }
            ContactCommand::Remove { book, key } => AdminRequest::ContactRemove {
                book: book.clone(),
                key: key.clone(),
            },
        },
        Command::Admin(AdminCommand::Passwd { password }) => AdminRequest::AdminPasswd {
            password: password_from(password.clone())?,
        },
        Command::Admin(AdminCommand::Verify {
            console_hash: false,
        }) => {
            let request = AdminRequest::AdminVerify {
                password: password_from(None)?,
            };
            let config = cli.effective_config()?;
            return match admin::submit(&config.appliance.data_dir, &request) {
                Ok(_) => Ok(()),
                Err(m) if m == "wrong password" => Err(CliError::WrongPassword),
                Err(m) => Err(CliError::Admin(m)),
            };
        }
        Command::Admin(AdminCommand::Verify { console_hash: true }) => {
            let config = cli.effective_config()?;
            let password = password_from(None)?;
            let Some(hash) = &config.appliance.console_password_hash else {
                return Err(CliError::Admin(
                    "no [appliance] console_password_hash in the configuration".into(),
                ));
            };
            return if mxrack_auth::argon::verify(&password, hash) {
                Ok(())
            } else {
                Err(CliError::WrongPassword)
            };
        }
        Command::Admin(AdminCommand::Hash) => {
            let password = password_from(None)?;
            let hash =
                mxrack_auth::argon::hash(&password).map_err(|e| CliError::Admin(e.to_string()))?;
            println!("{hash}");
            return Ok(());
        }
        Command::Backup { dir } => {
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                std::env::current_dir()
                    .map_err(|e| CliError::Admin(e.to_string()))?
                    .join(dir)
            };
            AdminRequest::Backup { dir }
        }
        Command::Verify => AdminRequest::Verify,
        Command::Message(c) => match c {
            MessageCommand::List { address, folder } => AdminRequest::MessageList {
                address: address.clone(),
                folder: folder.clone(),
            },
            MessageCommand::Cat {
                address,
                uid,
                folder,
            } => AdminRequest::MessageCat {
                address: address.clone(),
                folder: folder.clone(),
                uid: *uid,
            },
        },
    };
    let config = cli.effective_config()?;
    let output = admin::submit(&config.appliance.data_dir, &request).map_err(CliError::Admin)?;
    use std::io::Write;
    let mut stdout = std::io::stdout();
    stdout
        .write_all(&output)
        .and_then(|_| stdout.flush())
        .map_err(|e| CliError::Admin(format!("cannot write output: {e}")))
}
