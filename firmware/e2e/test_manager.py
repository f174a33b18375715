"""The web Manager (issue 15) in a real browser: Debian's chromium driven by
selenium through chromedriver, headless, against the real binary's HTTPS
listener on 127.0.0.1. Each test is what a person does: the provider sets
up a customer from nothing until a desktop client (ldapsearch) binds with
the LDAP password it set; an account administrator manages its mailboxes
and aliases and is refused the provider's pages; a mailbox user changes
its password (then IMAP logs in with the new one), its LDAP password and
its forwarding. Python `requests` carries the browser's own session cookie
where the status code or a header matters (a browser does not show them),
and for the forged requests of the CSRF tests.

Screenshots of the main pages are written to target/e2e-artifacts/manager/
on every run (docs/manager-account.png and docs/manager-audit.png in the
README are two of them).

Every test works on an account of its own on the module's server; the
limiter test gets a server of its own with small budgets.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import struct
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
import urllib3
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from mxlib import HOST, IO_TIMEOUT, REPO, insecure_tls
from test_imap import ImapServer

# The appliance's certificate is self-signed; requests is told per request
# (verify=False), since REQUESTS_CA_BUNDLE in the environment overrides a
# Session's own setting.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

BASE_DN = "dc=example,dc=net"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
ARTIFACTS = REPO / "target" / "e2e-artifacts" / "manager"
WINDOW = (1200, 900)
PAGE_TIMEOUT = 30


# --- the browser -------------------------------------------------------------------


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    # firmware/scripts/test.sh installs both (chromium, chromium-driver).
    assert chromium, "chromium is not installed (firmware/scripts/test.sh installs it)"
    assert driver, "chromedriver is not installed (firmware/scripts/test.sh installs chromium-driver)"
    return chromium, driver


class Browser:
    """One browser window with a profile of its own (its own cookies): one
    person. Calls read like what the person does:

        b.open("/manager/login"); b.fill("login", user="admin", password=pw)
        b.submit("login"); assert b.who() == "admin (provider)"
    """

    def __init__(self, server: ImapServer):
        chromium, driver = browser_paths()
        self.server = server
        self.profile = tempfile.mkdtemp(prefix="mxe2e-chromium-", dir="/tmp")
        opts = Options()
        opts.binary_location = chromium
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={self.profile}",
            "--hide-scrollbars",
            # Nothing leaves the machine: no sync, updates, safe browsing,
            # password leak checks or other background traffic.
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--safebrowsing-disable-auto-update",
            "--disable-features=PasswordLeakDetection,OptimizationHints,Translate,MediaRouter",
        ):
            opts.add_argument(arg)
        opts.add_experimental_option(
            "prefs",
            {
                "credentials_enable_service": False,
                "profile.password_manager_enabled": False,
                "profile.password_manager_leak_detection": False,
                "safebrowsing.enabled": False,
            },
        )
        self.d = webdriver.Chrome(service=Service(driver), options=opts)
        self.d.set_page_load_timeout(PAGE_TIMEOUT)
        # The viewport itself WINDOW (--window-size counts the window's
        # frame), so that screenshots have that size.
        self.d.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
        )

    def quit(self):
        try:
            self.d.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- where the browser is --------------------------------------------------

    def url(self, path: str) -> str:
        return f"https://{HOST}:{self.server.https_port}{path}"

    def path(self) -> str:
        return urllib.parse.urlsplit(self.d.current_url).path

    def open(self, path: str):
        self.d.get(self.url(path))

    def title(self) -> str:
        return self.d.find_element(By.TAG_NAME, "h1").text

    def text(self) -> str:
        return self.d.find_element(By.TAG_NAME, "body").text

    def who(self) -> str:
        return self.d.find_element(By.ID, "who").text

    def one(self, css: str, within: WebElement | None = None) -> WebElement:
        return (within or self.d).find_element(By.CSS_SELECTOR, css)

    def all(self, css: str, within: WebElement | None = None) -> list[WebElement]:
        return (within or self.d).find_elements(By.CSS_SELECTOR, css)

    def notice(self) -> str:
        found = self.all(".notice")
        assert found, f"no .notice on {self.path()}: {self.text()}"
        return found[0].text

    def error(self) -> str:
        found = self.all(".error")
        assert found, f"no .error on {self.path()}: {self.text()}"
        return found[0].text

    def rows(self, table: str) -> list[list[str]]:
        """The data rows (those with td cells) of table #`table`, as texts."""
        out = []
        for tr in self.all(f"#{table} tr"):
            cells = self.all("td", tr)
            if cells:
                out.append([c.text.strip() for c in cells])
        return out

    def row(self, table: str, first: str) -> WebElement:
        """The row of table #`table` whose first cell is `first`."""
        for tr in self.all(f"#{table} tr"):
            cells = self.all("td", tr)
            if cells and cells[0].text.strip() == first:
                return tr
        raise AssertionError(f"no row {first!r} in #{table}: {self.rows(table)}")

    def links(self) -> list[str]:
        return [a.get_attribute("href") for a in self.all("a")]

    def cookie(self) -> str:
        c = self.d.get_cookie("mxrack_session")
        assert c, "the browser holds no mxrack_session cookie"
        return c["value"]

    def csrf(self) -> str:
        return self.one("input[name=csrf]").get_attribute("value")

    # --- what the person does -----------------------------------------------------

    def fill(self, form: str | WebElement, **fields):
        """Types into the named fields of a form; True/False tick checkboxes."""
        f = self.one(f"form#{form}") if isinstance(form, str) else form
        for name, value in fields.items():
            field = self.one(f"[name={name}]", f)
            if field.get_attribute("type") == "checkbox":
                if field.is_selected() != bool(value):
                    field.click()
            else:
                field.clear()
                field.send_keys(value)

    def click(self, button: WebElement):
        """Clicks a button that sends a form, and waits for the next page."""
        # A mark on the old document's window: the next page has none.
        # (Scripts run by the driver are not the page's, so the CSP, which
        # allows no script, does not stop them.)
        self.d.execute_script("window.mxrackOldPage = true;")
        button.click()
        WebDriverWait(self.d, PAGE_TIMEOUT, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script(
                "return window.mxrackOldPage === undefined && document.readyState === 'complete';"
            )
        )

    def submit(self, form: str | WebElement, **fields):
        f = self.one(f"form#{form}") if isinstance(form, str) else form
        if fields:
            self.fill(f, **fields)
        self.click(self.one("button[type=submit]", f))

    def row_form(self, table: str, first: str, action_end: str) -> WebElement:
        """The inline form in a table row whose action ends in `action_end`."""
        for f in self.all("form", self.row(table, first)):
            if f.get_attribute("action").endswith(action_end):
                return f
        raise AssertionError(f"no form {action_end} in the row {first!r} of #{table}")

    def login(self, user: str, password: str):
        self.open("/manager/login")
        self.submit("login", user=user, password=password)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p = ARTIFACTS / f"{name}.png"
        assert self.d.save_screenshot(str(p)), f"no screenshot {p}"
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{p} is not a PNG"
        assert struct.unpack(">II", data[16:24]) == WINDOW, f"{p}: not {WINDOW}"
        # A blank page compresses to almost nothing.
        assert len(data) > 10_000, f"{p}: suspiciously small ({len(data)} bytes)"
        return p


@pytest.fixture
def browsers(mgr):
    """browsers() -> a new Browser (one person); all quit after the test."""
    made: list[Browser] = []

    def make() -> Browser:
        b = Browser(mgr)
        made.append(b)
        return b

    yield make
    for b in made:
        b.quit()


# --- the server ---------------------------------------------------------------------


def web_server(**auth) -> ImapServer:
    s = ImapServer()
    s.auth.update(auth)
    s.use_web(s.imap_port, s.imaps_port)
    return s


@pytest.fixture(scope="module")
def mgr():
    s = web_server()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


def admin_password(s: ImapServer) -> str:
    pw = (s.data / "admin-password").read_text().strip()
    assert pw, "empty admin password"
    return pw


def setup_account(s: ImapServer, account: str, domain: str, *mailboxes: tuple[str, str, bool]):
    """An account, a domain and mailboxes made with the CLI (the test is
    about what comes after)."""
    s.mx("account", "add", account)
    s.mx("domain", "add", domain, "--account", account)
    for address, password, full in mailboxes:
        s.mx("mailbox", "add", address, "--password", password, *(["--full-management"] if full else []))


# --- plain HTTP with the browser's cookie --------------------------------------------


def http(s: ImapServer, method: str, path: str, cookie: str | None = None, **kw) -> requests.Response:
    cookies = {"mxrack_session": cookie} if cookie else None
    return requests.request(
        method,
        f"https://{HOST}:{s.https_port}{path}",
        cookies=cookies,
        verify=False,
        allow_redirects=False,
        timeout=IO_TIMEOUT,
        **kw,
    )


def assert_refused_page(b: Browser, s: ImapServer, path: str):
    """`path` typed into the browser shows the refusal page, and its status
    (which the browser does not show) is 403."""
    b.open(path)
    assert b.title() == "Not allowed", f"{path}: {b.text()}"
    assert b.all(".error"), f"{path}: no reason shown: {b.text()}"
    r = http(s, "GET", path, b.cookie())
    assert r.status_code == 403, f"{path}: {r.status_code}"
    assert r.headers["Content-Security-Policy"] == CSP


# --- real clients of what the Manager set ------------------------------------------


def ldapsearch(s: ImapServer, bind_dn: str, password: str, base: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LDAPTLS_REQCERT="never")
    return subprocess.run(
        [
            "ldapsearch", "-LLL", "-H", f"ldaps://{HOST}:{s.ldaps_port}", "-x",
            "-D", bind_dn, "-w", password, "-b", base, "-s", "base", "(objectClass=*)",
        ],
        capture_output=True,
        timeout=60,
        env=env,
    )


def imap_login(s: ImapServer, user: str, password: str) -> str:
    m = imaplib.IMAP4_SSL(HOST, s.imaps_port, ssl_context=insecure_tls(), timeout=IO_TIMEOUT)
    try:
        typ, _ = m.login(user, password)
        return typ
    except imaplib.IMAP4.error:
        return "NO"
    finally:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def audit_rows(b: Browser) -> list[list[str]]:
    b.open("/manager/audit")
    return b.rows("audit")


# --- 1. the provider, from nothing to a working address book --------------------------


def test_the_provider_sets_up_a_customer_until_ldapsearch_binds(mgr, browsers):
    s = mgr
    b = browsers()
    b.open("/manager/")
    assert b.path() == "/manager/login", "not logged in: to the login page"
    b.shot("login")
    b.login("admin", admin_password(s))
    assert b.path() == "/manager/"
    assert b.who() == "admin (provider)"

    # Accounts: add "acme".
    b.click(b.d.find_element(By.LINK_TEXT, "Accounts"))
    assert b.path() == "/manager/accounts"
    b.submit("account-add", name="acme")
    assert b.path() == "/manager/accounts"
    assert b.notice() == "account acme added"
    assert "acme" in [r[0] for r in b.rows("accounts")]
    b.shot("provider-accounts")

    # Its page: a domain, then a mailbox with full management and a plain one.
    b.click(b.d.find_element(By.LINK_TEXT, "acme"))
    assert b.path() == "/manager/accounts/acme"
    b.submit("domain-add", domain="acme.example")
    assert b.notice() == "domain acme.example added to account acme"
    assert b.rows("domains")[0][0] == "acme.example"
    b.submit("mailbox-add", address="boss@acme.example", password="Boss-pass-1", full_management=True)
    assert b.notice() == "mailbox boss@acme.example added"
    b.submit("mailbox-add", address="al@acme.example", password="Al-mail-pass-1", full_management=False)
    assert b.notice() == "mailbox al@acme.example added"
    rows = {r[0]: r for r in b.rows("mailboxes")}
    assert set(rows) == {"boss@acme.example", "al@acme.example"}
    assert rows["boss@acme.example"][1].startswith("on"), rows
    assert rows["al@acme.example"][1].startswith("off"), rows
    assert rows["al@acme.example"][2] == "none"

    # The plain mailbox's LDAP password, in its row.
    b.submit(b.row_form("mailboxes", "al@acme.example", "/mailboxes/ldap-password"), password="Al-ldap-pass-1")
    assert b.notice() == "LDAP password of al@acme.example set"
    b.shot("account-provider")

    # A desktop client binds with it and reads the mailbox's book.
    bind = f"cn=al@acme.example,ou=auth,{BASE_DN}"
    book = f"ou=al@acme.example,ou=ab,{BASE_DN}"
    r = ldapsearch(s, bind, "Al-ldap-pass-1", book)
    assert r.returncode == 0, r.stderr.decode()
    assert re.search(rf"^dn: {re.escape(book)}$", r.stdout.decode(), re.M | re.I), r.stdout.decode()
    # The mail password is not the LDAP password.
    r = ldapsearch(s, bind, "Al-mail-pass-1", book)
    assert r.returncode == 49, (r.returncode, r.stderr.decode())
    # And the mail password works where it belongs.
    assert imap_login(s, "al@acme.example", "Al-mail-pass-1") == "OK"

    # The provider sees every change in the audit trail, newest first.
    rows = audit_rows(b)
    b.shot("audit")
    ours = [r for r in rows if "acme" in r[3]]
    assert [r[3] for r in ours] == [
        "LDAP password of al@acme.example set",
        "mailbox al@acme.example added",
        "mailbox boss@acme.example added",
        "domain acme.example added to account acme",
        "account acme added",
    ], rows
    for when, who, client, _ in ours:
        assert who == "admin"
        assert client == HOST
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when), when
    # No secret ever reaches the trail.
    page = b.text()
    for secret in ("Boss-pass-1", "Al-mail-pass-1", "Al-ldap-pass-1"):
        assert secret not in page


# --- 2. the account administrator -----------------------------------------------------


def test_the_account_administrator_manages_its_account_and_nothing_else(mgr, browsers):
    s = mgr
    setup_account(s, "beta", "beta.example", ("chief@beta.example", "Chief-pass-1", True))
    b = browsers()
    b.login("chief@beta.example", "Chief-pass-1")
    assert b.who() == "chief@beta.example (account beta)"
    b.click(b.d.find_element(By.LINK_TEXT, "Account beta"))
    assert b.path() == "/manager/accounts/beta"

    # Its domains are listed, but it adds and removes none.
    assert b.rows("domains") == [["beta.example"]]
    assert b.all("form#domain-add") == []
    assert b.all("#domains form") == []

    # A mailbox, its quota and password.
    b.submit("mailbox-add", address="cy@beta.example", password="Cy-first-1")
    assert b.notice() == "mailbox cy@beta.example added"
    b.submit(b.row_form("mailboxes", "cy@beta.example", "/mailboxes/quota"), quota="10M")
    assert b.notice() == "quota of cy@beta.example set to 10485760 bytes"
    assert b.rows("mailboxes")[[r[0] for r in b.rows("mailboxes")].index("cy@beta.example")][2] == "10485760"
    b.submit(b.row_form("mailboxes", "cy@beta.example", "/mailboxes/quota"), quota="lots")
    assert "not a size" in b.error(), b.error()
    b.submit(b.row_form("mailboxes", "cy@beta.example", "/mailboxes/password"), password="Cy-second-2")
    assert b.notice() == "password of cy@beta.example changed"
    assert imap_login(s, "cy@beta.example", "Cy-second-2") == "OK"

    # Full management: grant, then revoke.
    b.submit(b.row_form("mailboxes", "cy@beta.example", "/mailboxes/full-management"))
    assert b.notice() == "full management access of cy@beta.example granted"
    f = b.row_form("mailboxes", "cy@beta.example", "/mailboxes/full-management")
    assert b.one("button", f).text == "Revoke"
    assert b.row("mailboxes", "cy@beta.example").find_elements(By.TAG_NAME, "td")[1].text.startswith("on")
    b.submit(f)
    assert b.notice() == "full management access of cy@beta.example revoked"
    f = b.row_form("mailboxes", "cy@beta.example", "/mailboxes/full-management")
    assert b.one("button", f).text == "Grant"

    # A mailbox in a domain of another account is refused, and so is
    # another account's mailbox named in a forged form of this page.
    b.submit("mailbox-add", address="intruder@example.net", password="Intruder-1")
    assert "not in a domain of account beta" in b.error()
    assert "intruder@example.net" not in [r[0] for r in b.rows("mailboxes")]
    for action, extra in (("remove", {}), ("password", {"password": "Taken-over-1"}),
                          ("full-management", {"on": "on"})):
        r = http(s, "POST", f"/manager/accounts/beta/mailboxes/{action}", b.cookie(),
                 data={"csrf": b.csrf(), "address": "demo@example.net", **extra})
        assert r.status_code == 303 and r.headers["Location"] == "/manager/accounts/beta"
    assert "demo@example.net" in s.mx("mailbox", "list").decode()
    assert imap_login(s, "demo@example.net", s.password) == "OK"

    # An alias, then removed.
    b.submit("alias-add", address="sales@beta.example", targets="cy@beta.example, chief@beta.example")
    assert b.notice() == "alias sales@beta.example -> cy@beta.example, chief@beta.example"
    assert b.rows("aliases") == [["sales@beta.example", "cy@beta.example, chief@beta.example", "Remove"]]
    b.shot("account")
    b.submit(b.row_form("aliases", "sales@beta.example", "/aliases/remove"))
    assert b.notice() == "alias sales@beta.example removed"
    assert b.rows("aliases") == []

    # The account's LDAP password: the account bind reads the account book.
    b.submit("account-ldap-password", password="Beta-ldap-1")
    assert b.notice() == "LDAP password of account beta set"
    r = ldapsearch(s, f"cn=beta,ou=auth,{BASE_DN}", "Beta-ldap-1", f"ou=beta,ou=ab,{BASE_DN}")
    assert r.returncode == 0, r.stderr.decode()
    assert re.search(rf"^dn: ou=beta,ou=ab,{BASE_DN}$", r.stdout.decode(), re.M | re.I), r.stdout.decode()

    # The provider's pages and another account's page, typed as URLs.
    for path in ("/manager/accounts", "/manager/queue", "/manager/audit", "/manager/config",
                 "/manager/accounts/demo"):
        assert_refused_page(b, s, path)
    # Nor is any of them linked.
    b.open("/manager/")
    for href in b.links():
        assert not href.endswith(("/manager/accounts", "/queue", "/audit", "/config", "/accounts/demo")), href

    # A domain added by a forged form (the right CSRF token) is refused too.
    b.open("/manager/accounts/beta")
    token = b.csrf()
    r = http(s, "POST", "/manager/accounts/beta/domains", b.cookie(),
             data={"csrf": token, "domain": "more.example"})
    assert r.status_code == 403
    r = http(s, "POST", "/manager/accounts/demo/mailboxes", b.cookie(),
             data={"csrf": token, "address": "x@example.net", "password": "Xx-pass-123"})
    assert r.status_code == 403
    domains = s.mx("domain", "list").decode()
    assert "more.example" not in domains
    assert "x@example.net" not in s.mx("mailbox", "list").decode()


def test_roles_are_read_at_every_click(mgr, browsers):
    """Revoking full management or removing a mailbox takes effect at the
    next click of a session opened before."""
    s = mgr
    setup_account(s, "theta", "theta.example", ("top@theta.example", "Top-pass-123", True),
                  ("jo@theta.example", "Jo-pass-123", False))
    top = browsers()
    top.login("top@theta.example", "Top-pass-123")
    top.open("/manager/accounts/theta")
    top.submit(top.row_form("mailboxes", "jo@theta.example", "/mailboxes/full-management"))
    assert top.notice() == "full management access of jo@theta.example granted"

    jo = browsers()
    jo.login("jo@theta.example", "Jo-pass-123")
    assert jo.who() == "jo@theta.example (account theta)"
    jo.open("/manager/accounts/theta")
    assert jo.title() == "Account theta"

    top.submit(top.row_form("mailboxes", "jo@theta.example", "/mailboxes/full-management"))
    assert top.notice() == "full management access of jo@theta.example revoked"
    # jo sends a form of the page it still shows: refused, nothing added.
    jo.submit("mailbox-add", address="sneak@theta.example", password="Sneak-pass-1")
    assert jo.title() == "Not allowed"
    assert "sneak@theta.example" not in s.mx("mailbox", "list").decode()
    jo.open("/manager/")
    assert jo.who() == "jo@theta.example"
    assert_refused_page(jo, s, "/manager/accounts/theta")

    # Removed: the session is gone with the mailbox.
    top.open("/manager/accounts/theta")
    top.click(top.one("button.remove", top.row_form("mailboxes", "jo@theta.example", "/mailboxes/remove")))
    assert top.notice() == "mailbox jo@theta.example removed"
    jo.open("/manager/me")
    assert jo.path() == "/manager/login"


# --- 3. the mailbox user ----------------------------------------------------------------


def test_the_mailbox_user_changes_password_ldap_password_and_forwarding(mgr, browsers):
    s = mgr
    setup_account(s, "gamma", "gamma.example", ("di@gamma.example", "Di-old-pass-1", False))
    b = browsers()
    b.login("di@gamma.example", "Di-old-pass-1")
    assert b.who() == "di@gamma.example"
    b.click(b.d.find_element(By.LINK_TEXT, "My mailbox"))
    assert b.path() == "/manager/me"
    assert b.title() == "Mailbox di@gamma.example"
    b.shot("me")

    # The wrong current password changes nothing.
    b.submit("password", old="not-my-password", new="Di-new-pass-2")
    assert "current password is wrong" in b.error()
    assert imap_login(s, "di@gamma.example", "Di-old-pass-1") == "OK"
    # The right one: IMAP takes the new password, not the old.
    b.submit("password", old="Di-old-pass-1", new="Di-new-pass-2")
    assert b.notice() == "password of di@gamma.example changed"
    assert imap_login(s, "di@gamma.example", "Di-new-pass-2") == "OK"
    assert imap_login(s, "di@gamma.example", "Di-old-pass-1") == "NO"

    # The LDAP password: ldapsearch binds with it and reads the book.
    b.submit("ldap-password", new="Di-ldap-pass-1")
    assert b.notice() == "LDAP password of di@gamma.example set"
    book = f"ou=di@gamma.example,ou=ab,{BASE_DN}"
    r = ldapsearch(s, f"cn=di@gamma.example,ou=auth,{BASE_DN}", "Di-ldap-pass-1", book)
    assert r.returncode == 0, r.stderr.decode()
    assert re.search(rf"^dn: {re.escape(book)}$", r.stdout.decode(), re.M | re.I)

    # Forwarding with a local copy (the box is ticked by default).
    assert b.rows("forwards") == []
    assert b.all("button.remove") == []
    assert b.one("form#forward-set [name=keep_copy]").is_selected()
    b.submit("forward-set", targets="di@elsewhere.example")
    assert b.notice() == "di@gamma.example forwards to di@elsewhere.example (local copy kept)"
    assert b.rows("forwards") == [["di@elsewhere.example", "kept"]]
    assert "di@elsewhere.example" in s.mx("forward", "list").decode()
    # Replaced: two targets, no local copy.
    b.submit("forward-set", targets="a@elsewhere.example, b@elsewhere.example", keep_copy=False)
    assert b.notice() == "di@gamma.example forwards to a@elsewhere.example, b@elsewhere.example (no local copy)"
    assert b.rows("forwards") == [["a@elsewhere.example", "not kept"], ["b@elsewhere.example", "not kept"]]
    b.shot("me-forwarding")
    # Stopped.
    b.click(b.one("button.remove"))
    assert b.notice() == "forwarding of di@gamma.example removed"
    assert b.rows("forwards") == []
    assert "di@gamma.example" not in s.mx("forward", "list").decode()

    # The account's and the provider's pages, typed as URLs.
    for path in ("/manager/accounts/gamma", "/manager/accounts", "/manager/queue",
                 "/manager/audit", "/manager/config"):
        assert_refused_page(b, s, path)

    # What the user did is in the provider's trail, under its name.
    p = browsers()
    p.login("admin", admin_password(s))
    mine = [r for r in audit_rows(p) if r[1] == "di@gamma.example"]
    assert [r[3] for r in mine] == [
        "forwarding of di@gamma.example removed",
        "di@gamma.example forwards to a@elsewhere.example, b@elsewhere.example (no local copy)",
        "di@gamma.example forwards to di@elsewhere.example (local copy kept)",
        "LDAP password of di@gamma.example set",
        "password of di@gamma.example changed",
    ], mine


# --- the provider's queue, domains and accounts ------------------------------------------


def test_the_provider_holds_releases_and_deletes_queued_mail_and_removes_a_customer(mgr, browsers):
    s = mgr
    with s.submission(login=("demo@example.net", s.password)) as c:
        c.sendmail("demo@example.net", ["far@remote.example"],
                   b"From: demo@example.net\r\nTo: far@remote.example\r\nSubject: q\r\n\r\nbody\r\n")
    queued = [q for q in s.queue() if q.recipients == ["far@remote.example"]]
    assert len(queued) == 1, s.queue()
    qid = queued[0].id

    b = browsers()
    b.login("admin", admin_password(s))
    b.click(b.d.find_element(By.LINK_TEXT, "Queue"))
    assert b.path() == "/manager/queue"
    row = b.row("queue", qid)
    cells = [c.text for c in b.all("td", row)]
    assert cells[1] == "demo@example.net" and cells[2] == "far@remote.example"
    assert cells[4].startswith("waiting"), cells
    b.shot("queue")

    b.click(b.one("button.hold", b.row("queue", qid)))
    assert b.notice() == f"queue entry {qid} held"
    assert b.all("td", b.row("queue", qid))[4].text.startswith("held")
    assert next(q for q in s.queue() if q.id == qid).state == "held"
    b.click(b.one("button.release", b.row("queue", qid)))
    assert b.notice() == f"queue entry {qid} released"
    assert next(q for q in s.queue() if q.id == qid).state == "waiting"
    b.click(b.one("#flush"))
    assert b.notice() == "queue flushed"
    b.click(b.one("button.delete", b.row("queue", qid)))
    assert b.notice() == f"queue entry {qid} deleted"
    assert qid not in [r[0] for r in b.rows("queue")]
    assert qid not in [q.id for q in s.queue()]

    # A customer leaves: its mailbox, its domain, then the account.
    setup_account(s, "iota", "iota.example", ("ki@iota.example", "Ki-pass-123", False))
    b.open("/manager/accounts")
    b.submit(b.row_form("accounts", "iota", "/accounts/remove"))
    assert "still used by domain" in b.error()
    b.click(b.d.find_element(By.LINK_TEXT, "iota"))
    b.submit(b.row_form("mailboxes", "ki@iota.example", "/mailboxes/remove"))
    assert b.notice() == "mailbox ki@iota.example removed"
    b.submit(b.row_form("domains", "iota.example", "/domains/remove"))
    assert b.notice() == "domain iota.example removed"
    assert b.rows("domains") == []
    b.open("/manager/accounts")
    b.submit(b.row_form("accounts", "iota", "/accounts/remove"))
    assert b.notice() == "account iota removed"
    assert "iota" not in [r[0] for r in b.rows("accounts")]
    assert "iota" not in accounts_of(s)
    assert imap_login(s, "ki@iota.example", "Ki-pass-123") == "NO"

    # The configuration, read only.
    b.click(b.d.find_element(By.LINK_TEXT, "Configuration"))
    config = b.one("pre#config").text
    assert f'https = ["{HOST}:{s.https_port}"]' in config
    assert b.all("#config ~ form, form textarea") == []

    whats = [r[3] for r in audit_rows(b)]
    for what in (f"queue entry {qid} held", f"queue entry {qid} released", "queue flushed",
                 f"queue entry {qid} deleted", "mailbox ki@iota.example removed",
                 "domain iota.example removed", "account iota removed"):
        assert what in whats, (what, whats)


# --- 4. CSRF, another site, logout ------------------------------------------------------


def accounts_of(s: ImapServer) -> list[str]:
    return s.mx("account", "list").decode().split()


def test_forged_posts_are_refused_and_logout_ends_the_session(mgr, browsers):
    s = mgr
    b = browsers()
    b.login("admin", admin_password(s))
    b.open("/manager/accounts")
    cookie, token = b.cookie(), b.csrf()
    assert re.fullmatch(r"[0-9a-f]{64}", cookie), cookie

    # Without the csrf field: 403, nothing added.
    r = http(s, "POST", "/manager/accounts", cookie, data={"name": "forged1"})
    assert r.status_code == 403
    assert r.headers["Content-Security-Policy"] == CSP
    assert "CSRF" in r.text
    # A wrong token (another session's): 403.
    other = browsers()
    other.login("admin", admin_password(s))
    other.open("/manager/accounts")
    assert other.csrf() != token
    r = http(s, "POST", "/manager/accounts", cookie, data={"name": "forged2", "csrf": other.csrf()})
    assert r.status_code == 403
    # The right token from another site (Origin, or Referer): 403.
    r = http(s, "POST", "/manager/accounts", cookie, data={"name": "forged3", "csrf": token},
             headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = http(s, "POST", "/manager/accounts", cookie, data={"name": "forged4", "csrf": token},
             headers={"Referer": "https://evil.example/page"})
    assert r.status_code == 403
    r = http(s, "POST", "/manager/accounts", cookie, data={"name": "forged5", "csrf": token},
             headers={"Origin": "null"})
    assert r.status_code == 403
    # A mailbox user's form without the token: 403, no forwarding set.
    setup_account(s, "delta", "delta.example", ("ed@delta.example", "Ed-pass-123", False))
    u = browsers()
    u.login("ed@delta.example", "Ed-pass-123")
    r = http(s, "POST", "/manager/me/forwards", u.cookie(), data={"targets": "ed@evil.example", "keep_copy": "on"})
    assert r.status_code == 403
    assert "ed@delta.example" not in s.mx("forward", "list").decode()
    assert not {"forged1", "forged2", "forged3", "forged4", "forged5"} & set(accounts_of(s))

    # The same form, same site, with the token: done (the door is a door).
    r = http(s, "POST", "/manager/accounts", cookie, data={"name": "sameorigin", "csrf": token},
             headers={"Origin": f"https://{HOST}:{s.https_port}"})
    assert r.status_code == 303 and r.headers["Location"] == "/manager/accounts"
    assert "sameorigin" in accounts_of(s)

    # Log out in the browser: back at the login page; the old cookie is dead.
    b.open("/manager/")
    b.click(b.one("#logout"))
    assert b.path() == "/manager/login"
    assert b.d.get_cookie("mxrack_session") is None
    b.open("/manager/accounts")
    assert b.path() == "/manager/login"
    r = http(s, "GET", "/manager/accounts", cookie)
    assert r.status_code == 303 and r.headers["Location"] == "/manager/login"
    r = http(s, "POST", "/manager/accounts", cookie, data={"name": "afterlogout", "csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/manager/login"
    assert "afterlogout" not in accounts_of(s)
    # The other session is untouched.
    other.open("/manager/accounts")
    assert other.who() == "admin (provider)"


# --- 5. hostile: cookie attributes, CSP everywhere, the limiter --------------------------


def test_the_session_cookie_and_the_csp_of_every_page(mgr, browsers):
    s = mgr
    r = http(s, "POST", "/manager/login", data={"user": "admin", "password": admin_password(s)})
    assert r.status_code == 303 and r.headers["Location"] == "/manager/"
    set_cookie = r.headers["Set-Cookie"]
    m = re.match(r"mxrack_session=([0-9a-f]{64});(.*)$", set_cookie)
    assert m, set_cookie
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in m[2].split(";") if a.strip()}
    assert {"secure", "httponly", "samesite", "path"} <= set(attrs), set_cookie
    assert attrs["samesite"] == "SameSite=Strict"
    assert attrs["path"] == "Path=/manager/"
    cookie = m[1]

    setup_account(s, "eps", "eps.example", ("fi@eps.example", "Fi-pass-123", False))
    r = http(s, "POST", "/manager/login", data={"user": "fi@eps.example", "password": "Fi-pass-123"})
    assert r.status_code == 303
    user_cookie = r.cookies["mxrack_session"]

    pages = [
        ("/manager/login", None, 200),
        ("/manager/", cookie, 200),
        ("/manager/accounts", cookie, 200),
        ("/manager/accounts/eps", cookie, 200),
        ("/manager/queue", cookie, 200),
        ("/manager/audit", cookie, 200),
        ("/manager/config", cookie, 200),
        ("/manager/me", user_cookie, 200),
        ("/manager/audit", user_cookie, 403),
        ("/manager/no-such-page", cookie, 404),
        ("/manager/", None, 303),
    ]
    for path, c, status in pages:
        r = http(s, "GET", path, c)
        assert r.status_code == status, (path, r.status_code)
        assert r.headers.get("Content-Security-Policy") == CSP, (path, r.headers)
        if status == 200:
            assert r.headers["Content-Type"].startswith("text/html")
            assert '<link rel="stylesheet" href="/manager/static/manager.css">' in r.text
            assert "<script" not in r.text.lower()
    css = http(s, "GET", "/manager/static/manager.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")

    # The browser obeys: the stylesheet applies (the page is styled), and
    # JavaScript cannot read the session cookie.
    # Whatever pages the navigation of each role links to (the provider's
    # grow with each slice): each answers 200 with the CSP.
    s.mx("mailbox", "add", "boss@eps.example", "--password", "Boss-pass-123", "--full-management")
    for user, password in (("admin", admin_password(s)), ("boss@eps.example", "Boss-pass-123"),
                           ("fi@eps.example", "Fi-pass-123")):
        b = browsers()
        b.login(user, password)
        linked = {urllib.parse.urlsplit(h).path for h in b.links()}
        assert "/manager/" in linked and len(linked) >= 2, linked
        for path in sorted(linked):
            r = http(s, "GET", path, b.cookie())
            assert r.status_code == 200, (user, path, r.status_code)
            assert r.headers.get("Content-Security-Policy") == CSP, (user, path)
            assert re.search(r'<button id="logout"', r.text), (user, path)

    b = browsers()
    b.login("admin", admin_password(s))
    assert b.d.execute_script("return document.cookie").find("mxrack_session") == -1
    b.open("/manager/config")
    assert "[appliance]" in b.one("pre#config").text
    assert "demo = true" in b.one("pre#config").text


def test_wrong_passwords_are_refused_then_the_limiter_answers_429():
    s = web_server(pair_attempts_max=3, network_attempts_max=5, account_attempts_max=5)
    try:
        s.start()
        b = Browser(s)
        try:
            # The provider's password, set with the CLI (stdin's first line).
            s.mx("admin", "passwd", input=b"Provider-new-pass-1\n")
            r = http(s, "POST", "/manager/login", data={"user": "admin", "password": admin_password(s)})
            assert r.status_code == 200 and "wrong user name or password" in r.text
            b.login("admin", "Provider-new-pass-1")
            assert b.who() == "admin (provider)"
            b.click(b.one("#logout"))
            # (The success cleared the pair: its budget is whole again.)
            for i in range(3):
                b.login("admin", f"wrong-{i}")
                assert b.path() == "/manager/login"
                assert b.error() == "wrong user name or password"
                assert b.d.get_cookie("mxrack_session") is None
            # The pair's budget is spent: even the right password is turned away.
            b.login("admin", "Provider-new-pass-1")
            assert b.path() == "/manager/login"
            assert "too many login attempts" in b.error()
            assert b.d.get_cookie("mxrack_session") is None
            r = http(s, "POST", "/manager/login", data={"user": "admin", "password": "Provider-new-pass-1"})
            assert r.status_code == 429
            assert r.headers["Content-Security-Policy"] == CSP
            assert "mxrack_session" not in r.headers.get("Set-Cookie", "")
            # A mailbox's guesses from here use up the network budget (5:
            # the old password's failure and three more count) too.
            s.add_mailbox("guess@example.net", "Guess-pass-123")
            for i in range(1):
                r = http(s, "POST", "/manager/login", data={"user": "guess@example.net", "password": f"no-{i}"})
                assert r.status_code == 200 and "wrong user name or password" in r.text
            r = http(s, "POST", "/manager/login", data={"user": "guess@example.net", "password": "Guess-pass-123"})
            assert r.status_code == 429, r.status_code
        finally:
            b.quit()
    finally:
        s.teardown()


# --- passwords are taken as typed ----------------------------------------------------------


def test_a_password_with_spaces_logs_in_as_typed(mgr, browsers):
    s = mgr
    setup_account(s, "zeta", "zeta.example", ("sp@zeta.example", " spaced pass ", False))
    assert imap_login(s, "sp@zeta.example", " spaced pass ") == "OK"
    b = browsers()
    b.login("sp@zeta.example", " spaced pass ")
    assert b.all("#who") and b.who() == "sp@zeta.example", b.text()


def test_a_password_set_with_spaces_is_stored_as_typed(mgr, browsers):
    s = mgr
    setup_account(s, "eta", "eta.example", ("head@eta.example", "Head-pass-123", True),
                  ("gi@eta.example", "Gi-pass-123", False))
    b = browsers()
    b.login("head@eta.example", "Head-pass-123")
    b.open("/manager/accounts/eta")
    b.submit(b.row_form("mailboxes", "gi@eta.example", "/mailboxes/password"), password="  two spaces  ")
    assert b.notice() == "password of gi@eta.example changed"
    assert imap_login(s, "gi@eta.example", "  two spaces  ") == "OK"


def test_guessing_the_current_password_in_a_session_meets_the_limiter():
    """A session cannot be used to guess its mailbox's password without
    bound: the current-password check of 'change password' is admitted by
    the one login limiter, like a login."""
    s = web_server(pair_attempts_max=3, network_attempts_max=50, account_attempts_max=50,
                   window_secs=4)
    try:
        s.start()
        s.add_mailbox("guess2@example.net", "Guess2-pass-123")
        b = Browser(s)
        try:
            b.login("guess2@example.net", "Guess2-pass-123")
            assert b.who() == "guess2@example.net"
            for i in range(3):
                b.open("/manager/me")
                b.submit("password", old=f"wrong-{i}", new="New-pass-456")
                assert b.error() == "Not done: the current password is wrong"
            # The pair's budget is spent: the right one is turned away too,
            # and the password is unchanged.
            b.open("/manager/me")
            b.submit("password", old="Guess2-pass-123", new="New-pass-456")
            assert b.error() == "Not done: too many attempts; try again later"
            # The limiter is the one IMAP asks too: refused there as well.
            assert imap_login(s, "guess2@example.net", "Guess2-pass-123") == "NO"
            # Once the window has passed, the old password is still the one.
            time.sleep(5)
            assert imap_login(s, "guess2@example.net", "Guess2-pass-123") == "OK"
        finally:
            b.quit()
    finally:
        s.teardown()


def test_an_oversized_form_is_refused_and_the_manager_answers_after(mgr):
    """A form body is bounded (64 KiB): a 1 MiB login form gets 413, logs
    nobody in, and the next request is answered as usual."""
    r = http(mgr, "POST", "/manager/login",
             data={"user": "admin", "password": "x" * (1 << 20)})
    assert r.status_code == 413
    assert "mxrack_session" not in r.headers.get("Set-Cookie", "")
    r = http(mgr, "GET", "/manager/login")
    assert r.status_code == 200 and 'id="login"' in r.text


# --- the user's forwarded copies the spam gate held (issue 16) ----------------------------


def test_the_user_sees_and_releases_a_forwarded_copy_the_gate_held(mgr, browsers):
    """om forwards to om@hotmail.com without a local copy; a message over
    hotmail.com's threshold (1.0: no Date header) is held, not sent. The
    user sees it on their page by its From and Subject and releases it;
    another user neither sees it nor can release it by its id."""
    s = mgr
    setup_account(s, "omega", "omega.example", ("om@omega.example", "Om-pass-123", False),
                  ("xi@omega.example", "Xi-pass-123", False))
    s.mx("forward", "set", "om@omega.example", "om@hotmail.com", "--no-local-copy")
    with smtplib.SMTP(HOST, s.mx_port, timeout=IO_TIMEOUT) as c:
        c.sendmail("alice@sender.example", ["om@omega.example"],
                   b"From: Alice Sender <alice@sender.example>\r\nTo: om@omega.example\r\n"
                   b"Subject: quarterly figures\r\nMessage-ID: <held-1@sender.example>\r\n\r\n"
                   b"The figures are attached below.\r\n")
    [q] = [q for q in s.queue() if q.recipients == ["om@hotmail.com"]]
    assert q.state == "held" and q.reason.startswith("spam gate: score "), q

    # Another user of the same account sees none and cannot release it.
    x = browsers()
    x.login("xi@omega.example", "Xi-pass-123")
    x.open("/manager/me")
    assert x.one("#held-none").text == "None."
    r = http(s, "POST", "/manager/me/held/release", x.cookie(), data={"csrf": x.csrf(), "id": q.id})
    assert r.status_code == 303
    x.open("/manager/me")
    assert next(e for e in s.queue() if e.id == q.id).state == "held"

    b = browsers()
    b.login("om@omega.example", "Om-pass-123")
    b.open("/manager/me")
    [row] = b.rows("held")
    assert row[:4] == ["Alice Sender <alice@sender.example>", "quarterly figures", "om@hotmail.com",
                       q.reason], row
    assert row[4] == q.expires.replace("T", " ").replace("Z", ""), (row, q.expires)
    b.shot("me-held")
    b.click(b.one("#held button.release"))
    assert b.notice() == f"held copy {q.id} of om@omega.example released"
    assert b.one("#held-none").text == "None."
    e = next(e for e in s.queue() if e.id == q.id)
    assert e.state == "waiting" and e.reason is None, e
    # Released once: the id is no longer a held copy.
    r = http(s, "POST", "/manager/me/held/release", b.cookie(), data={"csrf": b.csrf(), "id": q.id})
    assert r.status_code == 303
    p = browsers()
    p.login("admin", admin_password(s))
    assert f"held copy {q.id} of om@omega.example released" in [r[3] for r in audit_rows(p)]
