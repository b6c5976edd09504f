/* conf.c: configuration text -> struct conf value, with file:line errors.
 *
 * Every setting goes through conf_set(), whether it comes from a file line or
 * from a command-line option, so both are checked by the same code and give
 * the same messages ("where: key: message"). Parsing is by hand and bounded:
 * numbers are read digit by digit and saturate instead of overflowing, lines
 * are at most CONF_LINE_MAX characters, and nothing is written past its
 * buffer. Nothing here allocates.
 *
 * A value is one word. '#' starts a comment only at the start of a word, so
 * that the "#name" of an upstream (1.1.1.1@853#cloudflare-dns.com) is part
 * of the value while "listen ::1  # loopback" still has a comment. The same
 * rule is why conf_set refuses a ca-file with white space or a leading '#':
 * conf_print must write something conf_load_file reads back to the same value.
 *
 * A later setting of a single-valued key replaces an earlier one, which is
 * what lets command-line options override the file through the same setter.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "log.h"

#define CONF_LINE_MAX 1023

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define CACHE_SIZE_MIN (64 * KIB)
#define CACHE_SIZE_MAX (64 * GIB)

#define DURATION_MIN_MS 1ULL
#define DURATION_MAX_MS (60ULL * 60 * 1000)

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

int
conf_parse_upstream(const char *s, struct conf_upstream *u, char *err,
    size_t errlen)
{
	const char *hash;
	struct conf_upstream tmp;

	memset(&tmp, 0, sizeof(tmp));
	hash = strchr(s, '#');
	if (parse_addr_n(s, hash != NULL ? (size_t)(hash - s) : strlen(s),
	    CONF_DEFAULT_UPSTREAM_PORT, &tmp.addr, err, errlen) < 0)
		return -1;
	if (hash != NULL) {
		if (check_name(hash + 1, err, errlen) < 0)
			return -1;
		/* check_name bounds the length to 253 < sizeof(auth_name). */
		memcpy(tmp.auth_name, hash + 1, strlen(hash + 1) + 1);
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

/* DURATION = digits with ms, s or m; bare digits are seconds. Saturates
 * like parse_size. */
static int
parse_duration(const char *s, unsigned long long *ms)
{
	unsigned long long v, mult;
	const char *end;

	if (parse_uint(s, &end, &v) < 0)
		return -1;
	if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else
		return -1;
	*ms = v > NUM_SAT / mult ? NUM_SAT : v * mult;
	return 0;
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

static int
set_ca_file(struct conf *c, const char *value, char *msg, size_t msglen)
{
	size_t len = strlen(value), i;

	if (len >= sizeof(c->ca_file)) {
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
	memcpy(c->ca_file, value, len + 1);
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

static int
set_duration(unsigned *dst, const char *value, char *msg, size_t msglen)
{
	unsigned long long ms;
	char q[QUOTE_MAX + 8];

	if (parse_duration(value, &ms) < 0) {
		snprintf(msg, msglen, "\"%s\" is not a duration (use e.g. 3s "
		    "or 500ms)", quote(value, q, sizeof(q)));
		return -1;
	}
	if (ms < DURATION_MIN_MS || ms > DURATION_MAX_MS) {
		snprintf(msg, msglen, "\"%s\" is out of range (1ms to 60m)",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	*dst = (unsigned)ms;
	return 0;
}

static int
set_tcp_max_clients(struct conf *c, const char *value, char *msg,
    size_t msglen)
{
	unsigned long long v;
	const char *end;
	char q[QUOTE_MAX + 8];

	if (parse_uint(value, &end, &v) < 0 || *end != '\0') {
		snprintf(msg, msglen, "\"%s\" is not a number",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	if (v < 1 || v > 65535) {
		snprintf(msg, msglen, "\"%s\" is out of range (1-65535)",
		    quote(value, q, sizeof(q)));
		return -1;
	}
	c->tcp_max_clients = (unsigned)v;
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
	c->log_level = LOGL_INFO;
}

int
conf_set(struct conf *c, const char *key, const char *value,
    const char *where, char *err, size_t errlen)
{
	char msg[CONF_ERR_MAX];
	char q[QUOTE_MAX + 8];
	int rc;

	if (strcmp(key, "listen") != 0 && strcmp(key, "upstream") != 0 &&
	    strcmp(key, "ca-file") != 0 && strcmp(key, "cache-size") != 0 &&
	    strcmp(key, "query-timeout") != 0 &&
	    strcmp(key, "connect-timeout") != 0 &&
	    strcmp(key, "idle-timeout") != 0 &&
	    strcmp(key, "tcp-idle-timeout") != 0 &&
	    strcmp(key, "tcp-max-clients") != 0 &&
	    strcmp(key, "log-level") != 0) {
		snprintf(err, errlen, "%s: unknown key \"%s\"", where,
		    quote(key, q, sizeof(q)));
		return -1;
	}
	if (value == NULL || value[0] == '\0') {
		snprintf(msg, sizeof(msg), "missing value");
		rc = -1;
	} else if (strcmp(key, "listen") == 0)
		rc = set_listen(c, value, msg, sizeof(msg));
	else if (strcmp(key, "upstream") == 0)
		rc = set_upstream(c, value, msg, sizeof(msg));
	else if (strcmp(key, "ca-file") == 0)
		rc = set_ca_file(c, value, msg, sizeof(msg));
	else if (strcmp(key, "cache-size") == 0)
		rc = set_cache_size(c, value, msg, sizeof(msg));
	else if (strcmp(key, "query-timeout") == 0)
		rc = set_duration(&c->query_timeout_ms, value, msg,
		    sizeof(msg));
	else if (strcmp(key, "connect-timeout") == 0)
		rc = set_duration(&c->connect_timeout_ms, value, msg,
		    sizeof(msg));
	else if (strcmp(key, "idle-timeout") == 0)
		rc = set_duration(&c->idle_timeout_ms, value, msg,
		    sizeof(msg));
	else if (strcmp(key, "tcp-idle-timeout") == 0)
		rc = set_duration(&c->tcp_idle_timeout_ms, value, msg,
		    sizeof(msg));
	else if (strcmp(key, "tcp-max-clients") == 0)
		rc = set_tcp_max_clients(c, value, msg, sizeof(msg));
	else
		rc = set_log_level(c, value, msg, sizeof(msg));
	if (rc < 0)
		snprintf(err, errlen, "%s: %s: %s", where, key, msg);
	return rc;
}

/* Split line in place into key, value and what follows. '#' at the start of
 * a word ends the line. Returns the number of words found (0..3; 3 means
 * "more than two", with *extra pointing at the third). */
static int
split_line(char *line, char **key, char **value, char **extra)
{
	char **slot[3];
	char *p = line;
	int n = 0;

	slot[0] = key;
	slot[1] = value;
	slot[2] = extra;
	*key = *value = *extra = NULL;
	while (n < 3) {
		while (is_space((unsigned char)*p))
			p++;
		if (*p == '\0' || *p == '#')
			break;
		*slot[n++] = p;
		while (*p != '\0' && !is_space((unsigned char)*p))
			p++;
		if (*p != '\0')
			*p++ = '\0';
	}
	return n;
}

/* Read one line into buf (without its newline). Returns 1 for a line, 0 at
 * end of file, -1 for a read error (errno set), -2 for a line longer than
 * CONF_LINE_MAX (the rest of it is consumed), -3 for a NUL byte. */
static int
read_line(FILE *f, char *buf, size_t cap)
{
	size_t n = 0;
	int ch, rc = 1;

	for (;;) {
		ch = getc(f);
		if (ch == EOF) {
			if (ferror(f))
				return -1;
			if (n == 0 && rc == 1)
				return 0;
			break;
		}
		if (ch == '\n')
			break;
		if (ch == '\0' && rc == 1)
			rc = -3;
		if (n < cap - 1)
			buf[n] = (char)ch;
		else if (rc == 1)
			rc = -2;
		n++;
	}
	buf[n < cap ? n : cap - 1] = '\0';
	return rc;
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
	int rc = -1, r, words;

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
		words = split_line(line, &key, &value, &extra);
		if (words == 0)
			continue;
		if (conf_set(c, key, value, where, err, errlen) < 0)
			goto done;
		if (words > 2) {
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
	char buf[64];
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
	for (i = 0; i < c->n_upstream; i++) {
		if (c->upstream[i].auth_name[0] == '\0') {
			conf_addr_str(&c->upstream[i].addr, buf, sizeof(buf));
			snprintf(err, errlen, "configuration: upstream %s: no "
			    "authentication name (add #name)", buf);
			return -1;
		}
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

void
conf_print(const struct conf *c, FILE *out)
{
	char buf[64];
	size_t i;

	for (i = 0; i < c->n_listen; i++) {
		conf_addr_str(&c->listen[i], buf, sizeof(buf));
		fprintf(out, "listen %s\n", buf);
	}
	for (i = 0; i < c->n_upstream; i++) {
		conf_addr_str(&c->upstream[i].addr, buf, sizeof(buf));
		if (c->upstream[i].auth_name[0] != '\0')
			fprintf(out, "upstream %s#%s\n", buf,
			    c->upstream[i].auth_name);
		else
			fprintf(out, "upstream %s\n", buf);
	}
	if (c->ca_file[0] != '\0')
		fprintf(out, "ca-file %s\n", c->ca_file);
	print_size(out, "cache-size", c->cache_size);
	print_duration(out, "query-timeout", c->query_timeout_ms);
	print_duration(out, "connect-timeout", c->connect_timeout_ms);
	print_duration(out, "idle-timeout", c->idle_timeout_ms);
	print_duration(out, "tcp-idle-timeout", c->tcp_idle_timeout_ms);
	fprintf(out, "tcp-max-clients %u\n", c->tcp_max_clients);
	if (c->log_level >= LOGL_ERR && c->log_level <= LOGL_DEBUG)
		fprintf(out, "log-level %s\n", level_names[c->log_level]);
	else
		fprintf(out, "log-level info\n");
}
