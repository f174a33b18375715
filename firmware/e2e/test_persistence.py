"""Persistence across restarts, the CLI without a running server, and alias
delivery: one copy per mailbox however many RCPTs or alias paths lead to it."""

from __future__ import annotations

import re

import pytest

from mxlib import DEMO, HOSTNAME, Raw, plain_token, split_stored

JO = "jo@acme.example"
AL = "al@acme.example"


def deliver(server, rcpts: list[str], body: bytes, sender: str = "a@b.example") -> str:
    """One transaction on the MX port; returns the queue id of the 250."""
    with Raw(server.mx_port) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"MAIL FROM:<{sender}>", "250 2.1.0 Sender OK")
        for r in rcpts:
            c.cmd(f"RCPT TO:<{r}>", "250 2.1.5 Recipient OK")
        reply = c.data(body)
        assert reply.code == 250, reply.lines
        c.cmd("QUIT", 221)
        return reply.last.rsplit(" ", 1)[1]


def snapshot(server, address: str = DEMO) -> list[tuple[int, int, bytes]]:
    return [(m.uid, m.size, server.cat(address, m.uid)) for m in server.inbox(address)]


def test_messages_survive_a_restart_and_the_cli_works_offline(make_server):
    s = make_server()
    password = s.password
    ids = [deliver(s, [DEMO], f"Subject: keep {i}\r\n\r\nkeep me {i}\r\n".encode()) for i in range(3)]
    before = snapshot(s)
    assert [split_stored(raw).id for _, _, raw in before] == ids
    assert [split_stored(raw).body for _, _, raw in before] == [
        f"Subject: keep {i}\r\n\r\nkeep me {i}\r\n".encode() for i in range(3)
    ]
    assert s.stop() == 0
    # No server: the CLI opens the store itself and sees the same.
    assert snapshot(s) == before
    s.start()
    assert s.password == password, "the demo password changed across a restart"
    assert snapshot(s) == before
    # UIDs go on from where they were.
    deliver(s, [DEMO], b"Subject: after restart\r\n\r\nnew\r\n")
    assert [m.uid for m in s.inbox()] == [1, 2, 3, 4]
    assert s.stop() == 0
    s.start()
    assert [m.uid for m in s.inbox()] == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def acme(server):
    server.add_domain("acme.example", "acme")
    server.add_mailbox(JO, "jo-secret-1")
    server.add_mailbox(AL, "al-secret-1")
    server.mx("alias", "add", "sales@acme.example", JO)
    server.mx("alias", "add", "team@acme.example", JO, AL)
    server.mx("alias", "add", "all@acme.example", "team@acme.example", "sales@acme.example")
    server.mx("alias", "add", "fwd@acme.example", "someone@example.org", JO)
    server.mx("alias", "add", "loop1@acme.example", "loop2@acme.example", AL)
    server.mx("alias", "add", "loop2@acme.example", "loop1@acme.example")
    return server


def counts(server) -> dict[str, set[int]]:
    return {a: server.uids(a) for a in (JO, AL)}


def bodies_since(server, before: dict[str, set[int]]) -> dict[str, list[bytes]]:
    return {a: [split_stored(m).body for m in server.new_messages(a, before[a])] for a in (JO, AL)}


def test_alias_delivers_to_its_mailbox(acme):
    before = counts(acme)
    body = b"Subject: to sales\r\n\r\nhello sales\r\n"
    deliver(acme, ["sales@acme.example"], body)
    assert bodies_since(acme, before) == {JO: [body], AL: []}


def test_alias_to_two_mailboxes_delivers_one_copy_each(acme):
    before = counts(acme)
    body = b"Subject: to team\r\n\r\nhello team\r\n"
    qid = deliver(acme, ["team@acme.example"], body)
    assert bodies_since(acme, before) == {JO: [body], AL: [body]}
    for a in (JO, AL):
        st = split_stored(acme.new_messages(a, before[a])[0])
        assert st.id == qid
        # The trace names the envelope recipient (the alias), never another
        # member of it: al's copy must not disclose jo's address.
        assert st.for_ in (None, "team@acme.example"), f"{a}'s copy says 'for <{st.for_}>'"


def test_two_rcpts_resolving_to_one_mailbox_deliver_once(acme):
    before = counts(acme)
    body = b"Subject: jo twice\r\n\r\nonce please\r\n"
    deliver(acme, [JO, "sales@acme.example", "Jo@Acme.Example"], body)
    assert bodies_since(acme, before) == {JO: [body], AL: []}


def test_nested_aliases_reaching_a_mailbox_twice_deliver_once(acme):
    before = counts(acme)
    body = b"Subject: all\r\n\r\neveryone once\r\n"
    deliver(acme, ["all@acme.example", "team@acme.example"], body)
    assert bodies_since(acme, before) == {JO: [body], AL: [body]}


def test_alias_loop_is_cut_and_delivers_once(acme):
    before = counts(acme)
    body = b"Subject: loop\r\n\r\nround and round\r\n"
    deliver(acme, ["loop1@acme.example"], body)
    assert bodies_since(acme, before) == {JO: [], AL: [body]}


def test_alias_with_an_external_target_queues_it_and_delivers_locally(acme):
    """The external target of an alias is a forwarded copy (issue 11): the
    forward transport and an SRS sender, never the original sender."""
    before = counts(acme)
    queued_before = {q.id for q in acme.queue()}
    body = b"Subject: forward\r\n\r\nforward me\r\n"
    deliver(acme, ["fwd@acme.example"], body)
    assert bodies_since(acme, before) == {JO: [body], AL: []}
    new = [q for q in acme.queue() if q.id not in queued_before]
    assert [(q.recipients, q.transport) for q in new] == [(["someone@example.org"], "forward")]
    assert re.fullmatch(r"SRS0=[^=]{4}=[A-Z2-7]{2}=b\.example=a@example\.net", new[0].mail_from), new[0]


def test_aliases_and_mailboxes_survive_a_restart(acme):
    acme.restart()
    before = counts(acme)
    body = b"Subject: after restart\r\n\r\nstill there\r\n"
    deliver(acme, ["team@acme.example"], body)
    assert bodies_since(acme, before) == {JO: [body], AL: [body]}
    aliases = acme.mx("alias", "list").decode().splitlines()
    assert f"team@acme.example\t{JO},{AL}" in aliases
    with Raw(acme.submissions_port, tls=True) as c:
        c.expect(f"220 {HOSTNAME} ESMTP mxrack")
        c.ehlo()
        c.cmd(f"AUTH PLAIN {plain_token(JO, 'jo-secret-1')}", "235 2.7.0 Authentication successful")
        c.cmd("MAIL FROM:<sales@acme.example>", "250 2.1.0 Sender OK")
