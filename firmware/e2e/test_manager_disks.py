"""The Manager's disks page (issue 15) over the health monitor's fixture
tree (the one test_status.py builds: md0 RAID1 of sda and sdb, hot spare
sdc): the chassis drawing shows a bay per disk, and the bay of a disk md
marks faulty is drawn failed, with the technician's steps beside it. The
take-out button reaches the monitor, which refuses to take out the last
good copy of a degraded array; the refusal is shown and nothing is audited.

Driven with python requests (the browser tests are test_manager.py).
"""

from __future__ import annotations

import re

import pytest
import requests
import urllib3

from mxlib import HOST, deadline_loop
from test_status import SERIALS, StatusServer, make_tree, write

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


@pytest.fixture
def st(tmp_path):
    make_tree(tmp_path)
    s = StatusServer(tmp_path, self_check_at_start=False, auto_fail=False)
    try:
        s.start()
        yield s, tmp_path
    finally:
        s.teardown()


def login(s) -> tuple[requests.Session, str]:
    base = f"https://{HOST}:{s.https_port}/manager"
    session = requests.Session()
    password = (s.data / "admin-password").read_text().strip()
    r = session.post(f"{base}/login", data={"user": "admin", "password": password}, verify=False)
    assert r.status_code == 200 and 'id="who">admin (provider)' in r.text, r.text[:500]
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', r.text).group(1)
    return session, csrf


def bays(html: str) -> list[tuple[str, str]]:
    """(class, serial) of each bay of the chassis drawing."""
    svg = re.search(r'<svg id="chassis".*?</svg>', html, re.S).group(0)
    return re.findall(r'<g class="(bay[^"]*)">.*?<text[^>]*>[^<]*</text><text[^>]*>([^<]*)</text>', svg, re.S)


def test_the_chassis_shows_each_bay_and_marks_the_failed_one(st):
    s, tree = st
    session, csrf = login(s)
    url = f"https://{HOST}:{s.https_port}/manager/disks"
    for _ in deadline_loop(30, "the monitor's first look with three disks"):
        page = session.get(url, verify=False).text
        if len(bays(page)) == 3:
            break
    assert [serial for _, serial in bays(page)] == SERIALS
    assert all(cls.strip() == "bay" for cls, _ in bays(page)), bays(page)
    assert "raid1" in page and "2/2" in page

    # md marks sdb faulty: the array degrades, the bay of SN-E2E-1 fails.
    write(tree, "/sys/block/md0/md/dev-sdb/state", "faulty\n")
    write(tree, "/sys/block/md0/md/degraded", "1\n")
    for _ in deadline_loop(30, "the failed bay"):
        page = session.get(url, verify=False).text
        failed = [serial for cls, serial in bays(page) if "failed" in cls]
        if failed:
            break
    assert failed == ["SN-E2E-1"]
    assert "(degraded)" in page
    assert "Pull it from bay 2" in page

    # Taking out the disk that now holds md0's last good copy goes to the
    # monitor, which refuses with its reason: shown on the page, the tree
    # unchanged, and nothing in the audit trail (only changes are audited).
    r = session.post(f"{url}/replace", data={"serial": SERIALS[0], "csrf": csrf}, verify=False)
    assert r.status_code == 200
    flash = re.findall(r'class="(?:error|notice)">[^<]*', r.text)
    assert flash == [
        'class="error">Not done: disk SN-E2E-0 (WWN naa.5000c500a0b0c000) in bay 1 holds the last good copy of md0 (raid1): '
        "not taking it out. Add a disk and let it rebuild first (mxrack disk add SERIAL)."
    ], flash
    assert (tree / "sys/block/md0/md/dev-sda/state").read_text() == "in_sync\n"
    audit = session.get(f"https://{HOST}:{s.https_port}/manager/audit", verify=False).text
    assert "taken out" not in audit

    # Without the CSRF token: 403, nothing asked of the monitor.
    r = session.post(f"{url}/replace", data={"serial": SERIALS[0]}, verify=False)
    assert r.status_code == 403
