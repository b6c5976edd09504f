/* fake_upstream.h: test hooks of the fake upstream pool (fake_upstream.c).
 *
 * fake_upstream.c implements the whole of upstream.h without a network:
 * upstream_query only records the out-query, and the test decides when and
 * how each one ends (fake_answer, fake_fail), so every out-query can be
 * counted and inspected and no answer arrives unless a test says so. One
 * pool exists at a time; the hooks act on it. Out-queries are numbered
 * from 0 in the order they were sent, and stay inspectable (whatever their
 * state) until upstream_pool_close.
 */
#ifndef DOTPROXY_FAKE_UPSTREAM_H
#define DOTPROXY_FAKE_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "dnsmsg.h"
#include "upstream.h"

enum fake_state {
	FAKE_PENDING = 0,  /* waiting for fake_answer or fake_fail */
	FAKE_ANSWERED,     /* cb had status 0 */
	FAKE_FAILED,       /* cb had the status given to fake_fail */
	FAKE_CANCELLED,    /* upstream_cancel: cb was not called */
	FAKE_CLOSED,       /* upstream_pool_close: cb had UPSTREAM_ECLOSED */
};

/* Out-queries sent to the current pool so far, and how many are pending. */
size_t fake_count(void);
size_t fake_pending_count(void);

/* Out-query i (0 <= i < fake_count()): the bytes as given to
 * upstream_query (*len set), its question, its state. NULL / FAKE_CLOSED
 * when i is out of range. */
const uint8_t *fake_query(size_t i, size_t *len);
const struct dnsmsg_question *fake_question(size_t i);
enum fake_state fake_state(size_t i);

/* Answer pending out-query i with these bytes: they are parsed with
 * dnsmsg_parse_answer against the recorded question, as the real pool
 * does, and cb(arg, 0, copy, len, &info, "fake", now_ms) is called, as
 * the real pool calls it at its loop time now_ms. Returns 0 after the
 * callback; -EINVAL when i is not pending; or the parse error
 * (DNSMSG_EMALFORMED, DNSMSG_EMISMATCH), and then cb is not called and
 * the out-query stays pending (the real pool drops such answers too). */
int fake_answer(size_t i, const uint8_t *answer, size_t len,
    uint64_t now_ms);

/* End pending out-query i with a failure (UPSTREAM_ETIMEDOUT,
 * UPSTREAM_EUNREACH, ...; must be negative) at loop time now_ms. Returns
 * 0 after the callback, or -EINVAL. upstream_pool_close hands the cbs
 * the last now_ms given here or to fake_answer. */
int fake_fail(size_t i, int status, uint64_t now_ms);

/* Make the next n calls of upstream_query fail with -ENOMEM (nothing is
 * recorded, no cb follows), as the real pool's would out of memory. */
void fake_refuse_next(unsigned n);

#endif
