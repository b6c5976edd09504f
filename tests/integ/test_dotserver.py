"""test_dotserver.py: the test tools tested: dotserver, gencerts.sh, ares_client.

The other integration tests trust these tools to misbehave exactly as asked,
so each scenario is checked here with an independent client: kdig and
Python's ssl module for DNS-over-TLS, a small Python DNS responder for the
c-ares client. Timing assertions use generous margins; ordering is asserted
on pipelined queries over one connection.
"""

import base64
import hashlib
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def dot(port, c):
    return h.DotConn(port, c['ca'])


def ask(conn, name, qtype='A', qid=1, **kw):
    conn.send(h.make_query(name, qtype, qid, **kw))


def get(conn, timeout=3.0):
    r = conn.recv(timeout)
    assert r is not None, 'no answer'
    return h.Message(r)


def test_certs():
    c = h.certs()
    for k in ('ca', 'server', 'server_key', 'other', 'rogue', 'expired',
              'notyet', 'notyet_key', 'chain', 'chain_key'):
        assert os.path.getsize(c[k]) > 0, k
    chain = open(c['chain']).read()
    assert chain == open(c['server']).read() + open(c['ca']).read()
    assert c['chain_key'] == c['server_key']
    again = h.certs()
    assert again == c
    # A second run in the same directory keeps the files (idempotent).
    before = open(c['server'], 'rb').read()
    h._certs_cache.clear()
    assert h.certs() == c
    assert open(c['server'], 'rb').read() == before


def test_kdig_scenarios():
    c = h.certs()
    with h.start_dotserver(c) as s:
        def q(name, qtype='A'):
            return h.kdig(s.port, name, qtype, tls_ca=c['ca'])

        r = q('www.example')
        assert r.rcode == 'NOERROR', r.raw
        assert r.answers == [('www.example.', 300, 'A', '192.0.2.1')], r.raw
        assert set(['qr', 'aa', 'rd', 'ra']) <= set(r.flags), r.flags
        r = q('www.example', 'AAAA')
        assert r.answers == [('www.example.', 300, 'AAAA', '2001:db8::1')]
        r = q('www.example', 'TXT')
        assert r.answers == [('www.example.', 300, 'TXT', '"hello"')]
        r = q('www.example', 'MX')
        assert r.rcode == 'NOERROR' and r.answers == []
        assert r.authority[0][2] == 'SOA', r.raw
        r = q('ttl5.example')
        assert r.answers == [('ttl5.example.', 5, 'A', '192.0.2.1')]
        r = q('nx.dns.example')
        assert r.rcode == 'NXDOMAIN' and r.answers == [], r.raw
        name, ttl, rtype, data = r.authority[0]
        assert (name, ttl, rtype) == ('dns.example.', 60, 'SOA'), r.raw
        assert data.split()[-1] == '30', data
        r = q('nodata.example')
        assert r.rcode == 'NOERROR' and r.answers == []
        assert r.authority[0][1:3] == (60, 'SOA')
        r = q('nosoa.example')
        assert r.rcode == 'NXDOMAIN' and r.authority == [], r.raw
        r = q('servfail.example')
        assert r.rcode == 'SERVFAIL', r.raw
        r = q('big.example', 'TXT')
        assert r.data('TXT')[0].count('"') == 40, r.raw
        assert 2000 < int(r.raw.split('Received ')[1].split()[0]) < 2300
        r = q('mid.example', 'TXT')
        assert r.data('TXT')[0].count('"') == 16, r.raw
        r = q('chain2.example')
        assert [a[2] for a in r.answers] == ['CNAME', 'CNAME', 'A'], r.raw
        assert r.answers[0][3] == 'chain1.example.'
        assert r.answers[2][0] == 'chain0.example.'
        r = q('garbage.example')
        assert r.rcode is None and 'malformed' in r.raw, r.raw
        # A line may still be in the pipe when the client is done: wait.
        s.wait_count(r'^handshake ok resumed=0$', 13)
        assert s.count(r'^handshake ok') == 13
        assert s.count(r'^query id=[0-9a-f]{4} name=ttl5\.example\. '
                       r'type=1 len=\d+ edns=[01] do=0 pad=[01] '
                       r'keepalive=0 ecs=0 rd=[01] ad=[01] cd=0 class=1$') == 1
        s.wait_count(r'^close$', 13)
        assert s.stop() == 0


def test_wire_details():
    c = h.certs()
    with h.start_dotserver(c) as s, dot(s.port, c) as conn:
        q = h.make_query('WWW.Example', 'A', 0xbeef, rd=False, edns=1232)
        conn.send(q)
        raw = conn.recv()
        m = h.Message(raw)
        assert m.id == 0xbeef
        assert m.flags & 0x8000 and m.flags & 0x0400 and m.flags & 0x0080
        assert not m.flags & 0x0100
        # The question comes back byte for byte, case included.
        assert raw[12:12 + len(q) - 12 - 11] == q[12:len(q) - 11]
        qend = 12 + len(h.encode_name('WWW.Example')) + 4
        assert raw[qend:qend + 2] == b'\xc0\x0c'
        assert m.additional[0][1] == 41 and m.additional[0][2] == 4096
        s.wait_line(r'^query id=beef name=www\.example\. type=1 len=%d '
                    r'edns=1 do=0 pad=0 keepalive=0 ecs=0 rd=0 ad=0 cd=0 '
                    r'class=1$' % len(q))
        ask(conn, 'www.example', qid=7)
        m = get(conn)
        assert m.flags & 0x0100 and m.additional == []
        ask(conn, 'wrongq.example', qid=8)
        m = get(conn)
        assert m.id == 8 and m.question[0] == 'xwrongq.example.', m.question
        ask(conn, 'garbage.example', qid=0x4242)
        raw = conn.recv()
        assert len(raw) == 40 and raw[:2] == b'\x42\x42'


def test_delay_out_of_order():
    c = h.certs()
    with h.start_dotserver(c) as s, dot(s.port, c) as conn:
        t0 = time.monotonic()
        ask(conn, 'delay300.example', qid=1)
        ask(conn, 'www.example', qid=2)
        ask(conn, 'drop.example', qid=3)
        ask(conn, 'ttl7.example', qid=4)
        assert get(conn).id == 2
        assert get(conn).id == 4
        m = get(conn)
        assert m.id == 1 and m.answers[0][4] == bytes([192, 0, 2, 1])
        assert time.monotonic() - t0 >= 0.29
        # drop: never answered, the connection stays usable.
        assert conn.recv(0.3) is None
        ask(conn, 'www.example', qid=5)
        assert get(conn).id == 5
        # The server logs an answer after writing it: wait, do not count.
        s.wait_count(r'^answer ', 4)
        assert s.count(r'^query ') == 5 and s.count(r'^answer ') == 4


def test_delay_ms_option():
    c = h.certs()
    with h.start_dotserver(c, '--delay-ms', '200') as s, \
            dot(s.port, c) as conn:
        t0 = time.monotonic()
        ask(conn, 'www.example', qid=1)
        assert get(conn).id == 1
        assert time.monotonic() - t0 >= 0.19


def test_reverse():
    c = h.certs()
    with h.start_dotserver(c, '--reverse', '3') as s:
        with dot(s.port, c) as conn:
            for i in (1, 2, 3):
                ask(conn, 'n%d.example' % i, qid=i)
            assert [get(conn).id for _ in range(3)] == [3, 2, 1]
            # Fewer than N: held until 500 ms after the first.
            t0 = time.monotonic()
            ask(conn, 'a.example', qid=10)
            ask(conn, 'b.example', qid=11)
            assert [get(conn).id for _ in range(2)] == [11, 10]
            assert time.monotonic() - t0 >= 0.45


def test_close_after():
    c = h.certs()
    with h.start_dotserver(c, '--close-after', '3') as s:
        with dot(s.port, c) as conn:
            for i in (1, 2, 3):
                ask(conn, 'www.example', qid=i)
            assert [get(conn).id for _ in range(2)] == [1, 2]
            assert conn.recv(2) is None
        s.wait_line(r'^close$')
        assert s.count(r'^query ') == 3 and s.count(r'^answer ') == 2
        # A new connection starts counting again.
        with dot(s.port, c) as conn:
            ask(conn, 'www.example', qid=9)
            assert get(conn).id == 9


def test_close_scenario():
    c = h.certs()
    with h.start_dotserver(c) as s:
        with dot(s.port, c) as conn:
            ask(conn, 'www.example', qid=1)
            ask(conn, 'close.example', qid=2)
            assert get(conn).id == 1
            assert conn.recv(2) is None
        s.wait_line(r'^close$')


def test_refuse():
    c = h.certs()
    with h.start_dotserver(c, '--refuse') as s:
        try:
            dot(s.port, c).close()
            raise AssertionError('TLS handshake succeeded with --refuse')
        except (ssl.SSLError, OSError):
            pass
        s.wait_line(r'^refused$')
        assert s.count(r'^handshake') == 0


def test_bad_input():
    c = h.certs()
    bad = [
        b'\x00',                                    # short header
        b'\x00\x01\x01\x00\x00\x02' + b'\0' * 6 + b'\0\0\1\0\1',  # qdcount 2
        b'\x00\x01\x01\x00\x00\x01' + b'\0' * 6 + b'\xc0\x0c\0\1\0\1',
        b'\x00\x01\x01\x00\x00\x01' + b'\0' * 6 + b'\x3fabc',
        b'\x00\x01\x01\x00\x00\x01' + b'\0' * 6 + b'\x03www\0\0',
        # arcount 5 with nothing behind the question
        b'\x00\x01\x01\x00\x00\x01\0\0\0\0\0\x05' + b'\x03www\0\0\1\0\1',
        # an answer (QR set) instead of a query
        b'\x00\x01\x81\x00\x00\x01' + b'\0' * 6 + b'\x03www\0\0\1\0\1',
        # a name longer than 255 octets
        b'\x00\x01\x01\x00\x00\x01' + b'\0' * 6 + b'\x3f' + b'a' * 63 +
        b'\x3f' + b'a' * 63 + b'\x3f' + b'a' * 63 + b'\x3f' + b'a' * 63 +
        b'\0\0\1\0\1',
    ]
    with h.start_dotserver(c) as s:
        for i, msg in enumerate(bad):
            with dot(s.port, c) as conn:
                conn.send(msg)
                assert conn.recv(2) is None, i
            s.wait_count(r'^malformed$', i + 1)
        # A zero-length frame, and a plain TCP client that is no TLS.
        with dot(s.port, c) as conn:
            conn.s.sendall(b'\0\0')
            assert conn.recv(2) is None
        s.wait_count(r'^malformed$', len(bad) + 1)
        with socket.create_connection(('127.0.0.1', s.port), 3) as raw:
            raw.sendall(b'\x00\x1dGET / HTTP/1.0\r\n\r\n' + b'x' * 64)
            raw.settimeout(3)
            try:
                while raw.recv(1024):
                    pass
            except OSError:
                pass
        s.wait_line(r'^handshake failed \S')
        with dot(s.port, c) as conn:
            ask(conn, 'still.alive.example', qid=3)
            assert get(conn).id == 3
        assert s.stop() == 0


def test_certificates_verify_as_intended():
    c = h.certs()
    for cert, host, ok in (('server', 'dns.example', True),
                           ('other', 'dns.example', False),
                           ('other', 'other.example', True),
                           ('rogue', 'dns.example', False),
                           ('expired', 'dns.example', False),
                           ('notyet', 'dns.example', False),
                           ('chain', 'dns.example', True)):
        with h.start_dotserver(c, cert=cert) as s:
            try:
                h.DotConn(s.port, c['ca'], host).close()
                got = True
            except ssl.SSLError:
                got = False
            assert got == ok, (cert, host)
            if cert in ('expired', 'notyet'):
                s.wait_line(r'^handshake failed')


def test_sigterm():
    c = h.certs()
    s = h.start_dotserver(c)
    conn = dot(s.port, c)
    ask(conn, 'drop.example')
    s.wait_line(r'^query ')
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait_exit(3) == 0
    assert time.monotonic() - t0 < (3 if h.TSAN else 1)
    conn.close()


class _Responder:
    """A plain DNS server on UDP and TCP for ares_client: A queries get
    192.0.2.7 TTL 42 (two records), names starting with nx get NXDOMAIN."""

    def __init__(self):
        self.port = h.free_port()
        self.u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.u.bind(('127.0.0.1', self.port))
        self.t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.t.bind(('127.0.0.1', self.port))
        self.t.listen(4)
        self.tcp_seen = 0
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._udp, self._tcp)]
        for t in self.threads:
            t.start()

    @staticmethod
    def answer(q):
        qend = 12
        while q[qend]:
            qend += 1 + q[qend]
        qend += 5
        nx = q[13:15].lower() == b'nx'
        flags = 0x8180 | (3 if nx else 0)
        an = 0 if nx else 2
        r = q[:2] + struct.pack('!HHHHH', flags, 1, an, 0, 0) + q[12:qend]
        for last in (7, 8)[:an]:
            r += b'\xc0\x0c' + struct.pack('!HHIH', 1, 1, 42, 4) + \
                bytes([192, 0, 2, last])
        return r

    def _udp(self):
        while True:
            try:
                q, addr = self.u.recvfrom(512)
                if not q:
                    return
                self.u.sendto(self.answer(q), addr)
            except OSError:
                return

    def _tcp(self):
        while True:
            try:
                c, _ = self.t.accept()
            except OSError:
                return
            with c:
                n = struct.unpack('!H', c.recv(2))[0]
                q = b''
                while len(q) < n:
                    q += c.recv(n - len(q))
                r = self.answer(q)
                self.tcp_seen += 1
                c.sendall(struct.pack('!H', len(r)) + r)

    def close(self):
        # shutdown() wakes the threads blocked in recvfrom() and accept();
        # close() alone would leave them on the old sockets.
        for sock in (self.u, self.t):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)
        self.u.close()
        self.t.close()


def test_ares_client():
    r = _Responder()
    try:
        st, out = h.ares_client(r.port, 'www.example')
        assert st == 0, out
        assert out == ['rcode=NOERROR', 'A 192.0.2.7 ttl=42',
                       'A 192.0.2.8 ttl=42'], out
        st, out = h.ares_client(r.port, 'nx.example', tcp=True)
        assert st == 0 and out == ['rcode=NXDOMAIN'], out
        assert r.tcp_seen == 1
    finally:
        r.close()
    # Nobody listens: an error, exit status 1.
    st, out = h.ares_client(h.free_port(), 'www.example')
    assert st == 1 and out[0].startswith('error='), out


def test_dig_parsing():
    r = _Responder()
    try:
        for tcp in (False, True):
            for tool in (h.dig, h.kdig):
                res = tool(r.port, 'www.example', tcp=tcp)
                assert res.rcode == 'NOERROR', res.raw
                assert res.flags == ['qr', 'rd', 'ra'], res.flags
                assert res.answers == [
                    ('www.example.', 42, 'A', '192.0.2.7'),
                    ('www.example.', 42, 'A', '192.0.2.8')], res.raw
                assert res.data('A') == ['192.0.2.7', '192.0.2.8']
                res = tool(r.port, 'nx.example', tcp=tcp)
                assert res.rcode == 'NXDOMAIN' and res.answers == [], res.raw
        assert r.tcp_seen == 4
    finally:
        r.close()
    res = h.dig(h.free_port(), 'www.example', time_s=1)
    assert res.rcode is None and res.answers == [], res.raw


# ---- second round: upstream health, failover, privacy ----

QLINE = (r'^query id=(?P<id>[0-9a-f]{4}) name=(?P<name>\S+)'
         r' type=(?P<type>\d+) len=(?P<len>\d+) edns=(?P<edns>[01]) do=(?P<do>[01])'
         r' pad=(?P<pad>[01]) keepalive=(?P<keepalive>[01]) ecs=(?P<ecs>[01])'
         r' rd=(?P<rd>[01]) ad=(?P<ad>[01]) cd=(?P<cd>[01])'
         r' class=(?P<class>\d+)$')


def _der(b, off):
    """(content start, end) of the DER element at off."""
    n = b[off + 1]
    off += 2
    if n & 0x80:
        k = n & 0x7f
        n = int.from_bytes(b[off:off + k], 'big')
        off += k
    return off, off + n


def _spki_pin_by_hand(path):
    """The pin computed without certtool: walk the certificate's DER to
    the SubjectPublicKeyInfo, the 6th field of tbsCertificate after the
    optional [0] version."""
    pem = open(path).read().split('-----BEGIN CERTIFICATE-----')[1]
    der = base64.b64decode(pem.split('-----END CERTIFICATE-----')[0])
    tbs, _ = _der(der, _der(der, 0)[0])
    off = tbs
    if der[off] == 0xa0:
        off = _der(der, off)[1]
    for _ in range(5):          # serial, signature, issuer, validity, subject
        off = _der(der, off)[1]
    assert der[off] == 0x30, 'no SEQUENCE where the SPKI should be'
    spki = der[off:_der(der, off)[1]]
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_spki_pin():
    c = h.certs()
    pins = {k: h.spki_pin(c[k]) for k in ('server', 'ca', 'other', 'chain')}
    for k in ('server', 'ca', 'other'):
        assert pins[k] == _spki_pin_by_hand(c[k]), k
    assert len(set(pins[k] for k in ('server', 'ca', 'other'))) == 3
    # chain.pem starts with the server certificate.
    assert pins['chain'] == pins['server']
    # kdig pins any certificate the server sends: the CA's pin matches
    # only when the server sends the chain.
    for cert, pin, ok in (('server', 'server', True),
                          ('server', 'ca', False),
                          ('server', 'other', False),
                          ('chain', 'ca', True),
                          ('chain', 'server', True)):
        with h.start_dotserver(c, cert=cert) as s:
            r = h.kdig(s.port, 'www.example', extra=['+tls-pin=' + pins[pin]])
            assert (r.data('A') == ['192.0.2.1']) == ok, (cert, pin, r.raw)


def test_query_line_privacy_fields():
    c = h.certs()
    with h.start_dotserver(c) as s:
        def q(name, *extra):
            after = s.mark()
            r = h.kdig(s.port, name, tls_ca=c['ca'], extra=list(extra))
            assert r.rcode == 'NOERROR', r.raw
            return s.wait_line(QLINE, after=after).groupdict()

        f = q('plain.example', '+noedns')
        assert f['name'] == 'plain.example.' and f['type'] == '1'
        assert f['len'] == str(12 + len(h.encode_name('plain.example')) + 4)
        assert (f['edns'], f['do'], f['pad'], f['keepalive'], f['ecs']) == \
            ('0', '0', '0', '0', '0'), f
        # kdig pads over TLS unless told not to.
        f = q('edns.example', '+edns', '+nopadding')
        assert (f['edns'], f['do'], f['pad'], f['keepalive'], f['ecs']) == \
            ('1', '0', '0', '0', '0'), f
        f = q('pad.example', '+padding')
        assert (f['edns'], f['pad'], f['ecs']) == ('1', '1', '0'), f
        f = q('all.example', '+dnssec', '+subnet=192.0.2.0/24',
              '+ednsopt=11')
        assert (f['edns'], f['do'], f['pad'], f['keepalive'], f['ecs']) == \
            ('1', '1', '1', '1', '1'), f
    # len is the message length; options found after another one.
    q = h.make_query('www.example', qid=0x77, edns=1232)[:-2] + \
        struct.pack('!HHH', 4 + 8 + 4 + 60, 10, 8) + bytes(8) + \
        struct.pack('!HH', 12, 60) + bytes(60)
    with h.start_dotserver(c) as s, dot(s.port, c) as conn:
        conn.send(q)
        assert get(conn).id == 0x77
        f = s.wait_line(QLINE).groupdict()
        assert f['len'] == str(len(q)) and len(q) == 29 + 11 + 76, f
        assert (f['pad'], f['keepalive'], f['ecs']) == ('1', '0', '0'), f
    # An option that overruns the OPT RDATA is malformed.
    q = h.make_query('www.example', edns=1232)[:-2] + b'\x00\x06' + \
        b'\x00\x0c\x00\x09\x00\x00'
    with h.start_dotserver(c) as s, dot(s.port, c) as conn:
        conn.send(q)
        assert conn.recv(2) is None
        s.wait_line(r'^malformed$')
        assert s.count(r'^query ') == 0


def test_keepalive_and_ttl_options():
    c = h.certs()
    with h.start_dotserver(c, '--keepalive-ms', '1500', '--ttl', '42') as s:
        r = h.kdig(s.port, 'www.example', tls_ca=c['ca'])
        assert r.answers == [('www.example.', 42, 'A', '192.0.2.1')], r.raw
        with dot(s.port, c) as conn:
            ask(conn, 'www.example', qid=1, edns=1232)
            m = get(conn)
            assert m.answers[0][3] == 42
            opt = m.additional
            assert len(opt) == 1 and opt[0][1] == 41, opt
            # Option 11, length 2, 15 units of 100 ms.
            assert opt[0][4] == b'\x00\x0b\x00\x02\x00\x0f', opt[0][4]
            # RFC 7828: no OPT in the query, no keepalive in the answer.
            ask(conn, 'www.example', qid=2)
            m = get(conn)
            assert m.additional == [], m.additional
            ask(conn, 'ttl5.example', qid=3)
            assert get(conn).answers[0][3] == 5
            ask(conn, 'chain1.example', qid=4)
            assert [a[3] for a in get(conn).answers] == [42, 42]
            ask(conn, 'nx.example', qid=5)
            assert get(conn).authority[0][3] == 60
    # Without the options: TTL 300 and an OPT without options.
    with h.start_dotserver(c) as s, dot(s.port, c) as conn:
        ask(conn, 'www.example', qid=1, edns=1232)
        m = get(conn)
        assert m.answers[0][3] == 300 and m.additional[0][4] == b''


def test_stall_after():
    c = h.certs()
    with h.start_dotserver(c, '--stall-after', '2') as s:
        with dot(s.port, c) as conn:
            for i in (1, 2, 3, 4):
                ask(conn, 'www.example', qid=i)
            assert [get(conn).id for _ in range(2)] == [1, 2]
            s.wait_count(r'^query ', 4)
            assert conn.recv(0.5) is None
            # Half-open, not closed: the server still reads and logs.
            ask(conn, 'www.example', qid=5)
            s.wait_line(r'^query id=0005 ')
            assert conn.recv(0.3) is None
            s.wait_count(r'^answer ', 2)
            assert s.count(r'^answer ') == 2 and s.count(r'^close$') == 0
        s.wait_line(r'^close$')
        # Counting is per connection.
        with dot(s.port, c) as conn:
            ask(conn, 'www.example', qid=9)
            assert get(conn).id == 9
    # 0: a black hole from the first query on.
    with h.start_dotserver(c, '--stall-after', '0') as s:
        t0 = time.monotonic()
        r = h.kdig(s.port, 'www.example', tls_ca=c['ca'], time_s=1)
        assert r.rcode is None, r.raw
        assert time.monotonic() - t0 >= 0.9
        s.wait_line(r'^query id=\w+ name=www\.example\. ')
        assert s.count(r'^handshake ok') == 1
        assert s.count(r'^query ') == 1
        assert s.count(r'^answer ') == 0


class _BioConn:
    """A DoT client whose TLS runs in memory (ssl.MemoryBIO) over a plain
    socket, so that how the TCP connection ends is visible: Python's
    SSLSocket reports a reset as a plain EOF."""

    def __init__(self, port, c):
        ctx = ssl.create_default_context(cafile=c['ca'])
        self.raw = socket.create_connection(('127.0.0.1', port), 3)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out,
                                server_hostname='dns.example')
        self.buf = b''
        self.reset = False
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(65536)
                assert data, 'EOF during the handshake'
                self.inc.write(data)
        self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def send(self, wire):
        self.tls.write(struct.pack('!H', len(wire)) + wire)
        try:
            self._flush()
        except (ConnectionResetError, BrokenPipeError):
            # The server was faster. EPIPE too means an RST came: a FIN
            # alone leaves our direction open.
            self.reset = True

    def read_end(self):
        """Reads until the connection ends; returns ('rst' or 'fin', the
        IDs of the answers that came before)."""
        self.raw.settimeout(3)
        how = 'rst' if self.reset else 'fin'
        try:
            while not self.reset:
                data = self.raw.recv(65536)
                if not data:
                    break
                self.inc.write(data)
        except ConnectionResetError:
            how = 'rst'
        try:
            while True:
                self.buf += self.tls.read(65536)
        except ssl.SSLError:
            pass
        ids = []
        while len(self.buf) >= 2:
            n = struct.unpack('!H', self.buf[:2])[0]
            if len(self.buf) < 2 + n:
                break
            ids.append(h.Message(self.buf[2:2 + n]).id)
            self.buf = self.buf[2 + n:]
        return how, ids

    def close(self):
        self.raw.close()


def _ending(s, c):
    """Sends queries 1 and 2 on one connection; how it ended and what was
    answered."""
    conn = _BioConn(s.port, c)
    try:
        conn.send(h.make_query('www.example', qid=1))
        conn.send(h.make_query('www.example', qid=2))
        return conn.read_end()
    finally:
        conn.close()


def test_reset_after():
    c = h.certs()
    with h.start_dotserver(c, '--reset-after', '2') as s:
        assert _ending(s, c) == ('rst', [1])
        s.wait_line(r'^reset$')
        s.wait_line(r'^close$')
        assert s.count(r'^query ') == 2 and s.count(r'^answer ') == 1
        # Counting is per connection.
        r = h.kdig(s.port, 'www.example', tls_ca=c['ca'], time_s=2)
        assert r.rcode == 'NOERROR', r.raw
    # The same with --close-after ends with a FIN: the tests can tell.
    with h.start_dotserver(c, '--close-after', '2') as s:
        assert _ending(s, c) == ('fin', [1])
        s.wait_line(r'^close$')
        assert s.count(r'^reset$') == 0
    with h.start_dotserver(c, '--reset-after', '1') as s:
        r = h.kdig(s.port, 'www.example', tls_ca=c['ca'], time_s=2)
        assert r.rcode is None, r.raw
        s.wait_line(r'^reset$')
    # 0: reset right after the handshake, before any query is read.
    with h.start_dotserver(c, '--reset-after', '0') as s:
        assert _ending(s, c) == ('rst', [])
        s.wait_line(r'^reset$')
        assert s.count(r'^handshake ok') == 1
        assert s.count(r'^query ') == 0


def test_answer_even():
    c = h.certs()
    with h.start_dotserver(c, '--answer-even') as s, dot(s.port, c) as conn:
        for i in range(1, 8):
            ask(conn, 'www.example', qid=i)
        assert [get(conn).id for _ in range(3)] == [2, 4, 6]
        s.wait_count(r'^query ', 7)
        assert conn.recv(0.3) is None
        s.wait_count(r'^answer ', 3)
        assert s.count(r'^answer ') == 3


def test_handshake_delay():
    c = h.certs()
    with h.start_dotserver(c, '--handshake-delay-ms', '400') as s:
        t0 = time.monotonic()
        with dot(s.port, c) as conn:
            took = time.monotonic() - t0
            assert took >= 0.38, took
            # Only the handshake is slow, not the answers.
            t1 = time.monotonic()
            ask(conn, 'www.example', qid=1)
            assert get(conn).id == 1
            assert time.monotonic() - t1 < 0.3
        # The wait does not hold up other connections' accept.
        s.wait_line(r'^close$')
        assert s.count(r'^accept$') == 1


def _tls_connect(port, ctx, session=None):
    raw = socket.create_connection(('127.0.0.1', port), 3)
    return ctx.wrap_socket(raw, server_hostname='dns.example',
                           session=session)


def _ask_raw(t, qid):
    q = h.make_query('www.example', qid=qid)
    t.sendall(struct.pack('!H', len(q)) + q)
    t.settimeout(3)
    # TLS 1.3 tickets come after the handshake: reading an answer makes
    # sure the client has taken them in.
    assert len(t.recv(4096)) > 2


def test_session_resumption():
    c = h.certs()
    # A session is only offered again through the context that made it.
    ctx = ssl.create_default_context(cafile=c['ca'])
    with h.start_dotserver(c) as s:
        t = _tls_connect(s.port, ctx)
        _ask_raw(t, 1)
        assert not t.session_reused
        sess = t.session
        t.close()
        t = _tls_connect(s.port, ctx, sess)
        _ask_raw(t, 2)
        assert t.session_reused
        t.close()
        s.wait_count(r'^close$', 2)
        assert s.count(r'^handshake ok resumed=0$') == 1
        assert s.count(r'^handshake ok resumed=1$') == 1
    # A new process has a new ticket key: the old session is refused and
    # a full handshake follows.
    with h.start_dotserver(c) as s:
        t = _tls_connect(s.port, ctx, sess)
        _ask_raw(t, 3)
        assert not t.session_reused
        t.close()
        s.wait_line(r'^handshake ok resumed=0$')


def test_down_up():
    c = h.certs()
    with h.start_dotserver(c) as s:
        port = s.port
        with dot(port, c) as conn:
            ask(conn, 'delay3000.example', qid=1)
            s.wait_line(r'^query id=0001 ')
            t0 = time.monotonic()
            h.dotserver_down(s)
            # The open connection is shut at once, its answer dropped.
            assert conn.recv(2) is None
            assert time.monotonic() - t0 < 1.5
        s.wait_line(r'^close$')
        # New connections: accepted, closed before TLS, same port.
        try:
            dot(port, c).close()
            raise AssertionError('TLS handshake succeeded while down')
        except (ssl.SSLError, OSError):
            pass
        s.wait_line(r'^refused down$')
        r = h.kdig(port, 'www.example', tls_ca=c['ca'], time_s=2)
        assert r.rcode is None, r.raw
        s.wait_count(r'^refused down$', 2)
        # Twice down is still down (state, not toggle).
        h.dotserver_down(s)
        r = h.kdig(port, 'www.example', tls_ca=c['ca'], time_s=2)
        assert r.rcode is None, r.raw
        assert s.count(r'^handshake ok') == 1
        h.dotserver_up(s)
        r = h.kdig(port, 'www.example', tls_ca=c['ca'])
        assert r.data('A') == ['192.0.2.1'], r.raw
        h.dotserver_up(s)
        with dot(port, c) as conn:
            ask(conn, 'www.example', qid=2)
            assert get(conn).id == 2
        s.wait_count(r'^answer ', 2)
        assert s.count(r'^answer ') == 2
        assert s.count(r'^(down|up)$') == 4
        assert s.stop() == 0


def test_fixed_port():
    c = h.certs()
    with h.start_dotserver(c) as s:
        port = s.port
    # The same port again, as a restarted upstream would come back.
    with h.start_dotserver(c, port=port) as s:
        assert s.port == port
        r = h.kdig(port, 'www.example', tls_ca=c['ca'])
        assert r.data('A') == ['192.0.2.1'], r.raw


if __name__ == '__main__':
    h.run([
        test_certs,
        test_kdig_scenarios,
        test_wire_details,
        test_delay_out_of_order,
        test_delay_ms_option,
        test_reverse,
        test_close_after,
        test_close_scenario,
        test_refuse,
        test_bad_input,
        test_certificates_verify_as_intended,
        test_sigterm,
        test_ares_client,
        test_dig_parsing,
        test_spki_pin,
        test_query_line_privacy_fields,
        test_keepalive_and_ttl_options,
        test_stall_after,
        test_reset_after,
        test_answer_even,
        test_handshake_delay,
        test_session_resumption,
        test_down_up,
        test_fixed_port,
    ])
