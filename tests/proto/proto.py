"""proto.py: helpers for dotproxy's protocol test tier (tests/proto/).

The tier asks the real dotproxy binary standards questions and checks the
answers byte-wise where it matters. Its upstream is a DNSSEC-signed test
zone made per run and served by Debian's Unbound:

    dnspython client --UDP/TCP--> dotproxy --DoT--> Unbound "resolver"
        (validator iterator, trust anchor for the zone, stub-zone)
                                                --UDP--> Unbound "auth"
                                                     (auth-zone, signed)

Keys are made with ldns-keygen (ECDSAP256SHA256, a KSK and a ZSK), the zone
signed with ldns-signzone (NSEC), and the KSK's DS is the resolver's trust
anchor, so answers to DO or AD queries for the zone carry AD=1 when they
validate. One name, bogus.ZONE, has its A record changed after signing: the
resolver answers it SERVFAIL, or with the data and AD=0 when CD is set.
The root (".") is a static local zone of the resolver with an SOA and an
NS (local data, which Unbound answers with AA=1), so nothing leaves
loopback.

Both Unbounds are started once per test file (upstream()); each test starts
its own dotproxy (start_dotproxy()) so no test sees another's cache.
Everything is synchronised on log lines (harness.Proc), never on sleeps.
"""

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), 'integ'))

import harness as h                                    # noqa: E402

import dns.flags                                       # noqa: E402
import dns.message                                     # noqa: E402
import dns.name                                        # noqa: E402
import dns.opcode                                      # noqa: E402
import dns.rcode                                       # noqa: E402
import dns.rdataclass                                  # noqa: E402
import dns.rdatatype                                   # noqa: E402

ZONE = 'proto.test.'

# Signed as written; bogus.ZONE's address is changed after signing.
ZONE_TEXT = """$ORIGIN proto.test.
$TTL 600
@ 3600 IN SOA ns.proto.test. admin.proto.test. 1 3600 600 86400 300
@ 3600 IN NS ns.proto.test.
ns 3600 IN A 127.0.0.1
www 600 IN A 192.0.2.80
www 600 IN AAAA 2001:db8::80
www 600 IN TXT "dotproxy protocol tier"
*.wild 600 IN A 192.0.2.99
*.wild 600 IN TXT "wildcard"
dname 600 IN DNAME target.proto.test.
www.target 600 IN A 192.0.2.81
bogus 600 IN A 192.0.2.66
bogus2 600 IN A 192.0.2.67
"""
# name: (address signed, address served)
BOGUS_WAS = {'bogus.proto.test.': ('192.0.2.66', '192.0.2.166'),
             'bogus2.proto.test.': ('192.0.2.67', '192.0.2.167')}

ROOT_SOA = '. 3600 IN SOA ns.proto.test. admin.proto.test. 1 3600 600 86400 300'
ROOT_NS = '. 3600 IN NS ns.proto.test.'


def _run(argv, cwd):
    r = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        raise RuntimeError('%s failed (%d):\n%s' % (' '.join(argv),
                                                    r.returncode, r.stdout))
    return r.stdout


def sign_zone(d):
    """Writes the zone into d, makes a KSK and a ZSK, signs the zone and
    breaks the bogus names' signatures. Returns (signed zone path, trust
    anchor path: the KSK's DS)."""
    with open(os.path.join(d, 'zone.db'), 'w') as f:
        f.write(ZONE_TEXT)
    ksk = _run(['ldns-keygen', '-a', 'ECDSAP256SHA256', '-k', ZONE], d).strip()
    zsk = _run(['ldns-keygen', '-a', 'ECDSAP256SHA256', ZONE], d).strip()
    # Inception an hour ago: a clock a little behind must not make the
    # signatures "not yet valid".
    inception = time.strftime('%Y%m%d%H%M%S', time.gmtime(time.time() - 3600))
    _run(['ldns-signzone', '-i', inception, '-f', 'zone.signed',
          'zone.db', ksk, zsk], d)
    signed = os.path.join(d, 'zone.signed')
    with open(signed) as f:
        lines = f.read().splitlines()
    changed = 0
    out = []
    for line in lines:
        f = line.split()
        if (len(f) == 5 and f[0] in BOGUS_WAS and f[3] == 'A' and
                f[4] == BOGUS_WAS[f[0]][0]):
            line = '\t'.join(f[:4] + [BOGUS_WAS[f[0]][1]])
            changed += 1
        out.append(line)
    if changed != len(BOGUS_WAS) or not any(' RRSIG' in l or '\tRRSIG' in l
                                            for l in out):
        raise RuntimeError('signed zone not as expected (%d bogus changed):'
                           '\n%s' % (changed, '\n'.join(lines)))
    with open(signed, 'w') as f:
        f.write('\n'.join(out) + '\n')
    return signed, os.path.join(d, ksk + '.ds')


_COMMON = '''  num-threads: 1
  do-daemonize: no
  use-syslog: no
  logfile: ""
  verbosity: 1
  log-queries: yes
  username: ""
  chroot: ""
  directory: "%(d)s"
  pidfile: ""
  do-ip6: no
  access-control: 127.0.0.0/8 allow
'''


def _start_unbound(d, name, body, port):
    conf = os.path.join(d, name + '.conf')
    with open(conf, 'w') as f:
        f.write(body)
    p = h.Proc(['unbound', '-d', '-c', conf], name='unbound-' + name)
    p.port = port
    try:
        p.wait_line(r'start of service', timeout=15)
    except BaseException:
        p.stop()
        raise
    return p


class Upstream:
    """The two Unbounds: auth (plain DNS, the signed zone) and resolver
    (DoT on .port, validating); ca is the CA file that verifies the
    resolver as dns.example."""

    def __init__(self, d, c):
        self.dir = d
        self.ca = c['ca']
        self.name = 'dns.example'
        self.signed, self.anchor = sign_zone(d)
        shutil.copy(c['server'], os.path.join(d, 'server.pem'))
        shutil.copy(c['server_key'], os.path.join(d, 'server.key'))
        self.procs = []
        aport = h.free_port()
        self.auth = _start_unbound(d, 'auth', 'server:\n' + _COMMON % {
            'd': d} + '''  interface: 127.0.0.1@%(aport)d
  module-config: "iterator"
  local-zone: "%(zone)s" transparent
auth-zone:
  name: "%(zone)s"
  zonefile: "%(signed)s"
  for-downstream: yes
  for-upstream: no
  fallback-enabled: no
remote-control:
  control-enable: no
''' % {'aport': aport, 'zone': ZONE, 'signed': self.signed}, aport)
        self.procs.append(self.auth)
        port = h.free_port()
        self.resolver = _start_unbound(d, 'resolver', 'server:\n' + _COMMON % {
            'd': d} + '''  interface: 127.0.0.1@%(port)d
  tls-port: %(port)d
  tls-service-key: "%(d)s/server.key"
  tls-service-pem: "%(d)s/server.pem"
  module-config: "validator iterator"
  trust-anchor-file: "%(anchor)s"
  val-log-level: 2
  do-not-query-localhost: no
  local-zone: "." static
  local-data: "%(soa)s"
  local-data: "%(ns)s"
  local-zone: "%(zone)s" transparent
stub-zone:
  name: "%(zone)s"
  stub-addr: 127.0.0.1@%(aport)d
remote-control:
  control-enable: no
''' % {'port': port, 'd': d, 'anchor': self.anchor, 'soa': ROOT_SOA,
            'ns': ROOT_NS, 'zone': ZONE, 'aport': aport}, port)
        self.procs.append(self.resolver)
        self.port = port

    def stop(self):
        for p in self.procs:
            p.stop()

    def dump(self):
        for p in self.procs:
            p.dump()


@contextlib.contextmanager
def upstream():
    """Signs the zone and starts both Unbounds in a fresh directory; yields
    the Upstream and stops them afterwards (the directory is kept, and
    their output shown, if the block raised)."""
    c = h.certs()
    with h.tmpdir('dotproxy-proto-') as d:
        up = Upstream(d, c)
        try:
            yield up
        except BaseException:
            up.dump()
            raise
        finally:
            up.stop()
        # Proc registers itself in the harness's per-test list; these live
        # across tests and are stopped here.
        for p in up.procs:
            if p in h._procs:
                h._procs.remove(p)


def start_dotproxy(up, *extra):
    """dotproxy with a config file whose only upstream is the validating
    Unbound over TLS (verified as dns.example against the test CA);
    returns the harness Proc with .port."""
    conf = os.path.join(up.dir, 'dotproxy-%d.conf' % h.free_port())
    with open(conf, 'w') as f:
        f.write('upstream 127.0.0.1@%d#%s\nca-file %s\nlog-level info\n'
                % (up.port, up.name, up.ca))
    return h.start_dotproxy('-c', conf, *extra)


def run(up, tests):
    """harness.run(tests), with the Unbounds' output tails printed for a
    failing test (they are started outside any one test). Returns the exit
    status harness.run() would exit with, so the caller can stop the
    Unbounds first."""
    def wrap(t):
        def w():
            try:
                t()
            except BaseException:
                up.dump()
                raise
        w.__name__ = t.__name__
        return w
    try:
        h.run([wrap(t) for t in tests])
    except SystemExit as e:
        return e.code
    return 0


# ---- asking ----

def make(qname, rdtype='A', do=False, ad=False, cd=False, rd=True,
         edns=True, payload=1232, qid=None):
    """A dnspython query message with exactly the bits asked for: EDNS0
    (payload) unless edns is False; DO only if do."""
    q = dns.message.make_query(qname, rdtype, use_edns=0 if edns else None,
                               payload=payload, want_dnssec=do)
    q.flags = 0
    if rd:
        q.flags |= dns.flags.RD
    if ad:
        q.flags |= dns.flags.AD
    if cd:
        q.flags |= dns.flags.CD
    if qid is not None:
        q.id = qid
    return q


class Answer:
    """One exchange: query and reply wire bytes, and the reply parsed by
    dnspython (msg). Parsing failures raise: a malformed reply fails."""

    def __init__(self, qwire, rwire):
        self.qwire = qwire
        self.rwire = rwire
        assert rwire is not None, 'no reply to %r' % qwire
        self.msg = dns.message.from_wire(rwire)
        self.flags = struct.unpack('!H', rwire[2:4])[0]

    def bit(self, f):
        return bool(self.flags & f)

    def rrsets(self, section='answer'):
        return getattr(self.msg, section)

    def types(self, section='answer'):
        return sorted(dns.rdatatype.to_text(r.rdtype)
                      for r in self.rrsets(section))

    def find(self, name, rdtype, section='answer'):
        """The RRset (name, rdtype) of section, or None; rdtype may be
        'RRSIG:A' for the signatures covering A."""
        covers = dns.rdatatype.NONE
        if rdtype.startswith('RRSIG:'):
            covers = dns.rdatatype.from_text(rdtype[6:])
            rdtype = 'RRSIG'
        n = dns.name.from_text(name)
        for r in self.rrsets(section):
            if (r.name == n and r.rdtype == dns.rdatatype.from_text(rdtype)
                    and r.covers == covers):
                return r
        return None

    def __repr__(self):
        return 'reply (%d bytes):\n%s' % (len(self.rwire), self.msg)


def ask(port, q, tcp=False, timeout=5.0):
    """Sends q (a dnspython message) to dotproxy on 127.0.0.1:port over
    UDP or TCP; returns an Answer (asserts that a reply came)."""
    wire = q.to_wire()
    if tcp:
        r = h.tcp_query(port, wire, timeout)
    else:
        r = h.udp_query(port, wire, timeout)
    assert r is not None, 'no reply from port %d to\n%s' % (port, q)
    return Answer(wire, r)


def ask_dot(up, q, timeout=5.0):
    """Sends q straight to the resolver Unbound over TLS (what dotproxy's
    upstream says to the same question); returns an Answer."""
    wire = q.to_wire()
    with h.DotConn(up.port, up.ca, up.name, timeout) as c:
        c.send(wire)
        r = c.recv()
    assert r is not None, 'no reply from the resolver to\n%s' % q
    return Answer(wire, r)


def question_bytes(wire):
    """The question section of a message with one question, as bytes
    (the name is uncompressed in a question that comes first)."""
    off = 12
    while wire[off] != 0:
        assert wire[off] < 64, 'compressed or bad label in the question'
        off += 1 + wire[off]
    return wire[12:off + 5]


def check_header(a, rcodes=('NOERROR',)):
    """What every answer to a standard query must show (RFC 1035 4.1.1,
    4.1.2): same ID, QR=1, OPCODE 0, RD copied, Z=0, RA=1 (dotproxy
    offers recursion), TC=0 for these small answers, an expected RCODE,
    one question, byte-equal to the client's (0x20: same spelling)."""
    qid, qflags = struct.unpack('!HH', a.qwire[:4])
    rid = struct.unpack('!H', a.rwire[:2])[0]
    f = a.flags
    assert rid == qid, 'ID %d != %d' % (rid, qid)
    assert f & 0x8000, 'QR clear: %r' % a
    assert (f >> 11) & 0xf == 0, 'OPCODE %d: %r' % ((f >> 11) & 0xf, a)
    assert (f & 0x0100) == (qflags & 0x0100), 'RD not copied: %r' % a
    assert not f & 0x0040, 'Z set: %r' % a
    assert f & 0x0080, 'RA clear: %r' % a
    assert not f & 0x0200, 'TC set: %r' % a
    rc = dns.rcode.to_text(a.msg.rcode())
    assert rc in rcodes, 'RCODE %s, expected %s: %r' % (rc, rcodes, a)
    assert struct.unpack('!H', a.rwire[4:6])[0] == 1, 'QDCOUNT: %r' % a
    assert question_bytes(a.rwire) == question_bytes(a.qwire), (
        'question not echoed byte for byte: %r != %r' % (
            question_bytes(a.rwire), question_bytes(a.qwire)))
