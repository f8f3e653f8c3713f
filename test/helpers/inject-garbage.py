#!/usr/bin/env python3
"""Write malformed packets towards cluster addresses, so that the kernel hands
them to rdbg's TUN device: truncated and nonsensical TCP/UDP headers, fragments,
unknown protocols, IPv4 and IPv6. Fixed seed, bounded count.
Usage: inject-garbage.py V4ADDR V6ADDR COUNT"""
import random
import socket
import struct
import sys

v4, v6, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(1234)
src4 = b"\0\0\0\0"  # the kernel fills in the source for us


def ipv4(proto, payload, frag=0, ihl=5):
    opts = bytes(rnd.getrandbits(8) for _ in range((ihl - 5) * 4))
    hdr = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, 0, rnd.getrandbits(16), frag, 64, proto, 0, src4, socket.inet_aton(v4))
    return hdr + opts + payload


def junk(n):
    return bytes(rnd.getrandbits(8) for _ in range(n))


s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sent = 0
for i in range(count):
    kind = i % 6
    if kind == 0:  # TCP header cut short
        pkt = ipv4(6, junk(rnd.randrange(0, 19)))
    elif kind == 1:  # TCP data offset below 5 or beyond the packet
        tcp = bytearray(junk(20))
        tcp[12] = rnd.choice([0x00, 0x10, 0x40, 0xF0])
        pkt = ipv4(6, bytes(tcp))
    elif kind == 2:  # UDP length that lies
        udp = struct.pack("!HHHH", rnd.getrandbits(16), 7, rnd.choice([0, 3, 65535]), 0) + junk(8)
        pkt = ipv4(17, udp)
    elif kind == 3:  # a fragment
        pkt = ipv4(6, junk(40), frag=0x2000 | rnd.randrange(0, 100))
    elif kind == 4:  # garbage IP options and payload
        pkt = ipv4(rnd.choice([6, 17, 47, 132, 255]), junk(rnd.randrange(0, 60)), ihl=rnd.randrange(6, 15))
    else:  # a SYN with random flags, ports and options
        tcp = struct.pack("!HHIIBBHHH", rnd.getrandbits(16), rnd.getrandbits(16), rnd.getrandbits(32), rnd.getrandbits(32), 0x50, rnd.getrandbits(8), 0, 0, 0)
        pkt = ipv4(6, tcp + junk(rnd.randrange(0, 8)))
    try:
        s4.sendto(pkt, (v4, 0))
        sent += 1
    except OSError:
        pass

try:
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for i in range(count // 4):
        proto = rnd.choice([6, 17, 0, 43, 44])  # TCP, UDP, hop-by-hop, routing, fragment headers
        payload = junk(rnd.randrange(0, 30))
        hdr = struct.pack("!IHBB16s16s", 6 << 28, len(payload) + rnd.choice([0, 0, 5]), proto, 64, bytes(16), socket.inet_pton(socket.AF_INET6, v6))
        try:
            s6.sendto(hdr + payload, (v6, 0))
            sent += 1
        except OSError:
            pass
except OSError:
    pass
print(sent)
