"""test_workers.py: several workers (threads with their own SO_REUSEPORT
sockets and upstream pools) behave as one server.

Real dotproxy with --workers 2 in front of our DoT test server; clients
are many UDP sockets (the kernel picks a worker by source port, so many
ports reach both) and dig. Which worker served what is read from
dotproxy_worker_queries_total{worker="N"}.
"""
import json
import os
import signal
import socket

import harness as h
import test_ops

QUERY_RE = r'^query id=\w+ name=%s type=1\b'
# "listening on ADDR", once per address however many workers bind it.
LISTENING_RE = r'(?<!longer )listening on 127\.0\.0\.1@%d '


def _start(d, c, up, workers, extra):
    hport, port = h.free_port(), h.free_port()
    path = test_ops.conf(d, c, [up.port],
                         'listen 127.0.0.1@%d\nhttp-listen 127.0.0.1@%d\n%s'
                         % (port, hport, extra))
    p = h.start_dotproxy('-c', path, '--workers', workers, port=port,
                         listen=False)
    p.http = hport
    p.conf = path
    return p


def per_worker(px):
    _, s = test_ops.scrape(px.http)
    out = {}
    for (name, labels), v in s.items():
        if name == 'dotproxy_worker_queries_total':
            out[int(dict(labels)['worker'])] = v
    return out, s


def spray(port, names, n_socks=32, timeout=5):
    """Ask every name in names from each of n_socks sockets at once (one
    query per socket per name); returns the answers' rcodes."""
    socks = []
    rcodes = []
    try:
        for i in range(n_socks):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            socks.append(s)
        for name in names:
            for i, s in enumerate(socks):
                s.sendto(h.make_query(name, 'A', qid=i), ('127.0.0.1', port))
            for i, s in enumerate(socks):
                reply = s.recvfrom(65535)[0]
                m = h.Message(reply)
                assert m.id == i
                rcodes.append(m.rcode)
    finally:
        for s in socks:
            s.close()
    return rcodes


def test_both_workers_serve_and_share_one_cache():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            _start(d, c, up, '2', '') as px:
        px.wait_line(r'with 2 worker\(s\)', stream='stderr')
        assert px.count(LISTENING_RE % px.port) == 1, px.output()
        # One miss, then 32 sockets (both workers) ask it again: hits.
        first = h.udp_query(px.port, h.make_query('shared.example', 'A'))
        assert first is not None and h.Message(first).rcode == 0
        assert spray(px.port, ['shared.example']) == [0] * 32
        up.expect_count(QUERY_RE % r'shared\.example\.', 1)
        per, s = per_worker(px)
        assert sorted(per) == [0, 1], per
        assert per[0] > 0 and per[1] > 0, per
        assert sum(per.values()) == 33
        assert test_ops.val(s, 'dotproxy_workers') == 2
        assert test_ops.total(s, 'dotproxy_cache_hits_total') == 32


def test_identical_misses_on_two_workers_go_upstream_once():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            _start(d, c, up, '2', '') as px:
        # delay300: the misses all arrive while the first is in flight.
        assert spray(px.port, ['delay300.spread.example'], 48) == [0] * 48
        per, s = per_worker(px)
        assert per[0] > 0 and per[1] > 0, per
        up.expect_count(QUERY_RE % r'delay300\.spread\.example\.', 1)
        assert test_ops.total(s, 'dotproxy_cache_coalesced_total') == 47


def test_at_most_one_connection_per_upstream_per_worker():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            _start(d, c, up, '2', '') as px:
        names = ['c%d.example' % i for i in range(20)]
        assert spray(px.port, names, 16) == [0] * (20 * 16)
        per, s = per_worker(px)
        assert per[0] > 0 and per[1] > 0, per
        handshakes = up.count(r'^handshake ok', stream='stdout')
        assert 1 <= handshakes <= 2, handshakes
        conns = test_ops.total(s, 'dotproxy_upstream_connections')
        assert conns == handshakes, (conns, handshakes)
        status, body, _ = test_ops.get(px.http, '/status')
        assert status == 200
        st = json.loads(body)
        assert st['workers'] == 2
        assert st['upstreams'][0]['connections'] == handshakes


def test_reload_and_drain_reach_every_worker():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            h.start_dotserver(c) as up2, _start(d, c, up, '2', '') as px:
        assert spray(px.port, ['before.example'], 16) == [0] * 16
        # Move to the second upstream and a second listen address.
        port2 = h.free_port()
        with open(px.conf, 'w') as f:
            f.write('upstream 127.0.0.1@%d#dns.example\n' % up2.port)
            f.write('ca-file %s\nquery-timeout 2s\nconnect-timeout 1s\n'
                    % c['ca'])
            f.write('listen 127.0.0.1@%d\nlisten 127.0.0.1@%d\n'
                    'http-listen 127.0.0.1@%d\n' % (px.port, port2, px.http))
        mark = px.mark()
        px.signal(signal.SIGHUP)
        px.wait_line(r'reloaded', stream='stderr', after=mark)
        assert px.count(LISTENING_RE % port2, after=mark) == 1, px.output()
        names = ['after%d.example' % i for i in range(8)]
        assert spray(port2, names, 16) == [0] * (8 * 16)
        per, _ = per_worker(px)
        assert per[0] > 16 // 2 and per[1] > 0, per
        for n in names:
            up2.expect_count(QUERY_RE % (n.replace('.', r'\.') + r'\.'), 1)
        assert up.count(r'^query id=\w+ name=after') == 0
        # Drain: queries in flight on both workers are all answered.
        socks = []
        for i in range(16):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.sendto(h.make_query('delay400.drain%d.example' % i, 'A',
                                  qid=i), ('127.0.0.1', px.port))
            socks.append(s)
        up2.wait_count(r'^query id=\w+ name=delay400\.drain', 16)
        px.signal(signal.SIGTERM)
        for i, s in enumerate(socks):
            m = h.Message(s.recvfrom(65535)[0])
            assert m.id == i and m.rcode == 0
            s.close()
        px.signal(signal.SIGTERM)
        assert px.wait_exit() == 0
        assert px.count(r'drain: .* still unanswered') == 0


def test_sigusr1_logs_totals_of_every_worker():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            _start(d, c, up, '2', '') as px:
        first = h.udp_query(px.port, h.make_query('usr1.example', 'A'))
        assert first is not None and h.Message(first).rcode == 0
        assert spray(px.port, ['usr1.example'], 15) == [0] * 15
        per, _ = per_worker(px)
        assert per[0] > 0 and per[1] > 0, per
        mark = px.mark()
        px.signal(signal.SIGUSR1)
        # The sums of both workers: 16 queries, 1 miss, 15 hits, and the
        # upstream's 1 query and answer.
        m = px.wait_line(r'queries_udp=(\d+).* cache_hits=(\d+) '
                         r'cache_misses=(\d+)', stream='stderr', after=mark)
        assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == \
            (16, 15, 1), m.group(0)
        px.wait_line(r'upstream 127\.0\.0\.1@%d#dns\.example: up, '
                     r'connected, .* 1 queries, 1 answers' % up.port,
                     stream='stderr', after=mark)


def test_worker_count_option():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        with _start(d, c, up, '0', '') as px:
            want = len(os.sched_getaffinity(0))
            px.wait_line(r'with %d worker\(s\)' % min(want, 64),
                         stream='stderr')
        with _start(d, c, up, '1', '') as px:
            px.wait_line(r'with 1 worker\(s\)', stream='stderr')
            assert spray(px.port, ['one.example'], 8) == [0] * 8
            per, _ = per_worker(px)
            assert per == {0: 8}, per
        p = h.Proc([h.DOTPROXY, '-d', '-c', os.devnull, '--workers', '65'],
                   name='dotproxy')
        assert p.wait_exit() == 2
        assert p.count(r'workers.*0-64') == 1, p.output()


if __name__ == '__main__':
    h.run([
        test_both_workers_serve_and_share_one_cache,
        test_identical_misses_on_two_workers_go_upstream_once,
        test_at_most_one_connection_per_upstream_per_worker,
        test_reload_and_drain_reach_every_worker,
        test_sigusr1_logs_totals_of_every_worker,
        test_worker_count_option,
    ])
