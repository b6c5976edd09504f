"""test_unbound.py: dotproxy in front of Debian's Unbound serving a zone
over TLS, a DoT server nobody here wrote."""
import os
import shutil

import harness as h

ZONE = """$ORIGIN unbound.test.
@ 3600 IN SOA ns.unbound.test. admin.unbound.test. 1 3600 600 86400 120
@ 3600 IN NS ns.unbound.test.
ns 3600 IN A 192.0.2.53
www 600 IN A 192.0.2.80
www 600 IN AAAA 2001:db8::80
alias 600 IN CNAME www.unbound.test.
text 600 IN TXT "served by unbound"
"""


def start_unbound(d, c):
    port = h.free_port()
    with open(os.path.join(d, 'zone.db'), 'w') as f:
        f.write(ZONE)
    shutil.copy(c['server'], os.path.join(d, 'server.pem'))
    shutil.copy(c['server_key'], os.path.join(d, 'server.key'))
    conf = os.path.join(d, 'unbound.conf')
    with open(conf, 'w') as f:
        f.write('''server:
  num-threads: 1
  interface: 127.0.0.1@%(port)d
  tls-port: %(port)d
  tls-service-key: "%(d)s/server.key"
  tls-service-pem: "%(d)s/server.pem"
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
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  local-zone: "." static
  local-zone: "unbound.test." transparent
auth-zone:
  name: "unbound.test."
  zonefile: "%(d)s/zone.db"
  for-downstream: yes
  for-upstream: no
  fallback-enabled: no
remote-control:
  control-enable: no
''' % {'port': port, 'd': d})
    p = h.Proc(['unbound', '-d', '-c', conf], name='unbound')
    p.port = port
    p.wait_line(r'start of service', timeout=15)
    return p


def test_through_unbound():
    c = h.certs()
    with h.tmpdir() as d, start_unbound(d, c) as ub, \
            h.start_dotproxy('-u', '127.0.0.1@%d#dns.example' % ub.port,
                             '--ca-file', c['ca']) as px:
        r = h.dig(px.port, 'www.unbound.test')
        assert r.rcode == 'NOERROR' and r.data('A') == ['192.0.2.80'], r.raw
        r = h.dig(px.port, 'alias.unbound.test', tcp=True)
        assert r.data('CNAME') == ['www.unbound.test.'], r.raw
        assert r.data('A') == ['192.0.2.80'], r.raw
        r = h.dig(px.port, 'text.unbound.test', 'TXT')
        assert r.data('TXT') == ['"served by unbound"'], r.raw
        r = h.dig(px.port, 'nope.unbound.test')
        assert r.rcode == 'NXDOMAIN', r.raw
        assert any(a[2] == 'SOA' for a in r.authority), r.raw
        # Repeats come from the cache: Unbound logs each query it gets.
        for _ in range(3):
            assert h.dig(px.port, 'www.unbound.test').rcode == 'NOERROR'
            assert h.dig(px.port, 'nope.unbound.test').rcode == 'NXDOMAIN'
        ub.expect_count(r'www\.unbound\.test\. A IN', 1)
        ub.expect_count(r'nope\.unbound\.test\. A IN', 1)


def test_unbound_wrong_name():
    c = h.certs()
    with h.tmpdir() as d, start_unbound(d, c) as ub, \
            h.start_dotproxy('-u', '127.0.0.1@%d#wrong.example' % ub.port,
                             '--ca-file', c['ca']) as px:
        r = h.dig(px.port, 'www.unbound.test')
        assert r.rcode == 'SERVFAIL', r.raw
        px.wait_line(r'name mismatch', stream='stderr')
        assert ub.count(r'www\.unbound\.test\. A IN') == 0


h.run([test_through_unbound, test_unbound_wrong_name])
