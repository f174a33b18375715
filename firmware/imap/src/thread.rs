//! THREAD (RFC 5256 4): ORDEREDSUBJECT and REFERENCES over the messages a
//! search found, and the thread-list rendering. Pure.
//!
//! Bounded: no recursion anywhere (every walk uses an explicit stack or
//! a parent chain, which the linking keeps acyclic); a message keeps at most
//! [`REFERENCES_MAX`] message IDs, each held as a 64-bit hash; a thread is
//! at most [`THREAD_DEPTH_MAX`] levels deep in the output (deeper messages
//! hang from their ancestor at that depth), so a client parsing the list
//! never nests deeper than that.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Message IDs kept from one References (or In-Reply-To) field: the last
/// ones, nearest the message, which decide its parent.
pub const REFERENCES_MAX: usize = 32;
/// Deepest thread level rendered.
pub const THREAD_DEPTH_MAX: usize = 64;
/// Bytes of a References field scanned for IDs (longer fields: the tail).
pub const REFERENCES_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    OrderedSubject,
    References,
}

/// One message as THREAD sees it.
#[derive(Debug, Clone)]
pub struct ThreadMsg {
    /// What the response shows: sequence number or UID.
    pub number: u32,
    /// The sent date (RFC 5256 2.2), UTC seconds.
    pub date: i64,
    /// The collation key of the base subject (RFC 5256 2.1).
    pub subject: String,
    /// The subject marked a reply or forward.
    pub reply: bool,
    /// Hash of the Message-ID, when it has a valid one.
    pub id: Option<u64>,
    /// Hashes of References (else In-Reply-To), oldest first.
    pub refs: Vec<u64>,
}

fn hash_id(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The msg-ids (`<...>`) of a header value, as hashes; the last
/// [`REFERENCES_MAX`] of them, from the last [`REFERENCES_BYTES_MAX`] bytes.
pub fn message_ids(value: &str) -> Vec<u64> {
    let mut start = value.len().saturating_sub(REFERENCES_BYTES_MAX);
    while !value.is_char_boundary(start) {
        start += 1;
    }
    let mut out = Vec::new();
    let mut rest = &value[start..];
    while let Some(open) = rest.find('<') {
        let Some(len) = rest[open + 1..].find(['>', '<']) else {
            break;
        };
        let inner = &rest[open + 1..open + 1 + len];
        let valid = rest[open + 1 + len..].starts_with('>')
            && !inner.is_empty()
            && inner.contains('@')
            && !inner.contains(char::is_whitespace);
        if valid {
            out.push(hash_id(inner));
        }
        rest = &rest[open + 1 + len..];
    }
    if out.len() > REFERENCES_MAX {
        out.drain(..out.len() - REFERENCES_MAX);
    }
    out
}

/// The one Message-ID of a header value, when it has a valid one.
pub fn message_id(value: &str) -> Option<u64> {
    message_ids(value).first().copied()
}

impl ThreadMsg {
    /// The thread keys of one message from its parsed header (None: no
    /// header could be read; the message then threads alone by date).
    pub fn of(number: u32, parsed: Option<&mail_parser::Message<'_>>, internal_date: i64) -> Self {
        let raw = |name: &'static str| parsed.and_then(|p| p.header_raw(name));
        let (subject, reply) =
            crate::sort::base_subject(parsed.and_then(|p| p.subject()).unwrap_or_default());
        let mut refs = raw("References").map(message_ids).unwrap_or_default();
        if refs.is_empty() {
            // RFC 5256 4 step 1.A: no References, the In-Reply-To's msg-id.
            refs = raw("In-Reply-To")
                .and_then(message_id)
                .into_iter()
                .collect();
        }
        let mut subject = crate::collate::key(&subject);
        if subject.len() > crate::sort::SORT_TEXT_BYTES_MAX {
            let mut end = crate::sort::SORT_TEXT_BYTES_MAX;
            while !subject.is_char_boundary(end) {
                end -= 1;
            }
            subject.truncate(end);
        }
        ThreadMsg {
            number,
            date: crate::sort::sent_date(parsed, internal_date),
            subject,
            reply,
            id: raw("Message-ID").and_then(message_id),
            refs,
        }
    }
}

/// A node of the thread tree: a message (an index into the input) or a
/// dummy standing for a referenced message that is not there.
#[derive(Debug, Clone, Default)]
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Tree<'a> {
    msgs: &'a [ThreadMsg],
    nodes: Vec<Node>,
    roots: Vec<usize>,
}

impl Tree<'_> {
    /// True when `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut cur = Some(b);
        while let Some(c) = cur {
            if c == a {
                return true;
            }
            cur = self.nodes[c].parent;
        }
        false
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    /// The (date, input index) a node sorts by: its message's, or for a
    /// dummy its first child's (children are sorted first).
    fn sort_key(&self, n: usize) -> (i64, usize) {
        let mut cur = n;
        loop {
            if let Some(m) = self.nodes[cur].msg {
                return (self.msgs[m].date, m);
            }
            match self.nodes[cur].children.first() {
                Some(&c) => cur = c,
                None => return (i64::MAX, usize::MAX),
            }
        }
    }

    /// Nodes below `roots`, each after its children (post-order), by an
    /// explicit stack.
    fn post_order(&self, roots: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(usize, bool)> = roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((n, expanded)) = stack.pop() {
            if expanded {
                out.push(n);
            } else {
                stack.push((n, true));
                for &c in self.nodes[n].children.iter().rev() {
                    stack.push((c, false));
                }
            }
        }
        out
    }

    fn sort_children(&mut self, roots: &mut [usize]) {
        for n in self.post_order(roots) {
            let mut kids = std::mem::take(&mut self.nodes[n].children);
            kids.sort_by_key(|&c| self.sort_key(c));
            self.nodes[n].children = kids;
        }
        roots.sort_by_key(|&r| self.sort_key(r));
    }
}

/// REFERENCES (RFC 5256 4, after jwz): link by References/In-Reply-To,
/// prune dummies, gather roots by base subject, sort by sent date.
fn references(msgs: &[ThreadMsg]) -> Tree<'_> {
    let mut t = Tree {
        msgs,
        nodes: Vec::with_capacity(msgs.len()),
        roots: Vec::new(),
    };
    let mut by_id: HashMap<u64, usize> = HashMap::new();
    let mut node_for = |t: &mut Tree<'_>, id: u64| -> usize {
        *by_id.entry(id).or_insert_with(|| {
            t.nodes.push(Node::default());
            t.nodes.len() - 1
        })
    };
    for (i, m) in msgs.iter().enumerate() {
        // (1) The message's node; a missing or duplicate Message-ID gets a
        // node of its own (RFC 5256 4 step 1).
        let own = match m.id.map(|id| node_for(&mut t, id)) {
            Some(n) if t.nodes[n].msg.is_none() => n,
            _ => {
                t.nodes.push(Node::default());
                t.nodes.len() - 1
            }
        };
        t.nodes[own].msg = Some(i);
        // (1.A) Chain the references, never re-parenting, never a loop.
        let refs: Vec<usize> = m.refs.iter().map(|&r| node_for(&mut t, r)).collect();
        for w in refs.windows(2) {
            let (p, c) = (w[0], w[1]);
            if t.nodes[c].parent.is_none() && !t.is_ancestor(c, p) {
                t.link(p, c);
            }
        }
        // (1.B) The last reference is the parent: an earlier link is
        // broken, and a link that would make a loop is not made.
        t.unlink(own);
        if let Some(&p) = refs.last()
            && !t.is_ancestor(own, p)
        {
            t.link(p, own);
        }
    }
    // (2) The root set.
    let mut roots: Vec<usize> = (0..t.nodes.len())
        .filter(|&n| t.nodes[n].parent.is_none())
        .collect();
    // (4) Prune dummies, bottom up: an empty dummy goes; a dummy's children
    // move up to its parent, or to the root set when there is one child.
    for n in t.post_order(&roots.clone()) {
        let kids = std::mem::take(&mut t.nodes[n].children);
        let mut kept = Vec::with_capacity(kids.len());
        for c in kids {
            if t.nodes[c].msg.is_none() {
                for g in std::mem::take(&mut t.nodes[c].children) {
                    t.nodes[g].parent = Some(n);
                    kept.push(g);
                }
            } else {
                kept.push(c);
            }
        }
        t.nodes[n].children = kept;
    }
    let mut pruned = Vec::with_capacity(roots.len());
    for r in roots {
        if t.nodes[r].msg.is_some() {
            pruned.push(r);
            continue;
        }
        match t.nodes[r].children.len() {
            0 => {}
            1 => {
                let c = t.nodes[r].children[0];
                t.nodes[r].children.clear();
                t.nodes[c].parent = None;
                pruned.push(c);
            }
            _ => pruned.push(r),
        }
    }
    roots = pruned;
    t.sort_children(&mut roots);
    // (5) Gather roots by base subject.
    let subject_of = |t: &Tree<'_>, r: usize| -> Option<usize> {
        t.nodes[r]
            .msg
            .or_else(|| t.nodes[r].children.first().and_then(|&c| t.nodes[c].msg))
    };
    let mut table: HashMap<&str, usize> = HashMap::new();
    for &r in &roots {
        let Some(m) = subject_of(&t, r) else { continue };
        let subject = msgs[m].subject.as_str();
        if subject.is_empty() {
            continue;
        }
        match table.get(subject) {
            None => {
                table.insert(subject, r);
            }
            Some(&old) => {
                let old_reply = t.nodes[old].msg.is_some_and(|o| msgs[o].reply);
                let new_reply = t.nodes[r].msg.is_some_and(|o| msgs[o].reply);
                if (t.nodes[r].msg.is_none() && t.nodes[old].msg.is_some())
                    || (t.nodes[old].msg.is_some() && old_reply && !new_reply)
                {
                    table.insert(subject, r);
                }
            }
        }
    }
    // Roots absorbed into another thread get a parent; a root that gains a
    // dummy above it is replaced by that dummy in the root set.
    let mut replaced: HashMap<usize, usize> = HashMap::new();
    for &r in &roots.clone() {
        if t.nodes[r].parent.is_some() {
            continue;
        }
        let Some(m) = subject_of(&t, r) else { continue };
        let subject = msgs[m].subject.as_str();
        let Some(&other) = table.get(subject) else {
            continue;
        };
        if other == r {
            continue;
        }
        let (r_dummy, o_dummy) = (t.nodes[r].msg.is_none(), t.nodes[other].msg.is_none());
        let other_reply = t.nodes[other].msg.is_some_and(|o| msgs[o].reply);
        if r_dummy && o_dummy {
            for c in std::mem::take(&mut t.nodes[r].children) {
                t.link(other, c);
            }
            // An emptied dummy is dropped from the root set below.
        } else if o_dummy {
            t.link(other, r);
        } else if r_dummy {
            // The table prefers a dummy, so this does not happen; kept whole.
        } else if !other_reply && msgs[m].reply {
            t.link(other, r);
        } else {
            // Siblings under a new dummy that takes the table entry's place.
            t.nodes.push(Node::default());
            let d = t.nodes.len() - 1;
            t.link(d, other);
            t.link(d, r);
            table.insert(subject, d);
            replaced.insert(other, d);
        }
    }
    roots = roots
        .iter()
        .map(|r| replaced.get(r).copied().unwrap_or(*r))
        .filter(|&r| {
            t.nodes[r].parent.is_none()
                && (t.nodes[r].msg.is_some() || !t.nodes[r].children.is_empty())
        })
        .collect();
    // (6) Sort by sent date.
    t.sort_children(&mut roots);
    t.roots = roots;
    t
}

/// ORDEREDSUBJECT (RFC 5256 4): sorted by base subject then sent date;
/// each run of one subject is a thread whose first message is the parent
/// of the others; threads in the order of their first message's date.
fn ordered_subject(msgs: &[ThreadMsg]) -> Tree<'_> {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|&a, &b| {
        (msgs[a].subject.as_str(), msgs[a].date, a).cmp(&(
            msgs[b].subject.as_str(),
            msgs[b].date,
            b,
        ))
    });
    let mut t = Tree {
        msgs,
        nodes: (0..msgs.len())
            .map(|i| Node {
                msg: Some(i),
                ..Node::default()
            })
            .collect(),
        roots: Vec::new(),
    };
    let mut roots = Vec::new();
    let mut current: Option<usize> = None;
    for i in order {
        match current {
            Some(r) if msgs[r].subject == msgs[i].subject => t.link(r, i),
            _ => {
                roots.push(i);
                current = Some(i);
            }
        }
    }
    t.sort_children(&mut roots);
    t.roots = roots;
    t
}

/// Renders threads (RFC 5256 5 thread-list) without recursion: a node with
/// one child continues its line ("1 2"), more children open a list each
/// ("1 (2)(3)"), a dummy shows only its children. A list opened at
/// [`THREAD_DEPTH_MAX`] levels of parentheses shows its whole subtree as
/// one line in date order, so the output never nests deeper.
fn render(t: &Tree<'_>) -> String {
    enum Step {
        Open(usize, usize),
        Close,
    }
    let number = |n: usize| t.nodes[n].msg.map(|m| t.msgs[m].number);
    let mut out = String::new();
    let mut stack: Vec<Step> = t.roots.iter().rev().map(|&r| Step::Open(r, 1)).collect();
    while let Some(step) = stack.pop() {
        let (mut n, depth) = match step {
            Step::Close => {
                out.push(')');
                continue;
            }
            Step::Open(n, d) => (n, d),
        };
        out.push('(');
        if depth >= THREAD_DEPTH_MAX {
            let mut below: Vec<usize> = t
                .post_order(&[n])
                .into_iter()
                .filter(|&x| t.nodes[x].msg.is_some())
                .collect();
            below.sort_by_key(|&x| t.sort_key(x));
            let nums: Vec<String> = below
                .iter()
                .filter_map(|&x| number(x))
                .map(|x| x.to_string())
                .collect();
            out.push_str(&nums.join(" "));
            out.push(')');
            continue;
        }
        loop {
            if let Some(num) = number(n) {
                if !out.ends_with('(') {
                    out.push(' ');
                }
                out.push_str(&num.to_string());
            }
            let kids = &t.nodes[n].children;
            match kids.len() {
                0 => {
                    out.push(')');
                    break;
                }
                1 => n = kids[0],
                _ => {
                    if !out.ends_with('(') {
                        out.push(' ');
                    }
                    stack.push(Step::Close);
                    for &c in kids.iter().rev() {
                        stack.push(Step::Open(c, depth + 1));
                    }
                    break;
                }
            }
        }
    }
    out
}

/// The THREAD response's data (after "* THREAD"): each thread as a
/// parenthesised list, in date order.
pub fn thread(algorithm: Algorithm, msgs: &[ThreadMsg]) -> String {
    let tree = match algorithm {
        Algorithm::OrderedSubject => ordered_subject(msgs),
        Algorithm::References => references(msgs),
    };
    render(&tree)
}

#[cfg(test)]
mod tests;
