"""Fixtures of the end-to-end suite: the real `mxrack` binary on 127.0.0.1.

    server         one server per test module (tests that share state carefully)
    make_server    a factory for servers of one test (own limits, own state)

Set MXRACK_BIN to the binary (default: target/debug/mxrack of this
repository), MXRACK_E2E_KEEP=1 to keep the temporary data folders.
"""

from __future__ import annotations

import os

import pytest

from mxlib import BIN, LIVE_SERVERS, Server


def pytest_configure(config):
    if not os.access(BIN, os.X_OK):
        raise pytest.UsageError(
            f"mxrack binary not found at {BIN}: run `cargo build -p mxrack` "
            "or set MXRACK_BIN"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the stderr of every server it was using."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for s in LIVE_SERVERS:
            report.sections.append(
                (f"mxrack stderr ({s.base}, mx={s.mx_port})", s.stderr_tail())
            )


@pytest.fixture(scope="module")
def server():
    s = Server()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


@pytest.fixture
def make_server():
    """make_server(**smtp_limits) -> a started Server, stopped after the test."""
    made: list[Server] = []

    def make(start: bool = True, **smtp) -> Server:
        s = Server(**smtp)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    for s in made:
        s.teardown()


@pytest.fixture
def mx(server):
    """mx(*args) -> stdout bytes of `mxrack --config FILE args...` (module server)."""
    return server.mx

