"""test_flags.py: protocol tests of header flags, RD=0 and CHAOS.

The real dotproxy binary in front of tests/dotserver (our DoT test server,
which logs every query it gets with its rd, ad, cd and do bits and its
class, and sets AD in answers for "secure*" names when asked by AD or DO,
for "adalways*" names whoever asks). Queries are built and parsed with
dnspython; header flags are checked as the 16-bit word on the wire. Each
case names the RFC section it checks.

AA is masked out of the flag comparisons: whether a forwarder's answer
carries AA is another item of issue 8 (RFC 1035 4.1.1), tested apart.

"Never forwarded" is shown without waiting for time to pass: the query
under test is answered first (a REFUSED or a local answer is written
before anything could go upstream), then a marker query on a fresh name
is asked and its upstream line awaited; the upstream reads one connection
in order, so a forwarded query would have been logged before the marker.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'integ'))
import harness as h  # noqa: E402

import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdataclass  # noqa: E402
import dns.rdatatype  # noqa: E402

QR, AA, TC, RD, RA, AD, CD = (0x8000, 0x0400, 0x0200, 0x0100, 0x0080,
                              0x0020, 0x0010)

QLINE = (r'^query id=[0-9a-f]{4} name=%s type=\d+ len=\d+ edns=(?P<edns>[01])'
         r' do=(?P<do>[01]) pad=[01] keepalive=[01] ecs=[01]'
         r' rd=(?P<rd>[01]) ad=(?P<ad>[01]) cd=(?P<cd>[01])'
         r' class=(?P<cls>\d+)$')


def qline(name):
    return QLINE % name.replace('.', r'\.')


def write_conf(d, up, c, extra=''):
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('upstream 127.0.0.1@%d#dns.example\n' % up.port)
        f.write('ca-file %s\n' % c['ca'])
        f.write('query-timeout 2s\nconnect-timeout 1s\n')
        f.write(extra)
    return path


class World:
    """A dotserver and a dotproxy in front of it."""

    def __init__(self, d, c, extra=''):
        self.up = h.start_dotserver(c)
        self.px = h.start_dotproxy('-c', write_conf(d, self.up, c, extra))
        self.markers = 0

    def ask(self, name, qtype='A', rdclass='IN', flags=RD, do=False,
            edns=None):
        """Ask over UDP with exactly these header flags (and DO in an OPT
        when do, or an OPT of edns bytes); returns (raw, message)."""
        q = dns.message.make_query(name, qtype, rdclass,
                                   use_edns=0 if (do or edns) else None,
                                   payload=edns or 1232, want_dnssec=do)
        q.flags = flags
        wire = q.to_wire()
        raw = h.udp_query(self.px.port, wire)
        assert raw is not None, 'no answer to %s %s %s' % (name, rdclass,
                                                          qtype)
        m = dns.message.from_wire(raw)
        assert m.id == q.id and m.question == q.question, m
        # The question comes back as the client spelled it.
        assert raw[12:12 + len(q.question[0].name.to_wire()) + 4] == \
            wire[12:12 + len(q.question[0].name.to_wire()) + 4]
        return raw, m

    def upstream_count(self, name):
        return self.up.count(qline(name), stream='stdout')

    def barrier(self):
        """Ask a fresh name and wait for it upstream: everything asked
        before it that went upstream has been logged by then."""
        self.markers += 1
        name = 'marker%d.example.' % self.markers
        self.ask(name)
        self.up.wait_count(qline(name), 1, stream='stdout')

    def close(self):
        self.px.stop()
        self.up.stop()


def flags_of(raw):
    """The header's flags word, from the bytes."""
    return raw[2] << 8 | raw[3]


def expect_flags(raw, want, rcode=0):
    got = flags_of(raw) & ~AA
    assert got == want | rcode, 'flags %04x, want %04x' % (got, want | rcode)


def test_ad_query_goes_upstream():
    """RFC 6840 5.7: AD in a query without DO asks for AD in the answer;
    it goes upstream, with the client's CD, and the upstream's AD comes
    back. RFC 6840 5.8: AD is returned to a client that set AD."""
    c = h.certs()
    with h.tmpdir() as d:
        w = World(d, c)
        try:
            raw, m = w.ask('secure1.example.', flags=RD | AD)
            expect_flags(raw, QR | RD | RA | AD)
            assert m.answer and m.answer[0][0].address == '192.0.2.1'
            line = w.up.wait_line(qline('secure1.example.'),
                                  stream='stdout')
            assert (line.group('rd'), line.group('ad'), line.group('cd'),
                    line.group('do')) == ('1', '1', '0', '0'), line.group(0)
            # RFC 6840 5.9: CD carried with AD.
            raw, m = w.ask('secure2.example.', flags=RD | AD | CD)
            expect_flags(raw, QR | RD | RA | AD | CD)
            line = w.up.wait_line(qline('secure2.example.'),
                                  stream='stdout')
            assert (line.group('ad'), line.group('cd')) == ('1', '1')
            # RFC 6840 5.7 with DO (RFC 3225): DO goes upstream, AD back.
            raw, m = w.ask('secure3.example.', flags=RD, do=True)
            expect_flags(raw, QR | RD | RA | AD)
            line = w.up.wait_line(qline('secure3.example.'),
                                  stream='stdout')
            assert (line.group('ad'), line.group('do')) == ('0', '1')
        finally:
            w.close()


def test_ad_cache_key():
    """RFC 6840 5.7: an AD=0 answer cached for an AD=0 asker is not served
    to an AD=1 asker; each is then a cache hit with its own AD."""
    c = h.certs()
    with h.tmpdir() as d:
        w = World(d, c)
        try:
            name = 'secure-key.example.'
            raw, _ = w.ask(name, flags=RD)
            expect_flags(raw, QR | RD | RA)
            w.up.wait_count(qline(name), 1, stream='stdout')
            raw, _ = w.ask(name, flags=RD | AD)
            expect_flags(raw, QR | RD | RA | AD)
            w.up.wait_count(qline(name), 2, stream='stdout')
            lines = [x for x in w.up.output('stdout')
                     if x.startswith('query ') and ' name=%s ' % name in x]
            assert [' ad=1 ' in x for x in lines] == [False, True], lines
            # Hits: no third query, and each keeps its own AD.
            raw, _ = w.ask(name, flags=RD | AD)
            expect_flags(raw, QR | RD | RA | AD)
            raw, _ = w.ask(name, flags=RD)
            expect_flags(raw, QR | RD | RA)
            w.barrier()
            assert w.upstream_count(name) == 2
        finally:
            w.close()


def test_ad_cleared():
    """RFC 6840 5.8: a client that set neither AD nor DO gets AD clear,
    even from an upstream that sets it whoever asks; from the upstream
    and from the cache alike. With EDNS but no DO likewise."""
    c = h.certs()
    with h.tmpdir() as d:
        w = World(d, c)
        try:
            raw, _ = w.ask('adalways.example.', flags=RD)
            expect_flags(raw, QR | RD | RA)
            raw, _ = w.ask('adalways.example.', flags=RD, edns=1232)
            expect_flags(raw, QR | RD | RA)
            w.barrier()
            assert w.upstream_count('adalways.example.') == 1
            # The same upstream answer, to a client that asked: AD.
            raw, _ = w.ask('adalways.example.', flags=RD | AD)
            expect_flags(raw, QR | RD | RA | AD)
        finally:
            w.close()


def test_rd0():
    """RFC 1034 4.3.1: without RD the query is not forwarded: answered
    from the cache (RD clear in the answer), else REFUSED."""
    c = h.certs()
    with h.tmpdir() as d:
        w = World(d, c)
        try:
            raw, m = w.ask('nord.example.', flags=0)
            expect_flags(raw, QR | RA, dns.rcode.REFUSED)
            assert not m.answer and not m.authority
            w.barrier()
            assert w.upstream_count('nord.example.') == 0
            raw, _ = w.ask('nord.example.', flags=RD)
            expect_flags(raw, QR | RD | RA)
            raw, m = w.ask('NoRd.Example.', flags=0)
            expect_flags(raw, QR | RA)
            assert m.answer and m.answer[0][0].address == '192.0.2.1'
            w.barrier()
            assert w.upstream_count('nord.example.') == 1
        finally:
            w.close()


def test_chaos_refused_by_default():
    """RFC 1035 3.2.4 (CH class): version.bind, version.server,
    hostname.bind, id.server and every other CH or HS query are REFUSED
    while identity and version are not set, and never reach the
    upstream."""
    c = h.certs()
    with h.tmpdir() as d:
        w = World(d, c)
        try:
            for name in ('version.bind.', 'version.server.',
                         'hostname.bind.', 'id.server.', 'authors.bind.'):
                raw, m = w.ask(name, 'TXT', 'CH')
                expect_flags(raw, QR | RD | RA, dns.rcode.REFUSED)
                assert not m.answer
            raw, _ = w.ask('www.example.', 'A', 'CH')
            expect_flags(raw, QR | RD | RA, dns.rcode.REFUSED)
            raw, _ = w.ask('version.bind.', 'TXT', 'HS')
            expect_flags(raw, QR | RD | RA, dns.rcode.REFUSED)
            w.barrier()
            assert w.up.count(r'^query .* class=[34]$', stream='stdout') \
                == 0
        finally:
            w.close()


def test_chaos_configured():
    """CH TXT with identity and version set (as Unbound's hide-identity
    and hide-version off): id.server and hostname.bind give identity,
    version.bind and version.server give version, with local-zones off
    too; still nothing reaches the upstream."""
    c = h.certs()
    with h.tmpdir() as d:
        w = World(d, c, 'identity dns1.example\nversion dotproxy-x\n'
                  'local-zones no\n')
        try:
            want = {'version.bind.': b'dotproxy-x',
                    'Version.Server.': b'dotproxy-x',
                    'hostname.bind.': b'dns1.example',
                    'ID.server.': b'dns1.example'}
            for name, text in want.items():
                raw, m = w.ask(name, 'TXT', 'CH', flags=RD | CD, do=True)
                # RFC 6840 5.8: AD only from validation, never here.
                expect_flags(raw, QR | RD | RA | CD)
                assert len(m.answer) == 1, m
                rrset = m.answer[0]
                assert rrset.rdclass == dns.rdataclass.CH
                assert rrset.rdtype == dns.rdatatype.TXT
                assert [r.strings for r in rrset] == [(text,)], rrset
            raw, _ = w.ask('version.bind.', 'A', 'CH')
            expect_flags(raw, QR | RD | RA, dns.rcode.REFUSED)
            w.barrier()
            assert w.up.count(r'^query .* class=[34]$', stream='stdout') \
                == 0
        finally:
            w.close()


h.run([test_ad_query_goes_upstream, test_ad_cache_key, test_ad_cleared,
       test_rd0, test_chaos_refused_by_default, test_chaos_configured])
