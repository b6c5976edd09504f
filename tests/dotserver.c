/* dotserver.c: a fault-injecting DNS-over-TLS (RFC 7858) server for tests.
 *
 * The integration tests point dotproxy at this server and steer it through
 * the first label of the query name (nx, nodata, delay200, garbage, ...; see
 * usage()), through command-line switches that apply to every connection
 * (--reverse, --close-after, --reset-after, --stall-after, --answer-even,
 * --refuse, --delay-ms, --handshake-delay-ms, --keepalive-ms, --ttl) and
 * through two signals: SIGUSR1 takes the server "down" (every open
 * connection is shut down, new ones are accepted and closed at once before
 * TLS) and SIGUSR2 brings it back "up", on the same port. Likewise SIGRTMIN
 * makes it "silent" (queries are still read and logged, but none is
 * answered, except every --silent-pass'th: an upstream that rate-limits by
 * dropping) and SIGRTMIN+1 makes it answer again. The signals
 * set a state rather than toggle one, so sending one twice is harmless.
 * SIGHUP, with --alt-cert and --alt-key, makes new handshakes present that
 * certificate instead (once: again is harmless) while the session-ticket
 * key stays, so that clients can still resume sessions made before; open
 * connections are left alone.
 * Every event is one line on stdout, flushed at once, because the tests
 * wait on and count them:
 *
 *	port N                       once, after bind
 *	accept                       TCP connection accepted
 *	refused                      --refuse: closed before TLS
 *	refused down                 closed before TLS: the server is down
 *	handshake ok resumed=<0|1>   resumed=1: a TLS session ticket was used
 *	handshake failed <reason>
 *	query id=<hex4> name=<lowercase name.> type=<number> len=<bytes>
 *	    edns=<0|1> do=<0|1> pad=<0|1> keepalive=<0|1> ecs=<0|1>
 *	    rd=<0|1> ad=<0|1> cd=<0|1> class=<number>
 *	                             (one line; pad, keepalive and ecs say
 *	                             whether EDNS options 12, 11, 8 were sent;
 *	                             rd, ad, cd are the header's bits)
 *	malformed                    unparsable frame; the connection closes
 *	answer id=<hex4>             an answer (or garbage) was written
 *	reset                        the connection was closed with a TCP RST
 *	close                        the connection is gone
 *	down | up                    after SIGUSR1 | SIGUSR2 took effect
 *	cert swapped                 after SIGHUP took effect
 *	silent | answering           after SIGRTMIN | SIGRTMIN+1 took effect
 *
 * "answer" is logged after the write, so a client may hold the answer
 * before the line appears: tests wait for it rather than count it at once.
 * A connection ends on EOF, on an error or malformed input (pending
 * answers are dropped), on a "close" query (answers already due go out
 * first), on the --close-after'th query (all earlier answers go out
 * first, delayed ones included), on the --reset-after'th query (likewise,
 * then an RST instead of a FIN) or when the server goes down (pending
 * answers are dropped). "down" is logged after every open connection has
 * been shut down, so a test that saw it knows no old connection answers.
 *
 * Threads: the main thread accepts; one detached thread per connection does
 * the handshake and then reads queries; it starts one writer thread for the
 * connection that owns all sends, so delayed, held (--reverse) and immediate
 * answers go through one queue sorted by due time. GnuTLS allows one thread
 * to receive while another sends on the same session. The reader joins the
 * writer before freeing the connection, so the writer never outlives it;
 * shutdown(2) on the socket unblocks a writer stuck in a send. A dedicated
 * thread waits for signals: SIGTERM/SIGINT exit the process with status 0,
 * SIGUSR1/SIGUSR2 set the down state. Every connection is on a list (under
 * conns_lock) from accept to just before its socket is closed, so going
 * down can shutdown(2) each socket without racing its close.
 *
 * TLS session tickets are always on, with one key made at start, so that
 * clients can test resumption; the handshake line says whether it resumed.
 *
 * Query parsing is by hand and bounds-checked; the question is echoed byte
 * for byte and owner names in answers are compression pointers into it.
 */
#define _GNU_SOURCE             /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#define MAX_FRAME 65535
#define ANSWER_MAX 4096
#define HOLD_MS 500             /* --reverse: longest time an answer is held */
#define DEFAULT_TTL 300
#define SOA_TTL 60
#define SOA_MINIMUM 30
#define MAX_CHAIN 16

#define T_A 1
#define T_CNAME 5
#define T_SOA 6
#define T_TXT 16
#define T_AAAA 28
#define T_DNAME 39
#define T_OPT 41
#define T_ANY 255

#define OPT_ECS 8               /* EDNS option codes */
#define OPT_KEEPALIVE 11
#define OPT_PADDING 12
#define OPT_EDE 15

#define RCODE_NOERROR 0
#define RCODE_SERVFAIL 2
#define RCODE_NXDOMAIN 3

/* --stall-after, --reset-after not given (the value UINT_MAX, which
 * nobody counts up to, means the same). */
#define UNSET UINT_MAX

struct options {
	const char *cert;
	const char *key;
	const char *addr;
	int port;
	unsigned reverse;
	unsigned close_after;
	unsigned reset_after;   /* UNSET, or 0: right after the handshake */
	unsigned stall_after;   /* UNSET, or answer this many, then none */
	int answer_even;
	int refuse;
	unsigned delay_ms;
	unsigned handshake_delay_ms;
	unsigned keepalive_ms;  /* 0: no edns-tcp-keepalive in answers */
	unsigned silent_pass;   /* while silent, answer every Nth; 0 none */
	uint32_t ttl;
	const char *alt_cert;   /* SIGHUP swaps these in */
	const char *alt_key;
};

static struct options opt = {
	.addr = "127.0.0.1",
	.reset_after = UNSET,
	.stall_after = UNSET,
	.ttl = DEFAULT_TTL,
};
static gnutls_certificate_credentials_t creds;
static gnutls_certificate_credentials_t alt_creds;  /* or NULL */
static int use_alt;             /* under conns_lock */
static gnutls_datum_t ticket_key;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

struct conn;
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *conns;      /* every open connection, under conns_lock */
static int down;                /* under conns_lock */
static int silent;              /* under conns_lock */
static unsigned silent_seen;    /* queries read while silent, likewise */

/* One frame waiting to be written: the 2-byte length prefix is in buf. */
struct item {
	struct item *next;
	uint64_t due;           /* monotonic ms */
	uint16_t id;
	size_t len;
	unsigned char buf[];
};

struct conn {
	struct conn *next;      /* on conns */
	int fd;
	gnutls_session_t session;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* writer waits here; monotonic clock */
	int closing;            /* writer: stop now */
	int draining;           /* writer: send what is due by drain_limit, stop */
	uint64_t drain_limit;
	struct item *queue;     /* sorted by due, FIFO among equal dues */
	struct item *held;      /* --reverse: in arrival order */
	struct item **held_tail;
	unsigned nheld;
	uint64_t held_since;
	pthread_t writer;
	int writer_started;
	unsigned nqueries;
};

/* What the parser learned about a query; pointers go into the frame. */
struct query {
	uint16_t id;
	uint16_t flags;
	const unsigned char *qraw;      /* question: name, type, class */
	size_t qrawlen;
	const unsigned char *label;     /* first label, not lowercased */
	size_t labellen;
	size_t nlabels;
	uint16_t qtype;
	uint16_t qclass;
	size_t len;                     /* the whole message */
	int has_opt;
	int do_bit;
	int pad;                        /* EDNS options seen */
	int keepalive;
	int ecs;
	char text[1100];                /* presentation form, lowercased */
};

/* A bounded output buffer: a write past the end sets overflow. */
struct wbuf {
	unsigned char b[ANSWER_MAX];
	size_t len;
	int overflow;
};

static void
event(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void
put_bytes(struct wbuf *w, const void *p, size_t n)
{
	if (w->overflow || n > sizeof(w->b) - w->len) {
		w->overflow = 1;
		return;
	}
	memcpy(w->b + w->len, p, n);
	w->len += n;
}

static void
put8(struct wbuf *w, unsigned v)
{
	unsigned char c = v & 0xff;

	put_bytes(w, &c, 1);
}

static void
put16(struct wbuf *w, unsigned v)
{
	unsigned char c[2] = { (v >> 8) & 0xff, v & 0xff };

	put_bytes(w, c, 2);
}

static void
put32(struct wbuf *w, uint32_t v)
{
	unsigned char c[4] = { v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff,
	    v & 0xff };

	put_bytes(w, c, 4);
}

/* Patch a 16-bit value written earlier (a count or an RDLENGTH). */
static void
patch16(struct wbuf *w, size_t at, unsigned v)
{
	if (w->overflow || at + 2 > w->len)
		return;
	w->b[at] = (v >> 8) & 0xff;
	w->b[at + 1] = v & 0xff;
}

/* A reference to a name: a compression pointer, or the root label if 0. */
static void
put_ref(struct wbuf *w, size_t off)
{
	if (off == 0)
		put8(w, 0);
	else
		put16(w, 0xc000 | off);
}

static void
put_label(struct wbuf *w, const char *s)
{
	size_t n = strlen(s);

	put8(w, n);
	put_bytes(w, s, n);
}

/* Starts an RR; returns where its RDLENGTH goes so the caller can patch it. */
static size_t
put_rr_head(struct wbuf *w, size_t owner, unsigned type, unsigned class,
    uint32_t ttl)
{
	size_t at;

	put_ref(w, owner);
	put16(w, type);
	put16(w, class);
	put32(w, ttl);
	at = w->len;
	put16(w, 0);
	return at;
}

static void
end_rr(struct wbuf *w, size_t rdlen_at)
{
	patch16(w, rdlen_at, w->len - rdlen_at - 2);
}

/* Appends one label to the presentation form, escaping like dig does. */
static void
text_label(char *t, size_t *tl, const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = p[i];

		if (c >= 'A' && c <= 'Z')
			c = c - 'A' + 'a';
		if (c == '.' || c == '\\' || c == '"' || c == ';' ||
		    c == '(' || c == ')') {
			t[(*tl)++] = '\\';
			t[(*tl)++] = c;
		} else if (c <= ' ' || c >= 0x7f) {
			*tl += sprintf(t + *tl, "\\%03u", c);
		} else {
			t[(*tl)++] = c;
		}
	}
	t[(*tl)++] = '.';
	t[*tl] = '\0';
}

/* Skips a possibly compressed name in a resource record; -1 if malformed. */
static int
skip_name(const unsigned char *m, size_t len, size_t *off)
{
	size_t o = *off;

	for (;;) {
		unsigned l;

		if (o >= len)
			return -1;
		l = m[o];
		if (l == 0) {
			o++;
			break;
		}
		if ((l & 0xc0) == 0xc0) {
			if (o + 2 > len)
				return -1;
			o += 2;
			break;
		}
		if (l & 0xc0)
			return -1;
		o += 1 + l;
	}
	*off = o;
	return 0;
}

/* Notes which EDNS options an OPT RDATA holds; -1 if they overrun it. */
static int
parse_options(const unsigned char *p, size_t len, struct query *q)
{
	size_t off = 0;

	while (off < len) {
		unsigned code, olen;

		if (off + 4 > len)
			return -1;
		code = (p[off] << 8) | p[off + 1];
		olen = (p[off + 2] << 8) | p[off + 3];
		off += 4;
		if (off + olen > len)
			return -1;
		off += olen;
		if (code == OPT_PADDING)
			q->pad = 1;
		else if (code == OPT_KEEPALIVE)
			q->keepalive = 1;
		else if (code == OPT_ECS)
			q->ecs = 1;
	}
	return 0;
}

/* Parses a query message; 0 if usable, -1 if malformed. */
static int
parse_query(const unsigned char *m, size_t len, struct query *q)
{
	size_t off = 12, namelen = 1, tl = 0, i;
	unsigned counts[3];

	memset(q, 0, sizeof(*q));
	if (len < 12)
		return -1;
	q->len = len;
	q->id = (m[0] << 8) | m[1];
	q->flags = (m[2] << 8) | m[3];
	if (q->flags & 0x8000)
		return -1;
	if (((m[4] << 8) | m[5]) != 1)
		return -1;
	for (i = 0; i < 3; i++)
		counts[i] = (m[6 + 2 * i] << 8) | m[7 + 2 * i];
	for (;;) {
		unsigned l;

		if (off >= len)
			return -1;
		l = m[off];
		if (l == 0) {
			off++;
			break;
		}
		/* No compression in a question that starts at offset 12. */
		if (l & 0xc0)
			return -1;
		if (off + 1 + l > len)
			return -1;
		namelen += 1 + l;
		if (namelen > 255)
			return -1;
		if (q->nlabels == 0) {
			q->label = m + off + 1;
			q->labellen = l;
		}
		q->nlabels++;
		text_label(q->text, &tl, m + off + 1, l);
		off += 1 + l;
	}
	if (tl == 0)
		strcpy(q->text, ".");
	if (off + 4 > len)
		return -1;
	q->qtype = (m[off] << 8) | m[off + 1];
	q->qclass = (m[off + 2] << 8) | m[off + 3];
	off += 4;
	q->qraw = m + 12;
	q->qrawlen = off - 12;
	/* Each RR takes at least 11 bytes, so lying counts end at len. */
	for (i = 0; i < 3; i++) {
		unsigned n;

		for (n = 0; n < counts[i]; n++) {
			unsigned type, rdlen;

			if (skip_name(m, len, &off) < 0 || off + 10 > len)
				return -1;
			type = (m[off] << 8) | m[off + 1];
			rdlen = (m[off + 8] << 8) | m[off + 9];
			if (i == 2 && type == T_OPT) {
				q->has_opt = 1;
				q->do_bit = (m[off + 6] & 0x80) != 0;
			}
			off += 10;
			if (off + rdlen > len)
				return -1;
			if (i == 2 && type == T_OPT &&
			    parse_options(m + off, rdlen, q) < 0)
				return -1;
			off += rdlen;
		}
	}
	return 0;
}

static int
label_is(const struct query *q, const char *prefix)
{
	size_t n = strlen(prefix), i;

	if (q->labellen < n)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = q->label[i];

		if (c >= 'A' && c <= 'Z')
			c = c - 'A' + 'a';
		if (c != (unsigned char)prefix[i])
			return 0;
	}
	return 1;
}

/* The number right after prefix in the first label, or def if none. */
static uint32_t
label_num(const struct query *q, const char *prefix, uint32_t def)
{
	size_t i = strlen(prefix);
	uint64_t v = 0;

	if (i >= q->labellen)
		return def;
	for (; i < q->labellen; i++) {
		if (q->label[i] < '0' || q->label[i] > '9')
			return def;
		v = v * 10 + (q->label[i] - '0');
		if (v > UINT32_MAX)
			v = UINT32_MAX;
	}
	return v;
}

static void
put_soa(struct wbuf *w, unsigned class, size_t zone)
{
	size_t at = put_rr_head(w, zone, T_SOA, class, SOA_TTL);

	put_label(w, "ns");
	put_ref(w, zone);
	put_label(w, "hostmaster");
	put_ref(w, zone);
	put32(w, 2024010101);
	put32(w, 3600);
	put32(w, 600);
	put32(w, 86400);
	put32(w, SOA_MINIMUM);
	end_rr(w, at);
}

static void
put_txt(struct wbuf *w, size_t owner, unsigned class, uint32_t ttl,
    unsigned nstrings, size_t slen)
{
	size_t at = put_rr_head(w, owner, T_TXT, class, ttl);
	unsigned i;

	if (nstrings == 0) {
		put_label(w, "hello");
	} else {
		for (i = 0; i < nstrings; i++) {
			unsigned char s[255];

			memset(s, 'a' + i % 26, slen);
			put8(w, slen);
			put_bytes(w, s, slen);
		}
	}
	end_rr(w, at);
}

/* The default answer for owner; returns 1 if an RR was written, 0 if the
 * type has no data here (the caller adds the SOA). */
static int
put_default(struct wbuf *w, const struct query *q, size_t owner, uint32_t ttl)
{
	static const unsigned char a[4] = { 192, 0, 2, 1 };
	static const unsigned char aaaa[16] = { 0x20, 0x01, 0x0d, 0xb8,
	    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	size_t at;

	switch (q->qtype) {
	case T_A:
	case T_ANY:
		at = put_rr_head(w, owner, T_A, q->qclass, ttl);
		put_bytes(w, a, sizeof(a));
		end_rr(w, at);
		return 1;
	case T_AAAA:
		at = put_rr_head(w, owner, T_AAAA, q->qclass, ttl);
		put_bytes(w, aaaa, sizeof(aaaa));
		end_rr(w, at);
		return 1;
	case T_TXT:
		put_txt(w, owner, q->qclass, ttl, 0, 0);
		return 1;
	default:
		return 0;
	}
}

/* Builds the answer for q into w (without the length prefix). */
static void
build_answer(struct wbuf *w, const struct query *q)
{
	unsigned rcode = RCODE_NOERROR, an = 0, ns = 0, ar = 0;
	size_t zone = 0, flen = q->labellen;
	uint16_t flags;

	put16(w, q->id);
	put16(w, 0);
	put16(w, 1);
	put16(w, 0);
	put16(w, 0);
	put16(w, 0);
	if (label_is(q, "wrongq")) {
		/* Same question but for "x" + name: the client must notice. */
		if (flen < 63) {
			put8(w, flen + 1);
			put8(w, 'x');
			put_bytes(w, q->qraw + 1, q->qrawlen - 1);
			flen++;
		} else {
			put_label(w, "x");
			put_bytes(w, q->qraw, q->qrawlen);
			flen = 1;
		}
	} else {
		put_bytes(w, q->qraw, q->qrawlen);
	}
	/* The zone is the parent of the name, or the root. */
	if (q->nlabels >= 2)
		zone = 12 + 1 + flen;

	if (label_is(q, "nx")) {
		rcode = RCODE_NXDOMAIN;
		put_soa(w, q->qclass, zone);
		ns++;
	} else if (label_is(q, "nodata")) {
		put_soa(w, q->qclass, zone);
		ns++;
	} else if (label_is(q, "nosoa")) {
		rcode = RCODE_NXDOMAIN;
	} else if (label_is(q, "servfail")) {
		rcode = RCODE_SERVFAIL;
	} else if (label_is(q, "ede6")) {
		/* The OPT below carries EDE 6 (DNSSEC Bogus), RFC 8914. */
		rcode = RCODE_SERVFAIL;
	} else if (label_is(q, "dname")) {
		/* RFC 6672: DNAME zone -> example.net. at the parent, the
		 * CNAME synthesised from it with TTL 0 (as some servers
		 * send it), then the target's default answer. */
		size_t at = put_rr_head(w, zone, T_DNAME, q->qclass, opt.ttl);
		size_t target, dname_rd = at + 2;

		put_label(w, "example");
		put_label(w, "net");
		put8(w, 0);
		end_rr(w, at);
		at = put_rr_head(w, 12, T_CNAME, q->qclass, 0);
		target = w->len;
		put8(w, flen);
		put_bytes(w, q->qraw + 1, flen);
		put_ref(w, dname_rd);
		end_rr(w, at);
		an += 2;
		if (put_default(w, q, target, opt.ttl))
			an++;
	} else if (label_is(q, "big")) {
		put_txt(w, 12, q->qclass, opt.ttl, 20, 100);
		an++;
	} else if (label_is(q, "mid")) {
		put_txt(w, 12, q->qclass, opt.ttl, 8, 100);
		an++;
	} else if (label_is(q, "chain")) {
		uint32_t n = label_num(q, "chain", 0);
		size_t owner = 12;

		if (n > MAX_CHAIN)
			n = MAX_CHAIN;
		while (n > 0) {
			char lab[16];
			size_t at = put_rr_head(w, owner, T_CNAME, q->qclass,
			    opt.ttl);

			n--;
			owner = w->len;
			snprintf(lab, sizeof(lab), "chain%u", (unsigned)n);
			put_label(w, lab);
			put_ref(w, zone);
			end_rr(w, at);
			an++;
		}
		if (put_default(w, q, owner, opt.ttl))
			an++;
	} else {
		uint32_t ttl = label_is(q, "ttl") ?
		    label_num(q, "ttl", opt.ttl) : opt.ttl;

		if (put_default(w, q, 12, ttl)) {
			an++;
		} else {
			put_soa(w, q->qclass, zone);
			ns++;
		}
	}
	/* RFC 7828: keepalive only to a client that sent an OPT. */
	if (q->has_opt) {
		size_t at;

		put8(w, 0);
		put16(w, T_OPT);
		put16(w, 4096);
		put32(w, 0);
		at = w->len;
		put16(w, 0);
		if (opt.keepalive_ms > 0) {
			unsigned units = opt.keepalive_ms / 100;

			put16(w, OPT_KEEPALIVE);
			put16(w, 2);
			put16(w, units > 0xffff ? 0xffff : units);
		}
		if (label_is(q, "ede6")) {
			put16(w, OPT_EDE);
			put16(w, 6);
			put16(w, 6);
			put_bytes(w, "test", 4);
		}
		end_rr(w, at);
		ar++;
	}
	/* QR, opcode as asked, AA, RD as asked, RA; AD for "secure" names
	 * when the query set AD or DO (a validator following RFC 6840 5.8),
	 * for "adalways" names whoever asks (one that does not). */
	flags = 0x8000 | (q->flags & 0x7800) | 0x0400 | (q->flags & 0x0100) |
	    0x0080 | rcode;
	if ((label_is(q, "secure") && ((q->flags & 0x0020) || q->do_bit)) ||
	    label_is(q, "adalways"))
		flags |= 0x0020;
	patch16(w, 2, flags);
	patch16(w, 6, an);
	patch16(w, 8, ns);
	patch16(w, 10, ar);
}

static struct item *
item_new(uint16_t id, const unsigned char *msg, size_t len, uint64_t due)
{
	struct item *it = malloc(sizeof(*it) + 2 + len);

	if (it == NULL)
		return NULL;
	it->next = NULL;
	it->due = due;
	it->id = id;
	it->len = 2 + len;
	it->buf[0] = len >> 8;
	it->buf[1] = len & 0xff;
	memcpy(it->buf + 2, msg, len);
	return it;
}

static void
items_free(struct item *it)
{
	while (it != NULL) {
		struct item *next = it->next;

		free(it);
		it = next;
	}
}

/* Inserts after every item due no later, so equal dues stay in order.
 * Called with c->mu held. */
static void
queue_insert(struct conn *c, struct item *it)
{
	struct item **pp = &c->queue;

	while (*pp != NULL && (*pp)->due <= it->due)
		pp = &(*pp)->next;
	it->next = *pp;
	*pp = it;
}

/* Moves the held answers to the queue, last arrived first, all due now.
 * Called with c->mu held. */
static void
flush_held(struct conn *c, uint64_t now)
{
	struct item *rev = NULL, *it = c->held, *next;
	struct item **pp;

	while (it != NULL) {
		next = it->next;
		it->next = rev;
		rev = it;
		it = next;
	}
	/* Keep the reversed run together, behind anything already due. */
	pp = &c->queue;
	while (*pp != NULL && (*pp)->due <= now)
		pp = &(*pp)->next;
	for (it = rev; it != NULL; it = next) {
		next = it->next;
		it->due = now;
		it->next = *pp;
		*pp = it;
		pp = &it->next;
	}
	c->held = NULL;
	c->held_tail = &c->held;
	c->nheld = 0;
}

static void
conn_enqueue(struct conn *c, struct item *it)
{
	uint64_t now = now_ms();

	pthread_mutex_lock(&c->mu);
	if (opt.reverse > 0) {
		if (c->nheld == 0)
			c->held_since = now;
		*c->held_tail = it;
		c->held_tail = &it->next;
		c->nheld++;
		if (c->nheld >= opt.reverse)
			flush_held(c, now);
	} else {
		queue_insert(c, it);
	}
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static int
send_all(struct conn *c, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = gnutls_record_send(c->session, p, n);

		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r < 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

static void *
writer_main(void *arg)
{
	struct conn *c = arg;

	pthread_mutex_lock(&c->mu);
	while (!c->closing) {
		uint64_t now = now_ms(), wake = UINT64_MAX;

		if (c->nheld > 0 && (now >= c->held_since + HOLD_MS ||
		    (c->draining && c->drain_limit == UINT64_MAX)))
			flush_held(c, now);
		if (c->draining && (c->queue == NULL ||
		    c->queue->due > c->drain_limit))
			break;
		if (c->queue != NULL && c->queue->due <= now) {
			struct item *it = c->queue;
			int r;

			c->queue = it->next;
			pthread_mutex_unlock(&c->mu);
			r = send_all(c, it->buf, it->len);
			if (r == 0)
				event("answer id=%04x", it->id);
			free(it);
			if (r < 0)
				shutdown(c->fd, SHUT_RDWR);
			pthread_mutex_lock(&c->mu);
			continue;
		}
		if (c->queue != NULL)
			wake = c->queue->due;
		if (c->nheld > 0 && c->held_since + HOLD_MS < wake)
			wake = c->held_since + HOLD_MS;
		if (wake == UINT64_MAX) {
			pthread_cond_wait(&c->cv, &c->mu);
		} else {
			struct timespec ts;

			ts.tv_sec = wake / 1000;
			ts.tv_nsec = (wake % 1000) * 1000000;
			pthread_cond_timedwait(&c->cv, &c->mu, &ts);
		}
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* Reads exactly n bytes; 1 on success, 0 on clean EOF before any byte,
 * -1 on error or EOF in the middle. */
static int
recv_all(struct conn *c, unsigned char *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = gnutls_record_recv(c->session, p + got, n - got);

		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION)
			return got == 0 ? 0 : -1;
		if (r < 0)
			return -1;
		got += r;
	}
	return 1;
}

/* How a connection ends: what still goes out before the socket closes. */
enum close_how {
	CLOSE_NOW,              /* EOF, errors, malformed input */
	CLOSE_DRAIN_DUE,        /* "close" query: answers already due go out */
	CLOSE_DRAIN_ALL,        /* --close-after: all earlier answers go out */
	CLOSE_RESET,            /* --reset-after: the same, then an RST */
};

/* While silent: 1 if this query goes unanswered. */
static int
silent_drops(void)
{
	int drop = 0;

	pthread_mutex_lock(&conns_lock);
	if (silent) {
		silent_seen++;
		drop = opt.silent_pass == 0 || silent_seen % opt.silent_pass;
	}
	pthread_mutex_unlock(&conns_lock);
	return drop;
}

/* Handles one query; returns 0 to keep reading, -1 to close as *how says. */
static int
handle_frame(struct conn *c, const unsigned char *m, size_t len,
    enum close_how *how)
{
	struct query q;
	struct wbuf *w = NULL;
	struct item *it = NULL;
	uint64_t due;
	int ret = -1;

	if (parse_query(m, len, &q) < 0) {
		event("malformed");
		goto out;
	}
	c->nqueries++;
	event("query id=%04x name=%s type=%u len=%zu edns=%d do=%d pad=%d "
	    "keepalive=%d ecs=%d rd=%d ad=%d cd=%d class=%u", q.id, q.text,
	    q.qtype, q.len, q.has_opt, q.do_bit, q.pad, q.keepalive, q.ecs,
	    (q.flags & 0x0100) != 0, (q.flags & 0x0020) != 0,
	    (q.flags & 0x0010) != 0, q.qclass);
	if (opt.close_after > 0 && c->nqueries >= opt.close_after) {
		*how = CLOSE_DRAIN_ALL;
		goto out;
	}
	if (opt.reset_after != UNSET && c->nqueries >= opt.reset_after) {
		*how = CLOSE_RESET;
		goto out;
	}
	/* --stall-after, --answer-even: read and logged, never answered. */
	if (opt.stall_after != UNSET && c->nqueries > opt.stall_after) {
		ret = 0;
		goto out;
	}
	if (opt.answer_even && (q.id & 1)) {
		ret = 0;
		goto out;
	}
	if (silent_drops()) {
		ret = 0;
		goto out;
	}
	if (label_is(&q, "close")) {
		*how = CLOSE_DRAIN_DUE;
		goto out;
	}
	if (label_is(&q, "drop")) {
		ret = 0;
		goto out;
	}
	due = now_ms() + opt.delay_ms;
	if (label_is(&q, "delay"))
		due += label_num(&q, "delay", 0);
	if (label_is(&q, "garbage")) {
		unsigned char g[40];

		gnutls_rnd(GNUTLS_RND_NONCE, g, sizeof(g));
		g[0] = q.id >> 8;
		g[1] = q.id & 0xff;
		it = item_new(q.id, g, sizeof(g), due);
	} else {
		w = calloc(1, sizeof(*w));
		if (w == NULL)
			goto out;
		build_answer(w, &q);
		if (w->overflow) {
			fprintf(stderr, "dotserver: answer too large\n");
			goto out;
		}
		it = item_new(q.id, w->b, w->len, due);
		/* "lie": the length prefix claims 60000 bytes, the message
		 * that follows is the short answer; later ones come framed
		 * normally, so the client reads them out of step. */
		if (it != NULL && label_is(&q, "lie")) {
			it->buf[0] = 60000 >> 8;
			it->buf[1] = 60000 & 0xff;
		}
	}
	if (it == NULL)
		goto out;
	conn_enqueue(c, it);
	ret = 0;
out:
	free(w);
	return ret;
}

/* Takes c off the list, so going down no longer touches its socket. */
static void
conn_unlist(struct conn *c)
{
	struct conn **pp;

	pthread_mutex_lock(&conns_lock);
	for (pp = &conns; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&conns_lock);
}

static int
is_down(void)
{
	int d;

	pthread_mutex_lock(&conns_lock);
	d = down;
	pthread_mutex_unlock(&conns_lock);
	return d;
}

static void
conn_close(struct conn *c, enum close_how how)
{
	struct linger lg = { 1, 0 };

	if (c->writer_started && how != CLOSE_NOW) {
		/* The peer is reading, so the writer finishes; a peer that
		 * stops reading blocks it, which SIGTERM still ends. */
		pthread_mutex_lock(&c->mu);
		c->draining = 1;
		c->drain_limit = how == CLOSE_DRAIN_DUE ? now_ms() : UINT64_MAX;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->writer, NULL);
		c->writer_started = 0;
	}
	conn_unlist(c);
	/* Unblocks a writer stuck sending to a peer that does not read;
	 * also what the peer sees as the close. A reset skips it: a FIN
	 * would reach the peer before the RST and look like a clean close.
	 * The writer is gone by then (joined above). */
	if (how == CLOSE_RESET)
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	else
		shutdown(c->fd, SHUT_RDWR);
	if (c->writer_started) {
		pthread_mutex_lock(&c->mu);
		c->closing = 1;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->writer, NULL);
	}
	items_free(c->queue);
	items_free(c->held);
	if (c->session != NULL)
		gnutls_deinit(c->session);
	close(c->fd);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
	if (how == CLOSE_RESET)
		event("reset");
	event("close");
}

static void *
conn_main(void *arg)
{
	struct conn *c = arg;
	unsigned char *frame = NULL;
	gnutls_certificate_credentials_t cur;
	enum close_how how = CLOSE_NOW;
	int r;

	if (opt.refuse) {
		event("refused");
		goto out;
	}
	if (is_down()) {
		event("refused down");
		goto out;
	}
	/* Going down meanwhile shuts the socket: the handshake then fails. */
	if (opt.handshake_delay_ms > 0)
		sleep_ms(opt.handshake_delay_ms);
	if (gnutls_init(&c->session, GNUTLS_SERVER) < 0) {
		c->session = NULL;
		goto out;
	}
	pthread_mutex_lock(&conns_lock);
	cur = use_alt ? alt_creds : creds;
	pthread_mutex_unlock(&conns_lock);
	if (gnutls_set_default_priority(c->session) < 0 ||
	    gnutls_credentials_set(c->session, GNUTLS_CRD_CERTIFICATE,
	    cur) < 0 ||
	    gnutls_session_ticket_enable_server(c->session, &ticket_key) < 0)
		goto out;
	gnutls_certificate_server_set_request(c->session, GNUTLS_CERT_IGNORE);
	gnutls_transport_set_int(c->session, c->fd);
	gnutls_handshake_set_timeout(c->session, 5000);
	do {
		r = gnutls_handshake(c->session);
	} while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		event("handshake failed %s", gnutls_strerror(r));
		goto out;
	}
	event("handshake ok resumed=%d", gnutls_session_is_resumed(c->session)
	    ? 1 : 0);
	if (opt.reset_after == 0) {
		how = CLOSE_RESET;
		goto out;
	}
	frame = malloc(MAX_FRAME);
	if (frame == NULL)
		goto out;
	if (pthread_create(&c->writer, NULL, writer_main, c) != 0)
		goto out;
	c->writer_started = 1;
	for (;;) {
		unsigned char hdr[2];
		size_t len;

		r = recv_all(c, hdr, 2);
		if (r <= 0)
			break;
		len = (hdr[0] << 8) | hdr[1];
		if (len == 0) {
			event("malformed");
			break;
		}
		if (recv_all(c, frame, len) <= 0)
			break;
		if (handle_frame(c, frame, len, &how) < 0)
			break;
	}
out:
	free(frame);
	conn_close(c, how);
	return NULL;
}

/* Down: shut every open connection; their threads then close them. */
static void
set_down(int d)
{
	struct conn *c;

	pthread_mutex_lock(&conns_lock);
	down = d;
	if (d) {
		for (c = conns; c != NULL; c = c->next)
			shutdown(c->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&conns_lock);
	event(d ? "down" : "up");
}

/* SIGHUP: new handshakes use the --alt-cert credentials (both stay
 * allocated until exit, so a handshake in progress keeps its own). */
static void
swap_cert(void)
{
	if (alt_creds == NULL) {
		event("cert not swapped: no --alt-cert");
		return;
	}
	pthread_mutex_lock(&conns_lock);
	use_alt = 1;
	pthread_mutex_unlock(&conns_lock);
	event("cert swapped");
}

static void
set_silent(int s)
{
	pthread_mutex_lock(&conns_lock);
	silent = s;
	silent_seen = 0;
	pthread_mutex_unlock(&conns_lock);
	event(s ? "silent" : "answering");
}

static void *
signal_main(void *arg)
{
	sigset_t *set = arg;
	int sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGUSR1)
			set_down(1);
		else if (sig == SIGUSR2)
			set_down(0);
		else if (sig == SIGHUP)
			swap_cert();
		else if (sig == SIGRTMIN || sig == SIGRTMIN + 1)
			set_silent(sig == SIGRTMIN);
		else
			break;
	}
	/* Connection threads may be mid-send: do not wait for them. */
	pthread_mutex_lock(&out_lock);
	fflush(stdout);
	_exit(0);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: dotserver --cert FILE --key FILE [--addr IP] [--port N]\n"
	    "         [--reverse N] [--close-after N] [--reset-after N]\n"
	    "         [--stall-after N] [--answer-even] [--refuse] "
	    "[--delay-ms N]\n"
	    "         [--handshake-delay-ms N] [--keepalive-ms N] [--ttl N]\n"
	    "         [--alt-cert FILE --alt-key FILE]\n"
	    "         [--silent-pass N]\n"
	    "  --reverse N        hold answers, send each N in reverse order\n"
	    "  --close-after N    on a connection's Nth query: answer the\n"
	    "                     earlier ones, close (FIN)\n"
	    "  --reset-after N    the same, but close with an RST; 0: RST\n"
	    "                     right after the handshake\n"
	    "  --stall-after N    handle N queries of a connection, then read\n"
	    "                     (and log) but never answer; 0: answer none\n"
	    "  --answer-even      answer only queries with an even ID\n"
	    "  --refuse           close every connection before TLS\n"
	    "  --delay-ms N       delay every answer by N ms\n"
	    "  --handshake-delay-ms N  wait N ms after accept before TLS\n"
	    "  --keepalive-ms N   edns-tcp-keepalive N/100 in OPT answers\n"
	    "  --ttl N            TTL of the default answers (else 300)\n"
	    "  --alt-cert, --alt-key  the certificate SIGHUP swaps in\n"
	    "SIGUSR1: go down (close all, refuse new); SIGUSR2: come back up.\n"
	    "SIGHUP: new handshakes present --alt-cert (same ticket key).\n"
	    "  --silent-pass N    while silent, still answer every Nth query\n"
	    "SIGUSR1: go down (close all, refuse new); SIGUSR2: come back up.\n"
	    "SIGRTMIN: go silent (read, answer none); SIGRTMIN+1: answer again.\n"
	    "The first label of the query name picks the answer:\n"
	    "  (other)   A 192.0.2.1, AAAA 2001:db8::1, TXT \"hello\"\n"
	    "            (TTL 300 or --ttl), other types NODATA with SOA\n"
	    "  ttlN      as above with TTL N\n"
	    "  nx*       NXDOMAIN, SOA (TTL 60, minimum 30) of the parent\n"
	    "  nodata*   NOERROR, no answer, SOA\n"
	    "  nosoa*    NXDOMAIN without SOA\n"
	    "  servfail* SERVFAIL\n"
	    "  ede6*     SERVFAIL with Extended DNS Error 6 \"test\" (EDNS)\n"
	    "  dname*    DNAME parent -> example.net., its CNAME with TTL 0,\n"
	    "            then the default answer for the target\n"
	    "  secure*   default answer, AD set when the query set AD or DO\n"
	    "  adalways* default answer, AD set whoever asks\n"
	    "  big*/mid* TXT of 20/8 strings of 100 bytes, whatever the type\n"
	    "  delayN*   default answer after N ms, others not held up\n"
	    "  drop*     no answer\n"
	    "  wrongq*   answer for the question \"x\" + name\n"
	    "  garbage*  40 bytes: the query ID, then random\n"
	    "  lie*      the default answer behind a length prefix of 60000\n"
	    "  close*    close the connection without answering\n"
	    "  chainN    N CNAMEs chainN-1 ... chain0, then the default answer\n");
	exit(2);
}

static unsigned
num_arg(const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *s == '\0' || *end != '\0' || v > 0xffffffffUL)
		usage();
	return v;
}

static int
new_conn_thread(int fd)
{
	pthread_condattr_t ca;
	pthread_attr_t attr;
	pthread_t t;
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return -1;
	c->fd = fd;
	c->held_tail = &c->held;
	/* Listed before its thread starts, so going down never misses it. */
	pthread_mutex_lock(&conns_lock);
	c->next = conns;
	conns = c;
	pthread_mutex_unlock(&conns_lock);
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, conn_main, c) != 0) {
		conn_unlist(c);
		pthread_attr_destroy(&attr);
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return -1;
	}
	pthread_attr_destroy(&attr);
	return 0;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	sigset_t set;
	pthread_t sigt;
	int i, fd, one = 1, r;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--refuse") == 0) {
			opt.refuse = 1;
			continue;
		}
		if (strcmp(a, "--answer-even") == 0) {
			opt.answer_even = 1;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--cert") == 0)
			opt.cert = v;
		else if (strcmp(a, "--key") == 0)
			opt.key = v;
		else if (strcmp(a, "--addr") == 0)
			opt.addr = v;
		else if (strcmp(a, "--port") == 0)
			opt.port = num_arg(v);
		else if (strcmp(a, "--reverse") == 0)
			opt.reverse = num_arg(v);
		else if (strcmp(a, "--close-after") == 0)
			opt.close_after = num_arg(v);
		else if (strcmp(a, "--delay-ms") == 0)
			opt.delay_ms = num_arg(v);
		else if (strcmp(a, "--reset-after") == 0)
			opt.reset_after = num_arg(v);
		else if (strcmp(a, "--stall-after") == 0)
			opt.stall_after = num_arg(v);
		else if (strcmp(a, "--handshake-delay-ms") == 0)
			opt.handshake_delay_ms = num_arg(v);
		else if (strcmp(a, "--keepalive-ms") == 0)
			opt.keepalive_ms = num_arg(v);
		else if (strcmp(a, "--ttl") == 0)
			opt.ttl = num_arg(v);
		else if (strcmp(a, "--alt-cert") == 0)
			opt.alt_cert = v;
		else if (strcmp(a, "--alt-key") == 0)
			opt.alt_key = v;
		else if (strcmp(a, "--silent-pass") == 0)
			opt.silent_pass = num_arg(v);
		else
			usage();
	}
	if (opt.cert == NULL || opt.key == NULL || opt.port > 65535 ||
	    (opt.alt_cert == NULL) != (opt.alt_key == NULL))
		usage();

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGRTMIN);
	sigaddset(&set, SIGRTMIN + 1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pthread_create(&sigt, NULL, signal_main, &set) != 0) {
		fprintf(stderr, "dotserver: cannot start signal thread\n");
		return 1;
	}

	if (gnutls_certificate_allocate_credentials(&creds) < 0) {
		fprintf(stderr, "dotserver: gnutls credentials\n");
		return 1;
	}
	r = gnutls_certificate_set_x509_key_file(creds, opt.cert, opt.key,
	    GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		fprintf(stderr, "dotserver: %s, %s: %s\n", opt.cert, opt.key,
		    gnutls_strerror(r));
		return 1;
	}
	if (opt.alt_cert != NULL) {
		if (gnutls_certificate_allocate_credentials(&alt_creds) < 0) {
			fprintf(stderr, "dotserver: gnutls credentials\n");
			return 1;
		}
		r = gnutls_certificate_set_x509_key_file(alt_creds,
		    opt.alt_cert, opt.alt_key, GNUTLS_X509_FMT_PEM);
		if (r < 0) {
			fprintf(stderr, "dotserver: %s, %s: %s\n", opt.alt_cert,
			    opt.alt_key, gnutls_strerror(r));
			return 1;
		}
	}
	if (gnutls_session_ticket_key_generate(&ticket_key) < 0) {
		fprintf(stderr, "dotserver: no session ticket key\n");
		return 1;
	}

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(opt.port);
	if (inet_pton(AF_INET, opt.addr, &sin.sin_addr) != 1) {
		fprintf(stderr, "dotserver: bad address %s\n", opt.addr);
		return 1;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &slen) < 0) {
		fprintf(stderr, "dotserver: %s port %d: %s\n", opt.addr,
		    opt.port, strerror(errno));
		return 1;
	}
	event("port %u", ntohs(sin.sin_port));

	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/* EMFILE and friends: back off instead of spinning. */
			fprintf(stderr, "dotserver: accept: %s\n",
			    strerror(errno));
			usleep(10000);
			continue;
		}
		event("accept");
		if (new_conn_thread(cfd) < 0) {
			close(cfd);
			event("close");
		}
	}
}
