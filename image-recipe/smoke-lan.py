#!/usr/bin/python3
"""The smoke test's stand-ins for a home router's services, run inside the test's own
network namespace (nothing here reaches any other network):

  smoke-lan.py ntp ADDR SECONDS   answer SNTP requests on ADDR:123 with this machine's clock
                                  (stratum 1), for at most SECONDS and 10000 requests
  smoke-lan.py mdns ADDR NAME     ask NAME's A record by multicast DNS from ADDR (port 5353,
                                  group 224.0.0.251); print the address, exit 1 without
                                  an answer within 10 s
"""

import socket
import struct
import sys
import time

NTP_EPOCH = 2208988800  # seconds from 1900 to 1970


def ntp_stamp(t):
    secs = int(t) + NTP_EPOCH
    frac = int((t - int(t)) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!II", secs, frac)


def ntp(addr, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 123))
    deadline = time.monotonic() + seconds
    served = 0
    while served < 10000:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, peer = s.recvfrom(512)
        except socket.timeout:
            break
        received = time.time()
        if len(data) < 48 or data[0] & 0x07 != 3:
            continue
        version = (data[0] >> 3) & 0x07
        # LI 0, client's version, mode 4 (server); stratum 1, poll 4, precision -20;
        # root delay and dispersion ~0; reference id LOCL.
        head = struct.pack("!BBbbII4s", (version << 3) | 4, 1, 4, -20, 0, 0x10, b"LOCL")
        reply = head + ntp_stamp(received - 1) + data[40:48] + ntp_stamp(received)
        reply += ntp_stamp(time.time())
        s.sendto(reply, peer)
        served += 1
        print(f"ntp: answered {peer[0]}", flush=True)


def mdns(addr, name):
    q = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 5353))
    group = socket.inet_aton("224.0.0.251")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + socket.inet_aton(addr))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    deadline = time.monotonic() + 10
    want = name.rstrip(".").lower()
    while time.monotonic() < deadline:
        s.sendto(q, ("224.0.0.251", 5353))
        s.settimeout(1)
        try:
            while True:
                data, peer = s.recvfrom(9000)
                found = parse_a(data, want)
                if found:
                    print(f"{name} {found} (answered by {peer[0]})")
                    return 0
        except socket.timeout:
            pass
    print(f"no mDNS answer for {name}", file=sys.stderr)
    return 1


def read_name(data, off):
    labels = []
    jumped = False
    end = off
    for _ in range(64):
        n = data[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            off = ((n & 0x3F) << 8) | data[off + 1]
            jumped = True
            continue
        labels.append(data[off + 1 : off + 1 + n].decode(errors="replace"))
        off += 1 + n
    return ".".join(labels).lower(), (end if jumped else off)


def parse_a(data, want):
    try:
        flags, qd, an, ns, ar = struct.unpack("!HHHHH", data[2:12])
        if not flags & 0x8000:
            return None
        off = 12
        for _ in range(qd):
            _, off = read_name(data, off)
            off += 4
        for _ in range(an + ns + ar):
            rname, off = read_name(data, off)
            rtype, _, _, rdlen = struct.unpack("!HHIH", data[off : off + 10])
            off += 10
            if rtype == 1 and rdlen == 4 and rname == want:
                return socket.inet_ntoa(data[off : off + 4])
            off += rdlen
    except (IndexError, struct.error):
        return None
    return None


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "ntp":
        ntp(sys.argv[2], float(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "mdns":
        sys.exit(mdns(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
