"""Update bundles (issue 14): `mxrack update keygen`, `bundle` (version and
board taken from the image's .osrel), and `verify` against a keyring,
with what an attacker or a bad download hands it: another key, a changed
manifest byte, a changed image byte, a truncated file, trailing bytes, a
file that is no bundle, a manifest length of 4 GiB. Installing onto the
boot partition, the trial boot and the rollback run in HIL scenario 10 on
the image."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from mxlib import BIN


def mx(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, *args], input=input, capture_output=True, timeout=60)


def pe_with_osrel(osrel: bytes, body: bytes = b"") -> bytes:
    """A minimal PE with one .osrel section, laid out as objcopy does for a
    unified kernel image (what the bundle command reads)."""
    pe = bytearray(0x200)
    pe[0:2] = b"MZ"
    pe[0x3C:0x40] = struct.pack("<I", 0x80)
    pe[0x80:0x84] = b"PE\0\0"
    pe[0x86:0x88] = struct.pack("<H", 1)  # one section
    pe[0x94:0x96] = struct.pack("<H", 0)  # no optional header
    s = 0x84 + 20
    pe[s : s + 8] = b".osrel\0\0"
    pe[s + 8 : s + 12] = struct.pack("<I", len(osrel))
    pe[s + 16 : s + 20] = struct.pack("<I", len(osrel))
    pe[s + 20 : s + 24] = struct.pack("<I", 0x200)
    return bytes(pe) + osrel + body


def keyring(tmp: Path, name: str) -> tuple[Path, Path]:
    """A signing key and a keyring folder holding its public half."""
    made = mx("update", "keygen", "--out", str(tmp / name))
    assert made.returncode == 0, made.stderr
    ring = tmp / f"{name}-ring"
    ring.mkdir()
    (ring / f"{name}.pub").write_bytes((tmp / f"{name}.pub").read_bytes())
    return tmp / f"{name}.key", ring


def make_bundle(tmp: Path, key: Path, version: str = "0.1.0.20261204120000") -> Path:
    uki = tmp / "image.efi"
    uki.write_bytes(
        pe_with_osrel(
            f'ID=mxrack\nIMAGE_ID=mxrack\nIMAGE_VERSION={version}\nMXRACK_BOARD=qemu-x86_64\n'.encode(),
            body=bytes(range(256)) * 64,
        )
    )
    out = tmp / "update.mxb"
    made = mx("update", "bundle", "--key", str(key), "--revision", "abc1234", "--out", str(out), str(uki))
    assert made.returncode == 0, made.stderr
    assert f"mxrack {version} for board qemu-x86_64".encode() in made.stdout
    return out


def verify(bundle: Path, ring: Path) -> subprocess.CompletedProcess:
    return mx("update", "verify", str(bundle), "--keys", str(ring))


def test_a_signed_bundle_verifies_from_a_file_and_from_stdin(tmp_path):
    key, ring = keyring(tmp_path, "provider")
    bundle = make_bundle(tmp_path, key)
    ok = verify(bundle, ring)
    assert ok.returncode == 0, ok.stderr
    assert b"valid" in ok.stdout and b"mxrack 0.1.0.20261204120000 for board qemu-x86_64" in ok.stdout
    assert b"revision abc1234" in ok.stdout
    piped = mx("update", "verify", "-", "--keys", str(ring), input=bundle.read_bytes())
    assert piped.returncode == 0, piped.stderr
    # The public key printed from the signing key is the keyring's.
    pub = mx("update", "pubkey", str(key))
    assert pub.stdout == (tmp_path / "provider.pub").read_bytes()


def test_another_key_is_refused_and_named(tmp_path):
    key, _ = keyring(tmp_path, "rogue")
    _, ring = keyring(tmp_path, "provider")
    bundle = make_bundle(tmp_path, key)
    bad = verify(bundle, ring)
    assert bad.returncode == 1
    assert b"not signed by a trusted key" in bad.stderr, bad.stderr


def test_changed_bytes_truncation_and_trailing_data_are_refused(tmp_path):
    key, ring = keyring(tmp_path, "provider")
    good = make_bundle(tmp_path, key).read_bytes()
    cases = {
        # The board name in the signed manifest.
        "manifest byte": (good.replace(b"qemu-x86_64", b"qemu-x86_65", 1), b"not signed by a trusted key"),
        "image byte": (good[:-100] + bytes([good[-100] ^ 1]) + good[-99:], b"SHA-256"),
        "truncated image": (good[:-10], b"ends 10 bytes early"),
        "trailing bytes": (good + b"\0", b"bytes follow the image"),
        "cut in the header": (good[:20], b"ends inside the manifest"),
        "not a bundle": (b"MZ\x90\0" + b"\0" * 200, b"wrong magic"),
        "4 GiB manifest": (b"MXBUNDL1" + b"\xff\xff\xff\xff" + b"{}", b"manifest of 4294967295 bytes"),
        "empty": (b"", b"ends inside the magic"),
    }
    for name, (data, why) in cases.items():
        f = tmp_path / "bad.mxb"
        f.write_bytes(data)
        bad = verify(f, ring)
        assert bad.returncode == 1, name
        assert why in bad.stderr, (name, bad.stderr)


def test_bundle_needs_a_versioned_image_and_keys_are_not_overwritten(tmp_path):
    key, _ = keyring(tmp_path, "provider")
    for osrel, why in (
        (b"ID=mxrack\nMXRACK_BOARD=x86_64\n", b"no IMAGE_VERSION"),
        (b"ID=mxrack\nIMAGE_VERSION=1.2-rc1\nMXRACK_BOARD=x86_64\n", b"dotted numbers"),
        (b"ID=mxrack\nIMAGE_VERSION=1.2\n", b"no MXRACK_BOARD"),
    ):
        uki = tmp_path / "image.efi"
        uki.write_bytes(pe_with_osrel(osrel))
        bad = mx("update", "bundle", "--key", str(key), "--out", str(tmp_path / "x.mxb"), str(uki))
        assert bad.returncode == 1 and why in bad.stderr, (osrel, bad.stderr)
    (tmp_path / "plain.efi").write_bytes(b"MZ" + b"\0" * 100)
    bad = mx("update", "bundle", "--key", str(key), "--out", str(tmp_path / "x.mxb"), str(tmp_path / "plain.efi"))
    assert bad.returncode == 1 and b"not a unified kernel image" in bad.stderr
    again = mx("update", "keygen", "--out", str(tmp_path / "provider"))
    assert again.returncode == 1 and b"exists: not overwritten" in again.stderr
    # A private key file that is not one is refused by name.
    (tmp_path / "junk.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    bad = mx("update", "pubkey", str(tmp_path / "junk.key"))
    assert bad.returncode == 1 and b"mxrack-update-ed25519-private" in bad.stderr


def test_install_refuses_off_the_appliance(tmp_path):
    """On a machine that was not started from the appliance's boot disk
    (this one), nothing is written and the refusal says why."""
    key, ring = keyring(tmp_path, "provider")
    bundle = make_bundle(tmp_path, key)
    cfg = tmp_path / "mxrack.toml"
    shown = mx("config", "show").stdout.decode()
    assert 'keys_dir = "/etc/mxrack/update-keys"' in shown and "trial_secs = 600" in shown
    cfg.write_text(shown.replace('"/etc/mxrack/update-keys"', f'"{ring}"'))
    checked = mx("config", "check", str(cfg))
    assert checked.returncode == 0, checked.stderr
    bad = mx("--config", str(cfg), "update", str(bundle))
    assert bad.returncode == 1
    assert b"board.conf" in bad.stderr or b"mxrack-esp" in bad.stderr, bad.stderr
    cfg.write_text(shown.replace("trial_secs = 600", "trial_secs = 5"))
    bad = mx("config", "check", str(cfg))
    assert bad.returncode == 78 and b"update.trial_secs" in bad.stderr
