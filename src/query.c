/* query.c: one client query's life: parse, cache, upstream, exactly one answer.
 *
 * The hot path (a cache hit) allocates nothing: the query is parsed in
 * place, the cached answer is copied straight into the listener's buffer
 * and made the client's own (ID, spelling of the name, RD/CD bits, TTLs
 * aged by the cache). Only a miss allocates a struct query, which owns a
 * copy of the client's message until the upstream calls back; it is freed
 * in query_finish() and nowhere else.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "query.h"

struct query {
	struct query_ctx *ctx;
	struct dnsmsg_query q;
	struct cache_key key;
	int udp;
	query_done_cb done_cb;
	void *arg;
	size_t len;
	size_t origin_len;
	/* The client's message as received, then the origin bytes, aligned
	 * for a struct sockaddr_storage. */
	uint8_t msg[];
};

/* Count an answer by its rcode and fit it to a UDP client. Returns the
 * length to send. */
static size_t
finish_answer(struct query_ctx *ctx, const struct dnsmsg_query *q, int udp,
    uint8_t *out, size_t len)
{
	if (udp && len > q->udp_size) {
		size_t cut = dnsmsg_truncate(out, len);

		if (cut != 0) {
			len = cut;
			ctx->metrics->answers_truncated++;
		}
	}
	ctx->metrics->answers[DNS_RCODE(dnsmsg_get_flags(out))]++;
	return len;
}

/* An error answer built from the query. Returns the length, or 0 when even
 * that could not be built (then the caller drops). */
static size_t
error_answer(struct query_ctx *ctx, const uint8_t *msg, size_t len,
    const struct dnsmsg_query *q, int rcode, int udp, uint8_t *out)
{
	size_t out_len = 0;

	if (dnsmsg_error_reply(msg, len, q, rcode, out, DNS_MAX_MSG,
	    &out_len) != 0)
		return 0;
	return finish_answer(ctx, q, udp, out, out_len);
}

#define ORIGIN_ALIGN 16
#define ORIGIN_OFF(len) (((len) + ORIGIN_ALIGN - 1) & ~(size_t)(ORIGIN_ALIGN - 1))

static void
query_finish(struct query *qr, const uint8_t *msg, size_t len)
{
	qr->done_cb(qr->arg, qr->msg + ORIGIN_OFF(qr->len), msg, len);
	mem_free(qr);
}

static void
query_fail(struct query *qr, int status)
{
	uint8_t out[DNS_MAX_MSG];
	size_t len;

	if (log_enabled(LOGL_DEBUG)) {
		char name[DNS_MAX_NAME_TEXT];

		dnsmsg_name_str(&qr->q.q, name, sizeof(name));
		log_debug("query %s type %u: SERVFAIL (upstream status %d)",
		    name, qr->q.q.qtype, status);
	}
	len = error_answer(qr->ctx, qr->msg, qr->len, &qr->q,
	    DNS_RCODE_SERVFAIL, qr->udp, out);
	query_finish(qr, len ? out : NULL, len);
}

static void
upstream_done_cb(void *arg, int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info)
{
	struct query *qr = arg;
	struct query_ctx *ctx = qr->ctx;
	uint8_t out[DNS_MAX_MSG];
	int rc;

	if (status != 0) {
		query_fail(qr, status);
		return;
	}
	if (info->cacheable && info->ttl > 0) {
		rc = cache_put(ctx->cache, &qr->key, answer, len, info,
		    uv_now(ctx->loop));
		if (rc == 0)
			ctx->metrics->cache_inserts++;
	} else {
		ctx->metrics->cache_uncacheable++;
	}
	memcpy(out, answer, len);
	dnsmsg_personalize(out, len, qr->msg, &qr->q);
	len = finish_answer(ctx, &qr->q, qr->udp, out, len);
	query_finish(qr, out, len);
}

/* A miss: keep a copy of the message and send it upstream. */
static enum query_result
query_forward(struct query_ctx *ctx, const uint8_t *msg, size_t len,
    const struct dnsmsg_query *q, const struct cache_key *key, int udp,
    uint8_t *out, size_t *out_len, query_done_cb done_cb, void *arg,
    const void *origin, size_t origin_len)
{
	struct query *qr;

	qr = mem_alloc(sizeof(*qr) + ORIGIN_OFF(len) + origin_len);
	if (qr == NULL)
		goto overload;
	qr->ctx = ctx;
	qr->q = *q;
	qr->key = *key;
	qr->udp = udp;
	qr->done_cb = done_cb;
	qr->arg = arg;
	qr->len = len;
	qr->origin_len = origin_len;
	memcpy(qr->msg, msg, len);
	if (origin_len != 0)
		memcpy(qr->msg + ORIGIN_OFF(len), origin, origin_len);
	if (upstream_query(ctx->pool, msg, len, &q->q, upstream_done_cb, qr,
	    NULL) != 0) {
		mem_free(qr);
		goto overload;
	}
	return QUERY_PENDING;

overload:
	/* Out of memory: say so to the client rather than go silent. */
	ctx->metrics->drops_overload++;
	*out_len = error_answer(ctx, msg, len, q, DNS_RCODE_SERVFAIL, udp, out);
	return *out_len ? QUERY_ANSWER : QUERY_DROP;
}

enum query_result
query_handle(struct query_ctx *ctx, const uint8_t *msg, size_t len, int udp,
    uint64_t now_ms, uint8_t *out, size_t *out_len, query_done_cb done_cb,
    void *arg, const void *origin, size_t origin_len)
{
	struct dnsmsg_query q;
	struct cache_key key;
	size_t hit_len;
	int rc;

	rc = dnsmsg_parse_query(msg, len, &q);
	if (rc < 0) {
		ctx->metrics->drops_malformed++;
		return QUERY_DROP;
	}
	if (rc > 0) {
		*out_len = error_answer(ctx, msg, len, &q, rc, udp, out);
		if (*out_len == 0) {
			ctx->metrics->drops_malformed++;
			return QUERY_DROP;
		}
		return QUERY_ANSWER;
	}
	cache_key_make(&key, &q);
	if (cache_get(ctx->cache, &key, now_ms, out, DNS_MAX_MSG,
	    &hit_len) == 0) {
		ctx->metrics->cache_hits++;
		dnsmsg_personalize(out, hit_len, msg, &q);
		*out_len = finish_answer(ctx, &q, udp, out, hit_len);
		return QUERY_ANSWER;
	}
	ctx->metrics->cache_misses++;
	return query_forward(ctx, msg, len, &q, &key, udp, out, out_len,
	    done_cb, arg, origin, origin_len);
}
