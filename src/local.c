/* local.c: answers for special-use and locally served names (RFC 6761, 6303).
 *
 * The zones are one table of apex names in presentation form. A question
 * belongs to a zone when the zone's labels are the last labels of its name
 * (compared label by label, so "notlocalhost." and "xinvalid." are not
 * local); the longest such zone wins. The comparison runs on the question's
 * lowercased wire form against lowercase table text, so it is
 * case-insensitive. Every query asks, so before any of that local_tld()
 * looks at the bytes that end the name: a name whose last label is none of
 * the four top-level labels the zones live under (most names) costs a
 * switch on one byte and a comparison of a few.
 *
 * Each zone is either like localhost. (every name in it exists, with A
 * 127.0.0.1 and AAAA ::1) or empty like invalid.: only the apex exists,
 * with its SOA, plus for the two loopback reverse zones one name with a
 * PTR to localhost. (what Unbound serves). The names between that one and
 * the apex are empty non-terminals, which answer NODATA, not NXDOMAIN
 * (RFC 8020: NXDOMAIN would deny the name below them).
 *
 * The reply is built in a buffer on the stack (it is bounded: a question of
 * at most 259 bytes and a handful of fixed records) and copied out only when
 * it fits, so an ENOSPC return has not written to the caller's buffer. Owner
 * names are compression pointers into the echoed question: the answers'
 * owner is the question name, and the SOA's owner, the zone apex, is a
 * suffix of it.
 *
 * The CHAOS and Hesiod classes are answered here too (local_chaos_answer),
 * whether local-zones is on or not: they describe this server, not the
 * DNS, so none of them is forwarded. The four names servers answer in CH
 * TXT (version.bind, version.server, hostname.bind, id.server) give the
 * configured version or identity string, as Unbound's hide-version and
 * hide-identity do, and REFUSED when it is not set; anything else in CH or
 * HS is REFUSED.
 */
#include <string.h>

#include "local.h"

#define TYPE_PTR 12
#define TYPE_ANY 255
#define CLASS_IN 1
#define CLASS_CH 3
#define CLASS_HS 4
#define CLASS_ANY 255
#define EDNS_DO 0x8000

#define LOCAL_TTL 3600          /* A, AAAA, PTR */
#define SOA_TTL 10800           /* the SOA record itself */
#define SOA_SERIAL 1
#define SOA_REFRESH 3600
#define SOA_RETRY 1200
#define SOA_EXPIRE 604800
#define SOA_MINIMUM 10800

/* 12 header + 259 question + ANY at localhost (A, AAAA, SOA) + OPT is
 * below 400 bytes; the writer checks its bound regardless. */
#define REPLY_MAX 512
#define MAX_LABELS 128          /* 255 bytes of wire name hold fewer */

enum zone_kind {
	ZONE_LOCALHOST,         /* every name exists: A and AAAA */
	ZONE_EMPTY,             /* only the apex (and ptr_host) exist */
};

struct local_zone {
	const char *apex;       /* lowercase, dotted, without the root dot */
	enum zone_kind kind;
	/* A name relative to the apex ("" is the apex) with a PTR to
	 * localhost., or NULL. */
	const char *ptr_host;
};

static const struct local_zone zones[] = {
	/* RFC 6761 section 6.3, 6.4; RFC 7686. */
	{ "localhost", ZONE_LOCALHOST, NULL },
	{ "invalid", ZONE_EMPTY, NULL },
	{ "onion", ZONE_EMPTY, NULL },
	/* RFC 6303 section 4.1: RFC 1918 space. */
	{ "10.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "16.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "17.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "18.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "19.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "20.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "21.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "22.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "23.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "24.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "25.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "26.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "27.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "28.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "29.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "30.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "31.172.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "168.192.in-addr.arpa", ZONE_EMPTY, NULL },
	/* RFC 6303 section 4.2-4.5: this network, loopback, link-local,
	 * documentation, broadcast. */
	{ "0.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "127.in-addr.arpa", ZONE_EMPTY, "1.0.0" },
	{ "254.169.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "2.0.192.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "100.51.198.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "113.0.203.in-addr.arpa", ZONE_EMPTY, NULL },
	{ "255.255.255.255.in-addr.arpa", ZONE_EMPTY, NULL },
	/* RFC 6303 section 4.6-4.8: ::, ::1, ULA, link-local, and the
	 * documentation prefix 2001:db8::/32. */
	{ "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
	    "ip6.arpa", ZONE_EMPTY, NULL },
	{ "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
	    "ip6.arpa", ZONE_EMPTY, "" },
	{ "d.f.ip6.arpa", ZONE_EMPTY, NULL },
	{ "8.e.f.ip6.arpa", ZONE_EMPTY, NULL },
	{ "9.e.f.ip6.arpa", ZONE_EMPTY, NULL },
	{ "a.e.f.ip6.arpa", ZONE_EMPTY, NULL },
	{ "b.e.f.ip6.arpa", ZONE_EMPTY, NULL },
	{ "8.b.d.0.1.0.0.2.ip6.arpa", ZONE_EMPTY, NULL },
};

/* Wire names as string literals: the literal's terminating NUL is the root
 * label, so sizeof() is the wire length. Octal escapes, because a hex
 * escape would swallow the letters that follow it. */
static const uint8_t wire_localhost[] = "\011localhost";
static const uint8_t wire_nobody_invalid[] = "\006nobody\007invalid";

struct wbuf {
	uint8_t b[REPLY_MAX];
	size_t n;
	int over;               /* a write did not fit */
};

static int
w_room(struct wbuf *w, size_t k)
{
	if (w->over || sizeof(w->b) - w->n < k) {
		w->over = 1;
		return 0;
	}
	return 1;
}

static void
w_bytes(struct wbuf *w, const void *p, size_t k)
{
	if (!w_room(w, k))
		return;
	memcpy(w->b + w->n, p, k);
	w->n += k;
}

static void
w_u16(struct wbuf *w, uint16_t v)
{
	uint8_t p[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	w_bytes(w, p, sizeof(p));
}

static void
w_u32(struct wbuf *w, uint32_t v)
{
	w_u16(w, (uint16_t)(v >> 16));
	w_u16(w, (uint16_t)v);
}

static void
w_set16(struct wbuf *w, size_t at, uint16_t v)
{
	if (w->over || at + 2 > w->n)
		return;
	w->b[at] = (uint8_t)(v >> 8);
	w->b[at + 1] = (uint8_t)v;
}

/* An OPT record when the client sent EDNS, counted in ARCOUNT (the only
 * additional record we write): root owner, payload size in CLASS, DO in
 * TTL, no options. */
static void
w_opt(struct wbuf *w, const struct dnsmsg_query *q)
{
	if (!q->edns)
		return;
	w_bytes(w, "", 1);
	w_u16(w, DNS_TYPE_OPT);
	w_u16(w, q->udp_adv != 0 ? q->udp_adv : DNS_EDNS_UDP);
	w_u32(w, q->do_bit ? EDNS_DO : 0);
	w_u16(w, 0);
	w_set16(w, 10, 1);
}

/* Start a class IN record owned by the name at message offset owner;
 * returns where its RDLENGTH goes, for rr_end(). */
static size_t
rr_begin(struct wbuf *w, size_t owner, uint16_t type, uint32_t ttl)
{
	size_t at;

	w_u16(w, (uint16_t)(0xc000 | owner));
	w_u16(w, type);
	w_u16(w, CLASS_IN);
	w_u32(w, ttl);
	at = w->n;
	w_u16(w, 0);
	return at;
}

static void
rr_end(struct wbuf *w, size_t at)
{
	w_set16(w, at, (uint16_t)(w->n - at - 2));
}

static void
rr_soa(struct wbuf *w, size_t owner)
{
	size_t at = rr_begin(w, owner, DNS_TYPE_SOA, SOA_TTL);

	/* MNAME localhost. for every zone, as Unbound does. */
	w_bytes(w, wire_localhost, sizeof(wire_localhost));
	w_bytes(w, wire_nobody_invalid, sizeof(wire_nobody_invalid));
	w_u32(w, SOA_SERIAL);
	w_u32(w, SOA_REFRESH);
	w_u32(w, SOA_RETRY);
	w_u32(w, SOA_EXPIRE);
	w_u32(w, SOA_MINIMUM);
	rr_end(w, at);
}

/* Compare the labels of text (dotted, "" for none) from the right with
 * the name's labels at offsets lab[0..n) from the right. Returns how many
 * trailing labels agree and sets *text_labels to text's label count. */
static size_t
match_tail(const char *text, const uint8_t *name, const size_t *lab,
    size_t n, size_t *text_labels)
{
	const char *p = text + strlen(text), *start;
	size_t len, total = 0, matched = 0;
	int agree = 1;

	while (p > text) {
		start = p;
		while (start > text && start[-1] != '.')
			start--;
		len = (size_t)(p - start);
		if (agree && total < n && name[lab[n - 1 - total]] == len &&
		    memcmp(name + lab[n - 1 - total] + 1, start, len) == 0)
			matched++;
		else
			agree = 0;
		total++;
		p = start > text ? start - 1 : start;
	}
	*text_labels = total;
	return matched;
}

/* The top-level labels the zones live under, in wire form (length byte
 * first, no root label): every apex in zones[] ends in one of them. Their
 * last letters differ, which local_tld() relies on. */
static const uint8_t tld_arpa[] = "\004arpa";
static const uint8_t tld_localhost[] = "\011localhost";
static const uint8_t tld_invalid[] = "\007invalid";
static const uint8_t tld_onion[] = "\005onion";

/* Could the wire name (len bytes, the root label last) be in a local
 * zone? Every query asks, and most names are not, so this looks at the
 * name's tail only, without walking its labels: the bytes before the root
 * label must be one of the top-level labels above, length byte and all.
 * The last letter picks the one candidate. A name whose last label is one
 * of them always passes. One that only ends in the same bytes (a longer
 * last label such as "x\004arpa") passes too, and the label-wise zone
 * match turns it away. A byte loop rather than memcmp: the labels are
 * short, and without a call the caller's fast path stays small. */
static int
local_tld(const uint8_t *name, size_t len)
{
	const uint8_t *t, *p;
	size_t n, k;

	if (len < 2)
		return 0;
	switch (name[len - 2]) {
	case 'a':
		t = tld_arpa;
		n = sizeof(tld_arpa) - 1;
		break;
	case 't':
		t = tld_localhost;
		n = sizeof(tld_localhost) - 1;
		break;
	case 'd':
		t = tld_invalid;
		n = sizeof(tld_invalid) - 1;
		break;
	case 'n':
		t = tld_onion;
		n = sizeof(tld_onion) - 1;
		break;
	default:
		return 0;
	}
	if (len <= n)
		return 0;
	p = name + len - 1 - n;
	for (k = 0; k < n; k++)
		if (p[k] != t[k])
			return 0;
	return 1;
}

/* local_answer() for a name that local_tld() lets through. */
static int
zone_answer(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, uint8_t *out, size_t cap, size_t *out_len)
{
	struct wbuf w;
	const struct local_zone *zone = NULL;
	const uint8_t *name = q->q.wire;
	size_t lab[MAX_LABELS], nlab = 0, off, i, zl, best = 0, matched;
	size_t apex_off, rel, hl, an = 0, ns = 0;
	int exists, is_apex, is_host, rcode = DNS_RCODE_NOERROR;
	uint16_t qtype = q->q.qtype, flags;
	int ret;

	if (!q->has_question || q->q.end < DNS_HDR_LEN + 5 ||
	    q->q.end > query_len) {
		ret = 0;
		goto out;
	}

	/* Label offsets of the question name, without the root label. */
	for (off = 0; off < q->q.wire_len && name[off] != 0 &&
	    nlab < MAX_LABELS; off += 1 + (size_t)name[off])
		lab[nlab++] = off;
	if (nlab == 0) {
		ret = 0;
		goto out;
	}
	for (i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
		matched = match_tail(zones[i].apex, name, lab, nlab, &zl);
		if (matched == zl && zl > best) {
			zone = &zones[i];
			best = zl;
		}
	}
	if (zone == NULL) {
		ret = 0;
		goto out;
	}

	/* The apex starts at this label of the name, and the question name
	 * starts at message offset 12 without compression. */
	rel = nlab - best;
	apex_off = DNS_HDR_LEN + (rel > 0 ? lab[rel] : 0);
	is_apex = rel == 0;
	is_host = 0;
	exists = is_apex || zone->kind == ZONE_LOCALHOST;
	if (zone->ptr_host != NULL) {
		matched = match_tail(zone->ptr_host, name, lab, rel, &hl);
		if (matched == rel && rel <= hl) {
			/* The host itself, or an empty non-terminal above
			 * it. */
			exists = 1;
			is_host = rel == hl;
		}
	}

	memset(&w, 0, sizeof(w));
	flags = DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA |
	    (q->flags & (DNS_FLAG_RD | DNS_FLAG_CD));
	/* Our data exists in class IN only; another class gets REFUSED
	 * rather than going upstream. */
	if (q->q.qclass != CLASS_IN && q->q.qclass != CLASS_ANY) {
		flags &= (uint16_t)~DNS_FLAG_AA;
		rcode = DNS_RCODE_REFUSED;
	} else if (!exists) {
		rcode = DNS_RCODE_NXDOMAIN;
	}
	w_u16(&w, q->id);
	w_u16(&w, (uint16_t)(flags | rcode));
	w_u16(&w, 1);
	w_u16(&w, 0);           /* ANCOUNT, NSCOUNT, ARCOUNT set below */
	w_u16(&w, 0);
	w_u16(&w, 0);
	w_bytes(&w, query + DNS_HDR_LEN, q->q.end - DNS_HDR_LEN);
	if (rcode == DNS_RCODE_REFUSED)
		goto opt;

	if (exists && zone->kind == ZONE_LOCALHOST &&
	    (qtype == DNS_TYPE_A || qtype == TYPE_ANY)) {
		static const uint8_t a[4] = { 127, 0, 0, 1 };
		size_t at = rr_begin(&w, DNS_HDR_LEN, DNS_TYPE_A, LOCAL_TTL);

		w_bytes(&w, a, sizeof(a));
		rr_end(&w, at);
		an++;
	}
	if (exists && zone->kind == ZONE_LOCALHOST &&
	    (qtype == DNS_TYPE_AAAA || qtype == TYPE_ANY)) {
		static const uint8_t aaaa[16] = { [15] = 1 };
		size_t at = rr_begin(&w, DNS_HDR_LEN, DNS_TYPE_AAAA, LOCAL_TTL);

		w_bytes(&w, aaaa, sizeof(aaaa));
		rr_end(&w, at);
		an++;
	}
	if (is_host && (qtype == TYPE_PTR || qtype == TYPE_ANY)) {
		size_t at = rr_begin(&w, DNS_HDR_LEN, TYPE_PTR, LOCAL_TTL);

		w_bytes(&w, wire_localhost, sizeof(wire_localhost));
		rr_end(&w, at);
		an++;
	}
	if (is_apex && (qtype == DNS_TYPE_SOA || qtype == TYPE_ANY)) {
		rr_soa(&w, apex_off);
		an++;
	}
	/* NXDOMAIN and NODATA carry the SOA for negative caching (RFC
	 * 2308 section 3). */
	if (an == 0) {
		rr_soa(&w, apex_off);
		ns++;
	}
	w_set16(&w, 6, (uint16_t)an);
	w_set16(&w, 8, (uint16_t)ns);

opt:
	w_opt(&w, q);
	if (w.over || w.n > cap) {
		ret = DNSMSG_ENOSPC;
		goto out;
	}
	memcpy(out, w.b, w.n);
	*out_len = w.n;
	ret = 1;
out:
	return ret;
}

int
local_answer(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, uint8_t *out, size_t cap, size_t *out_len)
{
	/* Every query passes here: most names end in none of the four
	 * top-level labels the zones live under, so that is looked at
	 * first, before zone_answer() sets up its label table and reply
	 * buffer. */
	if (!q->has_question || !local_tld(q->q.wire, q->q.wire_len))
		return 0;
	return zone_answer(query, query_len, q, out, cap, out_len);
}

/* The CH TXT names, in lowercase wire form: which string each gives. */
enum chaos_kind {
	CHAOS_VERSION,
	CHAOS_IDENTITY,
};

static const struct {
	const uint8_t *wire;
	size_t len;
	enum chaos_kind kind;
} chaos_names[] = {
	/* As for the wire names above, sizeof counts the root label. */
#define CHAOS_NAME(lit, kind) { (const uint8_t *)lit, sizeof(lit), kind }
	CHAOS_NAME("\007version\004bind", CHAOS_VERSION),
	CHAOS_NAME("\007version\006server", CHAOS_VERSION),
	CHAOS_NAME("\010hostname\004bind", CHAOS_IDENTITY),
	CHAOS_NAME("\002id\006server", CHAOS_IDENTITY),
#undef CHAOS_NAME
};

/* local_chaos_answer() for a query in class CH or HS. */
static int
chaos_answer(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, const char *identity, const char *version,
    uint8_t *out, size_t cap, size_t *out_len)
{
	struct wbuf w;
	const char *text = NULL;
	size_t i, tlen = 0, at;
	uint16_t flags, qtype = q->q.qtype;
	uint8_t tl;
	int ret;

	if (!q->has_question || q->q.end < DNS_HDR_LEN + 5 ||
	    q->q.end > query_len ||
	    (q->q.qclass != CLASS_CH && q->q.qclass != CLASS_HS)) {
		ret = 0;
		goto out;
	}
	if (q->q.qclass == CLASS_CH &&
	    (qtype == DNS_TYPE_TXT || qtype == TYPE_ANY)) {
		for (i = 0; i < sizeof(chaos_names) / sizeof(chaos_names[0]);
		    i++) {
			if (q->q.wire_len == chaos_names[i].len &&
			    memcmp(q->q.wire, chaos_names[i].wire,
			    chaos_names[i].len) == 0) {
				text = chaos_names[i].kind == CHAOS_VERSION ?
				    version : identity;
				break;
			}
		}
	}
	if (text != NULL) {
		tlen = strlen(text);
		/* One character-string: conf keeps them shorter, but an
		 * empty or overlong one is treated as not set. */
		if (tlen == 0 || tlen > 255)
			text = NULL;
	}

	memset(&w, 0, sizeof(w));
	/* Our own data, so AA, as Unbound sets it; RA and CD as for the
	 * local zones. */
	flags = DNS_FLAG_QR | DNS_FLAG_RA |
	    (q->flags & (DNS_FLAG_RD | DNS_FLAG_CD));
	flags |= text != NULL ? DNS_FLAG_AA : DNS_RCODE_REFUSED;
	w_u16(&w, q->id);
	w_u16(&w, flags);
	w_u16(&w, 1);
	w_u16(&w, text != NULL ? 1 : 0);
	w_u16(&w, 0);
	w_u16(&w, 0);
	w_bytes(&w, query + DNS_HDR_LEN, q->q.end - DNS_HDR_LEN);
	if (text != NULL) {
		/* TTL 0: the answer is about this process, which a reload
		 * may change. */
		w_u16(&w, (uint16_t)(0xc000 | DNS_HDR_LEN));
		w_u16(&w, DNS_TYPE_TXT);
		w_u16(&w, CLASS_CH);
		w_u32(&w, 0);
		at = w.n;
		w_u16(&w, 0);
		tl = (uint8_t)tlen;
		w_bytes(&w, &tl, 1);
		w_bytes(&w, text, tlen);
		rr_end(&w, at);
	}
	w_opt(&w, q);
	if (w.over || w.n > cap) {
		ret = DNSMSG_ENOSPC;
		goto out;
	}
	memcpy(out, w.b, w.n);
	*out_len = w.n;
	ret = 1;
out:
	return ret;
}

int
local_chaos_answer(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, const char *identity, const char *version,
    uint8_t *out, size_t cap, size_t *out_len)
{
	/* Every query passes here, nearly all in class IN: as in
	 * local_answer(), the test that turns them away comes first. */
	if (q->q.qclass != CLASS_CH && q->q.qclass != CLASS_HS)
		return 0;
	return chaos_answer(query, query_len, q, identity, version, out, cap,
	    out_len);
}
