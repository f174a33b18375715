"""Crash test of ARCHITECTURE invariant 1, "acknowledged means durable".

Four client threads send messages in a loop over their own connections
(smtplib on the MX port), each with a unique marker. After a random delay
the server is killed with SIGKILL; every message that got its 250 is
recorded. The server is restarted on the same data folder and the INBOX is
read back with the CLI: every acknowledged message must be there exactly
once and byte-identical after the added trace headers; no message may
appear twice or altered; no orphan body file may remain. Three rounds.

The delays come from a seeded generator: the seed is printed, and
MXRACK_CRASH_SEED=<seed> repeats a run."""

from __future__ import annotations

import hashlib
import os
import random
import re
import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mxlib import DEMO, HOST, split_stored

ROUNDS = 3
THREADS = 4
MESSAGES_PER_CONNECTION = 25
# Each client sends at most this many messages a second, so that reading
# everything back stays within the time budget on a fast machine; a message
# still is in flight most of the time.
RATE_PER_THREAD = 150
SENDER = "crash@client.example"
MARKER_RE = re.compile(rb"^X-Marker: (\S+)\r\n", re.M)


def message(marker: str) -> bytes:
    """A deterministic message for `marker`, 0.3 to ~13 KB, with dot lines."""
    h = hashlib.sha256(marker.encode()).digest()
    lines = [
        f"Message-ID: <{marker}@e2e.test>",
        f"Subject: crash test {marker}",
        f"X-Marker: {marker}",
        "",
    ]
    for i in range(1 + h[0] % 200):
        digest = hashlib.sha256(f"{marker}:{i}".encode()).hexdigest()
        lines.append(("." if i % 7 == 0 else "") + digest)
    lines.append(f"end of {marker}")
    return ("\r\n".join(lines) + "\r\n").encode()


class Senders:
    """THREADS clients sending until the server dies."""

    def __init__(self, port: int, round_no: int):
        self.port = port
        self.round_no = round_no
        self.attempted: dict[str, bytes] = {}
        self.acked: dict[str, bytes] = {}
        self.killed = threading.Event()
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self.run, args=(t,), daemon=True) for t in range(THREADS)
        ]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout: float = 20):
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"client threads still running after the kill: {alive}"

    def run(self, thread_no: int):
        n = 0
        next_send = time.monotonic()
        while not self.killed.is_set():
            try:
                with smtplib.SMTP(HOST, self.port, local_hostname=f"t{thread_no}.e2e.test", timeout=10) as s:
                    s.ehlo()
                    for _ in range(MESSAGES_PER_CONNECTION):
                        pause = next_send - time.monotonic()
                        if pause > 0:
                            time.sleep(pause)
                        next_send = max(next_send, time.monotonic() - 1) + 1 / RATE_PER_THREAD
                        marker = f"r{self.round_no}-t{thread_no}-n{n}"
                        n += 1
                        body = message(marker)
                        self.attempted[marker] = body
                        s.sendmail(SENDER, [DEMO], body)
                        # sendmail returned: the server said 250 after DATA.
                        self.acked[marker] = body
                        if self.killed.is_set():
                            return
                    s.quit()
            except (smtplib.SMTPException, OSError) as e:
                if not self.killed.is_set():
                    self.errors.append(f"thread {thread_no}: {type(e).__name__}: {e}")
                return


class Checker:
    """What has been read back so far, across rounds."""

    def __init__(self, seed: int):
        self.seed = seed
        self.attempted: dict[str, bytes] = {}
        self.acked: dict[str, bytes] = {}
        self.by_uid: dict[int, tuple[str, int, str]] = {}  # uid -> (marker, size, queue id)

    def fail(self, what: str) -> str:
        return f"{what} (seed {self.seed}; rerun with MXRACK_CRASH_SEED={self.seed})"

    def check(self, server):
        listed = server.inbox(DEMO)
        uids = [m.uid for m in listed]
        assert len(set(uids)) == len(uids), self.fail("a UID is listed twice")
        sizes = {m.uid: m.size for m in listed}
        for uid, (marker, size, _) in self.by_uid.items():
            assert sizes.get(uid) == size, self.fail(
                f"message {marker} (UID {uid}, {size} bytes) is gone or changed after a restart"
            )
        new = [m for m in listed if m.uid not in self.by_uid]
        with ThreadPoolExecutor(4) as pool:
            raws = list(pool.map(lambda m: server.cat(DEMO, m.uid), new))
        markers = {marker: uid for uid, (marker, _, _) in self.by_uid.items()}
        for m, raw in zip(new, raws):
            assert len(raw) == m.size, self.fail(f"UID {m.uid}: listed {m.size} bytes, stored {len(raw)}")
            st = split_stored(raw)
            assert st.return_path == SENDER and st.for_ == DEMO, self.fail(f"UID {m.uid}: bad trace block")
            found = MARKER_RE.search(st.body)
            assert found, self.fail(f"UID {m.uid}: no marker in {st.body[:200]!r}")
            marker = found[1].decode()
            assert marker in self.attempted, self.fail(f"UID {m.uid}: marker {marker} was never sent")
            assert st.body == self.attempted[marker], self.fail(
                f"UID {m.uid}: message {marker} is not byte-identical to what was sent"
            )
            assert marker not in markers, self.fail(
                f"message {marker} stored twice (UIDs {markers[marker]} and {m.uid})"
            )
            markers[marker] = m.uid
            self.by_uid[m.uid] = (marker, m.size, st.id)
        missing = sorted(set(self.acked) - set(markers))
        assert not missing, self.fail(
            f"{len(missing)} acknowledged message(s) lost after SIGKILL: {missing[:10]}"
        )
        ids = [qid for _, _, qid in self.by_uid.values()]
        assert len(set(ids)) == len(ids), self.fail("two messages share a queue id")
        # Orphan bodies (written, never committed) are removed at the next open.
        files = os.listdir(server.data / "msg")
        assert len(files) == len(listed), self.fail(
            f"{len(files)} body files in msg/ for {len(listed)} messages"
        )


def test_sigkill_never_loses_an_acknowledged_message(make_server):
    seed = int(os.environ.get("MXRACK_CRASH_SEED") or random.randrange(2**32))
    print(f"crash test seed: {seed} (MXRACK_CRASH_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    # This test is about the store's durability under load, not mail
    # authentication: the suite's [dns] names a port nobody answers on, so
    # each SPF/DMARC lookup would wait out its timeout and only a handful
    # of messages would be in flight at the kill.
    server = make_server(start=False)
    server.mail_auth = {"verify_inbound": False}
    server.write_config()
    server.start()
    checker = Checker(seed)
    for round_no in range(1, ROUNDS + 1):
        senders = Senders(server.mx_port, round_no)
        senders.start()
        # The crash point is random by design (seeded), counted from the
        # first acknowledgement so that a slow start cannot leave a round
        # with nothing to check.
        first = time.monotonic() + 20
        while not senders.acked and not senders.errors and time.monotonic() < first:
            time.sleep(0.01)
        delay = rng.uniform(0.2, 1.5)
        time.sleep(delay)
        senders.killed.set()
        server.kill()
        senders.join()
        assert not senders.errors, checker.fail(f"client errors before the kill: {senders.errors[:5]}")
        checker.attempted.update(senders.attempted)
        checker.acked.update(senders.acked)
        print(
            f"round {round_no}: killed after {delay:.2f}s, "
            f"{len(senders.acked)} acknowledged of {len(senders.attempted)} attempted"
        )
        assert senders.acked, checker.fail(f"round {round_no}: no message was acknowledged before the kill")
        t0 = time.monotonic()
        server.start()
        t1 = time.monotonic()
        checker.check(server)
        print(f"round {round_no}: restart {t1 - t0:.2f}s, read back in {time.monotonic() - t1:.2f}s")
    print(f"{len(checker.by_uid)} messages stored, {len(checker.acked)} acknowledged, all intact")
    assert server.stop() == 0
