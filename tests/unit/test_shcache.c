/* test_shcache.c: unit tests for the shared cache's value codec and labels
 * (src/shcache.c); the client itself is tested against a real Redis in
 * tests/scenario/test_shcache_redis.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "shcache.h"

static uint8_t answer[DNS_MAX_MSG];
static uint8_t value[SHCACHE_VALUE_MAX + 1];

static void
test_round_trip(void **state)
{
	size_t sizes[] = { DNS_HDR_LEN, 51, 1232, DNS_MAX_MSG }, i, n, alen;
	const uint8_t *a;
	uint64_t t;
	uint32_t l;

	(void)state;
	for (i = 0; i < sizeof(answer); i++)
		answer[i] = (uint8_t)(i * 7 + 3);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		n = shcache_value_encode(value, sizeof(value),
		    0x0123456789abcdefULL, 0x80000001u, answer, sizes[i]);
		assert_int_equal(n, SHCACHE_HDR_LEN + sizes[i]);
		assert_memory_equal(value, "DPX1", 4);
		/* network order, as the header says */
		assert_int_equal(value[4], 0x01);
		assert_int_equal(value[11], 0xef);
		assert_int_equal(value[12], 0x80);
		assert_int_equal(value[15], 0x01);
		assert_int_equal(shcache_value_decode(value, n, &t, &l, &a,
		    &alen), 0);
		assert_int_equal(t, 0x0123456789abcdefULL);
		assert_int_equal(l, 0x80000001u);
		assert_ptr_equal(a, value + SHCACHE_HDR_LEN);
		assert_int_equal(alen, sizes[i]);
		assert_memory_equal(a, answer, sizes[i]);
	}
}

static void
test_encode_refuses(void **state)
{
	(void)state;
	/* too long an answer, or no room */
	assert_int_equal(shcache_value_encode(value, sizeof(value), 1, 1,
	    answer, DNS_MAX_MSG + 1), 0);
	assert_int_equal(shcache_value_encode(value, SHCACHE_HDR_LEN + 99, 1,
	    1, answer, 100), 0);
	assert_int_equal(shcache_value_encode(value, SHCACHE_HDR_LEN + 100, 1,
	    1, answer, 100), SHCACHE_HDR_LEN + 100);
}

static void
test_decode_rejects(void **state)
{
	const uint8_t *a;
	uint64_t t;
	uint32_t l;
	size_t alen, n;

	(void)state;
	memset(answer, 0x5a, sizeof(answer));
	n = shcache_value_encode(value, sizeof(value), 1000, 60, answer, 100);
	assert_int_equal(shcache_value_decode(value, n, &t, &l, &a, &alen), 0);
	/* short: no header, or no DNS header after it */
	assert_int_equal(shcache_value_decode(value, 0, &t, &l, &a, &alen), -1);
	assert_int_equal(shcache_value_decode(value, SHCACHE_HDR_LEN - 1, &t,
	    &l, &a, &alen), -1);
	assert_int_equal(shcache_value_decode(value, SHCACHE_HDR_LEN +
	    DNS_HDR_LEN - 1, &t, &l, &a, &alen), -1);
	assert_int_equal(shcache_value_decode(value, SHCACHE_HDR_LEN +
	    DNS_HDR_LEN, &t, &l, &a, &alen), 0);
	/* long: one byte more than any value of ours */
	n = shcache_value_encode(value, sizeof(value), 1000, 60, answer,
	    DNS_MAX_MSG);
	assert_int_equal(n, SHCACHE_VALUE_MAX);
	assert_int_equal(shcache_value_decode(value, n, &t, &l, &a, &alen), 0);
	assert_int_equal(shcache_value_decode(value, n + 1, &t, &l, &a, &alen),
	    -1);
	/* magic */
	value[3] = '2';
	assert_int_equal(shcache_value_decode(value, 100, &t, &l, &a, &alen),
	    -1);
	value[3] = '1';
	value[0] = 'd';
	assert_int_equal(shcache_value_decode(value, 100, &t, &l, &a, &alen),
	    -1);
	value[0] = 'D';
	/* lifetime 0 */
	n = shcache_value_encode(value, sizeof(value), 1000, 0, answer, 100);
	assert_int_equal(shcache_value_decode(value, n, &t, &l, &a, &alen), -1);
	value[15] = 1;
	assert_int_equal(shcache_value_decode(value, n, &t, &l, &a, &alen), 0);
	assert_int_equal(l, 1);
}

static void
test_names(void **state)
{
	(void)state;
	assert_string_equal(shcache_op_name(SHCACHE_OP_GET), "get");
	assert_string_equal(shcache_op_name(SHCACHE_OP_SET), "set");
	assert_string_equal(shcache_op_name(SHCACHE_OP_DEL), "del");
	assert_string_equal(shcache_result_name(SHCACHE_HIT), "hit");
	assert_string_equal(shcache_result_name(SHCACHE_MISS), "miss");
	assert_string_equal(shcache_result_name(SHCACHE_ERROR), "error");
	assert_string_equal(shcache_result_name(SHCACHE_TIMEOUT), "timeout");
	assert_string_equal(shcache_result_name(SHCACHE_SKIPPED), "skipped");
	assert_string_equal(shcache_result_name(SHCACHE_OK), "ok");
	assert_string_equal(shcache_op_name(SHCACHE_N_OPS), "?");
	assert_string_equal(shcache_result_name(SHCACHE_N_RESULTS), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_encode_refuses),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
