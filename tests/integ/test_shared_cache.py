"""test_shared_cache.py: the shared second-level cache in Redis (issue 10).

Real dotproxy instances in front of our DoT test server (tests/dotserver)
share answers through Debian's redis-server (and through twemproxy, Debian's
nutcracker, in front of two of them), all on loopback. What is checked is
what the feature promises its users: an answer fetched by one instance is
served by another without an upstream query (the test server's query lines
are counted), with its TTLs aged from the fetch time stored in the value;
Redis failing (stopped, hung, full of garbage) never costs a client more
than the shared-cache-timeout and never a wrong answer; the circuit breaker
opens and closes; a flush on the control socket reaches Redis; what must
not be shared is not written. Keys and values are computed here from the
documented format (src/shcache.h) and read or written in Redis with the
harness's small RESP client.

Queries are made with harness.make_query (no EDNS, AD clear): their keys'
flag byte is 0 (cache_key_make: 0x01 DO, 0x02 CD, 0x04 AD without DO).
"""
import json
import os
import selectors
import signal
import socket
import threading
import time

import harness as h
import test_ops

QUERY_RE = r'^query id=\w+ name=%s type=1\b'
CONNECTED_RE = r'shared cache: .*\bconnected to\b'
UPSTREAM_RDATA = bytes([192, 0, 2, 1])     # the test server's A answer
REQ = 'dotproxy_shared_cache_requests_total'
RESP = 'dotproxy_dns_responses_total'


def upq(name):
    """The test server's query-line regex for name (type A)."""
    return QUERY_RE % (name.lower().replace('.', r'\.') + r'\.')


def now_ms():
    return int(time.time() * 1000)


def url(port):
    return 'redis://127.0.0.1:%d' % port


def start_px(d, c, up, label, shc=None, extra='', cli=(), wait_up=True):
    """dotproxy named label (its config file d/label.conf) in front of up,
    with http-listen (.http), and shared-cache shc (a URL) in the file when
    given; cli: more command-line arguments. With wait_up, returns once
    every worker's Redis client is connected (wait_shc_up)."""
    hport, port = h.free_port(), h.free_port()
    text = 'listen 127.0.0.1@%d\nhttp-listen 127.0.0.1@%d\n' % (port, hport)
    if shc:
        text += 'shared-cache %s\n' % shc
    path = test_ops.conf(d, c, [up.port], text + extra,
                         name='%s.conf' % label)
    p = h.start_dotproxy('-c', path, *cli, port=port, listen=False)
    p.http = hport
    p.conf = path
    p.label = label
    if wait_up:
        p.wait_line(CONNECTED_RE, stream='stderr')
        wait_shc_up(p)
    return p


def samples(px):
    return test_ops.scrape(px.http)[1]


def gauge_values(s, name):
    """Every sample of gauge name (one, or one per worker if labelled)."""
    return [v for (n, _), v in s.items() if n == name]


def wait_shc_up(px, timeout=h.DEFAULT_TIMEOUT):
    """Polls /metrics (no log line says "every worker is connected") until
    every dotproxy_shared_cache_up sample is 1 and every circuit_open
    sample is 0; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        s = samples(px)
        up = gauge_values(s, 'dotproxy_shared_cache_up')
        co = gauge_values(s, 'dotproxy_shared_cache_circuit_open')
        if up and all(v == 1 for v in up) and all(v == 0 for v in co):
            return s
        if time.monotonic() >= deadline:
            raise AssertionError('%s: shared cache not up after %.1f s: '
                                 'up=%r circuit_open=%r\n%s'
                                 % (px.label, timeout, up, co,
                                    px.tail_text()))
        time.sleep(0.05)


def wait_metric(px, pred, what, timeout=5.0):
    """Polls /metrics until pred(samples) holds (counters are bumped on a
    worker's thread, the scrape sums them: a counter may lag the answer
    the client already holds by a moment); returns the samples."""
    deadline = time.monotonic() + timeout
    while True:
        s = samples(px)
        if pred(s):
            return s
        if time.monotonic() >= deadline:
            got = {k: v for k, v in s.items() if 'shared' in k[0] or
                   k[0] == RESP}
            raise AssertionError('%s: %s not reached within %.1f s: %r'
                                 % (px.label, what, timeout, got))
        time.sleep(0.02)


def ask(px, name, qtype='A', qid=0x4242):
    """One UDP query (make_query: flag byte 0); the decoded answer, whose
    ID and question are checked."""
    reply = h.udp_query(px.port, h.make_query(name, qtype, qid=qid))
    assert reply is not None, '%s: no answer for %s' % (px.label, name)
    m = h.Message(reply)
    assert m.id == qid, (m.id, qid)
    assert m.question[0] == name.lower().rstrip('.') + '.', m.question
    return m


def a_rdatas(m):
    return [rr[4] for rr in m.answers if rr[1] == 1]


def wait_key(port, key, timeout=5.0):
    """Waits (bounded polling: the write is fire and forget, nothing
    announces it) until key exists in Redis; returns its value."""
    h.redis_wait(port, 'EXISTS', key, pred=lambda v: v == 1,
                 timeout=timeout)
    return h.redis_cmd(port, 'GET', key)


def fetch_and_share(a, r_port, up, name):
    """name through a (a miss: one upstream query), then waits for a's
    write to land in Redis; returns the value."""
    n = up.count(upq(name))
    m = ask(a, name)
    assert m.rcode == 0 and a_rdatas(m) == [UPSTREAM_RDATA], m.answers
    up.wait_count(upq(name), n + 1)
    return wait_key(r_port, h.shc_key(name))


# ---- a. one instance's answer is another's ----

def test_answer_fetched_by_a_is_served_by_b():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r, \
            start_px(d, c, up, 'A', url(r.port)) as a, \
            start_px(d, c, up, 'B', url(r.port)) as b:
        # A's miss is written to Redis in the documented format.
        t0 = now_ms()
        value = fetch_and_share(a, r.port, up, 'share1.example')
        t1 = now_ms()
        fetched, lifetime, answer = h.shc_parse(value)
        assert t0 - 1000 <= fetched <= t1 + 1000, (t0, fetched, t1)
        assert lifetime == 300, lifetime
        stored = h.Message(answer)
        assert stored.rcode == 0 and stored.question[0] == 'share1.example.'
        assert [(rr[3], rr[4]) for rr in stored.answers] == \
            [(300, UPSTREAM_RDATA)], stored.answers
        pttl = h.redis_cmd(r.port, 'PTTL', h.shc_key('share1.example'))
        assert 290000 < pttl <= 300000, pttl

        # B: a local miss, a Redis hit, no upstream query.
        m = ask(b, 'share1.example', qid=0x1111)
        assert m.rcode == 0 and a_rdatas(m) == [UPSTREAM_RDATA], m.answers
        assert 299 <= m.answers[0][3] <= 300, m.answers
        up.expect_count(upq('share1.example'), 1)
        s = wait_metric(b, lambda s: test_ops.total(
            s, RESP, source='shared') == 1, 'source="shared" response')
        assert test_ops.total(s, REQ, op='get', result='hit') == 1
        assert test_ops.total(
            s, 'dotproxy_shared_cache_request_duration_seconds_count',
            op='get') >= 1
        # The Redis hit went into B's local cache: again is a local hit,
        # no second get.
        m = ask(b, 'share1.example', qid=0x1112)
        assert a_rdatas(m) == [UPSTREAM_RDATA]
        s = wait_metric(b, lambda s: test_ops.total(
            s, RESP, source='cache') == 1, 'local cache hit')
        assert test_ops.total(s, REQ, op='get') == 1, \
            {k: v for k, v in s.items() if k[0] == REQ}
        up.expect_count(upq('share1.example'), 1)

        # Aging from the stored fetch time: a value written here, fetched
        # 100 s ago with a lifetime of 300 s and its own address (so that
        # the answer can only have come from Redis).
        mine = bytes([192, 0, 2, 77])
        key = h.shc_key('aged.example')
        h.redis_cmd(r.port, 'SET', key, h.shc_value(
            h.make_answer('aged.example', ttl=300, rdatas=(mine,)),
            now_ms() - 100000, 300), 'PX', 200000)
        m = ask(b, 'aged.example', qid=0x2222)
        assert m.rcode == 0 and a_rdatas(m) == [mine], m.answers
        assert 199 <= m.answers[0][3] <= 201, m.answers
        # A fetch time in the future (another host's clock ahead) counts
        # as now: not aged, and not refused.
        key = h.shc_key('future.example')
        h.redis_cmd(r.port, 'SET', key, h.shc_value(
            h.make_answer('future.example', ttl=300, rdatas=(mine,)),
            now_ms() + 3600 * 1000, 300), 'PX', 300000)
        m = ask(b, 'future.example', qid=0x2223)
        assert a_rdatas(m) == [mine], m.answers
        assert 299 <= m.answers[0][3] <= 300, m.answers
        assert up.count(r'name=(aged|future)\.example') == 0
        s = wait_metric(b, lambda s: test_ops.total(
            s, RESP, source='shared') == 3, 'three shared answers')
        assert test_ops.total(s, REQ, op='get', result='hit') == 3
        inv = 'dotproxy_shared_cache_invalid_values_total'
        assert test_ops.total(s, inv) == 0

        # /status says where the cache is and that it is up.
        status, body, _ = test_ops.get(b.http, '/status')
        assert status == 200
        sc = json.loads(body)['shared_cache']
        assert sc['url'] == url(r.port), sc
        assert bool(sc['up']) is True and bool(sc['circuit_open']) is False, \
            sc
        assert min(gauge_values(s, 'dotproxy_shared_cache_up')) == 1


# ---- b. a restarted instance starts warm ----

def test_restarted_instance_answers_from_redis():
    c = h.certs()
    names = ['warm%d.example' % i for i in range(5)]
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r, \
            start_px(d, c, up, 'A', url(r.port)) as a:
        for n in names:
            fetch_and_share(a, r.port, up, n)
        # B from the command line (--shared-cache), asked once, stopped.
        with start_px(d, c, up, 'B', cli=('--shared-cache', url(r.port))) \
                as b:
            assert a_rdatas(ask(b, names[0])) == [UPSTREAM_RDATA]
        assert b.returncode == 0, b.returncode
        # A new B: its local cache is empty, Redis is not.
        with start_px(d, c, up, 'B2', cli=('--shared-cache', url(r.port))) \
                as b2:
            for i, n in enumerate(names):
                m = ask(b2, n, qid=100 + i)
                assert m.rcode == 0 and a_rdatas(m) == [UPSTREAM_RDATA], \
                    (n, m.answers)
            s = wait_metric(b2, lambda s: test_ops.total(
                s, RESP, source='shared') == len(names), 'shared answers')
            assert test_ops.total(s, REQ, op='get', result='hit') == \
                len(names)
            assert test_ops.total(s, RESP, source='upstream') == 0
        for n in names:
            assert up.count(upq(n)) == 1, (n, up.count(upq(n)))


# ---- c. Redis stopped, hung, back: answers never wait on it ----

class Load:
    """Queries for distinct names never asked before (NAME_FMT % i), at a
    steady rate from several UDP sockets (the kernel spreads their source
    ports over the workers). Bounded: at most rate * seconds queries, then
    at most grace seconds for the last answers. Records each query's
    latency (send to answer, monotonic clock), duplicate answers and wrong
    ones. Every name is answered by the test server with 192.0.2.1."""

    def __init__(self, port, name_fmt, rate=150, seconds=2.0, n_socks=8,
                 grace=3.0):
        self.port = port
        self.names = [name_fmt % i for i in range(int(rate * seconds))]
        assert len(self.names) < 65536
        self.rate = rate
        self.grace = grace
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                      for _ in range(n_socks)]
        self.sent = {}
        self.lat = {}
        self.dups = []
        self.bad = []
        self.cv = threading.Condition()
        self.done = False

    def _recv(self):
        sel = selectors.DefaultSelector()
        for s in self.socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while True:
            with self.cv:
                if self.done:
                    break
            for key, _ in sel.select(0.05):
                try:
                    reply = key.fileobj.recv(65535)
                except BlockingIOError:
                    continue
                t = time.monotonic()
                try:
                    m = h.Message(reply)
                    i = m.id
                    ok = (i < len(self.names) and m.rcode == 0 and
                          m.question[0] == self.names[i] + '.' and
                          a_rdatas(m) == [UPSTREAM_RDATA])
                except (ValueError, IndexError, TypeError):
                    i, ok = None, False
                with self.cv:
                    if not ok:
                        self.bad.append(reply[:64])
                    elif i in self.lat:
                        self.dups.append(self.names[i])
                    elif i in self.sent:
                        self.lat[i] = t - self.sent[i]
                    self.cv.notify_all()
        sel.close()

    def run(self):
        th = threading.Thread(target=self._recv, daemon=True)
        th.start()
        try:
            t0 = time.monotonic()
            for i, name in enumerate(self.names):
                # Pacing, not synchronisation: the load is a rate.
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                with self.cv:
                    self.sent[i] = time.monotonic()
                self.socks[i % len(self.socks)].sendto(
                    h.make_query(name, 'A', qid=i), ('127.0.0.1', self.port))
            deadline = time.monotonic() + self.grace
            with self.cv:
                while len(self.lat) < len(self.names):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cv.wait(left)
        finally:
            with self.cv:
                self.done = True
            th.join(5)
            for s in self.socks:
                s.close()
        return self

    def check(self, what):
        """Every query answered exactly once, rightly; returns the sorted
        latencies in ms."""
        missing = [self.names[i] for i in range(len(self.names))
                   if i not in self.lat]
        assert not missing, '%s: %d of %d unanswered: %r' % (
            what, len(missing), len(self.names), missing[:5])
        assert not self.dups, '%s: answered twice: %r' % (what,
                                                          self.dups[:5])
        assert not self.bad, '%s: wrong answers: %r' % (what, self.bad[:3])
        return sorted(v * 1000 for v in self.lat.values())


def pct(lat, p):
    return lat[min(len(lat) - 1, int(len(lat) * p / 100.0))]


def test_redis_down_or_hung_never_delays_answers():
    c = h.certs()
    timeout_ms = 20
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r:
        extra = 'shared-cache-timeout %dms\n' % timeout_ms
        with start_px(d, c, up, 'A', url(r.port), extra) as a, \
                start_px(d, c, up, 'B', url(r.port), extra) as b:
            # Warm-up (B's upstream connections and handshakes), then the
            # baseline: misses with Redis up (a Redis miss, then upstream).
            warm = Load(b.port, 'w%d.load.example', rate=100,
                        seconds=0.3).run().check('warm-up')
            base = Load(b.port, 'b%d.load.example').run().check('baseline')
            sent = [len(warm) + len(base)]
            # The bound, for a query that Redis failing touches: it waits
            # at most the timeout on Redis, then does what a normal miss
            # does, which took at most base[-1] in the baseline. The slack
            # is for the scheduler of a shared 2-core machine (Python's
            # sender and receiver, two dotproxies, the test server), and
            # for timer granularity; ThreadSanitizer runs everything
            # several times slower.
            slack = 30.0 * (5 if h.TSAN else 1)
            bound = base[-1] + timeout_ms + slack
            s0 = samples(b)

            # 1. Redis stopped: refused connections, requests skipped.
            r.stop()
            lat = Load(b.port, 's%d.load.example').run().check('redis down')
            sent[0] += len(lat)
            print('latency ms: baseline p99 %.1f max %.1f, bound %.1f; '
                  'redis down p99 %.1f max %.1f' % (pct(base, 99), base[-1],
                                                    bound, pct(lat, 99),
                                                    lat[-1]))
            assert lat[-1] < bound, (
                'redis down: slowest answer %.1f ms > bound %.1f ms '
                '(baseline p99 %.1f, max %.1f)'
                % (lat[-1], bound, pct(base, 99), base[-1]))
            s1 = samples(b)
            # Each miss asked (or skipped) Redis once, and every get
            # failed: none was a hit or a miss.
            failed = sum(test_ops.total(s1, REQ, op='get', result=x) -
                         test_ops.total(s0, REQ, op='get', result=x)
                         for x in ('error', 'timeout', 'skipped'))
            assert failed == len(lat), (failed, len(lat))
            assert test_ops.total(s1, REQ, op='get', result='hit') == \
                test_ops.total(s0, REQ, op='get', result='hit')
            assert min(gauge_values(s1, 'dotproxy_shared_cache_up')) == 0

            # Back, on the same port: both instances reconnect by
            # themselves (within the back-off: at most 30 s + 25 %).
            with h.start_redis(port=r.port) as r2:
                wait_shc_up(b, timeout=40)
                wait_shc_up(a, timeout=40)

                # 2. Redis hung (SIGSTOP): the kernel still takes the
                # connection's bytes, nothing answers: timeouts, then the
                # breaker opens and requests are skipped.
                mark = b.mark()
                s0 = samples(b)
                r2.pause()
                lat = Load(b.port, 'h%d.load.example', seconds=3.0).run() \
                    .check('redis hung')
                sent[0] += len(lat)
                print('latency ms: redis hung p99 %.1f max %.1f'
                      % (pct(lat, 99), lat[-1]))
                assert lat[-1] < bound, (
                    'redis hung: slowest answer %.1f ms > bound %.1f ms '
                    '(baseline p99 %.1f, max %.1f)'
                    % (lat[-1], bound, pct(base, 99), base[-1]))
                s1 = samples(b)

                def delta(res, op='get'):
                    return (test_ops.total(s1, REQ, op=op, result=res) -
                            test_ops.total(s0, REQ, op=op, result=res))
                # The breaker opens after 5 failures in a row on a worker,
                # and here the failures are timeouts (of gets, or of the
                # sets after the upstream answers): at least 5 before it
                # opened. (Checked at the end, so that the rest is seen
                # too when this fails.)
                assert delta('timeout') >= 1, delta('timeout')
                timeouts = delta('timeout') + delta('timeout', 'set')
                counts = {dict(k[1])['op'] + '/' + dict(k[1])['result']:
                          v - s0.get(k, 0) for k, v in s1.items()
                          if k[0] == REQ and v != s0.get(k, 0)}
                assert delta('skipped') > 0, delta('skipped')
                assert delta('hit') == 0
                assert max(gauge_values(
                    s1, 'dotproxy_shared_cache_circuit_open')) == 1
                b.wait_line(r'circuit open', stream='stderr', after=mark)
                assert test_ops.total(s1, RESP, source='upstream') >= \
                    len(base) + len(lat)

                # 3. Redis resumes: a probe's PING closes the breaker.
                mark = b.mark()
                r2.resume()
                b.wait_line(r'circuit closed', timeout=40, stream='stderr',
                            after=mark)
                wait_shc_up(b, timeout=40)
                wait_shc_up(a, timeout=40)
                # Sharing works again.
                s0 = samples(b)
                fetch_and_share(a, r2.port, up, 'after.load.example')
                m = ask(b, 'after.load.example')
                assert a_rdatas(m) == [UPSTREAM_RDATA]
                up.expect_count(upq('after.load.example'), 1)
                wait_metric(b, lambda s: test_ops.total(
                    s, REQ, op='get', result='hit') == test_ops.total(
                    s0, REQ, op='get', result='hit') + 1, 'a hit after')
            # Every load name went upstream exactly once: no Redis trouble
            # made a query be sent twice or not at all.
            up.expect_count(r'^query id=\w+ name=[wbsh]\d+\.load\.example\. '
                            r'type=1\b', sent[0])
            assert timeouts >= 5, (
                'the breaker opened after %d timeouts, fewer than 5 failures '
                'in a row (request deltas while hung: %r)' % (timeouts,
                                                              counts))


# ---- d. garbage under our keys ----

def test_garbage_in_redis_is_never_served():
    c = h.certs()
    theirs = bytes([192, 0, 2, 66])

    def good(name):
        return h.make_answer(name, ttl=300, rdatas=(theirs,))

    # (name, how to put it there, counted as an invalid value?)
    cases = [
        ('trunc.g.example', lambda k, n: ('SET', k, b'DPX1\0\0\0\0\1'),
         True),
        ('magic.g.example', lambda k, n: (
            'SET', k, h.shc_value(good(n), now_ms(), 300, magic=b'DPX0')),
         True),
        ('list.g.example', lambda k, n: ('RPUSH', k, b'DPX1', good(n)),
         False),
        ('huge.g.example', lambda k, n: (
            'SET', k, h.shc_value(good(n), now_ms(), 300) +
            b'\0' * (1 << 20)), True),
        ('expired.g.example', lambda k, n: (
            'SET', k, h.shc_value(good(n), now_ms() - 400000, 300)), True),
        ('zero.g.example', lambda k, n: (
            'SET', k, h.shc_value(good(n), now_ms(), 0)), True),
        ('other.g.example', lambda k, n: (
            'SET', k, h.shc_value(good('another.example'), now_ms(), 300)),
         True),
    ]
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r, \
            start_px(d, c, up, 'B', url(r.port)) as b:
        for i, (name, put, invalid) in enumerate(cases):
            key = h.shc_key(name)
            h.redis_cmd(r.port, *put(key, name))
            s0 = samples(b)
            m = ask(b, name, qid=0x300 + i)
            # From upstream, never the garbage.
            assert m.rcode == 0 and a_rdatas(m) == [UPSTREAM_RDATA], \
                (name, m.answers)
            up.expect_count(upq(name), 1)
            s1 = wait_metric(b, lambda s: test_ops.total(
                s, REQ, op='get', result='error') > test_ops.total(
                s0, REQ, op='get', result='error'),
                '%s: a get error' % name)
            inv = 'dotproxy_shared_cache_invalid_values_total'
            d_inv = test_ops.total(s1, inv) - test_ops.total(s0, inv)
            if invalid:
                assert d_inv == 1, (name, d_inv)
            assert test_ops.total(s1, REQ, op='get', result='hit') == 0
            assert test_ops.total(s1, RESP, source='shared') == 0
            # The upstream's answer replaces the garbage.
            h.redis_wait(r.port, 'GETRANGE', key, 0, 3,
                         pred=lambda v: v == b'DPX1')
            _, lifetime, answer = h.shc_parse(h.redis_cmd(r.port, 'GET', key))
            assert lifetime == 300
            assert h.Message(answer).question[0] == name + '.'
        assert b.running()


# ---- e. through twemproxy, two Redis servers ----

def test_sharing_through_nutcracker():
    c = h.certs()
    names = ['tw%d.example' % i for i in range(30)]
    with h.tmpdir() as d, h.start_dotserver(c) as up, \
            h.start_redis() as r1, h.start_redis() as r2, \
            h.start_nutcracker([r1.port, r2.port]) as nc, \
            start_px(d, c, up, 'A', url(nc.port)) as a, \
            start_px(d, c, up, 'B', url(nc.port)) as b:
        for n in names:
            fetch_and_share(a, nc.port, up, n)
        # Spread over both servers (twemproxy has no DBSIZE: asked
        # directly), and nothing but our keys.
        n1 = h.redis_cmd(r1.port, 'DBSIZE')
        n2 = h.redis_cmd(r2.port, 'DBSIZE')
        assert n1 > 0 and n2 > 0 and n1 + n2 == len(names), (n1, n2)
        for i, n in enumerate(names):
            m = ask(b, n, qid=i)
            assert m.rcode == 0 and a_rdatas(m) == [UPSTREAM_RDATA], \
                (n, m.answers)
        s = wait_metric(b, lambda s: test_ops.total(
            s, RESP, source='shared') == len(names), 'shared answers')
        assert test_ops.total(s, REQ, op='get', result='hit') == len(names)
        for n in names:
            assert up.count(upq(n)) == 1, n


# ---- f. a flush on the control socket reaches Redis ----

FLUSH_RE = r'shared cache: flush of .*deleted (\d+) keys?'


def test_flush_deletes_from_redis():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r:
        sock = os.path.join(d, 'control.sock')
        with start_px(d, c, up, 'A', url(r.port),
                      'control-socket %s\n' % sock) as a, \
                start_px(d, c, up, 'B', url(r.port)) as b:
            for n in ('fl.example', 'www.fl.example', 'keep.example'):
                fetch_and_share(a, r.port, up, n)
            k_fl, k_www, k_keep = (h.shc_key(n) for n in (
                'fl.example', 'www.fl.example', 'keep.example'))

            # Default: the local entry and the name's Redis keys.
            mark = a.mark()
            code, body = test_ops.curl_unix(sock, 'POST',
                                            '/cache/flush?name=fl.example')
            assert code == 200, (code, body)
            m = a.wait_line(FLUSH_RE, stream='stderr', after=mark)
            assert int(m.group(1)) >= 1, m.group(0)
            assert h.redis_cmd(r.port, 'EXISTS', k_fl) == 0
            assert h.redis_cmd(r.port, 'EXISTS', k_www) == 1
            # B has it nowhere now: upstream.
            assert a_rdatas(ask(b, 'fl.example')) == [UPSTREAM_RDATA]
            up.expect_count(upq('fl.example'), 2)

            # shared=0: only A's own cache. The flush after it, with
            # Redis, is awaited: had the first touched Redis, it would
            # have by then (one control socket, requests in order).
            mark = a.mark()
            code, body = test_ops.curl_unix(
                sock, 'POST', '/cache/flush?name=keep.example&shared=0')
            assert code == 200, (code, body)
            code, body = test_ops.curl_unix(
                sock, 'POST', '/cache/flush?name=nothing.example')
            assert code == 200, (code, body)
            m = a.wait_line(FLUSH_RE, stream='stderr', after=mark)
            assert 'nothing.example' in m.group(0) or \
                int(m.group(1)) == 0, m.group(0)
            assert a.count(FLUSH_RE, after=mark) == 1
            assert h.redis_cmd(r.port, 'EXISTS', k_keep) == 1
            # A's local entry is gone, Redis still has it: a shared hit.
            s0 = samples(a)
            assert a_rdatas(ask(a, 'keep.example')) == [UPSTREAM_RDATA]
            up.expect_count(upq('keep.example'), 1)
            wait_metric(a, lambda s: test_ops.total(s, RESP, source='shared')
                        == test_ops.total(s0, RESP, source='shared') + 1,
                        'a shared answer for keep.example')

            # subtree=1: the names below too.
            wait_key(r.port, k_fl)          # B's upstream answer, written
            mark = a.mark()
            code, body = test_ops.curl_unix(
                sock, 'POST', '/cache/flush?name=fl.example&subtree=1')
            assert code == 200, (code, body)
            m = a.wait_line(FLUSH_RE, stream='stderr', after=mark)
            assert int(m.group(1)) >= 2, m.group(0)
            assert h.redis_cmd(r.port, 'EXISTS', k_fl) == 0
            assert h.redis_cmd(r.port, 'EXISTS', k_www) == 0
            assert h.redis_cmd(r.port, 'EXISTS', k_keep) == 1


# ---- g. what must not be shared is not written ----

def test_uncacheable_answers_are_not_written():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r, \
            start_px(d, c, up, 'A', url(r.port)) as a:
        m = ask(a, 'servfail.g.example')
        assert m.rcode == 2, m.rcode
        m = ask(a, 'ttl0.g.example')
        assert m.rcode == 0 and m.answers[0][3] == 0, m.answers
        m = ask(a, 'localhost')
        assert m.rcode == 0, m.rcode
        up.wait_count(upq('servfail.g.example'), 1)
        up.wait_count(upq('ttl0.g.example'), 1)
        # Then one that is written: once it is in Redis and A counted its
        # set, the others' writes (if any) would have been counted too.
        fetch_and_share(a, r.port, up, 'stored.g.example')
        s = wait_metric(a, lambda s: test_ops.total(s, REQ, op='set') >= 1,
                        'a set')
        assert test_ops.total(s, REQ, op='set') == 1, \
            {k: v for k, v in s.items() if k[0] == REQ}
        assert test_ops.total(s, REQ, op='set', result='ok') == 1
        keys = h.redis_cmd(r.port, 'KEYS', 'dotproxy:*')
        assert keys == [h.shc_key('stored.g.example')], keys


def test_stale_answers_are_not_written():
    """A stale answer (upstream down, RFC 8767) is served to the client
    but never written to Redis: another instance would take it as fresh.
    One worker: its one Redis connection is a FIFO, so the flush sent
    after the stale answer, once logged as done, proves that any write
    the stale answer caused has reached Redis (the witness)."""
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r:
        sock = os.path.join(d, 'control.sock')
        with start_px(d, c, up, 'A', url(r.port),
                      'workers 1\nstale-client-timeout 500ms\n'
                      'stale-refresh-interval 1\nbackoff-max 2s\n'
                      'control-socket %s\n' % sock) as a:
            key = h.shc_key('ttl1.stale.example')
            m = ask(a, 'ttl1.stale.example')
            assert [(rr[3], rr[4]) for rr in m.answers] == \
                [(1, UPSTREAM_RDATA)], m.answers
            _, lifetime, _ = h.shc_parse(wait_key(r.port, key))
            assert lifetime == 1, lifetime
            h.dotserver_down(up)
            # Time passing is what is tested: the answer expires, locally
            # and in Redis (PX 1000).
            time.sleep(1.3)
            h.redis_wait(r.port, 'EXISTS', key, pred=lambda v: v == 0)
            m = ask(a, 'ttl1.stale.example', qid=0x5151)
            assert m.rcode == 0 and a_rdatas(m) == [UPSTREAM_RDATA], \
                (m.rcode, m.answers)
            assert m.answers[0][3] == 30, m.answers        # the stale TTL
            mark = a.mark()
            code, body = test_ops.curl_unix(
                sock, 'POST', '/cache/flush?name=witness.example')
            assert code == 200, (code, body)
            a.wait_line(FLUSH_RE, stream='stderr', after=mark)
            assert h.redis_cmd(r.port, 'KEYS', 'dotproxy:*') == []
            s = samples(a)
            assert test_ops.total(s, RESP, source='stale') == 1, \
                {k: v for k, v in s.items() if k[0] == RESP}
            assert test_ops.total(s, REQ, op='set') == 1, \
                {k: v for k, v in s.items() if k[0] == REQ}


# ---- h. a Unix socket, another prefix; a bad address is refused ----

def test_unix_socket_and_prefix():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        path = os.path.join(d, 'redis.sock')
        with h.start_redis(extra=('--unixsocket', path,
                                  '--unixsocketperm', '700')) as r:
            shc = 'unix:%s' % path
            extra = 'shared-cache-prefix fleet1/\n'
            with start_px(d, c, up, 'A', shc, extra) as a, \
                    start_px(d, c, up, 'B', shc, extra) as b:
                key = h.shc_key('unix.example', prefix=b'fleet1/')
                n = up.count(upq('unix.example'))
                assert a_rdatas(ask(a, 'unix.example')) == [UPSTREAM_RDATA]
                up.wait_count(upq('unix.example'), n + 1)
                h.shc_parse(wait_key(r.port, key))
                assert h.redis_cmd(r.port, 'KEYS', 'dotproxy:*') == []
                assert a_rdatas(ask(b, 'unix.example')) == [UPSTREAM_RDATA]
                up.expect_count(upq('unix.example'), 1)
                wait_metric(b, lambda s: test_ops.total(
                    s, REQ, op='get', result='hit') == 1, 'a hit')
                status, body, _ = test_ops.get(b.http, '/status')
                assert json.loads(body)['shared_cache']['url'] == shc
    # Only IP literals: no name lookup behind the query path's back.
    p = h.Proc([h.DOTPROXY, '-d', '-c', os.devnull, '--shared-cache',
                'redis://localhost:6379'], name='dotproxy')
    assert p.wait_exit() != 0
    assert p.count(r'shared.cache') >= 1, p.output()


# ---- identical misses on both workers: one Redis read, all "shared" ----

def test_identical_misses_share_one_redis_read():
    """48 sockets ask one name that is in Redis while Redis is stopped
    (so that every query arrives before the read's reply): the workers
    coalesce on one read (the fetcher's worker waits on its pending, the
    other worker parks on the fetcher's claim), and when Redis resumes
    all 48 are answered from it, every one counted source="shared"."""
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r, \
            start_px(d, c, up, 'A', url(r.port)) as a, \
            start_px(d, c, up, 'B', url(r.port),
                     'shared-cache-timeout 5s\n') as b:
        fetch_and_share(a, r.port, up, 'burst.example')
        r.pause()
        socks = []
        try:
            for i in range(48):
                sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sk.settimeout(5.0)
                socks.append(sk)
                sk.sendto(h.make_query('burst.example', 'A', qid=i),
                          ('127.0.0.1', b.port))
            # Every query is in: both workers read them (nothing
            # announces a read: bounded polling of the counters).
            s = wait_metric(b, lambda s: sum(
                v for (n, _), v in s.items()
                if n == 'dotproxy_worker_queries_total') == 48,
                'the 48 queries read')
            per = [v for (n, _), v in s.items()
                   if n == 'dotproxy_worker_queries_total']
            assert len(per) == 2 and min(per) > 0, per
            status, body, _ = test_ops.get(b.http, '/status')
            assert json.loads(body)['shared_cache']['outstanding'] == 1
            r.resume()
            for i, sk in enumerate(socks):
                m = h.Message(sk.recvfrom(4096)[0])
                assert m.id == i and a_rdatas(m) == [UPSTREAM_RDATA], \
                    (i, m.id, m.answers)
        finally:
            for sk in socks:
                sk.close()
        s = wait_metric(b, lambda s: test_ops.total(
            s, RESP, source='shared') == 48, '48 answers from Redis')
        assert test_ops.total(s, RESP, source='upstream') == 0
        assert test_ops.total(s, REQ, op='get') == 1
        up.expect_count(upq('burst.example'), 1)


# ---- a reload adds, changes and removes the shared cache ----

def test_reload_adds_and_removes_shared_cache():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r, \
            h.start_redis() as r2, \
            start_px(d, c, up, 'A', url(r.port)) as a, \
            start_px(d, c, up, 'B', wait_up=False) as b:
        status, body, _ = test_ops.get(b.http, '/status')
        assert 'shared_cache' not in json.loads(body)
        fetch_and_share(a, r.port, up, 'reload1.example')
        text = open(b.conf).read()

        # Added: every worker connects, and B answers from Redis.
        with open(b.conf, 'w') as f:
            f.write(text + 'shared-cache %s\n' % url(r.port))
        mark = b.mark()
        b.signal(signal.SIGHUP)
        b.wait_line(r'reloaded', after=mark)
        wait_shc_up(b)
        assert a_rdatas(ask(b, 'reload1.example')) == [UPSTREAM_RDATA]
        up.expect_count(upq('reload1.example'), 1)
        wait_metric(b, lambda s: test_ops.total(
            s, REQ, op='get', result='hit') == 1, 'a hit after the reload')

        # Changed to another server: its keys, not the first one's.
        with open(b.conf, 'w') as f:
            f.write(text + 'shared-cache %s\n' % url(r2.port))
        mark = b.mark()
        b.signal(signal.SIGHUP)
        b.wait_line(r'reloaded', after=mark)
        b.wait_line(r'shared cache: .*connected to %s' % url(r2.port),
                    stream='stderr', after=mark)
        wait_shc_up(b)
        fetch_and_share(b, r2.port, up, 'reload2.example')
        assert h.redis_cmd(r.port, 'EXISTS',
                           h.shc_key('reload2.example')) == 0
        status, body, _ = test_ops.get(b.http, '/status')
        assert json.loads(body)['shared_cache']['url'] == url(r2.port)

        # Removed: no more requests; a name A shares goes upstream.
        fetch_and_share(a, r.port, up, 'reload3.example')
        with open(b.conf, 'w') as f:
            f.write(text)
        mark = b.mark()
        b.signal(signal.SIGHUP)
        b.wait_line(r'reloaded', after=mark)
        status, body, _ = test_ops.get(b.http, '/status')
        assert 'shared_cache' not in json.loads(body)
        assert a_rdatas(ask(b, 'reload3.example')) == [UPSTREAM_RDATA]
        up.wait_count(upq('reload3.example'), 2)
        assert 'dotproxy_shared_cache_up' not in test_ops.scrape(b.http)[0]


# ---- stopping while requests wait for a hung Redis ----

def test_stop_with_requests_waiting_answers_all():
    """SIGTERM while misses wait on a hung Redis (a long timeout, so they
    are still waiting): closing the shared cache sends them upstream, and
    every one is answered, long before the timeout."""
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up, h.start_redis() as r:
        b = start_px(d, c, up, 'B', url(r.port),
                     'shared-cache-timeout 10s\nlameduck 0\n')
        with b:
            r.pause()
            socks, names = [], ['stop%d.example' % i for i in range(8)]
            for i, name in enumerate(names):
                sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sk.settimeout(5.0)
                sk.sendto(h.make_query(name, 'A', qid=0x700 + i),
                          ('127.0.0.1', b.port))
                socks.append(sk)
            # Each is in Redis's hands: sent, no reply (it is stopped).
            # Nothing announces a request sent: bounded polling.
            deadline = time.monotonic() + 5.0
            while True:
                sc = json.loads(test_ops.get(b.http, '/status')[1])[
                    'shared_cache']
                if sc['outstanding'] >= len(names):
                    break
                assert time.monotonic() < deadline, sc
                time.sleep(0.02)
            t0 = time.monotonic()
            b.signal(signal.SIGTERM)
            for i, sk in enumerate(socks):
                reply = sk.recvfrom(4096)[0]
                sk.close()
                m = h.Message(reply)
                assert m.id == 0x700 + i and m.rcode == 0, (m.id, m.rcode)
                assert a_rdatas(m) == [UPSTREAM_RDATA], m.answers
            assert time.monotonic() - t0 < 3.0
            assert b.wait_exit() == 0
            r.resume()
        for name in names:
            assert up.count(upq(name)) == 1, name


if __name__ == '__main__':
    h.run([
        test_answer_fetched_by_a_is_served_by_b,
        test_restarted_instance_answers_from_redis,
        test_redis_down_or_hung_never_delays_answers,
        test_garbage_in_redis_is_never_served,
        test_sharing_through_nutcracker,
        test_flush_deletes_from_redis,
        test_uncacheable_answers_are_not_written,
        test_stale_answers_are_not_written,
        test_unix_socket_and_prefix,
        test_identical_misses_share_one_redis_read,
        test_reload_adds_and_removes_shared_cache,
        test_stop_with_requests_waiting_answers_all,
    ])
