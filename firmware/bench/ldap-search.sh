#!/usr/bin/env bash
# LDAP search benchmark (issue 4). Thunderbird's autocomplete filter
#   (|(cn=*jo*)(mail=*jo*)(givenName=*jo*)(sn=*jo*))
# on a 5,000-entry address book, size limit 100 (Thunderbird's default
# maxHits), against `mxrack run` (release build) and, as the reference,
# OpenLDAP's slapd (Debian) with the mdb backend holding the same entries
# under the same DNs. Both are measured with the same load client
# (firmware/ldap/examples/ldap-load.rs) on the same machine, over plain LDAP
# on 127.0.0.1, in two modes:
#   connect  a new connection, bind and search each time (Thunderbird opens
#            a connection per autocomplete)
#   reuse    one bound connection per worker, searches back to back
# slapd runs twice: with its default {SSHA} password hash and with {ARGON2}
# at mxrack's parameters (m=19456 KiB, t=2, p=1), since a bind per search is
# mostly the cost of the password hash; mxrack runs with its bind cache
# (ldap.bind_cache_secs, the default) and without it.
#
# Run on demand: bash firmware/bench/ldap-search.sh
# Options via environment: ENTRIES (5000), WORKERS (4), SECONDS_EACH (5),
# ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/../.."
ENTRIES=${ENTRIES:-5000}
WORKERS=${WORKERS:-4}
SECONDS_EACH=${SECONDS_EACH:-5}
ROUNDS=${ROUNDS:-3}
FILTER='(|(cn=*jo*)(mail=*jo*)(givenName=*jo*)(sn=*jo*))'
SIZE_LIMIT=100
PASSWORD=bench-ldap
BASE=dc=example,dc=net
BOOK="ou=demo@example.net,ou=ab,$BASE"
BIND_DN="cn=demo@example.net,ou=auth,$BASE"

need=()
command -v ldapadd >/dev/null || need+=(ldap-utils)
command -v slapd >/dev/null || [ -x /usr/sbin/slapd ] || need+=(slapd)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    # Installing slapd must not start the system's slapd (on every
    # interface): a policy-rc.d that says no, only for this install.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
SLAPD=$(command -v slapd || echo /usr/sbin/slapd)
SLAPADD=$(command -v slapadd || echo /usr/sbin/slapadd)
SLAPPASSWD=$(command -v slappasswd || echo /usr/sbin/slappasswd)

cargo build --release -p mxrack >/dev/null
cargo build --release -p mxrack-ldap --example ldap-load >/dev/null
BIN=$PWD/target/release/mxrack
LOAD=$PWD/target/release/examples/ldap-load

WORK=$(mktemp -d /tmp/mxrack-ldap-bench.XXXXXX)
MX_PID=""
SLAPD_PID=""
cleanup() {
    [ -n "$MX_PID" ] && kill "$MX_PID" 2>/dev/null && wait "$MX_PID" 2>/dev/null
    if [ -n "$SLAPD_PID" ]; then kill "$SLAPD_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
read -r MX_PORT SLAPD_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

# --- the entries: deterministic names, some with "jo" somewhere -------------
python3 - "$ENTRIES" "$BOOK" > "$WORK/entries.ldif" <<'PY'
import sys
n, book = int(sys.argv[1]), sys.argv[2]
first = ["Jo", "Joanna", "John", "Ann", "Bob", "Carl", "Dora", "Ed", "Fay", "Gus", "Hal", "Ida",
         "Kim", "Lea", "Max", "Ned", "Olga", "Pat", "Quin", "Rita", "Sam", "Tess", "Uma", "Vic"]
last = ["Jones", "Major", "Smith", "Brown", "Green", "White", "Black", "Gray", "Walker", "Lee",
        "Young", "King", "Wright", "Hill", "Scott", "Adams", "Baker", "Clark", "Evans", "Ford",
        "Hall", "Irwin", "Kerr", "Lane", "Moss", "Nash", "Owen", "Page", "Reed", "Shaw"]
for i in range(n):
    f, l = first[i % len(first)], last[(i // len(first)) % len(last)]
    cn = f"{f} {l} {i:05d}"
    mail = f"{f.lower()}.{l.lower()}.{i}@example.org"
    print(f"dn: cn={cn},{book}")
    print("objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: inetOrgPerson")
    print(f"cn: {cn}\nsn: {l}\ngivenName: {f}\nmail: {mail}")
    print(f"telephoneNumber: +1 555 {i:04d}\no: Company {i % 97}\ntitle: Title {i % 13}\n")
PY

# --- mxrack -----------------------------------------------------------------
mxrack_conf() { # $1: ldap.bind_cache_secs
cat > "$WORK/mxrack.toml" <<TOML
[appliance]
hostname = "bench.example.net"
primary_domain = "example.net"
data_dir = "$WORK/mxdata"
demo = true

[smtp]
mx = ["127.0.0.1:0"]

[ldap]
ldap = ["127.0.0.1:$MX_PORT"]
allow_plaintext_bind = true
bind_failures_max = 1000000
max_connections = 1000
bind_cache_secs = $1

[log]
level = "warn"
TOML
}
mxrack_start() {
    : > "$WORK/mx.out"
    "$BIN" --config "$WORK/mxrack.toml" run > "$WORK/mx.out" 2> "$WORK/mx.err" &
    MX_PID=$!
    for _ in $(seq 1 100); do grep -q '^mxrack ready' "$WORK/mx.out" && break; sleep 0.1; done
    grep -q '^mxrack ready' "$WORK/mx.out" || { cat "$WORK/mx.err"; exit 1; }
}
mxrack_stop() {
    kill "$MX_PID"; wait "$MX_PID" 2>/dev/null || true; MX_PID=""
}
mxrack_conf 300
mxrack_start
"$BIN" --config "$WORK/mxrack.toml" ldap passwd demo@example.net --password "$PASSWORD" >/dev/null
start=$(date +%s.%N)
ldapadd -x -H "ldap://127.0.0.1:$MX_PORT" -D "$BIND_DN" -w "$PASSWORD" -f "$WORK/entries.ldif" >/dev/null
end=$(date +%s.%N)
MX_LOAD=$(python3 -c "print(f'{$ENTRIES/($end-$start):.0f}')")

# --- slapd, mdb backend, the same DNs ------------------------------------------
mkdir -p "$WORK/slapd/db"
slapd_conf() { # the mdb database under WORK, schema for inetOrgPerson, argon2 loaded
    cat > "$WORK/slapd/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload argon2 m=19456 t=2 p=1
pidfile $WORK/slapd/slapd.pid
argsfile $WORK/slapd/slapd.args
loglevel 0
database mdb
suffix "$BASE"
rootdn "cn=admin,$BASE"
directory $WORK/slapd/db
maxsize 1073741824
index objectClass eq
access to * by users read by anonymous auth
CONF
}
slapd_conf
slapd_load() { # $1: password hash scheme
    rm -rf "$WORK/slapd/db" && mkdir -p "$WORK/slapd/db"
    local hash
    hash=$("$SLAPPASSWD" -o module-path=/usr/lib/ldap -o module-load="argon2 m=19456 t=2 p=1" -h "$1" -s "$PASSWORD")
    {
        printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example.net\n\n' "$BASE"
        printf 'dn: ou=auth,%s\nobjectClass: organizationalUnit\nou: auth\n\n' "$BASE"
        printf 'dn: %s\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: demo@example.net\nuserPassword: %s\n\n' "$BIND_DN" "$hash"
        printf 'dn: ou=ab,%s\nobjectClass: organizationalUnit\nou: ab\n\n' "$BASE"
        printf 'dn: %s\nobjectClass: organizationalUnit\nou: demo@example.net\n\n' "$BOOK"
        cat "$WORK/entries.ldif"
    } > "$WORK/slapd/all.ldif"
    "$SLAPADD" -q -f "$WORK/slapd/slapd.conf" -l "$WORK/slapd/all.ldif"
}
slapd_start() {
    "$SLAPD" -f "$WORK/slapd/slapd.conf" -h "ldap://127.0.0.1:$SLAPD_PORT/"
    for _ in $(seq 1 100); do [ -s "$WORK/slapd/slapd.pid" ] && break; sleep 0.1; done
    SLAPD_PID=$(cat "$WORK/slapd/slapd.pid")
    for _ in $(seq 1 100); do
        ldapwhoami -x -H "ldap://127.0.0.1:$SLAPD_PORT" -D "$BIND_DN" -w "$PASSWORD" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "slapd did not answer"; exit 1
}
slapd_stop() {
    kill "$SLAPD_PID"
    for _ in $(seq 1 100); do kill -0 "$SLAPD_PID" 2>/dev/null || break; sleep 0.1; done
    SLAPD_PID=""
    rm -f "$WORK/slapd/slapd.pid"
}

run() { # $1: port, $2: mode -> "searches/s entries/search"
    local line
    line=$("$LOAD" "127.0.0.1:$1" "$BIND_DN" "$PASSWORD" "$BOOK" "$FILTER" "$2" "$WORKERS" "$SECONDS_EACH" "$SIZE_LIMIT")
    echo "  $line" >&2
    python3 -c "
import sys
kv = dict(p.split('=') for p in sys.argv[1].split())
assert int(kv['errors']) == 0, sys.argv[1]
print(kv['per_second'], kv['entries_per_search'])" "$line"
}

echo "== $ENTRIES entries, filter $FILTER, size limit $SIZE_LIMIT, $WORKERS workers, ${ROUNDS} rounds of ${SECONDS_EACH}s per figure (median and range)"
echo "mxrack: loaded by ldapadd at $MX_LOAD adds/s (each add one durable commit)"
# Both servers up at once, runs interleaved, so that a change in the
# machine's load hits both alike.
slapd_load '{SSHA}'; slapd_start
MXC=(); SLC=(); MXR=(); SLR=()
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round: mxrack connect, slapd connect, mxrack reuse, slapd reuse" >&2
    read -r v MX_N < <(run "$MX_PORT" connect); MXC+=("$v")
    read -r v SL_N < <(run "$SLAPD_PORT" connect); SLC+=("$v")
    read -r v _ < <(run "$MX_PORT" reuse); MXR+=("$v")
    read -r v _ < <(run "$SLAPD_PORT" reuse); SLR+=("$v")
done
MX_RSS=$(awk '/VmHWM/ {print $2}' "/proc/$MX_PID/status")
mxrack_stop; slapd_stop

# A full Argon2 check per bind on both sides: mxrack without its bind
# cache, slapd with {ARGON2} at mxrack's parameters.
mxrack_conf 0; mxrack_start
slapd_load '{ARGON2}'; slapd_start
MXA=(); SLA=()
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round: mxrack connect without bind cache, slapd {ARGON2} connect" >&2
    read -r v _ < <(run "$MX_PORT" connect); MXA+=("$v")
    read -r v _ < <(run "$SLAPD_PORT" connect); SLA+=("$v")
done
MX_RSS_NOCACHE=$(awk '/VmHWM/ {print $2}' "/proc/$MX_PID/status")
mxrack_stop; slapd_stop

python3 - "$MX_N" "$SL_N" "$MX_RSS" "$MX_RSS_NOCACHE" "${MXC[*]}" "${SLC[*]}" "${MXR[*]}" "${SLR[*]}" "${MXA[*]}" "${SLA[*]}" <<'PY'
import statistics, sys
mn, sn, rss, rss_nc = sys.argv[1:5]
mxc, slc, mxr, slr, mxa, sla = ([float(x) for x in a.split()] for a in sys.argv[5:11])
def cell(v):
    return f"{statistics.median(v):8.1f} ({min(v):.0f}-{max(v):.0f})"
print(f"entries per search: mxrack {mn}, slapd {sn}")
print(f"{'searches/s':40} {'mxrack':>19} {'slapd':>19} {'mxrack/slapd':>13}")
rows = [
    ("bind per search (mxrack cache, {SSHA})", mxc, slc),
    ("bind per search (Argon2 both sides)", mxa, sla),
    ("one bind, searches reused", mxr, slr),
]
for name, m, s in rows:
    print(f"{name:40} {cell(m):>19} {cell(s):>19} {statistics.median(m)/statistics.median(s):13.2f}")
print(f"mxrack peak RSS {int(rss)/1024:.1f} MiB (bind cache), {int(rss_nc)/1024:.1f} MiB (Argon2 per bind)")
if mn != sn:
    print(f"MISMATCH: entries per search differ ({mn} vs {sn})")
    sys.exit(1)
PY
