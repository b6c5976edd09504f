/* test_ratelimit.c: unit tests for the per-client token buckets
 * (src/ratelimit.c), with literal times: nothing here sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>

#include "mem.h"
#include "ratelimit.h"

#define T0 1000000ULL   /* an arbitrary loop time */

static void
addr(const char *s, unsigned char a[16])
{
	memset(a, 0, 16);
	if (inet_pton(AF_INET, s, a + 12) == 1) {
		a[10] = a[11] = 0xff;
		return;
	}
	assert_int_equal(inet_pton(AF_INET6, s, a), 1);
}

/* Queries allowed out of n asked at time t. */
static unsigned
burst(struct ratelimit *rl, const char *who, unsigned qps, unsigned n,
    uint64_t t)
{
	unsigned char a[16];
	unsigned i, ok = 0;

	addr(who, a);
	for (i = 0; i < n; i++)
		ok += (unsigned)ratelimit_allow(rl, a, qps, t);
	return ok;
}

/* A burst gets exactly qps; then qps a second, in proportion to the time
 * passed; an idle client's bucket holds no more than qps. */
static void
test_bucket(void **state)
{
	struct ratelimit *rl = ratelimit_new(RATELIMIT_ENTRIES);

	(void)state;
	assert_non_null(rl);
	assert_int_equal(burst(rl, "127.0.0.1", 50, 500, T0), 50);
	assert_int_equal(burst(rl, "127.0.0.1", 50, 10, T0), 0);
	/* 100 ms refill 5 tokens. */
	assert_int_equal(burst(rl, "127.0.0.1", 50, 10, T0 + 100), 5);
	/* 10 ms: half a token... */
	assert_int_equal(burst(rl, "127.0.0.1", 50, 10, T0 + 110), 0);
	/* ...and 10 more ms make it whole. */
	assert_int_equal(burst(rl, "127.0.0.1", 50, 10, T0 + 120), 1);
	/* An hour idle: still only a second's worth. */
	assert_int_equal(burst(rl, "127.0.0.1", 50, 500, T0 + 3600000), 50);
	/* A clock going back refills nothing. */
	assert_int_equal(burst(rl, "127.0.0.1", 50, 10, T0), 0);
	/* Others are not touched by one client's use. */
	assert_int_equal(burst(rl, "127.0.0.2", 50, 500, T0 + 3600000), 50);
	/* Steady: 1 query every 20 ms at 50 q/s is always allowed. */
	{
		unsigned i, ok = 0;

		for (i = 1; i <= 200; i++)
			ok += burst(rl, "10.9.9.9", 50, 1, T0 + 20ULL * i);
		assert_int_equal(ok, 200);
	}
	/* Lowering the limit caps a fuller bucket at once. */
	assert_int_equal(burst(rl, "10.1.1.1", 100, 1, T0), 1);
	assert_int_equal(burst(rl, "10.1.1.1", 10, 100, T0), 10);
	ratelimit_free(rl);
}

/* IPv4 clients are /32, IPv6 clients /64. */
static void
test_client_key(void **state)
{
	struct ratelimit *rl = ratelimit_new(RATELIMIT_ENTRIES);

	(void)state;
	assert_non_null(rl);
	assert_int_equal(burst(rl, "2001:db8:0:1::1", 20, 15, T0), 15);
	/* The same /64: 5 left. */
	assert_int_equal(burst(rl, "2001:db8:0:1:ffff::9", 20, 15, T0), 5);
	/* Another /64: its own bucket. */
	assert_int_equal(burst(rl, "2001:db8:0:2::1", 20, 30, T0), 20);
	/* IPv4 neighbours are separate clients. */
	assert_int_equal(burst(rl, "192.0.2.1", 20, 30, T0), 20);
	assert_int_equal(burst(rl, "192.0.2.2", 20, 30, T0), 20);
	ratelimit_free(rl);
}

/* The table never grows: with 8 buckets and 100 clients, old clients are
 * replaced, and a replaced client comes back with a full bucket (the
 * table errs on the lenient side). */
static void
test_bounded(void **state)
{
	struct ratelimit *rl = ratelimit_new(8);
	char who[32];
	unsigned i;

	(void)state;
	assert_non_null(rl);
	assert_int_equal(burst(rl, "10.0.0.1", 5, 10, T0), 5);
	for (i = 0; i < 100; i++) {
		snprintf(who, sizeof(who), "10.1.0.%u", i);
		assert_int_equal(burst(rl, who, 5, 10, T0 + 1 + i), 5);
	}
	/* 10.0.0.1 was the least recently seen everywhere: evicted. */
	assert_int_equal(burst(rl, "10.0.0.1", 5, 10, T0 + 200), 5);
	ratelimit_free(rl);
}

static void
test_oom(void **state)
{
	(void)state;
	mem_fail_after(0);
	assert_null(ratelimit_new(RATELIMIT_ENTRIES));
	mem_fail_after(-1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket),
		cmocka_unit_test(test_client_key),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_oom),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
