#!/usr/bin/env python3
"""Drive Dovecot's imaptest against one IMAP server (firmware/bench/imaptest.sh).

Subcommands:
  conformance  run every scripted test group (`test=` mode) one at a time and
               write per-group results (JSON): passed / failed / skipped, the
               base and extension command counts, and imaptest's own failure
               report (the first failing command and the exchange it printed).
  stress       imaptest's stress mode (clients=, secs=, mbox=) while sampling
               the server's memory; writes logins/s, commands/s, errors, memory.
  report       print the side-by-side tables of two servers' results.

Each group runs in its own imaptest process with a folder holding only that
test (and its .mbox, plus default.mbox): imaptest prints only totals for a
`test=` folder, so one group per run is the way to know which group failed or
was skipped. The totals are then the sums over groups, as imaptest's own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# One group's run must end: a server that never answers would hang imaptest.
GROUP_TIMEOUT_SECS = 60
# imaptest's summary lines in test mode (test-exec.c, tests_execute_next).
SUMMARY_GROUPS = re.compile(r"^(\d+) test groups: (\d+) failed, (\d+) skipped", re.M)
SUMMARY_BASE = re.compile(r"^base protocol: (\d+)/(\d+) individual commands failed", re.M)
SUMMARY_EXT = re.compile(r"^extensions: (\d+)/(\d+) individual commands failed", re.M)


def test_groups(tests: Path) -> list[str]:
    """The test scripts: every plain file that is not an .mbox (the `broken/`
    folder holds tests imaptest's authors set aside; imaptest skips folders)."""
    return sorted(p.name for p in tests.iterdir() if p.is_file() and not p.name.endswith(".mbox"))


def capabilities_of(script: Path) -> str:
    """The `capabilities:` header of a test script (empty: base protocol)."""
    for line in script.read_text(errors="replace").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == "capabilities":
            return value.strip()
    return ""


def server_capabilities(port: int, user: str, password: str) -> set[str]:
    """CAPABILITY after LOGIN, to name the capability a skipped group lacks."""
    import imaplib

    with imaplib.IMAP4("127.0.0.1", port, timeout=15) as c:
        c.login(user, password)
        typ, data = c.capability()
        caps = set(data[0].decode().upper().split()) if typ == "OK" else set()
        c.logout()
    return caps


def imaptest_cmd(args, *extra: str) -> list[str]:
    return [
        args.imaptest,
        "host=127.0.0.1",
        f"port={args.port}",
        f"user={args.user}",
        f"user2={args.user2}",
        f"pass={args.password}",
        *extra,
    ]


def conformance(args) -> None:
    tests = Path(args.tests)
    caps = server_capabilities(args.port, args.user, args.password)
    results = []
    work = Path(tempfile.mkdtemp(prefix="imaptest-groups."))
    try:
        for name in test_groups(tests):
            d = work / name
            d.mkdir()
            shutil.copy(tests / name, d / name)
            for mbox in (f"{name}.mbox", "default.mbox"):
                if (tests / mbox).exists():
                    shutil.copy(tests / mbox, d / mbox)
            t0 = time.monotonic()
            try:
                p = subprocess.run(
                    imaptest_cmd(args, f"test={d}"),
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=GROUP_TIMEOUT_SECS,
                )
                out, err, timed_out = p.stdout, p.stderr, False
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
                err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
                timed_out = True
            secs = time.monotonic() - t0
            g, b, x = SUMMARY_GROUPS.search(out), SUMMARY_BASE.search(out), SUMMARY_EXT.search(out)
            need = capabilities_of(tests / name)
            r = {
                "group": name,
                "capabilities": need,
                "missing": [c for c in need.upper().split() if c not in caps],
                "secs": round(secs, 2),
                "stderr": err.strip(),
            }
            if g and b and x and not timed_out:
                failed, skipped = int(g.group(2)), int(g.group(3))
                run = int(b.group(2)) + int(x.group(2))
                # The old build does not count a group skipped for a missing
                # capability (it logs out and reports 0 failed, 0 skipped):
                # a group that ran no command and lacks a capability was skipped.
                if not failed and run == 0 and (r["missing"] or "$user2" in (tests / name).read_text(errors="replace")):
                    skipped = 1
                r.update(
                    status="failed" if failed else ("skipped" if skipped else "passed"),
                    base_failed=int(b.group(1)),
                    base_total=int(b.group(2)),
                    ext_failed=int(x.group(1)),
                    ext_total=int(x.group(2)),
                )
            else:
                # No summary: imaptest died or hung (counted as a failed group).
                r.update(
                    status="failed",
                    base_failed=0,
                    base_total=0,
                    ext_failed=0,
                    ext_total=0,
                    stderr=(("timed out after %ds\n" % GROUP_TIMEOUT_SECS) if timed_out else "")
                    + "no imaptest summary; stdout: "
                    + out.strip()[-2000:]
                    + "\nstderr: "
                    + err.strip()[-4000:],
                )
            results.append(r)
            print(f"  {args.label:8} {name:34} {r['status']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps({"label": args.label, "caps": sorted(caps), "groups": results}, indent=1))


def totals(groups: list[dict]) -> str:
    run = [g for g in groups if g["status"] != "skipped"]
    failed = [g for g in groups if g["status"] == "failed"]
    skipped = len(groups) - len(run)
    bf = sum(g["base_failed"] for g in groups)
    bt = sum(g["base_total"] for g in groups)
    xf = sum(g["ext_failed"] for g in groups)
    xt = sum(g["ext_total"] for g in groups)
    return (
        f"{len(run)} groups run, {len(failed)} failed "
        f"({bf}/{bt} base, {xf}/{xt} extension commands failed), {skipped} skipped"
    )


def cell(g: dict) -> str:
    if g["status"] == "skipped":
        why = " ".join(g["missing"]) or "user2/capability"
        return f"skipped (no {why})"
    s = g["status"]
    if g["base_total"] or g["ext_total"]:
        s += f" {g['base_failed'] + g['ext_failed']}/{g['base_total'] + g['ext_total']}"
    return s


def first_failure(stderr: str) -> str:
    """imaptest's first `*** Test ...` block: the failing command and the
    exchange imaptest printed (expected vs. received)."""
    blocks = re.split(r"\n(?=\*\*\* )", stderr.strip())
    for b in blocks:
        if b.startswith("*** "):
            return b.strip()
    return stderr.strip()[:3000]


def report(args) -> None:
    runs = [json.loads(Path(p).read_text()) for p in args.results]
    by = [{g["group"]: g for g in r["groups"]} for r in runs]
    names = sorted(set().union(*[set(b) for b in by]))
    width = max(len(n) for n in names)
    print(f"{'group':{width}}  " + "  ".join(f"{r['label']:34}" for r in runs))
    for n in names:
        print(f"{n:{width}}  " + "  ".join(f"{cell(b[n]) if n in b else '-':34}" for b in by))
    print("\n(cells: status and failed/total commands of the group)")
    for r in runs:
        print(f"{r['label']:8} {totals(r['groups'])}")
    for r in runs:
        failing = [g for g in r["groups"] if g["status"] == "failed"]
        print(f"\n== {r['label']}: first failure of each failing group ({len(failing)})")
        for g in failing:
            print(f"\n--- {g['group']} ({cell(g)})")
            print(first_failure(g["stderr"]))
            # The later failures, one line each: where to look next.
            later = re.findall(r"^\*\*\* Test \S+ command (\S+) \(line (\d+)\)\n - failed: (.*)$", g["stderr"], re.M)[1:]
            for num, line, why in later:
                print(f"    also: command {num} (line {line}): {why}")
            # imaptest's own checks outside the script (e.g. a keyword in
            # FETCH FLAGS that no FLAGS response announced).
            for e in sorted(set(re.findall(r"^Error: \S+ (.*)$", g["stderr"], re.M)))[:5]:
                print(f"    imaptest error: {e[:300]}")
        skipped = [g for g in r["groups"] if g["status"] == "skipped"]
        print(f"\n== {r['label']}: skipped groups ({len(skipped)}), missing capability")
        for g in skipped:
            print(f"  {g['group']:34} needs {g['capabilities'] or '(user2)'}; missing {' '.join(g['missing']) or '-'}")


# --- stress ---------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """pid and all its descendants (Dovecot forks imap-login, auth, imap...)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rollup_kib(pid: int, field: str) -> int:
    """Rss: or Pss: of /proc/PID/smaps_rollup in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_kib(pid: int, field: str) -> int:
    return sum(rollup_kib(p, field) for p in tree(pid))


def stress(args) -> None:
    # mxrack is one process: its RSS. Dovecot is a tree of processes sharing
    # libraries: the sum of Pss (each shared page divided among its users),
    # since summed RSS would count libdovecot once per process.
    field = args.memory
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], memory_kib(args.pid, field))
            stop.wait(0.1)

    before = memory_kib(args.pid, field)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    cmd = imaptest_cmd(args, f"mbox={args.mbox}", f"clients={args.clients}", f"secs={args.secs}")
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=args.secs + 120)
    elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    after = memory_kib(args.pid, field)
    res = parse_stress(p.stdout + "\n" + p.stderr)
    res.update(
        label=args.label,
        clients=args.clients,
        secs=args.secs,
        wall_secs=round(elapsed, 1),
        memory_field=field,
        memory_before_kib=before,
        memory_peak_kib=peak[0],
        memory_after_kib=after,
        exit_code=p.returncode,
    )
    Path(args.out + ".log").write_text(p.stdout + "\n--- stderr\n" + p.stderr)
    Path(args.out).write_text(json.dumps(res, indent=1))


def parse_stress(text: str) -> dict:
    """imaptest prints, every second, a header line of command names
    ("Logi List Stat Sele Fetc ...") and a line of counts for that second;
    at the end a "Totals:" header and line. Logins/s and commands/s are the
    totals over the measured seconds; errors are imaptest's "Error:" lines
    (protocol errors, unexpected replies, lost connections)."""
    lines = text.splitlines()
    totals: dict[str, int] = {}
    for i, line in enumerate(lines):
        if line.startswith("Totals:") and i + 1 < len(lines):
            names = lines[i + 1].split()
            # Under the header: the command mix in percent (one or two lines),
            # then the counts.
            for ln in lines[i + 2 : i + 8]:
                toks = ln.split()
                if toks and "%" not in ln and all(t.isdigit() for t in toks[: len(names)]):
                    totals = dict(zip(names, (int(t) for t in toks[: len(names)])))
                    break
    errors = [ln for ln in lines if re.search(r"\bError\b|\berror:", ln)]
    # Kinds: the text between the client's name and the first ":" after it,
    # e.g. "Keyword used without being in FLAGS", "FETCH failed".
    kinds: dict[str, int] = {}
    for ln in errors:
        m = re.match(r"Error: \S+\[\d+\]: ([^:]*)", ln)
        k = m.group(1) if m else ln[:60]
        kinds[k] = kinds.get(k, 0) + 1
    return {
        "error_kinds": kinds,
        "totals": totals,
        "logins": totals.get("Logi", 0),
        "commands": sum(totals.values()),
        "errors": len(errors),
        "error_lines": errors[:40],
    }


def stress_report(args) -> None:
    runs = [json.loads(Path(p).read_text()) for p in args.results]
    print(f"{'':22}" + "".join(f"{r['label']:>16}" for r in runs))
    rows = [
        ("clients", lambda r: f"{r['clients']}"),
        ("seconds", lambda r: f"{r['secs']}"),
        ("logins/s", lambda r: f"{r['logins'] / r['secs']:.1f}"),
        ("commands/s", lambda r: f"{r['commands'] / r['secs']:.1f}"),
        ("errors", lambda r: f"{r['errors']}"),
        ("memory before (KiB)", lambda r: f"{r['memory_before_kib']}"),
        ("memory peak (KiB)", lambda r: f"{r['memory_peak_kib']}"),
        ("memory", lambda r: "RSS" if r["memory_field"] == "Rss" else "PSS sum"),
    ]
    for name, f in rows:
        print(f"{name:22}" + "".join(f"{f(r):>16}" for r in runs))
    for r in runs:
        print(f"\n-- {r['label']} totals by command: {r['totals']}")
        if r.get("error_kinds"):
            print(f"-- {r['label']} errors by kind: {r['error_kinds']}")
        if r["error_lines"]:
            print(f"-- {r['label']} first errors:")
            for ln in r["error_lines"][:15]:
                print("   " + ln)


def make_mbox(args) -> None:
    """A deterministic mbox for stress mode. imaptest tracks each message by
    its Message-ID and reports any change of size, envelope or structure as an
    error, so every message needs its own Message-ID (the test scripts' mboxes
    reuse <a@b>, <b@b>: not usable here). Mixed shapes: plain text of varied
    length, multipart/alternative, multipart/mixed with a base64 attachment,
    replies with In-Reply-To/References."""
    import random

    rnd = random.Random(17)
    words = ("mail rack imap server folder message reply meeting invoice report "
             "draft quarter budget review notes friday schedule update team").split()
    out = []
    for n in range(args.count):
        day = 1 + n % 28
        date = f"{['Mon','Tue','Wed','Thu','Fri','Sat','Sun'][n % 7]}, {day:02d} Mar 2024 {n % 24:02d}:{n % 60:02d}:00 +0000"
        sender = f"user{n % 13}@example.org"
        subject = " ".join(rnd.choice(words) for _ in range(4))
        hdr = [f"From: Sender {n % 13} <{sender}>", f"To: imaptest1@example.net",
               f"Subject: {'Re: ' if n % 5 == 4 else ''}{subject}", f"Date: {date}",
               f"Message-ID: <stress-{n}@imaptest.example.org>"]
        if n % 5 == 4:
            hdr += [f"In-Reply-To: <stress-{n - 1}@imaptest.example.org>",
                    f"References: <stress-{n - 2}@imaptest.example.org> <stress-{n - 1}@imaptest.example.org>"]
        text = "\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(2 + (n * 7) % 60))
        kind = n % 4
        if kind == 0 or kind == 1:
            body = hdr + ["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii", "", text]
        elif kind == 2:
            b = f"alt-{n}"
            body = hdr + ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{b}"', "",
                          f"--{b}", "Content-Type: text/plain; charset=us-ascii", "", text,
                          f"--{b}", "Content-Type: text/html; charset=us-ascii", "", f"<p>{text}</p>", f"--{b}--"]
        else:
            import base64
            b = f"mix-{n}"
            blob = bytes(rnd.randrange(256) for _ in range(512 + (n * 37) % 4096))
            enc = base64.encodebytes(blob).decode().rstrip("\n")
            body = hdr + ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{b}"', "",
                          f"--{b}", "Content-Type: text/plain; charset=us-ascii", "", text,
                          f"--{b}", f'Content-Type: application/octet-stream; name="file{n}.bin"',
                          "Content-Transfer-Encoding: base64",
                          f'Content-Disposition: attachment; filename="file{n}.bin"', "", enc, f"--{b}--"]
        # mboxrd: a body line starting with "From " would start a message.
        body = [(">" + ln) if ln.startswith("From ") else ln for ln in body]
        # The separator line carries an asctime() date (mbox(5)).
        envelope = f"{['Fri','Sat','Sun','Mon','Tue','Wed','Thu'][(day - 1) % 7]} Mar {day:2d} {n % 24:02d}:{n % 60:02d}:00 2024"
        out.append(f"From {sender} {envelope}\n" + "\n".join(body) + "\n")
    Path(args.out).write_text("\n".join(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("conformance", "stress"):
        s = sub.add_parser(name)
        s.add_argument("--imaptest", required=True)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--user", required=True)
        s.add_argument("--user2", required=True)
        s.add_argument("--password", required=True)
        s.add_argument("--label", required=True)
        s.add_argument("--out", required=True)
    sub.choices["conformance"].add_argument("--tests", required=True)
    st = sub.choices["stress"]
    st.add_argument("--pid", type=int, required=True)
    st.add_argument("--mbox", required=True)
    st.add_argument("--clients", type=int, default=10)
    st.add_argument("--secs", type=int, default=30)
    st.add_argument("--memory", choices=("Rss", "Pss"), required=True)
    r = sub.add_parser("report")
    r.add_argument("results", nargs="+")
    mb = sub.add_parser("mbox")
    mb.add_argument("--count", type=int, default=200)
    mb.add_argument("--out", required=True)
    r2 = sub.add_parser("stress-report")
    r2.add_argument("results", nargs="+")
    args = ap.parse_args()
    {"conformance": conformance, "stress": stress, "mbox": make_mbox, "report": report, "stress-report": stress_report}[args.cmd](args)


if __name__ == "__main__":
    main()
