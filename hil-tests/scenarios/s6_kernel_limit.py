"""Scenario 6: a kernel limit near exhaustion is raised live.

The seed's IMAP server panicked on a compiled-in kernel limit and a kernel
parameter took a reboot. Here `kernel.threads-max` is lowered in the guest
to just above the threads running (about 62: the limit is set so that they
are ~94 % of it, 90 % being the alert level). The health watch must open the
incident "Kernel limit kernel.threads-max at ...", raise the limit live
within `[health.raise_bounds]` (double: "Raised kernel.threads-max from L to
2L live"), see it "back to" a safe share and resolve the incident; mxrack
keeps running all along. (fs.file-max is not used: it reads 0 in this
guest.)

While the guest is at the limit it can start hardly any thread or process:
the harness lowers it with a shell built-in, then only reads the console
(mxrack logs every health event there) and asks nothing of the guest or of
mxrack until the limit has been raised.
"""

import re

from hil import clients, guest
from hil.machine import HilError, wait_until

TITLE = "kernel limit: threads-max near exhaustion is raised live, the incident resolves"

KEY = "kernel.threads-max"
SYSCTL = "/proc/sys/kernel/threads-max"
TARGET_PERCENT = 94
MIN_HEADROOM = 3  # threads that may still start at the lowered limit
BOUND = 3540  # [health.raise_bounds] in board/common/mxrack.toml


def threads(shell):
    """Scheduling entities (threads) in the guest: /proc/loadavg's 4th field."""
    _, out = shell.run('read -r a b c d e </proc/loadavg; echo "${d#*/}"', timeout=60)
    return int(out.strip())


def run(ctx):
    m = ctx.machine(disk_size=256 << 20).start(fresh=True)
    wall, _, listeners = m.wait_ready(ctx.boot_timeout)
    ctx.figure("boot to ready", f"{wall:.1f}s wall")
    if 443 not in listeners.values():
        raise HilError("no HTTPS listener (guest port 443) in the ready line: the status page is needed")

    # The watch runs and sees the limit at a safe level first.
    def watched():
        page = clients.status_json(m.host_port(443))
        lim = next((x for x in (page.get("snapshot") or {}).get("limits", []) if x.get("key") == KEY), None)
        return (lim is not None and lim.get("level") == "ok"), (lim or "not in the snapshot")

    lim = wait_until(f"the health watch reports {KEY}", watched, timeout=120)
    original = int(guest.read_value(m.shell, SYSCTL))
    ctx.note(f"{KEY}: {lim['used']} of {lim['max']} in use (sysctl reads {original})")
    if original > BOUND:
        ctx.note(f"{KEY} starts above the configured bound {BOUND}")

    used = threads(m.shell)
    limit = -(-used * 100 // TARGET_PERCENT)  # ceil: used is ~94 % of it
    if limit - used < MIN_HEADROOM or used * 1000 // limit < 900:
        raise HilError(f"{used} threads: no limit puts them at >= 90 % with {MIN_HEADROOM} to spare")
    expected_to = min(max(2 * limit, 2 * used), BOUND)
    before = m.console.mark()
    # A shell built-in: no new process while at the limit.
    m.shell.run(f"echo {limit} >{SYSCTL}", timeout=60)
    ctx.note(f"{KEY} lowered to {limit} with {used} threads running ({used * 100 / limit:.1f} %)")

    # The watch's events, in order, on the console.
    k = re.escape(KEY)
    alert = m.console.wait_for(rf"{k} at \d+(\.\d+)? ?%.*", 120, since=before, what=f"the {KEY} alert")
    ctx.note(f"console: {alert.group(0)[:160]}")
    raised = m.console.wait_for(rf"Raised {k} from (\d+) to (\d+) live.*", 120, since=before, what=f"{KEY} raised")
    ctx.note(f"console: {raised.group(0)[:160]}")
    if (int(raised.group(1)), int(raised.group(2))) != (limit, expected_to):
        raise HilError(f"raised from {raised.group(1)} to {raised.group(2)}, expected {limit} to {expected_to}")
    back = m.console.wait_for(rf"{k} is back to .*", 120, since=before, what=f"{KEY} back to a safe level")
    ctx.note(f"console: {back.group(0)[:160]}")
    now = int(guest.read_value(m.shell, SYSCTL))
    if now != expected_to:
        raise HilError(f"{KEY} reads {now}, expected {expected_to} (twice {limit}, within the bound {BOUND})")
    ctx.note(f"{KEY} reads {now}")

    prefix = f"Kernel limit {KEY} at "
    raise_text = f"Raised {KEY} from {limit} to {expected_to} live"

    def look():
        page = clients.status_json(m.host_port(443))
        e = clients.status_entry(page, prefix=prefix)
        if e is None:
            return False, f"no entry {prefix!r}...; titles {[x['title'] for x in page.get('entries', [])]}"
        texts = clients.entry_texts(e)
        ok = e.get("resolved") and any(t.startswith(f"{KEY} is back to ") for t in texts)
        return bool(ok), (e if ok else texts)

    e = wait_until(f"status.json: {prefix!r}... resolved by a 'back to' update", look, timeout=120)
    texts = clients.entry_texts(e)
    ctx.note(f"status.json: {e['title']!r} resolved, updates:")
    for text in texts:
        ctx.note(f"  | {text}")
    if f"sysctl -w {KEY}=" not in texts[0]:
        raise HilError(f"the incident's first update does not say which sysctl to run: {texts[0]}")

    code, html = clients.https_get(m.host_port(443), "/status")
    got = clients.html_entry(html, e["title"]) if code == 200 else None
    if not got or not got[0].startswith("resolved"):
        raise HilError(f"/status (HTML): {e['title']!r} not shown resolved: {got}")
    ctx.note(f"/status (HTML): {e['title']!r} {got[0]}")

    exits = [line for line in m.console.text(before).splitlines() if "mxrack exited" in line]
    if exits:
        raise HilError(f"mxrack exited while the guest was at its thread limit: {exits}")
    # And the appliance still takes mail.
    token = clients.new_token("s6")
    clients.smtp_send_mx(m.host_port(25), clients.make_message(token, "after the limit was raised"))
    ctx.note("mail accepted after the raise; mxrack did not restart")

    # What the monitor did must be on the page: the raise is an update of
    # the incident, between the alert and "back to".
    i_raise = next((n for n, t in enumerate(texts) if t.startswith(raise_text)), None)
    i_back = next(n for n, t in enumerate(texts) if t.startswith(f"{KEY} is back to "))
    if i_raise is None or not 0 < i_raise < i_back:
        order = [
            line.split("Z ", 1)[-1][:90]
            for line in m.console.text(before).splitlines()
            if KEY in line
        ]
        raise HilError(
            f"the incident {e['title']!r} lacks the update {raise_text!r}... between the alert and "
            f"'back to' (its updates: {len(texts)}). The console shows the monitor's events in this "
            f"order: {order}: the raise was recorded before the event that opens the incident, so "
            f"it is no update of it (mxrack-health: Decision::RaiseSysctl precedes the Open event)"
        )
    ctx.note(f"the raise is on the page as update {i_raise + 1} of {len(texts)}")
