"""MTA-STS (RFC 8461) as the relay applies it, against real peers: a DNS
server (dnslib) with the domains' MX, A and `_mta-sts` TXT records, an HTTPS
server (Python's http.server over ssl) on 127.0.0.1:443 serving each
domain's policy at https://mta-sts.<domain>/.well-known/mta-sts.txt, and an
SMTP sink on 127.0.0.1:25 with a certificate for mx.sts.example, all signed
by a private CA that `[relay] tls_trust_file` names.

Ports 25 and 443 are the protocol's own: the relay has no knob to move them.
So this file runs inside a network namespace of its own (firmware/scripts/
test.sh: `ip netns add`, loopback up, `ip netns exec ... pytest` on this
file), where nothing else listens and no packet leaves. Outside one it is
skipped (run by test.sh).
"""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dnslib import A, MX, QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSServer

from mxlib import HOST, Server, free_ports
from sink import Sink

pytestmark = pytest.mark.skipif(
    not os.environ.get("MXRACK_E2E_NETNS"),
    reason="binds ports 25 and 443: firmware/scripts/test.sh runs it in its own network namespace",
)



def openssl(*args: str, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """A private CA and, from it, certificates for the policy hosts and the
    MX host (EC P-256, two days)."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=mxrack e2e MTA-STS CA", cwd=d)
    leaves = {}
    for name, sans in {
        "policy": ["mta-sts.sts.example", "mta-sts.unnamed.example", "mta-sts.badcert.example",
                   "mta-sts.testing.example", "mta-sts.redirect.example", "mta-sts.huge.example",
                   "mta-sts.html.example", "mta-sts.cached.example"],
        "mx": ["mx.sts.example"],
    }.items():
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=" + ",".join(f"DNS:{s}" for s in sans) + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={sans[0]}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d)
        leaves[name] = (d / f"{name}.pem", d / f"{name}.key")
    return d / "ca.pem", leaves


def policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


# Per destination domain: its MX host, its TXT record, what its policy host
# answers (status, media type, body). Every MX host and policy host is
# 127.0.0.1; the sink's certificate names mx.sts.example only.
DOMAINS = {
    # Enforce, MX named, certificate valid: delivered, over verified TLS.
    "sts.example": ("mx.sts.example", "v=STSv1; id=1;", (200, "text/plain", policy("enforce", "mx.sts.example"))),
    # Enforce, but the policy names another host: the mail waits.
    "unnamed.example": ("mx.sts.example", "v=STSv1; id=1;", (200, "text/plain", policy("enforce", "mx.other.example"))),
    # Enforce, MX named by a wildcard, but its certificate is for another
    # name: the TLS handshake fails and the mail waits (never plaintext).
    "badcert.example": ("mx.badcert.example", "v=STSv1; id=1;", (200, "text/plain", policy("enforce", "*.badcert.example"))),
    # Testing: the host is not named, delivered anyway (and logged).
    "testing.example": ("mx.sts.example", "v=STSv1; id=1;", (200, "text/plain", policy("testing", "mx.other.example"))),
    # Policy hosts that answer wrongly: no policy, delivered as before
    # (RFC 8461 3.3: a redirect is not followed; 3.2: size; the media type).
    "redirect.example": ("mx.badcert.example", "v=STSv1; id=1;", (301, "text/plain", "")),
    "huge.example": ("mx.badcert.example", "v=STSv1; id=1;", (200, "text/plain", policy("enforce", "mx.other.example") + "x" * 100000 + "\r\n")),
    "html.example": ("mx.badcert.example", "v=STSv1; id=1;", (200, "text/html", policy("enforce", "mx.other.example"))),
    # No MTA-STS record at all.
    "plain.example": ("mx.badcert.example", None, None),
    # Cached, then changed (test_a_policy_is_fetched_once_...).
    "cached.example": ("mx.sts.example", "v=STSv1; id=1;", (200, "text/plain", policy("enforce", "mx.sts.example"))),
}


class Zone(BaseResolver):
    def __init__(self):
        self.records: dict[str, list[tuple[int, object]]] = {}
        self.lock = threading.Lock()
        self.queries: list[str] = []
        for domain, (mx, txt, _) in DOMAINS.items():
            self.add(domain, QTYPE.MX, MX(mx + ".", 10))
            self.add(mx, QTYPE.A, A(HOST))
            if txt:
                self.add(f"_mta-sts.{domain}", QTYPE.TXT, TXT(txt))
                self.add(f"mta-sts.{domain}", QTYPE.A, A(HOST))

    def set_txt(self, name: str, value: str | None):
        """Replaces `name`'s TXT records (None: removes them)."""
        key = name.lower().rstrip(".") + "."
        with self.lock:
            recs = [(t, r) for t, r in self.records.get(key, []) if t != QTYPE.TXT]
            if value is not None:
                recs.append((QTYPE.TXT, TXT(value)))
            self.records[key] = recs

    def add(self, name: str, qtype: int, rdata):
        recs = self.records.setdefault(name.lower().rstrip(".") + ".", [])
        if (qtype, rdata) not in [(t, r) for t, r in recs]:
            recs.append((qtype, rdata))

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower()
        with self.lock:
            self.queries.append(f"{QTYPE[request.q.qtype]} {name}")
        recs = self.records.get(name)
        if recs is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for qtype, rdata in recs:
            if qtype == request.q.qtype:
                # TXT records live 1 s in the relay's resolver cache, so a
                # changed record is seen by the next message.
                reply.add_answer(RR(name, qtype, rdata=rdata, ttl=1 if qtype == QTYPE.TXT else 60))
        return reply


class PolicyHandler(http.server.BaseHTTPRequestHandler):
    fetched: list[str] = []

    def do_GET(self):
        host = (self.headers.get("Host") or "").lower()
        PolicyHandler.fetched.append(f"{host}{self.path}")
        domain = host.removeprefix("mta-sts.")
        answer = DOMAINS.get(domain, (None, None, None))[2]
        if self.path != "/.well-known/mta-sts.txt" or answer is None:
            self.send_error(404)
            return
        status, media, body = answer
        self.send_response(status)
        if status == 301:
            self.send_header("Location", f"https://elsewhere.example{self.path}")
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def zone():
    z = Zone()
    z.port = free_ports(1)[0]
    udp = DNSServer(z, port=z.port, address=HOST)
    tcp = DNSServer(z, port=z.port, address=HOST, tcp=True)
    udp.start_thread()
    tcp.start_thread()
    yield z
    udp.stop()
    tcp.stop()


def server_tls(pki, leaf: str) -> ssl.SSLContext:
    """A server context with the private CA's certificate `leaf`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*map(str, pki[1][leaf]))
    return ctx


@pytest.fixture(scope="module")
def policy_server(pki):
    httpd = http.server.ThreadingHTTPServer((HOST, 443), PolicyHandler)
    httpd.socket = server_tls(pki, "policy").wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


@pytest.fixture(scope="module")
def sink(pki):
    s = Sink(tls=True, tls_context=server_tls(pki, "mx"), port=25).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server(pki, zone, policy_server, sink):
    ca, _ = pki
    s = Server()
    # MX delivery (no smarthost), retried every second.
    s.relay = {"smarthost": None, "queue_interval_secs": 1, "retry_base_secs": 1,
               "retry_max_secs": 2, "connect_timeout_secs": 5, "command_timeout_secs": 30,
               "tls_trust_file": str(ca)}
    s.dns = {"servers": [f"{HOST}:{zone.port}"], "timeout_ms": 1000, "attempts": 2}
    s.mail_auth = {"verify_inbound": False}
    s.write_config()
    s.start()
    yield s
    s.teardown()


def test_enforced_policy_delivers_over_verified_tls(server, sink):
    server.submit_as_demo("jo@sts.example", "sts-ok")
    [t] = sink.wait_for(lambda ts: sink.delivered_to("jo@sts.example"), "delivery to sts.example")
    assert t.tls, "over STARTTLS"
    assert "mta-sts.sts.example/.well-known/mta-sts.txt" in PolicyHandler.fetched


def test_mx_host_the_policy_does_not_name_gets_nothing(server, sink):
    server.submit_as_demo("jo@unnamed.example", "sts-unnamed")
    err = server.last_error("jo@unnamed.example")
    assert "MTA-STS: the policy of unnamed.example names none of its MX hosts" in err, err
    assert not sink.delivered_to("jo@unnamed.example")


def test_certificate_for_another_name_gets_nothing_not_even_plaintext(server, sink):
    server.submit_as_demo("jo@badcert.example", "sts-badcert")
    err = server.last_error("jo@badcert.example")
    assert "TLS handshake failed" in err and "certificate" in err.lower(), err
    assert not sink.delivered_to("jo@badcert.example")
    # The sink saw STARTTLS attempts and no transaction from that recipient.
    assert all("jo@badcert.example" not in t.rcpt_to for t in sink.transactions)


def test_testing_mode_and_broken_policy_hosts_deliver_as_before(server, sink):
    rcpts = ["jo@testing.example", "jo@redirect.example", "jo@huge.example", "jo@html.example",
             "jo@plain.example"]
    for r in rcpts:
        server.submit_as_demo(r, "sts-" + r.split("@")[1].split(".")[0])
    for r in rcpts:
        sink.wait_for(lambda ts, r=r: sink.delivered_to(r), f"delivery to {r}")
    # Each policy host was asked; the redirect was not followed.
    for d in ["testing", "redirect", "huge", "html"]:
        assert f"mta-sts.{d}.example/.well-known/mta-sts.txt" in PolicyHandler.fetched
    assert not any(f.startswith("elsewhere.example") for f in PolicyHandler.fetched)
    log = server.stderr_path.read_text(errors="replace")
    assert "MTA-STS (testing)" in log and "mx.sts.example" in log
    for why in ["answered HTTP/1.0 301", "answer larger than", "is not text/plain"]:
        assert why in log, why


def fetches(domain: str) -> int:
    return PolicyHandler.fetched.count(f"mta-sts.{domain}/.well-known/mta-sts.txt")


def test_a_policy_is_fetched_once_then_again_when_its_id_changes(server, sink, zone):
    server.submit_as_demo("first@cached.example", "cached-0")
    sink.wait_for(lambda ts: sink.delivered_to("first@cached.example"), "the first delivery")
    assert fetches("cached.example") == 1
    for i in range(3):
        server.submit_as_demo(f"jo{i}@cached.example", f"cached-{i + 1}")
    for i in range(3):
        sink.wait_for(lambda ts, i=i: sink.delivered_to(f"jo{i}@cached.example"), f"delivery {i}")
    assert fetches("cached.example") == 1, "cached for its max_age"

    # A new policy with a new id: fetched again; it names another host.
    DOMAINS["cached.example"] = ("mx.sts.example", "v=STSv1; id=2;",
                                 (200, "text/plain", policy("enforce", "mx.new.example")))
    zone.set_txt("_mta-sts.cached.example", "v=STSv1; id=2;")
    time.sleep(1.5)
    server.submit_as_demo("late@cached.example", "cached-late")
    err = server.last_error("late@cached.example")
    assert "names none of its MX hosts" in err, err
    assert fetches("cached.example") == 2

    # The record gone: the cached policy stays in force until it expires
    # (RFC 8461 5.1), and nothing is fetched.
    zone.set_txt("_mta-sts.cached.example", None)
    time.sleep(1.5)
    server.submit_as_demo("gone@cached.example", "cached-gone")
    err = server.last_error("gone@cached.example")
    assert "names none of its MX hosts" in err, err
    assert fetches("cached.example") == 2
    assert not sink.delivered_to("late@cached.example") and not sink.delivered_to("gone@cached.example")
