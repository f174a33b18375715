"""The console login's checks (issue 14): `mxrack admin verify` against
the provider's admin password (through the running appliance's admin
socket, and on the data folder when nothing runs), `mxrack admin verify
--console-hash` against `[appliance] console_password_hash` (what the
console takes while /data is not mounted), and `mxrack admin hash`. The
console script itself runs in HIL scenario 1 on the image's console."""

from __future__ import annotations


def test_the_admin_password_opens_and_a_wrong_one_does_not(make_server):
    s = make_server()
    s.mx("admin", "passwd", input=b"Provider-console-1\n")
    assert s.mx_run("admin", "verify", input=b"Provider-console-1\n").returncode == 0
    # Exit 3: checked and refused (the console then never tries the
    # image's hash); exit 1: no check (nothing given, too long).
    wrong = s.mx_run("admin", "verify", input=b"provider-console-1\n")
    assert wrong.returncode == 3 and b"wrong password" in wrong.stderr
    assert s.mx_run("admin", "verify", input=b"\n").returncode == 1
    long = s.mx_run("admin", "verify", input=b"x" * 5000 + b"\n")
    assert long.returncode == 1 and b"longer than 1024 bytes" in long.stderr
    assert s.mx_run("admin", "verify", input=b"\xff\xfe\n").returncode == 1
    # With the server stopped, on the data folder directly.
    assert s.stop() == 0
    assert s.mx_run("admin", "verify", input=b"Provider-console-1\n").returncode == 0
    assert s.mx_run("admin", "verify", input=b"nope\n").returncode == 3


def test_the_image_hash_is_what_the_console_takes_without_data(make_server):
    s = make_server(start=False)
    s.write_config()
    made = s.mx_run("admin", "hash", input=b"Rack-console-2\n")
    assert made.returncode == 0, made.stderr
    phc = made.stdout.decode().strip()
    assert phc.startswith("$argon2id$")
    # Without a hash configured the console stays locked.
    locked = s.mx_run("admin", "verify", "--console-hash", input=b"Rack-console-2\n")
    assert locked.returncode == 1 and b"console_password_hash" in locked.stderr
    text = s.config.read_text().replace("[appliance]\n", f'[appliance]\nconsole_password_hash = "{phc}"\n', 1)
    s.config.write_text(text)
    assert s.mx_run("admin", "verify", "--console-hash", input=b"Rack-console-2\n").returncode == 0
    assert s.mx_run("admin", "verify", "--console-hash", input=b"rack-console-2\n").returncode == 3
    # A hash that is not Argon2id, or a truncated one, is refused by the
    # configuration check (it would lock the console silently).
    for broken in ("$6$salt$abc", phc.rsplit("$", 1)[0]):
        s.config.write_text(text.replace(phc, broken))
        bad = s.mx_run("config", "check", str(s.config))
        assert bad.returncode == 78 and b"appliance.console_password_hash" in bad.stderr, broken
