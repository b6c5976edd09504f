/* admin.h: what the HTTP endpoints serve: metrics, health, readiness,
 * status, and (on the control socket only) cache control and reload.
 *
 * The handlers read the modules through struct admin, which main.c owns
 * and keeps current (the conf pointer changes on reload; the cache, pool
 * and listeners are the same objects for the life of the process). They
 * run on the loop that owns those modules, so they read them without
 * locks. http.c knows nothing of DNS; this file knows nothing of HTTP
 * beyond the request and response structs.
 */
#ifndef DOTPROXY_ADMIN_H
#define DOTPROXY_ADMIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cache.h"
#include "conf.h"
#include "http.h"
#include "listen.h"
#include "metrics.h"
#include "upstream.h"
#include "worker.h"

/* A loop that has not stamped its heartbeat for this long is stalled:
 * /health says 503. */
#define ADMIN_HEARTBEAT_MAX_MS 5000

/* The server's life, as /ready, /status and the metrics report it. */
enum admin_phase {
	ADMIN_STARTING = 0,   /* config loaded, listeners not all bound yet */
	ADMIN_READY,
	ADMIN_DRAINING,       /* SIGTERM: lameduck, then close */
};

struct admin {
	uv_loop_t *loop;
	const struct conf *conf;
	const char *config_file;      /* "" when running on defaults */
	char config_hash[65];         /* SHA-256 of the file's bytes, hex; "" none */
	struct cache *cache;
	struct workers *workers;      /* counters, upstreams, connections */
	enum admin_phase phase;
	const char *phase_reason;     /* for /ready while STARTING */
	uint64_t heartbeat_ms;        /* uv_now of the loop's last heartbeat */
	int64_t start_time;           /* wall clock, seconds */
	uint64_t reloads_ok, reloads_failed;
	int last_reload_ok;           /* 1 until a reload fails */
	char last_reload_error[CONF_ERR_MAX];
	/* POST /reload: returns 0, or -1 with the reason in err. */
	int (*reload)(void *arg, char *err, size_t errlen);
	void *reload_arg;
};

/* The routes of the public endpoint (http-listen) and of the control
 * socket (the same plus /cache/flush, /cache/dump and /reload). The
 * handlers take the struct admin as their arg. */
extern const struct http_route admin_public_routes[];
extern const size_t admin_n_public_routes;
extern const struct http_route admin_control_routes[];
extern const size_t admin_n_control_routes;

/* Write the whole Prometheus exposition of the server to f (used by
 * GET /metrics; exposed for tests). */
void admin_write_metrics(struct admin *a, FILE *f);

#endif
