/* conf.c: configuration text -> struct conf value, with file:line errors.
 *
 * Every setting goes through conf_set(), whether it comes from a file line or
 * from a command-line option, so both are checked by the same code and give
 * the same messages ("where: key: message"). Parsing is by hand and bounded:
 * numbers are read digit by digit and saturate instead of overflowing, lines
 * are at most CONF_LINE_MAX characters, and nothing is written past its
 * buffer. Nothing here allocates.
 *
 * A value is one word, with two exceptions: an upstream's address may be
 * followed by "pin-sha256=BASE64" words, so for that key the value is the
 * rest of the line and conf_parse_upstream takes it apart (the same text
 * comes whole from "-u" on the command line); and an access-control
 * line's value is its prefix and action, which acl_rule_parse takes
 * apart. '#' starts a comment only at
 * the start of a word, so that the "#name" of an upstream
 * (1.1.1.1@853#cloudflare-dns.com) is part of the value while
 * "listen ::1  # loopback" still has a comment. The same rule is why
 * conf_set refuses a ca-file with white space or a leading '#': conf_print
 * must write something conf_load_file reads back to the same value.
 *
 * The scalar keys are one table (keys[]), in the order conf_print writes
 * them, so that a key is known, set and printed from one line of it.
 *
 * A later setting of a single-valued key replaces an earlier one, which is
 * what lets command-line options override the file through the same setter.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"
#include "conf.h"
#include "log.h"

#define CONF_LINE_MAX 1023

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define CACHE_SIZE_MIN (64 * KIB)
#define CACHE_SIZE_MAX (64 * GIB)

#define SECOND_MS 1000ULL
#define MINUTE_MS (60 * SECOND_MS)
#define HOUR_MS (60 * MINUTE_MS)

/* Times in seconds (TTLs and the like) reach a week at most: no DNS data
 * should be trusted for longer without asking again. */
#define SECS_MAX (7ULL * 86400)

/* "pin-sha256=" and the 32 bytes of a SHA-256 in base64 with padding. */
#define PIN_PREFIX "pin-sha256="
#define PIN_LEN 32
#define PIN_B64_LEN 44

/* A quoted value in a message is cut here so that a 1000-character line
 * does not push the useful part of the message out of err. */
#define QUOTE_MAX 64

static const char *const level_names[] = { "err", "warn", "info", "debug" };

static int
is_space(int ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' ||
	    ch == '\f' || ch == '\v';
}

static int
is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

static int
is_alpha(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* Copy s into buf for a message: at most QUOTE_MAX characters (then "..."),
 * non-printable bytes shown as '?' so that a binary file gives a readable
 * error. */
static const char *
quote(const char *s, char *buf, size_t cap)
{
	size_t i, n = 0;

	for (i = 0; s[i] != '\0' && n + 4 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (i == QUOTE_MAX) {
			memcpy(buf + n, "...", 3);
			n += 3;
			break;
		}
		buf[n++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	buf[n] = '\0';
	return buf;
}

/* Read an unsigned decimal number at the start of s: at least one digit, no
 * sign, no white space. *end is set after the last digit. A number too large
 * saturates at NUM_SAT, so that "99999999999999999999" is reported by the
 * caller's range check rather than as not a number. Returns 0, or -1 when s
 * does not start with a digit. */
#define NUM_SAT 1000000000000000000ULL

static int
parse_uint(const char *s, const char **end, unsigned long long *out)
{
	unsigned long long v = 0;
	const char *p = s;

	if (!is_digit((unsigned char)*p))
		return -1;
	for (; is_digit((unsigned char)*p); p++) {
		if (v >= NUM_SAT / 10)
			v = NUM_SAT;
		else
			v = v * 10 + (unsigned)(*p - '0');
	}
	*end = p;
	*out = v;
	return 0;
}

/* Address and port from the first len bytes of s; the work behind
 * conf_parse_addr, which conf_parse_upstream also calls on the part before
 * the '#' without copying it. */
static int
parse_addr_n(const char *s, size_t len, unsigned default_port,
    struct conf_addr *a, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 1];
	char shown[QUOTE_MAX + 2];
	char q[QUOTE_MAX + 8];
	const char *at = NULL, *end;
	size_t hlen, i;
	unsigned long long port = default_port;
	struct conf_addr tmp;
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;

	/* Split at the last '@': an IPv6 address has none, but the last one
	 * keeps the rule obvious. */
	for (i = len; i > 0; i--) {
		if (s[i - 1] == '@') {
			at = s + i - 1;
			break;
		}
	}
	hlen = at != NULL ? (size_t)(at - s) : len;
	if (hlen == 0) {
		snprintf(err, errlen, "missing address");
		return -1;
	}
	memset(&tmp, 0, sizeof(tmp));
	sin = (struct sockaddr_in *)&tmp.ss;
	sin6 = (struct sockaddr_in6 *)&tmp.ss;
	if (hlen < sizeof(host)) {
		memcpy(host, s, hlen);
		host[hlen] = '\0';
	} else {
		host[0] = '\0';
	}
	if (host[0] != '\0' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		tmp.len = sizeof(*sin);
	} else if (host[0] != '\0' &&
	    inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		tmp.len = sizeof(*sin6);
	} else {
		/* One byte more than quote() shows, so that it adds "...". */
		i = hlen < sizeof(shown) - 1 ? hlen : sizeof(shown) - 1;
		memcpy(shown, s, i);
		shown[i] = '\0';
		snprintf(err, errlen, "\"%s\" is not an IPv4 or IPv6 address",
		    quote(shown, q, sizeof(q)));
		return -1;
	}

	if (at != NULL) {
		if (at + 1 == s + len) {
			snprintf(err, errlen, "missing port after \"@\"");
			return -1;
		}
		if (parse_uint(at + 1, &end, &port) < 0 || end != s + len) {
			i = (size_t)(s + len - (at + 1));
			if (i > sizeof(shown) - 1)
				i = sizeof(shown) - 1;
			memcpy(shown, at + 1, i);
			shown[i] = '\0';
			snprintf(err, errlen, "\"%s\" is not a port number",
			    quote(shown, q, sizeof(q)));
			return -1;
		}
		if (port < 1 || port > 65535) {
			snprintf(err, errlen, "port must be 1-65535");
			return -1;
		}
	}
	if (tmp.ss.ss_family == AF_INET)
		sin->sin_port = htons((uint16_t)port);
	else
		sin6->sin6_port = htons((uint16_t)port);
	*a = tmp;
	return 0;
}

int
conf_parse_addr(const char *s, unsigned default_port, struct conf_addr *a,
    char *err, size_t errlen)
{
	return parse_addr_n(s, strlen(s), default_port, a, err, errlen);
}

/* A DNS hostname as a certificate would carry it: letters, digits and
 * hyphens in dot-separated labels of 1..63 characters, no hyphen at either
 * end of a label, 253 characters at most. */
static int
check_name(const char *name, char *err, size_t errlen)
{
	char q[QUOTE_MAX + 8];
	size_t len = strlen(name), label = 0, i;

	if (len == 0) {
		snprintf(err, errlen, "missing name after \"#\"");
		return -1;
	}
	if (len > 253) {
		snprintf(err, errlen, "name \"%s\" is longer than 253 characters",
		    quote(name, q, sizeof(q)));
		return -1;
	}
	for (i = 0; i <= len; i++) {
		unsigned char ch = (unsigned char)name[i];

		if (ch == '.' || ch == '\0') {
			if (label == 0) {
				snprintf(err, errlen,
				    "name \"%s\" has an empty label",
				    quote(name, q, sizeof(q)));
				return -1;
			}
			if (name[i - 1] == '-') {
				snprintf(err, errlen, "name \"%s\": a label "
				    "cannot end with '-'",
				    quote(name, q, sizeof(q)));
				return -1;
			}
			label = 0;
			continue;
		}
		if (!is_alpha(ch) && !is_digit(ch) && ch != '-') {
			snprintf(err, errlen, "name \"%s\" is not a host name "
			    "(letters, digits, '-' and '.' only)",
			    quote(name, q, sizeof(q)));
			return -1;
		}
		if (ch == '-' && label == 0) {
			snprintf(err, errlen, "name \"%s\": a label cannot "
			    "start with '-'", quote(name, q, sizeof(q)));
			return -1;
		}
		if (++label > 63) {
			snprintf(err, errlen, "name \"%s\" has a label longer "
			    "than 63 characters", quote(name, q, sizeof(q)));
			return -1;
		}
	}
	return 0;
}

/* Length of the white space, or of the word, at the start of s. */
static size_t
span_space(const char *s)
{
	size_t n = 0;

	while (is_space((unsigned char)s[n]))
		n++;
	return n;
}

static size_t
span_word(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0' && !is_space((unsigned char)s[n]))
		n++;
	return n;
}

/* quote() for the len bytes at s, which need not end there. One byte more
 * than quote() shows is copied, so that a long word gets its "...". */
static const char *
quote_n(const char *s, size_t len, char *buf, size_t cap)
{
	char shown[QUOTE_MAX + 2];

	if (len > sizeof(shown) - 1)
		len = sizeof(shown) - 1;
	memcpy(shown, s, len);
	shown[len] = '\0';
	return quote(shown, buf, cap);
}

static const char b64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 digit (RFC 4648 section 4, the standard alphabet that
 * RFC 7858 pins use), or -1. */
static int
b64_value(int ch)
{
	const char *p;

	if (ch == '\0')
		return -1;
	p = strchr(b64_digits, ch);
	return p != NULL ? (int)(p - b64_digits) : -1;
}

/* Decode the len bytes at s, the base64 of exactly PIN_LEN bytes, into out.
 * The padding '=' may be left off; nothing else is lenient: no white space,
 * no other alphabet, and the 2 bits past the 32nd byte must be zero, so that
 * conf_print writes back the text that was read. Returns 0 or -1; out may
 * be partly written on failure. */
static int
pin_decode(const char *s, size_t len, unsigned char out[PIN_LEN])
{
	unsigned acc = 0;
	size_t i, n = 0;
	int bits = 0, v;

	if (len == PIN_B64_LEN && s[len - 1] == '=')
		len--;
	if (len != PIN_B64_LEN - 1)
		return -1;
	/* 43 digits are 258 bits: 32 whole bytes, so n stays in bounds. */
	for (i = 0; i < len; i++) {
		v = b64_value((unsigned char)s[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1U << bits) - 1;
		}
	}
	return n == PIN_LEN && acc == 0 ? 0 : -1;
}

/* The padded base64 of a pin, PIN_B64_LEN characters and a NUL. */
static void
pin_encode(const unsigned char in[PIN_LEN], char out[PIN_B64_LEN + 1])
{
	unsigned long v;
	size_t i, n = 0;

	for (i = 0; i + 3 <= PIN_LEN; i += 3) {
		v = (unsigned long)in[i] << 16 |
		    (unsigned long)in[i + 1] << 8 | in[i + 2];
		out[n++] = b64_digits[v >> 18 & 63];
		out[n++] = b64_digits[v >> 12 & 63];
		out[n++] = b64_digits[v >> 6 & 63];
		out[n++] = b64_digits[v & 63];
	}
	/* 32 = 10 * 3 + 2: the last two bytes make three digits and a '='. */
	v = (unsigned long)in[30] << 16 | (unsigned long)in[31] << 8;
	out[n++] = b64_digits[v >> 18 & 63];
	out[n++] = b64_digits[v >> 12 & 63];
	out[n++] = b64_digits[v >> 6 & 63];
	out[n++] = '=';
	out[n] = '\0';
}

int
conf_parse_upstream(const char *s, struct conf_upstream *u, char *err,
    size_t errlen)
{
	static const size_t plen = sizeof(PIN_PREFIX) - 1;
	char name[256];
	char q[QUOTE_MAX + 8];
	const char *p, *word, *hash;
	size_t len, nlen;
	struct conf_upstream tmp;

	memset(&tmp, 0, sizeof(tmp));
	/* First word: addr[@port][#name]. */
	word = s + span_space(s);
	len = span_word(word);
	p = word + len;
	hash = memchr(word, '#', len);
	if (parse_addr_n(word, hash != NULL ? (size_t)(hash - word) : len,
	    CONF_DEFAULT_UPSTREAM_PORT, &tmp.addr, err, errlen) < 0)
		return -1;
	if (hash != NULL) {
		/* A name longer than 254 is cut at 254: check_name still
		 * sees that it is too long. */
		nlen = (size_t)(word + len - (hash + 1));
		if (nlen > sizeof(name) - 2)
			nlen = sizeof(name) - 2;
		memcpy(name, hash + 1, nlen);
		name[nlen] = '\0';
		if (check_name(name, err, errlen) < 0)
			return -1;
		/* check_name bounds the length to 253 < sizeof(auth_name). */
		memcpy(tmp.auth_name, name, nlen + 1);
	}
	/* Then the pins, each a word of its own. */
	for (;;) {
		word = p + span_space(p);
		if (*word == '\0')
			break;
		len = span_word(word);
		p = word + len;
		if (len < plen || memcmp(word, PIN_PREFIX, plen) != 0) {
			snprintf(err, errlen, "unexpected \"%s\" after the "
			    "address (only pin-sha256=... may follow)",
			    quote_n(word, len, q, sizeof(q)));
			return -1;
		}
		if (tmp.n_pins == CONF_MAX_PINS) {
			snprintf(err, errlen, "too many pins (max %d)",
			    CONF_MAX_PINS);
			return -1;
		}
		if (pin_decode(word + plen, len - plen,
		    tmp.pins[tmp.n_pins]) < 0) {
			snprintf(err, errlen, "pin-sha256: \"%s\" is not the "
			    "base64 of 32 bytes",
			    quote_n(word + plen, len - plen, q, sizeof(q)));
			return -1;
		}
		tmp.n_pins++;
	}
	*u = tmp;
	return 0;
}

/* SIZE = digits with an optional K, M or G (powers of 1024). A size too
 * large to compute saturates: the caller's range check reports it. */
static int
parse_size(const char *s, unsigned long long *out)
{
	unsigned long long v, mult = 1;
	const char *end;

	if (parse_uint(s, &end, &v) < 0)
		return -1;
	if (*end == 'K' || *end == 'k')
		mult = KIB;
	else if (*end == 'M' || *end == 'm')
		mult = MIB;
	else if (*end == 'G' || *end == 'g')
		mult = GIB;
	else if (*end != '\0')
		return -1;
	if (*end != '\0' && end[1] != '\0')
		return -1;
	*out = v > NUM_SAT / mult ? NUM_SAT : v * mult;
	return 0;
}

/* A number followed by one of a table's unit suffixes. */
struct unit {
	const char *suffix;
	unsigned long long mult;
};

/* DURATION: milliseconds; SECONDS: whole seconds, because that is the
 * unit of a DNS TTL. Bare digits are seconds in both. */
static const struct unit duration_units[] = {
	{ "", SECOND_MS }, { "s", SECOND_MS }, { "ms", 1 },
	{ "m", MINUTE_MS }, { "h", HOUR_MS }, { NULL, 0 },
};
static const struct unit seconds_units[] = {
	{ "", 1 }, { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 },
	{ NULL, 0 },
};
static const struct unit count_units[] = {
	{ "", 1 }, { NULL, 0 },
};

/* Parse digits with a suffix from units into *out. Saturates like
 * parse_size. */
static int
parse_units(const char *s, const struct unit *units, unsigned long long *out)
{
	unsigned long long v;
	const char *end;

	if (parse_uint(s, &end, &v) < 0)
		return -1;
	for (; units->suffix != NULL; units++) {
		if (strcmp(end, units->suffix) == 0) {
			*out = v > NUM_SAT / units->mult ? NUM_SAT :
			    v * units->mult;
			return 0;
		}
	}
	return -1;
}

/* Seconds in the largest unit that holds them exactly: "0s", "90s", "5m",
 * "1h", "1d". What conf_print writes and conf_finish's messages show. */
static void
seconds_str(unsigned v, char *buf, size_t cap)
{
	if (v != 0 && v % 86400 == 0)
		snprintf(buf, cap, "%ud", v / 86400);
	else if (v != 0 && v % 3600 == 0)
		snprintf(buf, cap, "%uh", v / 3600);
	else if (v != 0 && v % 60 == 0)
		snprintf(buf, cap, "%um", v / 60);
	else
		snprintf(buf, cap, "%us", v);
}

/* The scalar keys, in conf_print's order. The existing keys come first and
 * print as they always have; new keys are added at the end. */
enum key_kind {
	KEY_LISTEN,
	KEY_UPSTREAM,
	KEY_PATH,        /* char[CONF_MAX_PATH] at off; "" = unset */
	KEY_ADDR,        /* struct conf_addr at off; len 0 = unset */
	KEY_SIZE,
	KEY_DURATION,    /* unsigned, milliseconds */
	KEY_SECONDS,     /* unsigned, seconds */
	KEY_COUNT,       /* unsigned */
	KEY_LOG_LEVEL,
	KEY_SELECTION,
	KEY_BOOL,        /* int, 0 or 1 */
	KEY_NAME,        /* char[CONF_MAX_NAME], "" = unset */
	KEY_BYTES,       /* size_t at off, bytes, in [min, max] */
	KEY_ACL,         /* access-control: repeats, acl.c parses */
	KEY_TEXT,        /* char[CONF_MAX_TEXT], "" = unset */
	KEY_REDIS,       /* shared-cache: struct conf_redis */
	KEY_PREFIX,      /* shared-cache-prefix */
};

struct key_def {
	const char *name;
	enum key_kind kind;
	size_t off;                /* of the field, for the unsigned and int kinds */
	unsigned long long min, max; /* in the field's unit */
	const char *range;         /* min and max as the messages show them */
};

#define FIELD(f) offsetof(struct conf, f)
#define DURATION_KEY(name, f, min, max, range) \
	{ name, KEY_DURATION, FIELD(f), min, max, range }
#define SECONDS_KEY(name, f, min, max, range) \
	{ name, KEY_SECONDS, FIELD(f), min, max, range }
#define BOOL_KEY(name, f) { name, KEY_BOOL, FIELD(f), 0, 1, NULL }
#define NAME_KEY(name, f) { name, KEY_NAME, FIELD(f), 0, 0, NULL }
#define TEXT_KEY(name, f) { name, KEY_TEXT, FIELD(f), 0, 0, NULL }

static const struct key_def keys[] = {
	{ "listen", KEY_LISTEN, 0, 0, 0, NULL },
	{ "upstream", KEY_UPSTREAM, 0, 0, 0, NULL },
	{ "ca-file", KEY_PATH, FIELD(ca_file), 0, 0, NULL },
	{ "cache-size", KEY_SIZE, 0, 0, 0, NULL },
	DURATION_KEY("query-timeout", query_timeout_ms, 1, HOUR_MS,
	    "1ms to 60m"),
	DURATION_KEY("connect-timeout", connect_timeout_ms, 1, HOUR_MS,
	    "1ms to 60m"),
	DURATION_KEY("idle-timeout", idle_timeout_ms, 1, HOUR_MS,
	    "1ms to 60m"),
	DURATION_KEY("tcp-idle-timeout", tcp_idle_timeout_ms, 1, HOUR_MS,
	    "1ms to 60m"),
	{ "tcp-max-clients", KEY_COUNT, FIELD(tcp_max_clients), 1, 65535,
	    "1-65535" },
	/* RFC 6891 6.2.5: below 512 is no payload; above 4096 fragments. */
	{ "max-udp-size", KEY_COUNT, FIELD(max_udp_size), 512, 4096,
	    "512-4096" },
	{ "log-level", KEY_LOG_LEVEL, 0, 0, 0, NULL },
	{ "upstream-selection", KEY_SELECTION, 0, 0, 0, NULL },
	DURATION_KEY("answer-timeout", answer_timeout_ms, 1, HOUR_MS,
	    "1ms to 60m"),
	/* Below a second, a dead upstream would be hammered. */
	DURATION_KEY("backoff-max", backoff_max_ms, SECOND_MS, HOUR_MS,
	    "1s to 60m"),
	DURATION_KEY("max-connection-lifetime", max_conn_lifetime_ms,
	    SECOND_MS, 24 * HOUR_MS, "1s to 24h"),
	SECONDS_KEY("cache-min-ttl", cache_min_ttl, 0, SECS_MAX, "0 to 7d"),
	SECONDS_KEY("cache-max-ttl", cache_max_ttl, 0, SECS_MAX, "0 to 7d"),
	SECONDS_KEY("cache-max-negative-ttl", cache_max_negative_ttl, 0,
	    SECS_MAX, "0 to 7d"),
	/* RFC 2308 section 7.1: a server failure MUST NOT be cached for
	 * longer than five minutes. */
	SECONDS_KEY("cache-servfail-ttl", cache_servfail_ttl, 0, 300,
	    "0 to 5m"),
	BOOL_KEY("prefetch", prefetch),
	BOOL_KEY("serve-stale", serve_stale),
	SECONDS_KEY("stale-max-age", stale_max_age, 0, SECS_MAX, "0 to 7d"),
	DURATION_KEY("stale-client-timeout", stale_client_timeout_ms, 1,
	    HOUR_MS, "1ms to 60m"),
	/* 0 would retry a dead upstream for every client of a stale name. */
	SECONDS_KEY("stale-refresh-interval", stale_refresh_interval, 1,
	    SECS_MAX, "1s to 7d"),
	BOOL_KEY("local-zones", local_zones),
	{ "http-listen", KEY_ADDR, FIELD(http_listen), CONF_DEFAULT_HTTP_PORT,
	    0, NULL },
	{ "control-socket", KEY_PATH, FIELD(control_socket), 0, 0, NULL },
	/* 0 skips it: listeners close at once on SIGTERM. */
	DURATION_KEY("lameduck", lameduck_ms, 0, HOUR_MS, "0 to 60m"),
	BOOL_KEY("log-queries", log_queries),
	NAME_KEY("user", user),
	NAME_KEY("group", group),
	{ "max-pending", KEY_COUNT, FIELD(max_pending), 1, 1000000,
	    "1-1000000" },
	{ "max-pending-bytes", KEY_BYTES, FIELD(max_pending_bytes), 64 * KIB,
	    64 * GIB, "64K to 64G" },
	{ "ratelimit-per-client", KEY_COUNT, FIELD(ratelimit_per_client), 0,
	    1000000, "0-1000000" },
	{ "access-control", KEY_ACL, 0, 0, 0, NULL },
	/* What CH TXT id.server / hostname.bind and version.bind /
	 * version.server answer; unset, they are REFUSED. */
	TEXT_KEY("identity", identity),
	TEXT_KEY("version", version),
	/* 0: one per CPU this process may run on (main.c decides). */
	{ "workers", KEY_COUNT, FIELD(workers), 0, 64, "0-64" },
	{ "shared-cache", KEY_REDIS, 0, 0, 0, NULL },
	/* Each Redis request; past it the answer goes upstream. A second
	 * is already longer than any upstream should take. */
	DURATION_KEY("shared-cache-timeout", shared_cache_timeout_ms, 1,
	    10 * SECOND_MS, "1ms to 10s"),
	{ "shared-cache-prefix", KEY_PREFIX, 0, 0, 0, NULL },
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const selection_names[] = {
	[CONF_SELECT_FASTEST] = "fastest",
	[CONF_SELECT_ROUND_ROBIN] = "round-robin",
	[CONF_SELECT_ORDERED] = "ordered",
};

#define N_SELECTIONS (sizeof(selection_names) / sizeof(selection_names[0]))

static unsigned *
uint_field(struct conf *c, const struct key_def *k)
{
	return (unsigned *)(void *)((char *)c + k->off);
}

static const unsigned *
uint_field_const(const struct conf *c, const struct key_def *k)
{
	return (const unsigned *)(const void *)((const char *)c + k->off);
}

static int *
int_field(struct conf *c, const struct key_def *k)
{
	return (int *)(void *)((char *)c + k->off);
}

static int
int_field_value(const struct conf *c, const struct key_def *k)
{
	return *(const int *)(const void *)((const char *)c + k->off);
}

static char *
name_field(struct conf *c, const struct key_def *k)
{
	return (char *)c + k->off;
}

static const char *
name_field_value(const struct conf *c, const struct key_def *k)
{
	return (const char *)c + k->off;
}

static const struct key_def *
find_key(const char *name)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++) {
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	}
	return NULL;
}

static int
set_listen(struct conf *c, const char *value, char *msg, size_t msglen)
{
	struct conf_addr a;
	char buf[64];
	size_t i;

	if (c->n_listen >= CONF_MAX_LISTEN) {
		snprintf(msg, msglen, "too many (max %d)", CONF_MAX_LISTEN);
		return -1;
	}
	if (conf_parse_addr(value, CONF_DEFAULT_LISTEN_PORT, &a, msg,
	    msglen) < 0)
		return -1;
	/* The same address twice would fail later at bind time with a less
	 * helpful message. */
	for (i = 0; i < c->n_listen; i++) {
		if (c->listen[i].len == a.len &&
		    memcmp(&c->listen[i].ss, &a.ss, a.len) == 0) {
			conf_addr_str(&a, buf, sizeof(buf));
			snprintf(msg, msglen, "%s given twice", buf);
			return -1;
		}
	}
	c->listen[c->n_listen++] = a;
	return 0;
}

static int
set_upstream(struct conf *c, const char *value, char *msg, size_t msglen)
{
	struct conf_upstream u;
	char buf[64];
	size_t i;

	if (c->n_upstream >= CONF_MAX_UPSTREAM) {
		snprintf(msg, msglen, "too many (max %d)", CONF_MAX_UPSTREAM);
		return -1;
	}
	if (conf_parse_upstream(value, &u, msg, msglen) < 0)
		return -1;
	for (i = 0; i < c->n_upstream; i++) {
		if (c->upstream[i].addr.len == u.addr.len &&
		    memcmp(&c->upstream[i].addr.ss, &u.addr.ss,
		    u.addr.len) == 0) {
			conf_addr_str(&u.addr, buf, sizeof(buf));
			snprintf(msg, msglen, "%s given twice", buf);
			return -1;
		}
	}
	c->upstream[c->n_upstream++] = u;
	return 0;
}

static char *
path_field(struct conf *c, const struct key_def *k)
{
	return (char *)c + k->off;
}

static const char *
path_field_const(const struct conf *c, const struct key_def *k)
{
	return (const char *)c + k->off;
}

static int
set_path(struct conf *c, const struct key_def *k, const char *value,
    char *msg, size_t msglen)
{
	size_t len = strlen(value), i;

	if (len >= CONF_MAX_PATH) {
		snprintf(msg, msglen, "path longer than %d characters",
		    CONF_MAX_PATH - 1);
		return -1;
	}
	/* Only reachable from the command line: a file line cannot carry
	 * these, and conf_print could not write them back. */
	for (i = 0; i < len; i++) {
		if (is_space((unsigned char)value[i])) {
			snprintf(msg, msglen, "path must not contain white "
			    "space");
			return -1;
		}
	}
	if (value[0] == '#') {
		snprintf(msg, msglen, "path must not start with '#'");
		return -1;
	}
	memcpy(path_field(c, k), value, len + 1);
	return 0;
}

/* A single optional address (http-listen); k->min is its default port. */
static int
set_addr(struct conf *c, const struct key_def *k, const char *value,
    char *msg, size_t msglen)
{
	struct conf_addr *a = (struct conf_addr *)(void *)((char *)c + k->off);

	return conf_parse_addr(value, (unsigned)k->min, a, msg, msglen);
}

/* A user or group name as getpwnam(3) and getgrnam(3) take it. The
 * characters refused are those no account database allows (':' separates
 * the fields of /etc/passwd, '/' and white space would not survive a
 * file), a leading '-' (an option to the tools) and a leading '#' (a
 * comment when conf_print's output is read back). Whether the name exists
 * is checked at start, not here: -n checks the file, not the host. */
static int
set_name(struct conf *c, const struct key_def *k, const char *value,
    char *msg, size_t msglen)
{
	char q[QUOTE_MAX + 8];
	size_t len = strlen(value), i;

	if (len >= CONF_MAX_NAME) {
		snprintf(msg, msglen, "name longer than %d characters",
		    CONF_MAX_NAME - 1);
		return -1;
	}
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)value[i];

		if (ch <= 0x20 || ch >= 0x7f || ch == ':' || ch == '/') {
			snprintf(msg, msglen, "\"%s\" is not a user or group "
			    "name (no white space, ':' or '/')",
			    quote(value, q, sizeof(q)));
			return -1;
		}
	}
	if (value[0] == '-' || value[0] == '#') {
		snprintf(msg, msglen, "\"%s\" is not a user or group name "
		    "(it cannot start with '%c')", quote(value, q, sizeof(q)),
		    value[0]);
		return -1;
	}
	memcpy(name_field(c, k), value, len + 1);
	return 0;
}

/* One word of printable ASCII without white space, at most max bytes, not
 * starting with '#' (conf_print's output must read back). Returns its
 * length, or -1 with the reason in msg. */
static long
check_word(const char *value, size_t max, char *msg, size_t msglen)
{
	char q[QUOTE_MAX + 8];
	size_t len = strlen(value), i;

	if (len > max) {
		snprintf(msg, msglen, "longer than %zu characters", max);
		return -1;
	}
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)value[i];

		if (ch <= 0x20 || ch >= 0x7f) {
			snprintf(msg, msglen, "\"%s\" is not one word of "
			    "printable ASCII", quote(value, q, sizeof(q)));
			return -1;
		}
	}
	if (value[0] == '#') {
		snprintf(msg, msglen, "\"%s\" cannot start with '#'",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	return (long)len;
}

/* A string answered to CH TXT queries (identity, version): one TXT
 * character-string, so at most 255 bytes, of printable ASCII without white
 * space (a value is one word), not starting with '#' (conf_print's output
 * must read back). */
static int
set_text(struct conf *c, const struct key_def *k, const char *value,
    char *msg, size_t msglen)
{
	long len = check_word(value, CONF_MAX_TEXT - 1, msg, msglen);

	if (len < 0)
		return -1;
	memcpy((char *)c + k->off, value, (size_t)len + 1);
	return 0;
}

/* The port and database of "redis://IP[:port][/db]" after the address,
 * or the database of "unix:/path?db=N". */
static int
redis_number(const char *s, unsigned long long max, unsigned *out)
{
	unsigned long long v;
	const char *end;

	if (parse_uint(s, &end, &v) < 0 || *end != '\0' || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int
set_redis_unix(struct conf_redis *r, const char *path, char *msg,
    size_t msglen)
{
	const char *db = strstr(path, "?db=");
	size_t len = db != NULL ? (size_t)(db - path) : strlen(path);

	if (len == 0 || path[0] != '/' || len >= sizeof(r->path)) {
		snprintf(msg, msglen, "unix: needs an absolute path (under %d "
		    "characters)", (int)sizeof(r->path));
		return -1;
	}
	if (db != NULL && redis_number(db + 4, 65535, &r->db) < 0) {
		snprintf(msg, msglen, "\"%s\" is not a database number "
		    "(0-65535)", db + 4);
		return -1;
	}
	memcpy(r->path, path, len);
	r->path[len] = '\0';
	r->is_unix = 1;
	return 0;
}

/* "IP[:port][/db]", "[IPv6][:port][/db]". */
static int
set_redis_tcp(struct conf_redis *r, const char *s, char *msg, size_t msglen)
{
	const char *host = s, *after, *slash;
	unsigned char bin[16];
	char port[16];
	size_t hlen;

	r->port = CONF_SHC_DEFAULT_PORT;
	if (s[0] == '[') {
		host = s + 1;
		after = strchr(host, ']');
		if (after == NULL)
			goto bad;
		hlen = (size_t)(after - host);
		after++;
	} else {
		hlen = strcspn(s, ":/");
		after = s + hlen;
	}
	if (hlen == 0 || hlen >= sizeof(r->host))
		goto bad;
	memcpy(r->host, host, hlen);
	r->host[hlen] = '\0';
	if (inet_pton(AF_INET, r->host, bin) != 1 &&
	    inet_pton(AF_INET6, r->host, bin) != 1) {
		snprintf(msg, msglen, "\"%s\" is not an IP address (a host "
		    "name would need the DNS this server provides)", r->host);
		return -1;
	}
	slash = strchr(after, '/');
	if (after[0] == ':') {
		hlen = slash != NULL ? (size_t)(slash - after - 1) :
		    strlen(after + 1);
		if (hlen == 0 || hlen >= sizeof(port))
			goto bad_port;
		memcpy(port, after + 1, hlen);
		port[hlen] = '\0';
		if (redis_number(port, 65535, &r->port) < 0 || r->port == 0)
			goto bad_port;
	} else if (after[0] != '\0' && after[0] != '/') {
		goto bad;
	}
	if (slash != NULL && redis_number(slash + 1, 65535, &r->db) < 0) {
		snprintf(msg, msglen, "\"%s\" is not a database number "
		    "(0-65535)", slash + 1);
		return -1;
	}
	return 0;
bad_port:
	snprintf(msg, msglen, "bad port (1-65535)");
	return -1;
bad:
	snprintf(msg, msglen, "\"%s\" is not redis://IP[:port][/db]", s);
	return -1;
}

/* shared-cache: redis://IP[:port][/db] or unix:/path[?db=N]. */
static int
set_redis(struct conf *c, const char *value, char *msg, size_t msglen)
{
	struct conf_redis r;
	char q[QUOTE_MAX + 8];
	int rc;

	memset(&r, 0, sizeof(r));
	if (strlen(value) >= sizeof(r.url)) {
		snprintf(msg, msglen, "longer than %d characters",
		    (int)sizeof(r.url) - 1);
		return -1;
	}
	if (strncmp(value, "redis://", 8) == 0)
		rc = set_redis_tcp(&r, value + 8, msg, msglen);
	else if (strncmp(value, "unix:", 5) == 0)
		rc = set_redis_unix(&r, value + 5, msg, msglen);
	else {
		snprintf(msg, msglen, "\"%s\" is neither redis://IP[:port]"
		    "[/db] nor unix:/path", quote(value, q, sizeof(q)));
		rc = -1;
	}
	if (rc < 0)
		return -1;
	snprintf(r.url, sizeof(r.url), "%s", value);
	r.set = 1;
	c->shared_cache = r;
	return 0;
}

/* shared-cache-prefix: printable ASCII, no white space (one word that
 * conf_print writes back), at most CONF_SHC_PREFIX_MAX bytes. Never
 * empty (a value is one word): an operator who wants keys of their own
 * chooses another prefix or a database of their own. */
static int
set_prefix(struct conf *c, const char *value, char *msg, size_t msglen)
{
	long len = check_word(value, CONF_SHC_PREFIX_MAX, msg, msglen);

	if (len < 0)
		return -1;
	memcpy(c->shared_cache_prefix, value, (size_t)len + 1);
	c->shared_cache_prefix_len = (size_t)len;
	return 0;
}

/* A size in bytes (max-pending-bytes), checked against the key's range. */
static int
set_bytes(struct conf *c, const struct key_def *k, const char *value,
    char *msg, size_t msglen)
{
	unsigned long long v;
	char q[QUOTE_MAX + 8];

	if (parse_size(value, &v) < 0) {
		snprintf(msg, msglen, "\"%s\" is not a size (use e.g. 16M)",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	if (v < k->min || v > k->max || v > SIZE_MAX) {
		snprintf(msg, msglen, "\"%s\" is out of range (%s)",
		    quote(value, q, sizeof(q)), k->range);
		return -1;
	}
	*(size_t *)(void *)((char *)c + k->off) = (size_t)v;
	return 0;
}

/* One access-control rule; a second rule for the same prefix replaces
 * the first's action, as a later setting of a key replaces an earlier. */
static int
set_acl(struct conf *c, const char *value, char *msg, size_t msglen)
{
	struct conf_acl r;
	size_t i;

	if (acl_rule_parse(value, &r, msg, msglen) < 0)
		return -1;
	for (i = 0; i < c->n_acl; i++) {
		if (c->acl[i].plen == r.plen &&
		    memcmp(c->acl[i].addr, r.addr, sizeof(r.addr)) == 0) {
			c->acl[i].action = r.action;
			return 0;
		}
	}
	if (c->n_acl >= CONF_MAX_ACL) {
		snprintf(msg, msglen, "too many (max %d)", CONF_MAX_ACL);
		return -1;
	}
	c->acl[c->n_acl++] = r;
	return 0;
}

static int
set_cache_size(struct conf *c, const char *value, char *msg, size_t msglen)
{
	unsigned long long v;
	char q[QUOTE_MAX + 8];

	if (parse_size(value, &v) < 0) {
		snprintf(msg, msglen, "\"%s\" is not a size (use e.g. 32M)",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	if (v < CACHE_SIZE_MIN) {
		snprintf(msg, msglen, "\"%s\" is too small (min 64K)",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	if (v > CACHE_SIZE_MAX || v > SIZE_MAX) {
		snprintf(msg, msglen, "\"%s\" is too large (max 64G)",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	c->cache_size = (size_t)v;
	return 0;
}

/* A duration, a time in seconds or a plain count, checked against the
 * key's range. */
static int
set_number(struct conf *c, const struct key_def *k, const char *value,
    char *msg, size_t msglen)
{
	const struct unit *units = count_units;
	const char *what = "is not a number";
	unsigned long long v;
	char q[QUOTE_MAX + 8];

	if (k->kind == KEY_DURATION) {
		units = duration_units;
		what = "is not a duration (use e.g. 3s or 500ms)";
	} else if (k->kind == KEY_SECONDS) {
		units = seconds_units;
		what = "is not a time in seconds (use e.g. 30, 5m or 1d)";
	}
	if (parse_units(value, units, &v) < 0) {
		snprintf(msg, msglen, "\"%s\" %s", quote(value, q, sizeof(q)),
		    what);
		return -1;
	}
	if (v < k->min || v > k->max) {
		snprintf(msg, msglen, "\"%s\" is out of range (%s)",
		    quote(value, q, sizeof(q)), k->range);
		return -1;
	}
	*uint_field(c, k) = (unsigned)v;
	return 0;
}

static int
set_log_level(struct conf *c, const char *value, char *msg, size_t msglen)
{
	char q[QUOTE_MAX + 8];
	size_t i;

	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(value, level_names[i]) == 0) {
			c->log_level = (int)i;
			return 0;
		}
	}
	snprintf(msg, msglen, "\"%s\" is not one of err, warn, info, debug",
	    quote(value, q, sizeof(q)));
	return -1;
}

static int
set_selection(struct conf *c, const char *value, char *msg, size_t msglen)
{
	char q[QUOTE_MAX + 8];
	size_t i;

	for (i = 0; i < N_SELECTIONS; i++) {
		if (strcmp(value, selection_names[i]) == 0) {
			c->selection = (enum conf_selection)i;
			return 0;
		}
	}
	snprintf(msg, msglen, "\"%s\" is not one of fastest, round-robin, "
	    "ordered", quote(value, q, sizeof(q)));
	return -1;
}

static int
set_bool(struct conf *c, const struct key_def *k, const char *value,
    char *msg, size_t msglen)
{
	char q[QUOTE_MAX + 8];

	if (strcmp(value, "yes") == 0) {
		*int_field(c, k) = 1;
	} else if (strcmp(value, "no") == 0) {
		*int_field(c, k) = 0;
	} else {
		snprintf(msg, msglen, "\"%s\" is not yes or no",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	return 0;
}

void
conf_init(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	c->cache_size = 32 * MIB;
	c->query_timeout_ms = 3000;
	c->connect_timeout_ms = 2000;
	c->idle_timeout_ms = 30000;
	c->tcp_idle_timeout_ms = 10000;
	c->tcp_max_clients = 256;
	c->max_udp_size = 1232;
	c->log_level = LOGL_INFO;
	c->selection = CONF_SELECT_FASTEST;
	c->answer_timeout_ms = 1500;
	c->backoff_max_ms = 30000;
	c->max_conn_lifetime_ms = 3600000;
	c->cache_min_ttl = 0;
	c->cache_max_ttl = 86400;
	c->cache_max_negative_ttl = 3600;
	c->cache_servfail_ttl = 5;
	c->prefetch = 1;
	c->serve_stale = 1;
	c->stale_max_age = 86400;
	c->stale_client_timeout_ms = 1800;
	c->stale_refresh_interval = 30;
	c->local_zones = 1;
	c->lameduck_ms = 5000;
	c->max_pending = 10000;
	c->max_pending_bytes = 32 * MIB;
	c->shared_cache_timeout_ms = 20;
	memcpy(c->shared_cache_prefix, "dotproxy:", sizeof("dotproxy:"));
	c->shared_cache_prefix_len = sizeof("dotproxy:") - 1;
}

int
conf_set(struct conf *c, const char *key, const char *value,
    const char *where, char *err, size_t errlen)
{
	char msg[CONF_ERR_MAX];
	char q[QUOTE_MAX + 8];
	const struct key_def *k;
	int rc = -1;

	k = find_key(key);
	if (k == NULL) {
		snprintf(err, errlen, "%s: unknown key \"%s\"", where,
		    quote(key, q, sizeof(q)));
		return -1;
	}
	if (value == NULL || value[0] == '\0') {
		snprintf(msg, sizeof(msg), "missing value");
		goto fail;
	}
	switch (k->kind) {
	case KEY_LISTEN:
		rc = set_listen(c, value, msg, sizeof(msg));
		break;
	case KEY_UPSTREAM:
		rc = set_upstream(c, value, msg, sizeof(msg));
		break;
	case KEY_PATH:
		rc = set_path(c, k, value, msg, sizeof(msg));
		break;
	case KEY_ADDR:
		rc = set_addr(c, k, value, msg, sizeof(msg));
		break;
	case KEY_SIZE:
		rc = set_cache_size(c, value, msg, sizeof(msg));
		break;
	case KEY_DURATION:
	case KEY_SECONDS:
	case KEY_COUNT:
		rc = set_number(c, k, value, msg, sizeof(msg));
		break;
	case KEY_LOG_LEVEL:
		rc = set_log_level(c, value, msg, sizeof(msg));
		break;
	case KEY_SELECTION:
		rc = set_selection(c, value, msg, sizeof(msg));
		break;
	case KEY_BOOL:
		rc = set_bool(c, k, value, msg, sizeof(msg));
		break;
	case KEY_NAME:
		rc = set_name(c, k, value, msg, sizeof(msg));
		break;
	case KEY_BYTES:
		rc = set_bytes(c, k, value, msg, sizeof(msg));
		break;
	case KEY_ACL:
		rc = set_acl(c, value, msg, sizeof(msg));
		break;
	case KEY_TEXT:
		rc = set_text(c, k, value, msg, sizeof(msg));
		break;
	case KEY_REDIS:
		rc = set_redis(c, value, msg, sizeof(msg));
		break;
	case KEY_PREFIX:
		rc = set_prefix(c, value, msg, sizeof(msg));
		break;
	}
	if (rc == 0) {
		/* Where the trust anchors were named, for the message when
		 * they cannot be loaded (conf cannot parse certificates). */
		if (k->off == offsetof(struct conf, ca_file))
			snprintf(c->ca_file_where, sizeof(c->ca_file_where),
			    "%s", where);
		return 0;
	}
fail:
	snprintf(err, errlen, "%s: %s: %s", where, key, msg);
	return -1;
}

/* Split line in place into its key and the text after it. '#' at the start
 * of a word ends the line; the text (*rest) runs from the first word after
 * the key to the end of the last word before that, NULL when there is none.
 * Returns 0 for a line without a key, 1 otherwise. */
static int
split_line(char *line, char **key, char **rest)
{
	char *p = line, *end;

	*key = *rest = NULL;
	p += span_space(p);
	if (*p == '\0' || *p == '#')
		return 0;
	*key = p;
	p += span_word(p);
	if (*p != '\0')
		*p++ = '\0';
	p += span_space(p);
	if (*p == '\0' || *p == '#')
		return 1;
	*rest = p;
	end = p;
	while (*p != '\0' && *p != '#') {
		p += span_word(p);
		end = p;
		p += span_space(p);
	}
	*end = '\0';
	return 1;
}

/* End s after its first word. Returns the start of the next word, or NULL
 * when there is none (s has no trailing white space: split_line cut it). */
static char *
split_word(char *s)
{
	char *p = s + span_word(s);

	if (*p == '\0')
		return NULL;
	*p++ = '\0';
	p += span_space(p);
	return *p != '\0' ? p : NULL;
}

/* Read one line into buf (without its newline). Returns 1 for a line, 0 at
 * end of file, -1 for a read error (errno set), -2 for a line longer than
 * CONF_LINE_MAX, -3 for a NUL byte. Either error returns at once, without
 * reading the rest of the line: a file with no newline in sight
 * (/dev/zero) must not keep the reader busy forever. */
static int
read_line(FILE *f, char *buf, size_t cap)
{
	size_t n = 0;
	int ch;

	for (;;) {
		ch = getc(f);
		if (ch == EOF) {
			if (ferror(f))
				return -1;
			if (n == 0)
				return 0;
			break;
		}
		if (ch == '\n')
			break;
		if (ch == '\0')
			return -3;
		if (n == cap - 1)
			return -2;
		buf[n++] = (char)ch;
	}
	buf[n] = '\0';
	return 1;
}

int
conf_load_file(struct conf *c, const char *path, char *err, size_t errlen)
{
	char line[CONF_LINE_MAX + 1];
	char where[CONF_MAX_PATH + 32];
	char *key, *value, *extra;
	char q[QUOTE_MAX + 8];
	unsigned long lineno = 0;
	FILE *f;
	int rc = -1, r;

	f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	for (;;) {
		r = read_line(f, line, sizeof(line));
		if (r == 0)
			break;
		lineno++;
		snprintf(where, sizeof(where), "%s:%lu", path, lineno);
		if (r == -1) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto done;
		}
		if (r == -2) {
			snprintf(err, errlen, "%s: line longer than %d "
			    "characters", where, CONF_LINE_MAX);
			goto done;
		}
		if (r == -3) {
			snprintf(err, errlen, "%s: NUL byte in line", where);
			goto done;
		}
		if (split_line(line, &key, &value) == 0)
			continue;
		/* An upstream's value is all its words (the pins follow the
		 * address), and conf_parse_upstream judges them (so does
		 * acl_rule_parse an access-control's two); any other
		 * value is one word. The value is checked before the words
		 * after it: it is the first mistake on the line. */
		extra = NULL;
		if (value != NULL && strcmp(key, "upstream") != 0 &&
		    strcmp(key, "access-control") != 0) {
			extra = split_word(value);
			if (extra != NULL)
				split_word(extra);
		}
		if (conf_set(c, key, value, where, err, errlen) < 0)
			goto done;
		if (extra != NULL) {
			snprintf(err, errlen, "%s: %s: unexpected \"%s\" after "
			    "the value", where, key,
			    quote(extra, q, sizeof(q)));
			goto done;
		}
	}
	rc = 0;
done:
	fclose(f);
	return rc;
}

int
conf_finish(struct conf *c, char *err, size_t errlen)
{
	static const char *const def_listen[] = { "127.0.0.1", "::1" };
	static const char *const def_upstream[] = {
		"1.1.1.1@853#cloudflare-dns.com",
		"1.0.0.1@853#cloudflare-dns.com",
	};
	char buf[64], min[32], max[32];
	size_t i;

	/* The defaults are literals that parse; a failure is a bug here. */
	if (c->n_listen == 0) {
		for (i = 0; i < 2; i++) {
			if (conf_parse_addr(def_listen[i],
			    CONF_DEFAULT_LISTEN_PORT, &c->listen[i], err,
			    errlen) < 0)
				return -1;
		}
		c->n_listen = 2;
		c->listen_is_default = 1;
	}
	if (c->n_upstream == 0) {
		for (i = 0; i < 2; i++) {
			if (conf_parse_upstream(def_upstream[i],
			    &c->upstream[i], err, errlen) < 0)
				return -1;
		}
		c->n_upstream = 2;
	}
	/* Verification is always on: a name, a pin or both must say which
	 * server is the right one. */
	for (i = 0; i < c->n_upstream; i++) {
		if (c->upstream[i].auth_name[0] == '\0' &&
		    c->upstream[i].n_pins == 0) {
			conf_addr_str(&c->upstream[i].addr, buf, sizeof(buf));
			snprintf(err, errlen, "configuration: upstream %s: no "
			    "authentication name or pin (add #name or "
			    "pin-sha256=...)", buf);
			return -1;
		}
	}
	/* Checked here, not in conf_set, so that the two may be given in
	 * either order. */
	if (c->cache_min_ttl > c->cache_max_ttl) {
		seconds_str(c->cache_min_ttl, min, sizeof(min));
		seconds_str(c->cache_max_ttl, max, sizeof(max));
		snprintf(err, errlen, "configuration: cache-min-ttl %s is "
		    "larger than cache-max-ttl %s", min, max);
		return -1;
	}
	/* A group alone would change the gid of a process that keeps root
	 * and every capability: a drop in name only. */
	if (c->group[0] != '\0' && c->user[0] == '\0') {
		snprintf(err, errlen, "configuration: group %s is set but "
		    "user is not (set user too)", c->group);
		return -1;
	}
	return 0;
}

void
conf_addr_str(const struct conf_addr *a, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;

	if (a->ss.ss_family == AF_INET) {
		sin = (const struct sockaddr_in *)&a->ss;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, cap, "%s@%u", host, ntohs(sin->sin_port));
	} else if (a->ss.ss_family == AF_INET6) {
		sin6 = (const struct sockaddr_in6 *)&a->ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, cap, "%s@%u", host, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, cap, "?");
	}
}

static void
print_size(FILE *out, const char *key, size_t v)
{
	unsigned long long n = v;

	if (n != 0 && n % GIB == 0)
		fprintf(out, "%s %lluG\n", key, n / GIB);
	else if (n != 0 && n % MIB == 0)
		fprintf(out, "%s %lluM\n", key, n / MIB);
	else if (n != 0 && n % KIB == 0)
		fprintf(out, "%s %lluK\n", key, n / KIB);
	else
		fprintf(out, "%s %llu\n", key, n);
}

static void
print_duration(FILE *out, const char *key, unsigned ms)
{
	if (ms % 1000 == 0)
		fprintf(out, "%s %us\n", key, ms / 1000);
	else
		fprintf(out, "%s %ums\n", key, ms);
}

static void
print_upstream(FILE *out, const struct conf_upstream *u)
{
	char buf[64], pin[PIN_B64_LEN + 1];
	size_t i;

	conf_addr_str(&u->addr, buf, sizeof(buf));
	fprintf(out, "upstream %s", buf);
	if (u->auth_name[0] != '\0')
		fprintf(out, "#%s", u->auth_name);
	for (i = 0; i < u->n_pins && i < CONF_MAX_PINS; i++) {
		pin_encode(u->pins[i], pin);
		fprintf(out, " %s%s", PIN_PREFIX, pin);
	}
	fputc('\n', out);
}

void
conf_print(const struct conf *c, FILE *out)
{
	const struct conf_addr *a;
	const struct key_def *k;
	char buf[64];
	size_t i;
	int v;

	for (k = keys; k < keys + N_KEYS; k++) {
		switch (k->kind) {
		case KEY_LISTEN:
			for (i = 0; i < c->n_listen; i++) {
				conf_addr_str(&c->listen[i], buf, sizeof(buf));
				fprintf(out, "listen %s\n", buf);
			}
			break;
		case KEY_UPSTREAM:
			for (i = 0; i < c->n_upstream; i++)
				print_upstream(out, &c->upstream[i]);
			break;
		case KEY_PATH:
			if (path_field_const(c, k)[0] != '\0')
				fprintf(out, "%s %s\n", k->name,
				    path_field_const(c, k));
			break;
		case KEY_ADDR:
			a = (const struct conf_addr *)(const void *)
			    ((const char *)c + k->off);
			if (a->len != 0) {
				conf_addr_str(a, buf, sizeof(buf));
				fprintf(out, "%s %s\n", k->name, buf);
			}
			break;
		case KEY_SIZE:
			print_size(out, k->name, c->cache_size);
			break;
		case KEY_DURATION:
			print_duration(out, k->name, *uint_field_const(c, k));
			break;
		case KEY_SECONDS:
			seconds_str(*uint_field_const(c, k), buf, sizeof(buf));
			fprintf(out, "%s %s\n", k->name, buf);
			break;
		case KEY_COUNT:
			fprintf(out, "%s %u\n", k->name,
			    *uint_field_const(c, k));
			break;
		case KEY_LOG_LEVEL:
			v = c->log_level;
			if (v < LOGL_ERR || v > LOGL_DEBUG)
				v = LOGL_INFO;
			fprintf(out, "%s %s\n", k->name, level_names[v]);
			break;
		case KEY_SELECTION:
			i = (size_t)c->selection;
			fprintf(out, "%s %s\n", k->name, i < N_SELECTIONS ?
			    selection_names[i] : "fastest");
			break;
		case KEY_BOOL:
			fprintf(out, "%s %s\n", k->name,
			    int_field_value(c, k) ? "yes" : "no");
			break;
		case KEY_NAME:
			if (name_field_value(c, k)[0] != '\0')
				fprintf(out, "%s %s\n", k->name,
				    name_field_value(c, k));
			break;
		case KEY_BYTES:
			print_size(out, k->name, *(const size_t *)(const void *)
			    ((const char *)c + k->off));
			break;
		case KEY_ACL:
			for (i = 0; i < c->n_acl && i < CONF_MAX_ACL; i++) {
				acl_rule_str(&c->acl[i], buf, sizeof(buf));
				fprintf(out, "%s %s\n", k->name, buf);
			}
			break;
		case KEY_TEXT:
			if (name_field_value(c, k)[0] != '\0')
				fprintf(out, "%s %s\n", k->name,
				    name_field_value(c, k));
			break;
		case KEY_REDIS:
			if (c->shared_cache.set)
				fprintf(out, "%s %s\n", k->name,
				    c->shared_cache.url);
			break;
		case KEY_PREFIX:
			fprintf(out, "%s %s\n", k->name,
			    c->shared_cache_prefix);
			break;
		}
	}
}
