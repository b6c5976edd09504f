/* test_listen.c: scenario tests of listen.c over real loopback sockets.
 *
 * The scenario tier's world (query.c, the cache, dnsmsg.c and local.c
 * against fake_upstream.c, as in test_query.c) behind the real listeners,
 * with clients of the test's own on 127.0.0.1. Names are answered locally
 * (localhost.) or from the cache, which a test fills through the real
 * miss path: a query, the fake's out-query answered with fake_answer, the
 * answer sent from the done callback.
 *
 * Everything runs on the test's thread: a client sends, then the test
 * runs the loop one turn at a time (UV_RUN_ONCE) and reads what came back
 * between turns, until what it waits for has come. A guard timer bounds
 * every wait (a turn with nothing else to do ends when it fires, and the
 * test fails); nothing sleeps.
 *
 * Covered: answers to a burst of cache hits leave in batches (sendmmsg),
 * without allocation, each once with its ID and question, also when
 * sendmmsg takes only part of a batch or refuses an answer (a link-time
 * hook below plays the kernel's side); several listeners on one address
 * with SO_REUSEPORT (both serve, without it the second is refused, IPv6
 * sockets stay IPv6-only), and on one socket handed over by systemd (each
 * a duplicate, the originals closed by sysd_fds_close).
 */
/* struct mmsghdr, for the sendmmsg hook. */
#define _GNU_SOURCE

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache.h"
#include "conf.h"
#include "dnsmsg.h"
#include "fake_upstream.h"
#include "listen.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "query.h"
#include "sysd.h"
#include "upstream.h"
#include "../common/wire.h"

#define GUARD_MS 10000
#define MAX_IDS 1024

struct world {
	uv_loop_t loop;
	struct conf conf;
	struct cache *cache;
	struct metrics m;          /* the query context's */
	struct upstream_pool *pool;
	struct query_ctx ctx;
	uv_timer_t guard;
	int expired;
	uint16_t port;
	struct listen *ls[8];      /* started and not stopped yet */
	size_t n_ls;
	/* Answers the clients read, by DNS ID. */
	unsigned got[MAX_IDS];
	size_t n_got;
	uint8_t q[MAX_IDS][300];   /* the query sent with each ID */
	size_t q_len[MAX_IDS];
};

/* ---- wire ---- */

/* A query for name type A, RD set, no EDNS. */
static size_t
build_query(uint8_t *b, uint16_t id, const char *name)
{
	size_t n = DNS_HDR_LEN;

	memset(b, 0, DNS_HDR_LEN);
	put16(b, id);
	put16(b + 2, DNS_FLAG_RD);
	put16(b + 4, 1);
	n += put_name(b + n, name);
	put16(b + n, DNS_TYPE_A);
	put16(b + n + 2, 1);
	return n + 4;
}

/* An upstream's NOERROR answer to name/A: one A record 192.0.2.1, TTL
 * 300 s. */
static size_t
build_a_answer(uint8_t *b, const char *name)
{
	size_t n = build_query(b, 0x5151, name);

	put16(b + 2, (uint16_t)(DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA));
	put16(b + 6, 1);
	put16(b + n, 0xc00c);
	put16(b + n + 2, DNS_TYPE_A);
	put16(b + n + 4, 1);
	put32(b + n + 6, 300);
	put16(b + n + 10, 4);
	b[n + 12] = 192;
	b[n + 13] = 0;
	b[n + 14] = 2;
	b[n + 15] = 1;
	return n + 16;
}

/* The dotted form of an uncompressed wire name ("www.example"). */
static void
wire_to_name(const uint8_t *wire, char *name, size_t cap)
{
	size_t n = 0, lab;

	while (*wire != 0) {
		lab = *wire++;
		assert_true(n + lab + 2 <= cap);
		if (n != 0)
			name[n++] = '.';
		memcpy(name + n, wire, lab);
		n += lab;
		wire += lab;
	}
	name[n] = '\0';
}

/* ---- sendmmsg, wrapped ----
 *
 * The program is linked with -Wl,--wrap=sendmmsg, so listen.c's calls
 * come here (libuv's own sends, from its shared library, do not): every
 * batch is counted, and a test can make the socket look full after a
 * number of datagrams (EAGAIN or ENOBUFS, as the kernel says it), stop
 * short without an error (as the kernel does when a later datagram would
 * fail), or refuse one answer for good (EPERM, as a firewall rule would). */
enum fault {
	FAULT_NONE = 0,
	FAULT_EAGAIN,   /* after sm.pass datagrams */
	FAULT_ENOBUFS,  /* the same, with ENOBUFS */
	FAULT_SHORT,    /* at most 2 datagrams a call, no error */
	FAULT_REFUSE,   /* the answer with ID sm.refuse_id: EPERM */
};

static struct {
	enum fault fault;
	unsigned pass;
	uint16_t refuse_id;
	unsigned calls, datagrams, max_vlen, faults;
} sm;

int __real_sendmmsg(int fd, struct mmsghdr *msg, unsigned vlen, int flags);
int __wrap_sendmmsg(int fd, struct mmsghdr *msg, unsigned vlen, int flags);

int
__wrap_sendmmsg(int fd, struct mmsghdr *msg, unsigned vlen, int flags)
{
	unsigned n = vlen, i;
	int r;

	sm.calls++;
	if (vlen > sm.max_vlen)
		sm.max_vlen = vlen;
	switch (sm.fault) {
	case FAULT_NONE:
		break;
	case FAULT_EAGAIN:
	case FAULT_ENOBUFS:
		if (n > sm.pass)
			n = sm.pass;
		break;
	case FAULT_SHORT:
		if (n > 2)
			n = 2;
		break;
	case FAULT_REFUSE:
		for (i = 0; i < n; i++)
			if (get16(msg[i].msg_hdr.msg_iov[0].iov_base) ==
			    sm.refuse_id)
				break;
		n = i;
		break;
	}
	if (n == 0) {
		sm.faults++;
		errno = sm.fault == FAULT_ENOBUFS ? ENOBUFS :
		    sm.fault == FAULT_REFUSE ? EPERM : EAGAIN;
		return -1;
	}
	r = __real_sendmmsg(fd, msg, n, flags);
	if (r > 0) {
		sm.datagrams += (unsigned)r;
		if (sm.fault == FAULT_EAGAIN || sm.fault == FAULT_ENOBUFS)
			sm.pass -= (unsigned)r;
	}
	return r;
}

/* ---- the world ---- */

static void
guard_cb(uv_timer_t *t)
{
	struct world *w = t->data;

	w->expired = 1;
}

/* A port free for UDP and TCP on 127.0.0.1 a moment ago. */
static uint16_t
free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int u, t, i, ok;

	for (i = 0; i < 100; i++) {
		u = socket(AF_INET, SOCK_DGRAM, 0);
		t = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(u >= 0 && t >= 0);
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		assert_int_equal(bind(u, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(getsockname(u, (struct sockaddr *)&sa, &len),
		    0);
		ok = bind(t, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(u);
		close(t);
		if (ok)
			return ntohs(sa.sin_port);
	}
	fail_msg("no free port");
	return 0;
}

static void
conf_listen(struct conf *c, uint16_t port)
{
	char err[CONF_ERR_MAX], addr[64];

	snprintf(addr, sizeof(addr), "127.0.0.1@%u", port);
	assert_int_equal(conf_set(c, "listen", addr, "test", err,
	    sizeof(err)), 0);
}

static int
setup(void **state)
{
	struct world *w;
	char err[CONF_ERR_MAX];

	log_open(LOGL_ERR, 1);
	w = calloc(1, sizeof(*w));
	assert_non_null(w);
	assert_int_equal(uv_loop_init(&w->loop), 0);
	conf_init(&w->conf);
	w->port = free_port();
	conf_listen(&w->conf, w->port);
	assert_int_equal(conf_set(&w->conf, "upstream",
	    "127.0.0.1@853#dns.test", "test", err, sizeof(err)), 0);
	assert_int_equal(conf_finish(&w->conf, err, sizeof(err)), 0);
	w->cache = cache_new(w->conf.cache_size, w->conf.stale_max_age);
	assert_non_null(w->cache);
	w->pool = upstream_pool_new(&w->loop, &w->conf, NULL, &w->m);
	assert_non_null(w->pool);
	assert_int_equal(query_ctx_init(&w->ctx, &w->loop, &w->conf,
	    w->cache, w->pool, &w->m), 0);
	assert_int_equal(uv_timer_init(&w->loop, &w->guard), 0);
	w->guard.data = w;
	*state = w;
	return 0;
}

/* main.c's order: the pool (it completes every pending query), the query
 * context, the listeners (each test stops its own; a failed one leaves
 * some); then the loop runs the close callbacks and must end with nothing
 * open. */
static int
teardown(void **state)
{
	struct world *w = *state;

	mem_fail_after(-1);
	memset(&sm, 0, sizeof(sm));
	upstream_pool_close(w->pool);
	while (w->n_ls > 0)
		listen_close(w->ls[--w->n_ls]);
	query_ctx_close(&w->ctx);
	uv_close((uv_handle_t *)&w->guard, NULL);
	assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&w->loop), 0);
	cache_free(w->cache);
	free(w);
	return 0;
}

static struct listen *
start_conf(struct world *w, const struct conf *c, struct sysd_fds *fds,
    int reuseport, struct metrics *m)
{
	struct listen *l = NULL;
	char err[256];

	if (listen_start(&w->loop, c, fds, reuseport ? 2 : 1, 1, &w->ctx, m,
	    &l, err, sizeof(err)) != 0)
		fail_msg("listen_start: %s", err);
	assert_true(w->n_ls < sizeof(w->ls) / sizeof(w->ls[0]));
	w->ls[w->n_ls++] = l;
	return l;
}

static struct listen *
start(struct world *w, struct sysd_fds *fds, int reuseport,
    struct metrics *m)
{
	return start_conf(w, &w->conf, fds, reuseport, m);
}

/* listen_start on c must fail with "listen 127.0.0.1@port: udp: address
 * already in use", and leave nothing open. */
static void
start_fails_in_use(struct world *w, const struct conf *c, uint16_t port,
    int reuseport)
{
	struct listen *l = NULL;
	struct metrics m;
	char err[256], want[256];

	memset(&m, 0, sizeof(m));
	assert_int_equal(listen_start(&w->loop, c, NULL, reuseport ? 2 : 1,
	    1, &w->ctx, &m, &l, err, sizeof(err)), -1);
	assert_null(l);
	snprintf(want, sizeof(want), "listen 127.0.0.1@%u: udp: address "
	    "already in use", port);
	assert_string_equal(err, want);
	(void)uv_run(&w->loop, UV_RUN_NOWAIT);
}

/* ---- clients ---- */

static int
client_udp(void)
{
	struct sockaddr_in sa;
	int fd, big = 1 << 20;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	/* Room for every answer of a burst before the test reads them. */
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big,
	    sizeof(big)), 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void
server_addr(const struct world *w, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa->sin_port = htons(w->port);
}

/* Send query id for name from fd (remembered, to check the answer). */
static void
send_query(struct world *w, int fd, uint16_t id, const char *name)
{
	struct sockaddr_in sa;

	assert_true(id < MAX_IDS);
	w->q_len[id] = build_query(w->q[id], id, name);
	server_addr(w, &sa);
	assert_int_equal(sendto(fd, w->q[id], w->q_len[id], 0,
	    (struct sockaddr *)&sa, sizeof(sa)), (ssize_t)w->q_len[id]);
}

/* Check an answer to one of the queries sent: a known ID, QR, NOERROR,
 * the question as sent, and count it. */
static void
take_answer(struct world *w, const uint8_t *a, size_t len)
{
	uint16_t id;
	size_t qend;

	assert_true(len >= DNS_HDR_LEN);
	id = get16(a);
	assert_true(id < MAX_IDS && w->q_len[id] != 0);
	assert_true(get16(a + 2) & DNS_FLAG_QR);
	assert_int_equal(DNS_RCODE(get16(a + 2)), DNS_RCODE_NOERROR);
	qend = w->q_len[id];
	assert_true(len >= qend);
	assert_int_equal(get16(a + 4), 1);
	assert_memory_equal(a + DNS_HDR_LEN, w->q[id] + DNS_HDR_LEN,
	    qend - DNS_HDR_LEN);
	w->got[id]++;
	w->n_got++;
}

/* Read every answer waiting on UDP socket fd. */
static void
drain_udp(struct world *w, int fd)
{
	uint8_t a[DNS_MAX_MSG];
	ssize_t n;

	for (;;) {
		n = recv(fd, a, sizeof(a), 0);
		if (n < 0) {
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
			return;
		}
		take_answer(w, a, (size_t)n);
	}
}

/* Run the loop a turn at a time, reading UDP answers on fd (-1: none)
 * between turns, until *counter reaches want; fails when the guard fires
 * first. */
static void
pump(struct world *w, int fd, const size_t *counter, size_t want)
{
	w->expired = 0;
	assert_int_equal(uv_timer_start(&w->guard, guard_cb, GUARD_MS, 0), 0);
	for (;;) {
		if (fd >= 0)
			drain_udp(w, fd);
		if (*counter >= want)
			break;
		if (w->expired)
			fail_msg("waited %d ms: %zu of %zu", GUARD_MS, *counter,
			    want);
		(void)uv_run(&w->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&w->guard);
}

/* The same for a counter of the metrics. */
static void
pump64(struct world *w, const uint64_t *counter, uint64_t want)
{
	w->expired = 0;
	assert_int_equal(uv_timer_start(&w->guard, guard_cb, GUARD_MS, 0), 0);
	while (*counter < want) {
		if (w->expired)
			fail_msg("waited %d ms: %llu of %llu", GUARD_MS,
			    (unsigned long long)*counter,
			    (unsigned long long)want);
		(void)uv_run(&w->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&w->guard);
}

/* One query over TCP on a new connection; returns once it is answered
 * (the loop runs meanwhile). */
static void
tcp_query(struct world *w, uint16_t id, const char *name)
{
	struct sockaddr_in sa;
	uint8_t b[2 + 300], a[2 + DNS_MAX_MSG];
	size_t n, have = 0, before = w->n_got;
	ssize_t r;
	int fd;

	assert_true(id < MAX_IDS);
	w->q_len[id] = build_query(w->q[id], id, name);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	server_addr(w, &sa);
	/* The kernel completes the handshake before anyone accepts. */
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	n = w->q_len[id];
	put16(b, (uint16_t)n);
	memcpy(b + 2, w->q[id], n);
	assert_int_equal(send(fd, b, n + 2, 0), (ssize_t)(n + 2));
	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	w->expired = 0;
	assert_int_equal(uv_timer_start(&w->guard, guard_cb, GUARD_MS, 0), 0);
	while (w->n_got == before) {
		r = recv(fd, a + have, sizeof(a) - have, 0);
		if (r > 0)
			have += (size_t)r;
		else
			assert_true(r < 0 && errno == EAGAIN);
		if (have >= 2 && have >= 2 + (size_t)get16(a)) {
			take_answer(w, a + 2, get16(a));
			break;
		}
		if (w->expired)
			fail_msg("no TCP answer in %d ms", GUARD_MS);
		(void)uv_run(&w->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&w->guard);
	close(fd);
}

/* Close l and let the loop run its close callbacks. */
static void
stop(struct world *w, struct listen *l)
{
	size_t i;

	for (i = 0; i < w->n_ls && w->ls[i] != l; i++)
		continue;
	assert_true(i < w->n_ls);
	w->ls[i] = w->ls[--w->n_ls];
	listen_close(l);
	(void)uv_run(&w->loop, UV_RUN_NOWAIT);
}

/* ---- answers in batches ---- */

#define N_NAMES 20
#define BURST 200
#define WARM_ID 900     /* IDs of the warm-up queries; the burst's: 1.. */

/* Put n<i>.burst.test into the cache through the miss path: the queries
 * (from c), their out-queries answered by the fake, the answers sent from
 * the done callback. */
static void
warm(struct world *w, const struct metrics *lm, int c)
{
	uint8_t b[512];
	char name[64];
	size_t i, n, before = w->n_got, outq = fake_count();

	for (i = 0; i < N_NAMES; i++) {
		snprintf(name, sizeof(name), "n%zu.burst.test", i);
		send_query(w, c, (uint16_t)(WARM_ID + i), name);
	}
	pump64(w, &lm->queries_udp, N_NAMES);
	assert_int_equal(fake_count(), outq + N_NAMES);
	for (i = 0; i < N_NAMES; i++) {
		wire_to_name(fake_question(outq + i)->wire, name,
		    sizeof(name));
		n = build_a_answer(b, name);
		assert_int_equal(fake_answer(outq + i, b, n,
		    uv_now(&w->loop)), 0);
	}
	pump(w, c, &w->n_got, before + N_NAMES);
}

/* BURST queries for the cached names, back to back from one socket, all
 * in the listener's socket buffer before it reads any; then the loop runs
 * until expect more answers have come. */
static void
burst(struct world *w, int c, size_t expect)
{
	char name[64];
	uint16_t id;

	for (id = 1; id <= BURST; id++) {
		snprintf(name, sizeof(name), "n%u.burst.test",
		    (unsigned)(id % N_NAMES));
		send_query(w, c, id, name);
	}
	pump(w, c, &w->n_got, w->n_got + expect);
}

/* Every hit of a burst is answered once, with its ID and question, from
 * the cache, and without any allocation; the answers leave in batches
 * (sendmmsg with more than one datagram). */
static void
test_burst(void **state)
{
	struct world *w = *state;
	struct metrics lm;
	struct listen *l;
	size_t outq;
	unsigned long failures;
	uint64_t hits;
	uint16_t id;
	int c;

	memset(&lm, 0, sizeof(lm));
	l = start(w, NULL, 0, &lm);
	c = client_udp();
	warm(w, &lm, c);
	memset(&sm, 0, sizeof(sm));
	outq = fake_count();
	hits = w->m.cache_hits;
	failures = mem_failures();
	mem_fail_after(0);
	burst(w, c, BURST);
	assert_int_equal(mem_failures(), failures);
	mem_fail_after(-1);
	for (id = 1; id <= BURST; id++)
		assert_int_equal(w->got[id], 1);
	assert_int_equal(w->n_got, N_NAMES + BURST);
	assert_int_equal(fake_count(), outq);
	assert_int_equal(w->m.cache_hits, hits + BURST);
	assert_int_equal(lm.queries_udp, N_NAMES + BURST);
	assert_int_equal(sm.datagrams, BURST);
	assert_true(sm.max_vlen > 1);
	assert_true(sm.calls < BURST);
	assert_int_equal(lm.drops_send_failed + lm.drops_send_queue_full, 0);
	close(c);
	stop(w, l);
}

/* A burst while sendmmsg fails as told: what it does not send goes
 * through the send queue (nothing lost, nothing counted as dropped),
 * except an answer refused for good, which alone is counted and lost. */
static void
burst_fault(struct world *w, enum fault fault)
{
	struct metrics lm;
	struct listen *l;
	uint16_t id;
	int c;

	memset(&lm, 0, sizeof(lm));
	l = start(w, NULL, 0, &lm);
	c = client_udp();
	warm(w, &lm, c);
	memset(&sm, 0, sizeof(sm));
	sm.fault = fault;
	sm.pass = 3;
	sm.refuse_id = 77;
	burst(w, c, fault == FAULT_REFUSE ? BURST - 1 : BURST);
	for (id = 1; id <= BURST; id++)
		assert_int_equal(w->got[id], fault == FAULT_REFUSE &&
		    id == sm.refuse_id ? 0 : 1);
	assert_int_equal(lm.drops_send_queue_full, 0);
	assert_int_equal(lm.drops_send_failed, fault == FAULT_REFUSE ? 1 : 0);
	if (fault == FAULT_SHORT)
		assert_int_equal(sm.datagrams, BURST);
	else
		assert_true(sm.faults > 0);
	if (fault == FAULT_EAGAIN || fault == FAULT_ENOBUFS)
		assert_int_equal(sm.datagrams, 3);
	close(c);
	stop(w, l);
}

static void
test_burst_eagain(void **state)
{
	burst_fault(*state, FAULT_EAGAIN);
}

static void
test_burst_enobufs(void **state)
{
	burst_fault(*state, FAULT_ENOBUFS);
}

static void
test_burst_short(void **state)
{
	burst_fault(*state, FAULT_SHORT);
}

static void
test_burst_refused(void **state)
{
	burst_fault(*state, FAULT_REFUSE);
}

/* ---- SO_REUSEPORT ---- */

/* Queries from new client sockets (new source ports), one at a time, until
 * both listeners have read some: the kernel spreads the 4-tuples over the
 * sockets of a reuseport group, so 64 ports all landing on one of two
 * sockets would take odds of 2^-63. TCP connections the same way. */
static void
spread(struct world *w, const struct metrics *m1, const struct metrics *m2,
    uint16_t *id)
{
	int i, c;

	for (i = 0; i < 64 && (m1->queries_udp == 0 || m2->queries_udp == 0);
	    i++) {
		c = client_udp();
		send_query(w, c, *id, "localhost");
		pump(w, c, &w->n_got, w->n_got + 1);
		assert_int_equal(w->got[*id], 1);
		(*id)++;
		close(c);
	}
	assert_true(m1->queries_udp > 0 && m2->queries_udp > 0);
	assert_int_equal(m1->queries_udp + m2->queries_udp, (uint64_t)i);
	for (i = 0; i < 64 && (m1->tcp_accepted == 0 ||
	    m2->tcp_accepted == 0); i++)
		tcp_query(w, (*id)++, "localhost");
	assert_true(m1->tcp_accepted > 0 && m2->tcp_accepted > 0);
}

/* Two listeners on the same address with reuseport both bind and both
 * serve; one without it is refused with today's message; a reload that
 * adds an address binds it with SO_REUSEPORT too. */
static void
test_reuseport(void **state)
{
	struct world *w = *state;
	struct metrics m1, m2, m3;
	struct listen *l1, *l2, *l3;
	struct conf both, second;
	char err[CONF_ERR_MAX];
	uint16_t id = 1, port2;

	memset(&m1, 0, sizeof(m1));
	memset(&m2, 0, sizeof(m2));
	memset(&m3, 0, sizeof(m3));
	l1 = start(w, NULL, 1, &m1);
	l2 = start(w, NULL, 1, &m2);
	start_fails_in_use(w, &w->conf, w->port, 0);
	spread(w, &m1, &m2, &id);

	/* l1 reloads with a second address: bound with SO_REUSEPORT, so
	 * another reuseport listener can join it there, and a plain one
	 * cannot. */
	port2 = free_port();
	conf_init(&both);
	conf_listen(&both, w->port);
	conf_listen(&both, port2);
	conf_init(&second);
	conf_listen(&second, port2);
	assert_int_equal(conf_set(&both, "upstream", "127.0.0.1@853#dns.test",
	    "test", err, sizeof(err)), 0);
	assert_int_equal(conf_finish(&both, err, sizeof(err)), 0);
	assert_int_equal(conf_set(&second, "upstream",
	    "127.0.0.1@853#dns.test", "test", err, sizeof(err)), 0);
	assert_int_equal(conf_finish(&second, err, sizeof(err)), 0);
	assert_int_equal(listen_update(l1, &both, err, sizeof(err)), 0);
	start_fails_in_use(w, &second, port2, 0);
	l3 = start_conf(w, &second, NULL, 1, &m3);
	stop(w, l3);
	stop(w, l2);
	stop(w, l1);
}

/* Without reuseport a second listener on an address is refused, with
 * reuseport or without, and the first goes on serving. */
static void
test_no_reuseport(void **state)
{
	struct world *w = *state;
	struct metrics m1;
	struct listen *l1;
	int c;

	memset(&m1, 0, sizeof(m1));
	l1 = start(w, NULL, 0, &m1);
	start_fails_in_use(w, &w->conf, w->port, 0);
	start_fails_in_use(w, &w->conf, w->port, 1);
	c = client_udp();
	send_query(w, c, 1, "localhost");
	pump(w, c, &w->n_got, 1);
	tcp_query(w, 2, "localhost");
	assert_int_equal(m1.queries_udp, 1);
	assert_int_equal(m1.tcp_accepted, 1);
	close(c);
	stop(w, l1);
}

/* Listeners on :: are IPv6-only with reuseport as without (libuv binds
 * with UV_*_IPV6ONLY): 127.0.0.1 on the same port stays free for another
 * socket, UDP and TCP. */
static void
test_v6only(void **state)
{
	struct world *w = *state;
	struct sockaddr_in sa;
	struct metrics m;
	struct listen *l;
	struct conf any;
	char err[CONF_ERR_MAX], addr[64];
	int reuseport, u, t;

	snprintf(addr, sizeof(addr), "::@%u", w->port);
	conf_init(&any);
	assert_int_equal(conf_set(&any, "listen", addr, "test", err,
	    sizeof(err)), 0);
	assert_int_equal(conf_set(&any, "upstream", "127.0.0.1@853#dns.test",
	    "test", err, sizeof(err)), 0);
	assert_int_equal(conf_finish(&any, err, sizeof(err)), 0);
	server_addr(w, &sa);
	for (reuseport = 0; reuseport <= 1; reuseport++) {
		memset(&m, 0, sizeof(m));
		l = start_conf(w, &any, NULL, reuseport, &m);
		u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(u >= 0 && t >= 0);
		assert_int_equal(bind(u, (struct sockaddr *)&sa, sizeof(sa)),
		    0);
		assert_int_equal(bind(t, (struct sockaddr *)&sa, sizeof(sa)),
		    0);
		assert_int_equal(listen(t, 1), 0);
		close(u);
		close(t);
		stop(w, l);
	}
}

/* ---- socket activation ---- */

/* A UDP socket and a listening TCP socket on 127.0.0.1:port, described
 * into fds as systemd's would be. */
static void
handed_over(struct world *w, struct sysd_fds *fds, int *ufd, int *tfd)
{
	struct sockaddr_in sa;
	int on = 1;

	memset(fds, 0, sizeof(*fds));
	server_addr(w, &sa);
	*ufd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	*tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*ufd >= 0 && *tfd >= 0);
	assert_int_equal(setsockopt(*tfd, SOL_SOCKET, SO_REUSEADDR, &on,
	    sizeof(on)), 0);
	assert_int_equal(bind(*ufd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(bind(*tfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(*tfd, 16), 0);
	assert_int_equal(sysd_fds_add(fds, *ufd), 0);
	assert_int_equal(sysd_fds_add(fds, *tfd), 0);
}

/* Two listeners (as two workers would start) on the sockets systemd
 * handed over: each gets its own descriptor, both serve the same sockets
 * after the originals are closed, and one goes on serving when the other
 * closes. */
static void
test_sysd_two_listeners(void **state)
{
	struct world *w = *state;
	struct metrics m1, m2;
	struct sysd_fds fds;
	struct listen *l1, *l2;
	char err[256];
	int ufd, tfd, c;
	uint16_t id;
	uint64_t accepted;

	memset(&m1, 0, sizeof(m1));
	memset(&m2, 0, sizeof(m2));
	handed_over(w, &fds, &ufd, &tfd);
	assert_int_equal(sysd_fds_check_conf(&fds, &w->conf, err,
	    sizeof(err)), 0);
	l1 = start(w, &fds, 0, &m1);
	l2 = start(w, &fds, 0, &m2);
	/* Neither took the originals: they are still open, and still ours
	 * to close. */
	assert_int_equal(fds.n, 2);
	assert_true(fcntl(ufd, F_GETFD) >= 0 && fcntl(tfd, F_GETFD) >= 0);
	sysd_fds_close(&fds);
	assert_int_equal(fds.n, 0);
	assert_true(fcntl(ufd, F_GETFD) == -1 && errno == EBADF);
	assert_true(fcntl(tfd, F_GETFD) == -1 && errno == EBADF);

	c = client_udp();
	for (id = 1; id <= 20; id++)
		send_query(w, c, id, "localhost");
	pump(w, c, &w->n_got, 20);
	assert_int_equal(m1.queries_udp + m2.queries_udp, 20);
	tcp_query(w, 21, "localhost");
	assert_int_equal(m1.tcp_accepted + m2.tcp_accepted, 1);

	/* One worker's listener closes: the other's descriptor keeps the
	 * sockets open and served. */
	accepted = m2.tcp_accepted;
	stop(w, l1);
	send_query(w, c, 22, "localhost");
	pump(w, c, &w->n_got, 22);
	tcp_query(w, 23, "localhost");
	assert_int_equal(m2.tcp_accepted, accepted + 1);
	for (id = 1; id <= 23; id++)
		assert_int_equal(w->got[id], 1);
	close(c);
	stop(w, l2);
}

/* A handed-over socket that no listen address matches is refused before
 * anything is bound, as it was before duplicates. */
static void
test_sysd_unmatched(void **state)
{
	struct world *w = *state;
	struct sysd_fds fds;
	struct conf other;
	char err[256], want[256];
	int ufd, tfd;

	handed_over(w, &fds, &ufd, &tfd);
	conf_init(&other);
	conf_listen(&other, (uint16_t)(w->port == 65535 ? 1 : w->port + 1));
	assert_int_equal(sysd_fds_check_conf(&fds, &other, err,
	    sizeof(err)), -1);
	snprintf(want, sizeof(want), "socket activation: fd %d (udp "
	    "127.0.0.1@%u) matches no listen address", ufd, w->port);
	assert_string_equal(err, want);
	sysd_fds_close(&fds);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_burst, setup, teardown),
		cmocka_unit_test_setup_teardown(test_burst_eagain, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_burst_enobufs, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_burst_short, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_burst_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_reuseport, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_no_reuseport, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_v6only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sysd_two_listeners, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_sysd_unmatched, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
