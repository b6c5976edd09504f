"""test_clients.py: the client side under abuse: half-closed TCP clients,
a congested way out for UDP answers, clients that never read, and a
descriptor limit smaller than tcp-max-clients.

Each test starts tests/dotserver and the real dotproxy on loopback (the
UDP congestion test in a network namespace of its own, where loopback is
rate-limited with tc) and reproduces the scenario with raw sockets.
Memory is read from /proc/PID/status; counters from /metrics.
"""
import contextlib
import ctypes
import os
import re
import resource
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


CLONE_NEWNET = 0x40000000
MIB = 1 << 20


@contextlib.contextmanager
def own_netns():
    """Moves this (main) thread into a new network namespace with lo up,
    and back afterwards: the processes started and the sockets made in
    the block live in it, so tc may slow its loopback down."""
    assert os.geteuid() == 0, 'needs root (network namespace, tc)'
    libc = ctypes.CDLL(None, use_errno=True)
    old = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), 'unshare(CLONE_NEWNET)')
        try:
            subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
            yield
        finally:
            h._stop_all()
            if libc.setns(old, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), 'setns back')
    finally:
        os.close(old)


def shape_udp_from(port, rate='1mbit'):
    """Slows the UDP datagrams sent from port on loopback down to rate,
    with a queue long enough that the sender's socket buffer fills (then
    sendmsg says EAGAIN) instead of the queue dropping; everything else
    on loopback keeps full speed."""
    for cmd in (
            'qdisc add dev lo root handle 1: htb default 10',
            'class add dev lo parent 1: classid 1:10 htb rate 10gbit '
            'quantum 200000',
            'class add dev lo parent 1: classid 1:20 htb rate %s ceil %s'
            % (rate, rate),
            'qdisc add dev lo parent 1:20 handle 20: pfifo limit 100000',
            'filter add dev lo parent 1: protocol ip prio 1 u32 match ip '
            'protocol 17 0xff match ip sport %d 0xffff flowid 1:20' % port):
        subprocess.run(['tc'] + cmd.split(), check=True)


def proc_kib(pid, key):
    """VmRSS, VmHWM, ... of pid in KiB."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise KeyError(key)


def metric(port, name, labels=''):
    """One sample of dotproxy's /metrics on 127.0.0.1:port."""
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port,
                                timeout=5) as r:
        text = r.read().decode()
    rx = re.compile(r'^%s%s (\S+)$' % (re.escape(name),
                                       re.escape('{%s}' % labels) if labels
                                       else ''), re.M)
    m = rx.search(text)
    assert m, 'no %s{%s} in /metrics:\n%s' % (name, labels, text)
    return float(m.group(1))


def test_udp_send_queue_is_bounded():
    c = h.certs()
    with h.tmpdir() as d, own_netns():
        hport = h.free_port()
        with h.start_dotserver(c) as up, \
                h.start_dotproxy('-c', write_conf(
                    d, up, c, 'http-listen 127.0.0.1@%d\n'
                    # 2 KB answers over UDP: above the 1232 default.
                    'max-udp-size 4096\n' % hport)) as px:
            q = h.make_query('big.flood.example', 'TXT', edns=4096)
            big = h.udp_query(px.port, q)
            assert big is not None and len(big) > 2000, big
            assert metric(hport, 'dotproxy_dns_dropped_requests_total',
                          'reason="send-queue-full"') == 0
            base = proc_kib(px.pid, 'VmRSS')
            shape_udp_from(px.port)
            # A fast client asks for the cached 2 KB answer again and
            # again: far more than 1 Mbit/s of answers, so they pile up
            # behind a full socket buffer. Bounded in count and time.
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            sent = 0
            end = time.monotonic() + 8
            try:
                while sent < 40000 and time.monotonic() < end:
                    try:
                        s.sendto(q, ('127.0.0.1', px.port))
                        sent += 1
                    except BlockingIOError:
                        time.sleep(0.001)
                # Datagrams are read in order: once an A query sent after
                # the flood is counted, every query of it has been read
                # (the kernel may have dropped some; the marker is sent
                # again until one gets through).
                deadline = time.monotonic() + 10
                while metric(hport, 'dotproxy_dns_requests_total',
                             'proto="udp",type="A"') == 0:
                    assert time.monotonic() < deadline, 'marker not read'
                    s.sendto(h.make_query('marker.example', 'A'),
                             ('127.0.0.1', px.port))
            finally:
                s.close()
            peak = proc_kib(px.pid, 'VmHWM')
            drops = metric(hport, 'dotproxy_dns_dropped_requests_total',
                           'reason="send-queue-full"')
            print('udp flood: %d queries of a %d-byte answer, RSS %d KiB '
                  'before, peak %d KiB (+%d KiB), %d dropped: queue full'
                  % (sent, len(big), base, peak, peak - base, drops))
            assert sent >= 20000, sent
            assert drops > 0, drops
            # 4 MiB of queue, plus the allocator's slack.
            # A sanitizer's shadow memory is not dotproxy's.
            assert h.sanitized(px.pid) or peak - base < 16 * 1024, \
                (base, peak)


def test_tcp_clients_that_never_read():
    c = h.certs()
    with h.tmpdir() as d, own_netns():
        # The kernel's send buffers are small in this namespace, so the
        # unread answers pile up in dotproxy rather than in the kernel.
        with open('/proc/sys/net/ipv4/tcp_wmem', 'w') as f:
            f.write('4096 16384 65536')
        hport = h.free_port()
        with h.start_dotserver(c) as up, h.start_dotproxy('-c', write_conf(
                d, up, c, 'http-listen 127.0.0.1@%d\n' % hport)) as px:
            slow_readers(px, hport)


def slow_readers(px, hport):
    if True:
        q = h.make_query('big.slow.example', 'TXT', qid=7)
        first = h.tcp_query(px.port, q)
        assert first is not None and len(first) > 2000, first
        base = proc_kib(px.pid, 'VmRSS')
        # 48 clients each ask 400 times for the cached 2 KB answer and
        # never read: 48 x 800 KB of answers, each under the 1 MiB a
        # single connection may hold, 38 MB together.
        slow = []
        try:
            for _ in range(48):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(5)
                s.connect(('127.0.0.1', px.port))
                s.sendall(framed(q) * 400)
                slow.append(s)
            # Everything the slow clients sent is in dotproxy's socket
            # buffers before this connection exists, so by the time its
            # answer comes, their queries have been read and answered.
            good = h.tcp_query(px.port, h.make_query('big.slow.example',
                                                     'TXT', qid=8))
            assert good is not None and h.Message(good).id == 8
            peak = proc_kib(px.pid, 'VmHWM')
            closed = metric(hport, 'dotproxy_tcp_slow_reader_closed_total')
            print('tcp clients that never read: RSS %d KiB before, peak %d '
                  'KiB (+%d KiB), %d connections closed'
                  % (base, peak, peak - base, closed))
            assert closed > 0, closed
            # 16 MiB of queued answers, plus the allocator's slack.
            assert h.sanitized(px.pid) or peak - base < 24 * 1024, \
                (base, peak)
        finally:
            for s in slow:
                s.close()


def test_descriptor_limit_below_max_clients():
    c = h.certs()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        port = h.free_port()
        conf = write_conf(d, up, c, 'tcp-max-clients 5000\n'
                          'tcp-idle-timeout 30s\n')
        px = h.Proc(['prlimit', '--nofile=512:512', h.DOTPROXY, '-d', '-c',
                     conf, '-l', '127.0.0.1@%d' % port], name='dotproxy')
        with px:
            px.wait_line(r'ready', stream='stderr')
            m = px.wait_line(r'tcp-max-clients 5000 is more than the '
                             r'open-file limit of 512 allows .*: at most '
                             r'(\d+) client connections( per worker '
                             r'\((\d+) workers\))?', stream='stderr')
            # The workers share the limit: each gets its part.
            cap = int(m.group(1)) * int(m.group(3) or 1)
            assert 256 < cap < 512, cap
            # 600 connections that never send a thing: more than the
            # cap, more than the descriptors.
            idle = []
            try:
                for _ in range(600):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.settimeout(5)
                    s.connect(('127.0.0.1', port))
                    idle.append(s)
                # A good client: the idle ones are evicted for it once
                # they have had their second to send a first query (that
                # grace period is what the retries wait out).
                deadline = time.monotonic() + 5
                while True:
                    r = h.tcp_query(port, h.make_query('fd.example', 'A',
                                                       qid=9), timeout=1)
                    if r is not None or time.monotonic() > deadline:
                        break
                assert r is not None and h.Message(r).rcode == 0, r
            finally:
                for s in idle:
                    s.close()
            px.signal(10)
            st = px.wait_line(r'stats:.*', stream='stderr').group(0)
            assert 'tcp_limit_closed=' in st, st
            assert 'tcp_accept_failed=' not in st, st


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


h.run([test_half_closed_client_gets_its_misses,
       test_udp_send_queue_is_bounded, test_tcp_clients_that_never_read,
       test_descriptor_limit_below_max_clients])
