"""Access that holds against a local or a remote guesser (issue 11): the
data folder's modes against another local user, the admin socket's peer
check, the one login limiter shared by SMTP, IMAP, POP3 and LDAP, and the
sender rules of authenticated submission.

Local-user tests run commands as `nobody` with runuser (the suite runs as
root, as CI does).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import smtplib

import pytest

from mxlib import BIN, DEMO, Server

NOBODY = "nobody"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", NOBODY, "--", *argv], capture_output=True, timeout=60)


def open_path_to(s: Server):
    """Lets other users walk down to the data folder (the temporary base
    folder is 0700 by itself), so that only the data folder's own modes
    stand between `nobody` and the store."""
    os.chmod(s.base, 0o755)


def test_the_data_folder_is_private_to_the_service(make_server):
    s = make_server()
    open_path_to(s)
    with smtplib.SMTP("127.0.0.1", s.mx_port, timeout=15) as c:
        c.sendmail("a@remote.example", [DEMO], b"Subject: m\r\n\r\nbody\r\n")
    assert mode(s.data) == 0o700
    files = [p for p in s.data.rglob("*") if not p.is_symlink()]
    assert any(p.name == "meta.redb" for p in files)
    assert any(p.parent.name == "msg" and p.is_file() for p in files), files
    for p in files:
        assert mode(p) == (0o700 if p.is_dir() else 0o600), (p, oct(mode(p)))
    # Another local user cannot read the store, nor list the folder.
    assert as_nobody("test", "-x", str(s.base)).returncode == 0, "the walk down is open"
    r = as_nobody("cat", str(s.data / "meta.redb"))
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    assert as_nobody("ls", str(s.data)).returncode != 0
    # Even with the folder opened, each file keeps it out.
    os.chmod(s.data, 0o755)
    r = as_nobody("cat", str(s.data / "meta.redb"))
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    os.chmod(s.data, 0o700)


def test_wrong_modes_are_reported_by_doctor_and_repaired_at_start(make_server):
    s = make_server()
    s.stop()
    os.chmod(s.data, 0o755)
    os.chmod(s.data / "meta.redb", 0o644)
    r = s.mx_run("doctor")
    out = r.stdout.decode()
    line = next(l for l in out.splitlines() if "file modes" in l)
    assert line.startswith("FAIL"), out
    assert f"{s.data}/meta.redb is 0644, should be 0600" in line, line
    assert f"{s.data} is 0755, should be 0700" in line, line
    s.start()
    assert mode(s.data) == 0o700
    assert mode(s.data / "meta.redb") == 0o600
    assert "file mode repaired" in s.stderr_tail()
    out = s.mx_run("doctor").stdout.decode()
    line = next(l for l in out.splitlines() if "file modes" in l)
    assert line.startswith("PASS"), out


def test_the_admin_socket_refuses_another_user(make_server):
    """SO_PEERCRED: even with the socket's mode opened, a user that is
    neither root nor the service's own is refused."""
    s = make_server()
    open_path_to(s)
    os.chmod(s.data, 0o711)
    os.chmod(s.data / "admin.sock", 0o666)
    os.chmod(s.config, 0o644)
    r = as_nobody(BIN, "--config", str(s.config), "domain", "list")
    assert r.returncode != 0, r
    assert b"only root or the service's own user" in r.stderr, r
    # Root still administers.
    assert b"example.net" in s.mx("domain", "list")
