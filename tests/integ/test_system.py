"""test_system.py: dotproxy and the system around it: dropping privileges,
systemd's readiness and watchdog notifications, and socket activation.

The privilege drop is tested for real, as root, on port 53 inside a network
namespace of its own (unshare -n holds it; nsenter puts the test backend,
dotproxy and dig in it), so that nothing on the host's port 53 is touched.
systemd is played by the test: a unix datagram socket as NOTIFY_SOCKET,
and a small launcher that puts bound sockets at fds 3 and 4 and sets
LISTEN_FDS and LISTEN_PID before it execs dotproxy, as systemd does.
"""
import os
import pwd
import signal
import socket
import sys
import time

import harness as h

QUERY_RE = r'^query id=\w+ name=%s type=%d\b'


def write_conf(d, up, c, listen, extra=''):
    """A config file listening on listen (addr@port) and forwarding to the
    test backend up."""
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('listen %s\n' % listen)
        f.write('upstream 127.0.0.1@%d#dns.example\n' % up.port)
        f.write('ca-file %s\n' % c['ca'])
        f.write('query-timeout 2s\nconnect-timeout 1s\n')
        f.write(extra)
    return path


def dotproxy_argv(conf):
    return [h.DOTPROXY, '-d', '-c', conf]


def wait_ready(p):
    p.wait_line(r'ready', stream='stderr')
    return p


def expect_exit_error(p, regex):
    """p ends by itself with a non-zero status, and regex is on stderr."""
    rc = p.wait_exit()
    assert rc != 0, '%s exited 0\n%s' % (p.name, p.tail_text())
    p.wait_line(regex, stream='stderr')
    return rc


def proc_status(pid):
    """/proc/PID/status as a dict of field -> list of words."""
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            out[k] = v.split()
    return out


def need_root():
    assert os.geteuid() == 0, (
        'this test must run as root (network namespace, port 53, '
        'dropping privileges)')


# ---- privileges ----

def test_privdrop_port53_in_netns():
    need_root()
    c = h.certs()
    nobody = pwd.getpwnam('nobody')
    with h.tmpdir() as d:
        # The namespace lives as long as this holder; the test ends it.
        ns = h.Proc(['unshare', '-n', 'sh', '-c',
                     'ip link set lo up && echo netns-up && exec sleep 600'],
                    name='netns')
        ns.wait_line(r'^netns-up$', stream='stdout')
        enter = ['nsenter', '--net=/proc/%d/ns/net' % ns.pid]
        up = h.Proc(enter + [h.DOTSERVER, '--cert', c['server'], '--key',
                             c['server_key'], '--port', '0'],
                    name='dotserver')
        up.port = int(up.wait_line(r'^port (\d+)$',
                                   stream='stdout').group(1))
        conf = write_conf(d, up, c, '127.0.0.1@53', 'user nobody\n')
        px = wait_ready(h.Proc(enter + dotproxy_argv(conf), name='dotproxy'))
        px.wait_line(r'listening on 127\.0\.0\.1@53 \(udp, tcp\)',
                     stream='stderr')
        px.wait_line(r'dropped privileges to user nobody \(uid %d\), no '
                     r'capabilities' % nobody.pw_uid, stream='stderr')
        st = proc_status(px.pid)
        assert st['Uid'] == [str(nobody.pw_uid)] * 4, st['Uid']
        assert st['Gid'] == [str(nobody.pw_gid)] * 4, st['Gid']
        assert st['Groups'] == [], st['Groups']
        for k in ('CapEff', 'CapPrm', 'CapInh', 'CapAmb', 'CapBnd'):
            assert st[k] == ['0000000000000000'], (k, st[k])
        # Still answering on port 53, and the upstream connection made
        # after the drop works (a cache miss).
        dig = enter + ['dig', '@127.0.0.1', '-p', '53', '+tries=1',
                       '+time=5']
        r = h._run_tool(dig + ['www.example', 'A'], 15)
        assert r.rcode == 'NOERROR' and r.data('A') == ['192.0.2.1'], r.raw
        r = h._run_tool(dig + ['+tcp', 'tcp.example', 'A'], 15)
        assert r.rcode == 'NOERROR' and r.data('A') == ['192.0.2.1'], r.raw
        up.expect_count(QUERY_RE % (r'www\.example\.', 1), 1)
        # A reload that needs another port below 1024 cannot bind it any
        # more: refused with a clear reason, port 53 keeps answering.
        with open(conf, 'a') as f:
            f.write('listen 127.0.0.1@54\n')
        # nobody must be able to read it, as it can /etc/dotproxy.conf.
        os.chmod(d, 0o755)
        os.chmod(conf, 0o644)
        after = px.mark()
        px.signal(signal.SIGHUP)
        px.wait_line(r'reload refused.*listen 127\.0\.0\.1@54: .*privileges '
                     r'were dropped', stream='stderr', after=after)
        r = h._run_tool(dig + ['after.example', 'A'], 15)
        assert r.rcode == 'NOERROR', r.raw
        assert px.stop() == 0
        ns.stop()


def test_privdrop_errors():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        listen = '127.0.0.1@%d' % h.free_port()
        conf = write_conf(d, up, c, listen, 'user no-such-user\n')
        p = h.Proc(dotproxy_argv(conf), name='dotproxy')
        assert expect_exit_error(p, r'error: user no-such-user: no such '
                                 r'user$') == 1
        # Refused before anything was opened.
        assert p.count(r'listening on') == 0

        conf = write_conf(d, up, c, listen,
                          'user nobody\ngroup no-such-group\n')
        p = h.Proc(dotproxy_argv(conf), name='dotproxy')
        expect_exit_error(p, r'error: group no-such-group: no such group$')

        conf = write_conf(d, up, c, listen, 'user root\n')
        p = h.Proc(dotproxy_argv(conf), name='dotproxy')
        expect_exit_error(p, r'error: user root: it is root \(uid 0\)')


def test_privdrop_not_root():
    """Started as nobody already: user nobody is fine (capabilities given
    to the process are dropped all the same), another user is an error."""
    need_root()
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        # nobody must read the config and the CA; the directory is 0700.
        os.chmod(d, 0o755)
        ca = os.path.join(d, 'ca.pem')
        with open(c['ca']) as src, open(ca, 'w') as dst:
            dst.write(src.read())
        os.chmod(ca, 0o644)
        port = h.free_port()
        as_nobody = ['setpriv', '--reuid=nobody', '--regid=nogroup',
                     '--clear-groups', '--inh-caps=+net_bind_service',
                     '--ambient-caps=+net_bind_service']
        conf = write_conf(d, up, dict(c, ca=ca), '127.0.0.1@%d' % port,
                          'user nobody\n')
        os.chmod(conf, 0o644)
        with h.Proc(as_nobody + dotproxy_argv(conf),
                    name='dotproxy') as px:
            wait_ready(px)
            px.wait_line(r'running as user nobody \(uid \d+\) already, not '
                         r'root: no privileges to drop, no capabilities',
                         stream='stderr')
            st = proc_status(px.pid)
            for k in ('CapEff', 'CapPrm', 'CapInh', 'CapAmb'):
                assert st[k] == ['0000000000000000'], (k, st[k])
            r = h.dig(port, 'www.example', 'A')
            assert r.rcode == 'NOERROR', r.raw
        conf = write_conf(d, up, dict(c, ca=ca), '127.0.0.1@%d' % port,
                          'user daemon\n')
        os.chmod(conf, 0o644)
        p = h.Proc(as_nobody + dotproxy_argv(conf), name='dotproxy')
        expect_exit_error(p, r'error: user daemon \(uid \d+\): started as '
                          r'uid \d+, not as root, so cannot become another '
                          r'user')


# ---- sd_notify ----

class NotifySocket:
    """systemd's end of NOTIFY_SOCKET: each datagram is one notification,
    lines of VAR=value; got is every one received so far, in order."""

    def __init__(self, d):
        self.path = os.path.join(d, 'notify.sock')
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.got = []

    def wait(self, line, timeout=h.DEFAULT_TIMEOUT, after=0):
        """The first notification from index after on that has line as
        one of its lines (receiving more as needed); returns its index."""
        deadline = time.monotonic() + timeout
        i = after
        while True:
            while i < len(self.got):
                if line in self.got[i].split('\n'):
                    return i
                i += 1
            left = deadline - time.monotonic()
            assert left > 0, 'no %s notification within %.1f s; got %r' % (
                line, timeout, self.got)
            self.s.settimeout(left)
            try:
                self.got.append(self.s.recv(4096).decode())
            except socket.timeout:
                continue

    def drain(self):
        """Whatever is still queued, without waiting."""
        self.s.setblocking(False)
        try:
            while True:
                self.got.append(self.s.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.s.setblocking(True)

    def close(self):
        self.s.close()


def test_notify_ready_watchdog_stopping():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        port = h.free_port()
        conf = write_conf(d, up, c, '127.0.0.1@%d' % port)
        ns = NotifySocket(d)
        try:
            # WATCHDOG_PID must be dotproxy's own PID: the shell's, which
            # exec keeps.
            px = h.Proc(['sh', '-c', 'export WATCHDOG_PID=$$; exec "$@"',
                         'sh'] + dotproxy_argv(conf), name='dotproxy',
                        env={'NOTIFY_SOCKET': ns.path,
                             'WATCHDOG_USEC': '200000'})
            ready = ns.wait('READY=1')
            # READY=1 comes first, and means the port answers now.
            assert ready == 0, ns.got
            reply = h.udp_query(port, h.make_query('ready.example', 'A'),
                                timeout=2)
            assert reply is not None, 'no answer right after READY=1'
            assert h.Message(reply).rcode == 0
            assert 'STATUS=answering queries' in ns.got[ready].split('\n')
            px.wait_line(r'systemd watchdog: pinging every 100 ms',
                         stream='stderr')
            # Pings every 100 ms: five of them come well within 10 s.
            i = ready
            for _ in range(5):
                i = ns.wait('WATCHDOG=1', after=i + 1)
            # A reload is framed by RELOADING=1 and READY=1.
            px.signal(signal.SIGHUP)
            i = ns.wait('RELOADING=1', after=i + 1)
            i = ns.wait('READY=1', after=i + 1)
            px.wait_line(r'reloaded', stream='stderr')
            px.signal(signal.SIGTERM)
            stopping = ns.wait('STOPPING=1', after=i + 1)
            assert px.wait_exit() == 0
            # The watchdog stopped with STOPPING=1: nothing after it.
            ns.drain()
            assert len(ns.got) == stopping + 1, ns.got[stopping:]
        finally:
            ns.close()


def test_watchdog_other_pid():
    """WATCHDOG_PID naming another process: no watchdog for this one."""
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        port = h.free_port()
        conf = write_conf(d, up, c, '127.0.0.1@%d' % port)
        ns = NotifySocket(d)
        try:
            px = h.Proc(dotproxy_argv(conf), name='dotproxy',
                        env={'NOTIFY_SOCKET': ns.path,
                             'WATCHDOG_USEC': '200000',
                             'WATCHDOG_PID': str(os.getpid())})
            ns.wait('READY=1')
            px.signal(signal.SIGTERM)
            ns.wait('STOPPING=1')
            assert px.wait_exit() == 0
            assert px.count(r'watchdog') == 0
            ns.drain()
            assert not [m for m in ns.got if 'WATCHDOG=1' in m], ns.got
        finally:
            ns.close()


# ---- socket activation ----

# Runs in the child: move the inherited sockets to fds 3, 4, ... (through
# fds >= 100, so that none is overwritten before it is moved), set
# LISTEN_FDS and LISTEN_PID as systemd does, and exec the program, which
# keeps this PID.
LAUNCHER = r'''
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(',')]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
os.environ['LISTEN_FDS'] = str(len(fds))
os.environ['LISTEN_PID'] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
'''


def activated(socks, argv):
    """Starts argv with socks handed over at fds 3, 4, ...; the test's
    copies are closed, so only the program holds them."""
    fds = [s.fileno() for s in socks]
    p = h.Proc([sys.executable, '-c', LAUNCHER,
                ','.join(str(f) for f in fds)] + argv,
               name='dotproxy', pass_fds=fds)
    for s in socks:
        s.close()
    return p


def bound_pair(port):
    """A UDP socket and a listening TCP socket on 127.0.0.1:port."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('127.0.0.1', port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(('127.0.0.1', port))
    t.listen(16)
    return u, t


def test_socket_activation():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        port = h.free_port()
        conf = write_conf(d, up, c, '127.0.0.1@%d' % port)
        px = wait_ready(activated(bound_pair(port), dotproxy_argv(conf)))
        px.wait_line(r'listening on 127\.0\.0\.1@%d \(udp from systemd fd 3, '
                     r'tcp from systemd fd 4\)' % port, stream='stderr')
        r = h.dig(port, 'udp.example', 'A')
        assert r.rcode == 'NOERROR' and r.data('A') == ['192.0.2.1'], r.raw
        r = h.dig(port, 'tcp.example', 'A', tcp=True)
        assert r.rcode == 'NOERROR' and r.data('A') == ['192.0.2.1'], r.raw
        up.expect_count(QUERY_RE % (r'tcp\.example\.', 1), 1)
        # A reload keeps the handed-over sockets (the address is
        # unchanged): still answering on both, nothing bound again.
        after = px.mark()
        px.signal(signal.SIGHUP)
        px.wait_line(r'reloaded', stream='stderr', after=after)
        assert px.count(r'listening on', stream='stderr', after=after) == 0
        assert h.dig(port, 'again.example', 'A').rcode == 'NOERROR'
        assert h.dig(port, 'again2.example', 'A', tcp=True).rcode == 'NOERROR'
        assert px.stop() == 0


def test_socket_activation_udp_only():
    """A listen address with only its UDP socket handed over binds TCP
    itself."""
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        port = h.free_port()
        conf = write_conf(d, up, c, '127.0.0.1@%d' % port)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(('127.0.0.1', port))
        px = wait_ready(activated([u], dotproxy_argv(conf)))
        px.wait_line(r'listening on 127\.0\.0\.1@%d \(udp from systemd fd 3, '
                     r'tcp\)' % port, stream='stderr')
        r = h.dig(port, 'udp.example', 'A')
        assert r.rcode == 'NOERROR', r.raw
        r = h.dig(port, 'tcp.example', 'A', tcp=True)
        assert r.rcode == 'NOERROR', r.raw


def test_socket_activation_unmatched():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        port, other = h.free_port(), h.free_port()
        while other == port:
            other = h.free_port()
        conf = write_conf(d, up, c, '127.0.0.1@%d' % other)
        p = activated(bound_pair(port), dotproxy_argv(conf))
        assert expect_exit_error(
            p, r'error: socket activation: fd 3 \(udp 127\.0\.0\.1@%d\) '
            r'matches no listen address$' % port) == 1
        assert p.count(r'listening on') == 0
        # A TCP socket alone is named as such.
        u, t = bound_pair(port)
        u.close()
        p = activated([t], dotproxy_argv(conf))
        expect_exit_error(p, r'error: socket activation: fd 3 \(tcp '
                          r'127\.0\.0\.1@%d\) matches no listen address$'
                          % port)


def test_socket_activation_not_a_socket():
    c = h.certs()
    with h.tmpdir() as d, h.start_dotserver(c) as up:
        conf = write_conf(d, up, c, '127.0.0.1@%d' % h.free_port())
        f = open(conf)
        p = activated([f], dotproxy_argv(conf))
        expect_exit_error(p, r'error: socket activation: fd 3 is not a UDP '
                          r'or TCP socket over IPv4 or IPv6$')


h.run([
    test_privdrop_port53_in_netns,
    test_privdrop_errors,
    test_privdrop_not_root,
    test_notify_ready_watchdog_stopping,
    test_watchdog_other_pid,
    test_socket_activation,
    test_socket_activation_udp_only,
    test_socket_activation_unmatched,
    test_socket_activation_not_a_socket,
])
