#!/usr/bin/env python3
"""A DNS server for benchmarks, on 127.0.0.1 only: answers every query
NXDOMAIN without an SOA record (a sender domain that publishes no SPF or
DMARC, seen through a resolver that gives no negative TTL) and counts the
queries. Standard library only.

    python3 nxdns.py PORT COUNT_FILE

On SIGTERM it writes "<queries> <distinct names>" to COUNT_FILE and exits.
"""
import signal
import socket
import sys

port, count_file = int(sys.argv[1]), sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
queries, names = 0, set()


def stop(*_):
    with open(count_file, "w") as f:
        f.write(f"{queries} {len(names)}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
while True:
    q, peer = sock.recvfrom(512)
    if len(q) < 17:
        continue
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]])
        i += 1 + q[i]
    end = i + 5  # the zero label, QTYPE and QCLASS
    queries += 1
    names.add(b".".join(labels).lower())
    # Same id; QR, RD, RA, rcode 3; the question echoed; no records.
    sock.sendto(q[:2] + b"\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + q[12:end], peer)
