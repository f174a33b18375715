"""A scriptable SMTP sink for the outbound (relay) tests: the far end the
appliance delivers to. Standard library only (asyncio streams in a thread of
its own), listening on 127.0.0.1 on a free port.

It records every transaction (EHLO name, peer address, TLS, MAIL FROM and
its parameters, RCPT TO list, DATA bytes, the reply to the end of DATA) and
answers as the test scripts it:

    sink = Sink(tls=True).start()               # offers STARTTLS (self-signed)
    sink = Sink(tls=True, tls_context=ctx)      # ... with a certificate of the test's
    sink.script_data("451 4.3.0 try later")      # next end-of-DATA answers
    sink.rcpt_for["bad@example.org"] = "550 5.1.1 no such user"
    ...
    t = sink.wait_for(lambda ts: [t for t in ts if t.accepted], "one delivery")

Scripts are queues consumed one reply per command; when a queue is empty
the command gets the per-address reply (RCPT) or the default (250).
`gate_after(n)` parks every connection after the n-th before its banner until
`open_gate()`, so a test can look at the queue while an attempt is in flight.

    sink = Sink(tls=True, auth={"user": "pw"}, ...)   # AUTH PLAIN LOGIN, required

With `auth`, the sink offers AUTH PLAIN and LOGIN (RFC 4954) after STARTTLS
only, unless `auth_in_clear=True` (a careless server that offers it in
plaintext too), and refuses MAIL before a successful AUTH (530 5.7.0).
`auth_log` records every AUTH as (connection, mechanism, user, ok, tls).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import re
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SINK_NAME = "sink.test"
# Longest line the sink reads (a message line or a command).
LINE_BYTES_MAX = 1 << 20
WAIT_TIMEOUT = 20.0

PATH_RE = re.compile(r"(?i)(MAIL FROM|RCPT TO):\s*<([^>]*)>\s*(.*)")


def make_certificate(directory: Path, name: str = SINK_NAME) -> tuple[Path, Path]:
    """A self-signed certificate and key (PEM) made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "sink-cert.pem", directory / "sink-key.pem"
    if not (cert.exists() and key.exists()):
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(key), "-out", str(cert), "-days", "2",
                "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return cert, key


@dataclass
class Transaction:
    """One MAIL transaction as the sink saw it."""

    connection: int  # 1 for the first connection the sink accepted
    peer: tuple[str, int]
    ehlo: str | None
    tls: bool
    tls_version: str | None
    mail_from: str
    mail_params: list[str]
    rcpt_to: list[str] = field(default_factory=list)  # accepted recipients
    refused: list[tuple[str, str]] = field(default_factory=list)  # (address, reply)
    data: bytes | None = None  # unstuffed content, None if DATA never ended
    reply: str | None = None  # the reply to the end of DATA
    auth_user: str | None = None  # who authenticated in this session

    @property
    def accepted(self) -> bool:
        """The message was taken: the end of DATA was answered 250."""
        return self.reply is not None and self.reply.startswith("250")


class Sink:
    def __init__(self, tls: bool = False, cert_dir: Path | None = None,
                 eight_bit_mime: bool = True, smtputf8: bool = True, port: int = 0,
                 auth: dict[str, str] | None = None, auth_in_clear: bool = False,
                 tls_context: ssl.SSLContext | None = None, host: str = HOST):
        self.tls = tls
        self.host = host
        self.auth = auth
        self.auth_in_clear = auth_in_clear
        self.eight_bit_mime = eight_bit_mime
        self.smtputf8 = smtputf8
        self._ctx: ssl.SSLContext | None = tls_context
        if tls and tls_context is None:
            assert cert_dir is not None, "a TLS sink needs a folder for its certificate"
            cert, key = make_certificate(Path(cert_dir))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert), str(key))
            self._ctx = ctx
        self.port = port  # 0: a free port, chosen at start()
        self.active = 0  # connections open now
        self._lock = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self.reset()

    # --- scripting (called from the test thread) ------------------------

    def reset(self):
        """Forgets transactions and scripts; opens the gate."""
        with self._lock:
            self._transactions: list[Transaction] = []
            self.connections = 0
            self.parked = 0
            self.auth_log: list[tuple[int, str, str, bool, bool]] = []
            self.errors: list[str] = []
            # Connection number -> the lines exchanged ("C: ..." / "S: ..."),
            # message content left out.
            self.transcripts: dict[int, list[str]] = {}
            self.mail_script: collections.deque[str] = collections.deque()
            self.rcpt_script: collections.deque[str] = collections.deque()
            self.data_script: collections.deque[str] = collections.deque()
            # Lower-cased address -> reply for every RCPT of it (after the script).
            self.rcpt_for: dict[str, str] = {}
            self._gate_after: int | None = None
            self._lock.notify_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._gate_event.set)

    def script_mail(self, *replies: str):
        with self._lock:
            self.mail_script.extend(replies)

    def script_rcpt(self, *replies: str):
        with self._lock:
            self.rcpt_script.extend(replies)

    def script_data(self, *replies: str):
        with self._lock:
            self.data_script.extend(replies)

    def _in_loop(self, fn):
        async def run():
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def gate_after(self, n: int):
        """Connections after the n-th (counting from the last reset) wait
        before their banner until open_gate()."""
        self._in_loop(self._gate_event.clear)
        with self._lock:
            self._gate_after = n

    def open_gate(self):
        with self._lock:
            self._gate_after = None
        self._in_loop(self._gate_event.set)

    # --- reading results ---------------------------------------------------

    @property
    def transactions(self) -> list[Transaction]:
        with self._lock:
            return copy.deepcopy(self._transactions)

    def delivered(self) -> list[Transaction]:
        """Transactions that ended in 250 after DATA."""
        return [t for t in self.transactions if t.accepted]

    def delivered_to(self, rcpt: str) -> list[Transaction]:
        """The accepted transactions that carried `rcpt`."""
        return [t for t in self.delivered() if rcpt in t.rcpt_to]

    def wait_for(self, predicate, what: str, timeout: float = WAIT_TIMEOUT):
        """Waits until predicate(transactions) is truthy; returns its value."""
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                value = predicate(copy.deepcopy(self._transactions))
                if value:
                    return value
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink: timed out after {timeout}s waiting for {what}; "
                        f"saw {self._transactions!r}"
                    )
                self._lock.wait(min(left, 0.5))

    def wait_delivered(self, n: int, what: str = "", timeout: float = WAIT_TIMEOUT,
                       rcpt: str | None = None) -> list[Transaction]:
        """Waits for at least n transactions that ended in 250 (to `rcpt` if given)."""
        def pred(ts):
            got = [t for t in ts if t.accepted and (rcpt is None or rcpt in t.rcpt_to)]
            return got if len(got) >= n else None
        return self.wait_for(pred, what or f"{n} delivered message(s)", timeout)

    def wait_parked(self, n: int = 1, timeout: float = WAIT_TIMEOUT):
        """Waits until n connections are parked at the gate."""
        end = time.monotonic() + timeout
        with self._lock:
            while self.parked < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"sink: no connection parked at the gate within {timeout}s")
                self._lock.wait(min(left, 0.5))

    def wait_idle(self, timeout: float = WAIT_TIMEOUT):
        """Waits until no connection is open."""
        end = time.monotonic() + timeout
        with self._lock:
            while self.active > 0:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"sink: {self.active} connection(s) still open after {timeout}s")
                self._lock.wait(min(left, 0.5))

    # --- life cycle ----------------------------------------------------------

    def start(self) -> "Sink":
        self._loop = asyncio.new_event_loop()
        self._gate_event = asyncio.Event()
        self._gate_event.set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sink", daemon=True)
        self._thread.start()

        async def listen():
            return await asyncio.start_server(self._session, self.host, self.port,
                                              limit=LINE_BYTES_MAX)

        self._server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def hop(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self):
        if self._loop is None:
            return

        async def close():
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- the protocol (event loop thread) ------------------------------------

    def _record(self, fn):
        with self._lock:
            fn()
            self._lock.notify_all()

    def _next(self, script: collections.deque, default: str) -> str:
        with self._lock:
            return script.popleft() if script else default

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        self._tasks.add(task)
        self._record(lambda: setattr(self, "active", self.active + 1))
        try:
            await self._converse(reader, writer)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a client that went away, a failed handshake
            self._record(lambda: self.errors.append(repr(e)))
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass
            self._record(lambda: setattr(self, "active", self.active - 1))

    async def _converse(self, reader, writer):
        peer = writer.get_extra_info("peername")[:2]
        with self._lock:
            self.connections += 1
            number = self.connections
            gated = self._gate_after is not None and number > self._gate_after
            if gated:
                self.parked += 1
                self._lock.notify_all()
        if gated:
            try:
                await self._gate_event.wait()
            finally:
                self._record(lambda: setattr(self, "parked", self.parked - 1))

        transcript: list[str] = []
        self._record(lambda: self.transcripts.__setitem__(number, transcript))

        def log(line: str):
            self._record(lambda: transcript.append(line))

        async def send(line: str):
            log(f"S: {line}")
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await send(f"220 {SINK_NAME} ESMTP sink")
        tls, tls_version, ehlo = False, None, None
        txn: Transaction | None = None
        user: str | None = None

        async def read_line() -> str | None:
            raw = await reader.readline()
            if not raw:
                return None
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            log(f"C: {line}")
            return line

        def b64(text: str) -> str | None:
            try:
                return base64.b64decode(text, validate=True).decode("utf-8")
            except Exception:
                return None
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            log(f"C: {line}")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                ehlo, txn = line[5:].strip(), None
                if verb == "HELO":
                    await send(f"250 {SINK_NAME}")
                    continue
                ext = ["PIPELINING", "SIZE 10485760", "ENHANCEDSTATUSCODES"]
                if self.eight_bit_mime:
                    ext.append("8BITMIME")
                if self.smtputf8:
                    ext.append("SMTPUTF8")
                if self._ctx is not None and not tls:
                    ext.append("STARTTLS")
                if self.auth is not None and (tls or self.auth_in_clear) and user is None:
                    ext.append("AUTH PLAIN LOGIN")
                lines = [SINK_NAME] + ext
                for i, l in enumerate(lines):
                    await send(f"250{'-' if i < len(lines) - 1 else ' '}{l}")
            elif verb == "STARTTLS" and self._ctx is not None and not tls:
                await send("220 2.0.0 ready for TLS")
                await writer.start_tls(self._ctx)
                tls, ehlo, txn = True, None, None
                obj = writer.get_extra_info("ssl_object")
                tls_version = obj.version() if obj else "?"
            elif verb == "AUTH" and self.auth is not None and (tls or self.auth_in_clear):
                words = line.split()
                mech = words[1].upper() if len(words) > 1 else ""
                if user is not None:
                    await send("503 5.5.1 already authenticated")
                    continue
                name = password = None
                if mech == "PLAIN":
                    initial = words[2] if len(words) > 2 else None
                    if initial is None:
                        await send("334 ")
                        initial = await read_line()
                        if initial is None:
                            return
                    parts = (b64(initial) or "").split("\0")
                    if len(parts) == 3:
                        name, password = parts[1], parts[2]
                elif mech == "LOGIN":
                    await send("334 VXNlcm5hbWU6")
                    got = await read_line()
                    if got is None:
                        return
                    name = b64(got)
                    await send("334 UGFzc3dvcmQ6")
                    got = await read_line()
                    if got is None:
                        return
                    password = b64(got)
                else:
                    await send("504 5.5.4 mechanism not supported")
                    continue
                ok = name is not None and self.auth.get(name) == password
                entry = (number, mech, name or "", ok, tls)
                self._record(lambda: self.auth_log.append(entry))
                if ok:
                    user = name
                    await send("235 2.7.0 authenticated")
                else:
                    await send("535 5.7.8 authentication credentials invalid")
            elif verb == "MAIL" and self.auth is not None and user is None:
                await send("530 5.7.0 authentication required")
            elif verb == "MAIL":
                m = PATH_RE.fullmatch(line)
                if not m or m[1].upper() != "MAIL FROM":
                    await send("501 5.5.4 syntax: MAIL FROM:<address>")
                    continue
                if txn is not None:
                    await send("503 5.5.1 nested MAIL")
                    continue
                reply = self._next(self.mail_script, "250 2.1.0 sender ok")
                if reply.startswith("250"):
                    txn = Transaction(number, peer, ehlo, tls, tls_version, m[2], m[3].split(),
                                      auth_user=user)
                    t = txn
                    self._record(lambda: self._transactions.append(t))
                await send(reply)
            elif verb == "RCPT":
                m = PATH_RE.fullmatch(line)
                if txn is None:
                    await send("503 5.5.1 need MAIL first")
                    continue
                if not m or m[1].upper() != "RCPT TO":
                    await send("501 5.5.4 syntax: RCPT TO:<address>")
                    continue
                address = m[2]
                with self._lock:
                    if self.rcpt_script:
                        reply = self.rcpt_script.popleft()
                    else:
                        reply = self.rcpt_for.get(address.lower(), "250 2.1.5 recipient ok")
                t = txn
                if reply.startswith("25"):
                    self._record(lambda: t.rcpt_to.append(address))
                else:
                    self._record(lambda: t.refused.append((address, reply)))
                await send(reply)
            elif verb == "DATA":
                if txn is None or not txn.rcpt_to:
                    await send("554 5.5.1 no valid recipients")
                    continue
                await send("354 go ahead")
                data = bytearray()
                while True:
                    l = await reader.readline()
                    if not l:
                        return
                    if l == b".\r\n":
                        log(f"C: ({len(data)} bytes of content)")
                        log("C: .")
                        break
                    if l.startswith(b"."):
                        l = l[1:]
                    data += l
                reply = self._next(self.data_script, f"250 2.0.0 ok: queued by sink")
                t, body = txn, bytes(data)

                def done():
                    t.data, t.reply = body, reply

                self._record(done)
                txn = None
                await send(reply)
            elif verb == "RSET":
                txn = None
                await send("250 2.0.0 ok")
            elif verb == "NOOP":
                await send("250 2.0.0 ok")
            elif verb == "QUIT":
                await send("221 2.0.0 bye")
                return
            else:
                await send("500 5.5.2 unknown command")
