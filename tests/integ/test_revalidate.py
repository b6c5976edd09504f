"""test_revalidate.py: the upstream's identity is verified again at least
once per max-connection-lifetime.

Renewing a connection at the end of its lifetime is a full handshake: no
session is offered, the server sends its certificate and it is checked
again (name, chain, pins). A server that swapped in a wrong certificate
while keeping its session-ticket key (tests/dotserver --alt-cert, SIGHUP)
is refused then, instead of being resumed into. Reconnects within the
lifetime still resume.
"""
import os
import signal
import time

import harness as h


def conf(d, port, c, extra):
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('upstream 127.0.0.1@%d#dns.example\n' % port)
        f.write('ca-file %s\nquery-timeout 1500ms\nserve-stale no\n'
                % c['ca'])
        f.write(extra)
    return path


def start_swappable(c):
    """A dotserver with the right certificate that presents 'other' (valid,
    from the same CA, for another name) after SIGHUP."""
    return h.start_dotserver(c, '--alt-cert', c['other'], '--alt-key',
                             c['other_key'])


def swap_cert(up):
    mark = up.mark()
    up.signal(signal.SIGHUP)
    up.wait_line(r'^cert swapped$', stream='stdout', after=mark)


def test_lifetime_renewal_verifies_again():
    c = h.certs()
    with h.tmpdir() as d, start_swappable(c) as up, \
            h.start_dotproxy('-c', conf(d, up.port, c,
                                        'max-connection-lifetime 1s\n'
                                        # One connection's life: one
                                        # worker.
                                        'workers 1\n')) \
            as px:
        assert h.dig(px.port, 'first.example').rcode == 'NOERROR'
        up.expect_count(r'^handshake ok resumed=0$', 1)
        # The subject is a lifetime running out: let it pass.
        time.sleep(1.2)
        # Renewed in full, though a session (ticket) is at hand.
        assert h.dig(px.port, 'second.example').rcode == 'NOERROR'
        up.expect_count(r'^handshake ok resumed=0$', 2)
        px.wait_line(r'certificate last verified \d+ ms ago \(lifetime '
                     r'1000 ms\), handshaking in full', stream='stderr')
        # The server now shows a certificate for another name; a resumed
        # session would hide it.
        swap_cert(up)
        time.sleep(1.2)
        mark = px.mark()
        r = h.dig(px.port, 'third.example')
        assert r.rcode == 'SERVFAIL', r.raw
        px.wait_line(r'name mismatch', stream='stderr', after=mark)
        up.wait_line(r'^handshake failed')
        assert up.count(r'^handshake ok resumed=1$') == 0
        assert up.count(r'name=third\.example\.') == 0


def test_reconnect_within_lifetime_resumes():
    c = h.certs()
    with h.tmpdir() as d, start_swappable(c) as up, \
            h.start_dotproxy('-c', conf(d, up.port, c,
                                        'max-connection-lifetime 1h\n'
                                        'idle-timeout 300ms\n'
                                        # Sessions are per worker's pool.
                                        'workers 1\n')) as px:
        assert h.dig(px.port, 'one.example').rcode == 'NOERROR'
        px.wait_line(r'idle for \d+ ms, closing', stream='stderr')
        mark = up.mark()
        assert h.dig(px.port, 'two.example').rcode == 'NOERROR'
        up.wait_line(r'^handshake ok resumed=1$', after=mark)
        px.wait_line(r'connected \(resumed\)', stream='stderr')
        up.expect_count(r'^handshake ok', 2)


h.run([test_lifetime_renewal_verifies_again,
       test_reconnect_within_lifetime_resumes])
