/* test_conf.c: unit tests for conf.c, the configuration parser and printer.
 *
 * Every key is set good and bad through conf_set and through files written
 * to a private mkdtemp directory; error messages are compared exactly, with
 * their "file:line" place, because they are the user interface of -n. The
 * printer is checked by round trip: print, load the printout, print again,
 * and the two texts and the two values must be the same.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "log.h"

static char tmpdir[64];
static unsigned file_seq;

/* pin-sha256 words: the base64 of bytes 0..31, of 32 bytes 0xff, of bytes
 * 100..131 (from Python's base64 module), and of sha256("pin4"). */
#define PIN_A_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define PIN_B_B64 "//////////////////////////////////////////8="
#define PIN_C_B64 "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="
#define PIN_D_B64 "vO3bj0FJ00j07ZJhctfByubkyjn4RiEduxBHyK78o7E="
#define PIN_A "pin-sha256=" PIN_A_B64
#define PIN_B "pin-sha256=" PIN_B_B64
#define PIN_C "pin-sha256=" PIN_C_B64
#define PIN_D "pin-sha256=" PIN_D_B64

/* ---- helpers ---- */

/* Write text to a new file in tmpdir and return its path (static buffer,
 * valid until the next call). */
static const char *
write_file(const char *text, size_t len)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/t%u.conf", tmpdir, file_seq++);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}

/* Load text as a config file on top of a fresh conf_init. Returns the rc;
 * err gets the message, path the file's name. */
static int
load_text(struct conf *c, const char *text, char *err, const char **path)
{
	const char *p = write_file(text, strlen(text));

	if (path != NULL)
		*path = p;
	conf_init(c);
	err[0] = '\0';
	return conf_load_file(c, p, err, CONF_ERR_MAX);
}

/* Load text; it must fail with "PATH:" followed by want. */
static void
expect_file_error(const char *text, const char *want)
{
	struct conf c;
	char err[CONF_ERR_MAX], full[CONF_ERR_MAX + 200];
	const char *path;

	assert_int_equal(load_text(&c, text, err, &path), -1);
	snprintf(full, sizeof(full), "%s:%s", path, want);
	assert_string_equal(err, full);
}

/* conf_set on a fresh conf must fail with "cmd: " followed by want. */
static void
expect_set_error(const char *key, const char *value, const char *want)
{
	struct conf c;
	char err[CONF_ERR_MAX], full[CONF_ERR_MAX + 8];

	conf_init(&c);
	err[0] = '\0';
	assert_int_equal(conf_set(&c, key, value, "cmd", err, sizeof(err)), -1);
	snprintf(full, sizeof(full), "cmd: %s", want);
	assert_string_equal(err, full);
}

static void
set_ok(struct conf *c, const char *key, const char *value)
{
	char err[CONF_ERR_MAX] = "";
	int rc = conf_set(c, key, value, "cmd", err, sizeof(err));

	if (rc != 0)
		fail_msg("conf_set(%s, %s): %s", key, value, err);
}

/* conf_print into a malloc'ed string (caller frees with free). */
static char *
print_str(const struct conf *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	conf_print(c, f);
	assert_int_equal(fclose(f), 0);
	assert_non_null(buf);
	return buf;
}

static void
addr_is(const struct conf_addr *a, const char *want)
{
	char buf[64];

	conf_addr_str(a, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

/* ---- setup ---- */

static int
group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_conf.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
	char path[128];
	unsigned i;

	(void)state;
	for (i = 0; i < file_seq; i++) {
		snprintf(path, sizeof(path), "%s/t%u.conf", tmpdir, i);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/dir", tmpdir);
	rmdir(path);
	return rmdir(tmpdir);
}

/* ---- defaults ---- */

static void
test_init_defaults(void **state)
{
	struct conf c;

	(void)state;
	memset(&c, 0xa5, sizeof(c));
	conf_init(&c);
	assert_int_equal(c.n_listen, 0);
	assert_int_equal(c.n_upstream, 0);
	assert_string_equal(c.ca_file, "");
	assert_int_equal(c.cache_size, 32 * 1024 * 1024);
	assert_int_equal(c.query_timeout_ms, 3000);
	assert_int_equal(c.connect_timeout_ms, 2000);
	assert_int_equal(c.idle_timeout_ms, 30000);
	assert_int_equal(c.tcp_idle_timeout_ms, 10000);
	assert_int_equal(c.tcp_max_clients, 256);
	assert_int_equal(c.max_udp_size, 1232);
	assert_int_equal(c.log_level, LOGL_INFO);
	assert_int_equal(c.selection, CONF_SELECT_FASTEST);
	assert_int_equal(c.answer_timeout_ms, 1500);
	assert_int_equal(c.backoff_max_ms, 30000);
	assert_int_equal(c.max_conn_lifetime_ms, 3600000);
	assert_int_equal(c.cache_min_ttl, 0);
	assert_int_equal(c.cache_max_ttl, 86400);
	assert_int_equal(c.cache_max_negative_ttl, 3600);
	assert_int_equal(c.cache_servfail_ttl, 5);
	assert_int_equal(c.prefetch, 1);
	assert_int_equal(c.serve_stale, 1);
	assert_int_equal(c.stale_max_age, 86400);
	assert_int_equal(c.stale_client_timeout_ms, 1800);
	assert_int_equal(c.stale_refresh_interval, 30);
	assert_int_equal(c.local_zones, 1);
}

static void
test_finish_defaults(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX];
	char *out;

	(void)state;
	conf_init(&c);
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	assert_int_equal(c.n_listen, 2);
	addr_is(&c.listen[0], "127.0.0.1@53");
	addr_is(&c.listen[1], "::1@53");
	assert_int_equal(c.listen[0].len, sizeof(struct sockaddr_in));
	assert_int_equal(c.listen[1].len, sizeof(struct sockaddr_in6));
	assert_int_equal(c.n_upstream, 2);
	addr_is(&c.upstream[0].addr, "1.1.1.1@853");
	addr_is(&c.upstream[1].addr, "1.0.0.1@853");
	assert_string_equal(c.upstream[0].auth_name, "cloudflare-dns.com");
	assert_string_equal(c.upstream[1].auth_name, "cloudflare-dns.com");
	out = print_str(&c);
	assert_string_equal(out,
	    "listen 127.0.0.1@53\n"
	    "listen ::1@53\n"
	    "upstream 1.1.1.1@853#cloudflare-dns.com\n"
	    "upstream 1.0.0.1@853#cloudflare-dns.com\n"
	    "cache-size 32M\n"
	    "query-timeout 3s\n"
	    "connect-timeout 2s\n"
	    "idle-timeout 30s\n"
	    "tcp-idle-timeout 10s\n"
	    "tcp-max-clients 256\n"
	    "max-udp-size 1232\n"
	    "log-level info\n"
	    "upstream-selection fastest\n"
	    "answer-timeout 1500ms\n"
	    "backoff-max 30s\n"
	    "max-connection-lifetime 3600s\n"
	    "cache-min-ttl 0s\n"
	    "cache-max-ttl 1d\n"
	    "cache-max-negative-ttl 1h\n"
	    "cache-servfail-ttl 5s\n"
	    "prefetch yes\n"
	    "serve-stale yes\n"
	    "stale-max-age 1d\n"
	    "stale-client-timeout 1800ms\n"
	    "stale-refresh-interval 30s\n"
	    "local-zones yes\n"
	    "lameduck 5s\n"
	    "log-queries no\n"
	    "max-pending 10000\n"
	    "max-pending-bytes 32M\n"
	    "ratelimit-per-client 0\n"
	    "workers 0\n"
	    "shared-cache-timeout 20ms\n"
	    "shared-cache-prefix dotproxy:\n");
	free(out);
	assert_int_equal(c.upstream[0].n_pins, 0);
	assert_int_equal(c.upstream[1].n_pins, 0);
	/* Idempotent: a second finish changes nothing. */
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	assert_int_equal(c.n_listen, 2);
	assert_int_equal(c.n_upstream, 2);
}

static void
test_finish_keeps_given(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX];

	(void)state;
	conf_init(&c);
	set_ok(&c, "listen", "127.0.0.2@5300");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	assert_int_equal(c.n_listen, 1);
	addr_is(&c.listen[0], "127.0.0.2@5300");
	assert_int_equal(c.n_upstream, 2);

	conf_init(&c);
	set_ok(&c, "upstream", "9.9.9.9#dns.quad9.net");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	assert_int_equal(c.n_listen, 2);
	assert_int_equal(c.n_upstream, 1);
	addr_is(&c.upstream[0].addr, "9.9.9.9@853");
}

static void
test_finish_no_auth_name(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX];

	(void)state;
	conf_init(&c);
	set_ok(&c, "upstream", "1.1.1.1#one.one.one.one");
	set_ok(&c, "upstream", "9.9.9.9");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "configuration: upstream 9.9.9.9@853: no "
	    "authentication name or pin (add #name or pin-sha256=...)");

	conf_init(&c);
	set_ok(&c, "upstream", "2001:db8::1@8853");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "configuration: upstream 2001:db8::1@8853: "
	    "no authentication name or pin (add #name or pin-sha256=...)");

	/* A pin alone authenticates. */
	conf_init(&c);
	set_ok(&c, "upstream", "9.9.9.9 " PIN_A);
	set_ok(&c, "upstream", "1.1.1.1#one.one.one.one " PIN_B);
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	assert_int_equal(c.n_upstream, 2);
}

static void
test_finish_ttl_order(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX];

	(void)state;
	conf_init(&c);
	set_ok(&c, "cache-min-ttl", "2h");
	set_ok(&c, "cache-max-ttl", "1h");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "configuration: cache-min-ttl 2h is larger "
	    "than cache-max-ttl 1h");

	/* Either order of the lines; only the final values count. */
	conf_init(&c);
	set_ok(&c, "cache-min-ttl", "1d");
	set_ok(&c, "cache-max-ttl", "86400");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	set_ok(&c, "cache-max-ttl", "86399");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "configuration: cache-min-ttl 1d is larger "
	    "than cache-max-ttl 86399s");

	/* The defaults: min 0 is below any max, 0 included. */
	conf_init(&c);
	set_ok(&c, "cache-max-ttl", "0");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	set_ok(&c, "cache-min-ttl", "90");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "configuration: cache-min-ttl 90s is larger "
	    "than cache-max-ttl 0s");
}

/* ---- addresses ---- */

static void
test_parse_addr_good(void **state)
{
	struct conf_addr a;
	char err[CONF_ERR_MAX];
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;

	(void)state;
	assert_int_equal(conf_parse_addr("127.0.0.1", 53, &a, err,
	    sizeof(err)), 0);
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 53);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(a.len, sizeof(struct sockaddr_in));

	assert_int_equal(conf_parse_addr("10.1.2.3@65535", 53, &a, err,
	    sizeof(err)), 0);
	assert_int_equal(ntohs(sin->sin_port), 65535);
	addr_is(&a, "10.1.2.3@65535");

	assert_int_equal(conf_parse_addr("1.2.3.4@1", 853, &a, err,
	    sizeof(err)), 0);
	addr_is(&a, "1.2.3.4@1");

	assert_int_equal(conf_parse_addr("::1@5300", 53, &a, err,
	    sizeof(err)), 0);
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 5300);
	assert_int_equal(a.len, sizeof(struct sockaddr_in6));
	assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	addr_is(&a, "::1@5300");

	assert_int_equal(conf_parse_addr("::1", 853, &a, err, sizeof(err)), 0);
	addr_is(&a, "::1@853");

	/* Printed in inet_ntop's canonical form. */
	assert_int_equal(conf_parse_addr("2001:0DB8:0000:0000:0000:0000:0000:"
	    "0001@53", 53, &a, err, sizeof(err)), 0);
	addr_is(&a, "2001:db8::1@53");
	assert_int_equal(conf_parse_addr("::ffff:192.0.2.1", 53, &a, err,
	    sizeof(err)), 0);
	addr_is(&a, "::ffff:192.0.2.1@53");
	assert_int_equal(conf_parse_addr("::", 53, &a, err, sizeof(err)), 0);
	addr_is(&a, "::@53");
	assert_int_equal(conf_parse_addr("0.0.0.0@053", 53, &a, err,
	    sizeof(err)), 0);
	addr_is(&a, "0.0.0.0@53");
}

static void
addr_bad(const char *s, const char *want)
{
	struct conf_addr a;
	char err[CONF_ERR_MAX] = "";

	memset(&a, 0x5a, sizeof(a));
	assert_int_equal(conf_parse_addr(s, 53, &a, err, sizeof(err)), -1);
	assert_string_equal(err, want);
}

static void
test_parse_addr_bad(void **state)
{
	(void)state;
	addr_bad("", "missing address");
	addr_bad("@53", "missing address");
	addr_bad("localhost", "\"localhost\" is not an IPv4 or IPv6 address");
	addr_bad("127.0.0.1:53",
	    "\"127.0.0.1:53\" is not an IPv4 or IPv6 address");
	addr_bad("[::1]@53", "\"[::1]\" is not an IPv4 or IPv6 address");
	addr_bad("1.2.3", "\"1.2.3\" is not an IPv4 or IPv6 address");
	addr_bad("1.2.3.256", "\"1.2.3.256\" is not an IPv4 or IPv6 address");
	addr_bad(" 1.2.3.4", "\" 1.2.3.4\" is not an IPv4 or IPv6 address");
	addr_bad("::1@@53", "\"::1@\" is not an IPv4 or IPv6 address");
	addr_bad("1.2.3.4@", "missing port after \"@\"");
	addr_bad("1.2.3.4@0", "port must be 1-65535");
	addr_bad("1.2.3.4@65536", "port must be 1-65535");
	addr_bad("1.2.3.4@99999999999999999999999", "port must be 1-65535");
	addr_bad("1.2.3.4@http", "\"http\" is not a port number");
	addr_bad("1.2.3.4@+53", "\"+53\" is not a port number");
	addr_bad("1.2.3.4@-1", "\"-1\" is not a port number");
	addr_bad("1.2.3.4@53 ", "\"53 \" is not a port number");
	/* Control bytes are shown as '?', long values are cut. */
	addr_bad("a\tb", "\"a?b\" is not an IPv4 or IPv6 address");
	addr_bad("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@53",
	    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "...\" is not an IPv4 or IPv6 address");
}

static void
test_addr_str(void **state)
{
	struct conf_addr a;
	char buf[64];

	(void)state;
	memset(&a, 0, sizeof(a));
	conf_addr_str(&a, buf, sizeof(buf));
	assert_string_equal(buf, "?");
	assert_int_equal(conf_parse_addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:"
	    "ffff@65535", 53, &a, buf, sizeof(buf)), 0);
	conf_addr_str(&a, buf, sizeof(buf));
	assert_string_equal(buf,
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff@65535");
}

/* ---- upstreams ---- */

static void
test_parse_upstream_good(void **state)
{
	struct conf_upstream u;
	char err[CONF_ERR_MAX];
	char name[300];

	(void)state;
	assert_int_equal(conf_parse_upstream("1.1.1.1@853#cloudflare-dns.com",
	    &u, err, sizeof(err)), 0);
	addr_is(&u.addr, "1.1.1.1@853");
	assert_string_equal(u.auth_name, "cloudflare-dns.com");

	assert_int_equal(conf_parse_upstream("9.9.9.9", &u, err,
	    sizeof(err)), 0);
	addr_is(&u.addr, "9.9.9.9@853");
	assert_string_equal(u.auth_name, "");

	assert_int_equal(conf_parse_upstream("2620:fe::fe#dns.quad9.net", &u,
	    err, sizeof(err)), 0);
	addr_is(&u.addr, "2620:fe::fe@853");
	assert_string_equal(u.auth_name, "dns.quad9.net");

	assert_int_equal(conf_parse_upstream("::1@8853#Dns.Example", &u, err,
	    sizeof(err)), 0);
	addr_is(&u.addr, "::1@8853");
	assert_string_equal(u.auth_name, "Dns.Example");

	assert_int_equal(conf_parse_upstream("127.0.0.1#localhost", &u, err,
	    sizeof(err)), 0);
	assert_string_equal(u.auth_name, "localhost");

	assert_int_equal(conf_parse_upstream("127.0.0.1#1-2.x0", &u, err,
	    sizeof(err)), 0);

	/* 63-character label, 253-character name: the limits. */
	memset(name, 0, sizeof(name));
	strcpy(name, "127.0.0.1#");
	memset(name + 10, 'a', 63);
	assert_int_equal(conf_parse_upstream(name, &u, err, sizeof(err)), 0);
	assert_int_equal(strlen(u.auth_name), 63);
	/* 4 labels of 63 + 3 dots = 255; make it 253 with a 61 last. */
	memset(name, 0, sizeof(name));
	strcpy(name, "127.0.0.1#");
	memset(name + 10, 'b', 253);
	name[10 + 63] = name[10 + 127] = name[10 + 191] = '.';
	assert_int_equal(conf_parse_upstream(name, &u, err, sizeof(err)), 0);
	assert_int_equal(strlen(u.auth_name), 253);
}

static void
upstream_bad(const char *s, const char *want)
{
	struct conf_upstream u;
	char err[CONF_ERR_MAX] = "";

	assert_int_equal(conf_parse_upstream(s, &u, err, sizeof(err)), -1);
	assert_string_equal(err, want);
}

static void
test_parse_upstream_bad(void **state)
{
	char name[300];

	(void)state;
	upstream_bad("1.1.1.1#", "missing name after \"#\"");
	upstream_bad("#dns.example", "missing address");
	upstream_bad("dns.example", "\"dns.example\" is not an IPv4 or IPv6 "
	    "address");
	upstream_bad("1.1.1.1@0#x", "port must be 1-65535");
	upstream_bad("1.1.1.1@x#y", "\"x\" is not a port number");
	upstream_bad("1.1.1.1#dns_example.com", "name \"dns_example.com\" is "
	    "not a host name (letters, digits, '-' and '.' only)");
	upstream_bad("1.1.1.1#a#b", "name \"a#b\" is not a host name "
	    "(letters, digits, '-' and '.' only)");
	upstream_bad("1.1.1.1#a..b", "name \"a..b\" has an empty label");
	upstream_bad("1.1.1.1#.a", "name \".a\" has an empty label");
	upstream_bad("1.1.1.1#a.", "name \"a.\" has an empty label");
	upstream_bad("1.1.1.1#-a.b", "name \"-a.b\": a label cannot start "
	    "with '-'");
	upstream_bad("1.1.1.1#a.b-", "name \"a.b-\": a label cannot end "
	    "with '-'");
	upstream_bad("1.1.1.1#a-.b", "name \"a-.b\": a label cannot end "
	    "with '-'");

	memset(name, 0, sizeof(name));
	strcpy(name, "1.1.1.1#");
	memset(name + 8, 'a', 64);
	upstream_bad(name, "name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaa\" has a label longer than 63 characters");

	memset(name, 0, sizeof(name));
	strcpy(name, "1.1.1.1#");
	memset(name + 8, 'b', 254);
	name[8 + 63] = name[8 + 127] = name[8 + 191] = '.';
	upstream_bad(name, "name \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	    "bbbbbbbbbbbbbbbbbb....\" is longer than 253 characters");
}

static void
test_parse_upstream_pins(void **state)
{
	struct conf_upstream u;
	char err[CONF_ERR_MAX] = "";
	unsigned char want[32];
	size_t i;

	(void)state;
	/* A pin alone, no name. */
	assert_int_equal(conf_parse_upstream("9.9.9.9@853 " PIN_A, &u, err,
	    sizeof(err)), 0);
	addr_is(&u.addr, "9.9.9.9@853");
	assert_string_equal(u.auth_name, "");
	assert_int_equal(u.n_pins, 1);
	for (i = 0; i < 32; i++)
		want[i] = (unsigned char)i;
	assert_memory_equal(u.pins[0], want, 32);

	/* Name and the most pins, in order; any white space between. */
	assert_int_equal(conf_parse_upstream("2620:fe::fe#dns.quad9.net\t"
	    PIN_B "  " PIN_C " \t" PIN_D " " PIN_A "  ", &u, err,
	    sizeof(err)), 0);
	addr_is(&u.addr, "2620:fe::fe@853");
	assert_string_equal(u.auth_name, "dns.quad9.net");
	assert_int_equal(u.n_pins, CONF_MAX_PINS);
	memset(want, 0xff, sizeof(want));
	assert_memory_equal(u.pins[0], want, 32);
	for (i = 0; i < 32; i++)
		want[i] = (unsigned char)(100 + i);
	assert_memory_equal(u.pins[1], want, 32);
	/* sha256("pin4") */
	assert_int_equal(u.pins[2][0], 0xbc);
	assert_int_equal(u.pins[2][31], 0xb1);
	for (i = 0; i < 32; i++)
		want[i] = (unsigned char)i;
	assert_memory_equal(u.pins[3], want, 32);

	/* The padding may be left off; leading white space is skipped. */
	assert_int_equal(conf_parse_upstream(" 127.0.0.1@8853 pin-sha256="
	    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", &u, err,
	    sizeof(err)), 0);
	addr_is(&u.addr, "127.0.0.1@8853");
	assert_int_equal(u.n_pins, 1);
	assert_memory_equal(u.pins[0], want, 32);

	/* The same pin twice is harmless. */
	assert_int_equal(conf_parse_upstream("127.0.0.1 " PIN_A " " PIN_A, &u,
	    err, sizeof(err)), 0);
	assert_int_equal(u.n_pins, 2);

	/* No pins: n_pins is 0 even over an old value. */
	assert_int_equal(conf_parse_upstream("127.0.0.1#a.b  ", &u, err,
	    sizeof(err)), 0);
	assert_int_equal(u.n_pins, 0);
	assert_string_equal(u.auth_name, "a.b");
}

static void
test_parse_upstream_pins_bad(void **state)
{
	struct conf_upstream u;
	char err[CONF_ERR_MAX];

	(void)state;
	upstream_bad("1.1.1.1 pin-sha256=", "pin-sha256: \"\" is not the "
	    "base64 of 32 bytes");
	upstream_bad("1.1.1.1 pin-sha256=QUJD", "pin-sha256: \"QUJD\" is not "
	    "the base64 of 32 bytes");
	/* 31 and 33 bytes. */
	upstream_bad("1.1.1.1 pin-sha256=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAA==", "pin-sha256: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "A==\" is not the base64 of 32 bytes");
	upstream_bad("1.1.1.1 pin-sha256=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAA", "pin-sha256: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAA\" is not the base64 of 32 bytes");
	/* A bad digit, URL-safe alphabet, padding in the middle, too much
	 * padding, and bits set past the 32nd byte. */
	upstream_bad("1.1.1.1 pin-sha256=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk"
	    "aGxwdHh*=", "pin-sha256: \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx"
	    "wdHh*=\" is not the base64 of 32 bytes");
	upstream_bad("1.1.1.1 pin-sha256=_____________________________________"
	    "_____8=", "pin-sha256: \"________________________________________"
	    "__8=\" is not the base64 of 32 bytes");
	upstream_bad("1.1.1.1 pin-sha256=AAECAwQFBgcICQoLDA0ODxAREhMUFR=XGBk"
	    "aGxwdHh8", "pin-sha256: \"AAECAwQFBgcICQoLDA0ODxAREhMUFR=XGBkaGx"
	    "wdHh8\" is not the base64 of 32 bytes");
	upstream_bad("1.1.1.1 pin-sha256=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk"
	    "aGxwdHh8==", "pin-sha256: \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaG"
	    "xwdHh8==\" is not the base64 of 32 bytes");
	upstream_bad("1.1.1.1 pin-sha256=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk"
	    "aGxwdHh9=", "pin-sha256: \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx"
	    "wdHh9=\" is not the base64 of 32 bytes");
	/* A long bad pin is cut in the message. */
	upstream_bad("1.1.1.1 pin-sha256=" PIN_A_B64 PIN_A_B64, "pin-sha256: "
	    "\"" PIN_A_B64 "AAECAwQFBgcICQoLDA0O...\" is not the base64 of "
	    "32 bytes");
	upstream_bad("1.1.1.1 " PIN_A " " PIN_B " " PIN_C " " PIN_D " " PIN_A,
	    "too many pins (max 4)");
	/* Only pins may follow the address. */
	upstream_bad("1.1.1.1 #dns.example", "unexpected \"#dns.example\" "
	    "after the address (only pin-sha256=... may follow)");
	upstream_bad("1.1.1.1#a.b 853", "unexpected \"853\" after the "
	    "address (only pin-sha256=... may follow)");
	upstream_bad("1.1.1.1 " PIN_A " pin-sha256", "unexpected "
	    "\"pin-sha256\" after the address (only pin-sha256=... may "
	    "follow)");
	upstream_bad("1.1.1.1 PIN-SHA256=" PIN_A_B64, "unexpected \"PIN-SHA256="
	    PIN_A_B64 "\" after the address (only pin-sha256=... may follow)");
	upstream_bad("1.1.1.1 pin-sha1=" PIN_A_B64, "unexpected \"pin-sha1="
	    PIN_A_B64 "\" after the address (only pin-sha256=... may follow)");
	/* The address is still checked first, and the name. */
	upstream_bad("localhost " PIN_A, "\"localhost\" is not an IPv4 or "
	    "IPv6 address");
	upstream_bad("1.1.1.1# " PIN_A, "missing name after \"#\"");
	upstream_bad(PIN_A, "\"pin-sha256=" PIN_A_B64 "\" is not an IPv4 or "
	    "IPv6 address");
	upstream_bad("   ", "missing address");

	/* A failure leaves u alone. */
	memset(&u, 0x5a, sizeof(u));
	assert_int_equal(conf_parse_upstream("1.1.1.1 " PIN_A " x", &u, err,
	    sizeof(err)), -1);
	assert_int_equal(u.auth_name[0], 0x5a);
	assert_int_equal(u.pins[0][0], 0x5a);
}

/* ---- conf_set, key by key ---- */

static void
test_set_listen(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX], v[32];
	size_t i;

	(void)state;
	conf_init(&c);
	set_ok(&c, "listen", "127.0.0.1");
	set_ok(&c, "listen", "::1@5300");
	assert_int_equal(c.n_listen, 2);
	addr_is(&c.listen[0], "127.0.0.1@53");
	addr_is(&c.listen[1], "::1@5300");

	/* A failed set leaves the list alone. */
	assert_int_equal(conf_set(&c, "listen", "nope", "cmd", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "cmd: listen: \"nope\" is not an IPv4 or "
	    "IPv6 address");
	assert_int_equal(c.n_listen, 2);

	assert_int_equal(conf_set(&c, "listen", "127.0.0.1@53", "cmd", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "cmd: listen: 127.0.0.1@53 given twice");
	assert_int_equal(conf_set(&c, "listen", "0:0::1@5300", "cmd", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "cmd: listen: ::1@5300 given twice");
	/* Same address, other port: a different socket. */
	set_ok(&c, "listen", "127.0.0.1@54");

	conf_init(&c);
	for (i = 0; i < CONF_MAX_LISTEN; i++) {
		snprintf(v, sizeof(v), "127.0.0.1@%zu", 1000 + i);
		set_ok(&c, "listen", v);
	}
	assert_int_equal(c.n_listen, CONF_MAX_LISTEN);
	assert_int_equal(conf_set(&c, "listen", "127.0.0.2", "cmd", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "cmd: listen: too many (max 32)");
	assert_int_equal(c.n_listen, CONF_MAX_LISTEN);

	expect_set_error("listen", "", "listen: missing value");
	expect_set_error("listen", NULL, "listen: missing value");
	expect_set_error("listen", "1.2.3.4@0", "listen: port must be 1-65535");
}

static void
test_set_upstream(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX], v[64];
	size_t i;

	(void)state;
	conf_init(&c);
	set_ok(&c, "upstream", "1.1.1.1#a.example");
	set_ok(&c, "upstream", "::1@8853#b.example");
	assert_int_equal(c.n_upstream, 2);
	assert_string_equal(c.upstream[1].auth_name, "b.example");
	assert_int_equal(conf_set(&c, "upstream", "1.1.1.1@853#c.example",
	    "cmd", err, sizeof(err)), -1);
	assert_string_equal(err, "cmd: upstream: 1.1.1.1@853 given twice");
	assert_int_equal(c.n_upstream, 2);

	conf_init(&c);
	for (i = 0; i < CONF_MAX_UPSTREAM; i++) {
		snprintf(v, sizeof(v), "127.0.0.%zu#x.example", 1 + i);
		set_ok(&c, "upstream", v);
	}
	assert_int_equal(conf_set(&c, "upstream", "127.0.1.1#x.example", "cmd",
	    err, sizeof(err)), -1);
	assert_string_equal(err, "cmd: upstream: too many (max 16)");
	assert_int_equal(c.n_upstream, CONF_MAX_UPSTREAM);

	expect_set_error("upstream", "1.1.1.1#", "upstream: missing name "
	    "after \"#\"");
	expect_set_error("upstream", "one.one.one.one", "upstream: "
	    "\"one.one.one.one\" is not an IPv4 or IPv6 address");
}

static void
test_set_ca_file(void **state)
{
	struct conf c;
	char path[CONF_MAX_PATH + 1];

	(void)state;
	conf_init(&c);
	set_ok(&c, "ca-file", "/etc/ssl/certs/ca-certificates.crt");
	assert_string_equal(c.ca_file, "/etc/ssl/certs/ca-certificates.crt");
	set_ok(&c, "ca-file", "ca.pem");
	assert_string_equal(c.ca_file, "ca.pem");

	memset(path, 'p', sizeof(path) - 1);
	path[CONF_MAX_PATH - 1] = '\0';
	set_ok(&c, "ca-file", path);
	assert_int_equal(strlen(c.ca_file), CONF_MAX_PATH - 1);
	path[CONF_MAX_PATH - 1] = 'p';
	path[CONF_MAX_PATH] = '\0';
	expect_set_error("ca-file", path, "ca-file: path longer than 1023 "
	    "characters");
	expect_set_error("ca-file", "my ca.pem", "ca-file: path must not "
	    "contain white space");
	expect_set_error("ca-file", "#ca.pem", "ca-file: path must not start "
	    "with '#'");
	expect_set_error("ca-file", "", "ca-file: missing value");
}

static size_t
size_of(const char *v)
{
	struct conf c;

	conf_init(&c);
	set_ok(&c, "cache-size", v);
	return c.cache_size;
}

static void
test_set_cache_size(void **state)
{
	(void)state;
	assert_int_equal(size_of("64K"), 65536);
	assert_int_equal(size_of("65536"), 65536);
	assert_int_equal(size_of("65537"), 65537);
	assert_int_equal(size_of("64k"), 65536);
	assert_int_equal(size_of("32M"), 32 * 1024 * 1024);
	assert_int_equal(size_of("1m"), 1024 * 1024);
	assert_int_equal(size_of("1G"), 1024ULL * 1024 * 1024);
	assert_int_equal(size_of("64G"), 64ULL * 1024 * 1024 * 1024);
	assert_int_equal(size_of("0064g"), 64ULL * 1024 * 1024 * 1024);
	assert_int_equal(size_of("1536K"), 1536 * 1024);

	expect_set_error("cache-size", "12Q", "cache-size: \"12Q\" is not a "
	    "size (use e.g. 32M)");
	expect_set_error("cache-size", "32MB", "cache-size: \"32MB\" is not "
	    "a size (use e.g. 32M)");
	expect_set_error("cache-size", "M", "cache-size: \"M\" is not a size "
	    "(use e.g. 32M)");
	expect_set_error("cache-size", "-1M", "cache-size: \"-1M\" is not a "
	    "size (use e.g. 32M)");
	expect_set_error("cache-size", "1.5M", "cache-size: \"1.5M\" is not a "
	    "size (use e.g. 32M)");
	expect_set_error("cache-size", "1T", "cache-size: \"1T\" is not a "
	    "size (use e.g. 32M)");
	expect_set_error("cache-size", "0", "cache-size: \"0\" is too small "
	    "(min 64K)");
	expect_set_error("cache-size", "63K", "cache-size: \"63K\" is too "
	    "small (min 64K)");
	expect_set_error("cache-size", "65535", "cache-size: \"65535\" is too "
	    "small (min 64K)");
	expect_set_error("cache-size", "65G", "cache-size: \"65G\" is too "
	    "large (max 64G)");
	expect_set_error("cache-size", "65537M", "cache-size: \"65537M\" is "
	    "too large (max 64G)");
	expect_set_error("cache-size", "99999999999999999999999G",
	    "cache-size: \"99999999999999999999999G\" is too large (max 64G)");
	expect_set_error("cache-size", "99999999999999999999999",
	    "cache-size: \"99999999999999999999999\" is too large (max 64G)");
}

static unsigned
duration_of(const char *v)
{
	struct conf c;

	conf_init(&c);
	set_ok(&c, "query-timeout", v);
	return c.query_timeout_ms;
}

static void
test_set_durations(void **state)
{
	struct conf c;
	static const char *const keys[] = { "query-timeout", "connect-timeout",
	    "idle-timeout", "tcp-idle-timeout" };
	char want[200];
	size_t i;

	(void)state;
	assert_int_equal(duration_of("1ms"), 1);
	assert_int_equal(duration_of("1500ms"), 1500);
	assert_int_equal(duration_of("5"), 5000);
	assert_int_equal(duration_of("5s"), 5000);
	assert_int_equal(duration_of("2m"), 120000);
	assert_int_equal(duration_of("60m"), 3600000);
	assert_int_equal(duration_of("3600s"), 3600000);
	assert_int_equal(duration_of("3600000ms"), 3600000);
	assert_int_equal(duration_of("1h"), 3600000);

	/* Each key lands in its own field. */
	conf_init(&c);
	set_ok(&c, "query-timeout", "1s");
	set_ok(&c, "connect-timeout", "2s");
	set_ok(&c, "idle-timeout", "3s");
	set_ok(&c, "tcp-idle-timeout", "4s");
	assert_int_equal(c.query_timeout_ms, 1000);
	assert_int_equal(c.connect_timeout_ms, 2000);
	assert_int_equal(c.idle_timeout_ms, 3000);
	assert_int_equal(c.tcp_idle_timeout_ms, 4000);

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(want, sizeof(want), "%s: \"0\" is out of range (1ms "
		    "to 60m)", keys[i]);
		expect_set_error(keys[i], "0", want);
		snprintf(want, sizeof(want), "%s: \"3x\" is not a duration "
		    "(use e.g. 3s or 500ms)", keys[i]);
		expect_set_error(keys[i], "3x", want);
	}
	expect_set_error("query-timeout", "0ms", "query-timeout: \"0ms\" is "
	    "out of range (1ms to 60m)");
	expect_set_error("query-timeout", "61m", "query-timeout: \"61m\" is "
	    "out of range (1ms to 60m)");
	expect_set_error("query-timeout", "3601", "query-timeout: \"3601\" is "
	    "out of range (1ms to 60m)");
	expect_set_error("query-timeout", "3600001ms", "query-timeout: "
	    "\"3600001ms\" is out of range (1ms to 60m)");
	expect_set_error("query-timeout", "99999999999999999999999m",
	    "query-timeout: \"99999999999999999999999m\" is out of range "
	    "(1ms to 60m)");
	expect_set_error("query-timeout", "2h", "query-timeout: \"2h\" is "
	    "out of range (1ms to 60m)");
	expect_set_error("query-timeout", "0h", "query-timeout: \"0h\" is "
	    "out of range (1ms to 60m)");
	expect_set_error("query-timeout", "1d", "query-timeout: \"1d\" is not "
	    "a duration (use e.g. 3s or 500ms)");
	expect_set_error("query-timeout", "1H", "query-timeout: \"1H\" is not "
	    "a duration (use e.g. 3s or 500ms)");
	expect_set_error("query-timeout", "1hm", "query-timeout: \"1hm\" is "
	    "not a duration (use e.g. 3s or 500ms)");
	expect_set_error("query-timeout", "1.5s", "query-timeout: \"1.5s\" is "
	    "not a duration (use e.g. 3s or 500ms)");
	expect_set_error("query-timeout", "s", "query-timeout: \"s\" is not a "
	    "duration (use e.g. 3s or 500ms)");
	expect_set_error("query-timeout", "-1s", "query-timeout: \"-1s\" is "
	    "not a duration (use e.g. 3s or 500ms)");
	expect_set_error("query-timeout", "3 s", "query-timeout: \"3 s\" is "
	    "not a duration (use e.g. 3s or 500ms)");
	expect_set_error("query-timeout", "3S", "query-timeout: \"3S\" is not "
	    "a duration (use e.g. 3s or 500ms)");
	expect_set_error("idle-timeout", "", "idle-timeout: missing value");
}

/* The durations of issue 3: each in its own field, each with its range. */
static void
test_set_new_durations(void **state)
{
	struct conf c;
	static const char *const keys[] = { "answer-timeout", "backoff-max",
	    "max-connection-lifetime", "stale-client-timeout" };
	char want[200];
	size_t i;

	(void)state;
	conf_init(&c);
	set_ok(&c, "answer-timeout", "1ms");
	set_ok(&c, "backoff-max", "1s");
	set_ok(&c, "max-connection-lifetime", "1s");
	set_ok(&c, "stale-client-timeout", "2s");
	assert_int_equal(c.answer_timeout_ms, 1);
	assert_int_equal(c.backoff_max_ms, 1000);
	assert_int_equal(c.max_conn_lifetime_ms, 1000);
	assert_int_equal(c.stale_client_timeout_ms, 2000);
	/* The other duration fields are untouched. */
	assert_int_equal(c.query_timeout_ms, 3000);
	assert_int_equal(c.idle_timeout_ms, 30000);

	set_ok(&c, "answer-timeout", "60m");
	set_ok(&c, "backoff-max", "1h");
	set_ok(&c, "max-connection-lifetime", "24h");
	set_ok(&c, "stale-client-timeout", "3600000ms");
	assert_int_equal(c.answer_timeout_ms, 3600000);
	assert_int_equal(c.backoff_max_ms, 3600000);
	assert_int_equal(c.max_conn_lifetime_ms, 86400000);
	assert_int_equal(c.stale_client_timeout_ms, 3600000);
	set_ok(&c, "max-connection-lifetime", "1440m");
	assert_int_equal(c.max_conn_lifetime_ms, 86400000);
	set_ok(&c, "max-connection-lifetime", "90m");
	assert_int_equal(c.max_conn_lifetime_ms, 5400000);

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(want, sizeof(want), "%s: \"3x\" is not a duration "
		    "(use e.g. 3s or 500ms)", keys[i]);
		expect_set_error(keys[i], "3x", want);
		snprintf(want, sizeof(want), "%s: missing value", keys[i]);
		expect_set_error(keys[i], "", want);
	}
	expect_set_error("answer-timeout", "0", "answer-timeout: \"0\" is out "
	    "of range (1ms to 60m)");
	expect_set_error("answer-timeout", "61m", "answer-timeout: \"61m\" is "
	    "out of range (1ms to 60m)");
	expect_set_error("stale-client-timeout", "0ms", "stale-client-timeout: "
	    "\"0ms\" is out of range (1ms to 60m)");
	expect_set_error("stale-client-timeout", "2h", "stale-client-timeout: "
	    "\"2h\" is out of range (1ms to 60m)");
	expect_set_error("backoff-max", "999ms", "backoff-max: \"999ms\" is "
	    "out of range (1s to 60m)");
	expect_set_error("backoff-max", "3601s", "backoff-max: \"3601s\" is "
	    "out of range (1s to 60m)");
	expect_set_error("max-connection-lifetime", "999ms",
	    "max-connection-lifetime: \"999ms\" is out of range (1s to 24h)");
	expect_set_error("max-connection-lifetime", "25h",
	    "max-connection-lifetime: \"25h\" is out of range (1s to 24h)");
	expect_set_error("max-connection-lifetime", "86400001ms",
	    "max-connection-lifetime: \"86400001ms\" is out of range (1s to "
	    "24h)");
	expect_set_error("max-connection-lifetime", "1d",
	    "max-connection-lifetime: \"1d\" is not a duration (use e.g. 3s "
	    "or 500ms)");
}

static unsigned
seconds_of(const char *key, const char *v)
{
	struct conf c;

	conf_init(&c);
	set_ok(&c, key, v);
	if (strcmp(key, "cache-min-ttl") == 0)
		return c.cache_min_ttl;
	if (strcmp(key, "cache-max-ttl") == 0)
		return c.cache_max_ttl;
	if (strcmp(key, "cache-max-negative-ttl") == 0)
		return c.cache_max_negative_ttl;
	if (strcmp(key, "cache-servfail-ttl") == 0)
		return c.cache_servfail_ttl;
	if (strcmp(key, "stale-max-age") == 0)
		return c.stale_max_age;
	if (strcmp(key, "stale-refresh-interval") == 0)
		return c.stale_refresh_interval;
	fail_msg("no such key %s", key);
	return 0;
}

static void
test_set_seconds(void **state)
{
	struct conf c;
	/* cache-servfail-ttl has its own upper limit: below. */
	static const char *const keys[] = { "cache-min-ttl", "cache-max-ttl",
	    "cache-max-negative-ttl", "stale-max-age",
	    "stale-refresh-interval" };
	char want[200];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		assert_int_equal(seconds_of(keys[i], "30"), 30);
		assert_int_equal(seconds_of(keys[i], "30s"), 30);
		assert_int_equal(seconds_of(keys[i], "5m"), 300);
		assert_int_equal(seconds_of(keys[i], "2h"), 7200);
		assert_int_equal(seconds_of(keys[i], "1d"), 86400);
		assert_int_equal(seconds_of(keys[i], "7d"), 604800);
		assert_int_equal(seconds_of(keys[i], "604800"), 604800);
		assert_int_equal(seconds_of(keys[i], "168h"), 604800);
		assert_int_equal(seconds_of(keys[i], "1"), 1);
		assert_int_equal(seconds_of(keys[i], "007"), 7);

		snprintf(want, sizeof(want), "%s: \"604801\" is out of range "
		    "(%s to 7d)", keys[i], i == 4 ? "1s" : "0");
		expect_set_error(keys[i], "604801", want);
		snprintf(want, sizeof(want), "%s: \"8d\" is out of range "
		    "(%s to 7d)", keys[i], i == 4 ? "1s" : "0");
		expect_set_error(keys[i], "8d", want);
		snprintf(want, sizeof(want), "%s: \"99999999999999999999d\" "
		    "is out of range (%s to 7d)", keys[i], i == 4 ? "1s" : "0");
		expect_set_error(keys[i], "99999999999999999999d", want);
		snprintf(want, sizeof(want), "%s: \"500ms\" is not a time in "
		    "seconds (use e.g. 30, 5m or 1d)", keys[i]);
		expect_set_error(keys[i], "500ms", want);
		snprintf(want, sizeof(want), "%s: missing value", keys[i]);
		expect_set_error(keys[i], NULL, want);
	}
	/* 0 is allowed except for the refresh interval. */
	for (i = 0; i < 4; i++)
		assert_int_equal(seconds_of(keys[i], "0"), 0);
	expect_set_error("stale-refresh-interval", "0",
	    "stale-refresh-interval: \"0\" is out of range (1s to 7d)");
	expect_set_error("stale-refresh-interval", "0d",
	    "stale-refresh-interval: \"0d\" is out of range (1s to 7d)");

	/* RFC 2308 section 7.1: five minutes at most for a SERVFAIL. */
	assert_int_equal(seconds_of("cache-servfail-ttl", "0"), 0);
	assert_int_equal(seconds_of("cache-servfail-ttl", "30"), 30);
	assert_int_equal(seconds_of("cache-servfail-ttl", "5m"), 300);
	assert_int_equal(seconds_of("cache-servfail-ttl", "300s"), 300);
	expect_set_error("cache-servfail-ttl", "301", "cache-servfail-ttl: "
	    "\"301\" is out of range (0 to 5m)");
	expect_set_error("cache-servfail-ttl", "1h", "cache-servfail-ttl: "
	    "\"1h\" is out of range (0 to 5m)");
	expect_set_error("cache-servfail-ttl", "5s5", "cache-servfail-ttl: "
	    "\"5s5\" is not a time in seconds (use e.g. 30, 5m or 1d)");

	expect_set_error("cache-max-ttl", "1w", "cache-max-ttl: \"1w\" is not "
	    "a time in seconds (use e.g. 30, 5m or 1d)");
	expect_set_error("cache-max-ttl", "1D", "cache-max-ttl: \"1D\" is not "
	    "a time in seconds (use e.g. 30, 5m or 1d)");
	expect_set_error("cache-max-ttl", "1.5h", "cache-max-ttl: \"1.5h\" is "
	    "not a time in seconds (use e.g. 30, 5m or 1d)");
	expect_set_error("cache-max-ttl", "-1", "cache-max-ttl: \"-1\" is not "
	    "a time in seconds (use e.g. 30, 5m or 1d)");
	expect_set_error("cache-max-ttl", "h", "cache-max-ttl: \"h\" is not "
	    "a time in seconds (use e.g. 30, 5m or 1d)");
	expect_set_error("cache-max-ttl", "1dd", "cache-max-ttl: \"1dd\" is "
	    "not a time in seconds (use e.g. 30, 5m or 1d)");

	/* Each key lands in its own field. */
	conf_init(&c);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(want, sizeof(want), "%zu", 100 + i);
		set_ok(&c, keys[i], want);
	}
	set_ok(&c, "cache-servfail-ttl", "99");
	assert_int_equal(c.cache_min_ttl, 100);
	assert_int_equal(c.cache_max_ttl, 101);
	assert_int_equal(c.cache_max_negative_ttl, 102);
	assert_int_equal(c.stale_max_age, 103);
	assert_int_equal(c.stale_refresh_interval, 104);
	assert_int_equal(c.cache_servfail_ttl, 99);
}

static void
test_set_selection(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	set_ok(&c, "upstream-selection", "ordered");
	assert_int_equal(c.selection, CONF_SELECT_ORDERED);
	set_ok(&c, "upstream-selection", "round-robin");
	assert_int_equal(c.selection, CONF_SELECT_ROUND_ROBIN);
	set_ok(&c, "upstream-selection", "fastest");
	assert_int_equal(c.selection, CONF_SELECT_FASTEST);
	expect_set_error("upstream-selection", "fast", "upstream-selection: "
	    "\"fast\" is not one of fastest, round-robin, ordered");
	expect_set_error("upstream-selection", "Ordered", "upstream-selection: "
	    "\"Ordered\" is not one of fastest, round-robin, ordered");
	expect_set_error("upstream-selection", "round_robin",
	    "upstream-selection: \"round_robin\" is not one of fastest, "
	    "round-robin, ordered");
	expect_set_error("upstream-selection", "", "upstream-selection: "
	    "missing value");
}

static void
test_set_bools(void **state)
{
	struct conf c;
	static const char *const keys[] = { "prefetch", "serve-stale",
	    "local-zones" };
	char want[200];
	size_t i;

	(void)state;
	conf_init(&c);
	set_ok(&c, "prefetch", "no");
	assert_int_equal(c.prefetch, 0);
	assert_int_equal(c.serve_stale, 1);
	assert_int_equal(c.local_zones, 1);
	set_ok(&c, "serve-stale", "no");
	assert_int_equal(c.serve_stale, 0);
	assert_int_equal(c.local_zones, 1);
	set_ok(&c, "local-zones", "no");
	assert_int_equal(c.local_zones, 0);
	assert_int_equal(c.prefetch, 0);
	set_ok(&c, "prefetch", "yes");
	assert_int_equal(c.prefetch, 1);
	assert_int_equal(c.serve_stale, 0);
	set_ok(&c, "serve-stale", "yes");
	set_ok(&c, "local-zones", "yes");
	assert_int_equal(c.serve_stale, 1);
	assert_int_equal(c.local_zones, 1);

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(want, sizeof(want), "%s: \"true\" is not yes or no",
		    keys[i]);
		expect_set_error(keys[i], "true", want);
		snprintf(want, sizeof(want), "%s: \"1\" is not yes or no",
		    keys[i]);
		expect_set_error(keys[i], "1", want);
		snprintf(want, sizeof(want), "%s: \"Yes\" is not yes or no",
		    keys[i]);
		expect_set_error(keys[i], "Yes", want);
		snprintf(want, sizeof(want), "%s: missing value", keys[i]);
		expect_set_error(keys[i], "", want);
	}
}

/* RFC 6891 6.2.5 and RFC 9715: 512 to 4096, both ends included. */
static void
test_set_max_udp_size(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	set_ok(&c, "max-udp-size", "512");
	assert_int_equal(c.max_udp_size, 512);
	set_ok(&c, "max-udp-size", "4096");
	assert_int_equal(c.max_udp_size, 4096);
	expect_set_error("max-udp-size", "511", "max-udp-size: \"511\" is "
	    "out of range (512-4096)");
	expect_set_error("max-udp-size", "4097", "max-udp-size: \"4097\" is "
	    "out of range (512-4096)");
}

static void
test_set_tcp_max_clients(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	set_ok(&c, "tcp-max-clients", "1");
	assert_int_equal(c.tcp_max_clients, 1);
	set_ok(&c, "tcp-max-clients", "65535");
	assert_int_equal(c.tcp_max_clients, 65535);
	expect_set_error("tcp-max-clients", "0", "tcp-max-clients: \"0\" is "
	    "out of range (1-65535)");
	expect_set_error("tcp-max-clients", "65536", "tcp-max-clients: "
	    "\"65536\" is out of range (1-65535)");
	expect_set_error("tcp-max-clients", "99999999999999999999999",
	    "tcp-max-clients: \"99999999999999999999999\" is out of range "
	    "(1-65535)");
	expect_set_error("tcp-max-clients", "many", "tcp-max-clients: "
	    "\"many\" is not a number");
	expect_set_error("tcp-max-clients", "10k", "tcp-max-clients: "
	    "\"10k\" is not a number");
	expect_set_error("tcp-max-clients", "-5", "tcp-max-clients: "
	    "\"-5\" is not a number");
}

static void
test_set_log_level(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	set_ok(&c, "log-level", "err");
	assert_int_equal(c.log_level, LOGL_ERR);
	set_ok(&c, "log-level", "warn");
	assert_int_equal(c.log_level, LOGL_WARN);
	set_ok(&c, "log-level", "debug");
	assert_int_equal(c.log_level, LOGL_DEBUG);
	set_ok(&c, "log-level", "info");
	assert_int_equal(c.log_level, LOGL_INFO);
	expect_set_error("log-level", "loud", "log-level: \"loud\" is not one "
	    "of err, warn, info, debug");
	expect_set_error("log-level", "INFO", "log-level: \"INFO\" is not one "
	    "of err, warn, info, debug");
	expect_set_error("log-level", "error", "log-level: \"error\" is not "
	    "one of err, warn, info, debug");
}

static void
test_set_unknown_key(void **state)
{
	(void)state;
	expect_set_error("listn", "127.0.0.1", "unknown key \"listn\"");
	expect_set_error("", "x", "unknown key \"\"");
	expect_set_error("Listen", "x", "unknown key \"Listen\"");
	/* Unknown beats missing value: the key is the first mistake. */
	expect_set_error("cache", NULL, "unknown key \"cache\"");
}

static void
test_set_last_wins(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	set_ok(&c, "cache-size", "1M");
	set_ok(&c, "cache-size", "2M");
	set_ok(&c, "log-level", "debug");
	set_ok(&c, "log-level", "warn");
	assert_int_equal(c.cache_size, 2 * 1024 * 1024);
	assert_int_equal(c.log_level, LOGL_WARN);
}

/* ---- files ---- */

static void
test_load_syntax(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX];

	(void)state;
	assert_int_equal(load_text(&c,
	    "# a comment\n"
	    "\n"
	    "   \t\n"
	    "  listen\t127.0.0.1@5300   # loopback only\n"
	    "listen ::1@5300#comment glued to a word is not a comment\n"
	    "upstream 127.0.0.1@8853#dns.example # '#' inside the value\n"
	    "cache-size 1M\r\n"
	    "\tlog-level   debug\t\n"
	    "#listen 10.0.0.1\n"
	    "query-timeout 1500ms", err, NULL), -1);
	/* The glued '#' made "#comment" part of the value: rejected. */
	assert_non_null(strstr(err, ":5: listen: \"5300#comment\" is not "
	    "a port number"));

	assert_int_equal(load_text(&c,
	    "# a comment\n"
	    "\n"
	    "   \t\n"
	    "  listen\t127.0.0.1@5300   # loopback only\n"
	    "listen ::1@5300 #comment\n"
	    "upstream 127.0.0.1@8853#dns.example # '#' inside the value\n"
	    "cache-size 1M\r\n"
	    "\tlog-level   debug\t\n"
	    "#listen 10.0.0.1\n"
	    "query-timeout 1500ms", err, NULL), 0);
	assert_int_equal(c.n_listen, 2);
	addr_is(&c.listen[0], "127.0.0.1@5300");
	addr_is(&c.listen[1], "::1@5300");
	assert_int_equal(c.n_upstream, 1);
	addr_is(&c.upstream[0].addr, "127.0.0.1@8853");
	assert_string_equal(c.upstream[0].auth_name, "dns.example");
	assert_int_equal(c.cache_size, 1024 * 1024);
	assert_int_equal(c.log_level, LOGL_DEBUG);
	assert_int_equal(c.query_timeout_ms, 1500);

	/* Empty file: nothing changes. */
	assert_int_equal(load_text(&c, "", err, NULL), 0);
	assert_int_equal(c.n_listen, 0);
	assert_int_equal(c.cache_size, 32 * 1024 * 1024);
}

static void
test_load_errors(void **state)
{
	(void)state;
	expect_file_error("listen 127.0.0.1\n\nlistn 1.2.3.4\n",
	    "3: unknown key \"listn\"");
	expect_file_error("# x\n# y\n\n\n cache-size 12Q\n",
	    "5: cache-size: \"12Q\" is not a size (use e.g. 32M)");
	expect_file_error("listen\n", "1: listen: missing value");
	expect_file_error("listen # nothing\n", "1: listen: missing value");
	expect_file_error("log-level info debug\n",
	    "1: log-level: unexpected \"debug\" after the value");
	expect_file_error("listen 127.0.0.1 ::1 # two\n",
	    "1: listen: unexpected \"::1\" after the value");
	expect_file_error("listn a b\n", "1: unknown key \"listn\"");
	expect_file_error("log-level bad extra\n",
	    "1: log-level: \"bad\" is not one of err, warn, info, debug");
	expect_file_error("listen 1.2.3.4\nlisten 1.2.3.4@53\n",
	    "2: listen: 1.2.3.4@53 given twice");
	expect_file_error("tcp-max-clients 0\r\n",
	    "1: tcp-max-clients: \"0\" is out of range (1-65535)");
	expect_file_error("upstream 1.1.1.1#\n",
	    "1: upstream: missing name after \"#\"");
	expect_file_error("query-timeout 0\n",
	    "1: query-timeout: \"0\" is out of range (1ms to 60m)");
	/* Words after the value: only an upstream's pins. */
	expect_file_error("prefetch no yes\n",
	    "1: prefetch: unexpected \"yes\" after the value");
	expect_file_error("cache-max-ttl 1h " PIN_A "\n",
	    "1: cache-max-ttl: unexpected \"" PIN_A "\" after the value");
	expect_file_error("listen 127.0.0.1 " PIN_A "\n",
	    "1: listen: unexpected \"" PIN_A "\" after the value");
	expect_file_error("upstream 1.1.1.1#a.b " PIN_A " extra # c\n",
	    "1: upstream: unexpected \"extra\" after the address (only "
	    "pin-sha256=... may follow)");
	expect_file_error("upstream 1.1.1.1 pin-sha256=QUJD\n",
	    "1: upstream: pin-sha256: \"QUJD\" is not the base64 of 32 bytes");
	expect_file_error("\nupstream 1.1.1.1 " PIN_A " " PIN_B " " PIN_C " "
	    PIN_D " " PIN_A "\n", "2: upstream: too many pins (max 4)");
	expect_file_error("upstream-selection best\n",
	    "1: upstream-selection: \"best\" is not one of fastest, "
	    "round-robin, ordered");
	expect_file_error("stale-max-age 8d\n",
	    "1: stale-max-age: \"8d\" is out of range (0 to 7d)");
}

static void
test_load_pins(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX];
	unsigned char want[32];

	(void)state;
	memset(want, 0xff, sizeof(want));
	assert_int_equal(load_text(&c,
	    "upstream 127.0.0.1@8853 " PIN_A "\n"
	    "upstream\t::1@8853#dns.example\t" PIN_B "   " PIN_C
	    "   # a comment " PIN_D "\r\n"
	    "upstream 127.0.0.2 " PIN_B "#not-a-comment-but-bad\n", err, NULL),
	    -1);
	assert_non_null(strstr(err, ":3: upstream: pin-sha256: \""
	    PIN_B_B64 "#not-a-comment-but-b...\" is not the base64 of 32 bytes"));

	assert_int_equal(load_text(&c,
	    "upstream 127.0.0.1@8853 " PIN_A "\n"
	    "upstream\t::1@8853#dns.example\t" PIN_B "   " PIN_C
	    "   # a comment " PIN_D "\r\n"
	    "upstream 127.0.0.2#x.example # " PIN_D "\n"
	    "upstream 127.0.0.3 " PIN_D "#\n", err, NULL), -1);
	assert_non_null(strstr(err, ":4: upstream: pin-sha256: \""
	    PIN_D_B64 "#\" is not the base64 of 32 bytes"));

	assert_int_equal(load_text(&c,
	    "upstream 127.0.0.1@8853 " PIN_A "\n"
	    "upstream\t::1@8853#dns.example\t" PIN_B "   " PIN_C
	    "   # a comment " PIN_D "\r\n"
	    "upstream 127.0.0.2#x.example # " PIN_D "\n", err, NULL), 0);
	assert_int_equal(c.n_upstream, 3);
	assert_int_equal(c.upstream[0].n_pins, 1);
	assert_string_equal(c.upstream[0].auth_name, "");
	assert_int_equal(c.upstream[1].n_pins, 2);
	assert_string_equal(c.upstream[1].auth_name, "dns.example");
	assert_memory_equal(c.upstream[1].pins[0], want, 32);
	assert_int_equal(c.upstream[2].n_pins, 0);
	assert_string_equal(c.upstream[2].auth_name, "x.example");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
}

static void
test_load_long_lines(void **state)
{
	struct conf c;
	char text[3000], err[CONF_ERR_MAX], want[CONF_ERR_MAX];
	const char *path;

	(void)state;
	/* 1023 characters is the longest line that is read. */
	memset(text, ' ', sizeof(text));
	memcpy(text, "# comment", 9);
	text[1023] = '\n';
	memcpy(text + 1024, "log-level debug\n", 17);
	assert_int_equal(load_text(&c, text, err, NULL), 0);
	assert_int_equal(c.log_level, LOGL_DEBUG);

	/* 1024 is too long, also as the last line without a newline. */
	memset(text, ' ', sizeof(text));
	memcpy(text, "log-level debug\n# x", 19);
	text[16 + 1024] = '\n';
	text[16 + 1025] = '\0';
	assert_int_equal(load_text(&c, text, err, &path), -1);
	snprintf(want, sizeof(want), "%s:2: line longer than 1023 characters",
	    path);
	assert_string_equal(err, want);
	text[16 + 1024] = '\0';
	assert_int_equal(load_text(&c, text, err, &path), -1);
	snprintf(want, sizeof(want), "%s:2: line longer than 1023 characters",
	    path);
	assert_string_equal(err, want);

	/* A very long line is consumed whole and reported once. */
	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	assert_int_equal(load_text(&c, text, err, &path), -1);
	snprintf(want, sizeof(want), "%s:1: line longer than 1023 characters",
	    path);
	assert_string_equal(err, want);
}

static void
test_load_nul_byte(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX], want[CONF_ERR_MAX];
	const char *path;
	static const char text[] = "log-level debug\nlisten 1.2\0003.4\n";

	(void)state;
	path = write_file(text, sizeof(text) - 1);
	conf_init(&c);
	assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:2: NUL byte in line", path);
	assert_string_equal(err, want);
}

static void
test_load_unreadable(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX], want[CONF_ERR_MAX], path[128];

	(void)state;
	conf_init(&c);
	snprintf(path, sizeof(path), "%s/does-not-exist.conf", tmpdir);
	assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: %s", path, strerror(ENOENT));
	assert_string_equal(err, want);

	snprintf(path, sizeof(path), "%s/dir", tmpdir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: %s", path, strerror(EISDIR));
	assert_string_equal(err, want);
}

static void
test_load_too_many_listen(void **state)
{
	char text[4096];
	size_t i, n = 0;

	(void)state;
	for (i = 0; i <= CONF_MAX_LISTEN; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		    "listen 127.0.0.1@%zu\n", 2000 + i);
	expect_file_error(text, "33: listen: too many (max 32)");
}

static void
test_err_truncation(void **state)
{
	struct conf c;
	char err[16];

	(void)state;
	/* A small err buffer gets a cut but terminated message. */
	conf_init(&c);
	memset(err, 'z', sizeof(err));
	assert_int_equal(conf_set(&c, "cache-size", "12Q", "somewhere", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "somewhere: cach");
}

/* ---- printing ---- */

/* Print c, load the printout, print again: same text, same value. */
static void
round_trip(const struct conf *c)
{
	struct conf back;
	char err[CONF_ERR_MAX];
	char *a, *b;
	const char *path;
	size_t i;

	a = print_str(c);
	path = write_file(a, strlen(a));
	conf_init(&back);
	if (conf_load_file(&back, path, err, sizeof(err)) != 0)
		fail_msg("reload: %s\n%s", err, a);
	b = print_str(&back);
	assert_string_equal(a, b);
	assert_int_equal(back.n_listen, c->n_listen);
	for (i = 0; i < c->n_listen; i++) {
		assert_int_equal(back.listen[i].len, c->listen[i].len);
		assert_memory_equal(&back.listen[i].ss, &c->listen[i].ss,
		    c->listen[i].len);
	}
	assert_int_equal(back.n_upstream, c->n_upstream);
	for (i = 0; i < c->n_upstream; i++) {
		assert_memory_equal(&back.upstream[i].addr.ss,
		    &c->upstream[i].addr.ss, c->upstream[i].addr.len);
		assert_string_equal(back.upstream[i].auth_name,
		    c->upstream[i].auth_name);
		assert_int_equal(back.upstream[i].n_pins,
		    c->upstream[i].n_pins);
		assert_memory_equal(back.upstream[i].pins,
		    c->upstream[i].pins,
		    c->upstream[i].n_pins * sizeof(c->upstream[i].pins[0]));
	}
	assert_string_equal(back.ca_file, c->ca_file);
	assert_int_equal(back.cache_size, c->cache_size);
	assert_int_equal(back.query_timeout_ms, c->query_timeout_ms);
	assert_int_equal(back.connect_timeout_ms, c->connect_timeout_ms);
	assert_int_equal(back.idle_timeout_ms, c->idle_timeout_ms);
	assert_int_equal(back.tcp_idle_timeout_ms, c->tcp_idle_timeout_ms);
	assert_int_equal(back.tcp_max_clients, c->tcp_max_clients);
	assert_int_equal(back.log_level, c->log_level);
	assert_int_equal(back.selection, c->selection);
	assert_int_equal(back.answer_timeout_ms, c->answer_timeout_ms);
	assert_int_equal(back.backoff_max_ms, c->backoff_max_ms);
	assert_int_equal(back.max_conn_lifetime_ms, c->max_conn_lifetime_ms);
	assert_int_equal(back.cache_min_ttl, c->cache_min_ttl);
	assert_int_equal(back.cache_max_ttl, c->cache_max_ttl);
	assert_int_equal(back.cache_max_negative_ttl,
	    c->cache_max_negative_ttl);
	assert_int_equal(back.cache_servfail_ttl, c->cache_servfail_ttl);
	assert_int_equal(back.prefetch, c->prefetch);
	assert_int_equal(back.serve_stale, c->serve_stale);
	assert_int_equal(back.stale_max_age, c->stale_max_age);
	assert_int_equal(back.stale_client_timeout_ms,
	    c->stale_client_timeout_ms);
	assert_int_equal(back.stale_refresh_interval,
	    c->stale_refresh_interval);
	assert_int_equal(back.local_zones, c->local_zones);
	free(a);
	free(b);
}

static void
test_print_forms(void **state)
{
	struct conf c;
	char *out;

	(void)state;
	conf_init(&c);
	set_ok(&c, "listen", "0:0:0:0:0:0:0:1@5300");
	set_ok(&c, "upstream", "2620:fe::fe@853#dns.quad9.net");
	set_ok(&c, "upstream", "9.9.9.9");
	set_ok(&c, "ca-file", "/etc/ca.pem");
	set_ok(&c, "cache-size", "1536K");
	set_ok(&c, "query-timeout", "1500ms");
	set_ok(&c, "connect-timeout", "2m");
	set_ok(&c, "idle-timeout", "60m");
	set_ok(&c, "tcp-idle-timeout", "1ms");
	set_ok(&c, "tcp-max-clients", "00010");
	set_ok(&c, "log-level", "err");
	set_ok(&c, "upstream", "192.0.2.1@8853 " PIN_A);
	set_ok(&c, "upstream", "192.0.2.2#two.example pin-sha256="
	    "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM " PIN_B);
	set_ok(&c, "upstream-selection", "round-robin");
	set_ok(&c, "answer-timeout", "2s");
	set_ok(&c, "backoff-max", "2m");
	set_ok(&c, "max-connection-lifetime", "24h");
	set_ok(&c, "cache-min-ttl", "60");
	set_ok(&c, "cache-max-ttl", "7d");
	set_ok(&c, "cache-max-negative-ttl", "5400");
	set_ok(&c, "cache-servfail-ttl", "0");
	set_ok(&c, "prefetch", "no");
	set_ok(&c, "serve-stale", "no");
	set_ok(&c, "stale-max-age", "48h");
	set_ok(&c, "stale-client-timeout", "500ms");
	set_ok(&c, "stale-refresh-interval", "61");
	set_ok(&c, "local-zones", "no");
	set_ok(&c, "http-listen", "127.0.0.1");
	set_ok(&c, "control-socket", "/run/dotproxy/control.sock");
	set_ok(&c, "lameduck", "0");
	set_ok(&c, "log-queries", "yes");
	set_ok(&c, "max-pending", "1");
	set_ok(&c, "max-pending-bytes", "100000");
	set_ok(&c, "ratelimit-per-client", "50");
	set_ok(&c, "access-control", "127.0.0.0/8 refuse");
	set_ok(&c, "access-control", "::ffff:127.0.0.2/128 allow");
	set_ok(&c, "access-control", "fd00::/8 deny");
	set_ok(&c, "workers", "3");
	set_ok(&c, "shared-cache", "redis://127.0.0.1/1");
	set_ok(&c, "shared-cache-timeout", "1500ms");
	set_ok(&c, "shared-cache-prefix", "a:b:");
	out = print_str(&c);
	assert_string_equal(out,
	    "listen ::1@5300\n"
	    "upstream 2620:fe::fe@853#dns.quad9.net\n"
	    "upstream 9.9.9.9@853\n"
	    "upstream 192.0.2.1@8853 " PIN_A "\n"
	    "upstream 192.0.2.2@853#two.example " PIN_C " " PIN_B "\n"
	    "ca-file /etc/ca.pem\n"
	    "cache-size 1536K\n"
	    "query-timeout 1500ms\n"
	    "connect-timeout 120s\n"
	    "idle-timeout 3600s\n"
	    "tcp-idle-timeout 1ms\n"
	    "tcp-max-clients 10\n"
	    "max-udp-size 1232\n"
	    "log-level err\n"
	    "upstream-selection round-robin\n"
	    "answer-timeout 2s\n"
	    "backoff-max 120s\n"
	    "max-connection-lifetime 86400s\n"
	    "cache-min-ttl 1m\n"
	    "cache-max-ttl 7d\n"
	    "cache-max-negative-ttl 90m\n"
	    "cache-servfail-ttl 0s\n"
	    "prefetch no\n"
	    "serve-stale no\n"
	    "stale-max-age 2d\n"
	    "stale-client-timeout 500ms\n"
	    "stale-refresh-interval 61s\n"
	    "local-zones no\n"
	    "http-listen 127.0.0.1@9253\n"
	    "control-socket /run/dotproxy/control.sock\n"
	    "lameduck 0s\n"
	    "log-queries yes\n"
	    "max-pending 1\n"
	    "max-pending-bytes 100000\n"
	    "ratelimit-per-client 50\n"
	    "access-control 127.0.0.0/8 refuse\n"
	    "access-control 127.0.0.2/32 allow\n"
	    "access-control fd00::/8 deny\n"
	    "workers 3\n"
	    "shared-cache redis://127.0.0.1/1\n"
	    "shared-cache-timeout 1500ms\n"
	    "shared-cache-prefix a:b:\n");
	free(out);
	round_trip(&c);

	conf_init(&c);
	set_ok(&c, "cache-size", "65537");
	set_ok(&c, "log-level", "warn");
	out = print_str(&c);
	assert_non_null(strstr(out, "cache-size 65537\n"));
	assert_non_null(strstr(out, "\nlog-level warn\n"));
	free(out);
	round_trip(&c);

	conf_init(&c);
	set_ok(&c, "cache-size", "2048M");
	set_ok(&c, "log-level", "debug");
	set_ok(&c, "upstream-selection", "ordered");
	set_ok(&c, "cache-max-ttl", "86401");
	set_ok(&c, "stale-max-age", "3599");
	set_ok(&c, "cache-max-negative-ttl", "1d");
	out = print_str(&c);
	assert_non_null(strstr(out, "cache-size 2G\n"));
	assert_non_null(strstr(out, "\nlog-level debug\n"));
	assert_non_null(strstr(out, "\nupstream-selection ordered\n"));
	assert_non_null(strstr(out, "\ncache-max-ttl 86401s\n"));
	assert_non_null(strstr(out, "\nstale-max-age 3599s\n"));
	assert_non_null(strstr(out, "\ncache-max-negative-ttl 1d\n"));
	free(out);
	round_trip(&c);
}

/* shared-cache: the URL forms, and what each refusal says. */
static void
test_shared_cache_url(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX];

	(void)state;
	conf_init(&c);
	assert_int_equal(c.shared_cache.set, 0);
	assert_string_equal(c.shared_cache_prefix, "dotproxy:");
	assert_int_equal(c.shared_cache_prefix_len, 9);
	assert_int_equal(c.shared_cache_timeout_ms, 20);
	assert_int_equal(conf_set(&c, "shared-cache", "redis://10.1.2.3",
	    "t", err, sizeof(err)), 0);
	assert_true(c.shared_cache.set && !c.shared_cache.is_unix);
	assert_string_equal(c.shared_cache.host, "10.1.2.3");
	assert_int_equal(c.shared_cache.port, 6379);
	assert_int_equal(c.shared_cache.db, 0);
	assert_int_equal(conf_set(&c, "shared-cache",
	    "redis://[fd00::1]:7000/15", "t", err, sizeof(err)), 0);
	assert_string_equal(c.shared_cache.host, "fd00::1");
	assert_int_equal(c.shared_cache.port, 7000);
	assert_int_equal(c.shared_cache.db, 15);
	assert_int_equal(conf_set(&c, "shared-cache", "redis://127.0.0.1/4",
	    "t", err, sizeof(err)), 0);
	assert_int_equal(c.shared_cache.port, 6379);
	assert_int_equal(c.shared_cache.db, 4);
	assert_int_equal(conf_set(&c, "shared-cache",
	    "unix:/run/redis.sock?db=2", "t", err, sizeof(err)), 0);
	assert_true(c.shared_cache.is_unix);
	assert_string_equal(c.shared_cache.path, "/run/redis.sock");
	assert_int_equal(c.shared_cache.db, 2);
	assert_string_equal(c.shared_cache.url, "unix:/run/redis.sock?db=2");
	assert_int_equal(conf_set(&c, "shared-cache-prefix", "x", "t", err,
	    sizeof(err)), 0);
	assert_int_equal(c.shared_cache_prefix_len, 1);

	expect_set_error("shared-cache", "redis://cache.local",
	    "shared-cache: \"cache.local\" is not an IP address (a host name "
	    "would need the DNS this server provides)");
	expect_set_error("shared-cache", "redis://127.0.0.1:99999",
	    "shared-cache: bad port (1-65535)");
	expect_set_error("shared-cache", "redis://127.0.0.1:",
	    "shared-cache: bad port (1-65535)");
	expect_set_error("shared-cache", "redis://127.0.0.1/x",
	    "shared-cache: \"x\" is not a database number (0-65535)");
	expect_set_error("shared-cache", "redis://[::1",
	    "shared-cache: \"[::1\" is not redis://IP[:port][/db]");
	expect_set_error("shared-cache", "redis://",
	    "shared-cache: \"\" is not redis://IP[:port][/db]");
	expect_set_error("shared-cache", "unix:",
	    "shared-cache: unix: needs an absolute path (under 1024 "
	    "characters)");
	expect_set_error("shared-cache", "unix:/r.sock?db=-1",
	    "shared-cache: \"-1\" is not a database number (0-65535)");
	expect_set_error("shared-cache", "tcp://127.0.0.1",
	    "shared-cache: \"tcp://127.0.0.1\" is neither "
	    "redis://IP[:port][/db] nor unix:/path");
	expect_set_error("shared-cache-prefix",
	    "0123456789012345678901234567890123456789012345678901234567890123x",
	    "shared-cache-prefix: longer than 64 characters");
	expect_set_error("shared-cache-timeout", "0",
	    "shared-cache-timeout: \"0\" is out of range (1ms to 10s)");
}

static void
test_round_trip(void **state)
{
	struct conf c;
	char err[CONF_ERR_MAX], v[640];
	size_t i;

	(void)state;
	conf_init(&c);
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	round_trip(&c);

	/* The longest upstream line: IPv6, 253-character name, 4 pins. */
	conf_init(&c);
	memset(v, 0, sizeof(v));
	strcpy(v, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff@65535#");
	memset(v + strlen(v), 'c', 253);
	v[46 + 63] = v[46 + 127] = v[46 + 191] = '.';
	strcat(v, " " PIN_A " " PIN_B " " PIN_C " " PIN_D);
	set_ok(&c, "upstream", v);
	assert_int_equal(strlen(c.upstream[0].auth_name), 253);
	assert_int_equal(c.upstream[0].n_pins, 4);
	round_trip(&c);

	/* Full lists, every kind of address. */
	conf_init(&c);
	for (i = 0; i < CONF_MAX_LISTEN; i++) {
		snprintf(v, sizeof(v), i % 2 ? "127.0.0.%zu@%zu" :
		    "fd00::%zx@%zu", i + 1, 1 + i * 2000);
		set_ok(&c, "listen", v);
	}
	for (i = 0; i < CONF_MAX_UPSTREAM; i++) {
		snprintf(v, sizeof(v), i % 2 ? "192.0.2.%zu#a%zu.example" :
		    "2001:db8::%zx@8853#b%zu.EXAMPLE", i + 1, i);
		/* Some with pins, some with the most pins. */
		if (i % 3 == 1)
			strcat(v, " " PIN_C);
		else if (i % 3 == 2)
			strcat(v, " " PIN_A " " PIN_B " " PIN_C " " PIN_D);
		set_ok(&c, "upstream", v);
	}
	set_ok(&c, "cache-size", "64G");
	set_ok(&c, "query-timeout", "59999ms");
	set_ok(&c, "tcp-max-clients", "65535");
	set_ok(&c, "upstream-selection", "round-robin");
	set_ok(&c, "answer-timeout", "1ms");
	set_ok(&c, "backoff-max", "3599999ms");
	set_ok(&c, "max-connection-lifetime", "1439m");
	set_ok(&c, "cache-min-ttl", "604800");
	set_ok(&c, "cache-max-ttl", "604800");
	set_ok(&c, "cache-max-negative-ttl", "1");
	set_ok(&c, "cache-servfail-ttl", "5m");
	set_ok(&c, "prefetch", "no");
	set_ok(&c, "serve-stale", "no");
	set_ok(&c, "stale-max-age", "0");
	set_ok(&c, "stale-client-timeout", "1001ms");
	set_ok(&c, "stale-refresh-interval", "3601");
	set_ok(&c, "local-zones", "no");
	assert_int_equal(conf_finish(&c, err, sizeof(err)), 0);
	round_trip(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_defaults),
		cmocka_unit_test(test_finish_defaults),
		cmocka_unit_test(test_shared_cache_url),
		cmocka_unit_test(test_finish_keeps_given),
		cmocka_unit_test(test_finish_no_auth_name),
		cmocka_unit_test(test_finish_ttl_order),
		cmocka_unit_test(test_parse_addr_good),
		cmocka_unit_test(test_parse_addr_bad),
		cmocka_unit_test(test_addr_str),
		cmocka_unit_test(test_parse_upstream_good),
		cmocka_unit_test(test_parse_upstream_bad),
		cmocka_unit_test(test_parse_upstream_pins),
		cmocka_unit_test(test_parse_upstream_pins_bad),
		cmocka_unit_test(test_set_listen),
		cmocka_unit_test(test_set_upstream),
		cmocka_unit_test(test_set_ca_file),
		cmocka_unit_test(test_set_cache_size),
		cmocka_unit_test(test_set_durations),
		cmocka_unit_test(test_set_new_durations),
		cmocka_unit_test(test_set_seconds),
		cmocka_unit_test(test_set_selection),
		cmocka_unit_test(test_set_bools),
		cmocka_unit_test(test_set_tcp_max_clients),
		cmocka_unit_test(test_set_max_udp_size),
		cmocka_unit_test(test_set_log_level),
		cmocka_unit_test(test_set_unknown_key),
		cmocka_unit_test(test_set_last_wins),
		cmocka_unit_test(test_load_syntax),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_pins),
		cmocka_unit_test(test_load_long_lines),
		cmocka_unit_test(test_load_nul_byte),
		cmocka_unit_test(test_load_unreadable),
		cmocka_unit_test(test_load_too_many_listen),
		cmocka_unit_test(test_err_truncation),
		cmocka_unit_test(test_print_forms),
		cmocka_unit_test(test_round_trip),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
