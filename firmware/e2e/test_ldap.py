"""LDAP address books with real clients: ldap-utils (ldapsearch, ldapadd,
ldapmodify, ldapdelete, ldapmodrdn, ldapcompare, ldappasswd, ldapwhoami)
and python ldap3, over StartTLS (port 389's role) and LDAPS (636's).

The tree is the seed's: bind as cn=NAME,ou=auth,BASE, books at
ou=NAME,ou=ab,BASE, BASE from the primary domain (example.net). ldap-utils
exit with the LDAP result code, so `returncode` is what the server said.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess

import ldap3
import pytest
from ldap3.core.exceptions import LDAPException

from mxlib import HOST, Server

BASE = "dc=example,dc=net"
AB = f"ou=ab,{BASE}"
PASSWORDS = {
    "jo@acme.example": "jo-ldap",
    "boss@acme.example": "boss-ldap",
    "acme": "acme-ldap",
    "eve@other.example": "eve-ldap",
    "pw@acme.example": "pw-ldap",
}
LDAP_ENV = dict(os.environ, LDAPTLS_REQCERT="never")

# (LDAP result codes used below)
SUCCESS, SIZE_LIMIT, COMPARE_FALSE, COMPARE_TRUE = 0, 4, 5, 6
ADMIN_LIMIT, CONFIDENTIALITY, NO_SUCH_ATTRIBUTE, INAPPROPRIATE_MATCHING = 11, 13, 16, 18
VALUE_EXISTS, NO_SUCH_OBJECT, INVALID_DN = 20, 32, 34
INAPPROPRIATE_AUTH, INVALID_CREDENTIALS, INSUFFICIENT_ACCESS, BUSY = 48, 49, 50, 51
UNWILLING, NOT_ALLOWED_ON_RDN, ALREADY_EXISTS = 53, 67, 68


def bind_dn(name: str) -> str:
    return f"cn={name},ou=auth,{BASE}"


def book(name: str) -> str:
    return f"ou={name},{AB}"


def setup_tenants(s: Server):
    """Account acme (jo: plain mailbox, boss: full management, pw: for the
    password tests) and account other (eve), each with an LDAP password."""
    s.add_domain("acme.example", "acme")
    s.add_domain("other.example", "other")
    s.add_mailbox("jo@acme.example", "jo-mail")
    s.add_mailbox("pw@acme.example", "pw-mail")
    s.mx("mailbox", "add", "boss@acme.example", "--password", "boss-mail", "--full-management")
    s.add_mailbox("eve@other.example", "eve-mail")
    for name, password in PASSWORDS.items():
        out = s.mx("ldap", "passwd", name, input=(password + "\n").encode())
        assert out.decode() == f"LDAP password of {name} set\n"


@pytest.fixture(scope="module")
def ls():
    s = Server()
    # Every test binds from 127.0.0.1: the login limiter ([auth]) is tried
    # on a server of its own below; here a wider pair budget.
    s.auth["pair_attempts_max"] = 100
    s.write_config()
    try:
        s.start()
        setup_tenants(s)
        yield s
    finally:
        s.teardown()


class Tool:
    """ldap-utils against one server, bound as `who` (a mailbox or account)."""

    def __init__(self, s: Server, who: str | None, transport: str = "starttls", password: str | None = None):
        self.s = s
        self.who = who
        self.password = password if password is not None else PASSWORDS.get(who or "", "")
        self.transport = transport

    def args(self) -> list[str]:
        if self.transport == "starttls":
            a = ["-H", f"ldap://{HOST}:{self.s.ldap_port}", "-ZZ"]
        elif self.transport == "ldaps":
            a = ["-H", f"ldaps://{HOST}:{self.s.ldaps_port}"]
        else:
            a = ["-H", f"ldap://{HOST}:{self.s.ldap_port}"]
        a.append("-x")
        if self.who is not None:
            a += ["-D", bind_dn(self.who), "-w", self.password]
        return a

    def run(self, tool: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [tool, *self.args(), *args],
            input=input,
            capture_output=True,
            env=LDAP_ENV,
            timeout=60,
        )

    def search(self, base: str, filt: str = "(objectClass=*)", *extra: str) -> tuple[int, list[str]]:
        """(result code, DNs returned), the DNs in the order sent."""
        r = self.run("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", base, *extra, filt, "1.1")
        dns = [l[4:] for l in r.stdout.decode().splitlines() if l.startswith("dn: ")]
        return r.returncode, dns

    def add(self, ldif: str) -> int:
        return self.run("ldapadd", input=ldif.encode()).returncode

    def modify(self, ldif: str) -> int:
        return self.run("ldapmodify", input=ldif.encode()).returncode

    def delete(self, dn: str) -> int:
        return self.run("ldapdelete", dn).returncode


def person(dn: str, cn: str, sn: str | None = None, mail: str | None = None, given: str | None = None) -> str:
    lines = [
        f"dn: {dn}",
        "objectClass: top",
        "objectClass: person",
        "objectClass: organizationalPerson",
        "objectClass: inetOrgPerson",
        "objectClass: mozillaAbPersonAlpha",
        f"cn: {cn}",
    ]
    if sn:
        lines.append(f"sn: {sn}")
    if given:
        lines.append(f"givenName: {given}")
    if mail:
        lines.append(f"mail: {mail}")
    return "\n".join(lines) + "\n\n"


def connect(s: Server, who: str | None, ldaps: bool = True, password: str | None = None) -> ldap3.Connection:
    """python ldap3, bound as `who` over LDAPS (or StartTLS on the plain port)."""
    tls = ldap3.Tls(validate=ssl.CERT_NONE)
    if ldaps:
        server = ldap3.Server(HOST, port=s.ldaps_port, use_ssl=True, tls=tls, get_info=ldap3.ALL)
    else:
        server = ldap3.Server(HOST, port=s.ldap_port, tls=tls, get_info=ldap3.ALL)
    if who is None:
        c = ldap3.Connection(server, auto_bind=ldap3.AUTO_BIND_NONE, raise_exceptions=False)
        c.open()
        return c
    c = ldap3.Connection(
        server,
        user=bind_dn(who),
        password=password if password is not None else PASSWORDS[who],
        raise_exceptions=False,
        auto_bind=ldap3.AUTO_BIND_NONE,
    )
    c.open()
    if not ldaps:
        assert c.start_tls(), c.result
    assert c.bind(), c.result
    return c


# --- binds ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
@pytest.mark.parametrize("who", ["jo@acme.example", "acme"])
def test_a_bind_names_its_identity(ls, transport, who):
    r = Tool(ls, who, transport).run("ldapwhoami")
    assert r.returncode == SUCCESS, r.stderr
    assert r.stdout.decode().strip() == f"dn:{bind_dn(who)}"


def test_refused_binds(ls):
    # A password outside TLS.
    r = Tool(ls, "jo@acme.example", "plain").run("ldapwhoami")
    assert r.returncode == CONFIDENTIALITY, r.stderr
    assert b"StartTLS" in r.stderr
    # Anonymous succeeds, and is nobody.
    r = Tool(ls, None, "starttls").run("ldapwhoami")
    assert r.returncode == SUCCESS, r.stderr
    assert r.stdout.decode().strip() == "anonymous"
    # A DN without a password (the unauthenticated mechanism) is refused.
    r = Tool(ls, "jo@acme.example", "starttls", password="").run("ldapwhoami")
    assert r.returncode == UNWILLING, r.stderr
    # The wrong password; the mail password is not the LDAP password.
    for password in ["nope", "jo-mail"]:
        r = Tool(ls, "jo@acme.example", "ldaps", password=password).run("ldapwhoami")
        assert r.returncode == INVALID_CREDENTIALS, (password, r.stderr)
    # A name that does not exist, and a DN outside ou=auth.
    assert Tool(ls, "nobody@acme.example", "ldaps", password="x").run("ldapwhoami").returncode == INVALID_CREDENTIALS
    r = subprocess.run(
        ["ldapwhoami", "-H", f"ldaps://{HOST}:{ls.ldaps_port}", "-x", "-D", f"cn=jo@acme.example,{AB}", "-w", "jo-ldap"],
        capture_output=True, env=LDAP_ENV, timeout=60,
    )
    assert r.returncode == INVALID_CREDENTIALS


def test_ldapsearch_anonymous_reads_the_root_dse_and_no_book(ls):
    """`ldapsearch -x -s base -b ""`: an anonymous bind first, then the root
    DSE, which names no software version. Books stay out of reach."""
    for transport in ["plain", "starttls"]:
        t = Tool(ls, None, transport)
        r = t.run("ldapsearch", "-LLL", "-s", "base", "-b", "", "(objectClass=*)", "+", "*")
        assert r.returncode == SUCCESS, (transport, r.stderr)
        out = r.stdout.decode()
        assert f"namingContexts: {BASE}" in out, out
        assert "supportedLDAPVersion: 3" in out, out
        assert "vendorVersion" not in out and "0.1.0" not in out, out
        r = t.run("ldapsearch", "-LLL", "-s", "base", "-b", "cn=Subschema", "(objectClass=subschema)", "objectClasses")
        assert r.returncode == SUCCESS and "inetOrgPerson" in r.stdout.decode(), r.stderr
        for base in [BASE, AB, book("jo@acme.example"), book("acme")]:
            code, dns = t.search(base)
            assert dns == [] and code in (INSUFFICIENT_ACCESS, NO_SUCH_OBJECT), (base, code, dns)


def test_unauthenticated_search_is_refused_but_the_root_dse_answers(ls):
    c = connect(ls, None)
    try:
        # python ldap3 read the root DSE and the schema without a bind.
        info = ls_info = c.server.info
        assert BASE in info.naming_contexts
        assert "1.3.6.1.4.1.1466.20037" in [e[0] for e in info.supported_extensions]
        assert "1.2.840.113556.1.4.319" in [e[0] for e in info.supported_controls]
        schema = c.server.schema
        assert "inetOrgPerson" in schema.object_classes
        assert "mozillaAbPersonAlpha" in schema.object_classes
        assert "jpegPhoto" in schema.attribute_types
        assert ls_info is not None
        assert not c.search(book("jo@acme.example"), "(objectClass=*)")
        assert c.result["result"] == INSUFFICIENT_ACCESS
        assert not c.search(BASE, "(objectClass=*)", search_scope=ldap3.SUBTREE)
        assert c.result["result"] == INSUFFICIENT_ACCESS
    finally:
        c.unbind()


# --- the rights matrix ------------------------------------------------------------

# (who, book, may read, may write)
MATRIX = [
    ("jo@acme.example", "jo@acme.example", True, True),
    ("jo@acme.example", "acme", True, False),
    ("jo@acme.example", "boss@acme.example", False, False),
    ("jo@acme.example", "other", False, False),
    ("boss@acme.example", "boss@acme.example", True, True),
    ("boss@acme.example", "acme", True, True),
    ("boss@acme.example", "jo@acme.example", False, False),
    ("acme", "acme", True, True),
    ("acme", "jo@acme.example", False, False),
    ("acme", "other", False, False),
    ("eve@other.example", "acme", False, False),
    ("eve@other.example", "other", True, False),
]


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
@pytest.mark.parametrize("who,name,read,write", MATRIX)
def test_rights(ls, transport, who, name, read, write):
    t = Tool(ls, who, transport)
    code, dns = t.search(book(name), "(objectClass=*)", "-s", "base")
    assert code == (SUCCESS if read else NO_SUCH_OBJECT), (who, name)
    assert dns == ([book(name)] if read else [])
    entry = f"cn=Probe {transport} {who},{book(name)}"
    code = t.add(person(entry, f"Probe {transport} {who}", sn="Probe"))
    want = SUCCESS if write else (INSUFFICIENT_ACCESS if read else NO_SUCH_OBJECT)
    assert code == want, (who, name, code)
    if write:
        code, dns = t.search(entry, "(objectClass=*)", "-s", "base")
        assert (code, dns) == (SUCCESS, [entry])
        assert t.delete(entry) == SUCCESS
        assert t.search(entry, "(objectClass=*)", "-s", "base")[0] == NO_SUCH_OBJECT


def test_a_whole_tree_search_shows_only_readable_books(ls):
    code, dns = Tool(ls, "jo@acme.example").search(BASE, "(objectClass=organizationalUnit)")
    assert code == SUCCESS
    assert dns == [AB, book("jo@acme.example"), book("acme")]
    code, dns = Tool(ls, "acme").search(AB, "(objectClass=*)", "-s", "one")
    assert (code, dns) == (SUCCESS, [book("acme")])
    # ou=auth holds bind names, not entries.
    assert Tool(ls, "acme").search(f"ou=auth,{BASE}")[0] == NO_SUCH_OBJECT


def test_revoking_full_management_applies_to_an_open_connection(ls):
    c = connect(ls, "boss@acme.example", ldaps=False)
    try:
        dn = f"cn=Revoked Test,{book('acme')}"
        attrs = {"objectClass": ["inetOrgPerson"], "cn": "Revoked Test", "sn": "Test"}
        assert c.add(dn, attributes=attrs), c.result
        ls.mx("mailbox", "set-full-management", "boss@acme.example", "off")
        try:
            assert not c.delete(dn)
            assert c.result["result"] == INSUFFICIENT_ACCESS
            assert c.search(dn, "(objectClass=*)", search_scope=ldap3.BASE), "still readable"
        finally:
            ls.mx("mailbox", "set-full-management", "boss@acme.example", "on")
        assert c.delete(dn), c.result
    finally:
        c.unbind()


# --- searches as address-book clients make them ------------------------------------

TEN = [
    ("Jo Walker", "Walker", "Jo", "walker@example.org"),
    ("Joanna Lee", "Lee", "Joanna", "jlee@example.org"),
    ("Mary Major", "Major", "Mary", "mary.jo@example.org"),
    ("Bob Jones", "Jones", "Bob", "bob@example.org"),
    ("Ann Black", "Black", "Ann", "ann@example.org"),
    ("Carl White", "White", "Carl", "carl@example.org"),
    ("Dora Green", "Green", "Dora", "dora@example.org"),
    ("Ed Brown", "Brown", "Ed", "ed@example.org"),
    ("Fay Gray", "Gray", "Fay", "fay@example.org"),
    ("Gus Joplin", "Joplin", "Gus", None),
]


@pytest.fixture(scope="module")
def ten(ls):
    """A book of 10 entries: the account book, written by the account."""
    t = Tool(ls, "acme", "ldaps")
    ldif = "".join(
        person(f"cn={cn},{book('acme')}", cn, sn=sn, given=given, mail=mail) for cn, sn, given, mail in TEN
    )
    r = t.run("ldapadd", input=ldif.encode())
    assert r.returncode == SUCCESS, r.stderr
    return [f"cn={cn},{book('acme')}" for cn, _, _, _ in TEN]


THUNDERBIRD = "(|(cn=*jo*)(mail=*jo*)(givenName=*jo*)(sn=*jo*))"
OUTLOOK = "(&(mail=*)(|(mail=jo*)(cn=jo*)(sn=jo*)(givenName=jo*)))"


def test_thunderbird_and_outlook_filters(ls, ten):
    t = Tool(ls, "jo@acme.example", "starttls")
    code, dns = t.search(book("acme"), THUNDERBIRD, "-s", "one")
    assert code == SUCCESS
    assert sorted(dns) == sorted(ten[i] for i in [0, 1, 2, 3, 9])
    code, dns = t.search(book("acme"), OUTLOOK, "-s", "one")
    assert code == SUCCESS
    # Gus Joplin has no mail; Mary's mail has jo only in the middle.
    assert sorted(dns) == sorted(ten[i] for i in [0, 1, 3])
    # Approximate match is case-insensitive equality; other filter types.
    assert t.search(book("acme"), "(cn~=JO WALKER)")[1] == [ten[0]]
    assert t.search(book("acme"), "(&(sn>=W)(!(cn=Jo*)))")[1] == [ten[5]]
    assert t.search(book("acme"), "(sn<=Bm)")[1] == [ten[4]]
    assert sorted(t.search(book("acme"), "(mail=*@example.org)")[1]) == sorted(ten[:9])


def test_size_limit_returns_the_entries_up_to_it_and_code_4(ls, ten):
    r = Tool(ls, "jo@acme.example").run(
        "ldapsearch", "-LLL", "-z", "2", "-b", book("acme"), "-s", "one", "(objectClass=*)", "cn"
    )
    assert r.returncode == SIZE_LIMIT, r.stderr
    assert r.stdout.decode().count("dn: ") == 2
    # python ldap3 sees the same.
    c = connect(ls, "jo@acme.example")
    try:
        c.search(book("acme"), "(objectClass=*)", search_scope=ldap3.LEVEL, size_limit=2)
        assert c.result["result"] == SIZE_LIMIT
        assert len(c.entries) == 2
    finally:
        c.unbind()


def test_paged_results_of_3(ls, ten):
    c = connect(ls, "jo@acme.example", ldaps=False)
    try:
        pages, cookie, seen = [], None, []
        while True:
            assert c.search(
                book("acme"), "(objectClass=*)", search_scope=ldap3.LEVEL, attributes=["cn"],
                paged_size=3, paged_cookie=cookie,
            ) or c.result["result"] == SUCCESS, c.result
            pages.append(len(c.entries))
            seen += [e.entry_dn for e in c.entries]
            cookie = c.result["controls"]["1.2.840.113556.1.4.319"]["value"]["cookie"]
            if not cookie:
                break
            assert len(pages) < 10, "paging does not end"
        assert pages == [3, 3, 3, 1]
        assert sorted(seen) == sorted(ten)
    finally:
        c.unbind()
    # ldapsearch's own paging gets every entry too.
    r = Tool(ls, "jo@acme.example", "ldaps").run(
        "ldapsearch", "-LLL", "-E", "pr=3/noprompt", "-b", book("acme"), "-s", "one", "(objectClass=*)", "1.1"
    )
    assert r.returncode == SUCCESS, r.stderr
    assert r.stdout.decode().count("dn: ") == 10


# --- writes ---------------------------------------------------------------------------


def test_a_contact_with_a_100_kib_photo_round_trips(ls):
    photo = b"\xff\xd8\xff\xe0" + os.urandom(100 * 1024) + b"\xff\xd9"
    dn = f"cn=Pat Photo,{book('jo@acme.example')}"
    c = connect(ls, "jo@acme.example")
    try:
        assert c.add(dn, attributes={
            "objectClass": ["inetOrgPerson", "mozillaAbPersonAlpha"],
            "cn": "Pat Photo", "sn": "Photo", "mail": "pat@example.org",
            "mozillaSecondEmail": "pat@home.example", "mozillaHomeUrl": "https://pat.example/",
            "jpegPhoto": photo,
        }), c.result
        assert c.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["jpegPhoto", "MOZILLASECONDEMAIL"])
        got = c.entries[0]
        assert got.jpegPhoto.value == photo
        assert got.mozillaSecondEmail.value == "pat@home.example"
    finally:
        c.unbind()
    # ldapsearch writes binary values to files with -t.
    r = Tool(ls, "jo@acme.example").run("ldapsearch", "-LLL", "-t", "-b", dn, "-s", "base", "(cn=pat*)", "jpegPhoto")
    assert r.returncode == SUCCESS, r.stderr
    url = [l for l in r.stdout.decode().splitlines() if l.startswith("jpegPhoto:< file://")][0]
    path = url.split("file://", 1)[1]
    try:
        assert open(path, "rb").read() == photo
    finally:
        os.unlink(path)


def test_modify_modrdn_compare_delete(ls):
    t = Tool(ls, "jo@acme.example", "ldaps")
    dn = f"cn=Mod Target,{book('jo@acme.example')}"
    assert t.add(person(dn, "Mod Target", sn="Target", mail="mod@example.org")) == SUCCESS
    assert t.add(person(dn, "Mod Target", sn="Target")) == ALREADY_EXISTS
    ldif = f"""dn: {dn}
changetype: modify
add: telephoneNumber
telephoneNumber: +1 555 0101
telephoneNumber: +1 555 0102
-
replace: mail
mail: new@example.org
-
delete: telephoneNumber
telephoneNumber: +1 555 0101
-
add: title
title: Chief Tester
"""
    assert t.modify(ldif) == SUCCESS
    r = t.run("ldapsearch", "-LLL", "-b", dn, "-s", "base", "(objectClass=*)", "mail", "telephoneNumber", "title")
    out = r.stdout.decode()
    assert "mail: new@example.org" in out and "mod@example.org" not in out
    assert "telephoneNumber: +1 555 0102" in out and "0101" not in out
    assert "title: Chief Tester" in out
    # Values keep their case; matching ignores it (and spaces in phone numbers).
    assert t.run("ldapcompare", dn, "title:chief tester").returncode == COMPARE_TRUE
    assert t.run("ldapcompare", dn, "telephoneNumber:+15550102").returncode == COMPARE_TRUE
    assert t.run("ldapcompare", dn, "title:other").returncode == COMPARE_FALSE
    assert t.run("ldapcompare", dn, "mobile:1").returncode == NO_SUCH_ATTRIBUTE
    # Refusals with their codes.
    dup = f"dn: {dn}\nchangetype: modify\nadd: title\ntitle: CHIEF TESTER\n"
    assert t.modify(dup) == VALUE_EXISTS
    rdn = f"dn: {dn}\nchangetype: modify\ndelete: cn\n"
    assert t.modify(rdn) == NOT_ALLOWED_ON_RDN
    gone = f"dn: {dn}\nchangetype: modify\ndelete: mobile\n"
    assert t.modify(gone) == NO_SUCH_ATTRIBUTE
    operational = f"dn: {dn}\nchangetype: modify\nreplace: entryDN\nentryDN: cn=x\n"
    assert t.modify(operational) == 19  # constraintViolation
    # Rename inside the book; the old RDN value goes with -r.
    r = t.run("ldapmodrdn", "-r", dn, "cn=Renamed Target")
    assert r.returncode == SUCCESS, r.stderr
    new_dn = f"cn=Renamed Target,{book('jo@acme.example')}"
    assert t.search(dn, "(objectClass=*)", "-s", "base")[0] == NO_SUCH_OBJECT
    r = t.run("ldapsearch", "-LLL", "-b", new_dn, "-s", "base", "(objectClass=*)", "cn")
    assert "cn: Renamed Target" in r.stdout.decode() and "Mod Target" not in r.stdout.decode()
    # Moving to another book is refused.
    r = t.run("ldapmodrdn", "-s", book("acme"), new_dn, "cn=Moved")
    assert r.returncode == UNWILLING, r.stderr
    assert t.delete(new_dn) == SUCCESS
    assert t.delete(new_dn) == NO_SUCH_OBJECT


def test_bad_requests_get_their_result_codes(ls):
    t = Tool(ls, "jo@acme.example", "ldaps")
    mine = book("jo@acme.example")
    deep = "(!" * 12 + "(cn=x)" + ")" * 12
    assert t.search(mine, deep)[0] == ADMIN_LIMIT
    wide = "(|" + "(cn=x)" * 100 + ")"
    assert t.search(mine, wide)[0] == ADMIN_LIMIT
    assert t.search(mine, "(cn:caseExactMatch:=Jo)")[0] == INAPPROPRIATE_MATCHING
    assert t.search("dc=elsewhere,dc=org")[0] == NO_SUCH_OBJECT
    assert t.search(f"ou=nobody@acme.example,{AB}")[0] == NO_SUCH_OBJECT
    assert t.search("cn=bad\\zz,dc=example,dc=net")[0] == INVALID_DN
    # An unknown attribute in a filter matches nothing, and is no error.
    assert t.search(mine, "(shoeSize=42)") == (SUCCESS, [])
    # Schema checks on add.
    assert t.add(f"dn: cn=X,{mine}\nobjectClass: posixAccount\ncn: X\n\n") == 65
    assert t.add(f"dn: cn=X,{mine}\nobjectClass: inetOrgPerson\ncn: X\nshoeSize: 42\n\n") == 17
    assert t.add(f"dn: cn=X,cn=Y,{mine}\nobjectClass: inetOrgPerson\ncn: X\n\n") == 64
    assert t.add(f"dn: ou=new,{AB}\nobjectClass: organizationalUnit\nou: new\n\n") == NO_SUCH_OBJECT
    assert t.delete(mine) == UNWILLING


def test_ldap_passwords_change_with_ldappasswd(ls):
    who = "pw@acme.example"
    t = Tool(ls, who, "starttls")
    r = t.run("ldappasswd", "-s", "second-ldap")
    # RFC 3062: no response value when the password was given; an empty one
    # made ldappasswd print "ber_scanf: Success".
    assert r.returncode == SUCCESS, r.stderr
    assert r.stdout + r.stderr == b"", r
    assert Tool(ls, who, "ldaps").run("ldapwhoami").returncode == INVALID_CREDENTIALS
    t2 = Tool(ls, who, "ldaps", password="second-ldap")
    assert t2.run("ldapwhoami").returncode == SUCCESS
    # No new password given: the server makes one and returns it.
    r = t2.run("ldappasswd")
    assert r.returncode == SUCCESS, r.stderr
    generated = r.stdout.decode().split("New password:", 1)[1].strip()
    assert len(generated) == 20
    t3 = Tool(ls, who, "ldaps", password=generated)
    assert t3.run("ldapwhoami").returncode == SUCCESS
    # Only one's own password, and the old one must be right when given.
    # (ldappasswd exits 1 on any refusal and prints the result code.)
    r = t3.run("ldappasswd", "-s", "x1", bind_dn("jo@acme.example"))
    assert r.returncode != 0 and b"(50)" in r.stdout + r.stderr, r
    r = t3.run("ldappasswd", "-a", "wrong", "-s", "x2")
    assert r.returncode != 0 and b"(49)" in r.stdout + r.stderr, r
    # Outside TLS the request is refused like a bind.
    r = Tool(ls, who, "plain", password=generated).run("ldappasswd", "-s", "x3")
    assert r.returncode != 0 and b"(13)" in r.stdout + r.stderr, r
    # The mail password did not change.
    ls.mx("ldap", "passwd", who, "--password", PASSWORDS[who])
    assert Tool(ls, who, "ldaps").run("ldapwhoami").returncode == SUCCESS


def test_python_ldap3_modify_password(ls):
    """ldap3's extend.standard.modify_password decodes the answer: True for
    a given password, the generated one when none is given."""
    who = "pw@acme.example"
    ls.mx("ldap", "passwd", who, "--password", PASSWORDS[who])
    c = connect(ls, who)
    try:
        assert c.extend.standard.modify_password(new_password="ldap3-new") is True, c.result
        assert c.result["result"] == SUCCESS
    finally:
        c.unbind()
    c = connect(ls, who, password="ldap3-new")
    try:
        generated = c.extend.standard.modify_password(old_password="ldap3-new")
        assert isinstance(generated, str) and len(generated) == 20, (generated, c.result)
    finally:
        c.unbind()
    connect(ls, who, password=generated).unbind()
    ls.mx("ldap", "passwd", who, "--password", PASSWORDS[who])


# --- limits and durability on servers of their own --------------------------------------


def test_failed_binds_are_limited_and_books_have_a_size(make_server):
    s = make_server(start=False)
    s.auth["pair_attempts_max"] = 2
    s.ldap_limits = {"max_entries_per_book": 3}
    s.write_config()
    s.start()
    s.add_domain("acme.example", "acme")
    s.add_mailbox("jo@acme.example", "jo-mail")
    s.mx("ldap", "passwd", "jo@acme.example", "--password", "jo-ldap")
    t = Tool(s, "jo@acme.example", "ldaps")
    ldif = "".join(person(f"cn=P{i},{book('jo@acme.example')}", f"P{i}") for i in range(3))
    assert t.add(ldif) == SUCCESS
    assert t.add(person(f"cn=P9,{book('jo@acme.example')}", "P9")) == ADMIN_LIMIT
    bad = Tool(s, "jo@acme.example", "ldaps", password="wrong")
    assert bad.run("ldapwhoami").returncode == INVALID_CREDENTIALS
    assert bad.run("ldapwhoami").returncode == INVALID_CREDENTIALS
    r = t.run("ldapwhoami")
    assert r.returncode == BUSY, r.stderr
    assert b"too many bind attempts" in r.stderr


def test_an_acknowledged_add_survives_a_crash(make_server):
    s = make_server()
    s.mx("ldap", "passwd", "demo@example.net", "--password", "demo-ldap")
    t = Tool(s, "demo@example.net", "ldaps", password="demo-ldap")
    dn = f"cn=Durable,{book('demo@example.net')}"
    assert t.add(person(dn, "Durable", mail="durable@example.org")) == SUCCESS
    s.kill()
    s.start()
    t = Tool(s, "demo@example.net", "ldaps", password="demo-ldap")
    assert t.search(dn, "(mail=durable@*)", "-s", "base") == (SUCCESS, [dn])


def test_a_removed_mailbox_takes_its_book(make_server):
    s = make_server()
    s.add_domain("acme.example", "acme")
    s.add_mailbox("gone@acme.example", "m")
    s.mx("ldap", "passwd", "gone@acme.example", "--password", "gone-ldap")
    t = Tool(s, "gone@acme.example", "ldaps", password="gone-ldap")
    assert t.add(person(f"cn=Left Behind,{book('gone@acme.example')}", "Left Behind")) == SUCCESS
    s.mx("mailbox", "remove", "gone@acme.example")
    assert t.run("ldapwhoami").returncode == INVALID_CREDENTIALS
    s.add_mailbox("gone@acme.example", "m")
    s.mx("ldap", "passwd", "gone@acme.example", "--password", "gone-ldap")
    assert t.search(book("gone@acme.example"), "(objectClass=inetOrgPerson)") == (SUCCESS, [])


# --- address books count in their owner's quota (issue 10) ----------------------------

QUOTA_MESSAGE = re.compile(
    r"mailbox quota of jo@acme\.example exceeded: 1048576 bytes allowed, "
    r"(\d+) in use \((\d+) mail, (\d+) contacts\), the change adds (\d+)$"
)


def photo_contact(cn: str, photo: bytes) -> dict:
    return {
        "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
        "cn": cn,
        "sn": cn,
        "jpegPhoto": photo,
    }


def quota_line(s: Server, address: str) -> dict:
    """`mxrack mailbox quota ADDRESS` as a dict: used, mail, contacts, quota."""
    fields = s.mx("mailbox", "quota", address).decode().rstrip("\n").split("\t")
    assert fields[0] == address
    return {k: v if k == "quota" else int(v) for k, v in (f.split("=", 1) for f in fields[1:])}


def book_size(c: ldap3.Connection, who: str) -> int:
    assert c.search(book(who), "(objectClass=*)", search_scope=ldap3.LEVEL, attributes=["cn"]), c.result
    return len(c.entries)


def test_photos_count_in_the_mailbox_quota(make_server):
    """The issue's reproduction: a 1 MiB mailbox adds contacts with photos
    over LDAP until adminLimitExceeded; nothing more is stored, the figures
    survive a restart, a modify that grows is refused, a delete frees room."""
    s = make_server()
    s.add_domain("acme.example", "acme")
    s.add_mailbox("jo@acme.example", "jo-mail")
    s.mx("ldap", "passwd", "jo@acme.example", "--password", PASSWORDS["jo@acme.example"])
    s.mx("mailbox", "quota", "jo@acme.example", "1M")
    photo = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + os.urandom(100 * 1024)
    c = connect(s, "jo@acme.example")
    try:
        added = 0
        for i in range(40):
            dn = f"cn=Photo {i},{book('jo@acme.example')}"
            if not c.add(dn, attributes=photo_contact(f"Photo {i}", photo)):
                break
            added += 1
        # 100 KiB of binary is about 137 KB stored (base64): 7 fit in 1 MiB.
        assert added == 7, added
        assert c.result["result"] == ADMIN_LIMIT, c.result
        m = QUOTA_MESSAGE.match(c.result["message"])
        assert m, c.result["message"]
        used, mail, contacts, adds = (int(g) for g in m.groups())
        assert mail == 0 and used == contacts
        assert used <= 1048576 < used + adds
        assert book_size(c, "jo@acme.example") == added
        figures = quota_line(s, "jo@acme.example")
        assert figures == {"used": used, "mail": 0, "contacts": used, "quota": "1048576"}

        # A modify that makes an entry larger is refused with the same code;
        # nothing changes.
        first = f"cn=Photo 0,{book('jo@acme.example')}"
        bigger = photo + os.urandom(150 * 1024)
        assert not c.modify(first, {"jpegPhoto": [(ldap3.MODIFY_REPLACE, [bigger])]})
        assert c.result["result"] == ADMIN_LIMIT, c.result
        assert QUOTA_MESSAGE.match(c.result["message"]), c.result["message"]
        assert quota_line(s, "jo@acme.example")["contacts"] == used
        # One that makes it smaller is not.
        assert c.modify(first, {"jpegPhoto": [(ldap3.MODIFY_REPLACE, [photo[:1024]])]}), c.result
        shrunk = quota_line(s, "jo@acme.example")["contacts"]
        assert shrunk < used - 100_000
    finally:
        c.unbind()

    # The figure is the same after a restart (SIGKILL: no clean shutdown).
    s.kill()
    s.start()
    assert quota_line(s, "jo@acme.example")["contacts"] == shrunk
    c = connect(s, "jo@acme.example")
    try:
        # The entry refused before still does not fit: delete one and it does.
        dn = f"cn=Late,{book('jo@acme.example')}"
        big = photo + os.urandom(150 * 1024)
        assert not c.add(dn, attributes=photo_contact("Late", big))
        assert c.result["result"] == ADMIN_LIMIT, c.result
        assert c.delete(f"cn=Photo 1,{book('jo@acme.example')}"), c.result
        assert quota_line(s, "jo@acme.example")["contacts"] < shrunk
        assert c.add(dn, attributes=photo_contact("Late", big)), c.result
        assert book_size(c, "jo@acme.example") == added
        # A rename keeps the size counted (its key changes with it).
        assert c.modify_dn(dn, "cn=Later"), c.result
        assert c.search(book("jo@acme.example"), "(cn=Later)", attributes=["jpegPhoto"]), c.result
        assert c.entries[0].jpegPhoto.value == big
    finally:
        c.unbind()
    final = quota_line(s, "jo@acme.example")
    assert final["used"] == final["contacts"] <= 1048576
    assert "no problems found" in s.mx("verify").decode()


def test_an_account_book_is_bounded_by_max_book_bytes(make_server):
    """An account has no quota: its book stops at ldap.max_book_bytes."""
    s = make_server(start=False)
    s.ldap_limits = {"max_book_bytes": 512 * 1024}
    s.write_config()
    s.start()
    s.add_domain("acme.example", "acme")
    s.mx("ldap", "passwd", "acme", "--password", PASSWORDS["acme"])
    photo = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + os.urandom(100 * 1024)
    c = connect(s, "acme")
    try:
        added = 0
        for i in range(20):
            if not c.add(f"cn=Shared {i},{book('acme')}", attributes=photo_contact(f"Shared {i}", photo)):
                break
            added += 1
        assert added == 3, added
        assert c.result["result"] == ADMIN_LIMIT, c.result
        assert re.match(
            r"address book size limit \(ldap\.max_book_bytes\) of the address book of acme exceeded: "
            r"524288 bytes allowed, \d+ in use, the change adds \d+$",
            c.result["message"],
        ), c.result["message"]
        assert book_size(c, "acme") == added
    finally:
        c.unbind()


def test_python_ldap3_starttls_session(ls):
    """A whole session as a script would run it: StartTLS, bind, add, search
    with a mozilla attribute, Who am I, delete."""
    c = connect(ls, "boss@acme.example", ldaps=False)
    try:
        assert c.extend.standard.who_am_i() == f"dn:{bind_dn('boss@acme.example')}"
        dn = f"cn=Zed Nick,{book('boss@acme.example')}"
        assert c.add(dn, attributes={
            "objectClass": ["top", "inetOrgPerson", "mozillaAbPersonAlpha"],
            "cn": "Zed Nick", "mozillaNickname": "zeddy", "mail": "zed@example.org",
        }), c.result
        assert c.search(book("boss@acme.example"), "(mozillaNickname=ZED*)", attributes=["cn", "createTimestamp"])
        assert [e.entry_dn for e in c.entries] == [dn]
        assert c.entries[0].createTimestamp.value is not None
        assert c.delete(dn), c.result
    except LDAPException as e:
        pytest.fail(f"ldap3 raised {e!r}")
    finally:
        c.unbind()
