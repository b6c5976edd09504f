/* acl.c: access-control rules: parse, print, and match a client address.
 *
 * Rules and addresses live in the IPv6 address space (IPv4 as
 * ::ffff:a.b.c.d, an IPv4 prefix of length n as one of length 96 + n), so
 * matching is one loop over one kind of prefix. There are few rules (the
 * defaults below and at most CONF_MAX_ACL configured ones), so a linear
 * scan costs less per query than the hash lookup of the cache that follows
 * it, and needs no structure to build or free when the config is swapped.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"

#define V4(a, b, c, d) { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d }

/* acl.h lists them; keep the two in step. */
static const struct conf_acl defaults[] = {
	{ V4(127, 0, 0, 0), 96 + 8, CONF_ACL_ALLOW },
	{ V4(10, 0, 0, 0), 96 + 8, CONF_ACL_ALLOW },
	{ V4(172, 16, 0, 0), 96 + 12, CONF_ACL_ALLOW },
	{ V4(192, 168, 0, 0), 96 + 16, CONF_ACL_ALLOW },
	{ V4(100, 64, 0, 0), 96 + 10, CONF_ACL_ALLOW },
	{ V4(169, 254, 0, 0), 96 + 16, CONF_ACL_ALLOW },
	{ V4(0, 0, 0, 0), 96, CONF_ACL_REFUSE },
	{ { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, 128,
	    CONF_ACL_ALLOW },
	{ { 0xfe, 0x80 }, 10, CONF_ACL_ALLOW },
	{ { 0xfc }, 7, CONF_ACL_ALLOW },
	{ { 0 }, 0, CONF_ACL_REFUSE },
};

#define N_DEFAULTS (sizeof(defaults) / sizeof(defaults[0]))

static const unsigned char v4_mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
};

static const char *const action_names[] = {
	[CONF_ACL_ALLOW] = "allow",
	[CONF_ACL_REFUSE] = "refuse",
	[CONF_ACL_DENY] = "deny",
};

const char *
acl_action_name(enum conf_acl_action a)
{
	return (unsigned)a <= CONF_ACL_DENY ? action_names[a] : "refuse";
}

int
acl_addr16(const struct sockaddr *sa, unsigned char out[16])
{
	if (sa->sa_family == AF_INET) {
		memcpy(out, v4_mapped, 12);
		memcpy(out + 12,
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(out,
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		    16);
		return 0;
	}
	return -1;
}

/* Does the prefix r contain addr? */
static int
contains(const struct conf_acl *r, const unsigned char addr[16])
{
	unsigned whole = r->plen / 8, bits = r->plen % 8;
	unsigned char mask;

	if (memcmp(r->addr, addr, whole) != 0)
		return 0;
	if (bits == 0)
		return 1;
	mask = (unsigned char)(0xff00 >> bits);
	return (addr[whole] & mask) == r->addr[whole];
}

enum conf_acl_action
acl_match(const struct conf *c, const unsigned char addr[16])
{
	const struct conf_acl *best = NULL;
	size_t i;

	/* Configured rules first, so that on a tie (">" below) they win. */
	for (i = 0; i < c->n_acl && i < CONF_MAX_ACL; i++) {
		if ((best == NULL || c->acl[i].plen > best->plen) &&
		    contains(&c->acl[i], addr))
			best = &c->acl[i];
	}
	for (i = 0; i < N_DEFAULTS; i++) {
		if ((best == NULL || defaults[i].plen > best->plen) &&
		    contains(&defaults[i], addr))
			best = &defaults[i];
	}
	/* ::/0 is among the defaults, so best is never NULL here. */
	return best != NULL ? (enum conf_acl_action)best->action :
	    CONF_ACL_REFUSE;
}

int
acl_rule_parse(const char *value, struct conf_acl *r, char *err,
    size_t errlen)
{
	char word[INET6_ADDRSTRLEN + 8], host[INET6_ADDRSTRLEN + 1];
	const char *p = value, *slash, *act;
	unsigned long len = 0, max;
	size_t n, alen, i;
	struct conf_acl tmp;
	unsigned char mask;

	memset(&tmp, 0, sizeof(tmp));
	while (*p == ' ' || *p == '\t')
		p++;
	n = strcspn(p, " \t");
	if (n == 0 || n >= sizeof(word)) {
		snprintf(err, errlen, "expected an address or prefix, then "
		    "allow, refuse or deny");
		return -1;
	}
	memcpy(word, p, n);
	word[n] = '\0';
	act = p + n + strspn(p + n, " \t");
	slash = strchr(word, '/');
	alen = slash != NULL ? (size_t)(slash - word) : n;
	if (alen >= sizeof(host))
		alen = 0;       /* too long for an address: refused below */
	memcpy(host, word, alen);
	host[alen] = '\0';
	if (alen != 0 && inet_pton(AF_INET, host, tmp.addr + 12) == 1) {
		memcpy(tmp.addr, v4_mapped, 12);
		max = 32;
	} else if (alen != 0 && inet_pton(AF_INET6, host, tmp.addr) == 1) {
		max = 128;
	} else {
		snprintf(err, errlen, "\"%s\" is not an IPv4 or IPv6 address",
		    word);
		return -1;
	}
	len = max;
	if (slash != NULL) {
		/* Digits only, bounded: no sign, no white space. */
		if (slash[1] == '\0' || strlen(slash + 1) > 3 ||
		    strspn(slash + 1, "0123456789") != strlen(slash + 1)) {
			snprintf(err, errlen, "\"%s\" is not a prefix length",
			    slash + 1);
			return -1;
		}
		len = 0;
		for (i = 1; slash[i] != '\0'; i++)
			len = len * 10 + (unsigned long)(slash[i] - '0');
		if (len > max) {
			snprintf(err, errlen, "prefix length %lu is longer "
			    "than %lu", len, max);
			return -1;
		}
	}
	/* An IPv4 prefix sits under ::ffff:0:0/96. An IPv6 prefix written
	 * inside that space is the same thing and is kept as given. */
	tmp.plen = (unsigned char)(max == 32 ? 96 + len : len);
	for (i = 0; i < 16; i++) {
		if (i * 8 >= tmp.plen)
			mask = 0xff;
		else if ((i + 1) * 8 <= tmp.plen)
			mask = 0;
		else
			mask = (unsigned char)(0xff >> (tmp.plen - i * 8));
		if (tmp.addr[i] & mask) {
			snprintf(err, errlen, "\"%s\" has bits set past the "
			    "prefix length", word);
			return -1;
		}
	}
	n = strcspn(act, " \t");
	for (i = 0; i <= CONF_ACL_DENY; i++) {
		if (n == strlen(action_names[i]) &&
		    memcmp(act, action_names[i], n) == 0)
			break;
	}
	if (n == 0 || i > CONF_ACL_DENY) {
		snprintf(err, errlen, "after %s: expected allow, refuse or "
		    "deny", word);
		return -1;
	}
	tmp.action = (unsigned char)i;
	act += n;
	act += strspn(act, " \t");
	if (*act != '\0') {
		snprintf(err, errlen, "unexpected \"%.64s\" after the action",
		    act);
		return -1;
	}
	*r = tmp;
	return 0;
}

void
acl_rule_str(const struct conf_acl *r, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	unsigned plen = r->plen;

	if (plen >= 96 && memcmp(r->addr, v4_mapped, 12) == 0) {
		inet_ntop(AF_INET, r->addr + 12, host, sizeof(host));
		plen -= 96;
	} else {
		inet_ntop(AF_INET6, r->addr, host, sizeof(host));
	}
	snprintf(buf, cap, "%s/%u %s", host, plen,
	    acl_action_name((enum conf_acl_action)r->action));
}
