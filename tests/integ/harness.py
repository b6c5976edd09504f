"""harness.py: helpers for dotproxy's integration tests (Python 3 stdlib only).

Tests start the real binaries (dotproxy, tests/dotserver, tests/ares_client)
on loopback with random ports, talk to them with real clients (dig, kdig,
c-ares) or raw sockets, and synchronise on the programs' log lines, never on
sleeps: Proc collects every output line under a condition variable and
wait_line()/wait_count() block on it with a timeout. Output is kept in memory;
when a test fails, run() prints the tail of every process the test started.

Paths come from the environment that automake's test driver sets
(top_srcdir, top_builddir); by default both are the repository root (the
build dir is the current directory when it holds a dotproxy binary).

A test file looks like:

    import harness as h

    def test_a():
        c = h.certs()
        with h.start_dotserver(c) as up:
            ...

    h.run([test_a])
"""

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))


def _default_builddir():
    if os.path.exists(os.path.join(os.getcwd(), 'dotproxy')):
        return os.getcwd()
    return _REPO


top_srcdir = os.path.abspath(os.environ.get('top_srcdir') or _REPO)
top_builddir = os.path.abspath(os.environ.get('top_builddir') or
                               _default_builddir())
DOTPROXY = os.path.join(top_builddir, 'dotproxy')
DOTSERVER = os.path.join(top_builddir, 'tests', 'dotserver')
ARES_CLIENT = os.path.join(top_builddir, 'tests', 'ares_client')
GENCERTS = os.path.join(top_srcdir, 'tests', 'integ', 'gencerts.sh')

DEFAULT_TIMEOUT = 10.0      # seconds to wait for an expected log line
TEST_TIMEOUT = 120          # seconds before run() gives up on one test


# ---- temporary files and certificates ----

@contextlib.contextmanager
def tmpdir(prefix='dotproxy-test-'):
    """A fresh directory, removed afterwards unless the block raised (then
    its path is printed so the files can be inspected)."""
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        yield d
    except BaseException:
        sys.stderr.write('kept temporary directory %s\n' % d)
        raise
    shutil.rmtree(d, ignore_errors=True)


_certs_cache = {}
_certs_tmp = []


def _cleanup_certs_tmp():
    for d in _certs_tmp:
        shutil.rmtree(d, ignore_errors=True)


def certs(dir=None):
    """Runs gencerts.sh (once per process and directory) and returns a dict
    of paths: ca, ca_key, server, server_key, other, other_key, rogue,
    rogue_key, rogue_ca, rogue_ca_key, expired, expired_key, notyet,
    notyet_key, chain, chain_key (chain is server + CA certificate, its key
    is server_key), dir. Without dir, the files go to a per-process
    temporary directory."""
    if dir is None:
        if not _certs_tmp:
            _certs_tmp.append(tempfile.mkdtemp(prefix='dotproxy-certs-'))
            atexit.register(_cleanup_certs_tmp)
        dir = _certs_tmp[0]
    dir = os.path.abspath(dir)
    if dir not in _certs_cache:
        r = subprocess.run(['sh', GENCERTS, dir], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
        if r.returncode != 0:
            raise RuntimeError('gencerts.sh failed:\n' + r.stdout)
        paths = {'dir': dir}
        for n in ('ca', 'server', 'other', 'rogue', 'rogue-ca', 'expired',
                  'notyet'):
            k = n.replace('-', '_')
            paths[k] = os.path.join(dir, n + '.pem')
            paths[k + '_key'] = os.path.join(dir, n + '-key.pem')
        paths['chain'] = os.path.join(dir, 'chain.pem')
        paths['chain_key'] = paths['server_key']
        _certs_cache[dir] = paths
    return dict(_certs_cache[dir])


def spki_pin(cert_path):
    """The RFC 7469 pin of a PEM certificate (the first one in the file):
    base64 of the SHA-256 of its SubjectPublicKeyInfo, as certtool prints
    it and as kdig's +tls-pin and dotproxy's pins take it."""
    r = subprocess.run(['certtool', '-i', '--infile', cert_path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    pins = re.findall(r'pin-sha256:([A-Za-z0-9+/=]+)', r.stdout)
    if r.returncode != 0 or not pins:
        raise RuntimeError('certtool -i %s: no pin-sha256:\n%s'
                           % (cert_path, r.stdout))
    # "Public Key PIN" comes once per certificate, after its other fields;
    # with several certificates in the file certtool shows the first.
    return pins[0]


def free_port():
    """A port number that was free for both TCP and UDP on 127.0.0.1.
    (Another process may take it before it is used; callers that bind it
    should be ready to retry.)"""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(('127.0.0.1', 0))
            port = t.getsockname()[1]
            try:
                u.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port
        finally:
            t.close()
            u.close()
    raise RuntimeError('no free port for both TCP and UDP')


# ---- processes ----

_procs = []                 # every Proc started by the current test


class Proc:
    """A subprocess whose stdout and stderr lines are collected by two
    reader threads. lines is a list of (stream, text) in arrival order,
    stream being 'stdout' or 'stderr'. Use as a context manager: the
    process is stopped on exit, and its output tail is printed if the
    block raised. pass_fds are file descriptors the child inherits (at
    the same numbers)."""

    def __init__(self, args, name=None, env=None, cwd=None, pass_fds=()):
        self.args = [str(a) for a in args]
        self.name = name or os.path.basename(self.args[0])
        self.lines = []
        self.port = None
        self.returncode = None
        self._cv = threading.Condition()
        self._open = 2
        self.paused = False
        e = dict(os.environ)
        if env:
            e.update(env)
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=e, cwd=cwd,
                                  pass_fds=pass_fds)
        self.pid = self.p.pid
        _procs.append(self)
        self._threads = [
            threading.Thread(target=self._reader, args=(self.p.stdout,
                                                        'stdout'),
                             daemon=True),
            threading.Thread(target=self._reader, args=(self.p.stderr,
                                                        'stderr'),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _reader(self, f, stream):
        for raw in iter(f.readline, b''):
            text = raw.decode('utf-8', 'replace').rstrip('\r\n')
            with self._cv:
                self.lines.append((stream, text))
                self._cv.notify_all()
        f.close()
        with self._cv:
            self._open -= 1
            self._cv.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        if exc_type is not None:
            self.dump()
        return False

    def __repr__(self):
        return '<Proc %s pid %d>' % (self.name, self.pid)

    def _matches(self, rx, stream, after):
        with self._cv:
            lines = self.lines[after:]
        return [m for m in (rx.search(t) for s, t in lines
                            if stream is None or s == stream) if m]

    def mark(self):
        """The number of lines so far: pass it as after= to wait for a
        line that comes later than now."""
        with self._cv:
            return len(self.lines)

    def count(self, regex, stream=None, after=0):
        """How many lines (from index after on) match regex so far."""
        return len(self._matches(re.compile(regex), stream, after))

    def wait_count(self, regex, n, timeout=DEFAULT_TIMEOUT, stream=None,
                   after=0):
        """Waits until at least n lines match; returns the list of matches.
        Raises AssertionError with the output tail on timeout or if the
        process ends first."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                ms = [m for m in (rx.search(t) for s, t in self.lines[after:]
                                  if stream is None or s == stream) if m]
                if len(ms) >= n:
                    return ms
                left = deadline - time.monotonic()
                if self._open == 0:
                    why = 'process ended (status %s)' % self.p.poll()
                elif left <= 0:
                    why = 'timed out after %.1f s' % timeout
                else:
                    self._cv.wait(left)
                    continue
                raise AssertionError(
                    '%s: waiting for %d line(s) matching %r, saw %d: %s\n%s'
                    % (self.name, n, regex, len(ms), why,
                       self.tail_text()))

    def expect_count(self, regex, n, timeout=DEFAULT_TIMEOUT, stream=None):
        """Exactly n lines match: waits for the nth (output arrives through
        a pipe and a reader thread, so a line already written may not be
        here yet), then asserts there are no more."""
        if n > 0:
            self.wait_count(regex, n, timeout, stream)
        got = self.count(regex, stream)
        assert got == n, '%s: %d lines match %r, expected %d\n%s' % (
            self.name, got, regex, n, self.tail_text())

    def wait_line(self, regex, timeout=DEFAULT_TIMEOUT, stream=None,
                  after=0):
        """Waits for a line matching regex (re.search) and returns its
        match object; the first such line from index after on."""
        return self.wait_count(regex, 1, timeout, stream, after)[0]

    def running(self):
        return self.p.poll() is None

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        """Waits for the process to end by itself; returns its status."""
        try:
            self.returncode = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('%s did not exit within %.1f s\n%s' %
                                 (self.name, timeout, self.tail_text()))
        self._join()
        return self.returncode

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def pause(self):
        """SIGSTOP: the process hangs (its sockets stay open, the kernel
        still accepts connections for it) until resume() or stop()."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT after pause()."""
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout=5.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit
        status (negative: killed by that signal). Safe to call twice."""
        if self.p.poll() is None:
            after = self.mark()
            try:
                os.kill(self.pid, signal.SIGTERM)
                # A paused process would only see the SIGTERM after the
                # SIGKILL timeout.
                if self.paused:
                    os.kill(self.pid, signal.SIGCONT)
                    self.paused = False
            except ProcessLookupError:
                pass
            # dotproxy drains on SIGTERM (lameduck, 5 s by default); a
            # second SIGTERM once it says so ends the wait.
            if self.name == 'dotproxy':
                try:
                    self.wait_line(r'draining: /ready says 503',
                                   min(timeout, 2.0), stream='stderr',
                                   after=after)
                    os.kill(self.pid, signal.SIGTERM)
                except (AssertionError, ProcessLookupError):
                    pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                sys.stderr.write('%s: no exit after SIGTERM, killing\n'
                                 % self.name)
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()
        self.returncode = self.p.returncode
        self._join()
        return self.returncode

    def _join(self):
        for t in self._threads:
            t.join(5)

    def output(self, stream=None):
        with self._cv:
            return [t for s, t in self.lines if stream is None or s == stream]

    def tail_text(self, n=40):
        with self._cv:
            lines = self.lines[-n:]
        head = '---- %s (pid %d) last %d lines ----\n' % (self.name, self.pid,
                                                          len(lines))
        return head + ''.join('%s %s\n' % ('E' if s == 'stderr' else 'O', t)
                              for s, t in lines)

    def dump(self, n=40):
        sys.stderr.write(self.tail_text(n))


def _stop_all():
    for p in _procs:
        with contextlib.suppress(Exception):
            p.stop(2)


atexit.register(_stop_all)


def start_dotserver(c, *args, cert='server', port=0,
                    timeout=DEFAULT_TIMEOUT):
    """Starts tests/dotserver with the certificate named cert ('server',
    'other', 'rogue', 'expired', 'notyet', 'chain') from the certs() dict
    c, on port (0: the kernel picks one; a given port lets a test restart
    a server where a client expects it); returns the Proc with .port set
    from its 'port N' line."""
    p = Proc([DOTSERVER, '--cert', c[cert], '--key', c[cert + '_key'],
              '--port', str(port)] + list(args), name='dotserver')
    try:
        p.port = int(p.wait_line(r'^port (\d+)$', timeout,
                                 stream='stdout').group(1))
    except BaseException:
        p.stop()
        raise
    return p


def _dotserver_state(p, sig, word, timeout):
    after = p.mark()
    p.signal(sig)
    p.wait_line(r'^%s$' % word, timeout, stream='stdout', after=after)


def dotserver_down(p, timeout=DEFAULT_TIMEOUT):
    """Takes a dotserver down (SIGUSR1) and waits for its 'down' line:
    from then on every connection it had is shut down and new ones are
    closed before TLS ('refused down'), on the same port. Harmless if it
    is down already."""
    _dotserver_state(p, signal.SIGUSR1, 'down', timeout)


def dotserver_up(p, timeout=DEFAULT_TIMEOUT):
    """Brings a dotserver back up (SIGUSR2) and waits for its 'up' line."""
    _dotserver_state(p, signal.SIGUSR2, 'up', timeout)


TEST_WORKERS = os.environ.get('DOTPROXY_TEST_WORKERS', '2')


def _built_with(symbol):
    try:
        with open(DOTPROXY, 'rb') as f:
            return symbol in f.read()
    except OSError:
        return False


# A ThreadSanitizer build runs several times slower and its shadow memory
# makes RSS say nothing: the few tests that measure time spans or memory
# widen their bounds or skip the memory check when this is true.
TSAN = _built_with(b'__tsan_init')


def sanitized(pid):
    """Is process pid built with a sanitizer (AddressSanitizer's shadow
    memory and quarantine, ThreadSanitizer's shadow) so that its RSS is no
    measure of what it holds?"""
    with open('/proc/%d/maps' % pid) as f:
        return any('libasan' in line or 'libtsan' in line for line in f)


def _conf_sets_workers(args):
    """Whether the -c file in args has a workers line: a test that is
    about one loop's behaviour (one upstream connection, say) pins it."""
    args = list(args)
    if '-c' not in args or args.index('-c') + 1 >= len(args):
        return False
    try:
        with open(args[args.index('-c') + 1]) as f:
            return any(l.split()[:1] == ['workers'] for l in f)
    except OSError:
        return False


def start_dotproxy(*args, port=None, env=None, timeout=DEFAULT_TIMEOUT,
                   listen=True):
    """Starts DOTPROXY -d -l 127.0.0.1@PORT ARGS... and waits for a stderr
    line containing 'ready'. PORT is free_port() unless given; if the
    program ends before 'ready' because the port was taken meanwhile, it is
    retried with another. listen=False leaves out -l (the config then says
    where to listen, and port= should name that port). Returns the Proc
    with .port set."""
    for attempt in range(3):
        p_port = port if port is not None else free_port()
        argv = [DOTPROXY, '-d']
        # A config file installed on the machine must not change a test.
        if '-c' not in args:
            argv += ['-c', os.devnull]
        if listen:
            argv += ['-l', '127.0.0.1@%d' % p_port]
        # Two workers unless a test says otherwise: every behaviour is
        # checked with a query path spread over threads.
        if '--workers' not in args and not _conf_sets_workers(args):
            argv += ['--workers', TEST_WORKERS]
        p = Proc(argv + list(args), name='dotproxy', env=env)
        p.port = p_port
        try:
            p.wait_line(r'ready', timeout, stream='stderr')
            return p
        except AssertionError:
            p.stop()
            taken = any('in use' in t.lower() for t in p.output())
            if port is not None or not taken or attempt == 2:
                raise
            _procs.remove(p)
    raise AssertionError('unreachable')


# ---- Redis and twemproxy (the shared cache's tests) ----

REDIS_SERVER = '/usr/bin/redis-server'
NUTCRACKER = '/usr/sbin/nutcracker'


def _need(path, package):
    """A missing tool fails the test (CI installs it: nothing is skipped)."""
    if not os.access(path, os.X_OK):
        raise AssertionError('%s not found: install the Debian package %s '
                             '(contrib/deps.sh --test)' % (path, package))


def start_redis(port=0, extra=(), timeout=DEFAULT_TIMEOUT):
    """Starts Debian's redis-server on 127.0.0.1:PORT without persistence,
    in the foreground (its log on stdout), and waits for its 'Ready to
    accept connections' line. port 0: a free one (redis-server has no
    'pick one' port: 0 would turn TCP off), retried if it was taken
    meanwhile; a given port lets a test restart Redis where the clients
    expect it. extra: more redis-server options ('--maxmemory', '1mb').
    Returns the Proc (a context manager) with .port set."""
    _need(REDIS_SERVER, 'redis-server')
    for attempt in range(3):
        p_port = port or free_port()
        p = Proc([REDIS_SERVER, '--port', p_port, '--bind', '127.0.0.1',
                  '--save', '', '--appendonly', 'no', '--daemonize', 'no',
                  '--logfile', ''] + list(extra), name='redis-server')
        p.port = p_port
        try:
            p.wait_line(r'Ready to accept connections', timeout)
            return p
        except AssertionError:
            p.stop()
            taken = any('in use' in t.lower() for t in p.output())
            if port or not taken or attempt == 2:
                raise
            _procs.remove(p)
    raise AssertionError('unreachable')


class RedisError(Exception):
    """An error reply ('-ERR ...', '-WRONGTYPE ...') from Redis."""


class RespConn:
    """A minimal RESP2 client over one TCP connection (python3-redis is not
    among the test dependencies): cmd() sends an array of bulk strings and
    returns the reply: str for a status ('OK', 'PONG'), int, bytes or None
    for a bulk string, a list for an array; an error reply raises
    RedisError. Arguments may be str, bytes or int."""

    def __init__(self, port, host='127.0.0.1', timeout=3.0):
        self.s = socket.create_connection((host, port), timeout)
        self.s.settimeout(timeout)
        self.f = self.s.makefile('rb')

    def close(self):
        self.f.close()
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @staticmethod
    def _arg(a):
        if isinstance(a, bytes):
            return a
        return str(a).encode()

    def send(self, *args):
        out = [b'*%d\r\n' % len(args)]
        for a in args:
            a = self._arg(a)
            out.append(b'$%d\r\n%s\r\n' % (len(a), a))
        self.s.sendall(b''.join(out))

    def _line(self):
        line = self.f.readline()
        if not line.endswith(b'\r\n'):
            raise ConnectionError('redis: connection closed mid-reply')
        return line[:-2]

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b'+':
            return rest.decode()
        if kind == b'-':
            raise RedisError(rest.decode('utf-8', 'replace'))
        if kind == b':':
            return int(rest)
        if kind == b'$':
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError('redis: connection closed mid-reply')
            return data[:-2]
        if kind == b'*':
            n = int(rest)
            if n < 0:
                return None
            items = []
            for _ in range(n):
                try:
                    items.append(self.reply())
                except RedisError as e:
                    items.append(e)
            return items
        raise ConnectionError('redis: bad reply line %r' % line)

    def cmd(self, *args):
        self.send(*args)
        return self.reply()


def redis_cmd(port, *args, timeout=3.0):
    """One command over a new connection; its reply (see RespConn)."""
    with RespConn(port, timeout=timeout) as r:
        return r.cmd(*args)


def redis_wait(port, *args, pred=lambda v: bool(v), timeout=DEFAULT_TIMEOUT,
               interval=0.01):
    """Repeats a command until pred(reply) holds, for things that have no
    event to await (a fire-and-forget write landing in Redis); returns the
    reply. Bounded: raises AssertionError with the last reply after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    with RespConn(port) as r:
        while True:
            v = r.cmd(*args)
            if pred(v):
                return v
            if time.monotonic() >= deadline:
                raise AssertionError('redis %d: %r still %r after %.1f s'
                                     % (port, args, v, timeout))
            time.sleep(interval)


_nc_tmp = []


def _cleanup_nc_tmp():
    for d in _nc_tmp:
        shutil.rmtree(d, ignore_errors=True)


def start_nutcracker(redis_ports, port=0, timeout=DEFAULT_TIMEOUT):
    """Starts twemproxy (Debian's nutcracker) on 127.0.0.1:PORT (0: a free
    one) in front of the redis-servers on redis_ports, keys spread by
    fnv1a_64 with ketama. Its statistics port is bound to loopback too, and
    its log goes to stderr. nutcracker logs nothing when it listens, so
    readiness is a PING answered through it (bounded polling). Returns the
    Proc with .port set."""
    _need(NUTCRACKER, 'nutcracker')
    d = tempfile.mkdtemp(prefix='dotproxy-nc-')
    if not _nc_tmp:
        atexit.register(_cleanup_nc_tmp)
    _nc_tmp.append(d)
    p_port = port or free_port()
    conf = os.path.join(d, 'nutcracker.yml')
    with open(conf, 'w') as f:
        f.write('pool:\n  listen: 127.0.0.1:%d\n  hash: fnv1a_64\n'
                '  distribution: ketama\n  redis: true\n'
                '  auto_eject_hosts: false\n  servers:\n' % p_port)
        for rp in redis_ports:
            f.write('   - 127.0.0.1:%d:1\n' % rp)
    p = Proc([NUTCRACKER, '-c', conf, '-s', free_port(), '-a', '127.0.0.1',
              '-o', '/dev/stderr', '-p', os.path.join(d, 'pid')],
             name='nutcracker')
    p.port = p_port
    p.conf = conf
    try:
        p.wait_line(r'started on pid', timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if redis_cmd(p_port, 'PING', timeout=1.0) == 'PONG':
                    break
            except (OSError, ConnectionError, RedisError):
                pass
            if not p.running() or time.monotonic() >= deadline:
                raise AssertionError('nutcracker did not answer PING on %d'
                                     '\n%s' % (p_port, p.tail_text()))
            time.sleep(0.02)
    except BaseException:
        p.stop()
        raise
    return p


SHC_MAGIC = b'DPX1'


def shc_key(name, qtype='A', qclass=1, flags=0, prefix=b'dotproxy:'):
    """The shared cache's Redis key of a question: the prefix, then
    cache_key_make's bytes (the lowercased wire name, QTYPE and QCLASS in
    network order, the flag byte: 0x01 DO, 0x02 CD, 0x04 AD without DO;
    a make_query() query has 0, dig sets AD by default: 0x04)."""
    if isinstance(qtype, str):
        qtype = QTYPES[qtype.upper()]
    if isinstance(prefix, str):
        prefix = prefix.encode()
    return (prefix + encode_name(name.lower()) +
            struct.pack('!HHB', qtype, qclass, flags))


def shc_value(answer, fetched_ms, lifetime_s, magic=SHC_MAGIC):
    """A shared cache value: magic, fetch time (ms since the epoch, 8 bytes)
    and lifetime (s, 4 bytes) in network order, then the answer."""
    return magic + struct.pack('!QI', fetched_ms, lifetime_s) + answer


def shc_parse(value):
    """(fetched_ms, lifetime_s, answer bytes) of a value; AssertionError if
    it has not our magic or is shorter than the header."""
    assert value is not None and len(value) >= 16 and \
        value[:4] == SHC_MAGIC, 'not a shared cache value: %r' % value[:32]
    fetched, lifetime = struct.unpack('!QI', value[4:16])
    return fetched, lifetime, value[16:]


def make_answer(name, qtype='A', ttl=300, rdatas=(b'\xc0\x00\x02\x01',),
                rcode=0, qid=0):
    """An answer message: the question, then one record per rdata with
    its owner a compression pointer to the question's name."""
    if isinstance(qtype, str):
        qtype = QTYPES[qtype.upper()]
    msg = struct.pack('!HHHHHH', qid, 0x8180 | rcode, 1, len(rdatas), 0, 0)
    msg += encode_name(name) + struct.pack('!HH', qtype, 1)
    for rd in rdatas:
        msg += struct.pack('!HHHIH', 0xc00c, qtype, 1, ttl, len(rd)) + rd
    return msg


# ---- clients ----

class Result:
    """A parsed dig/kdig answer. rcode is the status ('NOERROR', ...) or
    None if no answer came; flags a list like ['qr', 'rd', 'ra'];
    answers/authority/additional lists of (name, ttl, type, data) with the
    name lowercased and ttl an int; raw the full output; returncode the
    tool's exit status."""

    def __init__(self, raw, returncode):
        self.raw = raw
        self.returncode = returncode
        self.rcode = None
        self.flags = []
        self.id = None
        self.answers = []
        self.authority = []
        self.additional = []
        section = None
        for line in raw.splitlines():
            m = re.search(r'->>HEADER<<-.*status: ([A-Z0-9]+)[,;] id: (\d+)',
                          line)
            if m:
                self.rcode = m.group(1)
                self.id = int(m.group(2))
                continue
            m = re.match(r';; [Ff]lags: ([a-z ]*)[;]', line)
            if m:
                self.flags = m.group(1).split()
                continue
            m = re.match(r';; ([A-Z]+) SECTION:', line)
            if m:
                section = {'ANSWER': self.answers,
                           'AUTHORITY': self.authority,
                           'ADDITIONAL': self.additional}.get(m.group(1))
                continue
            if not line.strip() or line.startswith(';'):
                if not line.strip():
                    section = None
                continue
            if section is not None:
                f = line.split(None, 4)
                if len(f) >= 4 and f[1].isdigit():
                    section.append((f[0].lower(), int(f[1]), f[3],
                                    f[4] if len(f) > 4 else ''))

    def __repr__(self):
        return '<Result %s flags=%s answers=%r>' % (self.rcode, self.flags,
                                                    self.answers)

    def data(self, rtype=None):
        """The data fields of the answers (of type rtype if given)."""
        return [a[3] for a in self.answers if rtype is None or a[2] == rtype]


def _run_tool(argv, timeout):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ''
        if isinstance(out, bytes):
            out = out.decode('utf-8', 'replace')
        return Result(out + '\n;; harness: timed out\n', -1)
    return Result(r.stdout, r.returncode)


def dig(port, name, qtype='A', tcp=False, extra=(), time_s=5):
    """dig @127.0.0.1 -p PORT +tries=1 +time=TIME_S NAME QTYPE [+tcp]
    [EXTRA...]; returns a Result (rcode None when no answer came)."""
    argv = ['dig', '@127.0.0.1', '-p', str(port), '+tries=1',
            '+time=%d' % time_s, name, qtype]
    if tcp:
        argv.append('+tcp')
    return _run_tool(argv + list(extra), time_s + 10)


def kdig(port, name, qtype='A', tcp=False, tls_ca=None,
         tls_hostname='dns.example', extra=(), time_s=5):
    """kdig against 127.0.0.1@PORT; with tls_ca (a CA file) it speaks DoT
    and verifies the server as tls_hostname. Returns a Result."""
    argv = ['kdig', '@127.0.0.1', '-p', str(port), '+retry=0',
            '+timeout=%d' % time_s, name, qtype]
    if tls_ca:
        argv += ['+tls-ca=' + tls_ca, '+tls-hostname=' + tls_hostname]
    elif tcp:
        argv.append('+tcp')
    return _run_tool(argv + list(extra), time_s + 10)


def ares_client(port, name, qtype='A', tcp=False):
    """Runs tests/ares_client; returns (exit status, list of output
    lines)."""
    argv = [ARES_CLIENT, '127.0.0.1', str(port), name, qtype]
    if tcp:
        argv.append('--tcp')
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=15)
    return r.returncode, r.stdout.splitlines()


# ---- raw wire ----

QTYPES = {'A': 1, 'NS': 2, 'CNAME': 5, 'SOA': 6, 'PTR': 12, 'MX': 15,
          'TXT': 16, 'AAAA': 28, 'SRV': 33, 'OPT': 41, 'ANY': 255}
RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED']


def encode_name(name):
    """Wire form of a presentation name (no escapes)."""
    out = b''
    for label in name.rstrip('.').split('.') if name.strip('.') else []:
        b = label.encode('ascii')
        if not 0 < len(b) < 64:
            raise ValueError('bad label in %r' % name)
        out += bytes([len(b)]) + b
    return out + b'\0'


def make_query(name, qtype='A', qid=0x1234, rd=True, edns=None, do=False):
    """A query message. qtype is a name from QTYPES or a number; edns is
    the advertised UDP payload size (an OPT record is added) or None."""
    if isinstance(qtype, str):
        qtype = QTYPES[qtype.upper()]
    flags = 0x0100 if rd else 0
    msg = struct.pack('!HHHHHH', qid, flags, 1, 0, 0,
                      1 if edns is not None else 0)
    msg += encode_name(name) + struct.pack('!HH', qtype, 1)
    if edns is not None:
        msg += b'\0' + struct.pack('!HHIH', 41, edns,
                                   0x8000 if do else 0, 0)
    return msg


def parse_header(reply):
    """(id, flags, rcode, qdcount, ancount, nscount, arcount) of a
    message; flags is the whole 16-bit word, rcode its low 4 bits."""
    qid, flags, qd, an, ns, ar = struct.unpack('!HHHHHH', reply[:12])
    return (qid, flags, flags & 0xf, qd, an, ns, ar)


def _read_name(msg, off):
    """(lowercased name with trailing dot, offset after it); follows
    compression pointers, bounded."""
    labels = []
    end = None
    for _ in range(128):
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xc0 == 0xc0:
            if end is None:
                end = off + 2
            off = ((n & 0x3f) << 8) | msg[off + 1]
            continue
        labels.append(msg[off + 1:off + 1 + n].decode('ascii', 'replace'))
        off += 1 + n
    else:
        raise ValueError('name too long or looped')
    return ('.'.join(labels).lower() + '.', end if end is not None else off)


class Message:
    """A decoded DNS message (for assertions on raw replies): id, flags,
    rcode, question (name, type, class), and answers/authority/additional
    as lists of (name, type, class, ttl, rdata bytes). Raises ValueError
    or IndexError on a malformed message."""

    def __init__(self, msg):
        (self.id, self.flags, self.rcode, qd, an, ns,
         ar) = parse_header(msg)
        off = 12
        self.question = None
        for _ in range(qd):
            name, off = _read_name(msg, off)
            t, c = struct.unpack('!HH', msg[off:off + 4])
            off += 4
            self.question = (name, t, c)
        self.answers, self.authority, self.additional = [], [], []
        for lst, n in ((self.answers, an), (self.authority, ns),
                       (self.additional, ar)):
            for _ in range(n):
                name, off = _read_name(msg, off)
                t, c, ttl, rdlen = struct.unpack('!HHIH', msg[off:off + 10])
                off += 10
                if off + rdlen > len(msg):
                    raise ValueError('rdata past end')
                lst.append((name, t, c, ttl, msg[off:off + rdlen]))
                off += rdlen

    @property
    def tc(self):
        return bool(self.flags & 0x0200)


def udp_query(port, wire, timeout=3.0):
    """Sends wire to 127.0.0.1:PORT over UDP; the reply bytes or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(wire, ('127.0.0.1', port))
        return s.recvfrom(65535)[0]
    except socket.timeout:
        return None
    finally:
        s.close()


class TcpConn:
    """A plain DNS-over-TCP connection with RFC 7766 framing, for
    pipelining tests. recv() returns one message, or None on timeout or
    when the peer closed."""

    def __init__(self, port, timeout=3.0):
        self.s = socket.create_connection(('127.0.0.1', port), timeout)
        self.timeout = timeout

    def send(self, wire):
        self.s.sendall(struct.pack('!H', len(wire)) + wire)

    def _exact(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def recv(self, timeout=None):
        self.s.settimeout(self.timeout if timeout is None else timeout)
        try:
            h = self._exact(2)
            if h is None:
                return None
            return self._exact(struct.unpack('!H', h)[0])
        except (socket.timeout, ConnectionResetError):
            return None

    def close(self):
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class DotConn(TcpConn):
    """A DNS-over-TLS client connection (Python's ssl) that verifies the
    server against the CA file ca as hostname. Raises ssl.SSLError or
    OSError if the connection or handshake fails."""

    def __init__(self, port, ca, hostname='dns.example', timeout=3.0):
        ctx = ssl.create_default_context(cafile=ca)
        raw = socket.create_connection(('127.0.0.1', port), timeout)
        try:
            self.s = ctx.wrap_socket(raw, server_hostname=hostname)
        except BaseException:
            raw.close()
            raise
        self.timeout = timeout

    def recv(self, timeout=None):
        try:
            return TcpConn.recv(self, timeout)
        except (ssl.SSLError, OSError):
            return None


def tcp_query(port, wire, timeout=3.0):
    """One framed query over a new TCP connection; reply bytes or None."""
    try:
        with TcpConn(port, timeout) as c:
            c.send(wire)
            return c.recv()
    except OSError:
        return None


# ---- runner ----

_SANITIZER = re.compile(r'ERROR: (Address|Leak|Thread|Memory)Sanitizer|'
                        r'WARNING: ThreadSanitizer|runtime error: ')


class _TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise _TestTimeout('test took longer than %d s' % TEST_TIMEOUT)


def run(tests):
    """Runs each test function in order; prints 'PASS name' or 'FAIL name'
    with the traceback and the output tail of every process the test
    started, then 'N passed, M failed', and exits 1 if any failed, else 0.
    Names given on the command line select a subset."""
    want = set(sys.argv[1:])
    passed = failed = 0
    signal.signal(signal.SIGALRM, _alarm)
    for t in tests:
        if want and t.__name__ not in want:
            continue
        del _procs[:]
        start = time.monotonic()
        signal.alarm(TEST_TIMEOUT)
        try:
            t()
            ok = True
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            ok = False
            tb = traceback.format_exc()
        finally:
            signal.alarm(0)
        # A test that forgot to stop something must not leak it.
        for p in _procs:
            p.stop()
        # A sanitizer report fails the test even if the clients were happy.
        if ok:
            for p in _procs:
                bad = [t for t in p.output() if _SANITIZER.search(t)]
                if bad:
                    ok = False
                    tb = '%s: sanitizer report: %s\n' % (p.name, bad[0])
        took = time.monotonic() - start
        if ok:
            passed += 1
            print('PASS %s (%.2f s)' % (t.__name__, took))
        else:
            failed += 1
            print('FAIL %s (%.2f s)' % (t.__name__, took))
            print(tb, end='')
            for p in _procs:
                print(p.tail_text(), end='')
        sys.stdout.flush()
    print('%d passed, %d failed' % (passed, failed))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
