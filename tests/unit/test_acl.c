/* test_acl.c: unit tests for access control (src/acl.c).
 *
 * Rules are set through conf_set, as a config file line would set them,
 * and client addresses are built as the listener gets them (struct
 * sockaddr_in, sockaddr_in6, and IPv4-mapped IPv6 from a dual-stack
 * socket); the expected action is written out for each.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "acl.h"
#include "conf.h"

#define ALLOW CONF_ACL_ALLOW
#define REFUSE CONF_ACL_REFUSE
#define DENY CONF_ACL_DENY

/* The action for the text address s (IPv4 or IPv6) under c. */
static enum conf_acl_action
check(const struct conf *c, const char *s)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	unsigned char a[16];

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, s, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	assert_int_equal(acl_addr16((struct sockaddr *)&ss, a), 0);
	return acl_match(c, a);
}

static void
set(struct conf *c, const char *value)
{
	char err[CONF_ERR_MAX];

	if (conf_set(c, "access-control", value, "test", err,
	    sizeof(err)) != 0)
		fail_msg("%s: %s", value, err);
}

static void
set_fails(struct conf *c, const char *value, const char *want)
{
	char err[CONF_ERR_MAX];

	assert_int_equal(conf_set(c, "access-control", value, "test", err,
	    sizeof(err)), -1);
	if (strstr(err, want) == NULL)
		fail_msg("%s: error \"%s\" lacks \"%s\"", value, err, want);
}

/* No rules: loopback, RFC 1918, RFC 6598, link-local and ULA are
 * answered, everything else refused; edges of each range included. */
static void
test_defaults(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	assert_int_equal(check(&c, "127.0.0.1"), ALLOW);
	assert_int_equal(check(&c, "127.255.255.255"), ALLOW);
	assert_int_equal(check(&c, "128.0.0.1"), REFUSE);
	assert_int_equal(check(&c, "10.1.2.3"), ALLOW);
	assert_int_equal(check(&c, "11.0.0.1"), REFUSE);
	assert_int_equal(check(&c, "172.16.0.1"), ALLOW);
	assert_int_equal(check(&c, "172.31.255.255"), ALLOW);
	assert_int_equal(check(&c, "172.32.0.0"), REFUSE);
	assert_int_equal(check(&c, "172.15.255.255"), REFUSE);
	assert_int_equal(check(&c, "192.168.10.1"), ALLOW);
	assert_int_equal(check(&c, "192.169.0.1"), REFUSE);
	assert_int_equal(check(&c, "100.64.0.1"), ALLOW);
	assert_int_equal(check(&c, "100.127.255.255"), ALLOW);
	assert_int_equal(check(&c, "100.128.0.0"), REFUSE);
	assert_int_equal(check(&c, "169.254.20.10"), ALLOW);
	assert_int_equal(check(&c, "8.8.8.8"), REFUSE);
	assert_int_equal(check(&c, "0.0.0.0"), REFUSE);
	assert_int_equal(check(&c, "::1"), ALLOW);
	assert_int_equal(check(&c, "::2"), REFUSE);
	assert_int_equal(check(&c, "::"), REFUSE);
	assert_int_equal(check(&c, "fe80::1"), ALLOW);
	assert_int_equal(check(&c, "febf::1"), ALLOW);
	assert_int_equal(check(&c, "fec0::1"), REFUSE);
	assert_int_equal(check(&c, "fd12:3456::1"), ALLOW);
	assert_int_equal(check(&c, "fc00::1"), ALLOW);
	assert_int_equal(check(&c, "fe00::1"), REFUSE);
	assert_int_equal(check(&c, "2001:db8::1"), REFUSE);
	/* IPv4-mapped: the IPv4 rules. */
	assert_int_equal(check(&c, "::ffff:127.0.0.1"), ALLOW);
	assert_int_equal(check(&c, "::ffff:192.168.1.1"), ALLOW);
	assert_int_equal(check(&c, "::ffff:8.8.8.8"), REFUSE);
}

/* The most specific prefix wins, whatever the order of the lines; a
 * configured rule overrides a default of the same prefix. */
static void
test_most_specific(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	set(&c, "127.0.0.2/32 allow");
	set(&c, "127.0.0.0/8 refuse");
	set(&c, "127.0.0.3 deny");
	set(&c, "203.0.113.0/24 allow");
	set(&c, "203.0.113.128/25 deny");
	set(&c, "2001:db8::/32 allow");
	set(&c, "2001:db8:1::/48 refuse");
	assert_int_equal(check(&c, "127.0.0.1"), REFUSE);
	assert_int_equal(check(&c, "127.0.0.2"), ALLOW);
	assert_int_equal(check(&c, "127.0.0.3"), DENY);
	assert_int_equal(check(&c, "::ffff:127.0.0.3"), DENY);
	assert_int_equal(check(&c, "::ffff:127.0.0.2"), ALLOW);
	assert_int_equal(check(&c, "203.0.113.1"), ALLOW);
	assert_int_equal(check(&c, "203.0.113.127"), ALLOW);
	assert_int_equal(check(&c, "203.0.113.128"), DENY);
	assert_int_equal(check(&c, "203.0.114.1"), REFUSE);
	assert_int_equal(check(&c, "2001:db8::5"), ALLOW);
	assert_int_equal(check(&c, "2001:db8:1::5"), REFUSE);
	assert_int_equal(check(&c, "2001:db9::5"), REFUSE);
	/* Defaults not overridden still hold. */
	assert_int_equal(check(&c, "10.0.0.1"), ALLOW);
	assert_int_equal(check(&c, "::1"), ALLOW);
	/* Opening everything: /0 rules replace the default refusals. */
	set(&c, "0.0.0.0/0 allow");
	assert_int_equal(check(&c, "8.8.8.8"), ALLOW);
	assert_int_equal(check(&c, "2001:db9::5"), REFUSE);
	set(&c, "::/0 deny");
	assert_int_equal(check(&c, "2001:db9::5"), DENY);
	assert_int_equal(check(&c, "8.8.8.8"), ALLOW);
	/* A second rule for a prefix replaces the first's action. */
	assert_int_equal(c.n_acl, 9);
	set(&c, "127.0.0.3/32 allow");
	assert_int_equal(c.n_acl, 9);
	assert_int_equal(check(&c, "127.0.0.3"), ALLOW);
}

/* An address of another family cannot be matched. */
static void
test_other_family(void **state)
{
	struct sockaddr_storage ss;
	unsigned char a[16];

	(void)state;
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	assert_int_equal(acl_addr16((struct sockaddr *)&ss, a), -1);
}

static void
test_parse_errors(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	set_fails(&c, "10.0.0.0/8", "expected allow, refuse or deny");
	set_fails(&c, "10.0.0.0/8 permit", "expected allow, refuse or deny");
	set_fails(&c, "10.0.0.1/8 allow", "bits set past the prefix length");
	set_fails(&c, "fe80::1/10 allow", "bits set past the prefix length");
	set_fails(&c, "10.0.0.0/33 allow", "longer than 32");
	set_fails(&c, "::/129 allow", "longer than 128");
	set_fails(&c, "10.0.0.0/ allow", "not a prefix length");
	set_fails(&c, "10.0.0.0/-1 allow", "not a prefix length");
	set_fails(&c, "10.0.0.0/1234 allow", "not a prefix length");
	set_fails(&c, "example.com allow", "not an IPv4 or IPv6 address");
	set_fails(&c, "10.0.0.0/8 allow extra", "unexpected \"extra\"");
	set_fails(&c, "0123456789012345678901234567890123456789012345678901"
	    "23456789 allow", "expected an address");
	assert_int_equal(c.n_acl, 0);
}

/* Printing gives back what parsing takes, IPv4-mapped prefixes as IPv4. */
static void
test_print(void **state)
{
	static const char *const in[][2] = {
		{ "10.0.0.0/8 allow", "10.0.0.0/8 allow" },
		{ "127.0.0.3 deny", "127.0.0.3/32 deny" },
		{ "::1 refuse", "::1/128 refuse" },
		{ "fe80::/10 allow", "fe80::/10 allow" },
		{ "::ffff:10.0.0.0/104 refuse", "10.0.0.0/8 refuse" },
		{ "0.0.0.0/0 allow", "0.0.0.0/0 allow" },
		{ "::/0 deny", "::/0 deny" },
	};
	struct conf_acl r, r2;
	char buf[64], err[CONF_ERR_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		assert_int_equal(acl_rule_parse(in[i][0], &r, err,
		    sizeof(err)), 0);
		acl_rule_str(&r, buf, sizeof(buf));
		assert_string_equal(buf, in[i][1]);
		assert_int_equal(acl_rule_parse(buf, &r2, err, sizeof(err)),
		    0);
		assert_memory_equal(&r, &r2, sizeof(r));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_most_specific),
		cmocka_unit_test(test_other_family),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_print),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
