"""test_recovery.py: with every upstream down, recovery does not wait for
the back-off.

While all upstreams back off, a client query probes one (at most one
probe per 250 ms; a query that comes sooner waits for the next slot), so
the first query after the upstream returns is answered within a second
whatever backoff-max says. A change of the host's addresses or routes
(rtnetlink) resets the back-off: checked in a network namespace of our
own (unshare -n), where adding an address to lo is such a change.
"""
import os
import re
import socket
import subprocess
import sys
import time

import harness as h


def conf(d, port, c, extra=''):
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('upstream 127.0.0.1@%d#dns.example\n' % port)
        f.write('ca-file %s\nquery-timeout 1500ms\nconnect-timeout 1s\n'
                'backoff-max 30s\nserve-stale no\n' % c['ca'])
        f.write(extra)
    return path


PROBE_WAIT = r'next probe in (\d+) ms$'


def fail_until_long_backoff(px, want_ms, within=20.0):
    """Asks fresh names while the upstream is down, each answered
    SERVFAIL promptly, until dotproxy logs a back-off of at least want_ms
    for its next probe (or within seconds have passed). Returns that
    back-off. Polls, bounded: the back-off grows with failed probes, and
    no event says when the next one happens."""
    rx = re.compile(PROBE_WAIT)
    after = px.mark()
    deadline = time.monotonic() + within
    i = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        r = h.dig(px.port, 'down%d.example' % i)
        took = time.monotonic() - t0
        i += 1
        assert r.rcode == 'SERVFAIL', r.raw
        # A held query waits at most the probe interval, then the probe
        # (refused before TLS on loopback).
        assert took < 1.0, 'SERVFAIL after %.2f s' % took
        waits = [int(m.group(1)) for m in
                 (rx.search(t) for t in px.output()[after:]) if m]
        if waits and waits[-1] >= want_ms:
            return waits[-1]
        time.sleep(0.1)
    raise AssertionError('back-off never reached %d ms' % want_ms)


def test_first_query_after_outage_answered():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            h.start_dotproxy('-c', conf(d, up.port, c)) as px:
        assert h.dig(px.port, 'before.example').rcode == 'NOERROR'
        h.dotserver_down(up)
        wait = fail_until_long_backoff(px, 4000)
        h.dotserver_up(up)
        # The back-off would keep the upstream idle for `wait` ms more;
        # the first query probes it instead and gets the answer.
        mark = up.mark()
        t0 = time.monotonic()
        r = h.dig(px.port, 'after.example')
        took = time.monotonic() - t0
        assert r.rcode == 'NOERROR', r.raw
        assert r.data('A') == ['192.0.2.1']
        assert took < 1.0, 'first answer after %.2f s (back-off %d ms)' % (
            took, wait)
        print('first answer after the outage: %.3f s (back-off was %d ms)'
              % (took, wait))
        up.wait_line(r'^handshake ok', after=mark)
        px.wait_line(r'up again', stream='stderr')


def test_probes_are_rate_limited():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            h.start_dotproxy('-c', conf(d, up.port, c)) as px:
        assert h.dig(px.port, 'warm.example').rcode == 'NOERROR'
        h.dotserver_down(up)
        mark = up.mark()
        # A burst of queries for 1 s while down: every one is answered
        # (SERVFAIL), and they cause about one probe per 250 ms, not one
        # connection each.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        sent, got = 0, set()
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 1.0 and sent < 200:
                s.sendto(h.make_query('burst%d.example' % sent, qid=sent),
                         ('127.0.0.1', px.port))
                sent += 1
                time.sleep(0.02)   # pacing of the load, not a sync
            while len(got) < sent:
                m = h.Message(s.recvfrom(65535)[0])
                assert m.rcode == 2, m.rcode
                got.add(m.id)
        finally:
            s.close()
        elapsed = time.monotonic() - t0
        probes = up.count(r'^refused down$', after=mark)
        # One probe per 250 ms slot, plus the first reconnect (the server
        # shut the connection that answered warm.example) and a probe due
        # by the back-off itself.
        limit = int(elapsed / 0.25) + 3
        print('%d queries in %.2f s while down: %d probes (limit %d)'
              % (sent, elapsed, probes, limit))
        assert 2 <= probes <= limit, '%d probes in %.2f s for %d queries' % (
            probes, elapsed, sent)


def netlink_body():
    """Runs inside a fresh network namespace (see the test below)."""
    subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            h.start_dotproxy('-c', conf(d, up.port, c)) as px:
        assert h.dig(px.port, 'before.example').rcode == 'NOERROR'
        h.dotserver_down(up)
        fail_until_long_backoff(px, 4000)
        mark = px.mark()
        subprocess.run(['ip', 'addr', 'add', '127.0.0.2/8', 'dev', 'lo'],
                       check=True)
        px.wait_line(r'network changed \(\d+ link, [1-9]\d* address',
                     stream='stderr', after=mark)
        px.wait_line(r'back-off reset, 1 of 1 were backing off',
                     stream='stderr', after=mark)
        # The count starts again: the next failure backs off from the
        # first step (500 ms), not from where it was.
        mark = px.mark()
        r = h.dig(px.port, 'stilldown.example')
        assert r.rcode == 'SERVFAIL', r.raw
        m = px.wait_line(PROBE_WAIT, stream='stderr', after=mark)
        assert int(m.group(1)) <= 500, m.group(0)
        h.dotserver_up(up)
        assert h.dig(px.port, 'after.example').rcode == 'NOERROR'


def test_netlink_resets_backoff():
    r = subprocess.run(['unshare', '-n', '--', sys.executable,
                        os.path.abspath(__file__), '--netns-child'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=100)
    assert r.returncode == 0 and re.search(r'^PASS netlink_body', r.stdout,
                                           re.M), r.stdout


if sys.argv[1:] == ['--netns-child']:
    del sys.argv[1:]
    h.run([netlink_body])
else:
    h.run([test_first_query_after_outage_answered,
           test_probes_are_rate_limited, test_netlink_resets_backoff])
