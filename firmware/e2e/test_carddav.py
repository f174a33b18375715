"""CardDAV (issue 18) with real clients, on the HTTPS web listener:

- python3-caldav's DAVClient (Debian) for discovery: RFC 6764 well-known
  URL, DAV:current-user-principal, CARD:addressbook-home-set, the two books;
- vdirsyncer (Debian CLI) syncing a book both ways with a filesystem
  storage, against LDAP (python ldap3, bound with the mailbox's LDAP
  password, the attributes Thunderbird asks for): creations, edits and
  deletions on both sides, a conflict;
- raw WebDAV requests (caldav's client, `requests`, http.client and a raw
  socket where a library would rewrite the request) for sync-collection
  (RFC 6578), conditional PUT/DELETE, multiget/query (RFC 6352 8.6, 8.7),
  the rights matrix of test_ldap.py, and hostile requests;
- litmus (Debian) for the WebDAV basics it applies to (see
  test_litmus_stops_at_its_scratch_collection).

Wire names: D = DAV:, C = urn:ietf:params:xml:ns:carddav (RFC 6352 10.1),
CS = http://calendarserver.org/ns/ (getctag). Everything is on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import ldap3
import pytest
import requests
import urllib3

from mxlib import DEMO, HOST, IO_TIMEOUT, Server, insecure_tls

# python3-caldav is a Debian package (firmware/scripts/test.sh installs it);
# a python3 that is not Debian's (pyenv, venv) does not see Debian's
# dist-packages, so they are looked at last.
try:
    import caldav
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    import caldav

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

D, C, CS = "DAV:", "urn:ietf:params:xml:ns:carddav", "http://calendarserver.org/ns/"
BASE = "dc=example,dc=net"
MIB = 1024 * 1024
MAIL_PW = {
    "jo@acme.example": "jo-mail",
    "boss@acme.example": "boss-mail",
    "vd@acme.example": "vd-mail",
    "sc@acme.example": "sc-mail",
    "cp@acme.example": "cp-mail",
    "eve@other.example": "eve-mail",
}
LDAP_PW = {
    "jo@acme.example": "jo-ldap",
    "boss@acme.example": "boss-ldap",
    "vd@acme.example": "vd-ldap",
    "sc@acme.example": "sc-ldap",
}
# Thunderbird's autocomplete search and the attributes it asks for.
TB_FILTER = "(|(cn=*{0}*)(mail=*{0}*)(givenName=*{0}*)(sn=*{0}*))"
TB_ATTRS = ["cn", "mail", "sn", "givenName"]


@pytest.fixture(scope="module")
def dav():
    """One server: web listeners, account acme (jo plain, boss with full
    management, vd / sc / cp plain), account other (eve)."""
    s = Server()
    s.auth["pair_attempts_max"] = 100  # many logins from 127.0.0.1 here
    s.use_web()
    try:
        s.start()
        s.add_domain("acme.example", "acme")
        s.add_domain("other.example", "other")
        for addr, pw in MAIL_PW.items():
            if addr.startswith("boss@"):
                s.mx("mailbox", "add", addr, "--password", pw, "--full-management")
            else:
                s.add_mailbox(addr, pw)
        for name, pw in LDAP_PW.items():
            s.mx("ldap", "passwd", name, input=(pw + "\n").encode())
        yield s
    finally:
        s.teardown()


# --- helpers -------------------------------------------------------------------------


def url(s: Server, path: str) -> str:
    return f"https://{HOST}:{s.https_port}{path}"


def home(who: str) -> str:
    return f"/dav/books/{who}/"


def personal(who: str) -> str:
    return f"/dav/books/{who}/personal/"


def account(who: str) -> str:
    return f"/dav/books/{who}/account/"


def book_dn(name: str) -> str:
    return f"ou={name},ou=ab,{BASE}"


class Client:
    """`requests` against the server as one mailbox; redirects are not
    followed, so each call is one exchange."""

    def __init__(self, s: Server, who: str | None, password: str | None = None):
        self.s = s
        self.http = requests.Session()
        self.http.verify = False
        if who is not None:
            self.http.auth = (who, password if password is not None else MAIL_PW.get(who, s.password))

    def req(self, method: str, path: str, body: bytes | str | None = None, **headers) -> requests.Response:
        if isinstance(body, str):
            body = body.encode()
        # verify=False on each request: a Session's own `verify` loses to
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment.
        return self.http.request(method, url(self.s, path), data=body, headers=headers,
                                 allow_redirects=False, timeout=IO_TIMEOUT, verify=False)

    def propfind(self, path: str, props: str, depth: str = "0") -> requests.Response:
        body = f'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:C="{C}" xmlns:CS="{CS}"><D:prop>{props}</D:prop></D:propfind>'
        return self.req("PROPFIND", path, body, Depth=depth, **{"Content-Type": "application/xml; charset=utf-8"})

    def report(self, path: str, body: str, depth: str = "0") -> requests.Response:
        return self.req("REPORT", path, body, Depth=depth, **{"Content-Type": "application/xml; charset=utf-8"})

    def put(self, path: str, card: str, **headers) -> requests.Response:
        return self.req("PUT", path, card, **{"Content-Type": "text/vcard; charset=utf-8", **headers})

    def listing(self, book: str) -> dict[str, str]:
        """href -> etag of the cards of a book (PROPFIND Depth 1)."""
        r = self.propfind(book, "<D:getetag/><D:resourcetype/>", "1")
        assert r.status_code == 207, (r.status_code, r.text[:500])
        out = {}
        for href, resp in multistatus(r.content).items():
            if href != book:
                out[href] = resp.text(f"{{{D}}}getetag")
        return out


class Resp:
    """One DAV:response of a multistatus: its own DAV:status (when it has
    one) and each property with the status of its propstat."""

    def __init__(self, el: ET.Element):
        self.status = status_code(el.findtext(f"{{{D}}}status"))
        self.props: dict[str, tuple[int, ET.Element]] = {}
        for ps in el.findall(f"{{{D}}}propstat"):
            code = status_code(ps.findtext(f"{{{D}}}status"))
            for p in ps.find(f"{{{D}}}prop"):
                self.props[p.tag] = (code, p)

    def ok(self, tag: str) -> ET.Element:
        assert tag in self.props, f"{tag} not in the response ({list(self.props)})"
        code, el = self.props[tag]
        assert code == 200, f"{tag}: propstat status {code}"
        return el

    def text(self, tag: str) -> str:
        return (self.ok(tag).text or "").strip()

    def hrefs(self, tag: str) -> list[str]:
        return [h.text.strip() for h in self.ok(tag).iter(f"{{{D}}}href")]


def status_code(line: str | None) -> int | None:
    if line is None:
        return None
    m = re.fullmatch(r"\s*HTTP/1\.[01] (\d{3})\b.*", line, re.S)
    assert m, f"malformed DAV:status {line!r}"
    return int(m[1])


def multistatus(body: bytes) -> dict[str, Resp]:
    root = ET.fromstring(body)
    assert root.tag == f"{{{D}}}multistatus", root.tag
    out: dict[str, Resp] = {}
    for el in root.findall(f"{{{D}}}response"):
        href = el.findtext(f"{{{D}}}href").strip()
        assert href.startswith("/"), f"href not an absolute path: {href!r}"
        assert href not in out, f"href twice in one multistatus: {href}"
        out[urllib.parse.unquote(href)] = Resp(el)
    return out


def sync_token_of(body: bytes) -> str:
    return ET.fromstring(body).findtext(f"{{{D}}}sync-token").strip()


def dav_error(r: requests.Response, tag: str):
    """The response body is a DAV:error naming `tag` (RFC 4918 16)."""
    root = ET.fromstring(r.content)
    assert root.tag == f"{{{D}}}error", (r.status_code, r.text[:300])
    assert root.find(tag) is not None, (r.status_code, r.text[:300])


def vcard(uid: str, fn: str, email: str, *extra: str, version: str = "3.0") -> str:
    given, _, family = fn.partition(" ")
    lines = ["BEGIN:VCARD", f"VERSION:{version}", f"UID:{uid}", f"FN:{fn}",
             f"N:{family};{given};;;", f"EMAIL;TYPE=INTERNET:{email}", *extra, "END:VCARD"]
    return "\r\n".join(lines) + "\r\n"


def ldap_conn(s: Server, who: str) -> ldap3.Connection:
    tls = ldap3.Tls(validate=ssl.CERT_NONE)
    server = ldap3.Server(HOST, port=s.ldaps_port, use_ssl=True, tls=tls)
    c = ldap3.Connection(server, user=f"cn={who},ou=auth,{BASE}", password=LDAP_PW[who],
                         raise_exceptions=False)
    assert c.bind(), c.result
    return c


def tb_search(s: Server, who: str, book: str, word: str) -> dict[str, dict]:
    """Thunderbird's search in a book: DN -> {attribute: [values]}."""
    c = ldap_conn(s, who)
    try:
        c.search(book_dn(book), TB_FILTER.format(word), attributes=TB_ATTRS)
        assert c.result["result"] == 0, c.result
        return {e.entry_dn: {k: list(v) for k, v in e.entry_attributes_as_dict.items()} for e in c.entries}
    finally:
        c.unbind()


# --- discovery ----------------------------------------------------------------------------


def test_well_known_carddav_is_a_301_to_dav(dav):
    """RFC 6764 5: /.well-known/carddav redirects to the context path."""
    c = Client(dav, DEMO)
    for method in ("GET", "PROPFIND"):
        r = c.req(method, "/.well-known/carddav", Depth="0")
        assert r.status_code == 301, (method, r.status_code, r.text[:200])
        assert urllib.parse.urlsplit(r.headers["Location"]).path == "/dav/", r.headers["Location"]


def test_discovery_with_python_caldav(dav):
    """What a client does knowing only the server and the login (RFC 6764
    6, RFC 6352 7.1): well-known URL -> current-user-principal ->
    addressbook-home-set -> the books on Depth 1."""
    client = caldav.DAVClient(url(dav, "/.well-known/carddav"), username=DEMO,
                              password=dav.password, ssl_verify_cert=False)
    cup = f'<D:propfind xmlns:D="DAV:"><D:prop><D:current-user-principal/></D:prop></D:propfind>'
    r = client.propfind(url(dav, "/.well-known/carddav"), cup, depth=0)  # follows the 301
    assert r.status == 207, (r.status, r.raw)
    principal = r.tree.findtext(f".//{{{D}}}current-user-principal/{{{D}}}href").strip()
    assert principal == f"/dav/principals/{DEMO}/"

    body = (f'<D:propfind xmlns:D="DAV:" xmlns:C="{C}"><D:prop><D:resourcetype/><D:displayname/>'
            f"<D:principal-URL/><C:addressbook-home-set/></D:prop></D:propfind>")
    r = client.propfind(url(dav, principal), body, depth=0)
    assert r.status == 207, (r.status, r.raw)
    assert r.tree.find(f".//{{{D}}}resourcetype/{{{D}}}principal") is not None
    assert r.tree.findtext(f".//{{{D}}}principal-URL/{{{D}}}href").strip() == principal
    assert (r.tree.findtext(f".//{{{D}}}displayname") or "").strip()
    home_set = r.tree.findtext(f".//{{{C}}}addressbook-home-set/{{{D}}}href").strip()
    assert home_set == home(DEMO)

    props = (f"<D:resourcetype/><D:displayname/><CS:getctag/><D:sync-token/><D:supported-report-set/>"
             f"<C:supported-address-data/><C:max-resource-size/><D:current-user-privilege-set/>")
    body = f'<D:propfind xmlns:D="DAV:" xmlns:C="{C}" xmlns:CS="{CS}"><D:prop>{props}</D:prop></D:propfind>'
    r = client.propfind(url(dav, home_set), body, depth=1)
    assert r.status == 207, (r.status, r.raw)
    got = multistatus(r.raw if isinstance(r.raw, bytes) else r.raw.encode())
    assert set(got) == {home(DEMO), personal(DEMO), account(DEMO)}, sorted(got)
    assert got[home(DEMO)].ok(f"{{{D}}}resourcetype").find(f"{{{D}}}collection") is not None
    for book in (personal(DEMO), account(DEMO)):
        b = got[book]
        rt = b.ok(f"{{{D}}}resourcetype")
        assert rt.find(f"{{{D}}}collection") is not None and rt.find(f"{{{C}}}addressbook") is not None
        assert b.text(f"{{{D}}}displayname")
        assert b.text(f"{{{CS}}}getctag")
        assert re.fullmatch(r"urn:x-mxrack:sync:\d+", b.text(f"{{{D}}}sync-token"))
        reports = {r.tag for r in b.ok(f"{{{D}}}supported-report-set").iter() if r.tag.startswith("{")}
        assert {f"{{{C}}}addressbook-multiget", f"{{{C}}}addressbook-query",
                f"{{{D}}}sync-collection"} <= reports, reports
        versions = {e.get("version") for e in b.ok(f"{{{C}}}supported-address-data")
                    if e.get("content-type") == "text/vcard"}
        assert {"3.0", "4.0"} <= versions, versions
        assert int(b.text(f"{{{C}}}max-resource-size")) > 0
        privs = {p.tag for p in b.ok(f"{{{D}}}current-user-privilege-set").iter()}
        assert f"{{{D}}}read" in privs, privs


def test_options_names_the_dav_classes(dav):
    """RFC 6352 6.1: "addressbook" in the DAV header; RFC 4918 10.1: class 1
    (and 3, as the contract says; no locks, so not 2)."""
    r = Client(dav, DEMO).req("OPTIONS", personal(DEMO))
    assert r.status_code in (200, 204), r.status_code
    classes = {c.strip() for c in r.headers.get("DAV", "").split(",")}
    assert {"1", "3", "addressbook"} <= classes, r.headers.get("DAV")
    allow = {m.strip() for m in r.headers.get("Allow", "").split(",")}
    assert {"OPTIONS", "GET", "HEAD", "PUT", "DELETE", "PROPFIND", "REPORT"} <= allow, r.headers.get("Allow")


def test_the_plain_http_port_does_not_serve_dav(dav):
    c = http.client.HTTPConnection(HOST, dav.http_port, timeout=IO_TIMEOUT)
    c.request("PROPFIND", personal(DEMO), headers={"Depth": "0"})
    r = c.getresponse()
    r.read()
    assert r.status == 405, r.status
    c.request("GET", "/dav/")
    r = c.getresponse()
    r.read()
    assert r.status in (301, 308) and r.getheader("Location", "").startswith("https://"), (r.status, r.getheader("Location"))
    c.close()


# --- vdirsyncer ---------------------------------------------------------------------------


def fingerprint(s: Server) -> str:
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((HOST, s.https_port)))
    return hashlib.sha256(der).hexdigest()


class Vdirsyncer:
    """The Debian CLI on its own config and status folder; the pair "book":
    a = a filesystem folder of .vcf files, b = one CardDAV book."""

    def __init__(self, s: Server, tmp: Path, who: str, book: str, conflict: str = '"a wins"'):
        self.local = tmp / "local"
        self.local.mkdir()
        self.config = tmp / "vdirsyncer.conf"
        self.config.write_text("\n".join([
            "[general]",
            f'status_path = "{tmp / "status"}"',
            "[pair book]",
            'a = "local"',
            'b = "server"',
            "collections = null",
            f"conflict_resolution = {conflict}",
            "[storage local]",
            'type = "filesystem"',
            f'path = "{self.local}"',
            'fileext = ".vcf"',
            "[storage server]",
            'type = "carddav"',
            f'url = "{url(s, book)}"',
            f'username = "{who}"',
            f'password = "{MAIL_PW[who]}"',
            # vdirsyncer 0.19 takes no `verify = false`: the self-signed
            # certificate is pinned by its SHA-256 fingerprint.
            f'verify_fingerprint = "{fingerprint(s)}"',
            "",
        ]))
        self.run("discover", "book")

    def run(self, *args: str) -> str:
        r = subprocess.run(["vdirsyncer", "-c", str(self.config), *args], capture_output=True,
                           timeout=120, env=dict(os.environ, HOME=str(self.config.parent)))
        out = r.stdout.decode() + r.stderr.decode()
        assert r.returncode == 0, f"vdirsyncer {' '.join(args)} exited {r.returncode}:\n{out}"
        return out

    def sync(self) -> str:
        return self.run("sync", "book")

    def cards(self) -> dict[str, str]:
        """FN -> text of each local card."""
        out = {}
        for p in self.local.glob("*.vcf"):
            text = p.read_text()
            fn = re.search(r"^FN[;:](?:[^:\r\n]*:)?(.*?)\r?$", text, re.M)[1]
            assert fn not in out, f"two local cards named {fn}"
            out[fn] = text
        return out

    def file_of(self, fn: str) -> Path:
        for p in self.local.glob("*.vcf"):
            if re.search(rf"^FN[;:](?:[^:\r\n]*:)?{re.escape(fn)}\r?$", p.read_text(), re.M):
                return p
        raise AssertionError(f"no local card {fn}")


def test_vdirsyncer_syncs_a_book_both_ways_with_ldap(dav, tmp_path):
    who = "vd@acme.example"
    vd = Vdirsyncer(dav, tmp_path, who, personal(who))
    c = Client(dav, who)

    # 1. Cards made locally reach the server and LDAP search.
    (vd.local / "alice.vcf").write_text(vcard("alice", "Alice Liddell", "alice@wonder.example",
                                               "TEL;TYPE=CELL:+1 555 0100", "ORG:Wonderland Ltd",
                                               "X-CUSTOM-FIELD:kept only in the vCard"))
    (vd.local / "bob.vcf").write_text(vcard("bob", "Bob Builder", "bob@build.example"))
    (vd.local / "carol.vcf").write_text(vcard("carol", "Carol Singer", "carol@sing.example"))
    vd.sync()
    assert set(c.listing(personal(who))) == {f"{personal(who)}{n}.vcf" for n in ("alice", "bob", "carol")}
    found = tb_search(dav, who, who, "alic")
    assert list(found) == [f"uid=alice,{book_dn(who)}"], found
    entry = found[f"uid=alice,{book_dn(who)}"]
    assert entry["cn"] == ["Alice Liddell"] and entry["sn"] == ["Liddell"]
    assert entry["mail"] == ["alice@wonder.example"] and entry["givenName"] == ["Alice"]
    # The custom field stays in the vCard the server keeps.
    assert "X-CUSTOM-FIELD:kept only in the vCard" in c.req("GET", f"{personal(who)}alice.vcf").text

    # 2. An LDAP add appears locally after the next sync.
    lc = ldap_conn(dav, who)
    try:
        assert lc.add(f"cn=Dave Ldap,{book_dn(who)}", attributes={
            "objectClass": ["top", "inetOrgPerson"], "cn": "Dave Ldap", "sn": "Ldap",
            "givenName": "Dave", "mail": "dave@ldap.example", "telephoneNumber": "+1 555 0199"}), lc.result
    finally:
        lc.unbind()
    vd.sync()
    cards = vd.cards()
    assert set(cards) == {"Alice Liddell", "Bob Builder", "Carol Singer", "Dave Ldap"}, set(cards)
    assert re.search(r"^EMAIL[;:](?:[^:\r\n]*:)?dave@ldap\.example\r?$", cards["Dave Ldap"], re.M), cards["Dave Ldap"]
    assert "+1 555 0199" in cards["Dave Ldap"]
    dave_hrefs = [h for h in c.listing(personal(who)) if h.rsplit("/", 1)[1].startswith("~")]
    assert len(dave_hrefs) == 1, c.listing(personal(who))

    # 3. Edits on both sides: bob locally, alice over LDAP.
    bob = vd.file_of("Bob Builder")
    bob.write_text(bob.read_text().replace("bob@build.example", "bob@newbuild.example"))
    lc = ldap_conn(dav, who)
    try:
        assert lc.modify(f"uid=alice,{book_dn(who)}",
                         {"mail": [(ldap3.MODIFY_REPLACE, ["alice@looking-glass.example"])]}), lc.result
    finally:
        lc.unbind()
    vd.sync()
    assert tb_search(dav, who, who, "bob")[f"uid=bob,{book_dn(who)}"]["mail"] == ["bob@newbuild.example"]
    assert "alice@looking-glass.example" in vd.cards()["Alice Liddell"]
    assert "alice@wonder.example" not in vd.cards()["Alice Liddell"]

    # 4. Deletions on both sides: carol locally, dave over LDAP.
    vd.file_of("Carol Singer").unlink()
    lc = ldap_conn(dav, who)
    try:
        assert lc.delete(f"cn=Dave Ldap,{book_dn(who)}"), lc.result
    finally:
        lc.unbind()
    vd.sync()
    assert set(vd.cards()) == {"Alice Liddell", "Bob Builder"}
    assert tb_search(dav, who, who, "carol") == {}
    assert c.req("GET", f"{personal(who)}carol.vcf").status_code == 404
    assert set(c.listing(personal(who))) == {f"{personal(who)}alice.vcf", f"{personal(who)}bob.vcf"}

    # 5. A conflict: bob edited on both sides; "a wins" keeps the local one.
    bob = vd.file_of("Bob Builder")
    bob.write_text(bob.read_text().replace("bob@newbuild.example", "bob@local-side.example"))
    lc = ldap_conn(dav, who)
    try:
        assert lc.modify(f"uid=bob,{book_dn(who)}",
                         {"mail": [(ldap3.MODIFY_REPLACE, ["bob@ldap-side.example"])]}), lc.result
    finally:
        lc.unbind()
    vd.sync()
    assert tb_search(dav, who, who, "bob")[f"uid=bob,{book_dn(who)}"]["mail"] == ["bob@local-side.example"]
    assert "bob@local-side.example" in c.req("GET", f"{personal(who)}bob.vcf").text

    # 6. Both sides agree: a further sync changes nothing on either side.
    before = {p.name: p.read_text() for p in vd.local.glob("*.vcf")}
    etags = c.listing(personal(who))
    vd.sync()
    assert {p.name: p.read_text() for p in vd.local.glob("*.vcf")} == before
    assert c.listing(personal(who)) == etags


# --- sync-collection (RFC 6578) -----------------------------------------------------------


SYNC = """<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:">
  <D:sync-token>{token}</D:sync-token>
  <D:sync-level>1</D:sync-level>
  <D:prop><D:getetag/></D:prop>
</D:sync-collection>"""


def sync_report(client, book: str, token: str):
    """sync-collection through python3-caldav's DAVClient (Depth 0, RFC 6578 3.2)."""
    r = client.report(book, SYNC.format(token=token), depth=0)
    raw = r._raw if isinstance(r._raw, bytes) else r._raw.encode()
    return r.status, raw


def test_sync_collection_initial_incremental_and_bad_tokens(dav):
    who = "sc@acme.example"
    book = personal(who)
    c = Client(dav, who)
    for n in ("s1", "s2", "s3"):
        assert c.put(f"{book}{n}.vcf", vcard(n, f"Sync {n}", f"{n}@sync.example")).status_code == 201
    client = caldav.DAVClient(url(dav, "/dav/"), username=who, password=MAIL_PW[who], ssl_verify_cert=False)
    bu = url(dav, book)

    # Initial: an empty token gives every member and a token (RFC 6578 3.4).
    status, body = sync_report(client, bu, "")
    assert status == 207, body[:500]
    got = multistatus(body)
    assert set(got) == {f"{book}s1.vcf", f"{book}s2.vcf", f"{book}s3.vcf"}, sorted(got)
    assert all(r.text(f"{{{D}}}getetag") for r in got.values())
    token1 = sync_token_of(body)
    assert re.fullmatch(r"urn:x-mxrack:sync:\d+", token1), token1
    ctag1 = c.propfind(book, "<CS:getctag/>").text

    # Nothing changed: nothing reported (RFC 6578 3.5).
    status, body = sync_report(client, bu, token1)
    assert status == 207 and multistatus(body) == {}, body[:500]
    assert re.fullmatch(r"urn:x-mxrack:sync:\d+", sync_token_of(body))

    # A change over LDAP: exactly that href, with its new ETag.
    lc = ldap_conn(dav, who)
    try:
        assert lc.modify(f"uid=s2,{book_dn(who)}", {"title": [(ldap3.MODIFY_REPLACE, ["Synced"])]}), lc.result
    finally:
        lc.unbind()
    status, body = sync_report(client, bu, token1)
    assert status == 207, body[:500]
    got = multistatus(body)
    assert list(got) == [f"{book}s2.vcf"], sorted(got)
    assert got[f"{book}s2.vcf"].text(f"{{{D}}}getetag") == c.req("GET", f"{book}s2.vcf").headers["ETag"]
    assert "TITLE:Synced" in c.req("GET", f"{book}s2.vcf").text
    token2 = sync_token_of(body)
    assert token2 != token1
    assert c.propfind(book, "<CS:getctag/>").text != ctag1

    # A delete over LDAP: the href with 404 and no propstat (RFC 6578 3.5.2).
    lc = ldap_conn(dav, who)
    try:
        assert lc.delete(f"uid=s3,{book_dn(who)}"), lc.result
    finally:
        lc.unbind()
    status, body = sync_report(client, bu, token2)
    got = multistatus(body)
    assert status == 207 and list(got) == [f"{book}s3.vcf"], body[:500]
    assert got[f"{book}s3.vcf"].status == 404 and got[f"{book}s3.vcf"].props == {}
    token3 = sync_token_of(body)
    # From the first token: the change and the delete together.
    status, body = sync_report(client, bu, token1)
    got = multistatus(body)
    assert set(got) == {f"{book}s2.vcf", f"{book}s3.vcf"} and got[f"{book}s3.vcf"].status == 404

    # A token the server does not know, a malformed one, another scheme's:
    # 403 with DAV:valid-sync-token (RFC 6578 3.2).
    n = int(token3.rsplit(":", 1)[1])
    for bad in (f"urn:x-mxrack:sync:{n + 1000000}", "urn:x-mxrack:sync:banana",
                "http://example.com/ns/sync/1", "urn:x-mxrack:sync:-1"):
        r = c.report(book, SYNC.format(token=bad))
        assert r.status_code == 403, (bad, r.status_code, r.text[:300])
        dav_error(r, f"{{{D}}}valid-sync-token")


# --- conditional requests, GET, multiget, query ----------------------------------------------------


def test_conditional_put_and_delete(dav):
    """RFC 4918 / RFC 9110 13.1.1-2 preconditions; RFC 6352 6.3.2."""
    who = "cp@acme.example"
    c = Client(dav, who)
    path = f"{personal(who)}cond.vcf"
    r = c.put(path, vcard("cond", "Cond Itional", "cond@example.org"), **{"If-None-Match": "*"})
    assert r.status_code == 201, (r.status_code, r.text)
    etag1 = r.headers.get("ETag")
    assert etag1, r.headers
    # Another create with the same name: the card exists.
    r = c.put(path, vcard("cond", "Cond Twice", "twice@example.org"), **{"If-None-Match": "*"})
    assert r.status_code == 412, r.status_code
    # A stale ETag.
    r = c.put(path, vcard("cond", "Cond Stale", "stale@example.org"), **{"If-Match": '"not-the-etag"'})
    assert r.status_code == 412, r.status_code
    assert "Cond Itional" in c.req("GET", path).text
    # The current one.
    r = c.put(path, vcard("cond", "Cond Updated", "upd@example.org"), **{"If-Match": etag1})
    assert r.status_code in (200, 204), (r.status_code, r.text)
    etag2 = r.headers.get("ETag")
    assert etag2 and etag2 != etag1, (etag1, etag2)
    g = c.req("GET", path)
    assert g.status_code == 200 and "FN:Cond Updated" in g.text and g.headers["ETag"] == etag2
    assert g.headers["Content-Type"].split(";")[0].strip().lower() == "text/vcard"
    # DELETE with the old ETag, then the current one.
    assert c.req("DELETE", path, **{"If-Match": etag1}).status_code == 412
    assert c.req("GET", path).status_code == 200
    assert c.req("DELETE", path, **{"If-Match": etag2}).status_code in (200, 204)
    assert c.req("GET", path).status_code == 404
    # If-Match on a card that does not exist (RFC 9110 13.1.1): 412.
    r = c.put(path, vcard("cond", "Cond Gone", "gone@example.org"), **{"If-Match": etag2})
    assert r.status_code == 412, r.status_code


def test_get_stores_what_was_sent_and_converts_to_vcard_4(dav):
    who = "cp@acme.example"
    c = Client(dav, who)
    path = f"{personal(who)}conv.vcf"
    sent = vcard("conv", "Vera Version", "vera@example.org", "TEL;TYPE=WORK:+1 555 0123",
                 "X-SOCIAL:@vera")
    assert c.put(path, sent).status_code == 201
    r = c.req("GET", path)
    assert r.status_code == 200 and "VERSION:3.0" in r.text and "X-SOCIAL:@vera" in r.text
    r = c.req("GET", path, Accept="text/vcard; version=4.0")
    assert r.status_code == 200, r.status_code
    assert re.search(r"^VERSION:4\.0\r?$", r.text, re.M), r.text
    assert "VERSION:3.0" not in r.text
    assert re.search(r"^FN:Vera Version\r?$", r.text, re.M) and "vera@example.org" in r.text
    h = c.req("HEAD", path)
    assert h.status_code == 200 and h.content == b"" and h.headers.get("ETag")
    assert c.req("DELETE", path).status_code in (200, 204)


def test_addressbook_multiget_and_query(dav):
    who = "cp@acme.example"
    c = Client(dav, who)
    book = personal(who)
    for n, fn, mail in (("q1", "Quentin One", "quentin@one.example"),
                        ("q2", "Bob Query", "bob.query@two.example"),
                        ("q3", "Rita Three", "rita@three.example")):
        assert c.put(f"{book}{n}.vcf", vcard(n, fn, mail)).status_code == 201
    try:
        # RFC 6352 8.7: each href, its data; a missing one, 404.
        body = (f'<C:addressbook-multiget xmlns:D="DAV:" xmlns:C="{C}"><D:prop><D:getetag/><C:address-data/>'
                f"</D:prop><D:href>{book}q1.vcf</D:href><D:href>{book}q3.vcf</D:href>"
                f"<D:href>{book}missing.vcf</D:href></C:addressbook-multiget>")
        r = c.report(book, body, depth="0")
        assert r.status_code == 207, (r.status_code, r.text[:300])
        got = multistatus(r.content)
        assert set(got) == {f"{book}q1.vcf", f"{book}q3.vcf", f"{book}missing.vcf"}
        assert "FN:Quentin One" in got[f"{book}q1.vcf"].text(f"{{{C}}}address-data")
        assert "FN:Rita Three" in got[f"{book}q3.vcf"].text(f"{{{C}}}address-data")
        assert got[f"{book}missing.vcf"].status == 404
        # RFC 6352 8.6 / 10.5.4: text-match on EMAIL.
        body = (f'<C:addressbook-query xmlns:D="DAV:" xmlns:C="{C}"><D:prop><D:getetag/><C:address-data/></D:prop>'
                f'<C:filter><C:prop-filter name="EMAIL"><C:text-match collation="i;unicode-casemap" '
                f'match-type="contains">BOB.QUERY@</C:text-match></C:prop-filter></C:filter></C:addressbook-query>')
        r = c.report(book, body, depth="1")
        assert r.status_code == 207, (r.status_code, r.text[:300])
        got = multistatus(r.content)
        assert list(got) == [f"{book}q2.vcf"], sorted(got)
        assert "bob.query@two.example" in got[f"{book}q2.vcf"].text(f"{{{C}}}address-data")
        # and on FN, starts-with
        body = body.replace('name="EMAIL"', 'name="FN"').replace('"contains">BOB.QUERY@', '"starts-with">rita')
        got = multistatus(c.report(book, body, depth="1").content)
        assert list(got) == [f"{book}q3.vcf"], sorted(got)
    finally:
        for n in ("q1", "q2", "q3"):
            c.req("DELETE", f"{book}{n}.vcf")


# --- rights -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who, may_write", [("jo@acme.example", False), ("boss@acme.example", True)])
def test_account_book_is_writable_only_with_full_management(dav, who, may_write):
    """As test_ldap.py's rights matrix: everybody of the account reads its
    book; only full management writes it (RFC 3744 need-privileges)."""
    c = Client(dav, who)
    boss = Client(dav, "boss@acme.example")
    name = f"acct-{who.split('@')[0]}"
    path = f"{account(who)}{name}.vcf"
    assert c.propfind(account(who), "<D:getetag/>", "1").status_code == 207
    r = c.put(path, vcard(name, "Account Card", f"{name}@acme.example"))
    if may_write:
        assert r.status_code == 201, (r.status_code, r.text)
        # The other mailboxes of the account read it in their account book.
        jo = Client(dav, "jo@acme.example")
        assert "Account Card" in jo.req("GET", f"{account('jo@acme.example')}{name}.vcf").text
        # A plain mailbox may not delete it.
        r = jo.req("DELETE", f"{account('jo@acme.example')}{name}.vcf")
        assert r.status_code == 403, r.status_code
        dav_error(r, f"{{{D}}}need-privileges")
        assert c.req("DELETE", path).status_code in (200, 204)
    else:
        assert r.status_code == 403, (r.status_code, r.text)
        dav_error(r, f"{{{D}}}need-privileges")
        assert c.req("GET", path).status_code == 404
        assert boss.req("GET", f"{account('boss@acme.example')}{name}.vcf").status_code == 404
        privs = {p.tag for p in multistatus(c.propfind(account(who), "<D:current-user-privilege-set/>").content)
                 [account(who)].ok(f"{{{D}}}current-user-privilege-set").iter()}
        assert f"{{{D}}}read" in privs and f"{{{D}}}write" not in privs and f"{{{D}}}all" not in privs, privs


def test_revoking_full_management_takes_the_write_away(dav):
    boss = Client(dav, "boss@acme.example")
    path = f"{account('boss@acme.example')}revoke.vcf"
    dav.mx("mailbox", "set-full-management", "boss@acme.example", "off")
    try:
        r = boss.put(path, vcard("revoke", "Revoked Write", "r@acme.example"))
        assert r.status_code == 403, r.status_code
    finally:
        dav.mx("mailbox", "set-full-management", "boss@acme.example", "on")
    assert boss.put(path, vcard("revoke", "Revoked Write", "r@acme.example")).status_code == 201
    assert boss.req("DELETE", path).status_code in (200, 204)


def test_another_mailbox_home_principal_and_books_do_not_exist(dav):
    jo, boss = Client(dav, "jo@acme.example"), Client(dav, "boss@acme.example")
    assert boss.put(f"{personal('boss@acme.example')}secret.vcf",
                    vcard("secret", "Boss Secret", "secret@acme.example")).status_code == 201
    try:
        for path in (home("boss@acme.example"), f"/dav/principals/boss@acme.example/",
                     personal("boss@acme.example"), account("boss@acme.example"),
                     f"{personal('boss@acme.example')}secret.vcf"):
            r = jo.propfind(path, "<D:getetag/>", "0")
            assert r.status_code == 404, (path, r.status_code)
            assert jo.req("GET", path).status_code == 404, path
            assert "Boss Secret" not in r.text
        r = jo.put(f"{personal('boss@acme.example')}intruder.vcf", vcard("intruder", "In Truder", "i@x.example"))
        assert r.status_code == 404, r.status_code
        assert jo.req("DELETE", f"{personal('boss@acme.example')}secret.vcf").status_code == 404
        # Another account sees none of acme's cards, not even by multiget.
        eve = Client(dav, "eve@other.example")
        for book in (personal("eve@other.example"), account("eve@other.example")):
            assert "Boss Secret" not in eve.propfind(book, "<D:getetag/>", "1").text
            body = (f'<C:addressbook-multiget xmlns:D="DAV:" xmlns:C="{C}"><D:prop><C:address-data/></D:prop>'
                    f"<D:href>{personal('boss@acme.example')}secret.vcf</D:href></C:addressbook-multiget>")
            r = eve.report(book, body)
            assert "Boss Secret" not in r.text, r.text
        assert eve.req("GET", f"{account('boss@acme.example')}secret.vcf").status_code == 404
    finally:
        boss.req("DELETE", f"{personal('boss@acme.example')}secret.vcf")


@pytest.mark.parametrize("login", [None, ("jo@acme.example", "wrong"), ("nobody@acme.example", "x"),
                                   ("jo@acme.example", "jo-ldap")])
def test_no_or_wrong_credentials_get_401(dav, login):
    """RFC 9110 11.6.1: 401 with a challenge; the LDAP password is not the
    login (the contract: the mailbox's mail password)."""
    c = Client(dav, None)
    if login:
        c.http.auth = login
    for method, path in (("PROPFIND", "/dav/"), ("GET", f"{personal('jo@acme.example')}x.vcf"),
                         ("PUT", f"{personal('jo@acme.example')}x.vcf")):
        r = c.req(method, path, vcard("x", "X Y", "x@y.example") if method == "PUT" else None, Depth="0")
        assert r.status_code == 401, (method, login, r.status_code)
        # RFC 7617 2: realm required; charset="UTF-8" (2.1) may follow.
        challenge = r.headers.get("WWW-Authenticate", "")
        assert re.fullmatch(r'Basic realm="mxrack"(, charset="UTF-8")?', challenge), challenge


# --- hostile requests ------------------------------------------------------------------------


def raw_https(s: Server, head: bytes, body_chunks=(), read_after_head: float = 0.0) -> tuple[int, bytes]:
    """One request on a TLS socket exactly as given (no library rewrites the
    path or the framing). When `read_after_head` > 0, an early answer to the
    head alone is taken before any body is sent. Returns (status, bytes)."""
    sock = insecure_tls().wrap_socket(socket.create_connection((HOST, s.https_port), timeout=IO_TIMEOUT),
                                      server_hostname="mx.test.example")
    data = b""
    try:
        sock.sendall(head)
        if read_after_head:
            sock.settimeout(read_after_head)
            try:
                data = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                data = b""
            sock.settimeout(IO_TIMEOUT)
        if not data:
            try:
                for chunk in body_chunks:
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the server may answer and close before the body is all sent
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    finally:
        sock.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert m, f"no HTTP status line: {data[:200]!r}"
    return int(m[1]), data


def expect_continue(s: Server, head: bytes, body: bytes) -> tuple[int, bytes]:
    """A request with Expect: 100-continue as curl sends it: the head, then
    the body after a 100 (or after 1 s without an answer, RFC 9110 10.1.1)."""
    sock = insecure_tls().wrap_socket(socket.create_connection((HOST, s.https_port), timeout=IO_TIMEOUT),
                                      server_hostname="mx.test.example")
    try:
        sock.sendall(head)
        sock.settimeout(1.0)
        try:
            first = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            first = b""
        sock.settimeout(IO_TIMEOUT)
        if first:
            m = re.match(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n\r\n", first)
            assert m, f"not an interim or final answer: {first[:200]!r}"
            if m[1] != b"100":
                return int(m[1]), first  # a final answer before the body
            first = first[m.end():]
        sock.sendall(body)
        data = first
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    finally:
        sock.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert m, f"no HTTP status line: {data[:200]!r}"
    return int(m[1]), data


def basic(who: str) -> str:
    import base64
    return base64.b64encode(f"{who}:{MAIL_PW[who]}".encode()).decode()


def test_a_card_over_the_size_limit_is_refused_and_not_stored(dav):
    who = "cp@acme.example"
    c = Client(dav, who)
    size = int(multistatus(c.propfind(personal(who), "<C:max-resource-size/>").content)
               [personal(who)].text(f"{{{C}}}max-resource-size"))
    assert size <= MIB, size
    import base64
    photo = base64.b64encode(os.urandom(size)).decode()
    big = vcard("big", "Big Photo", "big@example.org",
                "PHOTO;ENCODING=b;TYPE=JPEG:" + "\r\n ".join(photo[i:i + 74] for i in range(0, len(photo), 74)))
    assert len(big.encode()) > size
    r = c.put(f"{personal(who)}big.vcf", big)
    assert r.status_code in (413, 403), r.status_code
    if r.status_code == 403:
        dav_error(r, f"{{{C}}}max-resource-size")
    assert c.req("GET", f"{personal(who)}big.vcf").status_code == 404
    assert f"{personal(who)}big.vcf" not in c.listing(personal(who))


@pytest.mark.parametrize("name, body, ctype", [
    ("text", b"This\nis\na\ntest\nfile\ncalled\nfoo\n", "text/plain"),
    ("vcalendar", b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//x//EN\r\nEND:VCALENDAR\r\n", "text/calendar"),
    ("no-end", b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No End\r\n", "text/vcard"),
    ("two-cards", b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Two\r\nEND:VCARD\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cards\r\nEND:VCARD\r\n", "text/vcard"),
    ("not-utf8", b"\xff\xfe\x00garbage", "text/vcard"),
])
def test_a_body_that_is_not_one_vcard_is_refused(dav, name, body, ctype):
    """RFC 6352 6.3.2.1: CARDDAV:supported-address-data / valid-address-data;
    5.1: one vCard per resource; RFC 6350 3.3: a vCard ends with END:VCARD."""
    who = "cp@acme.example"
    c = Client(dav, who)
    path = f"{personal(who)}{name}.vcf"
    r = c.req("PUT", path, body, **{"Content-Type": ctype})
    if r.status_code < 300:
        c.req("DELETE", path)  # stored: do not leave it for the other cases
    assert r.status_code in (400, 403, 415), r.status_code
    if r.status_code == 403:
        root = ET.fromstring(r.content)
        assert root.find(f"{{{C}}}valid-address-data") is not None or \
            root.find(f"{{{C}}}supported-address-data") is not None, r.text
    assert c.req("GET", path).status_code == 404


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_propfind_body_over_1_mib_gets_413(dav, framing):
    who = "cp@acme.example"
    filler = b"<!--" + b"x" * (MIB + 16) + b"-->"
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:">' + filler + b"<D:allprop/></D:propfind>"
    head = (f"PROPFIND {personal(who)} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Basic {basic(who)}\r\n"
            f"Depth: 0\r\nContent-Type: application/xml\r\n")
    if framing == "content-length":
        head += f"Content-Length: {len(body)}\r\n\r\n"
        chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    else:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunks = [b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536]) for i in range(0, len(body), 65536)]
        chunks.append(b"0\r\n\r\n")
    status, data = raw_https(dav, head.encode(), chunks, read_after_head=0.5)
    assert status == 413, data[:300]
    assert Client(dav, who).propfind(personal(who), "<D:getetag/>").status_code == 207


@pytest.mark.parametrize("method, depth", [("PROPFIND", "0"), ("REPORT", "0")])
def test_xml_nested_100000_deep_gets_a_4xx_and_the_server_answers_after(dav, method, depth):
    who = "cp@acme.example"
    c = Client(dav, who)
    nest = "<a>" * 100_000 + "</a>" * 100_000
    if method == "PROPFIND":
        body = f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>{nest}</D:prop></D:propfind>'
    else:
        body = f'<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:"><D:sync-token/>{nest}</D:sync-collection>'
    assert len(body) < MIB
    r = c.req(method, personal(who), body, Depth=depth, **{"Content-Type": "application/xml"})
    assert 400 <= r.status_code < 500, r.status_code
    # Unbalanced, 100,000 open elements that never close.
    r = c.req(method, personal(who), body[: len(body) // 2], Depth=depth, **{"Content-Type": "application/xml"})
    assert 400 <= r.status_code < 500, r.status_code
    assert c.propfind(personal(who), "<D:getetag/>", "1").status_code == 207
    assert dav.proc.poll() is None


def test_depth_infinity_is_refused_with_propfind_finite_depth(dav):
    """RFC 4918 9.1: a server may refuse Depth: infinity with 403 and
    DAV:propfind-finite-depth."""
    c = Client(dav, DEMO)
    for path in ("/dav/", home(DEMO), personal(DEMO)):
        r = c.propfind(path, "<D:getetag/>", "infinity")
        assert r.status_code == 403, (path, r.status_code)
        dav_error(r, f"{{{D}}}propfind-finite-depth")
    # No Depth header means infinity for PROPFIND (RFC 4918 9.1).
    r = c.req("PROPFIND", home(DEMO), '<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>')
    assert r.status_code == 403, r.status_code


@pytest.mark.parametrize("path", [
    "/dav/books/jo@acme.example/../boss@acme.example/personal/",
    "/dav/books/jo@acme.example/%2e%2e/boss@acme.example/personal/",
    "/dav/books/jo@acme.example/personal/../../boss@acme.example/personal/",
    "/dav/books/jo@acme.example%2f..%2fboss@acme.example/personal/",
    "/dav/books/jo@acme.example/personal/..%2f..%2fboss@acme.example%2fpersonal%2ftrav.vcf",
    "/dav/books/./boss@acme.example/personal/",
    "/dav/books/Boss@Acme.Example/personal/",
])
def test_path_traversal_does_not_reach_another_mailbox(dav, path):
    boss = Client(dav, "boss@acme.example")
    assert boss.put(f"{personal('boss@acme.example')}trav.vcf",
                    vcard("trav", "Traversal Target", "trav@acme.example")).status_code in (201, 204)
    for method, body, extra in (("PROPFIND", b'<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>', "Depth: 1\r\n"),
                                ("GET", b"", ""),
                                ("DELETE", b"", "")):
        head = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Basic {basic('jo@acme.example')}\r\n"
                f"{extra}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        status, data = raw_https(dav, head + body)
        assert status in (400, 403, 404), (method, status, data[:300])
        assert b"Traversal Target" not in data and b"trav.vcf" not in data, data[:500]
    assert boss.req("GET", f"{personal('boss@acme.example')}trav.vcf").status_code == 200


def test_proppatch_and_collection_methods_are_refused(dav):
    c = Client(dav, DEMO)
    body = ('<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>Mine</D:displayname>'
            '<x:color xmlns:x="urn:x">red</x:color></D:prop></D:set></D:propertyupdate>')
    r = c.req("PROPPATCH", personal(DEMO), body, **{"Content-Type": "application/xml"})
    assert r.status_code == 207, r.status_code
    got = multistatus(r.content)[personal(DEMO)]
    # No dead properties: each refused, 403 (or 424 for the one that fails
    # only because the other did, RFC 4918 9.2.1).
    codes = {got.props["{DAV:}displayname"][0], got.props["{urn:x}color"][0]}
    assert 403 in codes and codes <= {403, 424}, codes
    assert "Mine" not in c.propfind(personal(DEMO), "<D:displayname/>").text
    assert c.req("MKCOL", f"{home(DEMO)}newbook/").status_code in (403, 405)
    assert c.req("MKCOL", personal(DEMO)).status_code == 405  # RFC 4918 9.3.1: the URL is mapped
    for method, hdr in (("COPY", {"Destination": url(dav, f"{personal(DEMO)}copy.vcf")}),
                        ("MOVE", {"Destination": url(dav, f"{personal(DEMO)}moved.vcf")}),
                        ("LOCK", {})):
        assert c.req(method, personal(DEMO), **hdr).status_code in (403, 405), method


# --- litmus ------------------------------------------------------------------------------------


def test_litmus_stops_at_its_scratch_collection(dav, tmp_path):
    """litmus 0.13 (Debian) begins every suite ("begin", common.c
    make_space) with DELETE and MKCOL of URL/litmus/, and ends the suite
    when MKCOL fails; a CardDAV book has no sub-collections, so MKCOL is
    refused and none of the suites' own tests run. What applies: `init`
    (URL, TLS, connection) passes for each suite and `begin` fails on the
    MKCOL refusal, not on anything else. The tests of litmus that do apply to
    a book are made by hand in test_litmus_checks_that_apply_to_a_book."""
    who = "cp@acme.example"
    r = subprocess.run(["litmus", "-k", url(dav, personal(who)), who, MAIL_PW[who]],
                       capture_output=True, timeout=300, cwd=tmp_path,
                       env=dict(os.environ, TESTS="basic copymove props locks http"))
    out = r.stdout.decode(errors="replace")
    for suite in ("basic", "copymove", "props", "locks", "http"):
        block = out.split(f"-> running `{suite}':", 1)[1].split("<- summary", 1)[0]
        assert re.search(r"0\. init\.+ pass", block), (suite, block)
        m = re.search(r"1\. begin\.+ FAIL \(Could not create new collection `([^']+)' for tests: (\d{3}) ", block)
        assert m, (suite, block)
        assert m[1] == f"{personal(who)}litmus/" and m[2] in ("403", "405"), (suite, m.groups())
        assert f"summary for `{suite}': of 2 tests run: 1 passed, 1 failed" in out, out
    # Nothing of litmus's was created.
    assert not [h for h in Client(dav, who).listing(personal(who)) if "litmus" in h]


def test_litmus_checks_that_apply_to_a_book(dav):
    """The litmus tests whose requests make sense on an address book, made
    by hand with litmus's own requests: basic/options, basic/delete_null,
    basic/mkcol_over_plain, props/propfind_invalid and propfind_invalid2,
    props/propfind_d0. (http/expect100 skips itself over TLS; litmus says
    "skipping for SSL server", and DAV is not served over plain HTTP.)"""
    who = "cp@acme.example"
    c = Client(dav, who)
    book = personal(who)
    # options: class 1 claimed.
    assert "1" in {x.strip() for x in c.req("OPTIONS", book).headers.get("DAV", "").split(",")}
    # delete_null: DELETE of a missing resource, 404 (RFC 4918 9.6).
    assert c.req("DELETE", f"{book}404me").status_code == 404
    assert c.req("DELETE", f"{book}404me.vcf").status_code == 404
    # mkcol_over_plain: MKCOL on a card fails (405, the URL is mapped).
    assert c.put(f"{book}plain.vcf", vcard("plain", "Plain Card", "plain@example.org")).status_code == 201
    try:
        assert c.req("MKCOL", f"{book}plain.vcf").status_code == 405
    finally:
        c.req("DELETE", f"{book}plain.vcf")
    # propfind_invalid: not well-formed XML; propfind_invalid2: an empty
    # namespace bound to a prefix (Namespaces in XML 1.0, 3): 400 (RFC 4918 9.1).
    for body in ("<foo>", '<D:propfind xmlns:D="DAV:"><D:prop><bar:foo xmlns:bar=""/></D:prop></D:propfind>'):
        r = c.req("PROPFIND", book, body, Depth="0", **{"Content-Type": "application/xml"})
        assert r.status_code == 400, (body, r.status_code)
    # propfind_d0: an allprop PROPFIND, Depth 0, gives a multistatus for the book.
    r = c.req("PROPFIND", book, '<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>', Depth="0")
    assert r.status_code == 207 and list(multistatus(r.content)) == [book]
    # Expect: 100-continue over TLS: the card is taken (RFC 9110 10.1.1).
    card = vcard("expect", "Expect Continue", "ex@example.org").encode()
    head = (f"PUT {book}expect.vcf HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Basic {basic(who)}\r\n"
            f"Content-Type: text/vcard\r\nContent-Length: {len(card)}\r\nExpect: 100-continue\r\n\r\n").encode()
    status, data = expect_continue(dav, head, card)
    assert status == 201, data[:300]
    assert c.req("DELETE", f"{book}expect.vcf").status_code in (200, 204)
