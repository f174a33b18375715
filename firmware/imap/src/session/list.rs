//! LIST and LSUB (RFC 3501 6.3.8, 6.3.9) with LIST-EXTENDED (RFC 5258),
//! LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154).
//!
//! Which names are answered, with which attributes, is decided by the pure
//! [`list_entries`] and [`lsub_entries`] over the folders and the
//! subscriptions (which outlive their folders, RFC 3501 6.3.6); the session
//! only renders them. Every set is computed once per command (ancestor
//! sets), so a LIST costs O(names x depth), whatever the hierarchy.

use std::collections::HashSet;

use mxrack_net::Conn;
use mxrack_store::{Folder, StoreError};

use super::{Session, blocking, matches_list_pattern};
use crate::parser::ListArgs;

/// One LIST answer: the name, its attributes, and whether it carries the
/// CHILDINFO ("SUBSCRIBED") extended data item (RFC 5258 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListEntry {
    pub name: String,
    pub attrs: Vec<String>,
    pub childinfo: bool,
    /// An existing folder (STATUS can be returned for it).
    pub exists: bool,
}

/// The proper ancestors of a name ("a/b/c": "a", "a/b").
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

/// What a LIST command (extended or not) answers, in order: existing
/// folders in creation order, then subscribed names without a folder and
/// the parents of subscribed names (sorted). `patterns` already carry the
/// reference.
pub(super) fn list_entries(
    folders: &[Folder],
    subscribed: &[String],
    patterns: &[String],
    args: &ListArgs,
) -> Vec<ListEntry> {
    let matches = |n: &str| patterns.iter().any(|p| matches_list_pattern(p, n));
    let existing: HashSet<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    let subs: HashSet<&str> = subscribed.iter().map(String::as_str).collect();
    // Names with an existing child (\HasChildren, RFC 5258 4).
    let parents: HashSet<&str> = folders.iter().flat_map(|f| ancestors(&f.name)).collect();
    // Names with a subscribed descendant, and those among them whose
    // subscribed descendant is answered itself: CHILDINFO goes only to a
    // name none of whose subscribed descendants matched (as Dovecot
    // answers; RFC 5258 3.5 requires it at least when none matched).
    let sub_parents: HashSet<&str> = subscribed.iter().flat_map(|s| ancestors(s)).collect();
    let covered: HashSet<&str> = subscribed
        .iter()
        .filter(|s| matches(s))
        .flat_map(|s| ancestors(s))
        .collect();
    let mut universe: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    if args.select_subscribed {
        let mut extra: Vec<&str> = subs
            .iter()
            .copied()
            .chain(sub_parents.iter().copied())
            .filter(|n| !existing.contains(n))
            .collect::<HashSet<&str>>()
            .into_iter()
            .collect();
        extra.sort_unstable();
        universe.extend(extra);
    }
    let mut out = Vec::new();
    for name in universe {
        if !matches(name) {
            continue;
        }
        let folder = folders.iter().find(|f| f.name == name);
        let is_sub = subs.contains(name);
        let mut childinfo = false;
        if args.select_subscribed && !is_sub {
            // RFC 5258 3.5: with RECURSIVEMATCH, a name that is not
            // subscribed itself but has a subscribed descendant is answered
            // with CHILDINFO.
            if args.select_recursivematch && sub_parents.contains(name) && !covered.contains(name) {
                childinfo = true;
            } else {
                continue;
            }
        }
        if args.select_special_use && folder.and_then(|f| f.special_use.as_ref()).is_none() {
            continue;
        }
        let mut attrs: Vec<String> = Vec::new();
        match folder {
            Some(f) => {
                attrs.push(if parents.contains(name) {
                    "\\HasChildren".into()
                } else {
                    "\\HasNoChildren".into()
                });
                if let Some(su) = &f.special_use {
                    attrs.push(su.clone());
                }
            }
            // RFC 5258 3.4: a subscribed name without a mailbox.
            None => {
                attrs.push("\\NonExistent".into());
                if parents.contains(name) {
                    attrs.push("\\HasChildren".into());
                }
            }
        }
        if (args.return_subscribed || args.select_subscribed) && is_sub {
            attrs.push("\\Subscribed".into());
        }
        out.push(ListEntry {
            name: name.to_string(),
            attrs,
            childinfo,
            exists: folder.is_some(),
        });
    }
    out
}

/// What LSUB answers (RFC 3501 6.3.9): each subscribed name that matches,
/// `\Noselect` when its folder is gone (Dovecot's form of \NonExistent
/// outside LIST-EXTENDED); and a parent of a subscribed name that the
/// pattern reaches while the name itself is out of its reach (`%`), as
/// `\Noselect` unless the parent is subscribed itself. (name, \Noselect).
pub(super) fn lsub_entries(
    folders: &[Folder],
    subscribed: &[String],
    patterns: &[String],
) -> Vec<(String, bool)> {
    let matches = |n: &str| patterns.iter().any(|p| matches_list_pattern(p, n));
    let existing: HashSet<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    let subs: HashSet<&str> = subscribed.iter().map(String::as_str).collect();
    // Subscribed names in folder order, then those without a folder.
    let mut order: Vec<&str> = folders
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| subs.contains(n))
        .collect();
    let mut gone: Vec<&str> = subscribed
        .iter()
        .map(String::as_str)
        .filter(|n| !existing.contains(n))
        .collect();
    gone.sort_unstable();
    order.extend(gone);
    let mut out = Vec::new();
    let mut shown_parents: HashSet<String> = HashSet::new();
    for name in order {
        if matches(name) {
            out.push((name.to_string(), !existing.contains(name)));
            continue;
        }
        for parent in ancestors(name) {
            if subs.contains(parent) || !matches(parent) || !shown_parents.insert(parent.into()) {
                continue;
            }
            out.push((parent.to_string(), true));
        }
    }
    out
}

impl Session {
    pub(super) async fn list(
        &mut self,
        tag: &str,
        args: ListArgs,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        // LIST "" "" asks for the hierarchy delimiter (RFC 3501 6.3.8).
        if args.patterns.len() == 1 && args.patterns[0].is_empty() {
            conn.write(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            return Ok(format!("{tag} OK LIST completed\r\n"));
        }
        self.list_impl(tag, args, false, conn).await
    }

    pub(super) async fn list_impl(
        &mut self,
        tag: &str,
        args: ListArgs,
        lsub: bool,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let user = self.user.clone().unwrap_or_default();
        let (folders, subscribed) = blocking(&self.svc.store, move |s| {
            Ok((s.folder_list(&user)?, s.subscriptions(&user)?))
        })
        .await?;
        let reference = self.decode_name(&args.reference).unwrap_or_default();
        let mut patterns = Vec::new();
        for p in &args.patterns {
            // A pattern that is not modified UTF-7 (RFC 3501 5.1.3) matches
            // no name; the LIST is answered, empty (as Dovecot does).
            if let Some(p) = self.decode_name(p) {
                patterns.push(format!("{reference}{p}"));
            }
        }
        let mut out = Vec::new();
        if lsub {
            for (name, noselect) in lsub_entries(&folders, &subscribed, &patterns) {
                out.extend_from_slice(if noselect {
                    b"* LSUB (\\Noselect) \"/\" ".as_slice()
                } else {
                    b"* LSUB () \"/\" ".as_slice()
                });
                out.extend_from_slice(&self.quoted_name(&name));
                out.extend_from_slice(b"\r\n");
            }
            conn.write(&out);
            return Ok(format!("{tag} OK LSUB completed\r\n"));
        }
        for e in list_entries(&folders, &subscribed, &patterns, &args) {
            out.extend_from_slice(format!("* LIST ({}) \"/\" ", e.attrs.join(" ")).as_bytes());
            out.extend_from_slice(&self.quoted_name(&e.name));
            if e.childinfo {
                out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            out.extend_from_slice(b"\r\n");
            if let (Some(items), true) = (&args.return_status, e.exists) {
                let user = self.user.clone().unwrap_or_default();
                let name = e.name.clone();
                if let Ok(snap) =
                    blocking(&self.svc.store, move |s| s.folder_snapshot(&user, &name)).await
                {
                    out.extend_from_slice(&self.status_line(
                        &e.name,
                        &snap.folder,
                        &snap.messages,
                        items,
                    ));
                }
            }
        }
        conn.write(&out);
        Ok(format!("{tag} OK LIST completed\r\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(id: u64, name: &str, special_use: Option<&str>) -> Folder {
        Folder {
            id,
            mailbox: "jo@example.net".into(),
            name: name.into(),
            uidvalidity: 1,
            uidnext: 1,
            special_use: special_use.map(str::to_string),
            highestmodseq: 1,
            first_recent_uid: 1,
        }
    }

    fn render(e: &[ListEntry]) -> Vec<String> {
        e.iter()
            .map(|e| {
                format!(
                    "({}) {}{}",
                    e.attrs.join(" "),
                    e.name,
                    if e.childinfo { " CHILDINFO" } else { "" }
                )
            })
            .collect()
    }

    /// The hierarchy of imaptest's listext script, in our words: test6 is
    /// subscribed and deleted; test2, test7, test8 have subscribed children.
    fn tree() -> (Vec<Folder>, Vec<String>) {
        let names = [
            "b", "b/t1", "b/t2", "b/t2/t1", "b/t3", "b/t4", "b/t4/t5", "b/t7", "b/t7/t7", "b/t8",
            "b/t8/t8", "b/t8/t9",
        ];
        let folders = names
            .iter()
            .zip(1..)
            .map(|(n, i)| folder(i, n, None))
            .collect();
        let mut subs: Vec<String> = ["b/t1", "b/t2/t1", "b/t6", "b/t7/t7", "b/t8/t8", "b/t8/t9"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        subs.sort();
        (folders, subs)
    }

    fn args(subscribed: bool, recursive: bool) -> ListArgs {
        ListArgs {
            select_subscribed: subscribed,
            select_recursivematch: recursive,
            ..ListArgs::default()
        }
    }

    #[test]
    fn list_extended_table() {
        let (folders, subs) = tree();
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table: Vec<(ListArgs, Vec<String>, Vec<&str>)> = vec![
            (
                args(true, false),
                p(&["b/*"]),
                vec![
                    "(\\HasNoChildren \\Subscribed) b/t1",
                    "(\\HasNoChildren \\Subscribed) b/t2/t1",
                    "(\\HasNoChildren \\Subscribed) b/t7/t7",
                    "(\\HasNoChildren \\Subscribed) b/t8/t8",
                    "(\\HasNoChildren \\Subscribed) b/t8/t9",
                    "(\\NonExistent \\Subscribed) b/t6",
                ],
            ),
            (
                args(true, true),
                p(&["b/t2%"]),
                vec!["(\\HasChildren) b/t2 CHILDINFO"],
            ),
            // The subscribed child matches too: no CHILDINFO for test7.
            (
                args(true, true),
                p(&["b*t7"]),
                vec!["(\\HasNoChildren \\Subscribed) b/t7/t7"],
            ),
            (
                args(true, true),
                p(&["b/t2", "b/t2/t1"]),
                vec!["(\\HasNoChildren \\Subscribed) b/t2/t1"],
            ),
            (
                ListArgs {
                    return_subscribed: true,
                    ..ListArgs::default()
                },
                p(&["b/%"]),
                vec![
                    "(\\HasNoChildren \\Subscribed) b/t1",
                    "(\\HasChildren) b/t2",
                    "(\\HasNoChildren) b/t3",
                    "(\\HasChildren) b/t4",
                    "(\\HasChildren) b/t7",
                    "(\\HasChildren) b/t8",
                ],
            ),
            // A plain LIST never shows the deleted test6.
            (ListArgs::default(), p(&["b/t6"]), vec![]),
            // RECURSIVEMATCH reaches a parent that is no folder at all.
            (args(true, true), p(&["b/%"]), {
                vec![
                    "(\\HasNoChildren \\Subscribed) b/t1",
                    "(\\HasChildren) b/t2 CHILDINFO",
                    "(\\HasChildren) b/t7 CHILDINFO",
                    "(\\HasChildren) b/t8 CHILDINFO",
                    "(\\NonExistent \\Subscribed) b/t6",
                ]
            }),
        ];
        for (a, pats, want) in table {
            assert_eq!(
                render(&list_entries(&folders, &subs, &pats, &a)),
                want,
                "{a:?} {pats:?}"
            );
        }
        let su = vec![folder(1, "INBOX", None), folder(2, "Junk", Some("\\Junk"))];
        let a = ListArgs {
            select_special_use: true,
            ..ListArgs::default()
        };
        assert_eq!(
            render(&list_entries(&su, &[], &["*".into()], &a)),
            ["(\\HasNoChildren \\Junk) Junk"]
        );
    }

    #[test]
    fn lsub_table() {
        let (folders, subs) = tree();
        let p = |s: &str| vec![s.to_string()];
        let lsub = |pat: &str| -> Vec<String> {
            lsub_entries(&folders, &subs, &p(pat))
                .into_iter()
                .map(|(n, ns)| format!("{}{n}", if ns { "\\Noselect " } else { "" }))
                .collect()
        };
        assert_eq!(
            lsub("b/%"),
            [
                "b/t1",
                "\\Noselect b/t2",
                "\\Noselect b/t7",
                "\\Noselect b/t8",
                "\\Noselect b/t6"
            ]
        );
        assert_eq!(lsub("*t6"), ["\\Noselect b/t6"]);
        assert_eq!(lsub("b/t8/*"), ["b/t8/t8", "b/t8/t9"]);
    }
}
