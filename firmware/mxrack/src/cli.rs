//! The command line (clap). Each subcommand either runs the appliance or
//! becomes an `AdminRequest`.

use crate::admin::{self, AdminRequest};
use clap::{Parser, Subcommand};
use mxrack_config::Config;
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
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 78, // EX_CONFIG
            CliError::Admin(_) => 1,
            CliError::Run(_) => 70, // EX_SOFTWARE
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
    /// Messages in a mailbox.
    #[command(subcommand)]
    Message(MessageCommand),
    /// LDAP address books.
    #[command(subcommand)]
    Ldap(LdapCommand),
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
    if text.eq_ignore_ascii_case("none") {
        return Ok(QuotaArg(None));
    }
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{text:?}: the unit must be K, M or G")),
    };
    n.checked_mul(mult)
        .map(|b| QuotaArg(Some(b)))
        .ok_or_else(|| format!("{text:?} is too large"))
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
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| {
        CliError::Admin(format!("cannot read the password from standard input: {e}"))
    })?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        return Err(CliError::Admin(
            "no password given (use --password or standard input)".into(),
        ));
    }
    Ok(p)
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
            return Ok(());
        }
        Command::Config(ConfigCommand::Show) => {
            print!("{}", cli.effective_config()?.to_toml());
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
        Command::Queue(QueueCommand::List) => AdminRequest::QueueList,
        Command::Ldap(LdapCommand::Passwd { name, password }) => AdminRequest::LdapPasswd {
            name: name.clone(),
            password: password_from(password.clone())?,
        },
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
