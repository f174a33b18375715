"""Scenario 2: a message sent by SMTP is read back by IMAP and POP3; an LDAP
search succeeds.

One message through the MX port (25), one through submission (587, STARTTLS
+ AUTH as the demo mailbox), both checked byte for byte in the store; then
read back through every IMAP and POP3 port of the ready line (STARTTLS/STLS
and implicit TLS), and the demo's LDAP book searched through every LDAP port
(StartTLS and LDAPS). A service in REQUIRED (or HIL_REQUIRE) that the image
does not offer fails the scenario; any other is skipped with a note.
"""

import os

from hil import clients
from hil.machine import HilError

TITLE = "SMTP in, read back by IMAP and POP3; LDAP search"

# Services that must be present: a missing one fails the scenario. Remove a
# name to let an image without that service pass with a note instead.
REQUIRED = {"imap", "pop3", "ldap"}

# LDAP tree (README, "LDAP address books"): bind DN cn=NAME,ou=auth,<base>;
# personal address book ou=NAME,ou=ab,<base>; the base DN derives from
# primary_domain (example.net). LDAP passwords are separate from mail
# passwords: the scenario sets one with `mxrack ldap passwd` in the guest.
LDAP_BIND_DN = os.environ.get("HIL_LDAP_BIND_DN", "cn=demo@example.net,ou=auth,dc=example,dc=net")
LDAP_BASE = os.environ.get("HIL_LDAP_BASE", "ou=demo@example.net,ou=ab,dc=example,dc=net")


def offered(listeners, plain, implicit):
    """[(guest port, implicit TLS)] of the service's ports in the ready line."""
    ports = set(listeners.values())
    return [(p, tls) for p, tls in ((plain, False), (implicit, True)) if p in ports]


def run(ctx):
    required = REQUIRED | ctx.required
    m = ctx.machine().start(fresh=True)
    _, _, listeners = m.wait_ready(ctx.boot_timeout)
    _, password = m.shell.run("cat /data/mxrack/demo-password")
    password = password.strip()
    if not password:
        raise HilError("no demo password in /data/mxrack/demo-password")

    # SMTP: MX and authenticated submission.
    t_mx = clients.new_token("mx")
    msg_mx = clients.make_message(t_mx, "HIL scenario 2 via MX")
    clients.smtp_send_mx(m.host_port(25), msg_mx)
    t_sub = clients.new_token("sub")
    msg_sub = clients.make_message(t_sub, "HIL scenario 2 via submission", sender=clients.DEMO)
    clients.smtp_submit(m.host_port(587), password, msg_sub)
    ctx.note("SMTP: accepted on 25 (MX) and 587 (STARTTLS + AUTH)")

    stored = clients.store_messages(m.shell)
    by_id = {clients.header_value(v, "X-HIL-Id"): v for v in stored.values()}
    for token, sent in ((t_mx, msg_mx), (t_sub, msg_sub)):
        got = by_id.get(token)
        if got is None:
            raise HilError(f"message {token} is not in the store")
        if not got.endswith(sent):
            raise HilError(f"message {token} is stored altered")
    ctx.note(f"store: both messages intact ({len(stored)} in INBOX)")

    # IMAP: STARTTLS on 143, implicit TLS on 993.
    imap = offered(listeners, 143, 993)
    for port, tls in imap:
        got = clients.imap_fetch(m.host_port(port), tls, password, t_mx)
        if not got.endswith(msg_mx):
            raise HilError(f"IMAP ({port}) returned the message altered")
        ctx.note(f"IMAP ({port}, {'TLS' if tls else 'STARTTLS'}): message read back intact")
    if not imap:
        if "imap" in required:
            raise HilError("IMAP is required but the image does not offer it")
        ctx.note("IMAP: skipped, the image does not offer it (no 143/993 in the ready line)")

    # POP3: STLS on 110, implicit TLS on 995 (RETR only: nothing is deleted).
    pop = offered(listeners, 110, 995)
    for port, tls in pop:
        got = clients.pop3_fetch(m.host_port(port), tls, password, t_sub)
        if not got.endswith(msg_sub):
            raise HilError(f"POP3 ({port}) returned the message altered")
        ctx.note(f"POP3 ({port}, {'TLS' if tls else 'STLS'}): message read back intact")
    if not pop:
        if "pop3" in required:
            raise HilError("POP3 is required but the image does not offer it")
        ctx.note("POP3: skipped, the image does not offer it (no 110/995 in the ready line)")

    # LDAP: StartTLS on 389, implicit TLS on 636.
    ldap = offered(listeners, 389, 636)
    if ldap:
        ldap_password = clients.new_token("ldap")
        m.shell.run(f"mxrack ldap passwd {clients.DEMO} --password '{ldap_password}'")
    for port, tls in ldap:
        out = clients.ldapsearch(m.host_port(port), tls, LDAP_BIND_DN, ldap_password, LDAP_BASE)
        mode = "TLS" if tls else "StartTLS"
        ctx.note(f"LDAP ({port}, {mode}): search of {LDAP_BASE} succeeded ({out.count('dn:')} entries)")
    if not ldap:
        if "ldap" in required:
            raise HilError("LDAP is required but the image does not offer it")
        ctx.note("LDAP: skipped, the image does not offer it (no 389/636 in the ready line)")
