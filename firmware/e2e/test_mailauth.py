"""Mail authentication end to end (issue 16): DKIM keys made with
`mxrack dkim create`, published in a DNS server this test runs on 127.0.0.1
(dnslib) that the appliance's resolver asks (`[dns] servers`); a forwarded
copy reaching a routed test domain's sink carries DKIM and ARC signatures
that dkimpy, an independent verifier, accepts with the same records;
inbound mail failing DMARC with p=reject is marked in Authentication-Results
and scored (DMARC_REJECT); a submission is signed with its domain's key.
"""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import threading
import time

import dkim
import pytest
from dnslib import A, PTR, QTYPE, RR, TXT, RCODE
from dnslib.server import BaseResolver, DNSServer

from mxlib import DEMO, HOST, HOSTNAME, Raw, Server, free_ports, queued_id
from sink import Sink

DEST = "dest.example"  # routed to the sink
FAST = {"queue_interval_secs": 1, "retry_base_secs": 1, "retry_max_secs": 2,
        "connect_timeout_secs": 5, "command_timeout_secs": 30}


class Zone(BaseResolver):
    """TXT records by name; PTR and A records by name, each answered after
    its delay in seconds (a slow zone; the server answers on a thread per
    question); every other question: NXDOMAIN."""

    def __init__(self):
        self.txt: dict[str, str] = {}
        self.ptr: dict[str, tuple[float, list[str]]] = {}
        self.a: dict[str, tuple[float, list[str]]] = {}
        self.lock = threading.Lock()
        self.queries: list[str] = []

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower()
        qtype = request.q.qtype
        with self.lock:
            self.queries.append(f"{QTYPE[qtype]} {name}")
            value = self.txt.get(name)
            slow = {QTYPE.PTR: self.ptr, QTYPE.A: self.a}.get(qtype, {}).get(name)
        if slow is not None:
            delay, answers = slow
            time.sleep(delay)
            for answer in answers:
                rdata = PTR(answer) if qtype == QTYPE.PTR else A(answer)
                reply.add_answer(RR(name, qtype, rdata=rdata, ttl=60))
        elif request.q.qtype == QTYPE.TXT and value is not None:
            chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
            reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        elif value is None:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def dnsfunc(self, name, timeout=5):
        """dkimpy's DNS lookup, answered from the same records."""
        if isinstance(name, bytes):
            name = name.decode()
        return self.txt.get(name.lower().rstrip(".") + ".", "").encode()


def published(server: Server, domain: str) -> dict[str, str]:
    """`mxrack dkim show DOMAIN`, read back as name -> TXT value."""
    out = server.mx("dkim", "show", domain).decode()
    records = {}
    for line in out.splitlines():
        name, rest = line.split(" IN TXT ", 1)
        records[name.lower()] = "".join(re.findall(r'"([^"]*)"', rest))
    return records


@pytest.fixture(scope="module")
def zone():
    z = Zone()
    port = free_ports(1)[0]
    udp = DNSServer(z, port=port, address=HOST)
    tcp = DNSServer(z, port=port, address=HOST, tcp=True)
    udp.start_thread()
    tcp.start_thread()
    z.port = port
    yield z
    udp.stop()
    tcp.stop()


@pytest.fixture(scope="module")
def sink():
    s = Sink(tls=False).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server(zone, sink, tmp_path_factory):
    s = Server()
    s.relay = dict(FAST, routes={DEST: sink.hop})
    s.forward = {"srs_secret": "e2e-srs-secret-0123456789"}
    s.dns = {"servers": [f"{HOST}:{zone.port}"], "timeout_ms": 1000, "attempts": 2}
    s.write_config()
    # The forwarder's key (the SRS domain is the primary domain, example.net),
    # made before the server starts, as an operator would.
    out = s.mx("dkim", "create", "example.net").decode()
    assert out.startswith("created rsa key mxrack for example.net; publish:"), out
    zone.txt.update(published(s, "example.net"))
    # The outside sender's own key, in a data folder of its own.
    outside = tmp_path_factory.mktemp("outside")
    s.mx("--data", str(outside), "dkim", "create", "origin.example", "--selector", "o1")
    key = json.loads((outside / "dkim" / "origin.example" / "o1.json").read_text())
    der = base64.b64decode(key["private_key"])
    s.origin_pem = (b"-----BEGIN RSA PRIVATE KEY-----\n"
                    + base64.encodebytes(der) + b"-----END RSA PRIVATE KEY-----\n")
    zone.txt["o1._domainkey.origin.example."] = f"v=DKIM1; k=rsa; p={key['public_key']}"
    zone.txt["origin.example."] = "v=spf1 ip4:198.51.100.0/24 -all"  # forwarded: SPF fails here
    zone.txt["_dmarc.origin.example."] = "v=DMARC1; p=reject"
    zone.txt["bad.example."] = "v=spf1 ip4:192.0.2.1 -all"
    zone.txt["_dmarc.bad.example."] = "v=DMARC1; p=reject"
    s.start()
    yield s
    s.teardown()


def mx_send(server: Server, sender: str, rcpts: list[str], body: bytes) -> str:
    with Raw(server.mx_port) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"MAIL FROM:<{sender}>", 250)
        for r in rcpts:
            c.cmd(f"RCPT TO:<{r}>", "250 2.1.5 Recipient OK")
        reply = c.data(body)
        assert reply.code == 250, reply.lines
        c.cmd("QUIT", 221)
    return queued_id(reply.last)


def message(sender: str, to: str, tag: str) -> bytes:
    return (
        f"From: Sender <{sender}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {tag}\r\n"
        "Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n"
        f"Message-ID: <{tag}@e2e.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"body of {tag}\r\n"
        "a second line\r\n"
    ).encode()


def header(data: bytes, name: str) -> str:
    block = data.split(b"\r\n\r\n", 1)[0].decode()
    m = re.search(rf"(?im)^{name}:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", block)
    assert m, f"no {name} in {block[:800]}"
    return " ".join(m[1].split())


def test_forwarded_copy_carries_dkim_and_arc_that_dkimpy_verifies(server, sink, zone):
    sink.reset()
    before = server.uids(DEMO)
    server.mx("forward", "set", DEMO, f"jo@{DEST}")
    body = message("alice@origin.example", DEMO, "fwd-arc")
    signed = dkim.sign(body, b"o1", b"origin.example", server.origin_pem,
                       include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"])
    mx_send(server, "alice@origin.example", [DEMO], signed + body)
    [t] = sink.wait_delivered(1)
    data = t.data
    # Our own signature (first DKIM-Signature) and the author's, untouched.
    d = dkim.DKIM(data)
    assert d.verify(idx=0, dnsfunc=zone.dnsfunc), "the forwarder's DKIM signature"
    assert d.domain == b"example.net"
    assert d.signature_fields[b"a"] == b"rsa-sha256"
    assert dkim.DKIM(data).verify(idx=1, dnsfunc=zone.dnsfunc), "the author's signature survives"
    # ARC (RFC 8617) as an independent verifier sees it.
    cv, results, comment = dkim.arc_verify(data, dnsfunc=zone.dnsfunc)
    assert cv == dkim.CV_Pass, (cv, results, comment)
    assert [r["instance"] for r in results] == [1]
    aar = header(data, "ARC-Authentication-Results")
    assert aar.startswith(f"i=1; {HOSTNAME}; "), aar
    # The MX's inbound results, stated by the forwarder: SPF failed (the
    # forwarder's address is not origin.example's), DKIM and DMARC passed.
    assert "dkim=pass header.i=@origin.example" in aar, aar
    assert "dmarc=pass" in aar and "spf=fail" in aar, aar
    # The same in the stored local copy's Authentication-Results.
    [st] = server.new_messages(DEMO, before)
    assert f"Authentication-Results: {HOSTNAME};".encode() in st
    server.mx("forward", "remove", DEMO)


def test_inbound_mail_failing_dmarc_with_reject_is_marked_and_scored(server, zone):
    before = server.uids(DEMO)
    body = message("mallory@bad.example", DEMO, "dmarc-fail")
    mx_send(server, "mallory@bad.example", [DEMO], body)
    [stored] = server.new_messages(DEMO, before)
    ar = header(stored, "Authentication-Results")
    assert ar.startswith(f"{HOSTNAME};"), ar
    assert "spf=fail" in ar and "smtp.mailfrom=mallory@bad.example" in ar, ar
    assert "dmarc=fail header.from=bad.example policy.dmarc=reject" in ar, ar
    # iprev (RFC 8601 3): the client's reverse DNS (the resolver answers
    # 127.0.0.1's itself: localhost).
    assert "iprev=pass policy.iprev=127.0.0.1" in ar, ar
    score = header(stored, "X-Spam-Score")
    assert "DMARC_REJECT=4" in score, score
    assert float(score.split()[0]) >= 4.0, score
    # The DNS server was asked: SPF of the sender's domain, its DMARC policy.
    assert "TXT bad.example." in zone.queries and "TXT _dmarc.bad.example." in zone.queries


def test_submission_is_signed_with_its_domains_key(server, sink, zone):
    sink.reset()
    with server.submission(login=(DEMO, server.password)) as s:
        code, text = s.mail(DEMO)
        assert code == 250, text
        code, text = s.rcpt(f"someone@{DEST}")
        assert code == 250, text
        code, text = s.data(message(DEMO, f"someone@{DEST}", "sub-signed"))
        assert code == 250, text
    [t] = sink.wait_delivered(1)
    assert dkim.verify(t.data, dnsfunc=zone.dnsfunc), t.data[:600]
    assert header(t.data, "Authentication-Results") == f"{HOSTNAME}; auth=pass smtp.auth={DEMO}"
    assert b"ARC-Seal" not in t.data, "only forwarded copies are sealed"


def test_dkim_list_and_show(server):
    out = server.mx("dkim", "list").decode()
    assert re.fullmatch(r"example\.net\tmxrack\trsa\tcreated \d{4}-\d\d-\d\d\n", out), out
    rec = published(server, "example.net")
    [(name, value)] = rec.items()
    assert name == "mxrack._domainkey.example.net."
    assert value.startswith("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"), value
    r = server.mx_run("dkim", "create", "example.net")
    assert r.returncode == 1 and b"already has a key" in r.stderr
    r = server.mx_run("dkim", "create", "example.net", "--selector", "x", "--algorithm", "dsa")
    assert r.returncode == 1 and b"rsa or ed25519" in r.stderr


def test_a_sender_domain_without_records_is_asked_once_not_per_message(server, zone):
    """A domain with no SPF and no DMARC gets NXDOMAIN with no SOA from this
    server (no negative TTL): the checks remember that answer for
    `dns.negative_ttl_secs` instead of asking again for every message."""
    before = server.uids(DEMO)
    for i in range(4):
        with smtplib.SMTP(HOST, server.mx_port, timeout=30) as c:
            c.ehlo("relay.quiet.example")
            c.sendmail("news@quiet.example", [DEMO], message("news@quiet.example", DEMO, f"quiet-{i}"))
        time.sleep(0.3)  # the first message's second look lands in between
    stored = server.new_messages(DEMO, before)
    assert len(stored) == 4
    for data in stored:
        ar = header(data, "Authentication-Results")
        assert "spf=none" in ar and "dmarc=none" in ar, ar
    with zone.lock:
        asked = [q for q in zone.queries if "quiet.example" in q]
    # Each name twice: the first message's lookup, then one more to learn
    # it is "no such record"; the next three messages ask nothing.
    for name in ["TXT quiet.example.", "TXT _dmarc.quiet.example.", "TXT relay.quiet.example."]:
        assert asked.count(name) == 2, asked


def signed_from_origin(server: Server, tag: str) -> bytes:
    body = message("alice@origin.example", DEMO, tag)
    return dkim.sign(body, b"o1", b"origin.example", server.origin_pem,
                     include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"]) + body


# The resolver answers the reverse names of 127.0.0.0/8 and ::1 itself
# (localhost), so a client whose reverse zone this test's DNS server serves
# comes from TEST-NET-1 addresses that firmware/scripts/test.sh puts on the
# loopback of the network namespace it runs these tests in.
CLIENT_SILENT, CLIENT_SLOW = "192.0.2.10", "192.0.2.11"
in_netns = pytest.mark.skipif(
    not os.environ.get("MXRACK_E2E_NETNS"),
    reason="a client address outside 127/8: firmware/scripts/test.sh runs it in its own network namespace",
)


def signed_from(server: Server, source: str, tag: str) -> tuple[bytes, str]:
    """A signed message from origin.example on the MX port from the client
    address `source`: the stored copy and its Authentication-Results."""
    before = server.uids(DEMO)
    with smtplib.SMTP(HOST, server.mx_port, timeout=60, source_address=(source, 0)) as c:
        c.ehlo("mail.origin.example")
        c.sendmail("alice@origin.example", [DEMO], signed_from_origin(server, tag))
    [stored] = server.new_messages(DEMO, before)
    return stored, header(stored, "Authentication-Results")


@in_netns
def test_a_silent_reverse_zone_costs_iprev_not_the_dmarc_verdict(server, zone):
    """The client's PTR question is never answered in time (the zone sleeps
    past the resolver's timeout and attempts): iprev is a temporary error,
    and DKIM, DMARC and the score are there as for any other message."""
    zone.ptr["10.2.0.192.in-addr.arpa."] = (8.0, ["slow.origin.example."])
    stored, ar = signed_from(server, CLIENT_SILENT, "silent-ptr")
    assert f"iprev=temperror (dns error) policy.iprev={CLIENT_SILENT}" in ar, ar
    assert "dkim=pass header.i=@origin.example" in ar, ar
    assert "dmarc=pass header.from=origin.example" in ar, ar
    assert "PTR 10.2.0.192.in-addr.arpa." in zone.queries
    assert float(header(stored, "X-Spam-Score").split()[0]) < 5.0


@in_netns
def test_slow_names_behind_a_ptr_cost_iprev_not_the_dmarc_verdict(server, zone):
    """The PTR answers at once, but the A records of both names it gives
    (mail-auth confirms at most two, one after the other) are never
    answered in time: 2 s each with this resolver's timeout and attempts,
    so the iprev check is given up at its own 3 s limit (IPREV_TIMEOUT),
    while SPF, DKIM and DMARC (asked beside it) have their verdicts."""
    zone.ptr["11.2.0.192.in-addr.arpa."] = (0.0, ["a.slow.example.", "b.slow.example."])
    zone.a["a.slow.example."] = (8.0, [CLIENT_SLOW])
    zone.a["b.slow.example."] = (8.0, [CLIENT_SLOW])
    _, ar = signed_from(server, CLIENT_SLOW, "slow-a")
    assert f"iprev=temperror (dns error) policy.iprev={CLIENT_SLOW}" in ar, ar
    assert "dmarc=pass header.from=origin.example" in ar, ar
    assert "A a.slow.example." in zone.queries
