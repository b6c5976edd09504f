#!/bin/sh
# tests/bench/hitcost.sh: instructions per cache hit, counted by callgrind.
#
# Usage (from the build directory): hitcost.sh [-n HITS] [--compare FILE]
#
# Timing on a shared 2-core box is noise; an instruction count is not. This
# runs dotproxy under valgrind --tool=callgrind twice against tests/dotserver
# on 127.0.0.1 (certificates from tests/integ/gencerts.sh in a temp dir):
# both runs warm the cache with one pass over a fixed query mix (100 names
# type A, 20 of them also AAAA, 10 NXDOMAIN names: 130 distinct questions,
# plain DNS over UDP without EDNS), then the first sends HITS hits (the mix
# over and over) and the second none. Instructions per hit are the
# difference of the two totals divided by HITS, so start-up, the TLS
# handshake, the warm-up misses and the shutdown cancel out. The hits go
# one at a time (dnsperf -c 1 -q 1 when installed, else a small client
# here that awaits each answer), so each hit is a loop turn of its own and
# its cost includes the turn (epoll, one recvmmsg, one send). callgrind
# counts user-space instructions only: the kernel's side of recvmmsg,
# sendmsg and epoll_wait is not in the figure.
#
# Checks, so that the figure is about hits: every answer has its query's ID
# and the expected rcode, the hit run's answers all arrive, and the test
# server saw exactly the 130 warm-up misses in each run (no hit went
# upstream, nothing expired or was prefetched). Readiness is awaited on log
# lines and answers, every wait is bounded. The per-function table is the
# same difference, per hit, by inclusive cost (callgrind_annotate of both
# runs); then the hit run's own top functions.
#
# --compare FILE prints the figure next to the one in FILE (tests/bench/
# BASELINE: "ir_per_hit N" and notes) and the difference in percent.
# Env: DOTPROXY (./dotproxy), DOTSERVER (./tests/dotserver), GENCERTS
# (tests/integ/gencerts.sh beside this script), HITCOST_KEEP=1 keeps the
# temp dir, HITCOST_CONF adds lines to dotproxy's config ("\n" between
# them, "{run}" replaced by a word unique to the run), e.g.
# "shared-cache redis://127.0.0.1:6379\nshared-cache-prefix {run}:" to
# show that a configured shared cache costs a hit nothing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for t in valgrind callgrind_annotate certtool; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "hitcost: $t not found (Debian: valgrind, gnutls-bin)" >&2
		exit 1
	}
done
exec /usr/bin/python3 - "$here" "$@" <<'PYEOF'
import os, re, shutil, signal, socket, struct, subprocess, sys, tempfile
import threading, time

here = sys.argv[1]
args = sys.argv[2:]
hits = 39000
compare = None
while args:
    a = args.pop(0)
    if a == '-n' and args:
        hits = int(args.pop(0))
    elif a == '--compare' and args:
        compare = args.pop(0)
    else:
        sys.exit('usage: hitcost.sh [-n HITS] [--compare FILE]')

DOTPROXY = os.path.abspath(os.environ.get('DOTPROXY', './dotproxy'))
DOTSERVER = os.path.abspath(os.environ.get('DOTSERVER', './tests/dotserver'))
GENCERTS = os.environ.get('GENCERTS',
                          os.path.join(here, '..', 'integ', 'gencerts.sh'))
for f in (DOTPROXY, DOTSERVER):
    if not os.access(f, os.X_OK):
        sys.exit('hitcost: %s not built (run from the build directory)' % f)

# The fixed mix: (name, qtype, rcode).
A, AAAA = 1, 28
MIX = [('h%d.hit.test' % i, A, 0) for i in range(100)]
MIX += [('h%d.hit.test' % i, AAAA, 0) for i in range(20)]
MIX += [('nx%d.hit.test' % i, A, 3) for i in range(10)]
MIX_TEXT = '100 A + 20 AAAA + 10 NXDOMAIN (130 questions), UDP, no EDNS'
if hits % len(MIX):
    sys.exit('hitcost: HITS must be a multiple of %d' % len(MIX))


class Proc:
    """A child whose stdout and stderr lines are collected and awaited."""

    def __init__(self, argv, cwd):
        self.p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        self.lines = {'stdout': [], 'stderr': []}
        self.cv = threading.Condition()
        for name in self.lines:
            threading.Thread(target=self._read, args=(name,),
                             daemon=True).start()

    def _read(self, name):
        for line in getattr(self.p, name):
            with self.cv:
                self.lines[name].append(line.rstrip('\n'))
                self.cv.notify_all()
        with self.cv:
            self.lines[name].append(None)
            self.cv.notify_all()

    def wait_line(self, rx, timeout, stream):
        rx = re.compile(rx)
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for line in self.lines[stream]:
                    if line is None:
                        raise RuntimeError('exited before /%s/' % rx.pattern)
                    m = rx.search(line)
                    if m:
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError('no /%s/ in %ds' % (rx.pattern,
                                                           timeout))
                self.cv.wait(left)

    def stop(self, timeout):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise RuntimeError('did not exit within %ds of SIGTERM' % timeout)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def query(qid, name, qtype):
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    return q + b'\0' + struct.pack('>HH', qtype, 1)


def ask_all(port, items, timeout):
    """Send each query and await its answer; check ID and rcode."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.connect(('127.0.0.1', port))
    try:
        for i, (name, qtype, rcode) in enumerate(items):
            qid = (i * 7919 + 1) & 0xffff
            s.send(query(qid, name, qtype))
            a = s.recv(4096)
            gid, flags = struct.unpack('>HH', a[:4])
            if gid != qid or flags & 15 != rcode:
                raise RuntimeError('%s %d: id %d rcode %d, want %d %d' %
                                   (name, qtype, gid, flags & 15, qid, rcode))
    finally:
        s.close()


def dnsperf_hits(port, tmp, n):
    path = os.path.join(tmp, 'mix.txt')
    with open(path, 'w') as f:
        for name, qtype, _ in MIX:
            f.write('%s %s\n' % (name, 'A' if qtype == A else 'AAAA'))
    out = subprocess.run(['dnsperf', '-s', '127.0.0.1', '-p', str(port),
                          '-d', path, '-n', str(n // len(MIX)), '-c', '1',
                          '-q', '1', '-t', '10', '-l', '600'],
                         capture_output=True, text=True, timeout=900).stdout
    done = re.search(r'Queries completed:\s+(\d+)', out)
    codes = dict((k, int(v)) for k, v in
                 re.findall(r'(NOERROR|NXDOMAIN|SERVFAIL|REFUSED) (\d+)',
                            out))
    want = {'NOERROR': n * 120 // 130, 'NXDOMAIN': n * 10 // 130}
    if done is None or int(done.group(1)) != n or codes != want:
        raise RuntimeError('dnsperf: not %d answers as %s:\n%s' %
                           (n, want, out))


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            m = re.match(r'(?:summary|totals):\s+(\d+)', line)
            if m:
                return int(m.group(1))
    raise RuntimeError('no total in ' + path)


def by_function(path, inclusive):
    """{function: Ir} from callgrind_annotate's table. A function listed
    under two spellings of its file counts once."""
    out = subprocess.run(['callgrind_annotate', '--threshold=100',
                          '--auto=no', '--inclusive=' +
                          ('yes' if inclusive else 'no'), path],
                         capture_output=True, text=True, check=True).stdout
    fn, table = {}, False
    for line in out.splitlines():
        if 'file:function' in line:
            table = True
            continue
        m = re.match(r'\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)'
                     r'(?:\s+\[[^]]*\])?$', line)
        if table and m and ':' in m.group(2):
            name = m.group(2).split(':', 1)[1]
            fn[name] = max(fn.get(name, 0),
                           int(m.group(1).replace(',', '')))
    return fn, out


def run(tmp, n, tag):
    """One callgrind run with n hits. Returns the callgrind output file."""
    cg = os.path.join(tmp, 'callgrind.%s.out' % tag)
    srv = Proc([DOTSERVER, '--cert', 'server.pem', '--key', 'server-key.pem',
                '--addr', '127.0.0.1', '--port', '0'], tmp)
    px = None
    try:
        tls_port = int(srv.wait_line(r'^port (\d+)', 10, 'stdout').group(1))
        port = free_port()
        conf = os.path.join(tmp, 'dotproxy.conf')
        with open(conf, 'w') as f:
            # Generous timeouts: under valgrind the first handshake is slow.
            f.write('listen 127.0.0.1@%d\nupstream 127.0.0.1@%d#dns.example\n'
                    'lameduck 0\nconnect-timeout 20s\nanswer-timeout 20s\n'
                    'query-timeout 30s\n' % (port, tls_port))
            extra = os.environ.get('HITCOST_CONF', '')
            if extra:
                # {run}: a word of this run's own, e.g. for a shared-cache
                # prefix, so that the second run's warm-up misses do not
                # find what the first one wrote.
                run_id = os.path.basename(tmp) + '-' + tag
                f.write(extra.replace('\\n', '\n').replace('{run}', run_id)
                        + '\n')
        px = Proc(['valgrind', '--tool=callgrind', '--callgrind-out-file=' +
                   cg, DOTPROXY, '-d', '-c', conf, '--ca-file', 'ca.pem'],
                  tmp)
        px.wait_line(r'ready', 180, 'stderr')
        ask_all(port, MIX, 60)              # warm-up: 130 misses
        if n > 0:
            if shutil.which('dnsperf'):
                dnsperf_hits(port, tmp, n)
            else:
                ask_all(port, MIX * (n // len(MIX)), 10)
        rc = px.stop(120)
        px = None
        if rc != 0:
            raise RuntimeError('dotproxy exited %d' % rc)
    except Exception:
        if px is not None:
            sys.stderr.write('\n'.join(l for l in px.lines['stderr'] if l))
            px.stop(30)
        raise
    finally:
        srv.stop(10)
    upq = sum(1 for l in srv.lines['stdout'] if l and l.startswith('query '))
    if upq != len(MIX):
        raise RuntimeError('%s run: %d upstream queries, want %d (a hit '
                           'went upstream)' % (tag, upq, len(MIX)))
    return cg


def main():
    tmp = tempfile.mkdtemp(prefix='hitcost.')
    try:
        subprocess.run(['sh', GENCERTS, tmp], check=True)
        cg_hit = run(tmp, hits, 'hits')
        cg_base = run(tmp, 0, 'base')
        t_hit, t_base = callgrind_total(cg_hit), callgrind_total(cg_base)
        per_hit = (t_hit - t_base) / hits
        inc_hit, text = by_function(cg_hit, True)
        inc_base, _ = by_function(cg_base, True)
        self_hit, _ = by_function(cg_hit, False)
        self_base, _ = by_function(cg_base, False)
        print('hitcost: %d hits, mix %s' % (hits, MIX_TEXT))
        print('hitcost: hit run %d Ir, warm-up-only run %d Ir' %
              (t_hit, t_base))
        print('\nper hit, by function (difference of the runs / hits):')
        print('%10s %10s  %s' % ('inclusive', 'self', 'function'))
        rows = sorted(((inc_hit.get(k, 0) - inc_base.get(k, 0)) / hits, k)
                      for k in inc_hit)
        for inc, k in reversed(rows[-30:]):
            if inc < 1:
                break
            own = (self_hit.get(k, 0) - self_base.get(k, 0)) / hits
            print('%10.0f %10.0f  %s' % (inc, own, k))
        print('\nhit run, top functions by inclusive cost '
              '(callgrind_annotate):')
        body = text.split('\n')
        start = next((i for i, l in enumerate(body)
                      if l.startswith('Ir') or 'file:function' in l), 0)
        print('\n'.join(body[start:start + 32]))
        print('\nHITCOST ir_per_hit=%.0f hits=%d' % (per_hit, hits))
        if compare:
            base = None
            with open(compare) as f:
                for line in f:
                    m = re.match(r'ir_per_hit\s+(\d+)', line)
                    if m:
                        base = int(m.group(1))
            if base is None:
                sys.exit('hitcost: no ir_per_hit in ' + compare)
            print('instructions per hit: today %.0f, baseline %d (%s): '
                  '%+.1f %%' % (per_hit, base, compare,
                                (per_hit - base) * 100.0 / base))
    finally:
        if os.environ.get('HITCOST_KEEP') == '1':
            print('hitcost: kept ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


try:
    main()
except (RuntimeError, subprocess.SubprocessError) as e:
    sys.exit('hitcost: %s' % e)
PYEOF
