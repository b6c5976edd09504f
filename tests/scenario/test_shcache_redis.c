/* test_shcache_redis.c: the shared cache (src/shcache.c) against a real
 * redis-server on loopback.
 *
 * The group setup starts Debian's redis-server on a free loopback port
 * (no persistence) and waits for it by connecting with retries, bounded in
 * time; the teardown kills it by its PID. A missing redis-server fails the
 * test (CI installs it). Each test drives its own struct shcache on one uv
 * loop and ends by closing it and running the loop to its end, so that a
 * handle left open hangs (the alarm fails the test) and a leak shows under
 * ASan. The test itself talks to Redis with hiredis's synchronous API, to
 * plant values and to look at keys. Waits are for events, each bounded by
 * a loop timer; SIGSTOP and SIGCONT make the server hang and come back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "shcache.h"

#define REDIS_SERVER "/usr/bin/redis-server"
#define NUTCRACKER "/usr/sbin/nutcracker"
#define TIMEOUT_MS 100       /* generous for ASan; the bound checked is
                              * TIMEOUT_MS + 50 */
#define PREFIX "t:dpx:"

extern char **environ;

static pid_t redis_pid = -1;
static int redis_port;
static uv_loop_t loop;
static struct conf conf;
static struct metrics m;
static uint64_t fake_ms;
static struct shcache *cur;   /* open_cache's, until close_cache */

/* ---- redis-server ---- */

static int
free_port(void)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static redisContext *
sync_connect(void)
{
	struct timeval tv = { 1, 0 };

	return redisConnectWithTimeout("127.0.0.1", redis_port, tv);
}

/* Connect to port and PING, again every 20 ms until a PONG (0) or until
 * (uv_hrtime) has passed (-1): a server's readiness, which it announces
 * nowhere we can await. */
static int
await_pong(int port, uint64_t until)
{
	struct timespec ts = { 0, 20000000 };
	struct timeval tv = { 1, 0 };
	redisContext *rc;
	redisReply *rep;

	while (uv_hrtime() < until) {
		rc = redisConnectWithTimeout("127.0.0.1", port, tv);
		if (rc != NULL && rc->err == 0) {
			rep = redisCommand(rc, "PING");
			if (rep != NULL && rep->type == REDIS_REPLY_STATUS) {
				freeReplyObject(rep);
				redisFree(rc);
				return 0;
			}
			if (rep)
				freeReplyObject(rep);
		}
		if (rc)
			redisFree(rc);
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* Start the server and wait until it answers PING: 0, or -1 after 10 s. */
static int
redis_start(void)
{
	char port[16];
	char *argv[] = { REDIS_SERVER, "--port", port, "--bind", "127.0.0.1",
	    "--save", "", "--appendonly", "no", NULL };
	posix_spawn_file_actions_t fa;
	uint64_t until = uv_hrtime() + 10000000000ULL;

	snprintf(port, sizeof(port), "%d", redis_port);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (posix_spawn(&redis_pid, REDIS_SERVER, &fa, NULL, argv,
	    environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		redis_pid = -1;
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	/* Readiness: poll with a connect, bounded in time. */
	return await_pong(redis_port, until);
}

/* twemproxy (nutcracker) in front of the server, on a port of its own;
 * waits until a PING goes through it. */
static pid_t nut_pid = -1;
static int nut_port;
static char nut_conf[] = "/tmp/test_shcache_nut.XXXXXX";

static int
nut_start(void)
{
	char stats[16], text[256];
	char *argv[] = { NUTCRACKER, "-c", nut_conf, "-s", stats, "-a",
	    "127.0.0.1", "-o", "/dev/null", NULL };
	uint64_t until = uv_hrtime() + 10000000000ULL;
	posix_spawn_file_actions_t fa;
	int fd, n;

	if (access(NUTCRACKER, X_OK) != 0) {
		fprintf(stderr, "FAIL: %s is not installed (apt-get install "
		    "nutcracker); this test needs it\n", NUTCRACKER);
		return -1;
	}
	nut_port = free_port();
	snprintf(stats, sizeof(stats), "%d", free_port());
	fd = mkstemp(nut_conf);
	if (fd < 0)
		return -1;
	n = snprintf(text, sizeof(text), "dpx:\n  listen: 127.0.0.1:%d\n"
	    "  redis: true\n  servers:\n   - 127.0.0.1:%d:1\n", nut_port,
	    redis_port);
	if (write(fd, text, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	close(fd);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	n = posix_spawn(&nut_pid, NUTCRACKER, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (n != 0) {
		nut_pid = -1;
		return -1;
	}
	return await_pong(nut_port, until);
}

static void
nut_kill(void)
{
	if (nut_pid > 0) {
		kill(nut_pid, SIGKILL);
		waitpid(nut_pid, NULL, 0);
		nut_pid = -1;
	}
	unlink(nut_conf);
}

static void
redis_kill(void)
{
	if (redis_pid <= 0)
		return;
	kill(redis_pid, SIGKILL);
	waitpid(redis_pid, NULL, 0);
	redis_pid = -1;
}

static int
group_setup(void **state)
{
	(void)state;
	if (access(REDIS_SERVER, X_OK) != 0) {
		fprintf(stderr, "FAIL: %s is not installed (apt-get install "
		    "redis-server); this test needs it\n", REDIS_SERVER);
		return -1;
	}
	log_open(getenv("SHC_DEBUG") ? LOGL_DEBUG : LOGL_INFO, 1);
	redis_port = free_port();
	if (redis_start() != 0) {
		fprintf(stderr, "FAIL: redis-server did not come up on "
		    "127.0.0.1:%d\n", redis_port);
		redis_kill();
		return -1;
	}
	return 0;
}

/* After a failed test: let the server run, close what the test left
 * open, so that the next test starts from a clean loop. */
static int
test_teardown(void **state)
{
	(void)state;
	if (redis_pid > 0)
		kill(redis_pid, SIGCONT);
	if (cur != NULL) {
		shcache_close(cur);
		cur = NULL;
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	return 0;
}

/* The alarm: something hung. Do not leave the servers behind. */
static void
alarm_handler(int sig)
{
	(void)sig;
	if (nut_pid > 0)
		kill(nut_pid, SIGKILL);
	if (redis_pid > 0)
		kill(redis_pid, SIGKILL);
	unlink(nut_conf);
	_exit(2);
}

static int
group_teardown(void **state)
{
	(void)state;
	nut_kill();
	redis_kill();
	return 0;
}

/* A raw command through a sync context; the reply's integer, or -1. */
static long long
raw(const char *fmt, ...)
{
	redisContext *rc = sync_connect();
	redisReply *rep;
	long long v = -1;
	va_list ap;

	assert_non_null(rc);
	assert_int_equal(rc->err, 0);
	va_start(ap, fmt);
	rep = redisvCommand(rc, fmt, ap);
	va_end(ap);
	assert_non_null(rep);
	if (rep->type == REDIS_REPLY_INTEGER)
		v = rep->integer;
	freeReplyObject(rep);
	redisFree(rc);
	return v;
}

/* ---- the loop ---- */

static void
guard_cb(uv_timer_t *t)
{
	(void)t;
}

/* Run the loop until pred(arg) or ms have passed; pred's last answer. */
static int
run_until(int (*pred)(void *), void *arg, uint64_t ms)
{
	uv_timer_t guard;
	uint64_t until = uv_hrtime() + ms * 1000000ULL;
	int ok;

	uv_timer_init(&loop, &guard);
	uv_timer_start(&guard, guard_cb, 10, 10);
	while (!(ok = pred(arg)) && uv_hrtime() < until)
		uv_run(&loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	return ok;
}

static int
is_up(void *arg)
{
	struct shcache_state st;

	shcache_get_state(arg, &st);
	return st.up;
}

static int
is_open(void *arg)
{
	struct shcache_state st;

	shcache_get_state(arg, &st);
	return st.circuit_open;
}

static int
none_outstanding(void *arg)
{
	struct shcache_state st;

	shcache_get_state(arg, &st);
	return st.outstanding == 0;
}

static uint64_t
fake_clock(void *arg)
{
	(void)arg;
	return fake_ms;
}

static struct shcache *
open_cache_at(int port)
{
	struct shcache *s;

	conf_init(&conf);
	conf.shared_cache.set = 1;
	snprintf(conf.shared_cache.host, sizeof(conf.shared_cache.host),
	    "127.0.0.1");
	conf.shared_cache.port = (unsigned)port;
	snprintf(conf.shared_cache.url, sizeof(conf.shared_cache.url),
	    "redis://127.0.0.1:%d", port);
	conf.shared_cache_timeout_ms = TIMEOUT_MS;
	snprintf(conf.shared_cache_prefix, sizeof(conf.shared_cache_prefix),
	    PREFIX);
	conf.shared_cache_prefix_len = strlen(PREFIX);
	memset(&m, 0, sizeof(m));
	fake_ms = (uint64_t)time(NULL) * 1000;
	s = shcache_new(&loop, &conf, &m);
	assert_non_null(s);
	cur = s;
	shcache_set_clock(s, fake_clock, NULL);
	assert_true(run_until(is_up, s, 5000));
	return s;
}

static struct shcache *
open_cache(void)
{
	return open_cache_at(redis_port);
}

/* Close s and run the loop to its end: every handle must be closed. */
static void
close_cache(struct shcache *s)
{
	cur = NULL;
	shcache_close(s);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
}

/* ---- DNS ---- */

static size_t
name_wire(const char *text, uint8_t *out)
{
	size_t n = 0;
	const char *dot;

	while (*text) {
		dot = strchr(text, '.');
		if (dot == NULL)
			dot = text + strlen(text);
		out[n++] = (uint8_t)(dot - text);
		memcpy(out + n, text, (size_t)(dot - text));
		n += (size_t)(dot - text);
		text = *dot ? dot + 1 : dot;
	}
	out[n++] = 0;
	return n;
}

static void
make_question(const char *name, uint16_t type, struct dnsmsg_question *q,
    struct cache_key *k)
{
	memset(q, 0, sizeof(*q));
	q->wire_len = name_wire(name, q->wire);
	q->qtype = type;
	q->qclass = 1;
	q->end = DNS_HDR_LEN + q->wire_len + 4;
	memset(k, 0, sizeof(*k));
	memcpy(k->bytes, q->wire, q->wire_len);
	k->bytes[q->wire_len] = (uint8_t)(type >> 8);
	k->bytes[q->wire_len + 1] = (uint8_t)type;
	k->bytes[q->wire_len + 2] = 0;
	k->bytes[q->wire_len + 3] = 1;
	k->bytes[q->wire_len + 4] = 0;
	k->len = q->wire_len + 5;
}

/* An answer to q with one A record of ttl (rcode in the header). */
static size_t
make_answer(const struct dnsmsg_question *q, uint32_t ttl, int rcode,
    uint8_t *out)
{
	static const uint8_t hdr[12] = { 0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0,
	    0, 0 };
	size_t n = 12;

	memcpy(out, hdr, 12);
	out[3] |= (uint8_t)rcode;
	memcpy(out + n, q->wire, q->wire_len);
	n += q->wire_len;
	out[n++] = (uint8_t)(q->qtype >> 8);
	out[n++] = (uint8_t)q->qtype;
	out[n++] = 0;
	out[n++] = 1;
	out[n++] = 0xc0;
	out[n++] = 12;
	out[n++] = 0;
	out[n++] = 1;
	out[n++] = 0;
	out[n++] = 1;
	out[n++] = (uint8_t)(ttl >> 24);
	out[n++] = (uint8_t)(ttl >> 16);
	out[n++] = (uint8_t)(ttl >> 8);
	out[n++] = (uint8_t)ttl;
	out[n++] = 0;
	out[n++] = 4;
	out[n++] = 192;
	out[n++] = 0;
	out[n++] = 2;
	out[n++] = 1;
	return n;
}

static uint32_t
answer_ttl(const uint8_t *a, size_t len)
{
	/* the one record's TTL: 10 bytes before the end's 4 of rdata... */
	const uint8_t *p = a + len - 4 - 2 - 4;

	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* ---- gets ---- */

struct got {
	int calls;
	int result;
	uint8_t answer[DNS_MAX_MSG];
	size_t len;
	uint32_t ttl;
	uint64_t at_ns;
};

static void
got_cb(void *arg, int result, uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info)
{
	struct got *g = arg;

	g->calls++;
	g->result = result;
	g->len = len;
	g->at_ns = uv_hrtime();
	if (result == SHCACHE_HIT) {
		assert_non_null(answer);
		assert_non_null(info);
		memcpy(g->answer, answer, len);
		g->ttl = info->ttl;
	} else {
		assert_null(answer);
	}
}

static int
got_called(void *arg)
{
	return ((struct got *)arg)->calls > 0;
}

/* One get of (name, type) to its end; its result. */
static int
get1(struct shcache *s, const char *name, uint16_t type, struct got *g)
{
	struct dnsmsg_question q;
	struct cache_key k;

	memset(g, 0, sizeof(*g));
	make_question(name, type, &q, &k);
	if (shcache_get(s, &k, &q, got_cb, g) != 0)
		return -1;
	assert_int_equal(g->calls, 0);   /* never from within the call */
	assert_true(run_until(got_called, g, 5000));
	assert_int_equal(g->calls, 1);
	return g->result;
}

static void
put1(struct shcache *s, const char *name, uint16_t type, uint32_t ttl)
{
	struct dnsmsg_question q;
	struct cache_key k;
	uint8_t a[512];
	size_t len;
	uint64_t before = m.shc_requests[SHCACHE_OP_SET][SHCACHE_OK];

	make_question(name, type, &q, &k);
	len = make_answer(&q, ttl, 0, a);
	shcache_put(s, &k, a, len, ttl);
	assert_true(run_until(none_outstanding, s, 5000));
	assert_int_equal(m.shc_requests[SHCACHE_OP_SET][SHCACHE_OK],
	    before + 1);
}

/* The Redis key of (name, type). */
static size_t
redis_key(const char *name, uint16_t type, char *out)
{
	struct dnsmsg_question q;
	struct cache_key k;

	make_question(name, type, &q, &k);
	memcpy(out, PREFIX, strlen(PREFIX));
	memcpy(out + strlen(PREFIX), k.bytes, k.len);
	return strlen(PREFIX) + k.len;
}

/* ---- the tests ---- */

static void
test_put_get(void **state)
{
	struct shcache *s;
	struct shcache_state st;
	struct dnsmsg_question q;
	struct cache_key k;
	uint8_t a[512];
	size_t len;
	char key[600];
	size_t klen;
	static struct got g;

	(void)state;
	raw("FLUSHALL");
	s = open_cache();
	shcache_get_state(s, &st);
	assert_int_equal(st.up, 1);
	assert_int_equal(st.circuit_open, 0);
	assert_true(st.connects >= 1);

	assert_int_equal(get1(s, "www.example.com", 1, &g), SHCACHE_MISS);
	put1(s, "www.example.com", 1, 300);
	klen = redis_key("www.example.com", 1, key);
	assert_int_equal(raw("EXISTS %b", key, klen), 1);
	/* written with PX lifetime */
	assert_true(raw("PTTL %b", key, klen) > 299000);

	make_question("www.example.com", 1, &q, &k);
	len = make_answer(&q, 300, 0, a);
	assert_int_equal(get1(s, "www.example.com", 1, &g), SHCACHE_HIT);
	assert_int_equal(g.len, len);
	assert_memory_equal(g.answer, a, len);
	assert_int_equal(g.ttl, 300);

	/* 100.9 s later (whole seconds): TTL and lifetime lowered by 100 */
	fake_ms += 100900;
	assert_int_equal(get1(s, "www.example.com", 1, &g), SHCACHE_HIT);
	assert_int_equal(answer_ttl(g.answer, g.len), 200);
	assert_int_equal(g.ttl, 200);
	assert_memory_equal(g.answer, a, len - 10);

	/* a clock behind the stamp: age 0 */
	fake_ms -= 200000;
	assert_int_equal(get1(s, "www.example.com", 1, &g), SHCACHE_HIT);
	assert_int_equal(answer_ttl(g.answer, g.len), 300);

	/* aged past its lifetime: not served, counted invalid */
	fake_ms += 200000 + 200000;
	assert_int_equal(get1(s, "www.example.com", 1, &g), SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 1);

	/* a record TTL below the lifetime is aged, not only clamped */
	make_question("low.example.com", 1, &q, &k);
	len = make_answer(&q, 100, 0, a);
	shcache_put(s, &k, a, len, 300);
	assert_true(run_until(none_outstanding, s, 5000));
	fake_ms += 40000;
	assert_int_equal(get1(s, "low.example.com", 1, &g), SHCACHE_HIT);
	assert_int_equal(answer_ttl(g.answer, g.len), 60);
	assert_int_equal(g.ttl, 260);
	fake_ms -= 40000;

	assert_int_equal(m.shc_requests[SHCACHE_OP_GET][SHCACHE_HIT], 4);
	assert_int_equal(m.shc_requests[SHCACHE_OP_GET][SHCACHE_MISS], 1);
	assert_int_equal(m.shc_requests[SHCACHE_OP_GET][SHCACHE_ERROR], 1);
	assert_int_equal(m.shc_duration[SHCACHE_OP_GET].count, 6);
	assert_int_equal(m.shc_duration[SHCACHE_OP_SET].count, 2);
	close_cache(s);
}

static void
test_garbage(void **state)
{
	struct shcache *s;
	struct shcache_state st;
	struct dnsmsg_question q;
	struct cache_key k;
	static uint8_t a[512], v[2 * SHCACHE_VALUE_MAX];
	static char big[1 << 20];
	static struct got g;
	char key[600];
	size_t klen, len, n;
	int i;

	(void)state;
	raw("FLUSHALL");
	s = open_cache();
	klen = redis_key("g.example.com", 1, key);
	make_question("g.example.com", 1, &q, &k);
	len = make_answer(&q, 300, 0, a);

	/* truncated value */
	n = shcache_value_encode(v, sizeof(v), fake_ms, 300, a, len);
	raw("SET %b %b", key, klen, v, n - 5);
	assert_int_equal(get1(s, "g.example.com", 1, &g), SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 1);
	/* the header alone, cut */
	raw("SET %b %b", key, klen, v, (size_t)10);
	assert_int_equal(get1(s, "g.example.com", 1, &g), SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 2);
	/* an answer to another question */
	raw("SET %b %b", key, klen, v, n);
	assert_int_equal(get1(s, "g.example.com", 28, &g), SHCACHE_MISS);
	klen = redis_key("g.example.com", 28, key);
	raw("SET %b %b", key, klen, v, n);
	assert_int_equal(get1(s, "g.example.com", 28, &g), SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 3);
	klen = redis_key("g.example.com", 1, key);
	/* SERVFAIL is not cacheable */
	len = make_answer(&q, 300, DNS_RCODE_SERVFAIL, a);
	n = shcache_value_encode(v, sizeof(v), fake_ms, 300, a, len);
	raw("SET %b %b", key, klen, v, n);
	assert_int_equal(get1(s, "g.example.com", 1, &g), SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 4);
	/* 1 MB: of garbage, and starting with a good value */
	memset(big, 'x', sizeof(big));
	raw("SET %b %b", key, klen, big, sizeof(big));
	assert_int_equal(get1(s, "g.example.com", 1, &g), SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 5);
	len = make_answer(&q, 300, 0, a);
	n = shcache_value_encode(v, sizeof(v), fake_ms, 300, a, len);
	memcpy(big, v, n);
	raw("SET %b %b", key, klen, big, sizeof(big));
	assert_int_equal(get1(s, "g.example.com", 1, &g), SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 6);
	/* the good value itself is a hit */
	raw("SET %b %b", key, klen, v, n);
	assert_int_equal(get1(s, "g.example.com", 1, &g), SHCACHE_HIT);
	/* a list: WRONGTYPE, an error, not a sick server: more than the
	 * breaker's count in a row leave it closed */
	raw("DEL %b", key, klen);
	raw("RPUSH %b a b", key, klen);
	for (i = 0; i < SHCACHE_BREAKER_FAILS + 2; i++)
		assert_int_equal(get1(s, "g.example.com", 1, &g),
		    SHCACHE_ERROR);
	assert_int_equal(m.shc_invalid, 6);
	shcache_get_state(s, &st);
	assert_int_equal(st.up, 1);
	assert_int_equal(st.circuit_open, 0);
	assert_int_equal(st.breaker_opens, 0);
	assert_int_equal(m.shc_requests[SHCACHE_OP_GET][SHCACHE_HIT], 1);
	close_cache(s);
}

static int
dels_done(void *arg)
{
	uint64_t *want = arg;

	return m.shc_requests[SHCACHE_OP_DEL][SHCACHE_OK] >= *want &&
	    none_outstanding((void *)(uintptr_t)want[1]);
}

static long long
exists(const char *name, uint16_t type)
{
	char key[600];
	size_t klen = redis_key(name, type, key);

	return raw("EXISTS %b", key, klen);
}

static void
test_flush(void **state)
{
	struct shcache *s;
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t wl;
	uint64_t want[2];

	(void)state;
	raw("FLUSHALL");
	s = open_cache();
	want[1] = (uint64_t)(uintptr_t)s;
	put1(s, "a.example.com", 1, 300);
	put1(s, "a.example.com", 28, 300);
	put1(s, "b.a.example.com", 1, 300);
	put1(s, "x.b.a.example.com", 16, 300);
	put1(s, "c.example.com", 1, 300);
	put1(s, "ba.example.com", 1, 300);
	/* a key not under our prefix, which nothing may touch */
	raw("SET other:key 1");

	wl = name_wire("a.example.com", wire);
	assert_int_equal(shcache_flush(s, wire, wl, 0), 0);
	want[0] = 1;
	assert_true(run_until(dels_done, want, 5000));
	assert_int_equal(exists("a.example.com", 1), 0);
	assert_int_equal(exists("a.example.com", 28), 0);
	assert_int_equal(exists("b.a.example.com", 1), 1);
	assert_int_equal(exists("x.b.a.example.com", 16), 1);
	assert_int_equal(exists("c.example.com", 1), 1);

	put1(s, "a.example.com", 1, 300);
	assert_int_equal(shcache_flush(s, wire, wl, 1), 0);
	want[0] = 2;
	assert_true(run_until(dels_done, want, 5000));
	assert_int_equal(exists("a.example.com", 1), 0);
	assert_int_equal(exists("b.a.example.com", 1), 0);
	assert_int_equal(exists("x.b.a.example.com", 16), 0);
	assert_int_equal(exists("c.example.com", 1), 1);
	assert_int_equal(exists("ba.example.com", 1), 1);

	/* everything under the prefix */
	assert_int_equal(shcache_flush(s, NULL, 0, 0), 0);
	want[0] = 3;
	assert_true(run_until(dels_done, want, 5000));
	assert_int_equal(exists("c.example.com", 1), 0);
	assert_int_equal(exists("ba.example.com", 1), 0);
	assert_int_equal(raw("EXISTS other:key"), 1);
	close_cache(s);
}

static void
test_hang_breaker(void **state)
{
	struct shcache *s;
	struct shcache_state st;
	struct dnsmsg_question q;
	struct cache_key k;
	static struct got g;
	uint64_t t0, skipped;
	int i;

	(void)state;
	raw("FLUSHALL");
	s = open_cache();
	put1(s, "h.example.com", 1, 300);
	assert_int_equal(kill(redis_pid, SIGSTOP), 0);
	for (i = 0; i < SHCACHE_BREAKER_FAILS; i++) {
		shcache_get_state(s, &st);
		assert_int_equal(st.circuit_open, 0);
		t0 = uv_hrtime();
		assert_int_equal(get1(s, "h.example.com", 1, &g),
		    SHCACHE_TIMEOUT);
		assert_true(g.at_ns - t0 < (TIMEOUT_MS + 50) * 1000000ULL);
		assert_true(g.at_ns - t0 >= (TIMEOUT_MS - 1) * 1000000ULL);
	}
	shcache_get_state(s, &st);
	assert_int_equal(st.circuit_open, 1);
	assert_int_equal(st.up, 0);
	assert_int_equal(st.breaker_opens, 1);
	assert_true(st.retry_in_ms > 0);
	assert_true(st.retry_in_ms <= SHCACHE_BACKOFF_MIN_MS * 5 / 4);
	assert_int_equal(m.shc_requests[SHCACHE_OP_GET][SHCACHE_TIMEOUT],
	    SHCACHE_BREAKER_FAILS);
	skipped = m.shc_requests[SHCACHE_OP_GET][SHCACHE_SKIPPED];
	make_question("h.example.com", 1, &q, &k);
	assert_int_equal(shcache_get(s, &k, &q, got_cb, &g), -1);
	assert_int_equal(m.shc_requests[SHCACHE_OP_GET][SHCACHE_SKIPPED],
	    skipped + 1);

	assert_int_equal(kill(redis_pid, SIGCONT), 0);
	/* back-off (1 s +- 25 %), then connect and PING */
	assert_true(run_until(is_up, s, 6000));
	shcache_get_state(s, &st);
	assert_int_equal(st.circuit_open, 0);
	assert_int_equal(get1(s, "h.example.com", 1, &g), SHCACHE_HIT);
	close_cache(s);
}

/* The probe itself fails while the server still hangs: the breaker
 * reopens with the back-off doubled. */
static void
test_probe_fails(void **state)
{
	struct shcache *s;
	struct shcache_state st;
	static struct got g;
	uint64_t opened;
	int i;

	(void)state;
	s = open_cache();
	assert_int_equal(kill(redis_pid, SIGSTOP), 0);
	for (i = 0; i < SHCACHE_BREAKER_FAILS; i++)
		assert_int_equal(get1(s, "p.example.com", 1, &g),
		    SHCACHE_TIMEOUT);
	assert_true(is_open(s));
	shcache_get_state(s, &st);
	opened = st.connects;
	/* wait for the probe's connection, then for its failure */
	for (i = 0; i < 600; i++) {
		run_until(is_up, s, 10);
		shcache_get_state(s, &st);
		if (st.connects > opened && st.retry_in_ms >
		    SHCACHE_BACKOFF_MIN_MS * 5 / 4)
			break;
	}
	assert_true(st.connects > opened);
	assert_int_equal(st.circuit_open, 1);
	assert_int_equal(st.up, 0);
	/* doubled: 2 s +- 25 % */
	assert_true(st.retry_in_ms > SHCACHE_BACKOFF_MIN_MS * 5 / 4);
	assert_true(st.retry_in_ms <= SHCACHE_BACKOFF_MIN_MS * 2 * 5 / 4);
	assert_int_equal(kill(redis_pid, SIGCONT), 0);
	assert_true(run_until(is_up, s, 6000));
	close_cache(s);
}

static int
is_down(void *arg)
{
	return !is_up(arg);
}

/* The server dies and comes back on the same port: the client notices
 * the loss (up goes to 0), retries, and is up again. */
static void
test_restart(void **state)
{
	struct shcache *s;
	static struct got g;

	(void)state;
	s = open_cache();
	redis_kill();
	/* the server's end reset: noticed without a request (hiredis
	 * 0.14's own libuv adapter missed this) */
	assert_true(run_until(is_down, s, 5000));
	assert_int_equal(redis_start(), 0);
	assert_true(run_until(is_up, s, 15000));
	put1(s, "r.example.com", 1, 300);
	assert_int_equal(get1(s, "r.example.com", 1, &g), SHCACHE_HIT);
	close_cache(s);
}

static void
test_close_outstanding(void **state)
{
	struct shcache *s;
	struct dnsmsg_question q;
	struct cache_key k;
	static struct got g[3];
	int i;

	(void)state;
	s = open_cache();
	assert_int_equal(kill(redis_pid, SIGSTOP), 0);
	make_question("z.example.com", 1, &q, &k);
	for (i = 0; i < 3; i++) {
		memset(&g[i], 0, sizeof(g[i]));
		assert_int_equal(shcache_get(s, &k, &q, got_cb, &g[i]), 0);
	}
	cur = NULL;
	shcache_close(s);
	for (i = 0; i < 3; i++) {
		assert_int_equal(g[i].calls, 1);
		assert_int_equal(g[i].result, SHCACHE_SKIPPED);
	}
	assert_int_equal(m.shc_requests[SHCACHE_OP_GET][SHCACHE_SKIPPED], 3);
	assert_int_equal(kill(redis_pid, SIGCONT), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(g[i].calls, 1);
}

/* A callback that closes the client: from a reply (inside hiredis's
 * callback, where freeing the context is deferred) and from the timer. */
static struct shcache *closer_s;
static struct got closer_g[2];

static void
closer_cb(void *arg, int result, uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info)
{
	got_cb(arg, result, answer, len, info);
	shcache_close(closer_s);
}

static void
close_from_callback(int hang)
{
	struct dnsmsg_question q;
	struct cache_key k;

	closer_s = open_cache();
	cur = NULL;   /* the callback closes it */
	if (!hang)
		put1(closer_s, "cc.example.com", 1, 300);
	else
		assert_int_equal(kill(redis_pid, SIGSTOP), 0);
	memset(closer_g, 0, sizeof(closer_g));
	make_question("cc.example.com", 1, &q, &k);
	assert_int_equal(shcache_get(closer_s, &k, &q, closer_cb,
	    &closer_g[0]), 0);
	assert_int_equal(shcache_get(closer_s, &k, &q, got_cb, &closer_g[1]),
	    0);
	/* the loop ends once the callback closed the client */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	if (hang)
		assert_int_equal(kill(redis_pid, SIGCONT), 0);
	assert_int_equal(closer_g[0].calls, 1);
	assert_int_equal(closer_g[0].result, hang ? SHCACHE_TIMEOUT :
	    SHCACHE_HIT);
	assert_int_equal(closer_g[1].calls, 1);
	assert_int_equal(closer_g[1].result, SHCACHE_SKIPPED);
}

static void
test_close_from_reply(void **state)
{
	(void)state;
	close_from_callback(0);
}

static void
test_close_from_timeout(void **state)
{
	(void)state;
	close_from_callback(1);
}

/* EXISTS in database db. */
static long long
exists_db(unsigned db, const char *name, uint16_t type)
{
	redisContext *rc = sync_connect();
	redisReply *rep;
	char key[600];
	size_t klen = redis_key(name, type, key);
	long long v;

	assert_non_null(rc);
	rep = redisCommand(rc, "SELECT %u", db);
	assert_non_null(rep);
	freeReplyObject(rep);
	rep = redisCommand(rc, "EXISTS %b", key, klen);
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	v = rep->integer;
	freeReplyObject(rep);
	redisFree(rc);
	return v;
}

/* A reload: a new timeout applies; another database (another address)
 * reconnects, with SELECT. */
static void
test_set_conf(void **state)
{
	struct shcache *s;
	struct shcache_state st;
	static struct conf conf2;
	static struct got g;
	uint64_t connects;

	(void)state;
	raw("FLUSHALL");
	s = open_cache();
	shcache_get_state(s, &st);
	connects = st.connects;
	conf2 = conf;
	conf2.shared_cache_timeout_ms = TIMEOUT_MS + 1;
	shcache_set_conf(s, &conf2);
	shcache_get_state(s, &st);
	assert_int_equal(st.connects, connects);
	assert_int_equal(st.up, 1);
	conf = conf2;
	conf.shared_cache.db = 3;
	shcache_set_conf(s, &conf);
	assert_true(run_until(is_up, s, 5000));
	shcache_get_state(s, &st);
	assert_int_equal(st.connects, connects + 1);
	put1(s, "db.example.com", 1, 300);
	assert_int_equal(exists_db(3, "db.example.com", 1), 1);
	assert_int_equal(exists_db(0, "db.example.com", 1), 0);
	assert_int_equal(get1(s, "db.example.com", 1, &g), SHCACHE_HIT);
	raw("SELECT 3");
	close_cache(s);
	raw("FLUSHALL");
}

static int
up_after(void *arg)
{
	uint64_t *want = arg;
	struct shcache_state st;

	shcache_get_state((struct shcache *)(uintptr_t)want[1], &st);
	return st.up && st.connects >= want[0];
}

/* Through twemproxy, which closes the connection on SCAN: an exact flush
 * deletes the common types by name once reconnected; a subtree flush
 * cannot, and deletes nothing. */
static void
test_twemproxy(void **state)
{
	struct shcache *s;
	struct shcache_state st;
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t wl;
	uint64_t want[2];
	static struct got g;

	(void)state;
	raw("FLUSHALL");
	assert_int_equal(nut_start(), 0);
	s = open_cache_at(nut_port);
	put1(s, "t.example.com", 1, 300);
	put1(s, "t.example.com", 28, 300);
	put1(s, "t.example.com", 99, 300);   /* not a common type */
	put1(s, "u.t.example.com", 1, 300);
	assert_int_equal(get1(s, "t.example.com", 1, &g), SHCACHE_HIT);
	assert_int_equal(exists("t.example.com", 1), 1);

	shcache_get_state(s, &st);
	wl = name_wire("t.example.com", wire);
	assert_int_equal(shcache_flush(s, wire, wl, 0), 0);
	want[0] = 1;
	want[1] = (uint64_t)(uintptr_t)s;
	assert_true(run_until(dels_done, want, 5000));
	assert_int_equal(exists("t.example.com", 1), 0);
	assert_int_equal(exists("t.example.com", 28), 0);
	assert_int_equal(exists("t.example.com", 99), 1);
	assert_int_equal(exists("u.t.example.com", 1), 1);

	shcache_get_state(s, &st);
	assert_int_equal(shcache_flush(s, wire, wl, 1), 0);
	want[0] = st.connects + 1;
	assert_true(run_until(up_after, want, 5000));
	assert_true(run_until(none_outstanding, s, 5000));
	assert_int_equal(exists("u.t.example.com", 1), 1);
	assert_int_equal(m.shc_requests[SHCACHE_OP_DEL][SHCACHE_OK], 1);
	close_cache(s);
	nut_kill();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_put_get, test_teardown),
		cmocka_unit_test_teardown(test_garbage, test_teardown),
		cmocka_unit_test_teardown(test_flush, test_teardown),
		cmocka_unit_test_teardown(test_hang_breaker, test_teardown),
		cmocka_unit_test_teardown(test_probe_fails, test_teardown),
		cmocka_unit_test_teardown(test_restart, test_teardown),
		cmocka_unit_test_teardown(test_close_outstanding, test_teardown),
		cmocka_unit_test_teardown(test_close_from_reply, test_teardown),
		cmocka_unit_test_teardown(test_close_from_timeout, test_teardown),
		cmocka_unit_test_teardown(test_set_conf, test_teardown),
		cmocka_unit_test_teardown(test_twemproxy, test_teardown),
	};
	int rc;

	/* A handle left open would make a final uv_run hang: fail then. */
	signal(SIGALRM, alarm_handler);
	alarm(120);
	uv_loop_init(&loop);
	rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
	uv_loop_close(&loop);
	return rc;
}
