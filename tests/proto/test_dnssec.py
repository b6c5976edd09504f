"""test_dnssec.py: DNSSEC bits and zone shapes through dotproxy, against a
zone signed per run and validated by Unbound (see proto.py). Each test
names the RFC section it checks; dotproxy is a non-validating forwarder
that passes the upstream's AD and CD over an authenticated DoT channel."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proto as P                                      # noqa: E402

import dns.flags                                       # noqa: E402
import dns.rcode                                       # noqa: E402
import dns.rdatatype                                   # noqa: E402

h = P.h
UP = None       # the Upstream, set below before the tests run

AD = 0x0020
CD = 0x0010
AA = 0x0400


def no_rrsig(a):
    """RFC 4035 3.2.1: without DO, no RRSIG, NSEC or NSEC3 in any section
    (the zone does not ask for DNSSEC types explicitly here)."""
    for sec in ('answer', 'authority', 'additional'):
        bad = [t for t in a.types(sec) if t in ('RRSIG', 'NSEC', 'NSEC3')]
        assert not bad, 'DNSSEC records %s in %s without DO: %r' % (
            bad, sec, a)


def addresses(a, name, rdtype='A'):
    r = a.find(name, rdtype)
    assert r is not None, 'no %s %s in the answer: %r' % (name, rdtype, a)
    return sorted(rd.to_text() for rd in r)


def test_do_gets_rrsig_and_ad_rfc4035_3_2_1_rfc6840_5_8():
    # RFC 4035 3.2.1 (DO=1: the RRSIGs come with the data), RFC 6840 5.8
    # (AD=1 for validated data to a DO asker), RFC 3225 3 (DO copied into
    # the reply's OPT).
    with P.start_dotproxy(UP) as px:
        for tcp in (False, True):       # miss, then a cache hit over TCP
            a = P.ask(px.port, P.make('www.proto.test', 'A', do=True),
                      tcp=tcp)
            P.check_header(a)
            assert addresses(a, 'www.proto.test.') == ['192.0.2.80'], a
            assert a.find('www.proto.test.', 'RRSIG:A') is not None, a
            assert a.bit(AD), 'AD clear for validated data with DO: %r' % a
            assert not a.bit(CD), a
            assert a.msg.edns == 0, 'no OPT in the reply: %r' % a
            assert a.msg.ednsflags & dns.flags.DO, 'DO not echoed: %r' % a


def test_neither_do_nor_ad_gets_ad_clear_rfc6840_5_8():
    # RFC 6840 5.8: AD is set in a reply only to a query with AD or DO.
    # The DO=1 answer is cached first: the plain asker must get neither
    # its AD nor its RRSIGs (RFC 4035 3.2.1).
    with P.start_dotproxy(UP) as px:
        a = P.ask(px.port, P.make('www.proto.test', 'A', do=True))
        assert a.bit(AD), 'precondition: the upstream validates: %r' % a
        for edns in (True, False):
            a = P.ask(px.port, P.make('www.proto.test', 'A', edns=edns))
            P.check_header(a)
            assert addresses(a, 'www.proto.test.') == ['192.0.2.80'], a
            assert not a.bit(AD), 'AD set for a query without AD/DO: %r' % a
            no_rrsig(a)


def test_ad_without_do_gets_ad_rfc6840_5_7():
    # RFC 6840 5.7: AD=1 in a query without DO asks for the AD bit in the
    # answer, without DNSSEC records. Both cache orders: www A is first
    # asked without AD (an AD=0 answer must not be served to the AD
    # asker), www AAAA first with AD (its AD must not reach a later
    # plain asker, RFC 6840 5.8).
    with P.start_dotproxy(UP) as px:
        a = P.ask(px.port, P.make('www.proto.test', 'A'))
        P.check_header(a)
        assert not a.bit(AD), a
        a = P.ask(px.port, P.make('www.proto.test', 'A', ad=True))
        P.check_header(a)
        assert addresses(a, 'www.proto.test.') == ['192.0.2.80'], a
        assert a.bit(AD), 'AD=1 asker without DO got AD=0: %r' % a
        no_rrsig(a)

        a = P.ask(px.port, P.make('www.proto.test', 'AAAA', ad=True))
        P.check_header(a)
        assert addresses(a, 'www.proto.test.', 'AAAA') == ['2001:db8::80'], a
        assert a.bit(AD), 'AD=1 asker without DO got AD=0: %r' % a
        no_rrsig(a)
        a = P.ask(px.port, P.make('www.proto.test', 'AAAA'))
        P.check_header(a)
        assert not a.bit(AD), 'AD set for a query without AD/DO: %r' % a
        no_rrsig(a)


def test_cd_passes_through_rfc4035_3_2_2():
    # RFC 4035 3.2.2: CD is copied into the reply, and with CD=1 the
    # validator hands back data it could not validate (here: a record
    # changed after signing) with AD=0 (RFC 4035 3.2.3); with CD=0 the
    # same name is SERVFAIL. RFC 4035 4.7 / RFC 6840 5.9: an answer got
    # with CD=1 must not be served from the cache to a CD=0 asker, nor
    # the SERVFAIL of a CD=0 asker to a CD=1 one.
    with P.start_dotproxy(UP) as px:
        a = P.ask(px.port, P.make('www.proto.test', 'A', do=True, cd=True))
        P.check_header(a)
        assert a.bit(CD), 'CD not copied: %r' % a
        assert a.find('www.proto.test.', 'RRSIG:A') is not None, a

        # bogus: CD=0 first, then CD=1.
        a = P.ask(px.port, P.make('bogus.proto.test', 'A', do=True))
        P.check_header(a, ('SERVFAIL',))
        assert not a.bit(CD), a
        assert not a.bit(AD), a
        a = P.ask(px.port, P.make('bogus.proto.test', 'A', do=True, cd=True))
        P.check_header(a)
        assert a.bit(CD), 'CD not copied: %r' % a
        assert not a.bit(AD), 'AD set on data that does not validate: %r' % a
        assert addresses(a, 'bogus.proto.test.') == ['192.0.2.166'], a

        # bogus2: CD=1 first, then CD=0 (with and without DO).
        a = P.ask(px.port, P.make('bogus2.proto.test', 'A', do=True,
                                  cd=True))
        P.check_header(a)
        assert addresses(a, 'bogus2.proto.test.') == ['192.0.2.167'], a
        assert not a.bit(AD), a
        for do in (True, False):
            a = P.ask(px.port, P.make('bogus2.proto.test', 'A', do=do))
            P.check_header(a, ('SERVFAIL',))
            assert not a.msg.answer, 'bogus data to a CD=0 asker: %r' % a


def test_dname_rfc6672_2_2_3_3():
    # RFC 6672 2.2 / 3.3: the answer holds the DNAME and the synthesised
    # CNAME from the query name to the substituted name, then the target's
    # data; with DO the DNAME is signed (the CNAME is not) and validates.
    # RFC 6672 3.3: the synthesised CNAME's TTL is the DNAME's, so the
    # answer is cached: the repeat does not reach the upstream. (Debian's
    # Unbound 1.17 sends the synthesised CNAME with TTL 0, the DNAME and
    # the A with 600: the case the issue describes.)
    qn = 'www.dname.proto.test.'
    mark = UP.resolver.mark()
    with P.start_dotproxy(UP) as px:
        for do in (False, True, False):
            a = P.ask(px.port, P.make(qn, 'A', do=do))
            P.check_header(a)
            d = a.find('dname.proto.test.', 'DNAME')
            assert d is not None and [r.to_text() for r in d] == [
                'target.proto.test.'], a
            c = a.find(qn, 'CNAME')
            assert c is not None and [r.to_text() for r in c] == [
                'www.target.proto.test.'], 'no synthesised CNAME: %r' % a
            assert addresses(a, 'www.target.proto.test.') == [
                '192.0.2.81'], a
            if do:
                assert a.find('dname.proto.test.', 'RRSIG:DNAME'), a
                assert a.bit(AD), a
            else:
                no_rrsig(a)
                assert not a.bit(AD), a
        # One upstream query per DO value; the second DO=0 one is a hit.
        n = UP.resolver.count(r' www\.dname\.proto\.test\. A IN', after=mark)
        assert n == 2, ('upstream asked %d times for the DNAME name, '
                        'last answer: %r' % (n, a))


def test_wildcard_rfc4592_rfc4035_5_3_4():
    # RFC 4592 2.2.1 / 3.3.1: a wildcard answer carries the query name as
    # owner; RFC 4035 5.3.4: its RRSIG's labels field counts the
    # wildcard's labels (3 for *.wild.proto.test, not 4), and the
    # authority section proves that no closer name exists (NSEC).
    with P.start_dotproxy(UP) as px:
        a = P.ask(px.port, P.make('foo.wild.proto.test', 'A', do=True))
        P.check_header(a)
        assert addresses(a, 'foo.wild.proto.test.') == ['192.0.2.99'], a
        assert a.find('*.wild.proto.test.', 'A') is None, a
        sig = a.find('foo.wild.proto.test.', 'RRSIG:A')
        assert sig is not None, 'no RRSIG for the wildcard answer: %r' % a
        assert [s.labels for s in sig] == [3], 'labels field: %r' % a
        assert 'NSEC' in a.types('authority'), 'no wildcard proof: %r' % a
        assert a.bit(AD), a
        a = P.ask(px.port, P.make('bar.wild.proto.test', 'TXT'))
        P.check_header(a)
        assert [r.to_text() for r in a.find('bar.wild.proto.test.',
                                            'TXT')] == ['"wildcard"'], a
        no_rrsig(a)


def _rrs(a):
    return sorted((r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype),
                   dns.rdatatype.to_text(r.covers), rd.to_text())
                  for r in a.msg.answer for rd in r)


def test_any_relayed_rfc8482_4():
    # RFC 8482 4: a responder may answer ANY with a subset (or HINFO);
    # dotproxy is not the responder: it relays what the upstream gives,
    # neither adding nor removing records (compared with the upstream's
    # own answer to the same question). Unbound's ANY answer carries the
    # RRSIGs even without DO: RRSIG is one of "any" type (RFC 4035 3.2.1
    # keeps DNSSEC types out only when they were not asked for).
    with P.start_dotproxy(UP) as px:
        for do in (False, True):
            q = P.make('www.proto.test', 'ANY', do=do)
            want = P.ask_dot(UP, q)
            a = P.ask(px.port, q)
            P.check_header(a)
            assert dns.rcode.to_text(want.msg.rcode()) == 'NOERROR', want
            assert _rrs(a) == _rrs(want), (
                'ANY not relayed as the upstream answered:\n%r\nupstream:'
                '\n%r' % (a, want))
            assert _rrs(a), 'empty ANY answer: %r' % a


def test_root_ns_soa_rfc1035_4_1():
    # RFC 1035 4.1: a query for the root's NS and SOA gets a well-formed
    # answer (answered by the upstream, or refused): header sane, the
    # question echoed, and when there is data it is the root's RRset.
    with P.start_dotproxy(UP) as px:
        for t in ('NS', 'SOA'):
            for tcp in (False, True):
                a = P.ask(px.port, P.make('.', t), tcp=tcp)
                P.check_header(a, ('NOERROR', 'SERVFAIL', 'REFUSED'))
                if a.msg.rcode() == 0:
                    r = a.find('.', t)
                    assert r is not None and len(r) >= 1, a
                    assert all(x.name.to_text() == '.' for x in a.msg.answer
                               if x.rdtype != dns.rdatatype.RRSIG), a


def test_aa_clear_rfc1035_4_1_1():
    # RFC 1035 4.1.1: AA is for the name's authority; dotproxy is not
    # one, so AA is clear even when its upstream set it (Unbound does for
    # its local data, here the root's SOA), on a miss and a cache hit.
    with P.start_dotproxy(UP) as px:
        q = P.make('.', 'SOA')
        want = P.ask_dot(UP, q)
        assert want.bit(AA), 'precondition: the upstream sets AA: %r' % want
        for _ in range(2):
            a = P.ask(px.port, q)
            P.check_header(a)
            assert not a.bit(AA), 'AA passed on: %r' % a


def test_question_case_0x20_rfc1035_4_1_2():
    # RFC 1035 4.1.2 and the 0x20 practice (draft-vixie-dnsext-dns0x20):
    # the question comes back as the client spelled it, byte for byte,
    # on a miss and on cache hits spelled otherwise, over UDP and TCP.
    with P.start_dotproxy(UP) as px:
        for name, tcp in (('WwW.PrOtO.TeSt', False),
                          ('wWw.pRoTo.tEsT', False),
                          ('WWW.PROTO.TEST', True),
                          ('www.proto.test', False)):
            for do in (False, True):
                a = P.ask(px.port, P.make(name, 'A', do=do), tcp=tcp)
                P.check_header(a)
                assert addresses(a, 'www.proto.test.') == ['192.0.2.80'], a


def main():
    global UP
    with P.upstream() as up:
        UP = up
        status = P.run(up, [test_do_gets_rrsig_and_ad_rfc4035_3_2_1_rfc6840_5_8,
                   test_neither_do_nor_ad_gets_ad_clear_rfc6840_5_8,
                   test_ad_without_do_gets_ad_rfc6840_5_7,
                   test_cd_passes_through_rfc4035_3_2_2,
                   test_dname_rfc6672_2_2_3_3,
                   test_wildcard_rfc4592_rfc4035_5_3_4,
                   test_any_relayed_rfc8482_4,
                   test_root_ns_soa_rfc1035_4_1,
                   test_aa_clear_rfc1035_4_1_1,
                   test_question_case_0x20_rfc1035_4_1_2])
    sys.exit(status)


main()
