"""`mxrack replica` outside the appliance image (issue 13).

The pair itself (DRBD, promotion, failover) runs in HIL scenario 9 under
QEMU; here the binary's side that the board script relies on: `[replica]`
is validated with the key named, `replica env` gives each node its own
values, `replica drbd-conf` writes a protocol C resource that never
discards a side, and `replica status|promote` on a machine without the
pair say so instead of failing obscurely."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from mxlib import BIN

BASE = textwrap.dedent(
    """\
    [appliance]
    hostname = "mx1.example.net"
    primary_domain = "example.net"
    data_dir = "{data}"

    [smtp]
    mx = ["127.0.0.1:0"]
    """
)

PAIR = textwrap.dedent(
    """\
    [replica]
    initial_primary = "mxa"
    interface = "eth1"
    service_address = "10.99.0.100/24"
    {extra}

    [[replica.nodes]]
    name = "mxa"
    address = "10.99.0.1/24"

    [[replica.nodes]]
    name = "mxb"
    address = "10.99.0.2/24"
    mac = "52:54:00:99:00:02"
    """
)


def mxrack(config, *args):
    return subprocess.run([BIN, "--config", str(config), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(tmp_path):
    def write(extra="", pair=True):
        p = tmp_path / "mxrack.toml"
        text = BASE.format(data=tmp_path / "data")
        if pair:
            text += "\n" + PAIR.format(extra=extra)
        p.write_text(text)
        return p

    return write


def test_a_pair_is_accepted_and_each_node_gets_its_own_values(config):
    c = config()
    assert mxrack(c, "config", "check", str(c)).returncode == 0
    a = mxrack(c, "replica", "env", "--node", "mxa")
    assert a.returncode == 0, a.stderr
    assert "REPLICA='1'" in a.stdout
    assert "REPLICA_PEER='mxb'" in a.stdout and "REPLICA_PEER_IP='10.99.0.2'" in a.stdout
    assert "REPLICA_PREFERRED='1'" in a.stdout
    assert "REPLICA_AUTO='0'" in a.stdout
    b = mxrack(c, "replica", "env", "--node", "mxb")
    assert "REPLICA_PEER='mxa'" in b.stdout and "REPLICA_PREFERRED='0'" in b.stdout
    unknown = mxrack(c, "replica", "env", "--node", "mxc")
    assert unknown.returncode != 0 and "mxc" in unknown.stderr


def test_the_resource_is_protocol_c_and_never_discards_a_side(config):
    out = mxrack(config(), "replica", "drbd-conf", "/dev/md0")
    assert out.returncode == 0, out.stderr
    conf = out.stdout
    assert "usage-count no;" in conf  # no survey traffic to the internet
    assert "protocol C;" in conf
    for sb in ("after-sb-0pri", "after-sb-1pri", "after-sb-2pri"):
        assert f"{sb} disconnect;" in conf
    assert "floating 10.99.0.1:7788 {" in conf and "floating 10.99.0.2:7788 {" in conf
    assert "disk /dev/md0;" in conf
    assert mxrack(config(), "replica", "drbd-conf", "md0 ; reboot").returncode != 0


@pytest.mark.parametrize(
    "extra, key",
    [
        ("auto_promote = true", "replica.witness"),
        ('witness = "192.0.2.1"\nauto_promote_after_secs = 1', "replica.auto_promote_after_secs"),
        ('initial_primary_typo = "mxa"', "initial_primary_typo"),
    ],
)
def test_a_bad_pair_is_refused_naming_the_key(config, extra, key):
    c = config(extra)
    out = mxrack(c, "config", "check", str(c))
    assert out.returncode == 78, out
    assert key in out.stderr


def test_automatic_promotion_needs_a_witness_and_its_own_service_network(config):
    # The service address on the replication link: a broken link would
    # look like a dead peer, so it is refused.
    c = config('auto_promote = true\nwitness = "192.0.2.1"')
    out = mxrack(c, "config", "check", str(c))
    assert out.returncode == 78 and "replica.service_interface" in out.stderr
    c = config('auto_promote = true\nwitness = "192.0.2.1"\nservice_interface = "eth2"')
    text = c.read_text().replace(
        'address = "10.99.0.1/24"', 'address = "10.99.0.1/24"\nservice_address = "10.98.0.1/24"'
    ).replace('address = "10.99.0.2/24"', 'address = "10.99.0.2/24"\nservice_address = "10.98.0.2/24"')
    c.write_text(text)
    # The nodes' own addresses outside the service address's network (it is
    # still on the replication link's 10.99.0.0/24): the standby would find
    # the active "silent" there and promote itself while it serves.
    out = mxrack(c, "config", "check", str(c))
    assert out.returncode == 78 and "replica.nodes.service_address" in out.stderr, out
    c.write_text(text.replace('service_address = "10.99.0.100/24"', 'service_address = "10.98.0.100/24"'))
    assert mxrack(c, "config", "check", str(c)).returncode == 0
    env = mxrack(c, "replica", "env", "--node", "mxb").stdout
    assert "REPLICA_AUTO='1'" in env and "REPLICA_WITNESS='192.0.2.1'" in env
    assert "REPLICA_OWN_SERVICE_ADDRESS='10.98.0.2/24'" in env
    assert "REPLICA_SERVICE_INTERFACE='eth2'" in env


def test_a_single_appliance_has_no_pair(config):
    c = config(pair=False)
    assert mxrack(c, "replica", "env").stdout == "REPLICA=0\n"
    out = mxrack(c, "replica", "status")
    assert out.returncode == 1 and "single appliance" in out.stderr
