#!/usr/bin/env bash
# The whole test suite: lints, unit and in-memory session tests (cargo), then
# end-to-end tests with real clients (pytest driving smtplib, swaks, curl)
# against the real binary on 127.0.0.1. Installs what it needs on a fresh
# Debian machine (run as root, as CI does).
set -euo pipefail
cd "$(dirname "$0")/../.."

E2E_VENV="$PWD/target/e2e-venv"
E2E_PY="$E2E_VENV/bin/python"
E2E_REQ=firmware/e2e/requirements.txt

install_deps() {
    need_apt=()
    command -v swaks >/dev/null || need_apt+=(swaks)
    command -v curl >/dev/null || need_apt+=(curl)
    command -v openssl >/dev/null || need_apt+=(openssl)
    # `ip netns` for the MTA-STS and DANE tests' network namespace.
    command -v ip >/dev/null || need_apt+=(iproute2)
    # The DANE test's DNS server: Knot signs its root zone (DNSSEC).
    command -v knotd >/dev/null || [ -x /usr/sbin/knotd ] || need_apt+=(knot)
    # SpamAssassin's rule files, which the scorer can read (test_spam_rules.py).
    [ -f /usr/share/spamassassin/50_scores.cf ] || need_apt+=(spamassassin)
    command -v ldapsearch >/dev/null || need_apt+=(ldap-utils)
    # The status page is looked at in a real browser (firmware/e2e/test_status.py).
    command -v chromium >/dev/null || need_apt+=(chromium)
    # The Manager is used in a real browser driven by selenium through
    # chromedriver (firmware/e2e/test_manager.py).
    command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
    # CardDAV's real clients (firmware/e2e/test_carddav.py): vdirsyncer, litmus and
    # python3-caldav (Debian's, in /usr/lib/python3/dist-packages, which the test
    # appends to sys.path when its python cannot import caldav, as the venv's
    # python cannot: the venv does not see site packages).
    command -v vdirsyncer >/dev/null || need_apt+=(vdirsyncer)
    command -v litmus >/dev/null || need_apt+=(litmus)
    [ -e /usr/lib/python3/dist-packages/caldav/__init__.py ] || need_apt+=(python3-caldav)
    # The e2e tests' Python packages go into a virtual environment of our own
    # (Debian's python3 refuses `pip install` into itself: PEP 668,
    # externally-managed-environment). Debian splits venv's pip bootstrap
    # (ensurepip) into python3-venv.
    python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
    if [ ${#need_apt[@]} -gt 0 ]; then
        echo "== installing ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
    # A venv whose python no longer runs (python3 upgraded or moved) is made
    # again. No --system-site-packages: the venv holds exactly the pins; the
    # CardDAV test finds Debian's python3-caldav by itself.
    if ! "$E2E_PY" -c 'import sys' 2>/dev/null; then
        echo "== making the Python virtual environment $E2E_VENV"
        rm -rf "$E2E_VENV"
        python3 -m venv "$E2E_VENV"
    fi
    # The pins are installed again only when requirements.txt changed.
    if ! cmp -s "$E2E_REQ" "$E2E_VENV/requirements.installed"; then
        echo "== installing the pinned Python packages of $E2E_REQ into $E2E_VENV"
        "$E2E_PY" -m pip install -q -r "$E2E_REQ"
        cp "$E2E_REQ" "$E2E_VENV/requirements.installed"
    fi
}

install_deps
# `test.sh --deps-only`: the tools and the venv, nothing built or run; then run
# one e2e file with `MXRACK_BIN=$PWD/target/debug/mxrack target/e2e-venv/bin/python
# -m pytest -q firmware/e2e/test_X.py`.
if [ "${1:-}" = --deps-only ]; then
    echo "== dependencies ready; e2e python: $E2E_PY"
    exit 0
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --exclude mxrack-fuzz
# The fuzz targets' smoke run (issue 10): each committed corpus plus fixed-seed
# mutations through the cargo-fuzz harnesses, about 20 s per target.
echo "== fuzz smoke run"
cargo test --locked -p mxrack-fuzz
echo "== end-to-end tests with real clients"
cargo build --locked -p mxrack
MXRACK_BIN="$PWD/target/debug/mxrack" "$E2E_PY" -m pytest -q firmware/e2e \
    --ignore=firmware/e2e/test_mta_sts.py --ignore=firmware/e2e/test_dane.py
# MTA-STS and DANE (issue 16) need the protocol's own ports, 25 for the MX
# and 443 for the policy host: those files run in a network namespace of
# their own, on its own loopback, where nothing else listens and no packet
# leaves. The slow reverse zone tests of test_mailauth.py need client
# addresses outside 127/8 and run there too.
echo "== MTA-STS, DANE and slow reverse zones end to end, in a network namespace of their own"
sts_ns="mxrack-e2e-sts-$$"
ip netns add "$sts_ns"
trap 'ip netns del "$sts_ns" 2>/dev/null || true' EXIT
ip netns exec "$sts_ns" ip link set lo up
# Clients outside 127/8, whose reverse zones the iprev tests' DNS server
# answers slowly (the resolver answers 127/8's reverse names itself).
ip netns exec "$sts_ns" ip addr add 192.0.2.10/32 dev lo
ip netns exec "$sts_ns" ip addr add 192.0.2.11/32 dev lo
ip netns exec "$sts_ns" env MXRACK_E2E_NETNS="$sts_ns" MXRACK_BIN="$PWD/target/debug/mxrack" \
    "$E2E_PY" -m pytest -q firmware/e2e/test_mta_sts.py firmware/e2e/test_dane.py \
    firmware/e2e/test_mailauth.py::test_a_silent_reverse_zone_costs_iprev_not_the_dmarc_verdict \
    firmware/e2e/test_mailauth.py::test_slow_names_behind_a_ptr_cost_iprev_not_the_dmarc_verdict
ip netns del "$sts_ns"
trap - EXIT

# ---------------------------------------------------------------------------
# Firmware image and hardware-in-the-loop (HIL) scenarios under QEMU (issue 7).
# Builds the image offline (image/build: Debian's kernel, busybox, mdadm and
# the static mxrack) and boots it in QEMU (hil-tests/run). See README,
# "Firmware image".
echo "== firmware image and HIL scenarios under QEMU"
hil_apt=()
command -v qemu-system-x86_64 >/dev/null || hil_apt+=(qemu-system-x86)
command -v genimage >/dev/null || hil_apt+=(genimage)
command -v mcopy >/dev/null || hil_apt+=(mtools)
command -v mkdosfs >/dev/null || hil_apt+=(dosfstools)
command -v objcopy >/dev/null || hil_apt+=(binutils)
command -v ldapsearch >/dev/null || hil_apt+=(ldap-utils)
[ -e /usr/share/OVMF/OVMF_CODE.fd ] || hil_apt+=(ovmf)
if [ ${#hil_apt[@]} -gt 0 ]; then
    echo "== installing ${hil_apt[*]}"
    apt-get update -qq
    if [[ " ${hil_apt[*]} " == *" qemu-system-x86 "* ]]; then
        # qemu-system-x86 and qemu-utils together, at the same version: a
        # newer qemu-utils (as these machines come with) blocks the install.
        qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
        hil_apt+=("qemu-utils=$qemu_version")
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades \
        --no-install-recommends "${hil_apt[@]}" >/dev/null
fi
python3 image/build
# The replica pair's image (scenario 9): the same firmware with a [replica]
# section; no boot disk (its guests boot with -kernel).
python3 image/build --no-disk-image --extra-config board/qemu-x86_64/replica.toml \
    --name qemu-x86_64-replica --binary target/x86_64-unknown-linux-gnu/release/mxrack
# Scenario 10's updates (A/B, issue 14): two newer images, built after the
# main one (image versions carry the build time), as signed bundles only: a
# good one, and one that never reaches ready (hil-tests/images/update-broken.toml).
python3 image/build --no-disk-image --name qemu-x86_64-next \
    --binary target/x86_64-unknown-linux-gnu/release/mxrack
python3 image/build --no-disk-image --extra-config hil-tests/images/update-broken.toml \
    --name qemu-x86_64-broken --binary target/x86_64-unknown-linux-gnu/release/mxrack
python3 hil-tests/run
