//! The SpamAssassin corpus as both benchmark examples read it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// (folder, name in the tables, spam, older set).
pub const GROUPS: [(&str, &str, bool, bool); 5] = [
    ("easy-ham-1", "easy_ham", false, true),
    ("spam-1", "spam", true, true),
    ("easy-ham-2", "easy_ham_2", false, false),
    ("hard-ham-1", "hard_ham", false, false),
    ("spam-2", "spam_2", true, false),
];
/// Scoring time is judged against this (only used by messages without a
/// Received header): 2005, the corpus' own era.
pub const NOW: i64 = 1_110_000_000;

pub struct Sample {
    /// `folder/file`, as in SpamAssassin's score file.
    pub key: String,
    pub group: &'static str,
    pub spam: bool,
    pub older: bool,
    /// Position in its folder (file number order).
    pub index: usize,
    pub bytes: Vec<u8>,
    pub envelope: String,
}

pub fn prepare(raw: &[u8]) -> Vec<u8> {
    let mut raw = raw;
    if raw.starts_with(b"From ") {
        let end = raw
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |i| i + 1);
        raw = &raw[end..];
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

pub fn return_path(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(&message[..message.len().min(64 * 1024)]);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(value) = line
            .get(..12)
            .filter(|n| n.eq_ignore_ascii_case("Return-Path:"))
            .and_then(|_| line.get(12..))
        {
            return value.trim().trim_matches(['<', '>']).to_string();
        }
    }
    String::new()
}

pub fn load(dir: &Path) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (folder, group, spam, older) in GROUPS {
        let path = dir.join(folder);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        names.sort();
        for (index, file) in names.into_iter().enumerate() {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let raw = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let bytes = prepare(&raw);
            out.push(Sample {
                key: format!("{folder}/{name}"),
                group,
                spam,
                older,
                index,
                envelope: return_path(&bytes),
                bytes,
            });
        }
    }
    Ok(out)
}
