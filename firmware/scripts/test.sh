#!/usr/bin/env bash
# The whole test suite: lints, unit and in-memory session tests (cargo), then
# end-to-end tests with real clients (pytest driving smtplib, swaks, curl)
# against the real binary on 127.0.0.1. Installs what it needs on a fresh
# Debian machine (run as root, as CI does).
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v swaks >/dev/null || need_apt+=(swaks)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v ldapsearch >/dev/null || need_apt+=(ldap-utils)
# The status page is looked at in a real browser (firmware/e2e/test_status.py).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q 'pytest==8.3.4'
python3 -c 'import ldap3' 2>/dev/null || python3 -m pip install -q 'ldap3==2.9.1'

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== end-to-end tests with real clients"
cargo build --locked -p mxrack
MXRACK_BIN="$PWD/target/debug/mxrack" python3 -m pytest -q firmware/e2e
