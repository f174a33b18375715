"""SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT and
CONTEXT=SEARCH (RFC 5267), and CONDSTORE in SEARCH (RFC 7162 3.1) with real
clients: the exact exchanges on a line-level client, and Python's imaplib
(`sort`, `thread`, `uid`, `search`).

Each test builds its own folder by APPEND with explicit internal dates, so
arrival order, ties and sizes are known.
"""

from __future__ import annotations

import re

import pytest

from test_imap import (  # noqa: F401  (imap_server is a fixture)
    Imap,
    close,
    imap_server,
    imaps,
    new_account,
    raw_imaps,
)


def message(headers: list[str], body_bytes: int) -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + "x" * body_bytes + "\r\n").encode()


def fill(server, acct, folder: str, messages: list[tuple[str, bytes]]):
    """APPENDs (internal date, message) pairs to a new folder, in order."""
    m = imaps(server, acct)
    try:
        if folder != "INBOX":
            assert m.create(folder)[0] == "OK"
        for date, msg in messages:
            assert m.append(folder, None, f'"{date}"', msg)[0] == "OK"
    finally:
        close(m)


def exchange(c: Imap, command: str, want: list[str] | None, status: str = "OK"):
    """Runs one command: its status, and when given, its exact untagged lines
    (`{tag}` stands for the command's tag)."""
    tag = f"t{c.n + 1}"
    r = c.cmd(command)
    assert r.status == status, f"{command}: {r}"
    if want is not None:
        assert r.untagged == [w.replace("{tag}", tag) for w in want], command
    return r


# Four messages; the comments give each sort key's value.
SORT_MESSAGES = [
    (   # 1: arrival 10:00 (tie with 3), sent 07:00 UTC, from zoe, to ann
        # ("Zed Ann"), cc a group "grp", subject base "budget", body 400.
        "22-Feb-2008 10:00:00 +0000",
        message(
            [
                "Date: Fri, 22 Feb 2008 07:00:00 +0000",
                'From: "Zoe Quinn" <zoe@b.example>',
                "To: Zed Ann <ann@a.example>",
                "Cc: grp: m@x.example;",
                "Subject: Re: budget",
            ],
            400,
        ),
    ),
    (   # 2: arrival 08:00, no Date (sent = arrival), from bob, to "Carl",
        # no Cc, subject base "budget" (blob and trailer removed), body 100.
        "22-Feb-2008 08:00:00 +0000",
        message(
            ["From: bob@c.example", "To: Carl <carl@d.example>", "Subject: [team] budget (fwd)"],
            100,
        ),
    ),
    (   # 3: arrival 10:00, sent 12:00 +0200 = 10:00 UTC, from adam, to zed,
        # cc "ha", subject "Été" (encoded word), body 300.
        "22-Feb-2008 10:00:00 +0000",
        message(
            [
                "Date: Fri, 22 Feb 2008 12:00:00 +0200",
                "From: adam@a.example",
                "To: zed@z.example",
                "Cc: ha@b.example",
                "Subject: =?utf-8?q?=C3=89t=C3=A9?=",
            ],
            300,
        ),
    ),
    (   # 4: arrival 21 Feb 23:00, sent 23:30 -0100 = 22 Feb 00:30 UTC, from
        # bea shown as "Wes Alm" (ISO-8859-1 word), no To, subject "alpha", body 200.
        "21-Feb-2008 23:00:00 +0000",
        message(
            [
                "Date: Thu, 21 Feb 2008 23:30:00 -0100",
                "From: =?iso-8859-1?q?Wes_Alm?= <bea@e.example>",
                "Subject: alpha",
            ],
            200,
        ),
    ),
]

SORT_TABLE = [
    ("SORT (ARRIVAL) UTF-8 ALL", "* SORT 4 2 1 3"),
    # REVERSE turns the key only: the tie 1/3 stays in sequence order.
    ("SORT (REVERSE ARRIVAL) UTF-8 ALL", "* SORT 1 3 2 4"),
    ("SORT (DATE) UTF-8 ALL", "* SORT 4 1 2 3"),
    ("SORT (SIZE) US-ASCII ALL", "* SORT 2 4 3 1"),
    ("SORT (REVERSE SIZE) UTF-8 ALL", "* SORT 1 3 4 2"),
    ("SORT (SUBJECT) UTF-8 ALL", "* SORT 4 1 2 3"),
    ("SORT (REVERSE SUBJECT) UTF-8 ALL", "* SORT 3 1 2 4"),
    ("SORT (SUBJECT REVERSE DATE) UTF-8 ALL", "* SORT 4 2 1 3"),
    ("SORT (FROM) UTF-8 ALL", "* SORT 3 4 2 1"),
    ("SORT (DISPLAYFROM) UTF-8 ALL", "* SORT 3 2 4 1"),
    ("SORT (TO) UTF-8 ALL", "* SORT 4 1 2 3"),
    ("SORT (DISPLAYTO) UTF-8 ALL", "* SORT 4 2 1 3"),
    # The group's name is the first addr-mailbox of Cc, as in ENVELOPE.
    ("SORT (CC) UTF-8 ALL", "* SORT 2 4 1 3"),
    # Equal (empty) Cc: the next key, ARRIVAL, decides.
    ("SORT (REVERSE CC ARRIVAL) UTF-8 ALL", "* SORT 3 1 4 2"),
    ("SORT (REVERSE ARRIVAL) UTF-8 SEEN", "* SORT 3 2"),
    ("SORT (SIZE) UTF-8 OR FROM zoe SUBJECT alpha", "* SORT 4 1"),
    ("SORT (DATE) UTF-8 1000", "* SORT"),
]


def test_sort_every_key_exactly(imap_server):
    acct = new_account(imap_server, "sort")
    fill(imap_server, acct, "Sorted", SORT_MESSAGES)
    sizes = [len(m) for _, m in SORT_MESSAGES]
    assert sorted(range(4), key=lambda i: sizes[i]) == [1, 3, 2, 0]
    c = raw_imaps(imap_server, acct)
    try:
        caps = c.ok("CAPABILITY").untagged[0].split()
        for cap in ("SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "ESORT", "CONTEXT=SEARCH"):
            assert cap in caps
        c.ok("SELECT Sorted")
        c.ok("STORE 2:3 +FLAGS.SILENT (\\Seen)")
        for command, line in SORT_TABLE:
            exchange(c, command, [line])
        # A UTF-8 search string, matched under i;unicode-casemap.
        exchange(c, 'SORT (SUBJECT) UTF-8 SUBJECT "\u00e9t\u00e9"', ["* SORT 3"])
        exchange(c, "SORT (SUBJECT) UTF-8 SUBJECT {7+}\r\nE\u0301TE\u0301", ["* SORT 3"])
        uids = {}
        for line in c.ok("FETCH 1:4 (UID)").untagged:
            m = re.fullmatch(r"\* (\d+) FETCH \(UID (\d+)\)", line)
            uids[int(m[1])] = int(m[2])
        order = " ".join(str(uids[s]) for s in (4, 2, 1, 3))
        exchange(c, "UID SORT (ARRIVAL) UTF-8 ALL", [f"* SORT {order}"])
        r = exchange(c, "SORT (SUBJECT) KOI8-R ALL", [], "NO")
        assert r.code == "BADCHARSET (UTF-8 US-ASCII)"
        for bad in ("SORT (NAME) UTF-8 ALL", "SORT SUBJECT UTF-8 ALL", "SORT () UTF-8 ALL",
                    "SORT (REVERSE) UTF-8 ALL", "SORT (SUBJECT) UTF-8"):
            exchange(c, bad, [], "BAD")
    finally:
        c.close()
    m = imaps(imap_server, acct)
    try:
        assert m.select("Sorted")[0] == "OK"
        assert m.sort("(DISPLAYTO)", "UTF-8", "ALL") == ("OK", [b"4 2 1 3"])
        assert m.sort("(REVERSE DATE)", "UTF-8", "ALL") == ("OK", [b"3 2 1 4"])
        typ, data = m.uid("SORT", "(SIZE)", "UTF-8", "ALL")
        assert typ == "OK" and data[0].split() == [str(uids[s]).encode() for s in (2, 4, 3, 1)]
    finally:
        close(m)


def test_esort_return_options_and_partial(imap_server):
    acct = new_account(imap_server, "esort")
    fill(imap_server, acct, "Sorted", SORT_MESSAGES)
    c = raw_imaps(imap_server, acct)
    try:
        c.ok("SELECT Sorted")
        table = [
            # MIN and MAX are the first and last in the sort order.
            ("SORT RETURN (MIN MAX COUNT) (ARRIVAL) UTF-8 ALL", '* ESEARCH (TAG "{tag}") MIN 4 MAX 3 COUNT 4'),
            ("SORT RETURN (ALL) (REVERSE ARRIVAL) UTF-8 ALL", '* ESEARCH (TAG "{tag}") ALL 1,3,2,4'),
            ("SORT RETURN () (SIZE) UTF-8 ALL", '* ESEARCH (TAG "{tag}") ALL 2,4,3,1'),
            ("SORT RETURN (COUNT) (SIZE) UTF-8 1000", '* ESEARCH (TAG "{tag}") COUNT 0'),
            ("SORT RETURN (MIN) (SIZE) UTF-8 1000", '* ESEARCH (TAG "{tag}")'),
            ("SORT RETURN (PARTIAL 2:3) (ARRIVAL) UTF-8 ALL", '* ESEARCH (TAG "{tag}") PARTIAL (2:3 2,1)'),
            ("SORT RETURN (PARTIAL 3:2) (DATE) UTF-8 ALL", '* ESEARCH (TAG "{tag}") PARTIAL (2:3 1:2)'),
            ("SORT RETURN (PARTIAL 4:9) (DATE) UTF-8 ALL", '* ESEARCH (TAG "{tag}") PARTIAL (4:9 3)'),
            ("SORT RETURN (PARTIAL 5:9) (DATE) UTF-8 ALL", '* ESEARCH (TAG "{tag}") PARTIAL (5:9 NIL)'),
        ]
        for command, line in table:
            exchange(c, command, [line])
        uid4 = c.ok("FETCH 4 (UID)").untagged[0].split()[-1].rstrip(")")
        exchange(c, "UID SORT RETURN (MIN COUNT) (ARRIVAL) UTF-8 ALL", [f'* ESEARCH (TAG "{{tag}}") UID MIN {uid4} COUNT 4'])
        for bad in ("SORT RETURN (PARTIAL 1) (ARRIVAL) UTF-8 ALL",
                    "SORT RETURN (PARTIAL 1:*) (ARRIVAL) UTF-8 ALL",
                    "SORT RETURN (PARTIAL 0:2) (ARRIVAL) UTF-8 ALL",
                    "SORT RETURN (ALL PARTIAL 1:2) (ARRIVAL) UTF-8 ALL",
                    "SORT RETURN (SOMETHING) (ARRIVAL) UTF-8 ALL",
                    "SORT RETURN (UPDATE) (ARRIVAL) UTF-8 ALL"):
            exchange(c, bad, [], "BAD")
    finally:
        c.close()


def head(*lines: str) -> bytes:
    return message(list(lines), 10)


THREAD_MESSAGES = [
    ("22-Feb-2008 10:00:00 +0000", head("Message-ID: <t1@e2e.test>", "Subject: plans")),
    ("22-Feb-2008 09:00:00 +0000", head("Message-ID: <t2@e2e.test>", "References: <t1@e2e.test>", "Subject: Re: plans")),
    ("22-Feb-2008 11:00:00 +0000", head("Message-ID: <t3@e2e.test>", "In-Reply-To: <t1@e2e.test>", "Subject: Re: plans")),
    ("22-Feb-2008 08:00:00 +0000", head("Message-ID: <t4@e2e.test>", "References: <t1@e2e.test> <t2@e2e.test>", "Subject: Re: plans")),
    # Its parent is missing: the dummy is pruned and the subject joins it to 6.
    ("22-Feb-2008 12:00:00 +0000", head("Message-ID: <t5@e2e.test>", "References: <gone@e2e.test>", "Subject: Re: lunch")),
    ("22-Feb-2008 07:00:00 +0000", head("Message-ID: <t6@e2e.test>", "Subject: lunch")),
    ("22-Feb-2008 13:00:00 +0000", head("Subject: other")),
]


def test_thread_references_and_orderedsubject(imap_server):
    acct = new_account(imap_server, "thread")
    fill(imap_server, acct, "Threads", THREAD_MESSAGES)
    c = raw_imaps(imap_server, acct)
    try:
        c.ok("SELECT Threads")
        table = [
            ("THREAD REFERENCES UTF-8 ALL", "* THREAD (6 5)(1 (2 4)(3))(7)"),
            ("THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (6 5)(4 (2)(1)(3))(7)"),
            ("THREAD REFERENCES US-ASCII NOT SUBJECT lunch", "* THREAD (1 (2 4)(3))(7)"),
            ("THREAD REFERENCES UTF-8 2:4", "* THREAD ((2 4)(3))"),
            ("THREAD ORDEREDSUBJECT UTF-8 1000", "* THREAD"),
        ]
        for command, line in table:
            exchange(c, command, [line])
        exchange(c, "THREAD REFERENCES KOI8-R ALL", [], "NO")
        for bad in ("THREAD FANCY UTF-8 ALL", "THREAD REFERENCES", "THREAD REFERENCES UTF-8"):
            exchange(c, bad, [], "BAD")
        # The first message goes: its replies now hang from a dummy.
        c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        c.ok("EXPUNGE")
        exchange(c, "THREAD REFERENCES UTF-8 ALL", ["* THREAD (5 4)((1 3)(2))(6)"])
        uids = [int(l.split()[-1].rstrip(")")) for l in c.ok("FETCH 1:6 (UID)").untagged]
        exchange(c, "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
                 [f"* THREAD ({uids[4]} {uids[3]})({uids[2]} ({uids[0]})({uids[1]}))({uids[5]})"])
    finally:
        c.close()
    m = imaps(imap_server, acct)
    try:
        assert m.select("Threads")[0] == "OK"
        assert m.thread("REFERENCES", "UTF-8", "ALL") == ("OK", [b"(5 4)((1 3)(2))(6)"])
        assert m.thread("ORDEREDSUBJECT", "UTF-8", "SUBJECT", "plans") == ("OK", [b"(3 (1)(2))"])
    finally:
        close(m)


def modseq_of(line: str) -> int:
    m = re.search(r"MODSEQ \((\d+)\)", line)
    assert m, line
    return int(m[1])


def test_condstore_enabled_by_fetch_modseq_and_search_modseq(imap_server):
    acct = new_account(imap_server, "condstore")
    fill(imap_server, acct, "INBOX", [("22-Feb-2008 10:00:00 +0000", head(f"Subject: m{i}")) for i in range(4)])
    c = raw_imaps(imap_server, acct)
    other = raw_imaps(imap_server, acct)
    try:
        c.ok("SELECT INBOX")
        # Not enabled yet: no MODSEQ in a STORE's FETCH.
        r = c.ok("STORE 1 +FLAGS (\\Flagged)")
        assert r.untagged == ["* 1 FETCH (FLAGS (\\Recent \\Flagged))"], r
        c.ok("STORE 1 -FLAGS.SILENT (\\Flagged)")
        # The other session asks (STATUS HIGHESTMODSEQ enables it there only).
        st = other.ok("STATUS INBOX (HIGHESTMODSEQ)").untagged[0]
        highest = int(re.search(r"HIGHESTMODSEQ (\d+)", st)[1])
        # FETCH MODSEQ enables CONDSTORE and reports HIGHESTMODSEQ first (RFC 7162 3.1).
        r = c.ok("FETCH 1 (MODSEQ)")
        assert r.untagged[0] == f"* OK [HIGHESTMODSEQ {highest}] Highest", r
        assert re.fullmatch(r"\* 1 FETCH \(MODSEQ \(\d+\)\)", r.untagged[1]), r
        mod = {}
        for seq in (1, 3, 2, 4):
            r = c.ok(f"STORE {seq} +FLAGS (\\Seen)")
            assert len(r.untagged) == 1 and r.untagged[0].startswith(f"* {seq} FETCH (FLAGS (\\Recent \\Seen) MODSEQ ("), r
            mod[seq] = modseq_of(r.untagged[0])
        assert mod[1] < mod[3] < mod[2] < mod[4]
        entry = 'MODSEQ "/flags/\\\\Seen" all'
        table = [
            (f"SEARCH 1:3 {entry} 1", [f"* SEARCH 1 2 3 (MODSEQ {mod[2]})"]),
            (f"SEARCH MODSEQ {mod[2]}", [f"* SEARCH 2 4 (MODSEQ {mod[4]})"]),
            (f"SEARCH MODSEQ {mod[4] + 1}", ["* SEARCH"]),
            ("SEARCH 1:2", ["* SEARCH 1 2"]),
            (f"SEARCH RETURN (MIN) 1:3 {entry} 1", [f'* ESEARCH (TAG "{{tag}}") MIN 1 MODSEQ {mod[1]}']),
            (f"SEARCH RETURN (MAX) 1:3 {entry} 1", [f'* ESEARCH (TAG "{{tag}}") MAX 3 MODSEQ {mod[3]}']),
            (f"SEARCH RETURN () 1:3 {entry} 1", [f'* ESEARCH (TAG "{{tag}}") ALL 1:3 MODSEQ {mod[2]}']),
            (f"SEARCH RETURN (MIN MAX) 2:3 {entry} 1", [f'* ESEARCH (TAG "{{tag}}") MIN 2 MAX 3 MODSEQ {mod[2]}']),
            (f"SEARCH RETURN (ALL) 2:3 {entry} {mod[2]}", [f'* ESEARCH (TAG "{{tag}}") ALL 2 MODSEQ {mod[2]}']),
            (f"SEARCH RETURN (ALL) 2:3 {entry} {mod[4]}", ['* ESEARCH (TAG "{tag}")']),
            (f"SEARCH RETURN (COUNT) MODSEQ 1", [f'* ESEARCH (TAG "{{tag}}") COUNT 4 MODSEQ {mod[4]}']),
            ("SORT (REVERSE SUBJECT) UTF-8 MODSEQ 1", [f"* SORT 4 3 2 1 (MODSEQ {mod[4]})"]),
        ]
        for command, lines in table:
            exchange(c, command, lines)
        exchange(c, 'SEARCH MODSEQ "/flags/\\\\Seen" nosuch 1', [], "BAD")
        # Another session's change now comes with its MODSEQ.
        other.ok("SELECT INBOX")
        other.ok("STORE 2 -FLAGS.SILENT (\\Seen)")
        r = c.ok("NOOP")
        assert r.untagged[0].startswith("* 2 FETCH (UID "), r
        assert "FLAGS (\\Recent)" in r.untagged[0] and modseq_of(r.untagged[0]) > mod[4]
    finally:
        c.close()
        other.close()
    # STORE UNCHANGEDSINCE and SEARCH MODSEQ enable it too; imaplib's search
    # hands back the MODSEQ with the numbers.
    for enabling in ("STORE 1 (UNCHANGEDSINCE 1) +FLAGS (y)", "SEARCH MODSEQ 1", "FETCH 1:2 (FLAGS) (CHANGEDSINCE 1)"):
        c = raw_imaps(imap_server, acct)
        try:
            c.ok("SELECT INBOX")
            r = c.cmd(enabling)
            assert r.untagged[0].startswith("* OK [HIGHESTMODSEQ "), (enabling, r)
            r = c.ok("STORE 3 +FLAGS (\\Flagged)")
            assert "MODSEQ (" in r.untagged[0], r
            c.ok("STORE 3 -FLAGS (\\Flagged)")
        finally:
            c.close()
    m = imaps(imap_server, acct)
    try:
        assert m.select("INBOX")[0] == "OK"
        typ, data = m.search(None, "MODSEQ", "1", "SEEN")
        assert typ == "OK" and re.fullmatch(rb"1 3 4 \(MODSEQ \d+\)", data[0]), data
    finally:
        close(m)


def test_search_context_updates_and_partial(imap_server):
    acct = new_account(imap_server, "context")
    fill(imap_server, acct, "Ctx", [("22-Feb-2008 10:00:00 +0000", head(f"Subject: c{i}")) for i in range(5)])
    c = raw_imaps(imap_server, acct)
    other = raw_imaps(imap_server, acct)
    try:
        c.ok("SELECT Ctx")
        table = [
            ("SEARCH RETURN (PARTIAL 1:1) ALL", ['* ESEARCH (TAG "{tag}") PARTIAL (1:1 1)']),
            ("SEARCH RETURN (PARTIAL 4:2) ALL", ['* ESEARCH (TAG "{tag}") PARTIAL (2:4 2:4)']),
            ("SEARCH RETURN (PARTIAL 1:9) 1:2,4:5", ['* ESEARCH (TAG "{tag}") PARTIAL (1:9 1:2,4:5)']),
            ("SEARCH RETURN (PARTIAL 2:3) 1:2,4:5", ['* ESEARCH (TAG "{tag}") PARTIAL (2:3 2,4)']),
            ("SEARCH RETURN (PARTIAL 6:6) ALL", ['* ESEARCH (TAG "{tag}") PARTIAL (6:6 NIL)']),
            ("SEARCH RETURN (COUNT PARTIAL 1:2) 3:5", ['* ESEARCH (TAG "{tag}") COUNT 3 PARTIAL (1:2 3:4)']),
        ]
        for command, lines in table:
            exchange(c, command, lines)
        for bad in ("SEARCH RETURN (PARTIAL 1) ALL", "SEARCH RETURN (PARTIAL 1:*) ALL", "SEARCH RETURN (PARTIAL *:1) ALL"):
            exchange(c, bad, [], "BAD")
        # A kept result: nothing is \Seen yet.
        r = exchange(c, "SEARCH RETURN (UPDATE) SEEN", ['* ESEARCH (TAG "{tag}")'])
        ctx = f"t{c.n}"
        r = c.ok("STORE 1,2,4 +FLAGS (\\Seen)")
        assert r.untagged[-1] == f'* ESEARCH (TAG "{ctx}") ADDTO (0 1:2,4)', r
        r = c.ok("STORE 1 -FLAGS.SILENT (\\Seen)")
        assert r.untagged == [f'* ESEARCH (TAG "{ctx}") REMOVEFROM (0 1)'], r
        c.ok("STORE 3:5 +FLAGS.SILENT (\\Deleted)")
        # Leaving messages are reported with the numbers they had, before EXPUNGE.
        r = c.ok("EXPUNGE")
        assert r.untagged == [f'* ESEARCH (TAG "{ctx}") REMOVEFROM (0 4)', "* 5 EXPUNGE", "* 4 EXPUNGE", "* 3 EXPUNGE"], r
        # Another session's changes arrive with the next command.
        other.ok("SELECT Ctx")
        other.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
        r = c.ok("NOOP")
        assert r.untagged[-1] == f'* ESEARCH (TAG "{ctx}") ADDTO (0 1)', r
        m = imaps(imap_server, acct)
        try:
            assert m.append("Ctx", "(\\Seen)", None, head("Subject: new"))[0] == "OK"
        finally:
            close(m)
        r = c.ok("NOOP")
        assert r.untagged == ["* 3 EXISTS", "* 3 RECENT", f'* ESEARCH (TAG "{ctx}") ADDTO (0 3)'], r
        # A UID context, then the limit of contexts.
        uid_ctx = f"t{c.n + 1}"
        exchange(c, "UID SEARCH RETURN (UPDATE COUNT) SEEN", ['* ESEARCH (TAG "{tag}") UID COUNT 3'])
        uid2 = c.ok("FETCH 2 (UID)").untagged[0].split()[-1].rstrip(")")
        r = c.ok("STORE 2 -FLAGS.SILENT (\\Seen)")
        assert r.untagged == [
            f'* ESEARCH (TAG "{ctx}") REMOVEFROM (0 2)',
            f'* ESEARCH (TAG "{uid_ctx}") UID REMOVEFROM (0 {uid2})',
        ], r
        all_ctx = [f"t{c.n + 1}", f"t{c.n + 2}"]
        c.ok("SEARCH RETURN (UPDATE) ALL")
        c.ok("SEARCH RETURN (UPDATE) ALL")
        exchange(c, "SEARCH RETURN (UPDATE) FLAGGED", ['* ESEARCH (TAG "{tag}")', '* NO [NOUPDATE "{tag}"] Too many search contexts'])
        exchange(c, f'CANCELUPDATE "{ctx}" "{uid_ctx}"', [])
        exchange(c, 'CANCELUPDATE "nosuch"', [], "BAD")
        r = c.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
        assert r.untagged == [], r
        # This session's own APPEND into the selected mailbox: a context's
        # update comes with the APPEND's answer.
        ctx = f"t{c.n + 1}"
        exchange(c, "SEARCH RETURN (UPDATE) SEEN", ['* ESEARCH (TAG "{tag}")'])
        msg = head("Subject: own")
        t = c.tag()
        c.send(f"{t} APPEND Ctx (\\Seen) {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
        r = c.read_until_tagged(t)
        assert r.status == "OK", r
        assert r.untagged == ["* 4 EXISTS", "* 4 RECENT"] + [
            f'* ESEARCH (TAG "{t}") ADDTO (0 4)' for t in [*all_ctx, ctx]
        ], r
    finally:
        c.close()
        other.close()
