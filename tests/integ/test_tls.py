"""test_tls.py: no answer from an upstream whose certificate does not verify.

dotproxy must refuse the upstream (SERVFAIL to the client, promptly), name
the cause in its log, and never send the query: the test server logs every
query it receives, and must see none.
"""
import os
import time

import harness as h


def start(d, up, c, ca=None):
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('upstream 127.0.0.1@%d#dns.example\n' % up.port)
        f.write('ca-file %s\nquery-timeout 3s\nconnect-timeout 2s\n'
                % (ca or c['ca']))
    return h.start_dotproxy('-c', path)


def refused(cert, why_re, ca=None):
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c, cert=cert) as up, \
            start(d, up, c, ca) as px:
        t0 = time.monotonic()
        r = h.dig(px.port, 'secret.example')
        took = time.monotonic() - t0
        assert r.rcode == 'SERVFAIL', r.raw
        assert not r.answers
        assert took < 2.5, 'SERVFAIL took %.2f s' % took
        px.wait_line(why_re, stream='stderr')
        # Ask again: still refused, still nothing sent.
        assert h.dig(px.port, 'secret2.example').rcode == 'SERVFAIL'
        assert up.count(r'^query ') == 0, 'a query reached an unverified server'
        assert up.count(r'^answer ') == 0


def test_wrong_name():
    refused('other', r'name mismatch')


def test_unknown_ca():
    refused('rogue', r'(unknown CA|untrusted|not trusted)')


def test_expired():
    refused('expired', r'expired')


def test_not_yet_valid():
    refused('notyet', r'not yet valid')


def test_never_clear_text():
    """The core promise: whatever listens on the upstream port, the query
    never goes out in clear. A plain TCP listener records every byte it
    gets: they must be a TLS ClientHello, and the name must not be in
    them."""
    import socket
    import threading
    c = h.certs()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(('127.0.0.1', 0))
    srv.listen(8)
    srv.settimeout(10)
    got = []
    done = threading.Event()

    def serve():
        try:
            conn, _ = srv.accept()
            conn.settimeout(3)
            data = b''
            try:
                while len(data) < 4096:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            got.append(data)
            # Answer like a plain DNS server would: garbage to TLS.
            conn.close()
        finally:
            done.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with h.tmpdir() as d:
            path = os.path.join(d, 'dotproxy.conf')
            with open(path, 'w') as f:
                f.write('upstream 127.0.0.1@%d#dns.example\nca-file %s\n'
                        'connect-timeout 1s\n'
                        % (srv.getsockname()[1], c['ca']))
            with h.start_dotproxy('-c', path) as px:
                r = h.dig(px.port, 'topsecret.example')
                assert r.rcode == 'SERVFAIL', r.raw
                assert done.wait(10)
    finally:
        srv.close()
    data = got[0]
    assert data[:1] == b'\x16' and data[1:2] == b'\x03', data[:16]
    assert b'topsecret' not in data.lower()


def test_pins():
    c = h.certs()
    good = h.spki_pin(c['server'])
    bad = h.spki_pin(c['other'])
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        # Pin alone, name and pin, and a wrong pin.
        for upstream, ok in (('127.0.0.1@%d pin-sha256=%s' % (up.port, good), True),
                             ('127.0.0.1@%d#dns.example pin-sha256=%s' % (up.port, good), True),
                             ('127.0.0.1@%d#dns.example pin-sha256=%s' % (up.port, bad), False)):
            with h.start_dotproxy('-u', upstream, '--ca-file', c['ca']) as px:
                r = h.dig(px.port, 'pinned.example')
                if ok:
                    assert r.rcode == 'NOERROR', (upstream, r.raw)
                else:
                    assert r.rcode == 'SERVFAIL', (upstream, r.raw)
                    px.wait_line(r'pin mismatch', stream='stderr')
        up.expect_count(r'^query ', 2)


def test_ca_file_is_checked_at_start():
    c = h.certs()
    with h.tmpdir() as d:
        bad = os.path.join(d, 'empty.pem')
        open(bad, 'w').close()
        p = h.Proc([h.DOTPROXY, '-d', '-l', '127.0.0.1@%d' % h.free_port(),
                    '-u', '127.0.0.1@853#dns.example', '--ca-file', bad])
        assert p.wait_exit() != 0
        assert any('empty.pem' in l for l in p.output('stderr')), p.output()


def test_verified_server_works():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, start(d, up, c) as px:
        r = h.dig(px.port, 'fine.example')
        assert r.rcode == 'NOERROR' and r.data('A') == ['192.0.2.1'], r.raw
        up.expect_count(r'^handshake ok', 1)


h.run([test_wrong_name, test_unknown_ca, test_expired, test_not_yet_valid,
       test_never_clear_text, test_pins, test_ca_file_is_checked_at_start,
       test_verified_server_works])
