"""The persistent log (issue 14): `mxrack logs collect` (what the
appliance's supervisor runs while /data is mounted) stamps each line with
time, boot and source, takes mxrack's output on standard input, the
start-up log and kernel records, rotates within [log] keep_files x
file_max_bytes, and never writes a line twice when it is restarted in the
same boot; `mxrack logs` shows the last lines, by boot, source or text.
Hostile input: a 100 KiB line, control characters, bytes that are not
UTF-8. On the image, HIL scenario 1 reads the log of the boot before."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mxlib import BIN


def config(tmp: Path, file_max: int = 65536, keep: int = 3) -> Path:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    shown = subprocess.run([BIN, "config", "show"], capture_output=True, check=True).stdout.decode()
    assert "file_max_bytes = 8388608" in shown and "keep_files = 8" in shown
    text = shown.replace("file_max_bytes = 8388608", f"file_max_bytes = {file_max}").replace(
        "keep_files = 8", f"keep_files = {keep}"
    )
    cfg = tmp / "mxrack.toml"
    cfg.write_text(text)
    return cfg


def collect(cfg: Path, tmp: Path, stdin: bytes, boot_log: str = "", kmsg: str = ""):
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    (run / "boot.log").write_text(boot_log)
    (run / "kmsg").write_text(kmsg)
    return subprocess.run(
        [BIN, "--config", str(cfg), "--data", str(tmp / "data"), "logs", "collect",
         "--boot-log", str(run / "boot.log"), "--kmsg", str(run / "kmsg")],
        input=stdin, capture_output=True, timeout=60,
    )


def logs(cfg: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN, "--config", str(cfg), "--data", str(tmp / "data"), "logs", *args],
        capture_output=True, timeout=60,
    )


KMSG = (
    "6,1,1000,-;Linux version 6.1.0-57-amd64\n"
    " SUBSYSTEM=cpu\n"
    "3,2,5678901,-;sd 0:0:0:0: [sda] tag#0 FAILED Result: hostbyte=DID_OK\n"
)


def test_every_source_is_kept_and_shown(tmp_path):
    cfg = config(tmp_path)
    done = collect(cfg, tmp_path, b"mxrack ready: mx=0.0.0.0:25\nsecond line\n",
                   boot_log="mxrack-init: md0 assembled\n", kmsg=KMSG)
    assert done.returncode == 0, done.stderr
    out = logs(cfg, tmp_path).stdout.decode()
    assert " mxrack: mxrack ready: mx=0.0.0.0:25" in out
    assert " boot: mxrack-init: md0 assembled" in out
    assert "kernel: [    5.678901] err: sd 0:0:0:0: [sda] tag#0 FAILED" in out
    assert "SUBSYSTEM" not in out
    first = out.splitlines()[0].split()
    assert first[0].endswith("Z") and first[1].startswith("boot=")
    kernel = logs(cfg, tmp_path, "--source", "kernel").stdout.decode().splitlines()
    assert len(kernel) == 2 and all(" kernel: " in line for line in kernel)
    assert logs(cfg, tmp_path, "--grep", "md0").stdout.decode().count("\n") == 1
    assert "second line" in logs(cfg, tmp_path, "--boot", "current", "-n", "1").stdout.decode()
    # One boot only: there is no previous one.
    prev = logs(cfg, tmp_path, "--boot", "previous")
    assert prev.returncode == 1 and b"no earlier boot" in prev.stderr


def test_a_restarted_collector_does_not_repeat_lines(tmp_path):
    cfg = config(tmp_path)
    assert collect(cfg, tmp_path, b"one\n", boot_log="mxrack-init: a\n", kmsg=KMSG).returncode == 0
    # The same boot: the start-up log grew by a line, the kernel's records
    # are the same; only what is new is written.
    run = tmp_path / "run"
    with (run / "boot.log").open("a") as f:
        f.write("mxrack-init: b\n")
    done = subprocess.run(
        [BIN, "--config", str(cfg), "--data", str(tmp_path / "data"), "logs", "collect",
         "--boot-log", str(run / "boot.log"), "--kmsg", str(run / "kmsg")],
        input=b"two\n", capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = logs(cfg, tmp_path).stdout.decode()
    assert out.count("mxrack-init: a") == 1 and out.count("mxrack-init: b") == 1
    assert out.count("Linux version") == 1
    assert " mxrack: one" in out and " mxrack: two" in out


def test_rotation_bounds_the_folder(tmp_path):
    cfg = config(tmp_path, file_max=65536, keep=3)
    lines = b"".join(b"line %06d %s\n" % (i, b"x" * 80) for i in range(8000))
    assert collect(cfg, tmp_path, lines).returncode == 0
    folder = tmp_path / "data" / "log"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["mxrack.log", "mxrack.log.1", "mxrack.log.2"], files
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 3 * 65536
    last = logs(cfg, tmp_path, "-n", "2").stdout.decode().splitlines()
    assert [line.split(" mxrack: ")[1][:11] for line in last] == ["line 007998", "line 007999"]


def test_hostile_lines_are_cut_and_cleaned(tmp_path):
    cfg = config(tmp_path)
    hostile = b"A" * 100_000 + b"\n" + b"bell\x07esc\x1b[2Jnul\x00end\n" + b"\xff\xfe not utf-8\n"
    assert collect(cfg, tmp_path, hostile).returncode == 0
    out = logs(cfg, tmp_path).stdout
    rows = out.decode().splitlines()
    assert any(r.endswith(" [cut]") and len(r) < 4096 + 200 for r in rows), [len(r) for r in rows]
    assert b"\x07" not in out and b"\x1b" not in out and b"\x00" not in out
    assert any("bell esc [2Jnul end" in r for r in rows)
    assert any("\ufffd" in r and "not utf-8" in r for r in rows)


def test_refusals(tmp_path):
    cfg = config(tmp_path)
    empty = logs(cfg, tmp_path)
    assert empty.returncode == 1 and b"no log in" in empty.stderr
    bad = logs(cfg, tmp_path, "--boot", "../etc")
    assert bad.returncode == 2 and b"current, previous or a boot id" in bad.stderr
    # Without the data folder (the array not mounted) nothing is written.
    missing = subprocess.run(
        [BIN, "--config", str(cfg), "--data", str(tmp_path / "nowhere"), "logs", "collect"],
        input=b"x\n", capture_output=True, timeout=60,
    )
    assert missing.returncode == 1 and b"no data folder" in missing.stderr
    assert not (tmp_path / "nowhere").exists()
    text = cfg.read_text().replace("keep_files = 3", "keep_files = 1")
    cfg.write_text(text)
    refused = subprocess.run([BIN, "config", "check", str(cfg)], capture_output=True)
    assert refused.returncode == 78 and b"log.keep_files" in refused.stderr
