"""DANE for SMTP (RFC 7672) as the relay applies it, against real peers: Knot
DNS (Debian's knotd) serving a root zone it signs itself (DNSSEC, ECDSA
P-256, NSEC), whose key-signing key is the relay's only trust anchor
(`[dns] trust_anchor_file`), and SMTP sinks on port 25 of 127.0.0.2 to
127.0.0.4, each with its own certificate or none.

The root zone holds every test domain: their MX, A and `_25._tcp` TLSA
records, signed. `unsigned.test` is delegated to an unsigned zone (no DS
record: provably insecure) the same knotd serves.

Port 25 is the protocol's own (the relay has no knob to move it), so this
file runs inside a network namespace of its own (firmware/scripts/test.sh,
with test_mta_sts.py), where nothing else listens and no packet leaves.
Outside one it is skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from mxlib import HOST, Server, deadline_loop, free_ports
from sink import Sink

pytestmark = pytest.mark.skipif(
    not os.environ.get("MXRACK_E2E_NETNS"),
    reason="binds port 25: firmware/scripts/test.sh runs it in its own network namespace",
)

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"

# Three MX servers: EE presents a self-signed certificate (DANE-EE), TA a
# leaf of a private CA sent with the CA (DANE-TA), PLAIN no STARTTLS.
EE, TA, PLAIN = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def openssl(*args: str, cwd: Path, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                          input=data).stdout


def make_certs(d: Path) -> dict[str, str]:
    """The servers' certificates and the TLSA data naming them."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ee.key", "-out", "ee.pem", "-days", "2",
            "-subj", "/CN=mx.ee.test", cwd=d)
    openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2",
            "-subj", "/CN=mx.ee.test", cwd=d)
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=mxrack e2e DANE-TA CA", cwd=d)
    (d / "ta.ext").write_text("subjectAltName=DNS:mx.ta.test\n")
    openssl("req", *ec, "-keyout", "ta.key", "-out", "ta.csr", "-subj", "/CN=mx.ta.test", cwd=d)
    openssl("x509", "-req", "-in", "ta.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "ta.pem", "-days", "2", "-extfile", "ta.ext", cwd=d)
    (d / "ta-chain.pem").write_text((d / "ta.pem").read_text() + (d / "ca.pem").read_text())

    def spki_sha256(pem: str) -> str:
        pub = openssl("x509", "-in", pem, "-pubkey", "-noout", cwd=d)
        der = openssl("pkey", "-pubin", "-outform", "DER", cwd=d, data=pub)
        return hashlib.sha256(der).hexdigest()

    ca_der = openssl("x509", "-in", "ca.pem", "-outform", "DER", cwd=d)
    return {
        "ee": spki_sha256("ee.pem"),
        "other": spki_sha256("other.pem"),
        "ca": hashlib.sha256(ca_der).hexdigest(),
        "dir": str(d),
    }


def root_zone(c: dict[str, str]) -> str:
    mx = lambda d, host, ip: f"{d}. MX 10 {host}.\n{host}. A {ip}\n"  # noqa: E731
    tlsa = lambda host, rr: f"_25._tcp.{host}. TLSA {rr}\n"  # noqa: E731
    return "".join([
        "$TTL 60\n",
        ". SOA ns.root. admin.root. 1 3600 600 86400 60\n",
        ". NS ns.root.\n",
        f"ns.root. A {HOST}\n",
        # DANE-EE(3), SPKI(1), SHA-256(1) of the EE server's key.
        mx("ee.test", "mx.ee.test", EE), tlsa("mx.ee.test", f"3 1 1 {c['ee']}"),
        # The same server, but the record names another key.
        mx("wrong.test", "mx.wrong.test", EE), tlsa("mx.wrong.test", f"3 1 1 {c['other']}"),
        # DANE-TA(2), full certificate(0), SHA-256(1) of the CA.
        mx("ta.test", "mx.ta.test", TA), tlsa("mx.ta.test", f"2 0 1 {c['ca']}"),
        # The TA server under another name: it chains, the name is wrong.
        mx("taname.test", "mx.taname.test", TA), tlsa("mx.taname.test", f"2 0 1 {c['ca']}"),
        # TLSA records, and a server without STARTTLS.
        mx("plain.test", "mx.plain.test", PLAIN), tlsa("mx.plain.test", f"3 1 1 {c['ee']}"),
        # Signed, no TLSA record (proved by NSEC): TLS as before, any key.
        mx("none.test", "mx.none.test", PLAIN),
        # Only PKIX-EE(1), unusable for SMTP (RFC 7672 3.1.3): TLS is still
        # a must, unauthenticated, and PLAIN has none.
        mx("pkix.test", "mx.pkix.test", PLAIN), tlsa("mx.pkix.test", f"1 1 1 {c['ee']}"),
        # An MX host that is a CNAME: the TLSA records at the end of the
        # chain count first (RFC 7672 2.2.2), the host's own (here a wrong
        # one) only when there are none there.
        "cname.test. MX 10 mx.cname.test.\n", "mx.cname.test. CNAME real.target.test.\n",
        f"real.target.test. A {EE}\n", tlsa("real.target.test", f"3 1 1 {c['ee']}"),
        tlsa("mx.cname.test", f"3 1 1 {c['other']}"),
        "cname2.test. MX 10 mx.cname2.test.\n", "mx.cname2.test. CNAME real2.target.test.\n",
        f"real2.target.test. A {EE}\n", tlsa("mx.cname2.test", f"3 1 1 {c['other']}"),
        # An unsigned child zone: its MX records are insecure, so the TLSA
        # record of the host they name (wrong for the key) is not used.
        "unsigned.test. NS ns.root.\n",
    ])


UNSIGNED_ZONE = """$TTL 60
unsigned.test. SOA ns.root. admin.root. 1 3600 600 86400 60
unsigned.test. NS ns.root.
unsigned.test. MX 10 mx.wrong.test.
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def knot(tmp_path_factory, certs):
    """knotd on 127.0.0.1, signing the root zone; yields (port, the
    trust anchor file: the root's key-signing key)."""
    d = tmp_path_factory.mktemp("knot")
    (d / "db").mkdir()
    port = free_ports(1)[0]
    (d / "root.zone").write_text(root_zone(certs))
    (d / "unsigned.test.zone").write_text(UNSIGNED_ZONE)
    (d / "knot.conf").write_text(f"""server:
    listen: {HOST}@{port}
    rundir: {d}
database:
    storage: {d}/db
log:
  - target: {d}/knot.log
    any: info
template:
  - id: default
    storage: {d}
    zonefile-sync: -1
zone:
  - domain: .
    file: root.zone
    dnssec-signing: on
  - domain: unsigned.test
    file: unsigned.test.zone
""")
    knotd = subprocess.Popen([KNOTD, "-c", str(d / "knot.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ksk = None
    for _ in deadline_loop(20, "knotd serving the signed root zone", interval=0.2):
        try:
            reply = DNSRecord.parse(DNSRecord.question(".", "DNSKEY").send(HOST, port, timeout=1))
        except OSError:
            continue
        keys = [rr.toZone() for rr in reply.rr if rr.rtype == QTYPE.DNSKEY]
        ksk = [k for k in keys if " 257 3 " in k]
        if ksk:
            break
    anchor = d / "anchor.txt"
    anchor.write_text("; the test root's key-signing key\n" + "\n".join(ksk) + "\n")
    yield port, anchor
    knotd.terminate()
    knotd.wait(10)


def tls_context(certs, name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    d = Path(certs["dir"])
    chain = "ta-chain.pem" if name == "ta" else f"{name}.pem"
    ctx.load_cert_chain(str(d / chain), str(d / f"{name}.key"))
    return ctx


@pytest.fixture(scope="module")
def sinks(certs):
    ee = Sink(tls=True, tls_context=tls_context(certs, "ee"), port=25, host=EE).start()
    ta = Sink(tls=True, tls_context=tls_context(certs, "ta"), port=25, host=TA).start()
    plain = Sink(tls=False, port=25, host=PLAIN).start()
    yield {"ee": ee, "ta": ta, "plain": plain}
    for s in (ee, ta, plain):
        s.stop()


@pytest.fixture(scope="module")
def server(knot, sinks):
    port, anchor = knot
    s = Server()
    # MX delivery (no smarthost), retried every second; MTA-STS stays on
    # (no domain here has a policy).
    s.relay = {"smarthost": None, "queue_interval_secs": 1, "retry_base_secs": 1,
               "retry_max_secs": 2, "connect_timeout_secs": 5, "command_timeout_secs": 30,
               "dane": True}
    s.dns = {"servers": [f"{HOST}:{port}"], "timeout_ms": 1000, "attempts": 2,
             "trust_anchor_file": str(anchor)}
    s.mail_auth = {"verify_inbound": False}
    s.write_config()
    s.start()
    yield s
    s.teardown()


def send(server: Server, rcpt: str):
    server.submit_as_demo(rcpt, rcpt.replace("@", "-at-"))


def test_dane_ee_record_matching_the_key_delivers_over_tls(server, sinks):
    send(server, "jo@ee.test")
    [t] = sinks["ee"].wait_for(lambda ts: sinks["ee"].delivered_to("jo@ee.test"),
                               "delivery to ee.test")
    assert t.tls
    assert "DANE on" in server.stderr_path.read_text(errors="replace")


def test_a_key_the_records_do_not_name_gets_nothing(server, sinks):
    send(server, "jo@wrong.test")
    err = server.last_error("jo@wrong.test")
    assert "DANE: the certificate matches none of the 1 TLSA records" in err, err
    assert not sinks["ee"].delivered_to("jo@wrong.test")


def test_dane_ta_chain_to_the_named_ca_and_the_host_name(server, sinks):
    send(server, "jo@ta.test")
    [t] = sinks["ta"].wait_for(lambda ts: sinks["ta"].delivered_to("jo@ta.test"),
                               "delivery to ta.test")
    assert t.tls
    send(server, "jo@taname.test")
    err = server.last_error("jo@taname.test")
    assert "does not chain to the DANE-TA record's anchor" in err and "mx.taname.test" in err, err
    assert not sinks["ta"].delivered_to("jo@taname.test")


def test_an_mx_host_behind_a_cname_is_checked_by_the_records_at_its_end(server, sinks):
    send(server, "jo@cname.test")
    [t] = sinks["ee"].wait_for(lambda ts: sinks["ee"].delivered_to("jo@cname.test"),
                               "delivery to cname.test")
    assert t.tls
    # No records at the end of the chain: the host's own name's apply.
    send(server, "jo@cname2.test")
    err = server.last_error("jo@cname2.test")
    assert "DANE: the certificate matches none of the 1 TLSA records" in err, err


def test_tlsa_records_make_tls_a_must(server, sinks):
    for rcpt in ["jo@plain.test", "jo@pkix.test"]:
        send(server, rcpt)
        err = server.last_error(rcpt)
        assert "does not offer STARTTLS" in err, err
        assert not sinks["plain"].delivered_to(rcpt)


def test_no_tlsa_record_or_an_unsigned_mx_delivers_as_before(server, sinks):
    # Signed, with a proof that there is no TLSA record: plaintext to a
    # server without STARTTLS, as without DANE.
    send(server, "jo@none.test")
    sinks["plain"].wait_for(lambda ts: sinks["plain"].delivered_to("jo@none.test"),
                            "delivery to none.test")
    # The MX records of unsigned.test are not signed: the wrong TLSA record
    # of the host they name does not apply (RFC 7672 2.2.1).
    send(server, "jo@unsigned.test")
    [t] = sinks["ee"].wait_for(lambda ts: sinks["ee"].delivered_to("jo@unsigned.test"),
                               "delivery to unsigned.test")
    assert t.tls
