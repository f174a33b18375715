"""`mxrack config check` names the key of every mistake and refuses unknown
keys; `mxrack run` refuses a bad file or a busy port naming the key; the
CLI refuses duplicates and unknown names with a non-zero exit and a clear
message."""

from __future__ import annotations

import socket
import subprocess

import pytest

from mxlib import BIN, HOST, Raw, free_ports, plain_token

EX_CONFIG = 78


def config_text(extra_smtp: str = "", extra: str = "", listeners: str | None = None) -> str:
    mx, sub = free_ports(2)
    if listeners is None:
        listeners = f'mx = ["{HOST}:{mx}"]\nsubmission = ["{HOST}:{sub}"]\n'
    return (
        "[appliance]\n"
        'hostname = "mx.test.example"\n'
        'primary_domain = "example.net"\n'
        'data_dir = "/tmp/mxe2e-config-check-data"\n'
        "demo = true\n"
        f"{extra}\n"
        "[smtp]\n"
        f"{listeners}"
        f"{extra_smtp}\n"
    )


def check(tmp_path, text: str) -> subprocess.CompletedProcess:
    f = tmp_path / "mxrack.toml"
    f.write_text(text)
    return subprocess.run([BIN, "config", "check", str(f)], capture_output=True, timeout=30)


def test_a_valid_file_passes(tmp_path):
    r = check(tmp_path, config_text())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith(f"{tmp_path / 'mxrack.toml'}: valid\n")
    assert "2 SMTP listener(s)" in r.stdout.decode()


@pytest.mark.parametrize(
    "smtp, extra, key",
    [
        ("max_recipients = 5", "", "smtp.max_recipients"),
        ("max_recipients = 99", "", "smtp.max_recipients"),
        ("max_message_bytes = 65535", "", "smtp.max_message_bytes"),
        ("max_command_line_bytes = 511", "", "smtp.max_command_line_bytes"),
        ("max_data_line_bytes = 999", "", "smtp.max_data_line_bytes"),
        ("max_commands_per_transaction = 102", "", "smtp.max_commands_per_transaction"),
        ("max_bad_commands = 0", "", "smtp.max_bad_commands"),
        ("max_connections = 0", "", "smtp.max_connections"),
        ("idle_timeout_secs = 5", "", "smtp.idle_timeout_secs"),
        ("", "[auth]\npair_attempts_max = 0\n", "auth.pair_attempts_max"),
        ("", "[auth]\npair_attempts_max = 40\n", "auth.pair_attempts_max"),
        ("shutdown_grace_secs = 601", "", "smtp.shutdown_grace_secs"),
        ("", '[tls]\ncert = "/etc/cert.pem"\n', "tls.key"),
        ("", '[log]\nlevel = "mxrack_smtp=loud"\n', "log.level"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(tmp_path, smtp, extra, key):
    r = check(tmp_path, config_text(smtp, extra))
    err = r.stderr.decode()
    assert r.returncode == EX_CONFIG, (r.returncode, err)
    assert err.startswith(f"mxrack: {key}: "), err
    assert r.stdout == b""


def test_bad_hostname_and_listeners_name_their_keys(tmp_path):
    bad_host = config_text().replace('"mx.test.example"', '"mx test"')
    r = check(tmp_path, bad_host)
    assert r.returncode == EX_CONFIG and r.stderr.decode().startswith("mxrack: appliance.hostname: ")
    r = check(tmp_path, config_text(listeners=""))
    assert r.returncode == EX_CONFIG and r.stderr.decode().startswith("mxrack: smtp.mx: ")
    (port,) = free_ports(1)
    twice = f'mx = ["{HOST}:{port}"]\nsubmission = ["{HOST}:{port}"]\n'
    r = check(tmp_path, config_text(listeners=twice))
    assert r.returncode == EX_CONFIG and r.stderr.decode().startswith("mxrack: smtp.submission: "), r.stderr


@pytest.mark.parametrize(
    "smtp, extra, field",
    [
        ("max_recipient = 100", "", "max_recipient"),
        ("", "[fax]\nport = 143\n", "fax"),
        ("", "\n[appliance.extra]\n", None),
    ],
)
def test_unknown_keys_are_refused(tmp_path, smtp, extra, field):
    text = config_text(smtp, extra)
    if field is None:  # a key inside [appliance]
        text = text.replace("demo = true\n", "demo = true\nhostnme = \"x.example\"\n")
        field = "hostnme"
    r = check(tmp_path, text)
    err = r.stderr.decode()
    assert r.returncode == EX_CONFIG, err
    assert f"unknown field `{field}`" in err, err


def test_run_refuses_a_bad_file_before_binding(tmp_path):
    f = tmp_path / "mxrack.toml"
    f.write_text(config_text("max_recipients = 5"))
    r = subprocess.run([BIN, "--config", str(f), "run"], capture_output=True, timeout=30)
    assert r.returncode == EX_CONFIG
    assert r.stderr.decode().startswith("mxrack: smtp.max_recipients: ")
    assert b"mxrack ready" not in r.stdout


def test_run_names_the_listener_key_when_its_port_is_busy(tmp_path):
    busy = socket.socket()
    busy.bind((HOST, 0))
    busy.listen()
    port = busy.getsockname()[1]
    (mx,) = free_ports(1)
    text = config_text(listeners=f'mx = ["{HOST}:{mx}"]\nsubmissions = ["{HOST}:{port}"]\n')
    text = text.replace("/tmp/mxe2e-config-check-data", str(tmp_path / "data"))
    f = tmp_path / "mxrack.toml"
    f.write_text(text)
    try:
        r = subprocess.run([BIN, "--config", str(f), "run"], capture_output=True, timeout=30)
    finally:
        busy.close()
    err = r.stderr.decode()
    assert r.returncode != 0
    assert f"cannot listen on {HOST}:{port} (smtp.submissions)" in err, err
    assert b"mxrack ready" not in r.stdout


def test_config_show_fills_in_every_default(server):
    shown = server.mx("config", "show").decode()
    for line in (
        'hostname = "mx.test.example"',
        "max_recipients = 100",
        "max_data_line_bytes = 8192",
        "allow_plaintext_auth = false",
    ):
        assert line in shown.splitlines(), shown


def cli_fails(server, *args: str) -> str:
    r = server.mx_run(*args)
    err = r.stderr.decode()
    assert r.returncode == 1, f"mxrack {' '.join(args)} exited {r.returncode}: {err}"
    assert r.stdout == b""
    assert err.startswith("mxrack: ") and err.endswith("\n") and err.count("\n") == 1, err
    return err


def test_cli_refuses_duplicates(server):
    assert cli_fails(server, "account", "add", "demo") == 'mxrack: account "demo" already exists\n'
    assert "already exists" in cli_fails(server, "domain", "add", "example.net", "--account", "demo")
    assert "already exists" in cli_fails(
        server, "mailbox", "add", "demo@example.net", "--password", "another-one"
    )
    server.mx("alias", "add", "dup@example.net", "demo@example.net")
    assert "already exists" in cli_fails(server, "alias", "add", "dup@example.net", "demo@example.net")
    # Nothing was changed by the refused commands.
    assert server.mx("account", "list") == b"demo\n"
    assert server.mx("domain", "list") == b"example.net\taccount=demo\n"


def test_cli_refuses_unknown_names(server):
    assert cli_fails(server, "domain", "add", "new.example", "--account", "nosuch") == (
        'mxrack: no account named "nosuch"\n'
    )
    cli_fails(server, "mailbox", "add", "x@unhosted.example", "--password", "pw-123456")
    cli_fails(server, "message", "list", "nobody@example.net")
    assert cli_fails(server, "message", "cat", "demo@example.net", "999") == (
        "mxrack: no message with UID 999 in demo@example.net INBOX\n"
    )
    cli_fails(server, "alias", "remove", "never@example.net")


def test_cli_password_change_takes_effect(server):
    server.add_mailbox("pw@example.net", "first-password")
    server.mx("mailbox", "passwd", "pw@example.net", input=b"second-password\n")
    with Raw(server.submissions_port, tls=True) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"AUTH PLAIN {plain_token('pw@example.net', 'first-password')}", 535)
        c.cmd(f"AUTH PLAIN {plain_token('pw@example.net', 'second-password')}", 235)
