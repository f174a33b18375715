"""Real clients against the forwarded service ports: smtplib, imaplib,
poplib, a raw LDAP bind for the port check and `ldapsearch` for searches.
The appliance's certificate is self-signed, so TLS here does not verify it."""

import email.utils
import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import uuid

from .machine import HilError

HOST = "127.0.0.1"
DEMO = "demo@example.net"

# Guest port -> (service, implicit TLS)
PORTS = {
    25: ("smtp-mx", False),
    587: ("smtp-submission", False),
    465: ("smtp-submissions", True),
    143: ("imap", False),
    993: ("imaps", True),
    110: ("pop3", False),
    995: ("pop3s", True),
    389: ("ldap", False),
    636: ("ldaps", True),
    80: ("http", False),
    443: ("https", True),
}


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _ldap_bind_probe():
    """An LDAPv3 simple bind of a name that does not exist: any BindResponse
    shows an LDAP server answers."""
    def tlv(tag, body):
        assert len(body) < 128
        return bytes([tag, len(body)]) + body

    bind = tlv(0x02, b"\x03") + tlv(0x04, b"cn=hil-probe") + tlv(0x80, b"x")
    return tlv(0x30, tlv(0x02, b"\x01") + tlv(0x60, bind))


def probe(guest_port, host_port, timeout=20):
    """Connects and checks the service's greeting (or reply); returns it."""
    name, implicit_tls = PORTS[guest_port]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            raw = socket.create_connection((HOST, host_port), timeout=10)
            sock = tls_context().wrap_socket(raw) if implicit_tls else raw
            with sock:
                sock.settimeout(10)
                if name.startswith("ldap"):
                    sock.sendall(_ldap_bind_probe())
                    reply = sock.recv(4096)
                    if len(reply) > 7 and reply[0] == 0x30 and 0x61 in reply[2:8]:
                        return "LDAP BindResponse"
                    last = f"not an LDAP reply: {reply[:20]!r}"
                elif name.startswith("http"):
                    sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    reply = sock.recv(4096).decode("latin-1")
                    if reply.startswith("HTTP/1."):
                        return reply.splitlines()[0]
                    last = f"not HTTP: {reply[:40]!r}"
                else:
                    line = sock.makefile("rb").readline().decode("latin-1").strip()
                    want = {"smtp": "220", "imap": "* OK", "pop3": "+OK"}[name.split("-")[0].rstrip("s")]
                    if line.startswith(want):
                        return line
                    last = f"greeting {line!r}"
        except (OSError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.5)
    raise HilError(f"{name} (guest port {guest_port}, 127.0.0.1:{host_port}) does not answer: {last}")


def make_message(token, subject, body_lines=3, sender="hil@client.example", to=DEMO):
    """A message with a unique X-HIL-Id header, CRLF line endings, bytes."""
    lines = [
        f"From: <{sender}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate()}",
        f"Message-ID: <{token}@hil.mxrack>",
        f"X-HIL-Id: {token}",
        "",
    ]
    for i in range(body_lines):
        lines.append(f"{token} line {i}: the quick brown fox jumps over the lazy dog {i * 7919 % 104729}")
    return ("\r\n".join(lines) + "\r\n").encode()


def new_token(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def smtp_send_mx(host_port, message, sender="hil@client.example", to=DEMO):
    with smtplib.SMTP(HOST, host_port, timeout=60) as s:
        s.ehlo("client.example")
        refused = s.sendmail(sender, [to], message)
        if refused:
            raise HilError(f"recipients refused: {refused}")


def smtp_submit(host_port, password, message, implicit_tls=False, user=DEMO, to=DEMO):
    if implicit_tls:
        s = smtplib.SMTP_SSL(HOST, host_port, timeout=60, context=tls_context())
    else:
        s = smtplib.SMTP(HOST, host_port, timeout=60)
    with s:
        s.ehlo("client.example")
        if not implicit_tls:
            s.starttls(context=tls_context())
            s.ehlo("client.example")
        s.login(user, password)
        refused = s.sendmail(user, [to], message)
        if refused:
            raise HilError(f"recipients refused: {refused}")


def imap_fetch(host_port, implicit_tls, password, token, user=DEMO):
    """The message with X-HIL-Id token from INBOX, through IMAP (TLS)."""
    if implicit_tls:
        c = imaplib.IMAP4_SSL(HOST, host_port, ssl_context=tls_context(), timeout=60)
    else:
        c = imaplib.IMAP4(HOST, host_port, timeout=60)
        c.starttls(ssl_context=tls_context())
    try:
        c.login(user, password)
        typ, _ = c.select("INBOX")
        if typ != "OK":
            raise HilError("IMAP SELECT INBOX failed")
        typ, data = c.uid("SEARCH", None, "HEADER", "X-HIL-Id", token)
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        if not uids:
            raise HilError(f"IMAP: no message with X-HIL-Id {token} in INBOX")
        typ, data = c.uid("FETCH", uids[-1], "(BODY.PEEK[])")
        for part in data:
            if isinstance(part, tuple):
                return part[1]
        raise HilError("IMAP FETCH returned no body")
    finally:
        try:
            c.logout()
        except Exception:
            pass


def pop3_fetch(host_port, implicit_tls, password, token, user=DEMO):
    """The message with X-HIL-Id token, through POP3 (TLS)."""
    if implicit_tls:
        c = poplib.POP3_SSL(HOST, host_port, timeout=60, context=tls_context())
    else:
        c = poplib.POP3(HOST, host_port, timeout=60)
        c.stls(context=tls_context())
    try:
        c.user(user)
        c.pass_(password)
        count, _ = c.stat()
        needle = f"X-HIL-Id: {token}".encode()
        for i in range(count, 0, -1):
            _, lines, _ = c.retr(i)
            if needle in lines:
                return b"\r\n".join(lines) + b"\r\n"
        raise HilError(f"POP3: no message with X-HIL-Id {token} among {count}")
    finally:
        try:
            c.quit()
        except Exception:
            pass


def ldapsearch(host_port, implicit_tls, bind_dn, password, base, filt="(objectClass=*)"):
    """Runs ldapsearch (ldap-utils); returns its output. StartTLS on 389."""
    if not shutil.which("ldapsearch"):
        raise HilError("ldapsearch missing (apt-get install ldap-utils)")
    url = f"{'ldaps' if implicit_tls else 'ldap'}://{HOST}:{host_port}"
    cmd = ["ldapsearch", "-LLL", "-x", "-H", url, "-D", bind_dn, "-w", password, "-b", base, filt]
    if not implicit_tls:
        cmd.insert(2, "-ZZ")
    env = dict(os.environ, LDAPTLS_REQCERT="never")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    if r.returncode != 0:
        raise HilError(f"ldapsearch failed ({r.returncode}): {r.stderr.strip()} {r.stdout.strip()}")
    return r.stdout


def store_messages(shell, address=DEMO, timeout=300):
    """Every message of the mailbox's INBOX as stored, read in the guest with
    `mxrack message list/cat` (through the admin socket) over the command
    port, base64-encoded so the serial line cannot alter a byte."""
    import base64

    script = (
        f"for u in $(mxrack message list {address} | cut -f1); do "
        f'echo "=MSG $u"; mxrack message cat {address} "$u" | base64; done'
    )
    _, out = shell.run(script, timeout=timeout)
    messages, uid, chunks = {}, None, []
    for line in out.splitlines() + ["=MSG end"]:
        if line.startswith("=MSG "):
            if uid is not None:
                messages[uid] = base64.b64decode("".join(chunks))
            uid, chunks = line.split()[1], []
        elif uid is not None:
            chunks.append(line.strip())
    return messages


def header_value(message, name):
    head = message.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(name.lower().encode() + b":"):
            return line.split(b":", 1)[1].strip().decode("latin-1")
    return None


def https_get(host_port, path, timeout=30):
    """GET https://127.0.0.1:PORT/path (self-signed certificate: not
    verified); returns (status, body text)."""
    import urllib.error
    import urllib.request

    url = f"https://{HOST}:{host_port}{path}"
    try:
        with urllib.request.urlopen(url, context=tls_context(), timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def status_json(host_port, timeout=30):
    """The appliance's status page as JSON (/status.json on the HTTPS port)."""
    import json

    code, body = https_get(host_port, "/status.json", timeout)
    if code != 200:
        raise HilError(f"/status.json answered {code}: {body[:200]}")
    return json.loads(body)


def status_entry(page, title=None, prefix=None):
    """The newest status page entry with that title (or title prefix)."""
    for e in page.get("entries", []):
        if (title is not None and e["title"] == title) or (
            prefix is not None and e["title"].startswith(prefix)
        ):
            return e
    return None


def entry_texts(entry):
    return [u["text"] for u in entry.get("updates", [])]


def html_entry(html_text, title):
    """(state, text) of the entry with that title on the HTML /status page:
    state is what its badge says ("open", "resolved 12:34 UTC"), text the
    article's text without tags; None when the page has no such entry."""
    import html as htmlmod
    import re

    for art in re.findall(r"<article\b.*?</article>", html_text, re.S):
        text = htmlmod.unescape(re.sub(r"<[^>]+>", " ", art))
        if title in text:
            m = re.search(r'class="state [a-z]+">([^<]*)<', art)
            return (htmlmod.unescape(m.group(1)) if m else "", " ".join(text.split()))
    return None
