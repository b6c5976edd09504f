"""test_edns.py: protocol conformance of dotproxy's answers (issue 8):
EDNS (RFC 6891), header bits (RFC 1035 4.1.1), UDP size (RFC 9715),
Extended DNS Errors (RFC 8914) and DNAME TTLs (RFC 6672).

The real dotproxy in front of our DoT test server (tests/dotserver) on
127.0.0.1; queries are built with dnspython (Debian's python3-dnspython),
answers are checked byte-wise where it matters. Each test names the RFC
section it checks.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'integ'))

import dns.edns  # noqa: E402
import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.opcode  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdatatype  # noqa: E402

import harness as h  # noqa: E402

QUERY_RE = r'^query id=\w+ name=%s type=%d\b'
QR, AA, TC, RD, RA, AD, CD = (0x8000, 0x0400, 0x0200, 0x0100, 0x0080,
                              0x0020, 0x0010)


def start(d, up, c, extra=''):
    path = os.path.join(d, 'dotproxy.conf')
    with open(path, 'w') as f:
        f.write('upstream 127.0.0.1@%d#dns.example\n' % up.port)
        f.write('ca-file %s\nquery-timeout 2s\nconnect-timeout 1s\n' % c['ca'])
        f.write(extra)
    return h.start_dotproxy('-c', path)


class Env:
    """One dotserver and one dotproxy for a test."""

    def __init__(self, extra=''):
        self.extra = extra

    def __enter__(self):
        self.c = h.certs()
        self.d = h.tmpdir()
        d = self.d.__enter__()
        self.up = h.start_dotserver(self.c)
        self.px = start(d, self.up, self.c, self.extra)
        return self

    def __exit__(self, *exc):
        self.px.stop()
        self.up.stop()
        self.d.__exit__(*exc)
        return False


def ask(px, wire, tcp=False):
    if tcp:
        with h.TcpConn(px.port) as t:
            t.send(wire)
            reply = t.recv()
    else:
        reply = h.udp_query(px.port, wire)
    assert reply is not None, 'no answer'
    return reply


def flags_of(reply):
    return struct.unpack('!H', reply[2:4])[0]


def opt_of(reply):
    """The raw OPT record of a reply, parsed by hand: (payload, ext rcode,
    version, flags, [(code, data)]), or None."""
    m = dns.message.from_wire(reply)
    if m.edns < 0:
        return None
    ext = (m.ednsflags >> 24) & 0xff
    ver = (m.ednsflags >> 16) & 0xff
    opts = [(o.otype, o.to_wire()) for o in m.options]
    return m.payload, ext, ver, m.ednsflags & 0xffff, opts


def query(name, rdtype='A', **kw):
    return dns.message.make_query(name, rdtype, **kw)


def test_rfc6891_6_1_3_badvers():
    """RFC 6891 6.1.3: versions 1 and 255 get BADVERS (RCODE 0 in the
    header, extended rcode 1 in an OPT of version 0), no answer data, and
    nothing goes upstream or into the cache; version 0 is answered."""
    with Env() as e:
        for ver in (1, 255):
            q = query('badvers%d.example' % ver, use_edns=ver,
                      want_dnssec=True)
            q.id = 0x4242
            r = ask(e.px, q.to_wire())
            assert r[:2] == b'\x42\x42'
            f = flags_of(r)
            assert f & 0xf == 0 and f & QR and f & RA and not f & AA, hex(f)
            assert r[4:12] == b'\x00\x01\x00\x00\x00\x00\x00\x01', r[4:12]
            payload, ext, v, fl, opts = opt_of(r)
            assert (ext, v) == (1, 0), (ext, v)
            assert fl == 0x8000 and payload == 1232 and opts == []
            m = dns.message.from_wire(r)
            assert m.rcode() == dns.rcode.BADVERS
            # Asked again: still BADVERS (nothing was cached for it).
            assert opt_of(ask(e.px, q.to_wire()))[1] == 1
        e.up.expect_count(QUERY_RE % (r'badvers\d+\.example\.', 1), 0)
        r = ask(e.px, query('v0.example', use_edns=0).to_wire())
        assert opt_of(r)[1:3] == (0, 0) and flags_of(r) & 0xf == 0
        assert len(dns.message.from_wire(r).answer) == 1


def test_rfc6891_6_1_4_unknown_flags_and_options():
    """RFC 6891 6.1.4: unknown EDNS flag bits are ignored and not echoed
    (only DO); 6.1.2: unknown options are ignored, not echoed."""
    with Env() as e:
        for do in (False, True):
            q = query('flags.example', use_edns=0,
                      ednsflags=0x7fff, want_dnssec=do,
                      options=[dns.edns.GenericOption(65001, b'hi')])
            r = ask(e.px, q.to_wire())
            assert flags_of(r) & 0xf == 0
            payload, ext, v, fl, opts = opt_of(r)
            assert fl == (0x8000 if do else 0), hex(fl)
            assert opts == [] and (ext, v) == (0, 0)


def test_rfc6891_6_1_1_formerr():
    """RFC 6891 6.1.1: two OPT records, an OPT in the answer or authority
    section, or an OPT not owned by the root: FORMERR, no OPT back."""
    base = query('formerr.example', use_edns=False)
    base.id = 7
    wire = base.to_wire()
    opt = b'\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00'
    hdr = bytearray(wire[:12])
    cases = {'two OPT': (0, 0, 2, opt + opt),
             'OPT in answer': (1, 0, 0, opt),
             'OPT in authority': (0, 1, 0, opt),
             'OPT not owned by root': (0, 0, 1, b'\xc0\x0c' + opt[1:])}
    with Env() as e:
        for what, (an, ns, ar, rrs) in cases.items():
            hdr[6:12] = struct.pack('!HHH', an, ns, ar)
            r = ask(e.px, bytes(hdr) + wire[12:] + rrs)
            assert flags_of(r) & 0xf == 1, what
            assert r[10:12] == b'\x00\x00', what
            assert r[12:len(wire)] == wire[12:], what
        e.up.expect_count(QUERY_RE % (r'formerr\.example\.', 1), 0)


def test_rfc1035_4_1_1_aa_clear_ra_set():
    """RFC 1035 4.1.1: AA is clear in answers from the upstream (which
    sets it) and from the cache; RA set; RD and CD as asked; Z clear; the
    question echoed in the client's spelling."""
    with Env() as e:
        # RD=0 is answered from the cache only (RFC 1034 4.3.1, see
        # test_flags.py): the CD=1 answer is cached first by an RD=1 ask.
        for n, (rd, cd) in enumerate(((True, False), (True, True),
                                      (False, True))):
            q = query('AaTest.Example', use_edns=False)
            q.flags = (dns.flags.RD if rd else 0) | \
                (dns.flags.CD if cd else 0)
            w = bytearray(q.to_wire())
            w[3] |= 0x40                        # Z bit (RFC 1035 4.1.1)
            r = ask(e.px, bytes(w))
            f = flags_of(r)
            assert f & QR and f & RA and not f & AA and not f & TC, hex(f)
            assert bool(f & RD) == rd and bool(f & CD) == cd, hex(f)
            assert not f & 0x40, 'Z echoed'
            assert r[12:len(w)] == bytes(w[12:]), 'question not echoed'
        # One miss per cache key (CD is part of it), the rest hits.
        e.up.expect_count(QUERY_RE % (r'aatest\.example\.', 1), 2)


def test_rfc1035_4_1_1_opcodes_notimp_no_ra():
    """RFC 1035 4.1.1 / RFC 6891: opcodes 1..15 are NOTIMP, opcode echoed,
    RA clear (recursion is offered for QUERY only)."""
    with Env() as e:
        for op in range(1, 16):
            q = query('op.example', use_edns=False)
            w = bytearray(q.to_wire())
            w[2] = (w[2] & 0x87) | (op << 3)
            r = ask(e.px, bytes(w))
            f = flags_of(r)
            assert (f >> 11) & 0xf == op and f & 0xf == 4, (op, hex(f))
            assert f & QR and not f & RA and not f & AA, (op, hex(f))
        e.up.expect_count(QUERY_RE % (r'op\.example\.', 1), 0)


def test_rfc1035_tc_in_query_ignored():
    """RFC 1035 4.1.1: TC means nothing in a query; the answer is a normal
    one, without TC."""
    with Env() as e:
        w = bytearray(query('tcq.example', use_edns=False).to_wire())
        w[2] |= 0x02
        r = ask(e.px, bytes(w))
        f = flags_of(r)
        assert f & 0xf == 0 and not f & TC, hex(f)
        assert len(dns.message.from_wire(r).answer) == 1


def test_rfc9715_udp_size_cap():
    """RFC 6891 6.2.5 and RFC 9715: a UDP answer is at most max-udp-size
    (default 1232) whatever the client offers, and our OPT advertises
    that; larger answers are truncated with TC and whole over TCP. The
    'big' answer is about 2 KB."""
    with Env() as e:
        for offer in (0, 512, 1232, 4096, 65535):
            q = query('big.example', 'TXT', use_edns=0, payload=offer)
            r = ask(e.px, q.to_wire())
            f = flags_of(r)
            assert len(r) <= max(512, min(offer, 1232)), (offer, len(r))
            assert f & TC, (offer, hex(f))
            assert opt_of(r)[0] == 1232, offer
            assert r[6:10] == b'\x00\x00\x00\x00'
        # 'mid' (about 850 bytes) fits 1232 but not 512.
        for offer, tc in ((512, True), (1232, False), (65535, False)):
            r = ask(e.px, query('mid.example', 'TXT', use_edns=0,
                                payload=offer).to_wire())
            assert bool(flags_of(r) & TC) == tc, offer
        r = ask(e.px, query('big.example', 'TXT', use_edns=0,
                            payload=65535).to_wire(), tcp=True)
        assert not flags_of(r) & TC and len(r) > 1232
    with Env('max-udp-size 4096\n') as e:
        r = ask(e.px, query('big.example', 'TXT', use_edns=0,
                            payload=65535).to_wire())
        assert not flags_of(r) & TC and 1232 < len(r) <= 4096, len(r)
        assert opt_of(r)[0] == 4096


def test_rfc8914_upstream_ede_passed_and_cached():
    """RFC 8914: the upstream's EDE 6 (DNSSEC Bogus) with its text comes
    through on a SERVFAIL, from the upstream and from the cache, to
    clients that sent EDNS; a client without EDNS gets no OPT."""
    with Env() as e:
        want = struct.pack('!H', 6) + b'test'
        for _ in range(2):
            r = ask(e.px, query('ede6.example', use_edns=0).to_wire())
            assert flags_of(r) & 0xf == 2
            opts = opt_of(r)[4]
            assert (15, want) in opts, opts
        r = ask(e.px, query('ede6.example', use_edns=False).to_wire())
        assert flags_of(r) & 0xf == 2 and r[10:12] == b'\x00\x00'
        # The second and third came from the SERVFAIL cache (RFC 2308 7).
        e.up.expect_count(QUERY_RE % (r'ede6\.example\.', 1), 1)


def test_rfc6672_3_3_dname_cached():
    """RFC 6672 3.3: a DNAME answer whose synthesised CNAME has TTL 0 is
    cached with the DNAME's lifetime: the second query causes no upstream
    query."""
    with Env() as e:
        for _ in range(2):
            r = ask(e.px, query('dname.sub.example', use_edns=False)
                    .to_wire())
            m = dns.message.from_wire(r)
            assert m.rcode() == 0
            types = [rr.rdtype for rr in m.answer]
            assert dns.rdatatype.DNAME in types and \
                dns.rdatatype.CNAME in types, m
        e.up.expect_count(QUERY_RE % (r'dname\.sub\.example\.', 1), 1)


h.run([
    test_rfc6891_6_1_3_badvers,
    test_rfc6891_6_1_4_unknown_flags_and_options,
    test_rfc6891_6_1_1_formerr,
    test_rfc1035_4_1_1_aa_clear_ra_set,
    test_rfc1035_4_1_1_opcodes_notimp_no_ra,
    test_rfc1035_tc_in_query_ignored,
    test_rfc9715_udp_size_cap,
    test_rfc8914_upstream_ede_passed_and_cached,
    test_rfc6672_3_3_dname_cached,
])
