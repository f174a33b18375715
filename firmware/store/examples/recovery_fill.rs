//! Fills a data folder for the reconstruct benchmark
//! (`firmware/bench/reconstruct.sh`): MAILBOXES mailboxes in one account,
//! MESSAGES messages of about 1.5 KiB delivered round-robin through
//! `Store::deliver` (group commit, as SMTP does), a tenth of them flagged
//! and a twentieth moved to another folder, so the journal holds real work.
//!
//! Usage: recovery_fill DIR MAILBOXES MESSAGES

use std::sync::Arc;
use std::time::Instant;

use mxrack_store::{Delivery, FlagOp, Store};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: recovery_fill DIR MAILBOXES MESSAGES");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let mailboxes: usize = args[2].parse().expect("MAILBOXES");
    let messages: usize = args[3].parse().expect("MESSAGES");
    let store = Store::open(&dir).expect("open store");
    store.account_add("bench").expect("account");
    store.domain_add("bench.example", "bench").expect("domain");
    let names: Vec<String> = (0..mailboxes)
        .map(|i| format!("u{i:04}@bench.example"))
        .collect();
    for n in &names {
        store
            .mailbox_add(n, "bench-password", false)
            .expect("mailbox");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let names = Arc::new(names);
    rt.block_on(async {
        let mut tasks = Vec::new();
        let workers = 64;
        for w in 0..workers {
            let store = Arc::clone(&store);
            let names = Arc::clone(&names);
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < messages {
                    let to = names[i % names.len()].clone();
                    let body = format!(
                        "From: sender{i}@remote.example\r\nTo: {to}\r\nSubject: bench {i}\r\nMessage-ID: <{i}@bench>\r\n\r\n{}\r\n",
                        "the quick brown fox jumps over the lazy dog. ".repeat(30)
                    );
                    let d = Delivery {
                        mail_from: format!("sender{i}@remote.example"),
                        local: vec![to],
                        remote: vec![],
                        body: body.into_bytes(),
                        copies: vec![],
                    };
                    store.deliver(d, store.next_id()).await.expect("deliver");
                    i += workers;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    let fill = t0.elapsed().as_secs_f64();
    for (k, n) in names.iter().enumerate() {
        let per = store.messages(n, "INBOX").expect("messages");
        let uids: Vec<u32> = per.iter().map(|m| m.uid).filter(|u| u % 10 == 0).collect();
        store
            .set_flags(n, "INBOX", &uids, FlagOp::Add, &["\\Seen".into()])
            .expect("flags");
        if k % 2 == 0 {
            let moved: Vec<u32> = per.iter().map(|m| m.uid).filter(|u| u % 10 == 1).collect();
            store
                .copy_messages(n, "INBOX", &moved, "Trash", true)
                .expect("move");
        }
    }
    store.shutdown();
    println!(
        "filled {} with {messages} messages in {mailboxes} mailboxes in {fill:.1} s ({:.0}/s)",
        dir.display(),
        messages as f64 / fill
    );
}
