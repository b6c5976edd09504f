"""test_basic.py: dotproxy end to end over UDP and TCP, with real clients.

Each test starts tests/dotserver (our DoT test server) and the real dotproxy
binary on 127.0.0.1, asks with dig, kdig, c-ares or raw sockets, and checks
the answers and what the backend saw (its log lines: one per handshake and
per query received).
"""
import os
import socket
import struct
import time

import harness as h

QUERY_RE = r'^query id=\w+ name=%s type=%d\b'


def write_conf(d, up, c, extra=''):
    """A config file naming the test backend, with short timeouts."""
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('upstream 127.0.0.1@%d#dns.example\n' % up.port)
        f.write('ca-file %s\n' % c['ca'])
        f.write('query-timeout 2s\nconnect-timeout 1s\n')
        f.write(extra)
    return path


# For tests of one upstream connection's behaviour (each worker has its
# own connection): one worker.
ONE_CONNECTION = 'workers 1\n'


def start(d, up, c, extra=''):
    return h.start_dotproxy('-c', write_conf(d, up, c, extra))


def test_udp_miss_then_hit():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        r = h.dig(px.port, 'www.example', 'A')
        assert r.rcode == 'NOERROR', r.raw
        assert r.data('A') == ['192.0.2.1'], r.raw
        assert r.answers[0][1] == 300, r.raw
        up.wait_count(QUERY_RE % (r'www\.example\.', 1), 1)
        r2 = h.dig(px.port, 'www.example', 'A')
        assert r2.rcode == 'NOERROR' and r2.data('A') == ['192.0.2.1'], r2.raw
        assert r2.answers[0][1] <= 300
        up.expect_count(QUERY_RE % (r'www\.example\.', 1), 1)
        # SIGUSR1 logs the counters and each upstream's state.
        px.signal(10)
        px.wait_line(r'stats:.* cache_hits=1 cache_misses=1', stream='stderr')
        px.wait_line(r'upstream 127\.0\.0\.1@%d#dns\.example: up, '
                     r'connected, .*certificate verified, expires [1-9]'
                     % up.port, stream='stderr')


def test_hit_ttl_is_lowered():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        t0 = time.monotonic()
        r = h.dig(px.port, 'ttl100.example', 'A')
        stored = time.monotonic()
        assert r.answers and r.answers[0][1] == 100, r.raw
        # The passage of time is what is under test here, not a wait for
        # an event: the cached TTL must drop by whole seconds, by at least
        # the time since the answer came and at most the time since the
        # question left (a loaded machine can make dig slow to start).
        time.sleep(2.1)
        r2 = h.dig(px.port, 'ttl100.example', 'A')
        t1 = time.monotonic()
        assert r2.answers, r2.raw
        low = 100 - int(t1 - t0) - 1
        assert low <= r2.answers[0][1] <= 98, (low, r2.raw)
        up.expect_count(QUERY_RE % (r'ttl100\.example\.', 1), 1)


def test_tcp_miss_then_hit():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        r = h.dig(px.port, 'tcp1.example', 'AAAA', tcp=True)
        assert r.rcode == 'NOERROR', r.raw
        assert r.data('AAAA') == ['2001:db8::1'], r.raw
        r2 = h.dig(px.port, 'tcp1.example', 'AAAA', tcp=True)
        assert r2.data('AAAA') == ['2001:db8::1'], r2.raw
        up.expect_count(QUERY_RE % (r'tcp1\.example\.', 28), 1)


def test_client_spelling_and_id():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        for qid, name in ((0x1111, 'MiXeD.Example'), (0x2222, 'mixed.EXAMPLE')):
            q = h.make_query(name, 'A', qid=qid)
            reply = h.udp_query(px.port, q)
            assert reply is not None
            assert h.parse_header(reply)[0] == qid
            # The question comes back byte for byte as the client sent it.
            assert reply[12:len(q)] == q[12:], (reply[12:len(q)], q[12:])
            m = h.Message(reply)
            assert m.rcode == 0 and len(m.answers) == 1
        up.expect_count(QUERY_RE % (r'mixed\.example\.', 1), 1)


def test_negative_answers_cached():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        for _ in range(2):
            r = h.dig(px.port, 'nx1.example', 'A')
            assert r.rcode == 'NXDOMAIN', r.raw
            assert any(a[2] == 'SOA' for a in r.authority), r.raw
            r = h.dig(px.port, 'nodata1.example', 'A')
            assert r.rcode == 'NOERROR' and not r.answers, r.raw
        up.expect_count(QUERY_RE % (r'nx1\.example\.', 1), 1)
        up.expect_count(QUERY_RE % (r'nodata1\.example\.', 1), 1)
        # No SOA: nothing to take a negative TTL from, so not cached.
        for _ in range(2):
            assert h.dig(px.port, 'nosoa1.example').rcode == 'NXDOMAIN'
        up.wait_count(QUERY_RE % (r'nosoa1\.example\.', 1), 2)


def test_thousand_queries_one_connection():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        want = {}
        got = {}
        try:
            # In windows of 100 outstanding queries, all cache misses.
            for base in range(0, 1000, 100):
                for i in range(base, base + 100):
                    want[i] = 'n%d.example.' % i
                    s.sendto(h.make_query('n%d.example' % i, 'A', qid=i),
                             ('127.0.0.1', px.port))
                while len(got) < base + 100:
                    m = h.Message(s.recvfrom(65535)[0])
                    got[m.id] = m
        finally:
            s.close()
        for i, name in want.items():
            m = got[i]
            assert m.rcode == 0 and m.question[0] == name, (i, m.question)
            assert len(m.answers) == 1
        up.expect_count(r'^query ', 1000)
        up.expect_count(r'^handshake ok', 1)
        up.expect_count(r'^accept', 1)


def test_burst_of_hits_one_socket():
    """200 queries for cached names sent back to back from one socket:
    they reach dotproxy in recvmmsg batches, and the answers leave in
    sendmmsg batches; each is answered once, with its ID and question,
    and none goes upstream."""
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        names = ['b%d.example' % i for i in range(20)]
        for i, name in enumerate(names):
            m = h.Message(h.udp_query(px.port, h.make_query(name, 'A',
                                                           qid=i)))
            assert m.rcode == 0 and len(m.answers) == 1
        up.expect_count(r'^query ', 20)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.settimeout(5)
        got = {}
        try:
            for i in range(200):
                s.sendto(h.make_query(names[i % 20].upper(), 'A',
                                      qid=1000 + i), ('127.0.0.1', px.port))
            while len(got) < 200:
                raw = s.recvfrom(65535)[0]
                m = h.Message(raw)
                assert m.id not in got, 'answered twice: %d' % m.id
                got[m.id] = raw
        finally:
            s.close()
        for i in range(200):
            raw = got[1000 + i]
            m = h.Message(raw)
            assert m.rcode == 0 and len(m.answers) == 1, m.answers
            # The question as the client spelled it (upper case).
            q = h.encode_name(names[i % 20].upper())
            assert raw[12:12 + len(q)] == q, (i, raw[12:12 + len(q)])
        up.expect_count(r'^query ', 20)


def test_tcp_burst_of_hits_one_write():
    """300 pipelined queries for cached names in one send on one TCP
    connection, big (2 KB) answers among them: the answers a read makes
    at once leave together (batches of up to 128 KiB); each comes once,
    framed, with its ID and question, and none goes upstream again."""
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        names = ['t%d.example' % i for i in range(10)] + ['big.t.example']
        for name in names:
            r = h.tcp_query(px.port, h.make_query(name, 'TXT'))
            assert r is not None and h.Message(r).rcode == 0
        up.expect_count(r'^query ', len(names))
        wire = b''.join(
            struct.pack('!H', len(q)) + q for q in
            (h.make_query(names[i % len(names)], 'TXT', qid=2000 + i)
             for i in range(300)))
        got = {}
        with h.TcpConn(px.port, timeout=5) as t:
            t.s.sendall(wire)
            while len(got) < 300:
                raw = t.recv()
                assert raw is not None, 'closed after %d answers' % len(got)
                m = h.Message(raw)
                assert m.id not in got, 'answered twice: %d' % m.id
                got[m.id] = m
        for i in range(300):
            m = got[2000 + i]
            assert m.rcode == 0
            assert m.question[0] == names[i % len(names)] + '.'
        up.expect_count(r'^query ', len(names))


def test_out_of_order_answers_reach_right_clients():
    c = h.certs()
    with h.tmpdir() as d, \
            h.start_dotserver(c, '--reverse', '10') as up, \
            start(d, up, c, ONE_CONNECTION) as px:
        socks = []
        try:
            for i in range(10):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(5)
                s.sendto(h.make_query('ooo%d.example' % i, 'TXT', qid=100 + i),
                         ('127.0.0.1', px.port))
                socks.append(s)
            for i, s in enumerate(socks):
                m = h.Message(s.recvfrom(65535)[0])
                assert m.id == 100 + i
                assert m.question[0] == 'ooo%d.example.' % i
                assert m.rcode == 0 and len(m.answers) == 1
        finally:
            for s in socks:
                s.close()
        # The backend really answered in reverse order. It logs each
        # answer after writing it, so wait for all ten lines.
        up.wait_count(r'^answer ', 10)
        ids = [l.split()[1] for l in up.output('stdout')
               if l.startswith('answer ')]
        assert len(ids) == 10
        qids = [l.split()[1] for l in up.output('stdout')
                if l.startswith('query ')]
        assert ids == list(reversed(qids)), (ids, qids)


def test_tcp_pipelining_out_of_order():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        with h.TcpConn(px.port, timeout=5) as t:
            # The slow one first: its answer must come last, the others
            # must not wait for it.
            t.send(h.make_query('delay400.example', 'A', qid=1))
            for i in range(2, 6):
                t.send(h.make_query('fast%d.example' % i, 'A', qid=i))
            order = []
            for _ in range(5):
                m = h.Message(t.recv())
                assert m.rcode == 0
                assert m.question[0] == ('delay400.example.' if m.id == 1
                                         else 'fast%d.example.' % m.id)
                order.append(m.id)
            assert sorted(order) == [1, 2, 3, 4, 5]
            assert order[-1] == 1, order


def test_truncation_then_tcp():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        # No EDNS: 512 bytes at most, so the ~900-byte answer is cut.
        reply = h.udp_query(px.port, h.make_query('mid1.example', 'TXT'))
        m = h.Message(reply)
        assert m.tc and not m.answers and len(reply) <= 512, len(reply)
        assert m.question[0] == 'mid1.example.'
        # With EDNS 1232 it fits.
        m = h.Message(h.udp_query(px.port, h.make_query(
            'mid1.example', 'TXT', edns=1232)))
        assert not m.tc and len(m.answers) == 1
        assert len(m.answers[0][4]) > 800
        # The big one is cut even with EDNS, and whole over TCP (dig).
        r = h.dig(px.port, 'big1.example', 'TXT', extra=['+ignore', '+bufsize=1232'])
        assert 'tc' in r.flags and not r.answers, r.raw
        r = h.dig(px.port, 'big1.example', 'TXT', tcp=True)
        assert r.rcode == 'NOERROR' and len(r.answers) == 1, r.raw
        assert r.answers[0][3].count('"') == 40, r.raw
        up.expect_count(QUERY_RE % (r'big1\.example\.', 16), 1)
        up.expect_count(QUERY_RE % (r'mid1\.example\.', 16), 1)


def test_malformed_input():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        good = h.make_query('ok.example', 'A', qid=0x4242)
        # Two questions: FORMERR.
        two = bytearray(good)
        two[5] = 2
        r = h.udp_query(px.port, bytes(two) + good[12:])
        assert r is not None and h.parse_header(r)[2] == 1, r
        # Opcode 2 (STATUS): NOTIMP.
        op = bytearray(good)
        op[2] |= 2 << 3
        r = h.udp_query(px.port, bytes(op))
        assert r is not None and h.parse_header(r)[2] == 4, r
        # A label running past the end: FORMERR with the ID.
        r = h.udp_query(px.port, good[:12] + b'\x3fabc')
        assert r is not None and h.parse_header(r)[:3:2] == (0x4242, 1), r
        # Unanswerable: too short, or a response (QR set): dropped.
        assert h.udp_query(px.port, b'\x01\x02\x03', timeout=0.5) is None
        qr = bytearray(good)
        qr[2] |= 0x80
        assert h.udp_query(px.port, bytes(qr), timeout=0.5) is None
        # Drops are logged (rate-limited), naming the sender.
        px.wait_line(r'dropped an unanswerable udp message from '
                     r'127\.0\.0\.1@\d+', stream='stderr')
        # Garbage over TCP too, then a good query on the same connection.
        with h.TcpConn(px.port) as t:
            # A query header (QR clear) followed by a reserved label type.
            t.send(b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00'
                   + b'\xff' * 18)
            m = t.recv()
            assert m is not None and h.parse_header(m)[2] == 1
            t.send(good)
            m = h.Message(t.recv())
            assert m.id == 0x4242 and m.rcode == 0
        # Still alive, nothing malformed went upstream.
        assert h.dig(px.port, 'after.example').rcode == 'NOERROR'
        up.expect_count(r'^query ', 2)


def test_real_clients():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        status, lines = h.ares_client(px.port, 'cares.example', 'A')
        assert status == 0 and 'rcode=NOERROR' in lines, lines
        assert any(l.startswith('A 192.0.2.1 ') for l in lines), lines
        status, lines = h.ares_client(px.port, 'cares.example', 'A', tcp=True)
        assert status == 0 and 'rcode=NOERROR' in lines, lines
        r = h.kdig(px.port, 'knot.example', 'TXT', tcp=True)
        assert r.rcode == 'NOERROR' and r.data('TXT') == ['"hello"'], r.raw
        up.expect_count(QUERY_RE % (r'cares\.example\.', 1), 1)


def test_ipv6_listener():
    c = h.certs()
    port = h.free_port()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            h.start_dotproxy('-c', write_conf(d, up, c), '-l',
                             '::1@%d' % port, listen=False, port=port) as px:
        r = h._run_tool(['dig', '@::1', '-p', str(port), '+tries=1',
                         '+time=5', 'v6.example', 'AAAA'], 15)
        assert r.rcode == 'NOERROR' and r.data('AAAA') == ['2001:db8::1'], \
            r.raw
        r = h._run_tool(['dig', '@::1', '-p', str(port), '+tries=1',
                         '+time=5', '+tcp', 'v6.example', 'AAAA'], 15)
        assert r.rcode == 'NOERROR', r.raw
        up.expect_count(QUERY_RE % (r'v6\.example\.', 28), 1)
        px.wait_line(r'listening on ::1@%d' % port, stream='stderr')


def test_tcp_idle_timeout_and_cap():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            start(d, up, c, 'tcp-idle-timeout 300ms\ntcp-max-clients 2\n'
                  # The cap and its eviction, as one worker applies them
                  # (each has its share of tcp-max-clients).
                  + ONE_CONNECTION) as px:
        t1 = h.TcpConn(px.port)
        t1.send(h.make_query('idle.example', 'A', qid=7))
        assert h.Message(t1.recv()).id == 7
        # Idle past the timeout: the server closes it (recv sees EOF).
        assert t1.recv(timeout=3) is None
        t1.close()
        # At the cap, a third connection closes the least recently active.
        a, b = h.TcpConn(px.port), h.TcpConn(px.port)
        a.send(h.make_query('a.example', 'A', qid=1))
        assert h.Message(a.recv()).id == 1
        b.send(h.make_query('b.example', 'A', qid=2))
        assert h.Message(b.recv()).id == 2
        with h.TcpConn(px.port) as third:
            third.send(h.make_query('c.example', 'A', qid=3))
            assert h.Message(third.recv()).id == 3
            assert a.recv(timeout=2) is None, 'oldest idle was not closed'
            b.send(h.make_query('b2.example', 'A', qid=4))
            assert h.Message(b.recv()).id == 4
        a.close()
        b.close()


h.run([
    test_udp_miss_then_hit,
    test_hit_ttl_is_lowered,
    test_tcp_miss_then_hit,
    test_client_spelling_and_id,
    test_negative_answers_cached,
    test_thousand_queries_one_connection,
    test_burst_of_hits_one_socket,
    test_tcp_burst_of_hits_one_write,
    test_out_of_order_answers_reach_right_clients,
    test_tcp_pipelining_out_of_order,
    test_truncation_then_tcp,
    test_malformed_input,
    test_real_clients,
    test_ipv6_listener,
    test_tcp_idle_timeout_and_cap,
])
