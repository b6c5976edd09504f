"""test_clients.py: the client side under abuse: half-closed TCP clients,
a congested way out for UDP answers, clients that never read, and a
descriptor limit smaller than tcp-max-clients.

Each test starts tests/dotserver and the real dotproxy on loopback (the
UDP congestion test in a network namespace of its own, where loopback is
rate-limited with tc) and reproduces the scenario with raw sockets.
Memory is read from /proc/PID/status; counters from /metrics.
"""
import os
import re
import socket
import struct
import subprocess
import time
import urllib.request

import harness as h

QUERY_RE = r'^query id=\w+ name=%s type=%d\b'


def write_conf(d, up, c, extra=''):
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('upstream 127.0.0.1@%d#dns.example\n' % up.port)
        f.write('ca-file %s\n' % c['ca'])
        f.write('query-timeout 2s\nconnect-timeout 1s\n')
        f.write(extra)
    return path


def framed(wire):
    return struct.pack('!H', len(wire)) + wire


def recv_frame(s):
    """One framed message from s, or None when the peer closed first."""
    buf = b''
    want = 2
    size = None
    while len(buf) < want:
        chunk = s.recv(want - len(buf))
        if not chunk:
            return None
        buf += chunk
        if size is None and len(buf) == 2:
            size = struct.unpack('!H', buf)[0]
            want = 2 + size
    return buf[2:]


def test_half_closed_client_gets_its_misses():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            h.start_dotproxy('-c', write_conf(d, up, c)) as px:
        # A miss the upstream answers after 300 ms, and a second one in
        # the same write; then the client's FIN, before any answer exists.
        s = socket.create_connection(('127.0.0.1', px.port), 5)
        try:
            s.settimeout(5)
            s.sendall(framed(h.make_query('delay300.half.example', 'A',
                                          qid=1)) +
                      framed(h.make_query('delay200.half2.example', 'A',
                                          qid=2)))
            s.shutdown(socket.SHUT_WR)
            got = {}
            for _ in range(2):
                m = recv_frame(s)
                assert m is not None, 'closed with answers pending: %r' % got
                msg = h.Message(m)
                got[msg.id] = msg
            assert sorted(got) == [1, 2], got
            assert got[1].rcode == 0 and len(got[1].answers) == 1
            assert got[2].rcode == 0 and len(got[2].answers) == 1
            # Then dotproxy closes: no more queries can come.
            assert s.recv(1) == b''
        finally:
            s.close()
        # A cached answer to a half-closed client, as before.
        s = socket.create_connection(('127.0.0.1', px.port), 5)
        try:
            s.settimeout(5)
            s.sendall(framed(h.make_query('delay300.half.example', 'A',
                                          qid=3)))
            s.shutdown(socket.SHUT_WR)
            m = recv_frame(s)
            assert m is not None and h.Message(m).id == 3
            assert s.recv(1) == b''
        finally:
            s.close()
        up.expect_count(QUERY_RE % (r'delay300\.half\.example\.', 1), 1)


h.run([test_half_closed_client_gets_its_misses])
